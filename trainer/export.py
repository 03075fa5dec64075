"""Export the regressor: ONNX (opset 17, for ONNX Runtime — the CPU default), TorchScript, and
TensorRT through torch-tensorrt (CUDA only).

All three carry :class:`trainer.net.ExportModule`: inputs ``image (N, 3, S, S) float32`` RGB in
[0, 1] and ``landmarks (N, 478, 3) float32`` crop pixels; outputs (in this order, see
:func:`trainer.net.decode`) ``r6 (N, 6)``, ``origin (N, 2)``, ``log_scale (N, 1)``,
``expression (N, E)`` in [0, 1], ``identity (N, I)``, ``lighting (N, 27)``, ``albedo (N, K, 3)``.
The ONNX file's metadata (``metadata_props``) records ``face3d_regressor`` (format version),
``size``, ``n_identity``, ``n_expression``, ``albedo_k``, ``pose_anchor`` (JSON list, metres:
the model point the pose outputs refer to, :data:`tracker.align.POSE_ANCHOR_M`; format 1 had none
and meant the model origin) and the training config; TorchScript files
carry the same as ``extra_files['meta.json']``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from tracker.align import POSE_ANCHOR_M
from tracker.errors import BackendUnavailableError, InputError

from .net import ExportModule, NetConfig, RegressorNet

FORMAT_VERSION = "2"
OPSET = 17


def _meta(net: RegressorNet, extra: dict[str, str] | None = None) -> dict[str, str]:
    m = {"face3d_regressor": FORMAT_VERSION, "size": str(net.cfg.size),
         "n_identity": str(net.sizes["identity"]), "n_expression": str(net.sizes["expression"]),
         "albedo_k": str(net.cfg.albedo_k), "pose_anchor": json.dumps(list(POSE_ANCHOR_M))}
    m.update(extra or {})
    return m


def _example(net: RegressorNet) -> tuple[torch.Tensor, torch.Tensor]:
    s = net.cfg.size
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, s, s, generator=g), torch.rand(1, 478, 3, generator=g) * s


def export_onnx(net: RegressorNet, path: Path, meta: dict[str, str] | None = None) -> Path:
    """Write ``path`` (atomically) with a dynamic batch axis; returns the path."""
    import onnx

    mod = ExportModule(net).eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(mod, _example(net), buf, opset_version=OPSET, dynamo=False,
                          input_names=["image", "landmarks"], output_names=list(ExportModule.OUTPUT_NAMES),
                          dynamic_axes={n: {0: "batch"} for n in ("image", "landmarks", *ExportModule.OUTPUT_NAMES)})
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in _meta(net, meta).items():
        p = proto.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


def export_torchscript(net: RegressorNet, path: Path, meta: dict[str, str] | None = None) -> Path:
    mod = ExportModule(net).eval()
    with torch.no_grad():
        ts = torch.jit.trace(mod, _example(net))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(ts, str(path), _extra_files={"meta.json": json.dumps(_meta(net, meta))})
    return path


def export_tensorrt(net: RegressorNet, path: Path, fp16: bool = True) -> Path:
    """Compile with torch-tensorrt and save a TorchScript module that runs TensorRT engines.

    Raises :class:`BackendUnavailableError` without CUDA or without the ``torch_tensorrt``
    package (extra ``tensorrt``; it cannot be installed on CPU-only machines).
    """
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "TensorRT export needs a CUDA device; torch sees none. Export ONNX (the CPU default) "
            "or TorchScript instead, or run `face3d export --tensorrt` on a machine with CUDA")
    try:
        import torch_tensorrt
    except ImportError as e:
        raise BackendUnavailableError(f"cannot import torch_tensorrt ({e}); install the "
                                      "'tensorrt' extra (pip install 'face3d[tensorrt]')") from None
    mod = ExportModule(net).eval().cuda()
    img, lmk = (t.cuda() for t in _example(net))
    precisions = {torch.float16, torch.float32} if fp16 else {torch.float32}
    trt = torch_tensorrt.compile(mod, ir="ts", inputs=[img, lmk], enabled_precisions=precisions)
    path = Path(path)
    # the same metadata as the other formats: without ``pose_anchor`` the tracker would read the
    # pose at the model origin (format 1)
    torch.jit.save(trt, str(path), _extra_files={"meta.json": json.dumps(_meta(net))})
    return path


def load_checkpoint_net(ckpt: Path) -> RegressorNet:
    """A :class:`RegressorNet` (eval mode) from a training checkpoint ``ckpt.pt``."""
    from tracker.config import load_config
    from tracker.facemodel import load_face_model

    if not Path(ckpt).is_file():
        raise InputError(f"{ckpt}: no such checkpoint")
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    ncfg = load_config(NetConfig, ck["config"]["net"])
    model = load_face_model()
    net = RegressorNet(ncfg, model.n_identity, model.n_expression)
    net.load_state_dict(ck["net"])
    return net.eval()
