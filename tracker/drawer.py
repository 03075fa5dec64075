"""Drawing reconstructed faces over images: the overlay's three modes (:mod:`tracker.overlay`).

Modes: ``"shaded"`` — the ICT face and eyeballs (clay albedo, painted eyes) lit by a fixed Lambert
light, or by the face's own SH lighting when its :class:`~tracker.types.FaceParams` carries one,
alpha-blended with antialiased edges; ``"wire"`` — MediaPipe's face-mesh tessellation placed on
the fitted surface through the MediaPipe↔ICT correspondence, hidden edges dropped by a z-buffer;
``"points"`` — the projected ICT iBUG-68 points.

Each face becomes one *mark* in the coordinates of the whole image: a shaded face a
:class:`~tracker.scene.Layer` (premultiplied RGBA over its box), lines and dots
:class:`Marks` (a ``uint8`` coverage mask drawn by OpenCV, antialiased, and one flat colour).
:class:`FaceDrawer` blends the marks, farthest face first, into an RGB window
(:meth:`FaceDrawer.draw_window`, stills) or straight into a frame's 4:2:0 planes
(:meth:`FaceDrawer.draw_i420`, videos: no RGB frame is made or converted; kernels in
:mod:`kernels.colour`). Pixels outside the marks keep their values bit for bit.

Videos use :data:`VIDEO_STYLE`: a low-polygon face (:mod:`tracker.lowpoly`) rendered at reduced
resolution. The wireframe's hidden-edge test uses the same low-poly surface's z-buffer, with
MediaPipe's points posed where the full surface has them: it agrees with the full mesh's
z-buffer on 92–95 % of the edges of d3/s18/d13 (frame means) and on the 50°-turned model head
(``tests/test_drawer.py``); where they differ it is mostly the full mesh that drops eyelid
edges (the lid margin's fine folds), so the low-poly eye contours are the more complete.
Measured on d3 (512x512): the drawing thread alone, median CPU a frame, wire 4.1 → 1.75 ms
(full-mesh z-buffer and an RGB window converted to YUV, against this and the mask blended into
the planes); in a ``track --overlay`` run, points 2.17 → 0.89 ms (the whole mesh was posed to
find the window of 68 dots, then the window converted).

Per-frame maths avoids BLAS (:func:`tracker.scene.combine`: OpenBLAS's idle workers spun away
4.5 ms of CPU per frame) and numba runs with ``threads=1`` by default (its OpenMP workers spin at
barriers while decoder and encoder hold the cores: 42–75 against 6.6–7.2 ms of CPU for a 512x512
draw measured on a loaded machine); pass ``threads=None`` for all cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from kernels.colour import (
    blend_layer_i420,
    blend_mask,
    blend_mask_i420,
    blend_premultiplied,
    blend_scaled_layer_i420,
)

from .facemodel import FaceModel
from .rotation import quat_to_matrix
from .scene import (
    NEAR,
    HeadMesh,
    Layer,
    ScaledLayer,
    combine,
    face_box,
    head_mesh,
    lambert_colours,
    numba_threads,
    part_vertex_ids,
    posed_vertices,
    project_points,
    render_layer,
    sh_colours,
    transform_points,
    visible_points,
)
from .types import Camera, FaceParams

if TYPE_CHECKING:
    from .correspondence import Correspondence

Mode = Literal["shaded", "wire", "points"]
MODES: tuple[str, ...] = ("shaded", "wire", "points")
OVERLAY_PARTS = ("face", "eyeball_left", "eyeball_right")
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
MARGIN_PX = 3
"""Margin of a wire or points mask around its points: room for the antialiased line or dot."""
LIGHT_DIR = (-0.35, 0.45, 1.0)
"""Overlay light direction (toward the light, camera space): above-left of the camera."""


@dataclass(frozen=True)
class OverlayStyle:
    """``alpha``: opacity of the shaded face; ``antialias``: soften its silhouette;
    ``render_scale``: resolution of the face layer (< 1: rendered smaller, resized up);
    ``max_layer_px``: at most this many pixels along the layer's longer side (0: no cap);
    ``lowpoly``: draw a front face of about this many vertices (:mod:`tracker.lowpoly`; 0 = the
    full mesh) — the wireframe's hidden-edge test uses it too; ``ambient`` / ``diffuse``:
    Lambert terms of the fixed light; ``line_px`` / ``point_px``: wire and dot size (``0``: from
    the face size); ``wire_alpha``: opacity of the wireframe."""

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
"""The style of video overlays (``face3d track --overlay``, :func:`tracker.overlay.write_overlay`)."""


@dataclass(frozen=True)
class Marks:
    """Lines or dots of one flat colour: ``coverage (h, w) uint8`` (255 = covered) over image
    pixels ``[y0, y0 + h) x [x0, x0 + w)`` — even corners and sizes inside an even-sized image,
    so it maps onto whole 4:2:0 chroma samples — ``rgb`` 0–255 and ``opacity`` in [0, 1]."""

    x0: int
    y0: int
    coverage: np.ndarray
    rgb: tuple[int, int, int]
    opacity: float


Mark = Layer | ScaledLayer | Marks


def mark_box(m: Mark) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` image pixels a mark covers (exclusive ends)."""
    if isinstance(m, ScaledLayer):
        return m.x0, m.y0, m.x0 + m.width, m.y0 + m.height
    h, w = (m.rgba if isinstance(m, Layer) else m.coverage).shape[:2]
    return m.x0, m.y0, m.x0 + w, m.y0 + h


def even_box(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` grown to even corners (whole 4:2:0 chroma samples), clipped to the image."""
    x0, y0, x1, y1 = box
    return (max(x0, 0) & ~1, max(y0, 0) & ~1, min(width, (x1 + 1) & ~1),
            min(height, (y1 + 1) & ~1))


_ALBEDO_CACHE: dict[tuple, np.ndarray] = {}


class FaceDrawer:
    """Draws faces from :class:`FaceParams` over images of one camera. Holds the prepared mesh
    (none for ``"points"``), the MediaPipe tessellation on it (``"wire"``), and the last
    identity's evaluated base (identity is held per track, so it is evaluated once); otherwise
    stateless. Not thread-safe."""

    def __init__(self, model: FaceModel, cam: Camera, mode: Mode = "shaded",
                 style: OverlayStyle = OverlayStyle(), threads: int | None = 1) -> None:
        if mode not in MODES:
            raise ValueError(f"overlay mode must be one of {MODES}, got {mode!r}")
        self.model, self.cam, self.mode, self.style, self.threads = model, cam, mode, style, threads
        self.mesh: HeadMesh | None = None
        self._wire: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._ident_key: bytes | None = None
        self._ident_base: np.ndarray | None = None
        if mode != "points":  # the dots need 68 vertices, not a mesh
            self._build_mesh()

    def _build_mesh(self) -> None:
        from .albedo import Palette, vertex_albedo

        model, style = self.model, self.style
        clay = Palette(skin=(0.80, 0.78, 0.76), lips=(0.72, 0.52, 0.52), brows=(0.5, 0.45, 0.42),
                       brow_strength=0.3)
        parts = tuple(p for p in OVERLAY_PARTS if p in model.part_names) or ("face",)
        key = (str(model.path), model.version, model.n_vertices, clay)
        if key not in _ALBEDO_CACHE:  # 40 ms a model: paid once per process
            _ALBEDO_CACHE[key] = vertex_albedo(model, clay)
        albedo = _ALBEDO_CACHE[key]
        face_tris = eye_tris = extra = None
        if style.lowpoly:
            from .lowpoly import lowpoly_eyes, lowpoly_face
            if "face" in parts:
                face_tris = lowpoly_face(model, style.lowpoly)
            eye_tris = lowpoly_eyes(model, EYE_CAP_DEG, VIDEO_LOWPOLY_EYE, albedo)
        corr = None
        if self.mode == "wire":
            from .correspondence import load_correspondence
            corr = load_correspondence()
            # MediaPipe's points where the full mesh has them, posed along with the mesh
            full = part_vertex_ids(model, parts, narrow_face=True, eye_cap_deg=EYE_CAP_DEG)
            extra = np.unique(corr.vertex_ids[np.isin(corr.vertex_ids, full).all(1)])
        self.mesh = head_mesh(model, parts, albedo, narrow_face=True, eye_cap_deg=EYE_CAP_DEG,
                              face_tris=face_tris, eye_tris=eye_tris, extra_vertices=extra)
        if corr is not None:
            self._wire = _tessellation(model, self.mesh, corr)

    # ------------------------------------------------------------------ drawing
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
        with ``patch = drawn image[y0:y1, x0:x1]`` (a new array; even corners), or ``None``
        when no face is on screen. Pixels outside the window would be left untouched."""
        marks = self.marks(faces)
        if not marks:
            return None
        boxes = np.array([mark_box(m) for m in marks])
        height, width = image.shape[:2]
        x0, y0, x1, y1 = even_box((int(boxes[:, 0].min()), int(boxes[:, 1].min()),
                                   int(boxes[:, 2].max()), int(boxes[:, 3].max())), width, height)
        patch = image[y0:y1, x0:x1].copy()
        for m in marks:
            mx0, my0, mx1, my1 = mark_box(m)
            win = patch[my0 - y0:my1 - y0, mx0 - x0:mx1 - x0]
            if isinstance(m, (Layer, ScaledLayer)):
                blend_premultiplied(win, m.rgba, self.style.alpha)
            else:
                blend_mask(win, m.coverage, np.asarray(m.rgb, np.float32), m.opacity)
        return (x0, y0, x1, y1), patch

    def draw_i420(self, faces: Sequence[FaceParams], planes: tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray],
                  coeffs: np.ndarray) -> None:
        """Draw ``faces`` (farthest first) straight into ``planes``: ``Y (H, W)``, ``U``, ``V``
        ``(H/2, W/2)`` uint8 views of an even-sized 4:2:0 frame, modified in place, in the
        colour matrix ``coeffs`` (:func:`kernels.colour.yuv_coefficients`). No RGB is made or
        converted (:func:`kernels.colour.blend_layer_i420`, or
        :func:`~kernels.colour.blend_scaled_layer_i420` for a face rendered small, which is
        resized as it is blended; :func:`~kernels.colour.blend_mask_i420`).
        The planes may be wider than the camera's frame (a decoder's rows padded to its line
        size, :meth:`tracker.videoout.DecodedI420.padded_planes`): nothing right of the frame's
        width is written."""
        width = self.cam.width
        for m in self.marks(faces):
            if isinstance(m, ScaledLayer):  # resized while it is blended (same result)
                blend_scaled_layer_i420(m.small, m.x0, m.y0, m.width, m.height, self.style.alpha,
                                        coeffs, *planes, width)
            elif isinstance(m, Layer):
                rgba = m.rgba[:, :max(0, width - m.x0)]  # layers are clipped to the frame already
                blend_layer_i420(np.ascontiguousarray(rgba), m.x0, m.y0, self.style.alpha,
                                 coeffs, *planes)
            else:
                colour = (coeffs[:, :3] @ np.asarray(m.rgb, np.float32) + coeffs[:, 3])
                blend_mask_i420(m.coverage, m.x0, m.y0, colour.astype(np.float32), m.opacity,
                                *planes)

    def marks(self, faces: Sequence[FaceParams]) -> list[Mark]:
        """One mark per face on screen, farthest face first (image coordinates)."""
        order = sorted(faces, key=lambda p: float(p.translation[2]))  # more negative z = farther
        out: list[Mark] = []
        with numba_threads(self.threads):
            for p in order:
                if self.mode == "shaded":
                    m: Mark | None = self._shaded(p)
                elif self.mode == "wire":
                    m = self._wire_marks(p)
                else:
                    m = self._point_marks(p)
                if m is not None:
                    out.append(m)
        return out

    # ------------------------------------------------------------------ internals
    def _camera_vertices(self, p: FaceParams) -> np.ndarray:
        assert self.mesh is not None
        ident = np.asarray(p.identity, np.float32)
        key = ident.tobytes()
        if key != self._ident_key:
            self._ident_key = key
            self._ident_base = None
        v, self._ident_base = posed_vertices(self.mesh, ident, p.expression, self._ident_base)
        return transform_points(quat_to_matrix(p.rotation), v, p.translation)

    def _shaded(self, p: FaceParams) -> Layer | None:
        assert self.mesh is not None
        x_cam = self._camera_vertices(p)
        if p.lighting is not None:
            colours = sh_colours(self.mesh, x_cam, self.mesh.albedo, p.lighting)
        else:
            colours = lambert_colours(self.mesh, x_cam, self.mesh.albedo, LIGHT_DIR,
                                      self.style.ambient, self.style.diffuse)
        return render_layer(self.cam, self.mesh, x_cam, colours, antialias=self.style.antialias,
                            scale=self.style.render_scale, max_px=self.style.max_layer_px,
                            keep_small=True)

    def _wire_marks(self, p: FaceParams) -> Marks | None:
        import cv2

        assert self._wire is not None
        _, _, edges, contour = self._wire
        pts, vis = self.wire_points(p)
        uv = project_points(self.cam, pts)
        keep = vis[edges[:, 0]] & vis[edges[:, 1]]
        half_width = float(np.ptp(uv[:, 0])) / 2.0 if len(uv) else 0.0
        if half_width < WIRE_DENSE_MIN_PX:  # a small face: the full tessellation is a solid blob
            keep &= contour
        box = face_box(self.cam, pts, margin=MARGIN_PX + self.style.line_px)
        if not keep.any() or box is None:
            return None
        x0, y0, x1, y1 = even_box(box, self.cam.width, self.cam.height)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        seg = np.round((uv[edges[keep]] - (x0, y0)) * 16).astype(np.int32)  # 4 fractional bits
        cv2.polylines(mask, seg, False, 255, self.style.line_px, cv2.LINE_AA, 4)
        return Marks(x0, y0, mask, WIRE_RGB, self.style.wire_alpha)

    def wire_points(self, p: FaceParams) -> tuple[np.ndarray, np.ndarray]:
        """The wireframe's MediaPipe points on the posed surface, camera space ``(P, 3)``, and
        which of them the mesh does not hide ``(P,) bool`` (its z-buffer, at the style's
        resolution and size cap, 3 mm tolerance: :func:`tracker.scene.visible_points`)."""
        assert self.mesh is not None and self._wire is not None
        x_cam = self._camera_vertices(p)
        ids, bary, _, _ = self._wire
        pts = np.einsum("pkc,pk->pc", x_cam[ids], bary)
        return pts, visible_points(self.cam, self.mesh, x_cam, pts,
                                   scale=min(1.0, self.style.render_scale),
                                   max_px=self.style.max_layer_px)

    def _point_marks(self, p: FaceParams) -> Marks | None:
        import cv2

        v = lmk68_vertices(self.model, p.identity, p.expression)
        x = transform_points(quat_to_matrix(p.rotation), v, p.translation)
        x = x[x[:, 2] < -NEAR]
        if not len(x):
            return None
        uv = project_points(self.cam, x)
        iod = float(np.linalg.norm(uv[36] - uv[45])) if len(uv) == 68 else 50.0
        r = self.style.point_px or max(1, round(iod / 45.0))
        box = face_box(self.cam, x, margin=MARGIN_PX + r)
        if box is None:
            return None
        x0, y0, x1, y1 = even_box(box, self.cam.width, self.cam.height)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        for u, v_ in np.round((uv - (x0, y0)) * 16).astype(np.int64):
            cv2.circle(mask, (int(u), int(v_)), r * 16, 255, -1, cv2.LINE_AA, 4)
        return Marks(x0, y0, mask, POINT_RGB, 1.0)


def lmk68_vertices(model: FaceModel, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
    """Model-space iBUG-68 vertices ``(68, 3)`` (like :func:`tracker.facemodel.vertices` with
    ``idx=lmk68_idx``, without BLAS: see :func:`tracker.scene.combine`)."""
    idx = model.lmk68_idx
    v = model.neutral[idx].reshape(-1) + combine(identity, model.id_basis[:, idx].reshape(
        model.n_identity, -1)) + combine(expression, model.exp_basis[:, idx].reshape(
            model.n_expression, -1))
    return v.reshape(-1, 3)


def _tessellation(model: FaceModel, mesh: HeadMesh, corr: Correspondence
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe points on the mesh (subset vertex ids ``(P, 3)``, barycentrics ``(P, 3)``), the
    tessellation's edges ``(E, 2)`` as rows of those, and which edges are contours ``(E,) bool``
    (lips, eyes, brows, face oval). Points whose vertices the mesh lacks are left out."""
    from mediapipe.python.solutions.face_mesh_connections import (
        FACEMESH_CONTOURS,
        FACEMESH_TESSELATION,
    )

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
