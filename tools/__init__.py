"""Build-time tooling of the repository (not shipped in the wheel: setup.py lists only uhrops
and zoo). Run from the repository root, e.g. ``python -m tools.kernels.compile_check``."""
