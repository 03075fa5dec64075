"""68-point NME of ``face3d bench`` against human iBUG ``.pts`` annotations next to images.

For every ``X.pts`` with an image ``X.jpg|png|…`` beside it (:func:`tracker.ibug.find_annotated_images`)
the image is tracked as ``face3d track X.jpg`` would (still-image mode, mean identity for a single
image; up to four faces, the one nearest the annotation is scored), and two NMEs are computed
against the annotation (% of its outer-eye-corner distance, :func:`tracker.ibug.nme_pct`): the
projected ICT ``lmk68`` points, and MediaPipe's own 68-equivalents for comparison — each with and
without the jaw (0–16), whose ICT points sit on the frontal silhouette.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .correspondence import load_mp68
from .errors import Face3dError
from .facemodel import FaceModel
from .ibug import nme_pct, read_pts
from .pipeline import FaceTracker, TrackConfig, make_camera
from .sources import open_source
from .track import project_lmk68

log = logging.getLogger(__name__)


def evaluate_image(model: FaceModel, cfg: TrackConfig, image: Path, pts: Path) -> dict[str, Any]:
    """NMEs (``ict``, ``ict_no_jaw``, ``mediapipe``, ``mediapipe_no_jaw``, %) for one image, or
    ``{"error": …}`` when the annotation is not 68 points or no face is found."""
    gt = read_pts(pts)
    if gt.shape != (68, 2):
        return {"error": f"{pts.name}: {len(gt)} points, not 68"}
    with open_source(image) as src:
        frame = next(iter(src))
        info = src.info
    cam = make_camera(info, cfg)
    tracker = FaceTracker(model, cam, replace(cfg, max_faces=max(cfg.max_faces, 4)), sar=info.sar,
                          static_images=True)
    try:
        res = tracker.step(frame)
    finally:
        tracker.close()
    faces = [f for f in res.faces if f.params is not None and f.landmarks is not None]
    if not faces:
        return {"error": "no face found"}
    mp68 = load_mp68()
    centre = gt.mean(axis=0)
    best = min(faces, key=lambda f: float(np.linalg.norm(
        mp68.points(f.landmarks.points[:, :2]).mean(axis=0) - centre)))  # type: ignore[union-attr]
    pred = project_lmk68(model, cam, best.params)  # type: ignore[arg-type]
    mp = mp68.points(best.landmarks.points[:, :2])  # type: ignore[union-attr]
    return {"ict": nme_pct(pred, gt), "ict_no_jaw": nme_pct(pred, gt, include_jaw=False),
            "mediapipe": nme_pct(mp, gt), "mediapipe_no_jaw": nme_pct(mp, gt, include_jaw=False),
            "faces_found": len(faces)}


def evaluate_nme(model: FaceModel, cfg: TrackConfig,
                 pairs: Sequence[tuple[Path, Path]]) -> dict[str, Any]:
    """Per-image NMEs and their means/medians over the scored images (see module doc)."""
    per: dict[str, dict[str, Any]] = {}
    for image, pts in pairs:
        try:
            per[str(image)] = evaluate_image(model, cfg, image, pts)
        except Face3dError as e:
            per[str(image)] = {"error": str(e)}
    scored = [v for v in per.values() if "error" not in v]
    summary: dict[str, Any] = {"annotated_images": len(pairs), "scored": len(scored)}
    for k in ("ict", "ict_no_jaw", "mediapipe", "mediapipe_no_jaw"):
        vals = np.array([v[k] for v in scored])
        summary[f"{k}_mean"] = float(vals.mean()) if len(vals) else float("nan")
        summary[f"{k}_median"] = float(np.median(vals)) if len(vals) else float("nan")
    return {"summary": summary, "images": per}
