"""Validation measures on cached crops (definitions as in DESIGN.md "Quality, measured"):

* ``nme68_pct``: mean distance between the projected ICT iBUG-68 points (jaw 0–16 excluded) and
  MediaPipe's 68-equivalents (:func:`tracker.correspondence.load_mp68`), in % of MediaPipe's
  inter-ocular distance (outer eye corners 33–263) — the crop is a similarity of the frame, so the
  ratio is the same as in the frame;
* ``photo_err``: mean RGB distance (0–1 scale) on skin ∩ render coverage of the full
  reconstruction; the same geometry rendered with a grey albedo under ambient light is one
  constant grey over the coverage: ``photo_err_grey`` uses the project's default (ambient DC 0.8,
  albedo = the luminance of the mean skin albedo, 0.65 → grey 0.46), ``photo_err_grey_best``
  the grey that fits each crop best (its mean skin intensity, a much stronger baseline);
  ``photo_gain`` / ``photo_gain_best`` are ``1 − photo_err / baseline``;
* ``pl_exp_mae``, ``pl_rot_deg``: agreement with the tracker's pseudo-labels (expression mean
  absolute difference; rotation angle, degrees).
"""

from __future__ import annotations

import numpy as np
import torch

from tracker.correspondence import load_mp68

from .facelayer import FaceLayer
from .losses import Forward, forward, forward_coeffs, project, render


@torch.no_grad()
def evaluate_cache(net: torch.nn.Module | None, face: FaceLayer, renderer, data: dict, size: int,
                   device: torch.device, chunk: int = 64, max_samples: int = 512,
                   predict=None) -> dict[str, float]:
    """The measures of the module doc over up to ``max_samples`` cached crops ``data``
    (:func:`trainer.data.load_cache`) for a training network ``net`` — or, with ``net=None``,
    for ``predict(batch) → decoded coefficients`` (e.g. :func:`onnx_predictor`)."""
    from .loop import KEYS, to_torch

    n = min(len(data["image"]), max_samples)
    ix = np.linspace(0, len(data["image"]) - 1, n).astype(int)
    mp68 = load_mp68()
    nme, pe, pg, pb, emae, rdeg = [], [], [], [], [], []
    from kernels.shading import SH_A, SH_C, SH_INIT_DC

    from .albedo import MEAN_SKIN_RGB
    lum = 0.299 * MEAN_SKIN_RGB[0] + 0.587 * MEAN_SKIN_RGB[1] + 0.114 * MEAN_SKIN_RGB[2]
    grey_fixed = SH_INIT_DC * SH_A[0] * SH_C[0] * lum
    was_training = net.training if net is not None else False
    if net is not None:
        net.eval()
    for a in range(0, n, chunk):
        sel = ix[a:a + chunk]
        b = to_torch({k: data[k][sel] for k in KEYS}, device)
        fw: Forward = forward(net, face, b, size) if net is not None else forward_coeffs(predict(b), face, b, size)
        f, pp = b["cam"][:, 0], b["cam"][:, 1:3]
        p68 = project(fw.verts_cam[:, face.lmk68], f, pp).cpu().numpy()
        lm = b["lmk"].cpu().numpy()
        t68 = mp68.points(lm[:, :468, :2])
        iod = np.linalg.norm(lm[:, 263, :2] - lm[:, 33, :2], axis=1)
        nme.append(np.linalg.norm(p68[:, 17:] - t68[:, 17:], axis=-1).mean(1) / iod * 100.0)
        if renderer is not None:
            img, cov = render(face, renderer, fw, b["cam"], size)
            target = b["image"].permute(0, 2, 3, 1)
            m = (b["mask"] > 0) & cov
            grey = (target * m[..., None]).sum((1, 2, 3)) / (3 * m.sum((1, 2)).clamp(min=1))
            # grey albedo under ambient light renders one constant grey over the coverage
            err = ((img - target) ** 2).sum(-1).sqrt()
            err_b = ((grey[:, None, None, None] - target) ** 2).sum(-1).sqrt()
            err_g = ((grey_fixed - target) ** 2).sum(-1).sqrt()
            msum = m.sum((1, 2)).clamp(min=1)
            pe.append(((err * m).sum((1, 2)) / msum).cpu().numpy())
            pg.append(((err_g * m).sum((1, 2)) / msum).cpu().numpy())
            pb.append(((err_b * m).sum((1, 2)) / msum).cpu().numpy())
        emae.append((fw.coeffs["expression"].clamp(0, 1) - b["expr"]).abs().mean(1).cpu().numpy())
        rel = fw.rot.transpose(1, 2) @ b["rot"]
        tr = rel.diagonal(dim1=1, dim2=2).sum(-1)
        rdeg.append(np.degrees(np.arccos(np.clip(((tr - 1) / 2).cpu().numpy(), -1, 1))))
    if net is not None:
        net.train(was_training)
    out = {"samples": int(n), "nme68_pct": float(np.mean(np.concatenate(nme))),
           "pl_exp_mae": float(np.mean(np.concatenate(emae))),
           "pl_rot_deg": float(np.mean(np.concatenate(rdeg)))}
    if pe:
        e, g = float(np.mean(np.concatenate(pe))), float(np.mean(np.concatenate(pg)))
        gb = float(np.mean(np.concatenate(pb)))
        out.update(photo_err=e, photo_err_grey=g, photo_gain=1.0 - e / g if g > 0 else float("nan"),
                   photo_err_grey_best=gb, photo_gain_best=1.0 - e / gb if gb > 0 else float("nan"))
    return out


def onnx_predictor(weights, device: torch.device = torch.device("cpu")):
    """``predict(batch) → coefficients`` running exported weights in ONNX Runtime (for
    :func:`evaluate_cache`): the shipped ``regressor.onnx`` measured like a training run.
    Weights of another pose anchor than this version's are refused."""
    from tracker.align import POSE_ANCHOR_M
    from tracker.errors import ModelError
    from tracker.regressor import make_regressor

    reg = make_regressor(weights)
    if tuple(reg.anchor) != tuple(POSE_ANCHOR_M):
        raise ModelError(f"{weights}: pose anchor {reg.anchor}, this version's is {POSE_ANCHOR_M}")

    def predict(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = reg.run(b["image"].cpu().numpy().astype(np.float32), b["lmk"].cpu().numpy().astype(np.float32))
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in out.items()}
    return predict
