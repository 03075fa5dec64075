"""``face3d serve``: live tracking streamed over WebSocket, and the three.js viewer, on one port.

::

    face3d serve VIDEO [--loop] | --webcam [DEVICE]  [--host 127.0.0.1] [--port 8765] [--token T]

``http://HOST:PORT/`` is the viewer (``web/``), ``ws://HOST:PORT/ws`` the stream (protocol:
:mod:`tracker.protocol`, ``web/PROTOCOL.md``). The live loop (:mod:`tracker.serve_live`: decode
+ track) runs in a child process (:mod:`tracker.serve_proc`); this process runs one asyncio
event loop with the ``websockets`` server and the fan-out (:mod:`tracker.serve_hub`); request
checks are :mod:`tracker.serve_gate`.

Security: loopback by default. Any other ``--host`` needs ``--token`` (refused otherwise);
browsers must come from the server's own origin (or ``--allow-origin``); client messages are
capped at 4 KiB; at most ``--max-clients`` connections. Files are paced in real time; a file
without ``--loop`` plays once and the server stays up (state ``ended``) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from . import __version__
from .errors import InputError
from .protocol import (MAX_CLIENT_MESSAGE_BYTES, MeshRequest, Subscribe, encode_json,
                       hello_message)
from .serve_gate import CONTENT_TYPES, WS_PATH, Decision, GatePolicy, decide, is_loopback
from .serve_hub import Hub

if TYPE_CHECKING:  # the tracker stack is imported when a server is built, not by `face3d --help`
    from .facemodel import FaceModel
    from .pipeline import TrackConfig
    from .serve_live import LiveLoop, LoopStats
    from .serve_proc import LiveProcess

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765


def default_web_root() -> Path:
    return Path(__file__).resolve().parents[1] / "web"


@dataclass(frozen=True)
class ServeConfig:
    """Server settings. ``source``: a file path/URL or a webcam spec (``webcam``, ``webcam:0``).
    ``realtime=False`` tracks a file as fast as possible (benchmarks only). ``port=0`` picks a
    free port (see :attr:`LiveServer.port`). ``isolate``: track in a child process
    (:mod:`tracker.serve_proc`, the default) so serving clients never takes the tracker's
    interpreter lock; ``False`` tracks in a thread of this process (also used for a model not
    loaded from a file)."""

    source: str
    loop: bool = False
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    max_clients: int = 32
    web_root: Path = field(default_factory=default_web_root)
    realtime: bool = True
    retry_s: float = 2.0
    isolate: bool = True


def validate_config(cfg: ServeConfig) -> None:
    """Raise :class:`tracker.errors.InputError` for settings the server refuses to start with."""
    if not is_loopback(cfg.host) and not cfg.token:
        raise InputError(f"--host {cfg.host} is reachable from other machines: pass --token T "
                         "(clients then connect with ws://HOST:PORT/ws?token=T)")
    if cfg.token is not None and (len(cfg.token) < 8 or not cfg.token.isprintable()
                                  or any(c in cfg.token for c in " &#?%")):
        raise InputError("--token must be at least 8 printable characters without spaces, &, #, ?, %")
    if not 0 <= cfg.port <= 65535:
        raise InputError(f"--port {cfg.port} is not a TCP port")
    if cfg.max_clients < 1:
        raise InputError("--max-clients must be at least 1")


@dataclass(frozen=True)
class ClientStats:
    """One connected client: its ``(host, port)``, frames sent to it and frames it missed
    (replaced before they could be sent: latest-frame-wins)."""

    address: tuple[str, int]
    sent: int
    dropped: int


@dataclass(frozen=True)
class ServeStats:
    """A snapshot: the live loop's :class:`~tracker.serve_live.LoopStats`, frames published,
    connected clients, frame-to-send latencies (seconds from tracking finished to the frame
    written to that client's socket, per client and frame, the last 20,000), and the close codes
    this server sent to finished connections."""

    loop: LoopStats
    published: int
    clients: tuple[ClientStats, ...]
    latency_s: tuple[float, ...]
    closed_codes: tuple[int, ...]


class LiveServer:
    """The server, in background threads; a context manager. Construction validates the config
    and opens the source (a bad input raises here, before any port is bound); ``start()`` binds
    the port (``port=0``: a free one, see :attr:`port`) and starts tracking; ``wait()`` blocks
    until the server stops; ``stop()`` closes connections with 1001 and joins the threads."""

    def __init__(self, cfg: ServeConfig, model: FaceModel, track_cfg: TrackConfig | None = None):
        from .pipeline import TrackConfig
        from .serve_live import LiveLoop
        from .serve_proc import LiveProcess

        validate_config(cfg)
        self.cfg, self.model = cfg, model
        self.policy = GatePolicy(cfg.host, cfg.token, cfg.allowed_origins, cfg.max_clients)
        runner = LiveProcess if cfg.isolate and model.path else LiveLoop
        self.live: LiveLoop | LiveProcess = runner(
            cfg.source, model, track_cfg or TrackConfig(), loop=cfg.loop, realtime=cfg.realtime,
            retry_s=cfg.retry_s, on_frame=self._on_frame, on_source=self._on_source)
        self.hub = Hub(self._hello, self._mesh, model.n_expression, cfg.max_clients)
        self.port = cfg.port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._files: dict[Path, tuple[float, bytes]] = {}
        if not (cfg.web_root / "node_modules" / "three" / "build" / "three.module.js").is_file():
            log.warning("%s has no node_modules/three: the viewer page will not load "
                        "(run `make setup`, or `npm ci` in web/)", cfg.web_root)

    # ------------------------------------------------------------------ lifetime
    def start(self) -> LiveServer:
        self._thread = threading.Thread(target=self._run_loop, name="face3d-serve", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self.live.stop()
            raise self._error
        self.live.start()
        return self

    def stop(self) -> None:
        self.live.stop()
        if self._loop is not None and self._stopping is not None and not self._done.is_set():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10.0)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (True) or ``timeout`` passes (False)."""
        return self._done.wait(timeout)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
        return f"http://{host}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1).rstrip("/") + WS_PATH

    def stats(self) -> ServeStats:
        clients = tuple(ClientStats(tuple(c.ws.remote_address[:2]), c.sent, c.dropped)
                        for c in list(self.hub.clients))
        return ServeStats(self.live.stats(), self.hub.published, clients, tuple(self.hub.latency),
                          tuple(self.hub.closed_codes))

    def take_latencies(self) -> list[float]:
        """Frame-to-send latencies (seconds) recorded since the last call, and forget them."""
        lat = self.hub.latency
        out = [lat.popleft() for _ in range(len(lat))]
        return out

    # ------------------------------------------------------------------ event loop thread
    def _run_loop(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - handed to start()
            self._error = self._error or e
        finally:
            self._ready.set()
            self._done.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            server = await serve(
                self.hub.handler, self.cfg.host, self.cfg.port, process_request=self._http,
                compression=None, max_size=MAX_CLIENT_MESSAGE_BYTES, max_queue=8,
                ping_interval=20, ping_timeout=20, close_timeout=5)
        except OSError as e:
            self._error = InputError(f"cannot listen on {self.cfg.host}:{self.cfg.port}: {e.strerror or e}")
            return
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopping.wait()

    def _on_frame(self, packet: Any, t_ready: float, identities: list[tuple[int, str]]) -> None:
        self._call(self.hub.publish, packet, t_ready, identities)

    def _on_source(self, msg: str) -> None:
        self._call(self.hub.set_source, msg)

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # loop closed while stopping
                pass

    # ------------------------------------------------------------------ protocol pieces
    def _hello(self, opts: Subscribe) -> str:
        m, info = self.model, self.live.info
        return encode_json(hello_message(
            exp_names=m.exp_names, fps=info.fps, server=f"face3d {__version__}",
            model={"name": m.name, "version": m.version, "n_vertices": m.n_vertices,
                   "n_identity": m.n_identity, "n_expression": m.n_expression},
            source={"kind": info.kind, "width": info.width, "height": info.height,
                    "loop": self.cfg.loop, "realtime": self.cfg.realtime},
            camera=self.live.camera.as_dict(), options=opts))

    def _mesh(self, req: MeshRequest) -> bytes:
        from .wiremesh import mesh_blob

        return mesh_blob(self.model, dtype=req.dtype, identity_basis=req.identity_basis)

    def _http(self, conn: ServerConnection, request: Request) -> Response | None:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        d = decide(self.policy, request.path, headers, self.cfg.web_root, len(self.hub.clients))
        if d.status == 101:
            return None
        if d.status == 200 and d.file is not None:
            return self._file_response(d)
        log.info("refused %s %s: %d", conn.remote_address, request.path.split("?")[0], d.status)
        return conn.respond(d.status, d.reason)

    def _file_response(self, d: Decision) -> Response:
        assert d.file is not None
        mtime = d.file.stat().st_mtime
        cached = self._files.get(d.file)
        if cached is None or cached[0] != mtime:
            cached = (mtime, d.file.read_bytes())
            self._files[d.file] = cached
        body = cached[1]
        h = Headers([("Content-Type", CONTENT_TYPES[d.file.suffix.lower()]),
                     ("Content-Length", str(len(body))), ("Cache-Control", "no-cache"),
                     ("X-Content-Type-Options", "nosniff"), ("Connection", "close")])
        return Response(200, "OK", h, body)


# ---------------------------------------------------------------------------------- CLI

def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="track live and stream to browsers (WebSocket + viewer page)",
                       description="Track a video (paced in real time) or a webcam live and "
                                   "stream the results over WebSocket; the three.js viewer is "
                                   "served on the same port (http://HOST:PORT/).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("video", nargs="?", help="video file (or URL) to play in real time")
    src.add_argument("--webcam", nargs="?", const="webcam", metavar="DEVICE",
                     help="track a webcam: index (0), /dev/videoN, or a device name")
    p.add_argument("--loop", action="store_true", help="restart the video at its end")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--token", help="shared secret clients must present (?token=T); required "
                   "for any non-loopback --host")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="extra browser origin allowed to connect, e.g. http://localhost:5173")
    p.add_argument("--max-clients", type=int, default=32, help="connection limit (default 32)")
    p.add_argument("--web-root", help="viewer folder (default: the repository's web/)")
    p.add_argument("--model", help="face model npz (default: $FACE3D_MODEL, then the user cache)")
    p.add_argument("--config", help="tracking config TOML (default: configs/track.toml)")
    p.add_argument("--max-faces", type=int, default=None, help="faces to track (default 1)")
    p.add_argument("--fov", type=float, default=None, help="field of view in degrees (default 50)")
    p.add_argument("--focal", type=float, default=None, help="focal length in pixels; overrides --fov")
    p.set_defaults(func=run)
    return p


def _source_spec(args: argparse.Namespace) -> str:
    if args.video:
        return str(args.video)
    dev = args.webcam or "webcam"
    return dev if dev.startswith("webcam") else f"webcam:{dev}"


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .facemodel import load_face_model
    from .trackconfig import load_track_config

    cfg = ServeConfig(_source_spec(args), loop=args.loop, host=args.host, port=args.port,
                      token=args.token, allowed_origins=tuple(args.allow_origin),
                      max_clients=args.max_clients,
                      web_root=Path(args.web_root) if args.web_root else default_web_root())
    validate_config(cfg)
    tcfg = load_track_config(args.config)
    over = {k: v for k, v in (("max_faces", args.max_faces), ("fov_deg", args.fov),
                              ("focal_px", args.focal)) if v is not None}
    tcfg = replace(tcfg, smooth="live", **over)
    if tcfg.max_faces < 1:
        raise InputError("--max-faces must be at least 1")
    server = LiveServer(cfg, load_face_model(args.model), tcfg)
    server.start()
    tok = f"?token={cfg.token}" if cfg.token else ""
    print(f"face3d serve: {cfg.source} -> viewer {server.url}{tok}  stream {server.ws_url}{tok}",
          flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop cleanly on kill/systemd too
    try:
        while not server.wait(1.0):
            pass
    except KeyboardInterrupt:
        print("face3d serve: stopping", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
