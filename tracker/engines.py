"""Execution engines for batch jobs: the same per-file task on a local process pool or on Ray.

An engine runs ``task(job, report) -> result`` for each job and yields ``(job index, result)`` as
jobs finish (in completion order). ``task`` must be a module-level function (it is pickled by
reference), ``job`` and ``result`` picklable; the task is expected to turn its own failures into
results. What the engine adds is *infrastructure* failure: a worker process that dies (segfault,
out of memory) or a task that raises anyway becomes a :class:`WorkerCrash` result.

``report(kind, value)`` sends progress from the task to the coordinator's ``on_progress(index,
kind, value)`` callback (kinds are the task's business; :mod:`tracker.batch` uses ``"total"`` —
estimated frames of the file — and ``"frames"`` — frames done since the last report). Reports
are delivered at least every ``poll_s`` while jobs run; the task should send few (a few per
second), not one per frame.

Engines:

* :func:`run_inline` — in this process, one job after the other (``--workers 0``; debugging).
* :func:`run_local` — a process pool of ``workers`` processes, started with ``spawn`` (no fork of
  a process holding MediaPipe/decoder threads). One file's frames are sequential (tracking state),
  so files are the unit of parallelism; each worker limits its numeric libraries to one thread
  (:func:`worker_setup`, run before anything numeric is imported). Measured on the 2-core machine:
  one tracking process still uses ~1.5 cores (its decode thread, and two MediaPipe threads of
  equal load — not limited by these variables), so 2 workers there gain ~1.15x, not 2x; the
  pool's job is to keep every core busy on machines with more of them. A worker that dies breaks the pool: the pool is restarted, the jobs that were running
  in it are retried alone, and one that kills its worker again is reported as crashed.
* :func:`run_ray` — each job is one Ray task (``num_cpus=1``) on a local Ray instance or on the
  cluster at ``address`` (``ray.init(address=...)``; the nodes need face3d installed and the input
  and output paths on a shared file system). Progress travels through a ``ray.util.queue.Queue``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import BackendUnavailableError

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")
Report = Callable[[str, int], None]
Task = Callable[[Any, Report], Any]
OnProgress = Callable[[int, str, int], None]

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass(frozen=True)
class WorkerCrash:
    """A job whose worker died or whose task raised instead of returning a result."""

    message: str


def thread_env(threads: int = 1) -> dict[str, str]:
    """Environment variables that cap OpenMP / BLAS / numba thread pools at ``threads``."""
    return {k: str(threads) for k in THREAD_ENV_VARS}


def worker_setup(threads: int = 1) -> None:
    """Per-worker set-up: cap numeric thread pools. Must run before numpy, numba or OpenCV are
    imported in this process (env vars are read once, at library load); OpenCV's own pool is
    capped through its API."""
    os.environ.update(thread_env(threads))
    try:
        import cv2
        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover - cv2 ships with mediapipe
        pass


# ----------------------------------------------------------------------------- inline

def run_inline(task: Task, jobs: Sequence[Any], *,
               on_progress: OnProgress | None = None) -> Iterator[tuple[int, Any]]:
    """Run the jobs one after the other in this process."""
    for i, job in enumerate(jobs):
        def report(kind: str, value: int, _i: int = i) -> None:
            if on_progress:
                on_progress(_i, kind, value)
        try:
            yield i, task(job, report)
        except Exception as e:  # noqa: BLE001 - the task should not raise; keep the batch going
            log.debug("job %d raised", i, exc_info=True)
            yield i, WorkerCrash(f"{type(e).__name__}: {e}")


# ----------------------------------------------------------------------------- local pool

_QUEUE: Any = None


def _pool_init(queue: Any, threads: int) -> None:
    global _QUEUE
    worker_setup(threads)
    _QUEUE = queue


def _pool_call(task: Task, index: int, job: Any) -> Any:
    q = _QUEUE
    q.put((index, "_start", os.getpid()))

    def report(kind: str, value: int) -> None:
        q.put((index, kind, value))
    return task(job, report)


def run_local(task: Task, jobs: Sequence[Any], *, workers: int, threads: int = 1,
              on_progress: OnProgress | None = None, poll_s: float = 0.2,
              start_method: str = "spawn") -> Iterator[tuple[int, Any]]:
    """Run the jobs on a pool of ``workers`` processes (see the module docstring).

    A worker that dies breaks the whole pool. The jobs that were running then are suspects: each
    is retried alone in a one-process pool (so an innocent neighbour is not blamed twice); one
    that kills its worker again is reported as :class:`WorkerCrash`. The other jobs go on in a
    new pool.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    if workers < 1:
        raise ValueError("workers must be >= 1")
    ctx = mp.get_context(start_method)
    # SimpleQueue: put() writes to the pipe before returning, so a "_start" sent by a worker that
    # dies right after still arrives (a Queue's feeder thread would die with it)
    q = ctx.SimpleQueue()
    pending = list(range(len(jobs)))
    isolate: list[int] = []

    def drain(running: set[int]) -> None:
        while not q.empty():
            i, kind, value = q.get()
            if kind == "_start":
                running.add(i)
            elif on_progress:
                on_progress(i, kind, value)

    while pending or isolate:
        if pending:
            batch, pending = pending, []
        else:
            batch = [isolate.pop(0)]
        alone = len(batch) == 1
        ex = ProcessPoolExecutor(max_workers=max(1, min(workers, len(batch))), mp_context=ctx,
                                 initializer=_pool_init, initargs=(q, threads))
        running: set[int] = set()
        broken: list[int] = []
        try:
            futs = {ex.submit(_pool_call, task, i, jobs[i]): i for i in batch}
            while futs:
                done, _ = wait(futs, timeout=poll_s, return_when=FIRST_COMPLETED)
                drain(running)
                for f in done:
                    i = futs.pop(f)
                    try:
                        res = f.result()
                    except BrokenProcessPool:
                        broken.append(i)
                        continue
                    except Exception as e:  # noqa: BLE001 - e.g. an unpicklable result
                        res = WorkerCrash(f"{type(e).__name__}: {e}")
                    running.discard(i)
                    yield i, res
                if broken:
                    broken += list(futs.values())
                    futs.clear()
        except BaseException:
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
        drain(running)
        if broken:
            log.warning("a worker process died; restarting the pool (%d job(s) left)", len(broken))
            suspects = (running & set(broken)) or set(broken)
            for i in sorted(broken):
                if i not in suspects:
                    pending.append(i)
                elif alone:
                    yield i, WorkerCrash("worker process died while processing this file")
                else:
                    isolate.append(i)
    q.close()


# ----------------------------------------------------------------------------- ray

def _ray_call(task: Task, index: int, job: Any, queue: Any) -> Any:
    def report(kind: str, value: int) -> None:
        try:
            queue.put_nowait((index, kind, value))
        except Exception:  # noqa: BLE001 - progress is best effort
            pass
    return task(job, report)


def run_ray(task: Task, jobs: Sequence[Any], *, address: str | None = None,
            num_cpus: int | None = None, on_progress: OnProgress | None = None,
            poll_s: float = 0.2, max_retries: int = 1) -> Iterator[tuple[int, Any]]:
    """Run the jobs as Ray tasks. Uses the running Ray session if there is one (left running);
    otherwise connects to ``address`` (a cluster; ``"auto"``: the one ``ray start`` runs here) or
    starts a fresh local instance with ``num_cpus`` (shut down at the end). Worker thread pools are capped through the job's ``runtime_env``."""
    try:
        import ray
        from ray.util.queue import Queue
    except ImportError as e:
        raise BackendUnavailableError(
            f"the Ray engine needs ray (pip install 'face3d[cluster]'): {e}") from None
    own = not ray.is_initialized()
    if own:
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "runtime_env": {"env_vars": thread_env(1)}}
        if address:
            kw["address"] = address
        else:  # a fresh local instance, even if `ray start` left one running ("auto" joins it)
            kw["address"] = "local"
            if num_cpus:
                kw["num_cpus"] = num_cpus
        try:
            ray.init(**kw)
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, auth errors …
            last = (str(e).strip().splitlines() or [""])[-1]
            raise BackendUnavailableError(
                f"cannot {'connect to the Ray cluster at ' + address if address else 'start Ray'}: "
                f"{last} (a cluster with token authentication also needs RAY_AUTH_MODE=token and "
                "its token, see Ray's documentation)") from None
    try:
        queue = Queue()
        remote = ray.remote(num_cpus=1, max_retries=max_retries)(_ray_call)
        refs = {remote.remote(task, i, job, queue): i for i, job in enumerate(jobs)}

        def drain() -> None:
            try:
                items = queue.get_nowait_batch(queue.qsize())
            except Exception:  # noqa: BLE001 - progress is best effort
                return
            if on_progress:
                for i, kind, value in items:
                    on_progress(i, kind, value)

        while refs:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=poll_s)
            drain()
            for ref in done:
                i = refs.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, …
                    last = (str(e).strip().splitlines() or [""])[-1]
                    res = WorkerCrash(f"{type(e).__name__}: {last}")
                yield i, res
        drain()
        try:
            ray.kill(queue.actor)
        except Exception:  # noqa: BLE001
            pass
    finally:
        if own:
            ray.shutdown()
