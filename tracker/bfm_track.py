"""Tracking a file with a BFM model into the 257-coefficient layout (CSV + sidecar).

:func:`track_video_bfm` is :func:`tracker.track.track_video` for a BFM model: the same decode →
:class:`~tracker.pipeline.FaceTracker` → revisions → offline zero-phase smoothing path, with the
BFM correspondence (:func:`tracker.bfm.bfm_correspondence`) and the writer of
:func:`write_bfm257`. Columns::

    frame, time_s, face_id, status, confidence,
    id_00 … id_79, exp_00 … exp_63, tex_00 … tex_79, angle_x, angle_y, angle_z,
    gamma_r_0 … gamma_b_8, trans_x, trans_y, trans_z          (Deep3DFaceRecon's 257, in order)
    [lmk68_x_00 … lmk68_y_67]                                 (with landmarks=True)

so ``df.iloc[:, 5:262].to_numpy()`` is the ``(frames, 257)`` array talking-head pipelines take.
A lost frame has empty coefficient cells, as in the default layout.

Interim pieces until the tracker takes a model's own correspondence and bounds end to end (see
the hooks listed in the batch report): the gaze stage needs eyeballs, which BFM's front face does
not have, so the tracker is given :func:`tracking_view` (the model plus two small spheres behind
the eye keypoints; their gaze output is discarded — BFM has no eyeLook weights); and the offline
smoother clips expressions to [0, 1], so BFM's unbounded PCA expressions are mapped affinely into
[0.375, 0.625] around it and back (the zero-phase filter is linear with unit DC gain, so this is
exact).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from .bfm import DM_TO_M, LAYOUT, bfm257_columns, bfm_correspondence, coefficients_257
from .correspondence import Correspondence
from .csvout import HEAD_COLUMNS, AtomicCsv, lmk68_columns, write_json_atomic
from .errors import ConfigError, InputError
from .facemodel import FaceModel
from .types import Camera, FaceResult, FrameResult, VideoInfo

EYE_RADIUS_M = 0.012
_N_SPHERE = 24

CONVENTIONS_257 = {
    "layout": "Deep3DFaceRecon split_coeff order: id 80, exp 64, tex 80, angle 3, gamma 27, trans 3",
    "model_equation": "v_dm = (meanshape - mean(meanshape)) + idBase @ id + exBase @ exp  "
                      "(BFM_model_front.mat, recentred as Deep3DFaceRecon's recenter=True)",
    "angle": "radians, R = Rz(angle_z) Ry(angle_y) Rx(angle_x) (Deep3DFaceRecon compute_rotation)",
    "trans": "decimetres; world = R v + trans, camera at world z = 10 dm looking down -z "
             "(OpenGL camera space in metres = (world - (0, 0, 10)) / 10)",
    "camera": "pinhole with the sidecar's intrinsics (input video pixels), not a 224 px crop",
    "gamma": "SH offset from Deep3DFaceRecon's default light (0.8 on each colour's DC term); "
             "zeros when no photometric estimate",
    "tex": "albedo coefficients of texBase; zeros (mean albedo) when no photometric estimate",
    "lost_rows": "status=lost, face_id=-1, numeric cells empty",
    "time_s": "presentation timestamp from the container, seconds",
}


def _sphere(n: int) -> np.ndarray:
    """``n`` unit vectors spread over the sphere (Fibonacci), sorted by z (front cap last)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = np.pi * (1.0 + 5.0 ** 0.5) * k
    rr = np.sqrt(1.0 - z * z)
    u = np.stack([rr * np.cos(phi), rr * np.sin(phi), z], 1)
    return u[np.argsort(u[:, 2])]


def tracking_view(model: FaceModel) -> FaceModel:
    """``model`` plus eyeball spheres (parts ``eyeball_right/left``, sub-parts ``sclera_*`` and
    ``iris_*``) appended after its vertices, for the tracker's gaze stage only (see the module
    docstring). The first ``model.n_vertices`` vertices, the triangles and the bases' coefficients
    are unchanged, so fitted coefficients mean the same as for ``model``."""
    n = model.n_vertices
    kp = model.lmk68_idx
    u = _sphere(_N_SPHERE)
    pts, idb = [], []
    for ids in (range(36, 42), range(42, 48)):  # subject's right eye, then left
        c = model.neutral[kp[list(ids)]].mean(0) - [0.0, 0.0, EYE_RADIUS_M]
        pts.append(c + EYE_RADIUS_M * u)
        idb.append(np.repeat(model.id_basis[:, kp[list(ids)]].mean(1, keepdims=True), _N_SPHERE, 1))
    m = _N_SPHERE
    rng = {"right": (n, n + m), "left": (n + m, n + 2 * m)}
    iris = 4  # front cap: the last points of each sphere
    sub_names = ("sclera_right", "iris_right", "sclera_left", "iris_left")
    sub = [rng["right"], (rng["right"][1] - iris, rng["right"][1]),
           rng["left"], (rng["left"][1] - iris, rng["left"][1])]
    return replace(
        model,
        neutral=np.concatenate([model.neutral, *pts]).astype(np.float32),
        id_basis=np.concatenate([model.id_basis, *idb], 1).astype(np.float32),
        exp_basis=np.concatenate([model.exp_basis, np.zeros((model.n_expression, 2 * m, 3),
                                                            np.float32)], 1),
        vertex_part=np.concatenate([model.vertex_part, np.full(m, 1, np.uint8),
                                    np.full(m, 2, np.uint8)]),
        part_names=("face", "eyeball_right", "eyeball_left"),
        part_vertex_range=np.array([[0, n], rng["right"], rng["left"]], np.int32),
        eye_subpart_names=sub_names, eye_subpart_vertex_range=np.array(sub, np.int32),
        vertex_uv=np.zeros((n + 2 * m, 2), np.float32))


def smooth_bfm(results: list[FrameResult], model: FaceModel) -> list[FrameResult]:
    """Offline zero-phase smoothing with unbounded expressions (affine map into the smoother's
    [0, 1] and back; see the module docstring)."""
    from .track import smooth_results

    ex = [np.abs(f.params.expression).max() for r in results for f in r.faces if f.params is not None]
    if not ex:
        return results
    scale = 8.0 * max(float(max(ex)), 1e-6)  # |e| / scale <= 1/8

    def remap(rs: list[FrameResult], fn: Callable[[np.ndarray], np.ndarray]) -> list[FrameResult]:
        return [replace(r, faces=tuple(
            f if f.params is None else replace(f, params=replace(
                f.params, expression=fn(np.asarray(f.params.expression, np.float64)).astype(np.float32)))
            for f in r.faces)) for r in rs]

    sm = smooth_results(remap(results, lambda e: 0.5 + e / scale), model)
    return remap(sm, lambda e: (e - 0.5) * scale)


def config_for_model(cfg: object, model: FaceModel) -> object:
    """``cfg`` for a BFM model: no CNN regressor (the packaged one predicts ICT coefficients),
    and without the ``fit.expr_prior_scale`` entries naming expressions ``model`` lacks (the
    defaults name ICT blendshapes; BFM's are ``exp_00 …``). The other fit settings apply
    unchanged (not tuned for BFM)."""
    fit = getattr(cfg, "fit")
    keep = tuple((n, f) for n, f in fit.expr_prior_scale if n in model.exp_names)
    out = replace(cfg, fit=replace(fit, expr_prior_scale=keep))  # type: ignore[type-var]
    if hasattr(out, "regressor"):
        out = replace(out, regressor="none")
    return out


def track_video_bfm(input_spec: str, model: FaceModel, cfg: object, csv_path: str | Path, *,
                    corr: Correspondence | None = None, landmarks: bool = False,
                    on_frame: Callable[[FrameResult], None] | None = None,
                    allow_truncated: bool = False, max_frames: int | None = None) -> object:
    """Track a file with a BFM model; write the 257-layout CSV + sidecar (atomically). Returns a
    :class:`tracker.track.TrackSummary`. Errors as :func:`tracker.track.track_video`."""
    from .pipeline import FaceTracker, make_camera
    from .sources import open_source
    from .track import TrackSummary, prefetch

    if getattr(cfg, "smooth") == "live":
        raise ConfigError("live smoothing clips expressions to [0, 1]: use offline or none with BFM")
    corr = corr if corr is not None else bfm_correspondence(model)
    cfg = config_for_model(cfg, model)
    src = open_source(input_spec)
    info = src.info
    static = info.kind == "image"
    cam = make_camera(info, cfg)  # type: ignore[arg-type]
    tracker = FaceTracker(tracking_view(model), cam, cfg, sar=info.sar, corr=corr,  # type: ignore[arg-type]
                          static_images=static)
    results: list[FrameResult] = []
    pos: dict[int, int] = {}
    interrupted = False
    t0 = time.perf_counter()

    def revise() -> None:
        for idx, rev in tracker.pop_revisions():
            k = pos.get(idx)
            if k is not None:
                fr = results[k]
                results[k] = replace(fr, faces=tuple(replace(rev, landmarks=None)
                                                     if f.face_id == rev.face_id else f for f in fr.faces))

    try:
        for frame in prefetch(src):
            fr = tracker.step(frame)
            fr = replace(fr, faces=tuple(replace(f, landmarks=None) for f in fr.faces))
            pos[fr.index] = len(results)
            results.append(fr)
            revise()
            if on_frame:
                on_frame(fr)
            if max_frames is not None and len(results) >= max_frames:
                break
    except KeyboardInterrupt:
        interrupted = True
        revise()
    finally:
        src.close()
        tracker.close()
    seconds = time.perf_counter() - t0
    if src.truncated and not allow_truncated and not interrupted:
        raise InputError(f"{input_spec}: file is truncated or damaged after {len(results)} frames "
                         "(nothing written; --allow-truncated keeps the frames that decode)")
    if getattr(cfg, "smooth") == "offline" and not static:
        results = smooth_bfm(results, model)
    tracked = sum(1 for r in results if r.faces)
    summary = TrackSummary(input_spec, Path(csv_path), len(results), tracked,
                           len({f.face_id for r in results for f in r.faces}), seconds,
                           interrupted, src.truncated)
    write_bfm257(Path(csv_path), results, model, cam, info, cfg, summary, landmarks)
    return summary


def _cells(values: np.ndarray, digits: int) -> list[str]:
    f = f"{{:.{digits}f}}"
    return [f.format(v) for v in np.asarray(values, np.float64).ravel()]


def bfm257_row(n_cols: int, index: int, time_s: float, face: FaceResult | None, model: FaceModel,
               cam: Camera, landmarks: bool) -> list[str]:
    """One CSV row of the 257 layout (``face=None``: a lost frame)."""
    from .track import project_lmk68

    if face is None or face.params is None:
        return [str(index), f"{time_s:.6f}", "-1", "lost"] + [""] * (n_cols - 4)
    n_tex = int(model.extras["tex_basis"].shape[0]) if "tex_basis" in model.extras else 80
    row = [str(index), f"{time_s:.6f}", str(face.face_id), face.status, f"{face.confidence:.4f}"]
    row += _cells(coefficients_257(face.params, n_tex), 6)
    if landmarks:
        lmk = project_lmk68(model, cam, face.params)
        row += _cells(lmk[:, 0], 3) + _cells(lmk[:, 1], 3)
    if len(row) != n_cols:
        raise ValueError(f"row has {len(row)} cells for {n_cols} columns")
    return row


def write_bfm257(csv_path: Path, results: list[FrameResult], model: FaceModel, cam: Camera,
                 info: VideoInfo, cfg: object, summary: object, landmarks: bool = False) -> None:
    """The 257-layout CSV and its sidecar JSON, each atomically (JSON last)."""
    from .track import TrackOutputs, sidecar

    n_tex = int(model.extras["tex_basis"].shape[0]) if "tex_basis" in model.extras else 80
    coef = bfm257_columns(model.n_identity, model.n_expression, n_tex)
    cols = list(HEAD_COLUMNS) + coef + (lmk68_columns() if landmarks else [])
    w = AtomicCsv(csv_path, cols)
    try:
        for r in results:
            if not r.faces:
                w.write(bfm257_row(len(cols), r.index, r.time_s, None, model, cam, landmarks))
            for f in r.faces:
                w.write(bfm257_row(len(cols), r.index, r.time_s, f, model, cam, landmarks))
        w.commit()
    except BaseException:
        w.abort()
        raise
    meta = sidecar(TrackOutputs(csv_path, landmarks=landmarks), cols, model, cam, info, cfg,  # type: ignore[arg-type]
                   summary)  # type: ignore[arg-type]
    sizes = dict(LAYOUT)
    sizes.update(id=model.n_identity, exp=model.n_expression, tex=n_tex)
    start, layout = len(HEAD_COLUMNS), []
    for name, _ in LAYOUT:
        layout.append({"name": name, "first_column": start, "count": sizes[name]})
        start += sizes[name]
    meta["format"] = "bfm257"
    meta["model"]["identity_names"] = coef[:model.n_identity]
    meta["model"]["units_of_file"] = f"decimetres (x {DM_TO_M} = metres)"
    meta["bfm257"] = {"n_coefficients": start - len(HEAD_COLUMNS), "layout": layout}
    meta["conventions"] = CONVENTIONS_257
    write_json_atomic(Path(str(csv_path) + ".json"), meta)
