"""trainer.render / trainer.facelayer: autograd around the numba rasterizer, gradient-checked in
float64; torch shading and normals equal the numba kernels; pose parameterisation round trips."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tracker.errors import BackendUnavailableError
from trainer.facelayer import (
    crop_params_from_pose,
    matrix_to_rot6d,
    pose_from_crop_params,
    rot6d_to_matrix,
    sh_shade,
    vertex_normals,
)
from trainer.render import CpuRenderer, clip_from_crop_camera, make_renderer


def _mesh():
    """A small bumpy grid facing the camera (+z toward it), CCW seen from outside."""
    n = 4
    xs, ys = np.meshgrid(np.linspace(-0.05, 0.05, n), np.linspace(-0.05, 0.05, n))
    z = 0.01 * np.sin(7 * xs) * np.cos(5 * ys)
    v = np.stack([xs, ys, z], -1).reshape(-1, 3)
    tris = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            tris += [(a, b, d), (a, d, c)]
    return v, np.array(tris, np.int32)


def _render(pos_cam, attr, r, tris, size=12):
    f = torch.tensor([20.0], dtype=pos_cam.dtype)
    pp = torch.tensor([[size / 2 + 0.3, size / 2 - 0.2]], dtype=pos_cam.dtype)
    clip = clip_from_crop_camera(pos_cam, f, pp, size)
    rast = r.rasterize(clip, tris, (size, size))
    return r.interpolate(attr, rast, tris), rast


def test_gradcheck_positions_and_attributes_float64():
    v, tris = _mesh()
    r = CpuRenderer()
    t = torch.from_numpy(tris)
    pos = torch.tensor(v + np.array([0.0, 0.0, -0.15]), dtype=torch.float64)[None].requires_grad_(True)
    attr = torch.rand(1, len(v), 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    attr.requires_grad_(True)
    _, rast = _render(pos, attr, r, t)
    assert (rast[..., 3] > 0).sum() > 20  # the mesh covers a good part of the image

    def fn(p, a):
        return _render(p, a, r, t)[0]

    assert torch.autograd.gradcheck(fn, (pos, attr), eps=1e-7, atol=1e-5, rtol=1e-4)


def test_gradcheck_at_the_identity_pose_and_lighting():
    """Gradients through rotation (6D at 0 = identity), SH lighting and normals, end to end."""
    v, tris = _mesh()
    r = CpuRenderer()
    t = torch.from_numpy(tris)
    base = torch.tensor(v, dtype=torch.float64)[None]
    r6 = torch.zeros(1, 6, dtype=torch.float64, requires_grad=True)
    gamma = torch.zeros(1, 27, dtype=torch.float64)
    gamma[0, ::9] = 0.8
    gamma[0, 1::9] = 0.1
    gamma.requires_grad_(True)
    alb = torch.full((1, len(v), 3), 0.6, dtype=torch.float64)

    def fn(r6_, g_):
        rot = rot6d_to_matrix(r6_)
        x = base @ rot.transpose(1, 2) + torch.tensor([0.0, 0.0, -0.15], dtype=torch.float64)
        col = sh_shade(vertex_normals(x, t), alb, g_)
        return _render(x, col, r, t)[0]

    assert torch.autograd.gradcheck(fn, (r6, gamma), eps=1e-7, atol=1e-5, rtol=1e-4)


def test_forward_matches_the_kernels():
    from kernels.raster import interpolate, rasterize
    from kernels.shading import sh_shade as sh_np
    from kernels.shading import vertex_normals as vn_np

    v, tris = _mesh()
    x = torch.tensor(v + np.array([0.0, 0.0, -0.15]), dtype=torch.float32)[None]
    attr = torch.rand(1, len(v), 3)
    img, rast = _render(x, attr, CpuRenderer(), torch.from_numpy(tris))
    f = torch.tensor([20.0])
    pp = torch.tensor([[6.3, 5.8]])
    clip = clip_from_crop_camera(x, f, pp, 12)[0].numpy()
    rr = rasterize(np.ascontiguousarray(clip), tris, (12, 12), cull="ccw")
    assert np.array_equal(rr, rast[0].numpy())
    assert np.allclose(interpolate(attr[0].numpy(), rr, tris), img[0].numpy(), atol=1e-6)
    n = vertex_normals(x, torch.from_numpy(tris))[0].numpy()
    assert np.allclose(n, vn_np(x[0].numpy(), tris), atol=1e-5)
    g = np.random.default_rng(0).normal(size=27).astype(np.float32)
    a = np.random.default_rng(1).uniform(size=(len(v), 3)).astype(np.float32)
    got = sh_shade(torch.from_numpy(n)[None], torch.from_numpy(a)[None], torch.from_numpy(g)[None])
    assert np.allclose(got[0].numpy(), sh_np(n, a, g), atol=1e-5)


def test_clip_matches_the_tracker_projection():
    from tracker.render import clip_from_camera
    from tracker.types import Camera

    x = np.array([[0.01, 0.02, -0.5], [-0.03, 0.01, -0.7]])
    cam = Camera(300.0, 300.0, 70.0, 50.0, 128, 128)
    ref = clip_from_camera(cam, x)
    got = clip_from_crop_camera(torch.tensor(x)[None], torch.tensor([300.0], dtype=torch.float64),
                                torch.tensor([[70.0, 50.0]], dtype=torch.float64), 128)[0].numpy()
    assert np.allclose(got, ref, atol=1e-5)


def test_pose_parameterisation_round_trip():
    g = torch.Generator().manual_seed(0)
    r6 = torch.randn(8, 6, generator=g, dtype=torch.float64) * 0.3
    o = torch.randn(8, 2, generator=g, dtype=torch.float64) * 0.05
    ls = torch.randn(8, 1, generator=g, dtype=torch.float64) * 0.2
    f = torch.rand(8, generator=g, dtype=torch.float64) * 500 + 100
    pp = torch.randn(8, 2, generator=g, dtype=torch.float64) * 200 + 64
    r, t = pose_from_crop_params(r6, o, ls, f, pp, 128)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(8, 3, 3), atol=1e-9)
    r6b, ob, lsb = crop_params_from_pose(r, t, f, pp, 128)
    assert torch.allclose(rot6d_to_matrix(r6b), rot6d_to_matrix(r6), atol=1e-9)
    assert torch.allclose(ob, o, atol=1e-9) and torch.allclose(lsb, ls[:, 0], atol=1e-9)
    # any anchor round-trips; the same outputs at another anchor are another pose
    legacy = (0.0, 0.0, 0.0)
    r2, t2 = pose_from_crop_params(r6, o, ls, f, pp, 128, legacy)
    assert not torch.allclose(t2, t, atol=1e-3)
    _, ob2, lsb2 = crop_params_from_pose(r2, t2, f, pp, 128, legacy)
    assert torch.allclose(ob2, o, atol=1e-9) and torch.allclose(lsb2, ls[:, 0], atol=1e-9)
    # zero output: identity relative to the ray; with the ray on the axis, the identity rotation
    assert torch.allclose(rot6d_to_matrix(torch.zeros(1, 6)), torch.eye(3)[None])
    assert torch.allclose(matrix_to_rot6d(torch.eye(3)[None]), torch.zeros(1, 6))


def test_numpy_twin_in_the_tracker_agrees():
    from tracker.regressor import pose_from_crop_outputs
    from tracker.types import Camera

    g = torch.Generator().manual_seed(1)
    r6 = torch.randn(1, 6, generator=g, dtype=torch.float64) * 0.3
    o = torch.randn(1, 2, generator=g, dtype=torch.float64) * 0.05
    ls = torch.randn(1, 1, generator=g, dtype=torch.float64) * 0.2
    f = torch.tensor([250.0], dtype=torch.float64)
    pp = torch.tensor([[-40.0, 300.0]], dtype=torch.float64)
    r, t = pose_from_crop_params(r6, o, ls, f, pp, 128)
    cam = Camera(250, 250, -40, 300, 128, 128)
    rn, tn = pose_from_crop_outputs(r6[0].numpy(), o[0].numpy(), float(ls), cam, 128)
    assert np.allclose(rn, r[0].numpy(), atol=1e-9) and np.allclose(tn, t[0].numpy(), atol=1e-9)
    legacy = (0.0, 0.0, 0.0)
    r, t = pose_from_crop_params(r6, o, ls, f, pp, 128, legacy)
    rn, tn = pose_from_crop_outputs(r6[0].numpy(), o[0].numpy(), float(ls), cam, 128, legacy)
    assert np.allclose(rn, r[0].numpy(), atol=1e-9) and np.allclose(tn, t[0].numpy(), atol=1e-9)


def test_the_anchors_apparent_scale_follows_the_face_not_the_camera_distance(model):
    """The reason for the anchor: the same face filling the same crop, its front 0.25 m and
    1.42 m from the camera (the focal grows with the distance), has the same anchor ``ls`` but not
    the same origin ``ls`` (the ICT origin is 10 cm behind the face)."""
    from tracker.align import LEGACY_POSE_ANCHOR_M, POSE_ANCHOR_M

    f = torch.tensor([300.0, 1700.0], dtype=torch.float64)
    d = torch.tensor([0.25, 0.25 * 1700.0 / 300.0], dtype=torch.float64) + POSE_ANCHOR_M[2]
    r = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    t = torch.stack([torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), -d], -1)
    pp = torch.full((2, 2), 64.0, dtype=torch.float64)
    _, _, ls_face = crop_params_from_pose(r, t, f, pp, 128)
    _, _, ls_origin = crop_params_from_pose(r, t, f, pp, 128, LEGACY_POSE_ANCHOR_M)
    assert abs(float(ls_face[1] - ls_face[0])) < 1e-9
    assert abs(float(ls_origin[1] - ls_origin[0])) > 0.25


def test_renderer_choice():
    assert make_renderer("numba").name == "numba"
    assert make_renderer("auto").name in ("numba", "nvdiffrast")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError):
            make_renderer("nvdiffrast")
    with pytest.raises(ValueError):
        make_renderer("opengl")
