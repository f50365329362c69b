"""STDC1 shallow network: shapes, parameter count, loading the STDC1 ImageNet file layout.

Oracles: the key/shape list of the full STDC1 (STDCNet813) ImageNet checkpoint is written
out here from the published architecture (``features.0`` ... ``features.7``, ``conv_last``,
``fc``, ``bn``, ``linear`` and the ``x2``...``x32`` aliases), and a functional forward pass
(plain torch.nn.functional calls on the raw state dict) checks the loaded model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.backbones.resnet import WeightsError
from zoo.backbones.stdc import STDCShallowNet, load_stdc1_imagenet, stdc1_shallow

# (in, out, stride) of the CatBottlenecks features.2 ... features.7 of STDC1.
STDC1_BLOCKS = [(64, 256, 2), (256, 256, 1), (256, 512, 2), (512, 512, 1), (512, 1024, 2),
                (1024, 1024, 1)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _bn(sd, p, c, g, extra=True):
    sd[p + ".weight"] = torch.rand(c, generator=g) + 0.5
    sd[p + ".bias"] = torch.randn(c, generator=g) * 0.1
    sd[p + ".running_mean"] = torch.randn(c, generator=g) * 0.1
    sd[p + ".running_var"] = torch.rand(c, generator=g) + 0.5
    if extra:
        sd[p + ".num_batches_tracked"] = torch.tensor(3)


def _w(shape, g):
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return torch.randn(*shape, generator=g) * (2.0 / fan_in) ** 0.5


def stdc1_imagenet_sd(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd: dict = {}
    for i, (cin, cout) in enumerate(((3, 32), (32, 64))):
        sd[f"features.{i}.conv.weight"] = _w((cout, cin, 3, 3), g)
        _bn(sd, f"features.{i}.bn", cout, g)
    for j, (cin, cout, s) in enumerate(STDC1_BLOCKS):
        p = f"features.{j + 2}"
        widths = [cout // 2, cout // 4, cout // 8, cout // 8]
        prev = cin
        for k, c in enumerate(widths):
            kk = 1 if k == 0 else 3
            sd[f"{p}.conv_list.{k}.conv.weight"] = _w((c, prev, kk, kk), g)
            _bn(sd, f"{p}.conv_list.{k}.bn", c, g)
            prev = c
        if s == 2:
            sd[f"{p}.avd_layer.0.weight"] = _w((cout // 2, 1, 3, 3), g)
            _bn(sd, f"{p}.avd_layer.1", cout // 2, g)
    sd["conv_last.conv.weight"] = _w((1024, 1024, 1, 1), g)
    _bn(sd, "conv_last.bn", 1024, g)
    sd["fc.weight"] = _w((1024, 1024), g)
    _bn(sd, "bn", 1024, g)
    sd["linear.weight"] = _w((1000, 1024), g)
    # STDCNet813 also registers its stages as x2/x4/x8/x16/x32 (aliases of features.*).
    alias = {"x2": [0], "x4": [1], "x8": [2, 3], "x16": [4, 5], "x32": [6, 7]}
    for name, idx in alias.items():
        for pos, i in enumerate(idx):
            for k in [k for k in list(sd) if k.startswith(f"features.{i}.")]:
                sd[f"{name}.{pos}." + k[len(f"features.{i}."):]] = sd[k]
    return sd


def _f_bn(x, w, p):
    return F.batch_norm(x, w[p + ".running_mean"], w[p + ".running_var"], w[p + ".weight"],
                        w[p + ".bias"], False, 0.0, 1e-5)


def _convx(x, w, p, stride=1):
    k = w[p + ".conv.weight"]
    return F.relu(_f_bn(F.conv2d(x, k, stride=stride, padding=k.shape[-1] // 2), w, p + ".bn"))


def reference_forward(sd: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """STDC1 stages 1-2 (ISDNet's ShallowNet) from the raw state dict, float64."""
    w = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    x = _convx(x, w, "features.0", 2)
    x = _convx(x, w, "features.1", 2)
    outs = []
    for j, (_, cout, s) in enumerate(STDC1_BLOCKS[:4]):
        p = f"features.{j + 2}"
        first = _convx(x, w, p + ".conv_list.0")
        out = first
        if s == 2:
            out = _f_bn(F.conv2d(first, w[p + ".avd_layer.0.weight"], stride=2, padding=1,
                                 groups=cout // 2), w, p + ".avd_layer.1")
            first = F.avg_pool2d(first, 3, 2, 1)
        parts = [first]
        for k in range(1, 4):
            out = _convx(out, w, f"{p}.conv_list.{k}")
            parts.append(out)
        x = torch.cat(parts, 1)
        if j in (1, 3):
            outs.append(x)
    return outs[0], outs[1]


class TestSTDCShallowNet:
    @pytest.mark.parametrize("size", [(64, 64), (70, 45), (17, 33)])
    def test_shapes(self, size):
        H, W = size
        net = STDCShallowNet(6).eval()
        with torch.no_grad():
            f8, f16 = net(torch.rand(2, 6, H, W))
        h8, w8 = H, W
        for _ in range(3):
            h8, w8 = (h8 + 1) // 2, (w8 + 1) // 2
        assert tuple(f8.shape) == (2, 256, h8, w8)
        assert tuple(f16.shape) == (2, 512, (h8 + 1) // 2, (w8 + 1) // 2)

    def test_parameter_count_matches_isdnet(self):
        # ISDNet's ShallowNet(6 ch): 1.279 M parameters (shared/reference/wsdnet.md §8).
        n = sum(p.numel() for p in STDCShallowNet(6).parameters())
        assert round(n / 1e6, 3) == 1.279

    def test_state_dict_has_no_aliases(self):
        keys = list(STDCShallowNet(6).state_dict())
        assert all(k.startswith("features.") for k in keys)

    def test_block_num_check(self):
        from zoo.backbones.stdc import CatBottleneck

        with pytest.raises(ValueError, match="block_num"):
            CatBottleneck(64, 256, block_num=1)
        with pytest.raises(ValueError, match="stride"):
            CatBottleneck(64, 256, stride=3)


class TestLoadSTDC:
    def test_three_channel_file_matches_reference(self, tmp_path):
        sd = stdc1_imagenet_sd()
        path = tmp_path / "STDCNet813M_73.91.tar"
        torch.save({"epoch": 250, "state_dict": sd}, path)
        net = stdc1_shallow(3, weights=path).eval().double()
        x = torch.rand(1, 3, 48, 40, dtype=torch.float64)
        with torch.no_grad():
            got = net(x)
        for g_, r in zip(got, reference_forward(sd, x)):
            torch.testing.assert_close(g_, r, rtol=1e-9, atol=1e-9)

    @pytest.mark.parametrize("expand,factor", [("duplicate", 1.0), ("average", 0.5)])
    def test_six_channel_expansion(self, expand, factor):
        sd = stdc1_imagenet_sd()
        net = STDCShallowNet(6).eval().double()
        report = load_stdc1_imagenet(net, {"state_dict": sd}, expand=expand)
        w3 = sd["features.0.conv.weight"]
        torch.testing.assert_close(net.features[0].conv.weight.float(),
                                   torch.cat([w3, w3], dim=1) * factor)
        # A 6-channel input of two copies of an image = the 3-channel net on 2*factor * image.
        x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
        with torch.no_grad():
            got = net(torch.cat([x, x], 1))
        ref = reference_forward(sd, 2 * factor * x)
        for g_, r in zip(got, ref):
            torch.testing.assert_close(g_, r, rtol=1e-9, atol=1e-9)
        assert "features.6.conv_list.0.conv.weight" in report["ignored"]
        assert "x8.1.conv_list.3.bn.weight" in report["ignored"]
        assert all(k.startswith("features.") for k in report["loaded"])

    def test_prefixed_keys(self):
        sd = {"module." + k: v for k, v in stdc1_imagenet_sd().items()}
        net = STDCShallowNet(6)
        load_stdc1_imagenet(net, sd)
        assert torch.equal(net.features[5].conv_list[3].bn.running_var,
                           sd["module.features.5.conv_list.3.bn.running_var"])

    def test_missing_key_refused(self):
        sd = stdc1_imagenet_sd()
        del sd["features.3.conv_list.2.conv.weight"]
        with pytest.raises(WeightsError, match="lack 1 key.*features.3.conv_list.2.conv.weight"):
            load_stdc1_imagenet(STDCShallowNet(6), sd)

    def test_shape_mismatch_refused(self):
        sd = stdc1_imagenet_sd()
        sd["features.4.conv_list.1.conv.weight"] = torch.zeros(64, 256, 3, 3)
        with pytest.raises(WeightsError, match="shape mismatch.*features.4.conv_list.1"):
            load_stdc1_imagenet(STDCShallowNet(6), sd)

    def test_unexpected_key_refused(self):
        sd = stdc1_imagenet_sd()
        sd["features.2.skip.0.weight"] = torch.zeros(1)  # an AddBottleneck key
        with pytest.raises(WeightsError, match="does not have.*features.2.skip.0.weight"):
            load_stdc1_imagenet(STDCShallowNet(6), sd)
        report = load_stdc1_imagenet(STDCShallowNet(6), sd, strict=False)
        assert "features.2.skip.0.weight" in report["ignored"]

    def test_channels_not_a_multiple(self):
        with pytest.raises(WeightsError, match="multiple"):
            load_stdc1_imagenet(STDCShallowNet(4), stdc1_imagenet_sd())

    def test_bad_expand(self):
        with pytest.raises(ValueError, match="expand"):
            load_stdc1_imagenet(STDCShallowNet(6), stdc1_imagenet_sd(), expand="halve")
