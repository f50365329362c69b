"""The CPU convolution path of pyr_down / pyr_up / pyr_up_add (uhrops._pyramid_cpu) against the
reference slice path of uhrops.pyramid, in float64 (same padded operand and taps, sums in
another order: equal to ~1e-15), on odd, even and one-pixel sides where the padding maps
switch between F.pad shortcuts and gathers."""

from __future__ import annotations

import pytest
import torch

import uhrops.pyramid as P

SHAPES = [(1, 3, 32, 48), (2, 2, 31, 17), (1, 1, 1, 1), (1, 1, 2, 3), (3, 5, 9), (1, 1, 1, 7),
          (1, 1, 3, 3), (1, 2, 4, 5), (1, 1, 2, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_path_equals_slice_path(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    H, W = x.shape[-2:]
    ref = P._down_driver(x, P._down_map(H), 2, P._down_map(W), 2, (H + 1) // 2, (W + 1) // 2)
    got = P._torch_down(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-13)
    for Ho in (2 * H, 2 * H - 1):
        for Wo in (2 * W, 2 * W - 1):
            if Ho < 1 or Wo < 1:
                continue
            ref_up = P._up_driver(x, P._up_map(H), 1, P._up_map(W), 1, Ho, Wo)
            torch.testing.assert_close(P._torch_up(x, Ho, Wo), ref_up, rtol=0, atol=1e-13)
            base = torch.randn(*x.shape[:-2], Ho, Wo, dtype=torch.float64)
            ref_add = P._up_driver(x, P._up_map(H), 1, P._up_map(W), 1, Ho, Wo, base, -1.0)
            torch.testing.assert_close(P._torch_up(x, Ho, Wo, base, -1.0), ref_add, rtol=0,
                                       atol=1e-13)


def test_channels_last_and_strided_inputs_take_the_same_values():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 20, 26, dtype=torch.float64)
    ref = P._torch_down(x)
    torch.testing.assert_close(P._torch_down(x.contiguous(memory_format=torch.channels_last)),
                               ref, rtol=0, atol=0)
    wide = torch.randn(2, 3, 20, 52, dtype=torch.float64)[..., ::2]
    torch.testing.assert_close(P._torch_down(wide), P._torch_down(wide.contiguous()), rtol=0,
                               atol=0)


@pytest.mark.parametrize("shape", [(2, 3, 67, 130), (1, 1, 130, 67)])
def test_whole_row_passes_equal_the_slice_path_and_come_out_contiguous(shape):
    """The row passes with the transposed column pass: the slice path's values (same taps, same
    order of operations) on sides larger than any block, contiguous outputs whatever the
    layout of the input or of the base."""
    torch.manual_seed(2)
    x = torch.randn(*shape, dtype=torch.float64)
    H, W = x.shape[-2:]
    ref = P._down_driver(x, P._down_map(H), 2, P._down_map(W), 2, (H + 1) // 2, (W + 1) // 2)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        got = P._torch_down(inp)
        assert got.is_contiguous()
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-13)
    base = torch.randn(*x.shape[:-2], 2 * H - 1, 2 * W, dtype=torch.float64)
    want = P._up_driver(x, P._up_map(H), 1, P._up_map(W), 1, 2 * H - 1, 2 * W, base, -1.0)
    for b in (base, base.contiguous(memory_format=torch.channels_last)):
        got = P._torch_up(x, 2 * H - 1, 2 * W, b, -1.0)
        assert got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
