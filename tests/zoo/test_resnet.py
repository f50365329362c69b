"""ResNet18-V1c backbone: shapes, parameter count, weight loading from the common file layouts.

Oracles: the key/shape lists of the torchvision and mmcv ResNet-18 files are written out here
from their published layouts, and a functional forward pass (plain torch.nn.functional calls
on the raw state dict, following mmseg's ResNetV1c rules) checks that the loaded model
computes the same thing.
"""

from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from zoo.backbones.resnet import (
    ResNet18V1c,
    WeightsError,
    load_resnet18_imagenet,
    read_state_dict,
    resnet18_v1c,
)

PLANES = (64, 128, 256, 512)


pytestmark = pytest.mark.usefixtures("one_thread")


def _bn(sd: dict, prefix: str, c: int, g: torch.Generator) -> None:
    sd[prefix + ".weight"] = torch.rand(c, generator=g) + 0.5
    sd[prefix + ".bias"] = torch.randn(c, generator=g) * 0.1
    sd[prefix + ".running_mean"] = torch.randn(c, generator=g) * 0.1
    sd[prefix + ".running_var"] = torch.rand(c, generator=g) + 0.5
    sd[prefix + ".num_batches_tracked"] = torch.tensor(7)


def _conv(sd: dict, key: str, shape: tuple, g: torch.Generator) -> None:
    fan_in = shape[1] * shape[2] * shape[3]
    sd[key] = torch.randn(*shape, generator=g) * (2.0 / fan_in) ** 0.5


def _layers(sd: dict, g: torch.Generator) -> None:
    inplanes = 64
    for i, planes in enumerate(PLANES):
        for b in range(2):
            p = f"layer{i + 1}.{b}"
            _conv(sd, p + ".conv1.weight", (planes, inplanes if b == 0 else planes, 3, 3), g)
            _bn(sd, p + ".bn1", planes, g)
            _conv(sd, p + ".conv2.weight", (planes, planes, 3, 3), g)
            _bn(sd, p + ".bn2", planes, g)
            if b == 0 and inplanes != planes:
                _conv(sd, p + ".downsample.0.weight", (planes, inplanes, 1, 1), g)
                _bn(sd, p + ".downsample.1", planes, g)
        inplanes = planes


def torchvision_resnet18_sd(seed: int = 0) -> dict:
    """torchvision resnet18 keys: conv1/bn1 stem, layer1-4, fc."""
    g = torch.Generator().manual_seed(seed)
    sd: dict = {}
    _conv(sd, "conv1.weight", (64, 3, 7, 7), g)
    _bn(sd, "bn1", 64, g)
    _layers(sd, g)
    sd["fc.weight"] = torch.randn(1000, 512, generator=g) * 0.01
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def mmcv_resnet18_v1c_sd(seed: int = 1) -> dict:
    """mmcv ResNetV1c-18 keys: stem.0/1 (3->32, s2), stem.3/4 (32->32), stem.6/7 (32->64)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict = {}
    for conv, bn, cin, cout in ((0, 1, 3, 32), (3, 4, 32, 32), (6, 7, 32, 64)):
        _conv(sd, f"stem.{conv}.weight", (cout, cin, 3, 3), g)
        _bn(sd, f"stem.{bn}", cout, g)
    _layers(sd, g)
    return sd


def _f_bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"].double(), sd[p + ".running_var"].double(),
                        sd[p + ".weight"].double(), sd[p + ".bias"].double(), False, 0.0, 1e-5)


def reference_forward(sd: dict, x: torch.Tensor, deep_stem: bool = True) -> list[torch.Tensor]:
    """mmseg ResNetV1c(depth=18, strides=(1,2,1,1), dilations=(1,1,2,4), contract_dilation)."""
    w = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    if deep_stem:
        x = F.relu(_f_bn(F.conv2d(x, w["stem.0.weight"], stride=2, padding=1), w, "stem.1"))
        x = F.relu(_f_bn(F.conv2d(x, w["stem.3.weight"], padding=1), w, "stem.4"))
        x = F.relu(_f_bn(F.conv2d(x, w["stem.6.weight"], padding=1), w, "stem.7"))
    else:
        x = F.relu(_f_bn(F.conv2d(x, w["conv1.weight"], stride=2, padding=3), w, "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    outs = []
    for i, (stride, dil) in enumerate(zip((1, 2, 1, 1), (1, 1, 2, 4))):
        for b in range(2):
            p = f"layer{i + 1}.{b}"
            s = stride if b == 0 else 1
            d = (max(dil // 2, 1) if dil > 1 else 1) if b == 0 else dil
            out = F.relu(_f_bn(F.conv2d(x, w[p + ".conv1.weight"], stride=s, padding=d,
                                        dilation=d), w, p + ".bn1"))
            out = _f_bn(F.conv2d(out, w[p + ".conv2.weight"], padding=1), w, p + ".bn2")
            idn = x
            if p + ".downsample.0.weight" in w:
                idn = _f_bn(F.conv2d(x, w[p + ".downsample.0.weight"], stride=s), w,
                            p + ".downsample.1")
            x = F.relu(out + idn)
        outs.append(x)
    return outs


def _ceil_half(n: int) -> int:
    return (n + 1) // 2


class TestResNet18V1c:
    @pytest.mark.parametrize("size", [(64, 64), (65, 47), (33, 96)])
    def test_shapes(self, size):
        net = ResNet18V1c().eval()
        H, W = size
        with torch.no_grad():
            outs = net(torch.rand(1, 3, H, W))
        h, w = H, W
        for _ in range(2):  # stem stride 2, max pool
            h, w = _ceil_half(h), _ceil_half(w)
        expected = []
        for c, s in zip(PLANES, (1, 2, 1, 1)):
            if s == 2:
                h, w = _ceil_half(h), _ceil_half(w)
            expected.append((1, c, h, w))
        assert [tuple(o.shape) for o in outs] == expected

    def test_return_stem(self):
        net = ResNet18V1c().eval()
        with torch.no_grad():
            stem, *rest = net(torch.rand(2, 3, 40, 40), return_stem=True)
        assert tuple(stem.shape) == (2, 64, 20, 20) and len(rest) == 4

    def test_parameter_count_matches_isdnet(self):
        # ISDNet's ResNet18-V1c backbone: 11.196 M parameters (shared/reference/wsdnet.md §8).
        n = sum(p.numel() for p in ResNet18V1c().parameters())
        assert round(n / 1e6, 3) == 11.196

    def test_dilations_follow_mmseg(self):
        net = ResNet18V1c()
        got = [(getattr(net, f"layer{i}")[b].conv1.dilation[0],
                getattr(net, f"layer{i}")[b].conv1.stride[0]) for i in range(1, 5) for b in (0, 1)]
        assert got == [(1, 1), (1, 1), (1, 2), (1, 1), (1, 1), (2, 1), (2, 1), (4, 1)]
        assert all(getattr(net, f"layer{i}")[b].conv2.dilation[0] == 1
                   for i in range(1, 5) for b in (0, 1))

    def test_in_channels(self):
        net = ResNet18V1c(in_channels=48).eval()
        with torch.no_grad():
            assert net(torch.rand(1, 48, 32, 32))[-1].shape == (1, 512, 4, 4)

    def test_bad_options(self):
        with pytest.raises(ValueError, match="4 entries"):
            ResNet18V1c(strides=(1, 2, 1))


class TestLoadWeights:
    def test_v1c_file_loads_everything_and_matches_reference(self, tmp_path):
        sd = mmcv_resnet18_v1c_sd()
        path = tmp_path / "resnet18_v1c.pth"
        torch.save({"meta": {"epoch": 100}, "state_dict": sd}, path)
        net = resnet18_v1c(weights=path).eval().double()
        x = torch.rand(2, 3, 37, 50, dtype=torch.float64)
        with torch.no_grad():
            got = net(x)
        for g_, r in zip(got, reference_forward(sd, x)):
            torch.testing.assert_close(g_, r, rtol=1e-9, atol=1e-9)

    def test_report(self):
        sd = mmcv_resnet18_v1c_sd()
        net = ResNet18V1c()
        report = load_resnet18_imagenet(net, sd)
        assert report["kept"] == [] and report["ignored"] == []
        assert set(report["loaded"]) == set(sd)

    def test_torchvision_file_fills_all_but_the_stem(self, tmp_path):
        sd = torchvision_resnet18_sd()
        path = tmp_path / "resnet18-f37072fd.pth"
        torch.save(sd, path)
        net = ResNet18V1c()
        stem_before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("stem.")}
        report = load_resnet18_imagenet(net, path)
        own = net.state_dict()
        for k, v in sd.items():
            if k.startswith("layer"):
                assert torch.equal(own[k], v), k
        for k, v in stem_before.items():
            assert torch.equal(own[k], v), k
        assert set(report["kept"]) == set(stem_before)
        assert set(report["ignored"]) == {k for k in sd if k.startswith(("conv1.", "bn1.", "fc."))}

    def test_torchvision_file_into_plain_stem(self):
        sd = torchvision_resnet18_sd()
        net = ResNet18V1c(deep_stem=False).eval().double()
        load_resnet18_imagenet(net, sd)
        x = torch.rand(1, 3, 45, 45, dtype=torch.float64)
        with torch.no_grad():
            got = net(x)
        for g_, r in zip(got, reference_forward(sd, x, deep_stem=False)):
            torch.testing.assert_close(g_, r, rtol=1e-9, atol=1e-9)

    def test_safetensors_and_prefixes(self, tmp_path):
        from safetensors.torch import save_file

        sd = mmcv_resnet18_v1c_sd()
        path = tmp_path / "r18.safetensors"
        save_file({"backbone." + k: v.contiguous() for k, v in sd.items()}, str(path))
        net = ResNet18V1c()
        load_resnet18_imagenet(net, path)
        assert torch.equal(net.state_dict()["layer4.1.conv2.weight"], sd["layer4.1.conv2.weight"])
        assert set(read_state_dict({"module.backbone.a": torch.zeros(1)})) == {"a"}

    def test_wider_first_conv_is_kept(self):
        sd = mmcv_resnet18_v1c_sd()
        net = ResNet18V1c(in_channels=48)
        before = net.stem[0].weight.clone()
        report = load_resnet18_imagenet(net, sd)
        assert report["kept"] == ["stem.0.weight"]
        assert torch.equal(net.stem[0].weight, before)
        assert torch.equal(net.stem[1].weight, sd["stem.1.weight"])

    def test_missing_key_refused(self):
        sd = mmcv_resnet18_v1c_sd()
        del sd["layer3.1.bn2.running_var"]
        with pytest.raises(WeightsError, match="lack 1 key.*layer3.1.bn2.running_var"):
            load_resnet18_imagenet(ResNet18V1c(), sd)

    def test_shape_mismatch_refused(self):
        sd = mmcv_resnet18_v1c_sd()
        sd["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
        with pytest.raises(WeightsError, match="shape mismatch.*layer2.0.conv1.weight"):
            load_resnet18_imagenet(ResNet18V1c(), sd)

    def test_unexpected_keys(self):
        sd = mmcv_resnet18_v1c_sd()
        sd["layer1.0.conv3.weight"] = torch.zeros(256, 64, 1, 1)  # a ResNet-50 key
        with pytest.raises(WeightsError, match="does not have.*layer1.0.conv3.weight"):
            load_resnet18_imagenet(ResNet18V1c(), sd)
        report = load_resnet18_imagenet(ResNet18V1c(), sd, strict=False)
        assert "layer1.0.conv3.weight" in report["ignored"]

    def test_not_a_resnet(self):
        with pytest.raises(WeightsError, match="neither"):
            load_resnet18_imagenet(ResNet18V1c(), {"features.0.conv.weight": torch.zeros(1)})

    def test_missing_file(self, tmp_path):
        with pytest.raises(WeightsError, match="not found"):
            load_resnet18_imagenet(ResNet18V1c(), tmp_path / "nope.pth")

    def test_corrupt_file(self, tmp_path):
        path = tmp_path / "broken.pth"
        path.write_bytes(b"this is not a checkpoint")
        with pytest.raises(WeightsError, match="cannot read weights file"):
            read_state_dict(path)

    def test_arbitrary_pickle_refused(self, tmp_path):
        path = tmp_path / "evil.pth"
        # A global (here a stdlib function) must not be unpickled: weights_only refuses it.
        with open(path, "wb") as f:
            pickle.dump({"state_dict": {"a": torch.zeros(1)}, "hook": os.getcwd}, f, protocol=2)
        with pytest.raises(WeightsError, match="cannot read weights file"):
            read_state_dict(path)

    def test_non_tensor_entry(self):
        with pytest.raises(WeightsError, match="not a tensor"):
            read_state_dict({"conv1.weight": [1, 2, 3]})

    def test_bad_source_type(self):
        with pytest.raises(TypeError, match="path or a mapping"):
            read_state_dict(42)
