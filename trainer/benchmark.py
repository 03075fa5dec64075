"""``face3d train eval``: measure a regressor on real clips (no ground truth) and its speed.

Per clip, every ``every``-th frame, MediaPipe (video mode) gives the landmarks and then:

* ``reg_nme68_pct``: the regressor alone — projected ICT 68 points (jaw excluded) vs MediaPipe's
  68-equivalents, mean distance in % of the inter-ocular distance (outer eye corners);
* ``fit_rms_pct`` (``fit_nme68_pct``): the landmark fitter alone on the frame as a new track (rigid
  PnP start, mean identity, ``init_iterations`` Levenberg-Marquardt steps) — its RMS reprojection
  error over the fitted MediaPipe points in % IOD (and its 68-point error);
* ``refined_rms_pct`` (``refined_nme68_pct``): the fitter warm-started from the regressor
  (its pose, expression and identity) with ``refine_iterations`` steps;
* ``latency_ms``: ONNX Runtime median per call at batch 1 (``threads`` intra-op threads).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tracker.camera import camera_from_fov
from tracker.correspondence import load_correspondence, load_mp68
from tracker.facemodel import FaceModel
from tracker.fitting import FitConfig, fit_frame, identity_points, make_fit_basis
from tracker.landmarks import LandmarkDetector, inter_ocular
from tracker.quality import NO_JAW, point_error_pct
from tracker.regressor import RegressorHandle
from tracker.track import project_lmk68
from tracker.types import FaceParams


def eval_clip(reg: RegressorHandle, model: FaceModel, video: str | Path, every: int = 2,
              max_frames: int | None = None, refine_iterations: int = 3) -> dict[str, float]:
    from tracker.sources import open_source

    fcfg = FitConfig()
    basis = make_fit_basis(model, load_correspondence(), fcfg)
    mp68 = load_mp68()
    rows: list[tuple[float, ...]] = []
    t_reg: list[float] = []
    with open_source(str(video)) as src, LandmarkDetector() as det:
        info = src.info
        cam = camera_from_fov(info.width, info.height, 50.0, info.sar)
        mean_pts = identity_points(basis, None)
        for frame in src:
            faces = det.detect(frame.image, frame.time_s, info.sar)
            if max_frames is not None and len(rows) >= max_frames:
                break
            if frame.index % every or not faces:
                continue
            lm = faces[0]
            iod = max(inter_ocular(lm.points), 1.0)
            t68 = mp68.points(lm.points[:468, :2])
            t0 = time.perf_counter()
            p = reg.predict(frame.image, lm, cam)
            t_reg.append(time.perf_counter() - t0)
            reg_nme = point_error_pct(project_lmk68(model, cam, p)[NO_JAW], t68[NO_JAW], iod)
            target = lm.points[basis.mp_index, :2].astype(np.float64)
            alone = fit_frame(basis, mean_pts, cam, target, iod, fcfg, None)
            pa = FaceParams(alone.rotation, alone.translation, alone.expression,
                            np.zeros(model.n_identity, np.float32))
            ref = fit_frame(basis, identity_points(basis, p.identity), cam, target, iod, fcfg, p,
                            refine_iterations)
            pr = FaceParams(ref.rotation, ref.translation, ref.expression, p.identity)
            rows.append((reg_nme, alone.rms_iod_pct,
                         point_error_pct(project_lmk68(model, cam, pa)[NO_JAW], t68[NO_JAW], iod),
                         ref.rms_iod_pct,
                         point_error_pct(project_lmk68(model, cam, pr)[NO_JAW], t68[NO_JAW], iod)))
    if not rows:
        return {"frames": 0}
    a = np.array(rows)
    return {"frames": len(rows), "reg_nme68_pct": float(a[:, 0].mean()),
            "fit_rms_pct": float(a[:, 1].mean()), "fit_nme68_pct": float(a[:, 2].mean()),
            "fit_iterations": fcfg.init_iterations,
            "refined_rms_pct": float(a[:, 3].mean()), "refined_nme68_pct": float(a[:, 4].mean()),
            "refine_iterations": refine_iterations,
            "predict_ms_median": float(np.median(t_reg) * 1e3)}


def onnx_latency(path: str | Path, threads: int = 2, n: int = 300) -> dict[str, float]:
    """Median/p90 milliseconds of one ONNX Runtime call at batch 1 (random inputs)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    size = int(sess.get_modelmeta().custom_metadata_map.get("size", 128))
    rng = np.random.default_rng(0)
    feed = {"image": rng.uniform(size=(1, 3, size, size)).astype(np.float32),
            "landmarks": (rng.uniform(size=(1, 478, 3)) * size).astype(np.float32)}
    for _ in range(20):
        sess.run(None, feed)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(None, feed)
        ts.append(time.perf_counter() - t0)
    return {"threads": threads, "median_ms": float(np.median(ts) * 1e3),
            "p90_ms": float(np.quantile(ts, 0.9) * 1e3)}


def eval_synthetic(weights: str | Path, model: FaceModel, n: int = 256, seed: int = 12345,
                   backgrounds: np.ndarray | None = None) -> dict[str, float]:
    """The regressor on synthetic samples with known coefficients (:mod:`trainer.synthetic`, a
    seed the training never draws): rotation error (degrees, geodesic), expression MAE over the 53
    weights and over the weights the truth moves (> 0.05), identity RMS difference.

    These bypass MediaPipe (their landmarks are the projected model points plus noise), so they
    measure the network, not the landmark detector on rendered video.
    """
    import torch

    from tracker.fitting import GAZE_NAMES
    from tracker.regressor import make_regressor, pose_from_crop_outputs
    from tracker.types import Camera

    from .facelayer import FaceLayer
    from .render import CpuRenderer
    from .synthetic import synth_samples

    reg = make_regressor(weights)
    face = FaceLayer(model, load_correspondence())
    gaze = np.array([nm in GAZE_NAMES for nm in model.exp_names])
    if backgrounds is None:
        backgrounds = np.full((1, reg.size, reg.size, 3), 128, np.uint8)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        s = synth_samples(rng, n, face, CpuRenderer(), backgrounds, reg.size, gaze)
    rot_err, e_all, e_act, id_rms = [], [], [], []
    for i in range(n):
        out = reg.run(s["image"][i:i + 1].transpose(0, 3, 1, 2).astype(np.float32) / 255.0,
                      s["lmk"][i:i + 1, :, :])
        f, px, py = (float(x) for x in s["cam"][i])
        r, _ = pose_from_crop_outputs(out["r6"][0], out["origin"][0], float(out["log_scale"][0, 0]),
                                      Camera(f, f, px, py, reg.size, reg.size), reg.size, reg.anchor)
        rel = r.T @ s["rot"][i]
        rot_err.append(np.degrees(np.arccos(np.clip((np.trace(rel) - 1) / 2, -1, 1))))
        d = np.abs(out["expression"][0] - s["expr"][i])
        e_all.append(d.mean())
        act = s["expr"][i] > 0.05
        if act.any():
            e_act.append(d[act].mean())
        id_rms.append(float(np.sqrt(np.mean((out["identity"][0] - s["ident"][i]) ** 2))))
    return {"samples": n, "rotation_deg_mean": float(np.mean(rot_err)),
            "rotation_deg_median": float(np.median(rot_err)), "expression_mae": float(np.mean(e_all)),
            "expression_mae_active": float(np.mean(e_act)), "identity_rms": float(np.mean(id_rms))}


def eval_rendered_clips(weights: str | Path, model: FaceModel, workdir: Path,
                        seeds: tuple[int, ...] = (1, 2), seconds: float = 4.0,
                        size: int = 512) -> dict[str, object]:
    """The regressor alone on clips rendered by :func:`tracker.synth.synth` (known coefficients and
    camera), through MediaPipe like a real video; measures of
    :func:`tracker.bench_synth.compare_to_truth` (rotation degrees, expression MAE, …)."""
    from tracker.bench_synth import compare_to_truth, read_truth
    from tracker.regressor import make_regressor
    from tracker.sources import open_source
    from tracker.synth import synth
    from tracker.types import FaceResult, FrameResult

    reg = make_regressor(weights)
    out: dict[str, object] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        made = synth(workdir / f"synth{seed}.mp4", model, seconds=seconds, size=(size, size), seed=seed)
        truth, cam = read_truth(made.video, made.csv)
        results = []
        with open_source(str(made.video)) as src, LandmarkDetector() as det:
            for frame in src:
                faces = det.detect(frame.image, frame.time_s)
                if not faces:
                    results.append(FrameResult(frame.index, frame.time_s, ()))
                    continue
                p = reg.predict(frame.image, faces[0], cam)
                results.append(FrameResult(frame.index, frame.time_s,
                                           (FaceResult(0, "tracked", 1.0, p, None),)))
        m = compare_to_truth(results, truth, model, cam)
        m.pop("expression_mae_per_weight", None)
        out[made.video.name] = m
    return out
