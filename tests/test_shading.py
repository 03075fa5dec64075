"""kernels.shading: Deep3DFaceRecon SH lighting (basis, coefficient order, normal convention),
area-weighted vertex normals, Lambert; and the torch formula the CUDA backend uses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.shading import (SH_INIT_DC, default_gamma, lambert, normalize, sh_basis, sh_shade,
                             vertex_normals)


def unit_normals(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def direct_basis(n: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon's basis written out from its constants (../shared/DESIGN.md)."""
    pi = math.pi
    a0, a1, a2 = pi, 2 * pi / math.sqrt(3.0), 2 * pi / math.sqrt(8.0)
    c0, c1 = 1 / math.sqrt(4 * pi), math.sqrt(3.0) / math.sqrt(4 * pi)
    c2 = 3 * math.sqrt(5.0) / math.sqrt(12 * pi)
    x, y, z = n[:, 0], n[:, 1], n[:, 2]
    return np.stack([np.full_like(x, a0 * c0), -a1 * c1 * y, a1 * c1 * z, -a1 * c1 * x,
                     a2 * c2 * x * y, -a2 * c2 * y * z, a2 * c2 * 0.5 / math.sqrt(3.0) * (3 * z * z - 1),
                     -a2 * c2 * x * z, a2 * c2 * 0.5 * (x * x - y * y)], axis=1)


def uv_sphere(n_lat: int = 12, n_lon: int = 24, radius: float = 0.3):
    """Closed UV sphere, triangles counter-clockwise seen from outside."""
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    t, p = t.ravel(), p.ravel()
    ring = np.c_[np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)]
    v = np.r_[[[0, 1, 0]], ring, [[0, -1, 0]]] * radius
    tris = []
    idx = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        tris.append([0, idx(0, j + 1), idx(0, j)])
        tris.append([len(v) - 1, idx(n_lat - 2, j), idx(n_lat - 2, j + 1)])
        for i in range(n_lat - 2):
            tris.append([idx(i, j), idx(i, j + 1), idx(i + 1, j + 1)])
            tris.append([idx(i, j), idx(i + 1, j + 1), idx(i + 1, j)])
    return v, np.array(tris, np.int32)


def test_sh_basis_equals_the_direct_formula():
    n = unit_normals(500)
    np.testing.assert_allclose(sh_basis(n), direct_basis(n), rtol=1e-12, atol=1e-12)
    b32 = sh_basis(n.astype(np.float32).reshape(20, 25, 3))
    assert b32.dtype == np.float32 and b32.shape == (20, 25, 9)
    np.testing.assert_allclose(b32.reshape(-1, 9), direct_basis(n), atol=1e-6)


def test_sh_shade_is_colour_major_basis_dot_gamma_times_albedo():
    rng = np.random.default_rng(1)
    n = unit_normals(300, 2)
    albedo = rng.uniform(0.2, 1.0, (300, 3))
    gamma = rng.normal(size=27)
    want = (direct_basis(n) @ gamma.reshape(3, 9).T) * albedo
    np.testing.assert_allclose(sh_shade(n, albedo, gamma), want, rtol=1e-10, atol=1e-12)
    # gamma[0:9] is red, [9:18] green, [18:27] blue
    only_green_dc = np.zeros(27)
    only_green_dc[9] = 1.0
    c = sh_shade(n, albedo, only_green_dc)
    assert not c[:, [0, 2]].any() and (c[:, 1] > 0).all()


def test_default_lighting_is_deep3d_ambient():
    g = default_gamma()
    assert g.shape == (27,) and g[[0, 9, 18]].tolist() == [pytest.approx(SH_INIT_DC)] * 3
    c = sh_shade(unit_normals(10), np.ones((10, 3)), g)
    np.testing.assert_allclose(c, SH_INIT_DC * math.pi / math.sqrt(4 * math.pi))  # 0.8 * sqrt(pi)/2


def test_normal_convention_z_toward_camera_and_y_up():
    """A positive 3rd coefficient (a1 c1 z) lights normals facing the camera (+z); a positive 2nd
    (-a1 c1 y) lights normals facing down (-y)."""
    n = np.array([[0, 0, 1.0], [0, 0, -1.0], [0, 1.0, 0], [0, -1.0, 0]])
    g = np.zeros(27)
    g[2::9] = 1.0
    c = sh_shade(n, np.ones((4, 3)), g)
    assert c[0, 0] > 0 > c[1, 0]
    g = np.zeros(27)
    g[1::9] = 1.0
    c = sh_shade(n, np.ones((4, 3)), g)
    assert c[3, 0] > 0 > c[2, 0]


def test_vertex_normals_on_a_sphere_point_outward():
    v, tris = uv_sphere()
    n = vertex_normals(v, tris)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, rtol=1e-12)
    assert (np.sum(n * v / np.linalg.norm(v, axis=1, keepdims=True), axis=1) > 0.99).all()
    n32 = vertex_normals(v.astype(np.float32), tris)
    assert n32.dtype == np.float32
    np.testing.assert_allclose(n32, n, atol=1e-6)


def test_vertex_normals_are_area_weighted():
    # vertex 0 is shared by a big triangle facing +z (area 2) and a small one facing +x (area 0.5)
    v = np.array([[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 1, 0], [0, 0, 1]], np.float64)
    tris = np.array([[0, 1, 2], [0, 3, 4]], np.int32)
    n = vertex_normals(v, tris)
    np.testing.assert_allclose(n[0], np.array([0.5, 0, 2.0]) / math.hypot(0.5, 2.0))
    np.testing.assert_allclose(n[1], [0, 0, 1])
    unused = vertex_normals(np.r_[v, [[5, 5, 5]]], tris)[-1]
    assert not unused.any()
    with pytest.raises(ValueError):
        vertex_normals(v, tris + 10)


def test_ict_normals_face_the_camera_at_rest(model):
    n = vertex_normals(model.neutral, model.faces)
    nose = int(np.argmax(model.neutral[:model.narrow_face_vertex_count, 2]))
    assert n[nose, 2] > 0.9  # +z out of the face, toward the camera at rest
    face = model.part_vertices("face")[: model.narrow_face_vertex_count]
    assert np.median(n[face, 2]) > 0.5


def test_lambert_and_normalize():
    n = normalize(np.array([[0, 0, 2.0], [0, 0, -3.0], [0, 0, 0.0]]))
    np.testing.assert_allclose(n, [[0, 0, 1], [0, 0, -1], [0, 0, 0]])
    np.testing.assert_allclose(lambert(n, [0, 0, 5]), [1.0, 0.3, 0.3])
    with pytest.raises(ValueError):
        lambert(n, [0, 0, 0])


def test_torch_formula_of_the_cuda_backend_matches(monkeypatch):
    """The nvdiffrast backend shades in torch; its formula is checked here on CPU tensors."""
    torch = pytest.importorskip("torch")
    from tracker.render_cuda import NvdiffrastBackend

    be = NvdiffrastBackend(ctx=None, device=torch.device("cpu"), torch=torch, dr=None)
    rng = np.random.default_rng(3)
    n = unit_normals(50, 4).astype(np.float32)
    albedo = rng.uniform(0.2, 1, (50, 3)).astype(np.float32)
    gamma = rng.normal(size=27).astype(np.float32)
    np.testing.assert_allclose(be.shade_sh(n, albedo, gamma), sh_shade(n, albedo, gamma), atol=1e-5)
