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

Fits can only make the table self-consistent: a bias every frame shares (MediaPipe placing the
brows a little low on every face, say) is absorbed by the fitted pose and identity and never shows
as a residual. Measured: the real-clip table tracked renders with known coefficients with a head
pitch 2–4° high. :func:`refine_on_renders` anchors the table to the truth instead: clips rendered
from the model with known coefficients and camera (:func:`tracker.synth.synth`) are run through
MediaPipe, and the residual is taken at the *true* coefficients (:class:`Truth`), so the moves
are what MediaPipe reports against where the point really is. Every point but the face oval
moves (the truth holds the expression, so the mouth's residual is a table error there too).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .correspondence import (
    Correspondence,
    contour_snaps,
    front_face_triangles,
    snap_to_edges,
)
from .facemodel import FaceModel
from .meshgeom import closest_point_on_mesh
from .pipeline import FaceTracker, TrackConfig
from .rotation import quat_to_matrix
from .types import Camera, Landmarks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Truth:
    """Known coefficients of a rendered clip, one row per frame of its :class:`Sequence`:
    ``rotation (N, 4)`` quaternions, ``translation (N, 3)`` metres, ``identity (N, K)``,
    ``expression (N, E)``; NaN rows = unknown."""

    rotation: np.ndarray
    translation: np.ndarray
    identity: np.ndarray
    expression: np.ndarray


@dataclass(frozen=True)
class Sequence:
    """Landmarks of one video: ``points (N, 478, 3)`` (NaN rows = no face), times ``(N,)``;
    ``truth`` when the clip was rendered with known coefficients (``camera`` is then the true
    one)."""

    name: str
    points: np.ndarray
    times: np.ndarray
    camera: Camera
    sar: float = 1.0
    truth: Truth | None = None


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
    out = []
    for i in sorted(res):
        p = res[i].params  # type: ignore[attr-defined]
        out.append(model_space_residual(model, corr, seq.camera, p.rotation, p.translation,
                                        p.identity, p.expression, seq.points[i]))
    return np.array(out)


def truth_residuals(model: FaceModel, corr: Correspondence, seq: Sequence) -> np.ndarray:
    """Like :func:`sequence_residuals`, at the clip's known coefficients (``seq.truth``) instead
    of fitted ones: what MediaPipe reports against where each table point really is."""
    t = seq.truth
    if t is None:
        raise ValueError(f"{seq.name}: no known coefficients")
    out = []
    for i, pts in enumerate(seq.points):
        if np.isfinite(pts).all() and np.isfinite(t.rotation[i]).all():
            out.append(model_space_residual(model, corr, seq.camera, t.rotation[i],
                                            t.translation[i], t.identity[i], t.expression[i], pts))
    return np.array(out).reshape(-1, 468, 3)


def model_space_residual(model: FaceModel, corr: Correspondence, cam: Camera, q: np.ndarray,
                         t: np.ndarray, identity: np.ndarray, expression: np.ndarray,
                         landmarks: np.ndarray) -> np.ndarray:
    """Residual ``(468, 3)`` (metres, model axes) of MediaPipe's ``landmarks (478, 3)`` against
    the table's points on the face with these coefficients: the image offset taken to the
    point's depth in the camera plane, rotated into model axes."""
    from .facemodel import vertices

    xm = corr.points(vertices(model, identity, expression, idx=None))
    r = quat_to_matrix(q)
    xc = xm @ r.T + t
    z = -xc[:, 2]
    tgt = landmarks[:468, :2]
    u = cam.cx + cam.fx * xc[:, 0] / z
    v = cam.cy - cam.fy * xc[:, 1] / z
    d_cam = np.stack([(tgt[:, 0] - u) * z / cam.fx, -(tgt[:, 1] - v) * z / cam.fy,
                      np.zeros(len(z))], 1)
    return d_cam @ r  # camera → model axes


def refine_offsets(model: FaceModel, corr: Correspondence, seqs: list[Sequence], cfg: TrackConfig,
                   rounds: int = 3, step: float = 1.0, keep_groups: tuple[str, ...] = ("oval",),
                   on_contour: tuple[str, ...] = ("lips_inner",), min_y: float = -np.inf
                   ) -> tuple[Correspondence, list[dict[str, float]]]:
    """Move correspondence points by the robust mean residual (see module docstring): against
    fits, or against the known coefficients for sequences that carry a :class:`Truth`.

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
            r = truth_residuals(model, cur, s) if s.truth is not None else \
                sequence_residuals(model, cur, s, cfg)
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


def render_sequences(model: FaceModel, workdir: Path, seeds: Iterable[int], seconds: float = 4.0,
                     size: int = 512, fps: float = 30.0) -> list[Sequence]:
    """Render one clip per seed with :func:`tracker.synth.synth` into ``workdir``, run MediaPipe
    over it and return its landmarks with the known coefficients and the true camera."""
    from .bench_synth import read_truth, truth_params
    from .synth import synth

    workdir.mkdir(parents=True, exist_ok=True)
    seqs = []
    for seed in seeds:
        made = synth(workdir / f"synth_{seed}.mp4", model, seconds=seconds, size=(size, size),
                     fps=fps, seed=seed)
        table, cam = read_truth(made.video, made.csv)
        gt = truth_params(table, model)
        seq = landmark_sequence(str(made.video), 1)
        n = len(seq.points)
        truth = Truth(*(_by_frame(gt[k], gt["frame"], n) for k in ("q", "t", "id", "e")))
        seqs.append(replace(seq, name=made.video.name, camera=cam, truth=truth))
        log.info("%s: MediaPipe found the face in %d of %d frames", made.video.name,
                 int(np.isfinite(seq.points).all(axis=(1, 2)).sum()), n)
    return seqs


def refine_on_renders(model: FaceModel, corr: Correspondence, seeds: Iterable[int],
                      workdir: Path, rounds: int = 4, seconds: float = 4.0, size: int = 512,
                      cfg: TrackConfig | None = None
                      ) -> tuple[Correspondence, list[dict[str, float]]]:
    """:func:`refine_offsets` anchored to the truth of clips rendered from the model (see the
    module docstring): every point but the face oval moves; the inner lip line slides along the
    lips' contact line. Renders go to ``workdir``. The bench's synthetic clips use seeds 0–2:
    calibrate on others."""
    if cfg is None:
        from .trackconfig import load_track_config
        cfg = load_track_config()
    seqs = render_sequences(model, workdir, seeds, seconds=seconds, size=size)
    return refine_offsets(model, corr, seqs, cfg, rounds=rounds)


def _by_frame(rows: np.ndarray, frame: np.ndarray, n: int) -> np.ndarray:
    """Table ``rows (R, C)`` placed at their ``frame`` numbers in an ``(n, C)`` array (NaN
    elsewhere)."""
    out = np.full((n, rows.shape[1]), np.nan)
    ok = (frame >= 0) & (frame < n)
    out[frame[ok]] = rows[ok]
    return out
