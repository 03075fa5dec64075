"""iBUG ``.pts`` landmark files (300-W, LFPW, HELEN, AFW, Menpo 68-point annotations) and the
68-point normalised mean error.

File format (version 1, plain text)::

    version: 1
    n_points:  68
    {
    x_1 y_1
    ...
    x_68 y_68
    }

Coordinates in the files are **1-based** pixel positions (the centre of the top-left pixel is
``(1, 1)``), the convention of the 300-W annotations and of menpo's importer. face3d's image
coordinates are continuous with the origin at the top-left *corner* of the image (the centre of
the top-left pixel is ``(0.5, 0.5)``; MediaPipe's normalised points times the image size, and
the ``lmk68_*`` CSV columns). :func:`read_pts` converts: ``face3d = pts - 0.5`` (``one_based``),
or ``pts + 0.5`` for files written with 0-based pixel centres.

The 68 points follow the iBUG order: 0–16 jaw, 17–26 brows, 27–35 nose, 36–47 eyes (36 and 45 the
outer corners: the subject's right and left), 48–67 mouth.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

IBUG_OUTER_EYE_CORNERS = (36, 45)
"""iBUG-68 indices of the outer eye corners (inter-ocular normalisation of the NME)."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")

_HEADER = re.compile(r"^\s*([A-Za-z_]+)\s*:\s*(\S+)\s*$")


@dataclass(frozen=True)
class PtsFile:
    """A parsed ``.pts`` file: ``points (N, 2) float64`` as written in the file (x, y), its
    ``version`` string and any other header fields."""

    points: np.ndarray
    version: str
    header: tuple[tuple[str, str], ...] = ()


def parse_pts(text: str, name: str = "<pts>") -> PtsFile:
    """Parse the text of a ``.pts`` file (coordinates unchanged). Raises :class:`InputError` with
    one line naming ``name`` when the text is not a well-formed version-1 file."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    header: list[tuple[str, str]] = []
    i = 0
    while i < len(lines) and lines[i] != "{":
        m = _HEADER.match(lines[i])
        if m is None:
            raise InputError(f"{name}: not an iBUG .pts file (unexpected line {lines[i][:40]!r} "
                             "before '{')")
        header.append((m[1].lower(), m[2]))
        i += 1
    fields = dict(header)
    if i == len(lines):
        raise InputError(f"{name}: not an iBUG .pts file (no '{{' line)")
    if "n_points" not in fields:
        raise InputError(f"{name}: .pts header has no n_points")
    try:
        n = int(fields["n_points"])
    except ValueError:
        raise InputError(f"{name}: .pts n_points is not an integer: {fields['n_points']!r}") from None
    try:
        end = lines.index("}", i + 1)
    except ValueError:
        raise InputError(f"{name}: .pts file has no closing '}}' (truncated?)") from None
    body = lines[i + 1:end]
    if len(body) != n:
        raise InputError(f"{name}: .pts header says {n} points, found {len(body)}")
    try:
        pts = np.array([[float(v) for v in ln.split()] for ln in body], np.float64).reshape(n, -1)
    except ValueError:
        raise InputError(f"{name}: .pts point lines must hold two numbers each") from None
    if n and pts.shape[1] != 2:
        raise InputError(f"{name}: .pts point lines must hold two numbers each, found {pts.shape[1]}")
    if not np.all(np.isfinite(pts)):
        raise InputError(f"{name}: .pts file holds non-finite coordinates")
    return PtsFile(pts.reshape(n, 2), fields.get("version", ""),
                   tuple((k, v) for k, v in header if k not in ("version", "n_points")))


def read_pts(path: str | os.PathLike[str], one_based: bool = True) -> np.ndarray:
    """Landmarks ``(N, 2) float64`` of a ``.pts`` file in face3d image coordinates (module doc).

    ``one_based``: the file's pixel centres start at 1 (iBUG/300-W; default) rather than 0.
    Raises :class:`InputError` for an unreadable or malformed file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read .pts file ({getattr(e, 'strerror', None) or e})") from None
    pts = parse_pts(text, str(p)).points
    return pts - 0.5 if one_based else pts + 0.5


def format_pts(points: np.ndarray, one_based: bool = True) -> str:
    """The text of a version-1 ``.pts`` file for ``(N, 2)`` points in face3d image coordinates
    (inverse of :func:`read_pts` up to the printed precision, 3 decimals)."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    p = p + 0.5 if one_based else p - 0.5
    rows = "\n".join(f"{x:.3f} {y:.3f}" for x, y in p)
    return f"version: 1\nn_points:  {len(p)}\n{{\n{rows}\n}}\n"


def write_pts(path: str | os.PathLike[str], points: np.ndarray, one_based: bool = True) -> Path:
    """Write ``(N, 2)`` points as a ``.pts`` file (see :func:`format_pts`)."""
    p = Path(path)
    p.write_text(format_pts(points, one_based), encoding="utf-8")
    return p


def find_annotated_images(*roots: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """``(image, pts)`` pairs under the folders ``roots`` (recursively): every ``X.pts`` with an
    image ``X.<suffix>`` next to it (suffixes in :data:`IMAGE_SUFFIXES`, any case), sorted."""
    pairs: set[tuple[Path, Path]] = set()
    for root in roots:
        r = Path(root)
        if not r.is_dir():
            continue
        images: dict[Path, dict[str, Path]] = {}  # folder -> stem -> first image (sorted)
        for pts in sorted(r.rglob("*.pts")):
            if pts.parent not in images:
                found: dict[str, Path] = {}
                for f in sorted(pts.parent.iterdir()):
                    if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                        found.setdefault(f.stem, f)
                images[pts.parent] = found
            img = images[pts.parent].get(pts.stem)
            if img is not None:
                pairs.add((img, pts))
    return sorted(pairs)


def inter_ocular_68(points: np.ndarray) -> float:
    """Distance between the outer eye corners (iBUG 36 and 45) of ``(68, ≥2)`` points."""
    a, b = IBUG_OUTER_EYE_CORNERS
    return float(np.linalg.norm(np.asarray(points)[a, :2] - np.asarray(points)[b, :2]))


def nme_pct(pred: np.ndarray, gt: np.ndarray, include_jaw: bool = True) -> float:
    """Normalised mean error of ``pred`` against ``gt`` (both ``(68, 2)`` pixels): the mean point
    distance over the 68 points (51 without the jaw, 17–67) in % of the ground truth's
    inter-ocular distance (outer eye corners). Raises :class:`InputError` on a shape mismatch or a
    degenerate ground truth."""
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if p.shape != (68, 2) or g.shape != (68, 2):
        raise InputError(f"NME needs two (68, 2) point sets, got {p.shape} and {g.shape}")
    iod = inter_ocular_68(g)
    if not iod > 0:
        raise InputError("NME: ground-truth outer eye corners coincide")
    sel = slice(0, 68) if include_jaw else slice(17, 68)
    return float(np.mean(np.linalg.norm(p[sel] - g[sel], axis=1)) / iod * 100.0)
