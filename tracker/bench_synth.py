"""Synthetic ground truth for ``face3d bench``: clips rendered from the model with known
coefficients (``face3d synth``, :func:`tracker.synth.synth`), tracked with the known camera and
compared with the truth.

``synth(out_mp4, model, seconds=…, size=(w, h), fps=…, seed=…)`` writes ``OUT.mp4`` and the truth
``OUT.csv`` in ``face3d track``'s layout with a sidecar JSON holding the camera (``OUT.csv.json``;
``OUT.json`` is accepted too). Measures per clip, on the frames where both have the face:

* ``vertex_mm``: mean distance of the narrow-face vertices (``narrow_face_vertex_count``: forehead
  to chin, no ears or neck) in camera space, millimetres — depth errors included;
* ``shape_mm``: the same in model space (identity + expression, pose removed);
* ``rotation_deg`` (geodesic angle), ``translation_mm``;
* ``expression_mae`` over the 53 weights, and ``expression_mae_active`` over the weights the
  truth moves (standard deviation > 0.05 over the clip) — what MediaPipe's landmarks can show;
* ``lmk68_pct``: projected ICT 68 points against the truth's, % of the true inter-ocular distance
  (``lmk68_nojaw_pct``: points 17-67, without the jaw line).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .bench_quality import TrackTable, read_track_csv
from .errors import InputError
from .facemodel import FaceModel
from .pipeline import TrackConfig
from .rotation import quat_angle_deg, quat_to_matrix
from .types import Camera, FrameResult

log = logging.getLogger(__name__)


def synth_available() -> str | None:
    """``None`` when :func:`tracker.synth.synth` can be imported, else the reason it cannot."""
    try:
        from .synth import synth  # noqa: F401
    except ImportError as e:
        return f"tracker.synth is not available ({e})"
    return None


def _sidecar(mp4: Path, csv_path: Path) -> dict[str, Any]:
    for p in (Path(str(csv_path) + ".json"), mp4.with_suffix(".json"), Path(str(mp4) + ".json")):
        if p.is_file():
            data = json.loads(p.read_text())
            if "camera" in data:
                return data
    raise InputError(f"{mp4}: no sidecar JSON with a camera next to the synthetic clip")


def read_truth(mp4: str | Path, csv_path: str | Path | None = None) -> tuple[TrackTable, Camera]:
    """The truth table of a synthetic clip (``OUT.csv`` beside ``OUT.mp4`` unless ``csv_path``)
    and its true camera from the sidecar."""
    mp4 = Path(mp4)
    csv_path = Path(csv_path) if csv_path is not None else mp4.with_suffix(".csv")
    side = _sidecar(mp4, csv_path)
    c = side["camera"]
    cam = Camera(float(c["fx"]), float(c["fy"]), float(c["cx"]), float(c["cy"]),
                 int(c["width"]), int(c["height"]))
    return replace(read_track_csv(csv_path), camera=c), cam


def truth_params(table: TrackTable, model: FaceModel) -> dict[str, np.ndarray]:
    """Per-row arrays of a truth (or tracked) table: ``q (N, 4)``, ``t (N, 3)``, ``e (N, E)``,
    ``id (N, K)``, ``frame (N,)``."""
    return {"q": table.cols(["qw", "qx", "qy", "qz"]), "t": table.cols(["tx_m", "ty_m", "tz_m"]),
            "e": table.cols(list(model.exp_names)),
            "id": table.cols([f"id_{i:03d}" for i in range(model.n_identity)]),
            "frame": table.col("frame").astype(np.int64)}


def _verts(model: FaceModel, idx: np.ndarray, ident: np.ndarray, expr: np.ndarray) -> np.ndarray:
    v = np.asarray(model.neutral[idx], np.float64)
    return (v + np.tensordot(ident, np.asarray(model.id_basis[:, idx], np.float64), axes=1)
            + np.tensordot(expr, np.asarray(model.exp_basis[:, idx], np.float64), axes=1))


def compare_to_truth(results: list[FrameResult], truth: TrackTable, model: FaceModel,
                     cam: Camera) -> dict[str, Any]:
    """Measures of the module doc for tracked ``results`` against a truth table."""
    from .camera import project, transform

    gt = truth_params(truth, model)
    row_of = {int(f): k for k, f in enumerate(gt["frame"]) if np.isfinite(gt["q"][k]).all()}
    idx = np.arange(model.narrow_face_vertex_count)
    vm, sm, rot, tr, lm, lm_nojaw, ex_t, ex_g = [], [], [], [], [], [], [], []
    for r in results:
        k = row_of.get(r.index)
        if k is None or not r.faces or r.faces[0].params is None:
            continue
        p = r.faces[0].params
        q0, t0, e0, a0 = gt["q"][k], gt["t"][k], gt["e"][k], gt["id"][k]
        v_true = _verts(model, idx, a0, e0)
        v_est = _verts(model, idx, np.asarray(p.identity, np.float64), np.asarray(p.expression, np.float64))
        x_true = transform(quat_to_matrix(q0), t0, v_true)
        x_est = transform(quat_to_matrix(np.asarray(p.rotation)), p.translation, v_est)
        vm.append(np.mean(np.linalg.norm(x_est - x_true, axis=1)) * 1e3)
        sm.append(np.mean(np.linalg.norm(v_est - v_true, axis=1)) * 1e3)
        rot.append(float(quat_angle_deg(np.asarray(p.rotation), q0)))
        tr.append(np.linalg.norm(np.asarray(p.translation) - t0) * 1e3)
        l_true = project(cam, transform(quat_to_matrix(q0), t0, _verts(model, model.lmk68_idx, a0, e0)))
        r_est = quat_to_matrix(p.rotation)
        l_est = project(cam, transform(r_est, p.translation, _verts(
            model, model.lmk68_idx, np.asarray(p.identity, np.float64),
            np.asarray(p.expression, np.float64))))
        iod = np.linalg.norm(l_true[36] - l_true[45])
        d = np.linalg.norm(l_est - l_true, axis=1) / iod * 100.0
        lm.append(float(np.mean(d)))
        lm_nojaw.append(float(np.mean(d[17:])))
        ex_t.append(e0)
        ex_g.append(np.asarray(p.expression, np.float64))
    n_truth = len(row_of)
    if not vm:
        return {"frames": n_truth, "tracked": 0}
    et, eg = np.array(ex_t), np.array(ex_g)
    err = np.abs(eg - et)
    active = et.std(axis=0) > 0.05
    per_weight = {n: float(v) for n, v in zip(model.exp_names, err.mean(axis=0))}
    return {
        "frames": n_truth, "tracked": len(vm),
        "vertex_mm": float(np.mean(vm)), "vertex_mm_median": float(np.median(vm)),
        "shape_mm": float(np.mean(sm)),
        "rotation_deg": float(np.mean(rot)), "rotation_deg_median": float(np.median(rot)),
        "translation_mm": float(np.mean(tr)),
        "expression_mae": float(err.mean()),
        "expression_mae_active": float(err[:, active].mean()) if active.any() else float("nan"),
        "active_weights": [n for n, a in zip(model.exp_names, active) if a],
        "lmk68_pct": float(np.mean(lm)),
        "lmk68_nojaw_pct": float(np.mean(lm_nojaw)),
        "expression_mae_per_weight": per_weight,
    }


def evaluate_synth(model: FaceModel, cfg: TrackConfig, workdir: Path, seeds: tuple[int, ...],
                   seconds: float, size: int, fps: float) -> dict[str, Any]:
    """Render ``len(seeds)`` clips of ``size`` x ``size`` pixels with
    :func:`tracker.synth.synth`, track each with the known camera (focal length from its
    sidecar) and compare. Returns ``{"clips": {name: measures}}``
    or ``{"skipped": reason}`` when ``tracker.synth`` is missing or fails."""
    reason = synth_available()
    if reason is not None:
        return {"skipped": reason}
    from .synth import synth
    from .track import track_video

    out: dict[str, Any] = {"clips": {}, "settings": {"seconds": seconds, "size": size, "fps": fps,
                                                     "seeds": list(seeds)}}
    workdir.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        mp4 = workdir / f"synth_{seed}.mp4"
        try:
            made = synth(mp4, model, seconds=seconds, size=(size, size), fps=fps, seed=seed)
            truth, cam = read_truth(mp4, getattr(made, "csv", None))
            tcfg = replace(cfg, focal_px=cam.fy)
            _, results = track_video(str(mp4), model, tcfg, None, progress=False)
        except Exception as e:  # noqa: BLE001 - another module's output; reported, not fatal
            log.warning("synthetic clip %s failed: %s", mp4.name, e)
            out["clips"][mp4.stem] = {"error": f"{type(e).__name__}: {e}"}
            continue
        m = compare_to_truth(results, truth, model, cam)
        if abs(cam.cx - cam.width / 2) > 0.5 or abs(cam.cy - cam.height / 2) > 0.5:
            m["note"] = "principal point off centre: tracked with a centred one"
        out["clips"][mp4.stem] = m
    return out
