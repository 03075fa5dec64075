"""MediaPipe↔ICT tables: well-formed, reproducible from the canonical mesh where not refined,
lips meeting at rest, and the refinement pulling displaced points back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tracker.calibrate import Sequence, refine_offsets
from tracker.camera import camera_from_fov, project, transform
from tracker.correspondence import (build_correspondence, lip_contact_lines, load_correspondence,
                                    load_mp68)
from tracker.facemodel import vertices
from tracker.meshgeom import closest_point_on_mesh
from tracker.rotation import euler_to_quat, quat_to_matrix
from tracker.trackconfig import load_track_config


@pytest.fixture(scope="module")
def canonical(shared_dir):
    return shared_dir / "models" / "mediapipe" / "canonical_face_model.obj"


@pytest.fixture(scope="module")
def built(model, canonical):
    return build_correspondence(model, canonical)


def test_committed_tables_well_formed(model):
    c = load_correspondence()
    assert c.vertex_ids.shape == (468, 3) and np.all(c.mp_index == np.arange(468))
    assert np.allclose(c.bary.sum(1), 1, atol=1e-5) and c.bary.min() >= -1e-6
    assert c.vertex_ids.max() < model.narrow_face_vertex_count  # all on the front face
    assert {"surface", "oval", "brow", "eye_lid", "lips_outer", "lips_inner"} == set(c.group)
    m68 = load_mp68()
    assert m68.mp_ids.shape == (68, 3) and m68.mp_ids.max() < 468
    assert np.allclose(m68.bary.sum(1), 1, atol=1e-5)


def test_geometric_build_fits_and_reproduces_the_committed_oval(model, built):
    """The committed table starts from this build: the oval (never moved) and the 68 → MediaPipe
    table are reproduced exactly; the calibrated points stay within millimetres of it."""
    corr, mp68, rep = built
    assert 0.9 < rep["scale"] < 1.05
    assert rep["surface_distance_mm_median"] < 1.5 and rep["anchor_rms_mm_initial"] < 5
    committed = load_correspondence()
    v = model.neutral.astype(np.float64)
    oval = np.array([g == "oval" for g in committed.group])
    assert oval.sum() == 36
    assert np.allclose(corr.points(v)[oval], committed.points(v)[oval], atol=1e-6)
    moved = np.linalg.norm(corr.points(v) - committed.points(v), axis=1)
    assert np.median(moved[~oval]) < 0.003 and moved.max() < 0.008
    assert np.allclose(mp68.bary, load_mp68().bary, atol=1e-5)


def test_lips_meet_at_rest_and_part_with_jaw(model):
    c = load_correspondence()
    v0 = model.neutral.astype(np.float64)
    up, lo = lip_contact_lines(model)
    assert len(up) > 20 and len(lo) > 20
    p0 = c.points(v0)
    assert abs(p0[13, 1] - p0[14, 1]) < 0.0015  # inner lip midpoints touch (< 1.5 mm)
    e = np.zeros(53)
    e[model.exp_names.index("jawOpen")] = 1.0
    p1 = c.points(vertices(model, None, e).astype(np.float64))
    assert p1[13, 1] - p1[14, 1] > 0.025  # and part by > 2.5 cm at full jawOpen


def test_eyelid_points_close_with_blink(model):
    c = load_correspondence()
    e = np.zeros(53)
    v0 = c.points(model.neutral.astype(np.float64))
    e[model.exp_names.index("eyeBlink_L")] = 1.0
    v1 = c.points(vertices(model, None, e).astype(np.float64))
    gap0, gap1 = v0[386, 1] - v0[374, 1], v1[386, 1] - v1[374, 1]
    assert gap0 > 0.006 and gap1 < 0.35 * gap0  # the subject's left eye closes


def _displaced(model, truth, moved_ids, dx=0.003):
    """``truth`` with the points ``moved_ids`` moved ``dx`` metres sideways along the surface."""
    from tracker.correspondence import front_face_triangles

    v0 = model.neutral.astype(np.float64)
    faces = front_face_triangles(model)
    shifted = truth.points(v0)
    shifted[moved_ids, 0] += dx
    tri, bary, _ = closest_point_on_mesh(shifted[moved_ids], v0, faces)
    vids, bb = truth.vertex_ids.copy(), truth.bary.copy()
    vids[moved_ids], bb[moved_ids] = faces[tri], bary
    return replace(truth, vertex_ids=vids, bary=bb.astype(np.float32))


def test_truth_anchored_refinement_finds_a_shared_bias(model):
    """Landmarks from the true table on a face with known, varied coefficients. A table whose
    brow and forehead points sit 3 mm sideways *and* whose nose-base points sit 2 mm low (a bias
    a fit would absorb into pose) is pulled back by the truth-anchored refinement, oval kept."""
    from tracker.calibrate import Truth, truth_residuals

    truth = load_correspondence()
    v0 = model.neutral.astype(np.float64)
    moved_ids = np.array([66, 105, 296, 334, 9, 151])
    wrong = _displaced(model, truth, moved_ids)
    cam = camera_from_fov(512, 512)
    rng = np.random.default_rng(1)
    n = 16
    q = np.array([euler_to_quat(25 * np.sin(k / 3), 10 * np.cos(k / 4), 4 * np.sin(k / 5))
                  for k in range(n)])
    t = np.tile([0.0, 0.0, -0.55], (n, 1))
    ident = np.tile(rng.normal(0, 0.6, model.n_identity), (n, 1))  # one person
    expr = np.clip(rng.normal(0, 0.15, (n, 53)), 0, 1)
    pts = np.zeros((n, 478, 3), np.float32)
    for k in range(n):
        xm = truth.points(vertices(model, ident[k], expr[k]).astype(np.float64))
        pts[k, :468, :2] = project(cam, transform(quat_to_matrix(q[k]), t[k], xm))
    seq = Sequence("rendered", pts, np.arange(n) / 30, cam, truth=Truth(q, t, ident, expr))
    r_true = truth_residuals(model, truth, seq)
    assert r_true.shape == (n, 468, 3) and np.abs(r_true).max() < 1e-6
    refined, stats = refine_offsets(model, wrong, [seq], load_track_config(), rounds=3)
    pos = truth.points(v0)
    before = np.linalg.norm(wrong.points(v0)[moved_ids] - pos[moved_ids], axis=1)
    after = np.linalg.norm(refined.points(v0)[moved_ids] - pos[moved_ids], axis=1)
    assert before.mean() > 0.0025 and after.mean() < 0.2 * before.mean()
    oval = np.array([g == "oval" for g in truth.group])
    assert np.array_equal(refined.vertex_ids[oval], wrong.vertex_ids[oval])


def test_refinement_on_a_real_render_lowers_the_truth_residual(model, built, tmp_path):
    """One short clip rendered from the model, through MediaPipe: one truth-anchored round
    lowers the median residual of the geometric table against the known coefficients."""
    from tracker.calibrate import render_sequences, truth_residuals

    corr = built[0]
    seqs = render_sequences(model, tmp_path, [30], seconds=1.0, size=320)
    assert np.isfinite(seqs[0].points).all(axis=(1, 2)).mean() > 0.9  # MediaPipe sees the face
    refined, _ = refine_offsets(model, corr, seqs, load_track_config(), rounds=1)
    oval = np.array([g == "oval" for g in corr.group])

    def med(c):
        return np.median(np.linalg.norm(truth_residuals(model, c, seqs[0]), axis=2)[:, ~oval])

    assert med(refined) < 0.8 * med(corr)


def test_refinement_pulls_displaced_points_back(model):
    """Landmarks made from the true table; fitting with a table whose brow/forehead points were
    moved 3 mm sideways; refine_offsets brings them back within ~1 mm."""
    truth = load_correspondence()
    v0 = model.neutral.astype(np.float64)
    pos = truth.points(v0)
    moved_ids = np.array([66, 105, 296, 334, 9, 151])
    wrong = _displaced(model, truth, moved_ids)
    cam = camera_from_fov(512, 512)
    pts, ts = [], []
    rng = np.random.default_rng(0)
    for k in range(24):
        ypr = (20 * np.sin(k / 4), 8 * np.cos(k / 5), 3 * np.sin(k / 7))
        e = np.zeros(53)
        e[model.exp_names.index("jawOpen")] = 0.3 * (1 + np.sin(k / 3))
        xm = truth.points(vertices(model, None, e).astype(np.float64))
        uv = project(cam, transform(quat_to_matrix(euler_to_quat(*ypr)), np.array([0, 0, -0.55]), xm))
        p = np.zeros((478, 3), np.float32)
        p[:468, :2] = uv + rng.normal(0, 0.2, uv.shape)
        p[468:, :2] = uv[[33, 33, 33, 33, 33, 263, 263, 263, 263, 263]]  # irises: unused here
        pts.append(p)
        ts.append(k / 30)
    seq = Sequence("synthetic", np.array(pts), np.array(ts), cam)
    cfg = replace(load_track_config(), smooth="none")
    before = np.linalg.norm(wrong.points(v0)[moved_ids] - pos[moved_ids], axis=1)
    refined, stats = refine_offsets(model, wrong, [seq], cfg, rounds=3)
    after = np.linalg.norm(refined.points(v0)[moved_ids] - pos[moved_ids], axis=1)
    assert before.mean() > 0.0025
    assert after.mean() < 0.35 * before.mean()
    assert stats[0]["median_offset_mm"] >= stats[-1]["median_offset_mm"]
