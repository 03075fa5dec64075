"""``face3d batch``: a folder (or glob) of videos → one coefficient file + sidecar per video.

::

    face3d batch INPUT_DIR_OR_GLOB --out DIR [--workers N] [--engine local|ray] [--address ADDR]
                 [--format csv|parquet] [--model ICT.npz|BFM_model_front.mat] [tracking options]

Inputs: a folder (searched recursively for :data:`VIDEO_SUFFIXES`), a glob (quote it; ``**``
recurses; whatever it matches is taken) or one file. Outputs mirror the inputs: ``IN/a/b.mp4`` →
``DIR/a/b.csv`` + ``DIR/a/b.csv.json`` (or ``b.parquet`` + ``b.parquet.json``), paths relative
to the input folder (for a glob: to its folder part before the first wildcard). Two inputs that
would share an output (``b.mp4``, ``b.mov``) keep their suffix: ``b.mp4.csv``, ``b.mov.csv``.
With a BFM model (a ``.mat`` in Deep3DFaceRecon's layout) the files carry the 257-coefficient
layout of :mod:`tracker.bfm`. Files are smoothed offline (zero-phase) unless ``--smooth`` says
otherwise, exactly as ``face3d track`` does.

Per file, the work is :func:`process_file` (one engine task: :mod:`tracker.engines`). A file that
cannot be read (corrupt, truncated, not a video) is recorded as failed and leaves no output; the
batch goes on. ``DIR/manifest.jsonl`` gets one record per file attempted (:mod:`tracker.manifest`),
``DIR/summary.json`` the run's counts.

Re-running the same command skips every file whose output is complete and was made from the same
input (size, modification time) with the same settings — the sidecar's ``batch.fingerprint``
says so — and every file that failed as unreadable with the same fingerprint (``--retry-failed``
tries those again; ``--force`` redoes everything). Crashed files are always retried.

Exit status: 0 every file ok (now or in an earlier run); :data:`EXIT_PARTIAL` (3) one or more
files failed, in this run or (skipped as unreadable) in an earlier one — the others were written,
the manifest names the failures; 1 a usage problem found before any work
(no inputs, bad model); 130 interrupted (files finished so far are complete and recorded).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .batchjob import (BatchOptions, FileFormat, FileJob, FileOutcome, load_model, process_file,
                       sidecar_path)
from .errors import InputError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts",
                            ".m2ts", ".flv", ".wmv", ".mpg", ".mpeg", ".3gp", ".ogv"})

# ------------------------------------------------------------------------------- discovery

def discover_inputs(spec: str) -> tuple[Path, list[Path]]:
    """``(root, files)`` for a folder, glob or single file (sorted; see the module docstring)."""
    p = Path(spec)
    if glob.has_magic(spec):
        parts = Path(spec).parts
        k = next(i for i, s in enumerate(parts) if glob.has_magic(s))
        root = Path(*parts[:k]) if k else Path(".")
        files = sorted(Path(f) for f in glob.glob(spec, recursive=True) if Path(f).is_file())
    elif p.is_dir():
        root = p
        files = sorted(f for f in p.rglob("*")
                       if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES
                       and not any(s.startswith(".") for s in f.relative_to(p).parts))
    elif p.is_file():
        root, files = p.parent, [p]
    else:
        raise InputError(f"{spec}: no such file or folder")
    if not files:
        raise InputError(f"{spec}: no video files found")
    return root, files


def output_paths(root: Path, files: list[Path], out_dir: Path, fmt: FileFormat) -> list[Path]:
    """Mirrored output paths (``.csv``/``.parquet``), suffix kept where two inputs would collide."""
    ext = "." + fmt
    rels = [f.relative_to(root) for f in files]
    plain = [out_dir / r.with_suffix(ext) for r in rels]
    seen: dict[Path, int] = {}
    for o in plain:
        seen[o] = seen.get(o, 0) + 1
    return [out_dir / r.with_name(r.name + ext) if seen[o] > 1 else o for r, o in zip(rels, plain)]


def is_done(job: FileJob) -> bool:
    """The output and its sidecar exist and the sidecar carries this job's fingerprint."""
    out, side = Path(job.output), sidecar_path(job.output)
    if not (out.is_file() and side.is_file()):
        return False
    try:
        with open(side) as fh:
            return json.load(fh).get("batch", {}).get("fingerprint") == job.fingerprint
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------- the batch

def run_settings(opts: BatchOptions) -> dict[str, Any]:
    """The settings that go into every file's fingerprint."""
    from . import __version__
    from .smoothing import load_smoothing_config

    st = os.stat(opts.model)
    cfg = opts.cfg
    return {"tool": __version__, "model": {"path": opts.model, "size": st.st_size,
                                          "mtime_ns": st.st_mtime_ns},
            "track": asdict(cfg),
            "smoothing": asdict(load_smoothing_config()) if cfg.smooth != "none" else None,
            "format": opts.fmt, "layout": "bfm257" if opts.is_bfm else "face3d",
            "landmarks": opts.landmarks, "arkit": opts.arkit and not opts.is_bfm,
            "max_frames": opts.max_frames, "allow_truncated": opts.allow_truncated,
            "correspondence": None if opts.corr is None else hashlib.sha256(
                opts.corr.vertex_ids.tobytes() + opts.corr.bary.tobytes()).hexdigest()[:16]}


def plan_jobs(spec: str, opts: BatchOptions) -> list[FileJob]:
    """Every input of ``spec`` as a :class:`FileJob` (outputs mirrored under ``opts.out_dir``)."""
    from .manifest import job_fingerprint

    root, files = discover_inputs(spec)
    outs = output_paths(root, files, Path(opts.out_dir), opts.fmt)
    settings = run_settings(opts)
    return [FileJob(str(f.resolve()), f.relative_to(root).as_posix(), str(o.resolve()),
                    job_fingerprint(f.stat(), settings), opts) for f, o in zip(files, outs)]


def select_todo(jobs: list[FileJob], *, retry_failed: bool = False, force: bool = False
                ) -> tuple[list[FileJob], list[FileJob], list[FileJob]]:
    """Split ``jobs`` into ``(todo, done, failed_before)``: to run; finished with this
    fingerprint; failed as unreadable with this fingerprint (skipped unless ``retry_failed``)."""
    from .manifest import MANIFEST_NAME, latest_records, read_records

    if force or not jobs:
        return list(jobs), [], []
    last = latest_records(read_records(Path(jobs[0].opts.out_dir) / MANIFEST_NAME))
    todo, done, failed = [], [], []
    for j in jobs:
        r = last.get(j.rel)
        if is_done(j):
            done.append(j)
        elif (not retry_failed and r is not None and r.status == "failed"
              and r.error_kind == "input" and r.fingerprint == j.fingerprint):
            failed.append(j)
        else:
            todo.append(j)
    return todo, done, failed


def run_batch(jobs: list[FileJob], *, engine: str = "local", workers: int = 1,
              address: str | None = None, retry_failed: bool = False, force: bool = False,
              progress: bool = False,
              on_failure: Callable[[FileJob, FileOutcome], None] | None = None) -> Any:
    """Run the jobs, append the manifest, write ``summary.json``; returns a
    :class:`tracker.manifest.BatchSummary`."""
    from .engines import WorkerCrash, run_inline, run_local, run_ray
    from .manifest import BatchSummary, FileRecord, ManifestWriter, write_summary

    if not jobs:
        raise InputError("no inputs")
    out_dir = Path(jobs[0].opts.out_dir)
    todo, done, failed_before = select_todo(jobs, retry_failed=retry_failed, force=force)
    # largest files first: the long ones do not end up alone at the end of the run
    todo.sort(key=lambda j: -_size(j.input))
    bars = _Bars(len(todo), progress)
    counts = {"ok": 0, "failed": 0, "frames": 0}
    t0 = time.perf_counter()
    if engine == "ray":
        it = run_ray(process_file, todo, address=address, num_cpus=workers or None,
                     on_progress=bars.on_progress)
    elif workers == 0:
        it = run_inline(process_file, todo, on_progress=bars.on_progress)
    else:
        it = run_local(process_file, todo, workers=workers, on_progress=bars.on_progress)
    try:
        with ManifestWriter(out_dir) as mw:
            for i, res in it:
                job = todo[i]
                if isinstance(res, WorkerCrash):
                    res = FileOutcome("failed", error_kind="crash", error=res.message)
                counts[res.status] += 1
                counts["frames"] += res.frames
                mw.append(FileRecord(
                    job.rel, os.path.relpath(job.output, out_dir) if res.status == "ok" else "",
                    res.status, job.fingerprint, res.frames, res.tracked_frames,
                    round(res.seconds, 3), res.error_kind, res.error, res.worker,
                    datetime.now(timezone.utc).isoformat(timespec="seconds")))
                bars.file_done(i, res)
                if res.status == "failed" and on_failure:
                    on_failure(job, res)
    finally:
        bars.close()
    summary = BatchSummary(len(jobs), counts["ok"], counts["failed"],
                           len(done) + len(failed_before), counts["frames"],
                           time.perf_counter() - t0, engine, workers, len(failed_before))
    write_summary(out_dir, summary, {"finished_at": datetime.now(timezone.utc).isoformat(
        timespec="seconds")})
    return summary


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class _Bars:  # pragma: no cover - terminal only (disabled in tests)
    """Two tqdm bars on stderr: files, and frames (total grows as files start)."""

    def __init__(self, n_files: int, enabled: bool):
        self.files = self.frames = None
        self.seen: dict[int, int] = {}
        if enabled and n_files:
            from tqdm import tqdm
            self.files = tqdm(total=n_files, unit="file", position=0, file=sys.stderr,
                              dynamic_ncols=True)
            self.frames = tqdm(total=0, unit="frame", position=1, file=sys.stderr,
                               dynamic_ncols=True)

    def on_progress(self, i: int, kind: str, value: int) -> None:
        if self.frames is None:
            return
        if kind == "total":
            self.frames.total = (self.frames.total or 0) + value
            self.frames.refresh()
        elif kind == "frames":
            self.seen[i] = self.seen.get(i, 0) + value
            self.frames.update(value)

    def file_done(self, i: int, res: FileOutcome) -> None:
        if self.files is None:
            return
        if self.frames is not None and res.frames > self.seen.get(i, 0):
            self.frames.update(res.frames - self.seen.get(i, 0))
        self.files.update(1)

    def close(self) -> None:
        for b in (self.frames, self.files):
            if b is not None:
                b.close()


# ------------------------------------------------------------------------------- CLI

def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from .cli import _add_track_options

    p = subparsers.add_parser(
        "batch", help="track a folder of videos into one coefficient file per video",
        description=__doc__.split("\n\n")[0], epilog="Exit status: 0 all files ok (now or before); "
        "3 some files failed, now or before (see DIR/manifest.jsonl); 1 usage error; "
        "130 interrupted.")
    p.add_argument("input", help="folder (searched recursively), quoted glob, or one video file")
    p.add_argument("--out", required=True, help="output folder (mirrors the input folder)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel workers (local default: one per core, 0 = in this process; Ray: "
                        "CPUs of the local instance it starts, default all; ignored with --address)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local process pool (default) or Ray tasks")
    p.add_argument("--address", default=None,
                   help="Ray cluster address, or 'auto' for the one `ray start` runs here (with "
                        "--engine ray; default: a fresh local Ray instance)")
    p.add_argument("--format", dest="file_format", choices=("csv", "parquet"), default="csv",
                   help="coefficient file format (default csv)")
    p.add_argument("--landmarks", action="store_true", help="add projected 68-point columns")
    p.add_argument("--arkit", action="store_true", help="add ARKit-52 columns (ICT model only)")
    p.add_argument("--max-frames", type=int, default=None,
                   help="track at most N frames of each file (quick looks, subsets)")
    p.add_argument("--allow-truncated", action="store_true",
                   help="keep the decodable frames of truncated files instead of failing them")
    p.add_argument("--retry-failed", action="store_true",
                   help="retry files that failed as unreadable in an earlier run")
    p.add_argument("--force", action="store_true", help="redo every file, even finished ones")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show progress bars (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--canonical", default=None,
                   help="MediaPipe canonical_face_model.obj, needed with a BFM model (default: "
                        "$FACE3D_CANONICAL, else beside $FACE3D_MODEL's shared folder)")
    _add_track_options(p)
    p.set_defaults(func=run)
    return p


def options_from_args(args: argparse.Namespace) -> BatchOptions:
    """:class:`BatchOptions` from parsed CLI arguments (loads the model once to validate it)."""
    from .cli import _config
    from .facemodel import resolve_model_path

    if args.max_faces is not None and args.max_faces < 1:
        raise InputError("--max-faces must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError("--max-frames must be at least 1")
    model_path = str(resolve_model_path(args.model).resolve())
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    opts = BatchOptions(str(Path(args.out).resolve()), model_path, _config(args), args.file_format,
                        args.landmarks, args.arkit, args.max_frames, args.allow_truncated, progress)
    return prepare_options(opts, args.canonical)


def prepare_options(opts: BatchOptions, canonical: str | None = None) -> BatchOptions:
    """Validate the model here, once, before any work; for BFM attach the correspondence (built
    from MediaPipe's ``canonical`` mesh, see :func:`tracker.bfm.default_canonical_path`)."""
    model = load_model(opts.model)
    if opts.is_bfm and getattr(opts.cfg, "smooth", None) == "live":
        from .errors import ConfigError
        raise ConfigError("--smooth live clips expressions to [0, 1]: use offline or none with BFM")
    if opts.is_bfm and opts.corr is None:
        from .bfm import bfm_correspondence
        opts = replace(opts, corr=bfm_correspondence(model, canonical))
    return opts


def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    jobs = plan_jobs(args.input, opts)
    if args.workers is not None:
        workers = args.workers
    else:  # local: one per core; Ray: whatever the instance or cluster has
        workers = len(os.sched_getaffinity(0)) if args.engine == "local" else 0
    if workers < 0:
        raise InputError("--workers must be >= 0")

    def failed(job: FileJob, res: FileOutcome) -> None:
        from tqdm import tqdm
        tqdm.write(f"face3d batch: FAILED {job.rel}: {res.error}", file=sys.stderr)  # above the bars

    try:
        summary = run_batch(jobs, engine=args.engine, workers=workers, address=args.address,
                            retry_failed=args.retry_failed, force=args.force,
                            progress=opts.progress, on_failure=failed)
    except KeyboardInterrupt:
        print("face3d batch: interrupted; finished files are recorded in "
              f"{Path(opts.out_dir) / 'manifest.jsonl'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary.line())
    print(f"manifest: {Path(opts.out_dir) / 'manifest.jsonl'}")
    return EXIT_PARTIAL if summary.failed or summary.failed_before else EXIT_OK


__all__ = ["BatchOptions", "FileJob", "FileOutcome", "add_parser", "discover_inputs",
           "is_done", "output_paths", "plan_jobs", "process_file", "run", "run_batch",
           "select_todo", "EXIT_PARTIAL"]
