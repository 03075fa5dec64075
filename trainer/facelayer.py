"""The face model as a torch layer for training (narrow front face only), the crop-frame pose
parameterisation, and SH shading — pure tensor functions over buffers.

Pose parameterisation ("relative to the crop frame"; shared with :mod:`tracker.regressor`). For a
crop seen by the exact crop camera (focal ``f``, principal point ``pp``; :func:`tracker.align.crop_camera`)
the network predicts, for the pose anchor ``p`` (:data:`tracker.align.POSE_ANCHOR_M`, a model
point on the face, 10 cm in front of the ICT origin):

* ``R_view (3, 3)`` from a 6D vector (Zhou et al.: Gram-Schmidt of two columns, offset by the
  identity's first two columns, so 0 ↦ identity): the head's rotation *relative to the viewing ray*
  through the anchor — what the crop shows, independent of where the crop sat in the frame;
* ``o (2,)``: where the anchor projects, ``(u, v) = (S/2, S/2) + S · (o + anchor_offset(p))``
  (the offset is 0 for the default anchor: the template puts it at the crop centre);
* ``ls``: log apparent scale: the anchor's distance is ``d = f / (PX_PER_M · S · exp(ls))``.

Then ``a = d · ray(u, v)`` (``ray`` has ``z = -1``), ``R = R_ray @ R_view`` where ``R_ray`` is
the smallest rotation taking the optical axis ``(0, 0, -1)`` to ``ray``, and ``t = a − R p``. Zero
output means: the mean face, frontal to its viewing ray, at the position and size the alignment
template puts it.

Why an anchor on the face: the crop alignment fixes the face's apparent size, so the anchor's
``ls`` is nearly the same for every crop. The ICT origin sits 10 cm behind the face, and its
apparent scale depends on the camera distance (labels spread over 0.22 in ``ls`` at the same crop
size: a regressor trained at the origin guessed it from the person's looks and projected new
faces up to 20 % too large).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from kernels.shading import SH_A, SH_C, SH_INIT_DC
from tracker.align import CROP_SPAN_M, POSE_ANCHOR_M, anchor_offset
from tracker.correspondence import Correspondence, front_face_triangles
from tracker.facemodel import FaceModel

PX_PER_M = 1.0 / CROP_SPAN_M
"""Template scale in crop sides per metre (the mean face at the template)."""
EXPR_EPS = 0.01
"""Sigmoid floor: expression = (sigmoid(z) − ε) / (1 − ε); the head bias starts at logit(ε)."""


def rot6d_to_matrix(r6: torch.Tensor) -> torch.Tensor:
    """``(…, 6)`` (offset from identity) → ``(…, 3, 3)`` rotation; columns from Gram-Schmidt."""
    a1 = r6[..., 0:3] + r6.new_tensor([1.0, 0.0, 0.0])
    a2 = r6[..., 3:6] + r6.new_tensor([0.0, 1.0, 0.0])
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(r: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rot6d_to_matrix` for rotation matrices ``(…, 3, 3)``."""
    return torch.cat([r[..., :, 0] - r.new_tensor([1.0, 0.0, 0.0]),
                      r[..., :, 1] - r.new_tensor([0.0, 1.0, 0.0])], dim=-1)


def ray_rotation(ray: torch.Tensor) -> torch.Tensor:
    """Smallest rotation ``(…, 3, 3)`` taking ``(0, 0, -1)`` to the direction of ``ray (…, 3)``."""
    d = ray / ray.norm(dim=-1, keepdim=True)
    a = d.new_tensor([0.0, 0.0, -1.0]).expand_as(d)
    v = torch.cross(a, d, dim=-1)
    c = (a * d).sum(-1)  # > 0 for rays in front of the camera
    vx = torch.zeros(d.shape[:-1] + (3, 3), dtype=d.dtype, device=d.device)
    vx[..., 0, 1], vx[..., 0, 2] = -v[..., 2], v[..., 1]
    vx[..., 1, 0], vx[..., 1, 2] = v[..., 2], -v[..., 0]
    vx[..., 2, 0], vx[..., 2, 1] = -v[..., 1], v[..., 0]
    eye = torch.eye(3, dtype=d.dtype, device=d.device).expand_as(vx)
    return eye + vx + (vx @ vx) / (1.0 + c)[..., None, None]


def pose_from_crop_params(r6: torch.Tensor, o: torch.Tensor, ls: torch.Tensor, f: torch.Tensor,
                          pp: torch.Tensor, size: int, anchor: tuple[float, float, float] = POSE_ANCHOR_M
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Network pose outputs → ``(R (B, 3, 3), t (B, 3))`` in the crop camera (module doc)."""
    s = float(size)
    uv = s / 2.0 + s * (o + o.new_tensor(anchor_offset(anchor)))
    d = f / (PX_PER_M * s * torch.exp(ls.reshape(-1)))
    ray = torch.stack([(uv[:, 0] - pp[:, 0]) / f, -(uv[:, 1] - pp[:, 1]) / f,
                       -torch.ones_like(f)], dim=-1)
    r = ray_rotation(ray) @ rot6d_to_matrix(r6)
    t = d[:, None] * ray - r @ o.new_tensor(anchor)
    return r, t


def crop_params_from_pose(r: torch.Tensor, t: torch.Tensor, f: torch.Tensor, pp: torch.Tensor,
                          size: int, anchor: tuple[float, float, float] = POSE_ANCHOR_M
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pose_from_crop_params`: crop-camera pose → ``(r6, o, ls)``."""
    s = float(size)
    a = t + r @ t.new_tensor(anchor)
    iz = 1.0 / (-a[:, 2])
    uv = torch.stack([pp[:, 0] + f * a[:, 0] * iz, pp[:, 1] - f * a[:, 1] * iz], -1)
    o = (uv - s / 2.0) / s - t.new_tensor(anchor_offset(anchor))
    ray = a * iz[:, None]
    ls = torch.log(f / (PX_PER_M * s * (-a[:, 2])))
    rv = ray_rotation(ray).transpose(-1, -2) @ r
    return matrix_to_rot6d(rv), o, ls


class FaceLayer(nn.Module):
    """The ICT narrow front face (vertices ``0 … narrow_face_vertex_count - 1``) as buffers.

    ``forward(identity (B, I), expression (B, E))`` → model-space vertices ``(B, V, 3)`` metres.
    Also holds the front-face triangles (``tris (F, 3) int32``), the MediaPipe correspondence
    (``corr_*``) and the albedo basis (``alb_mean (V, 3)``, ``alb_basis (K, V)``).
    """

    def __init__(self, model: FaceModel, corr: Correspondence, albedo_k: int = 16):
        super().__init__()
        from .albedo import make_albedo_basis

        n = model.narrow_face_vertex_count
        self.n_vertices = n
        self.register_buffer("mean", torch.from_numpy(np.ascontiguousarray(model.neutral[:n])))
        self.register_buffer("id_basis", torch.from_numpy(
            np.ascontiguousarray(model.id_basis[:, :n].reshape(model.n_identity, -1))))
        self.register_buffer("exp_basis", torch.from_numpy(
            np.ascontiguousarray(model.exp_basis[:, :n].reshape(model.n_expression, -1))))
        self.register_buffer("tris", torch.from_numpy(front_face_triangles(model).astype(np.int32)))
        if corr.vertex_ids.max() >= n:
            raise ValueError("correspondence points outside the narrow face")
        self.register_buffer("corr_ids", torch.from_numpy(corr.vertex_ids.astype(np.int64)))
        self.register_buffer("corr_bary", torch.from_numpy(corr.bary.astype(np.float32)))
        self.register_buffer("corr_mp", torch.from_numpy(corr.mp_index.astype(np.int64)))
        self.register_buffer("lmk68", torch.from_numpy(model.lmk68_idx.astype(np.int64)))
        ab = make_albedo_basis(model, albedo_k)
        self.register_buffer("alb_mean", torch.from_numpy(ab.mean[:n].copy()))
        self.register_buffer("alb_basis", torch.from_numpy(np.ascontiguousarray(ab.basis[:, :n, 0])))
        self.register_buffer("alb_eig", torch.from_numpy(ab.eigenvalues.astype(np.float32)))
        self.register_buffer("alb_asym", torch.from_numpy(ab.asymmetry.astype(np.float32)))
        self.corr_group = corr.group
        self.albedo_k = albedo_k

    def forward(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        b = identity.shape[0]
        d = identity @ self.id_basis + expression @ self.exp_basis
        return self.mean[None] + d.view(b, self.n_vertices, 3)

    def corr_points(self, verts: torch.Tensor) -> torch.Tensor:
        """MediaPipe-corresponding surface points ``(B, 468, 3)`` of vertices ``(B, V, 3)``."""
        v = verts[:, self.corr_ids]  # (B, P, 3, 3)
        return (v * self.corr_bary[None, :, :, None]).sum(2)

    def albedo(self, coeff: torch.Tensor) -> torch.Tensor:
        """Albedo ``(B, V, 3)`` from coefficients ``(B, K, 3)``."""
        return self.alb_mean[None] + torch.einsum("kv,bkc->bvc", self.alb_basis, coeff)


def vertex_normals(verts: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``(B, V, 3)`` (outward for counter-clockwise ``tris``)."""
    t = tris.long()
    v0, v1, v2 = verts[:, t[:, 0]], verts[:, t[:, 1]], verts[:, t[:, 2]]
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)
    n = torch.zeros_like(verts)
    for k in range(3):
        n = n.index_add(1, t[:, k], fn)
    return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)


_K = (SH_A[0] * SH_C[0], SH_A[1] * SH_C[1], SH_A[2] * SH_C[2])


def sh_shade(normals: torch.Tensor, albedo: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Deep3DFaceRecon SH shading (same contract as :func:`kernels.shading.sh_shade`), batched:
    normals and albedo ``(B, V, 3)``, ``gamma (B, 27)`` colour-major → colours ``(B, V, 3)``."""
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    k0, k1, k2 = _K
    basis = torch.stack([torch.full_like(x, k0), -k1 * y, k1 * z, -k1 * x, k2 * x * y, -k2 * y * z,
                         k2 * 0.5 / math.sqrt(3.0) * (3.0 * z * z - 1.0), -k2 * x * z,
                         k2 * 0.5 * (x * x - y * y)], dim=-1)  # (B, V, 9)
    g = gamma.view(-1, 3, 9)
    return torch.einsum("bvj,bcj->bvc", basis, g) * albedo


def default_gamma_offset() -> torch.Tensor:
    g = torch.zeros(27)
    g[0::9] = SH_INIT_DC
    return g
