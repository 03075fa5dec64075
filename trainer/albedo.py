"""The project's own low-dimensional albedo: a mean skin colour plus the smoothest eigenvectors of
the front-face mesh Laplacian, per colour channel (ICT ships no texture model).

Basis (computed from the model at load time, about a second)::

    albedo[v, c] = mean[v, c] + Σ_k coeff[k, c] · basis[k, v, c]          (linear RGB in [0, 1])

``basis[k, :, c]`` is the ``k``-th generalised eigenvector of ``L φ = λ M φ`` on the narrow front
face (ICT vertices ``0 … narrow_face_vertex_count - 1``, part ``face``): ``L`` the cotangent
Laplacian, ``M`` the lumped (barycentric) vertex areas. Eigenvectors are scaled to unit RMS over
the face vertices, so a coefficient of 0.1 varies the albedo by about ±0.1. Mode 0 is the constant
(λ = 0): it shifts the skin tone. Vertices outside the narrow face get the mean colour and zero
basis. The same colour-independent mode is used for every channel.

Priors that come with the basis (:class:`AlbedoBasis`): ``eigenvalues`` (smoothness: penalise
``λ_k coeff_k²``) and ``asymmetry`` — the ``(K, K)`` Gram matrix ``G`` with
``coeffᵀ G coeff = mean_v (a(v) − a(mirror(v)))²`` for one channel, where ``mirror`` maps each
vertex to the nearest vertex of its reflection ``x → −x``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracker.facemodel import FaceModel

MEAN_SKIN_RGB = (0.80, 0.60, 0.50)
"""Mean albedo (sRGB-ish, [0, 1]); with the ambient default light (DC 0.8 · π/√(4π) ≈ 0.71) it
renders as (0.57, 0.43, 0.35), a mid skin tone."""


@dataclass(frozen=True, eq=False)
class AlbedoBasis:
    """``mean (V, 3) float32``, ``basis (K, V, 3) float32``, ``eigenvalues (K,) float64`` (in units
    of the first non-zero one), ``asymmetry (K, K) float64`` (see module doc)."""

    mean: np.ndarray
    basis: np.ndarray
    eigenvalues: np.ndarray
    asymmetry: np.ndarray

    @property
    def k(self) -> int:
        return int(self.basis.shape[0])


def cotangent_laplacian(verts: np.ndarray, tris: np.ndarray):
    """Cotangent Laplacian ``L`` (positive semi-definite, CSR) and lumped areas ``M`` (diag CSR)."""
    import scipy.sparse as sp

    v = np.asarray(verts, np.float64)
    t = np.asarray(tris, np.int64)
    n = v.shape[0]
    rows, cols, vals = [], [], []
    area = np.zeros(n)
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        e1 = v[t[:, j]] - v[t[:, i]]
        e2 = v[t[:, k]] - v[t[:, i]]
        cr = np.linalg.norm(np.cross(e1, e2), axis=1)
        cot = np.einsum("ij,ij->i", e1, e2) / np.maximum(cr, 1e-20)
        # the angle at vertex i weighs the opposite edge (j, k)
        rows += [t[:, j], t[:, k]]
        cols += [t[:, k], t[:, j]]
        vals += [-0.5 * cot, -0.5 * cot]
        np.add.at(area, t[:, i], cr / 6.0)
    w = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, n)).tocsr()
    lap = sp.diags(-np.asarray(w.sum(1)).ravel()) + w
    return lap.tocsr(), sp.diags(np.maximum(area, 1e-20)).tocsr()


def albedo_basis(model: FaceModel, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (V, 3), basis (k, V, 3))`` float32 — the interface shared with the tracker."""
    b = make_albedo_basis(model, k)
    return b.mean, b.basis


_CACHE: dict[tuple[int, int], AlbedoBasis] = {}


def make_albedo_basis(model: FaceModel, k: int = 16) -> AlbedoBasis:
    """Build (and cache per model object and ``k``) the :class:`AlbedoBasis`."""
    from scipy.sparse.linalg import eigsh
    from scipy.spatial import cKDTree

    from tracker.correspondence import front_face_triangles

    if not 1 <= k <= 200:
        raise ValueError(f"albedo basis size must be within 1..200, got {k}")
    key = (id(model), k)
    if key in _CACHE:
        return _CACHE[key]
    n = model.narrow_face_vertex_count
    tris = front_face_triangles(model)
    v = model.neutral[:n].astype(np.float64)
    lap, mass = cotangent_laplacian(v, tris)
    used = np.zeros(n, bool)
    used[np.unique(tris)] = True
    # unused vertices would make the pencil singular: pin them with a unit diagonal
    import scipy.sparse as sp
    pin = sp.diags((~used).astype(np.float64))
    lam, phi = eigsh(lap + pin * 1e3, k=k, M=mass + pin, sigma=-1e-3, which="LM")
    order = np.argsort(lam)
    lam, phi = lam[order], phi[:, order]
    phi[~used] = 0.0
    rms = np.sqrt(np.mean(phi[used] ** 2, axis=0))
    phi = phi / np.maximum(rms, 1e-12)
    phi *= np.sign(phi[used].sum(0) + 1e-12)  # deterministic sign
    lam = np.maximum(lam, 0.0)
    lam_unit = lam / (lam[1] if k > 1 and lam[1] > 0 else 1.0)
    # symmetry: mirror each used vertex to the nearest vertex of its reflection
    ids = np.flatnonzero(used)
    tree = cKDTree(v[ids])
    _, j = tree.query(v[ids] * np.array([-1.0, 1.0, 1.0]))
    d = phi[ids] - phi[ids[j]]
    asym = d.T @ d / len(ids)
    nv = model.n_vertices
    mean = np.tile(np.asarray(MEAN_SKIN_RGB, np.float32), (nv, 1))
    basis = np.zeros((k, nv, 3), np.float32)
    basis[:, :n, :] = phi.T[:, :, None]
    out = AlbedoBasis(mean, basis, lam_unit, asym)
    _CACHE[key] = out
    return out
