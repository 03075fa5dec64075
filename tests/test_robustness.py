"""Robustness of ``face3d track``: bad files, unusual but valid videos, faceless and crowded
videos, a camera that vanishes, Ctrl-C, and memory over 10k frames.

Bad inputs go through the real command line in a subprocess: exit status ≠ 0, exactly one line on
stderr (``face3d: error: …``, no traceback, nothing else), and no file left behind. Valid but
unusual videos are built in ``tmp_path`` with PyAV (tests/mkvideo.py) from frames of a shared clip
and tracked in-process; their projected 68 points must land where the plain re-encoded clip's do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import cv2
import mkvideo as mk  # tests/mkvideo.py
import numpy as np
import pytest

from tracker.bench_quality import read_track_csv
from tracker.trackconfig import load_track_config

N_FRAMES = 30
UPRIGHT = (288, 256)  # (width, height) of the upright test clips: not square, so w/h swaps show


# ------------------------------------------------------------------------------------ helpers

def run_cli(*args: object, timeout: float = 180.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracker.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ), check=False)


def _assert_one_error_line(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode != 0, r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{r.stderr}"
    assert lines[0].startswith("face3d: error: ") and "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def face_frames(videos) -> list[np.ndarray]:
    """The first frames of d10 (a frontal talking head), 256x256, padded to 288x256 upright."""
    from tracker.sources import open_source

    out = []
    with open_source(videos["d10"]) as src:
        for f, _ in zip(src, range(N_FRAMES)):
            small = cv2.resize(f.image, (256, 256), interpolation=cv2.INTER_AREA)
            out.append(np.ascontiguousarray(np.pad(small, ((0, 0), (16, 16), (0, 0)))))
    return out


def _track(path: Path, model, tmp: Path, **cfg_over):
    """``face3d track PATH --csv … --landmarks`` in-process; the CSV as a TrackTable."""
    from tracker.track import TrackOutputs, track_video

    cfg = replace(load_track_config(), **cfg_over)
    csv = tmp / (path.stem + ".csv")
    summary, _ = track_video(str(path), model, cfg, TrackOutputs(csv, landmarks=True), progress=False)
    return summary, read_track_csv(csv)


def _lmk(table) -> np.ndarray:
    return np.stack([table.cols([f"lmk68_x_{i:02d}" for i in range(68)]),
                     table.cols([f"lmk68_y_{i:02d}" for i in range(68)])], -1)


@pytest.fixture(scope="module")
def reference(face_frames, model, tmp_path_factory):
    """lmk68 per frame of the plain clip (H.264 yuv420p, square pixels, no rotation)."""
    tmp = tmp_path_factory.mktemp("ref")
    path = mk.write_video(tmp / "plain.mp4", frames=face_frames, size=UPRIGHT)
    summary, table = _track(path, model, tmp)
    assert summary.tracked_frames == N_FRAMES
    return _lmk(table)


def _error_pct(got: np.ndarray, ref: np.ndarray) -> float:
    """Mean over frames of the mean 68-point distance, % of the reference inter-ocular distance."""
    iod = np.linalg.norm(ref[:, 36] - ref[:, 45], axis=1)
    return float(np.mean(np.mean(np.linalg.norm(got - ref, axis=2), axis=1) / iod) * 100.0)


# -------------------------------------------------------------------------------- bad inputs

def _bad_file(kind: str, tmp: Path) -> Path:
    good = mk.write_video(tmp / "good.mp4", n_frames=30)
    return {
        "zero_bytes": lambda: mk.write_zero_bytes(tmp / "zero.mp4"),
        "random_bytes": lambda: mk.write_random_bytes(tmp / "random.mp4"),
        "text": lambda: mk.write_text(tmp / "notes.mp4"),
        "truncated_no_index": lambda: mk.truncated_copy(good, tmp / "cut.mp4", 0.5),
        "header_overwritten": lambda: mk.corrupt_copy(good, tmp / "head.mp4", at=0.0, n_bytes=64),
        "audio_only": lambda: mk.write_audio_only(tmp / "sound.mp4"),
        "missing": lambda: tmp / "missing.mp4",
    }[kind]()


@pytest.mark.parametrize("kind", ["zero_bytes", "random_bytes", "text", "truncated_no_index",
                                  "header_overwritten", "audio_only", "missing"])
def test_bad_file_fails_with_one_line_and_leaves_nothing(tmp_path, model_path, kind):
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    bad = _bad_file(kind, src_dir)
    before = sorted(src_dir.iterdir())
    r = run_cli("track", bad, "--csv", out_dir / "OUT.csv")
    _assert_one_error_line(r, bad.name)
    assert r.returncode == 1
    assert list(out_dir.iterdir()) == [] and sorted(src_dir.iterdir()) == before


def _cut_face_clip(tmp: Path, face_frames) -> Path:
    """A recording cut mid-write whose index survived (faststart): frames decode, then it ends."""
    good = mk.write_video(tmp / "good.mp4", frames=face_frames, size=UPRIGHT, faststart=True)
    return mk.truncated_copy(good, tmp / "cut.mp4", 0.5)


def test_truncated_video_with_a_face_fails_and_writes_nothing(tmp_path, face_frames, model_path):
    cut = _cut_face_clip(tmp_path, face_frames)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = run_cli("track", cut, "--csv", out_dir / "OUT.csv")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith("face3d: error: ") and "cut.mp4" in last and "truncated" in last
    assert list(out_dir.iterdir()) == []


def test_truncated_video_logs_nothing_besides_the_error(tmp_path, face_frames, model, caplog):
    """What the CLI prints for a truncated file is the error alone: nothing is logged at WARNING
    or above on the way (checked in-process, independent of stderr timing)."""
    import logging

    from tracker.errors import InputError
    from tracker.track import TrackOutputs, track_video

    cut = _cut_face_clip(tmp_path, face_frames)
    with caplog.at_level(logging.WARNING), pytest.raises(InputError, match="truncated"):
        track_video(str(cut), model, load_track_config(), TrackOutputs(tmp_path / "o.csv"),
                    progress=False)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_truncated_video_allowed_with_overlay_keeps_every_decoded_frame(tmp_path, face_frames,
                                                                      model):
    """--allow-truncated with --overlay (decoding then happens in MediaPipe's thread,
    track.decode_while_detecting): every frame that decodes is tracked, in the CSV, and drawn,
    in the overlay — the last one too."""
    import av

    from tracker.sources import open_source
    from tracker.track import TrackOutputs, track_video

    cut = _cut_face_clip(tmp_path, face_frames)
    with open_source(str(cut)) as src:
        decodable = sum(1 for _ in src)
    summary, results = track_video(str(cut), model, load_track_config(),
                                   TrackOutputs(tmp_path / "o.csv", overlay=tmp_path / "o.mp4"),
                                   progress=False, allow_truncated=True)
    assert 5 < decodable < len(face_frames)
    assert summary.frames == len(results) == decodable
    assert len(read_track_csv(tmp_path / "o.csv").status) == decodable
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == decodable


def test_faceless_video_every_row_lost(tmp_path, model_path):
    clip = mk.write_video(tmp_path / "pattern.mp4", n_frames=25, size=(160, 120))
    out = tmp_path / "out" / "OUT.csv"
    r = run_cli("track", clip, "--csv", out)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "face in 0 (0.0%)" in r.stdout
    t = read_track_csv(out)
    assert len(t.status) == 25 and set(t.status) == {"lost"}
    assert np.all(t.col("face_id") == -1) and np.all(np.isnan(t.col("qw")))
    assert sorted(p.name for p in out.parent.iterdir()) == ["OUT.csv", "OUT.csv.json"]


def test_a_normal_run_prints_only_its_summary(tmp_path, face_frames, model_path):
    """No native MediaPipe/TFLite/absl start-up chatter ("Created TensorFlow Lite XNNPACK
    delegate", "Feedback manager requires a model…", "Using NORM_RECT without
    IMAGE_DIMENSIONS…") and no warnings around a clean run: stderr stays empty."""
    clip = mk.write_video(tmp_path / "face.mp4", frames=face_frames, size=UPRIGHT)
    r = run_cli("track", clip, "--csv", tmp_path / "face.csv")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert len(r.stdout.splitlines()) == 1 and f"face in {N_FRAMES} (100.0%)" in r.stdout


def test_other_threads_can_write_to_stderr_while_mediapipe_runs(capfd):
    """``face3d track`` runs MediaPipe on its own thread; the messages other threads write to
    stderr meanwhile (decoder warnings, the progress bar, logging) must not vanish."""
    from tracker.landmarks import LandmarkDetector

    det = LandmarkDetector()
    img = mk.pattern(0, 128, 96)
    stop = threading.Event()

    def detect() -> None:
        i = 0
        while not stop.is_set():
            det.detect(img, i / 30)
            i += 1

    th = threading.Thread(target=detect)
    th.start()
    try:
        time.sleep(0.2)
        for i in range(200):
            os.write(2, f"line {i}\n".encode())
            time.sleep(0.002)
    finally:
        stop.set()
        th.join()
        det.close()
    got = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("line ")]
    assert len(got) == 200, f"{200 - len(got)} of 200 stderr lines lost"


# ------------------------------------------------------------------ unusual but valid videos

@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_video_is_tracked_upright(tmp_path, face_frames, reference, model, rotation):
    stored = [np.ascontiguousarray(np.rot90(f, k=rotation // 90)) for f in face_frames]  # CCW
    clip = mk.write_video(tmp_path / "rot.mp4", frames=stored, size=(UPRIGHT[1], UPRIGHT[0]),
                          rotation_cw=rotation)
    summary, t = _track(clip, model, tmp_path)
    assert summary.tracked_frames == N_FRAMES
    cam = t.camera
    assert (cam["width"], cam["height"]) == UPRIGHT
    assert _error_pct(_lmk(t), reference) < 1.5


def test_variable_frame_rate_keeps_timestamps(tmp_path, face_frames, reference, model):
    dt = np.where(np.arange(N_FRAMES) % 3 == 0, 0.050, 0.021)
    times = np.concatenate([[0.0], np.cumsum(dt[:-1])])
    clip = mk.write_video(tmp_path / "vfr.mp4", frames=face_frames, size=UPRIGHT, times=times)
    summary, t = _track(clip, model, tmp_path)
    assert summary.tracked_frames == N_FRAMES
    np.testing.assert_allclose(t.col("time_s"), times, atol=1.5e-3)
    assert _error_pct(_lmk(t), reference) < 1.5


@pytest.mark.parametrize("codec,pix_fmt", [("libx264", "yuv420p10le"), ("libx264", "yuv444p"),
                                           ("libx265", "yuv420p10le")])
def test_high_bit_depth_and_full_chroma(tmp_path, face_frames, reference, model, codec, pix_fmt):
    import av

    clip = mk.write_video(tmp_path / "deep.mkv", frames=face_frames, size=UPRIGHT, codec=codec,
                          pix_fmt=pix_fmt)
    with av.open(str(clip)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == pix_fmt
    summary, t = _track(clip, model, tmp_path)
    assert summary.tracked_frames == N_FRAMES
    assert _error_pct(_lmk(t), reference) < 1.5


def test_non_square_pixels(tmp_path, face_frames, reference, model):
    """Stored 216x256 with SAR 4:3 displays as the 288x256 reference; the CSV's points are in the
    stored grid, so x scaled by 4/3 must land on the reference."""
    stored = [cv2.resize(f, (216, 256), interpolation=cv2.INTER_AREA) for f in face_frames]
    clip = mk.write_video(tmp_path / "sar.mp4", frames=stored, size=(216, 256), sar=Fraction(4, 3))
    summary, t = _track(clip, model, tmp_path)
    assert summary.tracked_frames == N_FRAMES
    assert t.camera["fx"] == pytest.approx(t.camera["fy"] * 3 / 4)
    got = _lmk(t) * np.array([4 / 3, 1.0])
    assert _error_pct(got, reference) < 1.5


@pytest.mark.parametrize("layout,max_faces", [((1, 2), 2), ((2, 2), 4), ((2, 2), 1)])
def test_several_faces_get_stable_ids(tmp_path, face_frames, model, layout, max_faces):
    rows, cols = layout
    tiles = [np.ascontiguousarray(np.tile(f[:, 16:272], (rows, cols, 1))) for f in face_frames]
    h, w = tiles[0].shape[:2]
    clip = mk.write_video(tmp_path / "crowd.mp4", frames=tiles, size=(w, h))
    summary, t = _track(clip, model, tmp_path, max_faces=max_faces)
    expect = min(rows * cols, max_faces)
    frames = t.col("frame").astype(int)
    ids = t.col("face_id").astype(int)
    assert set(t.status) == {"tracked"} and summary.faces == expect
    assert sorted(set(ids)) == list(range(expect))
    assert all(np.sum(frames == i) == expect for i in range(N_FRAMES))
    if expect > 1:  # an id stays on its tile: its points do not jump between tiles
        x = _lmk(t)[..., 0].mean(axis=1)
        for fid in range(expect):
            assert np.ptp(x[ids == fid]) < 256 / 4


# ---------------------------------------------------------------- camera loss and Ctrl-C

_VANISHING_DRIVER = """
import errno, sys
import av
import tracker.sources as sources
from tracker.cli import main

clip, n_ok, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Vanishing:
    def __init__(self):
        self._c = av.open(clip)
    def __getattr__(self, name):
        return getattr(self._c, name)
    def demux(self, stream):
        for i, packet in enumerate(self._c.demux(stream)):
            if i == n_ok:
                raise OSError(errno.ENODEV, "No such device")
            yield packet
    def close(self):
        self._c.close()

real_open = sources.open_webcam
sources.open_source = lambda spec, **kw: real_open(spec, opener=lambda *a: Vanishing(), platform="linux")
sys.exit(main(["track", "webcam:0", "--csv", out]))
"""


def test_camera_vanishing_mid_stream(tmp_path, face_frames, model_path):
    """A webcam unplugged after 20 frames (simulated: reads fail with ENODEV): exit 1, one line
    naming the camera, and the rows captured before it in a valid CSV."""
    clip = mk.write_video(tmp_path / "cam.mkv", frames=face_frames, size=UPRIGHT, codec="mjpeg",
                          pix_fmt="yuvj422p")
    driver = tmp_path / "driver.py"
    driver.write_text(_VANISHING_DRIVER)
    out_dir = tmp_path / "out"
    r = subprocess.run([sys.executable, str(driver), str(clip), "20", str(out_dir / "cam.csv")],
                       capture_output=True, text=True, timeout=180, env=dict(os.environ), check=False)
    _assert_one_error_line(r, "webcam:0", "camera stopped delivering frames")
    assert r.returncode == 1
    t = read_track_csv(out_dir / "cam.csv")
    assert list(t.col("frame").astype(int)) == list(range(20))
    assert set(t.status) == {"tracked"}
    assert sorted(p.name for p in out_dir.iterdir()) == ["cam.csv", "cam.csv.json"]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path)
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("overlay", [False, True], ids=["csv", "csv+overlay"])
def test_ctrl_c_writes_the_rows_done(tmp_path, videos, model_path, overlay):
    """Ctrl-C mid-run: exit 130, a valid CSV of the frames done — and with --overlay, a valid
    video of exactly those frames."""
    video = videos["d6"].resolve()  # 1008 frames: several seconds of work
    out_dir = tmp_path / "out"
    extra = ["--overlay", str(out_dir / "x.mp4")] if overlay else []
    proc = subprocess.Popen([sys.executable, "-m", "tracker.cli", "track", str(video), "--csv",
                             str(out_dir / "x.csv"), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while not _has_open(proc.pid, video) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # the video is open: tracking starts once the tracker and the overlay are set up (up to
        # ~1 s of CPU with a cold numba cache; at 2 s a fresh clone's run once had only 9 rows
        # done). d6 takes ~6 s of CPU without the overlay, ~13 s with it.
        cpu0 = _cpu_seconds(proc.pid)
        while _cpu_seconds(proc.pid) - cpu0 < 3.0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "finished before the interrupt"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "error" not in stderr
    assert "interrupted" in stdout
    t = read_track_csv(out_dir / "x.csv")
    assert t.columns[:5] == ("frame", "time_s", "face_id", "status", "confidence")
    n = len(t.status)
    assert 10 <= n < 1008
    assert list(t.col("frame").astype(int)) == list(range(n))
    assert np.mean(t.status == "tracked") > 0.95
    side = __import__("json").loads((out_dir / "x.csv.json").read_text())
    assert side["summary"]["interrupted"] is True and side["summary"]["frames"] == n
    want = ["x.csv", "x.csv.json"] + (["x.mp4"] if overlay else [])
    assert sorted(p.name for p in out_dir.iterdir()) == want
    if overlay:
        import av
        with av.open(str(out_dir / "x.mp4")) as c:
            times = [float(f.time) for f in c.decode(video=0)]
        assert len(times) == n and np.allclose(times, t.col("time_s"), atol=2e-3)


def test_main_puts_the_callers_sigint_handler_back(tmp_path):
    """``tracker.cli.main`` installs its Ctrl-C handler for the command only: a program (or
    test) that calls it keeps its own handler afterwards."""
    from tracker.cli import main

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(["track", str(tmp_path / "missing.mp4"), "--csv", str(tmp_path / "x.csv")]) == 1
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not (tmp_path / "x.csv").exists()


def test_ctrl_c_while_a_frame_goes_to_the_overlay_keeps_video_and_csv_equal(videos, model,
                                                                            tmp_path, monkeypatch):
    """A Ctrl-C that lands just after a frame was queued for the encoder, before the tracker
    recorded it (a fresh clone's CI run once got a video one frame longer than its CSV), still
    leaves the video and the CSV with the same frames."""
    import av

    from tracker.overlay import OverlayStream
    from tracker.track import TrackOutputs, track_video

    real_add = OverlayStream.add

    def add(self, *a, **k):
        real_add(self, *a, **k)
        if self.frames == 12:
            signal.raise_signal(signal.SIGINT)  # Python runs the handler right here

    monkeypatch.setattr(OverlayStream, "add", add)
    outs = TrackOutputs(tmp_path / "x.csv", overlay=tmp_path / "x.mp4")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own
    try:
        summary, results = track_video(str(videos["d10"]), model, load_track_config(), outs,
                                       progress=False)
        handler_after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert summary.interrupted and summary.frames == len(results) == 12
    assert list(read_track_csv(tmp_path / "x.csv").col("frame").astype(int)) == list(range(12))
    with av.open(str(tmp_path / "x.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 12
    assert handler_after is signal.default_int_handler  # put back


# ------------------------------------------------------------------------------------ memory

def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _rss_series(step, n: int, every: int = 500) -> np.ndarray:
    """Run ``step(i)`` for ``i < n``; RSS (MB) sampled every ``every`` steps."""
    out = []
    for i in range(n):
        step(i)
        if i % every == every - 1:
            out.append(_rss_mb())
    return np.array(out)


def _assert_flat(rss: np.ndarray, warm: int, limit_mb: float) -> None:
    """After ``warm`` samples, RSS rises by less than ``limit_mb`` and has no steady slope."""
    tail = rss[warm:]
    assert tail.max() - tail[0] < limit_mb, f"RSS grew {tail.max() - tail[0]:.1f} MB: {np.round(rss, 1)}"
    half = len(tail) // 2
    assert tail[half:].mean() - tail[:half].mean() < limit_mb / 2, np.round(rss, 1)


class _NoDetector:
    def detect(self, *a):
        raise AssertionError("landmarks are fed directly")

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_memory_flat_over_10k_tracked_frames(videos, model):
    """FaceTracker.step_landmarks over 10k frames of cached real landmarks, with the face lost
    for 20 frames every 2500 (new track id, identity estimated again), revisions popped as
    ``face3d track`` does and live smoothing on."""
    from tracker.landmarks import LandmarkDetector
    from tracker.pipeline import FaceTracker, make_camera
    from tracker.sources import open_source

    cached = []
    with open_source(videos["d10"]) as src, LandmarkDetector() as det:
        info = src.info
        for f, _ in zip(src, range(150)):
            cached.append(det.detect(f.image, f.time_s))
    cfg = replace(load_track_config(), smooth="live")
    # memory does not depend on the iteration counts: fewer keep the test fast
    cfg = replace(cfg, fit=replace(cfg.fit, iterations=1, id_rounds=1))
    tracker = FaceTracker(model, make_camera(info, cfg), cfg, detector=_NoDetector())
    ids = set()

    def step(i: int) -> None:
        k = i % (2 * len(cached))  # play forward then backward: no jump at the wrap
        faces = cached[k if k < len(cached) else 2 * len(cached) - 1 - k]
        if i % 2500 < 20:
            faces = ()
        fr = tracker.step_landmarks(i, i / 30.0, faces)
        tracker.pop_revisions()
        ids.update(f.face_id for f in fr.faces)

    rss = _rss_series(step, 10_000)
    assert ids == {0, 1, 2, 3}
    _assert_flat(rss, warm=2, limit_mb=8.0)


def test_memory_flat_over_10k_frames_of_a_synthetic_source(model, monkeypatch, tmp_path):
    """The whole ``track_video`` path (decode thread, MediaPipe thread, fitting, results, CSV)
    on a 10k-frame in-memory source of small faceless frames."""
    from tracker import sources
    from tracker.track import TrackOutputs, track_video
    from tracker.types import Frame, VideoInfo

    n = 10_000
    picture = mk.pattern(0, 64, 64)

    class Synthetic:
        info = VideoInfo("synthetic", "synthetic", 64, 64, 30.0, 1.0, 0, n, n / 30.0)
        truncated = False

        def __iter__(self):
            for i in range(n):
                yield Frame(i, i / 30.0, picture.copy())

        def close(self) -> None:
            pass

    monkeypatch.setattr(sources, "open_source", lambda spec, **kw: Synthetic())
    rss: list[float] = []

    def on_frame(fr) -> None:
        if fr.index % 500 == 499:
            rss.append(_rss_mb())

    summary, _ = track_video("synthetic", model, load_track_config(),
                                   TrackOutputs(tmp_path / "s.csv"), progress=False,
                                   on_frame=on_frame)
    assert summary.frames == n and summary.tracked_frames == 0
    # the results list grows by design (one small FrameResult per frame, for the CSV)
    _assert_flat(np.array(rss), warm=2, limit_mb=8.0)
