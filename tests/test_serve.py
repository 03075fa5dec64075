"""`face3d serve` end to end: a real server tracking a real looping video, real sockets.

The frame-rate checks are behaviour, not speed: a 30 fps file is paced in real time, so a reader
must see (nearly) every frame whatever else is connected. Latency and the tracker's fps under
load are benchmark numbers (tracker/bench_serve.py), not asserted here.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import socket
import threading
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.sync.client import connect
from websockets.uri import parse_uri

from tracker.errors import InputError
from tracker.protocol import CloseCode, decode_server_message
from tracker.serve import LiveServer, ServeConfig, validate_config
from tracker.wiremesh import mesh_blob

WARM_STEPS = 45   # past the tracker's identity updates at frames 10 and 40 (they stall a moment)
MIN_FPS = 24.0


def _start(model, video, **kw) -> LiveServer:
    from tracker.trackconfig import load_track_config

    srv = LiveServer(ServeConfig(str(video), port=0, **kw), model, load_track_config()).start()
    t0 = time.monotonic()
    while srv.stats().loop.steps < WARM_STEPS:
        if time.monotonic() - t0 > 60:
            srv.stop()
            pytest.fail("the tracker did not warm up within 60 s")
        time.sleep(0.1)
    return srv


@pytest.fixture(scope="module")
def server(model, videos):
    srv = _start(model, videos["d10"], loop=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def guarded(model, videos):
    """Loopback, but with a token and a limit of two clients."""
    srv = _start(model, videos["d10"], loop=True, token="t0k3n-for-tests", max_clients=2)
    yield srv
    srv.stop()


class RawClient:
    """A WebSocket client over a plain socket (websockets' sans-I/O protocol): it reads only
    when told to, so it can stop reading altogether, and it can send anything."""

    def __init__(self, url: str, rcvbuf: int | None = None):
        self.proto = ClientProtocol(parse_uri(url), max_size=None)
        u = parse_uri(url)
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((u.host, u.port))
        self.proto.send_request(self.proto.connect())
        self.flush()
        self.sock.settimeout(10)
        while self.proto.state is State.CONNECTING:
            self.proto.receive_data(self.sock.recv(4096))
        assert self.proto.state is State.OPEN, self.proto.handshake_exc

    def flush(self) -> None:
        self.sock.sendall(b"".join(self.proto.data_to_send()))

    def send_text(self, text: str) -> None:
        self.proto.send_text(text.encode())
        self.flush()

    def send_frame(self, frame: Frame) -> None:
        self.proto.send_frame(frame)
        self.flush()

    def close_code(self, timeout: float = 15.0) -> int | None:
        """Read (and discard) until the server's close frame; its code."""
        end = time.monotonic() + timeout
        while self.proto.close_rcvd is None and time.monotonic() < end:
            try:
                data = self.sock.recv(1 << 16)
            except (TimeoutError, OSError):
                break
            if not data:
                self.proto.receive_eof()
                break
            self.proto.receive_data(data)
            self.proto.events_received()
        return self.proto.close_rcvd.code if self.proto.close_rcvd else None

    def close(self) -> None:
        self.sock.close()


def _recv_json(ws, timeout: float = 10.0) -> dict:
    return decode_server_message(ws.recv(timeout=timeout))


def _frame_rate(ws, seconds: float, server: LiveServer) -> tuple[float, float, list[int]]:
    """Frames per second received on ``ws`` over ``seconds``, the tracker's own rate over the
    same time (both should be the file's 30 fps on an idle machine), and the frames' ``seq``."""
    seqs = []
    steps0, t0 = server.stats().loop.steps, time.monotonic()
    while time.monotonic() - t0 < seconds:
        m = _recv_json(ws)
        if m["type"] == "frame":
            seqs.append(m["seq"])
    dt = time.monotonic() - t0
    return len(seqs) / dt, (server.stats().loop.steps - steps0) / dt, seqs


class Observer(threading.Thread):
    """A well-behaved client reading frames in the background."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.seqs: list[int] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            with connect(self.url, max_size=None) as ws:
                while not self.stop.is_set():
                    m = _recv_json(ws, 5.0)
                    if m["type"] == "frame":
                        self.seqs.append(m["seq"])
        except BaseException as e:  # noqa: BLE001 - checked by the test
            self.error = e

    def finish(self) -> None:
        self.stop.set()
        self.join(10)


def test_hello_first_then_realtime_frames_while_another_client_never_reads(server):
    stuck = RawClient(server.ws_url, rcvbuf=4096)
    stuck.send_text('{"type":"request","what":"mesh","dtype":"float32"}')  # 20 MB it never reads
    try:
        with connect(server.ws_url, max_size=None) as ws:
            hello = _recv_json(ws)
            assert hello["type"] == "hello" and hello["protocol"] == 1 and hello["fps"] == 30.0
            assert len(hello["blendshape_names"]) == 53 and len(hello["arkit_names"]) == 52
            fps, tracker_fps, seqs = _frame_rate(ws, 3.0, server)
            # the reader misses nothing the tracker produced (± the frames in flight at the
            # window's edges), and that is real time
            assert fps * 3.0 >= 0.95 * tracker_fps * 3.0 - 2, (fps, tracker_fps)
            assert fps >= MIN_FPS, f"{fps:.1f} frames/s (tracker {tracker_fps:.1f}/s: busy machine?)"
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        port = stuck.sock.getsockname()[1]
        (mine,) = [c for c in server.stats().clients if c.address[1] == port]
        assert mine.dropped > 0   # its frames were dropped, nobody waited for it
    finally:
        stuck.close()


def test_binary_frames_ping_identity_and_mesh(server, model):
    with connect(server.ws_url, max_size=None) as ws:
        assert _recv_json(ws)["type"] == "hello"
        ws.send('{"type":"subscribe","format":"binary","arkit":true}')
        ws.send('{"type":"ping","id":"abc"}')
        ws.send('{"type":"request","what":"identity"}')
        ws.send('{"type":"request","what":"mesh","dtype":"float32","identity_basis":false}')
        got: dict[str, list] = {}
        t0 = time.monotonic()
        while len(got.get("frame", [])) < 10 or "mesh" not in got:
            raw = ws.recv(timeout=10)
            m = decode_server_message(raw)
            got.setdefault(m["type"], []).append((raw, m))
            assert time.monotonic() - t0 < 30
    pong = got["pong"][0][1]
    assert pong["id"] == "abc" and abs(pong["t_server"] - time.time()) < 5
    ident = got["identity"][-1][1]
    assert ident["rev"] >= 1 and len(ident["coefficients"]) == model.n_identity
    assert np.abs(ident["coefficients"]).max() > 0   # a real identity, not the mean face
    binary = [m for raw, m in got["frame"] if isinstance(raw, bytes)]
    assert len(binary) >= 5
    face = binary[-1]["faces"][0]
    assert len(face["blendshapes"]) == 53 and len(face["arkit"]) == 52
    assert got["mesh"][0][0] == mesh_blob(model, dtype="float32", identity_basis=False)


def _expect_close(server, send, code: int) -> None:
    c = RawClient(server.ws_url)
    try:
        send(c)
        assert c.close_code() == code
    finally:
        c.close()


def test_garbage_closes_only_that_client(server):
    obs = Observer(server.ws_url)
    try:
        time.sleep(0.5)
        n0, codes0 = len(obs.seqs), len(server.stats().closed_codes)
        cases = [
            (lambda c: c.send_frame(Frame(Opcode.BINARY, os.urandom(200))), CloseCode.UNSUPPORTED_DATA),
            (lambda c: c.send_text("x" * 5000), CloseCode.MESSAGE_TOO_BIG),
            (lambda c: c.send_text("{malformed json"), CloseCode.INVALID_PAYLOAD),
            (lambda c: c.send_frame(Frame(Opcode.TEXT, b"\xff\xfe\xfd")), CloseCode.INVALID_PAYLOAD),
            (lambda c: c.send_text('{"type":"launch","what":"rockets"}'), CloseCode.POLICY_VIOLATION),
            # not WebSocket framing: a header with the reserved bits set, then noise
            (lambda c: c.sock.sendall(b"\xff" + os.urandom(127)), 1002),
        ]
        for send, code in cases:
            _expect_close(server, send, code)
        # a request flood from a client that does not read: more than 8 answers pending
        flood = RawClient(server.ws_url, rcvbuf=4096)
        try:
            flood.send_text('{"type":"request","what":"mesh","dtype":"float32"}')
            for i in range(20):
                flood.send_text(f'{{"type":"ping","id":{i}}}')
            t0 = time.monotonic()
            while CloseCode.POLICY_VIOLATION not in server.stats().closed_codes[codes0 + len(cases):]:
                assert time.monotonic() - t0 < 15, server.stats().closed_codes
                time.sleep(0.1)
        finally:
            flood.close()
        codes = server.stats().closed_codes[codes0:]
        assert [c for _, c in cases] == list(codes[:len(cases)])
        t0 = time.monotonic()   # the well-behaved client kept its stream throughout
        while len(obs.seqs) - n0 < 10 and obs.error is None:
            assert time.monotonic() - t0 < 30, "the observer stopped receiving frames"
            time.sleep(0.1)
        assert obs.error is None and obs.is_alive()
        assert obs.seqs == sorted(obs.seqs)
    finally:
        obs.finish()


def test_token_origin_and_connection_limit(guarded):
    url = guarded.ws_url
    for bad in (url, url + "?token=wrong-token", url + "?token="):
        with pytest.raises(InvalidStatus) as ei:
            connect(bad, open_timeout=10)
        assert ei.value.response.status_code == 401
    good = url + "?token=t0k3n-for-tests"
    with pytest.raises(InvalidStatus) as ei:
        connect(good, origin="http://evil.example", open_timeout=10)
    assert ei.value.response.status_code == 403
    origin = f"http://127.0.0.1:{guarded.port}"
    with connect(good, origin=origin) as a, \
            connect(url, additional_headers={"Authorization": "Bearer t0k3n-for-tests"}) as b:
        assert _recv_json(a)["type"] == "hello" and _recv_json(b)["type"] == "hello"
        with pytest.raises(InvalidStatus) as ei:
            connect(good, open_timeout=10)
        assert ei.value.response.status_code == 503
    with connect(good) as c:   # a slot is free again
        assert _recv_json(c)["type"] == "hello"


def test_static_files_and_paths(server):
    def get(path: str, host: str | None = None) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        out = (r.status, r.getheader("Content-Type") or "", r.read())
        conn.close()
        return out

    status, ctype, body = get("/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'type="importmap"' in body and b"node_modules/three/build/three.module.js" in body
    imports = json.loads(re.search(rb'<script type="importmap">(.*?)</script>', body, re.S)[1])
    assert all(v.startswith("./node_modules/") for v in imports["imports"].values())
    assert not re.search(rb"""(src|href)=["']?(https?:)?//""", body)   # nothing from a CDN
    status, ctype, _ = get("/src/main.js")
    assert status == 200 and ctype.startswith("text/javascript")
    for bad in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/node_modules/three/package.json",
                "/package.json/../../tracker/serve.py", "/ws"):
        assert get(bad)[0] == 404, bad
    assert get("/", host="attacker.example")[0] == 403
    if (server.cfg.web_root / "node_modules/three/build/three.module.js").is_file():
        status, ctype, body = get("/node_modules/three/build/three.module.js")
        assert status == 200 and ctype.startswith("text/javascript") and b"REVISION" in body


async def _many_clients(url: str, n: int, seconds: float) -> list[tuple[str, int, float]]:
    async def one() -> tuple[str, int, float]:
        async with aconnect(url, max_size=None) as ws:
            first = json.loads(await ws.recv())["type"]
            frames, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < seconds:
                msg = await ws.recv()
                frames += msg.startswith('{"type":"frame"')
            return first, frames, time.monotonic() - t0

    return await asyncio.gather(*(one() for _ in range(n)))


def test_twenty_clients_each_get_the_stream(server):
    steps0, t0 = server.stats().loop.steps, time.monotonic()
    res = asyncio.run(_many_clients(server.ws_url, 20, 3.0))
    tracker_fps = (server.stats().loop.steps - steps0) / (time.monotonic() - t0)
    assert all(first == "hello" for first, _, _ in res)
    rates = [frames / dt for _, frames, dt in res]
    assert min(rates) >= MIN_FPS, ([round(r, 1) for r in rates], f"tracker {tracker_fps:.1f}/s")


def test_file_without_loop_ends_and_server_stays_up(model, videos, tmp_path):
    import av

    clip = tmp_path / "clip.mp4"
    with av.open(str(videos["d10"])) as src, av.open(str(clip), "w") as dst:
        out = dst.add_stream("libx264", rate=30)
        out.width, out.height, out.pix_fmt = 512, 512, "yuv420p"
        for i, f in enumerate(src.decode(video=0)):
            if i == 20:
                break
            dst.mux(out.encode(av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), "rgb24")))
        dst.mux(out.encode(None))
    from tracker.trackconfig import load_track_config

    with LiveServer(ServeConfig(str(clip), port=0), model, load_track_config()) as srv:
        with connect(srv.ws_url, max_size=None) as ws:
            assert _recv_json(ws)["type"] == "hello"
            states = []
            while "ended" not in states:
                m = _recv_json(ws, 30)
                if m["type"] == "source":
                    states.append(m["state"])
        with connect(srv.ws_url) as late:   # still serving, and says the source ended
            assert _recv_json(late)["type"] == "hello"
            assert _recv_json(late) == {"type": "source", "state": "ended", "reason": "end of file"}


def test_refuses_to_start_unsafely(model, videos, capsys):
    with pytest.raises(InputError, match="--token"):
        validate_config(ServeConfig("x.mp4", host="0.0.0.0"))
    with pytest.raises(InputError, match="--token"):
        validate_config(ServeConfig("x.mp4", host="192.168.1.10", token="short"))
    validate_config(ServeConfig("x.mp4", host="0.0.0.0", token="long-enough-token"))
    with pytest.raises(InputError, match="no such file"):
        LiveServer(ServeConfig(str(videos["d10"]) + ".missing", port=0), model)
    from tracker.cli import main

    assert main(["serve", str(videos["d10"]), "--host", "0.0.0.0"]) == 1
    assert "--token" in capsys.readouterr().err


def test_a_tracker_crash_ends_the_stream_not_the_server(guarded):
    """The tracker runs in its own process: killing it is reported, and the server stays up."""
    import signal

    good = guarded.ws_url + "?token=t0k3n-for-tests"
    with connect(good, max_size=None) as ws:
        assert _recv_json(ws)["type"] == "hello"
        os.kill(guarded.live.process.pid, signal.SIGKILL)
        while (m := _recv_json(ws, 30))["type"] != "source" or m["state"] != "ended":
            pass
        assert "exited" in m["reason"]
    with connect(good) as late:
        assert _recv_json(late)["type"] == "hello"
        assert _recv_json(late)["state"] == "ended"
