"""Training losses (Deep3DFaceRecon's recipe on the ICT model, plus pseudo-labels), as pure
functions of tensors; :func:`compute_losses` evaluates the whole objective for one batch.

Terms (each returned separately so ``metrics.csv`` has a column per term; ``loss`` is their sum
with the weights of :class:`LossConfig`):

* ``photo``: robust photometric error on the skin — per pixel ``√(ε + ‖I_render − I‖²)``
  (RGB in [0, 1]) weighted by skin mask × render coverage, normalised by the mask sum;
* ``lmk``: squared distance between the projected MediaPipe-corresponding ICT points and
  MediaPipe's 468 points, in crop sides (``(Δ / S)²``), weighted per correspondence group
  (eyelids and inner lips heaviest; the sliding face-oval lightest);
* ``reg_id``, ``reg_exp``: ``mean α²`` and ``mean e²`` priors; ``reg_alb``: albedo coefficient
  prior ``mean δ²``; ``alb_smooth``: ``mean λ_k δ_k²`` (Laplacian eigenvalues: rough modes cost
  more); ``alb_sym``: ``δᵀ G δ`` — mean squared albedo difference between mirrored vertices;
  ``light_mono``: variance across colours of each SH coefficient (monochrome light prior);
* ``pl_pose``, ``pl_exp``, ``pl_id``: agreement with the tracker's fits (pseudo-labels) —
  rotation ``‖R − R_pl‖²_F``, crop-frame position/scale, ``|e − e_pl|`` and ``(α − α_pl)²``
  means; samples whose fit left more than ``pl_max_rms`` % of the inter-ocular distance are
  skipped.

Synthetic rows (``batch["syn"]`` true, :mod:`trainer.synthetic`) teach colour only: they are left
out of the landmark and pseudo-label terms and rendered with their true geometry, so only the
lighting and albedo outputs learn from them (mixing them into the geometry terms made the
held-out landmark error twice as large: their random expressions and identities are not what
real faces show).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .facelayer import (
    FaceLayer,
    crop_params_from_pose,
    pose_from_crop_params,
    sh_shade,
    vertex_normals,
)
from .net import decode
from .render import DiffRenderer, clip_from_crop_camera

TERMS = ("photo", "lmk", "reg_id", "reg_exp", "reg_alb", "alb_smooth", "alb_sym", "light_mono",
         "pl_pose", "pl_exp", "pl_id")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the terms (module doc); ``photo_eps`` is ε; ``lmk_group_*`` weigh landmark
    groups of :class:`tracker.correspondence.Correspondence`."""

    photo: float = 1.0
    photo_eps: float = 1e-6
    lmk: float = 200.0
    reg_id: float = 1e-3
    reg_exp: float = 1e-3
    reg_alb: float = 1e-3
    alb_smooth: float = 1e-3
    alb_sym: float = 1e-2
    light_mono: float = 1.0
    pl_pose: float = 1.0
    pl_exp: float = 1.0
    pl_id: float = 0.1
    pl_max_rms: float = 6.0
    lmk_group_eye_lid: float = 3.0
    lmk_group_lips_inner: float = 3.0
    lmk_group_lips_outer: float = 2.0
    lmk_group_brow: float = 1.0
    lmk_group_surface: float = 1.0
    lmk_group_oval: float = 0.3


def landmark_weights(face: FaceLayer, cfg: LossConfig) -> torch.Tensor:
    w = [getattr(cfg, f"lmk_group_{g}", 1.0) for g in face.corr_group]
    return torch.tensor(w, dtype=torch.float32)


def project(x_cam: torch.Tensor, f: torch.Tensor, pp: torch.Tensor) -> torch.Tensor:
    """Camera-space points ``(B, N, 3)`` → crop pixels ``(B, N, 2)`` (u right, v down)."""
    iz = 1.0 / (-x_cam[..., 2]).clamp(min=1e-6)
    return torch.stack([pp[:, None, 0] + f[:, None] * x_cam[..., 0] * iz,
                        pp[:, None, 1] - f[:, None] * x_cam[..., 1] * iz], -1)


@dataclass
class Forward:
    """What one forward pass produced (tensors with a batch axis)."""

    coeffs: dict[str, torch.Tensor]
    rot: torch.Tensor
    trans: torch.Tensor
    verts_cam: torch.Tensor
    lmk_px: torch.Tensor


def forward(net: torch.nn.Module, face: FaceLayer, batch: dict[str, torch.Tensor], size: int) -> Forward:
    raw = net(batch["image"], batch["lmk"])
    sizes = net.module.sizes if hasattr(net, "module") else net.sizes
    return forward_coeffs(decode(raw, sizes), face, batch, size)


def forward_coeffs(c: dict[str, torch.Tensor], face: FaceLayer, batch: dict[str, torch.Tensor],
                   size: int) -> Forward:
    """:func:`forward` from decoded coefficients (:func:`trainer.net.decode`'s dict), e.g. an
    exported network's outputs."""
    f, pp = batch["cam"][:, 0], batch["cam"][:, 1:3]
    r, t = pose_from_crop_params(c["r6"], c["origin"], c["log_scale"], f, pp, size)
    v = face(c["identity"], c["expression"])
    x = v @ r.transpose(1, 2) + t[:, None, :]
    lmk = project(face.corr_points(x), f, pp)
    return Forward(c, r, t, x, lmk)


def render(face: FaceLayer, renderer: DiffRenderer, fw: Forward, cam: torch.Tensor,
           size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rendered crop ``(B, S, S, 3)`` and coverage ``(B, S, S)`` bool of a forward pass."""
    n = vertex_normals(fw.verts_cam, face.tris)
    col = sh_shade(n, face.albedo(fw.coeffs["albedo"]), fw.coeffs["lighting"])
    pos = clip_from_crop_camera(fw.verts_cam, cam[:, 0], cam[:, 1:3], size)
    rast = renderer.rasterize(pos, face.tris, (size, size))
    img = renderer.interpolate(col, rast, face.tris)
    return img, rast[..., 3] > 0


def compute_losses(net: torch.nn.Module, face: FaceLayer, renderer: DiffRenderer | None,
                   batch: dict[str, torch.Tensor], cfg: LossConfig, lmk_w: torch.Tensor,
                   size: int) -> tuple[torch.Tensor, dict[str, float], Forward]:
    """The weighted total and each term (floats) for one batch. ``renderer=None`` (or
    ``cfg.photo == 0``) skips the photometric term."""
    fw = forward(net, face, batch, size)
    c = fw.coeffs
    terms: dict[str, torch.Tensor] = {}
    zero = fw.lmk_px.new_zeros(())
    syn = batch.get("syn")
    real = 1.0 - syn.float() if syn is not None else torch.ones_like(batch["fit_rms"])
    if renderer is not None and cfg.photo > 0:
        fr = fw
        if syn is not None and bool(syn.any()):
            # synthetic rows teach colour only: they are rendered with their true geometry
            with torch.no_grad():
                xl = face(batch["ident"], batch["expr"]) @ batch["rot"].transpose(1, 2) + batch["trans"][:, None]
            x = torch.where(syn.bool()[:, None, None], xl, fw.verts_cam)
            fr = Forward(c, fw.rot, fw.trans, x, fw.lmk_px)
        img, cov = render(face, renderer, fr, batch["cam"], size)
        target = batch["image"].permute(0, 2, 3, 1)
        m = (batch["mask"] > 0) & cov
        err = torch.sqrt(cfg.photo_eps + ((img - target) ** 2).sum(-1))
        terms["photo"] = (err * m).sum() / m.sum().clamp(min=1)
    else:
        terms["photo"] = zero
    d = (fw.lmk_px - batch["lmk"][:, :468, :2]) / size
    terms["lmk"] = (((d ** 2).sum(-1) * lmk_w).sum(-1) * real).sum() / real.sum().clamp(min=1) / lmk_w.sum()
    terms["reg_id"] = (c["identity"] ** 2).mean()
    terms["reg_exp"] = (c["expression"] ** 2).mean()
    alb = c["albedo"]  # (B, K, 3)
    terms["reg_alb"] = (alb ** 2).mean()
    terms["alb_smooth"] = (face.alb_eig[None, :, None] * alb ** 2).mean()
    terms["alb_sym"] = torch.einsum("bkc,kl,blc->b", alb, face.alb_asym, alb).mean() / 3.0
    g = c["lighting"].view(-1, 3, 9)
    terms["light_mono"] = g.var(dim=1, unbiased=False).mean()
    ok = (batch["fit_rms"] < cfg.pl_max_rms).float() * real
    nok = ok.sum().clamp(min=1)
    if cfg.pl_pose > 0 or cfg.pl_exp > 0 or cfg.pl_id > 0:
        f, pp = batch["cam"][:, 0], batch["cam"][:, 1:3]
        _, o_pl, ls_pl = crop_params_from_pose(batch["rot"], batch["trans"], f, pp, size)
        pose = (((fw.rot - batch["rot"]) ** 2).sum((1, 2))
                + 100.0 * ((c["origin"] - o_pl) ** 2).sum(-1) + (c["log_scale"][:, 0] - ls_pl) ** 2)
        terms["pl_pose"] = (pose * ok).sum() / nok
        terms["pl_exp"] = ((c["expression"] - batch["expr"]).abs().mean(-1) * ok).sum() / nok
        terms["pl_id"] = (((c["identity"] - batch["ident"]) ** 2).mean(-1) * ok).sum() / nok
    else:
        terms["pl_pose"] = terms["pl_exp"] = terms["pl_id"] = zero
    total = sum(getattr(cfg, k) * terms[k] for k in TERMS)
    return total, {k: float(v.detach()) for k, v in terms.items()}, fw
