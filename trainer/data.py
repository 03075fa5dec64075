"""``face3d train prepare``: videos and images → a cache of aligned crops, landmarks, skin masks and
the tracker's own fits as pseudo-labels; and loading that cache for training.

Cache layout (``CACHE/``)::

    index.json                 {"version": 1, "size": S, "every": k, "sources": {PATH: ENTRY}}
    shards/<stem>-<hash>.npz   one per source (np.savez, no pickle), N samples:
        image   (N, S, S, 3) uint8   aligned crop (tracker.align, S = crop size)
        lmk     (N, 478, 3)  float32 MediaPipe landmarks in crop pixels (z scaled likewise)
        mask    (N, S, S)    uint8   skin mask (1 = skin), see skin_mask()
        cam     (N, 3)       float32 crop camera: focal, principal point x, y (crop pixels)
        affine  (N, 2, 3)    float64 stored-frame pixels → crop pixels
        rot     (N, 3, 3)    float32 tracker fit: rotation in the crop camera (R_crop = Rz R_image)
        trans   (N, 3)       float32 tracker fit: translation in the crop camera, metres
        expr    (N, E)       float32 tracker fit: expression weights
        ident   (N, I)       float32 tracker fit: identity (held per track)
        fit_rms (N,)         float32 tracker fit: RMS landmark residual, % of inter-ocular distance
        frame   (N,)         int64   frame index in the source;  time (N,) float64 seconds

ENTRY = ``{"shard": name, "n": N, "bytes": size, "mtime": m}`` of the source file; a re-run skips
every source whose entry matches its file (resumable; the index is rewritten atomically after each
source). A source with no face gets ``n = 0`` and no shard.

Pseudo-labels come from :class:`tracker.pipeline.FaceTracker` run over *every* frame (so its
tracking and identity estimate work as in ``face3d track``), with identity revisions applied; only
every ``every``-th frame (up to ``max_frames`` per source) is stored.

Clips rendered from the model (``face3d synth``: a truth CSV and sidecar with
``"synthetic": {"ground_truth": true}`` beside the video) are prepared the same way — MediaPipe's
landmarks, crops, masks — but labelled with their *known* coefficients in the true camera
(``fit_rms = 0``). :func:`render_clips` makes them. Unlike :mod:`trainer.synthetic`'s on-the-fly
samples their landmarks are MediaPipe's own (with its depth and its way of placing points on a
rendered face), so they can teach geometry: pose, expression and identity of people the shared
media do not show.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tracker.align import align_affine, crop_camera, crop_landmarks, warp_crop
from tracker.correspondence import LIPS_OUTER
from tracker.errors import InputError
from tracker.facemodel import FaceModel
from tracker.rotation import quat_to_matrix

log = logging.getLogger(__name__)

VIDEO_EXT = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
INDEX_VERSION = 1

# Ordered loops (MediaPipe ids) for the skin mask.
FACE_OVAL_LOOP = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
                  400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54,
                  103, 67, 109)
EYE_LOOP_R = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
EYE_LOOP_L = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
BROW_LINE_R = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)
BROW_LINE_L = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)


@dataclass(frozen=True)
class PrepareConfig:
    """``size``: crop side (pixels); ``every``: keep every n-th frame; ``max_frames``: at most this
    many stored samples per source (0 = all); ``max_faces``: faces per image (videos: 1)."""

    size: int = 128
    every: int = 3
    max_frames: int = 0
    max_faces: int = 2
    fov_deg: float = 50.0


def find_sources(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Video and image files under ``paths`` (files or folders, searched recursively), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += [q for q in sorted(p.rglob("*")) if q.suffix.lower() in VIDEO_EXT | IMAGE_EXT]
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    return [q for q in out if not (q in seen or seen.add(q))]  # type: ignore[func-returns-value]


def skin_mask(image: np.ndarray, lmk_crop: np.ndarray) -> np.ndarray:
    """Skin mask ``(S, S) uint8`` of a crop: the MediaPipe face-oval polygon minus the eyes (filled
    lid loops with a margin), brows (thick polylines) and lips (outer lip polygon), then a colour
    check — pixels whose YCrCb chroma is within ``max(10, 3 MAD)`` of the polygon's median and whose
    luma is above 35 % of its median (drops hair, glasses frames, deep shadows, hands)."""
    s = image.shape[0]
    pts = np.round(lmk_crop[:, :2] * 4).astype(np.int32)  # 2 fractional bits

    def poly(ids: tuple[int, ...]) -> np.ndarray:
        return pts[list(ids)].reshape(-1, 1, 2)

    m = np.zeros((s, s), np.uint8)
    cv2.fillPoly(m, [poly(FACE_OVAL_LOOP)], 1, lineType=cv2.LINE_8, shift=2)
    hole = np.zeros_like(m)
    th = max(1, round(s * 0.03))
    for loop in (EYE_LOOP_R, EYE_LOOP_L, LIPS_OUTER):
        cv2.fillPoly(hole, [poly(loop)], 1, shift=2)
        cv2.polylines(hole, [poly(loop)], True, 1, thickness=th, shift=2)
    for line in (BROW_LINE_R, BROW_LINE_L):
        cv2.polylines(hole, [poly(line)], False, 1, thickness=max(2, round(s * 0.05)), shift=2)
    m &= 1 - hole
    if m.sum() < 20:
        return m
    ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    sel = ycc[m > 0]
    med = np.median(sel, 0)
    mad = np.median(np.abs(sel - med), 0) * 1.4826
    tol = np.maximum(10.0, 3.0 * mad[1:])
    ok = ((np.abs(ycc[..., 1] - med[1]) < tol[0]) & (np.abs(ycc[..., 2] - med[2]) < tol[1])
          & (ycc[..., 0] > 0.35 * med[0]))
    return (m & ok.astype(np.uint8)).astype(np.uint8)


def _shard_name(src: Path) -> str:
    h = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:10]
    return f"{src.stem}-{h}.npz"


def read_index(cache: Path) -> dict:
    p = cache / "index.json"
    if not p.is_file():
        return {"version": INDEX_VERSION, "sources": {}}
    try:
        idx = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{p}: unreadable cache index ({e})") from None
    if idx.get("version") != INDEX_VERSION:
        raise InputError(f"{p}: cache version {idx.get('version')}, expected {INDEX_VERSION}")
    return idx


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def prepare(sources: list[Path], cache: Path, model: FaceModel, cfg: PrepareConfig = PrepareConfig(),
            progress: Callable[[str], None] | None = None) -> dict:
    """Build or extend the cache (module doc). Returns the index. Sources already done are skipped;
    an existing cache made with another crop size or stride is an :class:`InputError`."""
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "shards").mkdir(exist_ok=True)
    idx = read_index(cache)
    for key, val in (("size", cfg.size), ("every", cfg.every)):
        if idx.get(key, val) != val:
            raise InputError(f"{cache}: cache was made with {key}={idx[key]}, not {val}; "
                             "use another folder")
        idx[key] = val
    for src in sources:
        st = src.stat()
        key = str(src.resolve())
        ent = idx["sources"].get(key)
        if ent and ent.get("bytes") == st.st_size and ent.get("mtime") == st.st_mtime:
            if progress:
                progress(f"{src.name}: cached ({ent['n']} samples)")
            continue
        arrays = prepare_source(src, model, cfg)
        n = 0 if arrays is None else len(arrays["image"])
        name = _shard_name(src)
        if n:
            tmp = cache / "shards" / (name + ".tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, cache / "shards" / name)
        idx["sources"][key] = {"shard": name if n else None, "n": n, "bytes": st.st_size,
                               "mtime": st.st_mtime}
        _write_json(cache / "index.json", idx)
        if progress:
            progress(f"{src.name}: {n} samples")
    return idx


def prepare_source(src: Path, model: FaceModel, cfg: PrepareConfig) -> dict[str, np.ndarray] | None:
    """Track one video or image and build its samples (see the module doc for the arrays)."""
    from tracker.camera import camera_from_fov
    from tracker.pipeline import FaceTracker, TrackConfig
    from tracker.sources import open_source

    s = cfg.size
    truth = known_coefficients(src, model)
    with open_source(str(src)) as source:
        info = source.info
        image_mode = info.kind == "image"
        tcfg = TrackConfig(max_faces=cfg.max_faces if image_mode else 1, fov_deg=cfg.fov_deg,
                           smooth="none")
        cam = camera_from_fov(info.width, info.height, cfg.fov_deg, info.sar)
        if truth is not None:
            cam, truth_rows = truth
            tcfg = TrackConfig(max_faces=1, focal_px=cam.fy, smooth="none")
        tracker = FaceTracker(model, cam, tcfg, sar=info.sar, static_images=image_mode)
        samples: dict[tuple[int, int], dict] = {}
        params: dict[tuple[int, int], object] = {}
        stored_frames = 0
        last_sched = max(tcfg.id_schedule, default=0)
        try:
            for frame in source:
                full = cfg.max_frames > 0 and stored_frames >= cfg.max_frames
                if full and frame.index >= last_sched:
                    break  # identity revisions have landed
                res = tracker.step(frame)
                for idx_rev, rev in tracker.pop_revisions():
                    if truth is None and (idx_rev, rev.face_id) in params:  # truth stays
                        params[(idx_rev, rev.face_id)] = (rev.params, rev.fit_error)
                if full or frame.index % cfg.every != 0:
                    continue
                any_face = False
                for f in res.faces:
                    if f.status != "tracked" or f.landmarks is None or f.params is None:
                        continue
                    a = align_affine(f.landmarks.points, s, info.sar)
                    crop = warp_crop(frame.image, a, s)
                    lm = crop_landmarks(a, f.landmarks.points, info.sar)
                    ccam, _ = crop_camera(cam, a, s)
                    samples[(frame.index, f.face_id)] = {
                        "image": crop.image, "lmk": lm, "mask": skin_mask(crop.image, lm),
                        "cam": np.array([ccam.fx, ccam.cx, ccam.cy], np.float32), "affine": a,
                        "time": frame.time_s}
                    params[(frame.index, f.face_id)] = (f.params, f.fit_error)
                    if truth is not None:
                        if frame.index not in truth_rows:
                            del samples[(frame.index, f.face_id)]
                            continue
                        params[(frame.index, f.face_id)] = (truth_rows[frame.index], 0.0)
                    any_face = True
                stored_frames += int(any_face)
        finally:
            tracker.close()
    if not samples:
        return None
    keys = sorted(samples)
    out: dict[str, list] = {k: [] for k in ("image", "lmk", "mask", "cam", "affine", "rot", "trans",
                                            "expr", "ident", "fit_rms", "frame", "time")}
    for k in keys:
        smp = samples[k]
        p, rms = params[k]
        _, rz = crop_camera(cam, smp["affine"], s)
        for name in ("image", "lmk", "mask", "cam", "affine", "time"):
            out[name].append(smp[name])
        out["rot"].append(rz @ quat_to_matrix(p.rotation))
        out["trans"].append(rz @ p.translation)
        out["expr"].append(p.expression)
        out["ident"].append(p.identity)
        out["fit_rms"].append(rms)
        out["frame"].append(k[0])
    types = {"image": np.uint8, "lmk": np.float32, "mask": np.uint8, "cam": np.float32,
             "affine": np.float64, "rot": np.float32, "trans": np.float32, "expr": np.float32,
             "ident": np.float32, "fit_rms": np.float32, "frame": np.int64, "time": np.float64}
    return {k: np.stack(v).astype(types[k]) for k, v in out.items()}


def known_coefficients(src: Path, model: FaceModel) -> tuple[object, dict[int, object]] | None:
    """``(true camera, {frame: FaceParams})`` when ``src`` is a clip rendered with known
    coefficients (module doc), else ``None``."""
    side = src.with_suffix(".csv.json")
    if src.suffix.lower() not in VIDEO_EXT or not side.is_file():
        return None
    try:
        if not json.loads(side.read_text()).get("synthetic", {}).get("ground_truth"):
            return None
    except (OSError, json.JSONDecodeError):
        return None
    from tracker.bench_synth import read_truth, truth_params
    from tracker.types import FaceParams

    table, cam = read_truth(src)
    gt = truth_params(table, model)
    rows = {int(f): FaceParams(gt["q"][k], gt["t"][k], gt["e"][k].astype(np.float32),
                               gt["id"][k].astype(np.float32))
            for k, f in enumerate(gt["frame"]) if np.isfinite(gt["q"][k]).all()}
    return cam, rows


def render_clips(folder: Path, seeds: Iterable[int], seconds: float = 2.0,
                 size: int = 512) -> list[Path]:
    """Clips rendered from the model with known coefficients (:func:`tracker.synth.synth`), one
    per seed, in ``folder``; a clip whose video and truth are already there is kept (resumable)."""
    from tracker.facemodel import load_face_model
    from tracker.synth import synth, truth_paths

    folder.mkdir(parents=True, exist_ok=True)
    model = None
    out = []
    for seed in seeds:
        mp4 = folder / f"render_{seed}.mp4"
        if not (mp4.is_file() and all(p.is_file() for p in truth_paths(mp4))):
            model = model or load_face_model()
            synth(mp4, model, seconds=seconds, size=(size, size), seed=seed)
        out.append(mp4)
    return out


def load_cache(cache: Path, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
               ) -> dict[str, np.ndarray]:
    """Concatenate the shards of sources whose path contains any of ``include`` (all when empty)
    and none of ``exclude``. Adds ``source (N,) int64`` (index into the sorted source list) and
    returns the list as ``sources`` (object array of str)."""
    idx = read_index(cache)
    names = sorted(k for k, v in idx["sources"].items() if v["n"] > 0
                   and (not include or any(s in k for s in include))
                   and not any(s in k for s in exclude))
    if not names:
        raise InputError(f"{cache}: no cached samples match include={include} exclude={exclude}")
    parts: dict[str, list[np.ndarray]] = {}
    for i, name in enumerate(names):
        with np.load(cache / "shards" / idx["sources"][name]["shard"], allow_pickle=False) as z:
            for k in z.files:
                parts.setdefault(k, []).append(z[k])
            parts.setdefault("source", []).append(np.full(len(z["image"]), i, np.int64))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["sources"] = np.array(names, dtype=object)
    return out
