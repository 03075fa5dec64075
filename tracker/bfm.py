"""The Basel Face Model as Deep3DFaceRecon ships it (``BFM_model_front.mat``), and its 257-number
coefficient layout.

**Loading** (:func:`load_bfm`): the ``.mat`` a user supplies (made by Deep3DFaceRecon's
``util/load_mats.py:transferBFM09``; never shipped here) holds, with ``N`` vertices (35,709 in the
real file), ``3N`` rows interleaved ``x0, y0, z0, x1, …``:

=================  ==============  ==================================================
key                shape           meaning
=================  ==============  ==================================================
``meanshape``      (1, 3N)         mean shape, decimetres
``idBase``         (3N, 80)        identity basis (PCA × std dev), decimetres
``exBase``         (3N, 64)        expression basis (PCA × std dev), decimetres
``meantex``        (1, 3N)         mean albedo, 0–255 RGB
``texBase``        (3N, 80)        albedo basis, 0–255
``tri``            (F, 3)          triangles, **1-based**
``keypoints``      (1, 68)         iBUG-68 vertex ids, **1-based**
``point_buf``      (N, 8)          triangles around each vertex, 1-based (optional here)
=================  ==============  ==================================================

It becomes a :class:`tracker.facemodel.FaceModel` with ``kind="bfm"``: metres (× 0.1), the mean
shape **recentred** on its centroid exactly as Deep3DFaceRecon's ``ParametricFaceModel(recenter=
True)`` does (so translations mean the same in both), bases ``(K, N, 3)``, expression names
``exp_00 … exp_63`` with bounds ±inf (PCA coefficients), ``lmk68_idx`` from ``keypoints``,
and the albedo in ``extras`` (``meantex (N, 3)``, ``tex_basis (80, N, 3)``, 0–255). BFM's axes are
the project's (+x subject's left, +y up, +z out of the face).

**The 257 layout** (:func:`coefficients_257`, :func:`bfm257_columns`): Deep3DFaceRecon's
``split_coeff`` order — ``id`` 80, ``exp`` 64, ``tex`` 80, ``angle`` 3 (radians, x y z), ``gamma``
27 (SH, 3 colours × 9, as an offset from the default light 0.8 on the DC term), ``trans`` 3
(decimetres). Their model puts a vertex at ``Rz(γ) Ry(β) Rx(α) v + trans`` in a world where the
camera sits at ``z = 10`` dm looking down −z; here camera space is OpenGL-style in metres, so
``trans = 10 · t + (0, 0, 10)`` and the camera's intrinsics are those of the input video (in the
sidecar), not their 224-pixel crop's. ``tex`` and ``gamma`` are zeros (mean albedo, default light)
until a regressor estimates them.

**Correspondence** (:func:`bfm_correspondence`): MediaPipe's canonical mesh aligned to the mean
face by a similarity from 13 iBUG-68 anchors, refined by trimmed ICP on the BFM surface, then each
MediaPipe point → its closest surface point; the front face has no eye or mouth openings, so the
eyelid-margin and inner-lip points snap onto the polylines through the matching keypoints (inner
lips 60-61-62-63-64 / 60-67-66-65-64, lids 36-37-38-39 / 39-40-41-36 and the left-eye twins).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .correspondence import (
    BROW_L,
    BROW_R,
    EYE_L_LOWER,
    EYE_L_UPPER,
    EYE_R_LOWER,
    EYE_R_UPPER,
    FACE_OVAL,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER,
    Correspondence,
    align_canonical,
    load_canonical_mesh,
)
from .errors import ModelError
from .facemodel import FaceModel
from .meshgeom import closest_point_on_edges, closest_point_on_mesh

log = logging.getLogger(__name__)

DM_TO_M = 0.1
CAMERA_DISTANCE_DM = 10.0
INIT_LIGHT = np.array([0.8, 0, 0, 0, 0, 0, 0, 0, 0], np.float32)
"""Deep3DFaceRecon's default SH light per colour; ``gamma`` is the offset from it."""
LAYOUT = (("id", 80), ("exp", 64), ("tex", 80), ("angle", 3), ("gamma", 27), ("trans", 3))
REQUIRED_KEYS = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "keypoints")

# (MediaPipe index, iBUG-68 index) anchors of the initial alignment
ANCHORS = ((33, 36), (133, 39), (362, 42), (263, 45), (1, 30), (2, 33), (61, 48), (291, 54),
           (0, 51), (17, 57), (13, 62), (14, 66), (152, 8))
# MediaPipe point groups snapped onto keypoint polylines (iBUG-68 ids, in order along the line)
KEYPOINT_LINES = ((LIPS_INNER_UPPER, (60, 61, 62, 63, 64), "lips_inner"),
                  (LIPS_INNER_LOWER, (60, 67, 66, 65, 64), "lips_inner"),
                  (EYE_R_UPPER, (36, 37, 38, 39), "eye_lid"), (EYE_R_LOWER, (39, 40, 41, 36), "eye_lid"),
                  (EYE_L_UPPER, (42, 43, 44, 45), "eye_lid"), (EYE_L_LOWER, (45, 46, 47, 42), "eye_lid"))
KEYPOINT_POINTS = ((33, 36, "eye_lid"), (133, 39, "eye_lid"), (362, 42, "eye_lid"),
                   (263, 45, "eye_lid"), (78, 60, "lips_inner"), (308, 64, "lips_inner"))


# ------------------------------------------------------------------------------- loading

def _flat(a: np.ndarray, n3: int, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.size != n3:
        raise ModelError(f"BFM key {name!r} has {a.size} values, expected {n3}")
    return a.reshape(-1, 3).astype(np.float64)


def _basis(a: np.ndarray, n3: int, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] != n3:
        raise ModelError(f"BFM key {name!r} has shape {a.shape}, expected ({n3}, K)")
    return np.ascontiguousarray(a.T.reshape(a.shape[1], -1, 3), np.float32)


def bfm_from_arrays(d: dict[str, np.ndarray], path: str = "") -> FaceModel:
    """Validate Deep3DFaceRecon's BFM arrays and build the :class:`FaceModel` (metres,
    recentred; see the module docstring)."""
    for k in REQUIRED_KEYS:
        if k not in d:
            raise ModelError(f"BFM file {path or '<arrays>'} lacks key {k!r}")
    n3 = int(np.asarray(d["meanshape"]).size)
    if n3 % 3 or n3 == 0:
        raise ModelError(f"BFM meanshape has {n3} values (not 3 per vertex)")
    n = n3 // 3
    mean = _flat(d["meanshape"], n3, "meanshape")
    mean = mean - mean.mean(0, keepdims=True)  # recenter=True, as Deep3DFaceRecon
    tri = np.asarray(d["tri"]).astype(np.int64) - 1
    kp = np.asarray(d["keypoints"]).ravel().astype(np.int64) - 1
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= n:
        raise ModelError("BFM tri must be (F, 3) 1-based vertex ids")
    if kp.shape != (68,) or kp.min() < 0 or kp.max() >= n:
        raise ModelError("BFM keypoints must be 68 1-based vertex ids")
    # triangles counter-clockwise seen from outside (+z for the front face)
    v0, v1, v2 = mean[tri[:, 0]], mean[tri[:, 1]], mean[tri[:, 2]]
    if np.cross(v1 - v0, v2 - v0)[:, 2].sum() < 0:
        tri = tri[:, ::-1]
    idb, exb = _basis(d["idBase"], n3, "idBase"), _basis(d["exBase"], n3, "exBase")
    texb = _basis(d["texBase"], n3, "texBase")
    extras = {"meantex": _flat(d["meantex"], n3, "meantex").astype(np.float32), "tex_basis": texb}
    if "point_buf" in d:
        extras["point_buf"] = np.asarray(d["point_buf"]).astype(np.int64) - 1
    for a in extras.values():
        a.setflags(write=False)

    def ro(a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a)
        a.setflags(write=False)
        return a

    if (idb.shape[0], exb.shape[0], texb.shape[0]) != (80, 64, 80):
        log.warning("BFM %s has %d/%d/%d id/exp/tex modes (Deep3DFaceRecon's has 80/64/80): the "
                    "coefficient layout will not be 257 long", path, idb.shape[0], exb.shape[0],
                    texb.shape[0])
    return FaceModel(
        name="BFM09 front (Deep3DFaceRecon BFM_model_front)", version=f"{n}v", path=path,
        neutral=ro((mean * DM_TO_M).astype(np.float32)), id_basis=ro(idb * DM_TO_M),
        exp_basis=ro(exb * DM_TO_M), exp_names=tuple(f"exp_{i:02d}" for i in range(exb.shape[0])),
        faces=ro(tri.astype(np.int32)), lmk68_idx=ro(kp),
        face_part=ro(np.zeros(len(tri), np.uint8)), vertex_part=ro(np.zeros(n, np.uint8)),
        part_names=("face",), part_vertex_range=ro(np.array([[0, n]], np.int32)),
        narrow_face_vertex_count=n, eye_subpart_names=(),
        eye_subpart_vertex_range=ro(np.zeros((0, 2), np.int32)),
        jaw_left_idx=ro(np.zeros(0, np.int64)), jaw_right_idx=ro(np.zeros(0, np.int64)),
        vertex_uv=ro(np.zeros((n, 2), np.float32)), kind="bfm",
        expr_lower=-np.inf, expr_upper=np.inf, extras=extras)


def load_bfm(path: str | os.PathLike[str]) -> FaceModel:
    """Load ``BFM_model_front.mat`` (scipy.io.loadmat; v5 .mat files, no pickle)."""
    from scipy.io import loadmat

    p = Path(path)
    try:
        d = loadmat(str(p))
    except Exception as e:  # noqa: BLE001 - MatReadError, OSError, v7.3 (HDF5) files, …
        raise ModelError(f"cannot read BFM file {p}: {e}") from None
    return bfm_from_arrays({k: v for k, v in d.items() if not k.startswith("__")}, str(p))


# ------------------------------------------------------------------------------- 257 layout

def bfm257_columns(n_id: int = 80, n_exp: int = 64, n_tex: int = 80) -> list[str]:
    """Coefficient column names in Deep3DFaceRecon's order (257 for the real model)."""
    return ([f"id_{i:02d}" for i in range(n_id)] + [f"exp_{i:02d}" for i in range(n_exp)]
            + [f"tex_{i:02d}" for i in range(n_tex)] + ["angle_x", "angle_y", "angle_z"]
            + [f"gamma_{c}_{k}" for c in "rgb" for k in range(9)] + ["trans_x", "trans_y", "trans_z"])


def euler_xyz(r: np.ndarray) -> np.ndarray:
    """Angles ``(x, y, z)`` radians with ``R = Rz(z) Ry(y) Rx(x)`` (Deep3DFaceRecon's
    ``compute_rotation``); ``y`` in [-π/2, π/2]."""
    r = np.asarray(r, np.float64)
    y = -np.arcsin(np.clip(r[2, 0], -1.0, 1.0))
    x = np.arctan2(r[2, 1], r[2, 2])
    z = np.arctan2(r[1, 0], r[0, 0])
    return np.array([x, y, z])


def rotation_xyz(angles: np.ndarray) -> np.ndarray:
    """``Rz(z) Ry(y) Rx(x)`` for ``angles = (x, y, z)`` radians (inverse of :func:`euler_xyz`)."""
    x, y, z = np.asarray(angles, np.float64)
    cx, sx, cy, sy, cz, sz = np.cos(x), np.sin(x), np.cos(y), np.sin(y), np.cos(z), np.sin(z)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def coefficients_257(params: object, n_tex: int = 80) -> np.ndarray:
    """One face's :class:`tracker.types.FaceParams` (BFM model) → the layout vector ``(K,)
    float64`` (``K = 257`` for 80/64/80 modes)."""
    from .rotation import quat_to_matrix

    p = params
    ang = euler_xyz(quat_to_matrix(np.asarray(p.rotation, np.float64)))  # type: ignore[attr-defined]
    trans = np.asarray(p.translation, np.float64) / DM_TO_M + [0.0, 0.0, CAMERA_DISTANCE_DM]  # type: ignore[attr-defined]
    light = getattr(p, "lighting", None)
    gamma = (np.zeros(27) if light is None
             else np.asarray(light, np.float64).reshape(3, 9) - INIT_LIGHT[None]).ravel()
    alb = getattr(p, "albedo", None)
    tex = (np.asarray(alb, np.float64).ravel() if alb is not None and np.size(alb) == n_tex
           else np.zeros(n_tex))
    return np.concatenate([np.asarray(p.identity, np.float64), np.asarray(p.expression, np.float64),  # type: ignore[attr-defined]
                           tex, ang, gamma, trans])


# ------------------------------------------------------------------------------- correspondence

@dataclass(frozen=True)
class CorrespondenceReport:
    """Fit statistics of :func:`bfm_correspondence` (millimetres)."""

    scale: float
    anchor_rms_mm: float
    surface_distance_mm_median: float
    surface_distance_mm_p95: float


def default_canonical_path() -> Path:
    """MediaPipe's canonical mesh: ``$FACE3D_CANONICAL``, else beside ``$FACE3D_MODEL``'s shared
    folder (``…/models/mediapipe/canonical_face_model.obj``), else the user cache."""
    from .facemodel import cache_dir

    env = os.environ.get("FACE3D_CANONICAL")
    if env:
        return Path(env)
    model = os.environ.get("FACE3D_MODEL")
    if model:
        p = Path(model).resolve().parents[1] / "mediapipe" / "canonical_face_model.obj"
        if p.is_file():
            return p
    return cache_dir() / "canonical_face_model.obj"


def bfm_correspondence(model: FaceModel, canonical_obj: str | os.PathLike[str] | None = None,
                       icp_iters: int = 10) -> Correspondence:
    """MediaPipe's 468 points on the BFM surface (see the module docstring)."""
    return build_bfm_correspondence(model, canonical_obj, icp_iters)[0]


def build_bfm_correspondence(model: FaceModel, canonical_obj: str | os.PathLike[str] | None = None,
                             icp_iters: int = 10) -> tuple[Correspondence, CorrespondenceReport]:
    path = Path(canonical_obj) if canonical_obj else default_canonical_path()
    if not path.is_file():
        raise ModelError(f"MediaPipe canonical mesh not found at {path}: a BFM model needs it to "
                         "map MediaPipe's points (set FACE3D_CANONICAL)")
    mp_v, _ = load_canonical_mesh(path)
    mp_v = mp_v * 0.01  # cm → m
    v = model.neutral.astype(np.float64)
    faces = model.faces.astype(np.int64)
    a_mp = np.array([a for a, _ in ANCHORS])
    a_bfm = v[model.lmk68_idx[[b for _, b in ANCHORS]]]
    s, r, t, rms0 = align_canonical(mp_v, v, faces, a_mp, a_bfm, icp_iters)
    oval = np.zeros(468, bool)
    oval[list(FACE_OVAL)] = True
    x = s * mp_v @ r.T + t
    tri, bary, cp = closest_point_on_mesh(x, v, faces)
    vids = faces[tri].copy()
    group = ["surface"] * 468
    for ids, name in ((FACE_OVAL, "oval"), (BROW_L + BROW_R, "brow"), (LIPS_OUTER, "lips_outer")):
        for i in ids:
            group[i] = name
    kp = model.lmk68_idx
    for ids, line, name in KEYPOINT_LINES:
        edges = np.array([(kp[a], kp[b]) for a, b in zip(line[:-1], line[1:])], np.int64)
        for i in ids:
            j, tt, q = closest_point_on_edges(x[i], v, edges)
            vids[i] = (edges[j, 0], edges[j, 1], edges[j, 0])
            bary[i] = (1.0 - tt, tt, 0.0)
            cp[i], group[i] = q, name
    for i, k, name in KEYPOINT_POINTS:
        vids[i] = (kp[k], kp[k], kp[k])
        bary[i] = (1.0, 0.0, 0.0)
        cp[i], group[i] = v[kp[k]], name
    d = np.linalg.norm(cp - x, axis=1)[~oval] * 1e3
    rep = CorrespondenceReport(float(s), rms0 * 1e3, float(np.median(d)), float(np.quantile(d, 0.95)))
    corr = Correspondence(np.arange(468, dtype=np.int64), vids.astype(np.int64),
                          bary.astype(np.float32), tuple(group))
    return corr, rep
