"""The CLI's stderr filter drops native start-up notes and keeps everything else, from any thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tracker.stderrfilter import is_chatter

REAL_NOTES = [
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"W0000 00:00:1795592069.176144   22421 inference_feedback_manager.cc:114] Feedback manager "
    b"requires a model with a single signature inference. Disabling support for feedback tensors.",
    b"W0000 00:00:1795594303.987612    5808 landmark_projection_calculator.cc:186] Using NORM_RECT "
    b"without IMAGE_DIMENSIONS is only supported for the square ROI.",
    b"I0000 00:00:1795594303.987612    5808 gl_context.cc:357] GL version: 3.2",
]
KEPT = [
    b"face3d: error: bad.mp4: not a video",
    b"E0000 00:00:1795594303.987612    5808 calculator_graph.cc:887] graph failed",
    b"Traceback (most recent call last):",
    b"INFO: something else entirely",
    b"",
]


def test_classification():
    assert all(is_chatter(x) for x in REAL_NOTES)
    assert not any(is_chatter(x) for x in KEPT)


def test_install_filters_every_thread_and_flushes_on_uninstall():
    code = textwrap.dedent("""
        import os, threading
        from tracker import stderrfilter
        stderrfilter.install()
        def worker(k):
            for i in range(50):
                os.write(2, b"W0000 00:00:1.0   1 x.cc:1] note\\n")
                os.write(2, f"keep {k} {i}\\n".encode())
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
        [t.start() for t in ts]; [t.join() for t in ts]
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\nlast line")
        stderrfilter.uninstall()
        os.write(2, b"\\nafter\\n")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = r.stderr.splitlines()
    assert r.returncode == 0
    assert sorted(x for x in lines if x.startswith("keep")) == sorted(
        f"keep {k} {i}" for k in range(3) for i in range(50))
    assert "last line" in lines and lines[-1] == "after"
    assert not any("note" in x or "TensorFlow" in x for x in lines)
