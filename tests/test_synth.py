"""Synthetic clips: rendering, ground-truth CSV/sidecar, and the tracker measured against them."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from tracker.synth import SynthSettings, make_scene, render_frame, synth, synth_params

SMALL = SynthSettings(seconds=1.5, size=(256, 256), fps=30.0, seed=0)


@pytest.fixture(scope="module")
def clip(model, tmp_path_factory):
    return synth(tmp_path_factory.mktemp("synth") / "s.mp4", model, settings=SMALL)


@pytest.fixture(scope="module")
def truth(model):
    return synth_params(model, SMALL)


def frames_of(path):
    from tracker.sources import open_source

    with open_source(str(path)) as src:
        return list(src)


def test_clip_has_the_frames_size_and_times(clip):
    frames = frames_of(clip.video)
    assert clip.frames == len(frames) == SMALL.n_frames == 45
    assert frames[0].image.shape == (256, 256, 3)
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(45) / 30.0, atol=1e-6)


def test_truth_csv_round_trips(clip, truth, model):
    from tracker.csvout import face3d_columns
    from tracker.track import project_lmk68
    from tracker.types import Camera

    times, params = truth
    side = json.loads(clip.sidecar.read_text())
    cam = Camera(**{k: side["camera"][k] for k in ("fx", "fy", "cx", "cy", "width", "height")})
    assert cam == make_scene(model, SMALL).cam
    assert side["synthetic"]["settings"]["seed"] == 0 and side["synthetic"]["ground_truth"]
    with open(clip.csv, newline="") as fh:
        rows = list(csv.reader(fh))
    cols = face3d_columns(model.exp_names, model.n_identity, lighting=True, landmarks=True)
    assert rows[0] == cols == side["columns"]
    assert len(rows) == 1 + len(params)
    ix = {c: i for i, c in enumerate(cols)}
    for r, t, p in zip(rows[1:], times, params):
        a = np.array([float(x) if x else np.nan for x in r[4:]])

        def get(names, a=a):
            return a[[ix[n] - 4 for n in names]]

        assert r[3] == "tracked" and abs(float(r[1]) - t) < 1e-6
        np.testing.assert_allclose(get(["qw", "qx", "qy", "qz"]), p.rotation, atol=1e-6)
        np.testing.assert_allclose(get(["tx_m", "ty_m", "tz_m"]), p.translation, atol=1e-6)
        np.testing.assert_allclose(get(model.exp_names), p.expression, atol=1e-5)
        np.testing.assert_allclose(get([f"id_{i:03d}" for i in range(model.n_identity)]),
                                   p.identity, atol=1e-5)
        np.testing.assert_allclose(get([c for c in cols if c.startswith("sh_")]), p.lighting,
                                   atol=1e-5)
        lmk = np.stack([get([f"lmk68_x_{i:02d}" for i in range(68)]),
                        get([f"lmk68_y_{i:02d}" for i in range(68)])], 1)
        np.testing.assert_allclose(lmk, project_lmk68(model, cam, p), atol=1e-3)


def test_trajectories_cover_the_ranges(model):
    s = SynthSettings(seconds=60.0, seed=3)
    _, params = synth_params(model, s)
    from tracker.rotation import quat_to_euler

    ypr = quat_to_euler(np.stack([p.rotation for p in params]))
    assert np.abs(ypr[:, 0]).max() <= 40.5 and np.ptp(ypr[:, 0]) > 50
    assert np.abs(ypr[:, 1]).max() <= 20.5 and np.ptp(ypr[:, 1]) > 20
    assert np.abs(ypr[:, 2]).max() <= 12.5
    e = np.stack([p.expression for p in params])
    w = {n: e[:, i] for i, n in enumerate(model.exp_names)}
    assert e.min() >= 0 and e.max() <= 1
    blinks = np.sum(np.diff((w["eyeBlink_L"] > 0.9).astype(int)) == 1)
    assert 10 <= blinks <= 35 and np.array_equal(w["eyeBlink_L"], w["eyeBlink_R"])
    assert w["jawOpen"].max() > 0.25 and (w["jawOpen"] < 0.02).mean() > 0.1   # talking + pauses
    for name in ("mouthSmile_L", "browInnerUp_L", "browDown_L", "mouthPucker", "eyeLookUp_L"):
        assert w[name].max() > 0.2, name
    ident = params[0].identity
    assert all(np.array_equal(p.identity, ident) for p in params)
    assert 0.4 < ident.std() < 0.8
    _, again = synth_params(model, s)
    assert all(np.array_equal(a.expression, b.expression) for a, b in zip(params, again))
    _, other = synth_params(model, replace(s, seed=4))
    assert not np.array_equal(other[0].identity, ident)


def test_render_frame_draws_a_head_over_the_background(model, truth):
    s = replace(SMALL, size=(128, 96))
    scene = make_scene(model, s)
    img = render_frame(scene, truth[1][0])
    assert img.shape == (96, 128, 3) and img.dtype == np.uint8
    changed = np.any(img != scene.background, axis=-1)
    assert 0.15 < changed.mean() < 0.7
    assert not changed[:, :8].any() and not changed[:, -8:].any()  # the head is centred


def test_mediapipe_and_the_tracker_on_a_synthetic_clip(clip, truth, model):
    """MediaPipe finds the rendered head, and the tracker's projected 68 points (jaw excluded)
    land within 2.5 % of the inter-ocular distance of the truth on average.

    Measured (this clip): MediaPipe in 45/45 frames, its own 68-equivalents 2.4 % from the truth;
    the tracker 1.3 %. On 6 s clips with full ±40° turns (seeds 1–3): tracker 1.8–2.0 %,
    MediaPipe 2.5–3.0 %, detection 100 %.
    """
    from tracker.correspondence import load_mp68
    from tracker.landmarks import LandmarkDetector
    from tracker.pipeline import make_camera
    from tracker.sources import probe
    from tracker.track import project_lmk68, track_video
    from tracker.trackconfig import load_track_config

    cam = make_scene(model, SMALL).cam
    _, params = truth
    true68 = np.stack([project_lmk68(model, cam, p) for p in params])
    iod = np.linalg.norm(true68[:, 36] - true68[:, 45], axis=1)
    no_jaw = slice(17, 68)

    mp68 = load_mp68()
    found, mp_err = 0, []
    with LandmarkDetector() as det:
        for f in frames_of(clip.video):
            faces = det.detect(f.image, f.time_s)
            if faces:
                found += 1
                e = np.linalg.norm(mp68.points(faces[0].points[:, :2]) - true68[f.index], axis=1)
                mp_err.append(e[no_jaw].mean() / iod[f.index] * 100)
    assert found >= 0.9 * len(params)
    assert np.mean(mp_err) < 4.0

    cfg = replace(load_track_config(), focal_px=cam.fy)
    summary, results = track_video(str(clip.video), model, cfg, None, progress=False)
    assert summary.tracked_frames >= 0.9 * summary.frames
    cam_t = make_camera(probe(str(clip.video)), cfg)
    err = [np.linalg.norm(project_lmk68(model, cam_t, r.faces[0].params) - true68[r.index],
                          axis=1)[no_jaw].mean() / iod[r.index] * 100
           for r in results if r.faces]
    assert np.mean(err) < 2.5, np.mean(err)


def test_demo_clip_and_cli(model, tmp_path, monkeypatch):
    from tracker import synth as synth_mod
    from tracker.cli import main

    monkeypatch.setattr(synth_mod, "DEMO_SECONDS", 0.2)
    demo = synth_mod.render_demo_clip(tmp_path / "demo.mp4", model)
    assert demo.exists() and (tmp_path / "demo.truth.csv").exists()
    assert (tmp_path / "demo.truth.csv.json").exists() and not (tmp_path / "demo.csv").exists()
    assert len(frames_of(demo)) == 6

    out = tmp_path / "cli.mp4"
    assert main(["synth", str(out), "--seconds", "0.2", "--size", "128x96", "--seed", "2"]) == 0
    assert [f.image.shape for f in frames_of(out)] == [(96, 128, 3)] * 6
    assert (tmp_path / "cli.csv").exists() and (tmp_path / "cli.csv.json").exists()
    assert main(["synth", str(tmp_path / "bad.mp4"), "--size", "127x96"]) == 1
    assert not (tmp_path / "bad.mp4").exists()


def test_render_cli_on_a_synthetic_image(model, truth, tmp_path):
    from tracker.cli import main
    from tracker.overlay import write_image

    s = replace(SMALL, size=(320, 320))
    img = render_frame(make_scene(model, s), truth[1][0])
    src = write_image(tmp_path / "head.png", img)
    out = tmp_path / "head_overlay.png"
    assert main(["render", str(src), "--out", str(out)]) == 0
    drawn = frames_of(out)[0].image
    changed = np.any(drawn != img, axis=-1)
    assert 0.05 < changed.mean() < 0.5
    assert main(["render", str(src), "--out", str(tmp_path / "x.mp4")]) == 1
