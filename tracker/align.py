"""Face alignment for the regressor: a similarity crop from MediaPipe landmarks, and the exact
pinhole camera that sees the crop (pure functions).

Alignment (documented here, pinned by ``tests/test_align.py``): five MediaPipe points — the
centres of the subject's right and left eye rings (mean of the 16 lid points of each eye), the nose
tip (1) and the mouth corners (61, 291) — are mapped by the least-squares similarity (rotation,
uniform scale, translation; no reflection; the nose tip weighs 0.5 because it swings with yaw) onto
:data:`TEMPLATE`, the same five points of the ICT mean face seen frontally, scaled so that the crop
spans :data:`CROP_SPAN_M` = 24 cm of face (the narrow face, forehead to chin, is 20 cm) and
centred on the narrow face's vertical middle. The similarity acts on *display* pixels: for
non-square pixels (``sar != 1``) the stored grid is first stretched by ``diag(sar, 1)``, so the crop
always has square pixels::

    crop_px = A @ [u_stored, v_stored, 1]           A = Sim @ diag(sar, 1, 1)    (2, 3)

Crop camera (exact, no approximation): a similarity of a pinhole image is the image of a pinhole
camera with focal ``f * s`` (``f`` the display focal, ``s`` the similarity's scale), principal
point ``A @ (cx, cy, 1)`` (usually far from the crop centre) and rolled about its optical axis by
the similarity's rotation. :func:`crop_camera` returns that camera and the roll ``Rz`` with
``X_crop = Rz @ X_image`` (both OpenGL-style camera spaces), so poses convert exactly::

    R_crop = Rz @ R_image        t_crop = Rz @ t_image
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .errors import InputError
from .types import Camera, Crop

# MediaPipe eye rings (lids + corners), subject's right / left.
EYE_RING_R = (246, 161, 160, 159, 158, 157, 173, 7, 163, 144, 145, 153, 154, 155, 33, 133)
EYE_RING_L = (466, 388, 387, 386, 385, 384, 398, 249, 390, 373, 374, 380, 381, 382, 263, 362)
NOSE_TIP = 1
MOUTH_R, MOUTH_L = 61, 291

TEMPLATE = np.array([[-0.0318, 0.0341], [0.0318, 0.0341], [0.0, -0.0004],
                     [-0.0240, -0.0346], [0.0240, -0.0346]])
"""The five alignment points of the ICT mean face (metres; x = subject's left, y up), frontal
orthographic view, symmetrised, placed through the geometric MediaPipe↔ICT correspondence;
order: right eye, left eye, nose tip, right and left mouth corner. Fixed: it defines the crops the
regressor was trained on (the calibrated table moved the nose tip 2 mm; the crop does not follow)."""
TEMPLATE_WEIGHTS = np.array([1.0, 1.0, 0.5, 1.0, 1.0])
CROP_SPAN_M = 0.24
"""Metres of (mean) face across the crop side."""
CROP_CENTRE_Y_M = -0.004
"""Model y (metres) at the crop centre: the middle of the narrow face (forehead to chin)."""
POSE_ANCHOR_M = (0.0, CROP_CENTRE_Y_M, 0.10)
"""The model point the regressor's pose is expressed at (:mod:`tracker.regressor`): on the face's
centre line at the crop centre's height, 10 cm in front of the ICT origin (the 68 landmarks' mean
depth is 10.4 cm). Its apparent scale is the face's own, which the crop alignment holds nearly
constant; the ICT origin sits inside the head, and its apparent scale varies with the camera
distance (a 20 % spread in the training labels at a fixed crop size)."""
LEGACY_POSE_ANCHOR_M = (0.0, 0.0, 0.0)
"""The anchor of regressor weights whose metadata name none (format 1: the model origin)."""


def anchor_offset(anchor: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """Where the template puts ``anchor`` relative to the crop centre, in crop sides ``(2,)``
    (u right, v down): ``(x / span, -(y - CROP_CENTRE_Y_M) / span)``."""
    return np.array([anchor[0] / CROP_SPAN_M, -(anchor[1] - CROP_CENTRE_Y_M) / CROP_SPAN_M])


def five_points(points: np.ndarray) -> np.ndarray:
    """The five alignment points ``(5, 2) float64`` from MediaPipe landmarks ``(≥468, ≥2)`` pixels."""
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[0] < 468 or p.shape[1] < 2:
        raise InputError(f"expected MediaPipe landmarks (478, 3), got {p.shape}")
    return np.stack([p[list(EYE_RING_R), :2].mean(0), p[list(EYE_RING_L), :2].mean(0),
                     p[NOSE_TIP, :2], p[MOUTH_R, :2], p[MOUTH_L, :2]])


def template_pixels(size: int) -> np.ndarray:
    """:data:`TEMPLATE` in crop pixels ``(5, 2)`` (origin top-left, v down) for a ``size`` crop."""
    k = size / CROP_SPAN_M
    t = TEMPLATE
    return np.stack([size / 2.0 + k * t[:, 0], size / 2.0 - k * (t[:, 1] - CROP_CENTRE_Y_M)], 1)


def similarity_2d(src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares similarity ``dst ≈ s R src + t`` (no reflection) as ``(2, 3)``."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(len(src)) if w is None else np.asarray(w, np.float64)
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    xs, xd = src - ms, dst - md
    # complex-number form: dst = a * src with a = s e^{iθ}
    zs = xs[:, 0] + 1j * xs[:, 1]
    zd = xd[:, 0] + 1j * xd[:, 1]
    den = float(np.sum(w * np.abs(zs) ** 2))
    if not den > 1e-12:
        raise InputError("degenerate landmarks: cannot align a face of zero size")
    a = np.sum(w * zd * np.conj(zs)) / den
    m = np.array([[a.real, -a.imag], [a.imag, a.real]])
    return np.concatenate([m, (md - m @ ms)[:, None]], 1)


def align_affine(points: np.ndarray, size: int, sar: float = 1.0) -> np.ndarray:
    """``(2, 3) float64`` map from stored-grid pixels to ``size``-pixel crop pixels (module doc)."""
    if size < 8:
        raise InputError(f"crop size must be at least 8 pixels, got {size}")
    src = five_points(points) * np.array([sar, 1.0])
    sim = similarity_2d(src, template_pixels(size), TEMPLATE_WEIGHTS)
    return sim @ np.diag([sar, 1.0, 1.0])


def warp_crop(image: np.ndarray, affine: np.ndarray, size: int) -> Crop:
    """Resample ``image`` ``(H, W, 3) uint8`` into a ``size`` x ``size`` crop (bilinear, border
    replicated: a face near the frame edge gets smeared edge pixels rather than black)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    a = np.asarray(affine, np.float64)
    # warpAffine samples dst(x, y) = src(M^-1 (x, y)) with pixel centres at integers; our crop
    # convention has centres at half-integers on both sides, which cancels for a pure map.
    shift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]) @ np.vstack([a, [0, 0, 1]]) \
        @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    # Where every bilinear sample lies inside the image the border mode changes nothing, and
    # OpenCV's constant-border path is faster (a 224 crop of a d13 face, one thread: 0.58
    # against 0.85 ms); the crops are bit-identical (tests/test_align.py).
    h, w = image.shape[:2]
    corners = np.array([[0.0, 0.0, 1.0], [size - 1, 0.0, 1.0], [0.0, size - 1, 1.0],
                        [size - 1, size - 1, 1.0]])
    src = corners @ np.linalg.inv(shift)[:2].T
    inside = (src[:, 0].min() >= 1.0 and src[:, 1].min() >= 1.0  # a pixel to spare
              and src[:, 0].max() <= w - 3 and src[:, 1].max() <= h - 3)
    img = cv2.warpAffine(image, shift[:2], (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT if inside else cv2.BORDER_REPLICATE)
    return Crop(image=img, affine=a)


def crop_face(image: np.ndarray, points: np.ndarray, size: int, sar: float = 1.0) -> Crop:
    """Align and crop one face: :func:`align_affine` then :func:`warp_crop`."""
    return warp_crop(image, align_affine(points, size, sar), size)


def apply_affine(affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points ``(…, 2)`` through a ``(2, 3)`` affine."""
    a = np.asarray(affine, np.float64)
    p = np.asarray(pts, np.float64)
    return p @ a[:, :2].T + a[:, 2]


def crop_landmarks(affine: np.ndarray, points: np.ndarray, sar: float = 1.0) -> np.ndarray:
    """MediaPipe landmarks ``(N, 3)`` in stored pixels → crop pixels ``(N, 3) float32``.

    x, y go through the affine; z (MediaPipe's relative depth, in stored-grid x pixels) is scaled
    by the similarity's scale (display pixels: ``z * sar``).
    """
    p = np.asarray(points, np.float64)
    out = np.empty((p.shape[0], 3), np.float32)
    out[:, :2] = apply_affine(affine, p[:, :2])
    out[:, 2] = p[:, 2] * sar * affine_scale(affine, sar)
    return out


def affine_scale(affine: np.ndarray, sar: float = 1.0) -> float:
    """The similarity's scale ``s`` (crop pixels per display pixel) of an :func:`align_affine`."""
    a = np.asarray(affine, np.float64)
    m = a[:, :2] @ np.diag([1.0 / sar, 1.0])
    return float(math.sqrt(abs(np.linalg.det(m))))


def crop_camera(cam: Camera, affine: np.ndarray, size: int) -> tuple[Camera, np.ndarray]:
    """The exact camera of a crop made by ``affine`` from an image seen by ``cam``.

    Returns ``(crop_cam, Rz)``: ``crop_cam`` has square pixels, focal ``f * s`` and principal point
    ``affine @ (cx, cy, 1)``; ``Rz`` ``(3, 3)`` rotates image camera space into crop camera space
    (about the optical axis). ``sar`` is read from the camera (``fy / fx``).
    """
    sar = cam.fy / cam.fx
    a = np.asarray(affine, np.float64)
    m = a[:, :2] @ np.diag([1.0 / sar, 1.0])  # s * rotation, on display pixels (v down)
    s = math.sqrt(abs(np.linalg.det(m)))
    rot = m / s
    p = np.diag([1.0, -1.0])
    rz = np.eye(3)
    rz[:2, :2] = p @ rot @ p  # pixel rotation (v down) as a camera rotation (y up)
    pp = apply_affine(a, np.array([cam.cx, cam.cy]))
    f = cam.fy * s
    return Camera(fx=f, fy=f, cx=float(pp[0]), cy=float(pp[1]), width=size, height=size), rz
