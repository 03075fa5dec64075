"""Temporal smoothing: One Euro (live, on SO(3) for rotation) and zero-phase (offline).

Quality is measured on synthetic tracks (smooth ground truth + tracker-like noise: rotation
0.3° per axis, translation 1 mm, expression 0.02) at 30 fps and at irregular VFR timestamps, and
on a real MediaPipe head-rotation track. Metrics follow DESIGN.md: jitter = 95th percentile of
the acceleration magnitude relative to the raw input's; lag = delay of the filtered yaw behind
the reference at the cross-correlation peak.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace

import numpy as np
import pytest

from tracker.config import config_to_dict, load_config
from tracker.errors import ConfigError, InputError
from tracker.rotation import (euler_to_quat, matrix_to_quat, quat_angle_deg, quat_conjugate,
                              quat_multiply, quat_normalize, quat_to_euler, quat_to_rotvec,
                              rotvec_to_quat)
from tracker.smoothing import (LiveSmoother, OfflineConfig, OneEuroParams, SmoothingConfig,
                               apply_smoothing, default_config_path, load_smoothing_config,
                               one_euro_rotation_step, one_euro_step, smooth_offline)
from tracker.types import FaceParams

E = 53
CFG = SmoothingConfig()
LOWPASS_ONLY = replace(CFG.offline, rotation_fast_rad_s=(1e3, 2e3), translation_fast_m_s=(1e3, 2e3))
EDGE = slice(15, -15)  # ignore filter start-up and segment ends in quality metrics


# ----------------------------------------------------------------------------------- helpers

def times_30(n=300):
    return np.arange(n) / 30.0


def times_vfr(n=300, seed=5):
    """Irregular timestamps: spacing uniform in [15, 50] ms (mean ≈ 30 fps)."""
    return np.cumsum(np.random.default_rng(seed).uniform(0.015, 0.050, n))


def head_turns(t):
    """Mostly still head with a 30° yaw turn of 0.5 s every 3 s (smooth), small pitch drift."""
    ph = np.clip((t % 3.0 - 1.0) / 0.5, 0.0, 1.0)
    s = 0.5 - 0.5 * np.cos(np.pi * ph)                                 # 0 → 1 within the turn
    yaw = 30.0 * np.where((t // 3.0) % 2 == 0, s, 1.0 - s)            # 0° → 30° → 0° …
    return yaw, 3.0 * np.sin(2 * np.pi * 0.1 * t), np.zeros_like(t)


def moving(t):
    """Ground truth with continuous motion: quaternion, translation (m), expression, yaw (deg)."""
    yaw = 25 * np.sin(2 * np.pi * 0.4 * t) + 10 * np.sin(2 * np.pi * 1.1 * t + 0.5)
    q = euler_to_quat(yaw, 10 * np.sin(2 * np.pi * 0.3 * t + 1), 5 * np.sin(2 * np.pi * 0.7 * t + 2))
    tr = np.stack([0.08 * np.sin(2 * np.pi * 0.5 * t), 0.03 * np.sin(2 * np.pi * 0.3 * t),
                   -0.5 + 0.1 * np.sin(2 * np.pi * 0.25 * t)], -1)
    rng = np.random.default_rng(1)
    f, ph = rng.uniform(0.2, 1.5, E), rng.uniform(0, 2 * np.pi, E)
    ex = 0.5 + 0.45 * np.sin(2 * np.pi * f * t[:, None] + ph)
    return q, tr, ex, yaw


def add_noise(q, tr, ex, seed=0):
    rng = np.random.default_rng(seed)
    n = len(q)
    qn = quat_normalize(quat_multiply(q, rotvec_to_quat(np.radians(0.3) * rng.standard_normal((n, 3)))))
    return (qn, tr + 1e-3 * rng.standard_normal(tr.shape),
            np.clip(ex + 0.02 * rng.standard_normal(ex.shape), 0.0, 1.0))


def make_params(q, tr, ex, lighting=None):
    return [FaceParams(q[k], tr[k], ex[k].astype(np.float32), np.arange(100, dtype=np.float32),
                       None if lighting is None else lighting[k].astype(np.float32))
            for k in range(len(q))]


def unpack(ps):
    return (np.stack([p.rotation for p in ps]), np.stack([p.translation for p in ps]),
            np.stack([p.expression for p in ps]).astype(np.float64))


def run_live(t, ps, cfg=CFG):
    sm = LiveSmoother(cfg)
    return [sm.update(float(tt), p) for tt, p in zip(t, ps)]


def accel(t, x):
    """Second derivative on irregular times, ``x (n, C)`` → ``(n-2, C)`` units/s²."""
    v = np.diff(x, axis=0) / np.diff(t)[:, None]
    return np.diff(v, axis=0) / np.diff(0.5 * (t[1:] + t[:-1]))[:, None]


def rot_accel(t, q):
    w = quat_to_rotvec(quat_multiply(quat_conjugate(q[:-1]), q[1:])) / np.diff(t)[:, None]
    return np.diff(w, axis=0) / np.diff(0.5 * (t[1:] + t[:-1]))[:, None]


def jitter_ratio(t, filtered, raw, rot=False, sel=EDGE):
    """p95 of the acceleration magnitude of ``filtered`` over that of ``raw``, over the
    acceleration samples ``sel`` (index ``k`` is centred on sample ``k + 1``)."""
    f = rot_accel if rot else accel
    p95 = lambda a: np.percentile(np.linalg.norm(a, axis=-1), 95)  # noqa: E731
    return p95(f(t, filtered)[sel]) / p95(f(t, raw)[sel])


def lag_s(t, ref, y, max_lag_s=0.3, h=1 / 240):
    """Delay (s) of ``y`` behind ``ref`` at the peak of their (Pearson) cross-correlation, on a
    240 Hz grid."""
    g = np.arange(t[0], t[-1], h)
    a, b = np.interp(g, t, ref), np.interp(g, t, y)
    L = int(round(max_lag_s / h))
    c = [np.corrcoef(a[L:len(a) - L], b[L + k:len(b) - L + k])[0, 1] for k in range(-L, L + 1)]
    return (int(np.argmax(c)) - L) * h


def yaw_deg(q):
    return np.degrees(np.unwrap(np.radians(quat_to_euler(q)[:, 0])))


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


# ------------------------------------------------------------------------------------ config

def test_toml_and_builtin_defaults_agree():
    path = default_config_path()
    assert path.is_file()
    assert load_config(SmoothingConfig, path) == SmoothingConfig()
    with path.open("rb") as f:
        assert tomllib.load(f) == config_to_dict(SmoothingConfig())  # every key written out
    assert load_smoothing_config() == SmoothingConfig()


def test_missing_repo_config_falls_back_to_builtins(monkeypatch, tmp_path):
    monkeypatch.setattr("tracker.smoothing.default_config_path", lambda: tmp_path / "none.toml")
    assert load_smoothing_config() == SmoothingConfig()


def test_user_config_overrides_and_validates(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("[live.rotation]\nmin_cutoff = 2\nbeta = 0\n[offline]\norder = 3\n")
    cfg = load_smoothing_config(p)
    assert cfg.live.rotation == OneEuroParams(2.0, 0.0, 1.0)
    assert cfg.offline.order == 3 and cfg.offline.rotation_cutoff_hz == CFG.offline.rotation_cutoff_hz
    p.write_text("[live.rotation]\nbeta = 4\n")                     # merged over the default
    assert load_smoothing_config(p).live.rotation == OneEuroParams(
        CFG.live.rotation.min_cutoff, 4.0, CFG.live.rotation.d_cutoff)
    p.write_text("[live.rotation]\nmin_cutoff = -1\nbeta = 0\n")
    with pytest.raises(ConfigError, match=r"s\.toml.*live\.rotation.*min_cutoff"):
        load_smoothing_config(p)
    p.write_text("[offline]\ncutoff = 3.0\n")
    with pytest.raises(ConfigError, match=r"s\.toml.*'offline\.cutoff'"):
        load_smoothing_config(p)


# -------------------------------------------------------------------------------- One Euro core

def test_one_euro_step_rules():
    p = OneEuroParams(1.0, 0.5, 1.0)
    s, y = one_euro_step(None, 1.0, [1.0, 2.0], p)
    np.testing.assert_array_equal(y, [1.0, 2.0])                 # first sample passes
    s2, y2 = one_euro_step(s, 1.1, [2.0, 2.0], p)
    assert 1.0 < y2[0] < 2.0 and y2[1] == 2.0
    assert one_euro_step(s, 1.1, [2.0, 2.0], p)[1].tolist() == y2.tolist()  # pure
    assert one_euro_step(s2, 1.1, [9.0, 9.0], p)[1].tolist() == y2.tolist()  # repeated time holds
    np.testing.assert_array_equal(one_euro_step(s2, 0.5, [7.0, 7.0], p)[1], [7.0, 7.0])  # seek back
    with pytest.raises(InputError):
        one_euro_step(s2, 1.2, [np.nan, 1.0], p)
    with pytest.raises(InputError):
        one_euro_step(s2, float("inf"), [1.0, 1.0], p)


def test_one_euro_is_vectorised_per_channel():
    t = times_vfr(100)
    x = np.random.default_rng(2).standard_normal((100, 3)).cumsum(0)
    p = OneEuroParams(1.0, 2.0, 1.0)

    def run(cols):
        s, out = None, []
        for tt, xx in zip(t, cols):
            s, y = one_euro_step(s, tt, xx, p)
            out.append(y)
        return np.array(out)
    joint = run(x)
    for c in range(3):
        np.testing.assert_allclose(joint[:, c], run(x[:, [c]])[:, 0], rtol=0, atol=1e-12)


def test_one_euro_uses_time_not_frame_count():
    """A step seen at 30 fps and at 120 fps is at the same level after the same time."""
    p = OneEuroParams(1.0, 0.0, 1.0)
    levels = []
    for fps in (30, 120):
        s = None
        for k in range(int(0.5 * fps) + 1):
            s, y = one_euro_step(s, k / fps, [0.0 if k == 0 else 1.0], p)
        levels.append(float(y[0]))
    expected = 1.0 - np.exp(-2 * np.pi * 1.0 * 0.5)   # continuous first-order low-pass
    assert levels == pytest.approx([expected, expected], abs=0.05)


# ------------------------------------------------------------------------------- live quality

@pytest.mark.parametrize("times", [times_30, times_vfr], ids=["30fps", "vfr"])
def test_live_cuts_jitter_with_small_lag(times):
    t = times(360)
    yaw, pitch, roll = head_turns(t)
    q = euler_to_quat(yaw, pitch, roll)
    tr = np.stack([0.002 * yaw, np.zeros_like(t), np.full_like(t, -0.5)], -1)    # 6 cm with yaw
    ex = np.tile(np.clip(0.3 + yaw[:, None] / 60.0, 0, 1), (1, E))
    qn, trn, exn = add_noise(q, tr, ex)
    qf, trf, exf = unpack(run_live(t, make_params(qn, trn, exn)))
    still = ((t % 3.0 < 0.9) | (t % 3.0 > 2.0))[1:-1]                 # away from the turns
    ratios = {}
    for name, sel in (("all", slice(15, -15)), ("still", still)):
        ratios[name] = (jitter_ratio(t, qf, qn, rot=True, sel=sel), jitter_ratio(t, trf, trn, sel=sel),
                        np.mean([jitter_ratio(t, exf[:, [k]], exn[:, [k]], sel=sel)
                                 for k in range(0, E, 8)]))
    lags = (lag_s(t, yaw, yaw_deg(qf)), lag_s(t, tr[:, 0], trf[:, 0]), lag_s(t, ex[:, 0], exf[:, 0]))
    print(f"\nlive {times.__name__}: jitter ratio rot/tr/ex at rest "
          f"{'/'.join(f'{r:.2f}' for r in ratios['still'])}, overall "
          f"{'/'.join(f'{r:.2f}' for r in ratios['all'])}; lag ms "
          f"{'/'.join(f'{x * 1e3:.1f}' for x in lags)}")
    assert max(ratios["still"]) < 0.2 and max(ratios["all"]) < 0.5
    assert 0.0 <= min(lags) and max(lags) <= 1.0 / 30 + 1e-9


def test_live_lag_during_continuous_motion():
    t = times_30(450)
    q, tr, ex, yaw = moving(t)
    qn, trn, exn = add_noise(q, tr, ex)
    qf, trf, exf = unpack(run_live(t, make_params(qn, trn, exn)))
    lag = lag_s(t, yaw, yaw_deg(qf))
    jr = jitter_ratio(t, qf, qn, rot=True)
    err, raw = rms(quat_angle_deg(qf, q)[EDGE]), rms(quat_angle_deg(qn, q)[EDGE])
    print(f"\nlive moving: yaw lag {lag * 30:.2f} frames, jitter ratio {jr:.2f}, "
          f"rot rms err {err:.2f}° (raw {raw:.2f}°)")
    assert 0.0 <= lag <= 1.0 / 30 and jr < 0.9
    assert np.all(exf >= 0) and np.all(exf <= 1)


def test_live_smoother_reset_gap_and_passthrough():
    t = times_30(40)
    q, tr, ex, _ = moving(t)
    light = np.random.default_rng(3).normal(0.5, 0.1, (40, 27))
    ps = make_params(*add_noise(q, tr, ex), lighting=light)
    sm = LiveSmoother(CFG)
    outs = [sm.update(float(tt), p) for tt, p in zip(t, ps)]
    o = outs[-1]
    assert o.identity is ps[-1].identity and o.albedo is None
    assert o.rotation.dtype == np.float64 and o.expression.dtype == np.float32
    assert o.lighting.dtype == np.float32 and o.lighting.shape == (27,)
    assert np.std(np.diff([x.lighting for x in outs], axis=0)) < 0.5 * np.std(np.diff(light, axis=0))
    assert not np.allclose(o.translation, ps[-1].translation)
    sm.reset()
    np.testing.assert_array_equal(sm.update(5.0, ps[0]).translation, ps[0].translation)
    late = sm.update(5.0 + CFG.live.max_gap_s + 0.1, ps[20])       # long gap: restart
    np.testing.assert_array_equal(late.translation, ps[20].translation)
    assert sm.update(6.0, replace(ps[21], lighting=None)).lighting is None


# ------------------------------------------------------------------------ rotation properties

def _live_rot(t, q):
    p, s, out = CFG.live.rotation, None, []
    for tt, qq in zip(t, q):
        s, y = one_euro_rotation_step(s, tt, qq, p)
        out.append(y)
    return np.array(out)


def _offline_rot(t, q):
    ps = make_params(q, np.zeros((len(q), 3)), np.zeros((len(q), E)))
    return unpack(smooth_offline(t, ps, CFG))[0]


@pytest.mark.parametrize("smoother", [_live_rot, _offline_rot], ids=["live", "offline"])
def test_rotation_equivariance_and_double_cover(smoother):
    t = times_vfr(150)
    q, _, _, _ = moving(t)
    qn = add_noise(q, np.zeros((150, 3)), np.zeros((150, 1)))[0]
    rng = np.random.default_rng(7)
    r0 = quat_normalize(rng.standard_normal(4))
    base = smoother(t, qn)
    left = smoother(t, quat_multiply(r0, qn))
    right = smoother(t, quat_multiply(qn, r0))
    assert np.max(quat_angle_deg(left, quat_multiply(r0, base))) < 1e-5
    assert np.max(quat_angle_deg(right, quat_multiply(base, r0))) < 1e-5
    flipped = qn * np.where(rng.random(150) < 0.5, -1.0, 1.0)[:, None]
    assert np.max(quat_angle_deg(smoother(t, flipped), base)) < 1e-5  # arccos resolves ~1e-6° near 0: equal
    assert np.all(base[:, 0] >= 0) and np.allclose(np.linalg.norm(base, axis=1), 1.0)


@pytest.mark.parametrize("smoother", [_live_rot, _offline_rot], ids=["live", "offline"])
def test_yaw_through_180_does_not_spin(smoother):
    t = times_30(120)
    yaw = 150.0 + 60.0 * t / t[-1]                 # 150° → 210°, i.e. through ±180°
    q = euler_to_quat(yaw, 5.0 * np.ones_like(t), np.zeros_like(t))
    qn = add_noise(q, np.zeros((120, 3)), np.zeros((120, 1)))[0]
    out = smoother(t, qn)
    steps = quat_angle_deg(out[1:], out[:-1])
    assert steps.max() < 2.0                                      # 0.5°/frame motion, no spin
    assert np.max(quat_angle_deg(out, q)[5:]) < 2.0
    assert np.all(np.diff(yaw_deg(out)) > -1.0)                    # keeps turning one way


def test_live_rotation_handles_half_turn_jump():
    q0 = euler_to_quat(0.0, 0.0, 0.0)
    q1 = euler_to_quat(179.9, 0.0, 0.0)
    s, _ = one_euro_rotation_step(None, 0.0, q0, CFG.live.rotation)
    s, y = one_euro_rotation_step(s, 1 / 30, q1, CFG.live.rotation)
    ang = float(quat_angle_deg(y, q0))
    assert np.all(np.isfinite(y)) and 0.0 < ang < 179.9
    assert ang + float(quat_angle_deg(y, q1)) == pytest.approx(179.9, abs=1e-6)  # on the geodesic


def test_live_rotation_step_is_the_quaternion_definition():
    """The live rotation filter runs on plain floats (speed); it must equal its definition in
    the quaternion library — δ = log(q̂⁻¹ q), ω ← ω + α_d (δ/dt − ω), q̂ ← q̂ · exp(α(|ω|) δ) —
    over random walks with jumps, sign flips, scaled inputs and irregular times."""
    from tracker.smoothing import RotationFilterState, _alpha

    p = CFG.live.rotation
    rng = np.random.default_rng(3)

    def reference(state, t, q):
        q = quat_normalize(q)
        if state is None:
            return RotationFilterState(t, q, np.zeros(3)), q
        dt = t - state.t
        delta = quat_to_rotvec(quat_multiply(quat_conjugate(state.q), q))
        omega = state.omega + _alpha(p.d_cutoff, dt) * (delta / dt - state.omega)
        a = _alpha(p.min_cutoff + p.beta * float(np.linalg.norm(omega)), dt)
        y = quat_normalize(quat_multiply(state.q, rotvec_to_quat(a * delta)))
        return RotationFilterState(t, y, omega), y

    q, t = np.array([1.0, 0.0, 0.0, 0.0]), 0.0
    got = want = None
    for i in range(1500):
        q = quat_multiply(q, rotvec_to_quat(rng.normal(0, 1.5 if i % 97 == 0 else 0.04, 3)))
        qq = q * rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0)
        t += rng.uniform(0.01, 0.06)
        got, y = one_euro_rotation_step(got, t, qq, p)
        want, y_ref = reference(want, t, qq)
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.omega, want.omega, rtol=0, atol=1e-9)


# -------------------------------------------------------------------------------- offline

@pytest.mark.parametrize("times", [times_30, times_vfr], ids=["30fps", "vfr"])
def test_offline_zero_lag_and_lower_error(times):
    """The zero-phase low-pass itself (fast-motion ramps off): no lag, lower error than raw."""
    t = times(360)
    q, tr, ex, yaw = moving(t)
    qn, trn, exn = add_noise(q, tr, ex)
    qf, trf, exf = unpack(smooth_offline(t, make_params(qn, trn, exn), LOWPASS_ONLY))
    er = rms(quat_angle_deg(qf, q)[EDGE]) / rms(quat_angle_deg(qn, q)[EDGE])
    et = rms((trf - tr)[EDGE]) / rms((trn - tr)[EDGE])
    ee = rms((exf - ex)[EDGE]) / rms((exn - ex)[EDGE])
    lag = lag_s(t, yaw, yaw_deg(qf))
    jr = jitter_ratio(t, qf, qn, rot=True)
    print(f"\noffline {times.__name__}: rms error / raw: rot {er:.2f} tr {et:.2f} ex {ee:.2f}; "
          f"yaw lag {lag * 1e3:.1f} ms; rot jitter ratio {jr:.2f}")
    assert max(er, et) < 0.6 and ee < 0.75
    assert abs(lag) <= 1 / 240 + 1e-12                      # one step of the 240 Hz grid
    assert np.all(exf >= 0) and np.all(exf <= 1)


def test_offline_fast_motion_stays_raw_slow_motion_is_smoothed():
    """A head at rest (noise only) is smoothed; a quick 30° out-and-back nod of the head (0.3 s,
    up to 310°/s) keeps the raw pose, so the low-pass cannot round off its peak (d12's moves)."""
    t = times_30(240)
    burst = (t >= 4.0) & (t <= 4.3)
    yaw = np.where(burst, 30.0 * np.sin(np.pi * (t - 4.0) / 0.3), 0.0)
    q = euler_to_quat(yaw, np.zeros_like(t), np.zeros_like(t))
    tr = np.zeros((240, 3)) + [0.0, 0.0, -0.5]
    qn, trn, _ = add_noise(q, tr, np.zeros((240, E)))
    qf, _, _ = unpack(smooth_offline(t, make_params(qn, trn, np.zeros((240, E))), CFG))
    qlp, _, _ = unpack(smooth_offline(t, make_params(qn, trn, np.zeros((240, E))), LOWPASS_ONLY))
    rest = slice(20, 100)
    fast = (t > 4.07) & (t < 4.23)
    assert rms(quat_angle_deg(qf, q)[rest]) < 0.6 * rms(quat_angle_deg(qn, q)[rest])
    assert np.allclose(quat_angle_deg(qf, qn)[fast], 0.0, atol=1e-6)  # raw while turning fast
    assert rms(quat_angle_deg(qlp, q)[fast]) > rms(quat_angle_deg(qf, q)[fast])


def test_offline_keeps_constants_and_ramps_on_vfr():
    t = times_vfr(80)
    q = np.tile(euler_to_quat(20.0, -10.0, 5.0), (80, 1))
    tr = np.stack([0.1 * t, -0.05 * t, -0.5 + 0.02 * t], -1)       # linear in time, uneven steps
    ex = np.full((80, E), 0.4)
    qf, trf, exf = unpack(smooth_offline(t, make_params(q, tr, ex), CFG))
    assert np.max(quat_angle_deg(qf, q)) < 1e-6
    np.testing.assert_allclose(trf[10:-10], tr[10:-10], atol=1e-6)
    np.testing.assert_allclose(trf, tr, atol=1e-4)         # end transients < 0.1 mm at 0.1 m/s
    np.testing.assert_allclose(exf, ex, atol=1e-6)


def test_offline_segments_lost_frames_and_short_runs():
    t = times_30(60)
    t[40:] += 1.0                                                    # a 1 s gap before frame 40
    q, tr, ex, _ = moving(t)
    ps = make_params(*add_noise(q, tr, ex))
    ps[10] = None                                     # segments: 0-9, 11, 12-13 … see below
    ps[12] = None
    ps[15] = None                                     # 13-14 (2 samples), 16-39, 40-59 (gap)
    out = smooth_offline(t, ps, CFG)
    assert [o is None for o in out] == [p is None for p in ps]
    for k in (11, 13, 14):                                           # < 3 samples: unchanged
        np.testing.assert_array_equal(out[k].translation, ps[k].translation)
    for o in out:
        if o is not None:
            assert np.isfinite(o.translation).all() and abs(np.linalg.norm(o.rotation) - 1) < 1e-12
    changed = list(ps)
    changed[45] = FaceParams(changed[45].rotation, changed[45].translation + 0.1,
                             changed[45].expression, changed[45].identity)
    out2 = smooth_offline(t, changed, CFG)
    for k in range(40):                                     # segments before the gap untouched
        if out[k] is not None:
            np.testing.assert_array_equal(out2[k].translation, out[k].translation)
    assert not np.allclose(out2[44].translation, out[44].translation)
    five = smooth_offline(t[:5], ps[:5], CFG)                         # shorter than the pad length
    assert all(np.isfinite(p.translation).all() for p in five)


def test_offline_validates_and_respects_nyquist():
    t = times_30(30)
    q, tr, ex, _ = moving(t)
    ps = make_params(*add_noise(q, tr, ex))
    with pytest.raises(InputError):
        smooth_offline(t[:-1], ps, CFG)
    with pytest.raises(InputError):
        smooth_offline(np.r_[t[:10], np.nan, t[11:]], ps, CFG)
    dup = np.r_[t[:15], t[14:29]]                      # a repeated timestamp ends a segment
    split = smooth_offline(dup, ps, CFG)
    for part in (slice(0, 15), slice(15, 30)):
        alone = smooth_offline(dup[part], ps[part], CFG)
        np.testing.assert_array_equal(unpack(split[part])[1], unpack(alone)[1])
    high = OfflineConfig(rotation_cutoff_hz=20.0, translation_cutoff_hz=20.0,
                         expression_cutoff_hz=20.0)                   # above 15 Hz Nyquist
    out = smooth_offline(t, ps, high)
    np.testing.assert_array_equal(unpack(out)[1], unpack(ps)[1])
    assert smooth_offline(t, [None] * 30, CFG) == [None] * 30


def test_apply_smoothing_modes():
    t = times_30(50)
    q, tr, ex, _ = moving(t)
    ps = make_params(*add_noise(q, tr, ex))
    ps[20] = None
    assert apply_smoothing("none", t, ps, CFG) == ps
    off = apply_smoothing("offline", t, ps, CFG)
    np.testing.assert_array_equal(off[30].translation, smooth_offline(t, ps, CFG)[30].translation)
    live = apply_smoothing("live", t, ps, CFG)
    assert live[20] is None
    np.testing.assert_array_equal(live[-1].translation,
                                  run_live(np.r_[t[:20], t[21:]], ps[:20] + ps[21:])[-1].translation)
    with pytest.raises(ConfigError):
        apply_smoothing("median", t, ps, CFG)


# ------------------------------------------------------------------------------ real input

def _kabsch(a, b):
    """Rotation ``R`` minimising ``|R a_i - b_i|`` for centred ``(n, 3)`` point sets."""
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def test_real_head_rotation_track(videos):
    """MediaPipe landmarks on a real clip → rigid head rotation per frame (Kabsch against the
    first frame) → both smoothers: less jitter, live lag under one frame, offline none."""
    import av
    import mediapipe as mp

    pts, times = [], []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1) as fm, \
            av.open(str(videos["d3"])) as c:
        for k, frame in enumerate(c.decode(video=0)):
            if k >= 210:
                break
            img = frame.to_ndarray(format="rgb24")
            res = fm.process(img)
            assert res.multi_face_landmarks, f"no face in frame {k}"
            h, w = img.shape[:2]
            lms = res.multi_face_landmarks[0].landmark[:468]
            pts.append([(p.x * w, -p.y * h, -p.z * w) for p in lms])     # y up, z toward camera
            times.append(float(frame.time))
    t, p = np.array(times), np.array(pts)
    p -= p.mean(axis=1, keepdims=True)
    q = matrix_to_quat(np.stack([_kabsch(p[0], x) for x in p]))
    yaw = yaw_deg(q)
    assert np.ptp(yaw) > 15.0                                           # the clip turns the head
    ps = make_params(q, np.zeros((len(t), 3)), np.zeros((len(t), E)))
    live, off = unpack(run_live(t, ps))[0], unpack(smooth_offline(t, ps, CFG))[0]
    jl, jo = jitter_ratio(t, live, q, rot=True), jitter_ratio(t, off, q, rot=True)
    ll, lo = lag_s(t, yaw, yaw_deg(live)), lag_s(t, yaw, yaw_deg(off))
    noise = rms(quat_angle_deg(off, q)[EDGE])
    print(f"\nreal d3 ({len(t)} frames, yaw range {np.ptp(yaw):.0f}°, raw-vs-offline rms "
          f"{noise:.2f}°): jitter ratio live {jl:.2f} offline {jo:.2f}; lag frames live "
          f"{ll * 30:.2f} offline {lo * 30:.2f}")
    assert jl < 0.7 and jo < 0.45
    assert 0.0 <= ll <= 1 / 30 and abs(lo) <= 1 / 120
