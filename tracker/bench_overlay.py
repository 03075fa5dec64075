"""Overlay benchmark: ``face3d track --overlay`` against the decode + MediaPipe floor, same run.

For one input: the *floor* (PyAV decode in a background thread + MediaPipe FaceMesh in video mode
on every frame, nothing else), ``face3d track`` writing the CSV (:func:`tracker.track.track_video`)
and ``face3d track --overlay`` (the same pass also drawing and encoding the H.264 overlay with its
audio; :class:`tracker.overlay.OverlayStream`). The floor is timed before and after and averaged,
so drifting load affects both sides. Reported: wall and process-CPU milliseconds per frame, frame
rates, ``whole_vs_floor`` = (frames / wall time of ``track --overlay``) / floor frame rate — the
issue's "≥ 0.5 × the floor, encoding included" — and the overlay's added cost (``overlay_ms`` =
``track --overlay`` − ``track``).
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
    whole_ms: float
    whole_cpu_ms: float
    overlay_bytes: int

    @property
    def overlay_ms(self) -> float:
        return self.whole_ms - self.track_ms

    @property
    def floor_fps(self) -> float:
        return 1e3 / self.floor_ms

    @property
    def whole_fps(self) -> float:
        return 1e3 / self.whole_ms

    @property
    def whole_vs_floor(self) -> float:
        return self.whole_fps / self.floor_fps

    @property
    def track_vs_floor(self) -> float:
        return self.floor_ms / self.track_ms


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
    from .overlay import DEFAULT_CRF, DEFAULT_PRESET
    from .track import TrackOutputs, track_video

    preset = preset or DEFAULT_PRESET
    crf = DEFAULT_CRF if crf is None else crf
    floor_pass(input_spec)  # warm-up: MediaPipe graph, JIT caches
    n, fw1, fc1 = _timed(lambda: floor_pass(input_spec))
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        csv_path, out = Path(tmp) / "t.csv", Path(tmp) / "overlay.mp4"
        _, tw, tc = _timed(lambda: track_video(input_spec, model, cfg, TrackOutputs(csv_path),
                                               progress=False))
        _, ww, wc = _timed(lambda: track_video(
            input_spec, model, cfg, TrackOutputs(csv_path, overlay=out, overlay_mode=mode),
            progress=False))
        size = out.stat().st_size
    _, fw2, fc2 = _timed(lambda: floor_pass(input_spec))
    ms = 1e3 / max(n, 1)
    return OverlayBench(str(input_spec), n, mode, preset, crf, float(os.getloadavg()[0]),
                        (fw1 + fw2) / 2 * ms, (fc1 + fc2) / 2 * ms, tw * ms, tc * ms, ww * ms,
                        wc * ms, size)


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
                     "track_vs_floor": r.track_vs_floor, "overlay_ms": r.overlay_ms})
        print(f"{Path(inp).name}: {r.frames} frames, {r.mode}, x264 {r.preset} crf {r.crf}, "
              f"load {r.loadavg_1min:.1f}")
        print(f"  ms/frame wall (cpu): floor {r.floor_ms:.2f} ({r.floor_cpu_ms:.2f})  track "
              f"{r.track_ms:.2f} ({r.track_cpu_ms:.2f})  track --overlay {r.whole_ms:.2f} "
              f"({r.whole_cpu_ms:.2f})")
        print(f"  floor {r.floor_fps:.0f} fps; track {r.track_vs_floor:.2f} x floor; track --overlay "
              f"{r.whole_fps:.0f} fps = {r.whole_vs_floor:.2f} x floor (overlay adds "
              f"{r.overlay_ms:.2f} ms/frame); {r.overlay_bytes / max(r.frames, 1) / 1024:.1f} KB/frame")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0
