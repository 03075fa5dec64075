"""The three.js viewer in headless Chromium (Debian's chromium, driven by playwright), against a
real `face3d serve` tracking a real video: it draws the face and moves it, drives a glTF avatar
with ARKit-named morph targets, and reconnects by itself.

Screenshots are taken at two moments and both are checked: something other than the background
is drawn, and the two differ. They are not saved (renders of a tracked real person).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from tracker.serve import LiveServer, ServeConfig

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
BACKGROUND = np.array([0x1D, 0x21, 0x27])   # scene.background in web/src/main.js
VIEW = {"width": 480, "height": 360}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    web = ServeConfig("x").web_root
    assert (web / "node_modules/three/build/three.module.js").is_file(), \
        "web/node_modules is missing: run `make setup` (npm ci in web/)"
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            headless=True, args=CHROMIUM_ARGS, viewport=VIEW)
        yield ctx
        ctx.close()


def _server(model, video, port: int = 0, isolate: bool = True) -> LiveServer:
    from tracker.trackconfig import load_track_config

    cfg = ServeConfig(str(video), loop=True, port=port, isolate=isolate)
    return LiveServer(cfg, model, load_track_config()).start()


@pytest.fixture(scope="module")
def server(model, videos):
    srv = _server(model, videos["d10"])
    yield srv
    srv.stop()


def _open(browser, url: str):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("() => window.face3d !== undefined", timeout=30_000)
    return page, errors


def _stats(page) -> dict:
    return page.evaluate("() => window.face3d.stats()")


def _shot(page) -> np.ndarray:
    """The canvas as (H, W, 3) uint8 RGB, without the HUD."""
    import cv2

    page.add_style_tag(content="#hud { visibility: hidden !important; }")
    png = page.screenshot()
    page.add_style_tag(content="#hud { visibility: visible !important; }")
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert img.shape[:2] == (VIEW["height"], VIEW["width"])
    return img


def _drawn_fraction(img: np.ndarray) -> float:
    return float((np.abs(img.astype(int) - BACKGROUND).max(axis=2) > 24).mean())


def _changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 24).mean())


def _two_moments(page, frames_between: int = 15) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    s1 = _stats(page)
    a = _shot(page)
    page.wait_for_function(f"() => window.face3d.stats().framesDrawn >= {s1['framesDrawn'] + frames_between}",
                           timeout=60_000)
    s2 = _stats(page)
    b = _shot(page)
    return a, b, s1, s2


def test_viewer_draws_the_ict_face_and_moves_it(browser, server):
    page, errors = _open(browser, server.url)
    try:
        page.wait_for_function("() => { const s = window.face3d.stats(); "
                               "return s.meshLoaded && s.framesDrawn >= 10 && s.identities > 0; }",
                               timeout=90_000)
        a, b, s1, s2 = _two_moments(page)
        assert s2["lastSeq"] > s1["lastSeq"] and s2["state"] == "streaming"
        assert _drawn_fraction(a) > 0.05 and _drawn_fraction(b) > 0.05, (_drawn_fraction(a), _drawn_fraction(b))
        assert _changed_fraction(a, b) > 0.002, _changed_fraction(a, b)
        # the HUD shows connection state, fps and latency
        assert page.inner_text("#state") == "streaming"
        assert float(page.inner_text("#fps")) > 0
        assert float(page.inner_text("#latency")) >= 0
        assert errors == []
    finally:
        page.close()


def _head_gltf(names: list[str]) -> tuple[dict, bytes]:
    """A head-like sphere with a nose (radius 0.1 m, facing +z), as glTF JSON + buffer, with
    morph targets named ``names``: ``jawOpen`` drops the lower half, the others each push their
    own band of vertices outward."""
    lat, lon = np.meshgrid(np.linspace(-np.pi / 2, np.pi / 2, 24), np.linspace(0, 2 * np.pi, 33),
                           indexing="ij")
    p = np.stack([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)], -1).reshape(-1, 3)
    p *= 0.1
    nose = np.exp(-((p[:, 0] / 0.02) ** 2 + (p[:, 1] / 0.03) ** 2)) * (p[:, 2] > 0)
    p[:, 2] += 0.04 * nose
    rows, cols = lat.shape
    quads = [(r * cols + c, (r + 1) * cols + c, (r + 1) * cols + c + 1, r * cols + c + 1)
             for r in range(rows - 1) for c in range(cols - 1)]
    idx = np.array([(a, c, b) for a, b, c, d in quads] + [(a, d, c) for a, b, c, d in quads], np.uint32)
    targets = []
    for k, name in enumerate(names):
        d = np.zeros_like(p)
        if name.endswith("jawOpen"):
            d[:, 1] = np.where(p[:, 1] < 0, -0.06 * (-p[:, 1] / 0.1), 0)
        else:
            band = np.abs(np.arcsin(np.clip(p[:, 1] / 0.1, -1, 1)) - (k / len(names) - 0.5)) < 0.2
            d[band] = 0.02 * p[band] / 0.1
        targets.append(d.astype(np.float32))
    blobs = [p.astype(np.float32), idx] + targets
    views, accessors, binary = [], [], b""
    for i, arr in enumerate(blobs):
        raw = arr.tobytes()
        views.append({"buffer": 0, "byteOffset": len(binary), "byteLength": len(raw)})
        if i == 1:
            accessors.append({"bufferView": i, "componentType": 5125, "count": arr.size, "type": "SCALAR"})
        else:
            accessors.append({"bufferView": i, "componentType": 5126, "count": len(arr), "type": "VEC3",
                              "min": arr.min(0).tolist(), "max": arr.max(0).tolist()})
        binary += raw + b"\0" * (-len(raw) % 4)
    gltf = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}],
            "nodes": [{"mesh": 0, "name": "HeadMesh"}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1, "material": 0,
                                        "targets": [{"POSITION": 2 + k} for k in range(len(names))]}],
                        "weights": [0.0] * len(names), "extras": {"targetNames": names}}],
            "materials": [{"pbrMetallicRoughness": {"baseColorFactor": [0.35, 0.7, 0.9, 1.0],
                                                    "metallicFactor": 0.0, "roughnessFactor": 0.7}}],
            "buffers": [{"byteLength": len(binary)}], "bufferViews": views, "accessors": accessors}
    return gltf, binary


def _write_glb(path: Path, gltf: dict, binary: bytes) -> None:
    js = json.dumps(gltf).encode()
    js += b" " * (-len(js) % 4)
    body = struct.pack("<I4s", len(js), b"JSON") + js + struct.pack("<I4s", len(binary), b"BIN\0") + binary
    path.write_bytes(struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body)


VRM_BONES = ("hips", "spine", "head", "leftUpperArm", "leftLowerArm", "leftHand", "rightUpperArm",
             "rightLowerArm", "rightHand", "leftUpperLeg", "leftLowerLeg", "leftFoot",
             "rightUpperLeg", "rightLowerLeg", "rightFoot")


def _vrm(path: Path, names: list[str]) -> None:
    """A minimal VRM 1.0 avatar: the VRM-required humanoid bones as bare nodes, the head sphere
    (morph targets ``names``) under the head bone, a custom expression per morph target (ARKit
    "perfect sync" names) and the ``blink`` preset."""
    gltf, binary = _head_gltf(names)
    pos = {"hips": [0, 1.0, 0], "spine": [0, 0.2, 0], "head": [0, 0.4, 0]}
    nodes = [{"name": b, "translation": pos.get(b, [0.1 if "left" in b else -0.1, -0.1, 0])}
             for b in VRM_BONES]
    mesh_node = len(nodes)
    nodes.append({"name": "HeadMesh", "mesh": 0})
    nodes[0]["children"] = [i for i in range(1, len(VRM_BONES)) if VRM_BONES[i] != "head"]
    nodes[1]["children"] = [VRM_BONES.index("head")]
    nodes[1]["children"] += [i for i in range(len(VRM_BONES)) if "Arm" in VRM_BONES[i] or "Hand" in VRM_BONES[i]]
    nodes[0]["children"] = [i for i in nodes[0]["children"] if i not in nodes[1]["children"]]
    nodes[VRM_BONES.index("head")]["children"] = [mesh_node]
    binds = {n: {"morphTargetBinds": [{"node": mesh_node, "index": k, "weight": 1.0}]}
             for k, n in enumerate(names)}
    gltf.update(nodes=nodes, scenes=[{"nodes": [0]}], extensionsUsed=["VRMC_vrm"], extensions={
        "VRMC_vrm": {"specVersion": "1.0",
                     "meta": {"name": "face3d test head", "version": "1", "authors": ["face3d tests"],
                              "licenseUrl": "https://vrm.dev/licenses/1.0/"},
                     "humanoid": {"humanBones": {b: {"node": i} for i, b in enumerate(VRM_BONES)}},
                     "expressions": {"preset": {"blink": binds[names[0]]}, "custom": binds}}})
    _write_glb(path, gltf, binary)


def test_viewer_drives_a_gltf_avatar_with_arkit_morph_targets(browser, server, tmp_path):
    names = ["jawOpen", "eyeBlinkLeft", "eyeBlink_R", "blendShape1.mouthSmileLeft",
             "browInnerUp", "notAnArkitName"]
    avatar = tmp_path / "head.glb"
    _write_glb(avatar, *_head_gltf(names))
    page, errors = _open(browser, server.url + "?format=json")
    try:
        page.wait_for_function("() => window.face3d.stats().framesDrawn >= 5", timeout=90_000)
        page.set_input_files("#avatar-file", str(avatar))
        page.wait_for_function("() => { const a = window.face3d.stats().avatar; "
                               "return a && a.matched.length > 0; }", timeout=30_000)
        a, b, s1, s2 = _two_moments(page)
        info = s2["avatar"]
        assert info["morphTargets"] == len(names) and info["headBone"] is None
        # ARKit names, the model's own _L/_R names and prefixed names all bind; others do not
        assert set(info["matched"]) == {"jawopen", "eyeblinkleft", "eyeblinkr", "mouthsmileleft",
                                        "browinnerup"}
        assert _drawn_fraction(a) > 0.05 and _drawn_fraction(b) > 0.05
        assert _changed_fraction(a, b) > 0.002, _changed_fraction(a, b)
        assert "head.glb" in page.inner_text("#avatar-info")
        assert errors == []
    finally:
        page.close()


def test_viewer_reconnects_by_itself(browser, model, videos):
    first = _server(model, videos["d10"], isolate=False)   # a thread: quicker to restart
    port = first.port
    page, errors = _open(browser, first.url)
    try:
        page.wait_for_function("() => window.face3d.stats().framesReceived >= 5", timeout=90_000)
        first.stop()
        page.wait_for_function("() => window.face3d.state === 'reconnecting'", timeout=30_000)
        assert "reconnecting" in page.inner_text("#state")
        n = _stats(page)["framesReceived"]
        second = _server(model, videos["d10"], port=port, isolate=False)
        try:
            page.wait_for_function(f"() => window.face3d.state === 'streaming' && "
                                   f"window.face3d.stats().framesReceived > {n + 5}", timeout=60_000)
            assert 1001 in _stats(page)["closeCodes"]   # the first server said it was going away
        finally:
            second.stop()
        assert errors == []
    finally:
        page.close()


def test_viewer_drives_a_vrm_avatar(browser, server, tmp_path):
    names = ["jawOpen", "eyeBlinkLeft", "mouthSmileLeft", "browInnerUp"]
    avatar = tmp_path / "head.vrm"
    _vrm(avatar, names)
    page, errors = _open(browser, server.url)
    try:
        page.wait_for_function("() => window.face3d.stats().framesDrawn >= 5", timeout=90_000)
        page.set_input_files("#avatar-file", str(avatar))
        page.wait_for_function("() => { const a = window.face3d.stats().avatar; "
                               "return a && a.matched.length > 0; }", timeout=30_000)
        a, b, s1, s2 = _two_moments(page)
        info = s2["avatar"]
        assert info["vrm"] and info["headBone"] is not None
        assert {"jawopen", "eyeblinkleft", "mouthsmileleft", "browinnerup"} <= set(info["matched"])
        assert _drawn_fraction(a) > 0.05 and _drawn_fraction(b) > 0.05
        assert _changed_fraction(a, b) > 0.002, _changed_fraction(a, b)
        assert errors == []
    finally:
        page.close()
