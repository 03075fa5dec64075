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


def test_geometric_build_fits_and_reproduces_the_lower_face(model, built):
    corr, mp68, rep = built
    assert 0.9 < rep["scale"] < 1.05
    assert rep["surface_distance_mm_median"] < 1.5 and rep["anchor_rms_mm_initial"] < 5
    committed = load_correspondence()
    v = model.neutral.astype(np.float64)
    below = corr.points(v)[:, 1] < v[model.lmk68_idx[33], 1]  # not refined: below the nose base
    assert below.sum() > 150
    assert np.allclose(corr.points(v)[below], committed.points(v)[below], atol=1e-6)
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


def test_refinement_pulls_displaced_points_back(model):
    """Landmarks made from the true table; fitting with a table whose brow/forehead points were
    moved 3 mm sideways; refine_offsets brings them back within ~1 mm."""
    from tracker.correspondence import front_face_triangles

    truth = load_correspondence()
    v0 = model.neutral.astype(np.float64)
    faces = front_face_triangles(model)
    pos = truth.points(v0)
    moved_ids = np.array([66, 105, 296, 334, 9, 151])
    shifted = pos.copy()
    shifted[moved_ids, 0] += 0.003
    tri, bary, _ = closest_point_on_mesh(shifted[moved_ids], v0, faces)
    vids, bb = truth.vertex_ids.copy(), truth.bary.copy()
    vids[moved_ids], bb[moved_ids] = faces[tri], bary
    wrong = replace(truth, vertex_ids=vids, bary=bb.astype(np.float32))
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
