"""Filter native libraries' start-up chatter out of stderr, for every thread.

MediaPipe's graph, TFLite and absl write notes such as ``INFO: Created TensorFlow Lite XNNPACK
delegate for CPU.`` or ``W0000 00:00:… landmark_projection_calculator.cc:186] Using NORM_RECT …``
straight to file descriptor 2, from their own threads and at moments Python does not control
(graph start, the first face). Redirecting fd 2 around those calls also swallowed what other
threads wrote meanwhile, so instead :func:`install` puts a pipe on fd 2 for the whole process and
a small thread copies every line to the real stderr except those notes: C++ INFO/WARNING lines in
glog/absl format (``[IW]MMDD hh:mm:ss.uuuuuu  thread file.cc:line] …``, absl writing
the seconds unwrapped), TFLite's ``INFO:`` line and
absl's "before InitializeLog" banner. Errors (``E…``/``F…`` lines) and everything else pass through.

This changes process state, so only the CLI calls it (explicit set-up); :func:`uninstall` restores
fd 2 and flushes.
"""

from __future__ import annotations

import os
import re
import sys
import threading

_CHATTER = re.compile(
    rb"^(?:[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] .*"
    rb"|INFO: Created TensorFlow Lite .*"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)$")

_state: dict[str, object] = {}


def is_chatter(line: bytes) -> bool:
    """True for a native INFO/WARNING note the filter drops (``line`` without its newline)."""
    return bool(_CHATTER.match(line.rstrip(b"\r")))


def _pump(read_fd: int, out_fd: int) -> None:
    buf = b""
    with os.fdopen(read_fd, "rb", buffering=0) as r:
        while True:
            chunk = r.read(65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            data = b"".join(line + b"\n" for line in lines if not is_chatter(line))
            if data:
                os.write(out_fd, data)
    if buf and not is_chatter(buf):
        os.write(out_fd, buf)


def install() -> bool:
    """Route fd 2 through the filter (idempotent). Returns False where it cannot (no fd 2)."""
    if "thread" in _state:
        return True
    try:
        sys.stderr.flush()
        real = os.dup(2)
        r, w = os.pipe()
    except OSError:
        return False
    os.dup2(w, 2)
    os.close(w)
    th = threading.Thread(target=_pump, args=(r, real), name="face3d-stderr", daemon=True)
    th.start()
    _state.update(thread=th, real=real)
    return True


def uninstall() -> None:
    """Restore the real fd 2 and copy out what is still in the pipe."""
    th = _state.pop("thread", None)
    if th is None:
        return
    real = _state.pop("real")
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
    os.dup2(real, 2)  # closes the pipe's last write end: the pump sees EOF
    th.join(timeout=2.0)  # type: ignore[attr-defined]
    os.close(real)  # type: ignore[arg-type]
