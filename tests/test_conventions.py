"""Conventions that can silently flip, each pinned by name (see tracker/types.py, camera.py,
rotation.py, facemodel.py): units, y direction, left/right, rotation signs, projection."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.camera import camera_from_focal, camera_from_fov, project, transform
from tracker.rotation import (euler_to_quat, matrix_to_quat, quat_angle_deg, quat_multiply,
                              quat_normalize, quat_to_euler, quat_to_matrix, quat_to_rotvec,
                              rotvec_to_quat)


@pytest.fixture(scope="module")
def cam():
    return camera_from_focal(640, 480, 600.0)


def nose_and_eyes(model):
    lm = model.neutral[model.lmk68_idx].astype(np.float64)
    return lm[30], lm[36], lm[45]  # nose tip, subject's right outer eye corner, left outer corner


def test_model_units_are_metres_not_recentred(model):
    nose, er, el = nose_and_eyes(model)
    # ICT npz: nose tip near (0, 0.41, 13.07) cm -> metres, not recentred
    assert nose == pytest.approx([0.0, 0.0041, 0.1307], abs=0.003)
    iod = np.linalg.norm(el - er)
    assert 0.08 < iod < 0.11  # outer eye corners ~9 cm apart


def test_model_left_is_plus_x(model):
    _, er, el = nose_and_eyes(model)
    assert el[0] > 0 > er[0]
    i_l = model.exp_names.index("eyeBlink_L")
    moved = np.linalg.norm(model.exp_basis[i_l], axis=1)
    assert model.neutral[moved > 0.5 * moved.max(), 0].mean() > 0  # _L moves the +x side


def test_model_y_up_z_out(model):
    nose, er, _ = nose_and_eyes(model)
    chin = model.neutral[model.lmk68_idx[8]]
    assert er[1] > chin[1]  # eyes above chin: +y up
    assert nose[2] > er[2]  # nose in front of the eyes: +z out of the face


def test_projection_formula_and_y_down(cam):
    x = np.array([[0.1, 0.2, -2.0]])
    u, v = project(cam, x)[0]
    assert u == pytest.approx(cam.cx + cam.fx * 0.1 / 2.0)
    assert v == pytest.approx(cam.cy - cam.fy * 0.2 / 2.0)
    assert v < cam.cy  # camera +y (up) is image up (smaller v)


def test_frontal_face_subject_left_on_image_right(model, cam):
    _, er, el = nose_and_eyes(model)
    uv = project(cam, transform(np.eye(3), np.array([0, 0, -0.6]), np.stack([er, el])))
    assert uv[1, 0] > uv[0, 0]  # the subject's left eye appears on the image right


def test_positive_yaw_turns_nose_to_image_right(model, cam):
    nose = model.neutral[model.lmk68_idx[30]].astype(np.float64)
    t = np.array([0.0, 0.0, -0.6])
    u0 = project(cam, transform(np.eye(3), t, nose[None]))[0, 0]
    r = quat_to_matrix(euler_to_quat(20.0, 0.0, 0.0))
    u1 = project(cam, transform(r, t, nose[None]))[0, 0]
    assert u1 > u0 + 10


def test_positive_pitch_tilts_nose_down(model, cam):
    nose = model.neutral[model.lmk68_idx[30]].astype(np.float64)
    t = np.array([0.0, 0.0, -0.6])
    v0 = project(cam, transform(np.eye(3), t, nose[None]))[0, 1]
    v1 = project(cam, transform(quat_to_matrix(euler_to_quat(0.0, 20.0, 0.0)), t, nose[None]))[0, 1]
    assert v1 > v0 + 10


def test_positive_roll_lifts_subject_left(model, cam):
    _, er, el = nose_and_eyes(model)
    t = np.array([0.0, 0.0, -0.6])
    uv = project(cam, transform(quat_to_matrix(euler_to_quat(0.0, 0.0, 15.0)), t, np.stack([er, el])))
    assert uv[1, 1] < uv[0, 1] - 5  # left eye higher on screen (smaller v)


def test_euler_order_and_roundtrip():
    rng = np.random.default_rng(0)
    ypr = np.column_stack([rng.uniform(-170, 170, 200), rng.uniform(-85, 85, 200), rng.uniform(-170, 170, 200)])
    q = euler_to_quat(*ypr.T)
    assert np.allclose(quat_to_euler(q), ypr, atol=1e-6)
    # R = Ry(yaw) Rx(pitch) Rz(roll)
    y, p, r = np.radians([30.0, 10.0, -20.0])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    assert np.allclose(quat_to_matrix(euler_to_quat(30.0, 10.0, -20.0)), ry @ rx @ rz)


def test_quaternion_hemisphere_and_roundtrips():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(500, 4))
    qn = quat_normalize(q)
    assert np.all(qn[:, 0] >= 0)
    assert np.allclose(np.linalg.norm(qn, axis=1), 1)
    r = quat_to_matrix(qn)
    assert np.allclose(r @ np.swapaxes(r, 1, 2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(r), 1)
    assert np.allclose(matrix_to_quat(r), qn, atol=1e-9)
    v = quat_to_rotvec(qn)
    assert np.all(np.linalg.norm(v, axis=1) <= np.pi + 1e-9)
    assert np.allclose(quat_normalize(rotvec_to_quat(v)), qn, atol=1e-9)
    assert np.allclose(quat_to_matrix(quat_multiply(qn[:-1], qn[1:])), r[:-1] @ r[1:], atol=1e-12)
    assert quat_angle_deg(euler_to_quat(10, 0, 0), euler_to_quat(-10, 0, 0)) == pytest.approx(20)


def test_rotvec_near_identity_is_exact():
    v = np.array([1e-10, -2e-10, 3e-10])
    q = rotvec_to_quat(v)
    assert np.allclose(quat_to_rotvec(q), v, rtol=1e-6, atol=1e-16)


def test_non_square_pixels_in_intrinsics():
    # d9.mp4: 512x480 stored, SAR 15/16 -> 480x480 displayed
    c = camera_from_fov(512, 480, 50.0, sar=15 / 16)
    assert c.fx == pytest.approx(c.fy * 16 / 15)
    assert (c.cx, c.cy) == (256.0, 240.0)
    # a displayed circle (square pixels) is 16/15 wider in stored pixels
    pts = np.array([[0.05, 0.0, -1.0], [0.0, 0.05, -1.0], [0.0, 0.0, -1.0]])
    uv = project(c, pts)
    assert (uv[0, 0] - uv[2, 0]) / (uv[2, 1] - uv[1, 1]) == pytest.approx(16 / 15)


def test_fov_is_along_the_longer_side():
    land = camera_from_fov(1280, 720, 60.0)
    port = camera_from_fov(720, 1280, 60.0)
    assert land.fx == pytest.approx(port.fy)
    assert 2 * np.degrees(np.arctan(640 / land.fx)) == pytest.approx(60.0)
    with pytest.raises(ValueError):
        camera_from_fov(100, 100, 0.0)


def test_single_quaternion_paths_equal_the_batched_ones():
    """quat_to_matrix / quat_to_euler take a float fast path for one quaternion; it must give
    what the array path gives (unnormalised inputs, both hemispheres, gimbal lock)."""
    rng = np.random.default_rng(3)
    qs = rng.normal(size=(500, 4)) * rng.uniform(0.05, 20.0, (500, 1))
    s = np.sqrt(0.5)
    qs[:6] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, -1], [s, s, 0, 0], [s, -s, 0, 0],
              [0.5, 0.5, 0.5, 0.5]]  # identity, 180° turns, pitch ±90° (gimbal lock)
    mats, eul = quat_to_matrix(qs), quat_to_euler(qs)
    for q, m, e in zip(qs, mats, eul):
        np.testing.assert_array_equal(quat_to_matrix(q), m)
        np.testing.assert_allclose(quat_to_euler(q), e, rtol=0, atol=1e-9)
        np.testing.assert_allclose(quat_to_euler(list(q)), e, rtol=0, atol=1e-9)
