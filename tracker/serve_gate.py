"""Who may talk to ``face3d serve``: the checks on each HTTP request, as pure functions.

One port serves the viewer's files (plain GET) and the WebSocket endpoint (``/ws``). Per request,
in this order (:func:`decide`):

1. **Host** (DNS-rebinding defence): on a loopback bind the ``Host`` header must name a loopback
   address (``127.0.0.1``, ``localhost``, ``[::1]``) → else 403. On another bind a token is
   required anyway, so any Host passes.
2. A request without ``Upgrade: websocket`` is a file request: files of ``web/`` and the few
   ``node_modules`` folders the viewer imports (:data:`NODE_MOUNTS`), nothing else → 404. Files
   are public (the viewer is open source); the stream is what the token guards.
3. WebSocket requests: path must be ``/ws`` (404); an ``Origin`` header, when present (browsers
   always send one), must be the server's own origin (``http://`` + Host) or one listed with
   ``--allow-origin`` → 403; with a token configured, ``?token=T`` in the URL or
   ``Authorization: Bearer T`` must match (constant-time compare) → 401; fewer than
   ``max_clients`` connections may be open → 503.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

WS_PATH = "/ws"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
NODE_MOUNTS = ("node_modules/three/build/", "node_modules/three/examples/jsm/",
               "node_modules/@pixiv/three-vrm/lib/")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json", ".md": "text/markdown; charset=utf-8", ".svg": "image/svg+xml",
    ".png": "image/png", ".ico": "image/x-icon", ".glb": "model/gltf-binary",
    ".vrm": "model/gltf-binary",
}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class GatePolicy:
    """The server's access rules. ``bind_host`` as given to ``--host``; ``token`` ``None`` means
    no token (allowed only on loopback, enforced by :func:`tracker.serve.validate_config`)."""

    bind_host: str
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    max_clients: int = 32


@dataclass(frozen=True)
class Decision:
    """``status`` 101 = go on with the WebSocket handshake; 200 = send ``file``; else an HTTP error
    with ``reason`` as its text."""

    status: int
    reason: str = ""
    file: Path | None = None


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header: ``[::1]:8765`` → ``::1``, ``localhost:80`` → ``localhost``."""
    h = host_header.strip()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def host_allowed(policy: GatePolicy, host_header: str | None) -> bool:
    if not is_loopback(policy.bind_host):
        return True
    return bool(host_header) and host_name(host_header).lower() in LOOPBACK_NAMES


def origin_allowed(policy: GatePolicy, origin: str | None, host_header: str | None) -> bool:
    """No Origin (not a browser) passes; otherwise same origin or an allowed one."""
    if origin is None:
        return True
    if origin in policy.allowed_origins:
        return True
    return bool(host_header) and origin.lower() == f"http://{host_header.strip().lower()}"


def token_ok(policy: GatePolicy, query: str, authorization: str | None) -> bool:
    if policy.token is None:
        return True
    given = parse_qs(query).get("token", [None])[-1]
    if given is None and authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), policy.token.encode())


def resolve_static(web_root: Path, url_path: str) -> Path | None:
    """The file for ``url_path`` under ``web_root``, or ``None`` (not found, hidden, outside the
    root, not an allowed type, or in ``node_modules`` outside :data:`NODE_MOUNTS`)."""
    rel = unquote(url_path).lstrip("/") or "index.html"
    if "\\" in rel or "\0" in rel:
        return None
    parts = PurePosixPath(rel).parts
    if any(p in ("..", ".") or p.startswith(".") for p in parts):
        return None
    if parts and parts[0] == "node_modules" and not any(rel.startswith(m) for m in NODE_MOUNTS):
        return None
    root = web_root.resolve()
    p = (root / rel).resolve()
    if root not in p.parents or p.suffix.lower() not in CONTENT_TYPES or not p.is_file():
        return None
    return p


def decide(policy: GatePolicy, target: str, headers: dict[str, str], web_root: Path,
           n_clients: int) -> Decision:
    """Apply the checks of the module doc to a request for ``target`` (path + query) with
    ``headers`` (lower-case names)."""
    host = headers.get("host")
    if not host_allowed(policy, host):
        return Decision(403, "Forbidden: Host must be a loopback name on a loopback server\n")
    url = urlsplit(target)
    if "websocket" not in headers.get("upgrade", "").lower():
        f = resolve_static(web_root, url.path)
        return Decision(200, "OK", f) if f else Decision(404, "Not Found\n")
    if url.path != WS_PATH:
        return Decision(404, f"Not Found: the WebSocket endpoint is {WS_PATH}\n")
    if not origin_allowed(policy, headers.get("origin"), host):
        return Decision(403, "Forbidden: Origin not allowed (see --allow-origin)\n")
    if not token_ok(policy, url.query, headers.get("authorization")):
        return Decision(401, "Unauthorized: missing or wrong token\n")
    if n_clients >= policy.max_clients:
        return Decision(503, f"Service Unavailable: {policy.max_clients} clients connected\n")
    return Decision(101)
