"""Overlay: the reconstructed faces drawn over the input, as an H.264 video or a still image.

:func:`write_overlay` decodes the input again (:func:`tracker.sources.open_source`), draws each
frame's faces from the final (smoothed) results with a :class:`~tracker.drawer.FaceDrawer`, and
encodes with :class:`tracker.videoout.H264Writer` at the input's exact size, frame rate,
timestamps, sample aspect ratio and colour tags, with its audio copied. During ``face3d track
--overlay`` (:class:`OverlayStream`) the same happens in the tracking pass itself, one decode
for both. Decoding and encoding run in threads of their own; drawing runs in a thread of its own
in :func:`write_overlay` and in the tracking thread during ``face3d track`` (measured faster
there, see :class:`OverlayStream`). PyAV releases the GIL while it decodes, converts and
encodes, and the numba kernels of ``kernels/`` are compiled ``nogil`` (while they held it, a
competing pure-Python thread was measured to stretch a 2.5 ms rasterize to 8.9 ms — the GIL
switch interval).

The modes (shaded, wire, points) and how a face is drawn are in :mod:`tracker.drawer`. Pixels
away from the drawn faces are the decoded input, untouched before encoding: for 8-bit 4:2:0
inputs the encoder gets the decoder's own frames with the faces blended straight into their
planes (:class:`_DrawStage`, :class:`~tracker.videoout.DecodedI420`); other inputs go through
RGB. ``tracker/bench_overlay.py`` times the whole
``track --overlay`` run against the decode + MediaPipe floor.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernels.colour import yuv_coefficients

from . import threadcpu
from .drawer import VIDEO_STYLE, FaceDrawer, Mode, OverlayStyle
from .errors import InputError
from .facemodel import FaceModel
from .types import Camera, FaceParams, FrameResult
from .videoout import I420, DecodedI420, RateControl

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_RATE = RateControl("qp", 23)
"""libx264 rate control of overlay videos: constant QP 23. Measured with ``ultrafast``, one thread,
x264 alone on 200 decoded frames (CPU per frame, size per frame, Y PSNR against the input):

clip        CRF 23 (the old default)       QP 23                          QP 21
d13 720p    4.2–4.3 ms  13.2 KB  44.7 dB   3.1–3.4 ms  8.1 KB  42.8 dB    3.6 ms  11.7 KB  44.1 dB
s18 720p    3.7–3.9 ms   8.6 KB  45.7 dB   2.8–2.9 ms  5.6 KB  44.0 dB    3.1 ms   7.8 KB  45.3 dB
d10 512     1.2 ms       4.1 KB  44.1 dB   1.0 ms      2.9 KB  42.7 dB    1.0 ms   3.9 KB  44.1 dB
WDA 512     1.5 ms      11.6 KB  38.2 dB   1.4 ms     16.0 KB  40.2 dB    1.5 ms  20.4 KB  41.8 dB

CRF's per-frame complexity estimate (a half-size motion search, see :class:`RateControl`) is
about a quarter of the encoder at 720p: 0.9–1.0 ms of CPU alone, 1.0 ms inside a ``track --overlay``
run (A/B in one process on d13), where the encoder is the largest single cost. QP 23
keeps 42.8–44 dB on the clean clips (smaller files than CRF 23) and spends more bits on grain
(WDA: 1.4x the file, +2 dB). ``--overlay-crf`` restores content-adaptive rate control;
``--overlay-qp`` moves the quantiser."""
DEFAULT_PRESET = "ultrafast"
"""libx264 preset. Measured re-encoding d10 (512x512, CRF 20, 2 loaded cores): ultrafast 6.7 KB
per frame, superfast 3.8, veryfast 2.4, for 3.5 / 4.6 / 6.2 ms of CPU per frame (RGB→YUV and
muxing included). The overlay must keep up with tracking (≥ 0.5x the decode+MediaPipe floor for
the whole ``track --overlay`` run), so the fastest preset wins; pass ``preset`` for smaller files.
Options on top of ``ultrafast`` gained nothing: ``chroma-me=0``, ``psy=0``, wider dead zones,
``merange=4``, ``tune=zerolatency`` and ``tune=fastdecode`` took 2.36–2.45 ms of CPU a frame
against 2.35 (x264 alone, QP 23, one thread, 300 d13 frames, 2026-12-07)."""

@dataclass(frozen=True)
class OverlaySummary:
    path: Path
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def faces_of(result: FrameResult | None) -> list[FaceParams]:
    """Drawable faces of one frame (tracked, with parameters)."""
    if result is None:
        return []
    return [f.params for f in result.faces if f.params is not None and f.status == "tracked"]


def write_overlay(input_spec: str, out_path: str | Path, results: Sequence[FrameResult],
                  model: FaceModel, cfg: object, mode: Mode = "shaded", *,
                  style: OverlayStyle | None = None, rate: RateControl = DEFAULT_RATE,
                  preset: str = DEFAULT_PRESET, threads: int | None = 1) -> OverlaySummary:
    """Draw ``results`` over ``input_spec`` into ``out_path`` (H.264 video, or a still image when
    the suffix is an image one), atomically. ``cfg`` is the :class:`~tracker.pipeline.TrackConfig`
    the results were tracked with (it gives the camera). ``threads``: numba threads for drawing.

    Every decoded frame is written (same count, size and timestamps as the input); a frame with
    no result is written undrawn. Raises :class:`~tracker.errors.InputError` for unreadable input.
    """
    from .pipeline import make_camera
    from .sources import open_source
    from .track import prefetch
    from .videoout import H264Writer, probe_timing

    out_path = Path(out_path)
    t0 = time.perf_counter()
    src = open_source(input_spec)
    try:
        info = src.info
        cam = make_camera(info, cfg)  # type: ignore[arg-type]
        still = out_path.suffix.lower() in IMAGE_SUFFIXES
        if style is None:
            style = OverlayStyle() if still else VIDEO_STYLE
        drawer = FaceDrawer(model, cam, mode, style, threads)
        by_index = {r.index: r for r in results}
        if still:
            frame = next(iter(src))
            write_image(out_path, drawer.draw(frame.image, faces_of(by_index.get(frame.index))))
            return OverlaySummary(out_path, 1, time.perf_counter() - t0)
        timing = probe_timing(input_spec, info.fps)
        writer = H264Writer(out_path, info.width, info.height, timing, sar=info.sar, rate=rate,
                            preset=preset, audio_from=src.path if info.has_audio else None)
        src.keep_yuv = True  # faces drawn into the decoder's own planes (_DrawStage)
        sink = _ThreadedSink(_DrawStage(drawer, _ThreadedSink(writer), writer),
                             name="draw")
        n = 0
        try:
            for frame in prefetch(src):
                sink.put((frame.image, frame.yuv, faces_of(by_index.get(frame.index))),
                         timing.pts(frame.time_s))
                n += 1
            sink.finish()
        except BaseException:
            sink.abort()
            raise
    finally:
        src.close()
    if src.truncated:
        log.warning("%s: input ended early; the overlay has the %d frames that decoded",
                    input_spec, n)
    if results and n != len(results):
        log.warning("overlay: decoded %d frames but have results for %d", n, len(results))
    return OverlaySummary(out_path, n, time.perf_counter() - t0)


class OverlayStream:
    """The overlay drawn *during* tracking (one decode for both), for ``face3d track --overlay``.

    ``add(frame, result)`` draws ``result``'s faces into ``frame`` in the calling thread and
    queues the picture for the encoder thread. The faces are the tracker's per-frame answers
    passed through a causal One Euro filter per face id (``smooth=True``, the live smoother): the
    CSV's zero-phase smoothing and identity refits need the whole clip, which a second decode
    pass (:func:`write_overlay`) would wait for — measured at 0.29–0.38x the decode+MediaPipe floor for track + overlay, against 0.5x
    required. The live filter lags by under a frame, so the drawn face still sits on the face.
    ``finish()`` closes a valid video with the frames added so far (also after Ctrl-C);
    ``abort()`` leaves nothing behind.
    """

    def __init__(self, input_spec: str, out_path: str | Path, model: FaceModel, cam: Camera,
                 fps: float | None, sar: float, audio_from: str | None, mode: Mode = "shaded", *,
                 style: OverlayStyle | None = None, rate: RateControl = DEFAULT_RATE,
                 preset: str = DEFAULT_PRESET, smooth: bool = True) -> None:
        from .videoout import H264Writer, probe_timing

        self.path = Path(out_path)
        self.timing = probe_timing(input_spec, fps)
        self.drawer = FaceDrawer(model, cam, mode, style or VIDEO_STYLE, 1)
        # one x264 thread: the tracker already keeps both cores busy, and x264's own threads
        # cost 3.2 instead of 2.1 ms of CPU a 512x512 frame (measured)
        writer = H264Writer(self.path, cam.width, cam.height, self.timing, sar=sar, rate=rate,
                            preset=preset, audio_from=audio_from, threads=1)
        # drawing runs in the calling (tracking) thread and encoding in a thread of its own
        # (x264 releases the GIL). A drawing thread of its own as well was slower where the
        # cores are scarcest: A/B in one process, track --overlay over the floor, medians of 4
        # rounds, d13 (720x1280) 0.407 → 0.417 drawn inline, 0.422 → 0.443 with QP 23, s18
        # (1280x720, 3 rounds) 0.469 → 0.487; d10 (512) 0.567 → 0.569. One thread fewer to
        # schedule among ~10 on two cores, and 0.3 ms less CPU a frame (queue hand-offs)
        self.sink = _DrawStage(self.drawer, _ThreadedSink(writer, depth=8), writer)
        self.smooth = smooth
        self._smoothers: dict[int, object] = {}
        self.frames = 0

    def add(self, image: np.ndarray, time_s: float, result: FrameResult,
            yuv: DecodedI420 | None = None) -> None:
        """Draw and queue one frame: its RGB ``image``, and the decoder's own 4:2:0 frame ``yuv``
        when the source kept it (:attr:`tracker.types.Frame.yuv`) — then the faces are drawn
        into its planes and the rest is the input's own samples (:class:`_DrawStage`)."""
        faces = []
        for f in result.faces:
            if f.params is None or f.status != "tracked":
                continue
            p = f.params
            if self.smooth:
                sm = self._smoothers.get(f.face_id)
                if sm is None:
                    from .smoothing import LiveSmoother
                    sm = self._smoothers[f.face_id] = LiveSmoother()
                p = sm.update(time_s, p)  # type: ignore[attr-defined]
            faces.append(p)
        self.sink.write((image, yuv, faces), self.timing.pts(time_s))
        self.frames += 1

    def finish(self) -> Path:
        return self.sink.close()

    def abort(self) -> None:
        self.sink.abort()


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write ``(H, W, 3) uint8`` RGB to ``path`` (format from the suffix) atomically."""
    import cv2

    from .videoout import temp_path

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix.lower(), np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise InputError(f"{path}: cannot encode an image with suffix {path.suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(buf.tobytes())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class _DrawStage:
    """A writer that draws ``(image, yuv, faces)`` with a :class:`FaceDrawer` and hands the
    picture to ``sink`` (a :class:`_ThreadedSink` around ``encoder``).

    With the decoder's frame (``yuv``: a :class:`~tracker.videoout.DecodedI420`, or an
    :class:`~tracker.videoout.I420` array) and a 4:2:0 limited-range output, the picture goes out
    as that frame: the input's own samples with the faces blended straight into them
    (:meth:`FaceDrawer.draw_i420`, every mode), in the output's matrix. That skips a full-frame
    RGB → YUV conversion per frame and keeps the background bit-exact. Otherwise RGB,
    converted by the encoder. Measured in the tracking run (d3, CPU per frame of the drawing
    thread / the encoder thread): RGB window converted to YUV 3.3 / 1.7 ms, blended into the
    planes 2.5 / 1.6 ms (CRF 23); before this stage existed (full-frame RGB drawing, the encoder
    converting) 2.7–3.1 / 2.0 ms."""

    def __init__(self, drawer: FaceDrawer, sink: _ThreadedSink, encoder: object) -> None:
        self.drawer, self.sink = drawer, sink
        self.i420 = bool(getattr(encoder, "takes_i420", False)) and \
            not getattr(encoder, "full_range", True)
        self.coeffs = yuv_coefficients(getattr(encoder, "sws_colorspace", 5), False)

    def write(self, job: tuple[np.ndarray, DecodedI420 | np.ndarray | None, list[FaceParams]],
              pts: int) -> None:
        image, yuv, faces = job
        if yuv is None or not self.i420:
            self.sink.put(self.drawer.draw(image, faces) if faces else image, pts)
            return
        # the decoder's own frame (Frame.yuv) or an I420 array: drawn into in place, a decoded
        # frame's rows padded to its line size (the drawer writes inside the frame only)
        out = yuv if isinstance(yuv, DecodedI420) else I420(yuv)
        if faces:
            self.drawer.draw_i420(faces, out.padded_planes(), self.coeffs)
        self.sink.put(out, pts)

    def close(self) -> Path:
        return self.sink.finish()

    def abort(self) -> None:
        self.sink.abort()


class _ThreadedSink:
    """Runs ``writer.write`` in a background thread behind a small queue; errors are re-raised in
    the producer at the next :meth:`put` or at :meth:`finish`.

    One frame per wake-up, at the default scheduling policy. Measured on d13 (720x1280) as A/B
    in one process, ratio to the two-thread floor, medians of 3 rounds (2026-12-07):
    - the encoder thread at ``SCHED_IDLE`` 0.434, at ``SCHED_BATCH`` 0.463, and the encoder
      and the tracking thread at ``SCHED_IDLE`` 0.451, against 0.484 as is. The idle policy lets
      MediaPipe's threads preempt at once, and the run then spent 1 ms more CPU a frame.
    - waking the encoder once per 4 or 8 queued frames: 0.430 / 0.453, against 0.481.
    - the GIL switch interval at 0.2 or 0.5 ms instead of 5: 0.463 / 0.463, against 0.471.
    """

    def __init__(self, writer, depth: int = 4, name: str = "encode") -> None:
        self.writer = writer
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.th = threading.Thread(target=self._run, name=threadcpu.worker_name(name), daemon=True)
        self.th.start()

    def _run(self) -> None:
        try:
            while True:
                item = self.q.get()
                if item is None:
                    return
                if self.error is None:
                    try:
                        self.writer.write(*item)
                    except BaseException as e:  # noqa: BLE001 - handed to the producer
                        self.error = e
        finally:
            threadcpu.record()

    def put(self, item: object, pts: int) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((item, pts))

    def finish(self) -> Path:
        self.q.put(None)
        self.th.join()
        if self.error is not None:
            raise self.error
        return self.writer.close()

    def abort(self) -> None:
        if self.th.is_alive():
            self.error = self.error or RuntimeError("aborted")
            self.q.put(None)
            self.th.join()
        self.writer.abort()
