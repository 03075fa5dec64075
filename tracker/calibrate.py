"""Refining the MediaPipe→ICT correspondence on tracked frames.

The geometric table (:func:`tracker.correspondence.build_correspondence`) places each MediaPipe
point where MediaPipe's *canonical* mesh lies on the ICT face. What MediaPipe actually reports on
real faces differs systematically (its mesh is a different face; its eyelid and lip contours are
what a network learned to call the lid or lip line). Those differences are not identity or
expression, so the fitter absorbs them as wrong expression weights.

:func:`refine_offsets` estimates them from fits: every point's 2D residual is taken back to model
space (at the point's depth, through the fitted pose), averaged robustly over frames (median per
sequence, then median over sequences, so that no single subject or expression dominates), projected
onto the surface's tangent plane and applied as a move along the surface; points are re-snapped to
the surface. A few rounds, each re-fitting with the moved points, converge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from .correspondence import Correspondence, contour_snaps, front_face_triangles, snap_to_edges
from .facemodel import FaceModel
from .meshgeom import closest_point_on_mesh
from .pipeline import FaceTracker, TrackConfig
from .rotation import quat_to_matrix
from .types import Camera, Landmarks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sequence:
    """Landmarks of one video: ``points (N, 478, 3)`` (NaN rows = no face), times ``(N,)``."""

    name: str
    points: np.ndarray
    times: np.ndarray
    camera: Camera
    sar: float = 1.0


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.zeros_like(v)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def sequence_residuals(model: FaceModel, corr: Correspondence, seq: Sequence,
                       cfg: TrackConfig) -> np.ndarray:
    """Per-frame model-space residual vectors ``(N_tracked, 468, 3)`` (metres) of one sequence.

    Residual = target − model point, in the camera plane at the point's depth, rotated into model
    axes. Rows for points the fit does not use are still computed (all 468).
    """
    tr = FaceTracker(model, seq.camera, cfg, sar=seq.sar, corr=corr, detector=object())  # type: ignore[arg-type]
    res: dict[int, object] = {}
    for i, (p, t) in enumerate(zip(seq.points, seq.times)):
        faces = () if not np.isfinite(p).all() else (Landmarks(p),)
        fr = tr.step_landmarks(i, float(t), faces)
        for f in fr.faces:
            res[i] = f
        for idx, rv in tr.pop_revisions():
            res[idx] = rv
    cam = seq.camera
    out = []
    allc = Correspondence(np.arange(468), corr.vertex_ids, corr.bary, corr.group)
    for i in sorted(res):
        f = res[i]
        p = f.params  # type: ignore[attr-defined]
        from .facemodel import vertices
        v = vertices(model, p.identity, p.expression, idx=None)
        xm = allc.points(v)
        r = quat_to_matrix(p.rotation)
        xc = xm @ r.T + p.translation
        z = -xc[:, 2]
        tgt = seq.points[i, :468, :2]
        u = cam.cx + cam.fx * xc[:, 0] / z
        vv = cam.cy - cam.fy * xc[:, 1] / z
        d_cam = np.stack([(tgt[:, 0] - u) * z / cam.fx, -(tgt[:, 1] - vv) * z / cam.fy,
                          np.zeros(468)], 1)
        out.append(d_cam @ r)  # camera → model axes
    return np.array(out)


def refine_offsets(model: FaceModel, corr: Correspondence, seqs: list[Sequence], cfg: TrackConfig,
                   rounds: int = 3, step: float = 1.0, keep_groups: tuple[str, ...] = ("oval",),
                   on_contour: tuple[str, ...] = ("lips_inner",), min_y: float = -np.inf
                   ) -> tuple[Correspondence, list[dict[str, float]]]:
    """Move correspondence points by the robust mean residual (see module docstring).

    Points in ``keep_groups`` stay where they are; points of the ``on_contour`` groups only slide
    along their contour (the inner lip line must stay where the lips meet, or a closed mouth
    would need ``mouthClose`` to close a gap the table invented). Points below ``min_y`` (model
    y, metres) stay too: on talking clips the mouth region's median residual is an expression
    (a half-open jaw), not a table error, and moving it there teaches the table an open mouth.
    Returns the refined table and per-round stats
    (median residual length in mm before each round).
    """
    faces = front_face_triangles(model)
    v0 = model.neutral.astype(np.float64)
    normals = _vertex_normals(v0, faces)
    stats = []
    cur = corr
    for k in range(rounds):
        per_seq = []
        for s in seqs:
            r = sequence_residuals(model, cur, s, cfg)
            if len(r):
                per_seq.append(np.median(r, axis=0))
        delta = np.median(np.array(per_seq), axis=0)  # (468, 3)
        pos = cur.points(v0)
        nrm = np.einsum("pkc,pk->pc", normals[cur.vertex_ids], cur.bary)
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
        delta_t = delta - np.sum(delta * nrm, 1, keepdims=True) * nrm
        keep = np.array([g in keep_groups for g in cur.group]) | (pos[:, 1] < min_y)
        delta_t[keep] = 0.0
        stats.append({"round": k, "median_offset_mm": float(np.median(np.linalg.norm(delta_t[~keep], axis=1)) * 1e3),
                      "p95_offset_mm": float(np.quantile(np.linalg.norm(delta_t[~keep], axis=1), 0.95) * 1e3)})
        log.info("refine round %d: median move %.2f mm", k, stats[-1]["median_offset_mm"])
        moved = pos + step * delta_t
        tri, bary, _ = closest_point_on_mesh(moved, v0, faces)
        vids = np.where(keep[:, None], cur.vertex_ids, faces[tri])
        bb = np.where(keep[:, None], cur.bary, bary)
        # contour points (lid margins, inner lip line) only slide along their own loop
        for g, ids, edges in contour_snaps(model):
            if g not in on_contour:
                continue
            for i in ids:
                vids[i], bb[i], _ = snap_to_edges(moved[i], v0, edges)
        cur = replace(cur, vertex_ids=vids.astype(np.int64), bary=bb.astype(np.float32))
    return cur, stats


def landmark_sequence(path: str, stride: int = 1) -> Sequence:
    """Run MediaPipe over a video file (every frame, for its tracking) and keep every
    ``stride``-th frame's landmarks."""
    from .camera import camera_from_fov
    from .landmarks import LandmarkDetector
    from .sources import open_source

    pts, ts = [], []
    with open_source(path) as src:
        det = LandmarkDetector(max_faces=1)
        try:
            for f in src:
                faces = det.detect(f.image, f.time_s, src.info.sar)
                if f.index % stride == 0:
                    pts.append(faces[0].points if faces else np.full((478, 3), np.nan, np.float32))
                    ts.append(f.time_s)
        finally:
            det.close()
        info = src.info
    return Sequence(str(path), np.array(pts), np.array(ts),
                    camera_from_fov(info.width, info.height, sar=info.sar), info.sar)


def refine_on_videos(model: FaceModel, corr: Correspondence, videos: list[str], stride: int = 2,
                     rounds: int = 3, cfg: TrackConfig | None = None
                     ) -> tuple[Correspondence, list[dict[str, float]]]:
    """:func:`refine_offsets` on real videos, upper face only (above the nose base, iBUG 33)."""
    if cfg is None:
        from .trackconfig import load_track_config
        cfg = load_track_config()
    seqs = [landmark_sequence(v, stride) for v in videos]
    min_y = float(model.neutral[model.lmk68_idx[33], 1])
    return refine_offsets(model, corr, seqs, cfg, rounds=rounds, min_y=min_y)
