"""Per-vertex albedo for the ICT head, built from the model alone (ICT ships no texture).

Two things, both pure functions of a :class:`~tracker.facemodel.FaceModel`:

* :func:`vertex_albedo` — a plausible painted head: skin, redder lips, darker eyebrows, white
  sclera with a coloured iris and a dark pupil, off-white teeth, pink gums and tongue, a dark mouth
  interior. Regions come from the model's parts and its iBUG-68 landmarks (lips: inside the
  outer-lip contour seen from the front; brows: inside MediaPipe's brow outlines placed by the
  MediaPipe↔ICT correspondence; lid margins
  darkened along the eye contours (lashes); iris/pupil: a cone about each eyeball's +z axis, radii 6 mm / 2 mm).
* :func:`albedo_basis` — a low-dimensional albedo model for the trainer: that mean plus the
  lowest-frequency eigenvectors of the skin mesh's cotangent Laplacian (one scalar field per mode,
  applied to each colour channel with its own coefficient).

Convention: colours are RGB reflectances in [0, 1] (display-referred, as Deep3DFaceRecon's albedo
``/255``), ``(V, 3) float32`` over all model vertices; parts an overlay never draws (lacrimal
fluid, eye blend/occlusion layers) get a neutral grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .facemodel import FaceModel

SKIN_PARTS = ("face", "head_and_neck")
IRIS_RADIUS_M = 0.006
PUPIL_RADIUS_M = 0.002


@dataclass(frozen=True)
class Palette:
    """Colours (RGB in [0, 1]) of the painted head; :func:`random_palette` draws plausible ones."""

    skin: tuple[float, float, float] = (0.78, 0.57, 0.46)
    lips: tuple[float, float, float] = (0.66, 0.33, 0.32)
    brows: tuple[float, float, float] = (0.22, 0.15, 0.11)
    sclera: tuple[float, float, float] = (0.88, 0.86, 0.83)
    iris: tuple[float, float, float] = (0.36, 0.23, 0.13)
    pupil: tuple[float, float, float] = (0.03, 0.03, 0.03)
    teeth: tuple[float, float, float] = (0.86, 0.83, 0.74)
    gums: tuple[float, float, float] = (0.62, 0.30, 0.30)
    mouth: tuple[float, float, float] = (0.20, 0.07, 0.07)
    lashes: tuple[float, float, float] = (0.08, 0.06, 0.05)
    eye_socket: tuple[float, float, float] = (0.55, 0.32, 0.30)
    brow_strength: float = 0.8


def random_palette(rng: np.random.Generator) -> Palette:
    """A plausible random palette: skin tone from light to dark, iris brown/hazel/green/blue/grey."""
    tone = rng.uniform(0.0, 1.0)                      # 0 light … 1 dark
    light, dark = np.array([0.86, 0.67, 0.57]), np.array([0.36, 0.22, 0.15])
    skin = (1 - tone) * light + tone * dark
    skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 1)
    lips = np.clip(skin * np.array([0.85, 0.55, 0.58]) * rng.uniform(0.9, 1.05), 0, 1)
    irises = [(0.36, 0.23, 0.13), (0.45, 0.36, 0.20), (0.30, 0.40, 0.25), (0.30, 0.45, 0.62),
              (0.45, 0.48, 0.50), (0.20, 0.12, 0.07)]
    iris = np.array(irises[rng.integers(len(irises))]) * rng.uniform(0.85, 1.1)
    hair = np.array([0.22, 0.15, 0.11]) * rng.uniform(0.3, 1.6)
    return Palette(skin=_t(skin), lips=_t(lips), brows=_t(np.clip(hair, 0, 1)), iris=_t(iris),
                   brow_strength=float(rng.uniform(0.6, 0.9)))


def _t(a: np.ndarray) -> tuple[float, float, float]:
    return (float(a[0]), float(a[1]), float(a[2]))


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _polygon_sdf(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of 2-D points ``(N, 2)`` to a closed polygon ``(M, 2)``."""
    a, b = poly, np.roll(poly, -1, 0)
    e = b - a
    w = p[:, None, :] - a[None]
    t = np.clip((w * e).sum(-1) / np.maximum((e * e).sum(-1), 1e-18), 0.0, 1.0)
    d = np.sqrt(((w - t[..., None] * e) ** 2).sum(-1)).min(1)
    # even-odd rule
    yi, yj = a[:, 1], b[:, 1]
    cross = ((yi[None] > p[:, 1:2]) != (yj[None] > p[:, 1:2])) & (
        p[:, :1] < (b[:, 0] - a[:, 0])[None] * (p[:, 1:2] - yi[None])
        / np.where(yj - yi == 0, 1e-18, yj - yi)[None] + a[:, 0][None])
    inside = cross.sum(1) % 2 == 1
    return np.where(inside, -d, d)


def _polyline_dist(p: np.ndarray, line: np.ndarray) -> np.ndarray:
    a, b = line[:-1], line[1:]
    e = b - a
    w = p[:, None, :] - a[None]
    t = np.clip((w * e).sum(-1) / np.maximum((e * e).sum(-1), 1e-18), 0.0, 1.0)
    return np.sqrt(((w - t[..., None] * e) ** 2).sum(-1)).min(1)


def eye_axes(model: FaceModel) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per side (``"left"``, ``"right"``): the centre ``(3,)`` of a sphere fitted to the sclera
    (neutral face) and every model vertex's angle (radians) from the eye's +z axis about it
    ``(V,)``."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ranges = dict(zip(model.eye_subpart_names, model.eye_subpart_vertex_range))
    for side in ("left", "right"):
        if f"eyeball_{side}" not in model.part_names or f"sclera_{side}" not in ranges:
            continue
        lo, hi = ranges[f"sclera_{side}"]
        s = model.neutral[lo:hi].astype(np.float64)
        a = np.c_[2.0 * s, np.ones(len(s))]
        x = np.linalg.lstsq(a, (s * s).sum(1), rcond=None)[0]
        d = model.neutral.astype(np.float64) - x[:3]
        ang = np.arccos(np.clip(d[:, 2] / np.maximum(np.linalg.norm(d, axis=1), 1e-12), -1, 1))
        out[side] = (x[:3], ang)
    return out


def eye_cones(model: FaceModel) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per eyeball part name: its vertex ids and their angle (radians) from the eye's +z axis
    about the centre of a sphere fitted to its sclera (neutral face)."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for side, (_, ang) in eye_axes(model).items():
        ids = model.part_vertices(f"eyeball_{side}")
        out[f"eyeball_{side}"] = (ids, ang[ids])
    return out


def vertex_albedo(model: FaceModel, palette: Palette = Palette()) -> np.ndarray:
    """Painted albedo ``(V, 3) float32`` in [0, 1] (see the module docstring)."""
    pal = palette
    v = model.neutral.astype(np.float64)
    col = np.full((model.n_vertices, 3), 0.5)
    names = model.part_names

    def paint(part: str, c: tuple[float, float, float]) -> None:
        if part in names:
            col[model.part_vertices(part)] = c

    for p in SKIN_PARTS:
        paint(p, pal.skin)
    for p in ("mouth_socket",):
        paint(p, pal.mouth)
    paint("gums_and_tongue", pal.gums)
    paint("teeth", pal.teeth)
    for side in ("left", "right"):
        paint(f"eye_socket_{side}", pal.eye_socket)
        paint(f"eyelashes_{side}", pal.lashes)
    for ids, ang in eye_cones(model).values():
        r = np.linalg.norm(v[ids] - v[ids].mean(0), axis=1).max()
        th_i, th_p = np.arcsin(IRIS_RADIUS_M / r), np.arcsin(PUPIL_RADIUS_M / r)
        k_iris = 1.0 - _smoothstep(th_i * 0.92, th_i * 1.05, ang)
        k_pup = 1.0 - _smoothstep(th_p * 0.8, th_p * 1.2, ang)
        c = (np.array(pal.sclera) * (1 - k_iris[:, None]) + np.array(pal.iris) * k_iris[:, None])
        col[ids] = c * (1 - k_pup[:, None]) + np.array(pal.pupil) * k_pup[:, None]
    if "face" in names and len(model.lmk68_idx) == 68:
        face = model.part_vertices("face")
        lm = v[model.lmk68_idx]
        p = v[face]
        # lips: inside the outer lip contour (front view), on the front of the face
        sdf = _polygon_sdf(p[:, :2], lm[48:60, :2])
        front = p[:, 2] > lm[[48, 54], 2].mean() - 0.012
        k = (1.0 - _smoothstep(-0.0005, 0.0012, sdf)) * front
        col[face] = col[face] * (1 - k[:, None]) + np.array(pal.lips) * k[:, None]
        # lid margins: lashes and lid shadow, stronger on the upper lid
        for lo in (36, 42):
            sdf = _polygon_sdf(p[:, :2], lm[lo:lo + 6, :2])
            upper = p[:, 1] > lm[lo:lo + 6, 1].mean()
            k = (1.0 - _smoothstep(0.0004, 0.0022, np.abs(sdf))) * (sdf > -0.0015)
            k *= np.where(upper, 0.75, 0.35) * (p[:, 2] > lm[lo:lo + 6, 2].min() - 0.008)
            col[face] = col[face] * (1 - k[:, None]) + np.array(pal.lashes) * k[:, None]
        # brows: where MediaPipe's brow contours land on the ICT surface (the correspondence
        # the tracker fits with, refined on real faces), else a band under the brow landmarks
        polys = _brow_polygons(model, v)
        for i, (lo, hi) in enumerate(((17, 22), (22, 27))):
            front = p[:, 2] > lm[lo:hi, 2].min() - 0.01
            if polys is not None:
                k = 1.0 - _smoothstep(-0.0006, 0.0008, _polygon_sdf(p[:, :2], polys[i]))
            else:
                d = _polyline_dist(p[:, :2], lm[lo:hi, :2] - np.array([0.0, 0.002]))
                k = 1.0 - _smoothstep(0.0025, 0.0045, d)
            k = k * front * pal.brow_strength
            col[face] = col[face] * (1 - k[:, None]) + np.array(pal.brows) * k[:, None]
    return np.ascontiguousarray(np.clip(col, 0.0, 1.0), np.float32)


BROW_POLYGONS_MP = ((70, 63, 105, 66, 107, 55, 65, 52, 53, 46),      # subject's right
                    (300, 293, 334, 296, 336, 285, 295, 282, 283, 276))  # subject's left
"""MediaPipe eyebrow outlines (upper contour, then the lower one back), from its FaceMesh
eyebrow connections."""


def _brow_polygons(model: FaceModel, v: np.ndarray) -> list[np.ndarray] | None:
    """The brow outlines ``(10, 2)`` (front view, metres) on the neutral mesh ``v``, or ``None``
    when the MediaPipe correspondence is unavailable or does not fit this model."""
    from .correspondence import load_correspondence
    from .errors import ModelError

    try:
        corr = load_correspondence()
    except (ModelError, OSError):
        return None
    if corr.vertex_ids.max() >= len(v):
        return None
    pts = dict(zip(corr.mp_index.tolist(), corr.points(v)))
    if not all(i in pts for poly in BROW_POLYGONS_MP for i in poly):
        return None
    return [np.array([pts[i][:2] for i in poly]) for poly in BROW_POLYGONS_MP]


def cotangent_laplacian(verts: np.ndarray, tris: np.ndarray):
    """Cotangent stiffness ``L`` (positive semi-definite, rows sum to 0) and lumped (barycentric)
    mass ``M`` as ``scipy.sparse`` CSR matrices ``(V, V)`` for a triangle mesh."""
    import scipy.sparse as sp

    v = np.asarray(verts, np.float64)
    t = np.asarray(tris, np.int64)
    nv = len(v)
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, o = t[:, (k + 1) % 3], t[:, (k + 2) % 3], t[:, k]
        e1, e2 = v[i] - v[o], v[j] - v[o]
        cross = np.linalg.norm(np.cross(e1, e2), axis=1)
        cot = (e1 * e2).sum(1) / np.maximum(cross, 1e-18)
        w = 0.5 * cot
        rows += [i, j, i, j]
        cols += [j, i, i, j]
        vals += [-w, -w, w, w]
    lap = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(nv, nv)).tocsr()
    area = 0.5 * np.linalg.norm(np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]]), axis=1)
    mass = np.bincount(t.ravel(), np.repeat(area / 3.0, 3), minlength=nv)
    return lap, sp.diags(mass).tocsr()


def albedo_basis(model: FaceModel, k: int = 16,
                 palette: Palette = Palette()) -> tuple[np.ndarray, np.ndarray]:
    """Low-dimensional albedo: ``mean (V, 3) float32`` and ``basis (k, V, 3) float32``.

    ``albedo = mean + sum_j a[j, c] * basis[j, :, c]`` per colour channel ``c`` with coefficients
    ``a (k, 3)`` (the layout of :attr:`tracker.types.FaceParams.albedo`), prior N(0, 1) scale.
    Mode ``j`` is the ``j``-th lowest-frequency eigenvector of the cotangent Laplacian of the skin
    (parts :data:`SKIN_PARTS`; mode 0 is constant over the skin), with unit mass-weighted RMS over
    the skin, identical for the three channels, and zero off the skin (eyes, teeth, mouth keep the
    mean colour). ``mean`` is :func:`vertex_albedo`. Cached per model and ``k``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    mean = vertex_albedo(model, palette)
    modes = _laplacian_modes(model, k)
    basis = np.repeat(modes[:, :, None], 3, axis=2)
    return mean, np.ascontiguousarray(basis, np.float32)


@lru_cache(maxsize=4)
def _laplacian_modes(model: FaceModel, k: int) -> np.ndarray:
    from scipy.sparse.linalg import eigsh

    tris = model.part_faces(*[p for p in SKIN_PARTS if p in model.part_names])
    if len(tris) == 0:
        tris = model.faces
    used = np.unique(tris)
    remap = np.full(model.n_vertices, -1, np.int64)
    remap[used] = np.arange(len(used))
    lap, mass = cotangent_laplacian(model.neutral[used], remap[tris])
    if k >= len(used) - 1:
        raise ValueError(f"k={k} modes need a mesh with more than {k + 1} vertices")
    # shift-invert just below 0: the smallest eigenvalues of L phi = lambda M phi
    w, phi = eigsh(lap, k=k, M=mass, sigma=-1e-6, which="LM")
    phi = phi[:, np.argsort(w)]
    total = mass.diagonal().sum()
    phi /= np.sqrt((mass.diagonal()[:, None] * phi ** 2).sum(0) / total)  # unit weighted RMS
    phi *= np.sign(phi.sum(0) + 1e-30)                                    # deterministic sign
    out = np.zeros((k, model.n_vertices), np.float64)
    out[:, used] = phi.T
    return out
