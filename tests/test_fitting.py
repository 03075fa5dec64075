"""Fitting: round trips (points made from known coefficients → fit → the same coefficients),
bounds, the numba kernel against its numpy reference, identity and gaze recovery."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.camera import camera_from_fov, project, transform
from tracker.correspondence import load_correspondence
from tracker.fitting import (FitConfig, fit_frame, fit_frame_numpy, fit_identity, identity_points,
                             make_fit_basis)
from tracker.gaze import gaze_weights, make_eye_basis, solve_gaze
from tracker.rotation import euler_to_quat, quat_angle_deg, quat_to_euler, quat_to_matrix
from tracker.types import FaceParams


@pytest.fixture(scope="module")
def setup(model):
    cfg = FitConfig()
    basis = make_fit_basis(model, load_correspondence(), cfg)
    cam = camera_from_fov(640, 480, 50.0)
    return cfg, basis, cam


def synth_targets(basis, cam, identity, expression, ypr, t, noise_px=0.0, seed=0):
    pts = identity_points(basis, identity) + basis.exp_basis @ np.asarray(expression, np.float64)
    r = quat_to_matrix(euler_to_quat(*ypr))
    uv = project(cam, transform(r, np.asarray(t), pts))
    if noise_px:
        uv = uv + np.random.default_rng(seed).normal(0, noise_px, uv.shape)
    return uv


def iod_px(uv_model_lmk):
    return float(np.linalg.norm(uv_model_lmk[0] - uv_model_lmk[1]))


def sparse_expression(model, rng, active=("jawOpen", "eyeBlink_L", "mouthSmile_R", "browInnerUp_L")):
    e = np.zeros(model.n_expression)
    for n in active:
        e[model.exp_names.index(n)] = rng.uniform(0.3, 0.8)
    return e


def test_numba_kernel_equals_numpy_reference(model, setup):
    cfg, basis, cam = setup
    rng = np.random.default_rng(3)
    e = sparse_expression(model, rng)
    tgt = synth_targets(basis, cam, None, e, (15, -5, 3), (0.02, -0.01, -0.55), noise_px=0.5)
    a = fit_frame(basis, identity_points(basis, None), cam, tgt, 80.0, cfg)
    b = fit_frame_numpy(basis, identity_points(basis, None), cam, tgt, 80.0, cfg)
    assert np.allclose(a.expression, b.expression, atol=1e-6)
    assert np.allclose(a.translation, b.translation, atol=1e-9)
    assert quat_angle_deg(a.rotation, b.rotation) < 1e-5
    assert a.rms_iod_pct == pytest.approx(b.rms_iod_pct, rel=1e-9)


@pytest.mark.parametrize("ypr", [(0, 0, 0), (25, 10, -5), (-35, -12, 8)])
def test_round_trip_pose_and_expression(model, setup, ypr):
    """Known coefficients → projected points (+0.3 px noise) → cold fit → the same coefficients."""
    cfg, basis, cam = setup
    rng = np.random.default_rng(abs(hash(ypr)) % 2**32)
    e = sparse_expression(model, rng)
    e[basis.free_expr == 0] = 0.0  # gaze weights come from the irises, not this fit
    t = np.array([0.03, 0.02, -0.6])
    tgt = synth_targets(basis, cam, None, e, ypr, t, noise_px=0.3)
    fit = fit_frame(basis, identity_points(basis, None), cam, tgt, 80.0, cfg)
    assert quat_angle_deg(fit.rotation, euler_to_quat(*ypr)) < 1.0
    assert np.allclose(quat_to_euler(fit.rotation), ypr, atol=1.0)
    assert np.linalg.norm(fit.translation - t) < 0.01  # 1 cm at 60 cm
    err = np.abs(fit.expression - e)
    assert err.mean() < 0.03
    for n in ("jawOpen", "eyeBlink_L", "mouthSmile_R"):
        k = model.exp_names.index(n)
        assert abs(fit.expression[k] - e[k]) < 0.15, n
    assert fit.rms_iod_pct < 1.0


def test_weights_stay_in_bounds_and_warm_start_converges(model, setup):
    cfg, basis, cam = setup
    e = np.zeros(model.n_expression)
    e[model.exp_names.index("jawOpen")] = 1.0
    e[model.exp_names.index("eyeBlink_R")] = 1.0
    tgt = synth_targets(basis, cam, None, e * 1.3, (5, 0, 0), (0, 0, -0.5))  # beyond the range
    fit = fit_frame(basis, identity_points(basis, None), cam, tgt, 80.0, cfg)
    assert fit.expression.min() >= 0.0 and fit.expression.max() <= 1.0
    assert fit.expression[model.exp_names.index("jawOpen")] == pytest.approx(1.0, abs=1e-6)
    # warm start from the answer: 3 iterations do not move it much, and do not make it worse (LM
    # never raises its weighted objective; the plain pixel RMS may move by a hair)
    init = FaceParams(fit.rotation, fit.translation, fit.expression, np.zeros(model.n_identity))
    again = fit_frame(basis, identity_points(basis, None), cam, tgt, 80.0, cfg, init)
    assert again.rms_iod_pct <= fit.rms_iod_pct * (1 + 1e-4)
    assert np.abs(again.expression - fit.expression).max() < 0.02


def test_identity_round_trip(model, setup):
    """Several frames of a known identity → fit_identity recovers its shape at the landmarks."""
    cfg, basis, cam = setup
    rng = np.random.default_rng(7)
    alpha = rng.normal(0, 1, model.n_identity).astype(np.float32)
    poses = [(-20, 5, 0), (0, 0, 0), (20, -5, 3), (10, 10, -2), (-10, -8, 2)]
    targets, fits = [], []
    for ypr in poses:
        tgt = synth_targets(basis, cam, alpha, np.zeros(model.n_expression), ypr, (0, 0, -0.55), 0.3)
        targets.append(tgt)
        fits.append(FaceParams(euler_to_quat(*ypr), np.array([0, 0, -0.55]),
                               np.zeros(model.n_expression, np.float32), np.zeros(model.n_identity)))
    est = None
    for _ in range(3):
        est = fit_identity(basis, cam, targets, [80.0] * len(poses), fits, cfg, est)
        pts = identity_points(basis, est)
        fits = [FaceParams(f.rotation, f.translation, f.expression, est) for f in fits]
    err0 = np.linalg.norm(identity_points(basis, None) - identity_points(basis, alpha), axis=1)
    err = np.linalg.norm(pts - identity_points(basis, alpha), axis=1)
    # the landmark shape of the identity is recovered to well under its own size
    assert err.mean() < 0.35 * err0.mean()
    assert np.linalg.norm(est) < 2.0 * np.linalg.norm(alpha)


def test_mouth_closed_identity_prior(model, setup):
    """The identity's neutral mouth stays closed (inner-lip points 13/14 within 2 mm)."""
    cfg, basis, cam = setup
    # frames of an open mouth (jawOpen 0.4) fitted with expressions held at 0: the only way the
    # identity could explain them is by opening its own mouth, which the prior forbids
    e = np.zeros(model.n_expression)
    e[model.exp_names.index("jawOpen")] = 0.4
    targets = [synth_targets(basis, cam, None, e, (y, 0, 0), (0, 0, -0.55)) for y in (-10, 0, 10)]
    fits = [FaceParams(euler_to_quat(y, 0, 0), np.array([0, 0, -0.55]),
                       np.zeros(model.n_expression, np.float32), np.zeros(model.n_identity))
            for y in (-10, 0, 10)]
    est = fit_identity(basis, cam, targets, [80.0] * 3, fits, cfg)
    pts = identity_points(basis, est)
    row = {int(m): i for i, m in enumerate(basis.mp_index)}
    gap = abs(pts[row[13], 1] - pts[row[14], 1])
    assert gap < 0.002


def test_gaze_round_trip(model):
    """Rotate the eyeballs by known angles, project the iris centres, recover the angles."""
    eyes = make_eye_basis(model)
    cam = camera_from_fov(640, 480, 50.0)
    r = quat_to_matrix(euler_to_quat(10, -5, 0))
    t = np.array([0.0, 0.0, -0.5])
    for yaw, pitch in ((0.0, 0.0), (15.0, 0.0), (-12.0, 8.0), (5.0, -10.0)):
        ang = np.radians([yaw, pitch])
        cy, sy, cp, sp = np.cos(ang[0]), np.sin(ang[0]), np.cos(ang[1]), np.sin(ang[1])
        re = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        iris = eyes.centre + (eyes.iris - eyes.centre) @ re.T
        uv = project(cam, iris @ r.T + t)
        got = np.degrees(solve_gaze(eyes, None, r, t, cam, uv))
        assert np.allclose(got, [[yaw, pitch], [yaw, pitch]], atol=0.5)
    w = gaze_weights(np.radians([[15.0, 10.0], [15.0, 10.0]]), model.exp_names)
    # both eyes look toward the subject's left and down: left eye out, right eye in
    assert w["eyeLookOut_L"] > 0.4 and w["eyeLookIn_R"] > 0.4
    assert w["eyeLookIn_L"] == 0 and w["eyeLookOut_R"] == 0
    assert w["eyeLookDown_L"] > 0.3 and w["eyeLookUp_L"] == 0
