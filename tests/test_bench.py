"""face3d bench: the quality measures on constructed inputs, the CSV rebuild check, the synthetic
ground-truth comparison, and one small end-to-end run on a real clip with an annotated image."""

from __future__ import annotations

import csv
import json
import sys
import types
from dataclasses import replace
from pathlib import Path

import mkvideo as mk
import numpy as np
import pytest

from tracker import bench_quality as bq
from tracker.errors import InputError
from tracker.rotation import euler_to_quat, quat_multiply
from tracker.trackconfig import load_track_config
from tracker.types import FaceParams, FaceResult, FrameResult, VideoInfo

# ------------------------------------------------------------------------ jitter, lag, runs

def test_accel_p95_is_the_second_difference_in_pixels():
    t = np.arange(20, dtype=np.float64)
    still = np.zeros((20, 3, 2))
    linear = still + (2.0 * t)[:, None, None]                 # constant velocity
    ballistic = still + 0.5 * t[:, None, None] ** 2 * np.array([3.0, 4.0])  # |a| = 5
    ids = np.zeros(20, int)
    assert bq.accel_p95(linear, ids) == pytest.approx(0.0, abs=1e-9)
    assert bq.accel_p95(ballistic, ids) == pytest.approx(5.0)
    spike = still.copy()
    spike[10, 0] = (6.0, 8.0)  # one point jumps 10 px for one frame: 10, 20, 10 around it
    acc = bq.accel_p95(spike, ids)
    assert 0 < acc <= 20.0
    # triples crossing a lost frame or an id change are not used
    ids2 = ids.copy()
    ids2[9:12] = -1
    assert bq.accel_p95(spike, ids2) == 0.0
    ids3 = np.where(t < 10, 0, 1)
    assert bq.accel_p95(ballistic, ids3) == pytest.approx(5.0)
    assert np.isnan(bq.accel_p95(still[:2], ids[:2]))


def _walk(n: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=n + 40))
    return np.convolve(x, np.ones(5) / 5, mode="same")[20:-20]  # smooth random walk


@pytest.mark.parametrize("shift", [0, 1, 3, -2])
def test_lag_frames_finds_a_known_shift(shift):
    x = _walk(340)
    raw, delayed = x[20:320], x[20 - shift:320 - shift]  # delayed[t] = raw[t - shift]
    assert bq.lag_frames(raw, delayed) == pytest.approx(shift, abs=0.2)


def test_lag_of_a_causal_filter_is_positive_and_of_a_zero_phase_one_is_nil():
    from scipy.signal import filtfilt, lfilter

    raw = _walk(300, 1) + np.random.default_rng(2).normal(0, 0.3, 300)
    b, a = [0.2], [1.0, -0.8]
    ema = lfilter(b, a, raw - raw[0]) + raw[0]
    assert 2.0 < bq.lag_frames(raw, ema) < 6.0
    assert bq.lag_frames(raw, filtfilt(b, a, raw)) == pytest.approx(0.0, abs=0.2)
    assert np.isnan(bq.lag_frames(raw[:20], raw[:20]))
    assert np.isnan(bq.lag_frames(np.ones(100), np.ones(100)))


def test_longest_run():
    assert bq.longest_run(np.array([-1, 0, 0, -1, 1, 1, 1, 2])) == slice(4, 7)
    assert bq.longest_run(np.array([-1, -1])) == slice(0, 0)
    assert bq.longest_run(np.array([3, 3])) == slice(0, 2)


def test_agreement_is_zero_on_identical_points_and_scales_with_the_iod():
    from tracker.correspondence import load_mp68

    mp68 = load_mp68()
    rng = np.random.default_rng(0)
    mp = rng.uniform(100, 300, (478, 3)).astype(np.float32)
    mp[33, :2], mp[263, :2] = (150, 200), (250, 200)  # inter-ocular distance 100 px
    ict = mp68.points(mp[:, :2]).astype(np.float64)
    got = bq.agreement_pct(np.stack([ict, ict + [3.0, 0.0], ict]), [mp, mp, None], mp68.points)
    np.testing.assert_allclose(got[:2], [0.0, 3.0], atol=1e-4)
    assert np.isnan(got[2])


# ----------------------------------------------------------------------- CSV rebuild check

def _known_results(model, n: int = 6, lost: tuple[int, ...] = (2,)) -> list[FrameResult]:
    rng = np.random.default_rng(5)
    ident = (0.7 * rng.normal(size=model.n_identity)).astype(np.float32)
    out = []
    for i in range(n):
        if i in lost:
            out.append(FrameResult(i, i / 30, ()))
            continue
        q = euler_to_quat(rng.uniform(-20, 20), rng.uniform(-10, 10), rng.uniform(-5, 5))
        p = FaceParams(q, np.array([0.01 * i, -0.02, -0.55]),
                       rng.uniform(0, 0.6, model.n_expression).astype(np.float32), ident)
        out.append(FrameResult(i, i / 30, (FaceResult(0, "tracked", 0.9, p),)))
    return out


def _write_csv(path: Path, results, model, size=(640, 480)):
    from tracker.pipeline import make_camera
    from tracker.track import TrackOutputs, TrackSummary, write_outputs

    cfg = load_track_config()
    info = VideoInfo("x.mp4", "file", size[0], size[1], 30.0)
    cam = make_camera(info, cfg)
    summ = TrackSummary("x.mp4", path, len(results), sum(bool(r.faces) for r in results), 1, 1.0)
    write_outputs(TrackOutputs(path, landmarks=True), results, model, cam, info, cfg, summ)
    return cam


def test_rebuild_check_passes_on_written_csv_and_catches_a_moved_point(tmp_path, model):
    path = tmp_path / "k.csv"
    _write_csv(path, _known_results(model), model)
    res = bq.rebuild_check(path, model)
    assert res["ok"] and res["rows"] == 5 and res["max_pct"] < 0.01
    rows = list(csv.reader(path.open()))
    col = rows[0].index("lmk68_x_40")
    rows[4][col] = f"{float(rows[4][col]) + 20.0:.3f}"
    with path.open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    bad = bq.rebuild_check(path, model)
    assert not bad["ok"] and bad["max_pct"] > 0.5


def test_read_track_csv_rejects_malformed_files(tmp_path):
    ragged = tmp_path / "r.csv"
    ragged.write_text("frame,time_s,status\n0,0.0\n")
    with pytest.raises(InputError, match="different number of cells"):
        bq.read_track_csv(ragged)
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(InputError, match="empty"):
        bq.read_track_csv(tmp_path / "e.csv")
    with pytest.raises(InputError, match="cannot read"):
        bq.read_track_csv(tmp_path / "missing.csv")


# -------------------------------------------------------------------- synthetic comparison

def test_compare_to_truth_is_zero_on_the_truth_and_sees_a_turned_head(tmp_path, model):
    from tracker.bench_synth import compare_to_truth

    results = _known_results(model, n=5, lost=())
    path = tmp_path / "truth.csv"
    cam = _write_csv(path, results, model)
    truth = bq.read_track_csv(path)
    same = compare_to_truth(results, truth, model, cam)
    assert same["tracked"] == 5
    assert same["vertex_mm"] < 0.01 and same["rotation_deg"] < 0.01 and same["lmk68_pct"] < 0.01
    assert same["expression_mae"] < 1e-5 and same["translation_mm"] < 0.01
    turn = euler_to_quat(2.0, 0.0, 0.0)
    turned = [replace(r, faces=(replace(r.faces[0], params=replace(
        r.faces[0].params, rotation=quat_multiply(turn, r.faces[0].params.rotation))),))
        for r in results]
    off = compare_to_truth(turned, truth, model, cam)
    assert off["rotation_deg"] == pytest.approx(2.0, abs=0.01)
    assert 1.0 < off["vertex_mm"] < 10.0 and off["shape_mm"] < 0.01


# ---------------------------------------------------------------------------- end to end

@pytest.fixture()
def fake_synth(monkeypatch, videos):
    """A stand-in for ``tracker.synth`` with its documented API: real frames re-encoded at
    ``size``, and as "truth" the tracker's own CSV of that clip (so the tracked result must
    match it exactly — this exercises the plumbing, not the tracker)."""
    from tracker.sources import open_source
    from tracker.track import TrackOutputs, track_video

    def synth(out_mp4, model, *, seconds, size, fps, seed):  # size = (width, height)
        import cv2
        n = round(seconds * fps)
        with open_source(videos["d10"]) as src:
            frames = [cv2.resize(f.image, size) for f, _ in zip(src, range(n))]
        mk.write_video(out_mp4, frames=frames, size=size, fps=int(fps))
        track_video(str(out_mp4), model, load_track_config(),
                    TrackOutputs(Path(out_mp4).with_suffix(".csv")), progress=False)
        return Path(out_mp4)

    mod = types.ModuleType("tracker.synth")
    mod.synth = synth
    monkeypatch.setitem(sys.modules, "tracker.synth", mod)
    return synth


def _annotated_image(folder: Path, media_dir: Path) -> Path:
    """astronaut.png beside a .pts file holding MediaPipe's own 68-equivalents."""
    import shutil

    from tracker.correspondence import load_mp68
    from tracker.ibug import write_pts
    from tracker.landmarks import LandmarkDetector
    from tracker.sources import open_source

    folder.mkdir()
    img = Path(shutil.copy(media_dir / "images/skimage/astronaut.png", folder / "astronaut.png"))
    with open_source(img) as src, LandmarkDetector(static=True) as det:
        faces = det.detect(next(iter(src)).image, 0.0)
    write_pts(folder / "astronaut.pts", load_mp68().points(faces[0].points[:, :2]))
    return img


def test_bench_end_to_end_small(tmp_path, videos, model, media_dir, fake_synth):
    from tracker.bench import BenchConfig, run_bench
    from tracker.bench_report import write_report

    _annotated_image(tmp_path / "images", media_dir)
    cfg = BenchConfig(tmp_path / "out", (videos["d10"],), repeats=1, max_frames=45,
                      image_dirs=(tmp_path / "images",), synth_seeds=(0,), synth_seconds=0.7,
                      synth_size=256, render_repeats=0)
    lines: list[str] = []
    rep = run_bench(cfg, model, load_track_config(), lines.append)
    c = rep["clips"]["d10"]
    assert c["frames"] == 45 and c["face_pct"] == 100.0 and c["face_ids"] == 1
    assert c["floor_fps"] > 0 and c["track_fps"] > 0 and c["ratio"] == pytest.approx(
        c["track_fps"] / c["floor_fps"])
    assert c["replay_vs_track_max_diff"] < 1e-5  # the replayed tracker is face3d track's
    assert 0.5 < c["agreement_pct"]["offline"]["mean"] < 6.0
    assert c["rebuild"]["ok"] and c["rebuild"]["rows"] == 45
    assert c["jitter_px"]["offline"] < c["jitter_px"]["none"]
    assert np.isfinite(c["expression"]["jawOpen_vs_lip_gap"])
    for stage, v in rep["latency_ms"].items():
        assert v["median"] > 0, stage
    nme = rep["nme"]["summary"]
    assert nme["scored"] == 1 and nme["mediapipe_mean"] < 0.05 and 0.5 < nme["ict_no_jaw_mean"] < 8
    syn = rep["synth"]["clips"]["synth_0"]
    assert syn["tracked"] == syn["frames"] == 21
    assert syn["vertex_mm"] < 0.05 and syn["rotation_deg"] < 0.01 and syn["lmk68_pct"] < 0.01
    assert rep["render"] == {"skipped": "disabled (--no-render)"}
    assert any("d10" in ln for ln in lines)
    names = {ck["name"] for ck in rep["checks"]}
    assert any("rebuild" in n for n in names) and any("floor" in n for n in names)

    paths = write_report(cfg.out, rep)
    body = json.loads(paths["json"].read_text())
    assert body["clips"]["d10"]["frames"] == 45
    assert set(body["plot_files"]) >= {"latency.png", "fps_vs_floor.png", "agreement.png",
                                       "jitter_lag.png", "nme.png", "synth.png"}
    for name in body["plot_files"]:
        assert (cfg.out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["md"].read_text()
    assert "## Checks" in md and "| d10 |" in md and "astronaut" not in md  # scored, no error line


def test_missing_synth_and_annotations_are_reported_not_fatal(tmp_path, model, monkeypatch):
    from tracker.bench import BenchConfig, _nme
    from tracker.bench_synth import evaluate_synth

    monkeypatch.setitem(sys.modules, "tracker.synth", None)  # import fails
    got = evaluate_synth(model, load_track_config(), tmp_path, (0,), 1.0, 128, 30.0)
    assert "tracker.synth is not available" in got["skipped"]
    cfg = BenchConfig(tmp_path, (), image_dirs=(tmp_path,))
    assert "no iBUG .pts annotations" in _nme(model, load_track_config(), cfg)["skipped"]


def test_command_line(videos, tmp_path):
    from tracker.bench import config_from_args
    from tracker.cli import build_parser

    ap = build_parser()
    cfg = config_from_args(ap.parse_args(["bench", "--quick", "--out", str(tmp_path),
                                          "--videos", str(videos["d10"]), "--no-synth"]))
    assert cfg.quick and cfg.repeats == 1 and cfg.max_frames == 90 and cfg.synth_seeds == ()
    assert cfg.videos == (videos["d10"],) and cfg.out == tmp_path
    full = config_from_args(ap.parse_args(["bench", "--videos", str(videos["d10"]), "--images"]))
    assert full.repeats == 3 and full.max_frames is None and full.image_dirs == ()
    with pytest.raises(InputError, match="at least 1"):
        config_from_args(ap.parse_args(["bench", "--videos", str(videos["d10"]), "--repeats", "0"]))
    with pytest.raises(InputError, match="no such file"):
        config_from_args(ap.parse_args(["bench", "--videos", str(tmp_path / "nope.mp4")]))
