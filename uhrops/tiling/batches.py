"""What both sliding-window paths (in memory and streamed) check of each batch ``fn`` returns."""

from __future__ import annotations

import torch
from torch import Tensor

from uhrops import checks

__all__ = ["BatchFormat", "check_batch_output"]

#: (channels, dtype, device) of a batch output
BatchFormat = tuple[int, torch.dtype, torch.device]


def check_batch_output(y: object, k0: int, k1: int, batch_size: int, total: int,
                       patch: tuple[int, int], first: BatchFormat | None,
                       op: str) -> BatchFormat:
    """Check ``fn``'s output for patches k0..k1-1 and return its format (that of batch 0
    when ``first`` is None).

    Every batch must match the first: the output is allocated from it, and a later batch
    with fewer channels would leave memory unwritten, with more fail in a broadcast, and
    another dtype be silently cast to the first one's."""
    ph, pw = patch
    if not isinstance(y, Tensor) or y.dim() != 4 or y.shape[0] != k1 - k0 \
            or tuple(y.shape[-2:]) != (ph, pw):
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{op}(): `fn` must return a (k, C_out, {ph}, {pw}) tensor "
                         f"for a batch of k={k1 - k0} patches; got {got}. Fix: "
                         "resize the network output to the patch size inside fn.")
    checks.check_float(y, "fn(...) output", op)
    now = (int(y.shape[1]), y.dtype, y.device)
    if first is not None and now != first:
        what = [f"{u} {a} -> {b}" for a, b, u in zip(first, now, ("channels", "dtype", "device"))
                if a != b]
        raise ValueError(
            f"{op}(): `fn`'s output for batch {k0 // batch_size} (patches {k0}..{k1 - 1} "
            f"of {total}) differs from batch 0's: {'; '.join(what)}. The merged "
            "output has one channel count, dtype and device. "
            "Fix: make fn return the same number of channels, dtype and device for "
            "every batch (e.g. end it with .float()).")
    return now
