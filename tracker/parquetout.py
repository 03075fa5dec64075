"""Coefficient files as Parquet (through pyarrow): the CSV layout of :mod:`tracker.csvout`, typed.

The Parquet file has exactly the CSV's columns in the CSV's order, with types instead of text:

* ``frame``, ``face_id`` → ``int32``; ``time_s`` → ``float64`` (seconds; hours of video at
  microsecond resolution need the double);
* ``status`` (and ``Timecode`` of the Live Link layout) → dictionary-encoded ``string``;
* every other column → ``float32`` (coefficients, pose, landmarks; the CSV carries at most 7
  significant digits, which float32 holds).

Empty CSV cells (a ``lost`` frame's numbers) become nulls (NaN in pandas). The sidecar JSON is
stored in the schema metadata under ``face3d.sidecar`` as well as beside the file, so a Parquet
file is self-describing. Written atomically (temporary file + rename), zstd-compressed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import BackendUnavailableError

INT_COLUMNS = frozenset({"frame", "face_id"})
STRING_COLUMNS = frozenset({"status", "Timecode"})
DOUBLE_COLUMNS = frozenset({"time_s"})
METADATA_KEY = b"face3d.sidecar"


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.csv  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:
        raise BackendUnavailableError(
            f"Parquet output needs pyarrow (pip install 'face3d[cluster]'): {e}") from None
    return pyarrow


def column_type(name: str, pa: Any) -> Any:
    """The Arrow type of a coefficient column (see the module docstring)."""
    if name in INT_COLUMNS:
        return pa.int32()
    if name in STRING_COLUMNS:
        return pa.dictionary(pa.int32(), pa.string())
    if name in DOUBLE_COLUMNS:
        return pa.float64()
    return pa.float32()


def read_csv_table(csv_path: str | os.PathLike[str]) -> Any:
    """A face3d CSV as a typed ``pyarrow.Table`` (columns typed by :func:`column_type`)."""
    pa = _pyarrow()
    with open(csv_path, newline="") as fh:
        header = fh.readline().rstrip("\r\n").split(",")
    types = {n: column_type(n, pa) for n in header}
    conv = pa.csv.ConvertOptions(column_types=types, null_values=[""],
                                 strings_can_be_null=False, quoted_strings_can_be_null=False)
    read = pa.csv.ReadOptions(block_size=1 << 24)
    return pa.csv.read_csv(str(csv_path), read_options=read, convert_options=conv)


def write_parquet(table: Any, path: str | os.PathLike[str], sidecar: dict[str, Any] | None = None,
                  compression: str = "zstd") -> Path:
    """Write ``table`` to ``path`` atomically, with ``sidecar`` in the schema metadata."""
    pa = _pyarrow()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if sidecar is not None:
        meta = dict(table.schema.metadata or {})
        meta[METADATA_KEY] = json.dumps(sidecar).encode()
        table = table.replace_schema_metadata(meta)
    tmp = p.with_name(f"{p.name}.tmp-{os.getpid()}")
    try:
        pa.parquet.write_table(table, str(tmp), compression=compression)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def csv_to_parquet(csv_path: str | os.PathLike[str], parquet_path: str | os.PathLike[str],
                   sidecar: dict[str, Any] | None = None) -> int:
    """Convert a face3d CSV into Parquet (atomically); returns the number of rows."""
    table = read_csv_table(csv_path)
    write_parquet(table, parquet_path, sidecar)
    return int(table.num_rows)


def read_sidecar(parquet_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar stored in a Parquet file's metadata (``None`` if absent)."""
    pa = _pyarrow()
    meta = pa.parquet.read_schema(str(parquet_path)).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else None
