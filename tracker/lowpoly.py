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

:func:`lowpoly_eyes` does the same for the eyeballs' visible caps (ICT: 1,714 triangles per eye
within 70° of its axis — more than the whole low-poly face, for an eye ~20 px wide in a video
overlay): per layer (sclera, iris) the cap's vertices are laid flat by the azimuthal equidistant
projection about the eye's axis (a cap is a disk there), its rim vertices and the vertices where
the painted colour changes (iris edge, pupil) are kept, farthest-point samples fill the rest, and
Delaunay triangulates them; triangles outside the layer's own cover are dropped. ICT's iris layer
folds back into the eye (a quarter of its triangles face inward and overlap the rest when laid
flat), so each side of the fold, and each connected piece, is triangulated on its own.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay

from .correspondence import _socket_boundaries, front_face_triangles, lip_contact_lines
from .facemodel import FaceModel
from .meshgeom import boundary_edges

MASK_PX = 2048


def _uv_mask(uv: np.ndarray, tris: np.ndarray, px: int = MASK_PX) -> tuple[np.ndarray, np.ndarray, float]:
    """Rasterized coverage of ``tris`` in the UV plane: (mask (S, S) bool, uv origin, scale)."""
    import cv2

    used = uv[np.unique(tris)]
    lo = used.min(0)
    scale = (px - 1) / float(np.max(used.max(0) - lo))
    p = np.round((uv - lo) * scale * 16).astype(np.int32)  # 4 fractional bits
    mask = np.zeros((px, px), np.uint8)
    for t in tris:
        cv2.fillConvexPoly(mask, p[t], 255, cv2.LINE_8, 4)
    return mask > 0, lo, scale


def _inside(mask: np.ndarray, lo: np.ndarray, scale: float, pts: np.ndarray) -> np.ndarray:
    q = np.clip(np.round((pts - lo) * scale).astype(int), 0, mask.shape[0] - 1)
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
    return _orient(model, sel[tri[keep]], tris)


def _orient(model: FaceModel, out: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """``out`` with each triangle turned to agree with the summed normal of ``tris`` (the model's
    own triangles of that surface) at its corners."""
    v = model.neutral.astype(np.float64)
    nrm = np.cross(v[out[:, 1]] - v[out[:, 0]], v[out[:, 2]] - v[out[:, 0]])
    fn = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    ref = fn.sum(0)
    vn = np.zeros((model.n_vertices, 3))
    for c in range(3):
        np.add.at(vn, tris[:, c], fn)
    local = vn[out].sum(1)
    local[np.linalg.norm(local, axis=1) == 0] = ref
    flip = np.sum(nrm * local, 1) < 0
    out = out.copy()
    out[flip] = out[flip][:, [0, 2, 1]]
    return out


_EYE_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def lowpoly_eyes(model: FaceModel, cap_deg: float, n: int = 120,
                 albedo: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per eyeball part (``"eyeball_left"``, ``"eyeball_right"``): triangles ``(F, 3) int64``
    over model vertex ids covering the cap within ``cap_deg`` of the eye's axis with about ``n``
    vertices per layer (sclera, iris; module doc). ``albedo (V, 3)``: the colours that will be
    drawn — vertices on a colour edge are kept. Empty dict for a model without eye layers.
    Built once per model, arguments in a process."""
    akey = None if albedo is None else hash(np.ascontiguousarray(albedo).tobytes())
    key = (str(model.path), model.version, model.n_vertices, float(cap_deg), n, akey)
    if key not in _EYE_CACHE:
        _EYE_CACHE[key] = _build_eyes(model, cap_deg, n, albedo)
    return {k: v.copy() for k, v in _EYE_CACHE[key].items()}


def _build_eyes(model: FaceModel, cap_deg: float, n: int, albedo: np.ndarray | None
                ) -> dict[str, np.ndarray]:
    from .albedo import eye_axes

    ranges = dict(zip(model.eye_subpart_names, model.eye_subpart_vertex_range))
    out: dict[str, np.ndarray] = {}
    for side, (centre, ang) in eye_axes(model).items():
        part = f"eyeball_{side}"
        tris = model.part_faces(part).astype(np.int64)
        tris = tris[(ang[tris] <= np.radians(cap_deg)).all(1)]
        d = model.neutral.astype(np.float64) - centre
        phi = np.arctan2(d[:, 1], d[:, 0])
        flat = np.stack([ang * np.cos(phi), ang * np.sin(phi)], 1)  # azimuthal equidistant
        pieces = []
        for layer in ("sclera", "iris"):
            if f"{layer}_{side}" not in ranges:
                continue
            lo, hi = ranges[f"{layer}_{side}"]
            layer_tris = tris[((tris >= lo) & (tris < hi)).all(1)]
            if not len(layer_tris):
                continue
            # ICT's iris layer folds back into the eye (a quarter of its triangles face inward):
            # each side of the fold is flattened and decimated on its own
            u = flat[layer_tris]
            e1, e2 = u[:, 1] - u[:, 0], u[:, 2] - u[:, 0]
            outward = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] > 0
            for t in (*_sheets(layer_tris[outward]), *_sheets(layer_tris[~outward])):
                pieces.append(_decimate_sheet(model, t, flat, n * len(t) // len(layer_tris), albedo))
        if pieces:
            out[part] = np.concatenate(pieces)
    return out


def _sheets(tris: np.ndarray) -> list[np.ndarray]:
    """``tris`` split into edge-connected pieces."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(tris):
        return []
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    nv = int(tris.max()) + 1
    g = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(nv, nv))
    _, lab = connected_components(g, directed=False)
    comp = lab[tris[:, 0]]
    return [tris[comp == c] for c in np.unique(comp)]


def _decimate_sheet(model: FaceModel, t: np.ndarray, flat: np.ndarray, n: int,
                    albedo: np.ndarray | None) -> np.ndarray:
    """One connected sheet ``t`` of an eye layer with about ``n`` vertices (module doc); ``flat``
    holds every model vertex's azimuthal coordinates about the eye axis."""
    vs = np.unique(t)
    seeds = set(np.unique(boundary_edges(t)).tolist())
    if albedo is not None:  # keep the painted edges (iris rim, pupil) sharp
        a = np.asarray(albedo, np.float64)
        edge = np.abs(a[t] - a[t].mean(1, keepdims=True)).max((1, 2)) > 0.08
        seeds |= set(np.unique(t[edge]).tolist())
    pos = {v: k for k, v in enumerate(vs)}
    seed_idx = np.array(sorted(pos[v] for v in seeds), np.int64)
    sel = vs[_farthest_points(flat[vs], seed_idx, min(len(vs), max(n, len(seed_idx))))]
    tri = Delaunay(flat[sel]).simplices.astype(np.int64)
    mask, o, sc = _uv_mask(flat, t, 512)
    u = flat[sel][tri]
    probes = np.concatenate([u.mean(1, keepdims=True), 0.5 * (u + np.roll(u, 1, axis=1))], axis=1)
    keep = _inside(mask, o, sc, probes).all(1)
    return _orient(model, sel[tri[keep]], t)
