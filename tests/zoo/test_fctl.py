"""Tests of zoo.fctl.model and zoo.fctl.checkpoints (FCtL, ICCV 2021, as released).

The oracles are written here from the facts of reference/fctl.md (§3-§4): a naive
correlation (softmax over keys of unscaled dot products, optional q/k centring, times
gamma), the squeeze-and-split fusion, and the FCN-8s decoder with bilinear transposed convs
and crops 5/9/31. Shapes and parameter counts are checked on the meta device (no compute; a
508 px patch costs ~1 TFLOP on the real model); values on 16 px patches (the pad-100 conv1_1
makes any size work).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.fctl import FCtL, MultiContextFusion, bilinear_kernel, load_official_checkpoints

LO, HI = 1 / (1 + 2 * math.e), math.e / (math.e + 2)  # ≈ 0.155, 0.576


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_model(*args) -> FCtL:
    with torch.device("meta"):
        return FCtL(*args)


def empty_model(*args) -> FCtL:
    """A model with allocated but uninitialised weights (fast: no random init)."""
    return meta_model(*args).to_empty(device="cpu")


# ------------------------------------------------------------------------------------------
# Naive oracles
# ------------------------------------------------------------------------------------------


def conv1x1(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = torch.einsum("oc,bchw->bohw", w.flatten(1).double(), x.double())
    return y if b is None else y + b.double()[None, :, None, None]


def naive_corr(block, x: torch.Tensor, y: torch.Tensor, center: bool) -> torch.Tensor:
    """gamma · v softmax_keys(qᵀk)ᵀ with q from x, k/v from y (official FCtL.py)."""
    B, C, H, W = x.shape
    q = conv1x1(x, block.conv_query.weight, block.conv_query.bias).flatten(2)
    k = conv1x1(y, block.conv_key.weight, block.conv_key.bias).flatten(2)
    v = conv1x1(y, block.conv_value.weight, None).flatten(2)
    if center:
        q = q - q.mean(2, keepdim=True)
        k = k - k.mean(2, keepdim=True)
    a = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=2)  # (B, Nq, Nk)
    o = torch.bmm(v, a.transpose(1, 2)).view(B, -1, H, W)
    return block.gamma.double() * o


def naive_fusion(fus, x: torch.Tensor, corrs) -> torch.Tensor:
    h = torch.cat([conv1x1(c, m.weight, m.bias) for m, c in zip(fus.in_convs, corrs)], 1)
    t = conv1x1(h, fus.trans.weight, fus.trans.bias)
    c = corrs[0].shape[1]
    s = torch.stack([torch.sigmoid(conv1x1(t[:, i * c:(i + 1) * c], m.weight, m.bias))
                     for i, m in enumerate(fus.out_convs)])
    w = torch.softmax(s, 0)
    return x.double() + sum(w[i] * corrs[i].double() for i in range(len(corrs)))


def bilinear_ref(n: int, k: int) -> torch.Tensor:
    """FCN's get_upsampling_weight, from its formula."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = np.ogrid[:k, :k]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    w = np.zeros((n, n, k, k))
    w[range(n), range(n)] = filt
    return torch.from_numpy(w)


def naive_head(model: FCtL, pool5, pool4, pool3, size) -> torch.Tensor:
    """conv6/conv7 (eval: no dropout), score, skips x0.01 / x0.0001 cropped at 5 / 9,
    bilinear transposed convs, crop 31 (reference/fctl.md §3.5)."""
    e, d = model.encoder, model.decoder
    n = d.num_classes
    x = F.relu(F.conv2d(pool5.double(), e.conv6.weight.double(), e.conv6.bias.double()))
    x = F.relu(conv1x1(x, e.conv7.weight, e.conv7.bias))
    s = conv1x1(x, d.score.weight, d.score.bias)
    u1 = F.conv_transpose2d(s, bilinear_ref(n, 4), stride=2)
    p4 = conv1x1(0.01 * pool4.double(), d.score_pool4.weight, d.score_pool4.bias)
    u = u1 + p4[:, :, 5:5 + u1.shape[2], 5:5 + u1.shape[3]]
    u2 = F.conv_transpose2d(u, bilinear_ref(n, 4), stride=2)
    p3 = conv1x1(0.0001 * pool3.double(), d.score_pool3.weight, d.score_pool3.bias)
    u = u2 + p3[:, :, 9:9 + u2.shape[2], 9:9 + u2.shape[3]]
    out = F.conv_transpose2d(u, bilinear_ref(n, 16), stride=8)
    return out[:, :, 31:31 + size[0], 31:31 + size[1]]


# ------------------------------------------------------------------------------------------
# Fixtures (module scope: the real models are large)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dg_full() -> FCtL:
    torch.manual_seed(0)
    m = FCtL(7, "deepglobe", "full").eval()
    with torch.no_grad():
        for g, name in zip((0.8, -0.6, 1.3), ("self", "medium", "large")):
            m.correlations[name].gamma.fill_(g)
    return m


@pytest.fixture(scope="module")
def inria_full() -> FCtL:
    torch.manual_seed(1)
    return FCtL(2, "inria", "full").eval()


def contexts_for(model: FCtL, b: int, s: int, g: torch.Generator) -> tuple:
    if model.stage == "full" and model.variant == "deepglobe":
        return (torch.rand(b, 3, s, s, generator=g), torch.rand(1, 3, s, s, generator=g))
    return tuple(torch.rand(b, 3, s, s, generator=g) for _ in model.context_names)


# ------------------------------------------------------------------------------------------
# Shapes and sizes (meta device)
# ------------------------------------------------------------------------------------------

CASES = [("inria", "fcn"), ("inria", "single_context"), ("inria", "full"),
         ("deepglobe", "fcn"), ("deepglobe", "single_context"), ("deepglobe", "global"),
         ("deepglobe", "full")]


class TestShapes:
    @pytest.mark.parametrize("variant,stage", CASES)
    @pytest.mark.parametrize("size,pool5", [(508, 23), (32, 8), (64, 9), (128, 11)])
    def test_every_stage(self, variant, stage, size, pool5):
        n = 2 if variant == "inria" else 7
        model = meta_model(n, variant, stage)
        seen = {}
        model.encoder.register_forward_hook(lambda m, i, o: seen.setdefault("taps", o))
        if stage in ("single_context", "full"):
            for name, blk in model.correlations.items():
                blk.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
        with torch.device("meta"):
            x = torch.empty(2, 3, size, size)
            ctx = tuple(torch.empty(1 if (variant == "deepglobe" and name == "large") else 2,
                                    3, size, size) for name in model.context_names)
            y = model(x, ctx)
        assert y.shape == (2, n, size, size)
        assert seen["taps"][2].shape == (2, 512, pool5, pool5)
        for name in model.correlations.keys() if hasattr(model, "correlations") else ():
            assert seen[name].shape == (2, 512, pool5, pool5)

    def test_508_intermediates(self):
        model = meta_model(2, "inria", "full")
        seen = {}
        for name in ("score", "up2", "up2_pool4", "up8"):
            getattr(model.decoder, name).register_forward_hook(
                lambda m, i, o, name=name: seen.__setitem__(name, o.shape[-1]))
        with torch.device("meta"):
            x = torch.empty(1, 3, 508, 508)
            model(x, (x, x))
        # 17 -> 36 -> 74 -> 600 (cropped at 31 to 508), reference/fctl.md §3.5
        assert seen == {"score": 17, "up2": 36, "up2_pool4": 74, "up8": 600}

    def test_non_square(self):
        model = meta_model(7, "deepglobe", "full")
        with torch.device("meta"):
            y = model(torch.empty(1, 3, 40, 71), (torch.empty(1, 3, 40, 71),
                                                 torch.empty(1, 3, 32, 32)))
        assert y.shape == (1, 7, 40, 71)


class TestParameterCounts:
    VGG_FEATURES = 14_714_688
    CLASSIFIER = 4096 * 25088 + 4096 + 4096 * 4096 + 4096 + 1000 * 4096 + 1000
    CORR = 2 * (512 * 512 + 512) + 512 * 512 + 1  # q, k with bias; v without; gamma
    FUSION = 6 * (512 * 512 + 512) + 1536 * 1536 + 1536

    def fcn(self, n: int) -> int:
        conv67 = 4096 * 512 * 49 + 4096 + 4096 * 4096 + 4096
        head = 4096 * n + n + 512 * n + n + 256 * n + n + 2 * n * n * 16 + n * n * 256
        return self.VGG_FEATURES + conv67 + head

    def test_against_formula_and_reference(self):
        for variant, n in (("inria", 2), ("deepglobe", 7)):
            fcn = count(meta_model(n, variant, "fcn"))
            assert fcn == self.fcn(n)
            single = count(meta_model(n, variant, "single_context"))
            assert single == fcn + self.CORR
            full = meta_model(n, variant, "full")
            assert count(full) == fcn + 3 * self.CORR + self.FUSION + 2 * self.VGG_FEATURES
            assert count(full.context_encoders) == 2 * self.VGG_FEATURES
        # The official numbers (reference/fctl.md §3.6) hold the unused vgg.classifier:
        # FCN8 mode 1: 257.91 M; mode 2/3: 264.21 M (the FCtL module adds 6.30 M).
        assert round((self.fcn(2) + self.CLASSIFIER) / 1e6, 2) == 257.91
        assert round((self.fcn(2) + self.CLASSIFIER + 3 * self.CORR + self.FUSION) / 1e6, 2) \
            == 264.21
        assert round((3 * self.CORR + self.FUSION) / 1e6, 2) == 6.30

    def test_trainable_and_frozen(self):
        model = meta_model(2, "inria", "full")
        assert not any(p.requires_grad for p in model.context_encoders.parameters())
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        assert {n for n in frozen if not n.startswith("context_encoders.")} == {
            "decoder.up2.weight", "decoder.up2_pool4.weight", "decoder.up8.weight"}


# ------------------------------------------------------------------------------------------
# Blocks against the naive oracles
# ------------------------------------------------------------------------------------------


class TestBlocks:
    def test_bilinear_kernel_formula_and_interpolation(self):
        for n, k in ((1, 4), (3, 4), (2, 16)):
            torch.testing.assert_close(bilinear_kernel(n, k).double(), bilinear_ref(n, k))
        # x2 / x8 transposed convs are bilinear interpolation (half-pixel) shifted by 1 / 4.
        x = torch.rand(1, 1, 6, 7, dtype=torch.float64)
        for k, s, off in ((4, 2, 1), (16, 8, 4)):
            y = F.conv_transpose2d(x, bilinear_kernel(1, k).double(), stride=s)
            r = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
            y = y[..., off:off + r.shape[2], off:off + r.shape[3]]
            torch.testing.assert_close(y[..., s:-s, s:-s], r[..., s:-s, s:-s])

    @pytest.mark.parametrize("fixture", ["inria_full", "dg_full"])
    def test_correlations(self, fixture, request):
        model = request.getfixturevalue(fixture)
        g = torch.Generator().manual_seed(3)
        x = 3 * torch.randn(2, 512, 5, 4, generator=g)
        y = 3 * torch.randn(2, 512, 6, 6, generator=g)
        center = fixture == "dg_full"
        for name, blk in model.correlations.items():
            old = blk.gamma.detach().clone()
            try:
                with torch.no_grad():
                    blk.gamma.fill_(0.7)
                    out = blk(x, y)
                    ref = naive_corr(blk, x, y, center)
            finally:
                with torch.no_grad():
                    blk.gamma.copy_(old)
            assert blk.center is center
            torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize("fixture", ["inria_full", "dg_full"])
    def test_fusion(self, fixture, request):
        fus = request.getfixturevalue(fixture).fusion
        g = torch.Generator().manual_seed(4)
        x = torch.randn(2, 512, 3, 5, generator=g)
        corrs = [torch.randn(2, 512, 3, 5, generator=g) for _ in range(3)]
        with torch.no_grad():
            out = fus(x, corrs)
            w = fus.weights(corrs)
        torch.testing.assert_close(out.double(), naive_fusion(fus, x, corrs), rtol=1e-5,
                                   atol=1e-5)
        assert w.shape == (3, 2, 512, 3, 5)
        torch.testing.assert_close(w.sum(0), torch.ones_like(w[0]))

    def test_fusion_weight_bounds(self):
        torch.manual_seed(5)
        fus = MultiContextFusion(16, 3, init="default")
        with torch.no_grad():
            for p in fus.parameters():
                p.normal_(0, 3.0)  # saturate the sigmoids both ways
            corrs = [50 * torch.randn(4, 16, 6, 6) for _ in range(3)]
            w = fus.weights(corrs)
        assert float(w.min()) >= LO - 1e-6 and float(w.max()) <= HI + 1e-6
        assert float(w.min()) < LO + 0.01 and float(w.max()) > HI - 0.01  # bounds are reached

    @torch.no_grad()
    def test_fusion_init(self, inria_full, dg_full):
        # main: N(0, 0.01) with zero bias; Deepglobe: PyTorch default (uniform, bias != 0).
        assert float(inria_full.fusion.trans.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
        assert float(inria_full.fusion.trans.bias.abs().max()) == 0.0
        assert float(dg_full.fusion.trans.bias.abs().max()) > 0.0
        for m in (inria_full, dg_full):
            for blk in m.correlations.values():
                assert float(blk.conv_query.weight.detach().std()) == pytest.approx(0.01, rel=0.05)


# ------------------------------------------------------------------------------------------
# The whole model
# ------------------------------------------------------------------------------------------


class TestForward:
    @torch.no_grad()
    def test_gamma_zero_equals_fcn_baseline(self, inria_full):
        assert all(float(b.gamma) == 0.0 for b in inria_full.correlations.values())
        fcn = meta_model(2, "inria", "fcn")
        shared = {k: v for k, v in inria_full.state_dict().items()
                  if k.startswith(("encoder.", "decoder."))}
        fcn.load_state_dict(shared, assign=True)
        fcn.eval()
        g = torch.Generator().manual_seed(6)
        x = torch.rand(1, 3, 16, 16, generator=g)
        with torch.no_grad():
            full = inria_full(x, contexts_for(inria_full, 1, 16, g))
            base = fcn(x)
        assert torch.equal(full, base)

    @pytest.mark.slow
    def test_deepglobe_full_against_oracle_and_gradients(self, dg_full):
        """Wiring (q from the patch, k/v from each context, fusion order, broadcast global,
        decoder) against the oracles, and gradients: none into the frozen encoders."""
        model = dg_full
        g = torch.Generator().manual_seed(7)
        x = torch.rand(2, 3, 16, 16, generator=g)
        med, glob = contexts_for(model, 2, 16, g)
        seen = {}
        hooks = [model.encoder.register_forward_hook(
            lambda m, i, o: seen.__setitem__("local", (i[0], o)))]
        for name in ("medium", "large"):
            hooks.append(model.context_encoders[name].register_forward_hook(
                lambda m, i, o, name=name: seen.__setitem__(name, (i[0], o))))
        try:
            out = model(x, (med, glob))
        finally:
            for h in hooks:
                h.remove()
        assert seen["local"][0] is x and seen["medium"][0] is med and seen["large"][0] is glob
        assert not seen["medium"][1][2].requires_grad and not seen["large"][1][2].requires_grad
        p3, p4, p5 = (t.detach() for t in seen["local"][1])
        m5 = seen["medium"][1][2]
        g5 = seen["large"][1][2].expand(2, -1, -1, -1)
        with torch.no_grad():
            corr = {"self": naive_corr(model.correlations["self"], p5, p5, True),
                    "medium": naive_corr(model.correlations["medium"], p5, m5, True),
                    "large": naive_corr(model.correlations["large"], p5, g5, True)}
            fused = naive_fusion(model.fusion, p5, [corr["self"], corr["medium"],
                                                    corr["large"]])
            ref = naive_head(model, fused, p4, p3, (16, 16))
        torch.testing.assert_close(out.double(), ref, rtol=2e-3, atol=2e-4)
        assert float((corr["large"] - corr["medium"]).abs().max()) > 0  # contexts matter

        model.zero_grad(set_to_none=True)
        (out * torch.randn(out.shape, generator=g)).sum().backward()
        assert all(p.grad is None for p in model.context_encoders.parameters())
        assert all(p.grad is None for p in (model.decoder.up2.weight, model.decoder.up8.weight))
        for p in (model.encoder.features[0].weight, model.encoder.conv6.weight,
                  model.fusion.trans.weight, model.correlations["large"].conv_key.weight,
                  *(b.gamma for b in model.correlations.values())):
            assert p.grad is not None and float(p.grad.abs().max()) > 0
        model.zero_grad(set_to_none=True)

    def test_single_context_shares_the_local_encoder(self):
        model = meta_model(2, "inria", "single_context")
        assert not hasattr(model, "context_encoders")
        with torch.device("meta"):
            x = torch.empty(2, 3, 16, 16)
            ctx = torch.empty(2, 3, 16, 16, requires_grad=True)
            model(x, (ctx,)).sum().backward()
        # the context went through the trainable local encoder: it gets a gradient
        assert ctx.grad is not None
        assert model.encoder.features[0].weight.grad is not None
        assert model.correlations["medium"].gamma.grad is not None

    def test_frozen_encoders_no_gradient_meta(self):
        model = meta_model(2, "inria", "full")
        with torch.device("meta"):
            x = torch.empty(1, 3, 16, 16)
            model(x, (x, x)).sum().backward()
        assert all(p.grad is None for p in model.context_encoders.parameters())
        assert model.encoder.features[0].weight.grad is not None

    def test_train_keeps_context_encoders_eval(self):
        model = meta_model(7, "deepglobe", "full")
        model.train()
        assert model.training and model.encoder.training
        assert not model.context_encoders.training
        assert not any(m.training for m in model.context_encoders.modules())

    def test_context_features_replace_images(self):
        model = meta_model(7, "deepglobe", "full")
        with torch.device("meta"):
            x = torch.empty(3, 3, 16, 16)
            glob = model.encode_context("large", torch.empty(1, 3, 16, 16))
            y = model(x, (torch.empty(3, 3, 16, 16), None), context_features=(None, glob))
        assert y.shape == (3, 7, 16, 16)


class TestBadInput:
    def test_constructor(self):
        with pytest.raises(ValueError, match="global"):
            meta_model(2, "inria", "global")
        with pytest.raises(ValueError, match="variant"):
            meta_model(2, "cityscapes", "full")
        with pytest.raises(ValueError, match="stage"):
            meta_model(2, "inria", "mode3")
        with pytest.raises(TypeError, match="num_classes"):
            meta_model(2.0, "inria", "fcn")

    def test_forward(self):
        model = meta_model(7, "deepglobe", "full")
        with torch.device("meta"):
            x = torch.empty(2, 3, 16, 16)
            with pytest.raises(ValueError, match="takes 2 context"):
                model(x, (x,))
            with pytest.raises(ValueError, match="takes 2 context"):
                model(x)
            with pytest.raises(ValueError, match="batch 3"):
                model(x, (torch.empty(3, 3, 16, 16), x))
            with pytest.raises(ValueError, match="is None"):
                model(x, (x, None))
            with pytest.raises(ValueError, match="3 channels"):
                model(torch.empty(2, 4, 16, 16), (x, x))
            with pytest.raises(ValueError, match="4-D"):
                model(x[0], (x, x))
            with pytest.raises(TypeError, match="tuple"):
                model(x, x)
        with pytest.raises(ValueError, match="takes 0 context"):
            meta_model(2, "inria", "fcn")(torch.empty(1, 3, 8, 8, device="meta"),
                                          (torch.empty(1, 3, 8, 8, device="meta"),))


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------


def feature_aliases(i: int) -> list[str]:
    """Official names of VGG features[i] (reference/fctl.md §3.2, §3.7)."""
    blk, j = (3, i) if i < 17 else (4, i - 17) if i < 24 else (5, i - 24)
    return [f"vgg.features.{i}", f"pool{blk}.{j}"]


HEAD = {"encoder.conv6": "output.0", "encoder.conv7": "output.3", "decoder.score": "output.6",
        "decoder.score_pool3": "adj_pool3", "decoder.score_pool4": "adj_pool4",
        "decoder.up2": "up_output", "decoder.up2_pool4": "up_pool4_out",
        "decoder.up8": "up_final"}


def official_names(model: FCtL, key: str) -> list[str]:
    """The official key(s) holding our ``key`` (written from the reference's naming facts)."""
    mod, _, leaf = key.rpartition(".")
    if key.startswith("encoder.features."):
        return [f"{a}.{leaf}" for a in feature_aliases(int(key.split(".")[2]))]
    if mod in HEAD:
        return [f"{HEAD[mod]}.{leaf}"]
    if key.startswith("correlations."):
        _, branch, part = key.split(".", 2)
        if model.variant == "inria":  # one module: medium "", large "_1", self "_2"
            sfx = {"medium": "", "large": "_1", "self": "_2"}[branch]
            base, _, leaf2 = part.partition(".")
            return [f"big_attention.{base}{sfx}" + (f".{leaf2}" if leaf2 else "")]
        pre = "big" if model.stage == "single_context" else \
            {"self": "local", "medium": "medium", "large": "large"}[branch]
        return [f"{pre}.{part}"]
    if key.startswith("fusion."):
        rest = key[len("fusion."):]
        pre = "big_attention." if model.variant == "inria" else ""
        if rest.startswith("trans"):
            return [pre + rest]
        kind, i, leaf2 = rest.split(".")
        return [f"{pre}{'in' if kind == 'in_convs' else 'out'}_{int(i) + 1}.{leaf2}"]
    raise AssertionError(key)


def official_state(model: FCtL) -> dict:
    """``model`` saved as the official code would (DataParallel prefix, aliases, classifier)."""
    sd = {}
    for key, t in model.state_dict().items():
        if key.startswith("context_encoders."):
            continue
        for name in official_names(model, key):
            sd["module." + name] = t
    for j in (0, 3, 6):  # the unused ImageNet classifier (placeholders: never read)
        sd[f"module.vgg.classifier.{j}.weight"] = torch.zeros(2, 2)
        sd[f"module.vgg.classifier.{j}.bias"] = torch.zeros(2)
    return sd


def official_context_state(encoder) -> dict:
    """A stage-2 checkpoint as seen by a context encoder: vgg.features / pool* / big_pool*."""
    sd = {}
    for key, t in encoder.state_dict().items():
        i, leaf = int(key.split(".")[1]), key.rsplit(".", 1)[1]
        for name in feature_aliases(i):
            sd[f"module.{name}.{leaf}"] = t
            if name.startswith("pool"):
                sd[f"module.big_{name}.{leaf}"] = t
    sd["module.output.6.weight"] = torch.zeros(2, 4096, 1, 1)
    return sd


class TestOfficialCheckpoints:
    @pytest.mark.parametrize("fixture", ["inria_full", "dg_full"])
    def test_round_trip_full(self, fixture, request):
        src = request.getfixturevalue(fixture)
        main = official_state(src)
        ctxs = tuple(official_context_state(src.context_encoders[n]) for n in ("medium", "large"))
        dst = empty_model(src.num_classes, src.variant, "full")
        rep = load_official_checkpoints(dst, main, ctxs)
        for key, t in dst.state_dict().items():
            assert torch.equal(t, src.state_dict()[key]), key
        assert set(rep.unused["main"]) == {f"vgg.classifier.{j}.{p}" for j in (0, 3, 6)
                                           for p in ("weight", "bias")}
        assert rep.unused["contexts[0]"] == ["output.6.weight"]
        assert len(rep.loaded) == len(dst.state_dict())
        del dst

    def test_round_trip_single_context_deepglobe(self, dg_full):
        dst = empty_model(7, "deepglobe", "single_context")
        main = {}
        for key, t in dg_full.state_dict().items():
            if key.startswith(("encoder.", "decoder.")):
                for name in official_names(dst, key):
                    main["module." + name] = t
        for key, t in dg_full.correlations["medium"].state_dict().items():
            main[f"module.big.{key}"] = t
        rep = load_official_checkpoints(dst, main)
        assert torch.equal(dst.correlations["medium"].gamma, dg_full.correlations["medium"].gamma)
        assert torch.equal(dst.encoder.features[28].weight, dg_full.encoder.features[28].weight)
        assert rep.unused["main"] == []

    def test_inria_stage2_checkpoint_reports_unbuilt_branches(self, inria_full):
        # B10 (mode 2) holds all three branches and the fusion; the stage builds one branch.
        main = official_state(inria_full)
        dst = empty_model(2, "inria", "single_context")
        rep = load_official_checkpoints(dst, main)
        assert "big_attention.conv_query_1.weight" in rep.unused["main"]
        assert "big_attention.trans.weight" in rep.unused["main"]
        assert torch.equal(dst.correlations["medium"].conv_key.weight,
                           inria_full.correlations["medium"].conv_key.weight)

    def test_missing_weight_is_refused(self, dg_full):
        main = official_state(dg_full)
        ctxs = tuple(official_context_state(dg_full.context_encoders[n])
                     for n in ("medium", "large"))
        del main["module.trans.weight"]
        dst = empty_model(7, "deepglobe", "full")
        with torch.no_grad():
            dst.decoder.score.weight.fill_(0.25)
        with pytest.raises(ValueError, match=r"fusion\.trans\.weight"):
            load_official_checkpoints(dst, main, ctxs)
        assert bool((dst.decoder.score.weight == 0.25).all())  # untouched
        main = official_state(dg_full)
        with pytest.raises(ValueError, match="contexts="):
            load_official_checkpoints(dst, main)
        del ctxs[1]["module.big_pool5.4.bias"], ctxs[1]["module.pool5.4.bias"]
        del ctxs[1]["module.vgg.features.28.bias"]
        with pytest.raises(ValueError, match=r"context_encoders\.large\.features\.28\.bias"):
            load_official_checkpoints(dst, main, ctxs)

    def test_disagreeing_aliases_and_bad_types(self, inria_full, tmp_path):
        main = official_state(inria_full)
        main["module.vgg.features.0.bias"] = main["module.pool3.0.bias"] + 1
        dst = meta_model(2, "inria", "fcn")
        with pytest.raises(ValueError, match="differ"):
            load_official_checkpoints(dst, main)
        with pytest.raises(ValueError, match="context"):
            load_official_checkpoints(dst, main, ({},))
        with pytest.raises(TypeError, match="state dict"):
            load_official_checkpoints(dst, 3)
        with pytest.raises(TypeError, match="FCtL"):
            load_official_checkpoints(torch.nn.Linear(1, 1), main)

    def test_file_and_wrong_classes(self, tmp_path):
        src = empty_model(2, "inria", "fcn")
        with torch.no_grad():
            for p in src.parameters():
                p.fill_(0.5)
        path = tmp_path / "Bfcn.epoch.pth"
        torch.save({"state_dict": official_state(src)}, path)
        dst = empty_model(2, "inria", "fcn")
        load_official_checkpoints(dst, path)
        assert bool((dst.decoder.score.weight == 0.5).all())
        with pytest.raises(ValueError, match="number of classes"):
            load_official_checkpoints(meta_model(7, "inria", "fcn"), path)

    def test_load_context_encoders(self, dg_full):
        dst = empty_model(7, "deepglobe", "full")
        dst.load_context_encoders(medium=dg_full, large=dg_full.context_encoders["large"])
        assert torch.equal(dst.context_encoders["medium"].features[0].weight,
                           dg_full.encoder.features[0].weight)
        assert torch.equal(dst.context_encoders["large"].features[28].bias,
                           dg_full.context_encoders["large"].features[28].bias)
        sd = {"module.encoder." + k: v for k, v in dg_full.encoder.state_dict().items()}
        dst.load_context_encoders(large=sd)
        assert torch.equal(dst.context_encoders["large"].features[5].weight,
                           dg_full.encoder.features[5].weight)
        del sd["module.encoder.features.5.weight"]
        with pytest.raises(ValueError, match=r"features\.5\.weight"):
            dst.load_context_encoders(large=sd)
        assert not any(p.requires_grad for p in dst.context_encoders.parameters())


def filled_model(*args, value: float = 0.5) -> FCtL:
    """An uninitialised model with every tensor set (its memory may hold NaN otherwise)."""
    model = empty_model(*args)
    with torch.no_grad():
        for t in model.state_dict().values():
            t.fill_(value)
    return model


class TestOfficialLoaderIsStrict:
    """Issue 23: exact shapes, warned extra keys, both sides of a renamed key, stage starts."""

    def test_other_layout_is_refused_with_both_shapes(self):
        src = filled_model(2, "inria", "fcn")
        main = official_state(src)
        # (2, 256, 1, 1) stored as (256, 2): the same 512 numbers, transposed. The old loader
        # compared element counts and reshaped it into place, scrambling the weight.
        main["module.adj_pool3.weight"] = main["module.adj_pool3.weight"].flatten(1).t().clone()
        dst = empty_model(2, "inria", "fcn")
        with torch.no_grad():
            dst.decoder.score_pool3.weight.fill_(0.25)
        with pytest.raises(ValueError, match=r"\(256, 2\).*decoder\.score_pool3\.weight.*"
                                             r"\(2, 256, 1, 1\)"):
            load_official_checkpoints(dst, main)
        assert bool((dst.decoder.score_pool3.weight == 0.25).all())  # untouched
        main["module.adj_pool3.weight"] = torch.zeros(7, 256, 1, 1)  # another class count
        with pytest.raises(ValueError, match="number of classes"):
            load_official_checkpoints(dst, main)

    def test_unused_keys_are_warned_by_name(self, dg_full):
        src = filled_model(2, "inria", "fcn")
        main = official_state(src)
        main["module.extra_head.weight"] = torch.zeros(3)
        with pytest.warns(UserWarning, match=r"extra_head\.weight"):
            rep = load_official_checkpoints(empty_model(2, "inria", "fcn"), main)
        assert "extra_head.weight" in rep.unused["main"]
        # A final-stage checkpoint covers a stage-1 model completely: the 32 correlation and
        # fusion tensors it leaves behind are named, the ImageNet classifier is not.
        full = official_state(dg_full)
        with pytest.warns(UserWarning) as record:
            load_official_checkpoints(empty_model(7, "deepglobe", "fcn"), full)
        text = " ".join(str(w.message) for w in record)
        assert "32 key(s)" in text and "trans.weight" in text and "local.gamma" in text
        assert "vgg.classifier" not in text
        with warnings.catch_warnings():  # the matching stage: nothing to warn about
            warnings.simplefilter("error")
            load_official_checkpoints(empty_model(2, "inria", "fcn"), official_state(src))

    def test_renamed_key_error_names_both_keys(self, dg_full):
        main = official_state(dg_full)
        ctxs = tuple(official_context_state(dg_full.context_encoders[n])
                     for n in ("medium", "large"))
        main["module.transform.weight"] = main.pop("module.trans.weight")
        with pytest.raises(ValueError) as err:
            load_official_checkpoints(empty_model(7, "deepglobe", "full"), main, ctxs)
        assert "fusion.trans.weight" in str(err.value)  # the missing one
        assert "main: transform.weight" in str(err.value)  # and what the file holds instead

    def test_partial_start_lists_what_stayed_initialised(self, dg_full):
        # Released train_all.sh starts the DeepGlobe final stage from Afcn (mode 1): the
        # official loader keeps the matching keys, the rest keeps its initialisation.
        afcn = official_state(dg_full)
        afcn = {k: v for k, v in afcn.items()
                if not k.startswith(("module.local.", "module.medium.", "module.large.",
                                     "module.in_", "module.trans", "module.out_"))}
        ctxs = tuple(official_context_state(dg_full.context_encoders[n])
                     for n in ("medium", "large"))
        dst = empty_model(7, "deepglobe", "full")
        with pytest.raises(ValueError, match="partial=True"):
            load_official_checkpoints(dst, afcn, ctxs)
        with torch.no_grad():
            for p in dst.parameters():
                p.fill_(0.5)
        rep = load_official_checkpoints(dst, afcn, ctxs, partial=True)
        own = [k for k in dst.state_dict() if k.startswith(("correlations.", "fusion."))]
        assert sorted(rep.initialised) == sorted(own) and len(own) == 32
        assert all(bool((dst.state_dict()[k] == 0.5).all()) for k in own)
        assert torch.equal(dst.encoder.features[0].weight, dg_full.encoder.features[0].weight)
        assert torch.equal(dst.context_encoders["large"].features[28].weight,
                           dg_full.context_encoders["large"].features[28].weight)
        assert "32 stayed initialised" in str(rep)

    def test_contexts_only_and_contexts_left_alone(self, dg_full):
        ctxs = tuple(official_context_state(dg_full.context_encoders[n])
                     for n in ("medium", "large"))
        dst = empty_model(7, "deepglobe", "full")
        with torch.no_grad():
            for p in dst.parameters():
                p.fill_(0.5)
        rep = load_official_checkpoints(dst, None, ctxs)
        assert all(k.startswith("context_encoders.") for k in rep.loaded)
        assert bool((dst.decoder.score.weight == 0.5).all())
        assert torch.equal(dst.context_encoders["medium"].features[5].weight,
                           dg_full.context_encoders["medium"].features[5].weight)
        before = dst.context_encoders["medium"].features[5].weight.clone()
        rep = load_official_checkpoints(dst, official_state(dg_full), None)
        assert torch.equal(dst.context_encoders["medium"].features[5].weight, before)
        assert torch.equal(dst.decoder.score.weight, dg_full.decoder.score.weight)
        with pytest.raises(ValueError, match="nothing to load"):
            load_official_checkpoints(dst, None)
