"""Small triangle-mesh geometry helpers (pure numpy): closest points, boundaries, similarity fits.

Used by the correspondence builder (:mod:`tracker.correspondence`); nothing here is on the per-frame
hot path.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def closest_point_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray,
                               c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest points of ``p`` on triangles ``(a, b, c)``, all ``(N, 3)`` (Ericson, RTCD 5.1.5).

    Returns ``(points (N, 3), barycentrics (N, 3))`` with barycentrics summing to 1, each >= 0.
    """
    p, a, b, c = (np.asarray(x, np.float64) for x in (p, a, b, c))
    ab, ac, ap = b - a, c - a, p - a
    d1 = np.einsum("ij,ij->i", ab, ap)
    d2 = np.einsum("ij,ij->i", ac, ap)
    bp = p - b
    d3 = np.einsum("ij,ij->i", ab, bp)
    d4 = np.einsum("ij,ij->i", ac, bp)
    cp = p - c
    d5 = np.einsum("ij,ij->i", ab, cp)
    d6 = np.einsum("ij,ij->i", ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    n = len(p)
    bary = np.zeros((n, 3))
    done = np.zeros(n, bool)

    def put(mask: np.ndarray, w: np.ndarray) -> None:
        m = mask & ~done
        bary[m] = w[m]
        done[m] = True

    one, zero = np.ones(n), np.zeros(n)
    put((d1 <= 0) & (d2 <= 0), np.stack([one, zero, zero], 1))
    put((d3 >= 0) & (d4 <= d3), np.stack([zero, one, zero], 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        v = d1 / (d1 - d3)
        put((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.stack([1 - v, v, zero], 1))
        put((d6 >= 0) & (d5 <= d6), np.stack([zero, zero, one], 1))
        w = d2 / (d2 - d6)
        put((vb <= 0) & (d2 >= 0) & (d6 <= 0), np.stack([1 - w, zero, w], 1))
        w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        put((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), np.stack([zero, 1 - w, w], 1))
        denom = 1.0 / (va + vb + vc)
        v = vb * denom
        w = vc * denom
        put(np.ones(n, bool), np.stack([1 - v - w, v, w], 1))
    bary = np.nan_to_num(bary)
    pts = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
    return pts, bary


def vertex_triangles(faces: np.ndarray, n_vertices: int) -> list[np.ndarray]:
    """For each vertex, the ids of the triangles that use it."""
    order = np.argsort(faces.ravel(), kind="stable")
    verts = faces.ravel()[order]
    starts = np.searchsorted(verts, np.arange(n_vertices + 1))
    tri_of = order // 3
    return [tri_of[starts[i]:starts[i + 1]] for i in range(n_vertices)]


def closest_point_on_mesh(points: np.ndarray, verts: np.ndarray, faces: np.ndarray,
                          k: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest surface point for each query, searching triangles around the ``k`` nearest vertices.

    ``points (N, 3)``, ``verts (V, 3)``, ``faces (F, 3)``. Returns ``(tri (N,), bary (N, 3),
    closest (N, 3))``. Exact whenever the closest triangle touches one of the k nearest vertices
    (true for meshes with regular triangles, as here).
    """
    used = np.unique(faces)
    tree = cKDTree(verts[used])
    _, nn = tree.query(points, k=k)
    nn = used[np.atleast_2d(nn)]
    vt = vertex_triangles(faces, len(verts))
    tri_out = np.empty(len(points), np.int64)
    bary_out = np.empty((len(points), 3))
    pt_out = np.empty((len(points), 3))
    for i, p in enumerate(points):
        cand = np.unique(np.concatenate([vt[j] for j in nn[i]]))
        f = faces[cand]
        q = np.repeat(p[None], len(cand), 0)
        cp, bc = closest_point_on_triangles(q, verts[f[:, 0]], verts[f[:, 1]], verts[f[:, 2]])
        j = int(np.argmin(np.sum((cp - p) ** 2, 1)))
        tri_out[i], bary_out[i], pt_out[i] = cand[j], bc[j], cp[j]
    return tri_out, bary_out, pt_out


def boundary_edges(faces: np.ndarray) -> np.ndarray:
    """Edges ``(n, 2)`` used by exactly one triangle, oriented as in that triangle."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = np.sort(e, 1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    return e[cnt[inv.ravel()] == 1]


def closest_point_on_edges(p: np.ndarray, verts: np.ndarray,
                           edges: np.ndarray) -> tuple[int, float, np.ndarray]:
    """Closest point of one query ``p (3,)`` on segments ``edges (n, 2)``: (edge id, t, point)."""
    a = verts[edges[:, 0]]
    b = verts[edges[:, 1]]
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-30), 0, 1)
    q = a + t[:, None] * ab
    j = int(np.argmin(np.sum((q - p) ** 2, 1)))
    return j, float(t[j]), q[j]


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
            scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``dst ≈ s R src + t`` minimising weighted squared error (Umeyama 1991).

    Returns ``(s, R (3, 3), t (3,))``.
    """
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    var_s = np.sum(w * np.sum(xs * xs, 1))
    s = float(np.sum(sig * d) / var_s) if scale else 1.0
    t = mu_d - s * r @ mu_s
    return s, r, t
