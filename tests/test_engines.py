"""Execution engines: results in completion order with their job index, progress reports, one
thread per worker for the numeric libraries, and a dying worker that does not sink the batch."""

from __future__ import annotations

import os
import time

from tracker.engines import WorkerCrash, run_inline, run_local, thread_env


def _square(job: int, report) -> int:
    report("frames", job)
    return job * job


def _env_probe(job: int, report) -> dict[str, str]:
    import numba

    return {"omp": os.environ.get("OMP_NUM_THREADS", ""),
            "numba": str(numba.config.NUMBA_NUM_THREADS), "pid": str(os.getpid())}


def _die_on_three(job: int, report) -> int:
    if job == 2:
        time.sleep(1.0)  # still running beside job 3 when its worker dies
    if job == 3:
        time.sleep(0.2)
        os._exit(13)  # a worker killed by a segfault / the OOM killer
    return job


def _raise(job: int, report) -> int:
    raise RuntimeError(f"boom {job}")


def test_inline_and_local_give_the_same_results_with_progress():
    got_inline, prog_inline = {}, []
    for i, r in run_inline(_square, [1, 2, 3], on_progress=lambda i, k, v: prog_inline.append((i, k, v))):
        got_inline[i] = r
    assert got_inline == {0: 1, 1: 4, 2: 9}
    assert prog_inline == [(0, "frames", 1), (1, "frames", 2), (2, "frames", 3)]
    prog = []
    got = dict(run_local(_square, [1, 2, 3, 4], workers=2,
                         on_progress=lambda i, k, v: prog.append((i, k, v))))
    assert got == {0: 1, 1: 4, 2: 9, 3: 16}
    assert sorted(prog) == [(0, "frames", 1), (1, "frames", 2), (2, "frames", 3), (3, "frames", 4)]


def test_local_workers_use_one_thread_for_numeric_libraries():
    res = dict(run_local(_env_probe, [0, 1, 2, 3], workers=2))
    assert {r["omp"] for r in res.values()} == {"1"}
    assert {r["numba"] for r in res.values()} == {"1"}
    assert 1 <= len({r["pid"] for r in res.values()}) <= 2
    assert set(thread_env(1)) >= {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                  "NUMBA_NUM_THREADS"}


def test_a_dying_worker_fails_only_its_job():
    """Job 3 kills its worker (twice: alone too); job 2, running beside it, is retried alone and
    succeeds."""
    res = dict(run_local(_die_on_three, list(range(6)), workers=2))
    assert sorted(res) == list(range(6))
    assert isinstance(res[3], WorkerCrash) and "died" in res[3].message
    assert {i: r for i, r in res.items() if i != 3} == {0: 0, 1: 1, 2: 2, 4: 4, 5: 5}


def test_a_raising_task_becomes_a_crash_result():
    res = dict(run_local(_raise, [7], workers=1))
    assert isinstance(res[0], WorkerCrash) and "boom 7" in res[0].message
    res = dict(run_inline(_raise, [8]))
    assert isinstance(res[0], WorkerCrash) and "boom 8" in res[0].message
