"""Patch grids: where the patches of an image start, and the checks every tiling op shares."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import Tensor

from uhrops import checks

__all__ = ["IntPair", "PatchGrid", "as_pair", "check_grid", "check_image_grid"]

IntPair = Union[int, Sequence[int]]


def as_pair(value: object, name: str, op: str, minimum: int | None = 1) -> tuple[int, int]:
    """An int or a 2-sequence of ints, as (h, w)."""
    if isinstance(value, torch.Size):
        value = tuple(value)
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{op}(): `{name}` must be an int or a pair (h, w); got {value!r} "
                             f"with {len(value)} entries. Fix: pass e.g. {name}=(512, 512).")
        h = checks.check_int(value[0], f"{name}[0]", op, minimum)
        w = checks.check_int(value[1], f"{name}[1]", op, minimum)
        return h, w
    v = checks.check_int(value, name, op, minimum)
    return v, v


def _axis_min_overlap(size: int, p: int, min_overlap: float) -> tuple[int, ...]:
    """GLNet's ``get_patch_info`` + ``global2patch`` along one axis."""
    if size <= p:
        return (0,)
    def ok(k: int) -> bool:  # GLNet's test, in the same float arithmetic
        return p - (size - p) / (k - 1) >= min_overlap

    n0 = max(-(-size // p), 2)  # smallest n with n * p >= size (>= 2 since size > p)
    # jump near the answer with the closed form, then settle with the exact (monotone) test
    n = max(n0, math.ceil((size - p) / (p - min_overlap)) - 1)
    while n > n0 and ok(n - 1):
        n -= 1
    while not ok(n):
        n += 1
    step = (size - p) / (n - 1)
    return tuple(int(round(i * step)) for i in range(n - 1)) + (size - p,)


def _axis_stride(size: int, p: int, stride: int) -> tuple[int, ...]:
    """mmsegmentation's ``slide_inference`` rule along one axis (last start shifted back)."""
    if size <= p:
        return (0,)
    n = max(size - p + stride - 1, 0) // stride + 1
    return tuple(max(min(i * stride + p, size) - p, 0) for i in range(n))


@dataclass(frozen=True)
class PatchGrid:
    """A grid of equally sized patches over an image: row starts x column starts.

    Convention:
        - Patch ``k`` (row-major: ``k = i * len(xs) + j``) covers rows ``ys[i] : ys[i] + ph``
          and columns ``xs[j] : xs[j] + pw``; ``boxes`` lists them as (y0, x0, y1, x1) with
          exclusive ends, in that order.
        - Starts are sorted and lie in ``[0, max(size - patch, 0)]``. When the image is
          smaller than the patch along an axis there is one patch at 0 that runs past the
          image: extraction pads it with zeros at the bottom/right, merging drops the part
          outside the image (``padded_size`` is the size the patches see).
        - Both factories cover every pixel. ``from_min_overlap`` reproduces FCtL/GLNet's
          ``get_patch_info`` exactly (starts rounded half to even, like ``np.round``);
          ``from_stride`` reproduces mmsegmentation's ``slide_inference`` (MONAI's grid for
          ``overlap`` is ``from_stride`` with ``stride = int(roi * (1 - overlap))``).

    Args:
        image_size: (H, W) of the image.
        patch_size: (ph, pw) of every patch.
        ys: row starts, sorted.
        xs: column starts, sorted.

    Example:
        >>> g = PatchGrid.from_min_overlap(2448, 508)
        >>> len(g), g.ys[:3]
        (36, (0, 388, 776))
    """

    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    def __post_init__(self) -> None:
        op = "PatchGrid"
        object.__setattr__(self, "image_size", as_pair(self.image_size, "image_size", op))
        object.__setattr__(self, "patch_size", as_pair(self.patch_size, "patch_size", op))
        for name, starts, size, p in (("ys", self.ys, self.image_size[0], self.patch_size[0]),
                                      ("xs", self.xs, self.image_size[1], self.patch_size[1])):
            if not isinstance(starts, (list, tuple)) or len(starts) == 0:
                raise ValueError(f"{op}(): `{name}` must be a non-empty sequence of starts; got "
                                 f"{starts!r}.")
            starts = tuple(checks.check_int(s, f"{name}[i]", op, 0) for s in starts)
            hi = max(size - p, 0)
            if any(s > hi for s in starts) or any(b < a for a, b in zip(starts, starts[1:])):
                raise ValueError(
                    f"{op}(): `{name}` must be sorted starts in [0, {hi}] (image {size}, patch "
                    f"{p}); got {starts}. Fix: build the grid with PatchGrid.from_min_overlap "
                    "or PatchGrid.from_stride.")
            # a repeated start is a stride of 0: the same patch twice, run and merged twice
            dup = next((a for a, b in zip(starts, starts[1:]) if a == b), None)
            if dup is not None:
                raise ValueError(
                    f"{op}(): `{name}` repeats the start {dup} (a stride of 0 pixels: the same "
                    f"patch twice); got {starts}. Fix: pass strictly increasing starts, e.g. "
                    f"sorted(set({name})).")
            object.__setattr__(self, name, starts)

    @classmethod
    def from_min_overlap(cls, image_size: IntPair, patch_size: IntPair,
                         min_overlap: float = 50) -> "PatchGrid":
        """The FCtL/GLNet grid: per axis the fewest patches overlapping by >= ``min_overlap``.

        Convention:
            Per axis with size S > patch p: n is the smallest count with n·p >= S and
            p - (S - p)/(n - 1) >= min_overlap; starts are round(i·(S - p)/(n - 1)) for
            i < n - 1 and the last one is S - p (flush with the border). S <= p gives one
            patch at 0 (padded). 2448/508 -> 6 starts at stride 388 (overlap 120);
            5000/508 -> 11 starts at stride 449.2 (rounded per patch). The stride
            (S - p)/(n - 1) is at most p - min_overlap, so ``min_overlap`` above p - 1 would
            make it less than one pixel (repeated starts; 2.999 on 3-pixel patches of a
            10x10 image asked for 49 million patches): it is refused.

        Args:
            image_size: H or (H, W).
            patch_size: p or (ph, pw).
            min_overlap: minimal overlap in pixels, 0 <= min_overlap <= patch - 1
                (checked along the axes that need more than one patch).

        Returns:
            The grid.

        Example:
            >>> PatchGrid.from_min_overlap(5000, 508).grid_shape
            (11, 11)
        """
        op = "PatchGrid.from_min_overlap"
        size = as_pair(image_size, "image_size", op)
        patch = as_pair(patch_size, "patch_size", op)
        if isinstance(min_overlap, bool) or not isinstance(min_overlap, (int, float)):
            raise TypeError(f"{op}(): `min_overlap` must be a number of pixels; got "
                            f"{type(min_overlap).__name__} {min_overlap!r}.")
        # along an axis with more than one patch the overlap must stay below the patch size
        limit = min([p for p, sz in zip(patch, size) if sz > p], default=math.inf)
        if not (0 <= min_overlap < limit) or not math.isfinite(min_overlap):
            raise ValueError(f"{op}(): `min_overlap` must be in [0, {limit}) (below the patch "
                             f"size {patch} along axes the image {size} exceeds); got "
                             f"{min_overlap}. Fix: use a smaller overlap or a larger patch.")
        # The rule's stride is <= patch - min_overlap: below one pixel the starts repeat and
        # the patch count explodes (2.999 on a 3-pixel patch: 7000 starts per axis).
        if min_overlap > limit - 1:
            raise ValueError(f"{op}(): `min_overlap` {min_overlap} leaves a stride of at most "
                             f"{limit} - {min_overlap} = {limit - min_overlap:.3g} pixels "
                             f"between patches of {limit} (below one pixel, the starts repeat); "
                             f"got image {size}, patch {patch}. Fix: use "
                             f"min_overlap <= {limit - 1} (stride 1) or a larger patch.")
        return cls(size, patch, _axis_min_overlap(size[0], patch[0], min_overlap),
                   _axis_min_overlap(size[1], patch[1], min_overlap))

    @classmethod
    def from_stride(cls, image_size: IntPair, patch_size: IntPair,
                    stride: IntPair) -> "PatchGrid":
        """mmsegmentation's "slide" grid: starts every ``stride``, the last shifted back.

        Convention:
            Per axis: n = max(S - p + stride - 1, 0) // stride + 1 patches starting at
            i·stride, except that a patch that would run past the border is moved back to
            end at it (start S - p). S <= p gives one patch at 0 (padded; mmsegmentation
            would run the network on the whole smaller image instead). MONAI's
            ``sliding_window_inference(roi, overlap)`` uses this grid with
            ``stride = max(int(roi * (1 - overlap)), 1)``.

        Args:
            image_size: H or (H, W).
            patch_size: p or (ph, pw).
            stride: s or (sh, sw), 1 <= stride <= patch (a larger stride leaves gaps; a
                stride below one pixel would repeat starts).

        Returns:
            The grid.

        Example:
            >>> len(PatchGrid.from_stride(2448, 508, 381))
            49
        """
        op = "PatchGrid.from_stride"
        size = as_pair(image_size, "image_size", op)
        patch = as_pair(patch_size, "patch_size", op)
        st = as_pair(stride, "stride", op, minimum=None)
        if st[0] < 1 or st[1] < 1:
            raise ValueError(f"{op}(): `stride` {st} has a step below one pixel (every patch "
                             "would start at the same place, or move backwards). Fix: use "
                             "1 <= stride <= patch_size (1 = a patch at every pixel).")
        if st[0] > patch[0] or st[1] > patch[1]:
            raise ValueError(f"{op}(): `stride` {st} is larger than `patch_size` {patch}, which "
                             "would leave pixels uncovered. Fix: use stride <= patch_size.")
        return cls(size, patch, _axis_stride(size[0], patch[0], st[0]),
                   _axis_stride(size[1], patch[1], st[1]))

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(number of patch rows, number of patch columns)."""
        return len(self.ys), len(self.xs)

    @property
    def padded_size(self) -> tuple[int, int]:
        """(max(H, ph), max(W, pw)): the extent the patches cover."""
        return (max(self.image_size[0], self.patch_size[0]),
                max(self.image_size[1], self.patch_size[1]))

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def boxes(self) -> Tensor:
        """(N, 4) int64 tensor of (y0, x0, y1, x1), row-major, ends exclusive."""
        ph, pw = self.patch_size
        rows = [(y, x, y + ph, x + pw) for y in self.ys for x in self.xs]
        return torch.tensor(rows, dtype=torch.int64).reshape(-1, 4)


def check_grid(grid: object, op: str) -> PatchGrid:
    """``grid`` itself if it is a :class:`PatchGrid`, else a TypeError naming ``op`` and
    how to build one (for functions of your own that take a grid, as the zoo's do).

    Example:
        >>> check_grid(PatchGrid.from_stride(64, 32, 16), "my_op").image_size
        (64, 64)
    """
    if not isinstance(grid, PatchGrid):
        raise TypeError(f"{op}(): `grid` must be a uhrops PatchGrid; got {type(grid).__name__}. "
                        "Fix: build one with PatchGrid.from_min_overlap(image.shape[-2:], "
                        "patch_size) or PatchGrid.from_stride(...).")
    return grid


def check_image_grid(image: Tensor, grid: PatchGrid, op: str, name: str = "image") -> None:
    """A ValueError unless ``name``'s last two sides are the grid's image size."""
    hw = (image.shape[-2], image.shape[-1])
    if hw != grid.image_size:
        raise ValueError(f"{op}(): `{name}` is {hw[0]}x{hw[1]} but the grid was built for "
                         f"{grid.image_size[0]}x{grid.image_size[1]}. Fix: build the grid "
                         f"from {name}.shape[-2:].")
