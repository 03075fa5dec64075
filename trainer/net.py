"""The regressor network: a small MobileNet-like CNN on the aligned crop, fused with an MLP on the
crop-frame MediaPipe landmarks; a zero-initialised linear head for the geometry (pose, expression,
identity) on the fused features and a zero-initialised colour head (SH light, albedo) on the image
features alone.

Inputs: ``image (B, 3, S, S) float32`` RGB in [0, 1] (no normalisation, as Deep3DFaceRecon), and
``landmarks (B, 478, 3) float32`` in crop pixels (x, y; z = MediaPipe's relative depth scaled to
crop pixels). Both are what :mod:`tracker.align` produces at run time.

Output layout (:data:`OUTPUTS`, :func:`split_raw`); a zero head means the mean face, frontal to its
viewing ray at the template position (see :mod:`trainer.facelayer`), zero expression (sigmoid
floor removed), ambient light 0.8 and the mean albedo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from kernels.shading import SH_INIT_DC

from .facelayer import EXPR_EPS

N_LMK = 478


@dataclass(frozen=True)
class NetConfig:
    """Network shape. ``widths``: channels of the stride-2 stages after the stem;
    ``use_image`` / ``use_landmarks`` switch the two branches (at least one); ``lmk_z``: also feed
    MediaPipe's relative depth (off by default: its scale is MediaPipe's own convention, which
    synthetic samples cannot reproduce)."""

    size: int = 128
    stem: int = 16
    widths: tuple[int, ...] = (32, 64, 128, 192)
    lmk_hidden: int = 256
    fuse_hidden: int = 256
    use_image: bool = True
    use_landmarks: bool = True
    albedo_k: int = 16
    lmk_z: bool = False

    def __post_init__(self) -> None:
        if not (self.use_image or self.use_landmarks):
            raise ValueError("the network needs the image or the landmarks branch")
        if self.size % 32 != 0 or self.size < 64:
            raise ValueError(f"size must be a multiple of 32, at least 64, got {self.size}")


def _dw_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def output_sizes(n_id: int, n_exp: int, albedo_k: int) -> dict[str, int]:
    return {"r6": 6, "origin": 2, "log_scale": 1, "expression": n_exp, "identity": n_id,
            "lighting": 27, "albedo": 3 * albedo_k}


# Fixed output scales: the head's raw output times this (keeps early Adam steps sensible).
OUTPUT_SCALE = {"r6": 0.2, "origin": 0.05, "log_scale": 0.1, "expression": 1.0, "identity": 1.0,
                "lighting": 0.2, "albedo": 0.1}


class RegressorNet(nn.Module):
    """``forward(image, landmarks) → raw (B, D)``; :func:`decode` turns it into coefficients."""

    def __init__(self, cfg: NetConfig, n_id: int, n_exp: int):
        super().__init__()
        self.cfg = cfg
        self.sizes = output_sizes(n_id, n_exp, cfg.albedo_k)
        feat = 0
        if cfg.use_image:
            layers: list[nn.Module] = [nn.Conv2d(3, cfg.stem, 3, 2, 1, bias=False),
                                       nn.BatchNorm2d(cfg.stem), nn.ReLU(inplace=True)]
            c = cfg.stem
            for w in cfg.widths:
                layers += [_dw_block(c, w, 2), _dw_block(w, w, 1)]
                c = w
            layers.append(nn.AdaptiveAvgPool2d(1))
            self.cnn = nn.Sequential(*layers)
            feat += c
        if cfg.use_landmarks:
            self.lmk = nn.Sequential(nn.Linear(N_LMK * (3 if cfg.lmk_z else 2), cfg.lmk_hidden), nn.ReLU(inplace=True),
                                     nn.Linear(cfg.lmk_hidden, cfg.lmk_hidden), nn.ReLU(inplace=True))
            feat += cfg.lmk_hidden
        self.fuse = nn.Sequential(nn.Linear(feat, cfg.fuse_hidden), nn.ReLU(inplace=True))
        d = sum(self.sizes.values())
        self.n_colour = self.sizes["lighting"] + self.sizes["albedo"]  # the last two outputs
        # Colour (light, albedo) comes from the image branch alone: fed the landmarks too, the
        # head memorised each training person's skin tone from their face shape.
        cin = c if cfg.use_image else cfg.fuse_hidden
        self.colour_head = nn.Sequential(nn.Linear(cin, 128), nn.ReLU(inplace=True),
                                         nn.Linear(128, self.n_colour))
        nn.init.zeros_(self.colour_head[2].weight)
        nn.init.zeros_(self.colour_head[2].bias)
        self.head = nn.Linear(cfg.fuse_hidden, d - self.n_colour)
        nn.init.zeros_(self.head.weight)
        bias = torch.zeros(d - self.n_colour)
        lo = self._offset("expression")
        bias[lo:lo + n_exp] = math.log(EXPR_EPS / (1.0 - EXPR_EPS))
        with torch.no_grad():
            self.head.bias.copy_(bias)
        scale = torch.cat([torch.full((n,), OUTPUT_SCALE[k]) for k, n in self.sizes.items()])
        self.register_buffer("out_scale", scale)

    def _offset(self, name: str) -> int:
        o = 0
        for k, n in self.sizes.items():
            if k == name:
                return o
            o += n
        raise KeyError(name)

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        feats = []
        s = float(self.cfg.size)
        if self.cfg.use_image:
            feats.append(self.cnn(image).flatten(1))
        img_feat = feats[0] if self.cfg.use_image else None
        if self.cfg.use_landmarks:
            xy = (landmarks[..., :2] - s / 2.0) / (s / 2.0)
            if self.cfg.lmk_z:
                xy = torch.cat([xy, landmarks[..., 2:3] / (s / 2.0)], -1)
            feats.append(self.lmk(xy.flatten(1)))
        h = self.fuse(torch.cat(feats, 1) if len(feats) > 1 else feats[0])
        col = self.colour_head(img_feat if img_feat is not None else h)
        return torch.cat([self.head(h), col], 1) * self.out_scale


def split_raw(raw: torch.Tensor, sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    out, o = {}, 0
    for k, n in sizes.items():
        out[k] = raw[:, o:o + n]
        o += n
    return out


def decode(raw: torch.Tensor, sizes: dict[str, int], clamp: bool = False) -> dict[str, torch.Tensor]:
    """Raw head output → ``r6 (B, 6)``, ``origin (B, 2)``, ``log_scale (B, 1)``,
    ``expression (B, E)`` (clamped to [0, 1] when ``clamp``), ``identity (B, I)``,
    ``lighting (B, 27)`` (DC offset added), ``albedo (B, K, 3)``."""
    p = split_raw(raw, sizes)
    e = (torch.sigmoid(p["expression"]) - EXPR_EPS) / (1.0 - EXPR_EPS)
    if clamp:
        e = e.clamp(0.0, 1.0)
    light = p["lighting"] + raw.new_tensor([SH_INIT_DC if j % 9 == 0 else 0.0 for j in range(27)])
    return {"r6": p["r6"], "origin": p["origin"], "log_scale": p["log_scale"], "expression": e,
            "identity": p["identity"], "lighting": light,
            "albedo": p["albedo"].reshape(raw.shape[0], -1, 3)}


class ExportModule(nn.Module):
    """What is exported (ONNX/TorchScript): image and landmarks in, decoded coefficients out
    (``r6, origin, log_scale, expression, identity, lighting, albedo``; see :func:`decode`)."""

    OUTPUT_NAMES = ("r6", "origin", "log_scale", "expression", "identity", "lighting", "albedo")

    def __init__(self, net: RegressorNet):
        super().__init__()
        self.net = net
        self.sizes = dict(net.sizes)

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor):  # type: ignore[override]
        d = decode(self.net(image, landmarks), self.sizes, clamp=True)
        return tuple(d[k] for k in self.OUTPUT_NAMES)
