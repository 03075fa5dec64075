"""The batch manifest: one JSON record per processed file, appended to ``DIR/manifest.jsonl``.

A batch (``face3d batch``, :mod:`tracker.batch`) appends one line per file it *attempted* in this
run — never one for a file it skipped — so the file is a history; the current state of a file is
its last record (:func:`latest_records`). Lines are written by the coordinating process only,
flushed and fsynced one at a time; a line cut short by a crash is ignored on reading (logged), so
the manifest survives being killed mid-write. ``pandas.read_json(path, lines=True)`` reads it.

Record fields (:class:`FileRecord`): ``input`` (path relative to the batch root, POSIX
separators), ``output`` (path of the coefficient file relative to the output folder, empty when it
failed), ``status`` (``ok`` | ``failed``), ``error_kind`` (``input`` — the file cannot be read as a
video, deterministic, not retried by a re-run unless asked; ``crash`` — anything else, retried),
``error`` (one line), ``frames``, ``tracked_frames``, ``seconds`` (wall time of the file in its
worker), ``fingerprint`` (:func:`job_fingerprint`), ``worker`` (``host:pid``), ``finished_at``
(UTC, ISO 8601).

The end-of-run summary (:class:`BatchSummary`) goes to ``DIR/summary.json``, rewritten atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Literal

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
SUMMARY_NAME = "summary.json"

Status = Literal["ok", "failed"]
ErrorKind = Literal["", "input", "crash"]


@dataclass(frozen=True)
class FileRecord:
    """The outcome of one file in one run (see the module docstring for the fields)."""

    input: str
    output: str
    status: Status
    fingerprint: str
    frames: int = 0
    tracked_frames: int = 0
    seconds: float = 0.0
    error_kind: ErrorKind = ""
    error: str = ""
    worker: str = ""
    finished_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FileRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class BatchSummary:
    """Counts of one run. ``skipped``: already done, or failed as unreadable, in an earlier run
    with the same fingerprint (``failed_before`` of them failed).
    ``frames`` and ``fps`` count the files processed in this run (``frames / seconds`` of wall
    time of the whole run, all workers together). ``workers``: as asked (0: in-process for the
    local engine, all cluster CPUs for Ray)."""

    files: int
    ok: int
    failed: int
    skipped: int
    frames: int
    seconds: float
    engine: str
    workers: int
    failed_before: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        who = (f"{self.workers} worker(s)" if self.workers else
               "in-process" if self.engine == "local" else "all cluster CPUs")
        skipped = f"{self.skipped} skipped"
        if self.failed_before:
            skipped += f" ({self.failed_before} unreadable in an earlier run: --retry-failed)"
        return (f"{self.files} file(s): {self.ok} ok, {self.failed} failed, {skipped}; "
                f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps, "
                f"{self.engine} engine, {who})")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fps": round(self.fps, 3)}


def job_fingerprint(input_stat: os.stat_result, settings: dict[str, Any]) -> str:
    """A short hash of what decides a file's output: its size and modification time, and the run
    settings (model file, tracking/smoothing config, output format, tool version, frame limit).
    Same fingerprint ⇒ a finished output can be reused."""
    key = {"size": input_stat.st_size, "mtime_ns": input_stat.st_mtime_ns, "settings": settings}
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class ManifestWriter:
    """Appends :class:`FileRecord` lines to ``DIR/manifest.jsonl`` (single writer)."""

    def __init__(self, out_dir: str | os.PathLike[str]):
        self.path = Path(out_dir) / MANIFEST_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, rec: FileRecord) -> None:
        self._fh.write(rec.to_json() + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: str | os.PathLike[str]) -> list[FileRecord]:
    """All records of a manifest in file order; a missing file is an empty list, a damaged line
    (e.g. cut short by a crash) is skipped with a warning."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    with open(p, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(FileRecord.from_dict(json.loads(line)))
            except (ValueError, TypeError) as e:
                log.warning("%s:%d: unreadable manifest line skipped (%s)", p, n, e)
    return out


def latest_records(records: Iterable[FileRecord]) -> dict[str, FileRecord]:
    """The last record of each input (the current state of each file)."""
    out: dict[str, FileRecord] = {}
    for r in records:
        out[r.input] = r
    return out


def write_summary(out_dir: str | os.PathLike[str], summary: BatchSummary,
                  extra: dict[str, Any] | None = None) -> Path:
    from .csvout import write_json_atomic

    return write_json_atomic(Path(out_dir) / SUMMARY_NAME, {**summary.as_dict(), **(extra or {})})
