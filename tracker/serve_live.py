"""The live loop of ``face3d serve``: source → tracker in background threads, results handed on.

Two threads: *decode* iterates the source (a file paced to the wall clock by its timestamps, or
a webcam) into a :class:`LatestSlot`; *track* takes the newest frame, runs
:meth:`tracker.pipeline.FaceTracker.step`, turns the result into a
:class:`tracker.protocol.FramePacket` and calls ``on_frame`` — which must not block (the server
hands it to its event loop). When tracking is slower than the source, frames are dropped in the
slot, never queued, so the stream stays live; without pacing (``realtime=False``, benchmarks) the
slot blocks instead and every frame is tracked.

A webcam that disappears (:class:`tracker.errors.CameraError`) is reported through ``on_source``
(``lost``) and reopened every ``retry_s`` seconds; a file without ``loop`` ends with ``ended``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import CameraError, Face3dError
from .facemodel import FaceModel
from .pipeline import FaceTracker, TrackConfig, make_camera
from .protocol import FrameEncoder, FramePacket, encode_json, identity_message, source_message
from .sources import Source, open_source
from .types import VideoInfo

log = logging.getLogger(__name__)

_END = object()


class LatestSlot:
    """A hand-off between threads that keeps only the newest frame. ``put(item)`` of a frame
    replaces a frame not yet taken (counted in ``dropped``) when ``drop=True``, or waits until it
    was taken when ``drop=False``; ``put(item, control=True)`` (end of stream, camera lost, …)
    is always queued behind what is pending and never replaced."""

    def __init__(self, drop: bool):
        self.drop = drop
        self.dropped = 0
        self._items: deque[tuple[bool, Any]] = deque()   # (is_control, item)
        self._closed = False
        self._cv = threading.Condition()

    def put(self, item: Any, control: bool = False) -> bool:
        """False once the slot is closed."""
        with self._cv:
            while not control and not self.drop and self._items and not self._closed:
                self._cv.wait(0.1)
            if self._closed:
                return False
            if not control and self._items and not self._items[-1][0]:
                self._items.pop()
                self.dropped += 1
            self._items.append((control, item))
            self._cv.notify_all()
            return True

    def get(self, timeout: float) -> Any:
        """The oldest pending item, or ``None`` after ``timeout`` seconds or when closed."""
        with self._cv:
            if not self._items and not self._closed:
                self._cv.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()[1]
            self._cv.notify_all()
            return item

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


@dataclass(frozen=True)
class LoopStats:
    """``steps`` tracked frames; ``fps`` steps per second of wall time since the first frame;
    ``step_ms`` median tracking time of the last ≤ 1000 frames; ``busy_s`` total time spent in
    tracking; ``dropped`` source frames skipped because tracking was busy."""

    steps: int
    fps: float
    step_ms: float
    busy_s: float
    dropped: int


class LiveLoop:
    """Opens ``spec`` at construction (so a bad input fails before any server starts); ``start``
    runs the threads; ``on_frame(packet, t_ready_perf, identity_msgs)`` gets each result with
    ``identity_msgs`` = ``[(face_id, json_text)]`` for faces whose identity changed;
    ``on_source(json_text)`` gets source state changes."""

    def __init__(self, spec: str, model: FaceModel, cfg: TrackConfig, *, loop: bool = False,
                 realtime: bool = True, retry_s: float = 2.0,
                 on_frame: Callable[[FramePacket, float, list[tuple[int, str]]], None] | None = None,
                 on_source: Callable[[str], None] | None = None):
        self.spec, self.model, self.loop, self.realtime, self.retry_s = spec, model, loop, realtime, retry_s
        self.cfg = replace(cfg, smooth="live")
        self.on_frame = on_frame or (lambda *a: None)
        self.on_source = on_source or (lambda m: None)
        self.encoder = FrameEncoder(model.exp_names)
        self._src: Source = self._open()
        self.info: VideoInfo = self._src.info
        self.camera = make_camera(self.info, self.cfg)
        self._stop = threading.Event()
        self._slot = LatestSlot(drop=realtime or self._src.live)
        self._threads: list[threading.Thread] = []
        self._times: deque[float] = deque(maxlen=1000)
        self._steps, self._t_first, self._t_last, self._busy = 0, 0.0, 0.0, 0.0
        self._seq = 0

    def _open(self) -> Source:
        return open_source(self.spec, loop=self.loop, realtime=self.realtime)

    # ------------------------------------------------------------------ threads
    def start(self) -> None:
        for name, fn in (("face3d-decode", self._decode), ("face3d-track", self._track)):
            th = threading.Thread(target=fn, name=name, daemon=True)
            th.start()
            self._threads.append(th)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._slot.close()
        for th in self._threads:
            th.join(timeout)
        self._src.close()

    def _decode(self) -> None:
        while not self._stop.is_set():
            try:
                for frame in self._src:
                    if not self._slot.put(frame):
                        return
                self._slot.put(_END, control=True)
                return
            except CameraError as e:
                self._slot.put(e, control=True)
                if not self._reopen(str(e)):
                    return
            except Face3dError as e:  # a file that fails mid-way: report, stop the stream
                log.error("%s", e)
                self._slot.put(e, control=True)
                return

    def _reopen(self, reason: str) -> bool:
        self._src.close()
        while not self._stop.wait(self.retry_s):
            try:
                self._src = self._open()
            except CameraError as e:
                log.info("camera still unavailable: %s", e)
                continue
            self._slot.put(("reopened", self._src.info), control=True)
            return True
        return False

    def _track(self) -> None:
        from threadpoolctl import threadpool_limits

        from .track import opencv_threads

        # spinning BLAS/OpenCV workers would take the cores MediaPipe needs (see track_video)
        with threadpool_limits(limits=1, user_api="blas"), opencv_threads(1):
            self._track_frames()

    def _track_frames(self) -> None:
        # a live stream does not go back in time: no refits of earlier frames
        tracker = FaceTracker(self.model, self.camera, self.cfg, sar=self.info.sar,
                              revise_history=False)
        revs: dict[int, int] = {}
        try:
            self.on_source(encode_json(source_message("live")))
            while not self._stop.is_set():
                item = self._slot.get(0.2)
                if item is None:
                    continue
                if item is _END:
                    self.on_source(encode_json(source_message("ended", "end of file")))
                    return
                if isinstance(item, Face3dError):
                    state = "lost" if isinstance(item, CameraError) else "ended"
                    self.on_source(encode_json(source_message(state, str(item))))
                    if state == "ended":
                        return
                    continue
                if isinstance(item, tuple):  # camera reopened
                    tracker.close()
                    self.info, self.camera = item[1], make_camera(item[1], self.cfg)
                    tracker = FaceTracker(self.model, self.camera, self.cfg,
                                          sar=self.info.sar, revise_history=False)
                    revs.clear()
                    self.on_source(encode_json(source_message("live", "camera reopened")))
                    continue
                self._step(tracker, item, revs)
        finally:
            tracker.close()

    def _step(self, tracker: FaceTracker, frame: Any, revs: dict[int, int]) -> None:
        t0 = time.perf_counter()
        fr = tracker.step(frame)
        tracker.pop_revisions()  # none with revise_history=False; never let them pile up
        t1 = time.perf_counter()
        idents = []
        for f in fr.faces:
            if f.params is not None and revs.get(f.face_id) != f.identity_rev:
                revs[f.face_id] = f.identity_rev
                idents.append((f.face_id, encode_json(identity_message(
                    f.face_id, f.identity_rev, f.params.identity))))
        pk = self.encoder.packet(fr, self._seq, time.time(), 1000.0 * (t1 - t0))
        self._seq += 1
        self._times.append(t1 - t0)
        self._busy += t1 - t0
        if self._steps == 0:
            self._t_first = t0
        self._steps += 1
        self._t_last = t1
        self.on_frame(pk, t1, idents)

    # ------------------------------------------------------------------ stats
    def stats(self, median: bool = True) -> LoopStats:
        """Counters so far; ``median=False`` skips the median (``step_ms`` is then the last
        frame's time: cheap enough to take every frame)."""
        span = self._t_last - self._t_first
        fps = (self._steps - 1) / span if self._steps > 1 and span > 0 else 0.0
        if median:
            step = 1000.0 * float(np.median(self._times)) if self._times else float("nan")
        else:
            step = 1000.0 * self._times[-1] if self._times else float("nan")
        return LoopStats(self._steps, fps, step, self._busy, self._slot.dropped)
