"""Pinhole camera: intrinsics from a field of view and projection, as pure functions.

Convention: OpenGL-style camera space (+x right, +y up, looking down -z), pixels of the stored grid
with origin top-left and v down::

    u = cx + fx * X / (-Z)        v = cy - fy * Y / (-Z)

Non-square pixels (sample aspect ratio ``sar`` = pixel width / pixel height) are accounted for in
the intrinsics: a stored pixel is ``sar`` display pixels wide, so ``fx = f / sar`` and ``fy = f``
where ``f`` is the focal length in display (square) pixels.
"""

from __future__ import annotations

import math

import numpy as np

from .types import Camera

DEFAULT_FOV_DEG = 50.0
"""Default field of view along the *longer* displayed image side, in degrees.

Chosen between a laptop webcam (~55-65 degrees horizontal) and the narrower framing of cropped
talking-head videos; depth and face size trade against it, the 2D fit barely depends on it.
"""


def camera_from_fov(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG,
                    sar: float = 1.0) -> Camera:
    """Intrinsics for a ``width x height`` stored grid, FOV along the longer displayed side."""
    if not (1.0 <= fov_deg <= 170.0):
        raise ValueError(f"field of view must be within [1, 170] degrees, got {fov_deg}")
    disp_w = width * sar
    longer = max(disp_w, float(height))
    f = 0.5 * longer / math.tan(math.radians(fov_deg) / 2.0)
    return camera_from_focal(width, height, f, sar)


def camera_from_focal(width: int, height: int, focal_px: float, sar: float = 1.0) -> Camera:
    """Intrinsics from a focal length in display (square) pixels; principal point at the centre."""
    if focal_px <= 0:
        raise ValueError(f"focal length must be positive, got {focal_px}")
    return Camera(fx=focal_px / sar, fy=focal_px, cx=width / 2.0, cy=height / 2.0,
                  width=int(width), height=int(height))


def project(cam: Camera, x_cam: np.ndarray) -> np.ndarray:
    """Camera-space points ``(…, 3)`` metres → pixels ``(…, 2)``."""
    x_cam = np.asarray(x_cam)
    iz = 1.0 / (-x_cam[..., 2])
    return np.stack([cam.cx + cam.fx * x_cam[..., 0] * iz,
                     cam.cy - cam.fy * x_cam[..., 1] * iz], axis=-1)


def transform(rotation_matrix: np.ndarray, translation: np.ndarray, x_model: np.ndarray) -> np.ndarray:
    """Model points ``(N, 3)`` → camera space ``X = R x + t``."""
    return np.asarray(x_model) @ np.asarray(rotation_matrix).T + np.asarray(translation)


def unproject_ray(cam: Camera, uv: np.ndarray) -> np.ndarray:
    """Pixels ``(…, 2)`` → camera-space ray directions ``(…, 3)`` with ``Z = -1``."""
    uv = np.asarray(uv, np.float64)
    return np.stack([(uv[..., 0] - cam.cx) / cam.fx, -(uv[..., 1] - cam.cy) / cam.fy,
                     -np.ones(uv.shape[:-1])], axis=-1)
