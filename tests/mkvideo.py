"""Synthetic test media written with PyAV into temporary directories (test helper, not shipped).

Every writer takes the destination path first and returns it, so tests read like
``src = write_video(tmp_path / "rot.mp4", rotation_cw=90)``.

The default picture (:func:`pattern`) is built to be checked after lossy coding:

* four flat quadrants — top-left white, top-right red, bottom-left green, bottom-right blue — so
  every one of the eight orientations (rotations and mirrors) is distinguishable and colours can be
  compared away from the quadrant borders (:data:`QUADRANT_COLOURS`, :func:`quadrant_means`);
* a grey band across the middle whose level encodes the frame index modulo :data:`CODE_PERIOD`
  (:func:`read_code`), so dropped, repeated or reordered frames show up.

Bad inputs for error-path tests: :func:`write_zero_bytes`, :func:`write_random_bytes`,
:func:`write_text`, :func:`truncated_copy`, :func:`corrupt_copy`, :func:`write_audio_only`.
Still images: :func:`write_image` (png / jpg / bmp / webp / ppm / pgm through FFmpeg's encoders)
and :func:`write_ppm` (binary P6 written byte by byte, no encoder involved).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

QUADRANT_COLOURS: dict[str, tuple[int, int, int]] = {
    "tl": (255, 255, 255), "tr": (255, 0, 0), "bl": (0, 255, 0), "br": (0, 0, 255)}
"""RGB colour of each quadrant of :func:`pattern` (top-left, top-right, bottom-left, bottom-right).
"""

CODE_PERIOD = 16
_CODE_BASE, _CODE_STEP = 30, 12

ImageFn = Callable[[int], np.ndarray]


def pattern(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """The default test picture for frame ``index``: ``(height, width, 3) uint8`` RGB.

    Quadrants as in :data:`QUADRANT_COLOURS`; a horizontal band (rows ``[3h/8, 5h/8)``) of grey
    level ``28 + 8 * (index % 25)`` across the whole width.
    """
    img = np.empty((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    img[:h2, :w2] = QUADRANT_COLOURS["tl"]
    img[:h2, w2:] = QUADRANT_COLOURS["tr"]
    img[h2:, :w2] = QUADRANT_COLOURS["bl"]
    img[h2:, w2:] = QUADRANT_COLOURS["br"]
    img[3 * height // 8: 5 * height // 8] = code_level(index)
    return img


def code_level(index: int) -> int:
    """Grey level of the band that marks frame ``index`` (for custom pictures read by read_code)."""
    return _CODE_BASE + _CODE_STEP * (index % CODE_PERIOD)


def read_code(image: np.ndarray) -> int:
    """Frame index modulo :data:`CODE_PERIOD` read from the band of an upright :func:`pattern`.

    Reliable at 64x48 and above with x264/x265/vp9/mjpeg at default quality.
    """
    h, w = image.shape[:2]
    band = image[7 * h // 16: 9 * h // 16, w // 8: 7 * w // 8].astype(np.float64)
    return int(round((band.mean() - _CODE_BASE) / _CODE_STEP)) % CODE_PERIOD


def codes(indices: int | Sequence[int]) -> list[int]:
    """What :func:`read_code` gives for frames ``range(indices)`` or the listed frame indices."""
    seq = range(indices) if isinstance(indices, int) else indices
    return [i % CODE_PERIOD for i in seq]


def quadrant_means(image: np.ndarray) -> dict[str, np.ndarray]:
    """Mean RGB ``(3,) float64`` of the centre of each quadrant (away from the band and borders)."""
    h, w = image.shape[:2]
    ys = {"t": slice(h // 16, 3 * h // 16 + 1), "b": slice(13 * h // 16, 15 * h // 16 + 1)}
    xs = {"l": slice(w // 8, 3 * w // 8), "r": slice(5 * w // 8, 7 * w // 8)}
    return {k: image[ys[k[0]], xs[k[1]]].reshape(-1, 3).mean(axis=0) for k in QUADRANT_COLOURS}


def write_video(path: str | Path, *, n_frames: int = 10, size: tuple[int, int] = (64, 48),
                fps: int = 30, times: Sequence[float] | None = None,
                frames: ImageFn | Sequence[np.ndarray] | None = None,
                codec: str = "libx264", pix_fmt: str = "yuv420p",
                rotation_cw: int = 0, rotation_as: Literal["matrix", "tag"] = "matrix",
                sar: Fraction | None = None, audio: bool = False, faststart: bool = False,
                options: dict[str, str] | None = None,
                packet_times: Sequence[float] | None = None) -> Path:
    """Encode a small video and return ``path``; the suffix picks the container (.mp4, .mkv…).

    ``size`` is ``(width, height)`` of the stored grid. ``frames`` gives the pictures (a function of
    the index or a sequence, default :func:`pattern`). ``times`` (seconds, increasing) makes a
    variable-frame-rate stream with exactly these PTS (millisecond time base); otherwise frames are
    ``1/fps`` apart from 0. ``rotation_cw`` is the clockwise rotation a player applies for display
    (a portrait phone clip has 90): written as a display matrix (mp4/mov/mkv) or, with
    ``rotation_as="tag"``, as the legacy ``rotate`` stream tag (kept by mkv only). ``sar`` sets the
    sample aspect ratio. ``audio`` adds a mono AAC sine track of the same length. ``faststart``
    moves the mp4 index to the front (a truncated copy then still opens). ``options`` go to the
    encoder (e.g. ``{"crf": "0"}``). ``packet_times`` (seconds, one per frame) overwrite the muxed
    timestamps of an intra-only codec (mjpeg, ffv1) to make broken files: repeated timestamps are
    accepted by mkv, decreasing ones by no muxer.
    """
    path = Path(path)
    width, height = size
    n = (len(times) if times is not None else
         len(frames) if isinstance(frames, Sequence) else n_frames)
    get: ImageFn
    if frames is None:
        get = lambda i: pattern(i, width, height)  # noqa: E731
    elif isinstance(frames, Sequence):
        get = frames.__getitem__
    else:
        get = frames
    tb = Fraction(1, 1000) if times is not None else Fraction(1, fps)
    opts = {"movflags": "faststart"} if faststart else {}
    enc_opts = dict(options or {})
    if codec == "libx265":
        enc_opts.setdefault("x265-params", "log-level=error")
    with av.open(str(path), "w", options=opts) as out:
        vs = out.add_stream(codec, rate=fps, options=enc_opts)
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        vs.codec_context.time_base = tb
        if sar is not None:
            vs.codec_context.sample_aspect_ratio = Fraction(sar)
        if rotation_cw % 360:
            if rotation_as == "tag":
                vs.metadata["rotate"] = str(rotation_cw % 360)
            else:
                vs.set_display_rotation(-rotation_cw)  # PyAV's angle is counter-clockwise
        aus = None
        if audio:
            aus = out.add_stream("aac", rate=48000, layout="mono")
        k = 0
        for i in range(n + 1):
            if i < n:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(get(i)), format="rgb24")
                frame.pts = round(times[i] * 1000) if times is not None else i
                frame.time_base = tb
            for packet in vs.encode(frame if i < n else None):
                if packet_times is not None:
                    packet.pts = packet.dts = round(packet_times[k] / packet.time_base)
                    k += 1
                out.mux(packet)
        if aus is not None:
            total_s = (times[-1] + 1.0 / fps) if times is not None else n / fps
            _encode_sine(out, aus, total_s)
    return path


def _encode_sine(out: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    rate, chunk = 48000, 1024
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pcm = (0.2 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    for start in range(0, n, chunk):
        block = pcm[start:start + chunk]
        if len(block) < chunk:
            block = np.pad(block, (0, chunk - len(block)))
        af = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
        af.sample_rate, af.pts, af.time_base = rate, start, Fraction(1, rate)
        for packet in stream.encode(af):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def write_audio_only(path: str | Path, seconds: float = 0.5) -> Path:
    """A container (suffix decides: .m4a, .mp4, .mkv) with one AAC track and no video stream."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        _encode_sine(out, out.add_stream("aac", rate=48000, layout="mono"), seconds)
    return path


_IMAGE_CODECS = {".png": ("png", "rgb24"), ".jpg": ("mjpeg", "yuvj444p"),
                 ".jpeg": ("mjpeg", "yuvj444p"), ".bmp": ("bmp", "bgr24"),
                 ".webp": ("libwebp", "yuv420p"), ".ppm": ("ppm", "rgb24"),
                 ".pgm": ("pgm", "gray")}


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Encode one ``(H, W, 3) uint8`` RGB picture as a still image chosen by the suffix."""
    path = Path(path)
    codec, pix_fmt = _IMAGE_CODECS[path.suffix.lower()]
    h, w = image.shape[:2]
    with av.open(str(path), "w", format="image2") as out:
        s = out.add_stream(codec, rate=1)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if codec == "mjpeg":
            s.codec_context.qmin = s.codec_context.qmax = 2  # near-lossless
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in [*s.encode(frame), *s.encode()]:
            out.mux(packet)
    return path


def write_ppm(path: str | Path, image: np.ndarray) -> Path:
    """Binary PPM (P6, maxval 255) of a ``(H, W, 3) uint8`` RGB picture, written without FFmpeg."""
    path = Path(path)
    h, w = image.shape[:2]
    path.write_bytes(b"P6\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(image, np.uint8).tobytes())
    return path


def write_zero_bytes(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_random_bytes(path: str | Path, n_bytes: int = 65536, seed: int = 0) -> Path:
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, np.uint8).tobytes())
    return path


def write_text(path: str | Path, text: str = "this is not a video\n" * 50) -> Path:
    path = Path(path)
    path.write_text(text)
    return path


def truncated_copy(src: str | Path, dst: str | Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of the bytes of ``src`` (a recording cut off mid-write)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def corrupt_copy(src: str | Path, dst: str | Path, at: float = 0.5, n_bytes: int = 2000,
                 seed: int = 0) -> Path:
    """A copy of ``src`` with ``n_bytes`` random bytes overwritten at relative offset ``at``."""
    data = bytearray(Path(src).read_bytes())
    start = int(len(data) * at)
    noise = np.random.default_rng(seed).integers(0, 256, n_bytes, np.uint8).tobytes()
    data[start:start + n_bytes] = noise[: max(0, min(n_bytes, len(data) - start))]
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst
