"""Spherical-harmonics lighting as in Deep3DFaceRecon, Lambert helpers and vertex normals (numba).

Convention:

* Normals are **unit, outward, in camera space** (OpenGL-style: +x right, +y up, +z toward the
  camera), i.e. Deep3DFaceRecon's "rotated normals" (its camera also looks down -z).
* ``gamma`` ``(27,)`` is **colour-major**: ``gamma[0:9]`` red, ``gamma[9:18]`` green,
  ``gamma[18:27]`` blue, each in the basis order of :func:`sh_basis`. Deep3DFaceRecon reshapes its
  27 predicted values to ``(3, 9)`` the same way and adds :data:`SH_INIT_DC` to each DC term
  before shading; that offset belongs to the regressor's parameterisation, so it is *not* added
  here (:func:`default_gamma` gives the resulting ambient-only lighting).
* ``colour_k = (sh_basis(n) @ gamma[9k:9k+9]) * albedo_k`` — no clamping.

The 9 basis functions (band constants ``a0 = pi``, ``a1 = 2 pi / sqrt 3``, ``a2 = 2 pi / sqrt 8``;
``c0 = 1/sqrt(4 pi)``, ``c1 = sqrt 3 / sqrt(4 pi)``, ``c2 = 3 sqrt 5 / sqrt(12 pi)``), for a normal
``(x, y, z)``::

    a0 c0,  -a1 c1 y,  a1 c1 z,  -a1 c1 x,  a2 c2 x y,  -a2 c2 y z,
    a2 c2 (0.5 / sqrt 3) (3 z^2 - 1),  -a2 c2 x z,  a2 c2 0.5 (x^2 - y^2)
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

SH_A = (math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0))
SH_C = (1.0 / math.sqrt(4.0 * math.pi), math.sqrt(3.0) / math.sqrt(4.0 * math.pi),
        3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi))
SH_INIT_DC = 0.8
"""Deep3DFaceRecon's initial DC coefficient per colour (its zero network output means this)."""

_K0 = SH_A[0] * SH_C[0]
_K1 = SH_A[1] * SH_C[1]
_K2 = SH_A[2] * SH_C[2]
_K2Z = _K2 * 0.5 / math.sqrt(3.0)
_K2H = _K2 * 0.5


def default_gamma() -> np.ndarray:
    """``(27,) float32`` ambient-only lighting: :data:`SH_INIT_DC` in each colour's DC term."""
    g = np.zeros(27, np.float32)
    g[0::9] = SH_INIT_DC
    return g


def _as_n3(a: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.shape[-1] != 3 or a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be a (..., 3) float32/float64 array, got "
                         f"{getattr(a, 'shape', a)} {getattr(a, 'dtype', '')}")
    return np.ascontiguousarray(a.reshape(-1, 3))


@nb.njit(cache=True, nogil=True, inline="always")
def _basis_row(n, out, i):  # pragma: no cover - compiled
    x, y, z = n[i, 0], n[i, 1], n[i, 2]
    out[i, 0] = _K0
    out[i, 1] = -_K1 * y
    out[i, 2] = _K1 * z
    out[i, 3] = -_K1 * x
    out[i, 4] = _K2 * x * y
    out[i, 5] = -_K2 * y * z
    out[i, 6] = _K2Z * (3.0 * z * z - 1.0)
    out[i, 7] = -_K2 * x * z
    out[i, 8] = _K2H * (x * x - y * y)


@nb.njit(cache=True, nogil=True)
def _basis_serial(n, out):  # pragma: no cover - compiled
    for i in range(n.shape[0]):
        _basis_row(n, out, i)


PARALLEL_MIN = 4096
"""Below this many normals the serial kernel runs: starting OpenMP workers for a few dozen rows
(e.g. the regressor's SH rotation, 64 normals, every frame) cost 0.36 ms and kept the workers
spinning against MediaPipe's thread."""


@nb.njit(parallel=True, cache=True, nogil=True)
def _basis(n, out):  # pragma: no cover - compiled
    for i in nb.prange(n.shape[0]):
        _basis_row(n, out, i)


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """SH basis ``(..., 9)`` (dtype of ``normals``) of unit normals ``(..., 3)``."""
    n = _as_n3(normals, "normals")
    out = np.empty((n.shape[0], 9), n.dtype)
    (_basis if n.shape[0] >= PARALLEL_MIN else _basis_serial)(n, out)
    return out.reshape(normals.shape[:-1] + (9,))


@nb.njit(parallel=True, cache=True, nogil=True)
def _shade(n, albedo, g, out):  # pragma: no cover - compiled
    for i in nb.prange(n.shape[0]):
        x, y, z = n[i, 0], n[i, 1], n[i, 2]
        b1, b2, b3 = -_K1 * y, _K1 * z, -_K1 * x
        b4, b5, b6 = _K2 * x * y, -_K2 * y * z, _K2Z * (3.0 * z * z - 1.0)
        b7, b8 = -_K2 * x * z, _K2H * (x * x - y * y)
        for k in range(3):
            o = 9 * k
            s = (_K0 * g[o] + b1 * g[o + 1] + b2 * g[o + 2] + b3 * g[o + 3] + b4 * g[o + 4]
                 + b5 * g[o + 5] + b6 * g[o + 6] + b7 * g[o + 7] + b8 * g[o + 8])
            out[i, k] = s * albedo[i, k]


def sh_shade(normals: np.ndarray, albedo: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon's SH shading: ``(..., 3)`` colours from unit normals and albedo ``(..., 3)``.

    Works per vertex (shade, then :func:`kernels.raster.interpolate` the colours, as
    Deep3DFaceRecon does) or per pixel (interpolate normals and albedo, renormalise, shade).
    Output dtype is that of ``normals``.
    """
    n = _as_n3(normals, "normals")
    a = _as_n3(albedo, "albedo").astype(n.dtype, copy=False)
    if a.shape[0] != n.shape[0]:
        raise ValueError(f"albedo {albedo.shape} does not match normals {normals.shape}")
    g = np.asarray(gamma, np.float64).reshape(-1)
    if g.shape != (27,):
        raise ValueError(f"gamma must hold 27 SH coefficients (3 colours x 9), got {g.shape}")
    out = np.empty_like(n)
    _shade(n, a, g, out)
    return out.reshape(normals.shape)


@nb.njit(cache=True, nogil=True)
def _vertex_normals(v, tris, out):  # pragma: no cover - compiled
    for t in range(tris.shape[0]):
        i0, i1, i2 = tris[t, 0], tris[t, 1], tris[t, 2]
        ex, ey, ez = v[i1, 0] - v[i0, 0], v[i1, 1] - v[i0, 1], v[i1, 2] - v[i0, 2]
        fx, fy, fz = v[i2, 0] - v[i0, 0], v[i2, 1] - v[i0, 1], v[i2, 2] - v[i0, 2]
        nx = ey * fz - ez * fy
        ny = ez * fx - ex * fz
        nz = ex * fy - ey * fx
        for i in (i0, i1, i2):
            out[i, 0] += nx
            out[i, 1] += ny
            out[i, 2] += nz
    for i in range(out.shape[0]):
        s = math.sqrt(out[i, 0] ** 2 + out[i, 1] ** 2 + out[i, 2] ** 2)
        if s > 0.0:
            out[i, 0] /= s
            out[i, 1] /= s
            out[i, 2] /= s


def vertex_normals(vertices: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(V, 3)`` (float64 accumulation, ``vertices``' dtype).

    A triangle ``(a, b, c)`` contributes ``(b - a) x (c - a)`` (twice its area along its normal),
    so counter-clockwise triangles seen from outside give outward normals. Vertices in no
    triangle (or only degenerate ones) get ``(0, 0, 0)``.
    """
    v = _as_n3(vertices, "vertices")
    if not isinstance(tris, np.ndarray) or tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError("tris must be an (F, 3) integer array")
    if tris.size and (tris.min() < 0 or tris.max() >= v.shape[0]):
        raise ValueError("tris index outside the vertex range")
    out = np.zeros(v.shape, np.float64)
    _vertex_normals(v, np.ascontiguousarray(tris, np.int32), out)
    return out.astype(v.dtype, copy=False)


def normalize(v: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Unit vectors along the last axis; zero vectors stay zero (e.g. interpolated normals)."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, eps).astype(v.dtype)


def lambert(normals: np.ndarray, light_dir: np.ndarray, ambient: float = 0.3,
            diffuse: float = 0.7) -> np.ndarray:
    """Directional Lambert intensity ``ambient + diffuse * max(0, n . l)``, shape ``normals[..., 0]``.

    ``light_dir`` ``(3,)`` points *toward* the light, camera space; it is normalised here.
    """
    l_ = np.asarray(light_dir, np.float64)
    nrm = np.linalg.norm(l_)
    if l_.shape != (3,) or not nrm > 0:
        raise ValueError(f"light_dir must be a non-zero 3-vector, got {light_dir}")
    d = np.asarray(normals) @ (l_ / nrm).astype(np.asarray(normals).dtype)
    return ambient + diffuse * np.maximum(d, 0.0)
