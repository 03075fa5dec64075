"""The face3d WebSocket protocol, sans-I/O: messages in and out as ``dict``/``str``/``bytes``.

No sockets and no clocks here (times are arguments); :mod:`tracker.serve` is the transport. The
normative description, with every field, unit and byte offset, is ``web/PROTOCOL.md``; this
module is its reference implementation and ``tests/test_protocol.py`` pins the two together.

Server → client: ``hello`` (first), ``identity``, ``frame`` (JSON text, or the binary ``F3DF``
layout after ``subscribe {"format": "binary"}``), ``source``, ``pong``, and the binary ``F3DM``
mesh blob in answer to ``request {"what": "mesh"}``.
Client → server: ``subscribe``, ``request``, ``ping`` — UTF-8 JSON text, at most
:data:`MAX_CLIENT_MESSAGE_BYTES` bytes. Anything else closes that client with the
:class:`CloseCode` carried by the :class:`ProtocolError` raised by :func:`parse_client_message`.

Conventions (units, axes, left/right) are the CSV's (:data:`tracker.csvout.CONVENTIONS`) plus the
stream-specific ones in :data:`STREAM_CONVENTIONS`.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal, Union

import numpy as np

from .arkit import ARKIT_52, arkit_matrix
from .csvout import CONVENTIONS
from .errors import InputError
from .gaze import GAZE_RANGE_DEG
from .rotation import quat_to_euler
from .types import FrameResult

PROTOCOL_VERSION = 1
MAX_CLIENT_MESSAGE_BYTES = 4096
FRAME_MAGIC = b"F3DF"
BLOB_MAGIC = b"F3DM"
LANDMARK_COUNT = 478

STREAM_CONVENTIONS = {
    **{k: v for k, v in CONVENTIONS.items() if k not in ("lost_rows", "lmk68", "time_s")},
    "pose": "q = (w, x, y, z) and t (metres) map model to camera space: X = R(q) x + t; "
            "euler_deg = (yaw, pitch, roll) as in 'euler'",
    "blendshapes": "weights in [0, 1] in the order of hello.blendshape_names (the model's)",
    "arkit": "ARKit-52 weights in the order of hello.arkit_names; browInnerUp and cheekPuff are "
             "the mean of the model's _L/_R halves; tongueOut is always 0",
    "gaze": "per eye (yaw_deg, pitch_deg) of the eyeball, R_eye = Ry(yaw) Rx(pitch) about its "
            "centre in model axes: yaw > 0 looks toward the subject's left (+x), pitch > 0 down",
    "t_capture": "presentation time of the frame in seconds (media clock; continues across loops)",
    "t_ready": "server wall clock (Unix seconds) when tracking of the frame finished",
    "landmarks": "MediaPipe's 478 points (x, y) in pixels of the input, origin top-left, y down",
}


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (RFC 6455 section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001           # server shutting down
    UNSUPPORTED_DATA = 1003     # a binary message from a client (clients send JSON text only)
    INVALID_PAYLOAD = 1007      # text that is not UTF-8 or not JSON
    POLICY_VIOLATION = 1008     # JSON that is not a valid client message
    MESSAGE_TOO_BIG = 1009      # longer than MAX_CLIENT_MESSAGE_BYTES
    INTERNAL_ERROR = 1011       # a server bug while serving this client (logged)
    TRY_AGAIN_LATER = 1013      # connection limit reached


class ProtocolError(InputError):
    """A client sent something the protocol does not allow; ``code`` is the close code to use and
    ``reason`` a short text (≤ 123 bytes, the close-frame limit)."""

    def __init__(self, code: CloseCode, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason.encode()[:123].decode(errors="ignore")


# ------------------------------------------------------------------------------ client messages

@dataclass(frozen=True)
class Subscribe:
    """Stream options of one client: ``format`` of frames, and which optional per-face arrays."""

    format: Literal["json", "binary"] = "json"
    arkit: bool = True
    landmarks: bool = False


@dataclass(frozen=True)
class MeshRequest:
    """Ask for the mesh blob: ``dtype`` of the bases, whether to include the identity basis."""

    dtype: Literal["float16", "float32"] = "float16"
    identity_basis: bool = True


@dataclass(frozen=True)
class IdentityRequest:
    """Ask for the current ``identity`` message of every tracked face."""


@dataclass(frozen=True)
class Ping:
    """Echoed as ``pong`` with the server clock (for latency and clock-offset estimates)."""

    id: int | float | str | None = None


ClientMessage = Union[Subscribe, MeshRequest, IdentityRequest, Ping]

_FIELDS: dict[str, dict[str, tuple[type, ...] | tuple[str, ...]]] = {
    "subscribe": {"format": ("json", "binary"), "arkit": (bool,), "landmarks": (bool,)},
    "request:mesh": {"dtype": ("float16", "float32"), "identity_basis": (bool,)},
    "request:identity": {},
    "ping": {"id": (int, float, str, type(None))},
}


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def parse_client_message(data: str | bytes, max_bytes: int = MAX_CLIENT_MESSAGE_BYTES) -> ClientMessage:
    """Decode one client message. Raises :class:`ProtocolError` with the close code to use:
    binary → 1003, too long → 1009, not JSON (or NaN, or nested too deep) → 1007, a JSON value
    that is not a known message with known, well-typed fields → 1008."""
    if not isinstance(data, str):
        raise ProtocolError(CloseCode.UNSUPPORTED_DATA, "clients send JSON text messages only")
    if len(data) > max_bytes or len(data.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, f"message longer than {max_bytes} bytes")
    try:
        obj = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(CloseCode.INVALID_PAYLOAD, f"not JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError(CloseCode.POLICY_VIOLATION, 'expected an object with a "type"')
    kind = obj["type"]
    if kind == "request":
        what = obj.get("what")
        kind = f"request:{what}" if isinstance(what, str) else "request:?"
    spec = _FIELDS.get(kind)
    if spec is None:
        raise ProtocolError(CloseCode.POLICY_VIOLATION, f"unknown message {kind!r}")
    fields = {k: v for k, v in obj.items() if k not in ("type", "what")}
    for k, v in fields.items():
        allowed = spec.get(k)
        if allowed is None:
            raise ProtocolError(CloseCode.POLICY_VIOLATION, f"{kind}: unknown field {k!r}")
        ok = (v in allowed) if isinstance(allowed[0], str) else (
            isinstance(v, allowed) and not (isinstance(v, bool) and bool not in allowed))
        if isinstance(v, str) and len(v) > 64:
            ok = False
        if not ok:
            raise ProtocolError(CloseCode.POLICY_VIOLATION, f"{kind}: bad value for {k!r}")
    if kind == "subscribe":
        return Subscribe(**fields)
    if kind == "request:mesh":
        return MeshRequest(**fields)
    if kind == "request:identity":
        return IdentityRequest()
    return Ping(**fields)


def encode_client_message(msg: ClientMessage) -> str:
    """The JSON text of a client message (for Python clients and tests)."""
    if isinstance(msg, Subscribe):
        d: dict[str, Any] = {"type": "subscribe", "format": msg.format, "arkit": msg.arkit,
                             "landmarks": msg.landmarks}
    elif isinstance(msg, MeshRequest):
        d = {"type": "request", "what": "mesh", "dtype": msg.dtype,
             "identity_basis": msg.identity_basis}
    elif isinstance(msg, IdentityRequest):
        d = {"type": "request", "what": "identity"}
    else:
        d = {"type": "ping", "id": msg.id}
    return json.dumps(d, separators=(",", ":"))


# ------------------------------------------------------------------------------ server messages

def encode_json(msg: dict[str, Any]) -> str:
    """Compact JSON text; NaN/Infinity are errors (they are not JSON)."""
    return json.dumps(msg, separators=(",", ":"), allow_nan=False)


def hello_message(*, exp_names: tuple[str, ...], model: dict[str, Any], fps: float | None,
                  source: dict[str, Any], camera: dict[str, Any], server: str,
                  options: Subscribe = Subscribe()) -> dict[str, Any]:
    """The first message on every connection."""
    return {"type": "hello", "protocol": PROTOCOL_VERSION, "server": server, "model": model,
            "blendshape_names": list(exp_names), "arkit_names": list(ARKIT_52),
            "conventions": STREAM_CONVENTIONS, "fps": fps, "source": source, "camera": camera,
            "options": {"format": options.format, "arkit": options.arkit,
                        "landmarks": options.landmarks},
            "limits": {"max_message_bytes": MAX_CLIENT_MESSAGE_BYTES}}


def identity_message(face_id: int, rev: int, coefficients: np.ndarray) -> dict[str, Any]:
    """A face's identity coefficients ``(I,)`` (prior N(0, 1)); sent when ``rev`` changes."""
    return {"type": "identity", "id": int(face_id), "rev": int(rev),
            "coefficients": np.round(np.asarray(coefficients, np.float64), 5).tolist()}


def source_message(state: Literal["live", "lost", "ended"], reason: str = "") -> dict[str, Any]:
    """The source's state: ``live`` (frames flowing), ``lost`` (camera gone, retrying),
    ``ended`` (a file played once and finished)."""
    return {"type": "source", "state": state, "reason": reason}


def pong_message(ping: Ping, t_server: float) -> dict[str, Any]:
    return {"type": "pong", "id": ping.id, "t_server": round(t_server, 6)}


# ------------------------------------------------------------------------------ frames

@dataclass(frozen=True)
class FacePacket:
    """One face of a frame, ready to encode. Arrays are float64 (NaN when ``status == "lost"``):
    ``pose`` ``(10,)`` = q (w, x, y, z), t (m), euler (yaw, pitch, roll deg); ``gaze`` ``(4,)`` =
    right (yaw, pitch), left (yaw, pitch) deg; ``blendshapes`` ``(E,)``; ``arkit`` ``(52,)``;
    ``landmarks`` ``(478, 2)`` px or ``None``."""

    id: int
    status: str
    confidence: float
    identity_rev: int
    pose: np.ndarray
    gaze: np.ndarray
    blendshapes: np.ndarray
    arkit: np.ndarray
    landmarks: np.ndarray | None


@dataclass(frozen=True)
class FramePacket:
    """A frame's content, computed once and encoded per client format."""

    seq: int
    frame: int
    t_capture: float
    t_ready: float
    track_ms: float
    faces: tuple[FacePacket, ...]


class FrameEncoder:
    """Turns :class:`~tracker.types.FrameResult` into :class:`FramePacket` for one model's
    expression names (``exp_names``, ``E`` of them)."""

    def __init__(self, exp_names: tuple[str, ...]):
        self.exp_names = tuple(exp_names)
        self.n_exp = len(self.exp_names)
        self._arkit = arkit_matrix(self.exp_names).astype(np.float64)
        col = {n: i for i, n in enumerate(self.exp_names)}
        keys = [f"eyeLook{d}_{s}" for s in ("R", "L") for d in ("Out", "In", "Down", "Up")]
        self._gaze_idx = np.array([col.get(k, -1) for k in keys]).reshape(2, 4)

    def gaze_deg(self, expression: np.ndarray) -> np.ndarray:
        """Eye angles ``(4,)`` = right (yaw, pitch), left (yaw, pitch) in degrees from the
        eyeLook* weights (the inverse of :func:`tracker.gaze.gaze_weights` inside its range)."""
        out = np.zeros(4)
        e = np.asarray(expression, np.float64)
        for row in range(2):
            w = [e[i] if i >= 0 else 0.0 for i in self._gaze_idx[row]]
            look_out, look_in, down, up = w
            # toward the subject's left: the left eye looks "out", the right eye "in"
            yaw = (look_in * GAZE_RANGE_DEG["in"] - look_out * GAZE_RANGE_DEG["out"]) if row == 0 \
                else (look_out * GAZE_RANGE_DEG["out"] - look_in * GAZE_RANGE_DEG["in"])
            out[2 * row] = yaw
            out[2 * row + 1] = down * GAZE_RANGE_DEG["down"] - up * GAZE_RANGE_DEG["up"]
        return out

    def packet(self, fr: FrameResult, seq: int, t_ready: float, track_ms: float) -> FramePacket:
        faces = []
        for f in fr.faces:
            p = f.params
            if f.status != "tracked" or p is None:
                nan = np.full(1, np.nan)
                faces.append(FacePacket(f.face_id, "lost", 0.0, f.identity_rev, np.repeat(nan, 10),
                                        np.repeat(nan, 4), np.repeat(nan, self.n_exp),
                                        np.repeat(nan, len(ARKIT_52)), None))
                continue
            q = np.asarray(p.rotation, np.float64)
            pose = np.concatenate([q, np.asarray(p.translation, np.float64), quat_to_euler(q)])
            e = np.asarray(p.expression, np.float64)
            lm = None if f.landmarks is None else np.asarray(f.landmarks.points[:, :2], np.float64)
            faces.append(FacePacket(f.face_id, "tracked", float(f.confidence), f.identity_rev, pose,
                                    self.gaze_deg(e), e, self._arkit @ e, lm))
        return FramePacket(seq, fr.index, fr.time_s, t_ready, track_ms, tuple(faces))


def _r(a: np.ndarray, digits: int) -> list[float | None]:
    """Rounded values; a value the tracker could not compute (NaN, inf) becomes ``null``."""
    r = np.round(a, digits)
    if np.isfinite(r).all():
        return r.tolist()
    return [x if math.isfinite(x) else None for x in r.tolist()]


def frame_message(pk: FramePacket, opts: Subscribe = Subscribe()) -> dict[str, Any]:
    """The JSON ``frame`` message; a lost face carries only ``id``, ``status``, ``identity_rev``.
    A number the tracker could not compute (NaN) is ``null`` (JSON has no NaN)."""
    faces: list[dict[str, Any]] = []
    for f in pk.faces:
        d: dict[str, Any] = {"id": f.id, "status": f.status, "identity_rev": f.identity_rev}
        if f.status == "tracked":
            d["confidence"] = round(f.confidence, 4) if math.isfinite(f.confidence) else None
            d["pose"] = {"q": _r(f.pose[:4], 6), "t": _r(f.pose[4:7], 5),
                         "euler_deg": _r(f.pose[7:], 3)}
            d["blendshapes"] = _r(f.blendshapes, 4)
            if opts.arkit:
                d["arkit"] = _r(f.arkit, 4)
            d["gaze"] = {"right": _r(f.gaze[:2], 3), "left": _r(f.gaze[2:], 3)}
            if opts.landmarks and f.landmarks is not None:
                d["landmarks"] = _r(f.landmarks.ravel(), 1)
        faces.append(d)
    return {"type": "frame", "seq": pk.seq, "frame": pk.frame, "t_capture": round(pk.t_capture, 6),
            "t_ready": round(pk.t_ready, 6), "track_ms": round(pk.track_ms, 3), "faces": faces}


# Binary frame (little-endian): header 44 bytes, then one record per face. See web/PROTOCOL.md.
_FRAME_HEAD = struct.Struct("<4sHHIIddfHHHH")
_FACE_HEAD = struct.Struct("<iBBH")
FLAG_ARKIT, FLAG_LANDMARKS = 1, 2
_N_FIXED = 15  # confidence, q(4), t(3), euler(3), gaze(4)


def encode_frame_binary(pk: FramePacket, opts: Subscribe = Subscribe(), n_exp: int | None = None) -> bytes:
    """The ``F3DF`` binary frame. Every face record has the same length; a lost face is NaN."""
    if n_exp is None:
        n_exp = len(pk.faces[0].blendshapes) if pk.faces else 0
    n_lm = LANDMARK_COUNT if opts.landmarks else 0
    flags = (FLAG_ARKIT if opts.arkit else 0) | (FLAG_LANDMARKS if n_lm else 0)
    parts = [_FRAME_HEAD.pack(FRAME_MAGIC, PROTOCOL_VERSION, flags, pk.seq & 0xFFFFFFFF,
                              pk.frame & 0xFFFFFFFF, pk.t_capture, pk.t_ready, pk.track_ms,
                              len(pk.faces), n_exp, n_lm, 0)]
    for f in pk.faces:
        parts.append(_FACE_HEAD.pack(f.id, 1 if f.status == "tracked" else 0, 0,
                                     f.identity_rev & 0xFFFF))
        conf = f.confidence if f.status == "tracked" else math.nan
        vec = [np.array([conf]), f.pose, f.gaze, f.blendshapes]
        if opts.arkit:
            vec.append(f.arkit)
        if n_lm:
            lm = f.landmarks if f.landmarks is not None else np.full((n_lm, 2), np.nan)
            vec.append(lm.ravel())
        parts.append(np.concatenate(vec).astype("<f4").tobytes())
    return b"".join(parts)


def decode_frame_binary(data: bytes) -> dict[str, Any]:
    """Parse an ``F3DF`` frame into the same structure as :func:`frame_message` (floats are
    float32-rounded). Raises :class:`ProtocolError` (1007) on a malformed buffer."""
    if len(data) < _FRAME_HEAD.size or data[:4] != FRAME_MAGIC:
        raise ProtocolError(CloseCode.INVALID_PAYLOAD, "not an F3DF frame")
    (_, ver, flags, seq, frame, t_cap, t_ready, track_ms, n_faces, n_exp, n_lm,
     _) = _FRAME_HEAD.unpack_from(data)
    n_ark = len(ARKIT_52) if flags & FLAG_ARKIT else 0
    n_float = _N_FIXED + n_exp + n_ark + 2 * n_lm
    rec = _FACE_HEAD.size + 4 * n_float
    if ver != PROTOCOL_VERSION or len(data) != _FRAME_HEAD.size + n_faces * rec:
        raise ProtocolError(CloseCode.INVALID_PAYLOAD, "F3DF frame of the wrong size or version")
    faces = []
    off = _FRAME_HEAD.size
    for _ in range(n_faces):
        fid, status, _pad, rev = _FACE_HEAD.unpack_from(data, off)
        v = np.frombuffer(data, "<f4", n_float, off + _FACE_HEAD.size).astype(np.float64)
        off += rec
        d: dict[str, Any] = {"id": fid, "status": "tracked" if status else "lost", "identity_rev": rev}
        if status:
            k = _N_FIXED + n_exp
            d.update(confidence=float(v[0]),
                     pose={"q": v[1:5].tolist(), "t": v[5:8].tolist(), "euler_deg": v[8:11].tolist()},
                     gaze={"right": v[11:13].tolist(), "left": v[13:15].tolist()},
                     blendshapes=v[_N_FIXED:k].tolist())
            if n_ark:
                d["arkit"] = v[k:k + n_ark].tolist()
            if n_lm:
                d["landmarks"] = v[k + n_ark:].tolist()
        faces.append(d)
    return {"type": "frame", "seq": seq, "frame": frame, "t_capture": t_cap, "t_ready": t_ready,
            "track_ms": float(np.float32(track_ms)), "faces": faces}


def decode_server_message(data: str | bytes) -> dict[str, Any]:
    """Any server message as a dict (binary frames decoded; a mesh blob as
    ``{"type": "mesh", "header": …, "arrays": {name: ndarray}}``)."""
    if isinstance(data, str):
        return json.loads(data)
    if data[:4] == FRAME_MAGIC:
        return decode_frame_binary(data)
    from .wiremesh import decode_blob
    header, arrays = decode_blob(data)
    return {"type": header.get("type", "blob"), "header": header, "arrays": arrays}
