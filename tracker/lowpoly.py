"""A low-polygon version of the ICT front face for drawing overlays fast, built from the model at
run time (nothing derived from the model is stored).

Rasterizing the full front face (13,120 triangles, 6,706 vertices) cost ~3.4 ms a frame at half
resolution, mostly per-vertex and per-triangle work; the video overlay has to keep pace with
tracking. :func:`lowpoly_face` keeps a subset of the model's own vertices — every vertex on the
face's boundary loops (outline, eye openings, mouth opening), the lines where the lips meet, and
farthest-point samples in the UV plane up to ``n`` in all — and triangulates them by Delaunay in
the UV plane, where the face is a disk with the eyes and the mouth as holes (no folds, unlike any
3D projection). Triangles whose centre or edge midpoints fall in a hole, or that join an upper and
a lower lid or lip, are dropped; orientation follows the original mesh. The vertices are model
vertices, so the low-poly face deforms with every identity and expression exactly at its corners.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay

from .correspondence import _socket_boundaries, front_face_triangles, lip_contact_lines
from .facemodel import FaceModel
from .meshgeom import boundary_edges

MASK_PX = 2048


def _uv_mask(uv: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Rasterized coverage of ``tris`` in the UV plane: (mask (S, S) bool, uv origin, scale)."""
    import cv2

    lo = uv.min(0)
    scale = (MASK_PX - 1) / float(np.max(uv.max(0) - lo))
    p = np.round((uv - lo) * scale * 16).astype(np.int32)  # 4 fractional bits
    mask = np.zeros((MASK_PX, MASK_PX), np.uint8)
    for t in tris:
        cv2.fillConvexPoly(mask, p[t], 255, cv2.LINE_8, 4)
    return mask > 0, lo, scale


def _inside(mask: np.ndarray, lo: np.ndarray, scale: float, pts: np.ndarray) -> np.ndarray:
    q = np.clip(np.round((pts - lo) * scale).astype(int), 0, MASK_PX - 1)
    return mask[q[..., 1], q[..., 0]]


def _farthest_points(x: np.ndarray, seed_idx: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` points of ``x (N, 2)``: the seeds, then greedy farthest-point picks."""
    from kernels.sampling import farthest_points

    return farthest_points(np.ascontiguousarray(x, np.float64), np.asarray(seed_idx, np.int64), int(n))


_CACHE: dict[tuple, np.ndarray] = {}


def lowpoly_face(model: FaceModel, n: int = 1200) -> np.ndarray:
    """Triangles ``(F, 3) int64`` over model vertex ids: the front face with about ``n`` vertices,
    outward counter-clockwise like the model's own. Built once per model file and ``n`` in a
    process (~60 ms; a copy is returned)."""
    key = (str(model.path), model.version, model.n_vertices, n)
    if key not in _CACHE:
        _CACHE[key] = _build(model, n)
    return _CACHE[key].copy()


def _build(model: FaceModel, n: int) -> np.ndarray:
    tris = front_face_triangles(model).astype(np.int64)
    vs = np.unique(tris)
    uv = model.vertex_uv.astype(np.float64)
    bnd = np.unique(boundary_edges(tris))
    up, lo = lip_contact_lines(model)
    seeds_v = np.unique(np.concatenate([bnd, up, lo]))
    pos = {v: k for k, v in enumerate(vs)}
    sel_local = _farthest_points(uv[vs], np.array([pos[v] for v in seeds_v]), max(n, len(seeds_v)))
    sel = vs[sel_local]
    tri = Delaunay(uv[sel]).simplices.astype(np.int64)
    # holes: centre and edge midpoints must lie on the face
    mask, o, sc = _uv_mask(uv, tris)
    u = uv[sel][tri]  # (F, 3, 2)
    probes = np.concatenate([u.mean(1, keepdims=True), 0.5 * (u + np.roll(u, 1, axis=1))], axis=1)
    keep = _inside(mask, o, sc, probes).all(1)
    # never join the two sides of an eye or of the mouth (the slits are thin in UV)
    side = np.zeros(model.n_vertices, np.int64)  # 0: none; +k upper, -k lower of feature k
    loops = _socket_boundaries(model)
    for k, (name, expr) in enumerate((("eye_left", "eyeBlink_L"), ("eye_right", "eyeBlink_R"),
                                      ("mouth", "jawOpen")), start=1):
        e = loops[name]
        ids = np.unique(e)
        dy = model.exp_basis[model.exp_names.index(expr), ids, 1]
        moving = dy < 0.3 * dy.min()
        upper = moving if name != "mouth" else ~moving  # the lids fall; the lower lip falls
        side[ids[upper]] = k
        side[ids[~upper]] = -k
    side[up] = 3
    side[lo] = -3
    s = side[sel][tri]
    for k in (1, 2, 3):
        keep &= ~((s == k).any(1) & (s == -k).any(1))
    out = sel[tri[keep]]
    # orientation: agree with the model's face normals
    v = model.neutral.astype(np.float64)
    nrm = np.cross(v[out[:, 1]] - v[out[:, 0]], v[out[:, 2]] - v[out[:, 0]])
    ref = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]]).sum(0)
    # per triangle: compare with the summed normal of the original triangles at its corners
    fn = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    vn = np.zeros((model.n_vertices, 3))
    for c in range(3):
        np.add.at(vn, tris[:, c], fn)
    local = vn[out].sum(1)
    local[np.linalg.norm(local, axis=1) == 0] = ref
    flip = np.sum(nrm * local, 1) < 0
    out[flip] = out[flip][:, [0, 2, 1]]
    return out
