"""Streaming sliding_window: a reader in, finished row bands out.

Oracles: the in-memory sliding_window (bitwise: the streaming path does the same float
operations in the same order, only into a one-patch-row buffer, so equality is exact, not
within an ulp), and a naive float64 loop over the patches for the values themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uhrops.tiling import PatchGrid, gaussian_weight, sliding_window


class Reader:
    """A user-style reader over a (C, H, W) numpy array that logs the windows it serves."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.image_size = array.shape[1:]
        self.reads: list[tuple[int, int, int, int]] = []

    def read(self, y0, x0, y1, x1):
        self.reads.append((y0, x0, y1, x1))
        return torch.from_numpy(np.ascontiguousarray(self.array[:, y0:y1, x0:x1]))


class Rows:
    """A sink that checks the contract (top to bottom, each row once) and keeps copies."""

    def __init__(self, H: int) -> None:
        self.H, self.next, self.parts, self.heights = H, 0, [], []

    def __call__(self, y0: int, band: torch.Tensor) -> None:
        assert y0 == self.next, (y0, self.next)
        self.next = y0 + band.shape[-2]
        self.heights.append(band.shape[-2])
        self.parts.append(band.clone())

    def result(self) -> torch.Tensor:
        assert self.next == self.H
        return torch.cat(self.parts, -2)


def _conv(cin: int = 3, cout: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(cin, cout, 3, padding=1).eval()


CASES = [  # (H, W, grid, batch, weight, reduction, contexts)
    (97, 131, ("stride", 32, 20), 3, None, "mean", ()),
    (200, 77, ("stride", 40, 33), 5, "gaussian", "mean", ()),
    (50, 300, ("stride", 64, 30), 4, None, "mean", ()),  # H < patch: one padded patch row
    (131, 97, ("stride", 31, 7), 7, "gaussian", "sum", ()),  # overlap > stride
    (157, 149, ("overlap", 48, 10), 6, None, "sum", ()),
    (120, 90, ("stride", 32, 24), 3, None, "mean", (3,)),
    (113, 90, ("stride", 32, 24), 4, "gaussian", "mean", (2.5, 1.5)),
]


def _grid(H, W, spec):
    kind, p, v = spec
    if kind == "stride":
        return PatchGrid.from_stride((H, W), p, v)
    return PatchGrid.from_min_overlap((H, W), p, v)


@pytest.mark.parametrize("H,W,spec,bs,weight,reduction,ctx", CASES)
def test_stream_equals_in_memory_bitwise(H, W, spec, bs, weight, reduction, ctx):
    conv = _conv()
    fn = (lambda p, *c: conv(p) + sum(conv(ci) for ci in c)) if ctx else conv
    arr = np.random.default_rng(H * W).random((3, H, W), dtype=np.float32)
    g = _grid(H, W, spec)
    with torch.no_grad():
        ref = sliding_window(fn, torch.from_numpy(arr)[None], g, bs, contexts=ctx,
                             weight=weight, reduction=reduction)
    reader, rows = Reader(arr), Rows(H)
    assert sliding_window(fn, reader, g, bs, contexts=ctx, weight=weight, reduction=reduction,
                          sink=rows) is None
    assert torch.equal(rows.result(), ref)
    # one patch row at a time: no band taller than a patch (plus uncovered rows: none here)
    assert max(rows.heights) <= g.patch_size[0]
    # without a sink the rows are gathered into a tensor
    assert torch.equal(sliding_window(fn, Reader(arr), g, bs, contexts=ctx, weight=weight,
                                      reduction=reduction), ref)


def test_stream_values_against_naive_loop():
    H, W, p, s = 70, 95, 24, 17
    arr = np.random.default_rng(1).random((2, H, W), dtype=np.float32)
    g = PatchGrid.from_stride((H, W), p, s)
    wmap = gaussian_weight(p, dtype=torch.float64).numpy()
    rows = Rows(H)
    sliding_window(lambda t: t * 3 - 1, Reader(arr), g, 5, weight="gaussian", sink=rows)
    num = np.zeros((2, H, W))
    den = np.zeros((H, W))
    for y in g.ys:
        for x in g.xs:
            num[:, y:y + p, x:x + p] += wmap * (3 * arr[:, y:y + p, x:x + p].astype(np.float64) - 1)
            den[y:y + p, x:x + p] += wmap
    np.testing.assert_allclose(rows.result()[0].numpy(), num / den, rtol=1e-5, atol=1e-6)


def test_stream_grid_with_gaps_and_tensor_input():
    # a hand-made grid leaving rows 20:30 and columns 40:45 uncovered: zero there, as in memory
    H, W = 80, 90
    g = PatchGrid((H, W), (20, 40), (0, 30, 60), (0, 45, 50))
    x = torch.rand(1, 2, H, W)
    with torch.no_grad():
        ref = sliding_window(lambda t: t + 1, x, g, 2)
    rows = Rows(H)
    sliding_window(lambda t: t + 1, x, g, 2, sink=rows)
    out = rows.result()
    assert torch.equal(out, ref)
    assert out[:, :, 20:30].abs().sum() == 0 and out[:, :, :, 40:45].abs().sum() == 0


def test_stream_reads_windows_only_and_half_output():
    H, W = 150, 64
    arr = np.random.default_rng(2).random((3, H, W), dtype=np.float32)
    g = PatchGrid.from_stride((H, W), 32, 24)
    reader, rows = Reader(arr), Rows(H)
    sliding_window(lambda t: t.half(), reader, g, 4, sink=rows)
    assert all(y1 - y0 <= 32 and x1 - x0 <= 32 for y0, x0, y1, x1 in reader.reads)
    assert len(reader.reads) == len(g)
    with torch.no_grad():
        ref = sliding_window(lambda t: t.half(), torch.from_numpy(arr)[None], g, 4)
    out = rows.result()
    assert out.dtype == torch.float16 and torch.equal(out, ref)


def test_stream_bad_input():
    g = PatchGrid.from_stride((40, 40), 16, 8)
    with pytest.raises(TypeError, match="reader"):
        sliding_window(lambda t: t, object(), g, 2)
    with pytest.raises(ValueError, match="grid was built for"):
        sliding_window(lambda t: t, Reader(np.zeros((1, 30, 40), np.float32)), g, 2)
    with pytest.raises(ValueError, match="B = 1"):
        sliding_window(lambda t: t, torch.rand(2, 1, 40, 40), g, 2, sink=lambda y, b: None)
    with pytest.raises(TypeError, match="sink"):
        sliding_window(lambda t: t, torch.rand(1, 1, 40, 40), g, 2, sink=3)

    class Short(Reader):
        def read(self, y0, x0, y1, x1):
            return super().read(y0, x0, y1, x1)[:, :-1]

    with pytest.raises(ValueError, match="must return"):
        sliding_window(lambda t: t, Short(np.zeros((1, 40, 40), np.float32)), g, 2)


@pytest.mark.parametrize("H,W,p,s,bs", [(157, 61, 32, 24, 3), (131, 50, 31, 7, 4),
                                        (90, 40, 30, 30, 2)])
def test_stream_rows_resume_bitwise(H, W, p, s, bs):
    """Bands computed separately (a resumed run, or bands shared between processes) equal
    the rows of one full call, bit for bit, and read at most the batches holding one patch
    row above each band."""
    conv = _conv(2, 3)
    arr = np.random.default_rng(H).random((2, H, W), dtype=np.float32)
    g = PatchGrid.from_stride((H, W), p, s)
    full = Rows(H)
    sliding_window(conv, Reader(arr), g, bs, weight="gaussian", sink=full)
    ref = full.result()
    cuts = [0, 17, 18, 50, H - 3, H]
    for r0, r1 in zip(cuts, cuts[1:]):
        part = Rows(r1)
        part.next = r0
        sliding_window(conv, Reader(arr), g, bs, weight="gaussian", sink=part, rows=(r0, r1))
        assert torch.equal(torch.cat(part.parts, -2), ref[:, :, r0:r1])
    with pytest.raises(ValueError, match="rows"):
        sliding_window(conv, Reader(arr), g, bs, rows=(5, 5))


def test_in_memory_buffers_reused_only_when_released():
    """sliding_window keeps its output and batch buffers for the next call of the same shape
    (steady timings: no fresh pages), but never one the caller still holds."""
    from uhrops.tiling.buffers import release_buffers

    release_buffers()
    g = PatchGrid.from_stride((1100, 1000), 512, 400)
    x1, x2 = torch.rand(1, 3, 1100, 1000), torch.rand(1, 3, 1100, 1000)
    with torch.no_grad():
        out1 = sliding_window(lambda t: t * 2, x1, g, 2)
        keep = out1.clone()
        view = out1[0, 1]
        ptr = out1.data_ptr()
        del out1
        out2 = sliding_window(lambda t: t * 2, x2, g, 2)  # out1's storage is held by `view`
        assert out2.data_ptr() != ptr and torch.equal(view, keep[0, 1])
        del view
        ptr2 = out2.data_ptr()
        del out2
        out3 = sliding_window(lambda t: t * 3, x1, g, 2)  # now a buffer is free: reused
        assert out3.data_ptr() in (ptr, ptr2)
        torch.testing.assert_close(out3, 3 * x1)
        out4 = sliding_window(lambda t: t * 3, x2, g, 2)
        assert out4.data_ptr() != out3.data_ptr()
        torch.testing.assert_close(out3, 3 * x1)
    release_buffers()
