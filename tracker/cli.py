"""The ``face3d`` command line.

Every error a user can cause (:class:`tracker.errors.Face3dError`) becomes one line on stderr and
exit status 1 — no traceback; ``--debug`` shows tracebacks. Ctrl-C exits with 130 after writing the
rows done so far (``track``). Usage errors exit with 2 (argparse).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import Face3dError, InputError

log = logging.getLogger("face3d")

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
"""libx264's presets, fastest first (``--overlay-preset``)."""


def _quantiser(text: str) -> int:
    """``--overlay-qp`` / ``--overlay-crf``: an integer within libx264's 8-bit range 0..51."""
    v = int(text)
    if not 0 <= v <= 51:
        raise argparse.ArgumentTypeError(f"must be within 0..51, got {v}")
    return v


def _add_track_options(p: argparse.ArgumentParser, *, files: bool = True) -> None:
    p.add_argument("--model", help="face model npz (default: $FACE3D_MODEL, then the user cache)")
    p.add_argument("--config", help="tracking config TOML (default: configs/track.toml)")
    p.add_argument("--max-faces", type=int, default=None, help="faces to track (default 1)")
    p.add_argument("--fov", type=float, default=None,
                   help="field of view in degrees along the longer image side (default 50)")
    p.add_argument("--focal", type=float, default=None,
                   help="focal length in (square) pixels; overrides --fov")
    if files:
        p.add_argument("--smooth", choices=("offline", "live", "none"), default=None,
                       help="temporal smoothing (default: offline for files)")
    p.add_argument("--regressor", default=None, metavar="auto|none|PATH",
                   help="CNN regressor weights (default auto: the packaged ONNX model)")
    p.add_argument("--backend", choices=("onnx", "torch", "tensorrt"), default=None,
                   help="regressor backend (default onnx = ONNX Runtime on the CPU)")
    p.add_argument("--no-refine", action="store_true",
                   help="output the regressor alone, without landmark refinement")


CORE_COMMANDS = ("track", "demo", "model")
"""Commands defined in this module. The others live in modules of their own (``_optional_commands``),
which are imported only when the command line asks for one of them or for the full list: the
benchmarks' modules alone took 0.45 s to import (scipy.stats), a third of ``face3d track``'s start."""


def _command_word(argv: Sequence[str] | None) -> str | None:
    """The sub-command named on the command line (the first word not starting with ``-``: the
    global options take no values), or ``None``."""
    return next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")),
                None)


def build_parser(argv: Sequence[str] | None = None, *, complete: bool = True
                 ) -> argparse.ArgumentParser:
    """The CLI's parser. ``complete=False`` leaves out the optional commands' modules when
    ``argv`` names one of :data:`CORE_COMMANDS` (nothing else in the parse needs them)."""
    ap = argparse.ArgumentParser(prog="face3d", description="Real-time 3D face tracking from RGB video.")
    ap.add_argument("--version", action="version", version=f"face3d {__version__}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("track", help="track a video or image into a CSV of face coefficients")
    t.add_argument("input", help="video file, image, URL, or webcam[:N]")
    t.add_argument("--csv", required=True, help="output CSV (a sidecar OUT.csv.json is written too)")
    t.add_argument("--landmarks", action="store_true", help="add projected ICT 68-point columns")
    t.add_argument("--arkit", action="store_true", help="add ARKit-52 weight columns")
    t.add_argument("--format", choices=("face3d", "livelink"), default="face3d",
                   help="CSV layout (livelink: Live Link Face columns)")
    t.add_argument("--overlay", help="also write an overlay video (H.264 MP4)")
    t.add_argument("--overlay-mode", choices=("shaded", "wire", "points"), default="shaded")
    rate = t.add_mutually_exclusive_group()
    rate.add_argument("--overlay-qp", type=_quantiser, default=None, metavar="QP",
                      help="x264 constant quantiser of the overlay, 0 (lossless) to 51 (default "
                           "23; lower is sharper and larger, higher is smaller and faster)")
    rate.add_argument("--overlay-crf", type=_quantiser, default=None, metavar="CRF",
                      help="content-adaptive x264 quality (constant rate factor) instead of a "
                           "constant quantiser: steadier file sizes, ~1 ms more CPU a 720p frame")
    t.add_argument("--overlay-preset", default=None, choices=X264_PRESETS, metavar="PRESET",
                   help="x264 preset of the overlay (default ultrafast, which keeps pace with "
                        "tracking; e.g. veryfast gives ~3x smaller files for ~2x the encoding time)")
    t.add_argument("--allow-truncated", action="store_true",
                   help="write the frames of a truncated file instead of failing")
    _add_track_options(t)
    t.set_defaults(func=cmd_track)

    d = sub.add_parser("demo", help="track the default input (first shared video, else a synthetic clip)")
    d.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--input", help="track this file instead of the default")
    d.set_defaults(func=cmd_demo)

    from . import convert
    mp = convert.add_parser(sub)
    c = mp.model_subparsers.add_parser(  # type: ignore[attr-defined]
        "correspondence", help="rebuild the MediaPipe↔ICT correspondence tables")
    c.add_argument("--canonical", required=False,
                   help="MediaPipe canonical_face_model.obj (default: beside $FACE3D_MODEL's shared folder)")
    c.add_argument("--model", help="face model npz")
    c.add_argument("--out-dir", default=None, help="where to write the tables (default: the package data)")
    c.add_argument("--refine", nargs="*", default=(), metavar="VIDEO",
                   help="refine the upper-face points on these videos (tracker/calibrate.py)")
    c.add_argument("--stride", type=int, default=2, help="use every n-th frame when refining")
    c.add_argument("--renders", type=_seed_range, default=(), metavar="SEEDS",
                   help="then anchor the table to the truth of clips rendered from the model with "
                        "these seeds, e.g. 10-21 (tracker/calibrate.py; the bench uses 0-2)")
    c.add_argument("--render-dir", default=None,
                   help="keep the rendered clips here (default: a temporary folder)")
    c.add_argument("--rounds", type=int, default=3, help="refinement rounds")
    c.set_defaults(model_func=cmd_correspondence)

    if complete or _command_word(argv) not in CORE_COMMANDS:
        for mod in _optional_commands():
            mod.add_parser(sub)
    return ap


def _optional_commands() -> list[object]:
    """Command modules added as their issues land (each has add_parser/run)."""
    import importlib

    mods = []
    for name in ("tracker.synth_cli", "tracker.serve", "tracker.batch", "tracker.bench",
                 "tracker.bench_render", "tracker.bench_overlay", "trainer.cli"):
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name and (e.name == name or name.startswith(e.name + ".")):
                continue
            raise
    return mods


def _config(args: argparse.Namespace):
    from dataclasses import replace

    from .trackconfig import load_track_config

    cfg = load_track_config(getattr(args, "config", None))
    over = {}
    if getattr(args, "max_faces", None) is not None:
        over["max_faces"] = args.max_faces
    if getattr(args, "fov", None) is not None:
        over["fov_deg"] = args.fov
    if getattr(args, "focal", None) is not None:
        over["focal_px"] = args.focal
    if getattr(args, "smooth", None) is not None:
        over["smooth"] = args.smooth
    if getattr(args, "regressor", None) is not None:
        over["regressor"] = args.regressor
    if getattr(args, "backend", None) is not None:
        over["regressor_backend"] = args.backend
    if getattr(args, "no_refine", False):
        if (getattr(args, "regressor", None) or cfg.regressor) == "none":
            raise InputError("--no-refine needs a regressor (not --regressor none)")
        over["refine"] = False
    return replace(cfg, **over)


def _overlay_rate(args: argparse.Namespace):
    """``--overlay-qp`` / ``--overlay-crf`` as a :class:`~tracker.videoout.RateControl`, or
    ``None`` for the overlay's default."""
    from .videoout import RateControl

    if args.overlay_crf is not None:
        return RateControl("crf", args.overlay_crf)
    return None if args.overlay_qp is None else RateControl("qp", args.overlay_qp)


def cmd_track(args: argparse.Namespace) -> int:
    from .facemodel import load_face_model
    from .track import TrackOutputs, track_video

    if args.max_faces is not None and args.max_faces < 1:
        raise InputError("--max-faces must be at least 1")
    model = load_face_model(args.model)
    cfg = _config(args)
    out = TrackOutputs(Path(args.csv), args.format, args.landmarks, args.arkit,
                       Path(args.overlay) if args.overlay else None, args.overlay_mode,
                       overlay_rate=_overlay_rate(args), overlay_preset=args.overlay_preset)
    summary, results = track_video(args.input, model, cfg, out, allow_truncated=args.allow_truncated)
    if out.overlay is not None and summary.frames == 1 and not summary.interrupted:
        from .overlay import write_overlay  # an image input: the overlay is a still
        write_overlay(args.input, out.overlay, results, model, cfg, mode=args.overlay_mode)
    print(summary.line())
    return EXIT_INTERRUPTED if summary.interrupted else 0


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def default_demo_input() -> str | None:
    """The first video under ``$FACE3D_MEDIA`` by file name (case-insensitive, then path), else
    ``None``. With the shared media that is ``liveportrait/d10.mp4``, a frontal talking clip."""
    media = os.environ.get("FACE3D_MEDIA")
    if media and Path(media).is_dir():
        vids = sorted((p for p in Path(media).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES),
                      key=lambda p: (p.name.lower(), str(p)))
        if vids:
            return str(vids[0])
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    from .facemodel import load_face_model
    from .track import TrackOutputs, track_video

    out_dir = Path(args.out)
    inp = args.input or default_demo_input()
    if inp is None:
        try:
            from .synth import render_demo_clip  # the renderer issue's synthetic clip
        except ModuleNotFoundError:
            render_demo_clip = None
        if render_demo_clip is not None:
            inp = str(render_demo_clip(out_dir / "synthetic.mp4", load_face_model(None)))
        elif sys.stdin.isatty():
            inp = input("No FACE3D_MEDIA video found. Path of a video to track: ").strip()
        else:
            raise InputError("no demo input: set FACE3D_MEDIA to a folder of videos or pass --input FILE")
    model = load_face_model(None)
    cfg = _config(args)
    csv_path = out_dir / (Path(inp).stem + ".csv")
    print(f"face3d demo: tracking {inp}")
    ov = out_dir / (Path(inp).stem + "_overlay.mp4")
    summary, _ = track_video(inp, model, cfg, TrackOutputs(csv_path, landmarks=True, overlay=ov))
    print(summary.line())
    print(f"columns and conventions: {csv_path}.json")
    print(f"overlay video: {ov}")
    return EXIT_INTERRUPTED if summary.interrupted else 0


def _seed_range(text: str) -> tuple[int, ...]:
    """``"10-21"`` or ``"3,5,8"`` → seeds."""
    try:
        if "-" in text:
            a, b = (int(x) for x in text.split("-", 1))
            seeds = tuple(range(a, b + 1))
        else:
            seeds = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 10-21 or 3,5,8, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return seeds


def cmd_correspondence(args: argparse.Namespace) -> int:
    from .correspondence import (TABLE_ICT68_ON_MP, TABLE_MP_TO_ICT, build_correspondence,
                                 write_tables)
    from .facemodel import load_face_model, resolve_model_path

    model = load_face_model(args.model)
    canon = args.canonical
    if canon is None:
        canon = resolve_model_path(args.model).parents[1] / "mediapipe" / "canonical_face_model.obj"
    corr, mp68, rep = build_correspondence(model, canon)
    lines = [f"Built by: face3d model correspondence (tracker/correspondence.py) from "
             f"{Path(canon).name} and ICT-FaceKit {model.version}",
             "Geometric fit: " + ", ".join(f"{k}={v:.3f}" for k, v in rep.items())]
    if args.refine:
        from .calibrate import refine_on_videos
        corr, stats = refine_on_videos(model, corr, list(args.refine), stride=args.stride,
                                       rounds=args.rounds)
        lines.append("Refined (tracker/calibrate.py, upper face only) on: "
                     + ", ".join(Path(v).name for v in args.refine)
                     + f"; every {args.stride}th frame, {args.rounds} rounds")
        lines.append("Median / p95 point move per round (mm): "
                     + "; ".join(f"{s['median_offset_mm']:.2f} / {s['p95_offset_mm']:.2f}" for s in stats))
    if args.renders:
        import tempfile

        from .calibrate import refine_on_renders
        with tempfile.TemporaryDirectory(prefix="face3d-renders-") as tmp:
            corr, stats = refine_on_renders(model, corr, args.renders,
                                            Path(args.render_dir or tmp), rounds=args.rounds)
        lines.append(f"Anchored to rendered truth (tracker/calibrate.py, all but the oval) on "
                     f"face3d synth seeds {args.renders[0]}-{args.renders[-1]} (4 s, 512x512, "
                     f"30 fps); {args.rounds} rounds")
        lines.append("Median / p95 point move per round (mm): "
                     + "; ".join(f"{s['median_offset_mm']:.2f} / {s['p95_offset_mm']:.2f}" for s in stats))
    out_dir = Path(args.out_dir) if args.out_dir else TABLE_MP_TO_ICT.parent
    write_tables(corr, mp68, "\n".join(lines), out_dir / TABLE_MP_TO_ICT.name,
                 out_dir / TABLE_ICT68_ON_MP.name)
    for line in lines:
        print(line)
    print(f"wrote {out_dir / TABLE_MP_TO_ICT.name} and {out_dir / TABLE_ICT68_ON_MP.name}")
    return 0


def runtime_setup() -> None:
    """Process-wide settings for the CLI, applied before numeric libraries start their threads.

    ``OMP_WAIT_POLICY=PASSIVE``: numba's OpenMP workers otherwise spin at barriers, which on a
    2-core machine shared with MediaPipe's and PyAV's threads turned a 1.4 ms rasterization into
    8–50 ms (tracker/bench_render.py). Values already set by the user win. Native libraries'
    start-up notes are filtered out of stderr (:mod:`tracker.stderrfilter`).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from . import stderrfilter
    stderrfilter.install()


_interrupted = False


def _on_sigint(signum: int, frame: object) -> None:
    """First Ctrl-C: raise KeyboardInterrupt (the rows done so far get written); later ones are
    ignored so that writing and shutting down cannot be cut short."""
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    global _interrupted
    _interrupted = False
    try:  # put back on return: a program (or a test) calling main() keeps its own Ctrl-C
        previous = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread (embedded use)
        previous = None
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        runtime_setup()
        ap = build_parser(argv, complete=False)
        args = ap.parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                            format="face3d: %(levelname)s: %(message)s")
        code = int(args.func(args) or 0)
    except Face3dError as e:
        if debug:
            raise
        print(f"face3d: error: {e}", file=sys.stderr)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        print("face3d: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        code = EXIT_ERROR
    except Exception:
        if not _interrupted:
            raise
        # Ctrl-C landed inside a native import or initialiser, which re-raised it as something
        # else (e.g. "ImportError: initialization failed"): still an interruption.
        print("face3d: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    finally:
        from . import stderrfilter
        stderrfilter.uninstall()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if _interrupted and code == 0:
        code = EXIT_INTERRUPTED
    return code


def console_main() -> int:
    """The ``face3d`` script: :func:`main`, then everything still alive is left out of the
    cyclic collector's last pass at interpreter exit (``gc.freeze``). That pass walked the
    objects of numba, scipy and MediaPipe for 0.3 s after every command (d13 ``track``: 3.73 →
    3.45 s). Outputs are closed by then; nothing relies on the collector to flush or remove
    anything. (Not in :func:`main`, which tests and other programs call in a live process.)"""
    code = main()
    import gc

    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(console_main())
