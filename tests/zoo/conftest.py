"""Fixtures shared by the model-zoo tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test single-threaded: small-tensor model passes are faster on one intra-op thread
    (OpenMP's spin-waits dominate), and much faster when test processes share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
