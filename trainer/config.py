"""Training configuration: frozen dataclasses filled from ``configs/train-*.toml`` by
:func:`tracker.config.load_config` (unknown keys are errors).

Paths in ``[data] sources`` may use ``$FACE3D_MEDIA`` (and any other environment variable); they
are expanded when the run starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tracker.config import load_config

from .losses import LossConfig
from .net import NetConfig


@dataclass(frozen=True)
class DataConfig:
    """``sources``: videos/images/folders to prepare (skipped when already cached);
    ``cache``: cache folder (default ``OUT/cache``); ``val``: substrings of source paths held out
    for validation; ``every`` / ``max_frames`` / ``max_faces``: see
    :class:`trainer.data.PrepareConfig`. ``augment_px``/``augment_scale``/``augment_deg``: random
    similarity jitter of the crops (shift in pixels, relative scale, rotation in degrees);
    ``synth_frac``: fraction of each batch replaced by synthetic samples with known coefficients
    (:mod:`trainer.synthetic`). ``renders``: this many clips rendered from the model
    (``face3d synth``, seeds ``render_seed`` …, ``render_seconds`` long, ``render_size`` square)
    are prepared like videos, labelled with their known coefficients instead of fits
    (:func:`trainer.data.render_clips`)."""

    sources: tuple[str, ...] = ()
    cache: str = ""
    val: tuple[str, ...] = ()
    every: int = 3
    max_frames: int = 0
    max_faces: int = 2
    augment_px: float = 3.0
    augment_scale: float = 0.05
    augment_deg: float = 5.0
    synth_frac: float = 0.0
    renders: int = 0
    render_seed: int = 100
    render_seconds: float = 2.0
    render_size: int = 512


@dataclass(frozen=True)
class OptimConfig:
    """Adam; ``schedule``: ``cosine`` (to ``lr * final_lr_frac`` after ``warmup`` linear steps) or
    ``step`` (× ``gamma`` every ``step_every`` steps)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch: int = 32
    steps: int = 2000
    schedule: Literal["cosine", "step"] = "cosine"
    warmup: int = 50
    final_lr_frac: float = 0.05
    step_every: int = 1000
    gamma: float = 0.2
    grad_clip: float = 5.0

    def __post_init__(self) -> None:
        if self.batch < 1 or self.steps < 1 or not self.lr > 0:
            raise ValueError("batch and steps must be >= 1 and lr > 0")


@dataclass(frozen=True)
class RunConfig:
    """``renderer``: ``auto`` | ``numba`` | ``nvdiffrast``; ``photo_every``: compute the
    photometric term every n-th step (rendering is most of a CPU step); ``threads``: torch
    intra-op threads per process (0 = leave torch's default); ``log_every``, ``ckpt_every``
    (steps); ``export_onnx``: write ``OUT/regressor.onnx`` at the end."""

    seed: int = 0
    renderer: str = "auto"
    photo_every: int = 1
    threads: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    export_onnx: bool = True


@dataclass(frozen=True)
class TrainConfig:
    size: int = 128
    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=NetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.net.size != self.size:
            raise ValueError(f"net.size ({self.net.size}) must equal size ({self.size})")


def load_train_config(path: str | Path) -> TrainConfig:
    """Load a training TOML (see :class:`TrainConfig`); ``net.size`` defaults to ``size``."""
    import tomllib

    from tracker.errors import ConfigError

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    if "size" in raw and isinstance(raw.get("net", {}), dict) and "size" not in raw.get("net", {}):
        raw = dict(raw)
        raw["net"] = {**raw.get("net", {}), "size": raw["size"]}
    try:
        return load_config(TrainConfig, raw)
    except ConfigError as e:
        raise ConfigError(str(e).replace("<mapping>", str(path))) from None


def expand_sources(sources: tuple[str, ...]) -> list[str]:
    """Expand environment variables and ``~``; an unset variable is an error."""
    from tracker.errors import ConfigError

    out = []
    for s in sources:
        e = os.path.expanduser(os.path.expandvars(s))
        if "$" in e:
            raise ConfigError(f"data source {s!r}: environment variable not set")
        out.append(e)
    return out
