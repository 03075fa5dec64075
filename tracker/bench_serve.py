"""Benchmark of ``face3d serve``: the tracker's fps with 0 / 1 / N clients and frame-to-send latency.

::

    python -m tracker.bench_serve [VIDEO] [--clients 20] [--seconds 4] [--repeats 5] [--json OUT]

For each mode — ``paced`` (the file in real time, as served) and ``unpaced`` (tracked as fast as
possible: the tracker's capacity) — one server is started on the video (looping) and measured in
``repeats`` cycles of adjacent ``seconds``-long windows with 0, 1 and ``clients`` reading
clients (order rotated per cycle). Clients run in a separate process, as browsers would.

Numbers per window:

* ``fps``: tracker steps per second; ``step_ms``: mean tracking time per frame (busy time /
  steps), so ``1000 / step_ms`` is the tracker's capacity even when it is paced;
* ``send_ms``: server-side frame-to-send latency, per client and frame: tracking finished →
  ``send`` returned (encoding, fan-out, event-loop wake-up, GIL hand-over) — p50/p95/p99;
* ``cpu% srv`` / ``track``: CPU used by the server's event-loop thread and by the tracker
  (its whole process: decoding, MediaPipe, fitting), in % of one core (Linux);
* ``recv_ms``: client-side age on arrival, ``time.time()`` at receipt − the frame's ``t_ready``
  (same machine, same clock) — p50/p95.

Two kinds of clients: ``ws`` (websockets, JSON parsed: a realistic Python client) and ``raw``
(sockets drained without parsing). On a 2-core machine the clients share the CPU with the
server, so ``raw`` clients isolate the server's own cost.

Reported: the median over cycles of each number, and the median over cycles of the fps drop
(and step-time rise) with ``clients`` clients relative to the same cycle's window with none —
pairing adjacent windows keeps other load on the machine from masquerading as server cost.
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

WARM_STEPS = 90   # past the tracker's identity updates (frames 10 and 40) and their refits


def WINDOWS(clients: int) -> tuple[tuple[int, str], ...]:  # noqa: N802 - a constant table
    """Measurement windows: (number of clients, kind); ``raw`` clients only drain their sockets,
    ``ws`` clients are websockets clients parsing every frame's JSON."""
    return ((0, "-"), (1, "ws"), (clients, "raw"), (clients, "ws"))


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


def _raw_clients(url: str, n: int, seconds: float, ready: Any) -> dict[str, Any]:
    """``n`` clients that only drain their sockets (no WebSocket parsing): the cheapest possible
    readers, so that the server's own cost shows on a machine shared with the clients."""
    import selectors
    import socket

    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    u = parse_uri(url)
    sel = selectors.DefaultSelector()
    socks, nbytes = [], [0] * n
    for i in range(n):
        proto = ClientProtocol(u)
        sock = socket.create_connection((u.host, u.port))
        proto.send_request(proto.connect())
        sock.sendall(b"".join(proto.data_to_send()))
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(4096)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
        socks.append(sock)
    ready.set()
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            try:
                nbytes[key.data] += len(key.fileobj.recv(1 << 20))
            except BlockingIOError:
                pass
    for sock in socks:
        sock.close()
    return {"ages": [], "counts": [], "bytes": nbytes}


def _client_process(url: str, n: int, seconds: float, ready: Any, out: Any, kind: str) -> None:
    if kind == "raw":
        out.put(_raw_clients(url, n, seconds, ready))
    else:
        out.put(asyncio.run(_clients(url, n, seconds, ready)))


def _pct(values: list[float], qs: tuple[float, ...]) -> list[float]:
    if not values:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(values) * 1000.0, qs)]


def _cpu_s(stat_files: dict[str, str]) -> dict[str, float]:
    """CPU seconds (user + system) used so far per ``/proc/.../stat`` file (Linux; NaN
    elsewhere)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for name, path in stat_files.items():
        try:
            fields = Path(path).read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            out[name] = float("nan")
    return out


def _cpu_sources(server: Any) -> dict[str, str]:
    """``server``: the event-loop thread; ``track``: the tracker process (all its threads:
    decode, MediaPipe, fitting) or, without isolation, the tracking thread."""
    files = {"server": f"/proc/self/task/{server._thread.native_id}/stat"}  # noqa: SLF001
    proc = getattr(server.live, "process", None)
    if proc is not None:
        files["track"] = f"/proc/{proc.pid}/stat"
    else:
        for th in server.live._threads:  # noqa: SLF001 - the benchmark looks inside
            files[th.name.replace("face3d-", "")] = f"/proc/self/task/{th.native_id}/stat"
    return files


def _window(server: Any, n: int, seconds: float, ctx: Any, kind: str) -> dict[str, Any]:
    proc = None
    if n:
        ready, out = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=_client_process,
                           args=(server.ws_url, n, seconds, ready, out, kind), daemon=True)
        proc.start()
        if not ready.wait(60):
            raise RuntimeError("bench clients did not connect")
    server.take_latencies()
    files = _cpu_sources(server)
    c0, s0, t0 = _cpu_s(files), server.stats().loop, time.perf_counter()
    time.sleep(seconds)
    c1, s1, t1 = _cpu_s(files), server.stats().loop, time.perf_counter()
    send = server.take_latencies()
    res: dict[str, Any] = {"clients": n, "kind": kind if n else "-",
                           "fps": (s1.steps - s0.steps) / (t1 - t0),
                           "step_ms": 1000.0 * (s1.busy_s - s0.busy_s) / max(1, s1.steps - s0.steps)}
    res["send_ms_p50"], res["send_ms_p95"], res["send_ms_p99"] = _pct(send, (50, 95, 99))
    for name in files:   # CPU use in % of one core
        res[f"cpu_{name}_pct"] = 100.0 * (c1[name] - c0[name]) / (t1 - t0)
    if proc is not None:
        got = out.get(timeout=seconds + 60)
        proc.join(10)
        if kind == "ws":
            res["recv_ms_p50"], res["recv_ms_p95"] = _pct(got["ages"], (50, 95))
            res["client_fps_min"] = min(got["counts"]) / seconds
        else:
            res["client_kB_s_min"] = min(got["bytes"]) / seconds / 1000
    return res


def run_bench(video: str, *, clients: int = 20, seconds: float = 4.0, repeats: int = 5,
              model: Any = None, switch_interval_s: float | None = None) -> dict[str, Any]:
    """Measure (see module doc); returns ``{"runs": [...], "summary": {mode: {n: medians}}}``.
    ``switch_interval_s``: a GIL switch interval to run with (default: CPython's, as ``face3d
    serve`` runs; measured: 1 ms instead of 5 ms costs the unpaced tracker ~30 % of its fps and
    does not lower the send latency)."""
    import sys

    previous = sys.getswitchinterval()
    if switch_interval_s is not None:
        sys.setswitchinterval(switch_interval_s)
    switch = sys.getswitchinterval()
    try:
        return _run(video, clients, seconds, repeats, model, switch)
    finally:
        sys.setswitchinterval(previous)


def _run(video: str, clients: int, seconds: float, repeats: int, model: Any,
         switch: float) -> dict[str, Any]:
    from .facemodel import load_face_model
    from .serve import LiveServer, ServeConfig
    from .trackconfig import load_track_config

    model = model or load_face_model(None)
    tcfg = load_track_config()
    ctx = mp.get_context("spawn")
    runs = []
    for mode in ("paced", "unpaced"):
        cfg = ServeConfig(video, loop=True, port=0, realtime=mode == "paced",
                          max_clients=clients + 4)
        with LiveServer(cfg, model, tcfg) as srv:
            t0 = time.monotonic()
            while srv.stats().loop.steps < WARM_STEPS and time.monotonic() - t0 < 60:
                time.sleep(0.1)
            for r in range(repeats):   # cycles of adjacent windows: paired against the cycle's
                order = list(WINDOWS(clients))  # own 0-client window (slow drifts cancel out)
                order = order[r % len(order):] + order[:r % len(order)]
                for n, kind in order:
                    w = _window(srv, n, seconds, ctx, kind)
                    w.update(mode=mode, repeat=r)
                    runs.append(w)
                    log.info("%s", w)
    summary: dict[str, Any] = {}
    for mode in ("paced", "unpaced"):
        summary[mode] = {}
        for n, kind in WINDOWS(clients):
            rows = [w for w in runs if w["mode"] == mode and w["clients"] == n and w["kind"] == kind]
            keys = [k for k in rows[0] if k not in ("mode", "repeat", "clients", "kind")]
            summary[mode][f"{n} {kind}"] = {k: statistics.median(w[k] for w in rows) for k in keys}
        for kind in ("raw", "ws"):
            fps, step = [], []
            for r in range(repeats):
                cyc = {(w["clients"], w["kind"]): w for w in runs if w["mode"] == mode and w["repeat"] == r}
                base, loaded = cyc[(0, "-")], cyc[(clients, kind)]
                fps.append(100.0 * (1.0 - loaded["fps"] / base["fps"]))
                step.append(100.0 * (loaded["step_ms"] / base["step_ms"] - 1.0))
            summary[mode][f"fps_drop_pct_{kind}"] = statistics.median(fps)
            summary[mode][f"step_ms_rise_pct_{kind}"] = statistics.median(step)
    return {"video": video, "clients": clients, "seconds": seconds, "repeats": repeats,
            "cpus": os.cpu_count(), "switch_interval_s": switch, "runs": runs, "summary": summary}


def format_summary(res: dict[str, Any]) -> str:
    lines = [f"face3d serve benchmark: {Path(res['video']).name}, {res['repeats']} cycles x "
             f"{res['seconds']:.0f} s windows, {res['cpus']} CPUs, GIL switch interval "
             f"{1000 * res['switch_interval_s']:g} ms (medians)"]
    head = f"{'mode':8} {'clients':>8} {'fps':>7} {'step ms':>8} {'send p50':>9} {'p95':>7} " \
           f"{'p99':>7} {'recv p50':>9} {'p95':>7} {'cpu% srv':>8} {'track':>6}"
    lines.append(head)
    nan = float("nan")
    for mode, rows in res["summary"].items():
        for n, m in rows.items():
            if not isinstance(m, dict):
                continue
            lines.append(f"{mode:8} {n:>8} {m['fps']:7.1f} {m['step_ms']:8.2f} "
                         f"{m['send_ms_p50']:9.2f} {m['send_ms_p95']:7.2f} {m['send_ms_p99']:7.2f} "
                         f"{m.get('recv_ms_p50', nan):9.2f} {m.get('recv_ms_p95', nan):7.2f} "
                         f"{m.get('cpu_server_pct', nan):8.1f} {m.get('cpu_track_pct', nan):6.1f}")
        for kind in ("raw", "ws"):
            lines.append(f"{mode:8} with {res['clients']} {kind} clients: tracker fps "
                         f"{-rows[f'fps_drop_pct_{kind}']:+.1f} %, step time "
                         f"{rows[f'step_ms_rise_pct_{kind}']:+.1f} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tracker.bench_serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("video", nargs="?", help="video (default: $FACE3D_MEDIA/videos/liveportrait/d10.mp4)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=4.0, help="window length (default 4)")
    ap.add_argument("--repeats", type=int, default=5, help="cycles of windows (default 5)")
    ap.add_argument("--switch-interval", type=float, default=None, metavar="S",
                    help="GIL switch interval in seconds (default: CPython's, as face3d serve runs)")
    ap.add_argument("--json", help="write all numbers here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="bench_serve: %(message)s")
    video = args.video or os.path.join(os.environ.get("FACE3D_MEDIA", ""), "videos", "liveportrait", "d10.mp4")
    if not os.path.isfile(video):
        ap.error(f"no video at {video}: pass one or set FACE3D_MEDIA")
    res = run_bench(video, clients=args.clients, seconds=args.seconds, repeats=args.repeats,
                    switch_interval_s=args.switch_interval)
    print(format_summary(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
