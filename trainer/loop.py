"""The training loop: data, Adam with a schedule, checkpoints and ``--resume``, ``metrics.csv``,
validation, ONNX export; DDP when started by ``torchrun`` (gloo on CPU, nccl on CUDA).

``OUT/`` after a run::

    config.json       the resolved TrainConfig
    metrics.csv       step, time_s, lr, samples_per_s, loss and every term (rank 0, appended on resume)
    ckpt.pt           latest checkpoint: net, optimizer, scheduler, step, config
    summary.json      first/last smoothed loss, validation metrics, throughput, timings
    regressor.onnx    the exported network (``run.export_onnx``)
    cache/            the data cache when ``data.cache`` is empty

Each rank draws its own batches (seeded by ``seed``, rank and step, so a resumed run draws the same
batches it would have drawn); DDP averages the gradients.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tracker.align import LEGACY_POSE_ANCHOR_M, POSE_ANCHOR_M
from tracker.config import config_to_dict
from tracker.errors import InputError

from .config import TrainConfig, expand_sources
from .losses import TERMS, compute_losses, landmark_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_threads(n: int) -> None:
    """Set torch's intra-op threads (explicit, never at import)."""
    if n > 0:
        torch.set_num_threads(n)


def init_distributed() -> Dist:
    """Join the process group when ``torchrun`` set ``WORLD_SIZE`` > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist
        dist.barrier()


def lr_factor(cfg: TrainConfig, step: int) -> float:
    o = cfg.optim
    if step < o.warmup:
        return (step + 1) / o.warmup
    if o.schedule == "step":
        return o.gamma ** (step // o.step_every)
    p = min(1.0, (step - o.warmup) / max(1, o.steps - o.warmup))
    return o.final_lr_frac + (1.0 - o.final_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * p))


def augment(batch: dict[str, np.ndarray], rng: np.random.Generator, size: int, px: float,
            scale: float, deg: float) -> dict[str, np.ndarray]:
    """Random similarity jitter about the crop centre; image, mask, landmarks, crop camera and the
    pseudo-label pose move consistently (the crop camera stays exact)."""
    import cv2

    from tracker.align import crop_camera
    from tracker.types import Camera

    if px <= 0 and scale <= 0 and deg <= 0:
        return batch
    out = {k: v.copy() for k, v in batch.items()}
    c = size / 2.0
    for i in range(len(batch["image"])):
        s = 1.0 + rng.uniform(-scale, scale)
        th = math.radians(rng.uniform(-deg, deg))
        dx, dy = rng.uniform(-px, px, 2)
        m = s * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        a = np.concatenate([m, (np.array([c + dx, c + dy]) - m @ [c, c])[:, None]], 1)
        sh = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]) @ np.vstack([a, [0, 0, 1]]) \
            @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
        out["image"][i] = cv2.warpAffine(batch["image"][i], sh[:2], (size, size),
                                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out["mask"][i] = cv2.warpAffine(batch["mask"][i], sh[:2], (size, size),
                                        flags=cv2.INTER_NEAREST, borderValue=0)
        lm = batch["lmk"][i]
        out["lmk"][i, :, :2] = lm[:, :2] @ a[:, :2].T + a[:, 2]
        out["lmk"][i, :, 2] = lm[:, 2] * s
        f, ppx, ppy = batch["cam"][i]
        cam = Camera(float(f), float(f), float(ppx), float(ppy), size, size)
        ncam, rz = crop_camera(cam, a, size)
        out["cam"][i] = (ncam.fx, ncam.cx, ncam.cy)
        out["rot"][i] = rz @ batch["rot"][i]
        out["trans"][i] = rz @ batch["trans"][i]
    return out


def to_torch(b: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}
    t["image"] = t["image"].permute(0, 3, 1, 2).float().div_(255.0)
    return {k: v.to(device) for k, v in t.items()}


KEYS = ("image", "lmk", "mask", "cam", "rot", "trans", "expr", "ident", "fit_rms")


def load_data(cfg: TrainConfig, out: Path, d: Dist, say: Callable[[str], None]):
    from tracker.facemodel import load_face_model

    from .data import PrepareConfig, find_sources, load_cache, prepare, render_clips

    cache = Path(cfg.data.cache) if cfg.data.cache else out / "cache"
    if (cfg.data.sources or cfg.data.renders) and d.main:
        srcs = find_sources(expand_sources(cfg.data.sources)) if cfg.data.sources else []
        if cfg.data.renders:
            t0 = time.perf_counter()
            seeds = range(cfg.data.render_seed, cfg.data.render_seed + cfg.data.renders)
            srcs += render_clips(cache / "renders", seeds, cfg.data.render_seconds,
                                 cfg.data.render_size)
            say(f"renders: {cfg.data.renders} clips, {time.perf_counter() - t0:.1f} s")
        pcfg = PrepareConfig(size=cfg.size, every=cfg.data.every, max_frames=cfg.data.max_frames,
                             max_faces=cfg.data.max_faces)
        t0 = time.perf_counter()
        prepare(srcs, cache, load_face_model(), pcfg, progress=lambda m: say(f"prepare: {m}"))
        say(f"prepare: {time.perf_counter() - t0:.1f} s")
    _barrier(d)
    train = load_cache(cache, exclude=cfg.data.val)
    val = load_cache(cache, include=cfg.data.val) if cfg.data.val else None
    return train, val


def train(cfg: TrainConfig, out: Path, resume: bool = False, say: Callable[[str], None] = print,
          steps: int | None = None) -> dict:
    """Run (or resume) a training run into ``out``. Returns the summary (also ``summary.json``)."""
    from tracker.correspondence import load_correspondence
    from tracker.facemodel import load_face_model

    from .facelayer import FaceLayer
    from .net import RegressorNet
    from .render import make_renderer

    d = init_distributed()
    setup_threads(cfg.run.threads)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    total_steps = steps if steps is not None else cfg.optim.steps
    device = torch.device(f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.run.seed)
    model = load_face_model()
    face = FaceLayer(model, load_correspondence(), cfg.net.albedo_k).to(device)
    net = RegressorNet(cfg.net, model.n_identity, model.n_expression).to(device)
    renderer = make_renderer(cfg.run.renderer)
    train_data, val_data = load_data(cfg, out, d, say if d.main else (lambda m: None))
    n_train = len(train_data["image"])
    t_data = time.perf_counter() - t_start
    opt = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s))
    start = 0
    ckpt_path = out / "ckpt.pt"
    if resume:
        if not ckpt_path.is_file():
            raise InputError(f"--resume: no checkpoint at {ckpt_path}")
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        anchor = tuple(ck.get("pose_anchor", LEGACY_POSE_ANCHOR_M))
        if anchor != tuple(POSE_ANCHOR_M):
            raise InputError(f"--resume: {ckpt_path} was trained with its pose at {anchor} (model "
                             f"metres), this version puts it at {POSE_ANCHOR_M}; start a new run")
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        start = int(ck["step"])
        say(f"resumed from step {start}")
    model_ddp: torch.nn.Module = net
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model_ddp = DDP(net, device_ids=[d.local_rank] if device.type == "cuda" else None)
    lmk_w = landmark_weights(face, cfg.loss).to(device)
    from tracker.fitting import GAZE_NAMES

    from .synthetic import synth_samples
    gaze = np.array([n in GAZE_NAMES for n in model.exp_names])
    if d.main:
        (out / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=1))
    metrics_f = None
    writer = None
    if d.main:
        new = not (resume and (out / "metrics.csv").is_file())
        metrics_f = open(out / "metrics.csv", "w" if new else "a", newline="")  # noqa: SIM115 - closed in finally
        writer = csv.writer(metrics_f)
        if new:
            writer.writerow(["step", "time_s", "lr", "samples_per_s", "loss", *TERMS])
    say(f"train: {n_train} samples, {d.world} process(es), batch {cfg.optim.batch}/process, "
        f"steps {start}..{total_steps}, renderer {renderer.name}, device {device}")
    net.train()
    t_loop = time.perf_counter()
    samples = 0
    history: list[float] = []
    try:
        for step in range(start, total_steps):
            rng = np.random.default_rng([cfg.run.seed, d.rank, step])
            ix = rng.integers(0, n_train, cfg.optim.batch)
            b = {k: train_data[k][ix] for k in KEYS}
            b = augment(b, rng, cfg.size, cfg.data.augment_px, cfg.data.augment_scale, cfg.data.augment_deg)
            n_syn = round(cfg.data.synth_frac * cfg.optim.batch)
            if n_syn > 0:
                syn = synth_samples(rng, n_syn, face, renderer, train_data["image"], cfg.size, gaze)
                b = {k: np.concatenate([b[k][n_syn:], syn[k]]) for k in KEYS}
                b["syn"] = np.arange(cfg.optim.batch) >= cfg.optim.batch - n_syn
            bt = to_torch(b, device)
            use_photo = cfg.loss.photo > 0 and step % cfg.run.photo_every == 0
            loss, terms, _ = compute_losses(model_ddp, face, renderer if use_photo else None, bt,
                                            cfg.loss, lmk_w, cfg.size)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
            opt.step()
            sched.step()
            samples += cfg.optim.batch * d.world
            el = time.perf_counter() - t_loop
            lv = float(loss.detach())
            history.append(lv)
            if writer is not None:
                writer.writerow([step, f"{el:.3f}", f"{opt.param_groups[0]['lr']:.3g}",
                                 f"{samples / el:.2f}", f"{lv:.6g}", *(f"{terms[k]:.6g}" for k in TERMS)])
            if d.main and (step % cfg.run.log_every == 0 or step == total_steps - 1):
                metrics_f.flush()  # type: ignore[union-attr]
                say(f"step {step:5d}  loss {lv:.4f}  lmk {terms['lmk']:.5f}  photo {terms['photo']:.4f}"
                    f"  pl_exp {terms['pl_exp']:.4f}  {samples / el:.1f} samples/s")
            if d.main and ((step + 1) % cfg.run.ckpt_every == 0 or step == total_steps - 1):
                save_checkpoint(ckpt_path, net, opt, sched, step + 1, cfg)
    finally:
        if metrics_f is not None:
            metrics_f.close()
    t_train = time.perf_counter() - t_loop
    summary: dict = {}
    if d.main:
        summary = finish(cfg, out, net, face, renderer, val_data or train_data, device,
                         history, start, t_data, t_train, samples, say)
    _barrier(d)
    return summary


def save_checkpoint(path: Path, net, opt, sched, step: int, cfg: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "step": step, "config": config_to_dict(cfg), "pose_anchor": list(POSE_ANCHOR_M)}, tmp)
    os.replace(tmp, path)


def _smoothed(h: list[float], n: int = 10) -> tuple[float, float]:
    if not h:
        return float("nan"), float("nan")
    k = max(1, min(n, len(h) // 4 or 1))
    return float(np.mean(h[:k])), float(np.mean(h[-k:]))


def finish(cfg: TrainConfig, out: Path, net, face, renderer, val: dict, device, history,
           start: int, t_data: float, t_train: float, samples: int, say) -> dict:
    from .evaluate import evaluate_cache
    from .export import export_onnx

    first, last = _smoothed(history)
    net.eval()
    t0 = time.perf_counter()
    metrics = evaluate_cache(net, face, renderer, val, cfg.size, device)
    t_eval = time.perf_counter() - t0
    summary = {"first_loss": first, "last_loss": last,
               "loss_drop": (first - last) / first if first and start == 0 else None,
               "steps": len(history), "start_step": start,
               "samples_per_s": samples / t_train if t_train > 0 else None,
               "seconds": {"data": round(t_data, 2), "train": round(t_train, 2), "eval": round(t_eval, 2)},
               "val": metrics}
    if cfg.run.export_onnx:
        t0 = time.perf_counter()
        export_onnx(net, out / "regressor.onnx", meta={"config": json.dumps(config_to_dict(cfg))})
        summary["seconds"]["export"] = round(time.perf_counter() - t0, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    say("summary: " + json.dumps(summary))
    return summary
