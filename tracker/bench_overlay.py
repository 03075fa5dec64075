"""Overlay benchmark: ``face3d track --overlay`` against the decode + MediaPipe floor, same run.

For one input: the *floor* (PyAV decode in a background thread + MediaPipe FaceMesh in video mode
on every frame, nothing else), the *track* pass (:func:`tracker.track.track_video`, no files) and
the *overlay* pass (:func:`tracker.overlay.write_overlay`: decode again, draw, encode H.264, copy
audio). The floor is timed before and after the two passes and averaged, so drifting load on the
machine affects both sides. Reported: wall and process-CPU milliseconds per frame, frame rates,
and ``whole_vs_floor`` = (frames / (track + overlay wall time)) / floor frame rate — the issue's
"≥ 0.5 × the floor, encoding included".
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from .facemodel import FaceModel
from .pipeline import TrackConfig

T = TypeVar("T")


@dataclass(frozen=True)
class OverlayBench:
    input: str
    frames: int
    mode: str
    preset: str
    crf: int
    loadavg_1min: float
    floor_ms: float
    floor_cpu_ms: float
    track_ms: float
    track_cpu_ms: float
    overlay_ms: float
    overlay_cpu_ms: float
    overlay_bytes: int

    @property
    def floor_fps(self) -> float:
        return 1e3 / self.floor_ms

    @property
    def whole_fps(self) -> float:
        return 1e3 / (self.track_ms + self.overlay_ms)

    @property
    def whole_vs_floor(self) -> float:
        return self.whole_fps / self.floor_fps

    @property
    def overlay_vs_floor(self) -> float:
        return self.floor_ms / self.overlay_ms


def _timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    c, t = time.process_time(), time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t, time.process_time() - c


def floor_pass(input_spec: str) -> int:
    """Decode (background thread) + MediaPipe on every frame; returns the frame count."""
    from .landmarks import LandmarkDetector
    from .sources import open_source
    from .track import prefetch

    n = 0
    with open_source(input_spec) as src, LandmarkDetector() as det:
        for f in prefetch(src):
            det.detect(f.image, f.time_s, src.info.sar)
            n += 1
    return n


def bench_overlay(input_spec: str, model: FaceModel, cfg: TrackConfig, mode: str = "shaded",
                  preset: str | None = None, crf: int | None = None,
                  out_dir: str | None = None) -> OverlayBench:
    """Time floor, track and overlay on ``input_spec`` (see the module docstring)."""
    from .overlay import DEFAULT_CRF, DEFAULT_PRESET, write_overlay
    from .track import track_video

    preset = preset or DEFAULT_PRESET
    crf = DEFAULT_CRF if crf is None else crf
    floor_pass(input_spec)  # warm-up: MediaPipe graph, JIT caches
    n, fw1, fc1 = _timed(lambda: floor_pass(input_spec))
    (_, results), tw, tc = _timed(
        lambda: track_video(input_spec, model, cfg, None, progress=False))
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        out = Path(tmp) / "overlay.mp4"
        _, ow, oc = _timed(lambda: write_overlay(input_spec, out, results, model, cfg, mode=mode,
                                                 preset=preset, crf=crf))
        size = out.stat().st_size
    _, fw2, fc2 = _timed(lambda: floor_pass(input_spec))
    ms = 1e3 / max(n, 1)
    return OverlayBench(str(input_spec), n, mode, preset, crf, float(os.getloadavg()[0]),
                        (fw1 + fw2) / 2 * ms, (fc1 + fc2) / 2 * ms, tw * ms, tc * ms, ow * ms,
                        oc * ms, size)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``face3d bench-overlay VIDEO``: overlay cost against the decode + MediaPipe floor."""
    p = subparsers.add_parser("bench-overlay",
                              help="time track + overlay against the decode+MediaPipe floor")
    p.add_argument("input", nargs="+", help="video file(s)")
    p.add_argument("--model", default=None)
    p.add_argument("--mode", choices=("shaded", "wire", "points"), default="shaded")
    p.add_argument("--preset", default=None, help="libx264 preset (default: the overlay's)")
    p.add_argument("--crf", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from .facemodel import load_face_model
    from .trackconfig import load_track_config

    model, cfg = load_face_model(args.model), load_track_config()
    rows = []
    for inp in args.input:
        r = bench_overlay(inp, model, cfg, args.mode, args.preset, args.crf)
        rows.append({**asdict(r), "whole_vs_floor": r.whole_vs_floor,
                     "overlay_vs_floor": r.overlay_vs_floor})
        print(f"{Path(inp).name}: {r.frames} frames, {r.mode}, x264 {r.preset} crf {r.crf}, "
              f"load {r.loadavg_1min:.1f}")
        print(f"  ms/frame wall (cpu): floor {r.floor_ms:.2f} ({r.floor_cpu_ms:.2f})  track "
              f"{r.track_ms:.2f} ({r.track_cpu_ms:.2f})  overlay {r.overlay_ms:.2f} "
              f"({r.overlay_cpu_ms:.2f})")
        print(f"  floor {r.floor_fps:.0f} fps; track + overlay {r.whole_fps:.0f} fps = "
              f"{r.whole_vs_floor:.2f} x floor; overlay pass alone {r.overlay_vs_floor:.2f} x floor; "
              f"{r.overlay_bytes / max(r.frames, 1) / 1024:.1f} KB/frame")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0
