"""The mesh a viewer needs to rebuild the face, and the ``F3DM`` blob that carries it (sans-I/O).

Blob layout (little-endian), like a GLB: ``b"F3DM"``, ``u32`` header length ``H``, ``H`` bytes of
UTF-8 JSON (padded with spaces so the data starts at a multiple of 8), then the data section.
``header["arrays"]`` lists ``{"name", "dtype", "shape", "offset", "nbytes"}`` with ``offset``
from the start of the data section, each a multiple of 8; ``dtype`` is one of
:data:`BLOB_DTYPES`.

The mesh is a *region* of the model, not all of it (ICT's 26,719 vertices x 153 bases would be
16 MB in float32): the narrow front face (forehead to chin, no ears/neck), the mouth socket (so
an open mouth is dark, not a hole) and both eyeballs, in that order. Vertices keep the model's
order inside each part; ``vertex_ids`` maps them back to the model. Eyeballs do not move with
expressions: gaze turns them rigidly about their pivot — the tracker's own eye centres
(:func:`tracker.gaze.make_eye_basis`: ``eye_pivots`` for the neutral face, plus
``eye_pivot_id`` times the identity coefficients), at rest looking along model +z — so
``exp_basis`` covers only the first ``exp_vertices`` vertices. Sizes for ICT are measured in
``tests/test_protocol.py`` and listed in ``web/PROTOCOL.md``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .facemodel import FaceModel, vertices

BLOB_DTYPES = {"float32": "<f4", "float16": "<f2", "uint32": "<u4", "int32": "<i4", "uint8": "u1"}
REGION_PARTS = ("face", "mouth_socket", "eyeball_left", "eyeball_right")
EYE_PARTS = ("eyeball_left", "eyeball_right")
IRIS_RADIUS_M = 0.006   # a rendering hint: the human iris is about 12 mm across
_HEAD = struct.Struct("<4sI")


def encode_blob(header: dict[str, Any], arrays: dict[str, np.ndarray], magic: bytes = b"F3DM") -> bytes:
    """Pack ``arrays`` (dtypes from :data:`BLOB_DTYPES`) after a JSON ``header``; the header
    gets an ``arrays`` entry describing them."""
    table, chunks, off = [], [], 0
    for name, a in arrays.items():
        key = np.dtype(a.dtype).name
        if key not in BLOB_DTYPES:
            raise ValueError(f"array {name!r}: dtype {a.dtype} not in {sorted(BLOB_DTYPES)}")
        raw = np.ascontiguousarray(a, BLOB_DTYPES[key]).tobytes()
        table.append({"name": name, "dtype": key, "shape": list(a.shape), "offset": off,
                      "nbytes": len(raw)})
        pad = (-len(raw)) % 8
        chunks.append(raw + b"\0" * pad)
        off += len(raw) + pad
    text = json.dumps({**header, "arrays": table}, separators=(",", ":")).encode()
    text += b" " * ((-(len(text) + _HEAD.size)) % 8)
    return _HEAD.pack(magic, len(text)) + text + b"".join(chunks)


def decode_blob(data: bytes, magic: bytes = b"F3DM") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`encode_blob`: ``(header, {name: read-only array})``. ``ValueError`` on a
    malformed blob."""
    if len(data) < _HEAD.size or data[:4] != magic:
        raise ValueError("not an F3DM blob")
    _, n = _HEAD.unpack_from(data)
    start = _HEAD.size + n
    if start > len(data):
        raise ValueError("F3DM header runs past the end")
    header = json.loads(data[_HEAD.size:start])
    arrays = {}
    for a in header.get("arrays", []):
        dt = np.dtype(BLOB_DTYPES[a["dtype"]])
        count = int(np.prod(a["shape"], dtype=np.int64))
        if a["offset"] + count * dt.itemsize > len(data) - start:
            raise ValueError(f"F3DM array {a['name']!r} runs past the end")
        arrays[a["name"]] = np.frombuffer(data, dt, count, start + a["offset"]).reshape(a["shape"])
    return header, arrays


@dataclass(frozen=True)
class MeshRegion:
    """Which model vertices a viewer gets. ``vertex_ids`` ``(V,) int64`` (model indices, part by
    part); ``triangles`` ``(T, 3) int64`` into the region; ``parts`` name → (first vertex, vertex
    count, first triangle, triangle count); ``exp_vertices``: the bases' expression part covers
    vertices ``[0, exp_vertices)``; ``subparts`` name → (first vertex, count) (iris, sclera)."""

    vertex_ids: np.ndarray
    triangles: np.ndarray
    parts: dict[str, tuple[int, int, int, int]]
    exp_vertices: int
    subparts: dict[str, tuple[int, int]]


def mesh_region(model: FaceModel) -> MeshRegion:
    """The viewer region of ``model`` (see module doc); the whole mesh for a model without ICT
    parts."""
    names = model.part_names
    if not all(p in names for p in ("face",) + EYE_PARTS):
        ids = np.arange(model.n_vertices)
        tris = model.faces.astype(np.int64)
        return MeshRegion(ids, tris, {"face": (0, len(ids), 0, len(tris))}, len(ids), {})
    ids_list, tri_list, parts = [], [], {}
    nv = nt = 0
    remap = np.full(model.n_vertices, -1, np.int64)
    for part in REGION_PARTS:
        if part not in names:
            continue
        v = model.part_vertices(part)
        if part == "face":
            v = v[v < model.narrow_face_vertex_count]
        remap[v] = np.arange(nv, nv + len(v))
        tris = remap[model.part_faces(part)]
        tris = tris[(tris >= nv).all(1)]  # triangles entirely inside this part's kept vertices
        parts[part] = (nv, len(v), nt, len(tris))
        ids_list.append(v)
        tri_list.append(tris)
        nv, nt = nv + len(v), nt + len(tris)
    sub = {}
    for name, (lo, hi) in zip(model.eye_subpart_names, model.eye_subpart_vertex_range):
        r = remap[np.arange(lo, hi)]
        if len(r) and (r >= 0).all():
            sub[str(name)] = (int(r[0]), int(len(r)))
    exp_vertices = min(parts[p][0] for p in EYE_PARTS)
    return MeshRegion(np.concatenate(ids_list), np.concatenate(tri_list), parts, exp_vertices, sub)


def mesh_blob(model: FaceModel, *, dtype: str = "float16", identity_basis: bool = True,
              protocol: int = 1) -> bytes:
    """The ``F3DM`` mesh blob: ``vertex_ids`` (V,) u32, ``triangles`` (T, 3) u32 (counter-clockwise
    seen from outside), ``neutral`` (V, 3) f32 metres, ``exp_basis`` (E, exp_vertices, 3)
    ``dtype`` metres, if asked ``id_basis`` (I, V, 3) ``dtype`` metres, and the eye pivots
    ``eye_pivots`` (2, 3) and ``eye_pivot_id`` (I, 2, 3) f32 metres (rows: right, left eye)."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, not {dtype!r}")
    reg = mesh_region(model)
    ids = reg.vertex_ids
    arrays = {
        "vertex_ids": ids.astype(np.uint32),
        "triangles": reg.triangles.astype(np.uint32),
        "neutral": vertices(model, idx=ids),
        "exp_basis": model.exp_basis[:, ids[:reg.exp_vertices]].astype(dtype),
    }
    if identity_basis:
        arrays["id_basis"] = model.id_basis[:, ids].astype(dtype)
    if all(p in reg.parts for p in EYE_PARTS):
        from .gaze import make_eye_basis

        eyes = make_eye_basis(model)   # rows: right, left
        arrays["eye_pivots"] = np.asarray(eyes.centre, np.float32)
        arrays["eye_pivot_id"] = np.asarray(eyes.centre_id, np.float32)
    header = {"type": "mesh", "protocol": protocol, "model": model.name, "version": model.version,
              "units": "metres", "exp_names": list(model.exp_names),
              "n_vertices": int(len(ids)), "n_triangles": int(len(reg.triangles)),
              "exp_vertices": reg.exp_vertices, "n_identity": model.n_identity,
              "parts": {k: {"vertices": [v[0], v[1]], "triangles": [v[2], v[3]]}
                        for k, v in reg.parts.items()},
              "subparts": {k: {"vertices": [v[0], v[1]]} for k, v in reg.subparts.items()},
              "eye_pivots": "rows right, left: R_eye turns the eyeball about "
                            "eye_pivots + sum_i identity_i * eye_pivot_id[i]; rest gaze = +z",
              "iris_radius_m": IRIS_RADIUS_M}
    return encode_blob(header, arrays)
