"""Eye gaze from MediaPipe's iris centres into ARKit's eyeLook* weights.

ICT's eyeLook* blendshapes only deform the eyelids; the eyeballs rotate rigidly. So gaze is solved
as two eye rotations: each eyeball is a rigid body turning about its centre ``c`` (sphere fit to
the sclera), carrying the iris centre ``c + d`` (``d`` along model +z at rest, see
:func:`make_eye_basis`). For each eye the
angles ``(yaw, pitch)`` with ``R_eye = Ry(yaw) Rx(pitch)`` in model axes are found so that the
rotated iris centre lies on the camera ray through MediaPipe's (468 = the subject's right iris,
473 = left), given the head pose (closed form, see :func:`solve_gaze`).

Angles map to weights linearly up to :data:`GAZE_RANGE_DEG` (ARKit's weights saturate at about
these angles): positive yaw looks toward the subject's left (+x), positive pitch looks down, so for
the left eye ``eyeLookOut_L = yaw / range_out`` when ``yaw > 0`` and ``eyeLookIn_L = -yaw /
range_in`` otherwise; for the right eye in and out swap. Results are clipped to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .facemodel import FaceModel
from .types import Camera

GAZE_RANGE_DEG = {"in": 30.0, "out": 30.0, "up": 25.0, "down": 30.0}
IRIS_MP = {"R": 468, "L": 473}


@dataclass(frozen=True)
class EyeBasis:
    """Per eye (order R, L): centre and iris-centre offset, neutral ``(2, 3)`` and identity
    deltas ``(I, 2, 3)``, metres, model space."""

    centre: np.ndarray
    centre_id: np.ndarray
    iris: np.ndarray
    iris_id: np.ndarray


IRIS_RADIUS_M = 0.006
"""Radius of the human iris (about 6 mm): the iris centre sits ``sqrt(r² − 6 mm²)`` in front of the
eyeball centre, ``r`` the eyeball's radius."""


def _sphere_fit(p: np.ndarray) -> tuple[np.ndarray, float]:
    a = np.c_[2.0 * p, np.ones(len(p))]
    x = np.linalg.lstsq(a, (p * p).sum(1), rcond=None)[0]
    c = x[:3]
    return c, float(np.sqrt(x[3] + c @ c))


def make_eye_basis(model: FaceModel) -> EyeBasis:
    """Eyeball centres from a sphere fit to each sclera; rest gaze along model +z.

    (ICT's eye sub-part ranges put vertices all around the eyeball in "iris", so the iris centre
    is placed geometrically: on the eye's +z axis at the depth of a 6 mm-radius iris disk.)
    """
    ranges = dict(zip(model.eye_subpart_names, model.eye_subpart_vertex_range))
    c, cid, ir = [], [], []
    for side in ("right", "left"):
        lo, hi = ranges[f"sclera_{side}"]
        centre, r = _sphere_fit(model.neutral[lo:hi].astype(np.float64))
        c.append(centre)
        cid.append(model.id_basis[:, lo:hi].astype(np.float64).mean(1))
        ir.append(centre + np.array([0.0, 0.0, np.sqrt(max(r * r - IRIS_RADIUS_M ** 2, 1e-8))]))
    cid_a = np.stack(cid, 1)
    return EyeBasis(np.array(c), cid_a, np.array(ir), cid_a.copy())


def _yaw_pitch(u: np.ndarray) -> np.ndarray:
    """Yaw/pitch ``(…, 2)`` of directions ``(…, 3)`` for ``Ry(yaw) Rx(pitch) (0, 0, 1)``."""
    return np.stack([np.arctan2(u[..., 0], u[..., 2]),
                     np.arctan2(-u[..., 1], np.hypot(u[..., 0], u[..., 2]))], -1)


def eye_geometry(eyes: EyeBasis, identity: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An identity's eyeball centres ``(2, 3)``, rest directions ``d (2, 3)`` (centre → iris)
    and radii ``|d| (2,)``, model space; constant per identity (callers may keep it)."""
    c, ir = eyes.centre, eyes.iris
    if identity is not None:
        a = np.asarray(identity, np.float64)
        c = c + np.tensordot(a, eyes.centre_id, axes=1)
        ir = ir + np.tensordot(a, eyes.iris_id, axes=1)
    d = ir - c
    return c, d, np.linalg.norm(d, axis=1)


def solve_gaze(eyes: EyeBasis, identity: np.ndarray | None, rotation: np.ndarray,
               translation: np.ndarray, cam: Camera, iris_uv: np.ndarray,
               geometry: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Eye angles ``(2, 2)`` radians, rows (right eye, left eye), columns (yaw, pitch).

    ``rotation (3, 3)``/``translation (3,)`` the head pose; ``iris_uv (2, 2)`` MediaPipe's iris
    centres (468, 473) in pixels. Closed form: the camera ray through each iris pixel meets the
    sphere of radius ``|d|`` about the eyeball centre (nearest hit; the ray's closest point when
    it misses); the direction from the centre to that point, in model axes, gives the angles
    relative to the rest direction ``d``. ``geometry``: :func:`eye_geometry` of ``identity``,
    when the caller keeps it.
    """
    c, d, rad = geometry if geometry is not None else eye_geometry(eyes, identity)
    cc = c @ rotation.T + translation  # eye centres, camera space (2, 3)
    ray = np.stack([(iris_uv[:, 0] - cam.cx) / cam.fx, -(iris_uv[:, 1] - cam.cy) / cam.fy,
                    -np.ones(2)], 1)
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    tc = np.sum(ray * cc, 1)  # ray parameter of the point closest to the centre
    dist2 = np.sum(cc * cc, 1) - tc * tc
    half = np.sqrt(np.maximum(rad * rad - dist2, 0.0))
    hit = ray * (tc - half)[:, None]
    v = (hit - cc) @ rotation  # back to model axes (R^T applied row-wise)
    ang = _yaw_pitch(v) - _yaw_pitch(d)
    return np.clip(ang, -np.radians(45), np.radians(45))


def gaze_weights(angles: np.ndarray, exp_names: tuple[str, ...]) -> dict[str, float]:
    """eyeLook* weights from eye angles ``(2, 2)`` (rows R, L; yaw, pitch radians)."""
    deg = np.degrees(angles)
    out = {}
    for row, side in enumerate(("R", "L")):
        yaw, pitch = deg[row]
        toward_left = max(yaw, 0.0)
        toward_right = max(-yaw, 0.0)
        # for the left eye, looking toward the subject's left is "out"; for the right eye, "in"
        if side == "L":
            out["eyeLookOut_L"] = toward_left / GAZE_RANGE_DEG["out"]
            out["eyeLookIn_L"] = toward_right / GAZE_RANGE_DEG["in"]
        else:
            out["eyeLookIn_R"] = toward_left / GAZE_RANGE_DEG["in"]
            out["eyeLookOut_R"] = toward_right / GAZE_RANGE_DEG["out"]
        out[f"eyeLookDown_{side}"] = max(pitch, 0.0) / GAZE_RANGE_DEG["down"]
        out[f"eyeLookUp_{side}"] = max(-pitch, 0.0) / GAZE_RANGE_DEG["up"]
    return {k: float(np.clip(v, 0.0, 1.0)) for k, v in out.items() if k in exp_names}
