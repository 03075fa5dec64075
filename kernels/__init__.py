"""Numba kernels on plain contiguous numpy arrays — no torch inside.

* :mod:`kernels.raster` — ``rasterize`` → ``interpolate`` (nvdiffrast layouts) and their backward
  kernels ``rasterize_backward`` / ``interpolate_backward`` for a torch autograd wrapper.
* :mod:`kernels.shading` — Deep3DFaceRecon spherical-harmonics lighting, vertex normals, Lambert.
* :mod:`kernels.antialias` — analytic silhouette-edge antialiasing.

Each kernel has a slow numpy reference in ``tests/`` that the tests compare against. Kernels are
compiled on first call and cached on disk (``cache=True``; numba falls back to a user cache
directory when the package folder is read-only). Nothing is compiled at import.
"""
