"""nvdiffrast backend (CUDA, optional): the same interface as :class:`tracker.render.NumbaBackend`.

Written against nvdiffrast's documented PyTorch API (``nvdiffrast.torch``): ``RasterizeCudaContext``,
``rasterize(glctx, pos, tri, resolution)`` → ``(rast, rast_db)`` with ``rast`` =
``(u, v, z/w, triangle_id + 1)``, ``interpolate(attr, rast, tri)`` → ``(out, out_da)`` and
``antialias(color, rast, pos, tri, topology_hash)``, all in instanced mode (a minibatch axis of
one is added and removed here). Its conventions equal ``kernels/raster.py``'s (row 0 = NDC
``y = -1``, pixel centres at half-integers, ``u, v`` weigh vertices 0 and 1), so
:func:`tracker.render.clip_from_camera` serves both. Differences: nvdiffrast clips triangles in
homogeneous space (the numba rasterizer drops those with a vertex at ``w <= 0``), its tie rule on
shared edges is its own, and it has no culling — ``cull`` is done here by dropping triangles by
their NDC winding and mapping the ids back, so ids still index the caller's ``tris``.

Inputs may be numpy arrays (copied to the device; numpy comes back) or torch tensors (kept on the
device, differentiable through nvdiffrast's autograd functions; tensors come back).

**Status: not run on this project's machines** (no GPU, nvdiffrast is not on PyPI); only the
error path (:class:`~tracker.errors.BackendUnavailableError` when torch/CUDA/nvdiffrast is
missing) is tested here. torch and nvdiffrast are imported lazily, inside :meth:`create`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BackendUnavailableError

_INSTALL_HINT = ("nvdiffrast is not on PyPI: install it from its source repository "
                 "(NVlabs/nvdiffrast) into an environment with a CUDA build of torch, "
                 "or use the default 'numba' backend")


@dataclass(frozen=True, eq=False)
class NvdiffrastBackend:
    """Handle around one ``nvdiffrast.torch.RasterizeCudaContext`` on one CUDA device."""

    ctx: Any
    device: Any
    torch: Any
    dr: Any
    name: str = "nvdiffrast"

    @classmethod
    def create(cls, device: str | None = None) -> "NvdiffrastBackend":
        """Import torch and nvdiffrast, check CUDA, build the rasterizer context.

        Raises :class:`~tracker.errors.BackendUnavailableError` with the reason when torch, a CUDA
        device or nvdiffrast is missing.
        """
        try:
            import torch
        except ImportError:
            raise BackendUnavailableError("the nvdiffrast backend needs torch (pip install "
                                          "'face3d[train]') and a CUDA device") from None
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "the nvdiffrast backend needs a CUDA device, and torch sees none "
                f"(torch {torch.__version__}); use the 'numba' backend on CPU")
        try:
            import nvdiffrast.torch as dr
        except ImportError as e:
            raise BackendUnavailableError(f"cannot import nvdiffrast.torch ({e}); {_INSTALL_HINT}") from None
        dev = (torch.device(device) if device is not None
               else torch.device("cuda", torch.cuda.current_device()))
        return cls(ctx=dr.RasterizeCudaContext(device=dev), device=dev, torch=torch, dr=dr)

    # ---- conversions ------------------------------------------------------------------------

    def _t(self, x: Any, dtype: Any) -> Any:
        t = self.torch
        if isinstance(x, np.ndarray):
            return t.from_numpy(np.ascontiguousarray(x)).to(device=self.device, dtype=dtype)
        return x.to(device=self.device, dtype=dtype).contiguous()

    @staticmethod
    def _back(like: Any, y: Any) -> Any:
        return y.detach().cpu().numpy() if isinstance(like, np.ndarray) else y

    # ---- the four steps -----------------------------------------------------------------------

    def rasterize(self, pos: Any, tris: Any, resolution: tuple[int, int], cull: str = "none") -> Any:
        """``pos`` ``(V, 4)`` clip space, ``tris`` ``(F, 3)`` → ``rast`` ``(H, W, 4)`` float32."""
        torch = self.torch
        if cull not in ("none", "cw", "ccw"):
            raise ValueError(f"cull must be 'none', 'cw' or 'ccw', got {cull!r}")
        p = self._t(pos, torch.float32)
        tri = self._t(tris, torch.int32)
        keep = None
        if cull != "none":
            v = p[tri.long()]                                    # (F, 3, 4)
            w = v[..., 3]
            xy = v[..., :2] / torch.where(w > 0, w, torch.ones_like(w))[..., None]
            e1, e2 = xy[:, 1] - xy[:, 0], xy[:, 2] - xy[:, 0]
            area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
            drop = (area > 0) if cull == "ccw" else (area < 0)
            keep = torch.nonzero(~(drop & (w > 0).all(dim=1))).flatten()
            tri = tri[keep].contiguous()
        hw = [int(resolution[0]), int(resolution[1])]
        rast, _ = self.dr.rasterize(self.ctx, p[None], tri, resolution=hw)
        rast = rast[0]
        if keep is not None:
            tid = rast[..., 3].long()
            orig = torch.where(tid > 0, keep[(tid - 1).clamp(min=0)] + 1, torch.zeros_like(tid))
            rast = torch.cat([rast[..., :3], orig[..., None].to(rast.dtype)], dim=-1)
        return self._back(pos, rast)

    def interpolate(self, attr: Any, rast: Any, tris: Any) -> Any:
        """``attr`` ``(V, C)`` → ``(H, W, C)`` (``u*a0 + v*a1 + (1-u-v)*a2``; 0 on background)."""
        torch = self.torch
        out, _ = self.dr.interpolate(self._t(attr, torch.float32)[None], self._t(rast, torch.float32)[None],
                                     self._t(tris, torch.int32))
        return self._back(attr, out[0])

    def antialias(self, color: Any, rast: Any, pos: Any, tris: Any, topology_hash: Any = None) -> Any:
        """nvdiffrast's analytic antialiasing (with silhouette gradients to ``pos``)."""
        torch = self.torch
        tri = self._t(tris, torch.int32)
        if topology_hash is None:
            topology_hash = self.dr.antialias_construct_topology_hash(tri)
        out = self.dr.antialias(self._t(color, torch.float32)[None], self._t(rast, torch.float32)[None],
                                self._t(pos, torch.float32)[None], tri, topology_hash=topology_hash)
        return self._back(color, out[0])

    def shade_sh(self, normals: Any, albedo: Any, gamma: Any) -> Any:
        """Deep3DFaceRecon SH shading in torch, same contract as :func:`kernels.shading.sh_shade`."""
        torch = self.torch
        from kernels.shading import SH_A, SH_C
        n = self._t(normals, torch.float32)
        a = self._t(albedo, torch.float32)
        g = self._t(gamma, torch.float32).reshape(3, 9)
        x, y, z = n[..., 0], n[..., 1], n[..., 2]
        k0, k1, k2 = SH_A[0] * SH_C[0], SH_A[1] * SH_C[1], SH_A[2] * SH_C[2]
        basis = torch.stack([
            torch.full_like(x, k0), -k1 * y, k1 * z, -k1 * x, k2 * x * y, -k2 * y * z,
            k2 * 0.5 / 3.0 ** 0.5 * (3.0 * z * z - 1.0), -k2 * x * z, k2 * 0.5 * (x * x - y * y),
        ], dim=-1)
        return self._back(normals, (basis @ g.T) * a)
