"""The WebSocket protocol, sans-I/O: client messages in, server messages out, bytes in/bytes out."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tracker.arkit import ARKIT_52, to_arkit
from tracker.csvout import CONVENTIONS
from tracker.gaze import GAZE_RANGE_DEG, gaze_weights
from tracker.protocol import (MAX_CLIENT_MESSAGE_BYTES, PROTOCOL_VERSION, CloseCode, FrameEncoder,
                              IdentityRequest, MeshRequest, Ping, ProtocolError, Subscribe,
                              decode_frame_binary, decode_server_message, encode_client_message,
                              encode_frame_binary, encode_json, frame_message, hello_message,
                              identity_message, parse_client_message)
from tracker.rotation import quat_to_euler
from tracker.types import FaceResult, FrameResult

PROTOCOL_MD = Path(__file__).resolve().parents[1] / "web" / "PROTOCOL.md"


# ------------------------------------------------------------------------------ client messages

@pytest.mark.parametrize("msg", [
    Subscribe(), Subscribe("binary", arkit=False, landmarks=True), MeshRequest(),
    MeshRequest("float32", identity_basis=False), IdentityRequest(), Ping(3), Ping("abc"),
    Ping(1.5), Ping(None)])
def test_client_message_round_trip(msg):
    assert parse_client_message(encode_client_message(msg)) == msg


def test_client_message_defaults_and_partial_fields():
    assert parse_client_message('{"type":"subscribe"}') == Subscribe("json", True, False)
    assert parse_client_message('{"type":"subscribe","format":"binary"}') == Subscribe("binary")
    assert parse_client_message('{"type":"request","what":"mesh"}') == MeshRequest("float16", True)
    assert parse_client_message('{"type":"ping"}') == Ping(None)


@pytest.mark.parametrize("data,code", [
    (b"\x00\x01\x02binary noise", CloseCode.UNSUPPORTED_DATA),
    (b'{"type":"ping"}', CloseCode.UNSUPPORTED_DATA),          # JSON, but in a binary message
    ("x" * (MAX_CLIENT_MESSAGE_BYTES + 1), CloseCode.MESSAGE_TOO_BIG),
    ('{"type":"ping","id":"' + "é" * 2100 + '"}', CloseCode.MESSAGE_TOO_BIG),  # > 4096 bytes UTF-8
    ("{not json", CloseCode.INVALID_PAYLOAD),
    ('{"type":"ping"', CloseCode.INVALID_PAYLOAD),
    ('{"type":"ping","id":NaN}', CloseCode.INVALID_PAYLOAD),
    ("[" * 2000 + "]" * 2000, CloseCode.INVALID_PAYLOAD),        # nested past the parser's depth
    ("", CloseCode.INVALID_PAYLOAD),
    ("[1, 2]", CloseCode.POLICY_VIOLATION),
    ('"subscribe"', CloseCode.POLICY_VIOLATION),
    ('{"format":"json"}', CloseCode.POLICY_VIOLATION),
    ('{"type":"hello"}', CloseCode.POLICY_VIOLATION),
    ('{"type":"request","what":"everything"}', CloseCode.POLICY_VIOLATION),
    ('{"type":"request"}', CloseCode.POLICY_VIOLATION),
    ('{"type":"subscribe","format":"xml"}', CloseCode.POLICY_VIOLATION),
    ('{"type":"subscribe","arkit":"yes"}', CloseCode.POLICY_VIOLATION),
    ('{"type":"subscribe","arkit":1}', CloseCode.POLICY_VIOLATION),
    ('{"type":"subscribe","colour":"red"}', CloseCode.POLICY_VIOLATION),
    ('{"type":"request","what":"mesh","dtype":"float64"}', CloseCode.POLICY_VIOLATION),
    ('{"type":"ping","id":[1,2]}', CloseCode.POLICY_VIOLATION),
    ('{"type":"ping","id":true}', CloseCode.POLICY_VIOLATION),
    ('{"type":"ping","id":"' + "a" * 65 + '"}', CloseCode.POLICY_VIOLATION),
])
def test_bad_client_messages_raise_with_their_close_code(data, code):
    with pytest.raises(ProtocolError) as ei:
        parse_client_message(data)
    assert ei.value.code == code
    assert len(ei.value.reason.encode()) <= 123


# ------------------------------------------------------------------------------ frames from real tracking

@pytest.fixture(scope="module")
def tracked(model, videos):
    """Twelve live-tracked frames of d10 (identity updates at frame 10 included)."""
    from tracker.pipeline import FaceTracker, TrackConfig, make_camera
    from tracker.sources import open_source

    cfg = TrackConfig(smooth="live")
    results = []
    with open_source(videos["d10"]) as src:
        tr = FaceTracker(model, make_camera(src.info, cfg), cfg, sar=src.info.sar)
        try:
            for frame in src:
                results.append(tr.step(frame))
                if len(results) == 12:
                    break
        finally:
            tr.close()
    assert all(r.faces and r.faces[0].status == "tracked" for r in results)
    return results


def test_frame_json_carries_the_tracker_values(model, tracked):
    enc = FrameEncoder(model.exp_names)
    fr = tracked[-1]
    pk = enc.packet(fr, seq=7, t_ready=1.7e9, track_ms=4.25)
    msg = json.loads(encode_json(frame_message(pk)))
    assert (msg["type"], msg["seq"], msg["frame"]) == ("frame", 7, fr.index)
    assert msg["t_capture"] == pytest.approx(fr.time_s, abs=1e-6)
    (face,) = msg["faces"]
    p = fr.faces[0].params
    assert face["id"] == fr.faces[0].face_id and face["status"] == "tracked"
    assert face["identity_rev"] == fr.faces[0].identity_rev
    np.testing.assert_allclose(face["pose"]["q"], p.rotation, atol=1e-6)
    np.testing.assert_allclose(face["pose"]["t"], p.translation, atol=1e-5)
    np.testing.assert_allclose(face["pose"]["euler_deg"], quat_to_euler(p.rotation), atol=1e-3)
    np.testing.assert_allclose(face["blendshapes"], p.expression, atol=1e-4)
    ark = to_arkit(p.expression, model.exp_names)
    np.testing.assert_allclose(face["arkit"], ark, atol=1e-4)
    assert len(face["blendshapes"]) == model.n_expression and len(face["arkit"]) == 52
    # ARKit's single channels are the mean of ICT's halves
    e = dict(zip(model.exp_names, p.expression))
    a = dict(zip(ARKIT_52, face["arkit"]))
    assert a["browInnerUp"] == pytest.approx((e["browInnerUp_L"] + e["browInnerUp_R"]) / 2, abs=1e-4)
    assert a["cheekPuff"] == pytest.approx((e["cheekPuff_L"] + e["cheekPuff_R"]) / 2, abs=1e-4)
    assert "landmarks" not in face
    with_lm = json.loads(encode_json(frame_message(pk, Subscribe(arkit=False, landmarks=True))))
    assert "arkit" not in with_lm["faces"][0]
    lm = np.array(with_lm["faces"][0]["landmarks"]).reshape(-1, 2)
    np.testing.assert_allclose(lm, fr.faces[0].landmarks.points[:, :2], atol=0.051)


@pytest.mark.parametrize("opts", [Subscribe("binary"), Subscribe("binary", arkit=False),
                                  Subscribe("binary", landmarks=True)])
def test_binary_frame_matches_json(model, tracked, opts):
    enc = FrameEncoder(model.exp_names)
    lost = FaceResult(face_id=3, status="lost", identity_rev=1)
    fr = replace(tracked[5], faces=tracked[5].faces + (lost,))
    pk = enc.packet(fr, seq=2**32 + 5, t_ready=1_760_000_000.123456, track_ms=5.5)
    data = encode_frame_binary(pk, opts, model.n_expression)
    n_float = 15 + model.n_expression + (52 if opts.arkit else 0) + (956 if opts.landmarks else 0)
    assert len(data) == 44 + 2 * (8 + 4 * n_float)
    got = decode_server_message(data)
    want = json.loads(encode_json(frame_message(pk, opts)))
    assert got["seq"] == 5  # u32 on the wire
    assert got["t_ready"] == pytest.approx(want["t_ready"], abs=1e-6)  # float64: µs survive
    for g, w in zip(got["faces"], want["faces"]):
        assert (g["id"], g["status"], g["identity_rev"]) == (w["id"], w["status"], w["identity_rev"])
        if w["status"] == "lost":
            assert set(g) == {"id", "status", "identity_rev"} == set(w)
            continue
        for key in ("blendshapes", "arkit", "landmarks"):
            assert (key in g) == (key in w)
            if key in w:
                np.testing.assert_allclose(g[key], w[key], atol=1e-3 if key != "landmarks" else 0.06)
        for key, atol in (("q", 1e-6), ("t", 1e-5), ("euler_deg", 1e-3)):  # JSON's rounding
            np.testing.assert_allclose(g["pose"][key], w["pose"][key], rtol=1e-6, atol=atol)
        np.testing.assert_allclose(g["gaze"]["left"], w["gaze"]["left"], atol=2e-3)


def test_binary_frame_rejects_garbage():
    for bad in (b"", b"F3DF", b"F3DF" + bytes(40), b"XXXX" + bytes(60)):
        with pytest.raises(ProtocolError) as ei:
            decode_frame_binary(bad)
        assert ei.value.code == CloseCode.INVALID_PAYLOAD


def test_lost_face_json_has_no_numbers(model):
    enc = FrameEncoder(model.exp_names)
    pk = enc.packet(FrameResult(4, 0.1, (FaceResult(face_id=0, status="lost"),)), 0, 0.0, 1.0)
    face = frame_message(pk)["faces"][0]
    assert face == {"id": 0, "status": "lost", "identity_rev": 0}
    assert frame_message(enc.packet(FrameResult(5, 0.2), 1, 0.0, 1.0))["faces"] == []


def test_non_finite_numbers_become_null(model, tracked):
    """A NaN from the tracker must not break encoding (it would cut the stream): JSON null,
    binary NaN."""
    f = tracked[-1].faces[0]
    e = f.params.expression.copy()
    e[3] = np.nan
    bad = replace(f, confidence=float("nan"), params=replace(f.params, expression=e))
    pk = FrameEncoder(model.exp_names).packet(replace(tracked[-1], faces=(bad,)), 0, 1.0, 1.0)
    face = json.loads(encode_json(frame_message(pk)))["faces"][0]
    assert face["confidence"] is None and face["blendshapes"][3] is None
    assert face["blendshapes"][4] is not None
    got = decode_frame_binary(encode_frame_binary(pk, Subscribe("binary"), model.n_expression))
    assert np.isnan(got["faces"][0]["blendshapes"][3])


def test_gaze_angles_invert_the_tracker_weights(model):
    """gaze (deg) from eyeLook* weights is the inverse of tracker.gaze.gaze_weights in range;
    yaw > 0 looks toward the subject's left, pitch > 0 down, for both eyes."""
    enc = FrameEncoder(model.exp_names)
    idx = {n: i for i, n in enumerate(model.exp_names)}
    rng = np.random.default_rng(0)
    for _ in range(50):
        deg = np.column_stack([rng.uniform(-29, 29, 2), rng.uniform(-24, 29, 2)])  # rows R, L
        e = np.zeros(model.n_expression)
        for k, v in gaze_weights(np.radians(deg), model.exp_names).items():
            e[idx[k]] = v
        np.testing.assert_allclose(enc.gaze_deg(e), deg.ravel(), atol=1e-9)
    e = np.zeros(model.n_expression)
    e[idx["eyeLookOut_L"]] = e[idx["eyeLookIn_R"]] = 1.0   # both eyes toward the subject's left
    assert enc.gaze_deg(e)[[0, 2]].tolist() == [GAZE_RANGE_DEG["in"], GAZE_RANGE_DEG["out"]]


def test_hello_and_identity_messages(model):
    h = json.loads(encode_json(hello_message(
        exp_names=model.exp_names, model={"name": model.name}, fps=30.0, source={"kind": "file"},
        camera={"fx": 500.0}, server="face3d test")))
    assert h["type"] == "hello" and h["protocol"] == PROTOCOL_VERSION
    assert h["blendshape_names"] == list(model.exp_names) and h["arkit_names"] == list(ARKIT_52)
    for k in ("units", "model_points", "camera_axes", "euler", "left_right"):
        assert h["conventions"][k] == CONVENTIONS[k]
    for k in ("pose", "blendshapes", "arkit", "gaze", "t_capture", "t_ready"):
        assert k in h["conventions"]
    assert h["options"] == {"format": "json", "arkit": True, "landmarks": False}
    m = identity_message(2, 3, np.array([0.5, -1.25, np.float32(0.1)]))
    assert json.loads(encode_json(m)) == {"type": "identity", "id": 2, "rev": 3,
                                          "coefficients": [0.5, -1.25, 0.1]}
    with pytest.raises(ValueError):
        encode_json({"x": float("nan")})


def test_protocol_md_documents_this_version():
    """The documentation carries the version, every close code and the binary sizes."""
    text = PROTOCOL_MD.read_text()
    assert re.search(rf"protocol version {PROTOCOL_VERSION}\b", text, re.I)
    for c in CloseCode:
        assert str(int(c)) in text, c
    for token in ("F3DF", "F3DM", "44 bytes", '"hello"', '"frame"', '"identity"', '"source"',
                  '"pong"', '"subscribe"', '"request"', '"ping"', "?token="):
        assert token in text, token
