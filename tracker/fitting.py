"""Landmark fitting: head pose, expression and identity from MediaPipe's 2D landmarks.

Model (see :mod:`tracker.facemodel` for conventions): a MediaPipe point ``j`` sits at the ICT
surface point ``x_j(α, e) = m_j + B_j α + E_j e`` (metres, model space), which the camera sees at
``X_j = R x_j + t`` and projects with :func:`tracker.camera.project`.

Per frame, :func:`fit_frame` minimises over the rotation ``R`` (left increments ``exp([δ]x) R``),
the translation ``t`` and the expression weights ``e ∈ [0, 1]^E`` (eye-gaze weights excluded; they
come from :mod:`tracker.gaze`)::

    Σ_j w_j ‖(π(X_j) − u_j) / (σ · iod)‖²  +  λ_e Σ_k e_k²  +  λ_t Σ_k (e_k − e_prev,k)²

with a few Levenberg-Marquardt steps (a step is kept only if it lowers the objective),
warm-started from the previous frame. Residuals are in units of ``σ`` × the inter-ocular distance, so the weights do not depend on
the image resolution. Bounds are handled with an active set: a weight at 0 (or 1) whose gradient
pushes it outward is held there for the step.

Identity (:func:`fit_identity`) is a linear Gauss-Newton problem over several frames with their
poses and expressions held, with the N(0, 1) prior weighted by ``λ_id``; the tracker alternates it
with per-frame refits over the first frames of a track and then holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .correspondence import Correspondence
from .facemodel import FaceModel
from .rotation import matrix_to_quat, quat_to_matrix, rotvec_to_matrix
from .types import Camera, FaceParams

# Upper/lower inner-lip MediaPipe points facing each other (for the closed-mouth identity prior).
LIP_CLOSURE_PAIRS = ((13, 14), (82, 87), (81, 178), (80, 88), (191, 95), (312, 317), (311, 402),
                     (310, 318), (415, 324))
CHIN_OVAL = (148, 176, 149, 152, 377, 400, 378)
GAZE_NAMES = ("eyeLookDown_L", "eyeLookDown_R", "eyeLookIn_L", "eyeLookIn_R", "eyeLookOut_L",
              "eyeLookOut_R", "eyeLookUp_L", "eyeLookUp_R")


# λ_e multipliers: the mouth shapes that can also part the lips cost more than jawOpen, and the
# corrective mouthClose much more, so that a lip gap reads as jaw opening unless the other
# landmarks insist (measured on the shared talking clips: jawOpen vs lip gap r 0.45-0.7 -> 0.87-0.96).
DEFAULT_EXPR_PRIOR_SCALE: tuple[tuple[str, float], ...] = (
    ("mouthFunnel", 20.0), ("mouthClose", 100.0), ("mouthLowerDown_L", 20.0),
    ("mouthLowerDown_R", 20.0), ("mouthUpperUp_L", 20.0), ("mouthUpperUp_R", 20.0),
    ("mouthRollLower", 10.0), ("mouthRollUpper", 10.0), ("mouthShrugLower", 20.0),
    ("mouthShrugUpper", 20.0), ("mouthStretch_L", 10.0), ("mouthStretch_R", 10.0), ("jawOpen", 0.1))


@dataclass(frozen=True)
class FitConfig:
    """Fitting parameters (``configs/track.toml`` section ``[fit]``).

    ``sigma``: landmark noise as a fraction of the inter-ocular distance (residual unit).
    ``expr_prior``/``expr_temporal``: λ_e and λ_t above; ``id_prior``: weight of the N(0, 1)
    identity prior. ``id_mouth_closed``: weight of the prior that the identity's neutral mouth is
    closed (the facing inner-lip points of :data:`LIP_CLOSURE_PAIRS` keep the mean face's
    separation) — without it, talking clips teach the identity an open mouth, and closed lips then
    read as ``mouthClose``. ``iterations`` per tracked frame, ``init_iterations`` for the
    first frame of a track. ``weight_*``: per-group landmark weights (``oval`` slides with pose and
    is off by default; ``chin`` is the part of the oval under the mouth, MediaPipe 148–152–377,
    which carries the jaw). ``surface_stride``: fit every k-th plain-surface point (their total
    weight kept): k = 2 left agreement, jaw and blink correlations unchanged on the shared clips
    and cut the fit's time by about 30 %. ``expr_prior_scale``: ``(name, factor)`` pairs multiplying λ_e for
    single weights (e.g. make mouthFunnel costlier than jawOpen for the same lip gap).
    """

    sigma: float = 0.01
    iterations: int = 3
    init_iterations: int = 12
    damping: float = 1e-3
    expr_prior: float = 100.0
    expr_temporal: float = 0.0
    id_prior: float = 30.0
    id_frames: int = 20
    id_rounds: int = 2
    id_mouth_closed: float = 300.0
    weight_surface: float = 1.0
    weight_eye_lid: float = 2.0
    weight_lips_inner: float = 2.0
    weight_lips_outer: float = 1.5
    weight_brow: float = 1.0
    weight_oval: float = 0.0
    weight_chin: float = 1.0
    surface_stride: int = 2
    expr_prior_scale: tuple[tuple[str, float], ...] = DEFAULT_EXPR_PRIOR_SCALE


@dataclass(frozen=True)
class FitBasis:
    """The model sampled at the fitted MediaPipe points, float64.

    ``mp_index (P,)``; ``mean (P, 3)`` neutral points (metres); ``id_basis (I, P, 3)``;
    ``exp_basis (P, 3, E)`` (last axis expression, for batched matmul); ``weights (P,)``;
    ``free_expr (E,) bool`` — expression weights fitted to landmarks (all but gaze).
    """

    mp_index: np.ndarray
    mean: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    weights: np.ndarray
    free_expr: np.ndarray
    exp_names: tuple[str, ...]
    expr_prior: np.ndarray
    closure_pairs: np.ndarray
    model_iod: float
    expr_lower: float = 0.0
    expr_upper: float = 1.0


def make_fit_basis(model: FaceModel, corr: Correspondence, cfg: FitConfig) -> FitBasis:
    """Sample the model at the correspondence points and attach group weights."""
    gw = {"surface": cfg.weight_surface, "eye_lid": cfg.weight_eye_lid,
          "lips_inner": cfg.weight_lips_inner, "lips_outer": cfg.weight_lips_outer,
          "brow": cfg.weight_brow, "oval": cfg.weight_oval}
    w = np.array([gw.get(g, 1.0) for g in corr.group], np.float64)
    chin = np.isin(corr.mp_index, CHIN_OVAL)
    w[chin] = cfg.weight_chin
    if cfg.surface_stride > 1:  # thin the plain surface points (cost), keeping their total weight
        surf = np.flatnonzero(np.array([g == "surface" for g in corr.group]) & ~chin)
        drop = np.setdiff1d(surf, surf[::cfg.surface_stride])
        w[surf[::cfg.surface_stride]] *= len(surf) / len(surf[::cfg.surface_stride])
        w[drop] = 0.0
    prior = np.full(model.n_expression, cfg.expr_prior, np.float64)
    for name, f in cfg.expr_prior_scale:
        if name not in model.exp_names:
            if model.kind != "ict":  # the defaults name ICT weights; other families skip them
                continue
            raise ValueError(f"expr_prior_scale names an unknown expression {name!r}")
        prior[model.exp_names.index(name)] *= f
    keep = w > 0
    c = corr.select(keep)
    w = w[keep]
    mean = c.points(model.neutral.astype(np.float64))
    idb = c.points(model.id_basis)  # (I, P, 3)
    exb = np.ascontiguousarray(np.moveaxis(c.points(model.exp_basis), 0, -1))  # (P, 3, E)
    free = np.array([n not in GAZE_NAMES for n in model.exp_names])
    row = {int(m): i for i, m in enumerate(c.mp_index)}
    pairs = np.array([(row[a], row[b]) for a, b in LIP_CLOSURE_PAIRS if a in row and b in row],
                     np.int64).reshape(-1, 2)
    lm = model.neutral[model.lmk68_idx]
    iod = float(np.linalg.norm(lm[36] - lm[45]))
    return FitBasis(c.mp_index, mean.astype(np.float64), idb.astype(np.float64),
                    exb.astype(np.float64), w, free, model.exp_names, prior, pairs, iod,
                    model.expr_lower, model.expr_upper)


def identity_points(basis: FitBasis, identity: np.ndarray | None) -> np.ndarray:
    """Neutral points ``(P, 3)`` of a given identity."""
    if identity is None:
        return basis.mean
    return basis.mean + np.tensordot(np.asarray(identity, np.float64), basis.id_basis, axes=1)


def _project(cam: Camera, xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(P, 2)`` and the projection Jacobian ``(P, 2, 3)`` of camera points ``(P, 3)``."""
    iz = 1.0 / -xc[:, 2]
    u = cam.cx + cam.fx * xc[:, 0] * iz
    v = cam.cy - cam.fy * xc[:, 1] * iz
    j = np.zeros((len(xc), 2, 3))
    j[:, 0, 0] = cam.fx * iz
    j[:, 0, 2] = cam.fx * xc[:, 0] * iz * iz
    j[:, 1, 1] = -cam.fy * iz
    j[:, 1, 2] = -cam.fy * xc[:, 1] * iz * iz
    return np.stack([u, v], 1), j


def rigid_init(cam: Camera, model_pts: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rough pose ``(R (3, 3), t (3,))`` from 2D-3D points with OpenCV's EPnP + refinement.

    OpenCV's camera has y down and looks down +z; ours (OpenGL) is ``D = diag(1, -1, -1)`` of it.
    """
    k = np.array([[cam.fx, 0, cam.cx], [0, cam.fy, cam.cy], [0, 0, 1]], np.float64)
    ok, rvec, tvec = cv2.solvePnP(model_pts.astype(np.float64), uv.astype(np.float64), k, None,
                                  flags=cv2.SOLVEPNP_EPNP)
    if ok:
        ok, rvec, tvec = cv2.solvePnP(model_pts.astype(np.float64), uv.astype(np.float64), k, None,
                                      rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    d = np.diag([1.0, -1.0, -1.0])
    if not ok or tvec[2, 0] <= 0:
        # Fallback: frontal face at a depth matching its pixel size.
        span = np.ptp(uv[:, 0]) / cam.fx
        depth = np.ptp(model_pts[:, 0]) / max(span, 1e-6)
        return np.eye(3), np.array([0.0, 0.0, -depth])
    r_cv = cv2.Rodrigues(rvec)[0]
    return d @ r_cv, (d @ tvec).ravel()


@dataclass(frozen=True)
class FrameFit:
    """Result of :func:`fit_frame`: pose, expression and the residual RMS (% of the IOD)."""

    rotation: np.ndarray
    translation: np.ndarray
    expression: np.ndarray
    rms_iod_pct: float


def fit_frame(basis: FitBasis, points: np.ndarray, cam: Camera, target: np.ndarray, iod: float,
              cfg: FitConfig, init: FaceParams | None = None,
              iterations: int | None = None) -> FrameFit:
    """Fit pose and free expression weights to ``target (P, 2)`` pixels (rows of ``basis``).

    ``points`` are the identity's neutral points (:func:`identity_points`). ``init`` warm-starts
    (its gaze weights are held); without it a rigid PnP starts from the neutral face. The
    iterations run in the numba kernel :func:`kernels.lm.gn_pose_expression`;
    :func:`fit_frame_numpy` is the same algorithm in numpy (the tests' reference).
    """
    from kernels.lm import gn_pose_expression

    r, t, e, e_prev, n_it, lam_t = _start(basis, points, cam, target, cfg, init, iterations)
    sw = np.sqrt(basis.weights) / (cfg.sigma * iod)
    free = np.flatnonzero(basis.free_expr).astype(np.int64)
    rms = gn_pose_expression(np.ascontiguousarray(points, np.float64), basis.exp_basis, free, sw,
                             np.ascontiguousarray(target, np.float64), float(cam.fx), float(cam.fy),
                             float(cam.cx), float(cam.cy), r, t, e, e_prev, basis.expr_prior,
                             float(lam_t), float(cfg.damping), float(basis.expr_lower),
                             float(basis.expr_upper), int(n_it))
    return FrameFit(matrix_to_quat(r), t, e.astype(np.float32), float(rms) / iod * 100.0)


def _start(basis: FitBasis, points: np.ndarray, cam: Camera, target: np.ndarray, cfg: FitConfig,
           init: FaceParams | None, iterations: int | None):
    ne = basis.exp_basis.shape[2]
    if init is None:
        r, t = rigid_init(cam, points, target)
        e = np.zeros(ne)
        e_prev = e.copy()
    else:
        r = quat_to_matrix(init.rotation)
        t = np.asarray(init.translation, np.float64).copy()
        e = np.asarray(init.expression, np.float64).copy()
        e_prev = e.copy()
    n_it = iterations if iterations is not None else (cfg.init_iterations if init is None else cfg.iterations)
    lam_t = cfg.expr_temporal if init is not None else 0.0
    return np.ascontiguousarray(r, np.float64), np.ascontiguousarray(t, np.float64), e, e_prev, n_it, lam_t


def _objective_numpy(basis: FitBasis, points: np.ndarray, cam: Camera, target: np.ndarray,
                     sw: np.ndarray, r: np.ndarray, t: np.ndarray, e: np.ndarray,
                     e_prev: np.ndarray, free_e: np.ndarray, lam_t: float) -> float:
    xc = (points + basis.exp_basis @ e) @ r.T + t
    if np.any(xc[:, 2] >= 0):
        return float("inf")
    uv, _ = _project(cam, xc)
    ef = e[free_e]
    return float(np.sum(((uv - target) * sw[:, None]) ** 2)
                 + np.sum(basis.expr_prior[free_e] * ef * ef)
                 + lam_t * np.sum((ef - e_prev[free_e]) ** 2))


def fit_frame_numpy(basis: FitBasis, points: np.ndarray, cam: Camera, target: np.ndarray,
                    iod: float, cfg: FitConfig, init: FaceParams | None = None,
                    iterations: int | None = None) -> FrameFit:
    """Reference implementation of :func:`fit_frame` in numpy: the same Levenberg-Marquardt
    (step accepted only if the objective does not increase, Marquardt factor ×1/3 on success and
    ×4 on failure, active set for the bounds)."""
    r, t, e, e_prev, n_it, lam_t = _start(basis, points, cam, target, cfg, init, iterations)
    free_e = np.flatnonzero(basis.free_expr)
    sw = np.sqrt(basis.weights) / (cfg.sigma * iod)
    lam_e = basis.expr_prior[free_e]
    lam = cfg.damping
    f0 = _objective_numpy(basis, points, cam, target, sw, r, t, e, e_prev, free_e, lam_t)
    for _ in range(n_it):
        xm = points + basis.exp_basis @ e  # (P, 3)
        q = xm @ r.T
        uv, jp = _project(cam, q + t)
        res = ((uv - target) * sw[:, None]).reshape(-1)  # (2P,)
        a = jp * sw[:, None, None]  # (P, 2, 3)
        # Pose columns: d X / d δ = -[q]x, d X / d t = I.
        jrot = np.empty((len(q), 2, 3))
        jrot[:, :, 0] = -a[:, :, 1] * q[:, None, 2] + a[:, :, 2] * q[:, None, 1]
        jrot[:, :, 1] = a[:, :, 0] * q[:, None, 2] - a[:, :, 2] * q[:, None, 0]
        jrot[:, :, 2] = -a[:, :, 0] * q[:, None, 1] + a[:, :, 1] * q[:, None, 0]
        jexp = np.matmul(a @ r, basis.exp_basis[:, :, free_e])  # (P, 2, Ef)
        jac = np.concatenate([jrot, a, jexp], axis=2).reshape(2 * len(q), -1)
        h = jac.T @ jac
        g = jac.T @ res
        ef = e[free_e]
        idx = np.arange(6, 6 + len(free_e))
        h[idx, idx] += lam_e + lam_t
        g[6:] += lam_e * ef + lam_t * (ef - e_prev[free_e])
        # active set: weights at a bound pushed outward stay there
        at_lo = (ef <= basis.expr_lower) & (g[6:] > 0)
        at_hi = (ef >= basis.expr_upper) & (g[6:] < 0)
        act = np.concatenate([np.ones(6, bool), ~(at_lo | at_hi)])
        accepted = False
        for _try in range(8):
            hh = h[np.ix_(act, act)]
            hh[np.diag_indices_from(hh)] = hh[np.diag_indices_from(hh)] * (1.0 + lam) + 1e-9
            step = np.zeros(len(g))
            step[act] = np.linalg.solve(hh, -g[act])
            r1 = rotvec_to_matrix(step[:3]) @ r
            t1 = t + step[3:6]
            e1 = e.copy()
            e1[free_e] = np.clip(ef + step[6:], basis.expr_lower, basis.expr_upper)
            f1 = _objective_numpy(basis, points, cam, target, sw, r1, t1, e1, e_prev, free_e, lam_t)
            if f1 <= f0:
                r, t, e = r1, t1, e1
                decrease, f0 = f0 - f1, f1
                lam = max(lam / 3.0, 1e-7)
                accepted = True
                break
            lam *= 4.0
        if not accepted or decrease <= 1e-9 * (f0 + 1.0):
            break
    uv, _ = _project(cam, (points + basis.exp_basis @ e) @ r.T + t)
    rms = float(np.sqrt(np.mean(((uv - target) ** 2).sum(1))) / iod * 100.0)
    return FrameFit(matrix_to_quat(r), t, e.astype(np.float32), rms)


def fit_identity(basis: FitBasis, cam: Camera, targets: list[np.ndarray], iods: list[float],
                 fits: list[FaceParams], cfg: FitConfig,
                 identity0: np.ndarray | None = None) -> np.ndarray:
    """Identity ``(I,)`` from several frames with their poses and expressions held (one GN step
    of a linear-in-α problem, iterated twice for the perspective division), with the N(0, 1)
    prior (weight ``id_prior``) and the closed-mouth prior (``id_mouth_closed``)."""
    ni = basis.id_basis.shape[0]
    alpha = np.zeros(ni) if identity0 is None else np.asarray(identity0, np.float64).copy()
    sw0 = np.sqrt(basis.weights)
    idb = np.moveaxis(basis.id_basis, 0, -1)  # (P, 3, I)
    # closed mouth: (B_upper - B_lower) α = 0 for facing inner-lip points, in σ·iod units
    up, lo = basis.closure_pairs[:, 0], basis.closure_pairs[:, 1]
    jc = (basis.id_basis[:, up] - basis.id_basis[:, lo]).transpose(1, 2, 0).reshape(-1, ni)
    jc = jc * (np.sqrt(cfg.id_mouth_closed) / (cfg.sigma * basis.model_iod))
    hc = jc.T @ jc
    bt = idb.reshape(-1, ni)  # (3P, I): rows (point, axis)
    for _ in range(2):
        pts = identity_points(basis, alpha)
        # J_f = A_f R_f B, so Σ_f J_fᵀ J_f = Σ_j B_jᵀ (Σ_f M_fj) B_j with 3x3 blocks M_fj:
        # accumulate the blocks over frames, then one product (cost independent of frame count)
        mblk = np.zeros((len(pts), 3, 3))
        gvec = np.zeros((len(pts), 3))
        for tgt, iod, p in zip(targets, iods, fits):
            r = quat_to_matrix(p.rotation)
            xm = pts + basis.exp_basis @ np.asarray(p.expression, np.float64)
            uv, jp = _project(cam, xm @ r.T + p.translation)
            sw = sw0 / (cfg.sigma * iod)
            a = (jp * sw[:, None, None]) @ r  # (P, 2, 3)
            res = (uv - tgt) * sw[:, None]  # (P, 2)
            mblk += np.einsum("pki,pkj->pij", a, a)
            gvec += np.einsum("pki,pk->pi", a, res)
        mb = np.matmul(mblk, idb).reshape(-1, ni)  # (3P, I)
        h = np.eye(ni) * cfg.id_prior + hc + bt.T @ mb
        g = cfg.id_prior * alpha + hc @ alpha + bt.T @ gvec.reshape(-1)
        alpha = alpha - np.linalg.solve(h, g)
    return alpha.astype(np.float32)
