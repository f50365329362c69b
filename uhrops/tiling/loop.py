"""The one batch loop of :func:`~uhrops.tiling.sliding_window`, in memory and streamed.

A *source* cuts the patches of the grid into batches for ``fn``: from an image tensor in
memory (:mod:`~uhrops.tiling.window`) or window by window through a reader
(:mod:`~uhrops.tiling.stream`). A *target* takes ``fn``'s outputs: into the whole output,
into one patch row's band handed on to a sink, or kept for autograd. Between them the loop is
the same for every combination (batches in row-major order, each output checked against batch
0's, the batch buffer refilled when ``fn`` kept no reference to it, progress), so the two
modes cannot drift apart.
"""

from __future__ import annotations

from typing import Callable, Protocol

from torch import Tensor

from uhrops.tiling.batches import BatchFormat, check_batch_output
from uhrops.tiling.buffers import recycle

__all__ = ["PatchSource", "PatchTarget", "run_batches"]


class PatchSource(Protocol):
    """Cuts patches k0..k1-1 (row-major over the images of the call) into a batch."""

    #: whether a batch buffer ``fn`` kept no reference to may be refilled for the next batch
    reuses: bool

    def batch(self, k0: int, k1: int, spare: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        """(batch, contexts) for patches k0..k1-1; ``spare`` is the previous batch's buffer
        when it is free to refill (None otherwise)."""
        ...


class PatchTarget(Protocol):
    """Takes ``fn``'s output of each batch."""

    def start(self, y: Tensor) -> None:
        """Called once, with batch 0's output (its channels, dtype and device are the
        call's: every later batch is checked against them)."""
        ...

    def add(self, y: Tensor, k0: int, k1: int) -> None:
        """The output of patches k0..k1-1 (only read, never modified)."""
        ...


def run_batches(fn: Callable[..., Tensor], source: PatchSource, target: PatchTarget,
                patch: tuple[int, int], batch_size: int, total: int, span: tuple[int, int],
                progress: bool, op: str) -> Tensor | None:
    """Run ``fn`` on the batches of patches span[0]..span[1]-1 of ``total`` (batches start at
    multiples of ``batch_size``) and hand each output to ``target``.

    Returns the last batch buffer when it may be reused (the in-memory path keeps it for the
    next call), else None."""
    kb, ke = span
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=ke - kb, desc=op, unit="patch")
    first: BatchFormat | None = None
    spare: Tensor | None = None
    try:
        for k0 in range(kb, ke, batch_size):
            k1 = min(k0 + batch_size, total)
            batch, extra = source.batch(k0, k1, spare)
            spare = None
            y = fn(batch, *extra)
            is_first = first is None
            first = check_batch_output(y, k0, k1, batch_size, total, patch, first, op)
            if is_first:
                target.start(y)
            target.add(y, k0, k1)
            del y, extra
            # refilled next time only if fn kept no reference to it (nor a view of it)
            spare = recycle(batch) if source.reuses else None
            del batch
            if bar is not None:
                bar.update(k1 - k0)
    finally:
        if bar is not None:
            bar.close()
    return spare
