"""Every test starts from seeded global generators (tests/conftest.py's autouse fixture):
the values a test draws without its own generator are the same on every run and machine.

Oracle: fresh generators seeded by hand with the seed the test's id gives.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from tests.conftest import seed_for


def _expected(request):
    seed = seed_for(request.node.nodeid)
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(4, generator=g), np.random.RandomState(seed).rand(4),
            random.Random(seed).random())


def _drawn():
    return torch.rand(4), np.random.rand(4), random.random()


@pytest.mark.parametrize("run", [0, 1])
def test_global_generators_are_seeded_per_test(request, run):
    """Run 1 follows run 0, which drew from the generators after its check: run 1 must
    start from its own seed again, not continue where run 0 stopped."""
    t, n, p = _expected(request)
    dt, dn, dp = _drawn()
    assert torch.equal(dt, t) and np.array_equal(dn, n) and dp == p
    _drawn()


def test_hypothesis_draws_the_same_examples_on_every_run():
    from hypothesis import settings

    if os.environ.get("UHROPS_HYPOTHESIS_PROFILE") == "explore":
        pytest.skip("UHROPS_HYPOTHESIS_PROFILE=explore draws fresh examples on purpose")
    assert settings.default.derandomize
