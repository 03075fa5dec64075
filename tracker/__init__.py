"""face3d runtime: sources, landmarks, face model, fitting, smoothing, sinks and the CLI.

Stage boundaries are the frozen dataclasses in :mod:`tracker.types`; errors are in
:mod:`tracker.errors`. Nothing here changes global state at import time.
"""

__version__ = "0.1.0"
