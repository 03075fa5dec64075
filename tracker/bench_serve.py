"""Benchmark of ``face3d serve``: the tracker's fps with 0 / 1 / N clients and frame-to-send latency.

::

    python -m tracker.bench_serve [VIDEO] [--clients 20] [--seconds 5] [--repeats 3] [--json OUT]

For each mode — ``paced`` (the file in real time, as served) and ``unpaced`` (tracked as fast as
possible: the tracker's capacity) — and each repeat, one server is started on the video (looping)
and measured over ``seconds`` with 0, 1 and ``clients`` reading clients (order rotated per
repeat). Clients run in a separate process (asyncio, JSON frames), as browsers would.

Numbers per window:

* ``fps``: tracker steps per second; ``step_ms``: mean tracking time per frame (busy time /
  steps), so ``1000 / step_ms`` is the tracker's capacity even when it is paced;
* ``send_ms``: server-side frame-to-send latency, per client and frame: tracking finished →
  ``send`` returned (encoding, fan-out, event-loop wake-up, GIL hand-over) — p50/p95/p99;
* ``recv_ms``: client-side age on arrival, ``time.time()`` at receipt − the frame's ``t_ready``
  (same machine, same clock) — p50/p95.

Reported: the median over repeats of each number, and the fps drop with ``clients`` clients
relative to none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

WARM_STEPS = 60


async def _clients(url: str, n: int, seconds: float, ready: Any) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    ages: list[float] = []
    counts = [0] * n

    async def one(i: int, started: asyncio.Event, go: asyncio.Event) -> None:
        async with connect(url, max_size=None) as ws:
            await ws.recv()  # hello
            started.set()
            await go.wait()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    msg = await asyncio.wait_for(ws.recv(), max(0.01, end - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if isinstance(msg, str) and msg.startswith('{"type":"frame"'):
                    now = time.time()
                    ages.append(now - json.loads(msg)["t_ready"])
                    counts[i] += 1

    go = asyncio.Event()
    starts = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(one(i, starts[i], go)) for i in range(n)]
    await asyncio.gather(*(s.wait() for s in starts))
    ready.set()
    go.set()
    await asyncio.gather(*tasks)
    return {"ages": ages, "counts": counts}


def _client_process(url: str, n: int, seconds: float, ready: Any, out: Any) -> None:
    out.put(asyncio.run(_clients(url, n, seconds, ready)))


def _pct(values: list[float], qs: tuple[float, ...]) -> list[float]:
    if not values:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(values) * 1000.0, qs)]


def _window(server: Any, n: int, seconds: float, ctx: Any) -> dict[str, Any]:
    proc = None
    if n:
        ready, out = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=_client_process, args=(server.ws_url, n, seconds, ready, out),
                           daemon=True)
        proc.start()
        if not ready.wait(60):
            raise RuntimeError("bench clients did not connect")
    server.take_latencies()
    s0, t0 = server.stats().loop, time.perf_counter()
    time.sleep(seconds)
    s1, t1 = server.stats().loop, time.perf_counter()
    send = server.take_latencies()
    res: dict[str, Any] = {"clients": n, "fps": (s1.steps - s0.steps) / (t1 - t0),
                           "step_ms": 1000.0 * (s1.busy_s - s0.busy_s) / max(1, s1.steps - s0.steps)}
    res["send_ms_p50"], res["send_ms_p95"], res["send_ms_p99"] = _pct(send, (50, 95, 99))
    if proc is not None:
        got = out.get(timeout=seconds + 60)
        proc.join(10)
        res["recv_ms_p50"], res["recv_ms_p95"] = _pct(got["ages"], (50, 95))
        res["client_fps_min"] = min(got["counts"]) / seconds
    return res


def run_bench(video: str, *, clients: int = 20, seconds: float = 5.0, repeats: int = 3,
              model: Any = None) -> dict[str, Any]:
    """Measure (see module doc); returns ``{"runs": [...], "summary": {mode: {n: medians}}}``."""
    from .facemodel import load_face_model
    from .serve import LiveServer, ServeConfig
    from .trackconfig import load_track_config

    model = model or load_face_model(None)
    tcfg = load_track_config()
    ctx = mp.get_context("spawn")
    runs = []
    for mode in ("paced", "unpaced"):
        for r in range(repeats):
            cfg = ServeConfig(video, loop=True, port=0, realtime=mode == "paced",
                              max_clients=clients + 4)
            with LiveServer(cfg, model, tcfg) as srv:
                t0 = time.monotonic()
                while srv.stats().loop.steps < WARM_STEPS and time.monotonic() - t0 < 60:
                    time.sleep(0.1)
                order = [0, 1, clients]
                order = order[r % 3:] + order[:r % 3]
                for n in order:
                    w = _window(srv, n, seconds, ctx)
                    w.update(mode=mode, repeat=r)
                    runs.append(w)
                    log.info("%s", w)
    summary: dict[str, Any] = {}
    for mode in ("paced", "unpaced"):
        summary[mode] = {}
        for n in (0, 1, clients):
            rows = [w for w in runs if w["mode"] == mode and w["clients"] == n]
            keys = [k for k in rows[0] if k not in ("mode", "repeat", "clients")]
            summary[mode][n] = {k: statistics.median(w[k] for w in rows) for k in keys}
        base, loaded = summary[mode][0], summary[mode][clients]
        summary[mode]["fps_drop_pct"] = 100.0 * (1.0 - loaded["fps"] / base["fps"])
        summary[mode]["capacity_drop_pct"] = 100.0 * (1.0 - base["step_ms"] / loaded["step_ms"])
    return {"video": video, "clients": clients, "seconds": seconds, "repeats": repeats,
            "cpus": os.cpu_count(), "runs": runs, "summary": summary}


def format_summary(res: dict[str, Any]) -> str:
    lines = [f"face3d serve benchmark: {Path(res['video']).name}, {res['repeats']} repeats x "
             f"{res['seconds']:.0f} s windows, {res['cpus']} CPUs (medians)"]
    head = f"{'mode':8} {'clients':>7} {'fps':>7} {'step ms':>8} {'send p50':>9} {'p95':>7} " \
           f"{'p99':>7} {'recv p50':>9} {'p95':>7}"
    lines.append(head)
    for mode, rows in res["summary"].items():
        for n, m in rows.items():
            if not isinstance(m, dict):
                continue
            lines.append(f"{mode:8} {n:>7} {m['fps']:7.1f} {m['step_ms']:8.2f} "
                         f"{m['send_ms_p50']:9.2f} {m['send_ms_p95']:7.2f} {m['send_ms_p99']:7.2f} "
                         f"{m.get('recv_ms_p50', float('nan')):9.2f} {m.get('recv_ms_p95', float('nan')):7.2f}")
        lines.append(f"{mode:8} fps drop with {res['clients']} clients: {rows['fps_drop_pct']:.1f} %, "
                     f"capacity (1000/step ms) drop: {rows['capacity_drop_pct']:.1f} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tracker.bench_serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("video", nargs="?", help="video (default: $FACE3D_MEDIA/videos/liveportrait/d10.mp4)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write all numbers here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="bench_serve: %(message)s")
    video = args.video or os.path.join(os.environ.get("FACE3D_MEDIA", ""), "videos", "liveportrait", "d10.mp4")
    if not os.path.isfile(video):
        ap.error(f"no video at {video}: pass one or set FACE3D_MEDIA")
    res = run_bench(video, clients=args.clients, seconds=args.seconds, repeats=args.repeats)
    print(format_summary(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
