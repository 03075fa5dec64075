"""Parquet coefficient files: typed columns equal to the CSV's, nulls for lost frames, the sidecar
in the metadata, atomic writes; and ``face3d batch --format parquet`` end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from tracker.csvout import AtomicCsv, face3d_columns, face3d_row  # noqa: E402
from tracker.parquetout import csv_to_parquet, read_csv_table, read_sidecar  # noqa: E402
from tracker.types import FaceParams  # noqa: E402


def _write_csv(path: Path, rng: np.random.Generator) -> list[list[str]]:
    names = ("jawOpen", "eyeBlink_L")
    cols = face3d_columns(names, 3, landmarks=False)
    w = AtomicCsv(path, cols)
    rows = []
    for i in range(5):
        t = 3600.0 + i / 30.0  # an hour in: needs float64
        if i == 2:
            row = face3d_row(len(cols), i, t, -1, "lost", 0.0, None, names)
        else:
            q = rng.normal(size=4)
            q = q / np.linalg.norm(q) * np.sign(q[0])
            p = FaceParams(q, rng.normal(size=3) * [0.1, 0.1, 1.0] - [0, 0, 0.6],
                           rng.uniform(0, 1, 2).astype(np.float32),
                           rng.normal(size=3).astype(np.float32))
            row = face3d_row(len(cols), i, t, 0, "tracked", 0.8, p, names)
        w.write(row)
        rows.append(row)
    w.commit()
    return [cols] + rows


def test_csv_to_parquet_types_values_nulls_and_metadata(tmp_path):
    rows = _write_csv(tmp_path / "x.csv", np.random.default_rng(0))
    side = {"columns": rows[0], "model": {"name": "test"}}
    n = csv_to_parquet(tmp_path / "x.csv", tmp_path / "x.parquet", side)
    assert n == 5
    t = pq.read_table(tmp_path / "x.parquet")
    assert t.column_names == rows[0]
    assert t.schema.field("frame").type == pa.int32()
    assert t.schema.field("face_id").type == pa.int32()
    assert t.schema.field("time_s").type == pa.float64()
    assert pa.types.is_dictionary(t.schema.field("status").type)
    assert t.schema.field("jawOpen").type == pa.float32()
    d = t.to_pydict()
    assert d["status"] == [r[3] for r in rows[1:]]
    assert d["time_s"] == [float(r[1]) for r in rows[1:]]  # exact: float64
    for j, name in enumerate(rows[0][4:], start=4):
        for i, r in enumerate(rows[1:]):
            v = d[name][i]
            if r[j] == "":
                assert v is None  # lost frame: null
            else:
                assert math.isclose(v, float(r[j]), rel_tol=1e-6, abs_tol=1e-6), (name, i)
    assert read_sidecar(tmp_path / "x.parquet") == side
    assert not list(tmp_path.glob("*.tmp*"))


def test_read_csv_table_on_a_real_tracker_csv(tmp_path, videos, model):
    from tracker.track import TrackOutputs, track_video
    from tracker.trackconfig import load_track_config

    out = tmp_path / "d3.csv"
    track_video(str(videos["d3"]), model, load_track_config(), TrackOutputs(out, landmarks=True),
                progress=False, max_frames=8)
    t = read_csv_table(out)
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert t.num_rows == len(rows) - 1 == 8
    got = np.array(t.column("lmk68_x_30").to_numpy(zero_copy_only=False), np.float64)
    want = np.array([float(r[rows[0].index("lmk68_x_30")]) for r in rows[1:]])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_batch_parquet_end_to_end(tmp_path, videos, model_path):
    from mkvideo import write_random_bytes
    from test_batch import cut_clip
    from tracker.batch import BatchOptions, plan_jobs, prepare_options, run_batch
    from tracker.trackconfig import load_track_config

    src = tmp_path / "in"
    cut_clip(videos["d12"], src / "talk" / "d12.mp4", 10)
    write_random_bytes(src / "talk" / "junk.mp4")
    out = tmp_path / "out"
    opts = prepare_options(BatchOptions(str(out), str(model_path), load_track_config(), "parquet"))
    s = run_batch(plan_jobs(str(src), opts), workers=0)
    assert (s.ok, s.failed) == (1, 1)
    pq_path = out / "talk" / "d12.parquet"
    t = pq.read_table(pq_path)
    side = json.loads(Path(str(pq_path) + ".json").read_text())
    assert side["file_format"] == "parquet" and t.column_names == side["columns"]
    assert read_sidecar(pq_path)["batch"]["fingerprint"] != ""
    assert t.num_rows == 10
    # no CSV or temporary left behind, nothing for the junk file
    assert sorted(p.name for p in (out / "talk").iterdir()) == ["d12.parquet", "d12.parquet.json"]
