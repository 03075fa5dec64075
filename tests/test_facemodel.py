"""FaceModel: one validating loader (no pickle), metres, read-only arrays, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.errors import ModelError
from tracker.facemodel import face_model_from_arrays, load_face_model, resolve_model_path, vertices


def test_loads_shared_npz_in_metres(model):
    assert model.n_vertices == 26719 and model.n_identity == 100 and model.n_expression == 53
    assert model.neutral.dtype == np.float32 and model.id_basis.dtype == np.float32
    assert model.exp_names[26] == "jawOpen"
    assert model.version == "da5f95a6"
    # 8-10 cm between the outer eye corners: metres, not centimetres
    lm = model.neutral[model.lmk68_idx]
    assert 0.08 < np.linalg.norm(lm[36] - lm[45]) < 0.1
    with pytest.raises(ValueError):
        model.neutral[0, 0] = 1.0  # read-only
    assert model.part_names[0] == "face" and len(model.part_vertices("eyeball_left")) == 1570


def test_vertices_subset_equals_full(model):
    rng = np.random.default_rng(0)
    a = rng.normal(size=100)
    e = rng.uniform(0, 1, 53)
    full = vertices(model, a, e)
    idx = np.array([0, 5, 1000, 26000])
    assert np.allclose(vertices(model, a, e, idx=idx), full[idx], atol=1e-7)
    assert np.allclose(vertices(model), model.neutral)


def test_resolution_order(model_path, monkeypatch, tmp_path):
    monkeypatch.setenv("FACE3D_MODEL", str(model_path))
    assert resolve_model_path() == model_path
    with pytest.raises(ModelError, match="missing"):
        resolve_model_path(tmp_path / "missing.npz")
    monkeypatch.setenv("FACE3D_MODEL", str(tmp_path / "nope.npz"))
    with pytest.raises(ModelError, match="FACE3D_MODEL"):
        resolve_model_path()
    monkeypatch.delenv("FACE3D_MODEL")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="model fetch"):
        resolve_model_path()


def test_malformed_models_are_model_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot read"):
        load_face_model(bad)
    good = {"neutral": np.zeros((4, 3), np.float32), "id_basis": np.zeros((2, 4, 3), np.float16),
            "exp_basis": np.zeros((1, 4, 3), np.float16), "exp_names": np.array(["jawOpen"]),
            "faces": np.array([[0, 1, 2], [1, 2, 3]], np.int32), "lmk68_idx": np.zeros(68, np.int32)}
    assert face_model_from_arrays(good).n_vertices == 4
    for key, value, msg in [("faces", np.array([[0, 1, 9]], np.int32), "faces index"),
                            ("id_basis", np.zeros((2, 5, 3)), "vertex count"),
                            ("lmk68_idx", np.zeros(67, np.int32), "shape"),
                            ("exp_names", np.array(["a", "b"]), "exp_names")]:
        with pytest.raises(ModelError, match=msg):
            face_model_from_arrays({**good, key: value})
    with pytest.raises(ModelError, match="lacks key"):
        face_model_from_arrays({k: v for k, v in good.items() if k != "faces"})
    # pickled object arrays are refused by np.load(allow_pickle=False)
    obj = tmp_path / "obj.npz"
    np.savez(obj, **{**good, "exp_names": np.array([object()], dtype=object)})
    with pytest.raises(ModelError):
        load_face_model(obj)
