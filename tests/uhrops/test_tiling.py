"""Patch grids, extraction, contexts, merging and streaming inference against loops and oracles.

Oracles: a hand re-implementation of GLNet's ``get_patch_info`` loop and of mmsegmentation's
slide rule, MONAI's ``dense_patch_slices`` and ``compute_importance_map``, Python loops over
the patches for extraction and merging, PIL's ``Image.resize(BILINEAR)`` of the padded crop
(what FCtL does) for the contexts, and cv2's INTER_LINEAR for the non-antialiased resize.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import triton_ready
from uhrops._backend import BackendUnavailableError, use_backend
from uhrops.tiling import ops as T
from uhrops.tiling import (
    ExtractContexts,
    MergePatches,
    PatchGrid,
    extract_contexts,
    extract_patches,
    gaussian_weight,
    merge_patches,
    sliding_window,
)

HALF_TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


# --------------------------------------------------------------------------------------------
# Oracles (independent of the code under test)
# --------------------------------------------------------------------------------------------


def glnet_starts(size: int, p: int, min_overlap: float = 50) -> list[int]:
    """GLNet get_patch_info + global2patch along one axis, written as the original loops."""
    if size <= p:
        return [0]
    n = 1
    while size > n * p:
        n += 1
    while p - 1.0 * (size - p) / (n - 1) < min_overlap:
        n += 1
    step = (size - p) * 1.0 / (n - 1)
    return [int(np.round(i * step)) if i < n - 1 else size - p for i in range(n)]


def mmseg_starts(size: int, p: int, stride: int) -> list[int]:
    """mmsegmentation EncoderDecoder.slide_inference along one axis."""
    if size <= p:
        return [0]
    grids = max(size - p + stride - 1, 0) // stride + 1
    out = []
    for i in range(grids):
        y1 = i * stride
        y2 = min(y1 + p, size)
        out.append(max(y2 - p, 0))
    return out


def loop_extract(image: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
    ph, pw = grid.patch_size
    H, W = grid.image_size
    padded = F.pad(image, (0, max(pw - W, 0), 0, max(ph - H, 0)))
    out = []
    for b in range(image.shape[0]):
        for y in grid.ys:
            for x in grid.xs:
                out.append(padded[b, :, y:y + ph, x:x + pw])
    return torch.stack(out)


def loop_merge(patches: torch.Tensor, grid: PatchGrid, reduction: str,
               weight: torch.Tensor | None) -> torch.Tensor:
    """Naive float64 accumulation with a full-size count map (mmseg/MONAI style)."""
    n = len(grid)
    ph, pw = grid.patch_size
    H, W = grid.image_size
    Hp, Wp = max(H, ph), max(W, pw)
    B = patches.shape[0] // n
    w = torch.ones(ph, pw, dtype=torch.float64) if weight is None else weight.double().cpu()
    out = torch.zeros(B, patches.shape[1], Hp, Wp, dtype=torch.float64)
    cnt = torch.zeros(Hp, Wp, dtype=torch.float64)
    p = patches.detach().double().cpu()
    for b in range(B):
        k = 0
        for y in grid.ys:
            for x in grid.xs:
                out[b, :, y:y + ph, x:x + pw] += p[b * n + k] * w
                if b == 0:
                    cnt[y:y + ph, x:x + pw] += w
                k += 1
    if reduction == "mean":
        out = out / cnt
    return out[:, :, :H, :W]


def pil_context(img: np.ndarray, y0: int, x0: int, L: tuple[int, int], out_hw: tuple[int, int],
                fill: int = 0) -> np.ndarray:
    """FCtL's global2bigpatch for one window: pad with `fill`, crop, PIL bilinear resize."""
    from PIL import Image

    H, W = img.shape[:2]
    Lh, Lw = L
    pad = np.full((Lh, Lw, img.shape[2]), fill, np.uint8)
    a, b, c, d = max(y0, 0), min(y0 + Lh, H), max(x0, 0), min(x0 + Lw, W)
    if a < b and c < d:
        pad[a - y0:b - y0, c - x0:d - x0] = img[a:b, c:d]
    if pad.shape[2] == 1:  # PIL wants (H, W) for one channel
        res = Image.fromarray(pad[..., 0]).resize((out_hw[1], out_hw[0]), Image.BILINEAR)
        return np.asarray(res).astype(np.float64)[..., None]
    res = Image.fromarray(pad).resize((out_hw[1], out_hw[0]), Image.BILINEAR)
    return np.asarray(res).astype(np.float64)


def _grid_strategy(draw, max_size=70):
    H = draw(st.integers(1, max_size))
    W = draw(st.integers(1, max_size))
    ph = draw(st.integers(1, 24))
    pw = draw(st.integers(1, 24))
    if draw(st.booleans()):
        return PatchGrid.from_stride((H, W), (ph, pw), (draw(st.integers(1, ph)),
                                                         draw(st.integers(1, pw))))
    return PatchGrid.from_min_overlap((H, W), (ph, pw), draw(st.integers(0, min(ph, pw) - 1)))


def _tri(device: torch.device) -> None:
    reason = triton_ready(device)
    if reason is not None:
        pytest.skip(reason)


# --------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------


class TestPatchGrid:
    def test_fctl_deepglobe_2448(self):
        g = PatchGrid.from_min_overlap(2448, 508)
        assert g.grid_shape == (6, 6) and len(g) == 36
        assert g.ys == (0, 388, 776, 1164, 1552, 1940) == g.xs  # published: stride 388
        assert g.ys[1] - g.ys[0] == 388 and 508 - 388 == 120
        boxes = g.boxes
        assert boxes.shape == (36, 4) and boxes.dtype == torch.int64
        assert boxes[0].tolist() == [0, 0, 508, 508]
        assert boxes[1].tolist() == [0, 388, 508, 896]  # row-major: x moves first
        assert boxes[6].tolist() == [388, 0, 896, 508]
        assert boxes[-1].tolist() == [1940, 1940, 2448, 2448]

    def test_fctl_inria_5000(self):
        g = PatchGrid.from_min_overlap(5000, 508)
        assert g.grid_shape == (11, 11) and len(g) == 121
        assert list(g.ys) == glnet_starts(5000, 508)
        assert g.ys[-1] == 4492
        gaps = np.diff(g.ys)
        assert gaps.min() >= 449 and gaps.max() <= 450  # stride 449.2 rounded per patch
        assert min(508 - gaps) >= 50

    def test_monai_grid_2448(self):
        dense_patch_slices = pytest.importorskip("monai.data.utils").dense_patch_slices

        g = PatchGrid.from_stride(2448, 508, int(508 * (1 - 0.25)))
        assert len(g) == 49
        slices = dense_patch_slices((2448, 2448), (508, 508), (381, 381))
        assert [(s[0].start, s[1].start) for s in slices] == [(y, x) for y in g.ys for x in g.xs]

    @settings(max_examples=25, deadline=None)
    @given(size=st.integers(1, 3000), p=st.integers(1, 600), data=st.data())
    def test_min_overlap_rule_matches_glnet_loop(self, size, p, data):
        m = data.draw(st.integers(0, p - 1))
        if size > p and (size - p) / (p - m) > 400:  # keep the oracle loop short
            m = 0
        g = PatchGrid.from_min_overlap((size, 1), (p, 1), m)
        assert list(g.ys) == glnet_starts(size, p, m)

    @settings(max_examples=25, deadline=None)
    @given(size=st.integers(1, 600), p=st.integers(1, 80), data=st.data())
    def test_stride_rule_matches_mmseg_and_monai(self, size, p, data):
        dense_patch_slices = pytest.importorskip("monai.data.utils").dense_patch_slices

        s = data.draw(st.integers(1, p))
        g = PatchGrid.from_stride((size, 5), (p, 5), (s, 5))
        assert list(g.ys) == mmseg_starts(size, p, s)
        if size >= p:
            slices = dense_patch_slices((size, 5), (p, 5), (s, 5))
            assert sorted({sl[0].start for sl in slices}) == list(g.ys)

    @settings(max_examples=25, deadline=None)
    @given(data=st.data())
    def test_coverage_bounds_overlap(self, data):
        g = _grid_strategy(data.draw, 400)
        H, W = g.image_size
        ph, pw = g.patch_size
        cover = np.zeros((max(H, ph), max(W, pw)), int)
        for y0, x0, y1, x1 in g.boxes.tolist():
            assert 0 <= y0 and 0 <= x0 and y1 <= max(H, ph) and x1 <= max(W, pw)
            assert (y1 - y0, x1 - x0) == (ph, pw)
            cover[y0:y1, x0:x1] += 1
        assert cover[:H, :W].min() >= 1  # full coverage
        for starts, size, p in ((g.ys, H, ph), (g.xs, W, pw)):
            assert starts[0] == 0 and starts[-1] == max(size - p, 0)
            assert list(starts) == sorted(starts)

    @settings(max_examples=20, deadline=None)
    @given(size=st.integers(2, 500), p=st.integers(2, 60), data=st.data())
    def test_min_overlap_is_respected(self, size, p, data):
        m = data.draw(st.integers(0, p - 1))
        g = PatchGrid.from_min_overlap(size, p, m)
        for a, b in zip(g.ys, g.ys[1:]):
            assert p - (b - a) >= m - 0.5 - 1e-9  # rounding of the starts moves by <= 0.5

    def test_image_smaller_than_patch(self):
        g = PatchGrid.from_min_overlap((10, 13), 16)
        assert len(g) == 1 and g.boxes.tolist() == [[0, 0, 16, 16]]
        assert g.padded_size == (16, 16)
        g2 = PatchGrid.from_stride((10, 40), 16, 8)
        assert g2.ys == (0,) and g2.xs == (0, 8, 16, 24)

    def test_rectangular(self):
        g = PatchGrid.from_stride((30, 50), (10, 20), (5, 15))
        assert g.ys == tuple(mmseg_starts(30, 10, 5)) and g.xs == tuple(mmseg_starts(50, 20, 15))

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="min_overlap"):
            PatchGrid.from_min_overlap(100, 20, 20)
        with pytest.raises(ValueError, match="min_overlap"):
            PatchGrid.from_min_overlap(100, 20, -1)
        with pytest.raises(TypeError, match="min_overlap"):
            PatchGrid.from_min_overlap(100, 20, "50")
        with pytest.raises(ValueError, match="stride"):
            PatchGrid.from_stride(100, 20, 21)
        with pytest.raises(ValueError, match="patch_size"):
            PatchGrid.from_stride(100, 0, 1)
        with pytest.raises(TypeError, match="image_size"):
            PatchGrid.from_stride(100.0, 10, 5)
        with pytest.raises(ValueError, match="pair"):
            PatchGrid.from_stride((1, 2, 3), 10, 5)
        with pytest.raises(ValueError, match="sorted starts"):
            PatchGrid((50, 50), (10, 10), (0, 30, 20), (0,))
        with pytest.raises(ValueError, match="sorted starts"):
            PatchGrid((50, 50), (10, 10), (0, 41), (0,))


# --------------------------------------------------------------------------------------------
# extract / merge against loops
# --------------------------------------------------------------------------------------------


class TestExtractPatches:
    @settings(max_examples=20, deadline=None)
    @given(data=st.data())
    def test_matches_loop(self, data):
        g = _grid_strategy(data.draw)
        B, C = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
        x = torch.randn(B, C, *g.image_size)
        out = extract_patches(x, g)
        assert out.shape == (B * len(g), C, *g.patch_size) and out.is_contiguous()
        torch.testing.assert_close(out, loop_extract(x, g), rtol=0, atol=0)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32,
                                       torch.float64])
    def test_dtypes_and_layouts(self, device, dtype):
        g = PatchGrid.from_stride((23, 30), 8, 5)
        x = torch.randn(2, 3, 23, 30, device=device).to(dtype)
        ref = loop_extract(x, g)
        torch.testing.assert_close(extract_patches(x, g), ref, rtol=0, atol=0)
        cl = x.to(memory_format=torch.channels_last)
        torch.testing.assert_close(extract_patches(cl, g), ref, rtol=0, atol=0)
        big = torch.randn(2, 3, 23, 60, device=device).to(dtype)
        nc = big[:, :, :, ::2]  # non-contiguous view
        torch.testing.assert_close(extract_patches(nc, g), loop_extract(nc, g), rtol=0, atol=0)

    def test_output_is_fresh(self):
        g = PatchGrid.from_stride(16, 16, 16)  # one patch covering the whole image
        x = torch.randn(1, 2, 16, 16)
        out = extract_patches(x, g)
        out.add_(1)
        assert not torch.equal(out, x)

    def test_bad_inputs(self):
        g = PatchGrid.from_stride(16, 8, 4)
        with pytest.raises(ValueError, match="4-D"):
            extract_patches(torch.randn(3, 16, 16), g)
        with pytest.raises(TypeError, match="floating"):
            extract_patches(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), g)
        with pytest.raises(ValueError, match="grid was built for"):
            extract_patches(torch.randn(1, 3, 16, 17), g)
        with pytest.raises(TypeError, match="PatchGrid"):
            extract_patches(torch.randn(1, 3, 16, 16), (8, 4))
        with use_backend("triton"):  # the kernels compute in float32: float64 has none
            with pytest.raises(BackendUnavailableError, match="no kernel"):
                extract_patches(torch.randn(1, 3, 16, 16, dtype=torch.float64), g)


class TestMergePatches:
    @settings(max_examples=20, deadline=None)
    @given(data=st.data())
    def test_matches_loop(self, data):
        g = _grid_strategy(data.draw)
        B, C = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
        reduction = data.draw(st.sampled_from(["mean", "sum"]))
        wmode = data.draw(st.sampled_from([None, "gaussian", "tensor"]))
        weight = wmode
        wref = None
        if wmode == "gaussian":
            wref = gaussian_weight(g.patch_size, dtype=torch.float64)
        elif wmode == "tensor":
            weight = torch.rand(*g.patch_size, dtype=torch.float64) + 0.1
            wref = weight
        p = torch.randn(B * len(g), C, *g.patch_size, dtype=torch.float64)
        out = merge_patches(p, g, reduction, weight)
        assert out.shape == (B, C, *g.image_size)
        torch.testing.assert_close(out, loop_merge(p, g, reduction, wref), rtol=1e-10,
                                   atol=1e-10)

    @settings(max_examples=25, deadline=None)
    @given(data=st.data())
    def test_float32_mean_matches_loop(self, data):
        # float32 constant-weight means take the per-cell scalar path (merge and streaming)
        g = _grid_strategy(data.draw)
        B = data.draw(st.integers(1, 2))
        p = torch.randn(B * len(g), 2, *g.patch_size, dtype=torch.float64)
        ref = loop_merge(p, g, "mean", None)
        out = merge_patches(p.float(), g, "mean")
        torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
        x = torch.randn(B, 2, *g.image_size, dtype=torch.float64)
        bs = data.draw(st.integers(1, 5))
        sw = sliding_window(lambda t: t * 2, x.float(), g, bs)
        torch.testing.assert_close(sw.double(), loop_merge(2 * loop_extract(x, g), g, "mean",
                                                           None), rtol=1e-6, atol=1e-6)

    def test_gaussian_matches_monai(self):
        compute_importance_map = pytest.importorskip("monai.data.utils").compute_importance_map

        for p in [(508, 508), (16, 16), (15, 9), (1, 4)]:
            ref = compute_importance_map(p, mode="gaussian", sigma_scale=0.125)
            torch.testing.assert_close(gaussian_weight(p), ref.float(), rtol=1e-5, atol=1e-7)

    @pytest.mark.parametrize("weight", [None, "constant", "gaussian", "tensor"])
    @pytest.mark.parametrize("grid", [PatchGrid.from_min_overlap((45, 61), 16, 5),
                                      PatchGrid.from_stride((45, 61), (16, 20), (7, 11)),
                                      PatchGrid.from_stride((9, 11), 16, 4)])
    def test_identity_round_trip(self, device, weight, grid):
        if weight == "tensor":
            weight = torch.rand(*grid.patch_size, device=device) + 0.05
        x = torch.randn(2, 3, *grid.image_size, device=device)
        keep = x.clone()
        y = merge_patches(extract_patches(x, grid), grid, "mean", weight)
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)
        assert torch.equal(x, keep)  # the input is never written to

    def test_fctl_sum_of_logits(self):
        g = PatchGrid.from_min_overlap(60, 20, 5)
        x = torch.rand(1, 2, 60, 60, dtype=torch.float64)
        s = merge_patches(extract_patches(x, g), g, "sum")
        counts = loop_merge(torch.ones(len(g), 1, 20, 20), g, "sum", None)
        torch.testing.assert_close(s, x * counts)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half(self, device, dtype):
        g = PatchGrid.from_stride((30, 33), 12, 7)
        p = torch.randn(2 * len(g), 3, 12, 12, device=device).to(dtype)
        for reduction in ("mean", "sum"):
            out = merge_patches(p, g, reduction, "gaussian")
            assert out.dtype == dtype
            ref = loop_merge(p, g, reduction, gaussian_weight(12, dtype=torch.float64))
            torch.testing.assert_close(out.double().cpu(), ref, rtol=HALF_TOL[dtype] * 2,
                                       atol=HALF_TOL[dtype] * 4)

    def test_non_contiguous_patches(self, device):
        g = PatchGrid.from_stride((20, 26), 8, 5)
        p = torch.randn(len(g), 6, 8, 8, device=device)
        nc = p[:, ::2]
        torch.testing.assert_close(merge_patches(nc, g), merge_patches(nc.contiguous(), g))
        cl = p.to(memory_format=torch.channels_last)
        torch.testing.assert_close(merge_patches(cl, g, "sum"), merge_patches(p, g, "sum"))

    def test_uncovered_pixels_are_zero(self):
        g = PatchGrid((20, 20), (8, 8), (0, 12), (0,))  # custom grid with gaps
        out = merge_patches(torch.ones(2, 1, 8, 8), g, "mean")
        assert out[0, 0, :8, :8].eq(1).all() and out[0, 0, 8:12].eq(0).all()
        assert out[0, 0, :, 8:].eq(0).all()

    def test_bad_inputs(self):
        g = PatchGrid.from_stride(16, 8, 4)
        p = torch.randn(len(g), 3, 8, 8)
        with pytest.raises(ValueError, match="not a positive multiple"):
            merge_patches(p[:-1], g)
        with pytest.raises(ValueError, match="patch size"):
            merge_patches(torch.randn(len(g), 3, 8, 7), g)
        with pytest.raises(ValueError, match="4-D"):
            merge_patches(p[0], g)
        with pytest.raises(ValueError, match="reduction"):
            merge_patches(p, g, "max")
        with pytest.raises(ValueError, match="weight"):
            merge_patches(p, g, weight="triangle")
        with pytest.raises(ValueError, match="patch shape"):
            merge_patches(p, g, weight=torch.ones(8, 9))
        with pytest.raises(TypeError, match="floating"):
            merge_patches(p.long(), g)


class TestGradients:
    @pytest.mark.parametrize("weight", [None, "gaussian", "tensor"])
    @pytest.mark.parametrize("reduction", ["mean", "sum"])
    def test_gradcheck_merge(self, weight, reduction):
        g = PatchGrid.from_stride((7, 9), (4, 5), (3, 2))
        if weight == "tensor":
            weight = torch.rand(4, 5, dtype=torch.float64) + 0.1
        p = torch.randn(len(g), 1, 4, 5, dtype=torch.float64, requires_grad=True)
        f = lambda t: merge_patches(t, g, reduction, weight)  # noqa: E731
        assert torch.autograd.gradcheck(f, (p,))
        if reduction == "mean":
            assert torch.autograd.gradgradcheck(f, (p,), fast_mode=True)

    def test_gradcheck_extract(self):
        g = PatchGrid.from_min_overlap((7, 9), 5, 2)
        x = torch.randn(2, 1, 7, 9, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: extract_patches(t, g), (x,))
        assert torch.autograd.gradgradcheck(lambda t: extract_patches(t, g), (x,),
                                            fast_mode=True)

    def test_merge_backward_is_weighted_crop(self):
        # independent check of the adjoint: loop autograd through the naive formula
        g = PatchGrid.from_stride((12, 15), 6, 4)
        w = gaussian_weight(6, dtype=torch.float64)
        p = torch.randn(len(g), 1, 6, 6, dtype=torch.float64, requires_grad=True)
        q = p.detach().clone().requires_grad_()
        gout = torch.randn(1, 1, 12, 15, dtype=torch.float64)
        (merge_patches(p, g, "mean", "gaussian") * gout).sum().backward()
        acc = torch.zeros(1, 1, 12, 15, dtype=torch.float64)
        cnt = torch.zeros(12, 15, dtype=torch.float64)
        for k, (y0, x0, y1, x1) in enumerate(g.boxes.tolist()):
            acc = acc + F.pad(q[k:k + 1] * w, (x0, 15 - x1, y0, 12 - y1))
            cnt[y0:y1, x0:x1] += w
        ((acc / cnt) * gout).sum().backward()
        torch.testing.assert_close(p.grad, q.grad)

    def test_gradcheck_contexts(self):
        g = PatchGrid.from_stride((7, 8), 4, 3)
        x = torch.randn(1, 1, 7, 8, dtype=torch.float64, requires_grad=True)
        for scale, size, aa in [(2.0, None, True), (1.5, 3, True), (3, 5, False), (0.5, 4, True)]:
            f = lambda t: extract_contexts(t, g, scale, size, 0.3, aa)  # noqa: E731
            assert torch.autograd.gradcheck(f, (x,))
        assert torch.autograd.gradgradcheck(lambda t: extract_contexts(t, g, 2.5, 3), (x,),
                                            fast_mode=True)


# --------------------------------------------------------------------------------------------
# Contexts against PIL
# --------------------------------------------------------------------------------------------


class TestContexts:
    @pytest.mark.parametrize("scale,size", [(2, None), (3, None), (1.5, None), (2.5, None),
                                            (1.3, None), (3, 20), (0.5, None), (1.7, 45)])
    def test_matches_pil(self, scale, size):
        rng = np.random.default_rng(int(scale * 10))
        H, W = 70, 90
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
        g = PatchGrid.from_stride((H, W), (32, 30), (19, 20))  # patches touch every border
        out = extract_contexts(x, g, scale, size)
        Lh, Lw = int(math.floor(scale * 32 + 0.5)), int(math.floor(scale * 30 + 0.5))
        oh, ow = (32, 30) if size is None else (size, size)
        assert out.shape == (len(g), 3, oh, ow)
        diffs = []
        for k, (y0, x0, _, _) in enumerate(g.boxes.tolist()):
            ref = pil_context(img, y0 - (Lh - 32) // 2, x0 - (Lw - 30) // 2, (Lh, Lw), (oh, ow))
            diffs.append(np.abs(out[k].permute(1, 2, 0).numpy() * 255 - ref))
        d = np.stack(diffs)
        assert d.max() <= 2.0 and d.mean() < 0.5

    def test_pad_value_matches_pil_fill(self):
        rng = np.random.default_rng(1)
        img = rng.integers(0, 256, (40, 40, 1), dtype=np.uint8)
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        g = PatchGrid.from_min_overlap(40, 16, 4)
        out = extract_contexts(x, g, 3, pad_value=128 / 255)
        for k, (y0, x0, _, _) in enumerate(g.boxes.tolist()):
            ref = pil_context(img, y0 - 16, x0 - 16, (48, 48), (16, 16), fill=128)
            assert np.abs(out[k, 0].numpy() * 255 - ref[..., 0]).max() <= 2.0

    def test_no_antialias_matches_cv2(self):
        cv2 = pytest.importorskip("cv2")
        x = torch.rand(1, 1, 30, 30, dtype=torch.float64)
        g = PatchGrid.from_stride(30, 10, 10)
        out = extract_contexts(x, g, 2.0, antialias=False)
        img = x[0, 0].numpy()
        for k, (y0, x0, _, _) in enumerate(g.boxes.tolist()):
            pad = np.zeros((20, 20))
            a, b, c, d = max(y0 - 5, 0), min(y0 + 15, 30), max(x0 - 5, 0), min(x0 + 15, 30)
            pad[a - y0 + 5:b - y0 + 5, c - x0 + 5:d - x0 + 5] = img[a:b, c:d]
            ref = cv2.resize(pad, (10, 10), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_allclose(out[k, 0].numpy(), ref, atol=1e-9)

    def test_scale_one_is_the_patch(self, device):
        g = PatchGrid.from_stride((20, 25), 8, 6)
        x = torch.randn(2, 3, 20, 25, device=device)
        torch.testing.assert_close(extract_contexts(x, g, 1.0), extract_patches(x, g))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
    def test_dtypes_layouts(self, device, dtype):
        g = PatchGrid.from_stride((20, 25), 8, 6)
        x = torch.rand(2, 3, 20, 25, device=device, dtype=torch.float64)
        ref = extract_contexts(x, g, 2.0)
        out = extract_contexts(x.to(dtype), g, 2.0)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=HALF_TOL.get(dtype, 1e-12) * 2)
        cl = x.to(memory_format=torch.channels_last)
        torch.testing.assert_close(extract_contexts(cl, g, 2.0), ref)

    def test_module_twin(self):
        g = PatchGrid.from_stride(24, 8, 8)
        x = torch.rand(1, 2, 24, 24)
        m = ExtractContexts(2.0, size=4)
        torch.testing.assert_close(m(x, g), extract_contexts(x, g, 2.0, 4))
        assert "scale=2.0" in repr(m)

    def test_bad_inputs(self):
        g = PatchGrid.from_stride(16, 8, 4)
        x = torch.rand(1, 1, 16, 16)
        with pytest.raises(ValueError, match="scale"):
            extract_contexts(x, g, 0)
        with pytest.raises(TypeError, match="scale"):
            extract_contexts(x, g, "3")
        with pytest.raises(ValueError, match="size"):
            extract_contexts(x, g, 2, size=0)
        with pytest.raises(ValueError, match="grid was built"):
            extract_contexts(torch.rand(1, 1, 16, 15), g, 2)
        with pytest.raises(ValueError, match="4-D"):
            extract_contexts(x[0], g, 2)
        with pytest.raises(TypeError, match="antialias"):
            extract_contexts(x, g, 2, antialias=1)
        with use_backend("triton"):
            if triton_ready("cpu") is None:
                with pytest.raises(BackendUnavailableError, match="no kernel"):
                    extract_contexts(x, g, 2)


# --------------------------------------------------------------------------------------------
# Streaming inference
# --------------------------------------------------------------------------------------------


class TestSlidingWindow:
    @pytest.mark.parametrize("batch_size", [1, 3, 7, 100])
    @pytest.mark.parametrize("weight", [None, "gaussian"])
    @pytest.mark.parametrize("reduction", ["mean", "sum"])
    def test_equals_extract_fn_merge(self, batch_size, weight, reduction):
        g = PatchGrid.from_stride((26, 31), (10, 12), (6, 5))
        x = torch.randn(2, 3, 26, 31, dtype=torch.float64)

        def fn(t):
            return torch.cat([t.sum(1, keepdim=True), t[:, :1] ** 2], 1)

        out = sliding_window(fn, x, g, batch_size, reduction=reduction, weight=weight)
        wref = None if weight is None else gaussian_weight((10, 12), dtype=torch.float64)
        ref = loop_merge(fn(loop_extract(x, g)), g, reduction, wref)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)

    @pytest.mark.parametrize("batch_size", [1, 4])
    @pytest.mark.parametrize("weight", [None, "gaussian"])
    def test_never_writes_into_input(self, batch_size, weight):
        # MONAI 1.6.1 multiplies an identity predictor's output (a view of the input at
        # sw_batch_size=1) in place by the Gaussian map; here the input must stay untouched.
        g = PatchGrid.from_stride(64, 16, 8)
        x = torch.rand(1, 2, 64, 64)
        keep = x.clone()
        out = sliding_window(lambda t: t, x, g, batch_size, weight=weight)
        assert torch.equal(x, keep)
        torch.testing.assert_close(out, x)
        out2 = sliding_window(lambda t: t.mul_(3), x, g, batch_size, weight=weight)  # in place
        assert torch.equal(x, keep)
        torch.testing.assert_close(out2, 3 * x)

    def test_outputs_are_only_read(self):
        g = PatchGrid.from_stride(32, 16, 8)
        x = torch.rand(1, 1, 32, 32)
        kept, copies = [], []

        def fn(t):
            y = t * 2
            kept.append(y)
            copies.append(y.clone())
            return y

        sliding_window(fn, x, g, 2, weight="gaussian")
        assert all(torch.equal(a, b) for a, b in zip(kept, copies))
        assert all(not torch.equal(a, kept[0]) or i == 0 for i, a in enumerate(kept))

    def test_batch_buffer_kept_by_fn_is_not_reused(self):
        g = PatchGrid.from_stride(32, 8, 8)
        x = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32)
        seen, views = [], []

        def fn(t):
            seen.append(t)  # keep the batch itself
            views.append(t[:1])  # and a view of it
            return t

        sliding_window(fn, x, g, 4)
        ref = extract_patches(x, g)
        torch.testing.assert_close(torch.cat(seen), ref)
        torch.testing.assert_close(torch.cat(views), ref[::4])

    def test_contexts_scale_and_callable(self):
        g = PatchGrid.from_stride((30, 36), 12, 8)
        x = torch.rand(2, 3, 30, 36)
        ctx3 = extract_contexts(x, g, 3)
        glob = F.interpolate(x, size=(12, 12), mode="bilinear", antialias=True)
        seen3, seeng, seenb = [], [], []

        def global_ctx(img, boxes):
            seenb.append(boxes.clone())
            g_ = F.interpolate(img, size=(12, 12), mode="bilinear", antialias=True)
            return g_.expand(boxes.shape[0], -1, -1, -1)

        def fn(p, c3, cg):
            seen3.append(c3)
            seeng.append(cg)
            return p[:, :1]

        out = sliding_window(fn, x, g, 5, contexts=(3, global_ctx))
        torch.testing.assert_close(out, x[:, :1])
        torch.testing.assert_close(torch.cat(seen3), ctx3, atol=1e-6, rtol=0)
        n = len(g)
        torch.testing.assert_close(torch.cat(seeng),
                                   glob.repeat_interleave(n, 0), atol=1e-6, rtol=0)
        assert torch.equal(torch.cat(seenb), torch.cat([g.boxes, g.boxes]))

    def test_gradients_flow(self):
        g = PatchGrid.from_stride((20, 22), 8, 5)
        conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
        x = torch.rand(1, 2, 20, 22, dtype=torch.float64)
        out = sliding_window(conv, x, g, 4, weight="gaussian")
        out.square().sum().backward()
        grads = [p.grad.clone() for p in conv.parameters()]
        conv.zero_grad()
        merge_patches(conv(extract_patches(x, g)), g, "mean", "gaussian").square().sum().backward()
        for a, p in zip(grads, conv.parameters()):
            torch.testing.assert_close(a, p.grad)
        xr = x.clone().requires_grad_()
        sliding_window(lambda t, c: t * 2 + 0 * c, xr, g, 3, contexts=(2,)).sum().backward()
        torch.testing.assert_close(xr.grad, torch.full_like(x, 2.0))

    def test_half_and_out_device_and_progress(self):
        g = PatchGrid.from_stride((20, 22), 8, 5)
        x = torch.rand(1, 2, 20, 22)
        out = sliding_window(lambda t: t.half(), x, g, 4, out_device="cpu", progress=True)
        assert out.dtype == torch.float16
        torch.testing.assert_close(out.float(), x, atol=1e-3, rtol=0)

    def test_module_twin(self):
        g = PatchGrid.from_stride(20, 8, 6)
        p = torch.rand(len(g), 2, 8, 8)
        m = MergePatches("sum", torch.ones(8, 8) * 2)
        torch.testing.assert_close(m(p, g), 2 * merge_patches(p, g, "sum"))
        assert "weight" in dict(m.named_buffers())

    def test_bad_inputs(self):
        g = PatchGrid.from_stride(16, 8, 4)
        x = torch.rand(1, 1, 16, 16)
        with pytest.raises(ValueError, match="must return"):
            sliding_window(lambda t: t[:, :, :4], x, g, 2)
        with pytest.raises(ValueError, match="must return"):
            sliding_window(lambda t: t[:1], x, g, 2)
        with pytest.raises(TypeError, match="callable"):
            sliding_window(None, x, g, 2)
        with pytest.raises(ValueError, match="batch_size"):
            sliding_window(lambda t: t, x, g, 0)
        with pytest.raises(ValueError, match="grid was built"):
            sliding_window(lambda t: t, torch.rand(1, 1, 16, 18), g, 2)
        with pytest.raises(ValueError, match="scale"):
            sliding_window(lambda t, c: t, x, g, 2, contexts=(-1,))
        with pytest.raises(TypeError, match="contexts"):
            sliding_window(lambda t, c: t, x, g, 2, contexts=3)


# --------------------------------------------------------------------------------------------
# Triton (interpreter on the CPU) against PyTorch
# --------------------------------------------------------------------------------------------


@pytest.mark.triton
class TestTriton:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("weight", [None, "gaussian"])
    def test_extract_merge_match_torch(self, device, dtype, weight):
        _tri(device)
        g = PatchGrid.from_stride((37, 45), (20, 18), (13, 11))  # tails, uneven last patch
        x = torch.randn(2, 3, 37, 45, device=device).to(dtype)
        p = torch.randn(2 * len(g), 3, 20, 18, device=device).to(dtype)
        res = {}
        for be in ("torch", "triton"):
            with use_backend(be):
                res[be] = (extract_patches(x, g), merge_patches(p, g, "mean", weight),
                           merge_patches(p, g, "sum", weight))
        tol = HALF_TOL[dtype]
        for a, b in zip(res["torch"], res["triton"]):
            assert a.dtype == b.dtype == dtype
            torch.testing.assert_close(b.float(), a.float(), rtol=tol, atol=tol)

    def test_layouts_small_image_and_gradients(self, device):
        _tri(device)
        g = PatchGrid.from_stride((9, 40), 16, 12)  # image shorter than a patch: padded
        x = torch.randn(1, 6, 9, 80, device=device)[:, ::2, :, ::2]  # non-contiguous
        p = torch.randn(len(g), 3, 16, 16, device=device).to(memory_format=torch.channels_last)
        out = {}
        for be in ("torch", "triton"):
            with use_backend(be):
                xr = x.clone().requires_grad_()
                pr = p.clone().requires_grad_()
                e = extract_patches(xr, g)
                m = merge_patches(pr, g, "mean", "gaussian")
                (e.square().sum() + (m * m.detach()).sum()).backward()
                out[be] = (e, m, xr.grad, pr.grad)
        for a, b in zip(out["torch"], out["triton"]):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)

    def test_sliding_window_triton(self, device):
        _tri(device)
        g = PatchGrid.from_min_overlap((24, 30), 12, 3)
        x = torch.rand(1, 2, 24, 30, device=device, requires_grad=True)
        with use_backend("triton"):
            out = sliding_window(lambda t: t * 2, x, g, 5, weight="gaussian")
        torch.testing.assert_close(out, 2 * x.detach(), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# torch.library and torch.compile
# --------------------------------------------------------------------------------------------


class TestOps:
    def test_opcheck(self):
        g = PatchGrid.from_stride((13, 15), 6, 4)
        ys, xs = list(g.ys), list(g.xs)
        x = torch.randn(2, 2, 13, 15, dtype=torch.float64, requires_grad=True)
        p = torch.randn(2 * len(g), 2, 6, 6, dtype=torch.float64, requires_grad=True)
        w = gaussian_weight(6, dtype=torch.float64)
        torch.library.opcheck(T.gather_op, (x, None, ys, xs, 6, 6, False, "torch"))
        torch.library.opcheck(T.gather_op, (x, w, ys, xs, 6, 6, True, "torch"))
        torch.library.opcheck(T.scatter_op, (p, None, ys, xs, 13, 15, True, "torch"))
        torch.library.opcheck(T.scatter_op, (p, w, ys, xs, 13, 15, False, "torch"))
        cy, cx = [y - 3 for y in ys], [q - 3 for q in xs]
        torch.library.opcheck(T.contexts_op, (x, cy, cx, 12, 12, 6, 6, 0.5, True, "torch"))
        gr = torch.randn(2 * len(g), 2, 6, 6, dtype=torch.float64, requires_grad=True)
        torch.library.opcheck(T.contexts_backward_op, (gr, cy, cx, 12, 12, 13, 15, True, "torch"))

    @pytest.mark.compile
    def test_compile(self):
        g = PatchGrid.from_stride((16, 18), 8, 5)

        def f(t):
            m = merge_patches(extract_patches(t, g) * 2, g, "mean", "gaussian")
            return m + extract_contexts(t, g, 2.0).mean()

        x = torch.rand(1, 2, 16, 18)
        out = torch.compile(f, fullgraph=True)(x)
        torch.testing.assert_close(out, f(x))
