"""sliding_window(..., argmax=True): labels-only merging, and the "hann" blending window.

Oracles: the full merge's argmax (bitwise: the labels-only path merges the same values in the
same order, one patch row at a time), and a float64 numpy loop over the patches (Σ w·p / Σ w,
then np.argmax) where the top two classes are further apart than float32 rounding can move
them. Ties are checked with integer-valued outputs, where every path is exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import uhrops
from uhrops.tiling import buffers as tiling_buffers
from uhrops.tiling import normalisers as tiling_normalisers
from uhrops.tiling import ops as tiling_ops
from uhrops.tiling import stream as tiling_stream
from uhrops.tiling import window as tiling_window
from uhrops.tiling import PatchGrid, hann_weight, merge_patches, sliding_window


def _conv(cin: int = 3, cout: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(cin, cout, 3, padding=1).eval()


def _np_weight(weight, ph: int, pw: int) -> np.ndarray:
    if weight is None:
        return np.ones((ph, pw))
    if weight == "hann":  # written from the definition, not from hann_weight
        a = [np.array([math.sin(math.pi * (i + 0.5) / n) ** 2 for i in range(n)])
             for n in (ph, pw)]
        return np.outer(a[0], a[1])
    return uhrops.gaussian_weight((ph, pw), dtype=torch.float64).numpy()  # MONAI's map


def _np_merge(fn, image: torch.Tensor, grid: PatchGrid, weight, reduction: str) -> np.ndarray:
    """Float64 loop: every patch through fn alone, Σ w·p (and / Σ w)."""
    B, _, H, W = image.shape
    ph, pw = grid.patch_size
    w = _np_weight(weight, ph, pw)
    acc = norm = None
    for b in range(B):
        for y0, x0, _, _ in grid.boxes.tolist():
            patch = torch.zeros((1, image.shape[1], ph, pw))
            hh, ww = min(ph, H - y0), min(pw, W - x0)
            patch[..., :hh, :ww] = image[b:b + 1, :, y0:y0 + hh, x0:x0 + ww]
            with torch.no_grad():
                p = fn(patch)[0].double().numpy()
            if acc is None:
                acc = np.zeros((B, p.shape[0], H, W))
                norm = np.zeros((B, 1, H, W))
            acc[b, :, y0:y0 + hh, x0:x0 + ww] += w[:hh, :ww] * p[:, :hh, :ww]
            norm[b, :, y0:y0 + hh, x0:x0 + ww] += w[:hh, :ww]
    return acc / norm if reduction == "mean" else acc


CASES = [  # (H, W, stride-grid (patch, stride), batch_size, weight, reduction)
    (97, 131, (32, 20), 3, None, "mean"),
    (97, 131, (32, 20), 4, "gaussian", "mean"),
    (97, 131, (32, 16), 5, "hann", "mean"),
    (50, 300, (64, 30), 4, "hann", "mean"),  # H < patch: one zero-padded patch row
    (131, 97, (31, 12), 7, "gaussian", "sum"),  # overlap > stride
    (120, 90, (40, 40), 2, "hann", "sum"),  # no overlap
]


@pytest.mark.parametrize("H,W,gs,bs,weight,reduction", CASES)
def test_labels_equal_full_merge_argmax_and_numpy_loop(H, W, gs, bs, weight, reduction):
    torch.manual_seed(1)
    x = torch.rand(2, 3, H, W)
    grid = PatchGrid.from_stride((H, W), gs[0], gs[1])
    fn = _conv(3, 6)
    with torch.no_grad():
        # per image: the labels-only call never lets a batch span two images, and a conv's
        # output can change in the last bit with the batch's composition
        full = torch.cat([sliding_window(fn, x[b:b + 1], grid, bs, reduction=reduction,
                                         weight=weight) for b in range(2)])
        labels, score = sliding_window(fn, x, grid, bs, reduction=reduction, weight=weight,
                                       argmax=True, score=True)
        only = sliding_window(fn, x, grid, bs, reduction=reduction, weight=weight, argmax=True)
    assert labels.shape == (2, H, W) and labels.dtype == torch.uint8
    assert torch.equal(only, labels)
    assert torch.equal(labels.long(), full.argmax(1))  # same values, same tie rule: bitwise
    assert torch.equal(score, full.amax(1)) and score.dtype == full.dtype
    ref = _np_merge(fn, x, grid, weight, reduction)
    top2 = np.sort(ref, axis=1)[:, -2:]
    # float32 merge of ≤ a dozen terms vs float64: a gap of 1e-5 of the pixel's largest
    # |value| is far above its rounding (~1e-6 relative); nearer ties the oracle decides nothing
    decided = (top2[:, 1] - top2[:, 0]) > 1e-5 * np.abs(ref).max(1)
    assert decided.mean() > 0.95
    np.testing.assert_array_equal(labels.numpy()[decided], ref.argmax(1)[decided])
    np.testing.assert_allclose(score.numpy(), ref.max(1), rtol=1e-5, atol=1e-6)


def test_ties_go_to_the_first_maximal_class_as_numpy():
    """Integer-valued outputs, constant weights and "sum": every sum is exact in float32, so
    ties are real; classes 1 and 3 are equal everywhere and 2 equals them on a stripe."""
    H, W = 70, 90
    grid = PatchGrid.from_stride((H, W), 32, 19)
    x = torch.randint(0, 4, (1, 1, H, W)).float()

    def fn(p):
        c = torch.floor(p * 3)
        return torch.cat([c - 1, c, torch.where(p > 1, c, c - 2), c, -c], 1)

    with torch.no_grad():
        labels = sliding_window(fn, x, grid, 4, reduction="sum", argmax=True)
    ref = _np_merge(fn, x, grid, None, "sum")
    np.testing.assert_array_equal(labels.numpy(), ref.argmax(1))  # numpy: first maximum
    assert (labels == 1).any() and not (labels == 3).any()


def test_streamed_reader_sink_and_rows_match_in_memory_labels():
    torch.manual_seed(2)
    H, W = 150, 110
    x = torch.rand(1, 3, H, W)
    grid = PatchGrid.from_stride((H, W), 40, 28)
    fn = _conv(3, 4)

    class Reader:
        image_size = (H, W)

        def read(self, y0, x0, y1, x1):
            return x[0, :, y0:y1, x0:x1].clone()

    got: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        ref_l, ref_s = sliding_window(fn, x, grid, 5, weight="hann", argmax=True, score=True)
        out = sliding_window(fn, Reader(), grid, 5, weight="hann", argmax=True, score=True,
                             sink=lambda y0, ls: got.append((y0, ls[0].clone(), ls[1].clone())))
        part = sliding_window(fn, Reader(), grid, 5, weight="hann", argmax=True, rows=(50, 97))
    assert out is None
    assert [g[0] for g in got] == sorted(g[0] for g in got) and got[0][0] == 0
    assert torch.equal(torch.cat([g[1] for g in got], -2), ref_l)
    assert torch.equal(torch.cat([g[2] for g in got], -2), ref_s)
    assert torch.equal(part, ref_l[:, 50:97])  # only the rows asked for, as without argmax


def test_label_dtype_int16_above_256_classes():
    x = torch.rand(1, 1, 40, 40)
    grid = PatchGrid.from_stride((40, 40), 16, 12)
    k = torch.arange(300, dtype=torch.float32)[None, :, None, None]
    with torch.no_grad():
        labels = sliding_window(lambda p: -(k - 299 * p) ** 2, x, grid, 3, argmax=True)
        full = sliding_window(lambda p: -(k - 299 * p) ** 2, x, grid, 3)
    assert labels.dtype == torch.int16 and labels.max() > 255
    assert torch.equal(labels.long(), full.argmax(1))


def _spy_allocations(monkeypatch) -> list[tuple[int, torch.dtype]]:
    """(elements, dtype) of every buffer the uhrops.tiling modules allocate through the buffer
    helpers (patched under the name each module imported them by), appended as they come."""
    sizes: list[tuple[int, torch.dtype]] = []
    for module in (tiling_buffers, tiling_normalisers, tiling_ops, tiling_stream, tiling_window):
        for name in ("empty_buffer", "zeros_buffer", "pooled_empty"):
            real = getattr(module, name, None)
            if real is None:
                continue

            def spy(shape, dtype, *a, _real=real, **k):
                sizes.append((math.prod(shape), dtype))
                return _real(shape, dtype, *a, **k)

            monkeypatch.setattr(module, name, spy)
    return sizes


def test_never_allocates_a_full_size_class_accumulator(monkeypatch):
    """The biggest float buffer is one patch row (C x ph x W), not C x H x W."""
    H, W, C = 200, 64, 7
    grid = PatchGrid.from_stride((H, W), 32, 24)
    sizes = _spy_allocations(monkeypatch)
    with torch.no_grad():
        sliding_window(_conv(3, C), torch.rand(1, 3, H, W), grid, 4, weight="gaussian",
                       argmax=True)
    assert sizes and max(n for n, _ in sizes) <= C * 32 * W
    sizes.clear()
    with torch.no_grad():  # the spy does see the full merge's accumulator
        sliding_window(_conv(3, C), torch.rand(1, 3, H, W), grid, 4, weight="gaussian")
    assert max(n for n, _ in sizes) == C * H * W


def test_bad_argmax_arguments_name_the_fix():
    x = torch.rand(1, 3, 32, 32)
    grid = PatchGrid.from_stride((32, 32), 16, 8)
    with pytest.raises(ValueError, match="`score=True` needs `argmax=True`"):
        sliding_window(lambda p: p, x, grid, 2, score=True)
    with pytest.raises(ValueError, match="`argmax` and `score` must be bools"):
        sliding_window(lambda p: p, x, grid, 2, argmax="yes")
    with pytest.raises(ValueError, match="at least one channel"):
        with torch.no_grad():
            sliding_window(lambda p: p[:, :0], x, grid, 2, argmax=True)


def test_hann_weight_definition_and_partition_of_unity():
    p = 12
    w = hann_weight((p, 7), dtype=torch.float64)
    oracle = _np_weight("hann", p, 7)
    np.testing.assert_allclose(w.numpy(), oracle, rtol=0, atol=1e-15)
    assert bool((w > 0).all())
    a = hann_weight((p, 1), dtype=torch.float64)[:, 0]
    np.testing.assert_allclose((a[:p // 2] + a[p // 2:]).numpy(), np.ones(p // 2), atol=1e-15)


def test_hann_border_pixels_keep_their_single_patch_value():
    """At the image border only one patch covers a pixel: with "hann" (no zero weight) the
    mean there is that patch's value; a textbook Hann (numpy.hanning, zero at both ends)
    passed as a tensor gives 0 at the outermost pixels instead."""
    torch.manual_seed(3)
    H = W = 64
    grid = PatchGrid.from_stride((H, W), 32, 16)
    x = torch.rand(1, 2, H, W) + 1
    patches = uhrops.extract_patches(x, grid)
    merged = merge_patches(patches, grid, weight="hann")
    np.testing.assert_allclose(merged.numpy(), x.numpy(), rtol=1e-6)  # identity patches
    textbook = torch.from_numpy(np.outer(np.hanning(32), np.hanning(32))).float()
    zeroed = merge_patches(patches, grid, weight=textbook)
    assert float(zeroed[..., 0, :].abs().max()) == 0.0


def test_weight_error_lists_hann():
    with pytest.raises(ValueError, match='"hann"'):
        merge_patches(torch.rand(4, 1, 8, 8), PatchGrid.from_stride((16, 16), 8, 8),
                      weight="hanning")


# --- max_accumulator_bytes: column bands (and row strips with a sink) -------------------------

def _pointwise(cout: int = 6):
    """A per-pixel network: each output element is a fixed expression of that pixel's inputs,
    so a patch's output cannot depend on its batch mates (a conv's can, by rounding)."""
    g = torch.Generator().manual_seed(4)
    w = torch.randn(3, cout, generator=g)

    def fn(p):
        mix = p[:, 0:1] * w[0, :, None, None] + p[:, 1:2] * w[1, :, None, None] \
            + p[:, 2:3] * w[2, :, None, None]
        return torch.sin(3 * mix)
    return fn


def _bound(C: int, ph: int, columns: int, itemsize: int = 4) -> int:
    return C * ph * columns * itemsize


BANDED = [  # (H, W, (patch, stride), batch, weight, reduction, span columns beyond the least)
    (70, 301, (32, 20), 3, None, "mean", 20),
    (70, 301, (32, 20), 4, "gaussian", "mean", 0),  # the narrowest bands the grid allows
    (97, 250, (31, 12), 5, "hann", "sum", 7),  # overlap > stride
    (20, 200, (32, 24), 2, "hann", "mean", 30),  # H < patch: one zero-padded patch row
    (64, 150, (40, 40), 2, None, "sum", 0),  # no overlap
]


@pytest.mark.parametrize("H,W,gs,bs,weight,reduction,extra", BANDED)
def test_bounded_accumulator_gives_the_unbounded_labels(H, W, gs, bs, weight, reduction, extra):
    from uhrops.tiling.argmax import column_bands, smallest_band_width

    torch.manual_seed(5)
    x = torch.rand(2, 3, H, W)
    grid = PatchGrid.from_stride((H, W), gs[0], gs[1])
    cols = smallest_band_width(grid.xs, gs[0], W) + extra
    assert len(column_bands(grid.xs, gs[0], W, cols)) > 2  # the test cuts the image
    fn, C = _pointwise(6), 6
    with torch.no_grad():
        ref_l, ref_s = sliding_window(fn, x, grid, bs, reduction=reduction, weight=weight,
                                      argmax=True, score=True)
        full = torch.cat([sliding_window(fn, x[b:b + 1], grid, bs, reduction=reduction,
                                         weight=weight) for b in range(2)])
        got_l, got_s = sliding_window(fn, x, grid, bs, reduction=reduction, weight=weight,
                                      argmax=True, score=True,
                                      max_accumulator_bytes=_bound(C, min(gs[0], H), cols))
    assert got_l.dtype == torch.uint8 and got_l.shape == (2, H, W)
    assert torch.equal(got_l, ref_l) and torch.equal(got_s, ref_s)  # same sums, same bits
    assert torch.equal(got_l.long(), full.argmax(1))


def test_bounded_merge_reads_contexts_across_band_edges():
    """A context window reaches past the band's patches: it must still see the real image."""
    torch.manual_seed(6)
    H, W = 60, 240
    x = torch.rand(1, 3, H, W)
    grid = PatchGrid.from_stride((H, W), 24, 16)
    pw = _pointwise(5)

    def fn(p, ctx):
        return pw(p) + pw(ctx)

    with torch.no_grad():
        ref = sliding_window(fn, x, grid, 4, contexts=[3.0], argmax=True)
        got = sliding_window(fn, x, grid, 4, contexts=[3.0], argmax=True,
                             max_accumulator_bytes=_bound(5, 24, 56))
        full = sliding_window(fn, x, grid, 4, contexts=[3.0])
    assert torch.equal(got, ref) and torch.equal(got.long(), full.argmax(1))


def test_bounded_merge_with_a_conv_matches_the_float64_loop():
    torch.manual_seed(7)
    H, W = 64, 200
    x = torch.rand(1, 3, H, W)
    grid = PatchGrid.from_stride((H, W), 32, 20)
    fn = _conv(3, 6)
    with torch.no_grad():
        labels = sliding_window(fn, x, grid, 3, weight="hann", argmax=True,
                                max_accumulator_bytes=_bound(6, 32, 72))
    ref = _np_merge(fn, x, grid, "hann", "mean")
    top2 = np.sort(ref, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > 1e-5 * np.abs(ref).max(1)  # as above
    assert decided.mean() > 0.95
    np.testing.assert_array_equal(labels.numpy()[decided], ref.argmax(1)[decided])


def test_bounded_merge_with_a_sink_hands_over_strips_within_the_bound():
    torch.manual_seed(8)
    H, W, C = 150, 120, 4
    x = torch.rand(1, 3, H, W)
    grid = PatchGrid.from_stride((H, W), 40, 28)
    fn = _pointwise(C)
    bound = _bound(C, 40, 68)  # also bounds each strip's labels + scores: 5 bytes a pixel
    got: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        ref_l, ref_s = sliding_window(fn, x, grid, 5, weight="hann", argmax=True, score=True)
        out = sliding_window(fn, x, grid, 5, weight="hann", argmax=True, score=True,
                             sink=lambda y0, ls: got.append((y0, ls[0].clone(), ls[1].clone())),
                             max_accumulator_bytes=bound)
        part = sliding_window(fn, x, grid, 5, weight="hann", argmax=True, rows=(50, 97),
                              max_accumulator_bytes=bound)
        strips: list[tuple[int, int]] = []
        sliding_window(fn, x, grid, 5, weight="hann", argmax=True, rows=(30, 131),
                       sink=lambda y0, lab: strips.append((y0, lab.shape[-2])),
                       max_accumulator_bytes=bound)
    assert out is None
    starts = [g[0] for g in got]
    assert starts[0] == 0 and starts == sorted(starts) and len(got) > 1
    for (y0, lab, _), nxt in zip(got, starts[1:] + [H]):
        assert lab.shape == (1, nxt - y0, W)  # each row once, top to bottom
        assert lab.numel() * 5 <= bound or nxt - y0 <= 28  # a strip is at least one stride
    assert torch.equal(torch.cat([g[1] for g in got], -2), ref_l)
    assert torch.equal(torch.cat([g[2] for g in got], -2), ref_s)
    assert torch.equal(part, ref_l[:, 50:97])
    assert strips[0][0] == 30 and sum(n for _, n in strips) == 131 - 30


def test_bounded_merge_never_allocates_more_than_the_bound(monkeypatch):
    H, W, C = 64, 400, 7
    grid = PatchGrid.from_stride((H, W), 32, 24)
    bound = _bound(C, 32, 80)
    sizes = _spy_allocations(monkeypatch)
    with torch.no_grad():
        sliding_window(_pointwise(C), torch.rand(1, 3, H, W), grid, 4, argmax=True,
                       max_accumulator_bytes=bound)
    biggest = max(n * torch.empty(0, dtype=d).element_size() for n, d in sizes)
    assert 0 < biggest <= bound
    sizes.clear()
    with torch.no_grad():  # unbounded: the whole width
        sliding_window(_pointwise(C), torch.rand(1, 3, H, W), grid, 4, argmax=True)
    assert max(n for n, _ in sizes) == C * 32 * W


def test_bounded_merge_leaves_uncovered_columns_zero_as_the_full_merge():
    H, W = 40, 130
    grid = PatchGrid((H, W), (20, 30), (0, 20), (0, 25, 70, 100))  # columns 55:70 uncovered
    x = torch.rand(1, 3, H, W) + 0.5
    fn = _pointwise(3)
    with torch.no_grad():
        full = sliding_window(fn, x, grid, 3)
        labels, score = sliding_window(fn, x, grid, 3, argmax=True, score=True,
                                       max_accumulator_bytes=_bound(3, 20, 55))  # 3 bands
    assert float(full[..., 55:70].abs().max()) == 0.0
    assert torch.equal(labels.long(), full.argmax(1)) and torch.equal(score, full.amax(1))


@pytest.mark.parametrize("seed", range(20))
def test_column_bands_partition_within_the_span_and_are_fewest(seed):
    """Against a brute force over every choice of cuts at patch starts."""
    from uhrops.tiling.argmax import column_bands, smallest_band_width

    rng = np.random.default_rng(seed)
    W = int(rng.integers(30, 160))
    pw = int(rng.integers(5, 40))
    grid = PatchGrid.from_stride((8, W), (8, pw), (8, int(rng.integers(1, pw + 1))))
    xs = list(grid.xs)

    def span(a, b):
        meet = [x for x in xs if x < b and x + pw > a]
        return min(meet[-1] + pw, W) - meet[0] if meet else 0

    cuts = sorted({x for x in xs if 0 < x < W} | {0, W})
    least = max(span(a, b) for a, b in zip(cuts, cuts[1:]))
    assert smallest_band_width(xs, pw, W) == least
    for width in (least - 1, least, least + int(rng.integers(0, 3 * pw)), 10 * W):
        bands = column_bands(xs, pw, W, width)
        if width < least:
            assert bands == []
            continue
        assert bands[0][0] == 0 and bands[-1][1] == W
        assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
        assert all(span(a, b) <= width for a, b in bands)
        fewest = {0: 0}  # fewest bands covering [0, cut), cut by cut
        for j, c in enumerate(cuts[1:], 1):
            fewest[c] = min(fewest[a] + 1 for a in cuts[:j] if a in fewest and span(a, c) <= width)
        assert len(bands) == fewest[W]


def test_bad_bound_names_the_least_that_works():
    x = torch.rand(1, 3, 40, 200)
    grid = PatchGrid.from_stride((40, 200), 32, 24)
    with pytest.raises(ValueError, match=r"max_accumulator_bytes >= \d+"):
        with torch.no_grad():
            sliding_window(_pointwise(4), x, grid, 2, argmax=True, max_accumulator_bytes=1000)
    with pytest.raises(ValueError, match="needs `argmax=True`"):
        sliding_window(lambda p: p, x, grid, 2, max_accumulator_bytes=10**6)
    with pytest.raises((TypeError, ValueError), match="max_accumulator_bytes"):
        sliding_window(lambda p: p, x, grid, 2, argmax=True, max_accumulator_bytes=0)


def test_accumulator_bound_is_none_when_the_width_fits_and_never_refused():
    from uhrops.tiling.argmax import accumulator_bound, smallest_accumulator_bytes

    H, W, C = 40, 200, 4
    grid = PatchGrid.from_stride((H, W), 32, 24)
    whole = C * 32 * W * 4  # float32 accumulator of the whole width
    assert accumulator_bound(grid, C, whole) is None
    least = smallest_accumulator_bytes(grid, C)
    assert least < whole
    assert accumulator_bound(grid, C, whole - 1) == whole - 1
    assert accumulator_bound(grid, C, 1) == least
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        ref = sliding_window(_pointwise(C), x, grid, 2, argmax=True)
        got = sliding_window(_pointwise(C), x, grid, 2, argmax=True,
                             max_accumulator_bytes=accumulator_bound(grid, C, 1))
        with pytest.raises(ValueError, match=f"max_accumulator_bytes >= {least}"):
            sliding_window(_pointwise(C), x, grid, 2, argmax=True,
                           max_accumulator_bytes=least - 1)
    assert torch.equal(got, ref)
