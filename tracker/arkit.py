"""ARKit-52 blendshape names and the mapping from ICT's 53 expression weights.

ICT splits two of ARKit's channels into sides: ``browInnerUp_L/R`` and ``cheekPuff_L/R``. ARKit's
single ``browInnerUp`` and ``cheekPuff`` are their **mean** (a symmetric raise reads as the full
weight, a one-sided raise as half). ICT has no ``tongueOut``: it is always 0. Every other ARKit name
is an ICT name with ``_L``/``_R`` turned into ``Left``/``Right`` (the subject's left, as in ARKit).
"""

from __future__ import annotations

import numpy as np

# Apple's ARKit order (ARFaceAnchor.BlendShapeLocation, as Live Link Face lists them).
ARKIT_52 = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight",
    "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight", "jawForward", "jawRight",
    "jawLeft", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthRight", "mouthLeft",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft",
    "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft", "browDownRight",
    "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)


def ict_to_arkit_name(name: str) -> str:
    if name.endswith("_L"):
        return name[:-2] + "Left"
    if name.endswith("_R"):
        return name[:-2] + "Right"
    return name


def arkit_matrix(exp_names: tuple[str, ...]) -> np.ndarray:
    """``(52, E) float32`` matrix M with ``arkit = M @ ict`` (see module docstring)."""
    m = np.zeros((len(ARKIT_52), len(exp_names)), np.float32)
    col = {n: i for i, n in enumerate(exp_names)}
    for r, a in enumerate(ARKIT_52):
        if a in ("browInnerUp", "cheekPuff"):
            m[r, col[a + "_L"]] = 0.5
            m[r, col[a + "_R"]] = 0.5
            continue
        for n, i in col.items():
            if ict_to_arkit_name(n) == a:
                m[r, i] = 1.0
    return m


def to_arkit(expression: np.ndarray, exp_names: tuple[str, ...]) -> np.ndarray:
    """ICT weights ``(…, E)`` → ARKit-52 weights ``(…, 52)`` in :data:`ARKIT_52` order."""
    return np.asarray(expression, np.float32) @ arkit_matrix(exp_names).T
