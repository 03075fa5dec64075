"""``face3d bench`` output: ``report.json`` (every number), ``report.md`` (tables) and PNG plots
(matplotlib, Agg backend, selected per figure — no global backend switch)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PLOTS = ("latency.png", "fps_vs_floor.png", "agreement.png", "jitter_lag.png", "yaw_traces.png",
         "jaw_vs_lip_gap.png", "synth.png", "nme.png")


def _f(x: Any, fmt: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, fmt)


def _finite(o: Any) -> Any:
    """``o`` with NaN/inf floats replaced by ``None`` (strict JSON), containers recursed."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def _figure(w: float = 8.0, h: float = 4.5):
    from matplotlib.figure import Figure
    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path)
    return path


def plot_all(out: Path, rep: dict[str, Any]) -> list[Path]:
    """Write the plots that have data; returns their paths."""
    clips = rep["clips"]
    names = list(clips)
    short = [n.replace("WDA_KatieHill_000", "WDA").replace("short_hamilton_clip", "hamilton") for n in names]
    paths: list[Path] = []
    x = np.arange(len(names))

    fig = _figure()
    ax = fig.add_subplot()
    lat = rep["latency_ms"]
    stages = [s for s in lat if math.isfinite(lat[s]["median"])]
    ax.barh(stages, [lat[s]["median"] for s in stages], color="tab:blue", label="median")
    ax.scatter([lat[s]["p90"] for s in stages], stages, color="k", marker="|", s=200, label="p90")
    ax.invert_yaxis()
    ax.set_xlabel("ms per frame (per call)")
    ax.set_title("Per-stage latency, pooled over clips, median of rounds")
    ax.legend()
    paths.append(_save(fig, out / "latency.png"))

    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(x - 0.2, [clips[n]["floor_fps"] for n in names], 0.4, label="floor (decode + MediaPipe)")
    ax.bar(x + 0.2, [clips[n]["track_fps"] for n in names], 0.4, label="face3d track (whole call)")
    for i, n in enumerate(names):
        ax.annotate(f"x{clips[n]['ratio']:.2f}", (i, max(clips[n]["floor_fps"], clips[n]["track_fps"])),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, short, rotation=30, ha="right")
    ax.set_ylabel("frames per second")
    ax.set_ylim(0, 1.3 * max(max(clips[n]["floor_fps"], clips[n]["track_fps"]) for n in names))
    ax.set_title("End-to-end fps against the floor measured in the same run (median of rounds)")
    ax.legend(ncol=2, loc="upper left")
    paths.append(_save(fig, out / "fps_vs_floor.png"))

    fig = _figure()
    ax = fig.add_subplot()
    for k, (mode, col) in enumerate((("offline", "tab:blue"), ("none", "tab:orange"))):
        ag = [clips[n]["agreement_pct"][mode] for n in names]
        ax.bar(x + (k - 0.5) * 0.4, [a["mean"] for a in ag], 0.4, color=col, label=f"mean, --smooth {mode}")
        ax.scatter(x + (k - 0.5) * 0.4, [a["p90"] for a in ag], color="k", marker="_", s=120)
    ax.axhline(5.0, color="r", ls="--", lw=1, label="5 % target")
    ax.set_xticks(x, short, rotation=30, ha="right")
    ax.set_ylabel("% of inter-ocular distance")
    ax.set_title("ICT 68 (no jaw) vs MediaPipe 68-equivalents (bars mean, ticks p90)")
    ax.legend()
    paths.append(_save(fig, out / "agreement.png"))

    fig = _figure(10, 4.5)
    a1, a2 = fig.subplots(1, 2)
    modes = ("none", "live", "offline", "mediapipe68")
    for k, m in enumerate(modes):
        a1.bar(x + (k - 1.5) * 0.2, [clips[n]["jitter_px"][m] for n in names], 0.2, label=m)
    a1.set_xticks(x, short, rotation=30, ha="right")
    a1.set_ylabel("p95 acceleration, px/frame²")
    a1.set_title("Jitter")
    a1.legend(fontsize=8)
    for k, m in enumerate(("live", "offline")):
        a2.bar(x + (k - 0.5) * 0.4, [clips[n]["lag_frames"][m] for n in names], 0.4, label=m)
    a2.axhline(0, color="k", lw=0.5)
    a2.set_xticks(x, short, rotation=30, ha="right")
    a2.set_ylabel("frames (filtered behind raw)")
    a2.set_title("Lag of head yaw (cross-correlation peak)")
    a2.legend(fontsize=8)
    paths.append(_save(fig, out / "jitter_lag.png"))

    plots = rep.get("plots", {})
    pick = max(names, key=lambda n: clips[n].get("yaw_std_deg") or 0.0)
    if pick in plots:
        fig = _figure()
        ax = fig.add_subplot()
        for m, y in plots[pick]["yaw"].items():
            ax.plot(y, lw=1.0 if m == "none" else 1.5, label=f"--smooth {m}")
        ax.set_xlabel("frame (longest tracked run)")
        ax.set_ylabel("head yaw, degrees")
        ax.set_title(f"{pick}: head yaw raw and filtered")
        ax.legend()
        paths.append(_save(fig, out / "yaw_traces.png"))

    jaw = [n for n in names if plots.get(n, {}).get("jaw")]
    talking = [n for n in jaw if n in rep.get("talking", jaw)] or jaw
    if talking:
        cols = min(len(talking), 4)
        rows = math.ceil(len(talking) / cols)
        fig = _figure(3.2 * cols, 3.0 * rows)
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        for ax, n in zip(axes, talking):
            d = np.array(plots[n]["jaw"])
            ax.scatter(d[:, 1], d[:, 0], s=3, alpha=0.5)
            r = clips[n]["expression"]["jawOpen_vs_lip_gap"]
            ax.set_title(f"{n}: r = {_f(r)}", fontsize=9)
            ax.set_xlabel("lip gap / IOD")
            ax.set_ylabel("jawOpen")
        for ax in axes[len(talking):]:
            ax.set_visible(False)
        paths.append(_save(fig, out / "jaw_vs_lip_gap.png"))

    syn = {k: v for k, v in rep.get("synth", {}).get("clips", {}).items() if "vertex_mm" in v}
    if syn:
        fig = _figure(10, 3.5)
        keys = (("vertex_mm", "vertex error, mm\n(camera space)"),
                ("shape_mm", "shape error, mm\n(model space)"),
                ("rotation_deg", "rotation error,\ndegrees"), ("expression_mae", "expression\nMAE"),
                ("lmk68_pct", "68 points,\n% IOD"))
        axes = fig.subplots(1, len(keys))
        for ax, (k, label) in zip(axes, keys):
            ax.bar(range(len(syn)), [v[k] for v in syn.values()])
            ax.set_xticks(range(len(syn)), list(syn), rotation=30, ha="right", fontsize=8)
            ax.set_title(label, fontsize=9)
        paths.append(_save(fig, out / "synth.png"))

    images = {k: v for k, v in rep.get("nme", {}).get("images", {}).items() if "ict" in v}
    if images:
        fig = _figure()
        ax = fig.add_subplot()
        xi = np.arange(len(images))
        for k, m in enumerate(("ict", "ict_no_jaw", "mediapipe", "mediapipe_no_jaw")):
            ax.bar(xi + (k - 1.5) * 0.2, [v[m] for v in images.values()], 0.2, label=m)
        ax.set_xticks(xi, [Path(p).name for p in images], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("NME, % of inter-ocular distance")
        ax.set_title("68-point NME against iBUG .pts annotations")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "nme.png"))
    return paths


def checks(report: dict[str, Any], talking: Sequence[str], hard: Sequence[str]) -> list[dict[str, Any]]:
    """Issue 2's measured claims as ``{"name", "ok", "detail"}`` rows (``ok`` None: not measured).

    ``talking``: clips where jawOpen must follow the lip gap; ``hard``: clips left out of the
    frontal-clip checks."""
    out: list[dict[str, Any]] = []
    clips = report["clips"]
    frontal = {n: c for n, c in clips.items() if n not in hard}
    if frontal:
        worst = min(frontal, key=lambda n: frontal[n]["face_pct"])
        out.append({"name": "face on >= 95 % of frames (frontal clips)",
                    "ok": frontal[worst]["face_pct"] >= 95.0,
                    "detail": f"lowest {worst} {frontal[worst]['face_pct']:.1f} %"})
        worst = max(frontal, key=lambda n: frontal[n]["agreement_pct"]["offline"]["mean"])
        out.append({"name": "ICT 68 (no jaw) within mean 5 % IOD of MediaPipe's (frontal clips)",
                    "ok": frontal[worst]["agreement_pct"]["offline"]["mean"] <= 5.0,
                    "detail": f"worst {worst} {frontal[worst]['agreement_pct']['offline']['mean']:.2f} %"})
    worst = max(clips, key=lambda n: clips[n]["rebuild"]["max_pct"])
    out.append({"name": "CSV coefficients rebuild lmk68 within 0.5 %",
                "ok": all(c["rebuild"]["ok"] for c in clips.values()),
                "detail": f"worst {worst} max {clips[worst]['rebuild']['max_pct']:.4f} %"})
    talk = {n: c["expression"]["jawOpen_vs_lip_gap"] for n, c in clips.items() if n in talking}
    if talk:
        out.append({"name": "jawOpen vs lip gap r >= 0.85 (talking clips)",
                    "ok": min(talk.values()) >= 0.85,
                    "detail": ", ".join(f"{n} {r:.3f}" for n, r in talk.items())})
    sized = {n: c for n, c in clips.items() if 480 <= c["width"] <= 512 and 480 <= c["height"] <= 512}
    if sized:
        worst = min(sized, key=lambda n: sized[n]["ratio"])
        out.append({"name": "face3d track >= 0.75 x floor fps (480-512 px clips)",
                    "ok": sized[worst]["ratio"] >= 0.75,
                    "detail": f"lowest {worst} x{sized[worst]['ratio']:.2f}"})
    syn = report.get("synth", {}).get("clips", {})
    vals = {n: c["lmk68_pct"] for n, c in syn.items() if "lmk68_pct" in c}
    nojaw = {n: c.get("lmk68_nojaw_pct", float("nan")) for n, c in syn.items() if "lmk68_pct" in c}
    out.append({"name": "synthetic clips: projected 68 points within 2.5 % of the truth",
                "ok": (max(vals.values()) <= 2.5) if vals else None,
                "detail": ", ".join(f"{n} {v:.2f} % (no jaw {nojaw[n]:.2f} %)" for n, v in vals.items())
                or report.get("synth", {}).get("skipped", "no clip measured")})
    return out


def markdown(rep: dict[str, Any], plots: list[Path]) -> str:
    """The report's text (tables of the numbers in ``report.json``)."""
    m, clips = rep["meta"], rep["clips"]
    L = [f"# face3d bench — {m['date']}", "",
         (f"{m['tool']}, Python {m['python']}, {m['cpus']} CPUs, load average at the end "
          f"{', '.join(f'{x:.1f}' for x in m['loadavg_end'])}; {m['repeats']} round(s)"
          f"{' (quick)' if m['quick'] else ''}, {m['seconds']:.0f} s. Medians over rounds; the "
          "machine is shared, so absolute times move with its load — the ratio to the floor, "
          "measured back to back in the same round, is the stable figure."), "", "## Checks (issue 2)", "",
         "| check | result | detail |", "|---|---|---|"]
    for c in rep["checks"]:
        L.append(f"| {c['name']} | {'n/a' if c['ok'] is None else ('PASS' if c['ok'] else 'FAIL')} | {c['detail']} |")
    L += ["", "## Speed", "", "Per-stage latency (ms per call; pooled over every frame of every clip):", "",
          "| stage | median | mean | p90 |", "|---|---|---|---|"]
    for s, v in rep["latency_ms"].items():
        L.append(f"| {s} | {_f(v['median'], '.3f')} | {_f(v['mean'], '.3f')} | {_f(v['p90'], '.3f')} |")
    L += ["", ("`tracker_step` is `FaceTracker.step_landmarks` (face ids, fit, gaze, identity "
               "updates amortised) on cached landmarks; `fit` and `gaze` are its parts re-run "
               "alone; `smooth_offline` is the whole-clip smoother divided by the frames; "
               "`csv_row` encodes one default-layout row, `csv_row_landmarks` one with the "
               "projected 68 points."), ""]
    r = rep.get("render", {})
    if "skipped" in r:
        L.append(f"Rendering: skipped — {r['skipped']}.")
    else:
        L.append(f"Rendering (tracker/bench_render.py, {r['region']} region, {r['n_triangles']} triangles, "
                 f"{r['width']}x{r['height']}, {r['numba_threads']} threads): rasterize "
                 f"{r['rasterize_ms']:.2f}, interpolate {r['interpolate_ms']:.2f}, shade "
                 f"{r['shade_ms']:.2f}, antialias {r['antialias_ms']:.2f} ms (medians).")
    L += ["", ("End to end (`face3d track` = `track_video` writing the default CSV, whole call) "
               "against the floor (PyAV decode in a background thread + MediaPipe, nothing else; "
               "the ratio checked), and against the sequential floor (decode, then MediaPipe, in one "
               "thread: the plain sum of the two, as DESIGN.md's reference measured it):"),
          "",
          "| clip | size | frames | floor fps | track fps | loop fps | ratio | ratios per round "
          "| sequential floor fps | ratio to it |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for n, c in clips.items():
        L.append(f"| {n} | {c['width']}x{c['height']} | {c['frames']} | {_f(c['floor_fps'], '.1f')} | "
                 f"{_f(c['track_fps'], '.1f')} | {_f(c['track_loop_fps'], '.1f')} | {_f(c['ratio'])} | "
                 f"{', '.join(_f(x) for x in c['runs']['ratio'])} | "
                 f"{_f(c.get('floor_seq_fps', float('nan')), '.1f')} | {_f(c.get('ratio_seq', float('nan')))} |")
    L += ["", "## Accuracy and stability per clip", "",
          ("Agreement: projected ICT 68 points (jaw excluded) vs MediaPipe's 68-equivalents, % of "
           "the inter-ocular distance (mean / p90), for the default output (offline smoothing) and "
           "raw. Rebuild: the CSV's own coefficients and sidecar camera rebuild its `lmk68_*` "
           "columns (worst point, % IOD). Jitter: p95 point acceleration of the projected 68 "
           "points, px/frame² (relative to `--smooth none`), and the same for MediaPipe's "
           "68-equivalents. Lag: frames of filtered head yaw behind raw (cross-correlation peak). "
           "Jitter and lag skip the frames a track's identity settles in."), "",
          ("| clip | face % | ids | agree offline | agree raw | rebuild max | jitter none | "
           "live (rel) | offline (rel) | MediaPipe-68 | lag live | lag offline | yaw sd ° |"),
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, c in clips.items():
        a, j, jr, lg = c["agreement_pct"], c["jitter_px"], c["jitter_rel"], c["lag_frames"]
        L.append(f"| {n} | {_f(c['face_pct'], '.1f')} | {c['face_ids']} | {_f(a['offline']['mean'])} / "
                 f"{_f(a['offline']['p90'])} | {_f(a['none']['mean'])} / {_f(a['none']['p90'])} | "
                 f"{_f(c['rebuild']['max_pct'], '.4f')} | {_f(j['none'])} | {_f(j['live'])} ({_f(jr['live'])}) | "
                 f"{_f(j['offline'])} ({_f(jr['offline'])}) | {_f(j['mediapipe68'])} | {_f(lg['live'], '.1f')} | "
                 f"{_f(lg['offline'], '.1f')} | {_f(c['yaw_std_deg'], '.1f')} |")
    L += ["", "## Expression validity", "",
          ("Pearson r of `jawOpen` with the inner-lip gap, and of `eyeBlink_L/R` with the "
           "*negated* eyelid gap of the same eye (MediaPipe 13–14, 386–374, 159–145), default "
           "output."), "",
          "| clip | talking | jawOpen ~ lip gap | eyeBlink_L ~ −lid gap L | eyeBlink_R ~ −lid gap R |",
          "|---|---|---|---|---|"]
    talking = set(rep.get("talking", ()))
    for n, c in clips.items():
        e = c["expression"]
        L.append(f"| {n} | {'yes' if n in talking else ''} | {_f(e['jawOpen_vs_lip_gap'])} | "
                 f"{_f(e['eyeBlink_L_vs_eyelid_gap_L'])} | {_f(e['eyeBlink_R_vs_eyelid_gap_R'])} |")
    L += ["", "## 68-point NME against iBUG annotations", ""]
    nme = rep.get("nme", {})
    if "skipped" in nme:
        L.append(f"Skipped: {nme['skipped']}. Put `X.pts` (iBUG format) next to `X.jpg`/`X.png` and "
                 "pass the folder with `--images`.")
    else:
        s = nme["summary"]
        L.append(f"{s['scored']} of {s['annotated_images']} annotated images scored. NME (% of the "
                 "annotation's outer-eye-corner distance), mean / median:")
        L += ["", "| points | ICT projected | MediaPipe 68-equivalents |", "|---|---|---|",
              f"| 68 | {_f(s['ict_mean'])} / {_f(s['ict_median'])} | {_f(s['mediapipe_mean'])} / {_f(s['mediapipe_median'])} |",
              (f"| 51 (no jaw) | {_f(s['ict_no_jaw_mean'])} / {_f(s['ict_no_jaw_median'])} | "
               f"{_f(s['mediapipe_no_jaw_mean'])} / {_f(s['mediapipe_no_jaw_median'])} |")]
        for img, v in nme["images"].items():
            if "error" in v:
                L.append(f"- {Path(img).name}: {v['error']}")
    L += ["", "## Synthetic ground truth (face3d synth)", ""]
    syn = rep.get("synth", {})
    if "skipped" in syn:
        L.append(f"Skipped: {syn['skipped']}.")
    else:
        L += [("Tracked with the known camera. Vertex error over the narrow face (forehead to "
               "chin), camera space (depth included) and model space (pose removed); expression "
               "MAE over all 53 weights and over the weights the clip moves."), "",
              ("| clip | frames tracked | vertex mm | shape mm | rotation ° | translation mm | "
               "expr MAE | expr MAE (moved) | 68 pts % IOD | no jaw |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
        for n, v in syn.get("clips", {}).items():
            if "vertex_mm" not in v:
                L.append(f"| {n} | {v.get('error', str(v.get('tracked', 0)) + ' tracked')} | | | | | | | | |")
                continue
            L.append(f"| {n} | {v['tracked']}/{v['frames']} | {_f(v['vertex_mm'])} | {_f(v['shape_mm'])} | "
                     f"{_f(v['rotation_deg'])} | {_f(v['translation_mm'])} | {_f(v['expression_mae'], '.3f')} | "
                     f"{_f(v['expression_mae_active'], '.3f')} | {_f(v['lmk68_pct'])} | "
                     f"{_f(v.get('lmk68_nojaw_pct', float('nan')))} |")
    if "serve" in rep:
        L += ["", "## face3d serve (tracker/bench_serve.py, short run)", "", "```", rep["serve"]["text"], "```"]
    L += ["", "## Plots", ""] + [f"- `{p.name}`" for p in plots] + [""]
    return "\n".join(L)


def write_report(out: Path, rep: dict[str, Any]) -> dict[str, Any]:
    """Write ``report.json``, the plots and ``report.md`` into ``out`` (created)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:  # a previous run's plots must not pass for this one's
        (out / name).unlink(missing_ok=True)
    plots = plot_all(out, rep)
    body = {k: v for k, v in rep.items() if k != "plots"}
    body["plot_files"] = [p.name for p in plots]
    (out / "report.json").write_text(json.dumps(_finite(body), indent=1, default=_json_default,
                                                allow_nan=False))
    (out / "report.md").write_text(markdown(rep, plots))
    return {"md": out / "report.md", "json": out / "report.json", "plots": plots}
