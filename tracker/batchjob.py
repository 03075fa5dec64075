"""One file of a batch: the job and options that travel to a worker, and the worker's task.

:func:`process_file` is what every engine (:mod:`tracker.engines`) runs per input: it tracks the
file exactly as ``face3d track`` does (:func:`tracker.track.track_video`, or
:func:`tracker.bfm_track.track_video_bfm` for a BFM model), writes the coefficient file (CSV, or
Parquet through :mod:`tracker.parquetout`) and its sidecar, stamps the sidecar with the job's
fingerprint (``batch.fingerprint``: what lets a re-run skip the file), and returns a small
:class:`FileOutcome`. It never raises: an unreadable input is ``error_kind="input"``, anything
else ``"crash"``; either way no partial file or temporary is left. The tracker writes to hidden
temporaries beside the target (``.NAME.tmp-PID.csv``); the coefficient file is renamed into place
and the stamped sidecar written last, so "output and sidecar with this fingerprint" means done.
An unreadable input also removes an earlier run's output of it (it is stale); a crash keeps it.
A Ctrl-C inside the worker removes the temporaries and propagates.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from .errors import InputError

log = logging.getLogger(__name__)

FileFormat = Literal["csv", "parquet"]


@dataclass(frozen=True)
class BatchOptions:
    """What every file of a batch shares (picklable: it travels with each task).

    ``model`` is an absolute path (ICT ``.npz`` or BFM ``.mat``); ``cfg`` the tracking config;
    ``corr`` a prebuilt MediaPipe correspondence for a BFM model (``None`` for ICT).
    """

    out_dir: str
    model: str
    cfg: Any
    fmt: FileFormat = "csv"
    landmarks: bool = False
    arkit: bool = False
    max_frames: int | None = None
    allow_truncated: bool = False
    progress: bool = False
    corr: Any = None

    @property
    def is_bfm(self) -> bool:
        return self.model.lower().endswith(".mat")


@dataclass(frozen=True)
class FileJob:
    """One input: absolute path, path relative to the batch root (POSIX), absolute output path."""

    input: str
    rel: str
    output: str
    fingerprint: str
    opts: BatchOptions


@dataclass(frozen=True)
class FileOutcome:
    """What a worker sends back for one file (no per-frame data)."""

    status: Literal["ok", "failed"]
    frames: int = 0
    tracked_frames: int = 0
    seconds: float = 0.0
    error_kind: Literal["", "input", "crash"] = ""
    error: str = ""
    worker: str = ""


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    """The sidecar JSON of a coefficient file: ``OUT.csv.json`` / ``OUT.parquet.json``."""
    return Path(str(output) + ".json")


_MODELS: dict[str, Any] = {}


def load_model(path: str) -> Any:
    """The ICT (``.npz``) or BFM (``.mat``) face model, cached per process."""
    if path not in _MODELS:
        if path.lower().endswith(".mat"):
            from .bfm import load_bfm
            _MODELS[path] = load_bfm(path)
        else:
            from .facemodel import load_face_model
            _MODELS[path] = load_face_model(path)
    return _MODELS[path]


class _Progress:
    """Batches per-frame callbacks into a few ``report("frames", n)`` calls per second."""

    def __init__(self, report: Callable[[str, int], None], every_s: float = 0.25):
        self.report, self.every_s, self.n, self.last = report, every_s, 0, time.monotonic()

    def __call__(self, _frame: object) -> None:
        self.n += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.flush()
            self.last = now

    def flush(self) -> None:
        if self.n:
            self.report("frames", self.n)
            self.n = 0


def _remove(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def process_file(job: FileJob, report: Callable[[str, int], None]) -> FileOutcome:
    """Track one file and write its coefficient file + sidecar (engine task; never raises)."""
    from .csvout import write_json_atomic

    opts = job.opts
    worker = f"{socket.gethostname()}:{os.getpid()}"
    t0 = time.perf_counter()
    out = Path(job.output)
    side = sidecar_path(out)
    # the tracker writes CSV + sidecar to temporaries beside the target (same file system)
    csv_path = out.with_name(f".{out.name}.tmp-{os.getpid()}.csv")
    tmp_side = sidecar_path(csv_path)
    try:
        model = load_model(opts.model)
        if opts.progress:
            from .sources import probe
            report("total", int(probe(job.input).n_frames or 0))
        prog = _Progress(report)
        if opts.is_bfm:
            from .bfm_track import track_video_bfm
            summary = track_video_bfm(job.input, model, opts.cfg, csv_path, corr=opts.corr,
                                      landmarks=opts.landmarks, on_frame=prog,
                                      allow_truncated=opts.allow_truncated,
                                      max_frames=opts.max_frames)
        else:
            from .track import TrackOutputs, track_video
            summary, _ = track_video(job.input, model, opts.cfg,
                                     TrackOutputs(csv_path, landmarks=opts.landmarks, arkit=opts.arkit),
                                     progress=False, allow_truncated=opts.allow_truncated,
                                     on_frame=prog, max_frames=opts.max_frames,
                                     pipelined=False)  # one core per worker: files in parallel
        prog.flush()
        if summary.interrupted:
            raise KeyboardInterrupt
        with open(tmp_side) as fh:
            meta = json.load(fh)
        meta["file_format"] = opts.fmt
        meta["batch"] = {"input": job.rel, "fingerprint": job.fingerprint,
                         "max_frames": opts.max_frames}
        if opts.fmt == "parquet":
            from .parquetout import csv_to_parquet
            csv_to_parquet(csv_path, out, meta)
            _remove(csv_path)
        else:
            os.replace(csv_path, out)
        write_json_atomic(side, meta)  # last: its fingerprint marks the file as done
        _remove(tmp_side)
        return FileOutcome("ok", summary.frames, summary.tracked_frames,
                           time.perf_counter() - t0, worker=worker)
    except InputError as e:
        # this input gives no output: nor may an earlier run's output of it stay behind
        _remove(csv_path, tmp_side, side, out)
        return FileOutcome("failed", seconds=time.perf_counter() - t0, error_kind="input",
                           error=str(e).splitlines()[0] if str(e) else type(e).__name__,
                           worker=worker)
    except KeyboardInterrupt:
        _remove(csv_path, tmp_side)
        raise
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
        log.debug("%s failed", job.input, exc_info=True)
        _remove(csv_path, tmp_side)  # an earlier run's output, if any, stays (retried next run)
        msg = (str(e).splitlines() or [""])[0]
        return FileOutcome("failed", seconds=time.perf_counter() - t0, error_kind="crash",
                           error=f"{type(e).__name__}: {msg}", worker=worker)


