"""Quality measures of ``face3d bench`` as pure functions over arrays (definitions: DESIGN.md,
"Quality, measured").

* :func:`face_series` — per-frame arrays (pose, projected ICT 68 points, expression) of one face
  from tracker results;
* :func:`agreement_pct` — projected ICT 68 points (jaw excluded) against MediaPipe's
  68-equivalents, % of the inter-ocular distance (MediaPipe 33–263);
* :func:`read_track_csv` / :func:`rebuild_lmk68` / :func:`rebuild_check` — a CSV's own
  coefficients rebuild its ``lmk68_*`` columns, with plain numpy from the npz arrays and the
  sidecar camera (no face3d projection code involved);
* :func:`accel_p95` (jitter, px/frame²) and :func:`lag_frames` (cross-correlation peak);
* :func:`pearson` from :mod:`tracker.quality`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .facemodel import FaceModel
from .quality import NO_JAW, eyelid_gap, lip_gap, pearson
from .rotation import quat_to_euler
from .track import project_lmk68
from .types import Camera, FrameResult

__all__ = ["FaceSeries", "TrackTable", "accel_p95", "agreement_pct", "expression_validity",
           "face_series", "lag_frames", "pearson", "read_track_csv", "rebuild_check",
           "rebuild_lmk68"]


@dataclass(frozen=True)
class FaceSeries:
    """One face per frame (the first face of each frame), ``N`` frames.

    ``index (N,) int64`` frame indices; ``face_id (N,) int64`` (-1 = lost); ``yaw (N,)`` degrees;
    ``lmk68 (N, 68, 2)`` projected ICT points in pixels; ``expression (N, E) float64``. Lost
    frames hold NaN.
    """

    index: np.ndarray
    face_id: np.ndarray
    yaw: np.ndarray
    lmk68: np.ndarray
    expression: np.ndarray

    @property
    def tracked(self) -> np.ndarray:
        return self.face_id >= 0


def face_series(results: Sequence[FrameResult], model: FaceModel, cam: Camera) -> FaceSeries:
    """Arrays of the first face of each frame of ``results`` (see :class:`FaceSeries`)."""
    n, ne = len(results), model.n_expression
    idx = np.array([r.index for r in results], np.int64)
    fid = np.full(n, -1, np.int64)
    yaw = np.full(n, np.nan)
    lmk = np.full((n, 68, 2), np.nan)
    ex = np.full((n, ne), np.nan)
    for i, r in enumerate(results):
        f = r.faces[0] if r.faces else None
        if f is None or f.params is None:
            continue
        fid[i] = f.face_id
        yaw[i] = quat_to_euler(np.asarray(f.params.rotation, np.float64))[0]
        lmk[i] = project_lmk68(model, cam, f.params)
        ex[i] = f.params.expression
    return FaceSeries(idx, fid, yaw, lmk, ex)


def agreement_pct(lmk68: np.ndarray, mp_points: Sequence[np.ndarray | None],
                  mp68_points) -> np.ndarray:
    """Per-frame mean distance (% of MediaPipe's inter-ocular distance, points 33–263) between the
    projected ICT 68 points ``(N, 68, 2)`` and MediaPipe's 68-equivalents, jaw (0–16) excluded.

    ``mp_points``: MediaPipe landmarks ``(478, ≥2)`` per frame (``None`` = no face);
    ``mp68_points``: a callable ``(478, D) -> (68, D)`` (:meth:`MediaPipe68.points`). Frames
    without a face on either side give NaN.
    """
    out = np.full(len(mp_points), np.nan)
    for i, (p, mp) in enumerate(zip(lmk68, mp_points)):
        if mp is None or not np.all(np.isfinite(p)):
            continue
        ref = mp68_points(np.asarray(mp)[:, :2])
        iod = float(np.linalg.norm(mp[263, :2] - mp[33, :2]))
        if iod > 0:
            out[i] = np.mean(np.linalg.norm(p[NO_JAW] - ref[NO_JAW], axis=1)) / iod * 100.0
    return out


def accel_p95(points: np.ndarray, face_id: np.ndarray) -> float:
    """Jitter: 95th percentile of the point acceleration ``|p[t+1] - 2 p[t] + p[t-1]|`` in
    pixels/frame², over every point of ``points (N, K, 2)`` and every run of three consecutive
    frames in which ``face_id (N,)`` is the same tracked face. NaN when there is no such run."""
    p = np.asarray(points, np.float64)
    fid = np.asarray(face_id)
    ok = (fid[2:] >= 0) & (fid[2:] == fid[1:-1]) & (fid[1:-1] == fid[:-2])
    if not ok.any():
        return float("nan")
    acc = p[2:][ok] - 2.0 * p[1:-1][ok] + p[:-2][ok]
    a = np.linalg.norm(acc, axis=-1).ravel()
    a = a[np.isfinite(a)]
    return float(np.percentile(a, 95)) if a.size else float("nan")


def longest_run(face_id: np.ndarray) -> slice:
    """The longest run of consecutive frames with the same tracked face id (empty slice if none)."""
    fid = np.asarray(face_id)
    best, start = (0, 0), 0
    for i in range(1, len(fid) + 1):
        if i == len(fid) or fid[i] != fid[start]:
            if fid[start] >= 0 and i - start > best[1] - best[0]:
                best = (start, i)
            start = i
    return slice(*best)


def lag_frames(raw: np.ndarray, filtered: np.ndarray, max_lag: int = 10) -> float:
    """Delay (frames) of ``filtered`` behind ``raw`` at the peak of their cross-correlation.

    Both ``(N,)`` series on the same frames (finite); each is linearly detrended, the normalised
    correlation ``c(k) = corr(raw[t], filtered[t + k])`` is evaluated for ``|k| ≤ max_lag`` and
    the peak refined by a parabola through its neighbours (``raw`` over the same central window
    for every lag). Positive = filtered lags behind. NaN
    when the series are too short or flat.
    """
    x = np.asarray(raw, np.float64)
    y = np.asarray(filtered, np.float64)
    n = len(x)
    if n != len(y) or n < 3 * max_lag or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return float("nan")
    t = np.arange(n)
    x = x - np.polyval(np.polyfit(t, x, 1), t)
    y = y - np.polyval(np.polyfit(t, y, 1), t)
    if np.std(x) < 1e-9 or np.std(y) < 1e-9:
        return float("nan")
    lags = np.arange(-max_lag, max_lag + 1)
    xs = x[max_lag:n - max_lag]  # the same raw window for every lag: no edge asymmetry
    c = np.array([np.corrcoef(xs, y[max_lag + k:n - max_lag + k])[0, 1] for k in lags])
    j = int(np.nanargmax(c))
    frac = 0.0
    if 0 < j < len(c) - 1:
        den = c[j - 1] - 2.0 * c[j] + c[j + 1]
        if den < 0:
            frac = 0.5 * (c[j - 1] - c[j + 1]) / den
    return float(lags[j] + frac)


def expression_validity(series: FaceSeries, mp_points: Sequence[np.ndarray | None],
                        exp_names: Sequence[str]) -> dict[str, float]:
    """Pearson r of ``jawOpen`` with the inner-lip gap and of ``eyeBlink_L/R`` with the *negated*
    eyelid gap of the same eye (so that agreement is positive), over frames with both a fitted
    face and MediaPipe landmarks. Gaps from :mod:`tracker.quality` (fractions of the IOD)."""
    names = list(exp_names)
    ok = [i for i, mp in enumerate(mp_points) if mp is not None and series.tracked[i]]
    out: dict[str, float] = {"frames": float(len(ok))}
    if not ok:
        return out | {"jawOpen_vs_lip_gap": float("nan"), "eyeBlink_L_vs_eyelid_gap_L": float("nan"),
                      "eyeBlink_R_vs_eyelid_gap_R": float("nan")}
    gaps = np.array([lip_gap(mp_points[i]) for i in ok])
    out["jawOpen_vs_lip_gap"] = pearson(series.expression[ok, names.index("jawOpen")], gaps)
    for side in ("L", "R"):
        g = np.array([eyelid_gap(mp_points[i], side) for i in ok])
        out[f"eyeBlink_{side}_vs_eyelid_gap_{side}"] = pearson(
            series.expression[ok, names.index(f"eyeBlink_{side}")], -g)
    return out


# ------------------------------------------------------------------------- CSV rebuild check

@dataclass(frozen=True)
class TrackTable:
    """A face3d CSV as arrays: ``columns``; ``values (N, C) float64`` (non-numeric and empty cells
    NaN); ``status (N,)`` strings; ``camera`` from the sidecar JSON (``None`` without one)."""

    columns: tuple[str, ...]
    values: np.ndarray
    status: np.ndarray
    camera: dict[str, float] | None

    def col(self, name: str) -> np.ndarray:
        try:
            return self.values[:, self.columns.index(name)]
        except ValueError:
            raise InputError(f"CSV has no column {name!r}") from None

    def cols(self, names: Sequence[str]) -> np.ndarray:
        return np.stack([self.col(n) for n in names], axis=1) if names else \
            np.zeros((len(self.values), 0))


def read_track_csv(path: str | os.PathLike[str]) -> TrackTable:
    """Read a face3d-layout CSV (and ``PATH.json`` beside it when present)."""
    p = Path(path)
    try:
        with open(p, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as e:
        raise InputError(f"{p}: cannot read CSV ({e.strerror or e})") from None
    if not rows:
        raise InputError(f"{p}: empty CSV (no header)")
    cols = tuple(rows[0])
    body = rows[1:]
    if any(len(r) != len(cols) for r in body):
        raise InputError(f"{p}: a row has a different number of cells than the header")
    vals = np.full((len(body), len(cols)), np.nan)
    for i, r in enumerate(body):
        for j, cell in enumerate(r):
            if cell:
                try:
                    vals[i, j] = float(cell)
                except ValueError:
                    pass
    status = np.array([r[cols.index("status")] if "status" in cols else "" for r in body])
    side = Path(str(p) + ".json")
    cam = json.loads(side.read_text())["camera"] if side.is_file() else None
    return TrackTable(cols, vals, status, cam)


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    """``(N, 4)`` (w, x, y, z) → ``(N, 3, 3)``, written out here on purpose (independent check)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], 1)


def rebuild_lmk68(table: TrackTable, model: FaceModel) -> np.ndarray:
    """``(N, 68, 2)`` pixels rebuilt from each row's own coefficients and the sidecar camera,
    following the sidecar's conventions literally: ``x = neutral + Σ id·id_basis + Σ e·exp_basis``
    (metres), ``X = R(q) x + t``, ``u = cx + fx X/(−Z)``, ``v = cy − fy Y/(−Z)``. Lost rows: NaN."""
    if table.camera is None:
        raise InputError("the CSV has no sidecar JSON with the camera")
    c = table.camera
    k = model.lmk68_idx
    ids = table.cols([f"id_{i:03d}" for i in range(model.n_identity)])
    ex = table.cols(list(model.exp_names))
    q = table.cols(["qw", "qx", "qy", "qz"])
    t = table.cols(["tx_m", "ty_m", "tz_m"])
    ok = np.all(np.isfinite(q), axis=1)
    out = np.full((len(q), 68, 2), np.nan)
    if not ok.any():
        return out
    base = np.asarray(model.neutral[k], np.float64)
    idb = np.asarray(model.id_basis[:, k], np.float64)
    exb = np.asarray(model.exp_basis[:, k], np.float64)
    x = base + np.einsum("ni,ikc->nkc", np.nan_to_num(ids[ok]), idb) \
        + np.einsum("ne,ekc->nkc", np.nan_to_num(ex[ok]), exb)
    xc = np.einsum("nrc,nkc->nkr", _quat_matrix(q[ok]), x) + t[ok][:, None, :]
    iz = 1.0 / -xc[..., 2]
    out[ok, :, 0] = c["cx"] + c["fx"] * xc[..., 0] * iz
    out[ok, :, 1] = c["cy"] - c["fy"] * xc[..., 1] * iz
    return out


def rebuild_check(csv_path: str | os.PathLike[str], model: FaceModel,
                  tolerance_pct: float = 0.5) -> dict[str, float | bool]:
    """Rebuild a ``--landmarks`` CSV's ``lmk68_*`` columns from its coefficients: the distance of
    every point to its rebuilt position in % of its row's inter-ocular distance (lmk68 36–45).
    Returns ``rows``, ``mean_pct`` (over all points), ``max_pct`` (worst point) and ``ok``
    (worst point ≤ ``tolerance_pct``)."""
    table = read_track_csv(csv_path)
    got = np.stack([table.cols([f"lmk68_x_{i:02d}" for i in range(68)]),
                    table.cols([f"lmk68_y_{i:02d}" for i in range(68)])], -1)
    reb = rebuild_lmk68(table, model)
    ok = np.all(np.isfinite(got), axis=(1, 2)) & np.all(np.isfinite(reb), axis=(1, 2))
    if not ok.any():
        return {"rows": 0, "mean_pct": float("nan"), "max_pct": float("nan"), "ok": False}
    iod = np.linalg.norm(got[ok, 36] - got[ok, 45], axis=1)
    err = np.linalg.norm(got[ok] - reb[ok], axis=2) / iod[:, None] * 100.0  # (rows, 68)
    return {"rows": int(ok.sum()), "mean_pct": float(err.mean()), "max_pct": float(err.max()),
            "ok": bool(err.max() <= tolerance_pct)}
