"""Quality measures shared by tests and benchmarks (definitions in DESIGN.md "Quality, measured").

All distances are in % of the inter-ocular distance (outer eye corners, MediaPipe 33–263, or
iBUG 36–45 for 68-point sets) unless stated otherwise.
"""

from __future__ import annotations

import numpy as np

from .landmarks import inter_ocular

# MediaPipe points for the measured gaps (subject's left/right).
LIP_INNER_MID = (13, 14)
EYELID_MID = {"L": (386, 374), "R": (159, 145)}
NO_JAW = slice(17, 68)


def lip_gap(points: np.ndarray) -> float:
    """Inner-lip opening (MediaPipe 13–14) as a fraction of the inter-ocular distance."""
    a, b = LIP_INNER_MID
    return float(np.linalg.norm(points[a, :2] - points[b, :2]) / inter_ocular(points))


def eyelid_gap(points: np.ndarray, side: str) -> float:
    """Eyelid opening of the subject's ``side`` eye ("L" or "R") / inter-ocular distance."""
    a, b = EYELID_MID[side]
    return float(np.linalg.norm(points[a, :2] - points[b, :2]) / inter_ocular(points))


def point_error_pct(a: np.ndarray, b: np.ndarray, iod: float) -> float:
    """Mean distance between ``(N, 2)`` point sets in % of ``iod`` pixels."""
    return float(np.mean(np.linalg.norm(np.asarray(a)[:, :2] - np.asarray(b)[:, :2], axis=1)) / iod * 100.0)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])
