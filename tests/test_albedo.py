"""tracker.albedo: the painted per-vertex albedo and the Laplacian albedo basis."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.albedo import (
    SKIN_PARTS,
    Palette,
    _brow_polygons,
    albedo_basis,
    cotangent_laplacian,
    eye_cones,
    random_palette,
    vertex_albedo,
)


@pytest.fixture(scope="module")
def painted(model):
    return vertex_albedo(model)


def test_painted_regions(model, painted):
    a = painted
    assert a.shape == (model.n_vertices, 3) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    pal = Palette()
    lm = model.lmk68_idx
    # lip landmarks are lip-coloured, the cheek and forehead are skin
    lips = a[lm[[50, 52, 56, 58]]]
    np.testing.assert_allclose(lips.mean(0), pal.lips, atol=0.08)
    v = model.neutral
    face = model.part_vertices("face")
    forehead = face[(v[face, 1] > v[lm[19], 1] + 0.02) & (np.abs(v[face, 0]) < 0.02)
                    & (v[face, 2] > 0.08)]
    assert len(forehead) > 20
    np.testing.assert_allclose(a[forehead].mean(0), pal.skin, atol=0.01)
    # brows: the middle of each MediaPipe brow outline (placed by the correspondence) is dark
    polys = _brow_polygons(model, v)
    assert polys is not None
    front = face[v[face, 2] > v[lm[19], 2] - 0.01]
    for poly, lo in zip(polys, (17, 22)):
        c = 0.5 * (poly[2] + poly[7])  # between an upper and a lower outline point, mid-brow
        near = front[np.argsort(np.linalg.norm(v[front, :2] - c, axis=1))[:3]]
        assert a[near].mean() < 0.6 * a[forehead].mean()
        # and the brow sits between the eye and the top of the forehead
        assert v[lm[lo + 2], 1] - 0.02 < c[1] < v[lm[lo + 2], 1] + 0.01
    for part, (ids, ang) in eye_cones(model).items():
        sclera = a[ids[ang > np.radians(50)]].mean(0)
        pupil = a[ids[ang < np.radians(3)]].mean(0)
        assert sclera.min() > 0.75 and pupil.max() < 0.1, part
    teeth = a[model.part_vertices("teeth")].mean(0)
    mouth = a[model.part_vertices("mouth_socket")].mean(0)
    assert teeth.min() > 0.7 and mouth.max() < 0.3


def test_left_right_symmetry(model, painted):
    """The painted regions are mirror-symmetric (x -> -x): catches a left/right mix-up."""
    from scipy.spatial import cKDTree

    face = model.part_vertices("face")[: model.narrow_face_vertex_count]
    v = model.neutral[face].astype(np.float64)
    mirrored = v * np.array([-1.0, 1.0, 1.0])
    d, j = cKDTree(v).query(mirrored)
    ok = d < 0.0015
    assert ok.mean() > 0.8
    diff = np.abs(painted[face][ok] - painted[face][j[ok]]).max(-1)
    assert np.percentile(diff, 99) < 0.15


def test_random_palette_is_plausible_and_seeded():
    a = random_palette(np.random.default_rng(7))
    b = random_palette(np.random.default_rng(7))
    assert a == b
    skins = np.array([random_palette(np.random.default_rng(s)).skin for s in range(50)])
    assert skins.min() >= 0 and skins.max() <= 1
    assert (skins[:, 0] >= skins[:, 1]).all() and (skins[:, 1] >= skins[:, 2]).all()  # warm
    assert np.ptp(skins.mean(1)) > 0.3   # light to dark


def test_albedo_basis_is_a_smooth_orthonormal_skin_basis(model):
    k = 10
    mean, basis = albedo_basis(model, k)
    assert mean.shape == (model.n_vertices, 3) and basis.shape == (k, model.n_vertices, 3)
    np.testing.assert_array_equal(mean, vertex_albedo(model))
    np.testing.assert_array_equal(basis[..., 0], basis[..., 2])
    tris = model.part_faces(*SKIN_PARTS)
    skin = np.unique(tris)
    off = np.setdiff1d(np.arange(model.n_vertices), skin)
    assert np.abs(basis[:, off]).max() == 0.0
    remap = np.full(model.n_vertices, -1)
    remap[skin] = np.arange(len(skin))
    lap, mass = cotangent_laplacian(model.neutral[skin], remap[tris])
    phi = basis[:, skin, 0].astype(np.float64).T
    m = mass.diagonal()
    gram = (phi * m[:, None]).T @ phi / m.sum()
    np.testing.assert_allclose(gram, np.eye(k), atol=1e-4)        # M-orthonormal, unit RMS
    assert np.ptp(phi[:, 0]) < 1e-4                                # mode 0: constant
    rayleigh = np.einsum("vk,vk->k", phi, lap @ phi) / np.einsum("vk,v,vk->k", phi, m, phi)
    assert rayleigh[0] < 1e-6 and np.all(np.diff(rayleigh) > -1e-6)  # increasing frequency
    assert rayleigh[-1] < 2e4                                       # still smooth (1/m^2)


def test_albedo_basis_rejects_bad_k(model):
    with pytest.raises(ValueError):
        albedo_basis(model, 0)
