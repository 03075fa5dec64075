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
