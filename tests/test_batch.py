"""face3d batch: discovery, mirrored outputs, corrupt inputs, resumable re-runs, CLI exit status,
and the Ray engine writing the same files as the local one.

Inputs are the first frames of shared videos, re-encoded into tmp folders (short, so the whole
module stays fast), plus a truncated copy of one of them (the corrupt file).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import av
import pytest

from mkvideo import truncated_copy, write_random_bytes, write_video
from tracker.batch import (EXIT_PARTIAL, BatchOptions, discover_inputs, is_done, output_paths,
                           plan_jobs, prepare_options, run_batch)
from tracker.manifest import MANIFEST_NAME, SUMMARY_NAME, latest_records, read_records

N_FRAMES = 16
CLIPS = {"d10": "a/d10.mp4", "d12": "a/b/d12.mp4", "d14": "d14.mp4"}


def cut_clip(src: Path, dst: Path, n: int = N_FRAMES) -> Path:
    """The first ``n`` frames of ``src`` re-encoded (H.264) at ``dst``."""
    frames = []
    with av.open(str(src)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) >= n:
                break
    h, w = frames[0].shape[:2]
    dst.parent.mkdir(parents=True, exist_ok=True)
    return write_video(dst, frames=frames, size=(w, h), fps=25)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, videos) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for stem, rel in CLIPS.items():
        cut_clip(videos[stem], root / rel)
    truncated_copy(root / CLIPS["d10"], root / "a" / "broken.mp4", 0.5)
    return root


def _opts(out: Path, model_path: Path, fmt: str = "csv") -> BatchOptions:
    from tracker.trackconfig import load_track_config

    return prepare_options(BatchOptions(str(out), str(model_path), load_track_config(), fmt))


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


# ------------------------------------------------------------------------- pure parts

def test_discovery_mirrors_paths_and_keeps_suffix_on_collision(tmp_path):
    for rel in ("x/b.mp4", "x/b.MOV", "x/c.mkv", "notes.txt", ".cache/h.mp4", "y/z/d.webm"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    root, files = discover_inputs(str(tmp_path))
    rels = [f.relative_to(root).as_posix() for f in files]
    assert rels == ["x/b.MOV", "x/b.mp4", "x/c.mkv", "y/z/d.webm"]
    outs = [o.relative_to(tmp_path / "o").as_posix()
            for o in output_paths(root, files, tmp_path / "o", "parquet")]
    assert outs == ["x/b.MOV.parquet", "x/b.mp4.parquet", "x/c.parquet", "y/z/d.parquet"]
    # a glob is relative to its folder part; it takes whatever it matches
    root, files = discover_inputs(str(tmp_path / "x" / "*.[mM]*"))
    assert root == tmp_path / "x"
    assert [f.name for f in files] == ["b.MOV", "b.mp4", "c.mkv"]
    root, files = discover_inputs(str(tmp_path / "**" / "*.webm"))
    assert root == tmp_path and [f.relative_to(root).as_posix() for f in files] == ["y/z/d.webm"]


def test_discovery_errors(tmp_path):
    from tracker.errors import InputError

    with pytest.raises(InputError, match="no such file"):
        discover_inputs(str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no video files"):
        discover_inputs(str(tmp_path))


# ------------------------------------------------------------------------- local engine

@pytest.fixture(scope="module")
def first_run(clip_dir, model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch_out")
    jobs = plan_jobs(str(clip_dir), _opts(out, model_path))
    summary = run_batch(jobs, engine="local", workers=2)
    return out, jobs, summary


def test_corrupt_file_is_reported_and_the_others_are_written(first_run, clip_dir):
    out, jobs, summary = first_run
    assert (summary.files, summary.ok, summary.failed, summary.skipped) == (4, 3, 1, 0)
    assert summary.frames == 3 * N_FRAMES
    for rel in CLIPS.values():
        csv_path = out / Path(rel).with_suffix(".csv")
        rows = _rows(csv_path)
        assert len(rows) == 1 + N_FRAMES
        side = json.loads(Path(str(csv_path) + ".json").read_text())
        assert side["columns"] == rows[0]
        assert side["batch"]["input"] == rel and side["file_format"] == "csv"
        assert side["settings"]["smoothing"]["mode"] == "offline"
    # nothing at all for the broken input, not even a temporary
    assert not list(out.rglob("broken*")) and not list(out.rglob("*.tmp*"))
    last = latest_records(read_records(out / MANIFEST_NAME))
    assert set(last) == {*CLIPS.values(), "a/broken.mp4"}
    bad = last["a/broken.mp4"]
    assert bad.status == "failed" and bad.error_kind == "input" and bad.output == ""
    assert "broken.mp4" in bad.error
    assert {last[r].status for r in CLIPS.values()} == {"ok"}
    assert all(last[r].frames == N_FRAMES for r in CLIPS.values())
    s = json.loads((out / SUMMARY_NAME).read_text())
    assert (s["ok"], s["failed"], s["frames"]) == (3, 1, 3 * N_FRAMES)


def test_batch_output_equals_face3d_track(first_run, clip_dir, model):
    """The per-file task is ``face3d track``: same rows for the same clip."""
    from tracker.track import TrackOutputs, track_video
    from tracker.trackconfig import load_track_config

    out, _, _ = first_run
    ref = out.parent / "ref_d14.csv"
    track_video(str(clip_dir / CLIPS["d14"]), model, load_track_config(), TrackOutputs(ref),
                progress=False)
    assert _rows(out / "d14.csv") == _rows(ref)


def test_rerun_skips_finished_and_same_failures(first_run, clip_dir, model_path):
    out, jobs, _ = first_run
    n_lines = len(read_records(out / MANIFEST_NAME))
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.csv")}
    again = plan_jobs(str(clip_dir), _opts(out, model_path))
    assert [j.fingerprint for j in again] == [j.fingerprint for j in jobs]
    s2 = run_batch(again, engine="local", workers=2)
    assert (s2.ok, s2.failed, s2.skipped, s2.failed_before, s2.frames) == (0, 0, 4, 1, 0)
    assert len(read_records(out / MANIFEST_NAME)) == n_lines
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.csv")} == mtimes
    # asked to, the unreadable file is tried again (and fails again)
    s3 = run_batch(again, engine="local", workers=0, retry_failed=True)
    assert (s3.ok, s3.failed, s3.skipped) == (0, 1, 3)


def test_changed_settings_or_input_redo_only_what_changed(clip_dir, model_path, tmp_path):
    from dataclasses import replace

    src = tmp_path / "in"
    cut_clip(clip_dir / CLIPS["d14"], src / "one.mp4", 8)
    cut_clip(clip_dir / CLIPS["d12"], src / "two.mp4", 8)
    opts = _opts(tmp_path / "out", model_path)
    s1 = run_batch(plan_jobs(str(src), opts), workers=0)
    assert (s1.ok, s1.skipped) == (2, 0)
    # a half-written output (sidecar missing) is not "done"
    Path(str(tmp_path / "out" / "two.csv") + ".json").unlink()
    os.utime(src / "one.mp4", ns=(1, 1))  # input changed
    s2 = run_batch(plan_jobs(str(src), opts), workers=0)
    assert (s2.ok, s2.skipped) == (2, 0)
    # other settings → other fingerprints → everything redone
    jobs3 = plan_jobs(str(src), replace(opts, max_frames=4))
    assert not any(is_done(j) for j in jobs3)
    s3 = run_batch(jobs3, workers=0)
    assert (s3.ok, s3.frames) == (2, 8)
    assert len(_rows(tmp_path / "out" / "one.csv")) == 1 + 4


def test_input_that_became_unreadable_loses_its_stale_output(clip_dir, model_path, tmp_path):
    src = tmp_path / "in"
    cut_clip(clip_dir / CLIPS["d14"], src / "v.mp4", 6)
    opts = _opts(tmp_path / "out", model_path)
    assert run_batch(plan_jobs(str(src), opts), workers=0).ok == 1
    assert (tmp_path / "out" / "v.csv").is_file()
    write_random_bytes(src / "v.mp4", seed=3)  # the file is replaced by garbage
    s = run_batch(plan_jobs(str(src), opts), workers=0)
    assert (s.ok, s.failed) == (0, 1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST_NAME, SUMMARY_NAME]


def test_cli_exit_status_and_summary(clip_dir, model_path, tmp_path, capsys):
    from tracker.cli import main

    src = tmp_path / "in"
    cut_clip(clip_dir / CLIPS["d12"], src / "ok.mp4", 6)
    out = tmp_path / "out"
    argv = ["batch", str(src), "--out", str(out), "--workers", "0", "--model", str(model_path),
            "--no-progress"]
    assert main(argv) == 0
    assert "1 ok, 0 failed" in capsys.readouterr().out
    write_random_bytes(src / "noise.mp4")
    assert main(argv) == EXIT_PARTIAL
    cap = capsys.readouterr()
    assert "0 ok, 1 failed, 1 skipped" in cap.out
    assert "FAILED noise.mp4" in cap.err
    # re-run: nothing to do, but the unreadable file still makes it a partial result
    assert main(argv) == EXIT_PARTIAL
    assert "2 skipped (1 unreadable in an earlier run" in capsys.readouterr().out
    (src / "noise.mp4").unlink()
    assert main(argv) == 0
    assert main(["batch", str(tmp_path / "nothing"), "--out", str(out)]) == 1


# ------------------------------------------------------------------------- Ray engine

@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def test_ray_engine_writes_the_same_outputs(first_run, clip_dir, model_path, tmp_path, ray_session):
    local_out, _, _ = first_run
    out = tmp_path / "ray_out"
    summary = run_batch(plan_jobs(str(clip_dir), _opts(out, model_path)), engine="ray", workers=2)
    assert (summary.ok, summary.failed, summary.engine) == (3, 1, "ray")
    for rel in CLIPS.values():
        a, b = local_out / Path(rel).with_suffix(".csv"), out / Path(rel).with_suffix(".csv")
        assert a.read_bytes() == b.read_bytes(), rel
        sa, sb = (json.loads(Path(str(p) + ".json").read_text()) for p in (a, b))
        for key in ("columns", "camera", "model", "input", "settings", "batch"):
            assert sa[key] == sb[key]
    assert not list(out.rglob("broken*"))
    last = latest_records(read_records(out / MANIFEST_NAME))
    assert last["a/broken.mp4"].error_kind == "input"
