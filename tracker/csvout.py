"""CSV rows and the sidecar JSON: the column layout, row encoding (pure), and an atomic writer.

Default layout (``--format face3d``), one row per frame per tracked face::

    frame, time_s, face_id, status, confidence,
    qw, qx, qy, qz, yaw_deg, pitch_deg, roll_deg, tx_m, ty_m, tz_m,
    <the model's 53 expression names, in its order>, id_000 … id_099,
    [sh_r_0 … sh_r_8, sh_g_0 … sh_b_8, alb_00_r, alb_00_g, alb_00_b, …]   (with a regressor)
    [lmk68_x_00 … lmk68_x_67, lmk68_y_00 … lmk68_y_67]                     (with --landmarks)
    [arkit_<name> …]                                                        (with --arkit)

A frame where no face is found gets one row with ``status=lost``, ``face_id=-1`` and every numeric
cell after ``status`` empty (read as NaN by pandas/numpy). Conventions are in the sidecar JSON and in
:mod:`tracker.types`.

``--format livelink`` writes Live Link Face's columns instead (``Timecode,BlendShapeCount,
EyeBlinkLeft,…,TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,…,RightEyeRoll``); there a lost
frame repeats nothing and is written as zeros, since importers expect numbers.

Files are written atomically: rows go to ``OUT.csv.tmp-<pid>`` beside the target, which is renamed
over ``OUT.csv`` by :meth:`AtomicCsv.commit`; :meth:`AtomicCsv.abort` deletes it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .arkit import ARKIT_52, to_arkit
from .gaze import GAZE_RANGE_DEG
from .rotation import quat_to_euler
from .types import FaceParams

POSE_COLUMNS = ("qw", "qx", "qy", "qz", "yaw_deg", "pitch_deg", "roll_deg", "tx_m", "ty_m", "tz_m")
HEAD_COLUMNS = ("frame", "time_s", "face_id", "status", "confidence")


def lighting_columns() -> list[str]:
    return [f"sh_{c}_{k}" for c in "rgb" for k in range(9)]


def albedo_columns(k: int) -> list[str]:
    return [f"alb_{i:02d}_{c}" for i in range(k) for c in "rgb"]


def lmk68_columns() -> list[str]:
    return [f"lmk68_x_{i:02d}" for i in range(68)] + [f"lmk68_y_{i:02d}" for i in range(68)]


def face3d_columns(exp_names: Sequence[str], n_identity: int, *, lighting: bool = False,
                   albedo_k: int = 0, landmarks: bool = False, arkit: bool = False) -> list[str]:
    """Column names of the default layout, in order."""
    cols = list(HEAD_COLUMNS) + list(POSE_COLUMNS) + list(exp_names)
    cols += [f"id_{i:03d}" for i in range(n_identity)]
    if lighting:
        cols += lighting_columns()
    if albedo_k:
        cols += albedo_columns(albedo_k)
    if landmarks:
        cols += lmk68_columns()
    if arkit:
        cols += [f"arkit_{n}" for n in ARKIT_52]
    return cols


def _fmt(values: Iterable[float], digits: int) -> list[str]:
    """Fixed-point strings of ``values`` (one ``%`` format over the whole row part: 3x faster
    than formatting value by value, which showed in the time of ``face3d track``)."""
    v = np.asarray(values, np.float64).ravel().tolist()
    if not v:
        return []
    return ((f"%.{digits}f," * len(v)) % tuple(v)).split(",")[:-1]


def face3d_row(cols_len: int, frame: int, time_s: float, face_id: int, status: str,
               confidence: float, params: FaceParams | None, exp_names: Sequence[str],
               lmk68: np.ndarray | None = None, *, lighting: bool = False, albedo_k: int = 0,
               landmarks: bool = False, arkit: bool = False) -> list[str]:
    """One row of the default layout as strings (``cols_len`` cells)."""
    row = [str(frame), f"{time_s:.6f}", str(face_id), status]
    if params is None:
        return row + [""] * (cols_len - len(row))
    row.append(f"{confidence:.4f}")
    q = np.asarray(params.rotation, np.float64)
    row += _fmt(q, 7)
    row += _fmt(quat_to_euler(q), 4)
    row += _fmt(params.translation, 6)
    row += _fmt(params.expression, 5)
    row += _fmt(params.identity, 5)
    if lighting:
        row += _fmt(params.lighting, 5) if params.lighting is not None else [""] * 27
    if albedo_k:
        row += _fmt(params.albedo, 5) if params.albedo is not None else [""] * (3 * albedo_k)
    if landmarks:
        row += _fmt(lmk68[:, 0], 3) + _fmt(lmk68[:, 1], 3) if lmk68 is not None else [""] * 136
    if arkit:
        row += _fmt(to_arkit(params.expression, tuple(exp_names)), 5)
    if len(row) != cols_len:
        raise ValueError(f"row has {len(row)} cells for {cols_len} columns")
    return row


# ------------------------------------------------------------------------------- Live Link Face

LIVELINK_COLUMNS = (["Timecode", "BlendShapeCount"]
                    + [n[0].upper() + n[1:] for n in ARKIT_52]
                    + ["HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                       "RightEyeYaw", "RightEyePitch", "RightEyeRoll"])


def livelink_timecode(time_s: float, fps: float) -> str:
    """``HH:MM:SS:FF.fff``: frame ``FF`` within the second at ``fps``, ``.fff`` its fraction."""
    fps = fps if fps and fps > 0 else 30.0
    whole = int(time_s)
    h, m, s = whole // 3600, (whole // 60) % 60, whole % 60
    fr = (time_s - whole) * fps
    return f"{h:02d}:{m:02d}:{s:02d}:{int(fr):02d}.{int(round((fr - int(fr)) * 1000)) % 1000:03d}"


def livelink_row(time_s: float, fps: float, params: FaceParams | None,
                 exp_names: Sequence[str]) -> list[str]:
    """One Live Link Face row. Head angles in radians (yaw toward the subject's left, pitch down,
    roll as in :mod:`tracker.rotation`); eye yaw/pitch from the eyeLook weights (roll 0)."""
    if params is None:
        return [livelink_timecode(time_s, fps), "61"] + ["0"] * 61
    ark = to_arkit(params.expression, tuple(exp_names))
    ypr = np.radians(quat_to_euler(np.asarray(params.rotation, np.float64)))
    w = dict(zip(ARKIT_52, ark))
    eyes = []
    for side in ("Left", "Right"):
        out_w, in_w = w[f"eyeLookOut{side}"], w[f"eyeLookIn{side}"]
        toward_subject_left = (out_w * GAZE_RANGE_DEG["out"] - in_w * GAZE_RANGE_DEG["in"]) \
            if side == "Left" else (in_w * GAZE_RANGE_DEG["in"] - out_w * GAZE_RANGE_DEG["out"])
        pitch = w[f"eyeLookDown{side}"] * GAZE_RANGE_DEG["down"] - w[f"eyeLookUp{side}"] * GAZE_RANGE_DEG["up"]
        eyes += [np.radians(toward_subject_left), np.radians(pitch), 0.0]
    return [livelink_timecode(time_s, fps), "61"] + _fmt(ark, 5) + _fmt(ypr, 5) + _fmt(eyes, 5)


# ----------------------------------------------------------------------------------- files

class AtomicCsv:
    """A CSV written to a temporary file beside ``path`` and renamed over it on :meth:`commit`."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self._fh = open(self.tmp, "w", newline="")
        self._w = csv.writer(self._fh, lineterminator="\n")
        self._w.writerow(columns)
        self.rows = 0

    def write(self, row: Sequence[str]) -> None:
        self._w.writerow(row)
        self.rows += 1

    def commit(self) -> Path:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass


def write_json_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    p = Path(path)
    tmp = p.with_name(f"{p.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return p


CONVENTIONS = {
    "units": "metres (translation, model points); angles in degrees in *_deg columns",
    "model_points": "ICT npz coordinates x 0.01 m, not recentred; +x subject's left, +y up, +z out of the face",
    "model_equation": "v = neutral + sum_i id_i * id_basis_i + sum_k e_k * exp_basis_k",
    "camera_point": "X = R(q) x + t, q = (qw, qx, qy, qz) unit quaternion, qw >= 0",
    "camera_axes": "OpenGL style: +x right, +y up, camera looks down -z",
    "projection": "u = cx + fx * X / (-Z), v = cy - fy * Y / (-Z); pixels of the stored grid, origin top-left, v down",
    "euler": "yaw, pitch, roll with R = Ry(yaw) Rx(pitch) Rz(roll) about the model axes; "
             "yaw > 0 turns the nose to image right, pitch > 0 tilts it down",
    "left_right": "_L / Left = the subject's left",
    "lost_rows": "status=lost, face_id=-1, numeric cells empty",
    "lmk68": "projected ICT iBUG-68 vertices (model lmk68_idx) in input-image pixels",
    "time_s": "presentation timestamp from the container, seconds",
}
