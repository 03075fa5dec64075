"""The regressor stage: aligned crop + landmarks → all coefficients, behind one small handle chosen
once — ONNX Runtime (CPU default), torch (TorchScript or a training checkpoint) or TensorRT
(torch-tensorrt, CUDA).

::

    reg = make_regressor()                               # tracker/data/regressor.onnx, ONNX Runtime
    params = reg.predict(frame.image, landmarks, camera)  # FaceParams in the image camera

The network works in the crop (:mod:`tracker.align`): it sees the aligned ``S x S`` crop and the
landmarks in crop pixels, and predicts the pose relative to the crop frame (rotation relative to
the viewing ray through the pose anchor — a point on the face, :data:`tracker.align.POSE_ANCHOR_M`,
named in the weights' metadata — the anchor's crop position and its apparent scale; see
:func:`pose_from_crop_outputs`). The crop camera is exact, so the pose converts back to the image
camera without approximation: ``R = Rzᵀ R_crop``, ``t = Rzᵀ t_crop``; the SH lighting (27,
colour-major, Deep3DFaceRecon's basis of :mod:`kernels.shading`, DC offset included) is rotated
the same way (:func:`rotate_sh`), so it applies to image-camera normals. Albedo is ``(K, 3)``
coefficients of the trainer's basis (:func:`trainer.albedo.albedo_basis`: mean skin colour plus
the smoothest face-mesh Laplacian eigenvectors).

Torch and TensorRT are imported lazily, only by their backends.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from .align import (
    CROP_SPAN_M,
    LEGACY_POSE_ANCHOR_M,
    POSE_ANCHOR_M,
    anchor_offset,
    crop_camera,
    crop_face,
    crop_landmarks,
)
from .errors import BackendUnavailableError, ModelError
from .rotation import matrix_to_quat
from .types import Camera, FaceParams, Landmarks

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "data" / "regressor.onnx"
BackendName = Literal["onnx", "torch", "tensorrt"]
OUTPUT_NAMES = ("r6", "origin", "log_scale", "expression", "identity", "lighting", "albedo")
PX_PER_M = 1.0 / CROP_SPAN_M


def rot6d_to_matrix(r6: np.ndarray) -> np.ndarray:
    """``(…, 6)`` offsets from the identity's first two columns → ``(…, 3, 3)`` (Gram-Schmidt)."""
    r6 = np.asarray(r6, np.float64)
    a1 = r6[..., 0:3] + np.array([1.0, 0.0, 0.0])
    a2 = r6[..., 3:6] + np.array([0.0, 1.0, 0.0])
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), 1e-8)
    a2 = a2 - np.sum(b1 * a2, -1, keepdims=True) * b1
    b2 = a2 / np.maximum(np.linalg.norm(a2, axis=-1, keepdims=True), 1e-8)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


def ray_rotation(ray: np.ndarray) -> np.ndarray:
    """Smallest rotation ``(3, 3)`` taking the optical axis ``(0, 0, -1)`` to ``ray``'s direction."""
    d = np.asarray(ray, np.float64) / np.linalg.norm(ray)
    a = np.array([0.0, 0.0, -1.0])
    v = np.cross(a, d)
    c = float(a @ d)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def pose_from_crop_outputs(r6: np.ndarray, origin: np.ndarray, log_scale: float, crop_cam: Camera,
                           size: int, anchor: tuple[float, float, float] | np.ndarray = POSE_ANCHOR_M
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Network pose outputs → ``(R (3, 3), t (3,))`` in the crop camera.

    The model point ``anchor`` (metres) projects to ``(u, v) = S/2 + S (origin + anchor_offset)``
    at distance ``d = f / (PX_PER_M S exp(log_scale))`` along its ray, ``a = d · ray``;
    ``R = R_ray @ R_view`` and ``t = a − R @ anchor``. Same formulas as
    :func:`trainer.facelayer.pose_from_crop_params` (pinned by a test).
    """
    s = float(size)
    anchor = np.asarray(anchor, np.float64)
    uv = s / 2.0 + s * (np.asarray(origin, np.float64) + anchor_offset(anchor))
    f = crop_cam.fx
    d = f / (PX_PER_M * s * np.exp(float(log_scale)))
    ray = np.array([(uv[0] - crop_cam.cx) / f, -(uv[1] - crop_cam.cy) / f, -1.0])
    r = ray_rotation(ray) @ rot6d_to_matrix(r6)
    return r, d * ray - r @ anchor


def weights_anchor(meta: dict[str, str]) -> tuple[float, float, float]:
    """The pose anchor recorded in a weights file's metadata (``pose_anchor``, JSON list of three
    metres); weights of format 1 name none and were trained at the model origin."""
    raw = meta.get("pose_anchor")
    if raw is None:
        return LEGACY_POSE_ANCHOR_M
    try:
        a = tuple(float(x) for x in json.loads(raw))
    except (ValueError, TypeError):
        raise ModelError(f"regressor metadata pose_anchor={raw!r} is not a list of three numbers") from None
    if len(a) != 3:
        raise ModelError(f"regressor metadata pose_anchor={raw!r} is not a list of three numbers")
    return a  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def _sh_samples() -> tuple[np.ndarray, np.ndarray]:
    """64 fixed unit normals and the pseudo-inverse ``(9, 64)`` of their SH basis."""
    from kernels.shading import sh_basis

    rng = np.random.default_rng(0)
    n = rng.normal(size=(64, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return n, np.linalg.pinv(sh_basis(n))


def rotate_sh(gamma: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """SH lighting ``(27,)`` for normals in frame A → the same light for normals in frame B, where
    ``n_A = rot @ n_B``: ``Σ γ'_j b_j(n) = Σ γ_j b_j(rot @ n)`` (bands 0–2 are closed under
    rotation, so a least-squares fit on sample normals is exact; the samples' pseudo-inverse is
    computed once, not per call)."""
    from kernels.shading import sh_basis

    n, b_pinv = _sh_samples()
    m = b_pinv @ sh_basis(n @ np.asarray(rot, np.float64).T)  # (9, 9): b_rot = b @ m
    g = np.asarray(gamma, np.float64).reshape(3, 9)
    return (g @ m.T).reshape(27).astype(np.float32)


class Regressor(Protocol):
    """What every backend handle offers."""

    backend: str
    size: int

    def predict(self, image: np.ndarray, landmarks: Landmarks, camera: Camera) -> FaceParams: ...


class _Runner(Protocol):
    def __call__(self, image: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True, eq=False)
class RegressorHandle:
    """A loaded network plus the crop logic; ``run`` maps ``(N, 3, S, S)`` float32 images and
    ``(N, 478, 3)`` crop landmarks to the named outputs (numpy)."""

    backend: str
    size: int
    run: _Runner
    meta: dict[str, str]
    anchor: tuple[float, float, float] = POSE_ANCHOR_M

    def predict(self, image: np.ndarray, landmarks: Landmarks, camera: Camera) -> FaceParams:
        """Coefficients of one face: ``image`` ``(H, W, 3) uint8`` RGB (the whole frame),
        ``landmarks`` its MediaPipe points (stored pixels), ``camera`` the frame's intrinsics.

        Returns :class:`FaceParams` with pose in ``camera``'s space (metres), expression in
        [0, 1], identity, lighting ``(27,)`` and albedo ``(K, 3)``.
        """
        sar = camera.fy / camera.fx
        crop = crop_face(image, landmarks.points, self.size, sar)
        lm = crop_landmarks(crop.affine, landmarks.points, sar)
        ccam, rz = crop_camera(camera, crop.affine, self.size)
        out = self.run(np.ascontiguousarray(crop.image.transpose(2, 0, 1)[None], np.float32) / 255.0,
                       lm[None].astype(np.float32))
        r_c, t_c = pose_from_crop_outputs(out["r6"][0], out["origin"][0], float(out["log_scale"][0, 0]),
                                          ccam, self.size, self.anchor)
        return FaceParams(rotation=matrix_to_quat(rz.T @ r_c), translation=rz.T @ t_c,
                          expression=out["expression"][0].astype(np.float32),
                          identity=out["identity"][0].astype(np.float32),
                          lighting=rotate_sh(out["lighting"][0], rz),
                          albedo=out["albedo"][0].astype(np.float32))


def _onnx_runner(path: Path, threads: int) -> tuple[_Runner, dict[str, str]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any load failure is a bad weights file
        raise ModelError(f"cannot load regressor {path}: {e}") from None
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    names = [o.name for o in sess.get_outputs()]
    if tuple(names) != OUTPUT_NAMES:
        raise ModelError(f"{path}: outputs {names} are not a face3d regressor's {OUTPUT_NAMES}")

    def run(image: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(None, {"image": image, "landmarks": landmarks})))
    return run, meta


def _torch_runner(path: Path, threads: int, device: str) -> tuple[_Runner, dict[str, str]]:
    try:
        import torch
    except ImportError:
        raise BackendUnavailableError("the torch regressor backend needs torch "
                                      "(pip install 'face3d[train]')") from None
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        extra = {"meta.json": ""}
        mod = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        meta = json.loads(extra["meta.json"] or "{}")
    except RuntimeError:
        # a training checkpoint (ckpt.pt)
        from trainer.export import load_checkpoint_net
        from trainer.net import ExportModule

        net = load_checkpoint_net(path)
        mod = ExportModule(net).eval().to(device)
        anchor = torch.load(path, map_location="cpu", weights_only=False).get("pose_anchor",
                                                                             list(LEGACY_POSE_ANCHOR_M))
        meta = {"size": str(net.cfg.size), "pose_anchor": json.dumps(list(anchor))}
    mod.eval()

    def run(image: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outs = mod(torch.from_numpy(image).to(device), torch.from_numpy(landmarks).to(device))
        return {k: v.float().cpu().numpy() for k, v in zip(OUTPUT_NAMES, outs)}
    return run, meta


def make_regressor(path: str | Path | None = None, backend: BackendName = "onnx", *,
                   threads: int = 1, device: str | None = None) -> RegressorHandle:
    """Load the regressor once. ``path``: weights (default :data:`DEFAULT_WEIGHTS`; ONNX for
    ``"onnx"``, TorchScript or ``ckpt.pt`` for ``"torch"``, a torch-tensorrt TorchScript module for
    ``"tensorrt"``). ``threads``: intra-op threads (1 keeps MediaPipe's core free).

    Raises :class:`ModelError` (missing or malformed weights), :class:`BackendUnavailableError`
    (torch / CUDA / torch-tensorrt missing) or ``ValueError`` (unknown backend).
    """
    p = Path(path) if path is not None else DEFAULT_WEIGHTS
    if backend not in ("onnx", "torch", "tensorrt"):
        raise ValueError(f"unknown regressor backend {backend!r}; choose onnx, torch or tensorrt")
    if backend == "tensorrt":
        try:
            import torch
        except ImportError:
            raise BackendUnavailableError("the tensorrt backend needs torch and torch-tensorrt") from None
        if not torch.cuda.is_available():
            raise BackendUnavailableError("the tensorrt regressor backend needs a CUDA device; torch "
                                          "sees none (use the default onnx backend on CPU)")
        try:
            import torch_tensorrt  # noqa: F401  (registers the TensorRT runtime ops)
        except ImportError as e:
            raise BackendUnavailableError(f"cannot import torch_tensorrt ({e}); install the "
                                          "'tensorrt' extra") from None
    if not p.is_file():
        raise ModelError(f"regressor weights not found: {p}")
    run: Any
    if backend == "onnx":
        run, meta = _onnx_runner(p, threads)
    else:
        dev = device or ("cuda" if backend == "tensorrt" else "cpu")
        run, meta = _torch_runner(p, threads, dev)
    size = int(meta.get("size", 128))
    return RegressorHandle(backend=backend, size=size, run=run, meta=meta, anchor=weights_anchor(meta))
