"""Frozen dataclasses passed between stages.

Conventions (pinned by ``tests/test_conventions.py``):

* Images are ``(H, W, 3) uint8`` RGB, C-contiguous, origin top-left, y down, in the *stored* pixel
  grid of the input after its rotation metadata is applied. Non-square pixels are not resampled;
  they are accounted for in :class:`Camera` (``fx != fy``).
* Times are presentation timestamps in seconds from the container (VFR-safe).
* Model and camera space are in metres. Camera space is OpenGL-style: +x right, +y up, the camera
  looks down -z.
* Rotations are unit quaternions ``(w, x, y, z)`` with ``w >= 0``; a model point ``x`` goes to
  camera space as ``X = R(q) @ x + t``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from .videoout import DecodedI420

Status = Literal["tracked", "lost"]


@dataclass(frozen=True)
class VideoInfo:
    """What a source knows about its stream before the first frame.

    ``width``/``height`` are the stored pixel grid after rotation; ``sar`` is the sample aspect
    ratio (pixel width / pixel height, 1.0 for square pixels); ``rotation_deg`` the display rotation
    that was applied (0, 90, 180, 270); ``fps`` the nominal rate (``None`` when unknown, e.g. VFR or
    an image); ``n_frames`` a container estimate (``None`` when unknown).
    """

    source: str
    kind: Literal["file", "image", "webcam", "synthetic"]
    width: int
    height: int
    fps: float | None = None
    sar: float = 1.0
    rotation_deg: int = 0
    n_frames: int | None = None
    duration_s: float | None = None
    codec: str = ""
    has_audio: bool = False


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``image`` is ``(H, W, 3) uint8`` RGB, ``time_s`` its PTS in seconds;
    ``yuv``: the decoder's own 4:2:0 frame (a :class:`tracker.videoout.DecodedI420`) when the
    source was asked to keep it and the frame is one (see
    :attr:`tracker.sources.Source.keep_yuv`), else ``None`` — the overlay draws into it in
    place."""

    index: int
    time_s: float
    image: np.ndarray
    yuv: DecodedI420 | None = None


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels of the stored grid.

    Projection of a camera-space point ``X = (X, Y, Z)`` (``Z < 0`` in front of the camera)::

        u = cx + fx * X / (-Z)        v = cy - fy * Y / (-Z)

    ``u`` grows to the right and ``v`` downward (image convention) while camera +y is up.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def as_dict(self) -> dict[str, float | int]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
                "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Landmarks:
    """MediaPipe FaceMesh output for one face.

    ``points`` is ``(478, 3) float32``: x, y in pixels of the stored grid (origin top-left, y down);
    z is MediaPipe's relative depth in the same pixel scale (smaller = closer to the camera). Points
    468–477 are the irises (468 = centre of the subject's right iris, 473 = left).
    """

    points: np.ndarray

    @property
    def xy(self) -> np.ndarray:
        return self.points[:, :2]


@dataclass(frozen=True)
class FrameLandmarks:
    """All faces MediaPipe found in one frame, in its detection order."""

    index: int
    time_s: float
    faces: tuple[Landmarks, ...]


@dataclass(frozen=True)
class Crop:
    """An aligned square face crop for the regressor.

    ``image`` is ``(S, S, 3) uint8`` RGB; ``affine`` is the ``(2, 3) float64`` map from input-image
    pixels to crop pixels (``crop = A @ [u, v, 1]``).
    """

    image: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class FaceParams:
    """3DMM coefficients and pose of one face.

    ``rotation``: ``(4,) float64`` unit quaternion (w, x, y, z), ``w >= 0``.
    ``translation``: ``(3,) float64`` metres, camera space.
    ``expression``: ``(E,) float32`` blendshape weights in [0, 1], order = ``FaceModel.exp_names``.
    ``identity``: ``(I,) float32`` identity coefficients, prior N(0, 1).
    ``lighting``: ``(27,) float32`` SH coefficients (3 colours x 9) or ``None`` without a regressor.
    ``albedo``: ``(K, 3) float32`` albedo coefficients or ``None`` without a regressor.
    """

    rotation: np.ndarray
    translation: np.ndarray
    expression: np.ndarray
    identity: np.ndarray
    lighting: np.ndarray | None = None
    albedo: np.ndarray | None = None


@dataclass(frozen=True)
class FaceResult:
    """The tracker's answer for one face in one frame.

    ``status == "lost"`` means no measurement this frame: ``params`` and ``landmarks`` are ``None``.
    ``confidence`` in [0, 1] summarises the landmark fit (see :func:`tracker.fitting.fit_confidence`);
    ``fit_error`` is the RMS landmark reprojection error in % of the inter-ocular distance.
    ``identity_rev`` counts identity re-estimations of this face's track (0 = the mean face; it
    changes only a few times early in a track, then the identity is held).
    """

    face_id: int
    status: Status
    confidence: float = 0.0
    params: FaceParams | None = None
    landmarks: Landmarks | None = None
    fit_error: float = float("nan")
    identity_rev: int = 0


@dataclass(frozen=True)
class FrameResult:
    """Everything the tracker produced for one frame; ``faces`` is empty when nothing is tracked."""

    index: int
    time_s: float
    faces: tuple[FaceResult, ...] = field(default_factory=tuple)
