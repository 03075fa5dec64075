"""Slow, obvious numpy reference for ``kernels.raster`` (tests only).

One triangle at a time in id order, whole-bounding-box numpy masks, edge functions evaluated
directly (not stepped) in int64 and depth from the same float64 formula, so triangle ids and depth
must equal the numba kernel's bit for bit. Barycentrics are computed a different way (solving the
homogeneous 3x3 system per pixel), so they are compared within a tolerance.
"""

from __future__ import annotations

import numpy as np

from kernels.raster import GUARD_PX, SUBPIXEL_BITS

_SUB = float(1 << SUBPIXEL_BITS)
_HALF = 1 << (SUBPIXEL_BITS - 1)


def _snap(pos: np.ndarray, tri: np.ndarray, h: int, w: int):
    """Snapped integer positions, z/w, or None when the triangle is dropped."""
    p = pos[tri].astype(np.float64)
    if not np.all(p[:, 3] > 0.0):
        return None
    px = (p[:, 0] / p[:, 3] + 1.0) * (w * 0.5)
    py = (p[:, 1] / p[:, 3] + 1.0) * (h * 0.5)
    if not (np.all(np.abs(px - w * 0.5) < GUARD_PX) and np.all(np.abs(py - h * 0.5) < GUARD_PX)):
        return None
    z = p[:, 2] / p[:, 3]
    if np.all(z < -1.0) or np.all(z > 1.0):
        return None
    return (np.floor(px * _SUB + 0.5).astype(np.int64), np.floor(py * _SUB + 0.5).astype(np.int64), z)


def rasterize_ref(pos: np.ndarray, tris: np.ndarray, resolution: tuple[int, int],
                  cull: str = "none") -> np.ndarray:
    """Same contract as :func:`kernels.raster.rasterize`."""
    h, w = resolution
    zbuf = np.full((h, w), np.inf)
    ibuf = np.full((h, w), -1, np.int64)
    cols = np.arange(w, dtype=np.int64) * (1 << SUBPIXEL_BITS) + _HALF
    rows = np.arange(h, dtype=np.int64) * (1 << SUBPIXEL_BITS) + _HALF
    pxg, pyg = np.meshgrid(cols, rows)
    for t, tri in enumerate(tris):
        s = _snap(pos, tri, h, w)
        if s is None:
            continue
        xs, ys, zs = s
        area = (xs[1] - xs[0]) * (ys[2] - ys[0]) - (xs[2] - xs[0]) * (ys[1] - ys[0])
        if area == 0 or (cull == "ccw" and area > 0) or (cull == "cw" and area < 0):
            continue
        if area < 0:
            xs, ys, zs = xs[[0, 2, 1]], ys[[0, 2, 1]], zs[[0, 2, 1]]
            area = -area
        e, owned = [], []
        for i in range(3):
            j, k = (i + 1) % 3, (i + 2) % 3
            dx, dy = xs[k] - xs[j], ys[k] - ys[j]
            e.append(dx * (pyg - ys[j]) - dy * (pxg - xs[j]))
            owned.append(bool(dy < 0 or (dy == 0 and dx > 0)))
        inside = np.ones((h, w), bool)
        for ei, oi in zip(e, owned, strict=True):
            inside &= (ei > 0) | ((ei == 0) & oi)
        inv = 1.0 / np.float64(area)
        l0 = e[0].astype(np.float64) * inv
        l1 = e[1].astype(np.float64) * inv
        z = zs[2] + l0 * (zs[0] - zs[2]) + l1 * (zs[1] - zs[2])
        win = inside & (z >= -1.0) & (z <= 1.0) & (z < zbuf)
        zbuf[win] = z[win]
        ibuf[win] = t
    out = np.zeros((h, w, 4), np.float32)
    hit = ibuf >= 0
    rr, cc = np.nonzero(hit)
    uv = barycentrics_ref(pos, tris, ibuf[hit], rr, cc, h, w)
    out[rr, cc, 0] = uv[:, 0]
    out[rr, cc, 1] = uv[:, 1]
    out[rr, cc, 2] = zbuf[hit]
    out[rr, cc, 3] = ibuf[hit] + 1
    return out


def barycentrics_ref(pos: np.ndarray, tris: np.ndarray, tri_ids: np.ndarray, rows: np.ndarray,
                     cols: np.ndarray, h: int, w: int) -> np.ndarray:
    """Perspective-correct ``(u, v)`` ``(N, 2) float64`` of triangle ``tri_ids`` at pixel centres.

    Solves ``M b = (xn, yn, 1) * s`` with ``M = [[x], [y], [w]]`` of the three clip-space vertices:
    ``b`` are the weights of the clip-space point on the triangle that projects to the pixel centre.
    """
    p = np.asarray(pos, np.float64)[tris[tri_ids]]  # (N, 3 vertices, 4)
    xn = (2.0 * cols + 1.0) / w - 1.0
    yn = (2.0 * rows + 1.0) / h - 1.0
    m = np.stack([p[:, :, 0], p[:, :, 1], p[:, :, 3]], axis=1)  # (N, 3 rows, 3 vertices)
    rhs = np.stack([xn, yn, np.ones_like(xn)], axis=1)
    b = np.linalg.solve(m, rhs[..., None])[..., 0]
    b = b / b.sum(axis=1, keepdims=True)
    return b[:, :2]


def interpolate_ref(attr: np.ndarray, rast: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """``(H, W, C) float64`` reference of :func:`kernels.raster.interpolate`."""
    ids = rast[..., 3].astype(np.int64) - 1
    hit = ids >= 0
    out = np.zeros(rast.shape[:2] + (attr.shape[1],))
    t = tris[ids[hit]]
    u = rast[..., 0][hit].astype(np.float64)[:, None]
    v = rast[..., 1][hit].astype(np.float64)[:, None]
    a = np.asarray(attr, np.float64)
    out[hit] = u * a[t[:, 0]] + v * a[t[:, 1]] + (1.0 - u - v) * a[t[:, 2]]
    return out
