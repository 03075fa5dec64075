"""Synthetic clips rendered from the face model alone, with their ground truth.

``synth(out_mp4, model, seconds, size, fps, seed)`` renders a talking, turning, blinking head —
the whole ICT head (face, scalp and neck, eye sockets, eyeballs, mouth socket, gums,
tongue, teeth) with a painted albedo (:mod:`tracker.albedo`: skin, lips, brows, sclera, iris,
pupil, teeth, a dark mouth), lit by Deep3DFaceRecon-style SH lighting, antialiased, over a
procedural background (a grey gradient with soft low-frequency blotches; never a photograph) —
and writes:

* ``OUT.mp4``: H.264 (yuv420p, CRF 12: near-lossless so trackers see the render, not the codec);
* ``OUT.csv``: the true coefficients in ``face3d track``'s layout (:mod:`tracker.csvout`) with
  SH lighting and the projected 68 ICT landmarks, one row per frame;
* ``OUT.csv.json``: the sidecar (as :func:`tracker.track.sidecar` writes it) with the *true*
  camera intrinsics, plus a ``synthetic`` block (seed, palette, ranges).

Everything is a pure function of ``(model, settings, seed)``: :func:`synth_params` draws the
coefficient trajectories, :func:`render_frame` draws one frame.

Motion (all smooth, random per seed): identity ~ N(0, 0.6²) per mode; head yaw within ±40°,
pitch ±20°, roll ±12°, translation ±3 cm sideways and ±5 cm in depth around 0.6 m; talking
(``jawOpen`` syllables at ~4 Hz with pauses, lip shapes ``mouthFunnel``/``mouthPucker``/
``mouthClose``/``mouthLowerDown``/``mouthUpperUp``), blinks every 2–5 s (150–250 ms, both eyes),
smiles, brow raises and frowns, and small gaze shifts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .albedo import Palette, random_palette, vertex_albedo
from .camera import camera_from_fov
from .facemodel import FaceModel
from .rotation import euler_to_quat, quat_to_matrix
from .scene import (
    HeadMesh,
    composite,
    head_mesh,
    numba_threads,
    posed_vertices,
    render_layer,
    sh_colours,
    transform_points,
)
from .types import Camera, FaceParams

log = logging.getLogger(__name__)

HEAD_PARTS = ("face", "head_and_neck", "mouth_socket", "gums_and_tongue", "teeth",
              "eye_socket_left", "eye_socket_right", "eyeball_left", "eyeball_right")
"""Rendered parts. ICT's eyelash cards render as a dark band under the eye without their
texture's alpha, so lashes are painted on the lid margins instead (:mod:`tracker.albedo`)."""
DEMO_SECONDS = 6.0


@dataclass(frozen=True)
class SynthSettings:
    """``size`` (width, height) pixels; ``fov_deg`` along the longer side; ``distance_m`` mean
    head distance; pose ranges in degrees; ``id_scale`` std of identity coefficients."""

    seconds: float = 4.0
    size: tuple[int, int] = (512, 512)
    fps: float = 30.0
    seed: int = 0
    fov_deg: float = 40.0
    distance_m: float = 0.6
    yaw_deg: float = 40.0
    pitch_deg: float = 20.0
    roll_deg: float = 12.0
    id_scale: float = 0.6
    crf: int = 12

    def __post_init__(self) -> None:
        w, h = self.size
        if w < 64 or h < 64 or w % 2 or h % 2:
            raise ValueError(f"size must be even and at least 64x64, got {w}x{h}")
        if not (0 < self.fps <= 240) or not (0 < self.seconds <= 3600):
            raise ValueError(f"need 0 < fps <= 240 and 0 < seconds <= 3600, got {self.fps}, "
                             f"{self.seconds}")

    @property
    def n_frames(self) -> int:
        return max(1, round(self.seconds * self.fps))


# ---------------------------------------------------------------------------- trajectories

def _smooth_noise(rng: np.random.Generator, t: np.ndarray, freqs: tuple[float, ...]) -> np.ndarray:
    """A smooth random signal in about [-1, 1]: sines at ``freqs`` Hz with random phases."""
    amp = rng.uniform(0.5, 1.0, len(freqs))
    s = sum(a * np.sin(2 * np.pi * f * rng.uniform(0.8, 1.25) * t + rng.uniform(0, 2 * np.pi))
            for a, f in zip(amp, freqs))
    return s / amp.sum()


def _pulses(rng: np.random.Generator, t: np.ndarray, gap: tuple[float, float],
            width: tuple[float, float], start: float = 0.3,
            peak: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Smooth bumps (raised cosines of random height in ``peak``) ``gap`` seconds apart."""
    out = np.zeros_like(t)
    c = start + rng.uniform(0.0, gap[0])
    while c < t[-1] + width[1]:
        w = rng.uniform(*width)
        x = np.clip((t - c) / w, -0.5, 0.5)
        out = np.maximum(out, rng.uniform(*peak) * (0.5 + 0.5 * np.cos(2 * np.pi * x)))
        c += w + rng.uniform(*gap)
    return out


def _episodes(rng: np.random.Generator, t: np.ndarray, rate_s: float, dur: tuple[float, float],
              level: tuple[float, float]) -> np.ndarray:
    """Slow smooth episodes (e.g. a smile) of random level, roughly one per ``rate_s`` seconds."""
    out = np.zeros_like(t)
    c = rng.uniform(0.0, rate_s)
    while c < t[-1]:
        d, lv = rng.uniform(*dur), rng.uniform(*level)
        x = np.clip((t - c) / d, 0.0, 1.0)
        out = np.maximum(out, lv * np.sin(np.pi * x) ** 2)
        c += d + rng.exponential(rate_s)
    return out


def synth_params(model: FaceModel, settings: SynthSettings) -> tuple[np.ndarray, list[FaceParams]]:
    """Frame times ``(N,)`` seconds and the true :class:`FaceParams` of every frame."""
    s = settings
    rng = np.random.default_rng(s.seed)
    n = s.n_frames
    t = np.arange(n) / s.fps
    names = model.exp_names
    ident = (rng.normal(0.0, s.id_scale, model.n_identity)).astype(np.float32)
    yaw = s.yaw_deg * _smooth_noise(rng, t, (0.11, 0.23, 0.41))
    pitch = s.pitch_deg * _smooth_noise(rng, t, (0.13, 0.29, 0.47))
    roll = s.roll_deg * _smooth_noise(rng, t, (0.09, 0.31))
    tx = 0.03 * _smooth_noise(rng, t, (0.07, 0.19))
    ty = 0.02 * _smooth_noise(rng, t, (0.08, 0.21))
    tz = -s.distance_m + 0.05 * _smooth_noise(rng, t, (0.05, 0.17))
    e = np.zeros((n, len(names)), np.float32)

    def put(name: str, value: np.ndarray) -> None:
        if name in names:
            e[:, names.index(name)] = np.clip(np.maximum(e[:, names.index(name)], value), 0, 1)

    speaking = np.clip(1.3 * _smooth_noise(rng, t, (0.15, 0.33)) + 0.6, 0.0, 1.0)
    syll = _pulses(rng, t, (0.02, 0.12), (0.14, 0.3), peak=(0.4, 1.0))
    jaw = speaking * syll * 0.45
    put("jawOpen", jaw)
    put("mouthClose", 0.25 * jaw * _pulses(rng, t, (0.3, 1.0), (0.3, 0.6)))
    put("mouthFunnel", 0.5 * speaking * _pulses(rng, t, (0.6, 1.8), (0.2, 0.4)))
    put("mouthPucker", 0.6 * speaking * _pulses(rng, t, (0.8, 2.5), (0.2, 0.4)))
    lower = 0.4 * speaking * syll * _smooth_noise(rng, t, (0.7,)) ** 2
    upper = 0.3 * speaking * syll * _smooth_noise(rng, t, (0.6,)) ** 2
    for side in ("L", "R"):
        put(f"mouthLowerDown_{side}", lower)
        put(f"mouthUpperUp_{side}", upper)
    smile = _episodes(rng, t, 3.0, (1.0, 2.5), (0.3, 0.8))
    asym = 1.0 + 0.15 * _smooth_noise(rng, t, (0.2,))
    for side, k in (("L", asym), ("R", 2.0 - asym)):
        put(f"mouthSmile_{side}", smile * k)
        put(f"cheekSquint_{side}", 0.5 * smile * k)
        put(f"eyeSquint_{side}", 0.3 * smile * k)
    raise_ = _episodes(rng, t, 3.5, (0.6, 1.5), (0.3, 0.9))
    frown = _episodes(rng, t, 5.0, (0.8, 1.8), (0.3, 0.7)) * (raise_ < 0.05)
    for side in ("L", "R"):
        put(f"browInnerUp_{side}", raise_)
        put(f"browOuterUp_{side}", 0.8 * raise_)
        put(f"browDown_{side}", frown)
    blink = _pulses(rng, t, (2.0, 5.0), (0.15, 0.25), start=0.5)
    for side in ("L", "R"):
        put(f"eyeBlink_{side}", blink)
    gx = 0.3 * _smooth_noise(rng, t, (0.25, 0.6))
    gy = 0.25 * _smooth_noise(rng, t, (0.2, 0.5))
    for side in ("L", "R"):
        left, right = np.maximum(gx, 0), np.maximum(-gx, 0)
        put(f"eyeLookOut_{side}" if side == "L" else f"eyeLookIn_{side}", left)
        put(f"eyeLookIn_{side}" if side == "L" else f"eyeLookOut_{side}", right)
        put(f"eyeLookDown_{side}", np.maximum(gy, 0))
        put(f"eyeLookUp_{side}", np.maximum(-gy, 0))
    light = _lighting(rng)
    quats = euler_to_quat(yaw, pitch, roll)
    params = [FaceParams(rotation=quats[i], translation=np.array([tx[i], ty[i], tz[i]]),
                         expression=e[i].copy(), identity=ident, lighting=light)
              for i in range(n)]
    return t, params


def _lighting(rng: np.random.Generator) -> np.ndarray:
    """Deep3DFaceRecon SH ``gamma (27,)``: warm-white ambient plus a light from above-front."""
    g = np.zeros((3, 9), np.float32)
    tint = np.array([1.0, rng.uniform(0.93, 1.0), rng.uniform(0.82, 0.95)])
    d = np.array([rng.uniform(-0.7, 0.7), rng.uniform(0.2, 0.8), 1.0])
    d /= np.linalg.norm(d)
    g[:, 0] = rng.uniform(0.7, 0.85) * tint
    k = rng.uniform(0.28, 0.42)
    g[:, 1], g[:, 2], g[:, 3] = -k * d[1] * tint, k * d[2] * tint, -k * d[0] * tint
    g[:, 6] = -0.05 * tint                                # a little less light from the sides
    return g.reshape(-1)


# ---------------------------------------------------------------------------- rendering

def background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Procedural background ``(H, W, 3) uint8``: a vertical grey gradient, a slight colour tint
    and soft low-frequency blotches (upsampled noise)."""
    import cv2

    w, h = size
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(0.45, 0.75), rng.uniform(0.15, 0.4)
    tint = rng.uniform(0.94, 1.06, 3).astype(np.float32)
    img = (top * (1 - y) + bottom * y) * tint
    noise = rng.normal(0.0, 1.0, (6, 6, 1)).astype(np.float32) * np.ones(3, np.float32)
    noise += 0.25 * rng.normal(0.0, 1.0, (6, 6, 3)).astype(np.float32)
    blot = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    img = img + 0.04 * blot
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class SynthScene:
    """What :func:`render_frame` needs: camera, mesh (with the painted albedo), background."""

    cam: Camera
    mesh: HeadMesh
    background: np.ndarray
    palette: Palette


def make_scene(model: FaceModel, settings: SynthSettings) -> SynthScene:
    rng = np.random.default_rng([settings.seed, 1])
    palette = random_palette(rng)
    parts = tuple(p for p in HEAD_PARTS if p in model.part_names)
    mesh = head_mesh(model, parts, vertex_albedo(model, palette), eye_cap_deg=80.0)
    cam = camera_from_fov(settings.size[0], settings.size[1], settings.fov_deg)
    return SynthScene(cam, mesh, background(settings.size, rng), palette)


def render_frame(scene: SynthScene, p: FaceParams) -> np.ndarray:
    """One frame ``(H, W, 3) uint8`` RGB: the head of ``p`` (SH-lit, antialiased) over the
    background."""
    v, _ = posed_vertices(scene.mesh, p.identity, p.expression)
    x_cam = transform_points(quat_to_matrix(p.rotation), v, p.translation)
    gamma = p.lighting if p.lighting is not None else _lighting(np.random.default_rng(0))
    colours = sh_colours(scene.mesh, x_cam, scene.mesh.albedo, gamma)
    img = scene.background.copy()
    layer = render_layer(scene.cam, scene.mesh, x_cam, colours, antialias=True)
    if layer is not None:
        composite(img, layer)
    return img


# ---------------------------------------------------------------------------- files

@dataclass(frozen=True)
class SynthOutput:
    video: Path
    csv: Path
    sidecar: Path
    frames: int
    seconds: float


def synth(out_mp4: str | Path, model: FaceModel, seconds: float = 4.0,
          size: tuple[int, int] = (512, 512), fps: float = 30.0, seed: int = 0,
          settings: SynthSettings | None = None,
          truth_csv: str | Path | None = None) -> SynthOutput:
    """Render a synthetic clip and its ground truth (see the module docstring). ``settings``
    overrides the other keyword arguments; ``truth_csv`` moves the truth CSV (and its
    ``.json``) away from the default ``OUT.csv``. Files are written atomically."""
    from .videoout import H264Writer, RateControl, VideoTiming

    s = settings or SynthSettings(seconds=seconds, size=size, fps=fps, seed=seed)
    out_mp4 = Path(out_mp4)
    t0 = time.perf_counter()
    times, params = synth_params(model, s)
    scene = make_scene(model, s)
    rate = Fraction(s.fps).limit_denominator(1001)
    timing = VideoTiming(time_base=1 / rate, origin=0, rate=rate, colorspace=1, color_range=1,
                         color_primaries=1, color_trc=1)
    writer = H264Writer(out_mp4, s.size[0], s.size[1], timing, rate=RateControl("crf", s.crf),
                        preset="medium")
    try:
        with numba_threads(1):
            for i, p in enumerate(params):
                writer.write(render_frame(scene, p), i)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    times = np.array([float(i / rate) for i in range(len(params))])
    csv_path, side = write_truth(out_mp4, model, scene.cam, s, times, params, scene.palette,
                                 time.perf_counter() - t0, truth_csv)
    return SynthOutput(out_mp4, csv_path, side, len(params), time.perf_counter() - t0)


def truth_paths(out_mp4: str | Path, truth_csv: str | Path | None = None) -> tuple[Path, Path]:
    """``OUT.csv`` (or ``truth_csv``) and its sidecar ``OUT.csv.json`` beside ``OUT.mp4``."""
    csv_path = Path(truth_csv) if truth_csv is not None else Path(out_mp4).with_suffix(".csv")
    return csv_path, Path(str(csv_path) + ".json")


def write_truth(out_mp4: Path, model: FaceModel, cam: Camera, s: SynthSettings, times: np.ndarray,
                params: list[FaceParams], palette: Palette, seconds: float,
                truth_csv: str | Path | None = None) -> tuple[Path, Path]:
    """Ground-truth CSV (track's layout with SH lighting and lmk68) and sidecar, atomically."""
    from .csvout import AtomicCsv, face3d_columns, face3d_row, write_json_atomic
    from .pipeline import TrackConfig
    from .track import TrackOutputs, TrackSummary, project_lmk68, sidecar
    from .types import VideoInfo

    csv_path, side_path = truth_paths(out_mp4, truth_csv)
    names = model.exp_names
    cols = face3d_columns(names, model.n_identity, lighting=True, landmarks=True)
    w = AtomicCsv(csv_path, cols)
    try:
        for i, (ti, p) in enumerate(zip(times, params)):
            w.write(face3d_row(len(cols), i, float(ti), 0, "tracked", 1.0, p, names,
                               project_lmk68(model, cam, p), lighting=True, landmarks=True))
        w.commit()
    except BaseException:
        w.abort()
        raise
    out = TrackOutputs(csv_path, landmarks=True)
    info = VideoInfo(str(out_mp4), "synthetic", cam.width, cam.height, s.fps, 1.0, 0,
                     len(params), len(params) / s.fps, "h264", False)
    cfg = TrackConfig(focal_px=cam.fy, smooth="none")
    summary = TrackSummary(str(out_mp4), csv_path, len(params), len(params), 1, seconds)
    data = sidecar(out, cols, model, cam, info, cfg, summary)
    data["synthetic"] = {"generator": "tracker.synth", "ground_truth": True,
                         "settings": asdict(s), "palette": asdict(palette),
                         "parts": list(HEAD_PARTS),
                         "note": "rendered from the face model alone; coefficients are exact"}
    write_json_atomic(side_path, data)
    return csv_path, side_path


def render_demo_clip(out_path: str | Path, model: FaceModel) -> Path:
    """The demo input when no media is configured: a 6 s synthetic clip (seed 0) at 512x512.

    Its truth goes to ``OUT.truth.csv`` (+ ``.json``), so that tracking the clip into ``OUT.csv``
    (what ``face3d demo`` does) leaves it next to the tracked result for comparison.
    """
    out = Path(out_path)
    return synth(out, model, seconds=DEMO_SECONDS, size=(512, 512), fps=30.0, seed=0,
                 truth_csv=out.with_name(out.stem + ".truth.csv")).video
