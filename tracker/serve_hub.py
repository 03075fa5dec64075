"""Fan-out of ``face3d serve``: one :class:`ClientSlot` per WebSocket, all on the event loop.

Latest-frame-wins: :meth:`Hub.publish` hands each client the new frame. A client that is keeping
up (its sender idle, nothing queued, its socket's write buffer empty) gets it written at once
(``websockets``' :func:`~websockets.asyncio.server.broadcast`, no task switch); otherwise the
frame only *replaces* the client's pending one and its sender task sends it when the socket
drains. So a client that stopped reading holds one pending frame, drops the rest
(``ClientSlot.dropped``) and never slows the tracker or the other clients. State that must not
be lost is kept per client apart from frames: the newest ``identity`` per face id, the newest
``source`` state, and a short queue of answers to its requests (a client that fills that queue —
a request flood — is closed with 1008). Each frame is encoded once per distinct set of client
options (:class:`Published` caches it; JSON as UTF-8 bytes, sent as text).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from .protocol import (CloseCode, FramePacket, IdentityRequest, MeshRequest, Ping, ProtocolError,
                       Subscribe, encode_frame_binary, encode_json, frame_message,
                       parse_client_message, pong_message)

log = logging.getLogger(__name__)

MAX_PENDING_ANSWERS = 8
MAX_IDENTITIES = 16
LATENCY_SAMPLES = 20000


@dataclass
class Published:
    """A frame as published: the packet, ``t_ready`` (``time.perf_counter`` when tracking
    finished) and its encodings by client options."""

    packet: FramePacket
    t_ready: float
    n_exp: int
    cache: dict[Subscribe, bytes] = field(default_factory=dict)

    def encoded(self, opts: Subscribe) -> bytes:
        """The frame for ``opts``: F3DF bytes, or the JSON text as UTF-8 (send with text=True)."""
        data = self.cache.get(opts)
        if data is None:
            data = (encode_frame_binary(self.packet, opts, self.n_exp) if opts.format == "binary"
                    else encode_json(frame_message(self.packet, opts)).encode())
            self.cache[opts] = data
        return data


class ClientSlot:
    """One connected client: its options, its pending frame/identities/answers and counters."""

    def __init__(self, hub: Hub, ws: ServerConnection):
        self.hub, self.ws = hub, ws
        self.opts = Subscribe()
        self.frame: Published | None = None
        self.identities: dict[int, str] = {}
        self.source: str | None = None
        self.answers: deque[str | bytes] = deque()
        self.wake = asyncio.Event()
        self.idle = False   # the sender task waits for work
        self.sent = 0
        self.dropped = 0

    def offer(self, pub: Published) -> None:
        ws = self.ws
        if (self.idle and self.frame is None and not self.answers and not self.identities
                and self.source is None and ws.transport is not None
                and ws.transport.get_write_buffer_size() == 0):
            broadcast((ws,), pub.encoded(self.opts), text=self.opts.format == "json")
            self.hub.latency.append(time.perf_counter() - pub.t_ready)
            self.sent += 1
            return
        if self.frame is not None:
            self.dropped += 1
        self.frame = pub
        self.wake.set()

    def answer(self, data: str | bytes) -> None:
        if len(self.answers) >= MAX_PENDING_ANSWERS:
            raise ProtocolError(CloseCode.POLICY_VIOLATION, "too many requests pending")
        self.answers.append(data)
        self.wake.set()

    async def send_loop(self) -> None:
        try:
            await self._send_loop()
        except (ConnectionClosed, asyncio.CancelledError):
            raise
        except Exception:  # a bug must not leave a connected client without frames
            log.exception("sending to %s failed", self.ws.remote_address)
            await self.ws.close(CloseCode.INTERNAL_ERROR, "server error")

    async def _send_loop(self) -> None:
        ws, lat = self.ws, self.hub.latency
        while True:
            self.idle = True
            await self.wake.wait()
            self.idle = False
            self.wake.clear()
            while self.answers:
                await ws.send(self.answers.popleft())
            if self.source is not None:
                msg, self.source = self.source, None
                await ws.send(msg)
            if self.identities:
                ids, self.identities = self.identities, {}
                for msg in ids.values():
                    await ws.send(msg)
            pub, self.frame = self.frame, None
            if pub is not None:
                await ws.send(pub.encoded(self.opts), text=self.opts.format == "json")
                lat.append(time.perf_counter() - pub.t_ready)
                self.sent += 1


class Hub:
    """All clients of one server. ``hello`` builds the hello message for a client's options;
    ``mesh`` builds (in a worker thread, cached) the mesh blob for a request."""

    def __init__(self, hello: Callable[[Subscribe], str], mesh: Callable[[MeshRequest], bytes],
                 n_exp: int, max_clients: int):
        self.hello, self._mesh_fn, self.n_exp, self.max_clients = hello, mesh, n_exp, max_clients
        self.clients: set[ClientSlot] = set()
        self.identities: OrderedDict[int, str] = OrderedDict()
        self.source: str | None = None
        self.latency: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.published = 0
        self.closed_codes: deque[int] = deque(maxlen=256)
        self._mesh_cache: dict[MeshRequest, bytes] = {}
        self._mesh_lock = asyncio.Lock()

    # ------------------------------------------------------------------ from the tracker
    def publish(self, packet: FramePacket, t_ready: float, identities: list[tuple[int, str]]) -> None:
        for fid, msg in identities:
            self.identities[fid] = msg
            self.identities.move_to_end(fid)
            while len(self.identities) > MAX_IDENTITIES:
                self.identities.popitem(last=False)
            for c in self.clients:
                c.identities[fid] = msg
        pub = Published(packet, t_ready, self.n_exp)
        self.published += 1
        for c in list(self.clients):
            try:
                c.offer(pub)
            except Exception:  # a bug for one client must not starve the others
                log.exception("publishing to %s failed", c.ws.remote_address)
                self.clients.discard(c)
                asyncio.ensure_future(c.ws.close(CloseCode.INTERNAL_ERROR, "server error"))

    def set_source(self, msg: str) -> None:
        self.source = msg
        for c in self.clients:
            c.source = msg
            c.wake.set()

    # ------------------------------------------------------------------ per connection
    async def handler(self, ws: ServerConnection) -> None:
        if len(self.clients) >= self.max_clients:  # raced past the HTTP check
            await ws.close(CloseCode.TRY_AGAIN_LATER, "too many clients")
            return
        client = ClientSlot(self, ws)
        await ws.send(self.hello(client.opts))
        client.identities = dict(self.identities)
        client.source = self.source
        client.wake.set()
        self.clients.add(client)
        sender = asyncio.create_task(client.send_loop())
        refused = False
        try:
            async for data in ws:
                try:
                    await self._handle(client, parse_client_message(data))
                except ProtocolError as e:
                    log.info("closing client %s: %s (%d)", ws.remote_address, e.reason, e.code)
                    self.clients.discard(client)
                    self.closed_codes.append(e.code)
                    refused = True
                    await ws.close(e.code, e.reason)  # a client that does not read: ≤ 5 s
                    break
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, ConnectionClosed):
                pass
            sent = ws.protocol.close_sent  # the code this server closed with, if it did
            code = sent.code if sent is not None else ws.close_code
            if code is not None and not refused:
                self.closed_codes.append(code)

    async def _handle(self, client: ClientSlot, msg: Any) -> None:
        if isinstance(msg, Subscribe):
            client.opts = msg
        elif isinstance(msg, Ping):
            client.answer(encode_json(pong_message(msg, time.time())))
        elif isinstance(msg, IdentityRequest):
            for fid, text in self.identities.items():
                client.identities[fid] = text
            client.wake.set()
        elif isinstance(msg, MeshRequest):
            client.answer(await self.mesh(msg))

    async def mesh(self, req: MeshRequest) -> bytes:
        async with self._mesh_lock:
            blob = self._mesh_cache.get(req)
            if blob is None:
                blob = await asyncio.to_thread(self._mesh_fn, req)
                self._mesh_cache[req] = blob
            return blob
