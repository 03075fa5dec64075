"""``face3d train``, ``face3d train prepare`` and ``face3d export`` (wired into ``face3d`` by
:func:`tracker.cli._optional_commands`).

::

    face3d train prepare VIDEOS_OR_IMAGES_OR_FOLDERS... --out CACHE [--size 128] [--every 3]
    face3d train --config configs/train-smoke.toml --out DIR [--resume] [--steps N]
    torchrun --nproc_per_node 2 -m trainer.cli --config ... --out DIR      (DDP, gloo on CPU)
    face3d train eval VIDEOS... [--weights W.onnx] [--every 2]           (numbers for REGRESSOR.md)
    face3d export CKPT_OR_RUN_DIR --onnx OUT.onnx [--torchscript OUT.pt] [--tensorrt OUT.ts]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    t = subparsers.add_parser("train", help="train the regressor (or prepare its data cache)",
                              description="Train the coefficient regressor from a TOML config.")
    t.add_argument("--config", help="training config TOML (e.g. configs/train-smoke.toml)")
    t.add_argument("--out", help="run folder (metrics.csv, ckpt.pt, regressor.onnx, summary.json)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    t.add_argument("--steps", type=int, default=None, help="override optim.steps")
    sub = t.add_subparsers(dest="train_command", required=False, metavar="{prepare,eval}")
    p = sub.add_parser("prepare", help="videos/images -> cache of crops, landmarks, masks, pseudo-labels")
    p.add_argument("inputs", nargs="+", help="video/image files or folders (recursive)")
    p.add_argument("--out", required=True, dest="cache", help="cache folder (resumable)")
    p.add_argument("--size", type=int, default=128, help="crop size in pixels (default 128)")
    p.add_argument("--every", type=int, default=3, help="keep every n-th video frame (default 3)")
    p.add_argument("--max-frames", type=int, default=0, help="samples per source, 0 = all")
    p.add_argument("--max-faces", type=int, default=2, help="faces per image (videos: 1)")
    ev = sub.add_parser("eval", help="measure regressor weights on real clips (one JSON document to "
                        "stdout; each part also on stderr as it is done)")
    ev.add_argument("videos", nargs="*", help="video files")
    ev.add_argument("--weights", default=None, help="ONNX weights (default: tracker/data/regressor.onnx)")
    ev.add_argument("--every", type=int, default=2, help="use every n-th frame (default 2)")
    ev.add_argument("--max-frames", type=int, default=None, help="frames per clip")
    ev.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for the latency")
    ev.add_argument("--synthetic", type=int, default=0,
                    help="also measure on N synthetic samples with known coefficients")
    ev.add_argument("--rendered", type=int, default=0,
                    help="also measure on N clips rendered by tracker.synth (through MediaPipe)")
    ev.add_argument("--workdir", default="out/eval-rendered", help="where rendered clips go")
    t.set_defaults(func=run)

    e = subparsers.add_parser("export", help="export a trained regressor (ONNX, TorchScript, TensorRT)")
    e.add_argument("checkpoint", help="ckpt.pt, or a run folder holding one")
    e.add_argument("--onnx", help="write ONNX (opset 17) here")
    e.add_argument("--torchscript", help="write TorchScript here")
    e.add_argument("--tensorrt", help="write a torch-tensorrt TorchScript module here (CUDA only)")
    e.set_defaults(func=run_export)
    return t


def run(args: argparse.Namespace) -> int:
    from tracker.errors import InputError

    if getattr(args, "train_command", None) == "prepare":
        from tracker.facemodel import load_face_model

        from .data import PrepareConfig, find_sources, prepare

        srcs = find_sources(args.inputs)
        cfg = PrepareConfig(size=args.size, every=args.every, max_frames=args.max_frames,
                            max_faces=args.max_faces)
        idx = prepare(srcs, Path(args.cache), load_face_model(), cfg, progress=print)
        n = sum(v["n"] for v in idx["sources"].values())
        print(f"cache {args.cache}: {len(idx['sources'])} sources, {n} samples")
        return 0
    if getattr(args, "train_command", None) == "eval":
        import json

        from tracker.facemodel import load_face_model
        from tracker.regressor import DEFAULT_WEIGHTS, make_regressor

        from .benchmark import eval_clip, onnx_latency

        w = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
        reg = make_regressor(w)
        model = load_face_model()
        res = {"weights": str(w), "latency": onnx_latency(w, args.threads), "clips": {}}
        print("latency", json.dumps(res["latency"]), file=sys.stderr, flush=True)
        if args.synthetic:
            from .benchmark import eval_synthetic
            res["synthetic"] = eval_synthetic(w, model, args.synthetic)
            print("synthetic", json.dumps(res["synthetic"]), file=sys.stderr, flush=True)
        if args.rendered:
            from .benchmark import eval_rendered_clips
            res["rendered"] = eval_rendered_clips(w, model, Path(args.workdir),
                                                  tuple(range(1, args.rendered + 1)))
            print("rendered", json.dumps(res["rendered"]), file=sys.stderr, flush=True)
        for v in args.videos:
            res["clips"][Path(v).name] = eval_clip(reg, model, v, args.every, args.max_frames)
            print(Path(v).name, json.dumps(res["clips"][Path(v).name]), file=sys.stderr, flush=True)
        print(json.dumps(res, indent=1))
        return 0
    if not args.config or not args.out:
        raise InputError("face3d train needs --config TOML and --out DIR (or the 'prepare' command)")
    from .config import load_train_config
    from .loop import train

    cfg = load_train_config(args.config)
    train(cfg, Path(args.out), resume=args.resume, steps=args.steps,
          say=lambda m: print(m, flush=True))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from tracker.errors import InputError

    from .export import (
        export_onnx,
        export_tensorrt,
        export_torchscript,
        load_checkpoint_net,
    )

    ck = Path(args.checkpoint)
    if ck.is_dir():
        ck = ck / "ckpt.pt"
    if not (args.onnx or args.torchscript or args.tensorrt):
        raise InputError("face3d export: give at least one of --onnx, --torchscript, --tensorrt")
    if args.tensorrt:  # fail early and clearly on machines without CUDA/torch-tensorrt
        import torch

        from tracker.errors import BackendUnavailableError
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "--tensorrt needs a CUDA device and torch-tensorrt; this machine has no CUDA "
                "(use --onnx, the CPU default, or --torchscript)")
    net = load_checkpoint_net(ck)
    if args.onnx:
        print(f"wrote {export_onnx(net, Path(args.onnx))}")
    if args.torchscript:
        print(f"wrote {export_torchscript(net, Path(args.torchscript))}")
    if args.tensorrt:
        print(f"wrote {export_tensorrt(net, Path(args.tensorrt))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m trainer.cli`` / ``torchrun -m trainer.cli`` (train only)."""
    ap = argparse.ArgumentParser(prog="trainer.cli")
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    args.train_command = None
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
