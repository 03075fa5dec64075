"""Frame sources: video files, still images, network streams and webcams, decoded with PyAV.

``open_source(spec)`` returns a :class:`Source`: ``.info`` (:class:`~tracker.types.VideoInfo`),
iteration yielding :class:`~tracker.types.Frame`, ``close()`` and context-manager use.
``probe(spec)`` returns the ``VideoInfo`` alone. ``spec`` is one of

* a file path — anything FFmpeg reads (mp4, mov, mkv, webm, avi, ts, …; any codec or pixel
  format);
* a still image (jpg, png, ppm/pgm, bmp, webp, tiff — recognised by FFmpeg's image demuxers, not
  by the suffix): one frame at time 0 (``loop=True`` repeats it at :data:`IMAGE_LOOP_FPS`);
* a URL FFmpeg can open (``rtsp://``, ``http://``, ``udp://``, …), treated as a live file;
* a webcam: ``webcam`` (= ``webcam:0``), ``webcam:N``, ``webcam:/dev/video2`` (Linux) or
  ``webcam:DEVICE NAME`` (macOS, Windows), optionally followed by ``?size=1280x720&fps=30``. The
  device layer is v4l2 on Linux, avfoundation on macOS, dshow on Windows; index N is
  ``/dev/videoN`` on Linux and the N-th video device elsewhere.

Conventions of the frames yielded (pinned by ``tests/test_sources.py``):

* ``image`` is ``(H, W, 3) uint8`` RGB, C-contiguous, whatever the input pixel format (10-bit,
  4:4:4, grey, alpha …), upright: the display rotation (display matrix, JPEG EXIF orientation, or
  the legacy ``rotate`` stream tag) is applied with ``np.rot90``. ``info.rotation_deg`` is the
  clockwise angle applied (0/90/180/270); ``info.width/height`` are after rotation.
* Non-square pixels are *not* resampled: ``info.sar`` (pixel width / height, after rotation) goes
  to :func:`tracker.camera.camera_from_fov`.
* ``time_s`` is ``(pts - stream.start_time) * time_base``: seconds from the start of the video
  stream, so a stream whose first PTS is > 0 still starts at 0.0. ``Source.start_time_s`` is that
  origin on the container clock (needed to line up a copied audio track). Times are strictly
  increasing: a missing or non-increasing PTS is replaced by previous time + one frame interval
  (warned once). ``loop=True`` continues the clock across restarts. ``index`` is the 0-based
  position in decode order, also continuing across loops.

Errors: an unreadable input raises :class:`~tracker.errors.InputError` (or
:class:`~tracker.errors.NoVideoStreamError`) with one line ``"<spec>: <what is wrong>"``. A file
that ends early (truncated recording, unreadable tail) is *not* an error: the decodable frames are
yielded, a warning is logged and ``Source.truncated`` becomes True. Corrupt packets are skipped
with a warning (counted in ``Source.n_corrupt``). A webcam that is missing raises
:class:`~tracker.errors.CameraError` on open; one that fails mid-stream raises ``CameraError``
from the iterator after every frame already decoded has been yielded.
"""

from __future__ import annotations

import glob
import itertools
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .errors import CameraError, InputError, NoVideoStreamError
from .types import Frame, VideoInfo
from .videoout import DecodedI420

log = logging.getLogger(__name__)

IMAGE_LOOP_FPS = 30.0
"""Rate at which a looped still image is repeated (``loop=True``)."""
FILE_THREAD_TYPE = "SLICE"
"""FFmpeg decoder threading for files. Frame threading ("AUTO") decodes faster on an idle
machine (d10 decode + rgb24 alone: 1.04 → 0.86 ms/frame) but costs ~10 % more CPU, and in the
pipeline the other core is MediaPipe's: decode + MediaPipe in two threads, medians of 3 rounds,
ms/frame AUTO → SLICE: d3 3.48 → 3.39, d12 3.35 → 3.25, d13 (720x1280) 4.42 → 3.75, s18 3.71 →
3.44, WDA 3.29 → 3.17. Live sources use slice threads too: frame threading delays every frame by
``thread_count - 1`` frames."""
LIVE_THREAD_TYPE = "SLICE"
_FALLBACK_FPS = 30.0
_MAX_CORRUPT_WARNINGS = 3
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_FFMPEG_ERRORS = (av.error.FFmpegError, OSError)

Opener = Callable[[str, str, dict[str, str]], Any]
"""``opener(file, format, options)`` → an open PyAV input container (injectable for tests)."""


@dataclass(frozen=True)
class WebcamSpec:
    """A parsed ``webcam:DEVICE?size=WxH&fps=F`` spec; ``device`` is ``""`` for the default one."""

    device: str = ""
    size: tuple[int, int] | None = None
    fps: float | None = None


def is_webcam_spec(spec: str) -> bool:
    return spec == "webcam" or spec.startswith("webcam:")


def parse_webcam_spec(spec: str) -> WebcamSpec:
    """``"webcam:0?size=1280x720&fps=30"`` → ``WebcamSpec("0", (1280, 720), 30.0)``."""
    body = spec.partition(":")[2]
    device, _, query = body.partition("?")
    size, fps = None, None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "size" and (m := re.fullmatch(r"(\d+)x(\d+)", value)):
            size = (int(m[1]), int(m[2]))
        elif key == "fps" and re.fullmatch(r"\d+(\.\d+)?", value) and float(value) > 0:
            fps = float(value)
        else:
            raise InputError(f"{spec}: bad webcam option {key}={value!r} "
                             "(known: size=WIDTHxHEIGHT, fps=RATE)")
    return WebcamSpec(device.strip(), size, fps)


def webcam_open_args(ws: WebcamSpec, platform: str, list_devices: Callable[[], list[str]] = list,
                     ) -> tuple[str, str, dict[str, str]]:
    """PyAV ``(file, format, options)`` for a webcam on ``platform`` (``sys.platform`` value).

    ``list_devices`` names the video devices (used on Windows to turn an index into a name).
    """
    options: dict[str, str] = {}
    if ws.size:
        options["video_size"] = f"{ws.size[0]}x{ws.size[1]}"
    if ws.fps:
        options["framerate"] = f"{ws.fps:g}"
    dev = ws.device or "0"
    if platform.startswith("linux"):
        return (f"/dev/video{dev}" if dev.isdigit() else dev), "v4l2", options
    if platform == "darwin":
        options.setdefault("framerate", "30")  # avfoundation's 29.97 default: most cameras refuse
        return (f"{dev}:none" if dev.isdigit() else dev), "avfoundation", options
    if platform in ("win32", "cygwin"):
        if dev.isdigit():
            names = list_devices()
            if int(dev) >= len(names):
                raise CameraError(f"webcam:{dev}: no camera with index {dev} "
                                  f"(found {len(names)}: {', '.join(names) or 'none'})")
            dev = names[int(dev)]
        return (dev if dev.startswith("video=") else f"video={dev}"), "dshow", options
    raise CameraError(f"webcams need Linux (v4l2), macOS (avfoundation) or Windows (dshow), "
                      f"not {platform}")


def rotation_cw(frame_rotation_ccw: float, rotate_tag: str | None = None) -> int:
    """Clockwise display rotation in {0, 90, 180, 270} from PyAV's counter-clockwise
    ``VideoFrame.rotation`` or, when that is 0, the legacy clockwise ``rotate`` stream tag."""
    cw = -float(frame_rotation_ccw)
    if cw == 0 and rotate_tag:
        try:
            cw = float(rotate_tag)
        except ValueError:
            log.warning("ignoring unreadable rotate tag %r", rotate_tag)
    quarter = round(cw / 90.0)
    if abs(cw - 90.0 * quarter) > 1.0:
        log.warning("display rotation %.1f deg is not a multiple of 90; using %d", cw, 90 * quarter)
    return int(90 * quarter) % 360


def upright(image: np.ndarray, rotation_deg: int) -> np.ndarray:
    """Rotate a stored ``(H, W, C)`` image clockwise by ``rotation_deg``; C-contiguous result."""
    return np.ascontiguousarray(np.rot90(image, k=-(rotation_deg // 90)) if rotation_deg else image)


class Source:
    """An open frame source; iterate it for :class:`Frame` s. Build it with :func:`open_source`.

    Attributes: ``info``; ``path`` (file path or URL, ``None`` for webcams — e.g. to copy audio);
    ``start_time_s`` (container time of ``time_s == 0``); ``truncated`` (the last pass ended early);
    ``n_corrupt`` (packets skipped as undecodable); ``frames_read``. Iterating again after the end
    restarts a file from its beginning.

    ``keep_yuv`` (set before iterating; clearing it later takes effect from the next frame on):
    frames also carry the decoder's own frame (:attr:`Frame.yuv`, a
    :class:`~tracker.videoout.DecodedI420`) when it is 8-bit limited-range 4:2:0 (``yuv420p``),
    even-sized and unrotated — the overlay draws into it and re-encodes it without a full-frame
    RGB → YUV conversion.
    """

    def __init__(self, spec: str, kind: Literal["file", "webcam"], opener: Callable[[], Any], *,
                 loop: bool = False, realtime: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec, self.kind, self._opener = spec, kind, opener
        self.live = kind == "webcam" or bool(_URL.match(spec))
        self.loop, self.realtime = loop and kind != "webcam", realtime and not self.live
        self._clock, self._sleep = clock, sleep
        self.path: str | None = None if kind == "webcam" else spec
        self.truncated, self.n_corrupt, self.frames_read = False, 0, 0
        self._tail_corrupt: list[str] = []
        self.warn_truncated = True  # a caller that reports truncation itself sets this False
        self.keep_yuv = False
        self._rgb = VideoReformatter()  # one swscale context for the whole stream
        self._warned: set[str] = set()
        self._active: Iterator[Frame] | None = None
        # (container, generator of av.VideoFrames, its first frame), consumed by the next pass
        self._pending: tuple[Any, Iterator[Any], Any] | None = self._start()
        self.info = self._make_info(*self._pending)

    # -- opening -------------------------------------------------------------------------------
    def _start(self) -> tuple[Any, Iterator[Any], Any]:
        container = self._opener()
        try:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["nothing"]
                raise NoVideoStreamError(
                    f"{self.spec}: no video stream (contains: {', '.join(kinds)})")
            stream = container.streams.video[0]
            stream.thread_type = LIVE_THREAD_TYPE if self.live else FILE_THREAD_TYPE
            gen = self._decode(container, stream)
            first = next(gen, None)
            if first is None:
                what = "no frame before the camera stopped" if self.kind == "webcam" else \
                    "no decodable video frames (file truncated or corrupt)"
                raise (CameraError if self.kind == "webcam" else InputError)(f"{self.spec}: {what}")
            return container, gen, first
        except BaseException:
            container.close()
            raise

    def _make_info(self, container: Any, gen: Iterator[Any], first: Any) -> VideoInfo:
        stream = container.streams.video[0]
        fmt = container.format.name
        if self.kind == "file" and (fmt == "image2" or fmt.endswith("_pipe")) \
                and "%" not in self.spec:  # an image sequence pattern is a video
            self.kind = "image"  # also an image under a video name, e.g. a JPEG called clip.mp4
        self._tb = tb = stream.time_base or Fraction(1, 1)
        self._origin = stream.start_time if stream.start_time is not None else first.pts
        self.start_time_s = float((self._origin or 0) * tb)
        tag = next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), None)
        rot = rotation_cw(first.rotation, tag)
        sar_f = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        sar = float(sar_f) if sar_f else 1.0
        w, h = first.width, first.height
        if rot in (90, 270):
            w, h, sar = h, w, 1.0 / sar
        rate = stream.average_rate or (stream.guessed_rate if self.live else None)
        fps = float(rate) if rate else None
        if self.kind == "image":
            return VideoInfo(self.spec, "image", w, h, None, sar, rot, 1, None,
                             stream.codec_context.name, False)
        duration = (float(stream.duration * tb) if stream.duration else
                    container.duration / 1e6 if container.duration else None)
        n_frames = stream.frames or (round(duration * fps) if duration and fps else None)
        # End of the video on its own clock, for the truncation check. Lenient on purpose (a false
        # alarm is worse than a miss): a container duration (mkv, ts) is read as an end time.
        self._expected_end_s = (float(stream.duration * tb) if stream.duration else
                                duration - self.start_time_s if duration else None)
        if self.live:
            duration, n_frames = None, None
        return VideoInfo(self.spec, "webcam" if self.kind == "webcam" else "file", w, h, fps, sar,
                         rot, n_frames, duration, stream.codec_context.name,
                         bool(container.streams.audio))

    # -- decoding ------------------------------------------------------------------------------
    def _decode(self, container: Any, stream: Any) -> Iterator[Any]:
        """av.VideoFrames of one pass; skips corrupt packets; read errors as in the module doc."""
        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except (StopIteration, av.error.EOFError):
                return
            except _FFMPEG_ERRORS as exc:
                yield from self._flush(stream)
                if self.kind == "webcam":
                    raise CameraError(f"{self.spec}: camera stopped delivering frames "
                                      f"({_reason(exc)})") from None
                self.truncated = True
                log.warning("%s: read error, stopping here (%s)", self.spec, _reason(exc))
                return
            try:
                frames = stream.decode(packet)
            except av.error.EOFError:
                return
            except _FFMPEG_ERRORS as exc:
                # reported once a later packet decodes: undecodable packets at the very end are
                # the cut of a truncated file, which _check_complete reports as such
                self._tail_corrupt.append(_reason(exc))
                continue
            if frames and self._tail_corrupt and packet.size:  # not the end-of-stream flush
                self._report_corrupt()
            yield from frames

    def _report_corrupt(self) -> None:
        for reason in self._tail_corrupt:
            self.n_corrupt += 1
            if self.n_corrupt <= _MAX_CORRUPT_WARNINGS:
                log.warning("%s: skipped a corrupt packet (%s)", self.spec, reason)
        self._tail_corrupt.clear()

    def _flush(self, stream: Any) -> list[Any]:
        try:
            return list(stream.decode(None))
        except _FFMPEG_ERRORS:
            return []

    def __iter__(self) -> Iterator[Frame]:
        if self._active is not None:
            self._active.close()
        self._active = self._frames()
        return self._active

    def _frames(self) -> Iterator[Frame]:
        offset, index, t_prev, wall0 = 0.0, 0, -math.inf, None
        while True:
            if self._pending is None:
                self._pending = self._start()
            container, gen, first = self._pending
            self._pending = None
            self.truncated = False
            t_last, count, dt = -math.inf, 0, self._frame_interval()
            try:
                for vf in itertools.chain([first], gen):
                    t = offset + self._pass_time(vf, t_last - offset, dt)
                    if t <= t_prev:
                        self._warn_once("time", "%s: missing or non-increasing timestamps; "
                                        "using previous + one frame interval", self.spec)
                        t = t_prev + dt
                    image = self._to_rgb(vf)
                    yuv = self._yuv(vf) if self.keep_yuv else None
                    if self.realtime:
                        wall0 = wall0 if wall0 is not None else self._clock() - t
                        if (wait := wall0 + t - self._clock()) > 0:
                            self._sleep(wait)
                    yield Frame(index, t, image, yuv)
                    index, count, t_last, t_prev = index + 1, count + 1, t, t
                    self.frames_read += 1
            finally:
                container.close()
            self._check_complete(count, t_last - offset)
            if not self.loop:
                return
            offset = t_last + dt

    def _pass_time(self, vf: Any, t_prev: float, dt: float) -> float:
        if self.kind == "image":
            return 0.0
        if vf.pts is None or self._origin is None:
            return t_prev + dt if t_prev > -math.inf else 0.0
        return float((vf.pts - self._origin) * self._tb)  # frames from a flush lack time_base

    def _frame_interval(self) -> float:
        return 1.0 / (IMAGE_LOOP_FPS if self.kind == "image" else self.info.fps or _FALLBACK_FPS)

    def _yuv(self, vf: Any) -> DecodedI420 | None:
        if (vf.format.name != "yuv420p" or vf.color_range == 2 or self.info.rotation_deg
                or vf.width % 2 or vf.height % 2
                or (vf.height, vf.width) != (self.info.height, self.info.width)):
            return None
        # the frame itself, not a copy of its planes (0.57 ms a 720x1280 frame plane by plane,
        # 0.78 with VideoFrame.to_ndarray): whoever draws into it makes it writable first,
        # which copies only if the decoder still holds it (see DecodedI420)
        return DecodedI420(vf)

    def _to_rgb(self, vf: Any) -> np.ndarray:
        try:
            # a kept reformatter reuses its swscale context (a new one per frame: 0.29 → 0.14
            # ms a 512x512 frame); like VideoFrame.to_ndarray it reads the frame's colour tags.
            # One swscale thread: its default (one per core) took 0.45 ms of CPU a 720x1280
            # frame in threads of its own, with ~5 context switches, beside 0.38 ms on one
            # thread (the cores are busy with MediaPipe and the rest anyway)
            rgb = self._rgb.reformat(vf, format="rgb24", threads=1).to_ndarray()
        except _FFMPEG_ERRORS + (ValueError,) as exc:
            raise InputError(f"{self.spec}: cannot convert pixel format {vf.format.name} to RGB "
                             f"({_reason(exc)})") from None
        image = upright(rgb, self.info.rotation_deg)
        if image.shape[:2] != (self.info.height, self.info.width):
            self._warn_once("size", "%s: frame size changed mid-stream to %dx%d", self.spec,
                            image.shape[1], image.shape[0])
        return image

    def _check_complete(self, count: int, t_last: float) -> None:
        if self.kind != "file" or self.live:
            self._report_corrupt()
            return
        info, dt = self.info, self._frame_interval()
        if self._expected_end_s is not None and t_last < self._expected_end_s - max(0.25, 3 * dt):
            self.truncated = True
        if self._tail_corrupt and self.truncated:
            log.debug("%s: %d undecodable packet(s) at the cut", self.spec, len(self._tail_corrupt))
            self._tail_corrupt.clear()
        self._report_corrupt()
        if self.truncated:
            log.log(logging.WARNING if self.warn_truncated else logging.DEBUG,
                    "%s: video ends early at %.2f s after %d frames (expected %s frames, "
                    "%s s): file truncated or damaged", self.spec, max(t_last, 0.0), count,
                    info.n_frames, info.duration_s)
        if self.n_corrupt:
            log.warning("%s: %d corrupt packet(s) skipped", self.spec, self.n_corrupt)

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the container (idempotent); a suspended iterator is finished. An iterator that is
        running in another thread at this moment closes its container itself when it stops."""
        if self._active is not None:
            try:
                self._active.close()
            except ValueError:  # "generator already executing" (a prefetch thread)
                log.debug("%s: iterator busy in another thread; it closes on exit", self.spec)
            self._active = None
        if self._pending is not None:
            self._pending[0].close()
            self._pending = None

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    log_line = getattr(exc, "log", None)
    if log_line and len(log_line) >= 3:
        text += f": {str(log_line[2]).strip()}"
    return text


def _file_error(spec: str, exc: BaseException) -> InputError:
    """One-line diagnosis of a file FFmpeg refused to open."""
    if isinstance(exc, PermissionError):
        return InputError(f"{spec}: permission denied")
    if isinstance(exc, IsADirectoryError):
        return InputError(f"{spec}: is a directory, not a video or image")
    if isinstance(exc, av.error.InvalidDataError):
        with open(spec, "rb") as fh:
            head = fh.read(512)
        if head[4:8] == b"ftyp":
            what = ("MP4/MOV without its index (moov atom): a recording cut off before it was "
                    "finalised, or a truncated copy; no frames can be read")
        elif head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
            what = "a text file, not a video or image"
        else:
            what = "not a video or image FFmpeg can read (unknown format or corrupt data)"
        return InputError(f"{spec}: {what}")
    return InputError(f"{spec}: cannot open ({_reason(exc)})")


def _open_file(spec: str) -> Any:
    if not _URL.match(spec):
        p = Path(spec)
        if not p.exists():
            raise InputError(f"{spec}: no such file")
        if p.is_file() and p.stat().st_size == 0:
            raise InputError(f"{spec}: empty file (0 bytes)")
    try:
        return av.open(spec, timeout=(10.0, 10.0)) if _URL.match(spec) else av.open(spec)
    except _FFMPEG_ERRORS as exc:
        if _URL.match(spec):
            raise InputError(f"{spec}: cannot open stream ({_reason(exc)})") from None
        raise _file_error(spec, exc) from None


def _list_dshow_devices() -> list[str]:
    return [d.name for d in av.device.enumerate_input_devices("dshow") if "video" in d.media_types]


def _default_opener(file: str, fmt: str, options: dict[str, str]) -> Any:
    return av.open(file, format=fmt, options=options)


def open_webcam(spec: str = "webcam", *, opener: Opener = _default_opener,
                platform: str = sys.platform) -> Source:
    """Open a webcam spec (see module doc) through ``opener(file, format, options)``."""
    ws = parse_webcam_spec(spec)
    file, fmt, options = webcam_open_args(ws, platform, _list_dshow_devices)

    def open_device() -> Any:
        try:
            return opener(file, fmt, options)
        except _FFMPEG_ERRORS as exc:
            if isinstance(exc, FileNotFoundError):
                found = ", ".join(sorted(glob.glob("/dev/video*"))) if fmt == "v4l2" else ""
                what = f"no camera at {file} (video devices found: {found or 'none'})"
            elif isinstance(exc, PermissionError):
                what = f"permission denied on {file} (is the user in the 'video' group?)"
            else:
                what = f"cannot open camera {file} via {fmt} ({_reason(exc)})"
            raise CameraError(f"{spec}: {what}") from None

    return Source(spec, "webcam", open_device)


def open_source(spec: str | os.PathLike[str], *, loop: bool = False, realtime: bool = False,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> Source:
    """Open a file, image, URL or webcam spec (see module doc) and read its first frame.

    ``loop`` restarts a file at its end with time continuing (live server); ``realtime`` paces
    file frames to the wall clock by their timestamps (``clock``/``sleep`` are injectable for
    tests). Both are ignored for webcams, which are real time by nature.
    """
    spec = os.fspath(spec)
    if is_webcam_spec(spec):
        return open_webcam(spec)
    return Source(spec, "file", lambda: _open_file(spec), loop=loop, realtime=realtime,
                  clock=clock, sleep=sleep)


def probe(spec: str | os.PathLike[str]) -> VideoInfo:
    """The :class:`VideoInfo` of ``spec`` (opens it and decodes one frame, no more)."""
    with open_source(spec) as src:
        return src.info
