"""The live loop of ``face3d serve`` in a child process: :class:`LiveProcess`.

Same interface as :class:`tracker.serve_live.LiveLoop` (``info``, ``camera``, ``start``,
``stop``, ``stats``, the ``on_frame``/``on_source`` callbacks), but decoding and tracking run in
a ``spawn``-ed process that loads the face model itself from ``model.path``. The server's
process then only relays results (a pipe, one pickled :class:`~tracker.protocol.FramePacket`
per frame, ~2–10 KB) and writes sockets, so its event loop never competes with the tracker for
the interpreter lock, and a crash in the tracking stack (MediaPipe, numba) ends the stream
with a ``source ended`` message instead of taking the server down. (Measured on the shared
2-core machine, ``python -m tracker.bench_serve``: the same numbers as with a tracking thread —
there, the tracker's unpaced fps with 20 clients is limited by CPU cores, not by the GIL.)

``t_ready`` values stay comparable across the two processes: ``time.perf_counter`` is the
system-wide monotonic clock (CLOCK_MONOTONIC on Linux, mach time on macOS, QPC on Windows).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import Face3dError
from .facemodel import FaceModel
from .pipeline import TrackConfig
from .protocol import FramePacket, encode_json, source_message
from .serve_live import LoopStats

log = logging.getLogger(__name__)

START_TIMEOUT_S = 180.0


def _child(conn: Any, spec: str, model_path: str, cfg: TrackConfig, loop: bool, realtime: bool,
           retry_s: float) -> None:
    """Child process: open, report ``ready`` (or ``error``), stream until told to stop."""
    import signal

    from .facemodel import load_face_model
    from .serve_live import LiveLoop

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the whole group: the parent
    #                                                 decides, then says "stop"

    live: LiveLoop | None = None
    try:
        model = load_face_model(model_path)

        def on_frame(pk: FramePacket, t: float, ids: list[tuple[int, str]]) -> None:
            conn.send(("frame", pk, t, ids, live.stats(median=False) if live else None))

        live = LiveLoop(spec, model, cfg, loop=loop, realtime=realtime, retry_s=retry_s,
                        on_frame=on_frame, on_source=lambda m: conn.send(("source", m)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", e if isinstance(e, Face3dError) else RuntimeError(repr(e))))
        conn.close()
        return
    conn.send(("ready", live.info, live.camera))
    live.start()
    try:
        conn.recv()   # "stop", or EOF when the parent is gone
    except (EOFError, OSError):
        pass
    finally:
        live.stop()
        conn.close()


class LiveProcess:
    """:class:`~tracker.serve_live.LiveLoop` in a child process (see module doc). Construction
    starts the process and waits until the source is open (its errors raise here). As with any
    ``multiprocessing`` spawn, a script using it needs an ``if __name__ == "__main__":`` guard."""

    def __init__(self, spec: str, model: FaceModel, cfg: TrackConfig, *, loop: bool = False,
                 realtime: bool = True, retry_s: float = 2.0,
                 on_frame: Callable[[FramePacket, float, list[tuple[int, str]]], None] | None = None,
                 on_source: Callable[[str], None] | None = None):
        if not model.path:
            raise ValueError("LiveProcess needs a model loaded from a file (model.path)")
        self.on_frame = on_frame or (lambda *a: None)
        self.on_source = on_source or (lambda m: None)
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_child, name="face3d-track", daemon=True,
                                   args=(child, spec, model.path, cfg, loop, realtime, retry_s))
        self.process.start()
        child.close()
        self._stats = LoopStats(0, 0.0, float("nan"), 0.0, 0)
        self._times: deque[float] = deque(maxlen=1000)   # step_ms of recent frames
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        try:
            msg = self._conn.recv() if self._conn.poll(START_TIMEOUT_S) else ("error", None)
        except (EOFError, OSError):
            msg = ("error", None)
        if msg[0] != "ready":
            self.process.join(5.0)
            if self.process.is_alive():
                self.process.terminate()
            raise msg[1] or RuntimeError(
                f"the tracker process did not start (exit code {self.process.exitcode}); a script "
                "that starts a server must guard its code with `if __name__ == \"__main__\":` "
                "(multiprocessing's spawn re-imports it)")
        _, self.info, self.camera = msg

    def start(self) -> None:
        self._reader = threading.Thread(target=self._read, name="face3d-relay", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "frame":
                _, pk, t, ids, stats = msg
                if stats is not None:
                    self._stats = stats
                    self._times.append(stats.step_ms)
                self.on_frame(pk, t, ids)
            elif msg[0] == "source":
                self.on_source(msg[1])
        if self._stopping.is_set():
            return
        self.process.join(5.0)   # the pipe closes a moment before the exit status is known
        code = self.process.exitcode
        log.error("the tracker process exited unexpectedly (exit code %s)", code)
        self.on_source(encode_json(source_message("ended", f"tracker process exited ({code})")))

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        try:
            self._conn.send("stop")
        except (OSError, ValueError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(2.0)
        self._conn.close()
        if self._reader is not None:
            self._reader.join(2.0)

    def stats(self) -> LoopStats:
        """As :meth:`tracker.serve_live.LiveLoop.stats` (the child's counters, the median step
        time over the last ≤ 1000 frames relayed)."""
        st, times = self._stats, list(self._times)
        med = float(np.median(times)) if times else float("nan")
        return LoopStats(st.steps, st.fps, med, st.busy_s, st.dropped)
