"""Loading :class:`tracker.pipeline.TrackConfig` from ``configs/track.toml``.

The TOML holds the defaults the CLI starts from; CLI flags override single fields. A missing file
(e.g. a wheel install without ``configs/``) falls back to the built-in defaults, which a test pins
equal to the TOML.
"""

from __future__ import annotations

from pathlib import Path

from .config import load_config
from .pipeline import TrackConfig


def default_track_config_path() -> Path:
    return Path(__file__).resolve().parents[1] / "configs" / "track.toml"


def load_track_config(path: str | Path | None = None) -> TrackConfig:
    if path is None:
        p = default_track_config_path()
        if not p.is_file():
            return TrackConfig()
        return load_config(TrackConfig, p)
    return load_config(TrackConfig, path)
