"""Errors raised by face3d.

Every error a user can cause derives from :class:`Face3dError`, so the CLI can turn it into one
clear line on stderr and a non-zero exit code, without a traceback::

    Face3dError
    ├── InputError (also ValueError)        bad input file, unreadable, truncated, not a video
    │   └── NoVideoStreamError              the container holds no video stream
    ├── CameraError (also OSError)          no camera, camera vanished mid-stream
    ├── ModelError (also ValueError)        face model missing, malformed, wrong shapes
    ├── ConfigError (also ValueError)       unknown or ill-typed keys in a TOML config
    ├── BackendUnavailableError (also RuntimeError)  optional backend (CUDA, TensorRT, nvdiffrast, Ray) absent
    ├── OverlayError (also RuntimeError)    the overlay video failed mid-run; the other outputs were written
    └── NetworkError (also OSError)         a download failed (e.g. offline ``face3d model fetch``)

A per-frame failure (no face in a frame) is never an exception: it is ``status="lost"`` on the
result.
"""

from __future__ import annotations


class Face3dError(Exception):
    """Base class of every error face3d raises on purpose."""


class InputError(Face3dError, ValueError):
    """An input file or stream cannot be read as images or video."""


class NoVideoStreamError(InputError):
    """The container opened but holds no video stream."""


class CameraError(Face3dError, OSError):
    """A capture device is missing, busy, or disappeared while streaming."""


class ModelError(Face3dError, ValueError):
    """The face model file is missing or does not match the expected schema."""


class ConfigError(Face3dError, ValueError):
    """A configuration file has unknown keys or values of the wrong type."""


class BackendUnavailableError(Face3dError, RuntimeError):
    """An optional backend (CUDA, TensorRT, nvdiffrast, Ray, …) is not installed or has no device."""


class OverlayError(Face3dError, RuntimeError):
    """Drawing or encoding the overlay video failed (disk full, encoder error, …). Raised after
    the run's other outputs (CSV, sidecar) were written: the overlay is the secondary output, so
    its failure does not throw the tracking away. Nothing is left at the overlay's path."""


class NetworkError(Face3dError, OSError):
    """A download failed, for example because the machine is offline."""
