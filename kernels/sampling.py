"""Greedy farthest-point sampling (numba): the low-poly overlay face picks its vertices with it."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def farthest_points(x: np.ndarray, seed_idx: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to ``n`` rows of ``x (N, D)``: the seeds in order, then repeatedly the point
    farthest from all chosen so far (first index on ties); stops early when every point is
    chosen (all remaining distances zero)."""
    npts, dim = x.shape
    d = np.full(npts, np.inf)
    out = np.empty(max(n, seed_idx.shape[0]), np.int64)
    k = 0
    for s in seed_idx:
        out[k] = s
        k += 1
        _update(x, d, s, npts, dim)
    while k < n:
        j = 0
        best = -1.0
        for i in range(npts):
            if d[i] > best:
                best = d[i]
                j = i
        if best <= 0.0:
            break
        out[k] = j
        k += 1
        _update(x, d, j, npts, dim)
    return out[:k]


@njit(cache=True, nogil=True, inline="always")
def _update(x, d, j, npts, dim):
    for i in range(npts):
        s = 0.0
        for c in range(dim):
            t = x[i, c] - x[j, c]
            s += t * t
        if s < d[i]:
            d[i] = s
