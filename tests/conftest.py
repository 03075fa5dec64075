"""Shared fixtures: the face model and media come from ../shared through environment variables.

Tests that need them skip with a clear reason when they are absent; `.ci/run` sets both, so
nothing is skipped in CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _env_path(name: str) -> Path | None:
    v = os.environ.get(name)
    return Path(v) if v and Path(v).exists() else None


@pytest.fixture(scope="session")
def model_path() -> Path:
    p = _env_path("FACE3D_MODEL")
    if p is None:
        pytest.skip("FACE3D_MODEL is not set to the ICT npz (../shared/models/ict/ict_face_model.npz)")
    return p


@pytest.fixture(scope="session")
def model(model_path):
    from tracker.facemodel import load_face_model
    return load_face_model(model_path)


@pytest.fixture(scope="session")
def media_dir() -> Path:
    p = _env_path("FACE3D_MEDIA")
    if p is None:
        pytest.skip("FACE3D_MEDIA is not set to ../shared/media")
    return p


@pytest.fixture(scope="session")
def shared_dir(model_path) -> Path:
    """../shared, found from FACE3D_MODEL (…/shared/models/ict/ict_face_model.npz)."""
    return model_path.parents[2]


@pytest.fixture(scope="session")
def videos(media_dir) -> dict[str, Path]:
    """Shared videos by stem, e.g. ``videos["d10"]``."""
    return {p.stem: p for p in sorted((media_dir / "videos").rglob("*.mp4"))}
