"""Eye gaze from MediaPipe's iris centres into ARKit's eyeLook* weights.

ICT's eyeLook* blendshapes only deform the eyelids; the eyeballs rotate rigidly. So gaze is solved
as two eye rotations: each eyeball is a rigid body turning about its centre ``c`` (mean of the
eyeball vertices), carrying the iris centre ``c + d`` (mean of the iris vertices). For each eye the
angles ``(yaw, pitch)`` with ``R_eye = Ry(yaw) Rx(pitch)`` in model axes are found by Gauss-Newton
so that the projected iris centre lands on MediaPipe's (468 = the subject's right iris, 473 =
left), given the head pose.

Angles map to weights linearly up to :data:`GAZE_RANGE_DEG` (ARKit's weights saturate at about
these angles): positive yaw looks toward the subject's left (+x), positive pitch looks down, so for
the left eye ``eyeLookOut_L = yaw / range_out`` when ``yaw > 0`` and ``eyeLookIn_L = -yaw /
range_in`` otherwise; for the right eye in and out swap. Results are clipped to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import project
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


def make_eye_basis(model: FaceModel) -> EyeBasis:
    ranges = dict(zip(model.eye_subpart_names, model.eye_subpart_vertex_range))
    c, cid, ir, irid = [], [], [], []
    for side, part, iris in (("R", "eyeball_right", "iris_right"), ("L", "eyeball_left", "iris_left")):
        v = model.part_vertices(part)
        lo, hi = ranges[iris]
        c.append(model.neutral[v].mean(0))
        cid.append(model.id_basis[:, v].mean(1))
        ir.append(model.neutral[lo:hi].mean(0))
        irid.append(model.id_basis[:, lo:hi].mean(1))
    return EyeBasis(np.array(c, np.float64), np.stack(cid, 1).astype(np.float64),
                    np.array(ir, np.float64), np.stack(irid, 1).astype(np.float64))


def _rot_yp(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    z = np.zeros_like(yaw)
    o = np.ones_like(yaw)
    ry = np.stack([np.stack([cy, z, sy], -1), np.stack([z, o, z], -1), np.stack([-sy, z, cy], -1)], -2)
    rx = np.stack([np.stack([o, z, z], -1), np.stack([z, cp, -sp], -1), np.stack([z, sp, cp], -1)], -2)
    return ry @ rx


def solve_gaze(eyes: EyeBasis, identity: np.ndarray | None, rotation: np.ndarray,
               translation: np.ndarray, cam: Camera, iris_uv: np.ndarray,
               iterations: int = 4) -> np.ndarray:
    """Eye angles ``(2, 2)`` radians, rows (right eye, left eye), columns (yaw, pitch).

    ``rotation (3, 3)``/``translation (3,)`` the head pose; ``iris_uv (2, 2)`` MediaPipe's iris
    centres (468, 473) in pixels.
    """
    c, ir = eyes.centre, eyes.iris
    if identity is not None:
        a = np.asarray(identity, np.float64)
        c = c + np.tensordot(a, eyes.centre_id, axes=1)
        ir = ir + np.tensordot(a, eyes.iris_id, axes=1)
    d = ir - c
    ang = np.zeros((2, 2))
    eps = 1e-4
    for _ in range(iterations):
        def uv_of(an: np.ndarray) -> np.ndarray:
            re = _rot_yp(an[:, 0], an[:, 1])
            x = c + np.einsum("eij,ej->ei", re, d)
            return project(cam, x @ rotation.T + translation)
        base = uv_of(ang)
        res = base - iris_uv
        j = np.empty((2, 2, 2))
        for k in range(2):
            da = ang.copy()
            da[:, k] += eps
            j[:, :, k] = (uv_of(da) - base) / eps
        step = np.linalg.solve(j + 1e-9 * np.eye(2), -res[:, :, None])[:, :, 0]
        ang = np.clip(ang + step, -np.radians(45), np.radians(45))
    return ang


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
