"""The live loop of `face3d serve`: the frame hand-off and a webcam that vanishes and comes back."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tracker.errors import CameraError
from tracker.serve_live import LatestSlot, LiveLoop
from tracker.types import Frame, VideoInfo


def test_latest_slot_drops_or_blocks():
    s = LatestSlot(drop=True)
    for i in range(5):
        assert s.put(i)
    assert s.get(0.1) == 4 and s.dropped == 4 and s.get(0.01) is None
    # control items are never replaced, and keep their place behind pending frames
    s.put(1), s.put("lost", control=True), s.put(2), s.put(3), s.put("end", control=True)
    assert [s.get(0.1) for _ in range(4)] == [1, "lost", 3, "end"] and s.dropped == 5

    b = LatestSlot(drop=False)
    assert b.put(1)
    done = threading.Event()
    threading.Thread(target=lambda: (b.put(2), done.set()), daemon=True).start()
    assert not done.wait(0.3)              # waits: the first item was not taken
    assert b.get(1.0) == 1 and done.wait(2.0) and b.get(1.0) == 2 and b.dropped == 0
    b.close()
    assert not b.put(3) and b.get(0.01) is None


class FakeCamera:
    """Frames of a real video delivered like a webcam, then (optionally) the camera vanishes."""

    def __init__(self, frames: list[Frame], vanish: bool):
        self.frames, self.vanish, self.live, self.truncated = frames, vanish, True, False
        h, w = frames[0].image.shape[:2]
        self.info = VideoInfo("webcam", "webcam", w, h, 30.0)

    def __iter__(self):
        for f in self.frames:
            time.sleep(1 / 60)
            yield f
        if self.vanish:
            raise CameraError("webcam: camera stopped delivering frames (unplugged)")

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def frames(videos):
    from tracker.sources import open_source

    out = []
    with open_source(videos["d10"]) as src:
        for f in src:
            out.append(f)
            if len(out) == 40:
                break
    return out


def test_camera_lost_and_reopened(model, frames, monkeypatch):
    opens = []

    def fake_open(spec, **kw):
        opens.append(spec)
        if len(opens) == 1:
            return FakeCamera(frames[:20], vanish=True)
        if len(opens) == 2:
            raise CameraError("webcam: no camera at /dev/video0")
        later = [Frame(f.index + 100, f.time_s + 10.0, f.image) for f in frames[20:]]
        return FakeCamera(later, vanish=False)

    monkeypatch.setattr("tracker.serve_live.open_source", fake_open)
    from tracker.pipeline import TrackConfig

    states, got = [], []
    loop = LiveLoop("webcam", model, TrackConfig(), retry_s=0.05,
                    on_frame=lambda pk, t, ids: got.append(pk.frame),
                    on_source=lambda m: states.append(json.loads(m)["state"]))
    loop.start()
    try:
        t0 = time.monotonic()
        while "ended" not in states and time.monotonic() - t0 < 60:
            time.sleep(0.05)
    finally:
        loop.stop()
    assert states == ["live", "lost", "live", "ended"]
    assert len(opens) == 3
    assert any(i < 20 for i in got) and any(i >= 120 for i in got)   # frames before and after
    assert got == sorted(got)
