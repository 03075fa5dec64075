"""``face3d render`` (overlay on one image) and ``face3d synth`` (a synthetic clip with its ground
truth). Wired into :mod:`tracker.cli` through :func:`add_parser`; each command function returns an
exit status.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .errors import InputError


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}")
    return int(m[1]), int(m[2])


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``render`` and ``synth`` to the ``face3d`` sub-command parser."""
    from .cli import _add_track_options
    from .drawer import MODES

    r = subparsers.add_parser("render", help="track one image and write it with the face drawn over")
    r.add_argument("image", help="input image (png, jpg, …)")
    r.add_argument("--out", required=True, help="output image; the suffix picks the format (.png)")
    r.add_argument("--mode", choices=MODES, default="shaded",
                   help="shaded mesh, MediaPipe-style wireframe, or the 68 landmark points")
    _add_track_options(r, files=False)
    r.set_defaults(func=cmd_render)

    s = subparsers.add_parser(
        "synth", help="render a synthetic talking head from the model, with its true coefficients")
    s.add_argument("out", help="output video OUT.mp4 (OUT.csv and OUT.csv.json are written beside)")
    s.add_argument("--seconds", type=float, default=4.0, help="length (default 4)")
    s.add_argument("--size", type=_size, default=(512, 512), help="WIDTHxHEIGHT, even (default 512x512)")
    s.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    s.add_argument("--seed", type=int, default=0, help="random seed: identity, motion, colours")
    s.add_argument("--model", help="face model npz (default: $FACE3D_MODEL, then the user cache)")
    s.set_defaults(func=cmd_synth)


def cmd_render(args: argparse.Namespace) -> int:
    from .cli import _config
    from .facemodel import load_face_model
    from .overlay import write_overlay
    from .sources import probe
    from .track import track_video

    if probe(args.image).kind != "image":
        raise InputError(f"{args.image}: not a still image (for videos use "
                         "`face3d track VIDEO --csv OUT.csv --overlay OUT.mp4`)")
    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif",
                                             ".tiff"):
        raise InputError(f"{args.out}: the output must be an image (.png, .jpg, …)")
    model = load_face_model(args.model)
    cfg = _config(args)
    _, results = track_video(args.image, model, cfg, None, progress=False)
    out = write_overlay(args.image, args.out, results, model, cfg, mode=args.mode)
    n = sum(len(r.faces) for r in results)
    print(f"{Path(args.image).name}: {n} face(s) -> {out.path}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .facemodel import load_face_model
    from .synth import SynthSettings, synth

    if Path(args.out).suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise InputError(f"{args.out}: the output must be a video (.mp4, .mov or .mkv)")
    try:
        settings = SynthSettings(seconds=args.seconds, size=args.size, fps=args.fps, seed=args.seed)
    except ValueError as e:
        raise InputError(str(e)) from None
    out = synth(args.out, load_face_model(args.model), settings=settings)
    print(f"synthetic clip: {out.frames} frames {settings.size[0]}x{settings.size[1]} at "
          f"{settings.fps:g} fps, seed {settings.seed}, {out.seconds:.1f} s -> {out.video}, "
          f"ground truth {out.csv} (+ .json)")
    return 0
