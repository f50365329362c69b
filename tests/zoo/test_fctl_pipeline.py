"""Tests of zoo.fctl.pipeline.FCtLSegmenter (whole-image FCtL inference) and zoo.losses.

The oracle is a hand loop written here from reference/fctl.md §6: GLNet's patch grid (>= 50 px
overlap rule, rounded starts, last patch flush), contexts cropped from a black-padded image,
exactly centred, resized with antialiased bilinear filtering, the global image resized once,
raw logits summed over overlaps, 8-way flip/rot90 TTA summed. Most tests use a probe model (an
FCtL whose forward is a cheap linear function of exactly the inputs the real one receives);
one runs the real DeepGlobe model, and one overfits the real FCN stage with the focal loss.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.fctl import FCtL, FCtLSegmenter
from zoo.losses import FocalLoss, focal_loss


class Probe(FCtL):
    """FCtL with its heavy parts removed: logits = W · cat(patch, context_1, ...)."""

    def __init__(self, num_classes: int, variant: str, stage: str) -> None:
        with torch.device("meta"):
            super().__init__(num_classes, variant, stage)
        for name in ("encoder", "decoder", "correlations", "fusion", "context_encoders"):
            if hasattr(self, name):
                delattr(self, name)
        k = len(self.context_names)
        g = torch.Generator().manual_seed(11)
        self.w = nn.Parameter(torch.randn(num_classes, 3 * (1 + k), generator=g))
        self.encoded = 0
        self.calls = []

    def encode_context(self, name, image):
        self.encoded += 1
        return image.clone()

    def forward(self, patch, contexts=(), *, context_features=None):
        k = len(self.context_names)
        self.calls.append(patch.shape[0])
        feats = list(context_features) if context_features is not None else [None] * k
        ctxs = list(contexts) if contexts else [None] * k
        parts = [patch]
        for i in range(k):
            c = feats[i] if feats[i] is not None else ctxs[i]
            parts.append(c.expand(patch.shape[0], -1, -1, -1))
        if self.stage == "global":
            assert patch.shape[-2:] == (16, 16)
        return torch.einsum("oc,bchw->bohw", self.w, torch.cat(parts, 1))


# ------------------------------------------------------------------------------------------
# The hand-written oracle
# ------------------------------------------------------------------------------------------


def starts(size: int, p: int, min_overlap: float) -> list[int]:
    """GLNet/FCtL get_patch_info along one axis."""
    if size <= p:
        return [0]
    n = 2
    while not (n * p >= size and p - (size - p) / (n - 1) >= min_overlap):
        n += 1
    step = (size - p) / (n - 1)
    return [int(np.round(i * step)) for i in range(n - 1)] + [size - p]


def resize(x, size, antialias=True):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)


def hand_segment(model, image, p, min_overlap, scales, pad_value=0.0, antialias=True,
                 mean=None, std=None):
    """Summed logits of one (1, 3, H, W) image, patch by patch."""
    H, W = image.shape[-2:]
    norm = (lambda t: t) if mean is None else \
        (lambda t: (t - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1))
    M = 3 * p
    padded = F.pad(image, (M, M, M, M), value=pad_value)
    glob = resize(image, (p, p), antialias)
    out = None
    for y in starts(H, p, min_overlap):
        for x in starts(W, p, min_overlap):
            patch = F.pad(image[:, :, y:y + p, x:x + p], (0, max(0, x + p - W), 0,
                                                            max(0, y + p - H)))
            ctxs = []
            for s in scales:
                if s == "global":
                    ctxs.append(norm(glob))
                    continue
                L = int(round(s * p))
                off = (L - p) // 2
                win = padded[:, :, M + y - off:M + y - off + L, M + x - off:M + x - off + L]
                ctxs.append(norm(resize(win, (p, p), antialias)))
            with torch.no_grad():
                logits = model(norm(patch), tuple(ctxs))
            if out is None:
                out = torch.zeros(1, logits.shape[1], max(H, p), max(W, p))
            out[:, :, y:y + p, x:x + p] += logits
    return out[:, :, :H, :W]


def hand_tta(model, image, **kw):
    total = 0
    for flip in (False, True):
        base = torch.flip(image, (3,)) if flip else image
        for k in range(4):
            y = hand_segment(model, torch.rot90(base, k, (2, 3)), **kw)
            y = torch.rot90(y, -k, (2, 3))
            total = total + (torch.flip(y, (3,)) if flip else y)
    return total


# ------------------------------------------------------------------------------------------
# Probe tests (cheap)
# ------------------------------------------------------------------------------------------


class TestAgainstHandLoop:
    @pytest.mark.parametrize("variant,stage,size", [
        ("inria", "full", (40, 29)), ("inria", "single_context", (16, 33)),
        ("deepglobe", "full", (29, 40)), ("deepglobe", "fcn", (35, 35)),
        ("inria", "full", (10, 12)),  # smaller than a patch: one padded patch
    ])
    def test_probe(self, variant, stage, size):
        model = Probe(3, variant, stage)
        img = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
        seg = FCtLSegmenter(model, patch_size=16, min_overlap=4, batch_size=3)
        out = seg(img)
        ref = hand_segment(model, img, 16, 4, model.context_scales)
        assert out.shape == (1, 3, *size) and out.dtype == torch.float32
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(seg.predict(img), ref.argmax(1))

    def test_options(self):
        model = Probe(2, "inria", "full")
        img = torch.rand(1, 3, 30, 30, generator=torch.Generator().manual_seed(2))
        kw = dict(pad_value=0.5, antialias=False, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
        seg = FCtLSegmenter(model, patch_size=16, min_overlap=4, batch_size=2,
                            context_scales=(1.5, 2.5), **kw)
        ref = hand_segment(model, img, 16, 4, (1.5, 2.5), **kw)
        torch.testing.assert_close(seg(img), ref, rtol=1e-5, atol=1e-5)

    def test_global_once_per_image_and_batching(self):
        model = Probe(7, "deepglobe", "full")
        img = torch.rand(2, 3, 30, 30, generator=torch.Generator().manual_seed(3))
        seg = FCtLSegmenter(model, patch_size=16, min_overlap=4, batch_size=3)
        out = seg(img)
        assert model.encoded == 2  # one global encoding per image
        assert max(model.calls) <= 3 and sum(model.calls) == 2 * 9
        for b in range(2):
            ref = hand_segment(model, img[b:b + 1], 16, 4, (3.0, "global"))
            torch.testing.assert_close(out[b:b + 1], ref, rtol=1e-5, atol=1e-5)

    def test_tta(self):
        model = Probe(7, "deepglobe", "full")
        img = torch.rand(1, 3, 26, 21, generator=torch.Generator().manual_seed(4))
        seg = FCtLSegmenter(model, patch_size=16, min_overlap=4, batch_size=4, tta=True)
        ref = hand_tta(model, img, p=16, min_overlap=4, scales=(3.0, "global"))
        torch.testing.assert_close(seg(img), ref, rtol=1e-5, atol=1e-4)

    def test_global_stage(self):
        model = Probe(7, "deepglobe", "global")
        img = torch.rand(1, 3, 40, 24, generator=torch.Generator().manual_seed(5))
        seg = FCtLSegmenter(model, patch_size=16)
        with torch.no_grad():
            ref = F.interpolate(model(resize(img, (16, 16))), size=(40, 24), mode="bilinear",
                                align_corners=False)
        torch.testing.assert_close(seg(img), ref)

    def test_grid_of_the_paper(self):
        # 2448 -> 6x6 at stride 388 (overlap 120), 5000 -> 11x11 (reference/fctl.md §6.3)
        assert starts(2448, 508, 50) == [0, 388, 776, 1164, 1552, 1940]
        assert len(starts(5000, 508, 50)) == 11

    def test_training_flag_restored_and_errors(self):
        model = Probe(2, "inria", "full")
        model.train()
        seg = FCtLSegmenter(model, patch_size=16, min_overlap=4)
        seg(torch.rand(1, 3, 20, 20))
        assert model.training
        with pytest.raises(ValueError, match="context_scales"):
            FCtLSegmenter(model, context_scales=(2.0,))
        with pytest.raises(ValueError, match="positive number"):
            FCtLSegmenter(model, context_scales=(2.0, -1))
        with pytest.raises(ValueError, match="mean"):
            FCtLSegmenter(model, mean=(0.5, 0.5, 0.5))
        with pytest.raises(TypeError, match="FCtL"):
            FCtLSegmenter(nn.Conv2d(3, 2, 1))
        with pytest.raises(ValueError, match="3 channels"):
            seg(torch.rand(1, 4, 20, 20))
        with pytest.raises(TypeError, match="floating"):
            seg(torch.zeros(1, 3, 20, 20, dtype=torch.uint8))

    @pytest.mark.cuda
    def test_model_on_cuda_image_on_cpu(self):
        model = Probe(7, "deepglobe", "full")
        img = torch.rand(1, 3, 30, 30)
        ref = FCtLSegmenter(model, patch_size=16, min_overlap=4)(img)
        model.cuda()
        out = FCtLSegmenter(model, patch_size=16, min_overlap=4)(img)
        assert out.device.type == "cpu"
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------
# The real model
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_deepglobe_model_against_hand_loop():
    torch.manual_seed(0)
    model = FCtL(7, "deepglobe", "full").eval()
    with torch.no_grad():
        for b in model.correlations.values():
            b.gamma.fill_(0.5)
    img = torch.rand(1, 3, 24, 16, generator=torch.Generator().manual_seed(6))
    seg = FCtLSegmenter(model, patch_size=16, min_overlap=4, batch_size=2)
    out = seg(img)
    ref = hand_segment(model, img, 16, 4, (3.0, "global"))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_overfit_focal_loss():
    """A dozen Adam steps of the real FCN stage on one small synthetic scene (32 px:
    with 16 px the 1x1 conv7 map cannot fit more than the class prior)."""
    from zoo.data.synthetic import generate_scene

    torch.manual_seed(0)
    for index in range(16):  # the first scene with both classes well represented
        img, mask = generate_scene((32, 32), num_classes=2, seed=1, index=index)
        if 0.2 < float(mask.float().mean()) < 0.8:
            break
    else:
        pytest.fail("no synthetic 32x32 scene with 20-80 % buildings among indices 0..15")
    x, y = img[None], mask[None]
    model = FCtL(2, "inria", "fcn")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                           fused=True)
    loss_fn = FocalLoss(gamma=3)
    model.eval()  # no dropout: a deterministic descent
    with torch.no_grad():
        first = float(loss_fn(model(x), y))
    for _ in range(12):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(loss_fn(model(x), y))
    # measured here (index 0, 33 % buildings): 0.0857 -> 0.0491 after 12 steps, 0.0361 after 20
    assert last < 0.7 * first, (first, last)


# ------------------------------------------------------------------------------------------
# Focal loss
# ------------------------------------------------------------------------------------------


class TestFocalLoss:
    def naive(self, logits, target, gamma, eps=1e-7):
        z = logits.double().permute(0, 2, 3, 1).reshape(-1, logits.shape[1]).numpy()
        t = target.reshape(-1).numpy()
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        pt = np.clip(p[np.arange(len(t)), t], eps, 1 - eps)
        return float(np.mean(-((1 - pt) ** gamma) * np.log(pt)))

    @pytest.mark.parametrize("gamma", [0.0, 2.0, 3.0])
    def test_against_numpy(self, gamma):
        g = torch.Generator().manual_seed(8)
        logits = 4 * torch.randn(2, 7, 5, 6, generator=g)
        target = torch.randint(0, 7, (2, 5, 6), generator=g)
        got = float(focal_loss(logits, target, gamma))
        assert got == pytest.approx(self.naive(logits, target, gamma), rel=1e-5)
        if gamma == 0.0:  # plain cross-entropy up to the clamp
            assert got == pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-4)

    def test_ignore_and_reductions(self):
        g = torch.Generator().manual_seed(9)
        logits = torch.randn(1, 3, 4, 4, generator=g)
        target = torch.randint(0, 3, (1, 4, 4), generator=g)
        target[0, 0, :2] = 255
        keep = target != 255
        per = focal_loss(logits, target, reduction="none")
        assert per.shape == (1, 4, 4) and float(per[~keep].abs().max()) == 0.0
        assert float(focal_loss(logits, target)) == pytest.approx(float(per[keep].mean()))
        assert float(focal_loss(logits, target, reduction="sum")) == pytest.approx(float(per.sum()))
        assert float(FocalLoss()(logits, target)) == pytest.approx(float(per[keep].mean()))

    def test_gradcheck(self):
        logits = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
        target = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
        assert torch.autograd.gradcheck(lambda z: focal_loss(z, target), (logits,))

    def test_bad_input(self):
        with pytest.raises(ValueError, match="outside"):
            focal_loss(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), 3))
        with pytest.raises(TypeError, match="integer"):
            focal_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2))
        with pytest.raises(ValueError, match="shape"):
            focal_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, dtype=torch.long))
        with pytest.raises(ValueError, match="reduction"):
            focal_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long),
                       reduction="avg")


class TestStream:
    """FCtLSegmenter.stream: the image read window by window (a reader), logits handed out
    band by band; the oracle is forward() on the image in memory."""

    @staticmethod
    def _bands(seg, img, rows=None):
        from uhrops.tiling import TensorReader

        got = []
        seg.stream(TensorReader(img), lambda y0, b: got.append((y0, b.clone())), rows=rows)
        return got

    def test_local_contexts_bitwise(self):
        model = Probe(3, "inria", "full")
        img = torch.rand(1, 3, 75, 41, generator=torch.Generator().manual_seed(5))
        seg = FCtLSegmenter(model, patch_size=16, min_overlap=4, batch_size=3)
        ref = seg(img)
        got = self._bands(seg, img)
        assert [y0 for y0, _ in got] == sorted(y0 for y0, _ in got) and got[0][0] == 0
        assert torch.equal(torch.cat([b for _, b in got], -2), ref)
        part = self._bands(seg, img, rows=(30, 60))
        assert torch.equal(torch.cat([b for _, b in part], -2), ref[:, :, 30:60])

    def test_global_context_from_a_streamed_resize(self):
        from zoo.fctl.pipeline import resize_global, streamed_resize_global
        from uhrops.tiling import TensorReader

        img = torch.rand(1, 3, 203, 77, generator=torch.Generator().manual_seed(6))
        for size in ((16, 16), (50, 30)):  # shrinking, as the global image always is
            torch.testing.assert_close(streamed_resize_global(TensorReader(img), size,
                                                              rows_per_read=50),
                                       resize_global(img, size), rtol=0, atol=2e-6)
        model = Probe(7, "deepglobe", "full")
        seg = FCtLSegmenter(model, patch_size=16, min_overlap=4, batch_size=3)
        got = torch.cat([b for _, b in self._bands(seg, img)], -2)
        torch.testing.assert_close(got, seg(img), rtol=1e-5, atol=1e-5)

    def test_refuses_what_needs_the_whole_image(self):
        from uhrops.tiling import TensorReader

        img = torch.rand(1, 3, 20, 20)
        for kw in (dict(tta=True), dict(context_resize="released"), dict(pad_value=0.5)):
            seg = FCtLSegmenter(Probe(2, "inria", "full"), patch_size=16, min_overlap=4, **kw)
            with pytest.raises(ValueError, match="whole image"):
                seg.stream(TensorReader(img), lambda y0, b: None)
