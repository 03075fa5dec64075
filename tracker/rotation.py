"""Rotations: unit quaternions (w, x, y, z), matrices, axis-angle and Euler angles.

Conventions (pinned by tests):

* ``R(q)`` is the active rotation taking model coordinates to camera coordinates, ``X = R x + t``.
* Quaternions are returned with ``w >= 0`` (one hemisphere), so a CSV column never flips sign.
* Euler angles (degrees) are **yaw, pitch, roll** with ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)``
  about the model axes (+x subject's left, +y up, +z out of the face). With the camera looking at
  the face, positive yaw turns the nose toward image right (the subject turns to their left),
  positive pitch tilts the nose down, positive roll lifts the subject's left side
  (the head leans toward the subject's right shoulder, clockwise on screen).
"""

from __future__ import annotations

import math

import numpy as np


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(…, 4)`` with ``w >= 0``."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """``(…, 4)`` quaternion (w, x, y, z) → ``(…, 3, 3)`` rotation matrix."""
    q = np.asarray(q, np.float64)
    if q.shape == (4,):
        return _quat_to_matrix_1(q)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    r = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return r.reshape(q.shape[:-1] + (3, 3))


def _quat_to_matrix_1(q: np.ndarray) -> np.ndarray:
    """:func:`quat_to_matrix` of one quaternion on Python floats, the same formula: 2 against
    17 µs — the fitting, the overlay and each CSV row call it per frame."""
    w, x, y, z = q.tolist()
    n = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(r: np.ndarray) -> np.ndarray:
    """``(…, 3, 3)`` rotation matrix → ``(…, 4)`` unit quaternion with ``w >= 0`` (Shepperd)."""
    r = np.asarray(r, np.float64)
    m = r.reshape(-1, 3, 3)
    out = np.empty((m.shape[0], 4))
    for k, a in enumerate(m):
        tr = a[0, 0] + a[1, 1] + a[2, 2]
        if tr > 0:
            s = 2.0 * np.sqrt(tr + 1.0)
            out[k] = (0.25 * s, (a[2, 1] - a[1, 2]) / s, (a[0, 2] - a[2, 0]) / s, (a[1, 0] - a[0, 1]) / s)
        elif a[0, 0] > a[1, 1] and a[0, 0] > a[2, 2]:
            s = 2.0 * np.sqrt(1.0 + a[0, 0] - a[1, 1] - a[2, 2])
            out[k] = ((a[2, 1] - a[1, 2]) / s, 0.25 * s, (a[0, 1] + a[1, 0]) / s, (a[0, 2] + a[2, 0]) / s)
        elif a[1, 1] > a[2, 2]:
            s = 2.0 * np.sqrt(1.0 + a[1, 1] - a[0, 0] - a[2, 2])
            out[k] = ((a[0, 2] - a[2, 0]) / s, (a[0, 1] + a[1, 0]) / s, 0.25 * s, (a[1, 2] + a[2, 1]) / s)
        else:
            s = 2.0 * np.sqrt(1.0 + a[2, 2] - a[0, 0] - a[1, 1])
            out[k] = ((a[1, 0] - a[0, 1]) / s, (a[0, 2] + a[2, 0]) / s, (a[1, 2] + a[2, 1]) / s, 0.25 * s)
    return quat_normalize(out).reshape(r.shape[:-2] + (4,))


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` (rotation b first, then a), ``(…, 4)``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    w1, x1, y1, z1 = np.moveaxis(a, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(b, -1, 0)
    return np.stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ], axis=-1)


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def rotvec_to_quat(v: np.ndarray) -> np.ndarray:
    """Axis-angle ``(…, 3)`` (radians) → quaternion ``(…, 4)`` (the SO(3) exponential)."""
    v = np.asarray(v, np.float64)
    th = np.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * th
    # sin(th/2)/th, with its Taylor series near 0
    k = np.where(th > 1e-8, np.sin(half) / np.maximum(th, 1e-300), 0.5 - th * th / 48.0)
    return np.concatenate([np.cos(half), v * k], axis=-1)


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Quaternion ``(…, 4)`` → axis-angle ``(…, 3)`` radians in [0, π] (the SO(3) logarithm)."""
    q = quat_normalize(q)
    w = np.clip(q[..., :1], -1.0, 1.0)
    s = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    th = 2.0 * np.arctan2(s, w)
    k = np.where(s > 1e-8, th / np.maximum(s, 1e-300), 2.0 / np.maximum(w, 1e-300))
    return q[..., 1:] * k


def rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle ``(…, 3)`` → ``(…, 3, 3)``."""
    return quat_to_matrix(rotvec_to_quat(v))


def euler_to_quat(yaw_deg: np.ndarray, pitch_deg: np.ndarray, roll_deg: np.ndarray) -> np.ndarray:
    """``R = Ry(yaw) Rx(pitch) Rz(roll)`` as quaternions ``(…, 4)``; angles in degrees."""
    y, p, r = (np.radians(np.asarray(a, np.float64)) for a in (yaw_deg, pitch_deg, roll_deg))
    z0 = np.zeros_like(y)
    qy = np.stack([np.cos(y / 2), z0, np.sin(y / 2), z0], -1)
    qx = np.stack([np.cos(p / 2), np.sin(p / 2), z0, z0], -1)
    qz = np.stack([np.cos(r / 2), z0, z0, np.sin(r / 2)], -1)
    return quat_normalize(quat_multiply(quat_multiply(qy, qx), qz))


def quat_to_euler(q: np.ndarray) -> np.ndarray:
    """Quaternion ``(…, 4)`` → ``(…, 3)`` (yaw, pitch, roll) degrees for ``R = Ry Rx Rz``.

    Pitch is in [-90, 90]; at ±90 (gimbal lock) roll is set to 0.
    """
    if np.shape(q) == (4,):
        return _quat_to_euler_1(np.asarray(q, np.float64))
    r = quat_to_matrix(q)
    # R = Ry Rx Rz: R[1,2] = -sin(pitch); R[0,2] = cos p sin y; R[2,2] = cos p cos y;
    # R[1,0] = cos p sin r; R[1,1] = cos p cos r
    sp = np.clip(-r[..., 1, 2], -1.0, 1.0)
    pitch = np.arcsin(sp)
    yaw = np.arctan2(r[..., 0, 2], r[..., 2, 2])
    roll = np.arctan2(r[..., 1, 0], r[..., 1, 1])
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1))


def _quat_to_euler_1(q: np.ndarray) -> np.ndarray:
    """:func:`quat_to_euler` of one quaternion on Python floats, the same formulas (3.6 against
    27 µs: one per CSV row)."""
    r = _quat_to_matrix_1(q).tolist()
    pitch = math.asin(min(max(-r[1][2], -1.0), 1.0))
    yaw = math.atan2(r[0][2], r[2][2])
    roll = math.atan2(r[1][0], r[1][1])
    return np.degrees(np.array([yaw, pitch, roll]))


def quat_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle between two rotations, degrees, ``(…,)``."""
    d = np.abs(np.sum(quat_normalize(a) * quat_normalize(b), axis=-1))
    return np.degrees(2.0 * np.arccos(np.clip(d, -1.0, 1.0)))
