"""WaveletSmoothLoss and WSDNetLoss against independent computations.

Oracle for the Wavelet Smooth Loss: PyWavelets on each image separately (not on the
difference), float64 NumPy: the packet tree is built by applying ``pywt.dwt2`` to every
subband of the previous level, the Mallat tree comes from ``pywt.wavedec2``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.wsdnet.losses import (
    WaveletSmoothLoss,
    WSDNetLoss,
    structure_distillation_loss,
    wavelet_smooth_loss,
)

OPTIONS = list(itertools.product(("packet", "mallat"), (True, False), ("orthonormal", "average"),
                                 ("mean", "sum_bands")))


def _packet_levels(img: np.ndarray, levels: int) -> list[list[np.ndarray]]:
    """levels[l-1] = the 4**l subbands of level l, children of one parent consecutive."""
    out, cur = [], [img]
    for _ in range(levels):
        nxt = []
        for band in cur:
            cA, (cH, cV, cD) = pywt.dwt2(band, "haar")
            nxt += [cA, cH, cV, cD]
        out.append(nxt)
        cur = nxt
    return out


def _mallat_levels(img: np.ndarray, levels: int) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """[(LL_l, [H_l, V_l, D_l]) for l = 1..levels] from pywt.wavedec2."""
    out = []
    for level in range(1, levels + 1):
        coeffs = pywt.wavedec2(img, "haar", level=level)
        out.append((coeffs[0], list(coeffs[1])))
    return out


def oracle(pred: np.ndarray, target: np.ndarray, levels: int, lambda_low: float,
           lambda_high: float, tree: str, low_every_level: bool, ll_scale: str,
           reduction: str) -> float:
    """Decision 6 of shared/reference/wsdnet.md, computed subband by subband."""
    B, C = pred.shape[:2]
    # per level: list of (is_low, [diff arrays of that subband over all images])
    per_level: list[list[tuple[bool, list[np.ndarray]]]] = [[] for _ in range(levels)]
    for b in range(B):
        for c in range(C):
            if tree == "packet":
                P, T = _packet_levels(pred[b, c], levels), _packet_levels(target[b, c], levels)
                for lv in range(levels):
                    for k, (p, t) in enumerate(zip(P[lv], T[lv])):
                        if b == 0 and c == 0:
                            per_level[lv].append((k % 4 == 0, []))
                        per_level[lv][k][1].append(p - t)
            else:
                P, T = _mallat_levels(pred[b, c], levels), _mallat_levels(target[b, c], levels)
                for lv in range(levels):
                    bands = [P[lv][0] - T[lv][0]] + [p - t for p, t in zip(P[lv][1], T[lv][1])]
                    for k, d in enumerate(bands):
                        if b == 0 and c == 0:
                            per_level[lv].append((k == 0, []))
                        per_level[lv][k][1].append(d)
    total = 0.0
    for lv in range(levels):
        s = 2.0 ** -(lv + 1) if ll_scale == "average" else 1.0
        lows = [np.stack(d) * s for is_low, d in per_level[lv] if is_low]
        highs = [np.stack(d) * s for is_low, d in per_level[lv] if not is_low]
        use_low = low_every_level or lv == levels - 1
        if reduction == "mean":
            low = np.mean(np.stack(lows) ** 2)
            high = np.mean(np.abs(np.stack(highs)))
        else:
            low = sum(np.mean(x ** 2) for x in lows)
            high = sum(np.mean(np.abs(x)) for x in highs)
        total += (lambda_low * low if use_low else 0.0) + lambda_high * high
    return float(total)


def _pair(B, C, H, W, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, C, H, W, generator=g, dtype=dtype),
            torch.randn(B, C, H, W, generator=g, dtype=dtype))


class TestWaveletSmoothLoss:
    @pytest.mark.parametrize("tree,low_every_level,ll_scale,reduction", OPTIONS)
    @pytest.mark.parametrize("levels", [1, 3])
    def test_matches_pywt(self, tree, low_every_level, ll_scale, reduction, levels):
        pred, target = _pair(2, 3, 16, 24, seed=levels)
        opts = dict(levels=levels, lambda_low=1.3, lambda_high=0.7, tree=tree,
                    low_every_level=low_every_level, ll_scale=ll_scale, reduction=reduction)
        got = WaveletSmoothLoss(**opts)(pred, target)
        ref = oracle(pred.numpy(), target.numpy(), **opts)
        assert got.dtype == torch.float64 and got.dim() == 0
        assert float(got) == pytest.approx(ref, rel=1e-10, abs=1e-12)

    def test_paper_defaults(self):
        loss = WaveletSmoothLoss()
        assert (loss.levels, loss.lambda_low, loss.lambda_high) == (3, 1.0, 0.8)
        assert (loss.tree, loss.low_every_level, loss.ll_scale, loss.reduction) == (
            "packet", True, "orthonormal", "sum_bands")
        pred, target = _pair(1, 3, 32, 16, seed=5)
        ref = oracle(pred.numpy(), target.numpy(), 3, 1.0, 0.8, "packet", True, "orthonormal",
                     "sum_bands")
        assert float(loss(pred, target)) == pytest.approx(ref, rel=1e-10)

    @settings(max_examples=15, deadline=None)
    @given(levels=st.integers(1, 3), hm=st.integers(1, 3), wm=st.integers(1, 3),
           opt=st.sampled_from(OPTIONS), seed=st.integers(0, 2**16))
    def test_random_shapes(self, levels, hm, wm, opt, seed):
        tree, low_every_level, ll_scale, reduction = opt
        m = 2**levels
        pred, target = _pair(1, 2, hm * m, wm * m, seed)
        opts = dict(levels=levels, lambda_low=1.0, lambda_high=0.8, tree=tree,
                    low_every_level=low_every_level, ll_scale=ll_scale, reduction=reduction)
        got = wavelet_smooth_loss(pred, target, **opts)
        assert float(got) == pytest.approx(oracle(pred.numpy(), target.numpy(), **opts),
                                           rel=1e-10, abs=1e-12)

    @pytest.mark.parametrize("tree,low_every_level,ll_scale,reduction", OPTIONS)
    def test_zero_for_identical_inputs(self, tree, low_every_level, ll_scale, reduction):
        x = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
        loss = wavelet_smooth_loss(x, x.detach().clone(), 3, 1.0, 0.8, tree, low_every_level,
                                   ll_scale, reduction)
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert float(x.grad.abs().max()) == 0.0

    @pytest.mark.parametrize("tree", ["packet", "mallat"])
    @pytest.mark.parametrize("sign", [1.0, -1.0])
    def test_gradient_sign(self, tree, sign):
        # A constant offset lives in the low-frequency bands only: the gradient must point
        # along the offset everywhere, and a gradient step must reduce the loss. The target
        # holds quarters so that pred - target is exactly the offset: with rounding noise
        # (~1e-16) in the high bands, the L1 subgradient sign(noise) / (coefficients of one
        # band) outweighs the low-band gradient under Eq. 4's per-subband sum.
        target = torch.randint(-8, 8, (1, 3, 16, 16), generator=torch.Generator().manual_seed(0))
        target = target.double() / 4
        pred = (target + sign * 0.5).requires_grad_(True)
        loss = wavelet_smooth_loss(pred, target, tree=tree)
        loss.backward()
        assert bool((torch.sign(pred.grad) == sign).all())
        # Random error: the gradient correlates positively with the error, descent helps.
        pred2 = (target + 0.3 * torch.randn_like(target)).requires_grad_(True)
        loss2 = wavelet_smooth_loss(pred2, target, tree=tree)
        (g,) = torch.autograd.grad(loss2, pred2)
        assert float((g * (pred2.detach() - target)).sum()) > 0
        with torch.no_grad():
            assert float(wavelet_smooth_loss(pred2 - 0.01 * g, target, tree=tree)) < float(loss2)

    def test_gradient_of_target(self):
        pred, target = _pair(1, 1, 8, 8, seed=3)
        target.requires_grad_(True)
        pred.requires_grad_(True)
        wavelet_smooth_loss(pred, target).backward()
        torch.testing.assert_close(target.grad, -pred.grad)

    def test_float32_and_bfloat16(self):
        pred, target = _pair(2, 3, 16, 16, seed=9)
        ref = float(wavelet_smooth_loss(pred, target))
        got32 = wavelet_smooth_loss(pred.float(), target.float())
        assert float(got32) == pytest.approx(ref, rel=1e-5)
        got = wavelet_smooth_loss(pred.bfloat16(), target.bfloat16())
        assert got.dtype == torch.float32  # reduced in float32
        ref16 = oracle(pred.bfloat16().double().numpy(), target.bfloat16().double().numpy(), 3,
                       1.0, 0.8, "packet", True, "orthonormal", "sum_bands")
        assert float(got) == pytest.approx(ref16, rel=1e-5)
        assert float(got) == pytest.approx(ref, rel=3e-2)

    def test_bad_inputs(self):
        x = torch.zeros(1, 3, 16, 16)
        with pytest.raises(ValueError, match="divisible by 2\\*\\*levels = 8"):
            wavelet_smooth_loss(torch.zeros(1, 3, 20, 16), torch.zeros(1, 3, 20, 16))
        with pytest.raises(ValueError, match="same shape"):
            wavelet_smooth_loss(x, torch.zeros(1, 3, 16, 8))
        with pytest.raises(TypeError, match="dtype"):
            wavelet_smooth_loss(x, x.double())
        with pytest.raises(ValueError, match="4-D"):
            wavelet_smooth_loss(x[0], x[0])
        with pytest.raises(TypeError, match="floating"):
            wavelet_smooth_loss(x.long(), x.long())
        with pytest.raises(ValueError, match="tree"):
            WaveletSmoothLoss(tree="dual")
        with pytest.raises(ValueError, match="ll_scale"):
            WaveletSmoothLoss(ll_scale="sum")
        with pytest.raises(ValueError, match="reduction"):
            WaveletSmoothLoss(reduction="sum")
        with pytest.raises(ValueError, match="levels"):
            WaveletSmoothLoss(levels=0)
        with pytest.raises(ValueError, match="lambda_high"):
            WaveletSmoothLoss(lambda_high=-1.0)
        with pytest.raises(TypeError, match="low_every_level"):
            WaveletSmoothLoss(low_every_level="yes")


def _fake_outputs(B=2, K=4, H=32, W=48, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    out = {
        "seg": torch.randn(B, K, H, W, generator=g),
        "aux": torch.randn(B, K, H, W, generator=g),
        "recon": torch.randn(B, 3, H, W, generator=g),
        "image": torch.randn(B, 3, H, W, generator=g),
        "feat_deep": torch.randn(B, 8, 2, 3, generator=g),
        "feat_sr": torch.randn(B, 8, H, W, generator=g),
    }
    if requires_grad:
        for k in ("seg", "aux", "recon", "feat_deep", "feat_sr"):
            out[k].requires_grad_(True)
    mask = torch.randint(0, K, (B, H, W), generator=g)
    mask[:, :3] = 255
    return out, mask


def _np_ce(logits: torch.Tensor, mask: torch.Tensor, ignore: int = 255) -> float:
    z = logits.detach().double().numpy()
    m = mask.numpy()
    zmax = z.max(1, keepdims=True)
    logp = z - zmax - np.log(np.exp(z - zmax).sum(1, keepdims=True))
    valid = m != ignore
    picked = np.take_along_axis(logp, np.where(valid, m, 0)[:, None], axis=1)[:, 0]
    return float(-picked[valid].mean())


def _np_sd(student: torch.Tensor, teacher: torch.Tensor) -> float:
    t = F.interpolate(teacher.detach(), size=student.shape[-2:], mode="bilinear",
                      align_corners=False).double().numpy()
    s = student.detach().double().numpy()
    total = []
    for b in range(s.shape[0]):
        fs = s[b].reshape(s.shape[1], -1)
        ft = t[b].reshape(t.shape[1], -1)
        fs = fs / np.maximum(np.linalg.norm(fs, axis=1, keepdims=True), 1e-12)
        ft = ft / np.maximum(np.linalg.norm(ft, axis=1, keepdims=True), 1e-12)
        total.append(np.abs(fs.T @ fs - ft.T @ ft))
    return float(np.mean(total))


class TestWSDNetLoss:
    def test_equals_weighted_sum(self):
        out, mask = _fake_outputs()
        total, terms = WSDNetLoss()(out, mask, return_terms=True)
        seg, aux = _np_ce(out["seg"], mask), _np_ce(out["aux"], mask)
        wsl = oracle(out["recon"].detach().double().numpy(), out["image"].double().numpy(), 3,
                     1.0, 0.8, "packet", True, "orthonormal", "sum_bands")
        assert float(terms["seg"]) == pytest.approx(seg, rel=1e-5)
        assert float(terms["aux"]) == pytest.approx(aux, rel=1e-5)
        assert float(terms["wsl"]) == pytest.approx(wsl, rel=1e-5)
        assert float(total.detach()) == pytest.approx(seg + 0.1 * aux + wsl, rel=1e-5)
        assert "sd" not in terms
        total.backward()
        assert out["feat_sr"].grad is None and out["recon"].grad is not None

    def test_structure_distillation_switch(self):
        out, mask = _fake_outputs(seed=1)
        total, terms = WSDNetLoss(structure_distillation=True, sd_weight=0.5)(
            out, mask, return_terms=True)
        sd = _np_sd(out["feat_deep"], out["feat_sr"])
        assert float(terms["sd"]) == pytest.approx(sd, rel=1e-5)
        base = float(terms["seg"] + 0.1 * terms["aux"] + terms["wsl"])
        assert float(total.detach()) == pytest.approx(base + 0.5 * sd, rel=1e-5)
        total.backward()
        assert out["feat_sr"].grad is None or float(out["feat_sr"].grad.abs().max()) == 0.0
        assert float(out["feat_deep"].grad.abs().max()) > 0  # the teacher side is detached

    def test_structure_distillation_function(self):
        g = torch.Generator().manual_seed(4)
        s, t = torch.randn(1, 5, 3, 4, generator=g), torch.randn(1, 5, 12, 16, generator=g)
        assert float(structure_distillation_loss(s, t)) == pytest.approx(_np_sd(s, t), rel=1e-5)
        with pytest.raises(ValueError, match="batch and channel"):
            structure_distillation_loss(s, torch.randn(1, 4, 6, 8))

    def test_crops_to_a_multiple_of_two_to_the_levels(self):
        out, mask = _fake_outputs(H=37, W=29, seed=2)
        _, terms = WSDNetLoss()(out, mask, return_terms=True)
        wsl = oracle(out["recon"][..., :32, :24].detach().double().numpy(),
                     out["image"][..., :32, :24].double().numpy(), 3, 1.0, 0.8, "packet", True,
                     "orthonormal", "sum_bands")
        assert float(terms["wsl"]) == pytest.approx(wsl, rel=1e-5)

    def test_all_ignored_gives_zero_ce(self):
        out, mask = _fake_outputs(seed=3)
        mask.fill_(255)
        total, terms = WSDNetLoss()(out, mask, return_terms=True)
        assert float(terms["seg"]) == 0.0 and float(terms["aux"]) == 0.0
        assert torch.isfinite(total)

    def test_custom_wsl_and_weights(self):
        out, mask = _fake_outputs(seed=6)
        wsl = WaveletSmoothLoss(levels=2, tree="mallat", reduction="sum_bands")
        total, terms = WSDNetLoss(aux_weight=0.4, wsl=wsl, wsl_weight=2.0)(out, mask,
                                                                           return_terms=True)
        ref = oracle(out["recon"].detach().double().numpy(), out["image"].double().numpy(), 2,
                     1.0, 0.8, "mallat", True, "orthonormal", "sum_bands")
        assert float(terms["wsl"]) == pytest.approx(ref, rel=1e-5)
        assert float(total.detach()) == pytest.approx(
            float(terms["seg"] + 0.4 * terms["aux"]) + 2.0 * ref, rel=1e-5)

    def test_bad_inputs(self):
        out, mask = _fake_outputs()
        crit = WSDNetLoss()
        with pytest.raises(TypeError, match="train mode"):
            crit(out["seg"], mask)
        with pytest.raises(ValueError, match="lacks"):
            crit({"seg": out["seg"]}, mask)
        with pytest.raises(ValueError, match="lacks.*feat_deep"):
            WSDNetLoss(structure_distillation=True)(
                {k: v for k, v in out.items() if k != "feat_deep"}, mask)
        with pytest.raises(ValueError, match="mask"):
            crit(out, mask[:, :10])
        with pytest.raises(TypeError, match="int64"):
            crit(out, mask.int())
        with pytest.raises(ValueError, match="aux_weight"):
            WSDNetLoss(aux_weight=-0.1)
        small, small_mask = _fake_outputs(H=4, W=64)
        with pytest.raises(ValueError, match="smaller than 2\\*\\*levels"):
            crit(small, small_mask)
