"""Overlay: the reconstructed faces drawn over the input, as an H.264 video or a still image.

:func:`write_overlay` decodes the input again (:func:`tracker.sources.open_source`), draws each
frame's faces from the final (smoothed) results with a :class:`FaceDrawer`, and encodes with
:class:`tracker.videoout.H264Writer` at the input's exact size, frame rate, timestamps, sample
aspect ratio and colour tags, with its audio copied. Decoding, drawing and encoding run in three
threads: PyAV releases the GIL while it decodes, converts and encodes, and the numba kernels of
``kernels/`` are compiled ``nogil`` (while they held it, a competing pure-Python thread was
measured to stretch a 2.5 ms rasterize to 8.9 ms — the GIL switch interval).

Modes: ``"shaded"`` — the ICT face and eyeballs (clay albedo, painted eyes) lit by a fixed Lambert
light, or by the face's own SH lighting when its :class:`~tracker.types.FaceParams` carries one,
alpha-blended with antialiased edges; ``"wire"`` — MediaPipe's face-mesh tessellation placed on
the fitted surface through the MediaPipe↔ICT correspondence, hidden edges dropped by a z-buffer;
``"points"`` — the projected ICT iBUG-68 points. Pixels away from the drawn faces are the decoded
input, untouched before encoding: :class:`FaceDrawer` draws into the window the faces cover
(:meth:`FaceDrawer.draw_window`), and during ``face3d track --overlay`` the encoder gets the
decoder's own YUV planes with a shaded face blended into them in YUV, or only the drawn window
converted back from RGB (8-bit 4:2:0 inputs; others go through RGB; :class:`_DrawStage`).

Threads and spinning (measured on the 2-core machine while other jobs loaded it, draw of one
512x512 frame + 3 ms idle, CPU per iteration): numba ``threads=1`` 6.6–7.2 ms; numba default
(2 OpenMP threads) 42–75 ms — its workers spin at barriers while decoder and encoder hold the
cores; with ``OMP_WAIT_POLICY=passive`` 10–12 ms. So drawing runs numba with ``threads=1`` (no
process-wide setting needed; pass ``threads=None`` to :func:`write_overlay` for all cores).
For the same reason the per-frame maths avoids BLAS (:func:`tracker.scene.combine`): OpenBLAS's
idle workers spun away 4.5 ms of CPU per frame. ``tracker/bench_overlay.py`` times the whole
overlay against the decode + MediaPipe floor.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from kernels.colour import (
    blend_layer_i420,
    blend_premultiplied,
    rgb_to_i420,
    yuv_coefficients,
)

from . import threadcpu
from .errors import InputError
from .facemodel import FaceModel
from .rotation import quat_to_matrix
from .scene import (
    HeadMesh,
    Layer,
    combine,
    face_box,
    head_mesh,
    lambert_colours,
    numba_threads,
    posed_vertices,
    project_points,
    render_layer,
    sh_colours,
    sub_camera,
    transform_points,
    visible_points,
)
from .types import Camera, FaceParams, FrameResult
from .videoout import I420

log = logging.getLogger(__name__)

Mode = Literal["shaded", "wire", "points"]
MODES: tuple[str, ...] = ("shaded", "wire", "points")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
OVERLAY_PARTS = ("face", "eyeball_left", "eyeball_right")
DEFAULT_CRF = 23
"""libx264 CRF of overlay videos: x264's own default quality. Measured with ultrafast, one thread
(x264 alone on decoded d13 frames, 720x1280, CPU per frame / size): CRF 20 3.6 ms / 21.6 KB,
23 2.9–3.2 ms / 14.1 KB, 26 2.5–2.8 ms / 8.8 KB; 512x512 (WDA) CRF 23 1.1–1.3 ms. At 720p the
encoder is the largest part of the overlay's cost. A constant QP would skip CRF's look-ahead
estimate (0.4–0.6 ms at 720p) but ignores the content: on grainy WDA, QP 19 doubles the file
against CRF 23, which settles at QP 25 there. So CRF it is; ``--overlay-crf`` trades."""
DEFAULT_PRESET = "ultrafast"
"""libx264 preset. Measured re-encoding d10 (512x512, CRF 20, 2 loaded cores): ultrafast 6.7 KB
per frame, superfast 3.8, veryfast 2.4, for 3.5 / 4.6 / 6.2 ms of CPU per frame (RGB→YUV and
muxing included). The overlay must keep up with tracking (≥ 0.5x the decode+MediaPipe floor for
the whole ``track --overlay`` run), so the fastest preset wins; pass ``preset`` for smaller files."""
VIDEO_LOWPOLY = 1200
"""Video overlays draw the front face with about this many vertices (:mod:`tracker.lowpoly`): 2.0
instead of 3.3 ms a 512x512 frame at half resolution."""
VIDEO_LOWPOLY_EYE = 120
"""… and each eyeball layer (sclera cap, iris) with about this many vertices, plus the rims and
painted edges (:func:`tracker.lowpoly.lowpoly_eyes`): 648 instead of 1,714 triangles an eye (an
eye is ~20 px wide in the layer); the overlay mesh drops from 5,579 to 3,411 triangles. Measured
on d13 (720x1280), CPU per frame in a ``track --overlay`` run: drawing 3.06 → 2.71 ms, of which
rasterizing the layer 1.53 → 1.25 ms."""
VIDEO_STYLE_SCALE = 0.5
"""Video overlays render the face layer at half resolution and resize it up: 3.4 ms instead of
8.3 ms (antialiased) per 512x512 frame, visually the same at video size. Stills (``face3d
render``) keep full resolution with antialiasing."""
VIDEO_MAX_LAYER_PX = 200
"""Video overlays render the face layer at most this many pixels tall or wide (then resize it
up): a face filling a 720x1280 frame (d13, ~500 px) rendered at half size cost 2.4 ms a frame."""
WIRE_RGB = (90, 235, 255)
WIRE_DENSE_MIN_PX = 70.0
"""Below this half-width of the face (pixels) the wireframe shows contours only."""
POINT_RGB = (255, 70, 60)
EYE_CAP_DEG = 70.0
"""Eyeball triangles beyond this angle from the eye's axis are never visible; not drawn."""
WINDOW_MARGIN_PX = 12
"""Margin of the drawn window around the projected mesh: room for wire lines, dots and the
antialiased edge."""
LIGHT_DIR = (-0.35, 0.45, 1.0)
"""Overlay light direction (toward the light, camera space): above-left of the camera."""


@dataclass(frozen=True)
class OverlayStyle:
    """``alpha``: opacity of the shaded face; ``antialias``: soften its silhouette;
    ``render_scale``: resolution of the face layer (< 1: rendered smaller, resized up);
    ``max_layer_px``: at most this many pixels along the layer's longer side (0: no cap);
    ``lowpoly``: draw a front face of about this many vertices (:mod:`tracker.lowpoly`; 0 = the
    full mesh); ``ambient`` /
    ``diffuse``: Lambert terms of the fixed light; ``line_px`` / ``point_px``: wire and dot size
    (``0``: from the face size); ``wire_alpha``: opacity of the wireframe."""

    alpha: float = 0.8
    antialias: bool = True
    render_scale: float = 1.0
    max_layer_px: int = 0
    lowpoly: int = 0
    ambient: float = 0.35
    diffuse: float = 0.7
    line_px: int = 1
    point_px: int = 0
    wire_alpha: float = 0.75


VIDEO_STYLE = OverlayStyle(render_scale=VIDEO_STYLE_SCALE, lowpoly=VIDEO_LOWPOLY,
                           max_layer_px=VIDEO_MAX_LAYER_PX)
"""The style of video overlays (``face3d track --overlay``, :func:`write_overlay`)."""

_ALBEDO_CACHE: dict[tuple, np.ndarray] = {}


class FaceDrawer:
    """Draws faces from :class:`FaceParams` over images of one camera. Holds the prepared mesh,
    the MediaPipe tessellation on it, and the last identity's evaluated base (identity is held
    per track, so it is evaluated once); otherwise stateless. Not thread-safe."""

    def __init__(self, model: FaceModel, cam: Camera, mode: Mode = "shaded",
                 style: OverlayStyle = OverlayStyle(), threads: int | None = 1) -> None:
        if mode not in MODES:
            raise ValueError(f"overlay mode must be one of {MODES}, got {mode!r}")
        from .albedo import Palette, vertex_albedo

        clay = Palette(skin=(0.80, 0.78, 0.76), lips=(0.72, 0.52, 0.52), brows=(0.5, 0.45, 0.42),
                       brow_strength=0.3)
        parts = tuple(p for p in OVERLAY_PARTS if p in model.part_names) or ("face",)
        self.model, self.cam, self.mode, self.style, self.threads = model, cam, mode, style, threads
        key = (str(model.path), model.version, model.n_vertices, clay)
        if key not in _ALBEDO_CACHE:  # 40 ms a model: paid once per process
            _ALBEDO_CACHE[key] = vertex_albedo(model, clay)
        albedo = _ALBEDO_CACHE[key]
        face_tris = eye_tris = None
        if style.lowpoly and mode == "shaded":  # wire needs the full surface
            from .lowpoly import lowpoly_eyes, lowpoly_face
            if "face" in parts:
                face_tris = lowpoly_face(model, style.lowpoly)
            eye_tris = lowpoly_eyes(model, EYE_CAP_DEG, VIDEO_LOWPOLY_EYE, albedo)
        self.mesh: HeadMesh = head_mesh(model, parts, albedo, narrow_face=True,
                                        eye_cap_deg=EYE_CAP_DEG, face_tris=face_tris,
                                        eye_tris=eye_tris)
        self._ident_key: bytes | None = None
        self._ident_base: np.ndarray | None = None
        self._wire: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        if mode == "wire":
            self._wire = _tessellation(model, self.mesh)

    def draw(self, image: np.ndarray, faces: Sequence[FaceParams]) -> np.ndarray:
        """A copy of ``image`` ``(H, W, 3) uint8`` RGB with ``faces`` drawn (farthest first)."""
        out = image.copy()
        drawn = self.draw_window(image, faces)
        if drawn is not None:
            (x0, y0, x1, y1), patch = drawn
            out[y0:y1, x0:x1] = patch
        return out

    def draw_window(self, image: np.ndarray, faces: Sequence[FaceParams]
                    ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """``faces`` drawn over the window of ``image`` they cover: ``((x0, y0, x1, y1), patch)``
        with ``patch = drawn image[y0:y1, x0:x1]`` (a new array; even corners, so the window
        maps onto whole 4:2:0 chroma samples), or ``None`` when no face is on screen. Pixels
        outside the window would be left untouched."""
        order = sorted(faces, key=lambda p: float(p.translation[2]))  # more negative z = farther
        height, width = image.shape[:2]
        with numba_threads(self.threads):
            posed = [(p, self._camera_vertices(p)) for p in order]
            boxes = [b for _, x in posed if (b := face_box(self.cam, x, margin=WINDOW_MARGIN_PX))]
            if not boxes:
                return None
            b = np.array(boxes)
            x0, y0 = int(b[:, 0].min()) & ~1, int(b[:, 1].min()) & ~1
            x1 = min(width, int(b[:, 2].max() + 1) & ~1)
            y1 = min(height, int(b[:, 3].max() + 1) & ~1)
            if x1 <= x0 or y1 <= y0:
                return None
            box = (x0, y0, x1, y1)
            cam = sub_camera(self.cam, box)
            patch = image[y0:y1, x0:x1].copy()
            for p, x_cam in posed:
                if self.mode == "shaded":
                    layer = self._shaded(cam, x_cam, p)
                    if layer is not None:
                        h, w = layer.rgba.shape[:2]
                        blend_premultiplied(patch[layer.y0:layer.y0 + h, layer.x0:layer.x0 + w],
                                            layer.rgba, self.style.alpha)
                elif self.mode == "wire":
                    self._draw_wire(cam, patch, x_cam)
                else:
                    self._draw_points(cam, patch, p)
        return box, patch

    # ------------------------------------------------------------------ internals
    def _camera_vertices(self, p: FaceParams) -> np.ndarray:
        ident = np.asarray(p.identity, np.float32)
        key = ident.tobytes()
        if key != self._ident_key:
            self._ident_key = key
            self._ident_base = None
        v, self._ident_base = posed_vertices(self.mesh, ident, p.expression, self._ident_base)
        return transform_points(quat_to_matrix(p.rotation), v, p.translation)

    def draw_i420(self, image: np.ndarray, faces: Sequence[FaceParams], planes: tuple,
                  coeffs: np.ndarray) -> bool:
        """Draw one shaded face straight into ``planes`` (``Y, U, V`` views of ``image``'s own
        4:2:0 samples; :func:`kernels.colour.blend_layer_i420` with the matrix ``coeffs``):
        no RGB window is made or converted. Returns
        ``False`` (nothing drawn) for other modes or several faces — use
        :meth:`draw_window` then."""
        if self.mode != "shaded" or len(faces) != 1:
            return False
        with numba_threads(self.threads):
            x_cam = self._camera_vertices(faces[0])
            layer = self._shaded(self.cam, x_cam, faces[0])
            if layer is not None:
                blend_layer_i420(np.ascontiguousarray(layer.rgba), layer.x0, layer.y0,
                                 self.style.alpha, coeffs, *planes)
        return True

    def _shaded(self, cam: Camera, x_cam: np.ndarray, p: FaceParams) -> Layer | None:
        if p.lighting is not None:
            colours = sh_colours(self.mesh, x_cam, self.mesh.albedo, p.lighting)
        else:
            colours = lambert_colours(self.mesh, x_cam, self.mesh.albedo, LIGHT_DIR,
                                      self.style.ambient, self.style.diffuse)
        return render_layer(cam, self.mesh, x_cam, colours, antialias=self.style.antialias,
                            scale=self.style.render_scale, max_px=self.style.max_layer_px)

    def _draw_wire(self, cam: Camera, out: np.ndarray, x_cam: np.ndarray) -> None:
        import cv2

        if self._wire is None:
            return
        ids, bary, edges, contour = self._wire
        pts = np.einsum("pkc,pk->pc", x_cam[ids], bary)
        vis = visible_points(cam, self.mesh, x_cam, pts, scale=min(1.0, self.style.render_scale))
        uv = project_points(cam, pts)
        keep = vis[edges[:, 0]] & vis[edges[:, 1]]
        iod = float(np.ptp(uv[:, 0])) / 2.0 if len(uv) else 0.0
        if iod < WIRE_DENSE_MIN_PX:  # a small face: the full tessellation would be a solid blob
            keep &= contour
        seg = np.round(uv[edges[keep]] * 16).astype(np.int32)  # 4 fractional bits
        if not len(seg):
            return
        box = face_box(cam, pts, margin=3)
        if box is None:
            return
        x0, y0, x1, y1 = box
        win = out[y0:y1, x0:x1]
        drawn = win.copy()
        cv2.polylines(drawn, list(seg - np.array([x0, y0]) * 16), False, WIRE_RGB,
                      self.style.line_px, cv2.LINE_AA, 4)
        cv2.addWeighted(drawn, self.style.wire_alpha, win, 1.0 - self.style.wire_alpha, 0.0,
                        dst=win)

    def _draw_points(self, cam: Camera, out: np.ndarray, p: FaceParams) -> None:
        import cv2

        v = lmk68_vertices(self.model, p.identity, p.expression)
        x = transform_points(quat_to_matrix(p.rotation), v, p.translation)
        uv = project_points(cam, x)
        iod = float(np.linalg.norm(uv[36] - uv[45])) if len(uv) == 68 else 50.0
        r = self.style.point_px or max(1, round(iod / 45.0))
        for u, v_ in np.round(uv * 16).astype(np.int64):
            cv2.circle(out, (int(u), int(v_)), r * 16, POINT_RGB, -1, cv2.LINE_AA, 4)


def lmk68_vertices(model: FaceModel, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
    """Model-space iBUG-68 vertices ``(68, 3)`` (like :func:`tracker.facemodel.vertices` with
    ``idx=lmk68_idx``, without BLAS: see :func:`tracker.scene.combine`)."""
    idx = model.lmk68_idx
    v = model.neutral[idx].reshape(-1) + combine(identity, model.id_basis[:, idx].reshape(
        model.n_identity, -1)) + combine(expression, model.exp_basis[:, idx].reshape(
            model.n_expression, -1))
    return v.reshape(-1, 3)


def _tessellation(model: FaceModel, mesh: HeadMesh
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe points on the mesh (subset vertex ids ``(P, 3)``, barycentrics ``(P, 3)``), the
    tessellation's edges ``(E, 2)`` as rows of those, and which edges are contours ``(E,) bool``
    (lips, eyes, brows, face oval)."""
    from mediapipe.python.solutions.face_mesh_connections import (
        FACEMESH_CONTOURS,
        FACEMESH_TESSELATION,
    )

    from .correspondence import load_correspondence

    corr = load_correspondence()
    remap = np.full(model.n_vertices, -1, np.int64)
    remap[mesh.vertex_ids] = np.arange(len(mesh.vertex_ids))
    ids = remap[corr.vertex_ids]
    ok = (ids >= 0).all(1)
    row = np.full(int(corr.mp_index.max()) + 1, -1, np.int64)
    row[corr.mp_index[ok]] = np.arange(int(ok.sum()))
    contours = {tuple(sorted(c)) for c in FACEMESH_CONTOURS}
    pairs = sorted({tuple(sorted(c)) for c in FACEMESH_TESSELATION} | contours)
    e = np.array([c for c in pairs if max(c) < len(row)], np.int64)
    is_contour = np.array([tuple(c) in contours for c in e.tolist()])
    e = row[e]
    good = (e >= 0).all(1)
    return ids[ok], corr.bary[ok].astype(np.float32), e[good], is_contour[good]


@dataclass(frozen=True)
class OverlaySummary:
    path: Path
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def faces_of(result: FrameResult | None) -> list[FaceParams]:
    """Drawable faces of one frame (tracked, with parameters)."""
    if result is None:
        return []
    return [f.params for f in result.faces if f.params is not None and f.status == "tracked"]


def write_overlay(input_spec: str, out_path: str | Path, results: Sequence[FrameResult],
                  model: FaceModel, cfg: object, mode: Mode = "shaded", *,
                  style: OverlayStyle | None = None, crf: int = DEFAULT_CRF,
                  preset: str = DEFAULT_PRESET, threads: int | None = 1) -> OverlaySummary:
    """Draw ``results`` over ``input_spec`` into ``out_path`` (H.264 video, or a still image when
    the suffix is an image one), atomically. ``cfg`` is the :class:`~tracker.pipeline.TrackConfig`
    the results were tracked with (it gives the camera). ``threads``: numba threads for drawing.

    Every decoded frame is written (same count, size and timestamps as the input); a frame with
    no result is written undrawn. Raises :class:`~tracker.errors.InputError` for unreadable input.
    """
    from .pipeline import make_camera
    from .sources import open_source
    from .track import prefetch
    from .videoout import H264Writer, probe_timing

    out_path = Path(out_path)
    t0 = time.perf_counter()
    src = open_source(input_spec)
    try:
        info = src.info
        cam = make_camera(info, cfg)  # type: ignore[arg-type]
        still = out_path.suffix.lower() in IMAGE_SUFFIXES
        if style is None:
            style = OverlayStyle() if still else VIDEO_STYLE
        drawer = FaceDrawer(model, cam, mode, style, threads)
        by_index = {r.index: r for r in results}
        if still:
            frame = next(iter(src))
            write_image(out_path, drawer.draw(frame.image, faces_of(by_index.get(frame.index))))
            return OverlaySummary(out_path, 1, time.perf_counter() - t0)
        timing = probe_timing(input_spec, info.fps)
        writer = H264Writer(out_path, info.width, info.height, timing, sar=info.sar, crf=crf,
                            preset=preset, audio_from=src.path if info.has_audio else None)
        sink = _ThreadedSink(writer)
        n = 0
        try:
            for frame in prefetch(src):
                img = drawer.draw(frame.image, faces_of(by_index.get(frame.index)))
                sink.put(img, timing.pts(frame.time_s))
                n += 1
            sink.finish()
        except BaseException:
            sink.abort()
            raise
    finally:
        src.close()
    if src.truncated:
        log.warning("%s: input ended early; the overlay has the %d frames that decoded",
                    input_spec, n)
    if results and n != len(results):
        log.warning("overlay: decoded %d frames but have results for %d", n, len(results))
    return OverlaySummary(out_path, n, time.perf_counter() - t0)


class OverlayStream:
    """The overlay drawn *during* tracking (one decode for both), for ``face3d track --overlay``.

    ``add(frame, result)`` queues ``frame`` and ``result``'s faces for the drawing thread, which
    hands the picture to the encoder thread. The faces are the tracker's per-frame answers passed through a causal One Euro filter
    per face id (``smooth=True``, the live smoother): the CSV's zero-phase smoothing and identity
    refits need the whole clip, which a second decode pass (:func:`write_overlay`) would wait for
    — measured at 0.29–0.38x the decode+MediaPipe floor for track + overlay, against 0.5x
    required. The live filter lags by under a frame, so the drawn face still sits on the face.
    ``finish()`` closes a valid video with the frames added so far (also after Ctrl-C);
    ``abort()`` leaves nothing behind.
    """

    def __init__(self, input_spec: str, out_path: str | Path, model: FaceModel, cam: Camera,
                 fps: float | None, sar: float, audio_from: str | None, mode: Mode = "shaded", *,
                 style: OverlayStyle | None = None, crf: int = DEFAULT_CRF,
                 preset: str = DEFAULT_PRESET, smooth: bool = True) -> None:
        from .videoout import H264Writer, probe_timing

        self.path = Path(out_path)
        self.timing = probe_timing(input_spec, fps)
        self.drawer = FaceDrawer(model, cam, mode, style or VIDEO_STYLE, 1)
        # one x264 thread: the tracker already keeps both cores busy, and x264's own threads
        # cost 3.2 instead of 2.1 ms of CPU a 512x512 frame (measured)
        writer = H264Writer(self.path, cam.width, cam.height, self.timing, sar=sar, crf=crf,
                            preset=preset, audio_from=audio_from, threads=1)
        # drawing and encoding each run in a thread of their own (numba kernels, OpenCV and
        # PyAV release the GIL), so neither adds to the tracking thread's time per frame
        self.sink = _ThreadedSink(_DrawStage(self.drawer, _ThreadedSink(writer, depth=8), writer),
                                  depth=8, name="draw")
        self.smooth = smooth
        self._smoothers: dict[int, object] = {}
        self.frames = 0

    def add(self, image: np.ndarray, time_s: float, result: FrameResult,
            yuv: np.ndarray | None = None) -> None:
        """Queue one frame: its RGB ``image``, and the decoder's own 4:2:0 planes ``yuv`` when
        the source kept them (:attr:`tracker.types.Frame.yuv`) — then the faces are drawn into
        those planes and the rest is the input's own samples (:class:`_DrawStage`)."""
        faces = []
        for f in result.faces:
            if f.params is None or f.status != "tracked":
                continue
            p = f.params
            if self.smooth:
                sm = self._smoothers.get(f.face_id)
                if sm is None:
                    from .smoothing import LiveSmoother
                    sm = self._smoothers[f.face_id] = LiveSmoother()
                p = sm.update(time_s, p)  # type: ignore[attr-defined]
            faces.append(p)
        self.sink.put((image, yuv, faces), self.timing.pts(time_s))
        self.frames += 1

    def finish(self) -> Path:
        return self.sink.finish()

    def abort(self) -> None:
        self.sink.abort()


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write ``(H, W, 3) uint8`` RGB to ``path`` (format from the suffix) atomically."""
    import cv2

    from .videoout import temp_path

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix.lower(), np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise InputError(f"{path}: cannot encode an image with suffix {path.suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(buf.tobytes())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class _DrawStage:
    """A writer that draws ``(image, yuv, faces)`` with a :class:`FaceDrawer` and hands the
    picture to ``sink`` (a :class:`_ThreadedSink` around ``encoder``).

    With the decoder's planes (``yuv``) and a 4:2:0 limited-range output, the picture goes out as
    :class:`~tracker.videoout.I420`: the input's own samples, a shaded face blended straight into
    them (:meth:`FaceDrawer.draw_i420`; other modes and several faces: the drawn window converted
    by :func:`kernels.colour.rgb_to_i420`), in the output's matrix. That skips a full-frame
    RGB → YUV conversion per frame and keeps the background bit-exact. Otherwise RGB, converted
    by the encoder. Measured in the tracking run (d3, CPU per frame of the drawing thread /
    the encoder thread): RGB window converted to YUV 3.3 / 1.7 ms, blended into the planes
    2.5 / 1.6 ms (CRF 23); before this stage existed (full-frame RGB drawing, the encoder
    converting) 2.7–3.1 / 2.0 ms."""

    def __init__(self, drawer: FaceDrawer, sink: _ThreadedSink, encoder: object) -> None:
        self.drawer, self.sink = drawer, sink
        self.i420 = bool(getattr(encoder, "takes_i420", False)) and \
            not getattr(encoder, "full_range", True)
        self.coeffs = yuv_coefficients(getattr(encoder, "sws_colorspace", 5), False)

    def write(self, job: tuple[np.ndarray, np.ndarray | None, list[FaceParams]], pts: int) -> None:
        image, yuv, faces = job
        if yuv is None or not self.i420:
            self.sink.put(self.drawer.draw(image, faces) if faces else image, pts)
            return
        out = I420(yuv)  # the source's own copy (Frame.yuv): drawn into in place
        if not faces:
            self.sink.put(out, pts)
            return
        if not self.drawer.draw_i420(image, faces, out.planes(), self.coeffs):
            drawn = self.drawer.draw_window(image, faces)
            if drawn is not None:
                (x0, y0, x1, y1), patch = drawn
                y, u, v = out.planes()
                rgb_to_i420(patch, self.coeffs, y[y0:y1, x0:x1],
                            u[y0 // 2:y1 // 2, x0 // 2:x1 // 2], v[y0 // 2:y1 // 2, x0 // 2:x1 // 2])
        self.sink.put(out, pts)

    def close(self) -> Path:
        return self.sink.finish()

    def abort(self) -> None:
        self.sink.abort()


class _ThreadedSink:
    """Runs ``writer.write`` in a background thread behind a small queue; errors are re-raised in
    the producer at the next :meth:`put` or at :meth:`finish`."""

    def __init__(self, writer, depth: int = 4, name: str = "encode") -> None:
        self.writer = writer
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.th = threading.Thread(target=self._run, name=threadcpu.worker_name(name), daemon=True)
        self.th.start()

    def _run(self) -> None:
        try:
            while True:
                item = self.q.get()
                if item is None:
                    return
                if self.error is None:
                    try:
                        self.writer.write(*item)
                    except BaseException as e:  # noqa: BLE001 - handed to the producer
                        self.error = e
        finally:
            threadcpu.record()

    def put(self, item: object, pts: int) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((item, pts))

    def finish(self) -> Path:
        self.q.put(None)
        self.th.join()
        if self.error is not None:
            raise self.error
        return self.writer.close()

    def abort(self) -> None:
        if self.th.is_alive():
            self.error = self.error or RuntimeError("aborted")
            self.q.put(None)
            self.th.join()
        self.writer.abort()
