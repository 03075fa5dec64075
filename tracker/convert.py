"""ICT-FaceKit ``FaceXModel/`` OBJ files → the project's face model npz; ``face3d model fetch``.

The npz schema is the one of ``../shared/models/ict/ict_face_model.npz`` (see its README):
``neutral`` ``(V, 3) float32`` cm; ``id_basis`` / ``exp_basis`` / ``extra_exp_basis``
``(n, V, 3) float16`` deltas ``mesh − neutral`` (difference taken in float64, then rounded once);
``faces`` ``(F, 3) int32`` with quads split along the shorter diagonal (see
:func:`tracker.objio.triangulate`); UVs, parts, materials and the vertex sets of
``vertex_indices.json``. Part, narrow-face, eyeball and jaw-line tables are the ones documented in
ICT-FaceKit's README (they are not in the OBJ or JSON files) and are checked against the mesh size.

Checked on ``obj-sample/`` against the shared npz: neutral, faces (including which diagonal each
quad is split along and the corner order), faces_uv, uv, vertex_uv (first corner in polygon
order), vertex_uv_seam (more than one distinct UV value), parts, materials and every index set
are bit-identical, and so are the float16 deltas of identity000, jawOpen and eyeBlink_L: the
shared ``id_basis[i]`` is exactly ``float16(identity{i:03d}.obj − neutral)``, no rescaling.

Public API: :func:`convert_facekit`, :func:`fetch_model`, :func:`write_npz_atomic`, and the CLI
glue :func:`add_parser` / :func:`run` (``face3d model convert|fetch``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from .errors import ModelError, NetworkError
from .facemodel import MODEL_FILENAME
from .facemodel import cache_dir as default_cache_dir
from .objio import ObjMesh, read_obj, triangulate, vertex_uv

log = logging.getLogger(__name__)

NEUTRAL_FILE = "generic_neutral_mesh.obj"
INDICES_FILE = "vertex_indices.json"
N_IDENTITY = 100
EXTRA_EXPRESSIONS = ("PupilDilate_L", "PupilDilate_R", "cheekRaiser_L", "cheekRaiser_R")
LICENCE = "MIT License, Copyright (c) 2020 USC Institute for Creative Technologies"
MODEL_EQUATION = ("v = neutral + id_basis^T id_coeff + exp_basis^T exp_coeff; id_coeff ~ N(0,1) "
                  "(modes pre-scaled), exp_coeff in [0,1]")

# ICT-FaceKit README, "Face Model Topology": (name, first vertex, first polygon); each part runs to
# the next part's start. Totals: 26,719 vertices, 26,384 polygons.
ICT_N_VERTICES = 26719
ICT_N_POLYGONS = 26384
ICT_PARTS = (
    ("face", 0, 0), ("head_and_neck", 9409, 9230), ("mouth_socket", 11248, 11144),
    ("eye_socket_left", 13294, 13226), ("eye_socket_right", 13678, 13630),
    ("gums_and_tongue", 14062, 14034), ("teeth", 17039, 17006),
    ("eyeball_left", 21451, 21496), ("eyeball_right", 23021, 23094),
    ("lacrimal_fluid_left", 24591, 24692), ("lacrimal_fluid_right", 24795, 24855),
    ("eye_blend_left", 24999, 25018), ("eye_blend_right", 25023, 25033),
    ("eye_occlusion_left", 25047, 25048), ("eye_occlusion_right", 25199, 25176),
    ("eyelashes_left", 25351, 25304), ("eyelashes_right", 26035, 25844),
)
# README "Face Area Details" (narrow face = vertices 0–6705) and "Eyeball Details" ([lo, hi)).
ICT_NARROW_FACE_VERTICES = 6706
ICT_EYE_SUBPARTS = (("sclera_left", 21451, 22221), ("iris_left", 22221, 23021),
                    ("sclera_right", 23021, 23791), ("iris_right", 23791, 24591))
# README "Facial Landmarks": jaw lines following the true jaw (substitute Multi-PIE 0-7 / 9-16).
ICT_JAW_RIGHT = (1278, 1272, 12, 1834, 243, 781, 2199, 1447)
ICT_JAW_LEFT = (3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496)
ICT_JAW_RIGHT_EXT = (1280, 1278, 1275, 1272, 1248, 12, 820, 1834, 1902, 243, 844, 781, 1673,
                     2199, 801, 1447, 800)
ICT_JAW_LEFT_EXT = (3041, 3661, 3042, 4390, 3880, 3022, 3085, 2484, 4102, 4036, 3061, 2253, 3466,
                    3490, 3493, 3496, 3498)
# iBUG-300W / Multi-PIE 68-point names; "right"/"left" are the subject's.
LMK68_NAMES = tuple(
    [f"jaw_{i:02d}" for i in range(17)] + [f"brow_right_{i}" for i in range(5)]
    + [f"brow_left_{i}" for i in range(5)] + [f"nose_bridge_{i}" for i in range(4)]
    + [f"nose_base_{i}" for i in range(5)] + [f"eye_right_{i}" for i in range(6)]
    + [f"eye_left_{i}" for i in range(6)] + [f"lip_outer_{i:02d}" for i in range(12)]
    + [f"lip_inner_{i}" for i in range(8)])

_JSON_KEYS = {"lmk68_idx": "idx_to_landmark_verts",
              "lmk68_rigid_subset": "idx_to_rigid_landmark_idx",
              "fitting_verts": "idx_to_fitting_verts", "rigid_verts": "idx_to_rigid_verts",
              "lap_rigid_verts": "idx_to_lap_rigid_verts"}


def find_facexmodel_dir(src: str | os.PathLike[str]) -> Path:
    """``src`` itself or ``src/FaceXModel`` (an unpacked repository): whichever has the neutral."""
    p = Path(src)
    for d in (p, p / "FaceXModel"):
        if (d / NEUTRAL_FILE).is_file():
            return d
    raise ModelError(f"no {NEUTRAL_FILE} in {p} (expected ICT-FaceKit's FaceXModel/ folder)")


def _read_indices(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ModelError(f"{path}: malformed JSON ({e})") from None
    missing = [k for k in ("expressions", *_JSON_KEYS.values()) if k not in d]
    if missing:
        raise ModelError(f"{path}: lacks {', '.join(missing)}")
    return d


def _part_tables(neutral: ObjMesh, poly_idx: np.ndarray) -> dict[str, np.ndarray]:
    nv, npoly = neutral.n_vertices, neutral.poly_sizes.size
    if (nv, npoly) != (ICT_N_VERTICES, ICT_N_POLYGONS):
        raise ModelError(f"{neutral.path}: {nv} vertices / {npoly} polygons, but ICT-FaceKit's "
                         f"FaceXModel has {ICT_N_VERTICES} / {ICT_N_POLYGONS}; the part tables do "
                         "not apply")
    v0 = np.array([p[1] for p in ICT_PARTS] + [nv], np.int32)
    p0 = np.array([p[2] for p in ICT_PARTS])
    return {
        "part_names": np.array([p[0] for p in ICT_PARTS]),
        "part_vertex_range": np.column_stack([v0[:-1], v0[1:]]).astype(np.int32),
        "vertex_part": (np.searchsorted(v0, np.arange(nv), side="right") - 1).astype(np.uint8),
        "face_part": (np.searchsorted(p0, poly_idx, side="right") - 1).astype(np.uint8),
        "narrow_face_vertex_count": np.array(ICT_NARROW_FACE_VERTICES, np.int32),
        "eye_subpart_names": np.array([s[0] for s in ICT_EYE_SUBPARTS]),
        "eye_subpart_vertex_range": np.array([s[1:] for s in ICT_EYE_SUBPARTS], np.int32),
        "jaw_right_idx": np.array(ICT_JAW_RIGHT, np.int32),
        "jaw_right_replaces_lmk68": np.arange(0, 8, dtype=np.int32),
        "jaw_left_idx": np.array(ICT_JAW_LEFT, np.int32),
        "jaw_left_replaces_lmk68": np.arange(9, 17, dtype=np.int32),
        "jaw_right_ext_idx": np.array(ICT_JAW_RIGHT_EXT, np.int32),
        "jaw_left_ext_idx": np.array(ICT_JAW_LEFT_EXT, np.int32),
    }


def _index_sets(indices: dict, path: Path, nv: int) -> dict[str, np.ndarray]:
    out = {}
    for key, jkey in _JSON_KEYS.items():
        try:
            a = np.asarray(indices[jkey], dtype=np.int64)
        except (TypeError, ValueError):
            raise ModelError(f"{path}: {jkey} is not a list of integers") from None
        bound = 68 if key == "lmk68_rigid_subset" else nv
        if a.ndim != 1 or (a.size and (a.min() < 0 or a.max() >= bound)):
            raise ModelError(f"{path}: {jkey} holds indices outside 0..{bound - 1}")
        out[key] = a.astype(np.int32)
    if out["lmk68_idx"].size != 68:
        n = out["lmk68_idx"].size
        raise ModelError(f"{path}: idx_to_landmark_verts has {n} entries, not 68")
    out["lmk68_names"] = np.array(LMK68_NAMES)
    return out


def _read_deltas(folder: Path, names: list[str],
                 neutral: ObjMesh) -> tuple[np.ndarray, float, np.ndarray]:
    """float16 deltas ``(n, V, 3)``, max |f16 - exact| (cm), per-mode RMS vertex displacement."""
    out = np.zeros((len(names), neutral.n_vertices, 3), np.float16)
    err, rms = 0.0, np.zeros(len(names), np.float32)
    for i, name in enumerate(names):
        path = folder / f"{name}.obj"
        mesh = read_obj(path, with_uv=False)
        if not mesh.same_topology(neutral):
            raise ModelError(f"{path}: mesh differs from {NEUTRAL_FILE} ({mesh.n_vertices} vs "
                             f"{neutral.n_vertices} vertices, {mesh.poly_sizes.size} vs "
                             f"{neutral.poly_sizes.size} polygons; identical faces required)")
        d = mesh.vertices - neutral.vertices          # float64: one rounding to float16 below
        out[i] = d.astype(np.float16)
        err = max(err, float(np.abs(out[i].astype(np.float64) - d).max()))
        rms[i] = np.sqrt((d ** 2).sum(1).mean())
        log.debug("read %s", path.name)
    return out, err, rms


def _describe(names: list[str]) -> str:
    """``identity001.obj..identity099.obj, browDown_L.obj, …``: runs of identities as ranges."""
    def follows(a: str, b: str) -> bool:
        return (a.startswith("identity") and b.startswith("identity")
                and int(b[8:]) == int(a[8:]) + 1)
    parts, i = [], 0
    while i < len(names):
        j = i
        while j + 1 < len(names) and follows(names[j], names[j + 1]):
            j += 1
        parts.append(f"{names[i]}.obj" if j == i else f"{names[i]}.obj..{names[j]}.obj")
        i = j + 1
    return ", ".join(parts)


def convert_facekit(src_dir: str | os.PathLike[str], out_npz: str | os.PathLike[str], *,
                    allow_partial: bool = False, source_version: str = "unknown") -> Path:
    """Convert ICT-FaceKit's ``FaceXModel/`` folder into the project's npz; returns ``out_npz``.

    Reads ``generic_neutral_mesh.obj``, ``identity000..099.obj``, the expression OBJs named in
    ``vertex_indices.json["expressions"]`` (in that order), the optional extras
    ``PupilDilate_L/R`` and ``cheekRaiser_L/R``, and ``vertex_indices.json``. ``src_dir`` may also
    be the unpacked repository (holding ``FaceXModel/``). Every OBJ must have the neutral's vertex
    count and faces. Without ``allow_partial`` a missing identity or expression file is a
    :class:`ModelError` listing them all; with it, the bases hold only the modes found, named in
    ``id_names`` / ``exp_names`` (and ``source`` says so). The neutral and the JSON are always
    required. ``source_version`` (e.g. a commit id) is recorded in ``source``.

    Units stay centimetres (``scale_to_metres`` = 0.01). The npz is written atomically.
    """
    folder = find_facexmodel_dir(src_dir)
    indices = _read_indices(folder / INDICES_FILE)
    exp_all = [str(n) for n in indices["expressions"]]
    id_all = [f"identity{i:03d}" for i in range(N_IDENTITY)]
    missing = [n for n in id_all + exp_all if not (folder / f"{n}.obj").is_file()]
    if missing and not allow_partial:
        raise ModelError(f"{folder}: {len(missing)} model file(s) missing: {_describe(missing)} "
                         "(use allow_partial / --allow-partial to convert what is there)")
    id_names = [n for n in id_all if n not in missing]
    exp_names = [n for n in exp_all if n not in missing]
    extra_names = [n for n in EXTRA_EXPRESSIONS if (folder / f"{n}.obj").is_file()]

    neutral = read_obj(folder / NEUTRAL_FILE)
    faces, faces_uv, poly_idx = triangulate(neutral)
    if faces_uv is None:
        raise ModelError(f"{neutral.path}: faces carry no texture coordinates")
    vuv, seam = vertex_uv(neutral)
    arrays: dict[str, np.ndarray] = {
        "units": np.array("cm"), "scale_to_metres": np.array(0.01, np.float32),
        "neutral": neutral.vertices.astype(np.float32),
        "faces": faces, "faces_uv": faces_uv, "face_poly_idx": poly_idx,
        "uv": neutral.uv.astype(np.float32), "vertex_uv": vuv, "vertex_uv_seam": seam,
        "material_names": np.array(neutral.material_names),
        "face_material": neutral.poly_material[poly_idx].astype(np.uint8),
        "model_equation": np.array(MODEL_EQUATION),
    }
    arrays.update(_part_tables(neutral, poly_idx))
    arrays.update(_index_sets(indices, folder / INDICES_FILE, neutral.n_vertices))

    log.info("reading %d identity, %d expression and %d extra OBJ files from %s",
             len(id_names), len(exp_names), len(extra_names), folder)
    id_basis, id_err, id_rms = _read_deltas(folder, id_names, neutral)
    exp_basis, exp_err, _ = _read_deltas(folder, exp_names, neutral)
    extra_basis, _, _ = _read_deltas(folder, extra_names, neutral)
    arrays.update({
        "id_basis": id_basis, "id_names": np.array(id_names, dtype=str),
        "id_prior_std": np.ones(len(id_names), np.float32), "id_mode_rms": id_rms,
        "exp_basis": exp_basis, "exp_names": np.array(exp_names, dtype=str),
        "extra_exp_basis": extra_basis, "extra_exp_names": np.array(extra_names, dtype=str),
        "float16_max_abs_err_id": np.array(id_err, np.float32),
        "float16_max_abs_err_exp": np.array(exp_err, np.float32),
    })
    source = f"github.com/ICT-VGL/ICT-FaceKit @ {source_version} (FaceXModel/), {LICENCE}"
    if missing:
        source += (f" [partial: {len(id_names)}/{N_IDENTITY} identities, "
                   f"{len(exp_names)}/{len(exp_all)} expressions]")
    arrays["source"] = np.array(source)
    out = write_npz_atomic(out_npz, arrays)
    log.info("wrote %s (%d identity, %d expression modes)", out, len(id_names), len(exp_names))
    return out


def write_npz_atomic(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as a compressed npz (no pickled objects) via a temporary file in the same
    folder and ``os.replace``: a failure leaves neither a partial file nor the temporary behind,
    and an existing file at ``path`` untouched until the new one is complete."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
                for key, a in arrays.items():
                    with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asanyarray(a), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model file is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out



# --------------------------------------------------------------------------- fetch (I/O shell)

DEFAULT_URL = "https://github.com/ICT-VGL/ICT-FaceKit/archive/refs/heads/master.zip"
_CHUNK = 1 << 20


def _download(url: str, dest: Path, timeout: float) -> None:
    """Stream ``url`` into ``dest``, logging progress; :class:`NetworkError` on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            done, next_log = 0, 0.0
            while chunk := r.read(_CHUNK):
                f.write(chunk)
                done += len(chunk)
                if done >= next_log:
                    pct = f" ({100 * done / total:.0f} %)" if total else ""
                    log.info("downloading ICT-FaceKit: %.1f MB%s", done / 1e6, pct)
                    next_log = done + (total / 10 if total else 20e6)
    except (OSError, ValueError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise NetworkError(
            f"cannot download {url} ({reason}); offline? Get the ICT-FaceKit archive by hand, "
            "unpack it, run `face3d model convert ICT-FaceKit-master/FaceXModel OUT.npz` and set "
            "FACE3D_MODEL=OUT.npz") from None


def _extract_facexmodel(archive: Path, dest: Path) -> str:
    """Copy ``FaceXModel/*.obj|json`` out of a repository archive (or a ``FaceXModel.zip``
    inside it) into ``dest`` (flat, by base name); returns the commit id GitHub stores as the zip
    comment, or ``"unknown"``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            comment = zf.comment.decode("ascii", "replace").strip()
            version = comment[:8] if len(comment) == 40 and all(
                c in "0123456789abcdef" for c in comment) else "unknown"
            if not _copy_members(zf, dest):
                nested = [i for i in zf.infolist() if i.filename.endswith("FaceXModel.zip")]
                if nested:
                    with zf.open(nested[0]) as raw, zipfile.ZipFile(raw) as inner:
                        _copy_members(inner, dest)
    except zipfile.BadZipFile as e:
        raise NetworkError(f"the downloaded ICT-FaceKit archive is not a valid zip ({e})") from None
    if not (dest / NEUTRAL_FILE).is_file():
        raise ModelError(f"{archive.name} holds no FaceXModel/{NEUTRAL_FILE}")
    return version


def _copy_members(zf: zipfile.ZipFile, dest: Path) -> int:
    n = 0
    for info in zf.infolist():
        parts = info.filename.split("/")
        if (len(parts) >= 2 and parts[-2] == "FaceXModel" and "__MACOSX" not in parts
                and parts[-1].endswith((".obj", ".json"))):
            with zf.open(info) as src, open(dest / parts[-1], "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            n += 1
    return n


def fetch_model(cache_dir: str | os.PathLike[str] | None = None, url: str = DEFAULT_URL,
                timeout: float = 30, *, allow_partial: bool = False) -> Path:
    """Download ICT-FaceKit from ``url`` (a GitHub archive zip; ``file://`` works too), extract
    ``FaceXModel/`` and convert it to ``<cache_dir>/ict_face_model.npz`` (default cache:
    :func:`tracker.facemodel.cache_dir`). Returns the npz path.

    Raises :class:`NetworkError` when the download fails (e.g. offline: the message says how to
    convert a manually downloaded copy), :class:`ModelError` when the archive lacks the model.
    Downloads and extraction go to a temporary folder inside the cache, removed afterwards.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        archive = Path(tmp) / "ict-facekit.zip"
        log.info("fetching %s", url)
        _download(url, archive, timeout)
        folder = Path(tmp) / "FaceXModel"
        folder.mkdir()
        version = _extract_facexmodel(archive, folder)
        archive.unlink()
        return convert_facekit(folder, cache / MODEL_FILENAME, allow_partial=allow_partial,
                               source_version=version)


# --------------------------------------------------------------------------- CLI glue

def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``model convert FACEXMODEL_DIR OUT.npz [--allow-partial]`` and
    ``model fetch [--url URL] [--cache-dir DIR] [--timeout S]``; sets ``func=run``."""
    p = subparsers.add_parser("model", help="convert or download the ICT face model")
    sub = p.add_subparsers(dest="model_command", required=True)
    c = sub.add_parser("convert", help="convert ICT-FaceKit's FaceXModel/ OBJ folder to npz")
    c.add_argument("facexmodel_dir", help="FaceXModel/ folder (or the unpacked repository)")
    c.add_argument("out", help="output .npz")
    c.add_argument("--allow-partial", action="store_true",
                   help="convert whatever identity/expression OBJs are present")
    f = sub.add_parser("fetch", help="download ICT-FaceKit and convert it into the user cache")
    f.add_argument("--url", default=DEFAULT_URL, help="archive URL (default: %(default)s)")
    f.add_argument("--cache-dir", default=None, help="cache folder (default: ~/.cache/face3d)")
    f.add_argument("--timeout", type=float, default=30.0, help="network timeout, s")
    p.set_defaults(func=run)
    p.model_subparsers = sub  # type: ignore[attr-defined]  # more `model` commands hang here
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``face3d model …``; prints the written npz path. Errors propagate as Face3dError."""
    if getattr(args, "model_func", None) is not None:
        return int(args.model_func(args))
    if args.model_command == "convert":
        out = convert_facekit(args.facexmodel_dir, args.out, allow_partial=args.allow_partial)
    else:
        out = fetch_model(args.cache_dir, url=args.url, timeout=args.timeout)
    print(out)
    return 0
