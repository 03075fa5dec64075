"""Synthetic training samples with known coefficients, made on the fly from the model itself.

Real data here is a dozen people; the landmark→geometry mapping then overfits to their identities
(held-out clips came out 2–3× worse than training clips). Each synthetic sample draws a random
identity (``N(0, 0.8²)``), a sparse random expression (each weight non-zero with probability
``0.2``, uniform in [0, 1]; gaze weights 0), a random head pose (yaw ±40°, pitch ±25°, roll ±15°)
and placement in a 640x480 image with a 50° field of view (origin 0.35–1.2 m away, anywhere in the
middle 40 % of the frame). Its "MediaPipe" landmarks are the projected correspondence points (irises
at the eye-ring centres) plus Gaussian noise of 0.5 % of the inter-ocular distance; they are
aligned and cropped exactly like real landmarks (:mod:`tracker.align`). The crop image is the
face shaded with a random albedo (mean skin colour × a random tone, plus small random basis
coefficients, mostly shared across the colours) under random, nearly monochrome SH light, composited over a real crop (so eye and
mouth holes show a real face's eyes and mouth at about the same place). The labels are exact
(``fit_rms = 0``) and the skin mask is the render coverage. The training uses them for the
colour outputs only (see :mod:`trainer.losses`).
"""

from __future__ import annotations

import numpy as np
import torch

from tracker.align import (
    EYE_RING_L,
    EYE_RING_R,
    align_affine,
    crop_camera,
    crop_landmarks,
)
from tracker.camera import camera_from_fov
from tracker.rotation import euler_to_quat, quat_to_matrix

from .facelayer import FaceLayer, sh_shade, vertex_normals
from .render import DiffRenderer, clip_from_crop_camera


def synth_samples(rng: np.random.Generator, n: int, face: FaceLayer, renderer: DiffRenderer,
                  backgrounds: np.ndarray, size: int, gaze_mask: np.ndarray) -> dict[str, np.ndarray]:
    """``n`` samples with the cache's keys (see :mod:`trainer.data`)."""
    cam = camera_from_fov(640, 480, 50.0)
    n_id = face.id_basis.shape[0]
    n_exp = face.exp_basis.shape[0]
    ident = (rng.normal(size=(n, n_id)) * 0.8).astype(np.float32)
    expr = (rng.uniform(size=(n, n_exp)) * (rng.uniform(size=(n, n_exp)) < 0.2)).astype(np.float32)
    expr[:, gaze_mask] = 0.0
    q = euler_to_quat(rng.uniform(-40, 40, n), rng.uniform(-25, 25, n), rng.uniform(-15, 15, n))
    rot = quat_to_matrix(q)
    d = rng.uniform(0.35, 1.2, n)
    u = rng.uniform(0.3, 0.7, n) * cam.width
    v = rng.uniform(0.3, 0.7, n) * cam.height
    trans = d[:, None] * np.stack([(u - cam.cx) / cam.fx, -(v - cam.cy) / cam.fy, -np.ones(n)], 1)
    with torch.no_grad():
        verts = face(torch.from_numpy(ident), torch.from_numpy(expr)).double().numpy()
    x = verts @ rot.transpose(0, 2, 1) + trans[:, None, :]
    cp = face.corr_points(torch.from_numpy(x)).numpy()  # (n, 468, 3)
    uv = np.stack([cam.cx + cam.fx * cp[..., 0] / -cp[..., 2], cam.cy - cam.fy * cp[..., 1] / -cp[..., 2]], -1)
    out = {k: [] for k in ("image", "lmk", "mask", "cam", "rot", "trans", "expr", "ident", "fit_rms")}
    xc_all, f_all, pp_all = [], [], []
    for i in range(n):
        lm = np.zeros((478, 3))
        lm[:468, :2] = uv[i]
        lm[468:473, :2] = uv[i, list(EYE_RING_R)].mean(0)
        lm[473:478, :2] = uv[i, list(EYE_RING_L)].mean(0)
        iod = np.linalg.norm(lm[263, :2] - lm[33, :2])
        lm[:, :2] += rng.normal(size=(478, 2)) * 0.005 * iod
        a = align_affine(lm, size)
        ccam, rz = crop_camera(cam, a, size)
        out["lmk"].append(crop_landmarks(a, lm))
        out["cam"].append(np.array([ccam.fx, ccam.cx, ccam.cy], np.float32))
        out["rot"].append((rz @ rot[i]).astype(np.float32))
        out["trans"].append((rz @ trans[i]).astype(np.float32))
        xc_all.append(x[i] @ rz.T)
        f_all.append(ccam.fx)
        pp_all.append((ccam.cx, ccam.cy))
    xc = torch.from_numpy(np.stack(xc_all)).float()
    f = torch.tensor(f_all, dtype=torch.float32)
    pp = torch.tensor(pp_all, dtype=torch.float32)
    k = face.alb_basis.shape[0]
    mean_rgb = face.alb_mean[0].numpy().astype(np.float64)
    shared = rng.normal(size=(n, k, 1)) * 0.03
    alb = shared * mean_rgb + rng.normal(size=(n, k, 3)) * 0.008
    alb[:, 0, :] = mean_rgb * (rng.uniform(0.7, 1.25, (n, 1)) - 1.0)  # skin tone (mode 0 = constant)
    alb_c = torch.from_numpy(alb).float()
    gamma = torch.zeros(n, 27)
    dc = rng.uniform(0.8, 1.2, n)
    tint = rng.uniform(0.95, 1.05, (n, 3))
    first = rng.normal(size=(n, 3)) * 0.15
    second = rng.normal(size=(n, 5)) * 0.05
    for c in range(3):
        gamma[:, 9 * c] = torch.from_numpy(dc * tint[:, c]).float()
        gamma[:, 9 * c + 1:9 * c + 4] = torch.from_numpy(first * tint[:, c:c + 1]).float()
        gamma[:, 9 * c + 4:9 * c + 9] = torch.from_numpy(second).float()
    with torch.no_grad():
        col = sh_shade(vertex_normals(xc, face.tris), face.albedo(alb_c), gamma).clamp(0, 1)
        rast = renderer.rasterize(clip_from_crop_camera(xc, f, pp, size), face.tris, (size, size))
        img = renderer.interpolate(col, rast, face.tris).numpy()
        cov = (rast[..., 3] > 0).numpy()
    bg = backgrounds[rng.integers(0, len(backgrounds), n)]
    comp = np.where(cov[..., None], np.round(img * 255.0), bg).astype(np.uint8)
    out["image"] = list(comp)
    out["mask"] = list(cov.astype(np.uint8))
    out["expr"] = list(expr)
    out["ident"] = list(ident)
    out["fit_rms"] = [np.float32(0.0)] * n
    types = {"image": np.uint8, "lmk": np.float32, "mask": np.uint8, "cam": np.float32, "rot": np.float32,
             "trans": np.float32, "expr": np.float32, "ident": np.float32, "fit_rms": np.float32}
    return {kk: np.stack(vv).astype(types[kk]) for kk, vv in out.items()}
