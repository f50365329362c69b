"""Gradient accumulation over sub-batches, shared by the patch-based families (FCtL, CSRN).

The released FCtL code runs the patches of a step in sub-batches of ``fctl.sub_batch`` with
one backward each, so the step's gradient is the SUM of the sub-batch mean losses; the
logged loss is their mean. The detached losses stay on the device until the trainer logs
them: converting each one to a Python float would sync with the device every sub-batch.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

__all__ = ["SubBatchLosses", "sub_batches"]


def sub_batches(n: int, size: int) -> Iterator[slice]:
    """Slices of ``size`` items (the last one shorter) covering ``range(n)``."""
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


class SubBatchLosses:
    """Backward each sub-batch loss as it comes and keep it (detached) for the step's terms."""

    def __init__(self) -> None:
        self.losses: list[Tensor] = []

    def backward(self, loss: Tensor) -> None:
        loss.backward()
        self.losses.append(loss.detach())

    def terms(self) -> dict[str, Tensor | float]:
        """``{"loss": mean of the sub-batch losses (0-d tensor), "sub_batches": count}``."""
        return {"loss": torch.stack(self.losses).mean(), "sub_batches": float(len(self.losses))}
