"""The F3DM blob (bytes in/bytes out) and the mesh region a viewer gets."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.facemodel import vertices
from tracker.wiremesh import BLOB_DTYPES, decode_blob, encode_blob, mesh_blob, mesh_region


def test_blob_round_trip_and_alignment():
    rng = np.random.default_rng(1)
    arrays = {"a": rng.normal(size=(3, 5)).astype(np.float32),
              "b": rng.normal(size=7).astype(np.float16),
              "c": rng.integers(0, 2**31, size=(4, 3)).astype(np.uint32),
              "d": rng.integers(-5, 5, size=1).astype(np.int32),
              "e": np.arange(5, dtype=np.uint8)}
    data = encode_blob({"type": "test", "x": [1, 2]}, arrays)
    header, got = decode_blob(data)
    assert header["type"] == "test" and header["x"] == [1, 2]
    assert [a["name"] for a in header["arrays"]] == list(arrays)
    n = int.from_bytes(data[4:8], "little")
    assert (8 + n) % 8 == 0 and all(a["offset"] % 8 == 0 for a in header["arrays"])
    for k, v in arrays.items():
        assert got[k].dtype == np.dtype(BLOB_DTYPES[v.dtype.name]) and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)


def test_blob_rejects_bad_input():
    with pytest.raises(ValueError):
        encode_blob({}, {"x": np.zeros(2, np.float64)})
    good = encode_blob({}, {"x": np.zeros(100, np.float32)})
    for bad in (b"", b"F3DM", b"XXXX" + good[4:], good[:-8], good[:12]):
        with pytest.raises(ValueError):
            decode_blob(bad)


def test_region_is_front_face_mouth_and_eyes(model):
    reg = mesh_region(model)
    names = list(reg.parts)
    assert names == ["face", "mouth_socket", "eyeball_left", "eyeball_right"]
    ids = reg.vertex_ids
    assert len(np.unique(ids)) == len(ids)
    assert reg.parts["face"][1] == model.narrow_face_vertex_count
    assert reg.triangles.min() >= 0 and reg.triangles.max() < len(ids)
    # each part's triangles use only that part's vertices
    for v0, vn, t0, tn in reg.parts.values():
        t = reg.triangles[t0:t0 + tn]
        assert tn > 0 and t.min() >= v0 and t.max() < v0 + vn
    # the cut of the expression basis loses nothing: eyeballs never move with expressions
    eyes = ids[reg.exp_vertices:]
    assert np.abs(model.exp_basis[:, eyes]).max() == 0.0
    assert set(reg.subparts) == {"sclera_left", "iris_left", "sclera_right", "iris_right"}


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-6), ("float16", 2e-5)])
def test_mesh_blob_rebuilds_the_model(model, dtype, tol):
    """neutral + identity + expression from the blob = the model's vertices (metres)."""
    header, a = decode_blob(mesh_blob(model, dtype=dtype))
    ids = a["vertex_ids"].astype(np.int64)
    assert header["units"] == "metres" and header["exp_names"] == list(model.exp_names)
    assert a["exp_basis"].shape == (model.n_expression, header["exp_vertices"], 3)
    assert a["id_basis"].shape == (model.n_identity, len(ids), 3)
    rng = np.random.default_rng(2)
    alpha = rng.normal(size=model.n_identity).astype(np.float32)
    beta = rng.uniform(0, 1, model.n_expression).astype(np.float32)
    want = vertices(model, alpha, beta, idx=ids)
    got = a["neutral"] + np.tensordot(alpha, a["id_basis"].astype(np.float32), 1)
    ne = header["exp_vertices"]
    got[:ne] += np.tensordot(beta, a["exp_basis"].astype(np.float32), 1)
    err = np.abs(got - want).max()
    assert err < tol * 100, err   # 100 identity modes + 53 expressions accumulate rounding
    np.testing.assert_array_equal(a["triangles"], mesh_region(model).triangles)
    if dtype == "float16":  # each delta within 2e-5 m (the figure in web/PROTOCOL.md)
        assert np.abs(a["exp_basis"] - model.exp_basis[:, ids[:ne]]).max() < 2e-5
        assert np.abs(a["id_basis"] - model.id_basis[:, ids]).max() < 2e-5
    from tracker.gaze import make_eye_basis

    eyes = make_eye_basis(model)  # the viewer turns the eyes about the tracker's own pivots
    np.testing.assert_allclose(a["eye_pivots"], eyes.centre, atol=1e-7)
    np.testing.assert_allclose(a["eye_pivot_id"], eyes.centre_id, atol=1e-7)
    small = decode_blob(mesh_blob(model, dtype=dtype, identity_basis=False))[1]
    assert "id_basis" not in small
