"""The face model: an immutable ICT-FaceKit model loaded once, and pure functions over it.

Convention: model space is right-handed, **metres**, +x = the subject's left, +y up, +z out of the
face (toward the camera at rest). Points are the ICT npz coordinates x 0.01, *not* recentred::

    v = neutral + identity @ id_basis + expression @ exp_basis        (all (…, V, 3), metres)

Identity coefficients have prior N(0, 1) (the ICT modes are pre-scaled); expression weights are in
[0, 1] and named as ARKit blendshapes, ``_L`` = the subject's left.

Where the model comes from, in order: an explicit path, ``$FACE3D_MODEL``, the user cache
(``$XDG_CACHE_HOME/face3d/ict_face_model.npz``, written by ``face3d model fetch``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelError

MODEL_FILENAME = "ict_face_model.npz"

_REQUIRED = {
    "neutral": (None, 3),
    "id_basis": (None, None, 3),
    "exp_basis": (None, None, 3),
    "exp_names": (None,),
    "faces": (None, 3),
    "lmk68_idx": (68,),
}


def cache_dir() -> Path:
    """The user cache folder for converted models and tables (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "face3d"


@dataclass(frozen=True, eq=False)
class FaceModel:
    """ICT face model in metres. Arrays are read-only.

    ``neutral`` ``(V, 3) float32``; ``id_basis`` ``(I, V, 3) float32``; ``exp_basis``
    ``(E, V, 3) float32``; ``faces`` ``(F, 3) int32`` (counter-clockwise seen from outside);
    ``lmk68_idx`` ``(68,)`` iBUG-68 vertex ids (jaw points 0–16 sit on the frontal silhouette).
    ``kind``: ``"ict"`` (blendshape weights bounded to [``expr_lower``, ``expr_upper``] = [0, 1]) or
    another model family (e.g. ``"bfm"``, whose PCA expression coefficients are unbounded:
    ``expr_lower = -inf``); ``extras`` holds family-specific arrays (e.g. a texture basis).
    """

    name: str
    version: str
    path: str
    neutral: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    exp_names: tuple[str, ...]
    faces: np.ndarray
    lmk68_idx: np.ndarray
    face_part: np.ndarray
    vertex_part: np.ndarray
    part_names: tuple[str, ...]
    part_vertex_range: np.ndarray
    narrow_face_vertex_count: int
    eye_subpart_names: tuple[str, ...]
    eye_subpart_vertex_range: np.ndarray
    jaw_left_idx: np.ndarray
    jaw_right_idx: np.ndarray
    vertex_uv: np.ndarray
    kind: str = "ict"
    expr_lower: float = 0.0
    expr_upper: float = 1.0
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return int(self.neutral.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.id_basis.shape[0])

    @property
    def n_expression(self) -> int:
        return int(self.exp_basis.shape[0])

    def part_vertices(self, name: str) -> np.ndarray:
        """Vertex ids ``(n,) int64`` of part ``name`` (e.g. ``"face"``, ``"eyeball_left"``)."""
        i = self.part_names.index(name)
        lo, hi = self.part_vertex_range[i]
        return np.arange(lo, hi)

    def part_faces(self, *names: str) -> np.ndarray:
        """Triangles ``(n, 3) int32`` of the given parts."""
        ids = [self.part_names.index(n) for n in names]
        return self.faces[np.isin(self.face_part, ids)]


def resolve_model_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Find the model file: ``path``, then ``$FACE3D_MODEL``, then the user cache."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"face model not found: {p}")
        return p
    env = os.environ.get("FACE3D_MODEL")
    if env:
        p = Path(env)
        if not p.is_file():
            raise ModelError(f"FACE3D_MODEL points to a missing file: {p}")
        return p
    p = cache_dir() / MODEL_FILENAME
    if p.is_file():
        return p
    raise ModelError(
        "no face model: pass --model NPZ, set FACE3D_MODEL, or run `face3d model fetch` "
        f"(which converts ICT-FaceKit into {p})")


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


_CACHE: dict[tuple[str, float], FaceModel] = {}


def load_face_model(path: str | os.PathLike[str] | None = None) -> FaceModel:
    """Load and validate the ICT npz (no pickle); results are cached per file and mtime."""
    p = resolve_model_path(path)
    key = (str(p.resolve()), p.stat().st_mtime)
    if key in _CACHE:
        return _CACHE[key]
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any parse failure is a malformed model
        raise ModelError(f"cannot read face model {p}: {e}") from None
    model = face_model_from_arrays(data, path=str(p))
    _CACHE[key] = model
    return model


def face_model_from_arrays(data: dict[str, np.ndarray], path: str = "") -> FaceModel:
    """Validate the npz arrays (ICT schema, centimetres) and build a :class:`FaceModel` in metres."""
    for k, shape in _REQUIRED.items():
        if k not in data:
            raise ModelError(f"face model {path or '<arrays>'} lacks key {k!r}")
        a = data[k]
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
            raise ModelError(f"face model key {k!r} has shape {a.shape}, expected {shape}")
    nv = data["neutral"].shape[0]
    if data["id_basis"].shape[1] != nv or data["exp_basis"].shape[1] != nv:
        raise ModelError("face model bases do not match the neutral mesh's vertex count")
    if len(data["exp_names"]) != data["exp_basis"].shape[0]:
        raise ModelError("face model exp_names does not match exp_basis")
    faces = data["faces"].astype(np.int32)
    if faces.min() < 0 or faces.max() >= nv:
        raise ModelError("face model faces index outside the vertex range")
    scale = float(data.get("scale_to_metres", np.float32(0.01)))
    source = str(data.get("source", "ICT-FaceKit"))
    version = source.split("@")[1].split()[0] if "@" in source else "unknown"
    nf = faces.shape[0]

    def get(k: str, default: np.ndarray) -> np.ndarray:
        return data[k] if k in data else default

    part_names = tuple(str(s) for s in get("part_names", np.array(["face"])))
    return FaceModel(
        name="ICT-FaceKit FaceXModel",
        version=version,
        path=path,
        neutral=_ro(data["neutral"].astype(np.float32) * scale),
        id_basis=_ro(data["id_basis"].astype(np.float32) * scale),
        exp_basis=_ro(data["exp_basis"].astype(np.float32) * scale),
        exp_names=tuple(str(s) for s in data["exp_names"]),
        faces=_ro(faces),
        lmk68_idx=_ro(data["lmk68_idx"].astype(np.int64)),
        face_part=_ro(get("face_part", np.zeros(nf, np.uint8))),
        vertex_part=_ro(get("vertex_part", np.zeros(nv, np.uint8))),
        part_names=part_names,
        part_vertex_range=_ro(get("part_vertex_range", np.array([[0, nv]], np.int32))),
        narrow_face_vertex_count=int(get("narrow_face_vertex_count", np.array(nv))),
        eye_subpart_names=tuple(str(s) for s in get("eye_subpart_names", np.array([], str))),
        eye_subpart_vertex_range=_ro(get("eye_subpart_vertex_range", np.zeros((0, 2), np.int32))),
        jaw_left_idx=_ro(get("jaw_left_idx", np.zeros(0, np.int32)).astype(np.int64)),
        jaw_right_idx=_ro(get("jaw_right_idx", np.zeros(0, np.int32)).astype(np.int64)),
        vertex_uv=_ro(get("vertex_uv", np.zeros((nv, 2), np.float32))),
    )


def vertices(model: FaceModel, identity: np.ndarray | None = None,
             expression: np.ndarray | None = None, idx: np.ndarray | None = None) -> np.ndarray:
    """Model-space vertices ``(V, 3) float32`` metres (or ``(len(idx), 3)`` for a subset ``idx``)."""
    sel = slice(None) if idx is None else idx
    v = model.neutral[sel].astype(np.float32, copy=True)
    if identity is not None:
        v += np.tensordot(np.asarray(identity, np.float32), model.id_basis[:, sel], axes=1)
    if expression is not None:
        v += np.tensordot(np.asarray(expression, np.float32), model.exp_basis[:, sel], axes=1)
    return v
