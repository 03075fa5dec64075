"""MediaPipe FaceMesh ↔ ICT face correspondence: each of MediaPipe's 468 points as a point on the
ICT surface (three vertex ids + barycentric weights), and each ICT iBUG-68 landmark as a point on
MediaPipe's mesh (its "68-equivalent").

How the table is built (``face3d model correspondence``, provenance in
``tracker/data/CORRESPONDENCE.md``):

1. MediaPipe's canonical mesh (cm, +y up, +z toward the viewer, like ICT) is aligned to the ICT
   neutral face by a similarity transform from 13 semantic anchors (eye corners, nose tip,
   subnasale, mouth corners, lip midpoints, chin), then refined by a trimmed similarity ICP
   against the ICT front-face surface.
2. Every MediaPipe point goes to its closest point on the ICT front face; points on the eyelid
   margins snap to the matching eye-opening boundary loop, and the inner lip points to the lines
   where ICT's lips meet at rest (:func:`lip_contact_lines`; the mouth opening's boundary loop lies
   a centimetre inside the mouth), so blinks and mouth opening close the same gaps in both.
3. Optionally (``refine_offsets``) the surface points move by the mean residual of fits to real
   or rendered frames (see :mod:`tracker.calibrate`).

The ICT 68 points go the other way: their aligned positions are projected onto MediaPipe's
canonical surface, which defines MediaPipe's 68-equivalent points as barycentric combinations of
its 468 landmarks.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError
from .facemodel import FaceModel
from .meshgeom import (
    boundary_edges,
    closest_point_on_edges,
    closest_point_on_mesh,
    umeyama,
)

DATA_DIR = Path(__file__).resolve().parent / "data"
TABLE_MP_TO_ICT = DATA_DIR / "mediapipe_to_ict.csv"
TABLE_ICT68_ON_MP = DATA_DIR / "ict68_on_mediapipe.csv"

# MediaPipe landmark groups (indices from mediapipe.python.solutions.face_mesh_connections).
LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (95, 88, 178, 87, 14, 317, 402, 318, 324)
# "right"/"left" are the subject's: MediaPipe point 33 is the subject's right outer eye corner.
EYE_R_UPPER = (246, 161, 160, 159, 158, 157, 173)
EYE_R_LOWER = (7, 163, 144, 145, 153, 154, 155)
EYE_R_CORNERS = (33, 133)
EYE_L_UPPER = (466, 388, 387, 386, 385, 384, 398)
EYE_L_LOWER = (249, 390, 373, 374, 380, 381, 382)
EYE_L_CORNERS = (263, 362)
BROW_R = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107)
BROW_L = (276, 282, 283, 285, 293, 295, 296, 300, 334, 336)
FACE_OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234,
             251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)
IRIS_R_CENTER, IRIS_L_CENTER = 468, 473

# (MediaPipe index, ICT lmk68 index) anchors for the initial alignment.
_ANCHORS = ((33, 36), (133, 39), (362, 42), (263, 45), (1, 30), (2, 33), (61, 48), (291, 54),
            (0, 51), (17, 57), (13, 62), (14, 66), (152, 8))


@dataclass(frozen=True)
class Correspondence:
    """MediaPipe point ``mp_index[i]`` ≙ ``Σ_k bary[i, k] · v[vertex_ids[i, k]]`` on the ICT mesh.

    ``mp_index (P,) int64``, ``vertex_ids (P, 3) int64``, ``bary (P, 3) float32`` (rows sum to 1),
    ``group`` names each point's region (``lips_inner``, ``eye_lid``, ``oval``, ``surface``…).
    """

    mp_index: np.ndarray
    vertex_ids: np.ndarray
    bary: np.ndarray
    group: tuple[str, ...]

    def points(self, verts: np.ndarray) -> np.ndarray:
        """Surface points ``(P, 3)`` for vertices ``(V, 3)`` (or ``(…, V, 3)`` batches)."""
        v = np.asarray(verts)
        return np.einsum("...pkc,pk->...pc", v[..., self.vertex_ids, :], self.bary)

    def select(self, mask: np.ndarray) -> Correspondence:
        m = np.asarray(mask, bool)
        return Correspondence(self.mp_index[m], self.vertex_ids[m], self.bary[m],
                              tuple(g for g, k in zip(self.group, m) if k))


@dataclass(frozen=True)
class MediaPipe68:
    """ICT iBUG-68 landmark ``j`` ≙ ``Σ_k bary[j, k] · mp[mp_ids[j, k]]`` on MediaPipe's mesh."""

    mp_ids: np.ndarray
    bary: np.ndarray

    def points(self, mp_points: np.ndarray) -> np.ndarray:
        """MediaPipe's 68-equivalents ``(…, 68, D)`` from its landmarks ``(…, 468+, D)``."""
        p = np.asarray(mp_points)
        return np.einsum("...jkc,jk->...jc", p[..., self.mp_ids, :], self.bary)


def load_canonical_mesh(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's canonical face OBJ → ``(vertices (468, 3) cm, triangles (898, 3) int64)``.

    In its ``f v/vt`` entries the vertex and texture indices differ; only the vertex ones are used.
    """
    v, f = [], []
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("v "):
                    v.append([float(x) for x in line.split()[1:4]])
                elif line.startswith("f "):
                    f.append([int(tok.split("/")[0]) - 1 for tok in line.split()[1:4]])
    except OSError as e:
        raise ModelError(f"cannot read MediaPipe canonical mesh {path}: {e}") from None
    verts, tris = np.asarray(v, np.float64), np.asarray(f, np.int64)
    if verts.shape != (468, 3) or tris.ndim != 2 or tris.max() >= 468:
        raise ModelError(f"{path} is not MediaPipe's 468-vertex canonical face mesh")
    return verts, tris


def front_face_triangles(model: FaceModel) -> np.ndarray:
    """Triangles of the ICT front face (part ``face``, all vertices < narrow_face_vertex_count)."""
    f = model.part_faces("face")
    return f[np.all(f < model.narrow_face_vertex_count, axis=1)]


def _socket_boundaries(model: FaceModel) -> dict[str, np.ndarray]:
    """Boundary edges ``(n, 2)`` of the front face around the mouth and each eye.

    The front face's boundary falls into loops: the outer rim, the mouth opening and the two eye
    openings. Each opening is the loop whose centre is nearest to the matching iBUG-68 points.
    """
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    faces = front_face_triangles(model)
    e = boundary_edges(faces)
    n = model.n_vertices
    g = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    v = model.neutral.astype(np.float64)
    lm = v[model.lmk68_idx]
    targets = {"mouth": lm[[60, 62, 64, 66]].mean(0), "eye_right": lm[36:42].mean(0),
               "eye_left": lm[42:48].mean(0)}
    loops = {int(k): e[lab[e[:, 0]] == k] for k in np.unique(lab[e[:, 0]])}
    out = {}
    for name, c in targets.items():
        best = min(loops, key=lambda k: np.linalg.norm(v[np.unique(loops[k])].mean(0) - c))
        out[name] = loops[best]
    return out


def align_canonical(mp_v: np.ndarray, verts: np.ndarray, faces: np.ndarray, a_mp: np.ndarray,
                    a_model: np.ndarray, icp_iters: int = 10
                    ) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Similarity ``(s, R, t)`` putting MediaPipe's canonical points ``mp_v (468, 3)`` (metres) on
    a model surface ``(verts, faces)``: anchors ``mp_v[a_mp] ≙ a_model`` first, then trimmed ICP
    (closest surface points; the face oval and the worst 20 % left out; anchors weighted 6x).
    Also returns the anchors' RMS distance after the first fit (metres)."""
    s, r, t = umeyama(mp_v[a_mp], a_model)
    rms0 = float(np.sqrt(np.mean(np.sum((s * mp_v[a_mp] @ r.T + t - a_model) ** 2, 1))))
    oval = np.zeros(len(mp_v), bool)
    oval[list(FACE_OVAL)] = True
    for _ in range(icp_iters):
        x = s * mp_v @ r.T + t
        _, _, cp = closest_point_on_mesh(x, verts, faces)
        d = np.linalg.norm(cp - x, axis=1)
        w = ((~oval) & (d <= np.quantile(d[~oval], 0.8))).astype(np.float64)
        w[a_mp] += 5.0  # keep the semantic anchors in charge
        dst = cp.copy()
        dst[a_mp] = a_model
        s, r, t = umeyama(mp_v, dst, w)
    return s, r, t, rms0


def build_correspondence(model: FaceModel, canonical_obj: str | os.PathLike[str],
                         icp_iters: int = 10) -> tuple[Correspondence, MediaPipe68, dict[str, float]]:
    """Build the MediaPipe → ICT table and the ICT-68 → MediaPipe table from geometry alone.

    Returns ``(correspondence, mp68, report)``; ``report`` holds fit statistics in millimetres.
    """
    mp_v, mp_f = load_canonical_mesh(canonical_obj)
    mp_v = mp_v * 0.01  # cm → m
    ict_v = model.neutral.astype(np.float64)
    faces = front_face_triangles(model)
    a_mp = np.array([a for a, _ in _ANCHORS])
    a_ict = ict_v[model.lmk68_idx[[b for _, b in _ANCHORS]]]
    s, r, t, anchor_rms0 = align_canonical(mp_v, ict_v, faces, a_mp, a_ict, icp_iters)
    oval = np.zeros(468, bool)
    oval[list(FACE_OVAL)] = True
    x = s * mp_v @ r.T + t
    tri, bary, cp = closest_point_on_mesh(x, ict_v, faces)
    vids = faces[tri].astype(np.int64)
    group = ["surface"] * 468
    for i in FACE_OVAL:
        group[i] = "oval"
    for i in BROW_L + BROW_R:
        group[i] = "brow"
    for i in LIPS_OUTER:
        group[i] = "lips_outer"
    # Snap the eyelid margins and the inner lip line onto the socket boundary loops.
    for name, ids, edges in contour_snaps(model):
        for i in ids:
            vids[i], bary[i], cp[i] = snap_to_edges(x[i], ict_v, edges)
            group[i] = name
    corr = Correspondence(np.arange(468, dtype=np.int64), vids, bary.astype(np.float32), tuple(group))
    # ICT 68 → MediaPipe canonical surface (in the aligned frame).
    lm = ict_v[model.lmk68_idx]
    mtri, mbary, mcp = closest_point_on_mesh(lm, x, mp_f)
    mp68 = MediaPipe68(mp_f[mtri].astype(np.int64), mbary.astype(np.float32))
    d_all = np.linalg.norm(cp - x, axis=1) * 1e3
    report = {
        "scale": float(s),
        "anchor_rms_mm_initial": anchor_rms0 * 1e3,
        "surface_distance_mm_median": float(np.median(d_all[~oval])),
        "surface_distance_mm_p95": float(np.quantile(d_all[~oval], 0.95)),
        "oval_distance_mm_median": float(np.median(d_all[oval])),
        "ict68_to_mp_surface_mm_median": float(np.median(np.linalg.norm(mcp - lm, axis=1)) * 1e3),
    }
    return corr, mp68, report


def contour_snaps(model: FaceModel) -> list[tuple[str, tuple[int, ...], np.ndarray]]:
    """``(group, MediaPipe ids, segments)`` for the points that live on a contour.

    Inner lip points go to the lips' contact lines (:func:`lip_contact_lines`), upper and lower
    separately. Eyelid points go to the eye opening's boundary loop, upper and lower halves
    separately: a loop vertex is "moving" (upper lid) when eyeBlink moves it down by more than
    30% of the loop's largest motion.
    """
    bnd = _socket_boundaries(model)
    blink = {"eye_left": model.exp_basis[model.exp_names.index("eyeBlink_L"), :, 1],
             "eye_right": model.exp_basis[model.exp_names.index("eyeBlink_R"), :, 1]}
    up, lo = lip_contact_lines(model)
    out = [("lips_inner", LIPS_INNER_UPPER, np.stack([up[:-1], up[1:]], 1)),
           ("lips_inner", LIPS_INNER_LOWER, np.stack([lo[:-1], lo[1:]], 1))]
    spec = [(EYE_R_UPPER, "eye_right", True, "eye_lid"),
            (EYE_R_LOWER, "eye_right", False, "eye_lid"),
            (EYE_L_UPPER, "eye_left", True, "eye_lid"),
            (EYE_L_LOWER, "eye_left", False, "eye_lid"),
            (EYE_R_CORNERS, "eye_right", None, "eye_lid"),
            (EYE_L_CORNERS, "eye_left", None, "eye_lid")]
    for ids, sock, moving, name in spec:
        edges = bnd[sock]
        if len(edges) == 0:
            raise ModelError(f"ICT model has no {sock} boundary on the front face")
        if moving is not None:
            dy = blink[sock]
            mv = dy < 0.3 * dy[np.unique(edges)].min()
            edges = edges[mv[edges].all(1) if moving else (~mv[edges]).all(1)]
        out.append((name, ids, edges))
    return out


def snap_to_edges(p: np.ndarray, verts: np.ndarray,
                  edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest point of ``p`` on segments ``edges (n, 2)`` (vertex ids, not necessarily mesh
    edges) as (three vertex ids, weights, point); the third weight is 0."""
    j, tt, q = closest_point_on_edges(p, verts, edges)
    a, b = int(edges[j, 0]), int(edges[j, 1])
    return np.array([a, b, a], np.int64), np.array([1.0 - tt, tt, 0.0]), q


def lip_contact_lines(model: FaceModel, bin_m: float = 0.0015) -> tuple[np.ndarray, np.ndarray]:
    """The lines where the lips meet at rest, as polylines of vertex ids (upper, lower), ordered
    by x.

    Contact vertices are front-face vertices near the mouth that have a partner on the other lip
    within 1.5 mm at rest which jawOpen separates by more than 5 mm. The contact band runs back
    into the mouth; the visible line (what MediaPipe calls the inner lip contour) is its front
    edge, so per ``bin_m`` slice of x the most anterior (largest z) vertex is kept.
    """
    from scipy.spatial import cKDTree

    v = model.neutral.astype(np.float64)
    jaw = v + model.exp_basis[model.exp_names.index("jawOpen")]
    lm = v[model.lmk68_idx]
    centre = lm[[60, 62, 64, 66]].mean(0)
    vs = np.unique(front_face_triangles(model))
    cand = vs[np.linalg.norm(v[vs] - centre, axis=1) < 0.05]
    pairs = np.array(sorted(cKDTree(v[cand]).query_pairs(0.0015)), np.int64).reshape(-1, 2)
    a, b = cand[pairs[:, 0]], cand[pairs[:, 1]]
    sep = np.linalg.norm(jaw[a] - jaw[b], axis=1) > 0.005
    a, b = a[sep], b[sep]
    drop_a = jaw[a, 1] - v[a, 1]
    drop_b = jaw[b, 1] - v[b, 1]
    upper = np.unique(np.where(drop_a > drop_b, a, b))
    lower = np.unique(np.where(drop_a > drop_b, b, a))

    def front_line(ids: np.ndarray) -> np.ndarray:
        k = np.floor(v[ids, 0] / bin_m).astype(np.int64)
        out = []
        for kk in np.unique(k):
            sel = ids[k == kk]
            out.append(sel[np.argmax(v[sel, 2])])
        out = np.array(out)
        return out[np.argsort(v[out, 0])]

    return front_line(upper), front_line(lower)


# ---------------------------------------------------------------- storage (CSV, committed tables)

_HEADER_MP = ["mp_index", "v0", "v1", "v2", "b0", "b1", "b2", "group"]
_HEADER_68 = ["lmk68", "mp0", "mp1", "mp2", "b0", "b1", "b2"]


def write_tables(corr: Correspondence, mp68: MediaPipe68, comment: str,
                 mp_path: Path = TABLE_MP_TO_ICT, lmk_path: Path = TABLE_ICT68_ON_MP) -> None:
    """Write both tables as small CSVs (atomically); ``comment`` lines go first, prefixed '#'."""
    def dump(path: Path, header: list[str], rows: list[list[object]]) -> None:
        buf = io.StringIO()
        for line in comment.strip().splitlines():
            buf.write(f"# {line}\n")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, path)

    dump(mp_path, _HEADER_MP, [
        [int(m), *map(int, v), *(f"{x:.6f}" for x in b), g]
        for m, v, b, g in zip(corr.mp_index, corr.vertex_ids, corr.bary, corr.group)])
    dump(lmk_path, _HEADER_68, [
        [j, *map(int, m), *(f"{x:.6f}" for x in b)] for j, (m, b) in enumerate(zip(mp68.mp_ids, mp68.bary))])


def _read_rows(path: Path) -> list[list[str]]:
    try:
        with open(path) as fh:
            rows = [r for r in csv.reader(line for line in fh if not line.startswith("#"))]
    except OSError as e:
        raise ModelError(f"cannot read correspondence table {path}: {e}") from None
    return rows[1:]


def load_correspondence(path: Path = TABLE_MP_TO_ICT) -> Correspondence:
    rows = _read_rows(path)
    if len(rows) != 468:
        raise ModelError(f"{path}: expected 468 rows, found {len(rows)}")
    mp = np.array([int(r[0]) for r in rows], np.int64)
    vids = np.array([[int(x) for x in r[1:4]] for r in rows], np.int64)
    bary = np.array([[float(x) for x in r[4:7]] for r in rows], np.float32)
    return Correspondence(mp, vids, bary / bary.sum(1, keepdims=True), tuple(r[7] for r in rows))


def load_mp68(path: Path = TABLE_ICT68_ON_MP) -> MediaPipe68:
    rows = _read_rows(path)
    if len(rows) != 68:
        raise ModelError(f"{path}: expected 68 rows, found {len(rows)}")
    ids = np.array([[int(x) for x in r[1:4]] for r in rows], np.int64)
    bary = np.array([[float(x) for x in r[4:7]] for r in rows], np.float32)
    return MediaPipe68(ids, bary)
