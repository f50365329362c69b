"""Overlap tiling: patch grids, context windows, merging and streaming inference.

Every ultra-high-resolution pipeline crops patches out of an image, crops larger context
windows around them, runs a network on them and merges the results back. This package does
the four steps for any grid of equally sized patches whose starts form a product of one
list of row starts and one list of column starts (every grid built here does):

- :class:`PatchGrid` holds the grid (:mod:`~uhrops.tiling.grid`). ``from_min_overlap`` is
  the FCtL/GLNet rule (6x6 patches at stride 388 on a 2448 image with 508 patches, 11x11 on
  5000) and ``from_stride`` mmsegmentation's "slide" rule (the last patch shifted back).
- :func:`extract_patches` gathers the patches, :func:`merge_patches` scatters them back with
  a sum or a weighted mean (:mod:`~uhrops.tiling.ops`). The two are adjoint linear maps: the
  backward of one is the other, so nothing but the grid is saved for autograd.
- :func:`extract_contexts` crops a window ``scale`` times the patch, centred on each patch,
  padded outside the image, and resizes it with (antialiased) bilinear filtering, as FCtL
  does with PIL.
- :func:`sliding_window` runs a callable over batches of patches (and contexts) and
  accumulates the results (:mod:`~uhrops.tiling.window`), so that peak memory is the output
  plus one batch; with a :class:`WindowReader` and/or a :class:`BandSink` it streams images
  of any size in one patch row of memory (:mod:`~uhrops.tiling.stream`). Both modes run
  the one batch loop of :mod:`~uhrops.tiling.loop`, from a source of patches into a target.
  ``argmax=True`` keeps only the labels (:mod:`~uhrops.tiling.argmax`), and
  ``max_accumulator_bytes`` bounds that merge whatever the class count and the width.

The weights and normalisers every merge shares are in :mod:`~uhrops.tiling.normalisers`,
the reusable CPU buffers in :mod:`~uhrops.tiling.buffers`.
"""

from uhrops.tiling.grid import PatchGrid, check_grid
from uhrops.tiling.normalisers import gaussian_weight, hann_weight
from uhrops.tiling.ops import (ExtractContexts, MergePatches, extract_contexts, extract_patches,
                               merge_patches)
from uhrops.tiling.stream import BandSink, TensorReader, WindowReader
from uhrops.tiling.window import sliding_window

__all__ = [
    "PatchGrid",
    "extract_patches",
    "extract_contexts",
    "merge_patches",
    "sliding_window",
    "gaussian_weight",
    "hann_weight",
    "ExtractContexts",
    "MergePatches",
    "check_grid",
    "WindowReader",
    "BandSink",
    "TensorReader",
]
