"""The serve benchmark runs end to end and reports every number (values are not asserted: speed
is what the benchmark measures, not what a test decides)."""

from __future__ import annotations

import math
import sys

import pytest

from tracker.bench_serve import format_summary, run_bench


@pytest.mark.slow
def test_bench_serve_reports_all_numbers(model, videos):
    before = sys.getswitchinterval()
    res = run_bench(str(videos["d10"]), clients=3, seconds=1.0, repeats=1, model=model,
                    switch_interval_s=0.002)
    # measured with the requested GIL switch interval, and the process setting restored
    assert res["switch_interval_s"] == pytest.approx(0.002) and sys.getswitchinterval() == before
    for mode in ("paced", "unpaced"):
        rows = res["summary"][mode]
        assert set(rows) >= {"0 -", "1 ws", "3 raw", "3 ws", "fps_drop_pct_raw", "fps_drop_pct_ws"}
        assert rows["0 -"]["fps"] > 0 and math.isnan(rows["0 -"]["send_ms_p50"])
        for key in ("1 ws", "3 ws"):
            assert rows[key]["send_ms_p95"] >= rows[key]["send_ms_p50"] >= 0
            assert rows[key]["recv_ms_p95"] >= 0 and rows[key]["client_fps_min"] > 0
        assert rows["3 raw"]["client_kB_s_min"] > 0
    text = format_summary(res)
    assert "paced" in text and "unpaced" in text and "tracker fps" in text
