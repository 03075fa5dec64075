"""``face3d bench`` (``make bench``): speed, accuracy, stability and expression validity, measured
in one run and written to ``DIR/report.md``, ``DIR/report.json`` and PNG plots.

For every video (default: every ``*.mp4`` under ``$FACE3D_MEDIA/videos``) and each of
``repeats`` rounds — rounds interleave the clips, and each clip's floor and track passes run back
to back, so that a busy shared machine slows both alike:

1. the **floor**: PyAV decoding + MediaPipe on every frame (:func:`tracker.bench_timing.floor_pass`);
2. **face3d track**: :func:`tracker.track.track_video` writing the default CSV, end to end; its fps
   over the floor's is the ratio reported (median of the per-round ratios);
3. decoding alone, and the tracker step replayed on the floor's landmarks, with the stages inside
   it timed separately (fit, gaze, smoothing, CSV rows); rendering by
   :func:`tracker.bench_render.bench_render` when the renderer is installed.

Quality, from the first round (MediaPipe is deterministic, so the floor's landmarks are the ones
the tracker saw): agreement with MediaPipe's 68-equivalents, the CSV rebuild check, jitter and lag
for ``--smooth none|live|offline``, jawOpen/eyeBlink against the lip and eyelid gaps; then the
68-point NME against ``.pts`` annotations found next to images and synthetic ground truth from
``face3d synth``. Definitions: DESIGN.md "Quality, measured" and :mod:`tracker.bench_quality`.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import bench_quality as bq
from .bench_report import checks
from .bench_timing import (
    cached_tracker,
    decode_pass,
    floor_pass,
    replay,
    stage_times,
    track_pass,
)
from .errors import InputError
from .facemodel import FaceModel
from .pipeline import TrackConfig, make_camera
from .quality import lip_gap
from .track import TrackOutputs, smooth_results, write_outputs

log = logging.getLogger(__name__)

TALKING = ("d10", "d12", "d13", "WDA_KatieHill_000")
"""Clips with speech, where jawOpen must follow the lip gap (issue 2: r ≥ 0.85)."""
HARD = ("short_hamilton_clip",)
"""Non-frontal hard cases: measured and shown, left out of the frontal-clip checks."""
QUICK_CLIPS = ("d10", "WDA_KatieHill_000")
STAGES = ("decode", "mediapipe", "tracker_step", "fit", "gaze", "smooth_live", "smooth_offline",
          "csv_row", "csv_row_landmarks")


@dataclass(frozen=True)
class BenchConfig:
    """What ``face3d bench`` runs. ``max_frames`` caps every clip; ``render_repeats = 0`` and
    ``synth_seeds = ()`` skip those parts; ``image_dirs`` are searched for ``.pts`` files."""

    out: Path
    videos: tuple[Path, ...]
    repeats: int = 3
    max_frames: int | None = None
    image_dirs: tuple[Path, ...] = ()
    synth_seeds: tuple[int, ...] = (0, 1, 2)
    synth_seconds: float = 4.0
    synth_size: int = 512
    synth_fps: float = 30.0
    render_repeats: int = 30
    serve: bool = False
    quick: bool = False


def _natural(p: Path) -> list[object]:
    """Sort key: ``d3 < d10``, case-insensitive."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.stem)]


def default_videos(quick: bool = False) -> tuple[Path, ...]:
    """Every ``*.mp4`` under ``$FACE3D_MEDIA/videos`` (sorted by name); two talking clips for
    ``quick``. Raises :class:`InputError` when there is none."""
    media = os.environ.get("FACE3D_MEDIA")
    vids = sorted(Path(media, "videos").rglob("*.mp4"), key=_natural) if media else []
    if not vids:
        raise InputError("no videos to benchmark: set FACE3D_MEDIA to the shared media folder "
                         "or pass --videos")
    if quick:
        picked = [v for v in vids if v.stem in QUICK_CLIPS]
        vids = picked or vids[:2]
    return tuple(vids)


def _stats(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return {"median": float("nan"), "mean": float("nan"), "p90": float("nan"), "n": 0}
    return {"median": float(np.median(x)), "mean": float(x.mean()),
            "p90": float(np.percentile(x, 90)), "n": int(x.size)}


def _med(values: list[float]) -> float:
    v = np.array(values, np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def _params_diff(a: list, b: list) -> float:
    """Largest coefficient difference between two result lists on the same frames."""
    worst = 0.0
    for ra, rb in zip(a, b):
        for fa, fb in zip(ra.faces, rb.faces):
            if fa.params is None or fb.params is None:
                continue
            for x, y in ((fa.params.rotation, fb.params.rotation),
                         (fa.params.translation, fb.params.translation),
                         (fa.params.expression, fb.params.expression)):
                worst = max(worst, float(np.max(np.abs(np.asarray(x, np.float64) - y))))
    return worst


def _quality(model: FaceModel, tcfg: TrackConfig, floor: Any, track_results: list, summary: Any,
             tmp: Path, name: str) -> tuple[dict[str, Any], list, dict[str, Any]]:
    """Quality measures of one clip (module doc). Returns the measures, the raw (``none``)
    replayed results for the stage timings, and small arrays for the plots."""
    from .correspondence import load_mp68

    info = floor.info
    cam = make_camera(info, tcfg)
    if len(track_results) != floor.frames or any(
            r.index != i for r, i in zip(track_results, floor.indices)):
        raise RuntimeError(f"{name}: face3d track and the floor saw different frames "
                           f"({len(track_results)} vs {floor.frames})")
    mp = [f[0].points if f else None for f in floor.faces]
    raw, step_ms = replay(model, cam, tcfg, floor, "none", info.sar)
    live, _ = replay(model, cam, tcfg, floor, "live", info.sar)
    offline = smooth_results(raw, model)
    lm_csv = tmp / f"{name}.landmarks.csv"
    write_outputs(TrackOutputs(lm_csv, landmarks=True), track_results, model, cam, info, tcfg, summary)
    mp68 = load_mp68()
    series = {"none": bq.face_series(raw, model, cam), "live": bq.face_series(live, model, cam),
              "offline": bq.face_series(track_results, model, cam)}
    fid = series["none"].face_id
    mp68_pts = np.array([mp68.points(p[:, :2]) if p is not None else np.full((68, 2), np.nan)
                         for p in mp])
    # frames a track's identity settles in are refits written unsmoothed in every mode: skip them
    settle = max(tcfg.id_schedule, default=0)
    run = bq.longest_run(fid)
    run = slice(min(run.start + settle, run.stop), run.stop)
    yaw_raw = series["none"].yaw[run]
    jit = {"mediapipe68": bq.accel_p95(mp68_pts[run], fid[run])}
    for mode, s in series.items():
        jit[mode] = bq.accel_p95(s.lmk68[run], s.face_id[run])
    lag = {m: bq.lag_frames(yaw_raw, series[m].yaw[run]) for m in ("live", "offline")}
    agree = {m: _stats(bq.agreement_pct(series[m].lmk68, mp, mp68.points)) for m in ("offline", "none")}
    q = {
        "face_pct": 100.0 * float(np.mean(series["offline"].tracked)) if len(fid) else 0.0,
        "face_ids": len({int(i) for i in series["offline"].face_id if i >= 0}),
        "agreement_pct": agree,
        "rebuild": bq.rebuild_check(lm_csv, model),
        "jitter_px": jit,
        "jitter_rel": {m: jit[m] / jit["none"] if jit["none"] > 0 else float("nan")
                       for m in ("live", "offline", "mediapipe68")},
        "lag_frames": lag,
        "yaw_std_deg": float(np.nanstd(yaw_raw)) if len(yaw_raw) else float("nan"),
        "expression": bq.expression_validity(series["offline"], mp, model.exp_names),
        "replay_vs_track_max_diff": _params_diff(offline, track_results),
    }
    jaw = list(model.exp_names).index("jawOpen")
    plots = {"yaw": {m: series[m].yaw[run].tolist() for m in series},
             "jaw": [[float(series["offline"].expression[i, jaw]), lip_gap(p)]
                     for i, p in enumerate(mp) if p is not None and series["offline"].tracked[i]]}
    lm_csv.unlink(missing_ok=True)
    Path(str(lm_csv) + ".json").unlink(missing_ok=True)
    return q, raw, plots | {"step_ms": step_ms}


def run_bench(cfg: BenchConfig, model: FaceModel, tcfg: TrackConfig,
              progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run everything of the module doc; returns the report as a JSON-able dict."""
    t_start = time.time()
    names = [v.stem for v in cfg.videos]
    clips: dict[str, dict[str, Any]] = {n: {"path": str(v)} for n, v in zip(names, cfg.videos)}
    runs: dict[str, dict[str, list]] = {n: {"floor": [], "track": [], "loop": [], "ratio": [],
                                            "floor_seq": [], "ratio_seq": []}
                                        for n in names}
    stage_runs: list[dict[str, list[np.ndarray]]] = []
    floors: dict[str, Any] = {}
    raws: dict[str, list] = {}
    plots: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="face3d-bench-") as tmpdir:
        tmp = Path(tmpdir)
        # warm-up: imports, MediaPipe's graph, numba's cached kernels, first allocations
        floor_pass(str(cfg.videos[0]), tcfg, 15)
        track_pass(str(cfg.videos[0]), model, tcfg, tmp / "warmup.csv", 15)
        for r in range(cfg.repeats):
            pooled: dict[str, list[np.ndarray]] = {s: [] for s in STAGES}
            for name, video in zip(names, cfg.videos):
                path = str(video)
                dec = decode_pass(path, cfg.max_frames)
                floor = floor_pass(path, tcfg, cfg.max_frames, keep=r == 0)
                sec, summary, results = track_pass(path, model, tcfg, tmp / f"{name}.csv", cfg.max_frames)
                seq = floor_pass(path, tcfg, cfg.max_frames, sequential=True)
                fl_fps, tr_fps = floor.fps, summary.frames / sec
                run = runs[name]
                run["floor"].append(fl_fps)
                run["track"].append(tr_fps)
                run["loop"].append(summary.fps)
                run["ratio"].append(tr_fps / fl_fps)
                run["floor_seq"].append(seq.fps)
                run["ratio_seq"].append(tr_fps / seq.fps)
                cam = make_camera(floor.info, tcfg)
                if r == 0:
                    floors[name] = floor
                    info = floor.info
                    clips[name].update(width=info.width, height=info.height, sar=info.sar,
                                       fps_nominal=info.fps, frames=floor.frames)
                    q, raws[name], plots[name] = _quality(model, tcfg, floor, results, summary,
                                                          tmp, name)
                    clips[name].update(q)
                    step_ms = plots[name].pop("step_ms")
                else:
                    _, step_ms = replay(model, cam, tcfg, floors[name], "none", floor.info.sar)
                st = stage_times(model, cam, tcfg, cached_tracker(model, cam, tcfg, floor.info.sar),
                                 raws[name])
                st |= {"decode": dec, "mediapipe": floor.detect_ms, "tracker_step": step_ms}
                for s in STAGES:
                    pooled[s].append(st[s])
                clips[name].setdefault("latency_runs", []).append(
                    {s: float(np.median(st[s])) if len(st[s]) else float("nan") for s in STAGES})
                progress(f"[{r + 1}/{cfg.repeats}] {name}: {floor.frames} frames, floor "
                         f"{fl_fps:.0f} fps, track {tr_fps:.0f} fps (x{tr_fps / fl_fps:.2f})")
            stage_runs.append({s: np.concatenate(v) if v else np.zeros(0) for s, v in pooled.items()})
        for name in names:
            run = runs[name]
            c = clips[name]
            c.update(floor_fps=_med(run["floor"]), track_fps=_med(run["track"]),
                     track_loop_fps=_med(run["loop"]), ratio=_med(run["ratio"]),
                     floor_seq_fps=_med(run["floor_seq"]), ratio_seq=_med(run["ratio_seq"]),
                     runs={k: [float(x) for x in v] for k, v in run.items()})
            lat = c.pop("latency_runs")
            c["latency_ms"] = {s: _med([x[s] for x in lat]) for s in STAGES}
        latency = {s: {k: _med([_stats(sr[s])[k] for sr in stage_runs]) for k in ("median", "mean", "p90")}
                   for s in STAGES}
        report: dict[str, Any] = {"clips": clips, "latency_ms": latency, "plots": plots,
                                  "talking": [n for n in names if n in TALKING]}
        report["render"] = _render(model, cfg)
        report["nme"] = _nme(model, tcfg, cfg)
        if cfg.synth_seeds:
            from .bench_synth import evaluate_synth
            progress("synthetic ground truth")
            report["synth"] = evaluate_synth(model, tcfg, tmp / "synth", cfg.synth_seeds,
                                             cfg.synth_seconds, cfg.synth_size, cfg.synth_fps)
        else:
            report["synth"] = {"skipped": "disabled (--no-synth)"}
        if cfg.serve:
            report["serve"] = _serve(model, cfg)
    report["meta"] = _meta(cfg, tcfg, t_start)
    report["checks"] = checks(report, TALKING, HARD)
    return report


def _render(model: FaceModel, cfg: BenchConfig) -> dict[str, Any]:
    if cfg.render_repeats <= 0:
        return {"skipped": "disabled (--no-render)"}
    try:
        from dataclasses import asdict

        from .bench_render import bench_render
        return asdict(bench_render(model, 512, cfg.render_repeats, "face"))
    except ImportError as e:
        return {"skipped": f"renderer not available ({e})"}


def _nme(model: FaceModel, tcfg: TrackConfig, cfg: BenchConfig) -> dict[str, Any]:
    from .bench_nme import evaluate_nme
    from .ibug import find_annotated_images

    pairs = find_annotated_images(*cfg.image_dirs)
    if not pairs:
        where = ", ".join(str(d) for d in cfg.image_dirs) or "(no folder given)"
        return {"skipped": f"no iBUG .pts annotations found next to images under {where}"}
    return evaluate_nme(model, tcfg, pairs)


def _serve(model: FaceModel, cfg: BenchConfig) -> dict[str, Any]:
    from .bench_serve import format_summary
    from .bench_serve import run_bench as serve_bench

    video = next((v for v in cfg.videos if v.stem == "d10"), cfg.videos[0])
    res = serve_bench(str(video), clients=5, seconds=3.0, repeats=1, model=model)
    return {"summary": res["summary"], "text": format_summary(res)}


def _meta(cfg: BenchConfig, tcfg: TrackConfig, t_start: float) -> dict[str, Any]:
    from . import __version__

    return {"tool": f"face3d {__version__}", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": round(time.time() - t_start, 1), "cpus": os.cpu_count(),
            "loadavg_end": list(os.getloadavg()), "python": platform.python_version(),
            "machine": platform.machine(), "repeats": cfg.repeats, "quick": cfg.quick,
            "max_frames": cfg.max_frames, "smooth_default": tcfg.smooth,
            "max_faces": tcfg.max_faces}


# ------------------------------------------------------------------------------------- CLI

def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="measure speed, accuracy and stability; write a report",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/bench", help="report folder (default out/bench)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: two talking clips, 90 frames, one round, one short synthetic clip")
    p.add_argument("--videos", nargs="+", help="videos to measure (default: $FACE3D_MEDIA/videos/**/*.mp4)")
    p.add_argument("--repeats", type=int, default=None, help="rounds over the clips (default 3, quick 1)")
    p.add_argument("--max-frames", type=int, default=None, help="frames per clip (default all)")
    p.add_argument("--images", nargs="*", default=None,
                   help="folders searched for .pts annotations next to images "
                        "(default $FACE3D_MEDIA/images)")
    p.add_argument("--no-synth", action="store_true", help="skip the synthetic ground truth")
    p.add_argument("--no-render", action="store_true", help="skip the renderer timing")
    p.add_argument("--serve", action="store_true", help="also run the face3d serve benchmark (short)")
    p.add_argument("--model", help="face model npz (default: $FACE3D_MODEL, then the user cache)")
    p.add_argument("--config", help="tracking config TOML (default: configs/track.toml)")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    quick = bool(args.quick)
    videos = tuple(Path(v) for v in args.videos) if args.videos else default_videos(quick)
    for v in videos:
        if not v.is_file():
            raise InputError(f"{v}: no such file")
    repeats = args.repeats if args.repeats is not None else (1 if quick else 3)
    if repeats < 1:
        raise InputError("--repeats must be at least 1")
    if args.images is not None:
        images = tuple(Path(d) for d in args.images)
    else:
        media = os.environ.get("FACE3D_MEDIA")
        images = (Path(media, "images"),) if media else ()
    base = BenchConfig(Path(args.out), videos, repeats,
                       args.max_frames if args.max_frames is not None else (90 if quick else None),
                       images, quick=quick, serve=bool(args.serve))
    if quick:
        base = replace(base, synth_seeds=(0,), synth_seconds=1.5, synth_size=192, render_repeats=5)
    if args.no_synth:
        base = replace(base, synth_seeds=())
    if args.no_render:
        base = replace(base, render_repeats=0)
    return base


def run(args: argparse.Namespace) -> int:
    from .bench_report import write_report
    from .facemodel import load_face_model
    from .trackconfig import load_track_config

    cfg = config_from_args(args)
    model = load_face_model(args.model)
    tcfg = load_track_config(args.config)

    def progress(msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    progress(f"{len(cfg.videos)} clip(s), {cfg.repeats} round(s) -> {cfg.out}")
    report = run_bench(cfg, model, tcfg, progress)
    paths = write_report(cfg.out, report)
    for c in report["checks"]:
        mark = "n/a" if c["ok"] is None else ("PASS" if c["ok"] else "FAIL")
        print(f"{mark:4}  {c['name']}: {c['detail']}")
    print(f"report: {paths['md']} ({len(paths['plots'])} plots, {report['meta']['seconds']:.0f} s)")
    return 0
