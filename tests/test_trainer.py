"""The trainer end to end: data cache (resumable), the CI smoke run (loss drop >= 10 %, ONNX export),
--resume, DDP with two CPU processes through torchrun, export CLI, config validation."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tracker.align import POSE_ANCHOR_M  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "train-smoke.toml"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, model, media_dir):
    """The CI smoke run, once: ``face3d train --config configs/train-smoke.toml --out DIR``."""
    from tracker.cli import main

    out = tmp_path_factory.mktemp("smoke")
    assert main(["train", "--config", str(SMOKE), "--out", str(out)]) == 0
    return out


def _losses(path: Path) -> list[float]:
    with open(path) as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_smoke_run_lowers_the_loss_and_exports_onnx(smoke_run):
    import onnxruntime as ort

    loss = _losses(smoke_run / "metrics.csv")
    first, last = np.mean(loss[:10]), np.mean(loss[-10:])
    assert last <= 0.9 * first, (first, last)
    with open(smoke_run / "metrics.csv") as f:
        header = next(csv.reader(f))
    for col in ("loss", "photo", "lmk", "reg_id", "alb_sym", "light_mono", "pl_exp"):
        assert col in header
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert summary["loss_drop"] >= 0.1 and summary["samples_per_s"] > 0
    sess = ort.InferenceSession(str(smoke_run / "regressor.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()][:2] == ["r6", "origin"]
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["face3d_regressor"] == "2" and meta["size"] == "128"
    assert json.loads(meta["pose_anchor"]) == list(POSE_ANCHOR_M)
    idx = json.loads((smoke_run / "cache" / "index.json").read_text())
    assert idx["size"] == 128 and sum(v["n"] for v in idx["sources"].values()) > 50


def test_cache_layout_and_pseudo_labels(smoke_run, model):
    """Shards hold consistent arrays; the tracker's fit, drawn in the crop camera, lands on the
    MediaPipe points (the crop camera is exact); skin masks cover part of the crop."""
    from tracker.correspondence import load_correspondence
    from tracker.facemodel import vertices
    from trainer.data import load_cache

    d = load_cache(smoke_run / "cache", include=("d10.mp4",))
    n = len(d["image"])
    assert d["image"].shape == (n, 128, 128, 3) and d["lmk"].shape == (n, 478, 3)
    assert d["mask"].dtype == np.uint8 and 0.15 < d["mask"].mean() < 0.7
    corr = load_correspondence()
    errs = []
    for i in range(0, n, 5):
        v = vertices(model, d["ident"][i], d["expr"][i])
        x = corr.points(v) @ d["rot"][i].T + d["trans"][i]
        f, px, py = d["cam"][i]
        uv = np.stack([px + f * x[:, 0] / -x[:, 2], py - f * x[:, 1] / -x[:, 2]], 1)
        iod = np.linalg.norm(d["lmk"][i, 263, :2] - d["lmk"][i, 33, :2])
        errs.append(np.median(np.linalg.norm(uv - d["lmk"][i, :468, :2], axis=1)) / iod)
    assert np.median(errs) < 0.03


def test_prepare_is_resumable(smoke_run, model, media_dir, capsys):
    from trainer.data import PrepareConfig, find_sources, prepare

    cache = smoke_run / "cache"
    before = (cache / "index.json").read_text()
    srcs = find_sources([media_dir / "videos" / "liveportrait" / "d10.mp4"])
    prepare(srcs, cache, model, PrepareConfig(size=128, every=3, max_frames=40), progress=print)
    assert "cached" in capsys.readouterr().out
    assert (cache / "index.json").read_text() == before
    from tracker.errors import InputError
    with pytest.raises(InputError):
        prepare(srcs, cache, model, PrepareConfig(size=96, every=3))


def test_resume_continues_from_the_checkpoint(smoke_run, tmp_path):
    import shutil

    from tracker.cli import main

    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)
    n0 = len(_losses(out / "metrics.csv"))
    ck = torch.load(out / "ckpt.pt", weights_only=False)
    assert ck["step"] == n0
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMOKE.read_text().replace("[run]", "[run]\nexport_onnx = false")
                   .replace('[data]', f'[data]\ncache = "{out / "cache"}"'))
    assert main(["train", "--config", str(cfg), "--out", str(out), "--resume", "--steps", str(n0 + 4)]) == 0
    with open(out / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(n0 + 4))
    # a checkpoint from before the pose anchor (the ICT origin) is refused, not silently misread
    ck = torch.load(out / "ckpt.pt", weights_only=False)
    del ck["pose_anchor"]
    torch.save(ck, out / "ckpt.pt")
    assert main(["train", "--config", str(cfg), "--out", str(out), "--resume", "--steps", str(n0 + 8)]) != 0


def test_ddp_two_cpu_processes(smoke_run, tmp_path):
    """torchrun --nproc_per_node 2 (gloo): both ranks train, rank 0 writes, weights stay in sync."""
    cfg = tmp_path / "ddp.toml"
    cfg.write_text(f'size = 128\n[data]\ncache = "{smoke_run / "cache"}"\n'
                   '[optim]\nbatch = 4\nsteps = 4\nwarmup = 1\n'
                   '[run]\nrenderer = "numba"\nthreads = 1\nlog_every = 1\nexport_onnx = false\n')
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = Path(sys.executable).with_name("torchrun")
    r = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", "-m", "trainer.cli",
                        "--config", str(cfg), "--out", str(out)], capture_output=True, text=True,
                       env=env, timeout=300, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout
    assert len(_losses(out / "metrics.csv")) == 4
    assert (out / "ckpt.pt").is_file()


def test_export_cli(smoke_run, tmp_path, capsys):
    from tracker.cli import main

    ts = tmp_path / "r.pt"
    assert main(["export", str(smoke_run), "--torchscript", str(ts), "--onnx", str(tmp_path / "r.onnx")]) == 0
    assert ts.is_file() and (tmp_path / "r.onnx").is_file()
    if not torch.cuda.is_available():
        assert main(["export", str(smoke_run), "--tensorrt", str(tmp_path / "r.ts")]) == 1
        assert "CUDA" in capsys.readouterr().err


def test_config_rejects_unknown_keys(tmp_path):
    from tracker.errors import ConfigError
    from trainer.config import load_train_config

    p = tmp_path / "bad.toml"
    p.write_text("[optim]\nlearning_rate = 1.0\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(p)
    cfg = load_train_config(SMOKE)
    assert cfg.net.size == cfg.size == 128 and cfg.optim.steps > 0


def test_zero_head_is_the_mean_face(model):
    """A fresh network predicts the mean face, zero expression, ambient light 0.8, mean albedo."""
    from trainer.net import NetConfig, RegressorNet, decode

    net = RegressorNet(NetConfig(), model.n_identity, model.n_expression).eval()
    raw = net(torch.rand(2, 3, 128, 128), torch.rand(2, 478, 3) * 128)
    d = decode(raw, net.sizes, clamp=True)
    assert torch.all(d["identity"] == 0) and torch.all(d["r6"] == 0) and torch.all(d["albedo"] == 0)
    assert torch.allclose(d["expression"], torch.zeros_like(d["expression"]), atol=1e-6)
    assert torch.allclose(d["lighting"][:, ::9], torch.full((2, 3), 0.8))
    assert torch.all(d["lighting"].reshape(2, 3, 9)[:, :, 1:] == 0)


def test_synthetic_samples_are_consistent(model):
    """Synthetic labels, drawn with the crop camera, land on the synthetic landmarks (up to the
    0.5 % IOD noise) and the render covers the face."""
    from tracker.correspondence import load_correspondence
    from tracker.facemodel import vertices
    from tracker.fitting import GAZE_NAMES
    from trainer.facelayer import FaceLayer
    from trainer.render import CpuRenderer
    from trainer.synthetic import synth_samples

    corr = load_correspondence()
    face = FaceLayer(model, corr)
    gaze = np.array([n in GAZE_NAMES for n in model.exp_names])
    bg = np.full((2, 128, 128, 3), 100, np.uint8)
    s = synth_samples(np.random.default_rng(5), 6, face, CpuRenderer(), bg, 128, gaze)
    assert s["image"].shape == (6, 128, 128, 3) and np.all(s["expr"][:, gaze] == 0)
    for i in range(6):
        x = corr.points(vertices(model, s["ident"][i], s["expr"][i])) @ s["rot"][i].T + s["trans"][i]
        f, px, py = s["cam"][i]
        uv = np.stack([px + f * x[:, 0] / -x[:, 2], py - f * x[:, 1] / -x[:, 2]], 1)
        iod = np.linalg.norm(s["lmk"][i, 263, :2] - s["lmk"][i, 33, :2])
        err = np.linalg.norm(uv - s["lmk"][i, :468, :2], axis=1) / iod
        assert np.median(err) < 0.015
        assert 0.2 < s["mask"][i].mean() < 0.9


def test_rendered_clips_are_labelled_with_their_known_coefficients(model, tmp_path):
    """A clip rendered from the model (render_clips) is prepared through MediaPipe like a video
    but labelled with its truth, in the crop camera built from the true camera: the labels drawn
    in the crop land on MediaPipe's points, and match the truth table exactly."""
    from tracker.bench_synth import read_truth, truth_params
    from tracker.correspondence import load_correspondence
    from tracker.facemodel import vertices
    from tracker.rotation import quat_to_matrix
    from trainer.data import PrepareConfig, known_coefficients, prepare_source, render_clips

    (clip,) = render_clips(tmp_path / "renders", [7], seconds=1.0, size=320)
    assert render_clips(tmp_path / "renders", [7], seconds=1.0, size=320) == [clip]  # kept
    cam, rows = known_coefficients(clip, model)
    assert len(rows) == 30 and cam.width == 320
    d = prepare_source(clip, model, PrepareConfig(size=128, every=2))
    n = len(d["image"])
    assert n >= 12 and np.all(d["fit_rms"] == 0)
    table, _ = read_truth(clip)
    gt = truth_params(table, model)
    for i, f in enumerate(d["frame"]):
        k = int(np.flatnonzero(gt["frame"] == f)[0])
        assert np.allclose(d["expr"][i], gt["e"][k], atol=1e-6)
        assert np.allclose(d["ident"][i], gt["id"][k], atol=1e-6)
        # rotation in the crop camera = roll of the crop x true rotation: same angle about z only
        r_true = quat_to_matrix(gt["q"][k])
        rz = d["rot"][i] @ r_true.T
        assert np.allclose(rz[2], [0, 0, 1], atol=1e-5)
    corr = load_correspondence()
    errs = []
    for i in range(n):
        x = corr.points(vertices(model, d["ident"][i], d["expr"][i])) @ d["rot"][i].T + d["trans"][i]
        f, px, py = d["cam"][i]
        uv = np.stack([px + f * x[:, 0] / -x[:, 2], py - f * x[:, 1] / -x[:, 2]], 1)
        iod = np.linalg.norm(d["lmk"][i, 263, :2] - d["lmk"][i, 33, :2])
        errs.append(np.median(np.linalg.norm(uv - d["lmk"][i, :468, :2], axis=1)) / iod)
    assert np.median(errs) < 0.03


def test_train_eval_prints_one_json_document(videos, capsys):
    """``face3d train eval`` on a real clip: stdout is one JSON document (the per-part progress
    goes to stderr), with the regressor-alone, fitting and refined figures for the clip."""
    from tracker.cli import main

    assert main(["train", "eval", str(videos["d3"]), "--every", "10", "--max-frames", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    m = out["clips"]["d3.mp4"]
    assert m["frames"] == 3 and 0 < m["reg_nme68_pct"] < 15 and m["refine_iterations"] == 3
    assert out["latency"]["median_ms"] > 0
