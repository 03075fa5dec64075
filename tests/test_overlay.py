"""Overlay video/image: same frames, size, timestamps, SAR and audio as the input; the face is
drawn where it is and nothing else changes (beyond H.264 re-encoding)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import mkvideo  # tests/mkvideo.py (tests/ is on sys.path)
import numpy as np
import pytest

from tracker.errors import InputError


def cut(src: Path, dst: Path, seconds: float) -> Path:
    """Copy the first ``seconds`` of ``src``'s first video and audio streams (packets, no
    re-encoding) into ``dst``; container start offsets are kept."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        chosen = [inp.streams.video[0], *inp.streams.audio[:1]]
        outs = {s.index: out.add_stream_from_template(s) for s in chosen}
        v0 = inp.streams.video[0]
        t0 = float((v0.start_time or 0) * v0.time_base)
        for p in inp.demux(chosen):
            if p.dts is None or float(p.dts * p.time_base) > t0 + seconds:
                continue
            p.stream = outs[p.stream.index]
            out.mux(p)
    return dst


def decode(path: Path) -> tuple[list[float], np.ndarray, dict]:
    """Times, frames ``(N, H, W, 3)`` and stream facts of a video, through the project's source."""
    from tracker.sources import open_source

    with open_source(str(path)) as src:
        frames = list(src)
        start = src.start_time_s
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        facts = {"sar": v.sample_aspect_ratio or Fraction(1), "pix_fmt": v.codec_context.pix_fmt,
                 "codec": v.codec_context.name, "start": start,
                 "audio": [(a.codec_context.name, float((a.start_time or 0) * a.time_base),
                            a.codec_context.sample_rate) for a in c.streams.audio]}
        facts["audio_packets"] = sum(1 for p in c.demux(c.streams.audio[0]) if p.size) \
            if c.streams.audio else 0
    return [f.time_s for f in frames], np.stack([f.image for f in frames]), facts


@pytest.fixture(scope="module")
def talking(videos, tmp_path_factory) -> Path:
    """2 s of a frontal talking-head clip with its AAC audio."""
    return cut(videos["d10"], tmp_path_factory.mktemp("ov") / "d10_2s.mp4", 2.0)


@pytest.fixture(scope="module")
def tracked(talking, model):
    from tracker.track import track_video
    from tracker.trackconfig import load_track_config

    cfg = load_track_config()
    summary, results = track_video(str(talking), model, cfg, None, progress=False)
    assert summary.tracked_frames == summary.frames
    return cfg, results


def face_boxes(model, cfg, talking, results, margin: int = 0) -> list[tuple[int, int, int, int]]:
    """Per frame, the pixel box of the overlay's mesh (plus ``margin``)."""
    from tracker.drawer import FaceDrawer
    from tracker.overlay import faces_of
    from tracker.pipeline import make_camera
    from tracker.scene import face_box
    from tracker.sources import probe

    cam = make_camera(probe(str(talking)), cfg)
    d = FaceDrawer(model, cam)
    boxes = []
    for r in results:
        (p,) = faces_of(r)
        x0, y0, x1, y1 = face_box(cam, d._camera_vertices(p))
        boxes.append((max(x0 - margin, 0), max(y0 - margin, 0), x1 + margin, y1 + margin))
    return boxes


@pytest.fixture(scope="module")
def shaded(tracked, talking, model, tmp_path_factory):
    from tracker.overlay import write_overlay

    cfg, results = tracked
    out = tmp_path_factory.mktemp("ov") / "shaded.mp4"
    summary = write_overlay(str(talking), out, results, model, cfg, mode="shaded")
    return out, summary


def test_overlay_keeps_frames_size_times_and_audio(talking, shaded):
    out, summary = shaded
    t_in, f_in, a = decode(talking)
    t_out, f_out, b = decode(out)
    assert summary.frames == len(t_in) == len(t_out)
    assert f_out.shape == f_in.shape
    np.testing.assert_allclose(t_out, t_in, atol=1e-6)
    assert b["codec"] == "h264" and b["pix_fmt"] == "yuv420p" and b["sar"] == a["sar"]
    assert b["audio"] == a["audio"] and b["audio_packets"] == a["audio_packets"]
    assert not list(out.parent.glob(".*.tmp-*"))  # the temporary file was renamed away


def test_overlay_changes_the_face_and_nothing_else(talking, shaded, tracked, model, tmp_path):
    """Away from the face the overlay differs from the input no more than a re-encode with
    nothing drawn does (H.264 of an already-compressed clip: measured mean 2.0 levels at most)."""
    from tracker.overlay import write_overlay

    out, _ = shaded
    cfg, results = tracked
    null = write_overlay(str(talking), tmp_path / "null.mp4", [], model, cfg).path
    _, f_in, _ = decode(talking)
    _, f_out, _ = decode(out)
    _, f_null, _ = decode(null)
    diff = np.abs(f_out.astype(np.int16) - f_in.astype(np.int16)).max(-1)
    diff0 = np.abs(f_null.astype(np.int16) - f_in.astype(np.int16)).max(-1)
    inner = face_boxes(model, cfg, talking, results)
    outer = face_boxes(model, cfg, talking, results, margin=16)
    for k, ((x0, y0, x1, y1), (X0, Y0, X1, Y1)) in enumerate(zip(inner, outer)):
        far = np.ones(diff.shape[1:], bool)
        far[Y0:Y1, X0:X1] = False
        assert diff[k][far].mean() <= 1.2 * diff0[k][far].mean() + 0.3, k
        assert diff[k][far].mean() < 3.0 and np.percentile(diff[k][far], 99) < 14, k
        # the face is drawn over: the centre of the face box changes a lot
        cy, cx, hh, hw = (y0 + y1) // 2, (x0 + x1) // 2, (y1 - y0) // 6, (x1 - x0) // 6
        assert diff[k][cy - hh:cy + hh, cx - hw:cx + hw].mean() > 15, k


@pytest.mark.parametrize("mode", ["wire", "points"])
def test_other_modes_draw_on_the_face(mode, talking, tracked, model, tmp_path):
    from tracker.overlay import write_overlay

    cfg, results = tracked
    out = write_overlay(str(talking), tmp_path / f"{mode}.mp4", results, model, cfg, mode=mode).path
    _, f_in, _ = decode(talking)
    _, f_out, _ = decode(out)
    diff = np.abs(f_out[:5].astype(np.int16) - f_in[:5].astype(np.int16)).max(-1)
    inner = face_boxes(model, cfg, talking, results[:5])
    outer = face_boxes(model, cfg, talking, results[:5], margin=16)
    for k in range(5):
        x0, y0, x1, y1 = inner[k]
        X0, Y0, X1, Y1 = outer[k]
        far = np.ones(diff.shape[1:], bool)
        far[Y0:Y1, X0:X1] = False
        assert diff[k][far].mean() < 2.5
        changed = (diff[k][y0:y1, x0:x1] > 40).mean()
        assert changed > (0.10 if mode == "wire" else 0.005), changed


def test_start_offset_and_audio_sync_are_kept(videos, model, tmp_path):
    """The hamilton clip's video starts 0.85 s after its audio: both clocks survive, and frames
    with nothing to draw come back as they went in."""
    from tracker.overlay import write_overlay
    from tracker.trackconfig import load_track_config

    src = cut(videos["short_hamilton_clip"], tmp_path / "ham.mp4", 1.0)
    out = write_overlay(str(src), tmp_path / "ham_ov.mp4", [], model, load_track_config()).path
    t_in, f_in, a = decode(src)
    t_out, f_out, b = decode(out)
    assert a["start"] > 0.8 and abs(b["start"] - a["start"]) < 1e-3
    assert b["audio"] == a["audio"] and b["audio_packets"] == a["audio_packets"]
    np.testing.assert_allclose(t_out, t_in, atol=1e-6)
    assert np.abs(f_out.astype(np.int16) - f_in.astype(np.int16)).mean() < 2.5


def test_sar_rotation_odd_size_and_variable_frame_rate(tmp_path, model):
    from tracker.overlay import write_overlay
    from tracker.trackconfig import load_track_config

    cfg = load_track_config()
    sar = mkvideo.write_video(tmp_path / "sar.mp4", n_frames=4, size=(64, 48), sar=Fraction(15, 16))
    rot = mkvideo.write_video(tmp_path / "rot.mp4", n_frames=4, size=(64, 48), rotation_cw=90)
    odd = mkvideo.write_video(tmp_path / "odd.mkv", n_frames=4, size=(63, 47), pix_fmt="yuv444p")
    vfr = mkvideo.write_video(tmp_path / "vfr.mkv", times=[0.0, 0.04, 0.1, 0.35], size=(64, 48))
    for src, sar_out, shape, pix in ((sar, Fraction(15, 16), (48, 64), "yuv420p"),
                                     (rot, Fraction(1), (64, 48), "yuv420p"),
                                     (odd, Fraction(1), (47, 63), "yuv444p"),
                                     (vfr, Fraction(1), (48, 64), "yuv420p")):
        out = write_overlay(str(src), tmp_path / f"{src.stem}_ov.mp4", [], model, cfg).path
        t_in, f_in, _ = decode(src)
        t_out, f_out, facts = decode(out)
        assert f_out.shape == f_in.shape == (4, *shape, 3)
        assert facts["sar"] == sar_out and facts["pix_fmt"] == pix
        np.testing.assert_allclose(t_out, t_in, atol=1e-6)
        assert np.abs(f_out.astype(int) - f_in.astype(int)).mean() < 3


def test_audio_the_container_cannot_hold_is_transcoded(tmp_path, model):
    from tracker.overlay import write_overlay
    from tracker.trackconfig import load_track_config

    src = tmp_path / "mulaw.mov"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        aus = out.add_stream("pcm_mulaw", rate=8000, layout="mono")
        for i in range(10):
            for p in vs.encode(av.VideoFrame.from_ndarray(mkvideo.pattern(i), format="rgb24")):
                out.mux(p)
        t = np.arange(8000, dtype=np.float32) / 8000
        f = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t))[None], format="flt",
                                       layout="mono")
        f.sample_rate, f.pts = 8000, 0
        for p in aus.encode(f):
            out.mux(p)
        for s in (vs, aus):
            for p in s.encode(None):
                out.mux(p)
    out = write_overlay(str(src), tmp_path / "mulaw_ov.mp4", [], model, load_track_config()).path
    _, frames, facts = decode(out)
    assert len(frames) == 10
    assert facts["audio"][0][0] == "aac" and facts["audio_packets"] > 5


def test_failure_leaves_no_file(talking, tracked, model, tmp_path, monkeypatch):
    from tracker import overlay

    cfg, results = tracked
    calls = {"n": 0}
    real = overlay.FaceDrawer.draw_i420

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("boom")
        return real(self, *args)

    monkeypatch.setattr(overlay.FaceDrawer, "draw_i420", failing)
    target = tmp_path / "never.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        overlay.write_overlay(str(talking), target, results, model, cfg)
    assert list(tmp_path.iterdir()) == []


def test_still_image_overlay(media_dir, model, tmp_path):
    from tracker.overlay import write_overlay
    from tracker.sources import open_source
    from tracker.track import track_video
    from tracker.trackconfig import load_track_config

    img = media_dir / "images" / "skimage" / "astronaut.png"
    cfg = load_track_config()
    _, results = track_video(str(img), model, cfg, None, progress=False)
    out = write_overlay(str(img), tmp_path / "a.png", results, model, cfg).path
    with open_source(str(img)) as a, open_source(str(out)) as b:
        (fa,), (fb,) = list(a), list(b)
    assert fb.image.shape == fa.image.shape
    changed = np.abs(fb.image.astype(int) - fa.image.astype(int)).max(-1) > 0
    assert 0.03 < changed.mean() < 0.4
    assert not changed[:40].any() and not changed[-40:].any()  # head top / body untouched
    # an image tracked into a video overlay: one H.264 frame, limited-range BT.601, untagged matrix
    video = write_overlay(str(img), tmp_path / "a.mp4", results, model, cfg).path
    _, frames, facts = decode(video)
    assert frames.shape == (1, *fa.image.shape) and facts["pix_fmt"] == "yuv420p"
    assert np.abs(frames[0].astype(int) - fb.image.astype(int)).mean() < 6  # 4:2:0 of a photo


def test_unreadable_input_raises_input_error(tmp_path, model):
    from tracker.overlay import write_overlay
    from tracker.trackconfig import load_track_config

    bad = mkvideo.write_text(tmp_path / "bad.mp4")
    with pytest.raises(InputError):
        write_overlay(str(bad), tmp_path / "o.mp4", [], model, load_track_config())
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("clip", ["d10", "d3"])  # BT.709-tagged; untagged (read as BT.601)
def test_window_rgb_to_yuv_matches_ffmpeg(videos, clip):
    """kernels.colour converts like swscale in the output's matrix (the overlay's drawn window
    must meet the untouched input samples around it without a seam)."""
    from kernels.colour import rgb_to_i420, yuv_coefficients
    from tracker.sources import open_source
    from tracker.videoout import _SWS_CS, I420, probe_timing

    cs = _SWS_CS.get(probe_timing(str(videos[clip])).colorspace, 5)
    with open_source(str(videos[clip])) as src:
        rgb = next(iter(src)).image
    ref = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv420p", dst_colorspace=cs, dst_color_range=1, interpolation="AREA")
    want = I420(ref.to_ndarray()).planes()
    got = I420(np.zeros((rgb.shape[0] * 3 // 2, rgb.shape[1]), np.uint8))
    rgb_to_i420(rgb, yuv_coefficients(cs, False), *got.planes())
    for a, b, name in zip(got.planes(), want, "YUV"):
        d = np.abs(a.astype(int) - b)
        assert d.mean() < 0.6 and np.quantile(d, 0.999) <= 2, (name, d.mean(), d.max())


def test_decoder_planes_pass_through_outside_the_drawn_window(talking, tracked, model):
    """With the decoder's planes the overlay sends the encoder the input's own samples: bit-exact
    outside the drawn window, the face drawn inside it."""
    from tracker.drawer import FaceDrawer
    from tracker.overlay import _DrawStage, faces_of
    from tracker.pipeline import make_camera
    from tracker.sources import open_source
    from tracker.videoout import I420, H264Writer, probe_timing

    cfg, results = tracked

    class Capture:
        def __init__(self):
            self.items = []

        def put(self, item, pts):
            self.items.append(item)

    with open_source(str(talking)) as src:
        src.keep_yuv = True
        frames = [f for f, _ in zip(src, range(7))]
        info = src.info
    assert all(f.yuv is not None for f in frames)
    inputs = [f.yuv.to_array() for f in frames]
    cam = make_camera(info, cfg)
    writer = H264Writer(Path(talking).with_name("unused.mp4"), info.width, info.height,
                        probe_timing(str(talking)))
    try:
        cap = Capture()
        stage = _DrawStage(FaceDrawer(model, cam), cap, writer)
        assert stage.i420
        for f in frames[:6]:
            stage.write((f.image, f.yuv, faces_of(results[f.index])), f.index)
        stage.write((frames[0].image, inputs[0].copy(), faces_of(results[0])), 0)  # an array
    finally:
        writer.abort()
    drawer = FaceDrawer(model, cam)
    assert all(out is f.yuv for f, out in zip(frames, cap.items[:6]))  # drawn in place
    assert isinstance(cap.items[6], I420)
    assert np.array_equal(cap.items[6].data, cap.items[0].to_array())
    for f, out, inp in zip(frames[:6], cap.items, inputs):
        (x0, y0, x1, y1), _ = drawer.draw_window(f.image, faces_of(results[f.index]))
        y, u, v = out.planes()
        y_in, u_in, v_in = I420(inp).planes()
        outside = np.ones(y.shape, bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(y[outside], y_in[outside])
        c_out = np.ones(u.shape, bool)
        c_out[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = False
        assert np.array_equal(u[c_out], u_in[c_out]) and np.array_equal(v[c_out], v_in[c_out])
        changed = np.abs(y[y0:y1, x0:x1].astype(int) - y_in[y0:y1, x0:x1]) > 12
        assert changed.mean() > 0.2  # the face is drawn in the window
    # a frame without faces goes through untouched (the same frame, no copy)
    stage.write((frames[6].image, frames[6].yuv, []), 6)
    assert cap.items[-1] is frames[6].yuv and np.array_equal(cap.items[-1].to_array(), inputs[6])


def test_premultiplied_blend_matches_the_opencv_composite(media_dir):
    """The overlay's one-pass blend (kernels.colour) against scene.composite (OpenCV), on a
    real photo with a random premultiplied layer: within one level; uncovered pixels exact."""
    import cv2

    from kernels.colour import blend_premultiplied
    from tracker.scene import Layer, composite

    path = next(p for p in sorted(media_dir.rglob("*.jpg")))
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)[:120, :160].copy()
    rng = np.random.default_rng(0)
    a = rng.uniform(-0.2, 1.2, (100, 140)).astype(np.float32)
    a[:30] = 0.0
    rgb = rng.uniform(0, 1, (100, 140, 3)).astype(np.float32)
    rgba = np.dstack([rgb * np.clip(a, 0, 1)[..., None], a]).astype(np.float32)
    ref, got = img.copy(), img.copy()
    composite(ref, Layer(10, 15, rgba), 0.8)
    blend_premultiplied(got[15:115, 10:150], rgba, 0.8)
    d = np.abs(ref.astype(int) - got)
    assert d.max() <= 1 and np.array_equal(got[15:45, 10:150], img[15:45, 10:150])
    assert np.array_equal(got[:15], img[:15]) and d.mean() < 0.15  # OpenCV rounds twice


@pytest.mark.parametrize("mode,min_drawn", [("shaded", 0.05), ("wire", 0.01), ("points", 0.001)])
def test_faces_blended_into_the_planes_match_the_rgb_path(mode, min_drawn, talking, tracked, model):
    """draw_i420 (the marks blended straight into the decoder's planes) against the RGB path
    (blended into an RGB window, converted), in every mode: the same picture within rounding
    where the face is, the input's samples bit for bit elsewhere."""
    from kernels.colour import rgb_to_i420, yuv_coefficients
    from tracker.drawer import VIDEO_STYLE, FaceDrawer
    from tracker.overlay import faces_of
    from tracker.pipeline import make_camera
    from tracker.sources import open_source
    from tracker.videoout import I420

    cfg, results = tracked
    with open_source(str(talking)) as src:
        src.keep_yuv = True
        frames = [f for f, _ in zip(src, range(4))]
        cam = make_camera(src.info, cfg)
    d = FaceDrawer(model, cam, mode, VIDEO_STYLE)
    coeffs = yuv_coefficients(1, False)  # d10 is BT.709
    for f in frames:
        faces = faces_of(results[f.index])
        fused = I420(f.yuv.to_array())
        d.draw_i420(faces, fused.planes(), coeffs)
        (x0, y0, x1, y1), patch = d.draw_window(f.image, faces)
        ref = I420(f.yuv.to_array())
        y, u, v = ref.planes()
        rgb_to_i420(patch, coeffs, y[y0:y1, x0:x1], u[y0 // 2:y1 // 2, x0 // 2:x1 // 2],
                    v[y0 // 2:y1 // 2, x0 // 2:x1 // 2])
        yf, yr, y_in = fused.planes()[0], ref.planes()[0], f.yuv.planes()[0]
        drawn = yf != y_in
        assert drawn.mean() > min_drawn  # the face is there
        assert np.abs(yf[drawn].astype(int) - yr[drawn]).mean() < 1.5
        outside = np.ones(yf.shape, bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(yf[outside], y_in[outside])
        for a, b in zip(fused.planes()[1:], ref.planes()[1:]):
            assert np.abs(a.astype(int) - b).mean() < 0.5


def _blend_reference(rgba, x0, y0, o, coeffs, planes):
    """blend_layer_i420's definition in float64 numpy: (Y, U, V) and where each is covered."""
    y, u, v = (p.astype(np.float64) for p in planes)
    hh, ww = y.shape
    a = np.zeros((hh, ww))
    c = np.zeros((hh, ww, 3))
    h, w = rgba.shape[:2]
    ys = slice(max(y0, 0), max(y0, 0, min(y0 + h, hh)))
    xs = slice(max(x0, 0), max(x0, 0, min(x0 + w, ww)))
    win = np.clip(rgba[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0], 0, 1)
    a[ys, xs] = o * win[..., 3]
    c[ys, xs] = o * 255.0 * win[..., :3]
    m = coeffs.astype(np.float64)

    def blend(s, a, c, k):
        return np.floor(np.clip(s * (1 - a) + a * m[k, 3] + c @ m[k, :3] + 0.5, 0, 255))

    ab = a.reshape(hh // 2, 2, ww // 2, 2).mean(axis=(1, 3))
    cb = c.reshape(hh // 2, 2, ww // 2, 2, 3).mean(axis=(1, 3))
    return ((blend(y, a, c, 0), a > 0), (blend(u, ab, cb, 1), ab > 0),
            (blend(v, ab, cb, 2), ab > 0))


def test_yuv_blend_kernel_matches_its_definition_anywhere_on_the_frame(talking, tracked, model):
    """kernels.colour.blend_layer_i420 (vectorized rows inside the layer, block by block on its
    rim) against its definition, for a real face layer placed at even and odd offsets and across
    each edge of the frame: within one level where the layer covers, bit for bit elsewhere."""
    from kernels.colour import blend_layer_i420, yuv_coefficients
    from tracker.drawer import VIDEO_STYLE, FaceDrawer
    from tracker.overlay import faces_of
    from tracker.pipeline import make_camera
    from tracker.sources import open_source
    from tracker.videoout import I420

    cfg, results = tracked
    with open_source(str(talking)) as src:
        src.keep_yuv = True
        frame = next(iter(src))
        cam = make_camera(src.info, cfg)
    d = FaceDrawer(model, cam, "shaded", VIDEO_STYLE)
    p = faces_of(results[frame.index])[0]
    layer = d._shaded(p)  # the real face layer
    rgba = np.ascontiguousarray(layer.rgba)
    h, w = rgba.shape[:2]
    hh, ww = frame.yuv.shape[0] * 2 // 3, frame.yuv.shape[1]
    coeffs = yuv_coefficients(1, False)
    placed = [(layer.x0, layer.y0), (layer.x0 + 1, layer.y0), (layer.x0, layer.y0 + 1),
              (layer.x0 + 1, layer.y0 + 1), (-w // 2 - 1, -h // 3), (ww - w // 3, hh - h // 2 + 1),
              (-w + w // 4 + 1, 10), (ww - w // 4, hh - 31), (-w - 5, 0)]
    # the face's middle: covered up to its edges, so the rim's blocks are really blended
    mid = np.ascontiguousarray(rgba[h // 4:-h // 4, w // 4:-w // 4])
    assert mid[0, :, 3].min() > 0.5 and mid[:, -1, 3].min() > 0.5
    cases = [(rgba, x0, y0) for x0, y0 in placed] + [
        (mid, x0 + dx, y0 + dy) for x0, y0 in placed[:1] for dx in (0, 1) for dy in (0, 1)]
    for layer_rgba, x0, y0 in cases:
        out = I420(frame.yuv.to_array())
        blend_layer_i420(layer_rgba, x0, y0, 0.85, coeffs, *out.planes())
        ref = _blend_reference(layer_rgba, x0, y0, 0.85, coeffs, frame.yuv.planes())
        for got, (want, covered), inp in zip(out.planes(), ref, frame.yuv.planes()):
            diff = np.abs(got.astype(int) - want)
            assert diff.max() <= 1, (x0, y0)
            assert np.array_equal(got[~covered], inp[~covered]), (x0, y0)
        covered = int(ref[0][1].sum())
        off_frame = (x0, y0) == (-w - 5, 0)
        assert (covered == 0) if off_frame else (covered > 0), (x0, y0, covered)


def test_scaled_layer_blend_equals_resizing_then_blending(talking, tracked, model):
    """kernels.colour.blend_scaled_layer_i420 (the layer resized two rows at a time, only where
    it has coverage) gives bit for bit what cv2.resize then blend_layer_i420 give: for the real
    face layer the overlay draws (rendered small, shown larger), placed at even and odd offsets,
    across each edge and off the frame, into planes padded past the frame's width (never written
    there), and resized to odd sizes, to its own size and down."""
    import cv2

    from kernels.colour import (
        blend_layer_i420,
        blend_scaled_layer_i420,
        yuv_coefficients,
    )
    from tracker.drawer import VIDEO_STYLE, FaceDrawer
    from tracker.overlay import faces_of
    from tracker.pipeline import make_camera
    from tracker.scene import ScaledLayer
    from tracker.sources import open_source

    cfg, results = tracked
    with open_source(str(talking)) as src:
        src.keep_yuv = True
        frame = next(iter(src))
        cam = make_camera(src.info, cfg)
    layer = FaceDrawer(model, cam, "shaded", VIDEO_STYLE)._shaded(faces_of(results[frame.index])[0])
    assert isinstance(layer, ScaledLayer) and layer.small.shape[1] < layer.width  # drawn small
    small = layer.small
    y_in, u_in, v_in = frame.yuv.planes()
    hh, ww = y_in.shape
    pad = 24  # planes wider than the frame, like a decoder's padded rows
    planes_in = [np.pad(p, ((0, 0), (0, pad // (1 if i == 0 else 2))), constant_values=77)
                 for i, p in enumerate((y_in, u_in, v_in))]
    coeffs = yuv_coefficients(1, False)
    w, h = layer.width, layer.height
    sizes = [(w, h), (w + 1, h - 1), (small.shape[1], small.shape[0]), (small.shape[1] // 2, 31)]
    placed = [(layer.x0, layer.y0), (layer.x0 + 1, layer.y0 + 1), (-w // 2 - 1, -h // 3),
              (ww - w // 3, hh - h // 2 + 1), (ww - w // 4 + 1, 10), (-w - 5, 0), (ww + 2, 0)]
    changed = 0
    # the frame as decoded, and one column narrower (its last chroma samples then cover one
    # column; blend_layer_i420 itself assumes an even height)
    for fw, fh in ((ww, hh), (ww - 1, hh)):
        for width, height in sizes:
            big = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
            for x0, y0 in placed + [(fw - w // 2, fh - h // 2)]:
                got = [p.copy() for p in planes_in]
                got[0] = got[0][:fh]
                blend_scaled_layer_i420(small, x0, y0, width, height, 0.85, coeffs, *got, fw)
                want = [p.copy() for p in planes_in]
                want[0] = want[0][:fh]
                blend_layer_i420(np.ascontiguousarray(big[:max(0, fh - y0), :max(0, fw - x0)]),
                                 x0, y0, 0.85, coeffs, *want)
                for g, wnt, p, cols in zip(got, want, planes_in, (fw, (fw + 1) // 2, (fw + 1) // 2)):
                    assert np.array_equal(g, wnt), (fw, fh, width, height, x0, y0)
                    assert np.array_equal(g[:, cols:], p[:g.shape[0], cols:])  # past the frame
                changed += int((got[0] != planes_in[0][:fh]).sum())
    assert changed > 0


def test_mask_blend_kernels_match_their_definition(talking, tracked, model):
    """kernels.colour.blend_mask_i420 and blend_mask (wire and dots: one colour under a coverage
    mask) against their definition in float64, for the real wireframe mask of a face and a
    random mask at the frame's corner: within one level where covered, bit for bit elsewhere;
    the I420 blend equals the RGB one converted (the chroma of the block's mean colour)."""
    from kernels.colour import blend_mask, blend_mask_i420, yuv_coefficients
    from tracker.drawer import VIDEO_STYLE, FaceDrawer
    from tracker.overlay import faces_of
    from tracker.pipeline import make_camera
    from tracker.sources import open_source
    from tracker.videoout import I420

    cfg, results = tracked
    with open_source(str(talking)) as src:
        src.keep_yuv = True
        frame = next(iter(src))
        cam = make_camera(src.info, cfg)
    (wire,) = FaceDrawer(model, cam, "wire", VIDEO_STYLE).marks(faces_of(results[frame.index]))
    rng = np.random.default_rng(1)
    rand = rng.integers(0, 256, (40, 60)).astype(np.uint8)
    rand[rng.random(rand.shape) < 0.5] = 0
    coeffs = yuv_coefficients(1, False)
    m = coeffs.astype(np.float64)
    hh, ww = frame.image.shape[:2]
    for mask, x0, y0, rgb, o in [(wire.coverage, wire.x0, wire.y0, wire.rgb, wire.opacity),
                                 (rand, ww - 60, hh - 40, (255, 70, 60), 1.0),
                                 (rand, 0, 0, (0, 0, 0), 0.5)]:
        h, w = mask.shape
        a = np.zeros((hh, ww))
        a[y0:y0 + h, x0:x0 + w] = o * mask / 255.0
        colour = m[:, :3] @ np.asarray(rgb, np.float64) + m[:, 3]
        ab = a.reshape(hh // 2, 2, ww // 2, 2).mean(axis=(1, 3))
        out = I420(frame.yuv.to_array())
        blend_mask_i420(mask, x0, y0, colour.astype(np.float32), o, *out.planes())
        for k, (got, inp, cov) in enumerate(zip(out.planes(), frame.yuv.planes(), (a, ab, ab))):
            want = np.floor(np.clip(inp * (1 - cov) + cov * colour[k] + 0.5, 0, 255))
            assert np.abs(got.astype(int) - want).max() <= 1
            assert np.array_equal(got[cov == 0], inp[cov == 0])
            assert (got != inp).any()
        rgb_img = frame.image.copy()
        blend_mask(rgb_img[y0:y0 + h, x0:x0 + w], mask, np.asarray(rgb, np.float32), o)
        want = np.floor(np.clip(frame.image * (1 - a[..., None]) + a[..., None] * rgb + 0.5, 0, 255))
        assert np.abs(rgb_img.astype(int) - want).max() <= 1
        assert np.array_equal(rgb_img[a == 0], frame.image[a == 0])


def x264_options(path) -> str:
    """The settings libx264 wrote into the stream itself (its SEI user data, in the first frame)."""
    data = Path(path).read_bytes()
    start = data.index(b"x264 - core")
    return data[start:data.index(b"\0", start)].decode("ascii", "replace")


def test_overlay_encoder_settings_reach_the_encoder(talking, model, tmp_path):
    """TrackOutputs.overlay_rate is what the overlay is encoded with (bench-overlay --qp/--crf rely
    on it): the default is a constant QP 23 in x264's own record of its settings, a higher QP gives
    a smaller file of the same frames, and CRF switches x264's rate control."""
    from tracker.overlay import DEFAULT_RATE
    from tracker.track import TrackOutputs, track_video
    from tracker.trackconfig import load_track_config
    from tracker.videoout import RateControl

    cfg = load_track_config()
    sizes, frames, opts = {}, {}, {}
    for rate in (None, RateControl("qp", 12), RateControl("qp", 35), RateControl("crf", 30)):
        out = tmp_path / f"{str(rate).replace(' ', '')}.mp4"
        track_video(str(talking), model, cfg, TrackOutputs(tmp_path / "t.csv", overlay=out,
                                                           overlay_rate=rate), progress=False)
        sizes[rate], opts[rate] = out.stat().st_size, x264_options(out)
        with av.open(str(out)) as c:
            frames[rate] = sum(1 for _ in c.decode(video=0))
    assert DEFAULT_RATE == RateControl("qp", 23)
    assert " rc=cqp " in opts[None] and " qp=23 " in opts[None], opts[None]
    assert " rc=cqp " in opts[RateControl("qp", 35)] and " qp=35 " in opts[RateControl("qp", 35)]
    assert " rc=crf " in opts[RateControl("crf", 30)] and " crf=30.0 " in opts[RateControl("crf", 30)]
    assert len(set(frames.values())) == 1 and frames[None] > 50, frames
    assert sizes[RateControl("qp", 35)] < 0.5 * sizes[RateControl("qp", 12)], sizes
    for bad in (("qp", 52), ("crf", -1), ("abr", 23)):
        with pytest.raises(ValueError):
            RateControl(*bad)


def test_every_frame_reaches_the_overlay_with_the_decoders_planes(talking, model, tmp_path,
                                                                 monkeypatch):
    """The source keeps its YUV planes from the first frame on (decoding starts before the
    tracker is set up; the flag used to be set after, and ~20 frames went through RGB)."""
    import tracker.overlay as overlay
    from tracker.track import TrackOutputs, track_video
    from tracker.trackconfig import load_track_config

    seen = []
    real = overlay.OverlayStream.add

    def add(self, image, time_s, result, yuv=None):
        seen.append(yuv is not None)
        return real(self, image, time_s, result, yuv)

    monkeypatch.setattr(overlay.OverlayStream, "add", add)
    track_video(str(talking), model, load_track_config(),
                TrackOutputs(tmp_path / "t.csv", overlay=tmp_path / "o.mp4"), progress=False)
    assert len(seen) > 50 and all(seen)


@pytest.mark.parametrize("preset", ["ultrafast", "medium"])
def test_i420_frames_are_encoded_as_they_were_when_written(talking, tmp_path, preset):
    """The writer hands x264 the I420 array's own memory (no copy): what is encoded is the
    frame at ``write()`` time even if the caller overwrites the array afterwards (x264 copies
    the picture in before ``encode`` returns — also with its lookahead and frame threads, as
    in ``medium``). CRF 0 is lossless, so the check is exact."""
    from tracker.sources import open_source
    from tracker.videoout import H264Writer, I420, RateControl, probe_timing

    with open_source(str(talking)) as src:
        src.keep_yuv = True
        frames = [f for _, f in zip(range(12), src)]
        info = src.info
    want = [f.yuv.to_array() for f in frames]
    out = tmp_path / "lossless.mp4"
    timing = probe_timing(str(talking), info.fps)
    w = H264Writer(out, info.width, info.height, timing, rate=RateControl("crf", 0), preset=preset,
                   threads=0)
    for f, arr in zip(frames, [x.copy() for x in want]):
        w.write(I420(arr), timing.pts(f.time_s))
        arr[:] = 0  # the caller reuses its buffer
    w.close()
    with av.open(str(out)) as c:
        got = [fr.to_ndarray(format="yuv420p") for fr in c.decode(video=0)]
    assert len(got) == len(want)
    assert all(np.array_equal(g, x) for g, x in zip(got, want))


def test_decoded_frames_are_encoded_as_drawn_with_x264s_own_frame_types(videos, tmp_path):
    """The writer encodes the decoder's own frames (DecodedI420) directly: drawn into in place,
    they come out exactly as drawn (CRF 0 is lossless), and x264 picks the frame types itself —
    the input's keyframes (every 60 frames here) are not forced onto the output."""
    from tracker.sources import open_source
    from tracker.videoout import H264Writer, RateControl, probe_timing

    clip = str(videos["short_hamilton_clip"])
    out = tmp_path / "decoded.mp4"
    want, in_keys = [], []
    with open_source(clip) as src:
        src.keep_yuv = True
        timing = probe_timing(clip, src.info.fps)
        w = H264Writer(out, src.info.width, src.info.height, timing, rate=RateControl("crf", 0),
                       preset="ultrafast", threads=1)
        for f, _ in zip(src, range(130)):
            in_keys.append(f.yuv.frame.key_frame)
            y, u, _ = f.yuv.planes()
            y[40:120, 60:200] = 235 - f.index % 200  # a drawn patch, different every frame
            u[20:60, 30:100] = 90
            want.append(f.yuv.to_array())
            w.write(f.yuv, timing.pts(f.time_s))
        w.close()
    with av.open(str(out)) as c:
        dec = list(c.decode(video=0))
    assert sum(in_keys) >= 3
    assert len(dec) == len(want) and [f.key_frame for f in dec].count(True) == 1
    assert all(np.array_equal(f.to_ndarray(), x) for f, x in zip(dec, want))


@pytest.mark.parametrize("mode", ["shaded", "wire", "points"])
def test_drawing_into_padded_decoder_rows_matches_a_plain_frame(videos, model, mode):
    """d13 is 720 wide and its decoder pads rows to a larger line size: the overlay draws into
    those padded planes (for speed). The frame comes out as drawing into a plain contiguous
    copy gives it, also with the face pushed over the right edge, and the padding is untouched."""
    from dataclasses import replace

    from tracker.drawer import VIDEO_STYLE, FaceDrawer
    from tracker.overlay import _DrawStage, faces_of
    from tracker.pipeline import make_camera
    from tracker.sources import open_source
    from tracker.track import track_video
    from tracker.trackconfig import load_track_config
    from tracker.videoout import I420

    clip = str(videos["d13"])
    cfg = load_track_config()
    _, results = track_video(clip, model, cfg, None, progress=False, max_frames=4)

    class Capture:
        def __init__(self):
            self.items = []

        def put(self, item, pts):
            self.items.append(item)

    class Encoder:  # what _DrawStage asks of its encoder
        takes_i420, full_range, sws_colorspace = True, False, 5

    with open_source(clip) as src:
        src.keep_yuv = True
        frames = [f for f, _ in zip(src, range(4))]
        cam0 = make_camera(src.info, cfg)
    for shift in (0.0, 330.0):  # 330 px right: the face crosses the frame's right edge
        cam = replace(cam0, cx=cam0.cx + shift)
        stage_dec = _DrawStage(FaceDrawer(model, cam, mode, VIDEO_STYLE), Capture(), Encoder())
        stage_arr = _DrawStage(FaceDrawer(model, cam, mode, VIDEO_STYLE), Capture(), Encoder())
        for f in frames:
            yuv = f.yuv  # the decoder's frame, rows padded
            assert yuv.padded_planes()[0].shape[1] > cam.width
            before = [p[:, w:].copy() for p, w in zip(yuv.padded_planes(), (720, 360, 360))]
            plain = yuv.to_array()
            undrawn = plain.copy()
            faces = faces_of(results[f.index])
            assert faces
            stage_dec.write((f.image, yuv, faces), 0)
            stage_arr.write((f.image, plain, faces), 0)
            got, want = stage_dec.sink.items[-1], stage_arr.sink.items[-1]
            assert got is yuv and isinstance(want, I420)
            assert np.array_equal(got.to_array(), want.data), (mode, shift)
            assert not np.array_equal(want.data, undrawn)  # something was drawn
            after = [p[:, w:] for p, w in zip(yuv.padded_planes(), (720, 360, 360))]
            assert all(np.array_equal(a, b) for a, b in zip(before, after))
        if shift:  # the drawing reaches the last column
            y_in, y_out = I420(undrawn).planes()[0], I420(want.data).planes()[0]
            assert (y_in[:, -2:] != y_out[:, -2:]).any()


def test_the_overlay_does_not_change_the_tracking(videos, model, tmp_path):
    """With --overlay the frames are decoded in MediaPipe's thread while its graph works
    (track.decode_while_detecting) instead of in a decoding thread of their own: the results —
    fitted parameters and fit errors, every frame, and the CSV — are exactly those of a run
    without it."""
    from tracker.track import TrackOutputs, track_video
    from tracker.trackconfig import load_track_config

    clip, cfg = str(videos["d13"]), load_track_config()
    _, plain = track_video(clip, model, cfg, TrackOutputs(tmp_path / "a.csv"), progress=False,
                           max_frames=60)
    _, drawn = track_video(clip, model, cfg, TrackOutputs(tmp_path / "b.csv",
                                                          overlay=tmp_path / "b.mp4"),
                           progress=False, max_frames=60)
    assert len(plain) == len(drawn) == 60
    for a, b in zip(plain, drawn):
        assert a.index == b.index and len(a.faces) == len(b.faces) == 1
        fa, fb = a.faces[0], b.faces[0]
        assert fa.fit_error == fb.fit_error  # the landmarks' fit: the same landmarks
        for k in ("rotation", "translation", "expression", "identity"):
            assert np.array_equal(getattr(fa.params, k), getattr(fb.params, k)), (a.index, k)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_bench_overlay_reports_the_cpu_of_each_thread(talking, model):
    """face3d bench-overlay on a real clip: a ratio against the floor, and the overlay run's CPU
    split by thread — every face3d worker reports its own time, and the named parts never add
    up to more than the process used."""
    from tracker.bench_overlay import bench_overlay
    from tracker.trackconfig import load_track_config

    r = bench_overlay(str(talking), model, load_track_config(), rounds=1)
    assert r.frames > 50 and 0.05 < r.whole_vs_floor < 2.0
    # the sequential floor runs the same frames with nothing overlapped: never faster than the
    # two-thread one by more than noise, so the overlay's ratio against it is at least as high
    assert len(r.rounds_seq) == 1 and r.floor_seq_ms > 0.7 * r.floor_ms
    assert r.whole_vs_sequential == pytest.approx(r.floor_seq_ms / r.whole_ms)
    parts = r.thread_cpu_ms
    # drawing happens in the tracking thread (OverlayStream) and decoding in the MediaPipe one
    # (track.decode_while_detecting), so there is neither a draw nor a decode thread
    assert list(parts) == ["mediapipe", "tracking", "encode", "other"]
    assert all(parts[k] > 0.05 for k in ("mediapipe", "tracking", "encode"))
    named = sum(v for k, v in parts.items() if k != "other")
    assert named <= r.whole_cpu_ms * 1.02
    assert sum(parts.values()) == pytest.approx(r.whole_cpu_ms, rel=0.02)


def test_join_workers_waits_for_workers_only():
    """threadcpu.join_workers joins the per-pass workers (so their CPU is recorded) and not the
    long-lived face3d-* threads (the stderr filter, a server): waiting for one of those cost
    bench-overlay its whole timeout twice a round."""
    import threading
    import time

    from tracker import threadcpu

    release = threading.Event()
    service = threading.Thread(target=release.wait, name="face3d-stderr", daemon=True)
    service.start()

    def work() -> None:
        time.sleep(0.2)
        threadcpu.record()

    worker = threading.Thread(target=work, name=threadcpu.worker_name("test-worker"))
    worker.start()
    t0 = time.monotonic()
    threadcpu.join_workers(timeout=30.0)
    waited = time.monotonic() - t0
    try:
        assert not worker.is_alive() and service.is_alive()
        assert waited < 20.0  # it returned on its own, not at the timeout
        assert "face3d-test-worker" in threadcpu.totals()
    finally:
        release.set()


def test_overlay_quality_flags_on_the_command_line(talking, tmp_path):
    """`face3d track --overlay-qp/--overlay-crf/--overlay-preset` reach the encoder (a higher QP
    gives a far smaller file of the same frames, and x264 records the settings); out-of-range
    values and both rate controls at once are usage errors (exit 2)."""
    import subprocess
    import sys

    def track(*extra):
        return subprocess.run([sys.executable, "-m", "tracker.cli", "track", str(talking),
                               "--csv", str(tmp_path / "t.csv"), *map(str, extra)],
                              capture_output=True, text=True, timeout=300)

    sizes = {}
    for flag, q, preset in (("--overlay-qp", 12, "ultrafast"), ("--overlay-qp", 40, "veryfast"),
                            ("--overlay-crf", 26, "ultrafast")):
        out = tmp_path / f"{flag}{q}.mp4"
        r = track("--overlay", out, flag, q, "--overlay-preset", preset)
        assert r.returncode == 0, r.stderr
        with av.open(str(out)) as c:
            assert sum(1 for _ in c.decode(video=0)) > 50
        sizes[q] = out.stat().st_size
        opts = x264_options(out)
        mode = "cqp" if flag == "--overlay-qp" else "crf"
        assert f" rc={mode} " in opts, opts
        assert (f" qp={q} " if mode == "cqp" else f" crf={q}.0 ") in opts, opts
        assert ("subme=0" if preset == "ultrafast" else "subme=2") in opts, opts
    assert sizes[40] < 0.2 * sizes[12], sizes
    for bad in (["--overlay-crf", "60"], ["--overlay-qp", "x"], ["--overlay-preset", "quick"],
                ["--overlay-qp", "20", "--overlay-crf", "20"]):
        r = track("--overlay", tmp_path / "bad.mp4", *bad)
        assert r.returncode == 2 and bad[0] in r.stderr, r.stderr
    assert not (tmp_path / "bad.mp4").exists()
