"""Renderer benchmark: the ICT face region at 512x512 through the numba backend, median ms per step.

Scene: the neutral ICT mesh, region ``"face"`` (``model.part_faces("face")``, ~18.5k triangles incl.
ears and front of the neck) or ``"narrow"`` (triangles whose vertices are all below
``narrow_face_vertex_count``, ~13k), centred 0.5 m in front of the camera, with the focal length
chosen so the region's projection spans ``fill`` (0.9) of the image height. Back faces culled.

Steps timed separately (JIT warmed up first, then ``repeats`` runs each, median and 90th percentile):
``rasterize``; ``interpolate`` (3-channel vertex colours); ``shade`` (area-weighted vertex normals +
Deep3DFaceRecon SH per vertex); ``antialias`` (silhouette blend, topology precomputed). The load
average is recorded because other processes on a 2-core machine skew parallel kernels.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .camera import camera_from_focal, project
from .facemodel import FaceModel, load_face_model
from .render import CULL_BACK, clip_from_camera
from .types import Camera

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderBench:
    """Wall-clock medians (``*_ms``) and 90th percentiles (``*_p90_ms``), and the median process
    CPU time (``*_cpu_ms``, all threads; approximate with several threads, whose time Linux adds
    at scheduler ticks) in milliseconds. Wall time far above CPU time means other processes held
    the cores (see ``loadavg_1min``). Under such contention numba's default OpenMP layer spins at
    its barriers: ``OMP_WAIT_POLICY=passive`` or ``NUMBA_THREADING_LAYER=workqueue`` (set before
    numba starts its threads — a process-wide choice) or ``--threads 1`` keep it steady."""

    region: str
    height: int
    width: int
    n_triangles: int
    coverage: float
    repeats: int
    numba_threads: int
    loadavg_1min: float
    rasterize_ms: float
    rasterize_p90_ms: float
    rasterize_cpu_ms: float
    interpolate_ms: float
    interpolate_p90_ms: float
    interpolate_cpu_ms: float
    shade_ms: float
    shade_p90_ms: float
    shade_cpu_ms: float
    antialias_ms: float
    antialias_p90_ms: float
    antialias_cpu_ms: float


def region_triangles(model: FaceModel, region: str = "face") -> np.ndarray:
    """``(F, 3) int32`` triangles of ``"face"`` (the ICT face part) or ``"narrow"`` (front face)."""
    if region == "face":
        return np.ascontiguousarray(model.part_faces("face"), np.int32)
    if region == "narrow":
        f = model.faces
        return np.ascontiguousarray(f[(f < model.narrow_face_vertex_count).all(axis=1)], np.int32)
    raise ValueError(f"region must be 'face' or 'narrow', got {region!r}")


def face_scene(model: FaceModel, size: int = 512, region: str = "face", fill: float = 0.9,
               distance: float = 0.5) -> tuple[Camera, np.ndarray, np.ndarray]:
    """Camera, camera-space vertices ``(V, 3)`` metres and region triangles for the benchmark."""
    tris = region_triangles(model, region)
    used = np.unique(tris)
    v = model.neutral.astype(np.float64)
    x = v - (v[used].min(0) + v[used].max(0)) / 2.0 - np.array([0.0, 0.0, distance])
    f0 = 1000.0
    span = np.ptp(project(camera_from_focal(size, size, f0), x[used])[:, 1])
    return camera_from_focal(size, size, f0 * fill * size / span), x, tris


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    for _ in range(3):
        fn()
    t = np.empty(repeats)
    cpu = np.empty(repeats)
    for i in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        t[i] = time.perf_counter() - t0
        cpu[i] = time.process_time() - c0
    return float(np.median(t) * 1e3), float(np.percentile(t, 90) * 1e3), float(np.median(cpu) * 1e3)


def bench_render(model: FaceModel, size: int = 512, repeats: int = 100, region: str = "face",
                 threads: int | None = None) -> RenderBench:
    """Time the numba renderer on the ICT face scene (see the module docstring).

    ``threads`` limits numba's parallel kernels for this call (``numba.set_num_threads``, which is
    per calling thread; restored afterwards); ``None`` keeps numba's default (all cores).
    """
    import numba

    previous = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(threads)
    try:
        return _bench(model, size, repeats, region)
    finally:
        numba.set_num_threads(previous)


def _bench(model: FaceModel, size: int, repeats: int, region: str) -> RenderBench:
    import numba

    from kernels.antialias import antialias, edge_neighbours
    from kernels.raster import interpolate, rasterize
    from kernels.shading import default_gamma, sh_shade, vertex_normals

    if repeats < 1 or size < 16:
        raise ValueError(f"need repeats >= 1 and size >= 16, got {repeats}, {size}")
    cam, x, tris = face_scene(model, size, region)
    pos = clip_from_camera(cam, x)
    res = (cam.height, cam.width)
    x32 = x.astype(np.float32)
    gamma = default_gamma()
    gamma[2::9] = 0.4
    albedo = np.full((len(x), 3), 0.7, np.float32)
    out = np.empty(res + (4,), np.float32)
    rast = rasterize(pos, tris, res, CULL_BACK)
    colors = sh_shade(vertex_normals(x32, tris), albedo, gamma)
    img = interpolate(colors, rast, tris)
    nbr = edge_neighbours(tris)
    steps = {
        "rasterize": lambda: rasterize(pos, tris, res, CULL_BACK, out=out),
        "interpolate": lambda: interpolate(colors, rast, tris),
        "shade": lambda: sh_shade(vertex_normals(x32, tris), albedo, gamma),
        "antialias": lambda: antialias(img, rast, pos, tris, nbr),
    }
    timings: dict[str, float] = {}
    for step, fn in steps.items():
        med, p90, cpu = _time(fn, repeats)
        timings.update({f"{step}_ms": med, f"{step}_p90_ms": p90, f"{step}_cpu_ms": cpu})
    return RenderBench(region=region, height=res[0], width=res[1], n_triangles=int(len(tris)),
                       coverage=float((rast[..., 3] > 0).mean()), repeats=repeats,
                       numba_threads=int(numba.get_num_threads()),
                       loadavg_1min=float(os.getloadavg()[0]), **timings)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``face3d bench-render``: time the numba renderer on the ICT face region."""
    p = subparsers.add_parser("bench-render", help="time the CPU renderer on the ICT face at 512x512")
    p.add_argument("--model", default=None, help="ICT npz (default: $FACE3D_MODEL or the user cache)")
    p.add_argument("--size", type=int, default=512, help="image width and height in pixels (>= 16)")
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--region", choices=("face", "narrow"), default="face")
    p.add_argument("--threads", type=int, default=None, help="numba threads (default: all cores)")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    r = bench_render(load_face_model(args.model), args.size, args.repeats, args.region, args.threads)
    print(f"render bench: {r.region} region, {r.n_triangles} triangles, {r.width}x{r.height}, "
          f"coverage {r.coverage:.2f}, {r.repeats} repeats, {r.numba_threads} threads, "
          f"load {r.loadavg_1min:.2f}")
    for step in ("rasterize", "interpolate", "shade", "antialias"):
        print(f"  {step:<12} median {getattr(r, step + '_ms'):7.3f} ms   "
              f"p90 {getattr(r, step + '_p90_ms'):7.3f} ms   cpu {getattr(r, step + '_cpu_ms'):7.3f} ms")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(asdict(r), fh, indent=2)
    return 0
