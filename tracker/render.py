"""Backend-neutral renderer: a tiny handle chosen once ("numba" or "nvdiffrast") + pure helpers.

The handle exposes nvdiffrast's composable steps — ``rasterize`` → ``interpolate`` → shade
(``shade_sh``) → ``antialias`` — with nvdiffrast's tensor layouts; the numba handle works on numpy
arrays (``kernels/``), the nvdiffrast handle (:mod:`tracker.render_cuda`, optional) on CUDA.

Conventions (see ``kernels/raster.py`` for the rasterizer's own):

* :func:`clip_from_camera` takes OpenGL-style camera space (+x right, +y up, looking down -z,
  metres) and a :class:`~tracker.types.Camera`, and maps image ``v`` (down) to increasing raster
  rows, so ``rast[i, j]`` is image pixel row ``i``, column ``j`` (top row first), sampled at the
  pixel centre ``(u, v) = (j + 0.5, i + 0.5)`` in the projection of :mod:`tracker.camera`. A point
  projecting to ``(u, v)`` lands in pixel ``(floor(v), floor(u))``.
* This mapping mirrors the winding: a mesh whose triangles are counter-clockwise seen from outside
  (the ICT model) has clockwise front faces in NDC, so back faces are culled with
  ``cull="ccw"`` (:data:`CULL_BACK`).
* Depth ``z/w`` is OpenGL's: ``-1`` at ``near``, ``+1`` at ``far``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from .errors import BackendUnavailableError
from .types import Camera

BackendName = Literal["numba", "nvdiffrast"]
CULL_BACK = "ccw"
"""``cull`` value that removes back faces of outward-CCW meshes placed by :func:`clip_from_camera`."""


def projection_matrix(cam: Camera, near: float = 0.01, far: float = 100.0) -> np.ndarray:
    """``(4, 4) float64`` OpenGL-style projection: ``clip = P @ (X, Y, Z, 1)`` for camera space.

    NDC ``x = 2u/W - 1`` and ``y = 2v/H - 1`` where ``(u, v)`` is :func:`tracker.camera.project`;
    ``w = -Z``; ``z/w`` runs from -1 at ``Z = -near`` to +1 at ``Z = -far``.
    """
    if not (0.0 < near < far):
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    w, h = float(cam.width), float(cam.height)
    return np.array([
        [2.0 * cam.fx / w, 0.0, 1.0 - 2.0 * cam.cx / w, 0.0],
        [0.0, -2.0 * cam.fy / h, 1.0 - 2.0 * cam.cy / h, 0.0],
        [0.0, 0.0, -(far + near) / (far - near), -2.0 * far * near / (far - near)],
        [0.0, 0.0, -1.0, 0.0],
    ])


def clip_from_camera(cam: Camera, x_cam: np.ndarray, near: float = 0.01,
                     far: float = 100.0) -> np.ndarray:
    """Camera-space points ``(V, 3)`` metres → clip space ``(V, 4) float32``, C-contiguous."""
    x = np.asarray(x_cam, np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"x_cam must be (V, 3), got {x.shape}")
    p = projection_matrix(cam, near, far)
    return np.ascontiguousarray(x @ p[:, :3].T + p[:, 3], dtype=np.float32)


def pixels_from_clip(pos: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    """Clip space ``(V, 4)`` → continuous pixel coordinates ``(V, 2)`` (column, row) float64."""
    p = np.asarray(pos, np.float64)
    h, w = resolution
    return np.stack([(p[:, 0] / p[:, 3] + 1.0) * 0.5 * w, (p[:, 1] / p[:, 3] + 1.0) * 0.5 * h], -1)


class RenderBackend(Protocol):
    """What every backend handle offers; arrays in nvdiffrast's layouts (no minibatch axis)."""

    name: str

    def rasterize(self, pos: Any, tris: Any, resolution: tuple[int, int],
                  cull: str = "none") -> Any: ...

    def interpolate(self, attr: Any, rast: Any, tris: Any) -> Any: ...

    def antialias(self, color: Any, rast: Any, pos: Any, tris: Any) -> Any: ...

    def shade_sh(self, normals: Any, albedo: Any, gamma: Any) -> Any: ...


@contextmanager
def numba_threads(n: int | None) -> Iterator[None]:
    """Run the block's numba kernels with ``n`` threads (``None``: unchanged; at most numba's
    pool size); for the calling thread only."""
    if n is None:
        yield
        return
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


@dataclass(frozen=True)
class NumbaBackend:
    """CPU backend over ``kernels/``: numpy in, numpy out. Stateless apart from JIT caches.

    ``threads``: numba threads per call (``None``: all cores). ``1`` runs the kernels serially,
    which is slower on an idle machine but steady when other threads compete for the cores (a
    parallel kernel waits for its slowest thread: with 2 cores busy elsewhere a 2 ms rasterize
    was measured taking 20–40 ms). The setting is per calling thread (``numba.set_num_threads``).
    """

    threads: int | None = None
    name: str = "numba"

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")

    def rasterize(self, pos: np.ndarray, tris: np.ndarray, resolution: tuple[int, int],
                  cull: str = "none") -> np.ndarray:
        from kernels.raster import rasterize
        with numba_threads(self.threads):
            return rasterize(pos, tris, resolution, cull)

    def interpolate(self, attr: np.ndarray, rast: np.ndarray, tris: np.ndarray) -> np.ndarray:
        from kernels.raster import interpolate
        with numba_threads(self.threads):
            return interpolate(attr, rast, tris)

    def antialias(self, color: np.ndarray, rast: np.ndarray, pos: np.ndarray,
                  tris: np.ndarray) -> np.ndarray:
        from kernels.antialias import antialias
        with numba_threads(self.threads):
            return antialias(color, rast, pos, tris)

    def shade_sh(self, normals: np.ndarray, albedo: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        from kernels.shading import sh_shade
        with numba_threads(self.threads):
            return sh_shade(normals, albedo, gamma)


def make_backend(name: BackendName = "numba", device: str | None = None,
                 threads: int | None = None) -> RenderBackend:
    """Choose the renderer once. ``"nvdiffrast"`` needs torch with CUDA and nvdiffrast installed.

    ``device`` (nvdiffrast: e.g. ``"cuda:0"``) and ``threads`` (numba, see :class:`NumbaBackend`)
    apply to their backend only. Raises :class:`~tracker.errors.BackendUnavailableError`
    (nvdiffrast missing, no CUDA) or ``ValueError`` (unknown name).
    """
    if name == "numba":
        return NumbaBackend(threads=threads)
    if name == "nvdiffrast":
        from .render_cuda import NvdiffrastBackend
        return NvdiffrastBackend.create(device)
    raise ValueError(f"unknown render backend {name!r}; choose 'numba' or 'nvdiffrast'")


@dataclass(frozen=True)
class Rendering:
    """A rendered mesh: ``image`` ``(H, W, C)`` float32 (0 on background), ``mask`` ``(H, W)``
    bool (pixels that see a triangle), ``rast`` the rasterizer output (nvdiffrast layout)."""

    image: np.ndarray
    mask: np.ndarray
    rast: np.ndarray


def render_mesh(cam: Camera, x_cam: np.ndarray, tris: np.ndarray, colors: np.ndarray, *,
                backend: RenderBackend | None = None, cull_back: bool = True,
                antialias: bool = False, near: float = 0.01, far: float = 100.0) -> Rendering:
    """Render vertex colours ``(V, C)`` of a camera-space mesh ``(V, 3)`` at ``cam``'s resolution.

    ``tris`` ``(F, 3) int32`` counter-clockwise seen from outside (ICT); ``cull_back`` drops
    triangles facing away from the camera. A convenience for overlays and tests, numpy only.
    """
    be = backend if backend is not None else NumbaBackend()
    if be.name != "numba":
        raise BackendUnavailableError("render_mesh is the numpy convenience; use the backend's "
                                      "rasterize/interpolate directly with torch tensors")
    pos = clip_from_camera(cam, x_cam, near, far)
    tris = np.ascontiguousarray(tris, np.int32)
    res = (cam.height, cam.width)
    rast = be.rasterize(pos, tris, res, CULL_BACK if cull_back else "none")
    img = be.interpolate(np.ascontiguousarray(colors, np.float32), rast, tris)
    if antialias:
        img = be.antialias(img, rast, pos, tris)
    return Rendering(image=img, mask=rast[..., 3] > 0, rast=rast)
