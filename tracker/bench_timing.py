"""Timed passes of ``face3d bench`` over one video (wall clock, ``time.perf_counter``).

* :func:`floor_pass` — the floor: PyAV decoding (:func:`tracker.sources.open_source`, in the
  same background decode thread as ``face3d track``) + MediaPipe
  (:class:`tracker.landmarks.LandmarkDetector`) on every frame, nothing else; keeps the
  landmarks when asked, for the replays and the quality measures.
* :func:`track_pass` — ``face3d track`` without the command line: :func:`tracker.track.track_video`
  writing the default CSV + sidecar.
* :func:`decode_pass` — decoding alone, serially, timed per frame.
* :func:`replay` — :meth:`FaceTracker.step_landmarks` over cached landmarks (no MediaPipe), with
  the revisions applied as ``face3d track`` applies them; timed per frame.
* :func:`stage_times` — per-call times of the stages inside and after the tracker step: the
  Levenberg-Marquardt fit, gaze, live and offline smoothing, CSV row encoding.

Every pass opens its own source and detector, so its time includes their start-up, as a user's
run does. Numbers are milliseconds unless named ``*_s``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .csvout import face3d_columns, face3d_row
from .facemodel import FaceModel
from .fitting import fit_frame, identity_points
from .gaze import IRIS_MP, gaze_weights, solve_gaze
from .landmarks import LandmarkDetector, inter_ocular
from .pipeline import FaceTracker, TrackConfig
from .rotation import quat_to_matrix
from .sources import open_source
from .track import (
    TrackOutputs,
    TrackSummary,
    prefetch,
    project_lmk68,
    smooth_results,
    track_video,
)
from .types import Camera, FaceResult, FrameResult, Landmarks, VideoInfo


@dataclass(frozen=True)
class FloorRun:
    """One floor pass: ``seconds`` wall time from opening the file to the last landmarks,
    ``frames``, per-frame MediaPipe times ``detect_ms (N,)``, and (when kept) per frame the
    presentation ``times (N,)``, frame ``indices (N,)`` and MediaPipe's ``faces``."""

    seconds: float
    frames: int
    detect_ms: np.ndarray
    info: VideoInfo
    times: np.ndarray | None = None
    indices: np.ndarray | None = None
    faces: tuple[tuple[Landmarks, ...], ...] | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def floor_pass(path: str, cfg: TrackConfig, max_frames: int | None = None,
               keep: bool = False, sequential: bool = False) -> FloorRun:
    """Decode + MediaPipe on every frame of ``path`` (first ``max_frames``); see module doc.
    ``sequential``: decode and MediaPipe in turn on this thread (no decode thread) — the plain
    sum "decode + MediaPipe", the second reference the report gives."""
    t0 = time.perf_counter()
    src = open_source(path)
    det = LandmarkDetector(max_faces=cfg.max_faces, min_detection_confidence=cfg.min_detection_confidence,
                           min_tracking_confidence=cfg.min_tracking_confidence)
    sar = src.info.sar
    dms: list[float] = []
    times: list[float] = []
    idx: list[int] = []
    faces: list[tuple[Landmarks, ...]] = []
    frames = iter(src) if sequential else prefetch(src)
    try:
        for fr in frames:
            t1 = time.perf_counter()
            found = det.detect(fr.image, fr.time_s, sar)
            dms.append((time.perf_counter() - t1) * 1e3)
            if keep:
                times.append(fr.time_s)
                idx.append(fr.index)
                faces.append(found)
            if max_frames is not None and len(dms) >= max_frames:
                break
    finally:
        frames.close()
        src.close()
        det.close()
    seconds = time.perf_counter() - t0
    return FloorRun(seconds, len(dms), np.array(dms), src.info,
                    np.array(times) if keep else None, np.array(idx) if keep else None,
                    tuple(faces) if keep else None)


def decode_pass(path: str, max_frames: int | None = None) -> np.ndarray:
    """Per-frame decode + RGB conversion times ``(N,)`` ms, serially in this thread."""
    out: list[float] = []
    with open_source(path) as src:
        it = iter(src)
        while max_frames is None or len(out) < max_frames:
            t0 = time.perf_counter()
            fr = next(it, None)
            if fr is None:
                break
            out.append((time.perf_counter() - t0) * 1e3)
    return np.array(out)


def track_pass(path: str, model: FaceModel, cfg: TrackConfig, csv_path: Path,
               max_frames: int | None = None) -> tuple[float, TrackSummary, list[FrameResult]]:
    """``face3d track PATH --csv CSV_PATH`` in-process: wall seconds of the whole call (open,
    track, smooth, write), the summary and the final results."""
    t0 = time.perf_counter()
    summary, results = track_video(path, model, cfg, TrackOutputs(csv_path), progress=False,
                                   max_frames=max_frames)
    return time.perf_counter() - t0, summary, results


class _CachedLandmarks:
    """A stand-in detector for :class:`FaceTracker` when landmarks are fed directly."""

    def detect(self, image: np.ndarray, time_s: float, sar: float = 1.0) -> tuple[Landmarks, ...]:
        raise RuntimeError("replay feeds landmarks through step_landmarks")

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def cached_tracker(model: FaceModel, cam: Camera, cfg: TrackConfig, sar: float = 1.0) -> FaceTracker:
    """A :class:`FaceTracker` without MediaPipe, fed through :meth:`FaceTracker.step_landmarks`."""
    return FaceTracker(model, cam, cfg, sar=sar, detector=_CachedLandmarks())  # type: ignore[arg-type]


def _revise(results: list[FrameResult], pos: dict[int, int], idx: int, rev: FaceResult) -> None:
    """Replace face ``rev.face_id`` of frame ``idx`` by its refit (as ``face3d track`` does)."""
    k = pos.get(idx)
    if k is not None:
        fr = results[k]
        results[k] = replace(fr, faces=tuple(rev if f.face_id == rev.face_id else f for f in fr.faces))


def replay(model: FaceModel, cam: Camera, cfg: TrackConfig, floor: FloorRun, smooth: str,
           sar: float = 1.0) -> tuple[list[FrameResult], np.ndarray]:
    """Track the cached landmarks of ``floor`` with ``smooth`` (``none``/``live``/``offline``)
    exactly as ``face3d track --smooth SMOOTH`` would (revisions applied, offline smoothing
    after the loop; with a regressor the frames are decoded again for it). Returns the results (landmarks kept) and per-frame step times ``(N,)`` ms
    (``step_landmarks`` + applying its revisions)."""
    if floor.faces is None or floor.times is None or floor.indices is None:
        raise ValueError("replay needs a floor pass run with keep=True")
    tracker = cached_tracker(model, cam, replace(cfg, smooth=smooth), sar)
    results: list[FrameResult] = []
    pos: dict[int, int] = {}
    ms = np.empty(len(floor.faces))
    # the regressor needs the frames: decode them again (outside the timed step)
    images: Iterator = iter(())
    src = None
    if tracker.regressor is not None:
        from .sources import open_source
        src = open_source(floor.info.source)
        images = (f.image for f in src)
    for k, (i, t, faces) in enumerate(zip(floor.indices, floor.times, floor.faces)):
        image = next(images, None)
        t0 = time.perf_counter()
        fr = tracker.step_landmarks(int(i), float(t), faces, image)
        pos[fr.index] = len(results)
        results.append(fr)
        for idx, rev in tracker.pop_revisions():
            _revise(results, pos, idx, rev)
        ms[k] = (time.perf_counter() - t0) * 1e3
    if src is not None:
        src.close()
    if smooth == "offline":
        results = smooth_results(results, model)
    return results, ms


def _first(r: FrameResult) -> FaceResult | None:
    return r.faces[0] if r.faces and r.faces[0].params is not None else None


def stage_times(model: FaceModel, cam: Camera, cfg: TrackConfig, tracker: FaceTracker,
                results: Sequence[FrameResult]) -> dict[str, np.ndarray]:
    """Per-call times (ms) of the stages, re-run on the fitted ``results`` of one clip (raw,
    landmarks kept): ``fit`` (:func:`fit_frame` warm-started from the previous frame, as in
    tracking), ``gaze`` (:func:`solve_gaze` + :func:`gaze_weights`), ``smooth_live`` (one
    :class:`LiveSmoother` update), ``smooth_offline`` (whole-clip :func:`smooth_results` / frames,
    one value), ``csv_row`` (one default-layout row encoded and written to memory) and
    ``csv_row_landmarks`` (with the projected ``lmk68`` columns). ``tracker`` provides the fit
    basis and the eye model."""
    from .smoothing import LiveSmoother, load_smoothing_config

    out: dict[str, list[float]] = {k: [] for k in ("fit", "gaze", "smooth_live", "csv_row",
                                                   "csv_row_landmarks")}
    basis, eyes, fit_cfg = tracker.basis, tracker.eyes, cfg.fit
    live = LiveSmoother(load_smoothing_config().live)
    names = model.exp_names
    cols = face3d_columns(names, model.n_identity)
    cols_l = face3d_columns(names, model.n_identity, landmarks=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    prev = None
    points_cache: dict[bytes, np.ndarray] = {}
    for r in results:
        f = _first(r)
        if f is None or f.landmarks is None:
            prev = None
            continue
        p, pts = f.params, f.landmarks.points
        key = np.asarray(p.identity).tobytes()
        if key not in points_cache:
            points_cache = {key: identity_points(basis, p.identity)}
        ipts = points_cache[key]
        target = pts[basis.mp_index, :2].astype(np.float64)
        iod = max(inter_ocular(pts), 1.0)
        t0 = time.perf_counter()
        fit_frame(basis, ipts, cam, target, iod, fit_cfg, prev)
        t1 = time.perf_counter()
        rmat = quat_to_matrix(p.rotation)
        ang = solve_gaze(eyes, p.identity, rmat, p.translation, cam,
                         pts[[IRIS_MP["R"], IRIS_MP["L"]], :2].astype(np.float64))
        gaze_weights(ang, names)
        t2 = time.perf_counter()
        live.update(r.time_s, p)
        t3 = time.perf_counter()
        w.writerow(face3d_row(len(cols), r.index, r.time_s, f.face_id, f.status, f.confidence, p,
                              names))
        t4 = time.perf_counter()
        w.writerow(face3d_row(len(cols_l), r.index, r.time_s, f.face_id, f.status, f.confidence,
                              p, names, project_lmk68(model, cam, p), landmarks=True))
        t5 = time.perf_counter()
        for k, dt in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            out[k].append(dt * 1e3)
        prev = p
        if buf.tell() > 1 << 22:
            buf.seek(0)
            buf.truncate()
    t0 = time.perf_counter()
    smooth_results(list(results), model)
    off = (time.perf_counter() - t0) * 1e3 / max(len(results), 1)
    res = {k: np.array(v) for k, v in out.items()}
    res["smooth_offline"] = np.array([off])
    return res
