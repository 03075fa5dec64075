"""CSV layout and row encoding (pure), Live Link Face rows, the atomic writer, ARKit mapping."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.arkit import ARKIT_52, arkit_matrix, to_arkit
from tracker.csvout import (AtomicCsv, LIVELINK_COLUMNS, face3d_columns, face3d_row,
                            livelink_row, livelink_timecode)
from tracker.rotation import euler_to_quat
from tracker.types import FaceParams


@pytest.fixture(scope="module")
def names(model):
    return model.exp_names


def params(names, yaw=10.0):
    e = np.zeros(len(names), np.float32)
    e[names.index("jawOpen")] = 0.5
    e[names.index("browInnerUp_L")] = 1.0
    return FaceParams(euler_to_quat(yaw, -5.0, 2.0), np.array([0.01, -0.02, -0.6]), e,
                      np.arange(100, dtype=np.float32) / 100)


def test_columns_order(names):
    cols = face3d_columns(names, 100, landmarks=True)
    assert cols[:15] == ["frame", "time_s", "face_id", "status", "confidence", "qw", "qx", "qy",
                         "qz", "yaw_deg", "pitch_deg", "roll_deg", "tx_m", "ty_m", "tz_m"]
    assert cols[15:68] == list(names)
    assert cols[68] == "id_000" and cols[167] == "id_099"
    assert cols[168] == "lmk68_x_00" and cols[-1] == "lmk68_y_67" and len(cols) == 168 + 136
    lit = face3d_columns(names, 100, lighting=True, albedo_k=2, arkit=True)
    assert lit[168:171] == ["sh_r_0", "sh_r_1", "sh_r_2"] and lit[195:201] == [
        "alb_00_r", "alb_00_g", "alb_00_b", "alb_01_r", "alb_01_g", "alb_01_b"]
    assert lit[-52:] == [f"arkit_{n}" for n in ARKIT_52]


def test_row_values_and_lost_rows(names):
    cols = face3d_columns(names, 100, landmarks=True)
    p = params(names)
    lmk = np.stack([np.arange(68), np.arange(68) + 100], 1).astype(float)
    row = face3d_row(len(cols), 7, 0.25, 0, "tracked", 0.9, p, names, lmk, landmarks=True)
    d = dict(zip(cols, row))
    assert d["frame"] == "7" and d["time_s"] == "0.250000" and d["status"] == "tracked"
    assert float(d["yaw_deg"]) == pytest.approx(10.0, abs=1e-3)
    assert float(d["pitch_deg"]) == pytest.approx(-5.0, abs=1e-3)
    assert float(d["tz_m"]) == pytest.approx(-0.6)
    assert float(d["jawOpen"]) == 0.5 and float(d["id_099"]) == pytest.approx(0.99)
    assert float(d["lmk68_y_03"]) == 103.0
    q = np.array([float(d[k]) for k in ("qw", "qx", "qy", "qz")])
    assert q[0] >= 0 and np.linalg.norm(q) == pytest.approx(1, abs=1e-6)
    lost = face3d_row(len(cols), 8, 0.3, -1, "lost", 0.0, None, names, landmarks=True)
    assert lost[:4] == ["8", "0.300000", "-1", "lost"] and set(lost[4:]) == {""}
    with pytest.raises(ValueError):
        face3d_row(len(cols) + 1, 7, 0.25, 0, "tracked", 0.9, p, names, lmk, landmarks=True)


def test_arkit_merge(names):
    m = arkit_matrix(names)
    assert m.shape == (52, 53) and np.allclose(m.sum(1)[[ARKIT_52.index("tongueOut")]], 0)
    e = params(names).expression
    a = to_arkit(e, names)
    assert a[ARKIT_52.index("browInnerUp")] == pytest.approx(0.5)  # mean of L=1 and R=0
    assert a[ARKIT_52.index("jawOpen")] == pytest.approx(0.5)
    e2 = np.zeros(53, np.float32)
    e2[names.index("eyeBlink_L")] = 0.7
    assert to_arkit(e2, names)[ARKIT_52.index("eyeBlinkLeft")] == pytest.approx(0.7)
    assert to_arkit(e2, names)[ARKIT_52.index("eyeBlinkRight")] == 0


def test_livelink(names):
    assert LIVELINK_COLUMNS[:3] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft"]
    assert LIVELINK_COLUMNS[16:20] == ["JawForward", "JawRight", "JawLeft", "JawOpen"]
    assert livelink_timecode(3661.5, 30.0) == "01:01:01:15.000"
    row = livelink_row(0.0, 30.0, params(names), names)
    assert len(row) == len(LIVELINK_COLUMNS) == 63
    d = dict(zip(LIVELINK_COLUMNS, row))
    assert float(d["JawOpen"]) == 0.5 and float(d["HeadYaw"]) == pytest.approx(np.radians(10), abs=1e-4)
    assert livelink_row(0.0, 30.0, None, names)[2:] == ["0"] * 61


def test_atomic_csv(tmp_path):
    out = tmp_path / "sub" / "a.csv"
    w = AtomicCsv(out, ["x", "y"])
    w.write(["1", "2"])
    assert not out.exists() and w.tmp.exists()
    w.commit()
    assert out.read_text() == "x,y\n1,2\n" and not w.tmp.exists()
    w2 = AtomicCsv(out, ["x"])
    w2.write(["3"])
    w2.abort()
    assert out.read_text() == "x,y\n1,2\n" and list(out.parent.iterdir()) == [out]
