"""Triangle rasterizer and attribute interpolation on plain arrays (numba), shaped like nvdiffrast.

``rasterize(pos, tris, (H, W))`` → ``rast`` ``(H, W, 4) float32`` = ``(u, v, z/w, triangle_id + 1)``,
``interpolate(attr, rast, tris)`` → ``(H, W, C)``; their backward kernels are
:func:`interpolate_backward` and :func:`rasterize_backward`, so a caller (the trainer) can wrap the
pair in torch autograd exactly as it would wrap ``nvdiffrast.torch``.

Convention (the same as nvdiffrast / OpenGL, pinned by ``tests/test_raster.py``):

* ``pos`` is clip space, ``(x, y, z, w)``; NDC is ``(x/w, y/w, z/w)``.
* Row ``i`` of the output covers NDC ``y`` in ``[-1 + 2i/H, -1 + 2(i+1)/H]``: row 0 is NDC
  ``y = -1`` (nvdiffrast's memory order). Column ``j`` covers NDC ``x`` in
  ``[-1 + 2j/W, -1 + 2(j+1)/W]``. **Pixel centres are at half-integers**: the pixel
  ``(i, j)`` is sampled at pixel coordinates ``(j + 0.5, i + 0.5)``, i.e. NDC
  ``((2j + 1)/W - 1, (2i + 1)/H - 1)``. (``tracker.render.clip_from_camera`` maps image ``v``
  (down) to increasing rows, so images come out top row first, like Deep3DFaceRecon's flipped
  projection.)
* ``u, v`` are the perspective-correct barycentric weights of the triangle's **first and second**
  vertex (``tris[t, 0]`` and ``tris[t, 1]``); the third weighs ``1 - u - v`` (nvdiffrast's
  ``interpolate`` does exactly this). They are the barycentrics of the point where the pixel's
  ray meets the triangle in clip space, computed in float64 from the unsnapped positions.
* ``z/w`` is the NDC depth of that point (larger = farther); pixels keep the smallest ``z/w``;
  an exact depth tie goes to the smaller triangle id. Background pixels are all zero
  (``triangle_id + 1 == 0``).

Coverage: vertices are snapped to 1/256 pixel (:data:`SUBPIXEL_BITS`), edge functions are
evaluated exactly in int64, and a pixel centre exactly on an edge belongs to the triangle for
which that edge is a *top* or *left* edge in the stored image (row 0 on top): on a vertical edge
to the triangle on the right, on a horizontal edge to the triangle below. So a closed mesh is
watertight: every pixel centre inside it is covered exactly once, and results do not depend on
thread scheduling.

Not done (unlike nvdiffrast, which clips in homogeneous space): a triangle with any vertex at
``w <= 0`` or projecting beyond :data:`GUARD_PX` pixels of the image is dropped whole; other
triangles are clipped per pixel to ``-1 <= z/w <= 1`` (exact near/far clipping when every ``w > 0``).
Degenerate triangles (zero snapped area) are never drawn. Culling (``cull``) uses the winding in
NDC with ``x`` right and ``y`` up: ``"ccw"`` drops counter-clockwise triangles, ``"cw"`` clockwise.
"""

from __future__ import annotations

import numba as nb
import numpy as np

SUBPIXEL_BITS = 8
"""Vertex positions are snapped to ``1 / 2**SUBPIXEL_BITS`` pixel for the coverage test."""
GUARD_PX = 32768.0
"""Triangles with a vertex further than this many pixels outside the image are dropped."""
MAX_RESOLUTION = 16384
"""Largest image side (keeps snapped coordinates within int32)."""
BAND_ROWS = 32
"""Rows per parallel work item (one z-buffer band)."""
CULL_MODES = {"none": 0, "ccw": 1, "cw": 2}

_SUB = float(1 << SUBPIXEL_BITS)
_HALF = 1 << (SUBPIXEL_BITS - 1)
_PAD = 4
"""Spare z-buffer columns; the coverage loop's trip count is rounded up to a multiple of this
(a power of two: the width LLVM vectorizes that loop at here, 4 x int64)."""
BAD_IDS = "rast holds triangle ids that are not in tris"
"""The error of a ``rast`` whose ids are not ``0`` or ``1..F`` (NaN included)."""


def check_mesh(pos: np.ndarray, tris: np.ndarray) -> None:
    """Raise ValueError/TypeError unless ``pos`` is (V, 4) float and ``tris`` (F, 3) int32 in range."""
    if not isinstance(pos, np.ndarray) or pos.ndim != 2 or pos.shape[1] != 4:
        raise ValueError("pos must be a (V, 4) array of clip-space positions, got "
                         f"{getattr(pos, 'shape', pos)}")
    if pos.dtype not in (np.float32, np.float64):
        raise TypeError(f"pos must be float32 or float64, got {pos.dtype}")
    if not isinstance(tris, np.ndarray) or tris.ndim != 2 or tris.shape[1] != 3 or tris.dtype != np.int32:
        raise ValueError(f"tris must be an (F, 3) int32 array, got {getattr(tris, 'shape', tris)} "
                         f"{getattr(tris, 'dtype', '')}")
    if tris.size and (tris.min() < 0 or tris.max() >= pos.shape[0]):
        raise ValueError(f"tris index outside [0, {pos.shape[0]})")


def check_rast(rast: np.ndarray, tris: np.ndarray, n_vertices: int, ids: bool = True) -> None:
    """Shapes, and every index the kernels will follow (they do no bounds checks). ``ids=False``
    skips the pass over ``rast``'s triangle ids, for a kernel that checks each id as it reads it
    (:func:`interpolate`)."""
    if (not isinstance(rast, np.ndarray) or rast.ndim != 3 or rast.shape[2] != 4
            or rast.dtype not in (np.float32, np.float64)):
        raise ValueError("rast must be an (H, W, 4) float32 (or float64) array like rasterize()'s")
    if not isinstance(tris, np.ndarray) or tris.ndim != 2 or tris.shape[1] != 3 or tris.dtype != np.int32:
        raise ValueError("tris must be the (F, 3) int32 array given to rasterize()")
    if tris.size and (tris.min() < 0 or tris.max() >= n_vertices):
        raise ValueError(f"tris index outside [0, {n_vertices})")
    if ids and rast.size and not _ids_valid(rast[..., 3], tris.shape[0]):
        raise ValueError(BAD_IDS)


def _ids_valid(ids: np.ndarray, n_tris: int) -> bool:
    """Every ``ids`` value within ``[0, n_tris]`` (NaN is not)."""
    return bool(((ids >= 0) & (ids <= n_tris)).all())


# --------------------------------------------------------------------------------------------
# Setup: one pass over the triangles.


@nb.njit(parallel=True, cache=True, nogil=True)
def _setup(pos, tris, height, width, cull):  # pragma: no cover - compiled
    nf = tris.shape[0]
    # only rows with box[t, 2] >= 0 are ever read, so the rest may stay uninitialised
    ix = np.empty((nf, 3), np.int32)       # snapped x (|x| < 2**24), positively oriented order
    iy = np.empty((nf, 3), np.int32)
    zn = np.empty((nf, 3), np.float64)     # z/w in the same order
    bias = np.empty((nf, 3), np.int8)      # 0 for owned (top/left) edges, -1 otherwise
    inv_area = np.empty(nf, np.float64)
    box = np.empty((nf, 4), np.int32)      # col0, col1, row0, row1 (inclusive); row0 = -1: dropped
    planes = np.empty((nf, 9), np.float64)  # homogeneous barycentric planes, see _bary_planes
    half_w = width * 0.5
    half_h = height * 0.5
    for t in nb.prange(nf):
        box[t, 2] = -1
        p0, p1, p2 = tris[t, 0], tris[t, 1], tris[t, 2]
        w0, w1, w2 = np.float64(pos[p0, 3]), np.float64(pos[p1, 3]), np.float64(pos[p2, 3])
        if not (w0 > 0.0 and w1 > 0.0 and w2 > 0.0):
            continue
        fx0 = (np.float64(pos[p0, 0]) / w0 + 1.0) * half_w
        fx1 = (np.float64(pos[p1, 0]) / w1 + 1.0) * half_w
        fx2 = (np.float64(pos[p2, 0]) / w2 + 1.0) * half_w
        fy0 = (np.float64(pos[p0, 1]) / w0 + 1.0) * half_h
        fy1 = (np.float64(pos[p1, 1]) / w1 + 1.0) * half_h
        fy2 = (np.float64(pos[p2, 1]) / w2 + 1.0) * half_h
        if not (abs(fx0 - half_w) < GUARD_PX and abs(fx1 - half_w) < GUARD_PX
                and abs(fx2 - half_w) < GUARD_PX and abs(fy0 - half_h) < GUARD_PX
                and abs(fy1 - half_h) < GUARD_PX and abs(fy2 - half_h) < GUARD_PX):
            continue
        z0 = np.float64(pos[p0, 2]) / w0
        z1 = np.float64(pos[p1, 2]) / w1
        z2 = np.float64(pos[p2, 2]) / w2
        if (z0 < -1.0 and z1 < -1.0 and z2 < -1.0) or (z0 > 1.0 and z1 > 1.0 and z2 > 1.0):
            continue
        x0 = np.int64(np.floor(fx0 * _SUB + 0.5))
        x1 = np.int64(np.floor(fx1 * _SUB + 0.5))
        x2 = np.int64(np.floor(fx2 * _SUB + 0.5))
        y0 = np.int64(np.floor(fy0 * _SUB + 0.5))
        y1 = np.int64(np.floor(fy1 * _SUB + 0.5))
        y2 = np.int64(np.floor(fy2 * _SUB + 0.5))
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0 or (cull == 1 and area > 0) or (cull == 2 and area < 0):
            continue
        if area < 0:  # orient positively: swap vertices 1 and 2
            x1, x2 = x2, x1
            y1, y2 = y2, y1
            z1, z2 = z2, z1
            area = -area
        c0 = max(-((_HALF - min(x0, x1, x2)) >> SUBPIXEL_BITS), 0)
        c1 = min((max(x0, x1, x2) - _HALF) >> SUBPIXEL_BITS, width - 1)
        r0 = max(-((_HALF - min(y0, y1, y2)) >> SUBPIXEL_BITS), 0)
        r1 = min((max(y0, y1, y2) - _HALF) >> SUBPIXEL_BITS, height - 1)
        if c0 > c1 or r0 > r1:
            continue
        ix[t, 0], ix[t, 1], ix[t, 2] = x0, x1, x2
        iy[t, 0], iy[t, 1], iy[t, 2] = y0, y1, y2
        zn[t, 0], zn[t, 1], zn[t, 2] = z0, z1, z2
        bias[t, 0] = _owned(x2 - x1, y2 - y1)
        bias[t, 1] = _owned(x0 - x2, y0 - y2)
        bias[t, 2] = _owned(x1 - x0, y1 - y0)
        inv_area[t] = 1.0 / np.float64(area)
        box[t, 0] = c0
        box[t, 1] = c1
        box[t, 2] = r0
        box[t, 3] = r1
        _bary_planes(pos, tris, t, planes)
    return ix, iy, zn, bias, inv_area, box, planes


@nb.njit(cache=True, inline="always")
def _owned(dx, dy):  # pragma: no cover - compiled
    """0 when an edge from a to b (``dx, dy = b - a``) is a top or left edge, else -1."""
    return 0 if (dy < 0 or (dy == 0 and dx > 0)) else -1


@nb.njit(cache=True, inline="always")
def _bary_planes(pos, tris, t, planes):  # pragma: no cover - compiled
    """Unnormalised barycentrics ``b_i = A_i*xn + B_i*yn + C_i`` at NDC ``(xn, yn)``.

    ``b_i = cross(h_j, h_k)`` with ``h = (x - xn*w, y - yn*w)`` in clip space; the quadratic terms
    cancel, so each ``b_i`` is affine in the pixel position.
    """
    for i in range(3):
        j = tris[t, (i + 1) % 3]
        k = tris[t, (i + 2) % 3]
        xj, yj, wj = np.float64(pos[j, 0]), np.float64(pos[j, 1]), np.float64(pos[j, 3])
        xk, yk, wk = np.float64(pos[k, 0]), np.float64(pos[k, 1]), np.float64(pos[k, 3])
        planes[t, 3 * i] = yj * wk - wj * yk
        planes[t, 3 * i + 1] = wj * xk - xj * wk
        planes[t, 3 * i + 2] = xj * yk - yj * xk


# --------------------------------------------------------------------------------------------
# Binning and banded z-buffer.


@nb.njit(cache=True, nogil=True)
def _bin(box, nbands, band_rows):  # pragma: no cover - compiled
    counts = np.zeros(nbands + 1, np.int64)
    for t in range(box.shape[0]):
        if box[t, 2] >= 0:
            for b in range(box[t, 2] // band_rows, box[t, 3] // band_rows + 1):
                counts[b + 1] += 1
    for b in range(nbands):
        counts[b + 1] += counts[b]
    fill = counts[:-1].copy()
    items = np.empty(counts[nbands], np.int32)
    for t in range(box.shape[0]):  # increasing t: each band's list is sorted by triangle id
        if box[t, 2] >= 0:
            for b in range(box[t, 2] // band_rows, box[t, 3] // band_rows + 1):
                items[fill[b]] = t
                fill[b] += 1
    return counts, items


@nb.njit(parallel=True, cache=True, nogil=True)
def _raster(ix, iy, zn, bias, inv_area, box, planes, counts, items,
            height, width, band_rows, out):  # pragma: no cover - compiled
    nbands = counts.shape[0] - 1
    neven = (nbands + 1) // 2
    for kk in nb.prange(nbands):
        b = 2 * kk if kk < neven else 2 * (kk - neven) + 1  # even bands, then odd: balances threads
        y0 = b * band_rows
        y1 = min(y0 + band_rows, height)
        # _PAD spare columns: each row's loop runs over a multiple of _PAD pixels (below)
        zbuf = np.full((y1 - y0, width + _PAD), np.inf)
        ibuf = np.full((y1 - y0, width + _PAD), -1, np.int32)
        for n in range(counts[b], counts[b + 1]):
            t = items[n]
            r0 = max(np.int64(box[t, 2]), y0)
            r1 = min(np.int64(box[t, 3]), y1 - 1)
            c0 = np.int64(box[t, 0])
            c1 = np.int64(box[t, 1])
            x0, x1, x2 = np.int64(ix[t, 0]), np.int64(ix[t, 1]), np.int64(ix[t, 2])
            yy0, yy1, yy2 = np.int64(iy[t, 0]), np.int64(iy[t, 1]), np.int64(iy[t, 2])
            # edge i (opposite vertex i) runs from vertex i+1 to vertex i+2
            a0, b0 = -(yy2 - yy1), x2 - x1
            a1, b1 = -(yy0 - yy2), x0 - x2
            a2, b2 = -(yy1 - yy0), x1 - x0
            s = np.int64(1 << SUBPIXEL_BITS)
            px0 = c0 * s + _HALF
            inv = inv_area[t]
            z0, z1, z2 = zn[t, 0], zn[t, 1], zn[t, 2]
            dz0 = z0 - z2
            dz1 = z1 - z2
            q0, q1, q2 = np.int64(bias[t, 0]), np.int64(bias[t, 1]), np.int64(bias[t, 2])
            st0, st1, st2 = a0 * s, a1 * s, a2 * s
            for r in range(r0, r1 + 1):
                py = r * s + _HALF
                e0 = b0 * (py - yy1) + a0 * (px0 - x1) + q0
                e1 = b1 * (py - yy2) + a1 * (px0 - x2) + q1
                e2 = b2 * (py - yy0) + a2 * (px0 - x0) + q2
                # One row's views, indexed unsigned: with no negative-index wrap-around to
                # handle, LLVM vectorizes this loop (masked stores) instead of branching per
                # pixel. The loop runs over the box's width rounded up to a multiple of _PAD,
                # so the vector loop does it all and no scalar remainder runs: pixels past the
                # box are outside the triangle, and those past the image land in the spare
                # columns, which nothing reads. Measured on d13's overlay layer (200x141, ~2,500
                # triangles of ~9 px drawn, one thread): 0.51 -> 0.29 ms; bench-render's face
                # at 512x512: 1.67 -> 1.25 ms. Ids and depth unchanged bit for bit.
                zrow = zbuf[r - y0]
                irow = ibuf[r - y0]
                for c in range(c0, c0 + ((c1 - c0) | (_PAD - 1)) + 1):
                    if e0 >= 0 and e1 >= 0 and e2 >= 0:
                        l0 = np.float64(e0 - q0) * inv
                        l1 = np.float64(e1 - q1) * inv
                        z = z2 + l0 * dz0 + l1 * dz1
                        cu = np.uint64(c)
                        if -1.0 <= z <= 1.0 and z < zrow[cu]:
                            zrow[cu] = z
                            irow[cu] = t
                    e0 += st0
                    e1 += st1
                    e2 += st2
        # resolve the band: perspective-correct barycentrics from the homogeneous planes
        for r in range(y0, y1):
            yn = (2.0 * r + 1.0) / height - 1.0
            for c in range(width):
                t = ibuf[r - y0, c]
                if t < 0:
                    out[r, c, 0] = 0.0
                    out[r, c, 1] = 0.0
                    out[r, c, 2] = 0.0
                    out[r, c, 3] = 0.0
                    continue
                xn = (2.0 * c + 1.0) / width - 1.0
                w0 = planes[t, 0] * xn + planes[t, 1] * yn + planes[t, 2]
                w1 = planes[t, 3] * xn + planes[t, 4] * yn + planes[t, 5]
                w2 = planes[t, 6] * xn + planes[t, 7] * yn + planes[t, 8]
                tot = w0 + w1 + w2
                if tot != 0.0:
                    inv_tot = 1.0 / tot
                    out[r, c, 0] = w0 * inv_tot
                    out[r, c, 1] = w1 * inv_tot
                else:
                    out[r, c, 0] = 1.0 / 3.0
                    out[r, c, 1] = 1.0 / 3.0
                out[r, c, 2] = zbuf[r - y0, c]
                out[r, c, 3] = t + 1


def rasterize(pos: np.ndarray, tris: np.ndarray, resolution: tuple[int, int], cull: str = "none",
              out: np.ndarray | None = None) -> np.ndarray:
    """Rasterize triangles (see the module docstring for every convention).

    ``pos``: ``(V, 4)`` float32 (or float64) clip-space positions, C-contiguous.
    ``tris``: ``(F, 3)`` int32 vertex ids. ``resolution``: ``(H, W)``.
    ``cull``: ``"none"``, ``"ccw"`` or ``"cw"`` (winding in NDC, ``x`` right, ``y`` up).
    ``out``: optional ``(H, W, 4) float32`` buffer to reuse.

    Returns ``rast`` ``(H, W, 4) float32``: ``u, v, z/w, triangle_id + 1`` (0 = background).
    Triangle ids up to 2**24 are exact in float32.
    """
    check_mesh(pos, tris)
    h, w = (int(resolution[0]), int(resolution[1]))
    if not (0 < h <= MAX_RESOLUTION and 0 < w <= MAX_RESOLUTION):
        raise ValueError(f"resolution must be (H, W) within 1..{MAX_RESOLUTION}, got {resolution}")
    if cull not in CULL_MODES:
        raise ValueError(f"cull must be one of {sorted(CULL_MODES)}, got {cull!r}")
    if tris.shape[0] >= 1 << 24:
        raise ValueError("more than 2**24 triangles cannot be stored exactly in float32 ids")
    if out is None:
        out = np.empty((h, w, 4), np.float32)
    elif out.shape != (h, w, 4) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous (H, W, 4) float32 array")
    pos = np.ascontiguousarray(pos)
    tris = np.ascontiguousarray(tris)
    ix, iy, zn, bias, inv_area, box, planes = _setup(pos, tris, h, w, CULL_MODES[cull])
    nbands = (h + BAND_ROWS - 1) // BAND_ROWS
    counts, items = _bin(box, nbands, BAND_ROWS)
    _raster(ix, iy, zn, bias, inv_area, box, planes, counts, items, h, w, BAND_ROWS, out)
    return out


# --------------------------------------------------------------------------------------------
# Interpolation and the backward kernels.


@nb.njit(parallel=True, cache=True, nogil=True)
def _interpolate(attr, rast, tris, out, bad):  # pragma: no cover - compiled
    # Each id is checked as it is read (bad[0] = 1 for one outside [0, F], NaN included; the
    # caller raises): a separate pass over rast's ids took 0.41 of interpolate's 1.0 ms at
    # 512x512 (bench-render).
    h, w, nc = out.shape
    top = np.float64(tris.shape[0])
    for r in nb.prange(h):
        for c in range(w):
            v = np.float64(rast[r, c, 3])
            if not (v >= 0.0 and v <= top):
                bad[0] = 1
                v = 0.0
            t = np.int64(v) - 1
            if t < 0:
                for q in range(nc):
                    out[r, c, q] = 0.0
                continue
            b0 = rast[r, c, 0]
            b1 = rast[r, c, 1]
            b2 = 1.0 - b0 - b1
            i0, i1, i2 = tris[t, 0], tris[t, 1], tris[t, 2]
            for q in range(nc):
                out[r, c, q] = b0 * attr[i0, q] + b1 * attr[i1, q] + b2 * attr[i2, q]


def interpolate(attr: np.ndarray, rast: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Interpolate vertex attributes: ``out = u*a[t0] + v*a[t1] + (1-u-v)*a[t2]``.

    ``attr`` ``(V, C)`` float32 or float64; ``rast`` from :func:`rasterize` (float64 accepted, e.g.
    for finite differences); ``tris`` the same
    ``(F, 3) int32``. Returns ``(H, W, C)`` in ``attr``'s dtype, zero on background pixels.
    """
    if not isinstance(attr, np.ndarray) or attr.ndim != 2 or attr.dtype not in (np.float32, np.float64):
        raise ValueError("attr must be a (V, C) float32/float64 array")
    check_rast(rast, tris, attr.shape[0], ids=False)
    out = np.empty(rast.shape[:2] + (attr.shape[1],), attr.dtype)
    bad = np.zeros(1, np.int8)
    _interpolate(np.ascontiguousarray(attr), np.ascontiguousarray(rast), np.ascontiguousarray(tris),
                 out, bad)
    if bad[0]:
        raise ValueError(BAD_IDS)
    return out


@nb.njit(cache=True, nogil=True)
def _interpolate_backward(grad_out, rast, tris, attr, grad_attr, grad_rast):  # pragma: no cover
    h, w, nc = grad_out.shape
    for r in range(h):
        for c in range(w):
            t = np.int64(rast[r, c, 3]) - 1
            if t < 0:
                continue
            b0 = np.float64(rast[r, c, 0])
            b1 = np.float64(rast[r, c, 1])
            b2 = 1.0 - b0 - b1
            i0, i1, i2 = tris[t, 0], tris[t, 1], tris[t, 2]
            gu = 0.0
            gv = 0.0
            for q in range(nc):
                g = grad_out[r, c, q]
                gu += g * (attr[i0, q] - attr[i2, q])
                gv += g * (attr[i1, q] - attr[i2, q])
                grad_attr[i0, q] += b0 * g
                grad_attr[i1, q] += b1 * g
                grad_attr[i2, q] += b2 * g
            grad_rast[r, c, 0] = gu
            grad_rast[r, c, 1] = gv


def interpolate_backward(grad_out: np.ndarray, rast: np.ndarray, tris: np.ndarray,
                         attr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of :func:`interpolate` (nvdiffrast's ``interpolate_grad`` layout).

    ``grad_out`` ``(H, W, C)`` is dL/d(out). Returns ``grad_attr`` ``(V, C)`` (attr's dtype) and
    ``grad_rast`` ``(H, W, 4)`` (float64) with dL/du, dL/dv in channels 0, 1 and zeros in 2, 3.
    Accumulated serially, so the result is deterministic.
    """
    if not isinstance(attr, np.ndarray) or attr.ndim != 2:
        raise ValueError("attr must be a (V, C) array")
    check_rast(rast, tris, attr.shape[0])
    if grad_out.shape[:2] != rast.shape[:2] or grad_out.shape[2] != attr.shape[1]:
        raise ValueError("grad_out must be (H, W, C) matching rast and attr")
    grad_attr = np.zeros(attr.shape, np.float64)
    grad_rast = np.zeros(rast.shape, np.float64)
    _interpolate_backward(np.ascontiguousarray(grad_out), rast, np.ascontiguousarray(tris),
                          np.ascontiguousarray(attr), grad_attr, grad_rast)
    return grad_attr.astype(attr.dtype, copy=False), grad_rast


@nb.njit(cache=True, nogil=True)
def _rasterize_backward(grad_rast, pos, tris, rast, grad_pos):  # pragma: no cover - compiled
    h, w = rast.shape[0], rast.shape[1]
    hx = np.empty(3)
    hy = np.empty(3)
    bt = np.empty(3)
    gx = np.empty(3)
    gy = np.empty(3)
    for r in range(h):
        yn = (2.0 * r + 1.0) / h - 1.0
        for c in range(w):
            t = np.int64(rast[r, c, 3]) - 1
            gu = np.float64(grad_rast[r, c, 0])
            gv = np.float64(grad_rast[r, c, 1])
            if t < 0 or (gu == 0.0 and gv == 0.0):
                continue
            xn = (2.0 * c + 1.0) / w - 1.0
            for k in range(3):
                p = tris[t, k]
                hx[k] = np.float64(pos[p, 0]) - xn * np.float64(pos[p, 3])
                hy[k] = np.float64(pos[p, 1]) - yn * np.float64(pos[p, 3])
            for i in range(3):
                j = (i + 1) % 3
                k = (i + 2) % 3
                bt[i] = hx[j] * hy[k] - hy[j] * hx[k]
            s = bt[0] + bt[1] + bt[2]
            if s == 0.0:
                continue
            u = bt[0] / s
            v = bt[1] / s
            common = (gu * u + gv * v) / s
            for k in range(3):
                gx[k] = 0.0
                gy[k] = 0.0
            for i in range(3):
                g = (gu if i == 0 else (gv if i == 1 else 0.0)) / s - common
                j = (i + 1) % 3
                k = (i + 2) % 3
                # bt[i] = hx[j]*hy[k] - hy[j]*hx[k]
                gx[j] += g * hy[k]
                gy[k] += g * hx[j]
                gy[j] -= g * hx[k]
                gx[k] -= g * hy[j]
            for k in range(3):
                p = tris[t, k]
                grad_pos[p, 0] += gx[k]
                grad_pos[p, 1] += gy[k]
                grad_pos[p, 3] -= xn * gx[k] + yn * gy[k]


def rasterize_backward(grad_rast: np.ndarray, pos: np.ndarray, tris: np.ndarray,
                       rast: np.ndarray) -> np.ndarray:
    """Gradient of the barycentrics ``u, v`` in ``rast`` with respect to clip-space ``pos``.

    ``grad_rast`` ``(H, W, 4)``: dL/d(rast); channels 2 (depth) and 3 (ids) are ignored, as in
    nvdiffrast's ``rasterize`` without image-space derivatives. Visibility (which triangle a pixel
    sees) is held fixed: there are no silhouette gradients here (see ``kernels.antialias``).
    Returns ``grad_pos`` ``(V, 4) float64`` (the ``z`` column is zero).
    """
    check_mesh(pos, tris)
    check_rast(rast, tris, pos.shape[0])
    if grad_rast.shape != rast.shape:
        raise ValueError("grad_rast must have rast's shape (H, W, 4)")
    grad_pos = np.zeros((pos.shape[0], 4), np.float64)
    _rasterize_backward(np.ascontiguousarray(grad_rast), np.ascontiguousarray(pos),
                        np.ascontiguousarray(tris), rast, grad_pos)
    return grad_pos
