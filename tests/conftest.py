"""Test set-up shared by the whole suite.

On a machine without CUDA the Triton kernels are tested through the Triton interpreter,
which must be switched on before `triton` is first imported; doing it here means the one
test command (`python -m pytest`) covers both the PyTorch and the Triton paths.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "0" if os.environ.get("UHROPS_TEST_NO_INTERPRET") else "1")
# A kernel that fails to compile or launch is a test failure, never a quiet PyTorch fallback.
os.environ.setdefault("UHROPS_STRICT_KERNELS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

# Every run draws the same hypothesis examples (a red run must mean a regression, not a newly
# drawn case, and the README's test command must pass on any machine): "ci" and the default
# are derandomized. UHROPS_HYPOTHESIS_PROFILE=explore draws fresh examples (a developer
# hunting for new cases); the examples a failure finds become explicit regression tests.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
_PROFILE = os.environ.get("UHROPS_HYPOTHESIS_PROFILE", "repeatable")
settings.load_profile("repeatable" if _PROFILE == "default" else _PROFILE)

# Under pytest-xdist (the README's `-n 2`) each worker takes one core: two workers of two
# threads each on a 2-core machine spend their time descheduling each other's OpenMP teams.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER")
                      else min(2, torch.get_num_threads()))

if os.environ.get("ATEN_CPU_CAPABILITY") == "default":
    # torch.compile's C++ backend (inductor, torch 2.13) still emits at::vec code when ATen's
    # kernels are limited to the non-vectorised ones, but its precompiled header then lacks
    # the vec headers: every compile test fails with "'at::vec' has not been declared". A CPU
    # without vector units gets scalar code the same way; the values are unchanged.
    import torch._inductor.config as _inductor_config

    _inductor_config.cpp.simdlen = 1

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def seed_for(nodeid: str) -> int:
    """The seed of one test: from its id, so that it does not depend on which tests ran
    before it (a test run alone, in another order or on another machine draws the same)."""
    import zlib

    return zlib.crc32(nodeid.encode()) & 0x7FFFFFFF


@pytest.fixture(autouse=True)
def _seed_global_rngs(request):
    """Every test starts with torch's, numpy's and Python's global generators seeded: a value
    drawn without an explicit generator is the same on every run and every machine (an
    unseeded input once failed a tolerance on one processor and passed on another)."""
    import random

    import numpy as np

    seed = seed_for(request.node.nodeid)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    yield


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def shared_data() -> str:
    path = os.path.abspath(SHARED_DATA)
    if not os.path.isdir(path):
        pytest.skip(f"real sample data not found at {path}")
    return path


def triton_ready(device: torch.device | str = "cpu") -> str | None:
    """None when Triton kernels can run on `device` here, else the reason (for skips)."""
    from uhrops._backend import triton_unavailable_reason

    return triton_unavailable_reason(device)
