"""tracker.drawer: what each overlay mode draws, on the model's own geometry."""

from __future__ import annotations

import numpy as np
import pytest


def _params(model, yaw_deg: float):
    from tracker.rotation import euler_to_quat
    from tracker.types import FaceParams

    return FaceParams(np.asarray(euler_to_quat(yaw_deg, 0.0, 0.0), np.float64),
                      np.array([0.0, 0.0, -0.6]), np.zeros(model.n_expression, np.float32),
                      np.zeros(model.n_identity, np.float32))


def test_wireframe_hides_the_far_side_of_a_turned_head_with_the_low_poly_surface(model):
    """The video wireframe tests MediaPipe's points against the low-poly face's z-buffer: a
    frontal face shows nearly all of them, a head turned 50° hides most of the cheek turned away
    and keeps the near one — either way round — and the low-poly surface agrees with the full
    mesh's on at least 90 % of the points."""
    from tracker.camera import camera_from_fov
    from tracker.drawer import VIDEO_STYLE, FaceDrawer, OverlayStyle

    cam = camera_from_fov(640, 480, 50.0)
    low = FaceDrawer(model, cam, "wire", VIDEO_STYLE)
    full = FaceDrawer(model, cam, "wire", OverlayStyle(render_scale=0.5))
    assert len(low.mesh.tris) < 0.3 * len(full.mesh.tris)
    front, vis0 = low.wire_points(_params(model, 0.0))
    assert vis0.mean() > 0.9
    x = front[:, 0] - np.median(front[:, 0])  # image right (+) / left (-) of the frontal face
    right, left = x > 0.03, x < -0.03
    assert right.sum() > 50 and left.sum() > 50
    seen = {}
    for yaw in (-50.0, 50.0):
        _, vis = low.wire_points(_params(model, yaw))
        _, vis_full = full.wire_points(_params(model, yaw))
        assert (vis == vis_full).mean() > 0.9, yaw
        seen[yaw] = (vis[right].mean(), vis[left].mean())
    # one cheek turns away at +50°, the other at -50°
    (r_neg, l_neg), (r_pos, l_pos) = seen[-50.0], seen[50.0]
    assert min(r_neg, l_pos) < 0.5 * max(r_pos, l_neg) or min(r_pos, l_neg) < 0.5 * max(r_neg, l_pos)
    assert max(r_neg, l_neg) > 0.8 and max(r_pos, l_pos) > 0.8


@pytest.mark.parametrize("mode", ["wire", "points"])
def test_line_and_dot_marks_cover_the_face_in_even_windows(model, mode):
    """Wire and points come out as one coverage mask over an even-aligned window inside the
    image (so the I420 blend needs no rim case), covering the projected face."""
    from tracker.camera import camera_from_fov
    from tracker.drawer import VIDEO_STYLE, FaceDrawer, Marks, lmk68_vertices
    from tracker.rotation import quat_to_matrix
    from tracker.scene import project_points, transform_points

    cam = camera_from_fov(640, 480, 50.0)
    p = _params(model, 20.0)
    (m,) = FaceDrawer(model, cam, mode, VIDEO_STYLE).marks([p])
    assert isinstance(m, Marks) and m.coverage.dtype == np.uint8
    h, w = m.coverage.shape
    assert m.x0 % 2 == m.y0 % 2 == h % 2 == w % 2 == 0
    assert 0 <= m.x0 and m.x0 + w <= cam.width and 0 <= m.y0 and m.y0 + h <= cam.height
    uv = project_points(cam, transform_points(quat_to_matrix(p.rotation),
                                              lmk68_vertices(model, p.identity, p.expression),
                                              p.translation))
    inside = (uv[:, 0] > m.x0) & (uv[:, 0] < m.x0 + w) & (uv[:, 1] > m.y0) & (uv[:, 1] < m.y0 + h)
    assert inside.all()
    if mode == "points":  # each of the 68 points has its dot
        cov = m.coverage[np.round(uv[:, 1] - m.y0).astype(int), np.round(uv[:, 0] - m.x0).astype(int)]
        assert (cov > 128).all()
    else:
        assert 0.03 < (m.coverage > 0).mean() < 0.6
