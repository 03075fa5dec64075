"""Temporal smoothing of face coefficients: causal One Euro (live) and zero-phase (offline).

Time is an input everywhere: every sample carries its timestamp in seconds, no frame rate is
assumed and irregular (VFR) spacing is handled.

**Live** (:func:`one_euro_step`, :func:`one_euro_rotation_step`, :func:`live_step`,
:class:`LiveSmoother`) — the One Euro filter of Casiez, Roussel & Vogel (CHI 2012), vectorised
over channels with explicit frozen state. With ``dt`` the time since the previous sample and
``alpha(fc, dt) = 1 / (1 + 1 / (2 π fc dt))``::

    v  = (x - ŷ_prev) / dt                      velocity against the previous output (units/s)
    v̂ += alpha(d_cutoff, dt) (v - v̂)            low-passed velocity
    fc = min_cutoff + beta |v̂|                   per channel, Hz
    ŷ += alpha(fc, dt) (x - ŷ)                   output

(Differencing against the previous output rather than the previous raw input, as some
implementations do, measured a better trade-off here: at equal jitter at rest, ~25 % less lag.)
Rotation is filtered on SO(3), never per Euler angle or quaternion component: the increment
``δ = log(q̂_prev⁻¹ q)`` (rotation vector in the body frame, shortest path, so a sign-flipped
input quaternion or a yaw crossing ±180° is a small step) gives the angular velocity ``δ / dt``
(rad/s), low-passed as above; its norm is the speed, and the output moves along the geodesic
from the previous output toward the input by ``alpha``: ``q̂ ← q̂ · exp(alpha · δ)`` (a slerp).
Everything is built from relative rotations, so ``filter(R0 · q) = R0 · filter(q)`` and
``filter(q · R0) = filter(q) · R0`` exactly.

**Offline** (:func:`smooth_offline`) — a Butterworth low-pass (``order`` from the config) run
forward and backward with ``scipy.signal.sosfiltfilt``: zero phase (no lag), a maximally flat
pass band, cut-offs in Hz that mean the same at any frame rate, odd extension at segment ends so
the level and slope at the ends are kept. Each run of consecutive tracked frames (split at lost
frames and at gaps longer than ``max_gap_s``) is smoothed on its own. A segment whose timestamps
are not a uniform grid (VFR, dropped frames) is linearly interpolated onto a uniform grid with the
segment's median spacing, filtered, and interpolated back to its own timestamps. Segments shorter
than the filter's pad length use a shorter pad; fewer than 3 samples are returned unchanged; a
cut-off at or above the grid's Nyquist frequency leaves that group unchanged. Rotations: the
quaternion signs are made continuous along the segment (``q_k·q_{k-1} ≥ 0``), the four components
are filtered and renormalised. Each output is thus a locally weighted chordal L2 mean of nearby
rotations, which agrees closely with the geodesic mean while the rotations inside the filter's
window (a fraction of a second) are a few degrees apart. Unlike rotation vectors about one segment
mean it has no chart to leave, so a segment may turn through any angle, and it is exactly
left/right equivariant (multiplying by a fixed unit quaternion is an orthogonal map of R⁴).

Both paths: expression is clipped to [0, 1]; identity and albedo are passed through (they are
per-person values held per track upstream); lighting (SH) is smoothed with its own slow low-pass
(it should not flicker with landmark noise) or passed through when ``None``. Defaults live in
``configs/smoothing.toml`` (measured in ``tests/test_smoothing.py``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .config import load_config
from .errors import ConfigError, InputError
from .rotation import quat_conjugate, quat_multiply, quat_normalize, quat_to_rotvec, rotvec_to_quat
from .types import FaceParams

log = logging.getLogger(__name__)

SmoothMode = Literal["offline", "live", "none"]
SMOOTH_MODES: tuple[str, ...] = ("offline", "live", "none")


# --------------------------------------------------------------------------------------- config

def _positive(name: str, v: float, zero_ok: bool = False) -> None:
    if not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok):
        raise ConfigError(f"{name} must be {'>= 0' if zero_ok else '> 0'} and finite, got {v}")


@dataclass(frozen=True)
class OneEuroParams:
    """One Euro parameters: ``min_cutoff`` Hz, ``beta`` Hz per (unit/s) of speed, ``d_cutoff`` Hz."""

    min_cutoff: float
    beta: float
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        _positive("min_cutoff", self.min_cutoff)
        _positive("beta", self.beta, zero_ok=True)
        _positive("d_cutoff", self.d_cutoff)


@dataclass(frozen=True)
class LiveConfig:
    """Causal smoothing. Speeds: rotation rad/s, translation m/s, expression and lighting 1/s.

    ``max_gap_s``: a longer time without a sample restarts the filters (re-acquired face).
    """

    rotation: OneEuroParams = OneEuroParams(min_cutoff=0.5, beta=8.0, d_cutoff=1.0)
    translation: OneEuroParams = OneEuroParams(min_cutoff=0.5, beta=40.0, d_cutoff=1.0)
    expression: OneEuroParams = OneEuroParams(min_cutoff=0.5, beta=4.0, d_cutoff=1.0)
    lighting: OneEuroParams = OneEuroParams(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    max_gap_s: float = 0.5

    def __post_init__(self) -> None:
        _positive("max_gap_s", self.max_gap_s)


@dataclass(frozen=True)
class OfflineConfig:
    """Zero-phase smoothing: Butterworth cut-offs in Hz per group, filter order (forward pass;
    the forward-backward response has twice this order), and the gap that splits segments.

    ``*_fast_*``: speed ramps ``(low, high)`` over which the pose output blends from the
    low-passed value to the raw one (rotation in rad/s, translation in m/s; raw speeds, above the
    tracker's noise at rest: ~0.16 rad/s and ~0.03 m/s at 30 fps). A low-pass that removes 0.3° of jitter at rest also rounds off a head
    that turns at 200°/s (d12: +3 % of the inter-ocular distance on the fast frames), and during
    such motion jitter is invisible anyway — the same trade the One Euro filter makes live.
    """

    rotation_cutoff_hz: float = 4.0
    translation_cutoff_hz: float = 4.0
    expression_cutoff_hz: float = 8.0
    lighting_cutoff_hz: float = 1.0
    order: int = 2
    max_gap_s: float = 0.5
    rotation_fast_rad_s: tuple[float, float] = (1.0, 3.0)
    translation_fast_m_s: tuple[float, float] = (0.1, 0.3)

    def __post_init__(self) -> None:
        for name in ("rotation_cutoff_hz", "translation_cutoff_hz", "expression_cutoff_hz",
                     "lighting_cutoff_hz", "max_gap_s"):
            _positive(name, getattr(self, name))
        for name in ("rotation_fast_rad_s", "translation_fast_m_s"):
            lo, hi = getattr(self, name)
            if not 0 <= lo < hi:
                raise ConfigError(f"{name} must be (low, high) with 0 <= low < high, got {(lo, hi)}")
        if not 1 <= self.order <= 8:
            raise ConfigError(f"order must be in 1..8, got {self.order}")


@dataclass(frozen=True)
class SmoothingConfig:
    """``configs/smoothing.toml``: ``[live.rotation]`` … ``[live]`` and ``[offline]`` tables."""

    live: LiveConfig = LiveConfig()
    offline: OfflineConfig = OfflineConfig()


def default_config_path() -> Path:
    """``configs/smoothing.toml`` at the repository root (next to ``tracker/``)."""
    return Path(__file__).resolve().parents[1] / "configs" / "smoothing.toml"


def load_smoothing_config(path: str | Path | None = None) -> SmoothingConfig:
    """The smoothing config from ``path``; by default the repository's ``configs/smoothing.toml``,
    or the built-in defaults (identical, pinned by a test) when that file is not installed."""
    if path is None:
        path = default_config_path()
        if not path.is_file():
            log.debug("%s not found; using built-in smoothing defaults", path)
            return SmoothingConfig()
    return load_config(SmoothingConfig, path)


# ------------------------------------------------------------------------------ live: One Euro

def _alpha(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of a first-order low-pass with cut-off ``cutoff_hz`` over ``dt`` seconds."""
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz) * dt))


@dataclass(frozen=True)
class OneEuroState:
    """Per-channel filter state: time ``t`` (s), last output ``y`` and low-passed velocity ``dx``
    (units/s), both ``(C,) float64``."""

    t: float
    y: np.ndarray
    dx: np.ndarray


def _check_time(t: float) -> float:
    t = float(t)
    if not math.isfinite(t):
        raise InputError(f"sample time must be finite, got {t}")
    return t


def one_euro_step(state: OneEuroState | None, t: float, x: np.ndarray,
                  params: OneEuroParams) -> tuple[OneEuroState, np.ndarray]:
    """One causal One Euro step on ``(C,)`` channels at time ``t`` (seconds).

    ``state=None`` (first sample), a different channel count, or time going backwards (a seek)
    starts afresh and returns ``x``; a repeated timestamp returns the previous output unchanged.
    Returns the new state and the ``(C,) float64`` output. Raises :class:`InputError` for
    non-finite input.
    """
    t = _check_time(t)
    x = np.asarray(x, np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise InputError("One Euro input contains non-finite values")
    if state is None or state.y.shape != x.shape or t < state.t:
        return OneEuroState(t, x, np.zeros_like(x)), x
    dt = t - state.t
    if dt == 0.0:
        return state, state.y
    dx = state.dx + _alpha(params.d_cutoff, dt) * ((x - state.y) / dt - state.dx)
    a = _alpha(params.min_cutoff + params.beta * np.abs(dx), dt)
    y = state.y + a * (x - state.y)
    return OneEuroState(t, y, dx), y


@dataclass(frozen=True)
class RotationFilterState:
    """SO(3) One Euro state: time ``t``, last output ``q`` (``(4,)`` unit quaternion w, x, y, z,
    ``w >= 0``) and the low-passed body-frame angular velocity ``omega`` (``(3,)`` rad/s; only
    its norm is used, so it is not transported between the small per-sample steps)."""

    t: float
    q: np.ndarray
    omega: np.ndarray


def _hemi(w: float, x: float, y: float, z: float) -> tuple[float, float, float, float]:
    """``(w, x, y, z)`` scaled to unit length with ``w >= 0`` (:func:`quat_normalize` on floats)."""
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if w < 0:
        n = -n
    return w / n, x / n, y / n, z / n


def _unit(q: np.ndarray) -> tuple[float, float, float, float]:
    """``q (4,)`` as a unit quaternion of Python floats with ``w >= 0``; raises
    :class:`InputError` for a non-finite or zero one."""
    w, x, y, z = (float(v) for v in np.asarray(q, np.float64).reshape(4))
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if not math.isfinite(n) or n < 1e-12:
        raise InputError(f"rotation must be a finite non-zero quaternion, got {q}")
    return _hemi(w, x, y, z)


def _log_between(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float]:
    """Rotation vector ``log(a⁻¹ b)`` (radians, shortest path) of unit quaternions; scalar
    :func:`quat_to_rotvec` ``(quat_multiply(quat_conjugate(a), b))``. The live filter calls it
    every frame, and on 4-vectors plain floats beat numpy's per-call overhead (a
    ``LiveSmoother.update``: 147 → 61 µs)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    w, x, y, z = _hemi(aw * bw + ax * bx + ay * by + az * bz,          # conj(a) * b
                       aw * bx - ax * bw - ay * bz + az * by,
                       aw * by + ax * bz - ay * bw - az * bx,
                       aw * bz - ax * by + ay * bx - az * bw)
    s = math.sqrt(x * x + y * y + z * z)
    k = 2.0 * math.atan2(s, min(w, 1.0)) / s if s > 1e-8 else 2.0 / max(w, 1e-300)
    return x * k, y * k, z * k


def _turn(q: tuple[float, ...], v: tuple[float, float, float]) -> np.ndarray:
    """``q * exp(v)`` as a unit ``(4,)`` array with ``w >= 0``; scalar
    ``quat_normalize(quat_multiply(q, rotvec_to_quat(v)))``."""
    th = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    k = math.sin(0.5 * th) / th if th > 1e-8 else 0.5 - th * th / 48.0
    ew, ex, ey, ez = math.cos(0.5 * th), v[0] * k, v[1] * k, v[2] * k
    qw, qx, qy, qz = q
    return np.array(_hemi(qw * ew - qx * ex - qy * ey - qz * ez,
                          qw * ex + qx * ew + qy * ez - qz * ey,
                          qw * ey - qx * ez + qy * ew + qz * ex,
                          qw * ez + qx * ey - qy * ex + qz * ew))


def one_euro_rotation_step(state: RotationFilterState | None, t: float, q: np.ndarray,
                           params: OneEuroParams) -> tuple[RotationFilterState, np.ndarray]:
    """One causal One Euro step on a rotation (see the module docstring for the scheme).

    ``q``: ``(4,)`` quaternion (w, x, y, z), any sign and norm > 0. ``params.beta`` is in Hz per
    rad/s. Returns the new state and the ``(4,) float64`` unit output with ``w >= 0``. Restart
    and repeated-time rules as :func:`one_euro_step`.
    """
    t = _check_time(t)
    qu = _unit(q)
    if state is None or t < state.t:
        return RotationFilterState(t, np.array(qu), np.zeros(3)), np.array(qu)
    dt = t - state.t
    if dt == 0.0:
        return state, state.q
    prev = tuple(state.q.tolist())
    delta = _log_between(prev, qu)
    ad = _alpha(params.d_cutoff, dt)
    omega = [o + ad * (d / dt - o) for o, d in zip(state.omega.tolist(), delta)]
    speed = math.sqrt(omega[0] ** 2 + omega[1] ** 2 + omega[2] ** 2)
    a = float(_alpha(params.min_cutoff + params.beta * speed, dt))
    y = _turn(prev, (a * delta[0], a * delta[1], a * delta[2]))
    return RotationFilterState(t, y, np.array(omega)), y


@dataclass(frozen=True)
class LiveState:
    """Filter state of one face track (``lighting`` is ``None`` while no lighting is given)."""

    t: float
    rotation: RotationFilterState
    translation: OneEuroState
    expression: OneEuroState
    lighting: OneEuroState | None


def live_step(state: LiveState | None, t: float, params: FaceParams,
              cfg: LiveConfig) -> tuple[LiveState, FaceParams]:
    """Smooth one face's parameters at time ``t`` (seconds) causally; pure.

    A gap longer than ``cfg.max_gap_s`` since the previous sample restarts every filter.
    Identity and albedo pass through; expression is clipped to [0, 1]; dtypes are those of
    :class:`~tracker.types.FaceParams`.
    """
    t = _check_time(t)
    if state is not None and t - state.t > cfg.max_gap_s:
        state = None
    rs, q = one_euro_rotation_step(None if state is None else state.rotation, t,
                                   params.rotation, cfg.rotation)
    ts, tr = one_euro_step(None if state is None else state.translation, t,
                           params.translation, cfg.translation)
    es, ex = one_euro_step(None if state is None else state.expression, t,
                           params.expression, cfg.expression)
    ls, li = None, None
    if params.lighting is not None:
        ls, li = one_euro_step(None if state is None else state.lighting, t,
                               params.lighting, cfg.lighting)
        li = li.astype(np.float32).reshape(np.shape(params.lighting))
    out = replace(params, rotation=q, translation=tr,
                  expression=np.clip(ex, 0.0, 1.0).astype(np.float32), lighting=li)
    return LiveState(t, rs, ts, es, ls), out


class LiveSmoother:
    """Thin stateful wrapper over :func:`live_step` for one face track (one per face id).

    Lost frames: simply do not call :meth:`update`; a gap longer than ``max_gap_s`` restarts the
    filters by itself, :meth:`reset` restarts them explicitly (e.g. a new face id).
    """

    def __init__(self, cfg: LiveConfig | SmoothingConfig | None = None) -> None:
        if cfg is None:
            cfg = load_smoothing_config()
        self.cfg: LiveConfig = cfg.live if isinstance(cfg, SmoothingConfig) else cfg
        self._state: LiveState | None = None

    @property
    def state(self) -> LiveState | None:
        return self._state

    def update(self, t: float, params: FaceParams) -> FaceParams:
        self._state, out = live_step(self._state, t, params, self.cfg)
        return out

    def reset(self) -> None:
        self._state = None


# ------------------------------------------------------------------------- offline: zero phase

def _interp_rows(t_new: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Linear interpolation of the rows of ``x (n, C)`` sampled at increasing ``t`` to ``t_new``."""
    i = np.clip(np.searchsorted(t, t_new, side="right") - 1, 0, len(t) - 2)
    w = ((t_new - t[i]) / (t[i + 1] - t[i]))[:, None]
    return x[i] * (1.0 - w) + x[i + 1] * w


def _zero_phase(t: np.ndarray, x: np.ndarray, cutoff_hz: float, order: int) -> np.ndarray:
    """Zero-phase Butterworth low-pass of ``x (n, C)`` sampled at increasing times ``t (n,)``."""
    n = len(t)
    if n < 3:
        return x
    span = t[-1] - t[0]
    h = span / (n - 1)
    uniform = np.max(np.abs(t - (t[0] + h * np.arange(n)))) <= 0.1 * h
    if uniform:
        grid, xg = t, x
    else:
        h = float(np.median(np.diff(t)))
        m = int(round(span / h)) + 1
        grid = np.linspace(t[0], t[-1], m)
        h = span / (m - 1)
        xg = _interp_rows(grid, t, x)
    if cutoff_hz >= 0.5 / h * 0.999:  # nothing above the cut-off can be represented
        return x
    # imported here: scipy.signal takes 0.4 s to import (scipy.stats with it), which live
    # smoothing (``face3d serve``) never needs
    from scipy import signal

    sos = signal.butter(order, cutoff_hz, fs=1.0 / h, output="sos")
    full_pad = 3 * (2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum())))
    y = signal.sosfiltfilt(sos, xg, axis=0, padlen=min(full_pad, len(grid) - 1))
    return y if uniform else _interp_rows(t, grid, y)


def _continuous_signs(q: np.ndarray) -> np.ndarray:
    """Flip quaternions ``(n, 4)`` so that consecutive ones have a non-negative dot product."""
    d = np.sum(q[1:] * q[:-1], axis=1)
    s = np.concatenate([[1.0], np.cumprod(np.where(d < 0, -1.0, 1.0))])
    return q * s[:, None]


def _segments(times: np.ndarray, present: np.ndarray, max_gap_s: float) -> list[np.ndarray]:
    """Index arrays of runs of present frames with no lost frame, no gap > ``max_gap_s`` and
    strictly increasing times (a repeated or backward timestamp also starts a new run)."""
    idx = np.flatnonzero(present)
    if idx.size == 0:
        return []
    dt = np.diff(times[idx])
    if np.any(dt <= 0):
        log.warning("smooth_offline: %d non-increasing timestamps; splitting segments there",
                    int(np.sum(dt <= 0)))
    breaks = (np.diff(idx) > 1) | (dt > max_gap_s) | (dt <= 0)
    return np.split(idx, np.flatnonzero(breaks) + 1)


def _fast_weight(t: np.ndarray, speed: np.ndarray, ramp: tuple[float, float]) -> np.ndarray:
    """Blend weight toward the raw signal (n,): 0 below ``ramp[0]``, 1 above ``ramp[1]``, taken
    on the raw speed spread over ±2 samples (a fast burst and its edges stay raw)."""
    from scipy.ndimage import maximum_filter1d

    lo, hi = ramp
    w = np.clip((maximum_filter1d(speed, size=5, mode="nearest") - lo) / (hi - lo), 0.0, 1.0)
    return w


def _speeds(t: np.ndarray, x: np.ndarray, rotation: bool) -> np.ndarray:
    """Per-sample speed (central differences) of a smooth track ``x (n, C)``."""
    n = len(t)
    if n < 2:
        return np.zeros(n)
    if rotation:
        d = np.linalg.norm(quat_to_rotvec(quat_multiply(x[1:], quat_conjugate(x[:-1]))), axis=1)
    else:
        d = np.linalg.norm(np.diff(x, axis=0), axis=1)
    v = d / np.maximum(np.diff(t), 1e-9)
    out = np.empty(n)
    out[0], out[-1] = v[0], v[-1]
    out[1:-1] = 0.5 * (v[:-1] + v[1:])
    return out


def _smooth_segment(t: np.ndarray, ps: list[FaceParams], cfg: OfflineConfig) -> list[FaceParams]:
    q_raw = _continuous_signs(quat_normalize(np.stack([p.rotation for p in ps])))
    q_f = _zero_phase(t, q_raw, cfg.rotation_cutoff_hz, cfg.order)
    q_f = q_f / np.linalg.norm(q_f, axis=1, keepdims=True)  # same hemisphere as q_raw: no flip
    w = _fast_weight(t, _speeds(t, q_raw, True), cfg.rotation_fast_rad_s)[:, None]
    q = quat_normalize(np.where(w > 0, q_f + w * (q_raw - q_f), q_f))  # nlerp toward raw
    tr_raw = np.stack([np.asarray(p.translation, np.float64) for p in ps])
    tr = _zero_phase(t, tr_raw, cfg.translation_cutoff_hz, cfg.order)
    w = _fast_weight(t, _speeds(t, tr_raw, False), cfg.translation_fast_m_s)[:, None]
    tr = np.where(w > 0, tr + w * (tr_raw - tr), tr)
    ex = np.clip(_zero_phase(t, np.stack([np.asarray(p.expression, np.float64) for p in ps]),
                             cfg.expression_cutoff_hz, cfg.order), 0.0, 1.0)
    li: list[np.ndarray | None] = [p.lighting for p in ps]
    lights = [x for x in li if x is not None]
    if len(lights) == len(ps) and len({np.shape(x) for x in lights}) == 1:
        shape = np.shape(lights[0])
        flat = np.stack([np.asarray(x, np.float64).reshape(-1) for x in lights])
        li = [y.astype(np.float32).reshape(shape)
              for y in _zero_phase(t, flat, cfg.lighting_cutoff_hz, cfg.order)]
    return [replace(p, rotation=q[k], translation=tr[k], expression=ex[k].astype(np.float32),
                    lighting=li[k]) for k, p in enumerate(ps)]


def smooth_offline(times: np.ndarray, params: Sequence[FaceParams | None],
                   cfg: OfflineConfig | SmoothingConfig | None = None) -> list[FaceParams | None]:
    """Zero-phase smoothing of one face track (see the module docstring for the scheme).

    ``times``: ``(N,)`` seconds, normally strictly increasing (a repeated or backward timestamp,
    as in a damaged file, ends a segment and logs a warning); ``params``: N entries, ``None`` for
    frames where the face was lost (they stay ``None``). Raises :class:`InputError` when the
    lengths differ or a time is not finite.
    """
    if cfg is None:
        cfg = load_smoothing_config()
    if isinstance(cfg, SmoothingConfig):
        cfg = cfg.offline
    times = np.asarray(times, np.float64).reshape(-1)
    if len(times) != len(params):
        raise InputError(f"smooth_offline: {len(times)} times for {len(params)} frames")
    if not np.all(np.isfinite(times)):
        raise InputError("smooth_offline: times must be finite")
    out: list[FaceParams | None] = list(params)
    present = np.array([p is not None for p in params], bool)
    for seg in _segments(times, present, cfg.max_gap_s):
        seg_params = [p for p in (params[i] for i in seg) if p is not None]   # all present
        smoothed = _smooth_segment(times[seg], seg_params, cfg)
        for i, p in zip(seg, smoothed, strict=True):
            out[i] = p
    return out


def apply_smoothing(mode: SmoothMode, times: np.ndarray, params: Sequence[FaceParams | None],
                    cfg: SmoothingConfig | None = None) -> list[FaceParams | None]:
    """Smooth a whole recorded track with ``mode`` (``--smooth offline|live|none``).

    ``"live"`` replays the causal filter over the track (what a live session would have shown),
    skipping lost frames; ``"none"`` returns the input. Raises :class:`ConfigError` for an
    unknown mode.
    """
    cfg = load_smoothing_config() if cfg is None else cfg
    if len(times) != len(params):
        raise InputError(f"apply_smoothing: {len(times)} times for {len(params)} frames")
    if mode == "none":
        return list(params)
    if mode == "offline":
        return smooth_offline(times, params, cfg.offline)
    if mode == "live":
        sm = LiveSmoother(cfg.live)
        return [None if p is None else sm.update(float(t), p)
                for t, p in zip(times, params, strict=True)]
    raise ConfigError(f"unknown smoothing mode {mode!r}; expected one of {SMOOTH_MODES}")
