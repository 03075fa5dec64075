"""ICT-FaceKit OBJ → npz converter, `model fetch` and the OBJ reader, against the shared npz.

The converter runs on ../shared/models/ict/obj-sample (neutral, identity000, jawOpen, eyeBlink_L,
vertex_indices.json) with allow_partial, and its output is compared with ict_face_model.npz.
"""

from __future__ import annotations

import argparse
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tracker.convert import add_parser, convert_facekit, fetch_model, run, write_npz_atomic
from tracker.errors import ModelError, NetworkError
from tracker.facemodel import MODEL_FILENAME, load_face_model
from tracker.objio import parse_obj, read_obj, triangulate, vertex_uv

SAMPLE_FILES = ("generic_neutral_mesh.obj", "identity000.obj", "jawOpen.obj", "eyeBlink_L.obj",
                "vertex_indices.json")


@pytest.fixture(scope="module")
def sample_dir(shared_dir) -> Path:
    d = shared_dir / "models" / "ict" / "obj-sample"
    if not all((d / f).is_file() for f in SAMPLE_FILES):
        pytest.skip(f"{d} lacks the sample OBJ files")
    return d


@pytest.fixture(scope="module")
def shared(model_path):
    with np.load(model_path, allow_pickle=False) as z:
        yield {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def converted(sample_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("conv") / "model.npz"
    assert convert_facekit(sample_dir, out, allow_partial=True) == out
    return out


@pytest.fixture(scope="module")
def conv(converted):
    with np.load(converted, allow_pickle=False) as z:
        yield {k: z[k] for k in z.files}


def _linked_copy(src: Path, dst: Path, replace: dict[str, bytes] | None = None) -> Path:
    """The sample folder as symlinks in ``dst``, some files replaced by the given bytes."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in SAMPLE_FILES:
        if replace and f in replace:
            (dst / f).write_bytes(replace[f])
        else:
            os.symlink(src / f, dst / f)
    return dst


# ---------------------------------------------------------------- conversion vs the shared npz

def test_geometry_topology_and_tables_equal_shared(conv, shared):
    exact = ["neutral", "faces", "faces_uv", "face_poly_idx", "uv", "vertex_uv", "vertex_uv_seam",
             "face_part", "vertex_part", "part_names", "part_vertex_range",
             "narrow_face_vertex_count", "eye_subpart_names", "eye_subpart_vertex_range",
             "material_names", "face_material", "lmk68_idx", "lmk68_names", "lmk68_rigid_subset",
             "fitting_verts", "rigid_verts", "lap_rigid_verts", "jaw_left_idx", "jaw_right_idx",
             "jaw_left_ext_idx", "jaw_right_ext_idx", "jaw_left_replaces_lmk68",
             "jaw_right_replaces_lmk68", "units", "scale_to_metres", "model_equation"]
    for k in exact:
        assert conv[k].dtype == shared[k].dtype, k
        np.testing.assert_array_equal(conv[k], shared[k], err_msg=k)


def test_same_schema_as_shared(conv, shared):
    assert set(conv) == set(shared)
    for k, a in shared.items():
        b = conv[k]
        assert b.dtype.kind == a.dtype.kind and b.ndim == a.ndim, k
        if k.endswith("basis"):
            assert b.dtype == np.float16 and b.shape[1:] == a.shape[1:], k


def test_partial_bases_match_shared_modes(conv, shared):
    assert list(conv["id_names"]) == ["identity000"]
    assert list(conv["exp_names"]) == ["eyeBlink_L", "jawOpen"]  # vertex_indices.json order
    assert conv["extra_exp_basis"].shape == (0,) + shared["neutral"].shape
    tol = 2 * float(shared["float16_max_abs_err_exp"])
    d = np.abs(conv["id_basis"][0].astype(np.float32) - shared["id_basis"][0].astype(np.float32))
    assert d.max() <= tol
    names = list(shared["exp_names"])
    for i, n in enumerate(conv["exp_names"]):
        ref = shared["exp_basis"][names.index(n)].astype(np.float32)
        assert np.abs(conv["exp_basis"][i].astype(np.float32) - ref).max() <= tol, n
        assert np.abs(ref).max() > 0.1  # a real displacement was compared, not zeros
    np.testing.assert_allclose(conv["id_mode_rms"][0], shared["id_mode_rms"][0], rtol=1e-5)
    assert 0 < conv["float16_max_abs_err_id"] <= shared["float16_max_abs_err_id"]
    assert "partial" in str(conv["source"])


def test_deltas_are_mesh_minus_neutral(sample_dir, conv):
    # Independent (slow-path) reading of two vertex blocks with plain Python.
    def verts(name: str) -> np.ndarray:
        with open(sample_dir / name) as f:
            rows = [[float(t) for t in ln.split()[1:4]] for ln in f if ln.startswith("v ")]
        return np.array(rows)
    n = verts("generic_neutral_mesh.obj")
    j = verts("jawOpen.obj")
    np.testing.assert_array_equal(conv["neutral"], n.astype(np.float32))
    i = list(conv["exp_names"]).index("jawOpen")
    err = np.abs(conv["exp_basis"][i].astype(np.float64) - (j - n))
    assert err.max() <= 1e-3
    assert err.max() == pytest.approx(float(conv["float16_max_abs_err_exp"]), rel=1e-3)


def test_output_loads_as_face_model(converted, model):
    m = load_face_model(converted)
    assert (m.n_identity, m.n_expression) == (1, 2)
    np.testing.assert_array_equal(m.neutral, model.neutral)
    np.testing.assert_array_equal(m.faces, model.faces)
    assert m.part_names == model.part_names
    np.testing.assert_array_equal(m.jaw_left_idx, model.jaw_left_idx)
    # nose tip near (0, 0.41, 13.07) cm in the model's +z-toward-viewer frame, metres after load
    assert m.neutral[:, 2].max() == pytest.approx(0.1307, abs=0.002)


# ---------------------------------------------------------------- errors and atomic writing

def test_missing_files_without_allow_partial(sample_dir, tmp_path):
    with pytest.raises(ModelError) as e:
        convert_facekit(sample_dir, tmp_path / "m.npz")
    msg = str(e.value)
    assert "identity001.obj" in msg and "browDown_L.obj" in msg and "jawOpen.obj" not in msg
    assert not (tmp_path / "m.npz").exists()


def test_missing_neutral_is_model_error(tmp_path):
    with pytest.raises(ModelError, match="generic_neutral_mesh.obj"):
        convert_facekit(tmp_path, tmp_path / "m.npz", allow_partial=True)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "fewer_vertices", "other_faces"])
def test_malformed_obj_names_the_file(sample_dir, tmp_path, kind):
    data = (sample_dir / "jawOpen.obj").read_bytes()
    if kind == "truncated":
        bad = data[: len(data) // 2]
    elif kind == "garbage":
        i = data.index(b"\nv ", data.index(b"\nv ") + 1)  # second vertex line
        bad = data[:i] + b"\nv 0.1 -2.1x2 11.6" + data[data.index(b"\n", i + 1):]
    elif kind == "fewer_vertices":
        i = data.index(b"\nv ")
        bad = data[:i] + data[data.index(b"\n", i + 1):]
    else:
        bad = data.replace(b"\nf 874/1 12/2 871/3 873/4", b"\nf 874/1 12/2 873/4 871/3", 1)
    assert bad != data
    src = _linked_copy(sample_dir, tmp_path / "src", {"jawOpen.obj": bad})
    out = tmp_path / "m.npz"
    with pytest.raises(ModelError, match="jawOpen.obj"):
        convert_facekit(src, out, allow_partial=True)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_malformed_json_is_model_error(sample_dir, tmp_path):
    src = _linked_copy(sample_dir, tmp_path / "src", {"vertex_indices.json": b'{"expressions": ['})
    with pytest.raises(ModelError, match="vertex_indices.json"):
        convert_facekit(src, tmp_path / "m.npz", allow_partial=True)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    out = tmp_path / "m.npz"
    write_npz_atomic(out, {"a": np.arange(3)})
    before = out.read_bytes()
    with pytest.raises(ValueError):  # object arrays would need pickle: refused mid-write
        write_npz_atomic(out, {"a": np.arange(1000), "b": np.array([{"x": 1}], dtype=object)})
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["a"], np.arange(3))


# ---------------------------------------------------------------- fetch

def _facekit_zip(sample_dir: Path, path: Path, commit: str, nested: bool = False) -> Path:
    """A GitHub-like archive: ICT-FaceKit-master/FaceXModel/*, or FaceXModel.zip inside it."""
    inner = path.with_name("FaceXModel.zip")
    if nested:
        with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in SAMPLE_FILES:
                zf.write(sample_dir / f, f"FaceXModel/{f}")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("ICT-FaceKit-master/README.md", "# ICT-FaceKit\n")
        if nested:
            zf.write(inner, "ICT-FaceKit-master/FaceXModel.zip")
        else:
            for f in SAMPLE_FILES:
                zf.write(sample_dir / f, f"ICT-FaceKit-master/FaceXModel/{f}")
        zf.comment = commit.encode()
    return path


def test_fetch_offline_raises_network_error(tmp_path):
    with pytest.raises(NetworkError) as e:
        fetch_model(tmp_path / "cache", url="http://face3d.invalid/x.zip", timeout=2)
    msg = str(e.value)
    assert "\n" not in msg and "face3d model convert" in msg and "FACE3D_MODEL" in msg
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("nested", [False, True], ids=["folder", "nested_zip"])
def test_fetch_file_url_extracts_and_converts(sample_dir, tmp_path, monkeypatch, nested):
    commit = "da5f95a6" + "0" * 32
    archive = _facekit_zip(sample_dir, tmp_path / "master.zip", commit, nested)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    out = fetch_model(url=archive.as_uri(), timeout=5, allow_partial=True)
    assert out == tmp_path / "xdg" / "face3d" / MODEL_FILENAME
    assert [p.name for p in out.parent.iterdir()] == [MODEL_FILENAME]  # temporaries removed
    m = load_face_model(out)
    assert m.version == "da5f95a6" and m.exp_names == ("eyeBlink_L", "jawOpen")


def test_fetch_without_allow_partial_reports_missing(sample_dir, tmp_path):
    archive = _facekit_zip(sample_dir, tmp_path / "master.zip", "x")
    with pytest.raises(ModelError, match="identity099.obj"):
        fetch_model(tmp_path / "cache", url=archive.as_uri())
    assert list((tmp_path / "cache").iterdir()) == []


def test_fetch_rejects_non_zip_and_archive_without_model(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>not a zip</html>")
    with pytest.raises(NetworkError, match="not a valid zip"):
        fetch_model(tmp_path / "cache", url=junk.as_uri())
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("ICT-FaceKit-master/README.md", "x")
    with pytest.raises(ModelError, match="FaceXModel"):
        fetch_model(tmp_path / "cache", url=empty.as_uri())


# ---------------------------------------------------------------- CLI glue

def test_cli_model_convert(sample_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="face3d")
    add_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "m.npz"
    args = parser.parse_args(["model", "convert", str(sample_dir), str(out), "--allow-partial"])
    assert args.func is run and run(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert load_face_model(out).n_expression == 2
    args = parser.parse_args(["model", "fetch", "--url", "http://face3d.invalid/x.zip",
                              "--cache-dir", str(tmp_path / "c"), "--timeout", "2"])
    with pytest.raises(NetworkError):
        run(args)


# ---------------------------------------------------------------- OBJ reader (tracker/objio.py)

QUAD_OBJ = b"""# two quads: a long a-c diagonal and a short one
v 0 0 0
v 1 0 0
v 3 1 0
v 0 1 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
usemtl A
f 1/1 2/2 3/3 4/4
usemtl B
f -3/2 -2/3 -1/4 -4/1
"""


def test_quads_split_along_shorter_diagonal():
    m = parse_obj(QUAD_OBJ, "quad.obj")
    faces, faces_uv, poly = triangulate(m)
    # quad (0,1,2,3): |0-2|^2 = 10 > |1-3|^2 = 2 -> split b-d: (a,b,d), (b,c,d)
    # quad (1,2,3,0): |1-3|^2 = 2 < |2-0|^2 = 10 -> split a-c: (a,b,c), (a,c,d)
    np.testing.assert_array_equal(faces, [[0, 1, 3], [1, 2, 3], [1, 2, 3], [1, 3, 0]])
    np.testing.assert_array_equal(faces_uv, [[0, 1, 3], [1, 2, 3], [1, 2, 3], [1, 3, 0]])
    np.testing.assert_array_equal(poly, [0, 0, 1, 1])
    assert m.material_names == ("A", "B") and list(m.poly_material) == [0, 1]
    assert faces.dtype == np.int32 and faces_uv.dtype == np.int32


def test_polygon_fan_and_corner_layouts():
    obj = b"v 0 0 0\nv 1 0 0\nv 2 1 0\nv 1 2 0\nv 0 1 0\nvn 0 0 1\nf 1//1 2//1 3//1 4//1 5//1\n"
    m = parse_obj(obj, "pent.obj")
    assert m.corner_vt is None
    faces, faces_uv, poly = triangulate(m)
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [0, 3, 4]])
    assert faces_uv is None and list(poly) == [0, 0, 0]
    m3 = parse_obj(b"v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1/1 2/2/1 3/3/1\n")
    np.testing.assert_array_equal(m3.corner_vt, [0, 1, 2])


def test_vertex_uv_first_corner_and_seam():
    obj = (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\n"
           b"vt 0 0\nvt 1 0\nvt 0 1\nvt 5 5\nvt 0 0\n"
           b"f 1/1 2/2 3/3\nf 2/2 4/4 3/5\n")
    uv, seam = vertex_uv(parse_obj(obj))
    np.testing.assert_array_equal(uv, [[0, 0], [1, 0], [0, 1], [5, 5]])
    assert uv.dtype == np.float32
    # vertex 2 has UVs (0,1) and (0,0): a seam; vertex 1 repeats index 1: not a seam
    assert list(seam) == [False, False, True, False]


@pytest.mark.parametrize("obj, match", [
    (b"v 0 0\nf 1 1 1\n", "vertex"),
    (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "out of range"),
    (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\n", "fewer than 3"),
    (b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    (b"hello\n", "no vertices"),
    (b"v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "non-finite"),
    (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/1 3\n", "face"),
])
def test_parse_obj_rejects_malformed(obj, match):
    with pytest.raises(ModelError, match=match):
        parse_obj(obj, "bad.obj")


def test_read_obj_missing_file(tmp_path):
    with pytest.raises(ModelError, match="nothere.obj"):
        read_obj(tmp_path / "nothere.obj")
