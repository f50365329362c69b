"""Make named packages unimportable in child processes, as on a machine that lacks them.

The GPU test machine has no PyWavelets, ptwt, pytorch_wavelets, kornia, MONAI or rasterio
(and nothing installs there from a registry); :func:`blocker_env` gives the environment of a
subprocess in which those imports fail with ``ModuleNotFoundError`` exactly as they would
there, so a test module or benchmark stage that would break on that machine breaks here first.
It writes a ``sitecustomize.py`` into a temporary folder put first on ``PYTHONPATH``; Python
imports it at start-up, and it puts a finder on ``sys.meta_path`` that refuses the names (and
their submodules) before any other finder is asked.

Used by ``tests/tools/test_collect_without_oracles.py`` and ``python -m benchmarks.gpu_check
--dry-run --like-device``.
"""

from __future__ import annotations

import os
import tempfile

# What the GPU machine lacks (issue 28), plus OpenCV: the oracles' test modules must collect
# without any of them. kornia_rs comes with kornia.
ABSENT_ON_DEVICE: tuple[str, ...] = ("pywt", "ptwt", "pytorch_wavelets", "kornia", "kornia_rs",
                                     "monai", "rasterio")
ORACLES: tuple[str, ...] = ABSENT_ON_DEVICE + ("cv2",)

_SITECUSTOMIZE = '''\
import sys

_BLOCKED = {names!r}


class _Blocker:
    """Refuses the blocked top-level packages and everything under them."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: absent on the "
                                      f"GPU machine)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
'''


def write_blocker(names: tuple[str, ...], folder: str | None = None) -> str:
    """Write the ``sitecustomize.py`` that blocks ``names`` into ``folder`` (a new temporary
    folder when None) and return the folder."""
    folder = folder or tempfile.mkdtemp(prefix="uhrops-blocker-")
    with open(os.path.join(folder, "sitecustomize.py"), "w") as f:
        f.write(_SITECUSTOMIZE.format(names=tuple(sorted(names))))
    return folder


def blocker_env(names: tuple[str, ...], base: dict[str, str] | None = None,
                folder: str | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) whose Python processes cannot import
    ``names``."""
    env = dict(os.environ if base is None else base)
    folder = write_blocker(names, folder)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (folder, env.get("PYTHONPATH", "")) if p)
    return env
