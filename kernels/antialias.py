"""Analytic edge antialiasing at silhouettes (numba), after nvdiffrast's ``antialias`` idea.

What it does: for every pair of horizontally or vertically adjacent pixels that see different
triangles (or a triangle and the background), take the *front* pixel (the foreground one, or the
one with the smaller ``z/w``) and its triangle ``T``. If the segment between the two pixel
centres leaves ``T`` through a **silhouette edge** — an edge with no neighbouring triangle, or
whose neighbour has the opposite screen winding (one faces the camera, the other away) — the
crossing point ``s`` (0 at the front pixel's centre, 1 at the other's) sets a 1-D coverage blend:

* ``s > 0.5``: the surface covers ``s - 0.5`` of the other pixel: ``other += (s - 0.5) (front - other)``;
* ``s < 0.5``: the front pixel is covered only up to ``0.5 + s``: ``front += (0.5 - s) (other - front)``.

Pairs across interior edges of a smooth surface are left alone, so only outlines (and occlusion
boundaries such as the nose over the cheek) are softened. Each pixel pair is handled
independently and blends are accumulated from the *input* colours, so the result does not depend
on the order of evaluation. Forward only: no gradient kernel (the CUDA path gets silhouette
gradients from ``nvdiffrast.torch.antialias``).
"""

from __future__ import annotations

import numba as nb
import numpy as np


def edge_neighbours(tris: np.ndarray) -> np.ndarray:
    """Topology for :func:`antialias`: ``(F, 3) int32``, the triangle across edge ``i`` or -1.

    Edge ``i`` of a triangle is the one opposite its vertex ``i`` (from vertex ``i+1`` to
    ``i+2``). Compute once per topology and pass it to every :func:`antialias` call. On a
    non-manifold edge (three or more triangles) one of the others is picked.
    """
    tris = np.asarray(tris)
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError("tris must be an (F, 3) integer array")
    f = tris.shape[0]
    a = tris[:, [1, 2, 0]].astype(np.int64).reshape(-1)
    b = tris[:, [2, 0, 1]].astype(np.int64).reshape(-1)
    key = np.minimum(a, b) * (int(tris.max(initial=0)) + 1) + np.maximum(a, b)
    order = np.argsort(key, kind="stable")
    ks = key[order]
    out = np.full(3 * f, -1, np.int64)
    same_next = np.nonzero(ks[1:] == ks[:-1])[0]
    out[order[same_next]] = order[same_next + 1] // 3
    out[order[same_next + 1]] = order[same_next] // 3
    return out.reshape(f, 3).astype(np.int32)


@nb.njit(parallel=True, cache=True, nogil=True)
def _prepare(pos, tris, nbr, height, width):  # pragma: no cover - compiled
    """Screen positions ``(V, 2)`` and per-edge silhouette flags ``(F, 3)``."""
    nv = pos.shape[0]
    nf = tris.shape[0]
    scr = np.empty((nv, 2))
    for i in nb.prange(nv):
        w = np.float64(pos[i, 3])
        scr[i, 0] = (np.float64(pos[i, 0]) / w + 1.0) * 0.5 * width
        scr[i, 1] = (np.float64(pos[i, 1]) / w + 1.0) * 0.5 * height
    wind = np.empty(nf, np.int8)
    for t in nb.prange(nf):
        i0, i1, i2 = tris[t, 0], tris[t, 1], tris[t, 2]
        a = ((scr[i1, 0] - scr[i0, 0]) * (scr[i2, 1] - scr[i0, 1])
             - (scr[i2, 0] - scr[i0, 0]) * (scr[i1, 1] - scr[i0, 1]))
        wind[t] = 1 if a > 0 else (-1 if a < 0 else 0)
    sil = np.zeros((nf, 3), np.bool_)
    for t in nb.prange(nf):
        for i in range(3):
            n = nbr[t, i]
            sil[t, i] = n < 0 or wind[n] != wind[t]
    return scr, sil


@nb.njit(cache=True, inline="always")
def _crossing(scr, tris, sil, t, ax, ay, bx, by):  # pragma: no cover - compiled
    """Fraction along A→B where the segment leaves triangle t through a silhouette edge, or -1."""
    best = -1.0
    for i in range(3):
        if not sil[t, i]:
            continue
        j = tris[t, (i + 1) % 3]
        k = tris[t, (i + 2) % 3]
        jx, jy = scr[j, 0], scr[j, 1]
        ex, ey = scr[k, 0] - jx, scr[k, 1] - jy
        da = ex * (ay - jy) - ey * (ax - jx)   # signed distances of A and B to the edge line
        db = ex * (by - jy) - ey * (bx - jx)
        if (da > 0) == (db > 0) or da == db:
            continue
        s = da / (da - db)
        px, py = ax + s * (bx - ax), ay + s * (by - ay)
        q = ((px - jx) * ex + (py - jy) * ey) / (ex * ex + ey * ey)
        if 0.0 <= q <= 1.0 and 0.0 <= s <= 1.0 and s > best:  # within the edge segment
            best = s
    return best


@nb.njit(cache=True, inline="always")
def _pair(color, rast, scr, tris, sil, r, c, r2, c2, out):  # pragma: no cover - compiled
    ta = np.int64(rast[r, c, 3]) - 1
    tb = np.int64(rast[r2, c2, 3]) - 1
    if ta == tb:
        return
    if tb < 0 or (ta >= 0 and rast[r, c, 2] <= rast[r2, c2, 2]):
        fr, fc, orr, oc, t = r, c, r2, c2, ta
    else:
        fr, fc, orr, oc, t = r2, c2, r, c, tb
    if not (sil[t, 0] or sil[t, 1] or sil[t, 2]):
        return
    s = _crossing(scr, tris, sil, t, fc + 0.5, fr + 0.5, oc + 0.5, orr + 0.5)
    if s < 0.0:
        return
    if s > 0.5:
        for q in range(color.shape[2]):
            out[orr, oc, q] += (s - 0.5) * (color[fr, fc, q] - color[orr, oc, q])
    else:
        for q in range(color.shape[2]):
            out[fr, fc, q] += (0.5 - s) * (color[orr, oc, q] - color[fr, fc, q])


@nb.njit(parallel=True, cache=True, nogil=True)
def _antialias(color, rast, scr, tris, sil, out):  # pragma: no cover - compiled
    h, w = color.shape[0], color.shape[1]
    for r in nb.prange(h):                    # horizontal pairs write only row r
        for c in range(w - 1):
            _pair(color, rast, scr, tris, sil, r, c, r, c + 1, out)
    for parity in range(2):                   # vertical pairs (r, r+1): disjoint rows per pass
        for k in nb.prange((h - parity) // 2):
            r = 2 * k + parity
            if r + 1 < h:
                for c in range(w):
                    _pair(color, rast, scr, tris, sil, r, c, r + 1, c, out)


def antialias(color: np.ndarray, rast: np.ndarray, pos: np.ndarray, tris: np.ndarray,
              neighbours: np.ndarray | None = None) -> np.ndarray:
    """Blend colours across silhouette edges (see the module docstring).

    ``color`` ``(H, W, C)`` float32/float64 (e.g. from ``interpolate``); ``rast``, ``pos`` (clip
    space ``(V, 4)``) and ``tris`` exactly as given to / returned by ``rasterize``;
    ``neighbours`` from :func:`edge_neighbours` (computed here when omitted). Returns a new array
    like ``color``.
    """
    from .raster import check_mesh, check_rast

    if color.ndim != 3 or color.shape[:2] != rast.shape[:2]:
        raise ValueError("color must be (H, W, C) matching rast")
    check_mesh(pos, tris)
    check_rast(rast, tris, pos.shape[0])
    nbr = edge_neighbours(tris) if neighbours is None else np.ascontiguousarray(neighbours, np.int32)
    if nbr.shape != tris.shape:
        raise ValueError("neighbours must be edge_neighbours(tris), shape (F, 3)")
    color = np.ascontiguousarray(color)
    h, w = color.shape[:2]
    scr, sil = _prepare(np.ascontiguousarray(pos), tris, nbr, h, w)
    out = color.copy()
    _antialias(color, rast, scr, tris, sil, out)
    return out
