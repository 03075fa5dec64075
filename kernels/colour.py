"""Colour kernels of the video overlay (nogil): RGB → planar YUV 4:2:0 for a window of a frame,
one-pass blends of a premultiplied layer or of one colour under a coverage mask, in RGB and
straight into YUV planes.

The overlay hands the encoder the decoder's own YUV planes (:mod:`tracker.overlay`) instead of
converting every RGB frame (swscale, ~0.5 ms a 512x512 frame): a shaded face is blended into the
planes in YUV (:func:`blend_layer_i420`, 0.34 ms for a 541x390 face; a face rendered smaller is
resized as it is blended, :func:`blend_scaled_layer_i420`), wire lines and dots too
(:func:`blend_mask_i420`); nothing drawn is converted from RGB. Chroma is the mean of each 2x2
block (the RGB means converted, which is the same thing: the transform is linear).

``coeffs (3, 4) float32``: rows Y, Cb, Cr; columns R, G, B weights and the offset, for RGB in
0–255 — build it with :func:`yuv_coefficients`.
"""

from __future__ import annotations

import numba
import numpy as np

_KR_KB = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 7: (0.212, 0.087),
          9: (0.2627, 0.0593)}
"""swscale colourspace id (SWS_CS_*: ITU709, FCC, ITU601, SMPTE240M, BT2020) → (Kr, Kb)."""


def yuv_coefficients(sws_colorspace: int, full_range: bool) -> np.ndarray:
    """Rows Y, Cb, Cr of ``[wR, wG, wB, offset]`` for RGB 0–255 (limited range: Y 16–235,
    chroma 16–240; full range: 0–255). Unknown colourspaces get BT.601."""
    kr, kb = _KR_KB.get(int(sws_colorspace), _KR_KB[5])
    kg = 1.0 - kr - kb
    y = np.array([kr, kg, kb]) / 255.0
    cb = (np.array([0.0, 0.0, 1.0]) / 255.0 - y) / (2.0 * (1.0 - kb))
    cr = (np.array([1.0, 0.0, 0.0]) / 255.0 - y) / (2.0 * (1.0 - kr))
    ys, cs, y0 = (255.0, 255.0, 0.0) if full_range else (219.0, 224.0, 16.0)
    return np.array([[*(y * ys), y0], [*(cb * cs), 128.0], [*(cr * cs), 128.0]], np.float32)


@numba.njit(cache=True, nogil=True, inline="always")
def _u8(x: float) -> np.uint8:
    """``x`` rounded to the nearest level and clipped to 0–255."""
    return np.uint8(min(max(x + np.float32(0.5), np.float32(0.0)), np.float32(255.0)))


@numba.njit(cache=True, nogil=True, inline="always")
def _apply(coeffs: np.ndarray, k: int, r: float, g: float, b: float) -> float:
    """Row ``k`` of ``coeffs`` (module doc) applied to ``(r, g, b)``, offset included."""
    return coeffs[k, 0] * r + coeffs[k, 1] * g + coeffs[k, 2] * b + coeffs[k, 3]


@numba.njit(cache=True, nogil=True, inline="always")
def _blend(sample: float, a: float, coeffs: np.ndarray, k: int, r: float, g: float,
           b: float) -> np.uint8:
    """A plane sample under coverage ``a`` and premultiplied colour ``(r, g, b)`` (0–255), in
    YUV: ``sample · (1 − a) + a · offset_k + M_k · (r, g, b)`` (see :func:`blend_layer_i420`)."""
    return _u8(np.float32(sample) * (np.float32(1.0) - a) + a * coeffs[k, 3]
               + coeffs[k, 0] * r + coeffs[k, 1] * g + coeffs[k, 2] * b)


@numba.njit(cache=True, nogil=True)
def rgb_to_i420(rgb: np.ndarray, coeffs: np.ndarray, y: np.ndarray, u: np.ndarray,
                v: np.ndarray) -> None:
    """Write ``rgb (h, w, 3) uint8`` (``h``, ``w`` even) into ``y (h, w)``, ``u``/``v``
    ``(h/2, w/2)`` uint8 views (e.g. windows of a frame's planes)."""
    h2, w2 = rgb.shape[0] // 2, rgb.shape[1] // 2
    for i in range(h2):
        for j in range(w2):
            sr = 0.0
            sg = 0.0
            sb = 0.0
            for di in range(2):
                for dj in range(2):
                    r = np.float32(rgb[2 * i + di, 2 * j + dj, 0])
                    g = np.float32(rgb[2 * i + di, 2 * j + dj, 1])
                    b = np.float32(rgb[2 * i + di, 2 * j + dj, 2])
                    y[2 * i + di, 2 * j + dj] = _u8(_apply(coeffs, 0, r, g, b))
                    sr += r
                    sg += g
                    sb += b
            u[i, j] = _u8(_apply(coeffs, 1, sr * 0.25, sg * 0.25, sb * 0.25))
            v[i, j] = _u8(_apply(coeffs, 2, sr * 0.25, sg * 0.25, sb * 0.25))


@numba.njit(cache=True, nogil=True, fastmath=True)
def blend_premultiplied(image: np.ndarray, rgba: np.ndarray, opacity: float) -> None:
    """``image (h, w, 3) uint8`` ← ``image · (1 − o·a) + o · rgb · 255`` in place, for a layer
    ``rgba (h, w, 4)`` float32 with colour premultiplied by its coverage ``a`` (clipped to
    [0, 1]); pixels with no coverage keep their exact value (``x · 1 + 0``, rounded). One pass,
    no temporaries (the OpenCV chain of :func:`tracker.scene.composite` makes four): 0.25 against
    0.42 ms for a 250x300 window (loaded machine)."""
    o = np.float32(opacity)
    for i in range(image.shape[0]):
        row = image[i]
        src = rgba[i]
        for j in range(image.shape[1]):
            a = min(max(src[j, 3], np.float32(0.0)), np.float32(1.0)) * o
            k = np.float32(1.0) - a
            s = o * np.float32(255.0) if a > 0 else np.float32(0.0)
            for c in range(3):
                x = (np.float32(row[j, c]) * k
                     + s * min(max(src[j, c], np.float32(0.0)), np.float32(1.0)) + np.float32(0.5))
                row[j, c] = np.uint8(min(x, np.float32(255.0)))


@numba.njit(cache=True, nogil=True, fastmath=True)
def blend_layer_i420(rgba: np.ndarray, x0: int, y0: int, opacity: float, coeffs: np.ndarray,
                     y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Blend a premultiplied layer straight into 4:2:0 planes, in YUV, in one pass.

    ``rgba (h, w, 4)`` float32 covers image pixels ``[y0, y0 + h) x [x0, x0 + w)``. Blending is
    linear, so with ``YUV = M · RGB + off`` the blend ``RGB · (1 − A) + C`` (``A = o · a``,
    ``C = o · 255 · rgb`` for opacity ``o``) is, per plane sample,
    ``s · (1 − A) + A · off + M · C``: no RGB frame is read or converted. ``Y`` uses each
    pixel's ``A`` and ``C``; ``U``/``V`` the means over their 2x2 block (pixels outside the
    layer count as uncovered), i.e. the chroma of the blended block's mean colour. Samples with
    no coverage keep their value bit for bit (``s · 1 + 0``, rounded).

    ``rgba`` C-contiguous; the planes C-contiguous for speed (strided rows work, about half as
    fast: each row's runs are then not known to be unit-stride). The chroma blocks whose four
    pixels all lie in the layer (all but its rim) go through branch-free row kernels that LLVM
    vectorizes (:func:`_blend_y_run`, :func:`_blend_uv_run`); the rim block by block (:func:`_blend_block`). A d13 face layer
    (541x390, 720x1280 frame): 0.34 ms, against 0.79 ms block by block throughout."""
    o = np.float32(opacity)
    s255 = o * np.float32(255.0)
    h, w = rgba.shape[0], rgba.shape[1]
    hh, ww = y.shape[0], y.shape[1]
    bi0, bi1 = max(y0, 0) // 2, min(y0 + h + 1, hh) // 2
    bj0, bj1 = max(x0, 0) // 2, min(x0 + w + 1, ww) // 2
    # blocks with all four pixels inside the layer (and the frame)
    ci0, ci1 = max((y0 + 1) // 2, 0), min((y0 + h) // 2, hh // 2)
    cj0, cj1 = max((x0 + 1) // 2, 0), min((x0 + w) // 2, ww // 2)
    n = cj1 - cj0
    k0, k1, k2 = coeffs[0, 0] * s255, coeffs[0, 1] * s255, coeffs[0, 2] * s255
    q = np.float32(0.25)
    cu, cv = coeffs[1].copy(), coeffs[2].copy()
    flat = rgba.reshape(-1)
    for bi in range(bi0, bi1):
        if n <= 0 or bi < ci0 or bi >= ci1:
            for bj in range(bj0, bj1):
                _blend_block(rgba, x0, y0, o, s255, coeffs, y, u, v, bi, bj)
            continue
        for bj in range(bj0, cj0):
            _blend_block(rgba, x0, y0, o, s255, coeffs, y, u, v, bi, bj)
        for bj in range(cj1, bj1):
            _blend_block(rgba, x0, y0, o, s255, coeffs, y, u, v, bi, bj)
        s = ((2 * bi - y0) * w + 2 * cj0 - x0) * 4  # the block row's first layer sample
        d = 2 * cj0
        _blend_y_run(flat[s:s + 8 * n], y[2 * bi, d:d + 2 * n], 2 * n, o, k0, k1, k2, coeffs[0, 3])
        _blend_y_run(flat[s + 4 * w:s + 4 * w + 8 * n], y[2 * bi + 1, d:d + 2 * n], 2 * n, o,
                     k0, k1, k2, coeffs[0, 3])
        _blend_uv_run(flat[s:s + 8 * n], flat[s + 4 * w:s + 4 * w + 8 * n], u[bi, cj0:cj0 + n],
                      v[bi, cj0:cj0 + n], n, q * o, q * s255, cu, cv)


@numba.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _c01(x: float) -> float:
    return min(max(x, np.float32(0.0)), np.float32(1.0))


@numba.njit(cache=True, nogil=True, fastmath=True)
def _blend_y_run(src: np.ndarray, dst: np.ndarray, n: int, o: float, k0: float, k1: float,
                 k2: float, off: float) -> None:
    """``n`` luma samples ``dst`` under ``n`` RGBA pixels ``src`` (flat), as in
    :func:`blend_layer_i420` (``k = M_Y · o · 255``). Unsigned indices: no negative-index
    wraparound, so the loop vectorizes."""
    one, half, top = np.float32(1.0), np.float32(0.5), np.float32(255.0)
    for k in range(numba.uint64(n)):
        b = numba.uint64(4) * k
        a = _c01(src[b + numba.uint64(3)]) * o
        x = (np.float32(dst[k]) * (one - a) + a * off + k0 * _c01(src[b])
             + k1 * _c01(src[b + numba.uint64(1)]) + k2 * _c01(src[b + numba.uint64(2)]) + half)
        dst[k] = np.uint8(min(x, top))  # >= 0: the Y weights and offset are


@numba.njit(cache=True, nogil=True, fastmath=True)
def _blend_uv_run(s0: np.ndarray, s1: np.ndarray, du: np.ndarray, dv: np.ndarray, n: int,
                  qo: float, qs: float, cu: np.ndarray, cv: np.ndarray) -> None:
    """``n`` chroma samples under the 2x2 blocks of two RGBA rows ``s0``, ``s1`` (flat, ``2n``
    pixels each), as in :func:`blend_layer_i420` (``qo = o / 4``, ``qs = o · 255 / 4``)."""
    one, half, zero, top = np.float32(1.0), np.float32(0.5), np.float32(0.0), np.float32(255.0)
    u0, u1, u2, u3 = cu[0], cu[1], cu[2], cu[3]
    v0, v1, v2, v3 = cv[0], cv[1], cv[2], cv[3]
    i1, i2, i3, i4 = numba.uint64(1), numba.uint64(2), numba.uint64(3), numba.uint64(4)
    for j in range(numba.uint64(n)):
        b = numba.uint64(8) * j
        a = (_c01(s0[b + i3]) + _c01(s0[b + i3 + i4]) + _c01(s1[b + i3]) + _c01(s1[b + i3 + i4])) * qo
        r = (_c01(s0[b]) + _c01(s0[b + i4]) + _c01(s1[b]) + _c01(s1[b + i4])) * qs
        g = (_c01(s0[b + i1]) + _c01(s0[b + i1 + i4]) + _c01(s1[b + i1]) + _c01(s1[b + i1 + i4])) * qs
        bl = (_c01(s0[b + i2]) + _c01(s0[b + i2 + i4]) + _c01(s1[b + i2]) + _c01(s1[b + i2 + i4])) * qs
        x = np.float32(du[j]) * (one - a) + a * u3 + u0 * r + u1 * g + u2 * bl + half
        du[j] = np.uint8(min(max(x, zero), top))
        x = np.float32(dv[j]) * (one - a) + a * v3 + v0 * r + v1 * g + v2 * bl + half
        dv[j] = np.uint8(min(max(x, zero), top))


@numba.njit(cache=True, nogil=True, fastmath=True)
def _blend_block(rgba: np.ndarray, x0: int, y0: int, o: float, s255: float, coeffs: np.ndarray,
                 y: np.ndarray, u: np.ndarray, v: np.ndarray, bi: int, bj: int) -> None:
    """One 2x2 block ``(bi, bj)`` of :func:`blend_layer_i420`, any of its pixels outside the
    layer or the frame (the layer's rim)."""
    zero, one = np.float32(0.0), np.float32(1.0)
    h, w = rgba.shape[0], rgba.shape[1]
    sa = zero
    sr = zero
    sg = zero
    sb = zero
    for di in range(2):
        py = 2 * bi + di
        ly = py - y0
        if ly < 0 or ly >= h:
            continue
        for dj in range(2):
            px = 2 * bj + dj
            lx = px - x0
            if lx < 0 or lx >= w:
                continue
            a = min(max(rgba[ly, lx, 3], zero), one) * o
            if a <= 0.0:
                continue
            r = s255 * min(max(rgba[ly, lx, 0], zero), one)
            g = s255 * min(max(rgba[ly, lx, 1], zero), one)
            b = s255 * min(max(rgba[ly, lx, 2], zero), one)
            y[py, px] = _blend(y[py, px], a, coeffs, 0, r, g, b)
            sa += a
            sr += r
            sg += g
            sb += b
    if sa > 0.0:
        q = np.float32(0.25)
        u[bi, bj] = _blend(u[bi, bj], sa * q, coeffs, 1, sr * q, sg * q, sb * q)
        v[bi, bj] = _blend(v[bi, bj], sa * q, coeffs, 2, sr * q, sg * q, sb * q)


@numba.njit(cache=True, nogil=True)
def linear_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps of ``n_in`` samples resized to ``n_out``, as OpenCV's ``INTER_LINEAR``
    places them (pixel centres at half-integers, the edge sample repeated): output ``i`` is
    ``(1 − w[i]) · src[j[i]] + w[i] · src[min(j[i] + 1, n_in − 1)]``.
    Returns ``(j int64, w float32)``."""
    j = np.empty(n_out, np.int64)
    w = np.empty(n_out, np.float32)
    scale = n_in / n_out
    for i in range(n_out):
        f = (i + 0.5) * scale - 0.5
        k = int(np.floor(f))
        if k < 0:
            j[i], w[i] = 0, 0.0
        elif k >= n_in - 1:
            j[i], w[i] = n_in - 1, 0.0
        else:
            j[i], w[i] = k, f - k
    return j, w


@numba.njit(cache=True, nogil=True)
def blend_scaled_layer_i420(small: np.ndarray, x0: int, y0: int, width: int, height: int,
                            opacity: float, coeffs: np.ndarray, y: np.ndarray, u: np.ndarray,
                            v: np.ndarray, frame_width: int) -> None:
    """:func:`blend_layer_i420` of ``small (hs, ws, 4)`` (premultiplied, float32, C-contiguous)
    resized up to ``width`` x ``height`` — without making that layer.

    The layer is resized two image rows at a time into a small buffer (bilinear, OpenCV's
    ``INTER_LINEAR`` taps: :func:`linear_taps`; equal to ``cv2.resize`` within float rounding),
    and only over the columns its non-zero alpha can reach; pixels it leaves out have zero
    coverage, which the blend keeps bit for bit anyway. Nothing at or right of ``frame_width``
    is written (the planes may be a decoder's padded rows); like :func:`blend_layer_i420` it
    expects an even frame height.

    Measured on one thread, a 200x144 render shown at 541x390 (d13's face): 0.29 ms, against
    0.16 ms for ``cv2.resize`` plus 0.26 ms for :func:`blend_layer_i420` on the 3.4 MB layer it
    makes. Replaying d13's tracked frames, drawing went from 1.85–1.93 to 1.73–1.83 ms a
    frame. In ``track --overlay`` runs (A/B, 5 rounds) the tracking thread spent 4.18 instead
    of 4.44 ms of CPU a frame."""
    hs, ws = small.shape[0], small.shape[1]
    if hs == 0 or ws == 0 or width <= 0 or height <= 0:
        return
    xi, xw = linear_taps(width, ws)
    yi, yw = linear_taps(height, hs)
    first = np.full(hs, ws, np.int64)  # per small row: first / last column with coverage
    last = np.full(hs, -1, np.int64)
    for r in range(hs):
        for c in range(ws):
            if small[r, c, 3] > 0:
                first[r] = c
                break
        for c in range(ws - 1, -1, -1):
            if small[r, c, 3] > 0:
                last[r] = c
                break
    # output columns [jlo[s], jhi[s]]: from the first whose upper tap is at or right of small
    # column s to the last whose lower tap is at or left of it (the taps are non-decreasing)
    jlo = np.empty(ws, np.int64)
    jhi = np.empty(ws, np.int64)
    a = 0
    b = -1
    for c in range(ws):
        while a < width and xi[a] + (1 if xw[a] > 0 else 0) < c:
            a += 1
        while b + 1 < width and xi[b + 1] <= c:
            b += 1
        jlo[c], jhi[c] = a, b
    _blend_scaled(small, xi, xw, yi, yw, first, last, jlo, jhi, x0, y0, width, height,
                  np.float32(opacity), coeffs, y, u, v, min(frame_width, y.shape[1]))


@numba.njit(cache=True, nogil=True, fastmath=True)
def _lerp_run(a: np.ndarray, b: np.ndarray, dst: np.ndarray, n: int, w: float) -> None:
    """``dst[:n] = a · (1 − w) + b · w`` (unsigned indices, so the loop vectorizes)."""
    k = np.float32(1.0) - w
    for i in range(numba.uint64(n)):
        dst[i] = a[i] * k + b[i] * w


@numba.njit(cache=True, nogil=True, fastmath=True)
def _resize_row(src: np.ndarray, xi: np.ndarray, xw: np.ndarray, dst: np.ndarray, j0: int,
                j1: int) -> None:
    """Output columns ``[j0, j1)`` of one RGBA row ``src (ws, 4)`` resized across into ``dst``
    (flat, 4 per column)."""
    one = np.float32(1.0)
    last = src.shape[0] - 1
    for j in range(j0, j1):
        s0 = xi[j]
        s1 = min(s0 + 1, last)
        w = xw[j]
        for ch in range(4):
            dst[4 * j + ch] = src[s0, ch] * (one - w) + src[s1, ch] * w


@numba.njit(cache=True, nogil=True, fastmath=True)
def _blend_scaled(small, xi, xw, yi, yw, first, last, jlo, jhi, x0, y0, width, height, o, coeffs,
                  y, u, v, ww):  # pragma: no cover - compiled
    hs = small.shape[0]
    hh = y.shape[0]
    r_lo, r_hi = max(y0, 0), min(y0 + height, hh)  # image rows and columns the layer covers
    c_lo, c_hi = max(x0, 0), min(x0 + width, ww)
    if r_lo >= r_hi or c_lo >= c_hi:
        return
    s255 = o * np.float32(255.0)
    k0, k1, k2 = coeffs[0, 0] * s255, coeffs[0, 1] * s255, coeffs[0, 2] * s255
    q = np.float32(0.25)
    cu, cv = coeffs[1].copy(), coeffs[2].copy()
    bj0, bj1 = c_lo // 2, (c_hi + 1) // 2
    rows = np.zeros((2, 2 * (bj1 - bj0), 4), np.float32)  # image rows 2bi, 2bi+1 from col 2bj0
    flat = (rows[0].reshape(-1), rows[1].reshape(-1))
    hrow = np.zeros((2, 4 * width), np.float32)  # small rows resized across, by row parity
    held = np.full(2, -1, np.int64)
    held_lo = np.zeros(2, np.int64)
    held_hi = np.zeros(2, np.int64)
    for bi in range(r_lo // 2, (r_hi + 1) // 2):
        # the columns this block row can cover: the union of its two rows' reach
        lo, hi = width, -1
        for d in range(2):
            k = 2 * bi + d - y0
            if 2 * bi + d < r_lo or 2 * bi + d >= r_hi:
                continue
            r0, r1 = yi[k], min(yi[k] + 1, hs - 1)
            if first[r0] <= last[r0]:
                lo, hi = min(lo, jlo[first[r0]]), max(hi, jhi[last[r0]])
            if first[r1] <= last[r1]:
                lo, hi = min(lo, jlo[first[r1]]), max(hi, jhi[last[r1]])
        a_lo, a_hi = max(x0 + lo, c_lo), min(x0 + hi + 1, c_hi)  # image columns [a_lo, a_hi)
        if a_lo >= a_hi:
            continue
        ba, bb = a_lo // 2, (a_hi + 1) // 2
        j0, j1 = a_lo - x0, a_hi - x0  # layer columns
        for d in range(2):
            py = 2 * bi + d
            row = flat[d]
            b0, b1 = 4 * (2 * ba - 2 * bj0), 4 * (2 * bb - 2 * bj0)
            row[b0:b1] = 0.0
            if py < r_lo or py >= r_hi:
                continue
            k = py - y0
            r0, r1 = yi[k], min(yi[k] + 1, hs - 1)
            for r in (r0, r1):  # each small row resized across once, over its own reach
                slot = r & 1
                if held[slot] != r:
                    hrow[slot][4 * held_lo[slot]:4 * held_hi[slot]] = 0.0  # zero elsewhere
                    rl, rh = 0, 0
                    if first[r] <= last[r]:
                        rl, rh = jlo[first[r]], jhi[last[r]] + 1
                        _resize_row(small[r], xi, xw, hrow[slot], rl, rh)
                    held[slot], held_lo[slot], held_hi[slot] = r, rl, rh
            c = 4 * (a_lo - 2 * bj0)
            _lerp_run(hrow[r0 & 1][4 * j0:4 * j1], hrow[r1 & 1][4 * j0:4 * j1],
                      row[c:c + 4 * (j1 - j0)], 4 * (j1 - j0), yw[k])
        # blocks wholly inside the frame go through the vectorized runs, the others one by one
        full_e = min(bb if 2 * bi + 1 < hh else ba, ww // 2)
        if full_e > ba:
            n = full_e - ba
            s = 4 * (2 * ba - 2 * bj0)
            _blend_y_run(flat[0][s:s + 8 * n], y[2 * bi, 2 * ba:2 * ba + 2 * n], 2 * n, o,
                         k0, k1, k2, coeffs[0, 3])
            _blend_y_run(flat[1][s:s + 8 * n], y[2 * bi + 1, 2 * ba:2 * ba + 2 * n], 2 * n, o,
                         k0, k1, k2, coeffs[0, 3])
            _blend_uv_run(flat[0][s:s + 8 * n], flat[1][s:s + 8 * n], u[bi, ba:ba + n],
                          v[bi, ba:ba + n], n, q * o, q * s255, cu, cv)
        for bj in range(max(full_e, ba), bb):
            _blend_block(rows, 2 * bj0, 2 * bi, o, s255, coeffs, y, u, v, bi, bj)


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(sample: float, a: float, c: float) -> np.uint8:
    """``sample · (1 − a) + a · c``, rounded and clipped (:func:`_u8`): one sample under a flat
    colour ``c`` at coverage ``a``."""
    return _u8(np.float32(sample) * (np.float32(1.0) - a) + a * c)


@numba.njit(cache=True, nogil=True, fastmath=True)
def blend_mask_i420(mask: np.ndarray, x0: int, y0: int, colour: np.ndarray, opacity: float,
                    y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Blend one flat colour under a coverage mask straight into 4:2:0 planes, in one pass.

    ``mask (h, w)`` uint8 (255: fully covered) covers image pixels ``[y0, y0 + h) x
    [x0, x0 + w)``, which must be even (``x0``, ``y0``, ``h``, ``w``) and inside the frame
    (lines and dots: :class:`tracker.drawer.Marks`); ``colour (3,)`` float32 is the colour's
    ``(Y, Cb, Cr)`` (:func:`yuv_coefficients` applied to it). With ``A = opacity · mask / 255``
    each luma sample becomes ``s · (1 − A) + A · Y``, each chroma sample the same with the mean
    ``A`` of its 2x2 block — the chroma of the blended block's mean colour, as in
    :func:`blend_layer_i420`. Samples with no coverage keep their value bit for bit."""
    o = np.float32(opacity) / np.float32(255.0)
    cy, cu, cv = np.float32(colour[0]), np.float32(colour[1]), np.float32(colour[2])
    for i in range(mask.shape[0] // 2):
        m0, m1 = mask[2 * i], mask[2 * i + 1]
        ya, yb = y[y0 + 2 * i], y[y0 + 2 * i + 1]
        ur, vr = u[y0 // 2 + i], v[y0 // 2 + i]
        for j in range(mask.shape[1] // 2):
            if (m0[2 * j] | m0[2 * j + 1] | m1[2 * j] | m1[2 * j + 1]) == 0:
                continue  # most of a wireframe's window: nothing to blend
            c = x0 // 2 + j
            a00, a01 = np.float32(m0[2 * j]) * o, np.float32(m0[2 * j + 1]) * o
            a10, a11 = np.float32(m1[2 * j]) * o, np.float32(m1[2 * j + 1]) * o
            ya[2 * c] = _mix(ya[2 * c], a00, cy)
            ya[2 * c + 1] = _mix(ya[2 * c + 1], a01, cy)
            yb[2 * c] = _mix(yb[2 * c], a10, cy)
            yb[2 * c + 1] = _mix(yb[2 * c + 1], a11, cy)
            a = (a00 + a01 + a10 + a11) * np.float32(0.25)
            ur[c] = _mix(ur[c], a, cu)
            vr[c] = _mix(vr[c], a, cv)


@numba.njit(cache=True, nogil=True, fastmath=True)
def blend_mask(image: np.ndarray, mask: np.ndarray, colour: np.ndarray, opacity: float) -> None:
    """``image (h, w, 3) uint8`` ← ``image · (1 − A) + A · colour`` in place with
    ``A = opacity · mask / 255`` (``mask (h, w)`` uint8, ``colour (3,)`` float32 RGB 0–255):
    :func:`blend_mask_i420` in RGB. Pixels with no coverage keep their exact value."""
    o = np.float32(opacity) / np.float32(255.0)
    for i in range(image.shape[0]):
        row, m = image[i], mask[i]
        for j in range(image.shape[1]):
            a = np.float32(m[j]) * o
            for k in range(3):
                row[j, k] = _mix(row[j, k], a, colour[k])
