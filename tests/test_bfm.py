"""BFM (Deep3DFaceRecon's BFM_model_front.mat layout): loader conventions, the 257-coefficient
layout against Deep3DFaceRecon's own formulas, the MediaPipe correspondence, and tracking a real
clip into the 257 layout (also through ``face3d batch``).

No BFM file is shipped or needed: :func:`make_synthetic_bfm` writes a small ``.mat`` with the same
keys, shapes and conventions (decimetres, 1-based ``tri``/``keypoints``, interleaved xyz rows),
built from the ICT face (front face decimated by vertex clustering) so it is face-shaped and
MediaPipe-trackable.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from tracker.bfm import (DM_TO_M, bfm257_columns, bfm_from_arrays, build_bfm_correspondence,
                         coefficients_257, euler_xyz, load_bfm, rotation_xyz)
from tracker.errors import ModelError
from tracker.types import FaceParams


def make_synthetic_bfm(model, path: Path, cell_m: float = 0.005, seed: int = 0) -> Path:
    """A BFM_model_front.mat look-alike from the ICT front face (see the module docstring)."""
    from tracker.correspondence import front_face_triangles

    f = front_face_triangles(model)
    used = np.unique(f)
    v = model.neutral[used].astype(np.float64)
    cells = np.floor(v / cell_m).astype(np.int64)
    _, cid = np.unique(cells, axis=0, return_inverse=True)
    cid = cid.ravel()
    # every iBUG-68 vertex keeps a cluster of its own
    kp_local = np.searchsorted(used, model.lmk68_idx)
    cid[kp_local] = cid.max() + 1 + np.arange(68)
    _, cid = np.unique(cid, return_inverse=True)
    n = int(cid.max()) + 1
    rep = np.empty(n, np.int64)  # representative vertex: nearest to its cluster's mean
    for c in range(n):
        members = np.flatnonzero(cid == c)
        mu = v[members].mean(0)
        rep[c] = members[np.argmin(np.linalg.norm(v[members] - mu, axis=1))]
    rep[cid[kp_local]] = kp_local
    local = np.searchsorted(used, f)
    tri = cid[local]
    tri = tri[(tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])]
    tri = np.unique(tri, axis=0)
    src = used[rep]
    dm = 1.0 / DM_TO_M
    rng = np.random.default_rng(seed)

    def interleave(b: np.ndarray) -> np.ndarray:  # (K, N, 3) → (3N, K)
        return np.ascontiguousarray(b.reshape(b.shape[0], -1).T, np.float32)

    exb = np.zeros((64, n, 3), np.float32)
    exb[:model.n_expression] = model.exp_basis[:, src] * dm
    tri_p = np.zeros((n, 8), np.float64)
    for k, t in enumerate(tri):
        for vv in t:
            row = tri_p[vv]
            row[np.argmax(row == 0) if (row == 0).any() else 7] = k + 1
    data = {
        "meanshape": (model.neutral[src].astype(np.float64) * dm).reshape(1, -1),
        "idBase": interleave(model.id_basis[:80, src] * dm),
        "exBase": interleave(exb),
        "meantex": np.tile([[200.0, 150.0, 130.0]], (n, 1)).reshape(1, -1),
        "texBase": interleave(rng.normal(0, 5, (80, n, 3))),
        "tri": (tri + 1).astype(np.float64),
        "keypoints": (cid[kp_local] + 1).astype(np.float64).reshape(1, 68),
        "point_buf": tri_p,
    }
    savemat(str(path), data, do_compression=False)
    return path


@pytest.fixture(scope="module")
def bfm_path(model, tmp_path_factory) -> Path:
    return make_synthetic_bfm(model, tmp_path_factory.mktemp("bfm") / "BFM_model_front.mat")


@pytest.fixture(scope="module")
def bfm(bfm_path):
    return load_bfm(bfm_path)


@pytest.fixture(scope="module")
def canonical(shared_dir) -> Path:
    return shared_dir / "models" / "mediapipe" / "canonical_face_model.obj"


# ------------------------------------------------------------------------- loader

def test_loader_shapes_units_and_conventions(bfm, bfm_path):
    from scipy.io import loadmat

    raw = loadmat(str(bfm_path))
    n = raw["meanshape"].size // 3
    assert bfm.kind == "bfm" and bfm.n_vertices == n
    assert bfm.id_basis.shape == (80, n, 3) and bfm.exp_basis.shape == (64, n, 3)
    assert bfm.extras["tex_basis"].shape == (80, n, 3) and bfm.extras["meantex"].shape == (n, 3)
    assert np.isneginf(bfm.expr_lower) and np.isposinf(bfm.expr_upper)
    assert bfm.exp_names[0] == "exp_00" and len(bfm.exp_names) == 64
    np.testing.assert_array_equal(bfm.lmk68_idx, raw["keypoints"].ravel().astype(int) - 1)
    assert bfm.faces.min() == 0 and bfm.faces.max() == n - 1
    # recentred and in metres: a face about 15 cm wide, centroid at the origin
    np.testing.assert_allclose(bfm.neutral.mean(0), 0.0, atol=1e-6)
    assert 0.10 < np.ptp(bfm.neutral[:, 0]) < 0.25
    # +x is the subject's left: left outer eye corner (45) at larger x than the right one (36)
    assert bfm.neutral[bfm.lmk68_idx[45], 0] > bfm.neutral[bfm.lmk68_idx[36], 0]
    # triangles counter-clockwise from the front: normals of the front face point +z on average
    v = bfm.neutral[bfm.faces]
    assert np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 2].sum() > 0


def test_vertices_match_deep3dfacerecon_compute_shape(bfm, bfm_path):
    """FaceModel vertices × 10 == Deep3DFaceRecon's ``compute_shape`` on the raw .mat."""
    from scipy.io import loadmat

    from tracker.facemodel import vertices

    raw = loadmat(str(bfm_path))
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=80), rng.normal(size=64)
    mean = raw["meanshape"].reshape(-1, 3)
    mean = (mean - mean.mean(0, keepdims=True)).reshape(-1)  # recenter=True
    ref = (raw["idBase"] @ a + raw["exBase"] @ b + mean).reshape(-1, 3)
    got = vertices(bfm, a, b) / DM_TO_M
    np.testing.assert_allclose(got, ref, atol=2e-4)


def test_loader_rejects_malformed_files(bfm_path, tmp_path):
    from scipy.io import loadmat

    raw = {k: v for k, v in loadmat(str(bfm_path)).items() if not k.startswith("__")}
    bad = dict(raw)
    del bad["exBase"]
    with pytest.raises(ModelError, match="exBase"):
        bfm_from_arrays(bad)
    bad = dict(raw, keypoints=raw["keypoints"][:, :60])
    with pytest.raises(ModelError, match="keypoints"):
        bfm_from_arrays(bad)
    bad = dict(raw, idBase=raw["idBase"][:-3])
    with pytest.raises(ModelError, match="idBase"):
        bfm_from_arrays(bad)
    (tmp_path / "x.mat").write_bytes(b"not a mat file")
    with pytest.raises(ModelError):
        load_bfm(tmp_path / "x.mat")


# ------------------------------------------------------------------------- the 257 layout

def _compute_rotation_d3d(angles: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon's ``compute_rotation`` (returns the matrix applied as ``v @ rot``)."""
    x, y, z = angles
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return (rz @ ry @ rx).T


def test_euler_xyz_round_trip_and_deep3dfacerecon_convention():
    rng = np.random.default_rng(2)
    for _ in range(50):
        ang = rng.uniform([-1.2, -1.4, -3.0], [1.2, 1.4, 3.0])
        r = rotation_xyz(ang)
        np.testing.assert_allclose(euler_xyz(r), ang, atol=1e-9)
        v = rng.normal(size=(5, 3))
        np.testing.assert_allclose(v @ _compute_rotation_d3d(ang), v @ r.T, atol=1e-12)


def test_coefficients_257_layout_and_camera_convention(bfm):
    """Deep3DFaceRecon's transform + to_camera + projection (with our intrinsics) puts a vertex on
    the same pixel as our camera model does with the original pose."""
    from tracker.camera import camera_from_fov, project, transform
    from tracker.facemodel import vertices
    from tracker.rotation import euler_to_quat, quat_to_matrix

    rng = np.random.default_rng(3)
    q = euler_to_quat(np.array(20.0), np.array(-10.0), np.array(5.0))
    p = FaceParams(q, np.array([0.03, -0.02, -0.55]), rng.normal(size=64).astype(np.float32),
                   rng.normal(size=80).astype(np.float32))
    c = coefficients_257(p)
    assert c.shape == (257,) and len(bfm257_columns()) == 257
    cols = bfm257_columns()
    assert cols[80] == "exp_00" and cols[224] == "angle_x" and cols[254] == "trans_x"
    np.testing.assert_allclose(c[:80], p.identity, atol=1e-6)
    np.testing.assert_allclose(c[80:144], p.expression, atol=1e-6)
    assert not c[144:224].any() and not c[227:254].any()  # tex, gamma: defaults
    np.testing.assert_allclose(c[254:], [0.3, -0.2, -5.5 + 10.0], atol=1e-9)
    cam = camera_from_fov(640, 480, 50.0)
    v_m = vertices(bfm, p.identity, p.expression)[bfm.lmk68_idx].astype(np.float64)
    ours = project(cam, transform(quat_to_matrix(q), p.translation, v_m))
    world = (v_m / DM_TO_M) @ _compute_rotation_d3d(c[224:227]) + c[254:]
    depth = 10.0 - world[:, 2]  # Deep3DFaceRecon's to_camera
    theirs = np.stack([cam.cx + cam.fx * world[:, 0] / depth,
                       cam.cy - cam.fy * world[:, 1] / depth], 1)  # image rows grow downward
    np.testing.assert_allclose(theirs, ours, atol=1e-6)


# ------------------------------------------------------------------------- correspondence

def test_correspondence_lies_on_the_face_and_snaps_lids_and_lips(bfm, canonical):
    corr, rep = build_bfm_correspondence(bfm, canonical)
    assert corr.mp_index.shape == (468,) and corr.vertex_ids.shape == (468, 3)
    np.testing.assert_allclose(corr.bary.sum(1), 1.0, atol=1e-6)
    assert rep.surface_distance_mm_median < 3.0, rep
    assert rep.anchor_rms_mm < 12.0, rep
    kp = set(bfm.lmk68_idx.tolist())
    from tracker.correspondence import EYE_L_UPPER, LIPS_INNER_LOWER
    for i in EYE_L_UPPER + LIPS_INNER_LOWER:
        assert corr.group[i] in ("eye_lid", "lips_inner")
        used = {int(v) for v, w in zip(corr.vertex_ids[i], corr.bary[i]) if w > 0}
        assert used <= kp
    # MediaPipe's nose tip (1) lands near BFM's keypoint 30
    pts = corr.points(bfm.neutral.astype(np.float64))
    assert np.linalg.norm(pts[1] - bfm.neutral[bfm.lmk68_idx[30]]) < 0.01


# ------------------------------------------------------------------------- tracking

N = 20


def test_track_video_bfm_writes_257_layout_consistent_with_ict(bfm, bfm_path, canonical, videos,
                                                                model, tmp_path):
    from tracker.bfm import bfm_correspondence
    from tracker.bfm_track import track_video_bfm
    from tracker.rotation import quat_to_matrix
    from tracker.track import TrackOutputs, track_video
    from tracker.trackconfig import load_track_config

    cfg = load_track_config()
    corr = bfm_correspondence(bfm, canonical)
    out = tmp_path / "d10.csv"
    s = track_video_bfm(str(videos["d10"]), bfm, cfg, out, corr=corr, max_frames=N)
    assert s.frames == N and s.tracked_frames == N
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    head, body = rows[0], np.array([[float(x) for x in r[4:]] for r in rows[1:]])
    assert head[5:262] == bfm257_columns() and len(head) == 262
    assert np.isfinite(body).all() and body[:, 0].mean() > 0.5  # confidence
    side = json.loads(Path(str(out) + ".json").read_text())
    assert side["format"] == "bfm257" and side["columns"] == head
    assert side["bfm257"]["n_coefficients"] == 257
    assert side["model"]["n_vertices"] == bfm.n_vertices  # not the tracking view's
    coef = body[:, 1:]
    assert np.abs(coef[:, 80:144]).max() > 0  # expressions were fitted
    # the head pose agrees with the ICT tracker's on the same frames (same face geometry)
    ref = tmp_path / "ict.csv"
    track_video(str(videos["d10"]), model, cfg, TrackOutputs(ref), progress=False, max_frames=N)
    with open(ref, newline="") as fh:
        ict = list(csv.DictReader(fh))
    from scipy.io import loadmat

    centroid = loadmat(str(bfm_path))["meanshape"].reshape(-1, 3).mean(0) * DM_TO_M
    for k in range(N):
        r_bfm = rotation_xyz(coef[k, 224:227])
        q = np.array([float(ict[k][c]) for c in ("qw", "qx", "qy", "qz")])
        cosang = (np.trace(r_bfm.T @ quat_to_matrix(q)) - 1) / 2
        assert np.degrees(np.arccos(np.clip(cosang, -1, 1))) < 6.0, k
        # BFM's origin is the recentred mean shape's centroid, ICT point c: t_bfm = R c + t_ict
        t_bfm = (coef[k, 254:] - [0.0, 0.0, 10.0]) * DM_TO_M
        t_ict = np.array([float(ict[k][c]) for c in ("tx_m", "ty_m", "tz_m")])
        np.testing.assert_allclose(t_bfm, quat_to_matrix(q) @ centroid + t_ict,
                                   atol=0.05 * abs(t_ict[2]))


def test_batch_with_bfm_model_writes_parquet_257(bfm_path, canonical, videos, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from test_batch import cut_clip
    from tracker.batch import BatchOptions, plan_jobs, prepare_options, run_batch
    from tracker.trackconfig import load_track_config

    cut_clip(videos["d14"], tmp_path / "in" / "d14.mp4", 8)
    opts = prepare_options(BatchOptions(str(tmp_path / "out"), str(bfm_path), load_track_config(),
                                        "parquet"), str(canonical))
    s = run_batch(plan_jobs(str(tmp_path / "in"), opts), workers=0)
    assert (s.ok, s.failed, s.frames) == (1, 0, 8)
    t = pq.read_table(tmp_path / "out" / "d14.parquet")
    assert t.column_names[5:262] == bfm257_columns() and t.num_rows == 8
    arr = np.stack([t.column(c).to_numpy() for c in t.column_names[5:262]], 1)
    assert arr.shape == (8, 257) and np.isfinite(arr).all()


def test_offline_smoothing_keeps_unbounded_expressions_exactly(bfm):
    """smooth_bfm == the project's zero-phase smoother on values it does not clip, and is linear
    (so values far outside [0, 1] are smoothed, not clipped)."""
    from tracker.bfm_track import smooth_bfm
    from tracker.track import smooth_results
    from tracker.types import FaceResult, FrameResult

    rng = np.random.default_rng(4)
    t = np.arange(90) / 30.0
    e = 0.5 + 0.2 * np.sin(2 * np.pi * 1.5 * t)[:, None] + 0.05 * rng.normal(size=(90, 64))

    def frames(ex: np.ndarray) -> list[FrameResult]:
        p = [FaceParams(np.array([1.0, 0, 0, 0]), np.array([0, 0, -0.5]), x.astype(np.float32),
                        np.zeros(80, np.float32)) for x in ex]
        return [FrameResult(i, float(ti), (FaceResult(0, "tracked", 0.9, pi),))
                for i, (ti, pi) in enumerate(zip(t, p))]

    def expr(rs: list[FrameResult]) -> np.ndarray:
        return np.array([r.faces[0].params.expression for r in rs], np.float64)

    a = expr(smooth_bfm(frames(e), bfm))
    ref = expr(smooth_results(frames(e), bfm))
    assert np.abs(a - e).max() > 0.01  # it did smooth
    np.testing.assert_allclose(a, ref, atol=1e-5)
    big = expr(smooth_bfm(frames(20.0 * (e - 0.5)), bfm))
    np.testing.assert_allclose(big, 20.0 * (ref - 0.5), atol=2e-4)
    assert big.min() < -1.0 and big.max() > 1.0
