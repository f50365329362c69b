"""Tests of zoo.backbones.vgg: the FCN-8s VGG16 (conv1_1 pad 100, ceil-mode pools, taps).

Shapes are checked on the meta device (no compute) against the closed-form sizes, values
against a naive functional VGG16 written here from configuration D, and the ImageNet loader
against a state dict with torchvision's VGG16 key names and shapes.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.backbones.vgg import VGG16, load_state_file, load_vgg16_imagenet

# Configuration D, written out independently of the module: (features index, cin, cout) of
# each conv, and the indices of the max-pools.
CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
         (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
         (26, 512, 512), (28, 512, 512)]
POOLS = [4, 9, 16, 23, 30]


def expected_taps(h: int) -> tuple[int, int, int]:
    """pool3/pool4/pool5 side for an input side h (pad 100, 3x3 convs, ceil pools)."""
    s = h + 2 * 100 - 2  # conv1_1 with padding 100; the other convs keep the size
    sizes = []
    for _ in range(5):
        s = math.ceil(s / 2)
        sizes.append(s)
    return sizes[2], sizes[3], sizes[4]


def naive_vgg(x: torch.Tensor, sd: dict, with_fc: bool) -> tuple:
    """VGG16-D with FCN-8s changes from the state dict, layer by layer (eval mode)."""
    taps = []
    conv_at = {i: (ci, co) for i, ci, co in CONVS}
    for i in range(31):
        if i in conv_at:
            x = F.relu(F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"],
                                padding=100 if i == 0 else 1))
        elif i in POOLS:
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            if i in (16, 23, 30):
                taps.append(x)
    if not with_fc:
        return tuple(taps), None
    fc = F.relu(F.conv2d(taps[-1], sd["conv6.weight"], sd["conv6.bias"]))
    fc = F.relu(F.conv2d(fc, sd["conv7.weight"], sd["conv7.bias"]))
    return tuple(taps), fc


@pytest.fixture(scope="module")
def vgg_fc() -> VGG16:
    torch.manual_seed(0)
    return VGG16(include_fc=True).eval()


class TestVGG16Shapes:
    @pytest.mark.parametrize("size", [1, 32, 64, 128, 508, (40, 71)])
    def test_taps_meta(self, size):
        h, w = (size, size) if isinstance(size, int) else size
        with torch.device("meta"):
            enc = VGG16()
            p3, p4, p5 = enc(torch.empty(2, 3, h, w))
            fc = enc.fc(p5)
        eh, ew = expected_taps(h), expected_taps(w)
        assert p3.shape == (2, 256, eh[0], ew[0])
        assert p4.shape == (2, 512, eh[1], ew[1])
        assert p5.shape == (2, 512, eh[2], ew[2])
        assert fc.shape == (2, 4096, eh[2] - 6, ew[2] - 6)

    def test_reference_sizes(self):
        # reference/fctl.md: 32 -> pool5 8, 64 -> 9, 128 -> 11, 508 -> 89/45/23 and fc 17.
        with torch.device("meta"):
            enc = VGG16()
            assert [enc(torch.empty(1, 3, s, s))[2].shape[-1] for s in (32, 64, 128)] == [8, 9, 11]
            p3, p4, p5 = enc(torch.empty(1, 3, 508, 508))
            assert (p3.shape[-1], p4.shape[-1], p5.shape[-1]) == (89, 45, 23)
            assert enc.fc(p5).shape[-2:] == (17, 17)

    def test_plain_vgg_options(self):
        with torch.device("meta"):
            enc = VGG16(conv1_padding=1, ceil_mode=False, include_fc=False)
            p3, p4, p5 = enc(torch.empty(1, 3, 224, 224))
        assert (p3.shape[-1], p4.shape[-1], p5.shape[-1]) == (28, 14, 7)


class TestVGG16Structure:
    def test_state_dict_keys_match_imagenet_names(self):
        with torch.device("meta"):
            enc = VGG16()
        keys = {f"features.{i}.{p}" for i, _, _ in CONVS for p in ("weight", "bias")}
        keys |= {f"conv{k}.{p}" for k in (6, 7) for p in ("weight", "bias")}
        assert set(enc.state_dict()) == keys
        with torch.device("meta"):
            assert set(VGG16(include_fc=False).state_dict()) == {k for k in keys
                                                                 if k.startswith("features")}

    def test_parameter_counts(self):
        with torch.device("meta"):
            enc = VGG16()
        feats = sum(9 * ci * co + co for _, ci, co in CONVS)
        assert feats == 14_714_688  # the 14.71 M of reference/fctl.md §3.6
        assert sum(p.numel() for p in enc.features.parameters()) == feats
        assert sum(p.numel() for p in enc.conv6.parameters()) == 4096 * 25088 + 4096
        assert sum(p.numel() for p in enc.conv7.parameters()) == 4096 * 4096 + 4096

    def test_tap_slices(self):
        with torch.device("meta"):
            enc = VGG16()
        assert len(enc.features) == 31
        assert enc.pool3[0] is enc.features[0] and len(enc.pool3) == 17
        assert enc.pool4[0] is enc.features[17] and len(enc.pool4) == 7
        assert enc.pool5[0] is enc.features[24] and len(enc.pool5) == 7
        assert enc.features[0].padding == (100, 100)
        assert all(enc.features[i].ceil_mode for i in POOLS)


class TestVGG16Values:
    def test_matches_naive(self, vgg_fc):
        x = torch.rand(2, 3, 5, 7)
        with torch.no_grad():
            taps = vgg_fc(x)
            fc = vgg_fc.fc(taps[2])
            ref_taps, ref_fc = naive_vgg(x, vgg_fc.state_dict(), True)
        for a, b in zip(taps, ref_taps):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fc, ref_fc, rtol=1e-4, atol=1e-5)

    def test_channels_last_and_strided(self, vgg_fc):
        x = torch.rand(1, 3, 9, 12)
        with torch.no_grad():
            a = vgg_fc(x)[2]
            b = vgg_fc(x.contiguous(memory_format=torch.channels_last))[2]
            c = vgg_fc(torch.rand(1, 3, 12, 9).transpose(2, 3).copy_(x))[2]
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


def fake_imagenet_state(seed: int = 0, with_classifier: bool = True) -> dict:
    """A state dict with torchvision VGG16's key names and shapes (random values)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, ci, co in CONVS:
        sd[f"features.{i}.weight"] = torch.randn(co, ci, 3, 3, generator=g)
        sd[f"features.{i}.bias"] = torch.randn(co, generator=g)
    if with_classifier:
        for j, (fi, fo) in {0: (25088, 4096), 3: (4096, 4096), 6: (4096, 1000)}.items():
            sd[f"classifier.{j}.weight"] = torch.randn(fo, fi, generator=g)
            sd[f"classifier.{j}.bias"] = torch.randn(fo, generator=g)
    return sd


class TestLoadImagenet:
    def test_loads_and_reshapes_classifier(self):
        src = fake_imagenet_state()
        enc = VGG16()
        rep = load_vgg16_imagenet(enc, {"module." + k: v for k, v in src.items()})
        for i, _, _ in CONVS:
            assert torch.equal(enc.features[i].weight, src[f"features.{i}.weight"])
            assert torch.equal(enc.features[i].bias, src[f"features.{i}.bias"])
        # FC6 as a 7x7 conv: out[o] = Σ W[o, c*49 + y*7 + x] · f[c, y, x] (torchvision's
        # flatten order after the 7x7 adaptive pool).
        # In float64 (the loaded float32 values exactly), so the comparison tests the
        # reshaping and not which CPU kernel summed the 25088 products in float32: the bound
        # is the worst-case rounding of any summation order, K·u·Σ|w·f| (+ the bias's).
        f = torch.randn(1, 512, 7, 7, generator=torch.Generator().manual_seed(6),
                        dtype=torch.float64)
        w, b = src["classifier.0.weight"].double(), src["classifier.0.bias"].double()
        lin = F.linear(f.flatten(1), w, b)
        with torch.no_grad():
            conv = F.conv2d(f, enc.conv6.weight.double(), enc.conv6.bias.double()).flatten(1)
        K = f[0].numel()
        bound = (K + 2) * 2.0 ** -53 * (F.linear(f.flatten(1).abs(), w.abs()) + b.abs())
        assert ((conv - lin).abs() <= bound).all()
        assert torch.equal(enc.conv7.weight.flatten(1), src["classifier.3.weight"])
        assert torch.equal(enc.conv7.bias, src["classifier.3.bias"])
        assert rep["unused"] == ["classifier.6.bias", "classifier.6.weight"]
        assert len(rep["loaded"]) == 30

    @pytest.mark.parametrize("ext", [".pth", ".safetensors"])
    def test_file_round_trip(self, tmp_path, ext):
        src = fake_imagenet_state(1, with_classifier=False)
        path = tmp_path / ("w" + ext)
        if ext == ".pth":
            torch.save(src, path)
        else:
            from safetensors.torch import save_file

            save_file(src, str(path))
        enc = VGG16(include_fc=False)
        load_vgg16_imagenet(enc, path)
        assert all(torch.equal(v, src[k]) for k, v in enc.state_dict().items())
        assert set(load_state_file(path)) == set(src)

    def test_missing_key_raises(self):
        src = fake_imagenet_state(2, with_classifier=False)
        del src["features.26.bias"]
        enc = VGG16(include_fc=False)
        with pytest.raises(ValueError, match=r"features\.26\.bias"):
            load_vgg16_imagenet(enc, src)
        with torch.device("meta"):
            enc_fc = VGG16()  # the error comes before any copy
        with pytest.raises(ValueError, match=r"classifier\.0\.weight"):
            load_vgg16_imagenet(enc_fc, fake_imagenet_state(2, with_classifier=False))

    def test_wrong_shape_raises(self):
        src = fake_imagenet_state(3, with_classifier=False)
        src["features.0.weight"] = torch.zeros(64, 3, 5, 5)
        with pytest.raises(ValueError, match="shape"):
            load_vgg16_imagenet(VGG16(include_fc=False), src)

    def test_bad_files_and_models(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="Nothing is downloaded"):
            load_vgg16_imagenet(VGG16(include_fc=False), tmp_path / "absent.pth")
        bad = tmp_path / "bad.pth"
        bad.write_bytes(b"not a checkpoint")
        with pytest.raises(ValueError, match="cannot read weights file"):
            load_vgg16_imagenet(VGG16(include_fc=False), bad)
        with pytest.raises(TypeError, match="model.encoder"):
            load_vgg16_imagenet(torch.nn.Linear(2, 2), {})


class TestVGG16BadInput:
    def test_errors(self):
        with torch.device("meta"):
            enc = VGG16(include_fc=False)
            with pytest.raises(ValueError, match="3 channels"):
                enc(torch.empty(1, 4, 8, 8))
            with pytest.raises(ValueError, match="4-D"):
                enc(torch.empty(3, 8, 8))
            with pytest.raises(RuntimeError, match="include_fc"):
                enc.fc(torch.empty(1, 512, 8, 8))
        with pytest.raises(TypeError, match="floating"):
            VGG16(include_fc=False)(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
        with pytest.raises(ValueError, match="dropout"):
            VGG16(dropout=1.5)
