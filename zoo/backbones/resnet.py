"""ResNet-18 V1c: the deep-stem, dilated ResNet-18 of mmsegmentation (WSDNet's deep branch).

V1c replaces ResNet's 7x7 stride-2 first convolution by a "deep stem" of three 3x3
convolutions (3->32 stride 2, 32->32, 32->64, each with BN and ReLU), then the usual 3x3
stride-2 max pool and four stages of two BasicBlocks (64, 128, 256, 512 channels). For
segmentation the last two stages keep their resolution and dilate instead
(``strides=(1, 2, 1, 1)``, ``dilations=(1, 1, 2, 4)``): output stride 8.

State-dict keys follow the two common ImageNet files, so that weights load from a local
file (nothing is downloaded):

* mmcv/mmseg ``resnet18_v1c``: ``stem.0.weight`` (conv), ``stem.1.*`` (BN), ``stem.3``/``4``,
  ``stem.6``/``7``, then ``layer1.0.conv1.weight``, ``layer1.0.bn1.*``, ...,
  ``layer2.0.downsample.0.weight`` / ``downsample.1.*``;
* torchvision's plain ``resnet18``: the same ``layer*`` keys, but a ``conv1``/``bn1`` stem and a
  ``fc`` classifier. Loading it into a V1c model fills everything but the stem.

See :func:`load_resnet18_imagenet`.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from zoo.core.errors import WeightsError
from zoo.core.weights import copy_state, list_keys, read_state_dict  # WeightsError re-exported

__all__ = [
    "BasicBlock",
    "ResNet18V1c",
    "WeightsError",
    "load_resnet18_imagenet",
    "read_state_dict",
    "resnet18_v1c",
]

NormLayer = Callable[[int], nn.Module]

# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet BasicBlock: 3x3 conv (stride, dilation) -> BN -> ReLU -> 3x3 conv -> BN, + skip.

    As in mmseg, only the first convolution is dilated; the second has dilation 1.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18V1c(nn.Module):
    """ResNet-18 with the V1c deep stem and dilated last stages (mmseg ``ResNetV1c``, depth 18).

    Convention:
        - input (B, in_channels, H, W); every stride-2 layer maps n -> ceil(n / 2), so with
          the default strides the stage outputs are (64, H/4), (128, H/8), (256, H/8) and
          (512, H/8), each side rounded up at every halving (64 -> 16, 8, 8, 8).
        - ``contract_dilation=True``: the first block of a dilated stage uses half the
          dilation (mmseg), i.e. layer3 blocks dilate (1, 2), layer4 blocks (2, 4).
        - ``deep_stem=False`` gives the torchvision 7x7 stem (keys ``conv1``, ``bn1``).
        - initialisation: Kaiming-normal (fan_out, ReLU) convolutions, BN weight 1 / bias 0.

    Args:
        in_channels: input channels (3 for ImageNet weights).
        deep_stem: V1c stem (three 3x3 convolutions) or the plain 7x7 one.
        strides: stride of layer1..layer4.
        dilations: dilation of layer1..layer4.
        contract_dilation: halve the dilation of each dilated stage's first block.
        norm_layer: normalisation factory, ``norm_layer(channels)``.

    Example:
        >>> net = ResNet18V1c().eval()
        >>> [tuple(f.shape[1:]) for f in net(torch.rand(1, 3, 64, 64))]
        [(64, 16, 16), (128, 8, 8), (256, 8, 8), (512, 8, 8)]
    """

    out_channels = (64, 128, 256, 512)

    def __init__(self, in_channels: int = 3, deep_stem: bool = True,
                 strides: Sequence[int] = (1, 2, 1, 1), dilations: Sequence[int] = (1, 1, 2, 4),
                 contract_dilation: bool = True, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError(f"ResNet18V1c(): `strides` and `dilations` need 4 entries (one per "
                             f"stage); got {tuple(strides)} and {tuple(dilations)}.")
        self.in_channels = in_channels
        self.deep_stem = deep_stem
        if deep_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 32, 3, stride=2, padding=1, bias=False),
                norm_layer(32),
                nn.ReLU(inplace=True),
                nn.Conv2d(32, 32, 3, padding=1, bias=False),
                norm_layer(32),
                nn.ReLU(inplace=True),
                nn.Conv2d(32, 64, 3, padding=1, bias=False),
                norm_layer(64),
                nn.ReLU(inplace=True),
            )
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = norm_layer(64)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, s, d) in enumerate(zip(self.out_channels, strides, dilations)):
            layer = self._make_layer(inplanes, planes, 2, s, d, contract_dilation, norm_layer)
            self.add_module(f"layer{i + 1}", layer)
            inplanes = planes
        self.reset_parameters()

    @staticmethod
    def _make_layer(inplanes: int, planes: int, blocks: int, stride: int, dilation: int,
                    contract_dilation: bool, norm_layer: NormLayer) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), norm_layer(planes))
        first = dilation // 2 if (contract_dilation and dilation > 1) else dilation
        layers = [BasicBlock(inplanes, planes, stride, first, downsample, norm_layer)]
        layers += [BasicBlock(planes, planes, 1, dilation, None, norm_layer)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_stem(self, x: Tensor) -> Tensor:
        """The stem before the max pool: (B, 64, ceil(H/2), ceil(W/2))."""
        if self.deep_stem:
            return self.stem(x)
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x: Tensor, return_stem: bool = False) -> tuple[Tensor, ...]:
        """Stage outputs ``(c1, c2, c3, c4)``; with ``return_stem`` the stem output first."""
        stem = self.forward_stem(x)
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return (stem, c1, c2, c3, c4) if return_stem else (c1, c2, c3, c4)


def resnet18_v1c(in_channels: int = 3, weights: str | os.PathLike | None = None,
                 **kwargs) -> ResNet18V1c:
    """Build :class:`ResNet18V1c` (output stride 8) and optionally load ImageNet weights.

    Args:
        in_channels: input channels.
        weights: local weights file for :func:`load_resnet18_imagenet`, or None.
        **kwargs: more :class:`ResNet18V1c` options.

    Returns:
        The model.
    """
    model = ResNet18V1c(in_channels=in_channels, **kwargs)
    if weights is not None:
        load_resnet18_imagenet(model, weights)
    return model


def load_resnet18_imagenet(model: ResNet18V1c, source: str | os.PathLike | Mapping[str, Tensor],
                           strict: bool = True) -> dict[str, list[str]]:
    """Load ImageNet ResNet-18 weights (V1c or plain torchvision) into ``model`` in place.

    Convention:
        - the file kind is detected from its keys: ``stem.0.weight`` -> mmcv ResNet18-V1c,
          ``conv1.weight`` -> plain (torchvision) ResNet-18. The four stages load from
          either; the stem loads only from a file with the model's kind of stem, otherwise
          it keeps its initialisation (reported under ``"kept"``).
        - a first convolution whose input channels differ from the file's (e.g. a model
          built with ``in_channels=48``) is kept at its initialisation (reported).
        - ``fc.*`` (the ImageNet classifier) is ignored; a missing ``num_batches_tracked``
          is fine (older files). Every other model key must be present with the same shape.
        - ``strict=True`` also refuses keys of the file that the model does not use
          (usually: the wrong file, e.g. a ResNet-50).

    Args:
        model: the model to fill.
        source: local file path (safetensors or torch.save) or a mapping.
        strict: refuse unexpected keys.

    Returns:
        ``{"loaded": [...], "kept": [...], "ignored": [...]}`` key lists.

    Raises:
        WeightsError: unreadable file, missing keys, shape mismatches, unexpected keys.

    Example:
        >>> net = ResNet18V1c()
        >>> report = load_resnet18_imagenet(net, net.state_dict())
        >>> report["kept"]
        []
    """
    op = "load_resnet18_imagenet"
    sd = read_state_dict(source)
    where = f" ({os.fspath(source)})" if not isinstance(source, Mapping) else ""
    if "stem.0.weight" in sd:
        file_deep = True
    elif "conv1.weight" in sd:
        file_deep = False
    else:
        raise WeightsError(f"{op}(): the weights{where} have neither 'stem.0.weight' (ResNet-V1c) "
                           f"nor 'conv1.weight' (torchvision ResNet); first keys: "
                           f"{list_keys(list(sd)[:8])}. Fix: pass an ImageNet ResNet-18 file.")
    own = model.state_dict()

    def is_stem(k: str) -> bool:
        return k.startswith(("stem.", "conv1.", "bn1."))

    first_conv = "stem.0.weight" if model.deep_stem else "conv1.weight"
    kept, use, ignored = [], {}, []
    for k in own:
        if is_stem(k) and model.deep_stem != file_deep:
            kept.append(k)
        elif k == first_conv and k in sd and sd[k].shape[1] != own[k].shape[1]:
            kept.append(k)
    missing = [k for k in own if k not in kept and k not in sd
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{op}(): the weights{where} lack {len(missing)} key(s) of the model: "
                           f"{list_keys(missing)}. Fix: pass an ImageNet ResNet-18 file "
                           f"(V1c or torchvision).")
    bad = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
           for k in own if k in sd and k not in kept and sd[k].shape != own[k].shape]
    if bad:
        raise WeightsError(f"{op}(): shape mismatch{where}: {'; '.join(bad[:6])}. Fix: the file "
                           f"is not a ResNet-18 (or the model was built with other widths).")
    unexpected = []
    for k in sd:
        if k in own:
            if k not in kept:
                use[k] = sd[k]
            else:
                ignored.append(k)
        elif k.startswith("fc.") or (is_stem(k) and model.deep_stem != file_deep):
            ignored.append(k)
        else:
            unexpected.append(k)
    if unexpected and strict:
        raise WeightsError(f"{op}(): the weights{where} hold {len(unexpected)} key(s) that a "
                           f"ResNet-18 does not have: {list_keys(unexpected)}. Fix: pass a "
                           f"ResNet-18 file, or strict=False to ignore them.")
    copy_state(model, use)
    return {"loaded": sorted(use), "kept": sorted(kept), "ignored": sorted(ignored + unexpected)}
