"""The per-frame tracker: landmarks → (regressor) → fit → gaze → (live smoothing), one object per
stream holding all tracking state.

State lives here and only here: the landmark detector's tracking, face ids, and per track the
identity estimate, the previous frame's parameters (warm start) and the live filter. Each track's
identity is estimated from its first frames (``TrackConfig.id_schedule``: re-estimated when the
track reaches each listed length, then held). Because the first frames were fitted with a
provisional identity, the tracker refits them when the identity changes and offers the refits as
*revisions* (:meth:`FaceTracker.pop_revisions`), which offline consumers (CSV for files) apply and
live consumers ignore.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from .camera import DEFAULT_FOV_DEG, camera_from_focal, camera_from_fov
from .correspondence import Correspondence, load_correspondence
from .facemodel import FaceModel
from .fitting import FitBasis, FitConfig, fit_frame, fit_identity, identity_points, make_fit_basis
from .gaze import IRIS_MP, EyeBasis, eye_geometry, gaze_weights, make_eye_basis, solve_gaze
from .landmarks import FaceIds, LandmarkDetector, inter_ocular
from .rotation import quat_to_matrix
from .types import Camera, FaceParams, FaceResult, Frame, FrameResult, Landmarks, VideoInfo

log = logging.getLogger(__name__)

SmoothMode = Literal["offline", "live", "none"]


@dataclass(frozen=True)
class TrackConfig:
    """Tracking settings (``configs/track.toml``; CLI flags override).

    ``fov_deg``: field of view along the longer displayed side (see :mod:`tracker.camera`);
    ``focal_px`` overrides it. ``id_schedule``: track lengths (frames) at which the identity is
    re-estimated from all frames so far (at most ``fit.id_frames`` of them, spread evenly); held
    after the last one. ``max_missing_s``: a face missing longer than this gets a new id.
    ``regressor``: the CNN regressor's weights — ``"auto"`` (the packaged
    ``tracker/data/regressor.onnx`` when present), ``"none"`` (landmark fitting only) or a path;
    ``regressor_backend``: ``onnx`` (ONNX Runtime, CPU), ``torch`` or ``tensorrt`` (CUDA).
    ``refine``: fit the landmarks starting from the regressor (``False``: the regressor alone).
    ``regressor_every``: with refinement, the regressor runs on a track's first frame and then on
    every n-th frame: it starts tracks and gives lighting and albedo, and lighting changes slowly
    (smoothed at 1 Hz) while the fit is warm-started from the previous frame anyway. n = 4 saved
    ~0.9 ms of the main thread's 2 ms per frame.
    """

    max_faces: int = 1
    fov_deg: float = DEFAULT_FOV_DEG
    focal_px: float | None = None
    smooth: SmoothMode = "offline"
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    id_schedule: tuple[int, ...] = (10, 40)
    max_missing_s: float = 0.5
    regressor: str = "auto"
    regressor_backend: Literal["onnx", "torch", "tensorrt"] = "onnx"
    regressor_every: int = 4
    refine: bool = True
    fit: FitConfig = field(default_factory=FitConfig)


def make_camera(info: VideoInfo, cfg: TrackConfig) -> Camera:
    if cfg.focal_px:
        return camera_from_focal(info.width, info.height, cfg.focal_px, info.sar)
    return camera_from_fov(info.width, info.height, cfg.fov_deg, info.sar)


_REGRESSORS: dict[tuple, object] = {}


def load_regressor(cfg: TrackConfig):
    """The regressor named by ``cfg``, or ``None`` for ``"none"`` / no packaged weights. Raises
    :class:`tracker.errors.ModelError` / ``BackendUnavailableError``.

    Loaded once per process for each weights file (path, size, modification time) and backend:
    an ONNX Runtime session costs 11–14 ms of CPU to build, paid otherwise by every tracked file.
    The handle is stateless and ONNX Runtime's ``run`` is thread-safe, so trackers share it.
    """
    if cfg.regressor == "none":
        return None
    from .regressor import DEFAULT_WEIGHTS, make_regressor

    if cfg.regressor == "auto" and not DEFAULT_WEIGHTS.is_file():
        log.info("no packaged regressor weights; landmark fitting only")
        return None
    path = DEFAULT_WEIGHTS if cfg.regressor == "auto" else Path(cfg.regressor)
    try:
        st = path.stat()
        key: tuple = (str(path.resolve()), st.st_size, st.st_mtime_ns, cfg.regressor_backend)
    except OSError:  # missing: make_regressor says so
        return make_regressor(path, cfg.regressor_backend)
    if key not in _REGRESSORS:
        _REGRESSORS[key] = make_regressor(path, cfg.regressor_backend)
    return _REGRESSORS[key]


def fit_confidence(rms_iod_pct: float) -> float:
    """Confidence in [0, 1] from the RMS landmark residual (% of IOD): ``1 / (1 + (rms / 5)^2)``.

    A good fit on a frontal face leaves 1.5–3 % (confidence 0.75–0.9); 5 % gives 0.5.
    """
    if not np.isfinite(rms_iod_pct):
        return 0.0
    return float(1.0 / (1.0 + (rms_iod_pct / 5.0) ** 2))


def tr_albedo(tr: "_Track") -> np.ndarray | None:
    """The track's albedo: the mean of the regressor's per-frame albedo over the frames that also
    settle the identity, then held (like the identity)."""
    if tr.albedo_sum is None or tr.albedo_n == 0:
        return None
    return (tr.albedo_sum / tr.albedo_n).astype(np.float32)


@dataclass
class _Track:
    face_id: int
    identity: np.ndarray
    points: np.ndarray
    identity_rev: int = 0
    n: int = 0
    prev: FaceParams | None = None
    history: list[tuple[int, float, Landmarks, FaceParams]] = field(default_factory=list)
    smoother: object | None = None
    albedo_sum: np.ndarray | None = None
    albedo_n: int = 0
    eye_geom: tuple | None = None  # (identity it was made for, gaze.eye_geometry of it)


class FaceTracker:
    """Tracks faces in one stream. ``step(frame)`` → :class:`FrameResult`.

    ``camera`` is fixed for the stream; ``sar`` is passed to MediaPipe (see
    :mod:`tracker.landmarks`). ``smooth="live"`` applies the causal filter inside ``step``;
    ``"offline"`` and ``"none"`` leave smoothing to the caller. ``revise_history=False`` (live
    consumers) skips refitting a track's first frames when its identity settles.
    """

    def __init__(self, model: FaceModel, camera: Camera, cfg: TrackConfig = TrackConfig(),
                 sar: float = 1.0, corr: Correspondence | None = None,
                 detector: LandmarkDetector | None = None, static_images: bool = False,
                 revise_history: bool = True, regressor: object | None = "from-config"):
        self.model = model
        self.regressor = load_regressor(cfg) if regressor == "from-config" else regressor
        if self.regressor is not None and model.kind != "ict":
            log.info("the regressor predicts ICT coefficients; not used with a %s model", model.kind)
            self.regressor = None
        self.revise_history = revise_history
        self.camera = camera
        self.cfg = cfg
        self.sar = sar
        self.corr = corr if corr is not None else load_correspondence()
        self.basis: FitBasis = make_fit_basis(model, self.corr, cfg.fit)
        has_eyes = {"eyeball_left", "eyeball_right", "sclera_left"} <= (
            set(model.part_names) | set(model.eye_subpart_names))
        self.eyes: EyeBasis | None = make_eye_basis(model) if has_eyes else None
        self.detector = detector or LandmarkDetector(
            max_faces=cfg.max_faces, static=static_images,
            min_detection_confidence=cfg.min_detection_confidence,
            min_tracking_confidence=cfg.min_tracking_confidence)
        self.ids = FaceIds(max_missing_s=cfg.max_missing_s)
        self._tracks: dict[int, _Track] = {}
        self._revisions: list[tuple[int, FaceResult]] = []
        self._gaze_idx = {n: i for i, n in enumerate(model.exp_names)}
        self._n_id = model.n_identity
        self._smoother_factory = None
        if cfg.smooth == "live":
            from .smoothing import LiveSmoother, load_smoothing_config
            scfg = load_smoothing_config()
            self._smoother_factory = lambda: LiveSmoother(scfg)

    # ------------------------------------------------------------------ public API
    def step(self, frame: Frame) -> FrameResult:
        faces = self.detector.detect(frame.image, frame.time_s, self.sar)
        return self.step_landmarks(frame.index, frame.time_s, faces, frame.image)

    def step_landmarks(self, index: int, time_s: float, faces: tuple[Landmarks, ...],
                       image: np.ndarray | None = None) -> FrameResult:
        """Fit already-detected landmarks (used by :meth:`step`, tests and benchmarks). Without
        ``image`` the regressor is skipped (landmark fitting only, no lighting/albedo)."""
        ids = self.ids.assign(time_s, faces)
        alive = {t.face_id for t in self.ids._tracks}  # noqa: SLF001
        for fid in list(self._tracks):
            if fid not in alive:
                del self._tracks[fid]
        out = []
        for fid, lm in zip(ids, faces):
            tr = self._tracks.get(fid)
            if tr is None:
                tr = _Track(fid, np.zeros(self._n_id, np.float32), identity_points(self.basis, None))
                if self._smoother_factory:
                    tr.smoother = self._smoother_factory()
                self._tracks[fid] = tr
            out.append(self._fit_track(tr, index, time_s, lm, image))
        return FrameResult(index, time_s, tuple(out))

    def pop_revisions(self) -> list[tuple[int, FaceResult]]:
        """Refits of earlier frames made after an identity update: ``(frame index, result)``."""
        r, self._revisions = self._revisions, []
        return r

    def reset(self) -> None:
        self.detector.reset()
        self.ids.reset()
        self._tracks.clear()
        self._revisions.clear()

    def close(self) -> None:
        self.detector.close()

    # ------------------------------------------------------------------ internals
    def _fit_one(self, tr: _Track, lm: Landmarks, init: FaceParams | None,
                 iterations: int | None = None) -> tuple[FaceParams, float]:
        pts = lm.points
        target = pts[self.basis.mp_index, :2].astype(np.float64)
        iod = max(inter_ocular(pts), 1.0)
        ff = fit_frame(self.basis, tr.points, self.camera, target, iod, self.cfg.fit, init, iterations)
        expr = ff.expression.copy()
        if self.eyes is not None:  # models without eyeballs (BFM) have no gaze
            r = quat_to_matrix(ff.rotation)
            iris = pts[[IRIS_MP["R"], IRIS_MP["L"]], :2].astype(np.float64)
            if tr.eye_geom is None or tr.eye_geom[0] is not tr.identity:
                tr.eye_geom = (tr.identity, eye_geometry(self.eyes, tr.identity))
            ang = solve_gaze(self.eyes, tr.identity, r, ff.translation, self.camera, iris,
                             tr.eye_geom[1])
            for k, v in gaze_weights(ang, self.model.exp_names).items():
                expr[self._gaze_idx[k]] = v
        light = init.lighting if init is not None else None
        return (FaceParams(ff.rotation, ff.translation, expr, tr.identity.copy(), light, tr_albedo(tr)),
                ff.rms_iod_pct)

    def _result(self, tr: _Track, params: FaceParams, lm: Landmarks, rms: float) -> FaceResult:
        return FaceResult(tr.face_id, "tracked", fit_confidence(rms), params, lm, rms, tr.identity_rev)

    def _fit_track(self, tr: _Track, index: int, time_s: float, lm: Landmarks,
                   image: np.ndarray | None = None) -> FaceResult:
        reg = None
        due = (not self.cfg.refine or tr.prev is None
               or tr.n % max(1, self.cfg.regressor_every) == 0)
        if self.regressor is not None and image is not None and due:
            reg = self.regressor.predict(image, lm, self.camera)  # type: ignore[attr-defined]
            if tr.n < (self.cfg.id_schedule[-1] if self.cfg.id_schedule else 1) or tr.albedo_sum is None:
                a = np.asarray(reg.albedo, np.float64)
                tr.albedo_sum = a if tr.albedo_sum is None else tr.albedo_sum + a
                tr.albedo_n += 1
            if not self.cfg.refine:
                return self._regressor_only(tr, time_s, lm, reg)
        init, its = tr.prev, None
        if init is None and reg is not None:  # a new track starts from the regressor, not PnP
            init = FaceParams(reg.rotation, reg.translation, reg.expression, tr.identity)
            its = self.cfg.fit.iterations
        params, rms = self._fit_one(tr, lm, init, its)
        if reg is not None:
            params = replace(params, lighting=np.asarray(reg.lighting, np.float32))
        # between regressor frames the lighting of the previous frame carries over (_fit_one)
        tr.prev = params
        tr.n += 1
        sched = self.cfg.id_schedule
        if sched and tr.n <= sched[-1]:
            tr.history.append((index, time_s, lm, params))
            if tr.n in sched:
                self._update_identity(tr)
                params, rms = self._fit_one(tr, lm, tr.prev)
                tr.prev = params
                if tr.n == sched[-1]:
                    tr.history.clear()
        res = self._result(tr, params, lm, rms)
        if tr.smoother is not None:
            sm = tr.smoother.update(time_s, params)  # type: ignore[attr-defined]
            res = replace(res, params=sm)
        return res

    def _regressor_only(self, tr: _Track, time_s: float, lm: Landmarks, reg: FaceParams) -> FaceResult:
        """``refine=False``: the regressor's own answer (its per-frame identity included)."""
        pts = lm.points
        target = pts[self.basis.mp_index, :2].astype(np.float64)
        iod = max(inter_ocular(pts), 1.0)
        ff = fit_frame(self.basis, identity_points(self.basis, reg.identity), self.camera, target,
                       iod, self.cfg.fit, reg, iterations=0)  # 0 iterations: just the residual
        tr.n += 1
        params = replace(reg, albedo=tr_albedo(tr))
        res = self._result(tr, params, lm, ff.rms_iod_pct)
        if tr.smoother is not None:
            res = replace(res, params=tr.smoother.update(time_s, params))  # type: ignore[attr-defined]
        return res

    def _update_identity(self, tr: _Track) -> None:
        cfg = self.cfg.fit
        hist = tr.history
        sel = np.unique(np.linspace(0, len(hist) - 1, min(cfg.id_frames, len(hist))).astype(int))
        lms = [hist[i][2] for i in sel]
        targets = [lm.points[self.basis.mp_index, :2].astype(np.float64) for lm in lms]
        iods = [max(inter_ocular(lm.points), 1.0) for lm in lms]
        fits = [hist[i][3] for i in sel]
        alpha = tr.identity
        for rnd in range(cfg.id_rounds):
            alpha = fit_identity(self.basis, self.camera, targets, iods, fits, cfg, alpha)
            tr.identity = alpha
            tr.points = identity_points(self.basis, alpha)
            if rnd + 1 < cfg.id_rounds:  # the next round starts from these (the last's: unused)
                fits = [self._fit_one(tr, lm, p, cfg.iterations)[0] for lm, p in zip(lms, fits)]
        tr.identity_rev += 1
        log.debug("face %d: identity rev %d from %d frames, |alpha| = %.2f", tr.face_id,
                  tr.identity_rev, len(lms), float(np.linalg.norm(alpha)))
        if not self.revise_history:  # live: nobody reads revisions; skip the work
            return
        # Refit the whole history with the new identity (sequentially, warm-started).
        prev = None
        for k, (index, t, lm, p0) in enumerate(hist):
            p, rms = self._fit_one(tr, lm, p0, cfg.iterations)
            hist[k] = (index, t, lm, p)
            prev = p
            self._revisions.append((index, self._result(tr, p, lm, rms)))
        tr.prev = prev
