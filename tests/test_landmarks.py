"""MediaPipe wrapper: 478 points in pixels, timestamps as inputs, stable face ids."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.errors import InputError
from tracker.landmarks import FaceIds, LandmarkDetector, inter_ocular
from tracker.sources import open_source
from tracker.types import Landmarks


def test_detects_478_points_in_pixels(videos):
    det = LandmarkDetector()
    with open_source(videos["d10"]) as src:
        frames = [f for f, _ in zip(src, range(10))]
    faces = [det.detect(f.image, f.time_s) for f in frames]
    det.close()
    assert all(len(f) == 1 for f in faces)
    p = faces[0][0].points
    assert p.shape == (478, 3) and p.dtype == np.float32
    assert 0 < p[:, 0].min() and p[:, 0].max() < 512 and 0 < p[:, 1].min() and p[:, 1].max() < 512
    assert p[263, 0] > p[33, 0]  # subject's left eye corner on the image right
    assert np.linalg.norm(p[468, :2] - p[33, :2]) < np.linalg.norm(p[468, :2] - p[263, :2])
    assert 50 < inter_ocular(p) < 300


def test_decoding_while_mediapipe_works_gives_the_same_landmarks(videos):
    """track --overlay decodes frame n + 1 while MediaPipe works on frame n (submit / collect,
    tracker.track.decode_while_detecting): the landmarks are exactly those of detect(), frame by
    frame, in tracking mode; and the source is closed when done. Misuse is an error."""
    from tracker.track import decode_while_detecting

    with open_source(videos["d13"]) as src:
        frames = [f for f, _ in zip(src, range(40))]
    with LandmarkDetector() as det:
        want = [det.detect(f.image, f.time_s) for f in frames]

    class Frames:  # a closable source, like tracker.sources.Source
        closed = False

        def __iter__(self):
            return iter(frames)

        def close(self):
            self.closed = True

    src = Frames()
    with LandmarkDetector() as det:
        got = list(decode_while_detecting(src, det))
        assert not det.pending
        with pytest.raises(RuntimeError):
            det.collect()
        det.submit(frames[0].image, 99.0)
        with pytest.raises(RuntimeError):
            det.submit(frames[1].image, 99.1)
        det.reset()  # collects the pending frame first
        assert not det.pending
    assert src.closed
    assert [f.index for f, _ in got] == [f.index for f in frames]
    assert all(len(w) == len(g) == 1 for w, (_, g) in zip(want, got))
    assert all(np.array_equal(w[0].points, g[0].points) for w, (_, g) in zip(want, got))
    # decoding fails after 12 frames (a truncated file): all 12 come out, then the error
    class Failing(Frames):
        def __iter__(self):
            yield from frames[:12]
            raise InputError("truncated")

    src = Failing()
    seen = []
    with LandmarkDetector() as det:
        with pytest.raises(InputError, match="truncated"):
            for f, faces in decode_while_detecting(src, det):
                seen.append((f.index, faces))
        assert not det.pending
    assert src.closed and [i for i, _ in seen] == [f.index for f in frames[:12]]
    assert all(np.array_equal(w[0].points, g[0].points) for w, (_, g) in zip(want, seen))
    # abandoned half-way (Ctrl-C in the consumer): the pending frame is collected, source closed
    src = Frames()
    with LandmarkDetector() as det:
        gen = decode_while_detecting(src, det)
        next(gen), next(gen)
        assert det.pending
        gen.close()
        assert not det.pending and src.closed


def test_sar_maps_back_to_stored_grid(videos):
    """d9 stores 512 px for 480 displayed: detecting on the display-aspect copy and mapping back
    agrees with detecting on a manually resampled frame, scaled."""
    import cv2
    with open_source(videos["d9"]) as src:
        f = next(iter(src))
        sar = src.info.sar
    a = LandmarkDetector(static=True)
    b = LandmarkDetector(static=True)
    pa = a.detect(f.image, 0.0, sar)[0].points
    disp = cv2.resize(f.image, (480, 480), interpolation=cv2.INTER_AREA)
    pb = b.detect(disp, 0.0)[0].points
    a.close()
    b.close()
    assert np.allclose(pa[:, 0], pb[:, 0] * 512 / 480, atol=0.5)
    assert np.allclose(pa[:, 1], pb[:, 1], atol=0.5)


def test_timestamps_strictly_increasing_even_when_repeated(videos):
    det = LandmarkDetector()
    with open_source(videos["d10"]) as src:
        f = next(iter(src))
    for t in (0.0, 0.0, -1.0, 0.5):  # repeated and backwards times are bumped, not rejected
        assert len(det.detect(f.image, t)) == 1
    det.close()
    with pytest.raises(ValueError):
        LandmarkDetector(max_faces=0)


def _face_at(x, y, s=50.0):
    p = np.zeros((478, 3), np.float32)
    p[:, 0] = x + np.linspace(-s, s, 478)
    p[:, 1] = y + np.linspace(-s, s, 478)
    return Landmarks(p)


def test_face_ids_stable_and_new_after_absence():
    ids = FaceIds(max_missing_s=0.5)
    assert ids.assign(0.0, (_face_at(100, 100), _face_at(400, 100))) == [0, 1]
    # order of detection swaps, positions drift: ids follow the faces
    assert ids.assign(0.04, (_face_at(405, 102), _face_at(103, 101))) == [1, 0]
    assert ids.assign(0.08, (_face_at(104, 101),)) == [0]
    assert ids.assign(0.3, (_face_at(104, 101), _face_at(406, 101))) == [0, 1]  # back within 0.5 s
    assert ids.assign(1.5, (_face_at(406, 101),)) == [2]  # gone > 0.5 s: a new id
