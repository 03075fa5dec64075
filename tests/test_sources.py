"""tracker.sources on the shared real videos and images, and on synthetic files from mkvideo."""

from __future__ import annotations

import errno
import functools
import http.server
import logging
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import mkvideo as mk  # tests/mkvideo.py (tests/ is on sys.path: rootdir conftest, no __init__)
from tracker.errors import CameraError, InputError, NoVideoStreamError
from tracker.sources import (WebcamSpec, open_source, open_webcam, parse_webcam_spec, probe,
                             webcam_open_args)

# media/SOURCES.md: stem -> (width, height, fps, seconds, has_audio)
SHARED_VIDEOS = {
    "d3": (512, 512, 30, 11.8, True), "d6": (480, 480, 30, 33.6, True),
    "d9": (512, 480, 30, 19.6, True), "d10": (512, 512, 30, 15.0, True),
    "d12": (512, 512, 25, 7.3, True), "d13": (720, 1280, 30, 11.7, False),
    "d14": (512, 512, 30, 17.9, True), "s18": (1280, 720, 30, 9.4, True),
    "WDA_KatieHill_000": (512, 512, 25, 8.0, True),
    "short_hamilton_clip": (640, 360, 29.97, 10.0, True),
}
COLOURS = mk.QUADRANT_COLOURS
TOL = 8.0  # per-channel colour tolerance after lossy coding of flat patches


def _check_frame(frame, info) -> None:
    img = frame.image
    assert img.dtype == np.uint8 and img.flags.c_contiguous
    assert img.shape == (info.height, info.width, 3)


def _assert_quadrants(img: np.ndarray, expected: dict[str, tuple[int, int, int]]) -> None:
    got = mk.quadrant_means(img)
    for k, rgb in expected.items():
        assert np.abs(got[k] - rgb).max() < TOL, (k, got[k], rgb)


# --- shared real media ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SHARED_VIDEOS))
def test_shared_video_info(videos, name):
    width, height, fps, seconds, has_audio = SHARED_VIDEOS[name]
    info = probe(videos[name])
    assert (info.kind, info.width, info.height) == ("file", width, height)
    assert info.fps == pytest.approx(fps, abs=0.01)
    assert info.has_audio is has_audio and info.rotation_deg == 0
    assert abs(info.duration_s - seconds) < 1.0  # the hamilton clip's video track is 9.2 s of 10
    assert abs(info.n_frames - info.duration_s * info.fps) <= 2
    assert info.sar == (pytest.approx(15 / 16) if name == "d9" else 1.0)


@pytest.mark.parametrize("name", ["d12", "WDA_KatieHill_000", "short_hamilton_clip"])
def test_shared_video_decodes_every_frame_in_time_order(videos, name):
    frames = []
    with open_source(videos[name]) as src:
        for f in src:
            _check_frame(f, src.info)
            frames.append((f.index, f.time_s))
        assert not src.truncated and src.n_corrupt == 0
    idx, t = np.array(frames).T
    assert len(frames) == src.info.n_frames
    np.testing.assert_array_equal(idx, np.arange(len(frames)))
    assert t[0] == 0.0  # even for the hamilton clip, whose video stream starts at PTS 0.852 s
    np.testing.assert_allclose(np.diff(t), 1.0 / src.info.fps, rtol=1e-3)
    if name == "short_hamilton_clip":
        assert src.start_time_s == pytest.approx(10214 / 11988)


@pytest.mark.parametrize("name", ["d9", "d13", "s18"])
def test_shared_video_first_frames_are_plausible_and_monotonic(videos, name):
    with open_source(videos[name]) as src:
        frames = [f for f, _ in zip(src, range(20))]
    assert all(b.time_s > a.time_s for a, b in zip(frames, frames[1:]))
    for f in frames:
        _check_frame(f, src.info)
        assert 20 < f.image.mean() < 235  # a real picture, not a blank or garbage buffer


def test_shared_images_match_opencv(media_dir):
    cv2 = pytest.importorskip("cv2")
    paths = sorted(p for p in (media_dir / "images").rglob("*") if p.suffix in (".jpg", ".png"))
    assert len(paths) > 20
    for p in paths:
        with open_source(p) as src:
            frames = list(src)
        assert src.info.kind == "image" and src.info.n_frames == 1 and src.info.fps is None
        assert [(f.index, f.time_s) for f in frames] == [(0, 0.0)]
        _check_frame(frames[0], src.info)
        ref = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)  # an independent decoder
        assert frames[0].image.shape == ref.shape, p
        assert np.abs(frames[0].image.astype(int) - ref).mean() < 2.0, p


# --- synthetic files --------------------------------------------------------------------------

def test_vfr_timestamps_come_back(tmp_path):
    times = [0.0, 0.03, 0.05, 0.12, 0.2, 0.21, 0.3, 0.45, 0.5, 0.6, 0.61, 0.9]
    with open_source(mk.write_video(tmp_path / "vfr.mp4", times=times)) as src:
        frames = list(src)
    np.testing.assert_allclose([f.time_s for f in frames], times, atol=1e-3)
    assert [mk.read_code(f.image) for f in frames] == mk.codes(len(times))


def test_missing_pts_fall_back_to_the_frame_rate(tmp_path):
    path = mk.write_video(tmp_path / "raw.h264", n_frames=12)  # elementary stream: no timestamps
    with av.open(str(path)) as c:
        assert all(f.pts is None for f in c.decode(video=0))
    with open_source(path) as src:
        t = [f.time_s for f in src]
    np.testing.assert_allclose(t, np.arange(12) / src.info.fps)


def test_repeated_pts_are_made_strictly_increasing(tmp_path, caplog):
    ticks = [0, 1, 1, 2, 4, 4, 5]
    path = mk.write_video(tmp_path / "dup.mkv", n_frames=7, codec="mjpeg", pix_fmt="yuvj420p",
                          packet_times=[k / 30 for k in ticks])
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        with open_source(path) as src:
            t = np.array([f.time_s for f in src])
    assert np.all(np.diff(t) > 0) and "non-increasing" in caplog.text
    first = [i for i, k in enumerate(ticks) if i == 0 or k != ticks[i - 1]]
    np.testing.assert_allclose(t[first], np.array(ticks)[first] / 30, atol=1e-3)


def test_stream_starting_late_still_starts_at_zero(tmp_path):
    times = [2.0 + i / 30 for i in range(10)]
    with open_source(mk.write_video(tmp_path / "late.mkv", times=times)) as src:
        t = [f.time_s for f in src]
    assert src.start_time_s == pytest.approx(2.0)
    np.testing.assert_allclose(t, np.arange(10) / 30, atol=1e-3)


# Displayed quadrant colours when the stored pattern is rotated clockwise for display.
_ROTATED = {
    90: {"tl": COLOURS["bl"], "tr": COLOURS["tl"], "br": COLOURS["tr"], "bl": COLOURS["br"]},
    180: {"tl": COLOURS["br"], "tr": COLOURS["bl"], "br": COLOURS["tl"], "bl": COLOURS["tr"]},
    270: {"tl": COLOURS["tr"], "tr": COLOURS["br"], "br": COLOURS["bl"], "bl": COLOURS["tl"]},
}


@pytest.mark.parametrize("rot,suffix,how", [(90, ".mp4", "matrix"), (180, ".mp4", "matrix"),
                                            (270, ".mov", "matrix"), (90, ".mkv", "tag")])
def test_rotation_gives_upright_frames(tmp_path, rot, suffix, how):
    path = mk.write_video(tmp_path / f"rot{suffix}", size=(64, 48), rotation_cw=rot,
                          rotation_as=how, sar=Fraction(15, 16))
    with open_source(path) as src:
        frames = list(src)
    info = src.info
    assert info.rotation_deg == rot
    assert (info.width, info.height) == ((48, 64) if rot in (90, 270) else (64, 48))
    # a stored pixel 15 wide x 16 high lies on its side after a quarter turn
    assert info.sar == pytest.approx(16 / 15 if rot in (90, 270) else 15 / 16)
    for f in frames:
        _check_frame(f, info)
    _assert_quadrants(frames[0].image, _ROTATED[rot])


def test_jpeg_exif_orientation_matches_pillow(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    ImageOps = pytest.importorskip("PIL.ImageOps")
    im = Image.fromarray(mk.pattern(0, 64, 48))
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "exif6.jpg"
    im.save(path, exif=exif, quality=95)
    with open_source(path) as src:
        (frame,) = list(src)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert src.info.rotation_deg == 90 and frame.image.shape == ref.shape == (64, 48, 3)
    assert np.abs(frame.image.astype(int) - ref).mean() < 3.0


@pytest.mark.parametrize("codec,pix_fmt", [("libx264", "yuv420p10le"), ("libx265", "yuv420p10le"),
                                           ("libx264", "yuv444p"), ("libvpx-vp9", "yuv444p"),
                                           ("ffv1", "yuv444p10le")])
def test_pixel_formats_decode_to_rgb8(tmp_path, codec, pix_fmt):
    suffix = ".mkv" if codec in ("ffv1", "libvpx-vp9") else ".mp4"
    path = mk.write_video(tmp_path / f"v{suffix}", n_frames=5, size=(96, 64), codec=codec,
                          pix_fmt=pix_fmt)
    with av.open(str(path)) as c:  # the file really holds that pixel format
        assert c.streams.video[0].codec_context.pix_fmt == pix_fmt
    with open_source(path) as src:
        frames = list(src)
    assert len(frames) == 5
    for f in frames:
        _check_frame(f, src.info)
    _assert_quadrants(frames[2].image, COLOURS)
    assert mk.read_code(frames[2].image) == 2


def test_grey_video_decodes_to_equal_channels(tmp_path):
    with open_source(mk.write_video(tmp_path / "g.mp4", pix_fmt="gray")) as src:
        img = next(iter(src)).image
    assert img.shape == (48, 64, 3)
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp", ".ppm"])
def test_generated_images(tmp_path, suffix):
    picture = mk.pattern(5, 64, 48)
    path = mk.write_image(tmp_path / f"im{suffix}", picture)
    with open_source(path) as src:
        (frame,) = list(src)
    assert src.info.kind == "image" and (src.info.width, src.info.height) == (64, 48)
    tol = 0.0 if suffix in (".png", ".bmp", ".ppm") else 3.0
    assert np.abs(frame.image.astype(int) - picture).mean() <= tol


def test_hand_written_ppm_is_exact(tmp_path):
    picture = np.random.default_rng(1).integers(0, 256, (31, 47, 3), np.uint8)
    with open_source(mk.write_ppm(tmp_path / "x.ppm", picture)) as src:
        (frame,) = list(src)
    np.testing.assert_array_equal(frame.image, picture)


def test_audio_track_is_reported(tmp_path):
    path = mk.write_video(tmp_path / "av.mp4", n_frames=15, audio=True)
    with open_source(path) as src:
        assert src.info.has_audio and src.path == str(path)
        assert len(list(src)) == 15


@pytest.fixture()
def http_dir(tmp_path):
    """``(directory, base URL)`` of a local HTTP server, to exercise the URL path offline."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_stream(http_dir):
    folder, base = http_dir
    mk.write_video(folder / "clip.mp4", n_frames=20)
    with open_source(f"{base}/clip.mp4") as src:
        frames = list(src)
    assert src.info.kind == "file" and src.live and len(frames) == 20
    assert [mk.read_code(f.image) for f in frames] == mk.codes(20)
    with pytest.raises(InputError, match="cannot open stream") as caught:
        open_source(f"{base}/missing.mp4")
    assert "\n" not in str(caught.value) and "missing.mp4" in str(caught.value)


def test_probe_reads_one_frame_only(tmp_path):
    info = probe(mk.write_video(tmp_path / "p.mp4", n_frames=12, fps=24))
    assert (info.width, info.height, info.fps, info.n_frames) == (64, 48, 24.0, 12)
    assert info.duration_s == pytest.approx(0.5, abs=0.01) and info.codec == "h264"


def test_loop_restarts_with_increasing_time(tmp_path):
    times = np.array([0.0, 0.04, 0.1, 0.12, 0.2, 0.3, 0.32, 0.36, 0.4, 0.48])
    with open_source(mk.write_video(tmp_path / "l.mp4", times=times), loop=True) as src:
        frames = [f for f, _ in zip(src, range(25))]
    assert [f.index for f in frames] == list(range(25))
    assert [mk.read_code(f.image) for f in frames] == [i % 10 for i in range(25)]
    t = np.array([f.time_s for f in frames])
    assert np.all(np.diff(t) > 0)
    np.testing.assert_allclose(t[10:20] - t[10], times, atol=1e-3)  # each pass keeps its spacing
    np.testing.assert_allclose(t[20:] - t[20], times[:5], atol=1e-3)
    assert t[10] - t[9] == pytest.approx(1 / src.info.fps)


def test_looped_image_repeats(tmp_path):
    path = mk.write_image(tmp_path / "still.png", mk.pattern(0))
    with open_source(path, loop=True) as src:
        frames = [f for f, _ in zip(src, range(4))]
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(4) / 30)


def test_realtime_paces_frames_by_their_timestamps(tmp_path):
    times = [0.0, 0.1, 0.15, 0.4, 0.45]
    now = [100.0]
    sleeps: list[float] = []

    def sleep(d):
        sleeps.append(d)
        now[0] += d

    path = mk.write_video(tmp_path / "rt.mp4", times=times)
    src = open_source(path, realtime=True, clock=lambda: now[0], sleep=sleep)
    wall = [(now[0], f.time_s) for f in src]
    np.testing.assert_allclose([w - 100.0 for w, _ in wall], [t for _, t in wall], atol=1e-9)
    assert sum(sleeps) == pytest.approx(times[-1], abs=1e-3)


def test_iterating_again_restarts_and_close_is_idempotent(tmp_path):
    src = open_source(mk.write_video(tmp_path / "r.mp4", n_frames=6))
    first = [f for f, _ in zip(src, range(3))]  # stop early: the pass is abandoned
    again = list(src)
    assert [f.index for f in first] == [0, 1, 2] and [f.index for f in again] == list(range(6))
    src.close()
    src.close()


# --- bad inputs -------------------------------------------------------------------------------

def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, type[Exception], str]]:
    good = mk.write_video(tmp / "good.mp4", n_frames=30)
    return {
        "missing": (tmp / "nope.mp4", InputError, "no such file"),
        "zero": (mk.write_zero_bytes(tmp / "zero.mp4"), InputError, "empty"),
        "random": (mk.write_random_bytes(tmp / "random.mp4"), InputError, "not a video"),
        "text": (mk.write_text(tmp / "notes.mp4"), InputError, "text file"),
        "moov_lost": (mk.truncated_copy(good, tmp / "cut.mp4"), InputError, "moov"),
        "audio_only": (mk.write_audio_only(tmp / "sound.m4a"), NoVideoStreamError,
                       "no video stream"),
        "directory": (tmp, InputError, "directory"),
    }


@pytest.mark.parametrize("case", ["missing", "zero", "random", "text", "moov_lost", "audio_only",
                                  "directory"])
def test_bad_input_raises_one_clear_line(tmp_path, case):
    path, error, words = _bad_inputs(tmp_path)[case]
    with pytest.raises(error) as caught:
        open_source(path)
    msg = str(caught.value)
    assert str(path) in msg and words in msg and "\n" not in msg
    assert not isinstance(caught.value, av.error.FFmpegError)
    with pytest.raises(error):
        probe(path)


def _noisy(i: int) -> np.ndarray:  # incompressible frames, so the file is mostly picture data
    img = np.random.default_rng(i).integers(0, 256, (96, 128, 3), np.uint8)
    img[36:60] = mk.code_level(i)
    return img


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_truncated_file_yields_the_frames_it_has(tmp_path, suffix, caplog):
    good = mk.write_video(tmp_path / f"good{suffix}", n_frames=60, size=(128, 96), frames=_noisy,
                          faststart=True)
    cut = mk.truncated_copy(good, tmp_path / f"cut{suffix}", 0.5)
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        with open_source(cut) as src:
            frames = list(src)
    assert 10 < len(frames) < 50 and src.truncated
    assert [mk.read_code(f.image) for f in frames] == mk.codes(len(frames))
    assert any("truncated" in r.getMessage() and str(cut) in r.getMessage() for r in caplog.records)
    with open_source(good) as src:  # the intact file is not flagged
        assert len(list(src)) == 60 and not src.truncated


def test_corrupt_packets_are_skipped(tmp_path):
    good = mk.write_video(tmp_path / "good.mp4", n_frames=60, size=(128, 96), frames=_noisy,
                          faststart=True)
    bad = mk.corrupt_copy(good, tmp_path / "bad.mp4", at=0.5, n_bytes=3000)
    with open_source(bad) as src:
        frames = list(src)
    assert 45 <= len(frames) <= 60
    assert all(b.time_s > a.time_s for a, b in zip(frames, frames[1:]))


# --- webcams ----------------------------------------------------------------------------------

def test_webcam_spec_parsing():
    assert parse_webcam_spec("webcam") == WebcamSpec("", None, None)
    assert parse_webcam_spec("webcam:0?size=1280x720&fps=30") == WebcamSpec("0", (1280, 720), 30.0)
    assert parse_webcam_spec("webcam:/dev/video2") == WebcamSpec("/dev/video2")
    for bad in ["webcam:0?size=big", "webcam:0?fps=-1", "webcam:0?zoom=2"]:
        with pytest.raises(InputError, match="bad webcam option"):
            parse_webcam_spec(bad)


def test_webcam_open_args_per_platform():
    ws = WebcamSpec("1", (640, 480), 30.0)
    opts = {"video_size": "640x480", "framerate": "30"}
    assert webcam_open_args(ws, "linux") == ("/dev/video1", "v4l2", opts)
    assert webcam_open_args(ws, "darwin") == ("1:none", "avfoundation", opts)
    cams = lambda: ["Integrated Camera", "OBS Virtual Camera"]  # noqa: E731
    assert webcam_open_args(ws, "win32", cams) == ("video=OBS Virtual Camera", "dshow", opts)
    assert webcam_open_args(WebcamSpec(""), "darwin")[2] == {"framerate": "30"}
    with pytest.raises(CameraError, match="no camera with index 5"):
        webcam_open_args(WebcamSpec("5"), "win32", cams)


@pytest.mark.skipif(not sys.platform.startswith("linux") or any(Path("/dev").glob("video*")),
                    reason="needs a Linux machine without cameras")
@pytest.mark.parametrize("spec", ["webcam", "webcam:0", "webcam:/dev/video7?fps=30"])
def test_no_camera_is_a_clear_camera_error(spec):
    with pytest.raises(CameraError, match="no camera at /dev/video") as caught:
        open_source(spec)
    assert str(caught.value).startswith(spec) and "\n" not in str(caught.value)


class _VanishingCamera:
    """A real container whose reads fail with ENODEV after ``n_ok`` packets (camera unplugged)."""

    def __init__(self, path: Path, n_ok: int) -> None:
        self._c, self.n_ok = av.open(str(path)), n_ok

    def __getattr__(self, name):
        return getattr(self._c, name)

    def demux(self, stream):
        for i, packet in enumerate(self._c.demux(stream)):
            if i == self.n_ok:
                raise OSError(errno.ENODEV, "No such device")
            yield packet

    def close(self) -> None:
        self._c.close()


@pytest.mark.parametrize("codec,pix_fmt", [("mjpeg", "yuvj422p"), ("libx264", "yuv420p")])
def test_camera_vanishing_mid_stream_raises_after_delivered_frames(tmp_path, codec, pix_fmt):
    # H.264 with B-frames keeps frames inside the decoder: they must still be delivered
    clip = mk.write_video(tmp_path / "cam.mkv", n_frames=30, codec=codec, pix_fmt=pix_fmt)
    calls = []

    def opener(file, fmt, options):
        calls.append((file, fmt, options))
        return _VanishingCamera(clip, n_ok=12)

    src = open_webcam("webcam:0?size=64x48", opener=opener, platform="linux")
    assert calls == [("/dev/video0", "v4l2", {"video_size": "64x48"})]
    assert src.info.kind == "webcam" and src.path is None and src.info.n_frames is None
    got = []
    with pytest.raises(CameraError, match="camera stopped delivering frames") as caught:
        for f in src:
            got.append(f)
    assert str(caught.value).startswith("webcam:0") and "\n" not in str(caught.value)
    with av.open(str(clip)) as c:  # the frames whose packets arrived before the failure
        stream = c.streams.video[0]
        packets = [p for p, _ in zip(c.demux(stream), range(12))]
        arrived = sorted(round(p.pts * stream.time_base * 30) for p in packets)
    assert [mk.read_code(f.image) for f in got] == mk.codes(arrived)
    assert len(got) == 12


def test_camera_failing_before_any_frame(tmp_path):
    clip = mk.write_video(tmp_path / "cam.mkv", n_frames=5, codec="mjpeg", pix_fmt="yuvj422p")
    with pytest.raises(CameraError, match="camera stopped"):
        open_webcam("webcam", opener=lambda *a: _VanishingCamera(clip, 0), platform="linux")


@pytest.mark.parametrize("clip", ["d13", "d3"])  # 720 wide: padded rows (line size 768); 512
def test_kept_yuv_planes_are_the_decoders_samples(videos, clip):
    """Frame.yuv (the decoder's own frame, not a copy) holds the same samples as PyAV's own
    VideoFrame.to_ndarray, and its RGB image is the same frame."""
    import av
    import cv2

    from tracker.sources import open_source

    with open_source(str(videos[clip])) as src:
        src.keep_yuv = True
        ours = [f for f, _ in zip(src, range(5))]
    with av.open(str(videos[clip])) as c:
        theirs = [f.to_ndarray() for f, _ in zip(c.decode(video=0), range(5))]
    for f, ref in zip(ours, theirs):
        assert isinstance(f.yuv.frame, av.VideoFrame) and f.yuv.shape == ref.shape
        assert np.array_equal(f.yuv.to_array(), ref)
        # the same picture as the RGB image (BT.601 here; the clip's own matrix may differ)
        rgb = cv2.cvtColor(ref, cv2.COLOR_YUV2RGB_I420)
        assert np.abs(rgb.astype(int) - f.image).mean() < 4


@pytest.mark.parametrize("clip", ["short_hamilton_clip", "d13"])  # P frames; B frames too
def test_drawing_into_kept_frames_never_reaches_the_decoder(videos, clip):
    """The overlay draws into Frame.yuv in place while the decoder may still hold that picture
    as a reference for the frames after it. Scribbling over every frame as it arrives must leave
    the following frames exactly as a clean decode gives them (DecodedI420.planes makes the frame
    writable, which copies a picture the decoder still references)."""
    import av

    from tracker.sources import open_source

    n = 90
    with av.open(str(videos[clip])) as c:
        clean = [f.to_ndarray() for f, _ in zip(c.decode(video=0), range(n))]
    seen = []
    with open_source(str(videos[clip])) as src:
        src.keep_yuv = True
        for f, _ in zip(src, range(n)):
            seen.append(f.yuv.to_array())  # before the scribble
            y, u, v = f.yuv.planes()
            y[::3] = 255 - y[::3]
            u[:, ::2], v[:] = 0, 255
            assert not np.array_equal(f.yuv.to_array(), seen[-1])  # the frame itself changed
    assert len(seen) == n
    assert all(np.array_equal(a, b) for a, b in zip(seen, clean))


