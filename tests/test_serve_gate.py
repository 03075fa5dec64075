"""Request checks of `face3d serve` (pure): Host, Origin, token, connection limit, static files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracker.serve_gate import (GatePolicy, decide, host_name, is_loopback, origin_allowed,
                                resolve_static, token_ok)

WS = {"upgrade": "websocket", "connection": "Upgrade"}


@pytest.fixture()
def web(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "index.html").write_text("<html>")
    (tmp_path / "src" / "main.js").write_text("//")
    (tmp_path / ".secret.js").write_text("//")
    (tmp_path / "notes.txt").write_text("x")
    for d in ("node_modules/three/build", "node_modules/three/src", "node_modules/evil"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "node_modules/three/build/three.module.js").write_text("//")
    (tmp_path / "node_modules/three/src/Three.js").write_text("//")
    (tmp_path / "node_modules/evil/x.js").write_text("//")
    (tmp_path.parent / "outside.js").write_text("//")
    return tmp_path


def test_loopback_names():
    for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]", "LOCALHOST"):
        assert is_loopback(h), h
    for h in ("0.0.0.0", "", "192.168.1.5", "::", "example.com"):
        assert not is_loopback(h), h
    assert host_name("[::1]:8765") == "::1" and host_name("localhost:80") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1"


def test_static_files_only_from_web_and_the_mounts(web):
    assert resolve_static(web, "/") == (web / "index.html").resolve()
    assert resolve_static(web, "/src/main.js") == (web / "src/main.js").resolve()
    assert resolve_static(web, "/node_modules/three/build/three.module.js") is not None
    for bad in ("/node_modules/three/src/Three.js", "/node_modules/evil/x.js", "/.secret.js",
                "/notes.txt", "/../outside.js", "/src/../../outside.js", "/%2e%2e/outside.js",
                "/src\\..\\..\\outside.js", "/missing.js", "/src"):
        assert resolve_static(web, bad) is None, bad


def test_decide_order_and_codes(web):
    pol = GatePolicy("127.0.0.1", token="s3cret-token", max_clients=2)
    host = {"host": "127.0.0.1:8765"}
    assert decide(pol, "/", host, web, 0).status == 200
    assert decide(pol, "/nope.js", host, web, 0).status == 404
    assert decide(pol, "/", {"host": "evil.example:8765"}, web, 0).status == 403  # DNS rebinding
    assert decide(pol, "/", {}, web, 0).status == 403
    ok = {**host, **WS}
    assert decide(pol, "/ws?token=s3cret-token", ok, web, 0).status == 101
    assert decide(pol, "/other?token=s3cret-token", ok, web, 0).status == 404
    assert decide(pol, "/ws", ok, web, 0).status == 401
    assert decide(pol, "/ws?token=wrong", ok, web, 0).status == 401
    assert decide(pol, "/ws", {**ok, "authorization": "Bearer s3cret-token"}, web, 0).status == 101
    same = {**ok, "origin": "http://127.0.0.1:8765"}
    assert decide(pol, "/ws?token=s3cret-token", same, web, 0).status == 101
    cross = {**ok, "origin": "http://evil.example"}
    assert decide(pol, "/ws?token=s3cret-token", cross, web, 0).status == 403
    assert decide(pol, "/ws?token=s3cret-token", ok, web, 2).status == 503
    assert decide(pol, "/ws?token=s3cret-token", ok, web, 1).status == 101


def test_origin_and_token_rules():
    pol = GatePolicy("0.0.0.0", token="abcdefgh", allowed_origins=("http://localhost:5173",))
    assert origin_allowed(pol, None, "x:1")
    assert origin_allowed(pol, "http://10.0.0.2:8765", "10.0.0.2:8765")
    assert origin_allowed(pol, "http://localhost:5173", "10.0.0.2:8765")
    assert not origin_allowed(pol, "http://10.0.0.2:8766", "10.0.0.2:8765")
    assert not origin_allowed(pol, "null", "10.0.0.2:8765")
    assert token_ok(pol, "token=abcdefgh", None) and token_ok(pol, "a=1&token=abcdefgh", None)
    assert not token_ok(pol, "token=abcdefg", None) and not token_ok(pol, "", None)
    assert not token_ok(pol, "", "Basic abcdefgh")
    assert token_ok(GatePolicy("127.0.0.1"), "", None)
    # a non-loopback bind accepts any Host (the token guards it)
    web = Path("/nonexistent")
    assert decide(pol, "/ws?token=abcdefgh", {"host": "my-pc:8765", **WS}, web, 0).status == 101
