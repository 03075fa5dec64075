"""Rendering a posed ICT head over an image: mesh subset, posing (with rigid eyeballs), shading,
rasterizing into a layer that covers only the face's bounding box, and compositing.

Shared by the overlay (:mod:`tracker.overlay`) and the synthetic clips (:mod:`tracker.synth`).
Pure functions over arrays plus :class:`HeadMesh`, the precomputed part of the model a renderer
needs. CPU only (``kernels/`` through numba); the per-call thread count is set with
:func:`numba_threads`.

Conventions: model space and camera space as in :mod:`tracker.types` (metres; camera OpenGL-style,
looking down -z); ``X = R(q) x + t``. Eyeballs do not deform with expressions in ICT: they turn
rigidly about the centre of a sphere fitted to their sclera (:func:`tracker.gaze.make_eye_basis`)
by the angles the ``eyeLook*`` weights encode (:func:`eye_angles`, the inverse of
:func:`tracker.gaze.gaze_weights`). Layer colours are floats in [0, 1]; images ``uint8`` RGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .camera import project
from .facemodel import FaceModel
from .gaze import GAZE_RANGE_DEG, make_eye_basis
from .render import CULL_BACK, numba_threads, projection_matrix  # noqa: F401 - numba_threads re-exported
from .types import Camera

NEAR, FAR = 0.01, 100.0


@dataclass(frozen=True)
class EyeRig:
    """One eyeball in a :class:`HeadMesh`: its vertices ``[lo, hi)``, side ``"L"``/``"R"``
    (subject's), centre ``(3,)`` metres (neutral) and its identity deltas ``(I, 3)``."""

    side: str
    lo: int
    hi: int
    centre: np.ndarray
    centre_id: np.ndarray


@dataclass(frozen=True, eq=False)
class HeadMesh:
    """A renderable subset of the model. ``vertex_ids (V,)`` model ids (part by part);
    ``tris (F, 3) int32`` into the subset (outward counter-clockwise); ``neutral (V, 3)``,
    ``id_basis (I, V*3)``, ``exp_basis (E, V*3)`` float32 metres; ``albedo (V, 3)`` float32;
    ``eyes`` the rigid eyeballs; ``neighbours (F, 3) int32`` edge adjacency for antialiasing;
    ``gaze (4, E)`` :func:`gaze_matrix`."""

    vertex_ids: np.ndarray
    tris: np.ndarray
    neutral: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    albedo: np.ndarray
    eyes: tuple[EyeRig, ...]
    neighbours: np.ndarray
    exp_names: tuple[str, ...]
    gaze: np.ndarray


def head_mesh(model: FaceModel, parts: tuple[str, ...], albedo: np.ndarray | None = None, *,
              narrow_face: bool = False, eye_cap_deg: float | None = None,
              face_tris: np.ndarray | None = None,
              eye_tris: dict[str, np.ndarray] | None = None,
              extra_vertices: np.ndarray | None = None) -> HeadMesh:
    """Gather ``parts`` of ``model`` (names from ``model.part_names``) into a :class:`HeadMesh`;
    ``albedo (V_model, 3)`` per model vertex (default mid grey). Triangles that reach outside the
    chosen vertices are dropped. ``narrow_face``: keep only the front face of part ``"face"``
    (vertices below ``model.narrow_face_vertex_count``: no ears, no neck); ``eye_cap_deg``: keep
    only the eyeball cap within that angle of the eye's axis (the rest hides behind the lids even
    at full gaze — fewer triangles to rasterize); ``face_tris``: triangles (model vertex ids) to
    draw instead of part ``"face"``'s own, e.g. :func:`tracker.lowpoly.lowpoly_face`;
    ``eye_tris``: the same per eyeball part (:func:`tracker.lowpoly.lowpoly_eyes`);
    ``extra_vertices``: model vertex ids to carry as well, in no triangle (points on the surface
    that are posed along with the mesh, e.g. the wireframe's MediaPipe points on a low-poly
    face)."""
    from kernels.antialias import edge_neighbours

    missing = [p for p in parts if p not in model.part_names]
    if missing:
        raise ValueError(f"model has no part(s) {missing}; it has {model.part_names}")
    keep = np.zeros(model.n_vertices, bool)
    keep[part_vertex_ids(model, parts, narrow_face=narrow_face)] = True
    replaced = {p: t for p, t in (eye_tris or {}).items() if p in parts}
    if face_tris is not None and "face" in parts:
        replaced["face"] = face_tris
    for p, t in replaced.items():
        keep[model.part_vertices(p)] = False
        keep[np.unique(t)] = True
    _drop_beyond_eye_cap(keep, model, parts, eye_cap_deg)
    if extra_vertices is not None:
        keep[np.asarray(extra_vertices, np.int64)] = True
    ids = np.nonzero(keep)[0]
    remap = np.full(model.n_vertices, -1, np.int64)
    remap[ids] = np.arange(len(ids))
    others = tuple(p for p in parts if p not in replaced)
    all_tris = np.concatenate([np.asarray(t, np.int64) for t in replaced.values()]
                              + ([model.part_faces(*others).astype(np.int64)] if others else []))
    tris = remap[all_tris]
    tris = np.ascontiguousarray(tris[(tris >= 0).all(1)], np.int32)
    nid, nexp = model.n_identity, model.n_expression
    alb = np.full((model.n_vertices, 3), 0.6, np.float32) if albedo is None else albedo
    eyes = []
    if all(p in parts for p in ("eyeball_left", "eyeball_right")) and model.eye_subpart_names:
        eb = make_eye_basis(model)  # rows (R, L)
        for row, side in ((0, "R"), (1, "L")):
            part = "eyeball_right" if side == "R" else "eyeball_left"
            sub = remap[model.part_vertices(part)]
            sub = sub[sub >= 0]
            eyes.append(EyeRig(side, int(sub.min()), int(sub.max()) + 1, eb.centre[row],
                               np.ascontiguousarray(eb.centre_id[:, row])))
    return HeadMesh(
        vertex_ids=ids, tris=tris,
        neutral=np.ascontiguousarray(model.neutral[ids], np.float32),
        id_basis=np.ascontiguousarray(model.id_basis[:, ids].reshape(nid, -1), np.float32),
        exp_basis=np.ascontiguousarray(model.exp_basis[:, ids].reshape(nexp, -1), np.float32),
        albedo=np.ascontiguousarray(alb[ids], np.float32), eyes=tuple(eyes),
        neighbours=edge_neighbours(tris), exp_names=model.exp_names,
        gaze=gaze_matrix(model.exp_names))


def part_vertex_ids(model: FaceModel, parts: tuple[str, ...], *, narrow_face: bool = False,
                    eye_cap_deg: float | None = None) -> np.ndarray:
    """Sorted model vertex ids of ``parts`` as :func:`head_mesh` keeps them without replacement
    triangles (``narrow_face``, ``eye_cap_deg`` as there)."""
    keep = np.zeros(model.n_vertices, bool)
    for p in parts:
        keep[model.part_vertices(p)] = True
    if narrow_face and "face" in parts:
        keep[np.arange(model.narrow_face_vertex_count, model.part_vertices("face")[-1] + 1)] = False
    _drop_beyond_eye_cap(keep, model, parts, eye_cap_deg)
    return np.nonzero(keep)[0]


def _drop_beyond_eye_cap(keep: np.ndarray, model: FaceModel, parts: tuple[str, ...],
                         eye_cap_deg: float | None) -> None:
    """Clear ``keep (V_model,) bool`` for eyeball vertices beyond ``eye_cap_deg`` of the eye's
    axis (no cap: ``None``)."""
    from .albedo import eye_cones

    if eye_cap_deg is None:
        return
    for part, (vids, ang) in eye_cones(model).items():
        if part in parts:
            keep[vids[ang > np.radians(eye_cap_deg)]] = False


_LOOK = ("Out", "In", "Down", "Up")


def gaze_matrix(exp_names: tuple[str, ...]) -> np.ndarray:
    """``(4, E)`` map from expression weights to eye angles in degrees, rows (yaw_R, pitch_R,
    yaw_L, pitch_L), the inverse of :func:`tracker.gaze.gaze_weights`: yaw > 0 looks toward the
    subject's left, pitch > 0 looks down (ranges :data:`tracker.gaze.GAZE_RANGE_DEG`)."""
    g = GAZE_RANGE_DEG
    m = np.zeros((4, len(exp_names)))
    for row, s in ((0, "R"), (2, "L")):
        sign = 1.0 if s == "L" else -1.0   # "out" is toward the subject's left for the left eye
        for look, coef in zip(_LOOK, (sign * g["out"], -sign * g["in"], 0.0, 0.0)):
            if f"eyeLook{look}_{s}" in exp_names and coef:
                m[row, exp_names.index(f"eyeLook{look}_{s}")] = coef
        for look, coef in (("Down", g["down"]), ("Up", -g["up"])):
            if f"eyeLook{look}_{s}" in exp_names:
                m[row + 1, exp_names.index(f"eyeLook{look}_{s}")] = coef
    return m


def eye_angles(expression: np.ndarray, exp_names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Eye ``(yaw, pitch)`` degrees per side (``"L"``, ``"R"``) from the ``eyeLook*`` weights
    (see :func:`gaze_matrix`)."""
    a = gaze_matrix(exp_names) @ np.asarray(expression, np.float64)
    return {"R": (float(a[0]), float(a[1])), "L": (float(a[2]), float(a[3]))}


def combine(coeffs: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``coeffs (K,) @ basis (K, N)`` → ``(N,) float32`` without BLAS.

    Per-frame paths avoid BLAS on purpose: OpenBLAS runs a large ``sgemv`` on its own thread pool,
    whose workers then spin-wait — measured burning 4.5 ms of CPU per overlay frame beside the
    decoder and encoder on 2 cores. ``np.einsum`` (no ``optimize``) is a single-threaded loop.
    """
    return np.einsum("k,kn->n", np.asarray(coeffs, np.float32), basis)


def transform_points(m: np.ndarray, x: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
    """``x (N, 3) @ m.T (+ t)`` as float32. (A product with an inner size of 3 stays below
    OpenBLAS's threading threshold, so this matmul runs on the calling thread; measured.)"""
    y = np.asarray(x, np.float32) @ np.asarray(m, np.float32).T
    if t is not None:
        y += np.asarray(t, np.float32)
    return y


def clip_positions(cam: Camera, x_cam: np.ndarray) -> np.ndarray:
    """Clip-space ``(V, 4) float32`` of camera-space points, as
    :func:`tracker.render.clip_from_camera` (near :data:`NEAR`, far :data:`FAR`)."""
    p = projection_matrix(cam, NEAR, FAR).astype(np.float32)
    out = np.asarray(x_cam, np.float32) @ p[:, :3].T
    out += p[:, 3]
    return out


def identity_base(mesh: HeadMesh, identity: np.ndarray) -> np.ndarray:
    """``neutral + identity @ id_basis`` for the subset, ``(V*3,) float32``."""
    return mesh.neutral.reshape(-1) + combine(identity, mesh.id_basis)


def _yaw_pitch_matrix(yaw: float, pitch: float) -> np.ndarray:
    """``Ry(yaw) @ Rx(pitch)`` (radians) as ``(3, 3) float32``; as
    ``quat_to_matrix(euler_to_quat(yaw, pitch, 0))`` but without per-call array overhead."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    return np.array([[cy, sy * sp, sy * cp], [0.0, cp, -sp], [-sy, cy * sp, cy * cp]], np.float32)


def posed_vertices(mesh: HeadMesh, identity: np.ndarray, expression: np.ndarray,
                   base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Model-space vertices ``(V, 3) float32`` (identity, expression, eyeballs turned by the
    gaze weights) and the identity base used (pass it back while the identity is unchanged)."""
    ident = np.asarray(identity, np.float32)
    if base is None:
        base = identity_base(mesh, ident)
    v = (base + combine(expression, mesh.exp_basis)).reshape(-1, 3)
    if mesh.eyes:
        ang = mesh.gaze @ np.asarray(expression, np.float64)
        for eye in mesh.eyes:
            yaw, pitch = ang[0:2] if eye.side == "R" else ang[2:4]
            if yaw == 0.0 and pitch == 0.0:
                continue
            c = (eye.centre + ident.astype(np.float64) @ eye.centre_id).astype(np.float32)
            r = _yaw_pitch_matrix(math.radians(yaw), math.radians(pitch))
            v[eye.lo:eye.hi] = transform_points(r, v[eye.lo:eye.hi] - c, c)
    return v, base


def camera_normals(mesh: HeadMesh, x_cam: np.ndarray) -> np.ndarray:
    """Unit outward vertex normals ``(V, 3)`` in camera space."""
    from kernels.shading import vertex_normals

    return vertex_normals(np.ascontiguousarray(x_cam, np.float32), mesh.tris)


def lambert_colours(mesh: HeadMesh, x_cam: np.ndarray, albedo: np.ndarray,
                    light_dir: tuple[float, float, float], ambient: float = 0.35,
                    diffuse: float = 0.7) -> np.ndarray:
    """Per-vertex ``albedo * (ambient + diffuse * max(0, n . l))``, ``(V, 3) float32``."""
    lv = np.asarray(light_dir, np.float32)
    lv = lv / np.linalg.norm(lv)
    k = np.einsum("nj,j->n", camera_normals(mesh, x_cam), lv)
    k = np.float32(ambient) + np.float32(diffuse) * np.maximum(k, np.float32(0.0))
    return np.ascontiguousarray(albedo * k[:, None], np.float32)


def sh_colours(mesh: HeadMesh, x_cam: np.ndarray, albedo: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Per-vertex Deep3DFaceRecon SH shading (``gamma (27,)`` colour-major), ``(V, 3) float32``."""
    from kernels.shading import sh_shade

    return sh_shade(camera_normals(mesh, x_cam), np.ascontiguousarray(albedo, np.float32),
                    np.asarray(gamma, np.float64)).astype(np.float32)


@dataclass(frozen=True)
class Layer:
    """A rendered patch whose top-left pixel is image pixel ``(y0, x0)``: ``rgba (h, w, 4)``
    float32, colour *premultiplied* by the coverage ``alpha = rgba[..., 3]`` in [0, 1] (what
    antialiasing against an empty background gives)."""

    x0: int
    y0: int
    rgba: np.ndarray

    @property
    def alpha(self) -> np.ndarray:
        return self.rgba[..., 3]


@dataclass(frozen=True)
class ScaledLayer:
    """A :class:`Layer` kept at the resolution it was rendered at: ``small (hs, ws, 4)``
    (premultiplied float32) that covers image pixels ``[y0, y0 + height) x [x0, x0 + width)``
    once resized up bilinearly. ``rgba`` makes that layer (``cv2.resize``, ``INTER_LINEAR``: what
    :func:`render_layer` returns without ``keep_small``);
    :func:`kernels.colour.blend_scaled_layer_i420` blends it into 4:2:0 planes without making it,
    bit for bit the same."""

    x0: int
    y0: int
    width: int
    height: int
    small: np.ndarray

    @cached_property
    def rgba(self) -> np.ndarray:
        import cv2

        return cv2.resize(self.small, (self.width, self.height), interpolation=cv2.INTER_LINEAR)

    @property
    def alpha(self) -> np.ndarray:
        return self.rgba[..., 3]


def face_box(cam: Camera, x_cam: np.ndarray, margin: int = 2) -> tuple[int, int, int, int] | None:
    """Pixel box ``(x0, y0, x1, y1)`` (exclusive ends) of the points in front of the camera,
    clipped to the image; ``None`` when nothing is visible."""
    x = np.asarray(x_cam)
    z = x[:, 2]
    front = z < -NEAR
    if not front.all():
        if not front.any():
            return None
        x, z = x[front], z[front]
    iz = -1.0 / z
    qx, qy = x[:, 0] * iz, x[:, 1] * iz             # X/-Z, Y/-Z (1-D: fast reductions)
    lo = np.floor([cam.cx + cam.fx * qx.min(), cam.cy - cam.fy * qy.max()]).astype(int) - margin
    hi = np.ceil([cam.cx + cam.fx * qx.max(), cam.cy - cam.fy * qy.min()]).astype(int) + margin + 1
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], cam.width), min(hi[1], cam.height)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def sub_camera(cam: Camera, box: tuple[int, int, int, int]) -> Camera:
    """The camera of the pixel window ``box`` of ``cam``'s image."""
    x0, y0, x1, y1 = box
    return Camera(cam.fx, cam.fy, cam.cx - x0, cam.cy - y0, x1 - x0, y1 - y0)


def _reduced_camera(sc: Camera, scale: float, max_px: int) -> tuple[Camera, float]:
    """The camera of ``sc``'s image at ``scale`` (< 1: fewer pixels), lowered further so the
    longer side is at most ``max_px`` (when > 0); returns it and the scale used."""
    if max_px > 0:
        scale = min(scale, max_px / max(sc.width, sc.height))
    if scale < 1.0:
        w, h = max(2, round(sc.width * scale)), max(2, round(sc.height * scale))
        kx, ky = w / sc.width, h / sc.height
        sc = Camera(sc.fx * kx, sc.fy * ky, sc.cx * kx, sc.cy * ky, w, h)
    return sc, scale


def render_layer(cam: Camera, mesh: HeadMesh, x_cam: np.ndarray, colours: np.ndarray, *,
                 antialias: bool = True, scale: float = 1.0, max_px: int = 0,
                 keep_small: bool = False) -> Layer | ScaledLayer | None:
    """Rasterize the posed mesh (back faces culled) with vertex ``colours (V, 3)`` into a layer
    over its bounding box; ``None`` when it is off-screen.

    ``scale < 1`` renders the box at that fraction of its resolution and resizes the layer up
    (bilinear: the edges come out soft, so ``antialias`` is skipped). At 0.5 the pixel work
    drops four-fold — what lets a video overlay keep pace with tracking (tracker/overlay.py).
    ``max_px > 0`` lowers the scale further so that the rendered box's longer side is at most
    that many pixels (a face filling a 720p frame costs no more than a 512 px one).
    ``keep_small`` returns such a layer unresized, as a :class:`ScaledLayer`.
    """
    import cv2

    from kernels.antialias import antialias as aa
    from kernels.raster import interpolate, rasterize

    box = face_box(cam, x_cam)
    if box is None:
        return None
    sc = sub_camera(cam, box)
    full = (sc.width, sc.height)
    sc, scale = _reduced_camera(sc, scale, max_px)
    pos = clip_positions(sc, x_cam)
    rast = rasterize(pos, mesh.tris, (sc.height, sc.width), CULL_BACK)
    attr = np.empty((len(x_cam), 4), np.float32)
    attr[:, :3] = colours
    attr[:, 3] = 1.0
    img = interpolate(attr, rast, mesh.tris)
    if scale < 1.0 and keep_small:
        return ScaledLayer(box[0], box[1], full[0], full[1], img)
    if scale < 1.0:
        # (no depth is kept: nothing composites layers by depth, and resizing it cost 0.12 ms
        # a frame at 720p)
        img = cv2.resize(img, full, interpolation=cv2.INTER_LINEAR)
    elif antialias:
        img = aa(img, rast, pos, mesh.tris, mesh.neighbours)
    return Layer(box[0], box[1], img)


def composite(image: np.ndarray, layer: Layer, opacity: float = 1.0) -> None:
    """Blend ``layer`` over ``image`` ``(H, W, 3) uint8`` in place:
    ``image * (1 - o a) + o a rgb`` with ``o = opacity``; pixels with zero coverage keep their
    exact value. (OpenCV does the 8-bit work: about 0.3 ms for a 300 x 200 patch.)"""
    import cv2

    h, w = layer.rgba.shape[:2]
    win = image[layer.y0:layer.y0 + h, layer.x0:layer.x0 + w]
    rgba8 = cv2.convertScaleAbs(layer.rgba, alpha=255.0)   # saturating round to uint8
    rgb8 = cv2.cvtColor(cv2.cvtColor(rgba8, cv2.COLOR_mRGBA2RGBA), cv2.COLOR_RGBA2RGB)
    wa = np.clip(layer.rgba[..., 3], 0.0, 1.0) * np.float32(opacity)
    cv2.blendLinear(win, rgb8, np.float32(1.0) - wa, wa, dst=win)


def project_points(cam: Camera, x_cam: np.ndarray) -> np.ndarray:
    """Camera-space points ``(N, 3)`` → pixels ``(N, 2)`` (:func:`tracker.camera.project`)."""
    return project(cam, np.asarray(x_cam, np.float64))


def visible_points(cam: Camera, mesh: HeadMesh, x_cam: np.ndarray, pts: np.ndarray,
                   tol_m: float = 0.003, scale: float = 1.0, max_px: int = 0) -> np.ndarray:
    """Which camera-space points ``(P, 3)`` on the mesh surface are not hidden by the mesh (depth
    test against its z-buffer with tolerance ``tol_m`` metres); ``(P,) bool``. ``scale < 1``:
    the z-buffer is rendered at that fraction of the resolution (the video wireframe uses 0.5:
    rasterizing the whole face at full size was 2 of its 4.5 ms a frame); ``max_px > 0`` lowers
    the scale further so that the z-buffer's longer side is at most that many pixels (as
    :func:`render_layer`)."""
    from kernels.raster import rasterize

    box = face_box(cam, x_cam)
    if box is None:
        return np.zeros(len(pts), bool)
    sc, _ = _reduced_camera(sub_camera(cam, box), scale, max_px)
    pos = clip_positions(sc, x_cam)
    rast = rasterize(pos, mesh.tris, (sc.height, sc.width), CULL_BACK)
    uv = project(sc, np.asarray(pts, np.float64))
    col = np.floor(uv[:, 0]).astype(int)
    row = np.floor(uv[:, 1]).astype(int)
    inside = (col >= 0) & (col < sc.width) & (row >= 0) & (row < sc.height) & (pts[:, 2] < -NEAR)
    vis = np.zeros(len(pts), bool)
    r, c = row[inside], col[inside]
    z = rast[r, c, 2].astype(np.float64)
    hit = rast[r, c, 3] > 0
    # NDC z/w → distance in front of the camera
    dist = 2.0 * FAR * NEAR / ((FAR + NEAR) - z * (FAR - NEAR))
    vis[np.nonzero(inside)[0]] = hit & (-pts[inside, 2] <= dist + tol_m)
    return vis
