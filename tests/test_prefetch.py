"""The background iterator that runs decoding and MediaPipe ahead of the fitting thread."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from tracker.track import prefetch


def _alive(name: str) -> bool:
    return any(t.name == f"face3d-{name}" and t.is_alive() for t in threading.enumerate())


def _gone_after_collection(name: str, timeout_s: float = 5.0) -> bool:
    """Collect garbage, then wait up to ``timeout_s`` for the named worker thread to end."""
    gc.collect()
    deadline = time.time() + timeout_s
    while _alive(name) and time.time() < deadline:
        time.sleep(0.05)
    return not _alive(name)


def test_yields_everything_in_order():
    assert list(prefetch(iter(range(100)), depth=3, name="order")) == list(range(100))
    assert not _alive("order")


def test_starts_at_once_before_the_first_item_is_taken():
    started = threading.Event()

    def gen():
        started.set()
        yield 1

    p = prefetch(gen(), name="eager")
    assert started.wait(5.0), "the worker did not start before next() was called"
    assert list(p) == [1]


def test_close_before_first_item_stops_the_thread_and_closes_the_source():
    closed = threading.Event()

    def gen():
        try:
            for i in range(10**9):
                yield i
        finally:
            closed.set()

    p = prefetch(gen(), depth=2, name="early-close")
    time.sleep(0.05)  # let the queue fill; the worker now waits on it
    p.close()
    assert not _alive("early-close")
    assert closed.wait(5.0)


def test_abandoned_iterator_stops_its_thread():
    def gen():
        yield from range(10**9)

    p = prefetch(gen(), depth=2, name="abandoned")
    next(p)
    del p
    assert _gone_after_collection("abandoned")


def test_exception_in_source_is_raised_in_consumer():
    def gen():
        yield 1
        raise OSError("disk gone")

    p = prefetch(gen(), name="error")
    assert next(p) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(p)
    with pytest.raises(StopIteration):
        next(p)


def test_abandoned_iterator_with_finished_source_stops_its_thread():
    """The end marker waits on a full queue too: an abandoned iterator must not pin the thread."""
    p = prefetch(iter([1]), depth=1, name="abandoned-end")
    time.sleep(0.05)  # the worker now holds the end marker for a full queue
    del p
    assert _gone_after_collection("abandoned-end")
