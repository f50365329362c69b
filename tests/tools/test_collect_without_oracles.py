"""Every test module of tests/uhrops collects without the optional oracles (issue 28).

The GPU machine has no PyWavelets, ptwt, pytorch_wavelets, kornia or MONAI; a module-level
``importorskip`` there skips whole modules, Triton-versus-PyTorch tests included. Here the
same collection runs twice in subprocesses, once as this environment is and once with the
oracles blocked (a finder on ``sys.meta_path``, installed through a ``sitecustomize``), and
the two must collect the same tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tools.import_blocker import ORACLES, blocker_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECT = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
           "tests/uhrops"]


def _collected(proc: subprocess.Popen) -> tuple[list[str], str]:
    out, _ = proc.communicate(timeout=600)
    ids = [line for line in out.splitlines() if "::" in line]
    return ids, out


@pytest.mark.slow
def test_uhrops_tests_collect_the_same_without_optional_oracles(tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import pywt"], env=blocker_env(
        ORACLES, folder=str(tmp_path)), capture_output=True, text=True)
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, \
        "the blocker did not block"
    kw = dict(cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with_oracles = subprocess.Popen(COLLECT, **kw)
    without = subprocess.Popen(COLLECT, env=blocker_env(ORACLES, folder=str(tmp_path)), **kw)
    ids_with, out_with = _collected(with_oracles)
    ids_without, out_without = _collected(without)
    assert with_oracles.returncode == 0, out_with[-3000:]
    assert without.returncode == 0, out_without[-3000:]
    assert ids_with, out_with[-3000:]
    assert not re.search(r"\d+ skipped", out_without), out_without[-3000:]
    assert sorted(ids_without) == sorted(ids_with), (
        f"{len(ids_with)} tests with the oracles, {len(ids_without)} without; missing: "
        f"{sorted(set(ids_with) - set(ids_without))[:20]}")
