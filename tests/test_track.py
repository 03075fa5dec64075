"""End to end on real media: `face3d track` → CSV + sidecar; conventions of the columns; quality
on the shared clips (face found, agreement with MediaPipe, CSV self-consistency, expressions)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from tracker.correspondence import load_mp68
from tracker.landmarks import inter_ocular
from tracker.pipeline import FaceTracker, make_camera
from tracker.quality import NO_JAW, eyelid_gap, lip_gap, pearson, point_error_pct
from tracker.sources import open_source
from tracker.track import project_lmk68
from tracker.trackconfig import load_track_config


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tracker.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def read_csv(path):
    with open(path) as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]



def test_core_commands_parse_without_the_optional_modules():
    """``face3d track`` builds its parser without importing the benchmarks, the server or the
    trainer (0.45 s of scipy imports); ``face3d --help`` and the optional commands still get the
    full parser."""
    code = ("import sys\n"
            "from tracker.cli import build_parser\n"
            "a = build_parser(['track', 'in.mp4', '--csv', 'o.csv'], complete=False)"
            ".parse_args(['track', 'in.mp4', '--csv', 'o.csv'])\n"
            "print(a.command, sorted(m for m in ('tracker.bench', 'tracker.serve', "
            "'tracker.bench_overlay', 'scipy.signal') if m in sys.modules))\n"
            "b = build_parser(['bench-overlay', 'x.mp4'], complete=False)"
            ".parse_args(['bench-overlay', 'x.mp4', '--rounds', '2'])\n"
            "print(b.command, b.rounds)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["track []", "bench-overlay 2"]
    helped = run_cli("--help", timeout=120)
    assert helped.returncode == 0
    for command in ("track", "demo", "model", "render", "synth", "serve", "batch", "bench",
                    "bench-render", "bench-overlay", "train", "export"):
        assert command in helped.stdout, command
    wrong = run_cli("trak", "x.mp4", timeout=120)  # a typo lists every command
    assert wrong.returncode == 2 and "bench-overlay" in wrong.stderr

def track_with_landmarks(path, model, max_frames=None):
    """Frames → (results, MediaPipe points) through the public tracker API (no smoothing)."""
    from dataclasses import replace
    cfg = replace(load_track_config(), smooth="none")
    src = open_source(path)
    tr = FaceTracker(model, make_camera(src.info, cfg), cfg, sar=src.info.sar)
    res, lms = {}, {}
    for f in src:
        fr = tr.step(f)
        for face in fr.faces:
            res[f.index] = face
            lms[f.index] = face.landmarks.points
        for idx, rv in tr.pop_revisions():
            res[idx] = rv
        if max_frames and f.index + 1 >= max_frames:
            break
    src.close()
    tr.close()
    return res, lms, tr.camera


@pytest.fixture(scope="module")
def wda_csv(videos, tmp_path_factory, model_path):
    out = tmp_path_factory.mktemp("track") / "wda.csv"
    r = run_cli("track", videos["WDA_KatieHill_000"], "--csv", out, "--landmarks")
    assert r.returncode == 0, r.stderr
    return out, r


def test_cli_writes_csv_and_sidecar(wda_csv, model):
    out, r = wda_csv
    assert "200 frames" in r.stdout and "face in 200" in r.stdout
    assert r.stderr.strip() == ""  # no native-library chatter, no warnings
    header, rows = read_csv(out)
    expected = (["frame", "time_s", "face_id", "status", "confidence", "qw", "qx", "qy", "qz",
                 "yaw_deg", "pitch_deg", "roll_deg", "tx_m", "ty_m", "tz_m"]
                + list(model.exp_names) + [f"id_{i:03d}" for i in range(100)]
                + [f"sh_{c}_{k}" for c in "rgb" for k in range(9)]  # lighting, from the regressor
                + [f"alb_{i:02d}_{c}" for i in range(16) for c in "rgb"]  # albedo, held per track
                + [f"lmk68_x_{i:02d}" for i in range(68)] + [f"lmk68_y_{i:02d}" for i in range(68)])
    assert header == expected
    assert len(rows) == 200
    assert all(r[3] == "tracked" and r[2] == "0" for r in rows)
    times = np.array([float(r[1]) for r in rows])
    assert times[0] == pytest.approx(0.0) and np.allclose(np.diff(times), 0.04, atol=1e-6)  # 25 fps
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["camera"]["width"] == 512 and meta["columns"] == header
    assert meta["model"]["expression_names"] == list(model.exp_names)
    assert meta["settings"]["smoothing"]["mode"] == "offline"
    assert not list(out.parent.glob("*.tmp-*"))


def test_csv_coefficients_rebuild_lmk68_columns(wda_csv):
    """Rebuild every row's 68 points from its own coefficients with numpy and the npz only."""
    import os
    out, _ = wda_csv
    header, rows = read_csv(out)
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    cam = meta["camera"]
    z = np.load(os.environ["FACE3D_MODEL"])
    col = {n: i for i, n in enumerate(header)}
    lmk = z["lmk68_idx"]
    neutral = z["neutral"][lmk].astype(np.float64) * 0.01
    idb = z["id_basis"][:, lmk].astype(np.float64) * 0.01
    exb = z["exp_basis"][:, lmk].astype(np.float64) * 0.01
    errs = []
    for r in rows:
        a = np.array([float(r[col[f"id_{i:03d}"]]) for i in range(100)])
        e = np.array([float(r[col[n]]) for n in z["exp_names"]])
        w, x, y, q3 = (float(r[col[k]]) for k in ("qw", "qx", "qy", "qz"))
        rot = np.array([[1 - 2 * (y * y + q3 * q3), 2 * (x * y - w * q3), 2 * (x * q3 + w * y)],
                        [2 * (x * y + w * q3), 1 - 2 * (x * x + q3 * q3), 2 * (y * q3 - w * x)],
                        [2 * (x * q3 - w * y), 2 * (y * q3 + w * x), 1 - 2 * (x * x + y * y)]])
        t = np.array([float(r[col[k]]) for k in ("tx_m", "ty_m", "tz_m")])
        v = neutral + np.tensordot(a, idb, 1) + np.tensordot(e, exb, 1)
        xc = v @ rot.T + t
        u = cam["cx"] + cam["fx"] * xc[:, 0] / -xc[:, 2]
        vv = cam["cy"] - cam["fy"] * xc[:, 1] / -xc[:, 2]
        got = np.stack([[float(r[col[f"lmk68_x_{i:02d}"]]) for i in range(68)],
                        [float(r[col[f"lmk68_y_{i:02d}"]]) for i in range(68)]], 1)
        iod = np.linalg.norm(got[36] - got[45])
        errs.append(np.mean(np.linalg.norm(got - np.stack([u, vv], 1), axis=1)) / iod * 100)
    assert max(errs) < 0.5


@pytest.mark.parametrize("clip", ["WDA_KatieHill_000", "d12"])
def test_talking_clip_quality(clip, videos, model):
    """Face in ≥ 95 % of frames, projected ICT 68 (no jaw) within 5 % IOD of MediaPipe's
    68-equivalents, jawOpen follows the lip gap (r ≥ 0.85)."""
    res, lms, cam = track_with_landmarks(videos[clip], model)
    n = {"WDA_KatieHill_000": 200, "d12": 183}[clip]
    assert len(res) >= 0.95 * n
    mp68 = load_mp68()
    idx = sorted(res)
    err = [point_error_pct(project_lmk68(model, cam, res[i].params)[NO_JAW],
                           mp68.points(lms[i][:, :2])[NO_JAW], inter_ocular(lms[i])) for i in idx]
    assert np.mean(err) < 5.0
    jaw = [res[i].params.expression[model.exp_names.index("jawOpen")] for i in idx]
    assert pearson(jaw, [lip_gap(lms[i]) for i in idx]) >= 0.85


def test_blinks_follow_eyelid_gaps(videos, model):
    res, lms, _ = track_with_landmarks(videos["d3"], model)
    idx = sorted(res)
    for side in ("L", "R"):
        blink = [res[i].params.expression[model.exp_names.index(f"eyeBlink_{side}")] for i in idx]
        assert pearson(blink, [eyelid_gap(lms[i], side) for i in idx]) < -0.85


def test_non_square_pixels_d9(videos, model):
    res, lms, cam = track_with_landmarks(videos["d9"], model, max_frames=60)
    assert cam.fx == pytest.approx(cam.fy * 16 / 15)
    assert len(res) == 60
    mp68 = load_mp68()
    err = [point_error_pct(project_lmk68(model, cam, res[i].params)[NO_JAW],
                           mp68.points(lms[i][:, :2])[NO_JAW], inter_ocular(lms[i])) for i in res]
    assert np.mean(err) < 5.0


def test_image_input_and_livelink(media_dir, tmp_path):
    img = media_dir / "images" / "skimage" / "astronaut.png"
    out = tmp_path / "astro.csv"
    r = run_cli("track", img, "--csv", out, "--format", "livelink")
    assert r.returncode == 0, r.stderr
    header, rows = read_csv(out)
    assert header[:4] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft", "EyeLookDownLeft"]
    assert header[-9:] == ["HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch",
                           "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll"]
    assert len(header) == 63 and len(rows) == 1 and rows[0][1] == "61"
    assert rows[0][0] == "00:00:00:00.000"


def test_faceless_video_all_lost(tmp_path):
    import av
    p = tmp_path / "grey.mp4"
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        for i in range(20):
            img = np.full((120, 160, 3), 90 + i, np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    out = tmp_path / "grey.csv"
    r = run_cli("track", p, "--csv", out)
    assert r.returncode == 0, r.stderr
    header, rows = read_csv(out)
    assert len(rows) == 20
    assert all(row[3] == "lost" and row[2] == "-1" and row[4] == "" for row in rows)


@pytest.mark.parametrize("content", [b"", b"not a video at all\n", bytes(range(256)) * 40])
def test_bad_input_one_line_no_output(tmp_path, content, model_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    out = tmp_path / "out.csv"
    r = run_cli("track", bad, "--csv", out)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("face3d: error:") and "bad.mp4" in lines[0]
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == [bad]


def test_pose_signs_on_real_head_turns(videos, model):
    """d3 turns its head: positive yaw ⇔ nose right of the eye midpoint in the image, positive
    pitch ⇔ nose lower; the subject's left eye (MediaPipe 263) is on the image right."""
    from tracker.rotation import quat_to_euler
    res, lms, _ = track_with_landmarks(videos["d3"], model)
    idx = sorted(res)
    ypr = np.array([quat_to_euler(res[i].params.rotation) for i in idx])
    p = np.array([lms[i] for i in idx])
    iod = np.linalg.norm(p[:, 263, :2] - p[:, 33, :2], axis=1)
    eye_mid = 0.5 * (p[:, 33, :2] + p[:, 263, :2])
    nose_dx = (p[:, 1, 0] - eye_mid[:, 0]) / iod
    assert pearson(ypr[:, 0], nose_dx) > 0.9
    assert np.ptp(ypr[:, 0]) > 15  # the clip really turns
    assert np.all(p[:, 263, 0] > p[:, 33, 0])
    # units: a real head ~0.3-2 m in front of the camera, eye distance ~6-11 cm
    tz = np.array([res[i].params.translation[2] for i in idx])
    assert np.all((tz < -0.25) & (tz > -2.5))


def test_camera_vanishing_keeps_rows(videos, model, tmp_path, monkeypatch):
    """A camera that disappears mid-stream: the rows captured so far are written, then the
    CameraError is raised (the CLI turns it into one line and exit 1)."""
    import tracker.sources as sources
    from tracker.errors import CameraError
    from tracker.track import TrackOutputs, track_video

    real = sources.open_source(videos["d12"])

    class Vanishing:
        info = real.info
        truncated = False

        def __iter__(self):
            for f in real:
                if f.index == 30:
                    raise CameraError("webcam:0: read failed (device disappeared)")
                yield f

        def close(self):
            real.close()

    monkeypatch.setattr(sources, "open_source", lambda spec, **kw: Vanishing())
    out = tmp_path / "cam.csv"
    with pytest.raises(CameraError, match="30 frames before it are in"):
        track_video("webcam:0", model, load_track_config(), TrackOutputs(out))
    header, rows = read_csv(out)
    assert len(rows) == 30 and all(r[3] == "tracked" for r in rows)


def test_track_with_overlay_single_pass(videos, tmp_path):
    """`face3d track --overlay`: the overlay comes out of the same pass with the input's frame
    count, size, timestamps and audio, beside a normal CSV."""
    import av
    out = tmp_path / "d12.csv"
    ov = tmp_path / "d12.mp4"
    r = run_cli("track", videos["d12"], "--csv", out, "--overlay", ov)
    assert r.returncode == 0, r.stderr
    with av.open(str(videos["d12"])) as a, av.open(str(ov)) as b:
        sa, sb = a.streams.video[0], b.streams.video[0]
        ta = [float(f.time) for f in a.decode(sa)]
        tb = [float(f.time) for f in b.decode(sb)]
        assert (sb.width, sb.height) == (sa.width, sa.height)
        assert len(tb) == len(ta) == 183 and np.allclose(tb, ta, atol=1e-3)
        assert len(b.streams.audio) == 1
    header, rows = read_csv(out)
    assert len(rows) == 183
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d12.csv", "d12.csv.json", "d12.mp4"]


def test_an_overlay_failing_mid_run_keeps_the_csv(videos, model, tmp_path, monkeypatch):
    """The encoder fails at frame 20 (a full disk): the overlay is dropped with nothing left
    behind, tracking goes on, every row reaches the CSV, and the run ends in OverlayError."""
    import errno

    from tracker.errors import OverlayError
    from tracker.track import TrackOutputs, track_video
    from tracker.videoout import H264Writer

    real = H264Writer.write

    def write(self, frame, pts):
        if self.frames >= 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, frame, pts)

    monkeypatch.setattr(H264Writer, "write", write)
    (tmp_path / "ov").mkdir()
    out, ov = tmp_path / "d12.csv", tmp_path / "ov" / "d12.mp4"
    with pytest.raises(OverlayError, match="No space left"):
        track_video(str(videos["d12"]), model, load_track_config(),
                    TrackOutputs(out, overlay=ov), progress=False)
    header, rows = read_csv(out)
    assert len(rows) == 183 and (tmp_path / "d12.csv.json").exists()
    assert list((tmp_path / "ov").iterdir()) == []


def test_an_overlay_failing_at_the_end_keeps_the_csv(videos, model, tmp_path):
    """The overlay's directory disappears mid-run, so the finished video cannot be moved into
    place: the CSV is still written and the error says what happened."""
    import shutil

    from tracker.errors import OverlayError
    from tracker.track import TrackOutputs, track_video

    (tmp_path / "ov").mkdir()
    out, ov = tmp_path / "d12.csv", tmp_path / "ov" / "d12.mp4"

    def on_frame(fr):
        if fr.index == 10:
            shutil.rmtree(tmp_path / "ov")

    with pytest.raises(OverlayError, match="while finishing"):
        track_video(str(videos["d12"]), model, load_track_config(),
                    TrackOutputs(out, overlay=ov), progress=False, on_frame=on_frame)
    header, rows = read_csv(out)
    assert len(rows) == 183 and not ov.exists()


def test_thread_limits_hold_during_tracking_and_are_restored(videos, model, tmp_path):
    """`track_video` runs OpenBLAS and OpenCV with one thread (their idle workers spin on the
    cores MediaPipe needs) and gives the caller its settings back afterwards."""
    import cv2
    from threadpoolctl import threadpool_info

    from tracker.track import TrackOutputs, track_video

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    cv2.setNumThreads(2)
    before = blas_threads()
    seen = []

    def on_frame(_fr):
        if not seen:
            seen.append((cv2.getNumThreads(), blas_threads()))

    track_video(str(videos["WDA_KatieHill_000"]), model, load_track_config(),
                TrackOutputs(tmp_path / "o.csv"), progress=False, on_frame=on_frame, max_frames=5)
    assert seen and seen[0][0] == 1 and all(n == 1 for n in seen[0][1])
    assert cv2.getNumThreads() == 2
    assert blas_threads() == before
