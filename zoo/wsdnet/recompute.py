"""Activation checkpointing for WSDNet's high-resolution parts, with BatchNorm's running
statistics updated once per step.

``torch.utils.checkpoint`` runs a segment's forward a second time during backward. In train
mode that second run would update every BatchNorm's running mean and variance (and its
batch counter) again, so a checkpointed model would drift from the plain one in eval mode.
:func:`checkpoint_segment` restores those buffers after every recomputation.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_segment"]


def _running_stats(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    out = []
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats:
                out.extend(b for b in (m.running_mean, m.running_var, m.num_batches_tracked)
                           if b is not None)
    return out


def checkpoint_segment(fn: Callable[..., Any], modules: Iterable[nn.Module], *args: Any) -> Any:
    """``fn(*args)`` under non-reentrant activation checkpointing.

    Convention:
        - ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False,
          preserve_rng_state=True)``: only the tensors ``fn`` receives are kept for backward;
          the segment is run again during backward with the same RNG state (dropout draws
          the same masks) and autocast state, so the gradients equal those of the plain call.
        - the running statistics of the BatchNorm layers in ``modules`` (train mode) are
          copied before each recomputation and restored after it (also when the
          recomputation stops early), so they are updated once per forward, as without
          checkpointing.
        - when autograd is off (``torch.no_grad()``, inference) ``fn`` is called directly.

    Args:
        fn: the segment; takes and returns tensors (or tuples of them).
        modules: the modules ``fn`` runs (where to find BatchNorm layers).
        *args: ``fn``'s inputs.
    """
    if not torch.is_grad_enabled():
        return fn(*args)
    modules = list(modules)
    calls = [0]

    def run(*inputs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:  # the forward pass proper: BN updates its statistics as usual
            return fn(*inputs)
        buffers = _running_stats(modules)
        kept = [b.clone() for b in buffers]
        try:
            return fn(*inputs)
        finally:
            with torch.no_grad():
                for b, k in zip(buffers, kept):
                    b.copy_(k)

    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True)
