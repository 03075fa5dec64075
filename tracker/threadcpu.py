"""CPU time of face3d's own worker threads, for the benchmarks' breakdowns.

Each worker thread (``face3d-decode``, ``face3d-mediapipe``, ``face3d-draw``, ``face3d-encode``)
adds its ``time.thread_time()`` to a per-name total as its last act (:func:`record`); a benchmark
reads :func:`totals` before and after a pass. Nothing runs while the threads work, so the numbers
cost nothing to collect; threads started by libraries (MediaPipe's graph, FFmpeg's, numba's) are
not named here — a benchmark reports them as the rest of the process's CPU time.
"""

from __future__ import annotations

import threading
import time

_totals: dict[str, float] = {}
_workers: set[str] = set()
_lock = threading.Lock()


def worker_name(name: str) -> str:
    """``face3d-{name}``, the name to give a per-pass worker thread that calls :func:`record`
    as it ends; :func:`join_workers` waits for threads of these names only. (Long-lived threads
    — the stderr filter, a server's loop — also start with ``face3d-`` but never end in a pass:
    waiting for them cost a benchmark its 10 s timeout twice per round.)"""
    full = f"face3d-{name}"
    with _lock:
        _workers.add(full)
    return full


def record(name: str | None = None) -> None:
    """Add the calling thread's CPU seconds so far to ``name``'s total (default: the thread's
    name). Call once, when the thread is about to end."""
    cpu = time.thread_time()
    key = name or threading.current_thread().name
    with _lock:
        _totals[key] = _totals.get(key, 0.0) + cpu


def totals() -> dict[str, float]:
    """CPU seconds of every thread that has ended so far, summed per name."""
    with _lock:
        return dict(_totals)


def join_workers(timeout: float = 10.0) -> None:
    """Wait for face3d's worker threads (:func:`worker_name`) still winding down (their totals
    are recorded as they end); a benchmark calls this before reading :func:`totals`."""
    me = threading.current_thread()
    deadline = time.monotonic() + timeout
    with _lock:
        workers = set(_workers)
    for t in threading.enumerate():
        if t is not me and t.name in workers:
            t.join(max(0.0, deadline - time.monotonic()))
