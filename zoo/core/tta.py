"""Test-time augmentation over the dihedral group, written once for every evaluation.

The eight views are those of the released FCtL evaluation (``helper.Evaluator.eval_test``)
and of mmseg's ``flip`` + rot90 TTA: for flip in (no, horizontal), for k in 0..3, the image
flipped, then rotated by k quarter turns counter-clockwise (``torch.rot90`` on the last two
dims, as PIL's ``ROTATE_90`` k times). A view's prediction is turned back (rotated by -k,
then flipped) and the eight are summed in that order, so every caller adds the same terms in
the same order and gets the same bits.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["DIHEDRAL_VIEWS", "dihedral_sum", "from_view", "to_view"]

#: (flip, k) of the eight views, in the order their predictions are summed.
DIHEDRAL_VIEWS: tuple[tuple[bool, int], ...] = tuple(
    (flip, k) for flip in (False, True) for k in range(4))


def to_view(x: Tensor, flip: bool, k: int) -> Tensor:
    """``x`` (..., H, W) as view (flip, k) sees it: horizontally flipped if ``flip``, then
    rotated k quarter turns counter-clockwise."""
    x = x.flip(-1) if flip else x
    return torch.rot90(x, k, (-2, -1))


def from_view(y: Tensor, flip: bool, k: int) -> Tensor:
    """The inverse of :func:`to_view`: a prediction of view (flip, k) back in the image's
    orientation (rotated by -k, then flipped)."""
    y = torch.rot90(y, -k, (-2, -1))
    return y.flip(-1) if flip else y


def dihedral_sum(fn: Callable[[Tensor, bool, int], Tensor], image: Tensor) -> Tensor:
    """Sum over the eight views of ``fn(view, flip, k)`` turned back to the image's
    orientation.

    Convention:
        ``fn`` gets the view of ``image`` (..., H, W) made by :func:`to_view` and the view's
        (flip, k), so it can transform anything else it needs the same way (FCtL's global
        image, resized once from the image and then turned with each view); its output
        (..., H', W') with (H', W') the view's size is turned back by :func:`from_view` and
        added in :data:`DIHEDRAL_VIEWS` order. Divide by 8 for a mean.

    Args:
        fn: ``(view, flip, k) -> prediction`` of that view.
        image: (..., H, W) tensor.

    Returns:
        the sum of the eight predictions, in the image's orientation.

    Example:
        >>> x = torch.arange(6.0).view(1, 1, 2, 3)
        >>> torch.equal(dihedral_sum(lambda v, flip, k: v, x), 8 * x)
        True
    """
    total: Tensor | None = None
    for flip, k in DIHEDRAL_VIEWS:
        y = from_view(fn(to_view(image, flip, k), flip, k), flip, k)
        total = y if total is None else total + y
    assert total is not None
    return total
