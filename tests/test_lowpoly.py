"""The low-poly front face used by video overlays: same surface, no membranes over the eyes or
the mouth, consistent orientation."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.correspondence import front_face_triangles
from tracker.facemodel import vertices
from tracker.lowpoly import lowpoly_face


def area(v, f):
    return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum()


@pytest.fixture(scope="module")
def low(model):
    return lowpoly_face(model, 1200)


def test_size_and_surface(model, low):
    full = front_face_triangles(model)
    assert 900 <= len(np.unique(low)) <= 1300 and len(low) < 0.25 * len(full)
    v = model.neutral.astype(np.float64)
    assert area(v, low) == pytest.approx(area(v, full), rel=0.05)  # chords cut the curvature


@pytest.mark.parametrize("shape", ["jawOpen", "eyeWide_L", "eyeWide_R"])
def test_no_membrane_over_openings(model, low, shape):
    """Opening the mouth or the eyes grows the low-poly area no more than the model's own: a
    triangle spanning the opening would add the opening's area."""
    full = front_face_triangles(model)
    e = np.zeros(model.n_expression)
    e[model.exp_names.index(shape)] = 1.0
    v0 = model.neutral.astype(np.float64)
    v1 = vertices(model, None, e).astype(np.float64)
    grow_low = area(v1, low) - area(v0, low)
    grow_full = area(v1, full) - area(v0, full)
    assert grow_low < grow_full + 0.02 * area(v0, full) * 0.1


def test_orientation_matches_the_model(model, low):
    """Each low-poly triangle faces the way the model's surface faces where it lies."""
    from tracker.meshgeom import closest_point_on_mesh
    full = front_face_triangles(model)
    v = model.neutral.astype(np.float64)
    n = np.cross(v[low[:, 1]] - v[low[:, 0]], v[low[:, 2]] - v[low[:, 0]])
    tri, _, _ = closest_point_on_mesh(v[low].mean(1), v, full)
    f = full[tri]
    nf = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (np.sum(n * nf, 1) > 0).mean() > 0.98


@pytest.fixture(scope="module")
def eyes(model):
    from tracker.albedo import vertex_albedo
    from tracker.lowpoly import lowpoly_eyes

    return lowpoly_eyes(model, 70.0, 120, vertex_albedo(model))


def _cap(model, part, deg=70.0):
    from tracker.albedo import eye_axes

    _, ang = eye_axes(model)[part.split("_")[1]]
    f = model.part_faces(part).astype(np.int64)
    return f[(ang[f] <= np.radians(deg)).all(1)]


@pytest.mark.parametrize("part", ["eyeball_left", "eyeball_right"])
def test_low_poly_eyes_cover_the_cap_with_a_third_of_the_triangles(model, eyes, part):
    """Same surface (area within 12 %: chords cut the sphere; the first version, which flattened
    the folded iris layer as one sheet and dropped what overlapped, lost 44 % of the iris), far
    fewer triangles, every vertex the model's own eyeball vertex, faces turned as the model's
    (the closest model triangle can lie on the other side of the iris fold, hence 90 %)."""
    from tracker.meshgeom import closest_point_on_mesh

    low, full = eyes[part], _cap(model, part)
    assert len(low) < 0.45 * len(full)
    assert np.isin(np.unique(low), model.part_vertices(part)).all()
    v = model.neutral.astype(np.float64)
    assert area(v, low) == pytest.approx(area(v, full), rel=0.12)
    n = np.cross(v[low[:, 1]] - v[low[:, 0]], v[low[:, 2]] - v[low[:, 0]])
    tri, _, _ = closest_point_on_mesh(v[low].mean(1), v, full)
    f = full[tri]
    nf = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (np.sum(n * nf, 1) > 0).mean() > 0.9


def test_video_overlay_draws_the_low_poly_eyes_and_they_turn_with_the_gaze(model):
    """The video style's mesh uses the decimated eyes, and the eye rig still turns every one of
    their vertices (the rig's vertex ranges follow the kept vertices)."""
    from tracker.camera import camera_from_fov
    from tracker.drawer import VIDEO_STYLE, FaceDrawer
    from tracker.scene import posed_vertices

    d = FaceDrawer(model, camera_from_fov(640, 480, 50.0), "shaded", VIDEO_STYLE)
    full = FaceDrawer(model, camera_from_fov(640, 480, 50.0), "shaded")
    assert len(d.mesh.tris) < 0.7 * len(full.mesh.tris)
    ident = np.zeros(model.n_identity, np.float32)
    e = np.zeros(model.n_expression, np.float32)
    rest, _ = posed_vertices(d.mesh, ident, e)
    e[model.exp_names.index("eyeLookOut_L")] = 1.0
    turned, _ = posed_vertices(d.mesh, ident, e)
    moved = np.linalg.norm(turned - rest, axis=1) > 1e-5
    left = next(eye for eye in d.mesh.eyes if eye.side == "L")
    assert left.hi - left.lo < 400 and moved[left.lo:left.hi].all()
