"""Differentiable rendering for training: torch autograd around the ``kernels/`` rasterizer on CPU,
nvdiffrast on CUDA, behind one interface (:class:`DiffRenderer`) chosen once.

Layouts are nvdiffrast's, with a minibatch axis: ``pos (B, V, 4)`` clip space, ``tris (F, 3)
int32``, ``rast (B, H, W, 4)`` = ``(u, v, z/w, triangle_id + 1)``, ``attr (B, V, C)``, output
``(B, H, W, C)``. Conventions are those of :mod:`kernels.raster` (row 0 = NDC ``y = -1``; with
:func:`clip_from_crop_camera` row 0 is the top image row).

Gradients (CPU): ``interpolate`` → attributes and barycentrics
(:func:`kernels.raster.interpolate_backward`); ``rasterize`` → clip-space positions through the
barycentrics (:func:`kernels.raster.rasterize_backward`), visibility held fixed (no silhouette
gradients, like Deep3DFaceRecon's renderer). In float64 the barycentrics are recomputed in float64
from the same homogeneous planes the kernel uses, so ``torch.autograd.gradcheck`` can run.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from tracker.errors import BackendUnavailableError


class DiffRenderer(Protocol):
    name: str

    def rasterize(self, pos: torch.Tensor, tris: torch.Tensor,
                  resolution: tuple[int, int]) -> torch.Tensor: ...

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tris: torch.Tensor) -> torch.Tensor: ...


def _bary_f64(pos: np.ndarray, tris: np.ndarray, rast: np.ndarray) -> np.ndarray:
    """Recompute ``u, v`` of ``rast`` in float64 (the kernel's plane formula), in place copy."""
    out = rast.astype(np.float64)
    h, w = rast.shape[:2]
    t = rast[..., 3].astype(np.int64) - 1
    cov = t >= 0
    if not cov.any():
        return out
    r, c = np.nonzero(cov)
    tt = t[r, c]
    xn = (2.0 * c + 1.0) / w - 1.0
    yn = (2.0 * r + 1.0) / h - 1.0
    p = pos[tris[tt]]  # (n, 3, 4)
    hx = p[..., 0] - xn[:, None] * p[..., 3]
    hy = p[..., 1] - yn[:, None] * p[..., 3]
    b = [hx[:, (i + 1) % 3] * hy[:, (i + 2) % 3] - hy[:, (i + 1) % 3] * hx[:, (i + 2) % 3]
         for i in range(3)]
    s = b[0] + b[1] + b[2]
    ok = s != 0
    out[r[ok], c[ok], 0] = b[0][ok] / s[ok]
    out[r[ok], c[ok], 1] = b[1][ok] / s[ok]
    return out


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, tris_np, resolution):  # type: ignore[override]
        from kernels.raster import rasterize

        p = pos.detach().cpu().numpy()
        outs = []
        for b in range(p.shape[0]):
            pb = np.ascontiguousarray(p[b])
            r = rasterize(pb, tris_np, resolution, cull="ccw")
            if pos.dtype == torch.float64:
                r = _bary_f64(pb, tris_np, r)
            outs.append(r)
        rast = torch.from_numpy(np.stack(outs)).to(pos.dtype)
        ctx.save_for_backward(pos, rast)
        ctx.tris = tris_np
        return rast

    @staticmethod
    def backward(ctx, grad_rast):  # type: ignore[override]
        from kernels.raster import rasterize_backward

        pos, rast = ctx.saved_tensors
        p = pos.detach().cpu().numpy()
        g = grad_rast.detach().cpu().numpy()
        rn = rast.numpy()
        grads = [rasterize_backward(np.ascontiguousarray(g[b], np.float64),
                                    np.ascontiguousarray(p[b]), ctx.tris, rn[b])
                 for b in range(p.shape[0])]
        return torch.from_numpy(np.stack(grads)).to(pos.dtype), None, None


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, rast, tris_np):  # type: ignore[override]
        from kernels.raster import interpolate

        a = attr.detach().cpu().numpy()
        r = rast.detach().cpu().numpy()
        out = np.stack([interpolate(np.ascontiguousarray(a[b]), r[b], tris_np)
                        for b in range(a.shape[0])])
        ctx.save_for_backward(attr, rast)
        ctx.tris = tris_np
        return torch.from_numpy(out).to(attr.dtype)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        from kernels.raster import interpolate_backward

        attr, rast = ctx.saved_tensors
        a = attr.detach().cpu().numpy()
        r = rast.detach().cpu().numpy()
        g = grad_out.detach().cpu().numpy()
        ga, gr = [], []
        for b in range(a.shape[0]):
            x, y = interpolate_backward(np.ascontiguousarray(g[b], a.dtype), r[b], ctx.tris,
                                        np.ascontiguousarray(a[b]))
            ga.append(x)
            gr.append(y)
        return (torch.from_numpy(np.stack(ga)).to(attr.dtype),
                torch.from_numpy(np.stack(gr)).to(rast.dtype), None)


class CpuRenderer:
    """numba kernels + autograd. Back faces of outward-CCW meshes are culled (``cull="ccw"``).

    ``threads``: numba threads for the kernels (``None``: numba's default); set once here.
    """

    name = "numba"

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self._tris_np: np.ndarray | None = None
        self._tris_key: int | None = None

    def _tris(self, tris: torch.Tensor) -> np.ndarray:
        if self._tris_key != id(tris):
            self._tris_np = np.ascontiguousarray(tris.detach().cpu().numpy().astype(np.int32))
            self._tris_key = id(tris)
        return self._tris_np  # type: ignore[return-value]

    def rasterize(self, pos: torch.Tensor, tris: torch.Tensor,
                  resolution: tuple[int, int]) -> torch.Tensor:
        if pos.ndim != 3 or pos.shape[-1] != 4:
            raise ValueError(f"pos must be (B, V, 4), got {tuple(pos.shape)}")
        return _Rasterize.apply(pos.contiguous(), self._tris(tris), (int(resolution[0]), int(resolution[1])))

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
        if attr.ndim != 3 or rast.ndim != 4 or attr.shape[0] != rast.shape[0]:
            raise ValueError("attr must be (B, V, C) and rast (B, H, W, 4) with the same B")
        return _Interpolate.apply(attr.contiguous(), rast, self._tris(tris))


class CudaRenderer:
    """nvdiffrast (``nvdiffrast.torch``), naturally differentiable; same layouts. Back faces are
    culled by dropping them before rasterizing (nvdiffrast has no culling), ids mapped back."""

    name = "nvdiffrast"

    def __init__(self, device: str | None = None):
        if not torch.cuda.is_available():
            raise BackendUnavailableError("the nvdiffrast renderer needs a CUDA device; torch "
                                          f"{torch.__version__} sees none (use 'numba' on CPU)")
        try:
            import nvdiffrast.torch as dr
        except ImportError as e:
            raise BackendUnavailableError(
                f"cannot import nvdiffrast.torch ({e}); install it from NVlabs/nvdiffrast's source "
                "into a CUDA build of torch, or use the 'numba' renderer") from None
        self.dr = dr
        self.device = torch.device(device or "cuda")
        self.ctx = dr.RasterizeCudaContext(device=self.device)

    def rasterize(self, pos: torch.Tensor, tris: torch.Tensor,
                  resolution: tuple[int, int]) -> torch.Tensor:
        tri = tris.to(self.device, torch.int32)
        rast, _ = self.dr.rasterize(self.ctx, pos.float().contiguous(), tri,
                                    resolution=[int(resolution[0]), int(resolution[1])])
        # cull back faces: a pixel whose triangle is counter-clockwise in NDC is background
        v = pos[:, tri.long()]  # (B, F, 3, 4)
        xy = v[..., :2] / v[..., 3:4].clamp(min=1e-8)
        e1, e2 = xy[:, :, 1] - xy[:, :, 0], xy[:, :, 2] - xy[:, :, 0]
        ccw = (e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]) > 0  # (B, F)
        tid = rast[..., 3].long()
        back = torch.gather(ccw, 1, (tid - 1).clamp(min=0).flatten(1)).view_as(tid) & (tid > 0)
        return torch.where(back[..., None], torch.zeros_like(rast), rast)

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
        out, _ = self.dr.interpolate(attr.float().contiguous(), rast, tris.to(self.device, torch.int32))
        return out


def make_renderer(name: str = "auto", threads: int | None = None) -> DiffRenderer:
    """``"numba"`` (CPU), ``"nvdiffrast"`` (CUDA) or ``"auto"`` (nvdiffrast when CUDA and the
    package are there, else numba). Raises :class:`BackendUnavailableError` for an explicit
    ``"nvdiffrast"`` that cannot run."""
    if name == "numba":
        return CpuRenderer(threads)
    if name == "nvdiffrast":
        return CudaRenderer()
    if name == "auto":
        try:
            return CudaRenderer()
        except BackendUnavailableError:
            return CpuRenderer(threads)
    raise ValueError(f"unknown renderer {name!r}; choose 'numba', 'nvdiffrast' or 'auto'")


def clip_from_crop_camera(x_cam: torch.Tensor, f: torch.Tensor, pp: torch.Tensor, size: int,
                          near: float = 0.01, far: float = 100.0) -> torch.Tensor:
    """Camera-space points ``(B, V, 3)`` (OpenGL-style, metres) → clip space ``(B, V, 4)`` for a
    square ``size`` crop with per-sample focal ``f (B,)`` and principal point ``pp (B, 2)`` pixels
    (same matrix as :func:`tracker.render.projection_matrix`)."""
    s = float(size)
    x, y, z = x_cam[..., 0], x_cam[..., 1], x_cam[..., 2]
    fx = (2.0 * f / s)[:, None]
    cx = (1.0 - 2.0 * pp[:, 0] / s)[:, None]
    cy = (1.0 - 2.0 * pp[:, 1] / s)[:, None]
    a = -(far + near) / (far - near)
    bb = -2.0 * far * near / (far - near)
    return torch.stack([fx * x + cx * z, -fx * y + cy * z, a * z + bb, -z], dim=-1)
