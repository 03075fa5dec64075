"""``face3d track``: a recorded video (or image) → CSV + sidecar JSON (and optionally an overlay).

The shell around :class:`tracker.pipeline.FaceTracker`, as a three-stage pipeline: decoding in
one background thread (PyAV releases the GIL), MediaPipe in a second (its graph releases the GIL
while it runs; it is single-threaded, so it owns one core), fitting in the caller's thread (the
numba kernel releases the GIL too). Throughput is then set by the slowest stage, MediaPipe,
rather than by the sum of the stages; results are kept per frame,
revised when a track's identity settles, smoothed (offline, zero-phase, by default for files),
then written atomically. Ctrl-C stops the loop and writes the rows done so far (a valid CSV); the
caller then exits with 130.

A camera that disappears mid-stream raises :class:`tracker.errors.CameraError` *after* the rows
captured so far are written. An overlay that fails mid-run (disk full, encoder error) is dropped
— nothing is left at its path — while tracking goes on; the CSV and sidecar are written, then
:class:`tracker.errors.OverlayError` is raised (exit status 1): the overlay is the secondary
output and must not cost the tracking.

Decisions for files:

* A truncated file (ends before its container says) is an error by default — the frames that
  decoded are not written, so a half-transcribed video is never mistaken for a whole one; pass
  ``allow_truncated=True`` (``--allow-truncated``) to keep them.
* Landmarks of tracked frames are not kept in memory (10k frames stay small); lmk68 columns are
  the *projected ICT* points, computed from the final coefficients.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Literal, TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

from . import __version__, threadcpu
from .camera import project, transform
from .csvout import (CONVENTIONS, AtomicCsv, LIVELINK_COLUMNS, face3d_columns, face3d_row,
                     livelink_row, write_json_atomic)
from .errors import CameraError, InputError, OverlayError
from .facemodel import FaceModel, vertices
from .landmarks import LandmarkDetector
from .pipeline import FaceTracker, TrackConfig, make_camera
from .rotation import quat_to_matrix
from .types import Camera, FaceParams, FaceResult, Frame, FrameResult, VideoInfo

if TYPE_CHECKING:
    from .overlay import OverlayStream
    from .videoout import RateControl

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class TrackOutputs:
    """What to write. ``fmt``: ``face3d`` (default layout) or ``livelink``; ``overlay_rate`` /
    ``overlay_preset``: libx264 settings of the overlay (``None``: the overlay module's)."""

    csv: Path
    fmt: Literal["face3d", "livelink"] = "face3d"
    landmarks: bool = False
    arkit: bool = False
    overlay: Path | None = None
    overlay_mode: str = "shaded"
    overlay_rate: RateControl | None = None
    overlay_preset: str | None = None


@dataclass(frozen=True)
class TrackSummary:
    input: str
    csv: Path | None
    frames: int
    tracked_frames: int
    faces: int
    seconds: float
    """Wall time of the frame loop (decode to fit; an overlay is drawn and encoded alongside).
    Not included: the overlay's drain of its last queued frames and the CSV write, which
    overlap each other at the end."""
    interrupted: bool = False
    truncated: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        pct = 100.0 * self.tracked_frames / self.frames if self.frames else 0.0
        s = (f"{Path(self.input).name}: {self.frames} frames, face in {self.tracked_frames} "
             f"({pct:.1f}%), {self.faces} face id(s), {self.fps:.1f} fps")
        if self.csv:
            s += f" -> {self.csv}"
        if self.interrupted:
            s += " (interrupted: rows done so far)"
        return s


MEDIAPIPE_QUEUE_BYTES = 96 * 2**20
"""Memory for frames waiting between MediaPipe and the fitting thread (8 to 48 frames): 48 at
512x512, 16 at 1920x1080, 8 at 4K."""


@contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """OpenCV's worker threads limited to ``n`` for the block (process-wide, then restored)."""
    import cv2

    prev = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(prev)


class prefetch(Iterator[T]):  # noqa: N801 - used like a generator function
    """Iterate ``it`` in a background thread, ``depth`` items ahead; exceptions are re-raised
    here. The thread starts at once (work overlaps whatever the caller does next);
    :meth:`close` stops it, also before the first item was taken."""

    def __init__(self, it: Iterable[T], depth: int = 4, name: str = "prefetch"):
        self._q: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        # the thread holds no reference to self: an abandoned iterator is collected and stops it
        self._th = threading.Thread(target=self._run, args=(it, self._q, self._stop),
                                    name=threadcpu.worker_name(name), daemon=True)
        self._th.start()

    @staticmethod
    def _run(it: Iterable[T], q: queue.Queue, stop: threading.Event) -> None:
        def put(item: tuple[int, object]) -> bool:  # False once the consumer has gone
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for x in it:
                if not put((0, x)):
                    return
            put((1, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((2, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator source is finished in the thread that ran it
            threadcpu.record()

    def __iter__(self) -> "prefetch[T]":
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        kind, x = self._q.get()
        if kind == 0:
            return x  # type: ignore[return-value]
        self.close()
        if kind == 2:
            raise x  # type: ignore[misc]
        raise StopIteration

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        self._stop.set()
        while True:  # unblock a worker waiting on a full queue
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._th.join(timeout=10.0)  # the worker checks `stop` at least every 0.1 s between items
        if self._th.is_alive():
            log.warning("background %s thread did not stop within 10 s", self._th.name)

    def __del__(self) -> None:
        self._stop.set()


def decode_while_detecting(frames: Iterable[Frame], detector: LandmarkDetector,
                           sar: float = 1.0) -> Iterator[tuple[Frame, tuple]]:
    """``(frame, faces)`` for each of ``frames``, decoding frame n + 1 in this thread while
    MediaPipe's graph works on frame n in its own (:meth:`LandmarkDetector.submit` /
    :meth:`~LandmarkDetector.collect`). The same answers as detecting frame by frame.

    ``track --overlay`` uses it instead of a decoding thread of its own feeding a MediaPipe
    thread: with drawing and x264 on top, both cores are busy and one thread and queue fewer
    pays. A/B in one process, medians of 4–5 rounds, ``track --overlay`` over the floor: d13
    (720x1280) 0.428 → 0.465, s18 (1280x720) 0.514 → 0.535, d10 (512) 0.590 → 0.625; CPU a
    frame 13.0 → 12.6 ms on d13. Without the overlay the separate decoding thread, running up
    to 8 frames ahead, is better: ``face3d track`` on d13 0.795 → 0.719 this way (d3 0.930 →
    0.926). Closes ``frames`` when done, like :class:`prefetch`. When decoding fails (a truncated or
    corrupt file), the frame MediaPipe was working on is still yielded before the error."""
    it = iter(frames)
    try:
        f = next(it, None)
        if f is None:
            return
        detector.submit(f.image, f.time_s, sar)
        while True:
            try:
                nxt = next(it)  # decoded while MediaPipe works on f
            except StopIteration:
                break
            except Exception:
                yield f, detector.collect()  # the last good frame is not lost to the error
                raise
            faces = detector.collect()
            detector.submit(nxt.image, nxt.time_s, sar)
            yield f, faces
            f = nxt
        yield f, detector.collect()
    finally:
        if detector.pending:
            detector.collect()
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def _progress(total: int | None, enabled: bool):  # pragma: no cover - terminal only
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="frame", dynamic_ncols=True, file=sys.stderr, leave=False)


def track_video(input_spec: str, model: FaceModel, cfg: TrackConfig, out: TrackOutputs | None,
                *, progress: bool | None = None, allow_truncated: bool = False,
                on_frame: Callable[[FrameResult], None] | None = None,
                max_frames: int | None = None, pipelined: bool = True,
                ) -> tuple[TrackSummary, list[FrameResult]]:
    """Track a file or image; write ``out`` (if given). Returns the summary and final results.

    ``pipelined``: decode, MediaPipe and fitting in three threads (one file at a time as fast as
    the slowest stage). ``False`` runs them in turn on one thread — what ``face3d batch`` workers
    use, since there the parallelism is across files, one core per worker.

    Raises :class:`tracker.errors.InputError` for unreadable input (nothing written).
    KeyboardInterrupt is caught: the rows done so far are written and ``summary.interrupted`` set.
    """
    # The per-frame maths is small: second OpenBLAS and OpenCV threads only spin, taking the
    # cores MediaPipe, decoding and the overlay need (measured 0.5 and 0.7 ms of CPU a frame);
    # both are restored on return.
    with threadpool_limits(limits=1, user_api="blas"), opencv_threads(1):
        return _track_video(input_spec, model, cfg, out, progress, allow_truncated, on_frame,
                            max_frames, pipelined)


def _track_video(input_spec: str, model: FaceModel, cfg: TrackConfig, out: TrackOutputs | None,
                 progress: bool | None, allow_truncated: bool,
                 on_frame: Callable[[FrameResult], None] | None, max_frames: int | None,
                 pipelined: bool) -> tuple[TrackSummary, list[FrameResult]]:
    from .sources import open_source

    if progress is None:
        progress = sys.stderr.isatty()
    src = open_source(input_spec)
    src.warn_truncated = allow_truncated  # otherwise the InputError below says it, once
    info = src.info
    static = info.kind == "image"
    cam = make_camera(info, cfg)
    want_overlay = out is not None and out.overlay is not None and not static
    # the overlay re-encodes the decoder's own planes; set before decoding starts (below)
    src.keep_yuv = want_overlay
    detector = LandmarkDetector(max_faces=cfg.max_faces, static=static,
                                min_detection_confidence=cfg.min_detection_confidence,
                                min_tracking_confidence=cfg.min_tracking_confidence)

    def detected(frames: Iterable[Frame]) -> Iterator[tuple[Frame, tuple]]:
        for f in frames:
            yield f, detector.detect(f.image, f.time_s, info.sar)

    # Decoding and MediaPipe start now, so they run while the tracker below is set up (~25 ms),
    # with queues deep enough that they keep going while this thread is busy with an identity
    # update (30–70 ms at a track's 10th and 40th frame, ~20 frames of MediaPipe); the landmark
    # queue holds up to MEDIAPIPE_QUEUE_BYTES of frames (RGB, and the YUV planes for an overlay).
    frame_bytes = info.width * info.height * (4.5 if want_overlay else 3)
    depth = int(np.clip(MEDIAPIPE_QUEUE_BYTES // max(1, frame_bytes), 8, 48))
    if not pipelined:
        stream = detected(src)
    elif want_overlay:  # one thread decodes while MediaPipe works (see decode_while_detecting)
        stream = prefetch(decode_while_detecting(src, detector, info.sar), depth=depth,
                          name="mediapipe")
    else:
        stream = prefetch(detected(prefetch(src, depth=8, name="decode")), depth=depth,
                          name="mediapipe")
    try:
        # --smooth live on a file shows what a live consumer sees: no retroactive identity refits
        tracker = FaceTracker(model, cam, cfg, sar=info.sar, static_images=static,
                              revise_history=cfg.smooth != "live", detector=detector)
        overlay = None
        if want_overlay:
            from .overlay import DEFAULT_PRESET, DEFAULT_RATE, OverlayStream
            assert out is not None and out.overlay is not None
            overlay = OverlayStream(input_spec, out.overlay, model, cam, info.fps, info.sar,
                                    src.path if info.has_audio else None, out.overlay_mode,
                                    rate=out.overlay_rate or DEFAULT_RATE,
                                    preset=out.overlay_preset or DEFAULT_PRESET)
    except BaseException:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        src.close()
        detector.close()
        raise
    results: list[FrameResult] = []
    pos: dict[int, int] = {}
    interrupted = False
    camera_error: CameraError | None = None
    overlay_error: OverlayError | None = None
    bar = _progress(info.n_frames, progress)
    t0 = time.perf_counter()
    try:
        for frame, faces in stream:
            fr = tracker.step_landmarks(frame.index, frame.time_s, faces, frame.image)
            # keep memory flat: landmarks are not needed after fitting
            kept = replace(fr, faces=tuple(replace(f, landmarks=None) for f in fr.faces))
            # a frame goes into the overlay and the results together, and the refits it brought
            # are applied whole: a Ctrl-C in between (it once left a video one frame longer than
            # its CSV) waits for the end of the block
            with _sigint_deferred():
                if overlay is not None:
                    try:
                        overlay.add(frame.image, frame.time_s, fr, frame.yuv)
                    except Exception as e:  # noqa: BLE001 - the overlay fails alone (OverlayError)
                        overlay_error = _overlay_failed(overlay, out, e, f"by frame {frame.index}")
                        overlay = None
                        src.keep_yuv = False  # the planes were for the overlay
                pos[kept.index] = len(results)
                results.append(kept)
                for idx, rev in tracker.pop_revisions():
                    _apply_revision(results, pos, idx, rev)
            if on_frame:
                on_frame(kept)
            if bar is not None:
                bar.update(1)
            if max_frames is not None and len(results) >= max_frames:
                break
    except KeyboardInterrupt:
        interrupted = True
        for idx, rev in tracker.pop_revisions():
            _apply_revision(results, pos, idx, rev)
    except CameraError as e:  # the camera vanished: keep what was captured, then report it
        camera_error = e
        interrupted = True
        for idx, rev in tracker.pop_revisions():
            _apply_revision(results, pos, idx, rev)
    except BaseException:
        if overlay is not None:
            overlay.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # stop the decode and MediaPipe threads before closing what they use
        src.close()
        tracker.close()
    seconds = time.perf_counter() - t0
    if src.truncated and not allow_truncated and not interrupted:
        if overlay is not None:
            overlay.abort()
        raise InputError(f"{input_spec}: file is truncated or damaged after {len(results)} frames "
                         "(nothing written; --allow-truncated keeps the frames that decode)")
    # after Ctrl-C too: a valid video of the frames done. Its last queued frames are drawn and
    # encoded while this thread smooths and writes the CSV (d13: a 20–40 ms drain beside 55 ms).
    finishing = _FinishInBackground(overlay) if overlay is not None else None
    try:
        if cfg.smooth == "offline" and not static:
            results = smooth_results(results, model)
        tracked = sum(1 for r in results if r.faces)
        face_ids = {f.face_id for r in results for f in r.faces}
        summary = TrackSummary(input_spec, out.csv if out else None, len(results), tracked,
                               len(face_ids), seconds, interrupted, src.truncated)
        if out is not None:
            write_outputs(out, results, model, cam, info, cfg, summary)
    finally:
        finish_error = finishing.wait() if finishing is not None else None
    if finish_error is not None:
        assert overlay is not None
        overlay_error = _overlay_failed(overlay, out, finish_error, "while finishing")
    if camera_error is not None:
        where = f"; the {len(results)} frames before it are in {out.csv}" if out is not None else ""
        raise CameraError(f"{camera_error}{where}")
    if overlay_error is not None:
        raise overlay_error
    return summary, results


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Run the block whole: a SIGINT that arrives inside it is handed to the handler that was in
    place (``KeyboardInterrupt``, or the CLI's :func:`tracker.cli._on_sigint`) when it ends.
    Only the main thread receives Python's signals; elsewhere the block just runs."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is None):  # None: a handler set outside Python
        yield
        return
    pending: list[tuple[int, object]] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            if callable(previous):
                previous(*pending[0])
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)


class _FinishInBackground:
    """``overlay.finish()`` in a thread; :meth:`wait` joins it and returns its error, if any
    (the CSV is written either way; the caller reports the error after it)."""

    def __init__(self, overlay: OverlayStream) -> None:
        self.error: Exception | None = None
        self._overlay = overlay
        self._th = threading.Thread(target=self._run, name="face3d-finish")
        self._th.start()

    def _run(self) -> None:
        try:
            self._overlay.finish()
        except Exception as e:  # noqa: BLE001 - handed to wait()
            self.error = e

    def wait(self) -> Exception | None:
        self._th.join()
        return self.error


def _overlay_failed(overlay: OverlayStream, out: TrackOutputs | None, exc: Exception,
                    when: str) -> OverlayError:
    """Drop a failed overlay (nothing is left at its path) and say so; tracking goes on and the
    CSV is written, then the run ends with the returned error (exit status 1)."""
    overlay.abort()
    path = out.overlay if out is not None else "overlay"
    csv = f"; the CSV is still written to {out.csv}" if out is not None else ""
    log.error("%s: the overlay failed %s (%s)%s", path, when, exc, csv)
    return OverlayError(f"{path}: the overlay video failed {when}: {exc} (no video written; "
                        f"the other outputs were)")


def _apply_revision(results: list[FrameResult], pos: dict[int, int], idx: int, rev: FaceResult) -> None:
    k = pos.get(idx)
    if k is None:
        return
    fr = results[k]
    faces = tuple(replace(rev, landmarks=None) if f.face_id == rev.face_id else f for f in fr.faces)
    results[k] = replace(fr, faces=faces)


def smooth_results(results: list[FrameResult], model: FaceModel) -> list[FrameResult]:
    """Zero-phase smoothing of each face id's series (lost frames split segments)."""
    from .smoothing import load_smoothing_config, smooth_offline

    scfg = load_smoothing_config()
    times = np.array([r.time_s for r in results])
    ids = sorted({f.face_id for r in results for f in r.faces})
    new_faces: list[list[FaceResult]] = [list(r.faces) for r in results]
    for fid in ids:
        seq: list[FaceParams | None] = []
        where: list[int | None] = []
        for r in results:
            k = next((j for j, f in enumerate(r.faces) if f.face_id == fid), None)
            where.append(k)
            seq.append(r.faces[k].params if k is not None else None)
        sm = smooth_offline(times, seq, scfg.offline)
        for i, (k, p) in enumerate(zip(where, sm)):
            if k is not None and p is not None:
                new_faces[i][k] = replace(new_faces[i][k], params=p)
    return [replace(r, faces=tuple(f)) for r, f in zip(results, new_faces)]


def project_lmk68(model: FaceModel, cam: Camera, p: FaceParams) -> np.ndarray:
    """The ICT iBUG-68 vertices of ``p`` projected to pixels ``(68, 2)``."""
    v = vertices(model, p.identity, p.expression, idx=model.lmk68_idx)
    return project(cam, transform(quat_to_matrix(p.rotation), p.translation, v))


def write_outputs(out: TrackOutputs, results: list[FrameResult], model: FaceModel, cam: Camera,
                  info: VideoInfo, cfg: TrackConfig, summary: TrackSummary) -> None:
    """CSV + sidecar JSON, each atomically (the JSON is written after the CSV)."""
    has_light = any(f.params is not None and f.params.lighting is not None
                    for r in results for f in r.faces)
    albedo_k = next((f.params.albedo.shape[0] for r in results for f in r.faces
                     if f.params is not None and f.params.albedo is not None), 0)
    names = model.exp_names
    if out.fmt == "livelink":
        cols = list(LIVELINK_COLUMNS)
    else:
        cols = face3d_columns(names, model.n_identity, lighting=has_light, albedo_k=albedo_k,
                              landmarks=out.landmarks, arkit=out.arkit)
    w = AtomicCsv(out.csv, cols)
    try:
        for r in results:
            if out.fmt == "livelink":
                f0 = r.faces[0].params if r.faces else None
                w.write(livelink_row(r.time_s, info.fps or 30.0, f0, names))
                continue
            if not r.faces:
                w.write(face3d_row(len(cols), r.index, r.time_s, -1, "lost", 0.0, None, names,
                                   lighting=has_light, albedo_k=albedo_k, landmarks=out.landmarks,
                                   arkit=out.arkit))
            for f in r.faces:
                lmk = project_lmk68(model, cam, f.params) if (out.landmarks and f.params) else None
                w.write(face3d_row(len(cols), r.index, r.time_s, f.face_id, f.status, f.confidence,
                                   f.params, names, lmk, lighting=has_light, albedo_k=albedo_k,
                                   landmarks=out.landmarks, arkit=out.arkit))
        w.commit()
    except BaseException:
        w.abort()
        raise
    write_json_atomic(Path(str(out.csv) + ".json"), sidecar(out, cols, model, cam, info, cfg, summary))


def sidecar(out: TrackOutputs, cols: list[str], model: FaceModel, cam: Camera, info: VideoInfo,
            cfg: TrackConfig, summary: TrackSummary) -> dict[str, object]:
    from dataclasses import asdict

    from .smoothing import load_smoothing_config

    smooth: dict[str, object] = {"mode": cfg.smooth}
    if cfg.smooth != "none":
        smooth["settings"] = asdict(load_smoothing_config())
    return {
        "tool": {"name": "face3d", "version": __version__},
        "input": {"path": str(summary.input), "width": info.width, "height": info.height,
                  "fps": info.fps, "sar": info.sar, "rotation_deg": info.rotation_deg,
                  "codec": info.codec, "frames": summary.frames},
        "camera": cam.as_dict(),
        "model": {"name": model.name, "version": model.version, "path": model.path,
                  "n_vertices": model.n_vertices, "n_identity": model.n_identity,
                  "expression_names": list(model.exp_names),
                  "identity_names": [f"id_{i:03d}" for i in range(model.n_identity)]},
        "format": out.fmt,
        "columns": cols,
        "conventions": CONVENTIONS,
        "settings": {"max_faces": cfg.max_faces, "fov_deg": cfg.fov_deg, "focal_px": cfg.focal_px,
                     "smoothing": smooth, "fit": asdict(cfg.fit),
                     "id_schedule": list(cfg.id_schedule), "regressor": cfg.regressor,
                     "regressor_backend": cfg.regressor_backend, "refine": cfg.refine},
        "lighting": ("sh_{r,g,b}_{0..8}: Deep3DFaceRecon SH basis (kernels/shading.py) on camera-space "
                     "unit normals, colour-major, DC term included"),
        "albedo": ("alb_KK_{r,g,b}: coefficients of the albedo basis trainer.albedo.make_albedo_basis"
                   "(model, K) (mean skin colour + cotangent-Laplacian modes of the front face), "
                   "held per track"),
        "summary": {"frames": summary.frames, "tracked_frames": summary.tracked_frames,
                    "face_ids": summary.faces, "interrupted": summary.interrupted,
                    "seconds": round(summary.seconds, 3)},
    }
