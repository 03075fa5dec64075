"""kernels.raster / kernels.antialias / tracker.render(_cuda): exact agreement with the numpy
reference, conventions pinned by name, gradients against finite differences, the ICT face."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from kernels.antialias import antialias, edge_neighbours
from kernels.raster import interpolate, interpolate_backward, rasterize, rasterize_backward
from tracker.camera import camera_from_focal, project, unproject_ray
from tracker.errors import BackendUnavailableError
from tracker.render import CULL_BACK, clip_from_camera, make_backend, render_mesh
from tracker.types import Camera

sys.path.insert(0, str(Path(__file__).parent))
from raster_reference import barycentrics_ref, interpolate_ref, rasterize_ref  # noqa: E402

RES = (48, 64)  # (H, W): non-square on purpose


def random_mesh(seed: int, n_vertices: int = 40, n_tris: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Random clip-space soup: overlapping and intersecting triangles, both windings, varied w,
    some depth outside [-1, 1], plus degenerate ones (repeated and collinear vertices)."""
    rng = np.random.default_rng(seed)
    pos = np.empty((n_vertices + 3, 4), np.float32)
    w = rng.uniform(0.5, 3.0, n_vertices)
    ndc = np.c_[rng.uniform(-1.3, 1.3, (n_vertices, 2)), rng.uniform(-1.2, 1.2, n_vertices)]
    pos[:n_vertices, :3] = ndc * w[:, None]
    pos[:n_vertices, 3] = w
    pos[n_vertices:] = [[0.1, 0.1, 0.0, 1.0], [0.3, 0.3, 0.0, 1.0], [0.5, 0.5, 0.0, 1.0]]  # collinear
    tris = rng.integers(0, n_vertices, (n_tris, 3))
    tris[:3, 1] = tris[:3, 0]  # repeated vertex
    tris = np.vstack([tris, [[n_vertices, n_vertices + 1, n_vertices + 2]]])
    return pos, np.ascontiguousarray(tris, np.int32)


def small_triangle_mesh(seed: int, res=RES, n=12) -> tuple[np.ndarray, np.ndarray]:
    """A jittered grid over the whole screen, perspective (varying w), each quad split in two."""
    rng = np.random.default_rng(seed)
    g = np.linspace(-1.1, 1.1, n)
    x, y = np.meshgrid(g, g)
    ndc = np.c_[x.ravel(), y.ravel()] + rng.uniform(-0.06, 0.06, (n * n, 2))
    w = rng.uniform(1.0, 2.0, n * n)
    z = rng.uniform(-0.9, 0.9, n * n)
    pos = np.c_[ndc * w[:, None], z * w, w].astype(np.float32)
    i = np.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).ravel()
    tris = np.r_[np.c_[a, a + 1, a + n + 1], np.c_[a, a + n + 1, a + n]]
    return pos, np.ascontiguousarray(tris, np.int32)


# -------------------------------------------------------------------------------------------
# Exact agreement with the reference


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("cull", ["none", "cw", "ccw"])
def test_ids_and_depth_equal_reference_on_random_meshes(seed, cull):
    pos, tris = random_mesh(seed)
    got = rasterize(pos, tris, RES, cull)
    ref = rasterize_ref(pos, tris, RES, cull)
    assert (ref[..., 3] > 0).mean() > 0.5  # the test scene is not empty
    np.testing.assert_array_equal(got[..., 3], ref[..., 3])
    np.testing.assert_array_equal(got[..., 2], ref[..., 2])
    np.testing.assert_allclose(got[..., :2], ref[..., :2], atol=2e-5)


@pytest.mark.parametrize("seed", range(3))
def test_grid_mesh_equals_reference_and_is_watertight(seed):
    pos, tris = small_triangle_mesh(seed)
    got = rasterize(pos, tris, RES)
    np.testing.assert_array_equal(got[..., 3], rasterize_ref(pos, tris, RES)[..., 3])
    np.testing.assert_array_equal(got[..., 2], rasterize_ref(pos, tris, RES)[..., 2])
    assert (got[..., 3] > 0).all()  # the mesh covers the screen: no cracks along shared edges
    # every pixel centre is inside exactly one triangle: render each triangle alone and count
    count = np.zeros(RES, int)
    for t in range(len(tris)):
        count += rasterize(pos, tris[t:t + 1], RES)[..., 3] > 0
    np.testing.assert_array_equal(count, 1)


def test_bigger_image_equals_reference_and_reuses_out():
    pos, tris = random_mesh(7, 200, 300)
    out = np.full((97, 131, 4), 7.0, np.float32)  # not a multiple of the band height
    got = rasterize(pos, tris, (97, 131), out=out)
    assert got is out
    np.testing.assert_array_equal(got[..., 2:], rasterize_ref(pos, tris, (97, 131))[..., 2:])


def test_barycentrics_reconstruct_the_pixel_centre():
    pos, tris = random_mesh(3)
    rast = rasterize(pos, tris, RES)
    rr, cc = np.nonzero(rast[..., 3] > 0)
    t = rast[rr, cc, 3].astype(int) - 1
    u, v = rast[rr, cc, 0].astype(np.float64), rast[rr, cc, 1].astype(np.float64)
    p = pos[tris[t]].astype(np.float64)
    clip = u[:, None] * p[:, 0] + v[:, None] * p[:, 1] + (1 - u - v)[:, None] * p[:, 2]
    np.testing.assert_allclose(clip[:, 0] / clip[:, 3], (2 * cc + 1) / RES[1] - 1, atol=1e-4)
    np.testing.assert_allclose(clip[:, 1] / clip[:, 3], (2 * rr + 1) / RES[0] - 1, atol=1e-4)
    np.testing.assert_allclose(clip[:, 2] / clip[:, 3], rast[rr, cc, 2], atol=1e-3)


# -------------------------------------------------------------------------------------------
# Conventions


def _pixel_space_tris(verts_px, res, z=0.0):
    """Triangles given in pixel coordinates (column, row), w = 1."""
    h, w = res
    v = np.asarray(verts_px, np.float64)
    pos = np.c_[2 * v[:, 0] / w - 1, 2 * v[:, 1] / h - 1, np.full(len(v), z), np.ones(len(v))]
    return pos.astype(np.float32)


def test_pixel_centres_are_at_half_integers_and_rows_follow_image_v():
    cam = Camera(fx=100.0, fy=100.0, cx=32.0, cy=24.0, width=64, height=48)

    def strip(u0, u1, v0, v1):
        uv = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
        x = unproject_ray(cam, uv) * 2.0  # camera space at Z = -2
        tris = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
        return rasterize(clip_from_camera(cam, x), tris, (cam.height, cam.width))[..., 3] > 0

    hit = strip(10.4, 10.6, 5.2, 20.8)  # contains the centres u = 10.5, v = 5.5 ... 20.5
    rows, cols = np.nonzero(hit)
    assert set(cols) == {10} and rows.min() == 5 and rows.max() == 20
    assert not strip(10.6, 11.4, 5.2, 20.8).any()  # no pixel centre inside
    # a point projecting to (u, v) lands in pixel (floor(v), floor(u))
    x = np.array([[0.31, -0.17, -2.0]])
    u, v = project(cam, x)[0]
    small = unproject_ray(cam, np.array([[u - 0.3, v - 0.3], [u + 0.3, v - 0.3], [u, v + 0.3]])) * 2
    rows, cols = np.nonzero(rasterize(clip_from_camera(cam, small), np.array([[0, 1, 2]], np.int32),
                                      (48, 64))[..., 3] > 0)
    assert (rows.tolist(), cols.tolist()) == ([math.floor(v)], [math.floor(u)])


def test_fill_rule_on_shared_edges_through_pixel_centres():
    res = (16, 16)
    # two triangles sharing the vertical edge u = 6.5 (through the centres of column 6)
    pos = _pixel_space_tris([[2, 1], [6.5, 1], [6.5, 15], [11, 1], [11, 15]], res)
    left, right = np.array([[0, 1, 2]], np.int32), np.array([[1, 3, 4], [1, 4, 2]], np.int32)
    col6_left = rasterize(pos, left, res)[3:13, 6, 3] > 0
    col6_right = rasterize(pos, right, res)[3:13, 6, 3] > 0
    assert col6_right.all() and not col6_left.any()  # the triangle on the right owns it
    # two triangles sharing the horizontal edge at row centre 7.5: the one below (larger row) owns it
    pos = _pixel_space_tris([[1, 2], [15, 2], [1, 7.5], [15, 7.5], [1, 14], [15, 14]], res)
    above = np.array([[0, 1, 3], [0, 3, 2]], np.int32)
    below = np.array([[2, 3, 5], [2, 5, 4]], np.int32)
    assert not (rasterize(pos, above, res)[7, 2:14, 3] > 0).any()
    assert (rasterize(pos, below, res)[7, 2:14, 3] > 0).all()


def test_backface_culling_uses_ndc_winding_and_camera_helper_mirrors_it():
    res = (16, 16)
    ccw = _pixel_space_tris([[2, 2], [14, 2], [2, 14]], res)  # CCW with x right, y (row) up
    t = np.array([[0, 1, 2]], np.int32)
    assert (rasterize(ccw, t, res, "none")[..., 3] > 0).sum() > 50
    assert (rasterize(ccw, t, res, "cw")[..., 3] > 0).sum() > 50
    assert not (rasterize(ccw, t, res, "ccw")[..., 3] > 0).any()
    assert not (rasterize(ccw, t[:, [0, 2, 1]], res, "cw")[..., 3] > 0).any()
    # a camera-facing triangle, CCW seen from the camera (outside): kept by CULL_BACK
    cam = camera_from_focal(16, 16, 20.0)
    x = np.array([[-0.5, -0.5, -2.0], [0.5, -0.5, -2.0], [0.0, 0.5, -2.0]])
    front = rasterize(clip_from_camera(cam, x), t, res, CULL_BACK)[..., 3] > 0
    back = rasterize(clip_from_camera(cam, x), t[:, [0, 2, 1]], res, CULL_BACK)[..., 3] > 0
    assert front.sum() > 20 and not back.any()


def test_interpolation_is_perspective_correct():
    cam = camera_from_focal(64, 48, 50.0)
    x = np.array([[-1.0, -0.6, -1.5], [1.2, -0.4, -6.0], [0.1, 0.9, -3.0]])  # strongly slanted
    t = np.array([[0, 1, 2]], np.int32)
    rast = rasterize(clip_from_camera(cam, x), t, (48, 64))
    xi = interpolate(x.astype(np.float32), rast, t)
    rr, cc = np.nonzero(rast[..., 3] > 0)
    assert len(rr) > 200
    ray = unproject_ray(cam, np.c_[cc + 0.5, rr + 0.5])
    p = xi[rr, cc].astype(np.float64)
    np.testing.assert_allclose(p[:, :2] / -p[:, 2:], ray[:, :2], atol=2e-4)  # on the pixel's ray


def test_depth_is_opengl_ndc_and_nearest_wins():
    cam = camera_from_focal(32, 32, 30.0)
    near, far = 0.5, 10.0
    quad = np.array([[-2, -2], [2, -2], [2, 2], [-2, 2]], float)
    t = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]], np.int32)
    x = np.r_[np.c_[quad, np.full(4, -3.0)], np.c_[quad * 0.25, np.full(4, -2.0)]]
    rast = rasterize(clip_from_camera(cam, x, near, far), t, (32, 32))
    zn = lambda z: (far + near) / (far - near) + 2 * far * near / ((far - near) * z)  # noqa: E731
    assert rast[16, 16, 3] in (3, 4) and rast[1, 1, 3] in (1, 2)  # nearer quad in the middle
    np.testing.assert_allclose(rast[16, 16, 2], zn(-2.0), atol=1e-6)
    np.testing.assert_allclose(rast[1, 1, 2], zn(-3.0), atol=1e-6)
    # beyond the far plane (the big quad at z = -12) or nearer than near (z = -0.3) nothing is drawn
    ids = rasterize(clip_from_camera(cam, x * 4, near, far), t, (32, 32))[..., 3]
    assert set(np.unique(ids)) == {0, 3, 4}
    assert not rasterize(clip_from_camera(cam, x * 0.1, near, far), t, (32, 32))[..., 3].any()


def test_dropped_triangles_behind_camera_beyond_guard_band_and_empty_input():
    res = (16, 16)
    ok = _pixel_space_tris([[2, 2], [14, 2], [2, 14]], res)
    t = np.array([[0, 1, 2]], np.int32)
    assert (rasterize(ok, t, res)[..., 3] > 0).any()
    behind = ok.copy()
    behind[2] *= -1.0  # w < 0: a vertex behind the eye drops the triangle (no homogeneous clipping)
    assert not rasterize(behind, t, res)[..., 3].any()
    far_out = ok.copy()
    far_out[1, 0] = 1e4  # beyond GUARD_PX
    assert not rasterize(far_out, t, res)[..., 3].any()
    np.testing.assert_array_equal(rasterize(behind, t, res), rasterize_ref(behind, t, res))
    empty = rasterize(ok, np.zeros((0, 3), np.int32), res)
    assert empty.shape == (16, 16, 4) and not empty.any()


def test_input_validation():
    pos, tris = random_mesh(0)
    with pytest.raises(ValueError):
        rasterize(pos[:, :3], tris, RES)
    with pytest.raises(ValueError):
        rasterize(pos, tris.astype(np.int64), RES)
    with pytest.raises(ValueError):
        rasterize(pos, tris + 1000, RES)
    with pytest.raises(ValueError):
        rasterize(pos, tris, RES, cull="back")
    rast = rasterize(pos, tris, RES)
    with pytest.raises(ValueError):
        interpolate(np.ones((5, 3), np.float32), rast, tris)  # tris index beyond attr
    with pytest.raises(ValueError):
        interpolate(np.ones((len(pos), 3), np.float32), rast, tris[:3])  # ids beyond tris
    for bad_id in (-1.0, np.nan):  # interpolate checks ids inside its kernel
        r = rast.copy()
        r[3, 5, 3] = bad_id
        with pytest.raises(ValueError, match="triangle ids"):
            interpolate(np.ones((len(pos), 3), np.float32), r, tris)
        with pytest.raises(ValueError, match="triangle ids"):
            interpolate_backward(np.ones(r.shape[:2] + (3,), np.float32), r, tris,
                                 np.ones((len(pos), 3), np.float32))


# -------------------------------------------------------------------------------------------
# Interpolation and gradients


def test_interpolate_equals_reference():
    pos, tris = random_mesh(1)
    rast = rasterize(pos, tris, RES)
    attr = np.random.default_rng(0).normal(size=(len(pos), 5)).astype(np.float32)
    got = interpolate(attr, rast, tris)
    assert got.dtype == np.float32 and got.shape == RES + (5,)
    np.testing.assert_allclose(got, interpolate_ref(attr, rast, tris), atol=1e-5)
    assert not got[rast[..., 3] == 0].any()


def test_interpolate_backward_matches_finite_differences():
    pos, tris = random_mesh(2)
    rast = rasterize(pos, tris, RES).astype(np.float64)
    rng = np.random.default_rng(1)
    attr = rng.normal(size=(len(pos), 3))
    g = rng.normal(size=RES + (3,))
    loss = lambda a, r: float((interpolate(a, r, tris) * g).sum())  # noqa: E731
    grad_attr, grad_rast = interpolate_backward(g, rast, tris, attr)
    eps = 1e-6
    for i, c in zip(rng.integers(0, len(pos), 8), rng.integers(0, 3, 8), strict=True):
        d = np.zeros_like(attr)
        d[i, c] = eps
        fd = (loss(attr + d, rast) - loss(attr - d, rast)) / (2 * eps)
        assert grad_attr[i, c] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    rr, cc = np.nonzero(rast[..., 3] > 0)
    for k in rng.integers(0, len(rr), 8):
        for ch in (0, 1):
            d = np.zeros_like(rast)
            d[rr[k], cc[k], ch] = eps
            fd = (loss(attr, rast + d) - loss(attr, rast - d)) / (2 * eps)
            assert grad_rast[rr[k], cc[k], ch] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    assert not grad_rast[..., 2:].any()


def test_rasterize_backward_matches_finite_differences():
    pos, tris = small_triangle_mesh(4, n=6)
    pos = pos.astype(np.float64)
    rast = rasterize(pos, tris, RES)
    rr, cc = np.nonzero(rast[..., 3] > 0)
    ids = rast[rr, cc, 3].astype(int) - 1
    rng = np.random.default_rng(2)
    g = np.zeros(rast.shape)
    g[rr, cc, 0] = rng.normal(size=len(rr))
    g[rr, cc, 1] = rng.normal(size=len(rr))

    def loss(p):  # visibility (ids) held fixed, as in the backward kernel
        uv = barycentrics_ref(p, tris, ids, rr, cc, *RES)
        return float((uv[:, 0] * g[rr, cc, 0] + uv[:, 1] * g[rr, cc, 1]).sum())

    grad = rasterize_backward(g, pos, tris, rast)
    assert not grad[:, 2].any()
    eps = 1e-6
    for i in rng.choice(np.unique(tris), 6, replace=False):
        for c in (0, 1, 3):
            d = np.zeros_like(pos)
            d[i, c] = eps
            fd = (loss(pos + d) - loss(pos - d)) / (2 * eps)
            assert grad[i, c] == pytest.approx(fd, rel=1e-5, abs=1e-6)


# -------------------------------------------------------------------------------------------
# Antialiasing


def test_edge_neighbours_of_a_quad():
    tris = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    nbr = edge_neighbours(tris)
    # edge opposite vertex 1 of triangle 0 is (2, 0), shared with triangle 1 (opposite its vertex 2)
    np.testing.assert_array_equal(nbr, [[-1, 1, -1], [-1, -1, 0]])


def test_antialias_blends_only_silhouette_pixels():
    res = (32, 32)
    pos = _pixel_space_tris([[3.3, 4.1], [28.7, 6.2], [27.9, 27.6], [4.2, 26.8]], res)
    tris = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    rast = rasterize(pos, tris, res)
    color = np.where(rast[..., 3:] > 0, 1.0, 0.0).astype(np.float32)
    color = np.concatenate([color, color * (rast[..., 3:] == 1)], axis=-1)  # ch 1 differs per triangle
    out = antialias(color, rast, pos, tris)
    changed = np.abs(out - color).max(-1) > 0
    fg = rast[..., 3] > 0
    # only pixels on the outline change (next to the other side), never across the diagonal
    edge = np.zeros(res, bool)
    edge[:, :-1] |= fg[:, :-1] != fg[:, 1:]
    edge[:, 1:] |= fg[:, :-1] != fg[:, 1:]
    edge[:-1] |= fg[:-1] != fg[1:]
    edge[1:] |= fg[:-1] != fg[1:]
    assert changed.any() and not (changed & ~edge).any()
    assert (out[..., 0] >= 0).all() and (out[..., 0] <= 1).all()  # convex blends of 0 and 1
    # the quad's slanted outline makes partial coverage: total "ink" stays close to the area
    area = 0.5 * abs(np.cross(pos[2, :2] - pos[0, :2], pos[1, :2] - pos[0, :2])
                     + np.cross(pos[3, :2] - pos[0, :2], pos[2, :2] - pos[0, :2])) * res[0] * res[1] / 4
    assert abs(out[..., 0].sum() - area) < abs(color[..., 0].sum() - area) + 1.0


# -------------------------------------------------------------------------------------------
# The renderer interface


def test_nvdiffrast_backend_is_unavailable_here_with_a_clear_message(monkeypatch):
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        make_backend("nvdiffrast")
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "nvdiffrast", None)
    monkeypatch.setitem(sys.modules, "nvdiffrast.torch", None)
    with pytest.raises(BackendUnavailableError, match="nvdiffrast"):
        make_backend("nvdiffrast")
    with pytest.raises(ValueError):
        make_backend("opengl")  # type: ignore[arg-type]


def test_numba_backend_is_the_kernels():
    be = make_backend("numba")
    pos, tris = random_mesh(5)
    rast = be.rasterize(pos, tris, RES, "cw")
    np.testing.assert_array_equal(rast, rasterize(pos, tris, RES, "cw"))
    import numba

    before = numba.get_num_threads()
    serial = make_backend("numba", threads=1)
    np.testing.assert_array_equal(serial.rasterize(pos, tris, RES, "cw"), rast)  # same result serially
    assert numba.get_num_threads() == before  # the limit is restored after the call
    with pytest.raises(ValueError):
        make_backend("numba", threads=0)
    attr = np.ones((len(pos), 2), np.float32)
    np.testing.assert_array_equal(be.interpolate(attr, rast, tris)[..., 0], rast[..., 3] > 0)


@pytest.fixture(scope="module")
def face_scene(model):
    """The ICT face part (~18k triangles), neutral, 0.5 m in front of a 256 px camera."""
    tris = np.ascontiguousarray(model.part_faces("face"), np.int32)
    used = np.unique(tris)
    v = model.neutral.astype(np.float64)
    x = v - (v[used].min(0) + v[used].max(0)) / 2 - [0.0, 0.0, 0.5]
    cam = camera_from_focal(256, 256, 350.0)
    return cam, x, tris, used


def test_ict_face_renders_nose_tip_where_it_projects(face_scene, model):
    cam, x, tris, used = face_scene
    r = render_mesh(cam, x, tris, x.astype(np.float32))  # colour = camera-space position
    nose = int(np.argmax(model.neutral[:model.narrow_face_vertex_count, 2]))
    u, v = project(cam, x[nose])
    pix = r.image[int(v), int(u)]
    assert r.mask[int(v), int(u)]
    assert np.linalg.norm(pix - x[nose]) < 0.004  # the visible surface there is the nose tip (< 4 mm)
    # coverage: the mask fills the projected outline; nothing outside the projected bounding box
    uv = project(cam, x[used])
    rows, cols = np.nonzero(r.mask)
    assert abs(cols.min() - uv[:, 0].min()) < 2 and abs(cols.max() - uv[:, 0].max()) < 2
    assert abs(rows.min() - uv[:, 1].min()) < 2 and abs(rows.max() - uv[:, 1].max()) < 2
    assert 0.2 < r.mask.mean() < 0.6
    # culling back faces changes nothing visible except at a few fold pixels
    r_all = render_mesh(cam, x, tris, x.astype(np.float32), cull_back=False)
    assert (r_all.rast[..., 3] != r.rast[..., 3]).mean() < 0.01


def test_bench_render_cli_runs_on_a_small_image(model_path, tmp_path, capsys):
    import argparse
    import json

    from tracker import bench_render

    ap = argparse.ArgumentParser()
    bench_render.add_parser(ap.add_subparsers())
    out = tmp_path / "bench.json"
    args = ap.parse_args(["bench-render", "--model", str(model_path), "--size", "96", "--repeats", "2",
                          "--region", "narrow", "--threads", "1", "--json", str(out)])
    assert args.func(args) == 0
    r = json.loads(out.read_text())
    assert r["n_triangles"] > 10000 and r["height"] == r["width"] == 96 and r["numba_threads"] == 1
    assert 0.2 < r["coverage"] < 0.8 and r["rasterize_ms"] > 0
    assert "rasterize" in capsys.readouterr().out
