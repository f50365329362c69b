"""STDC1 (STDCNet813) cut to its first two stages: the shallow network of ISDNet and WSDNet.

The full STDC1 (Fan et al., CVPR 2021) is two ConvX layers (3x3 conv-BN-ReLU, stride 2)
followed by three stages of two CatBottlenecks. ISDNet keeps only the first two stages and
feeds it the 6-channel Laplacian residual image at full resolution:

=========  ==========================================  ========  ==========
feature    modules (``features.i``)                     channels  stride
=========  ==========================================  ========  ==========
x2         0: ConvX(in -> 32, 3x3, s2)                  32        1/2
x4         1: ConvX(32 -> 64, 3x3, s2)                  64        1/4
x8         2: CatBottleneck(64 -> 256, s2), 3: (256)    256       1/8
x16        4: CatBottleneck(256 -> 512, s2), 5: (512)   512       1/16
=========  ==========================================  ========  ==========

State-dict keys are those of the STDC-Seg ImageNet file (``STDCNet813M_73.91.tar``):
``features.0.conv.weight``, ``features.0.bn.*``, ``features.2.conv_list.0.conv.weight``,
``features.2.avd_layer.0.weight`` (depthwise stride-2 conv), ``features.2.avd_layer.1.*`` (its
BN), ... See :func:`load_stdc1_imagenet`.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.core.errors import WeightsError
from zoo.core.weights import copy_state, list_keys, read_state_dict

__all__ = ["CatBottleneck", "ConvX", "STDCShallowNet", "load_stdc1_imagenet", "stdc1_shallow"]

NormLayer = Callable[[int], nn.Module]


class ConvX(nn.Module):
    """STDC's basic layer: conv (no bias, padding k // 2) -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride,
                              padding=kernel // 2, bias=False)
        self.bn = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class CatBottleneck(nn.Module):
    """STDC's Short-Term Dense Concatenate block with ``block_num`` ConvX layers.

    Convention:
        - layer 0 is a 1x1 ConvX to ``out/2``; layer 1 a 3x3 ConvX to ``out/4``; each further
          layer halves again, the last keeping its input width (4 layers: out/2, out/4, out/8,
          out/8); the outputs of all layers are concatenated -> ``out`` channels.
        - ``stride=2``: layer 0's output goes through a depthwise 3x3 stride-2 conv + BN
          (``avd_layer``) before layer 1, and its own contribution to the concatenation is
          average-pooled (3x3, stride 2, padding 1, zero padding counted). Sizes n ->
          ceil(n / 2).
    """

    def __init__(self, in_channels: int, out_channels: int, block_num: int = 4, stride: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        if block_num < 2:
            raise ValueError(f"CatBottleneck(): `block_num` must be >= 2; got {block_num}.")
        if stride not in (1, 2):
            raise ValueError(f"CatBottleneck(): `stride` must be 1 or 2; got {stride}.")
        self.stride = stride
        half = out_channels // 2
        if stride == 2:
            self.avd_layer = nn.Sequential(
                nn.Conv2d(half, half, 3, stride=2, padding=1, groups=half, bias=False),
                norm_layer(half),
            )
        widths = [half]
        for i in range(1, block_num):
            if block_num == 2:
                widths.append(half)
            elif i < block_num - 1:
                widths.append(out_channels // 2 ** (i + 1))
            else:
                widths.append(widths[-1])
        self.conv_list = nn.ModuleList(
            [ConvX(in_channels, widths[0], kernel=1, norm_layer=norm_layer)]
            + [ConvX(widths[i - 1], widths[i], norm_layer=norm_layer) for i in range(1, block_num)]
        )

    def forward(self, x: Tensor) -> Tensor:
        first = self.conv_list[0](x)
        out = self.avd_layer(first) if self.stride == 2 else first
        parts = []
        for conv in self.conv_list[1:]:
            out = conv(out)
            parts.append(out)
        if self.stride == 2:
            first = F.avg_pool2d(first, 3, stride=2, padding=1)
        return torch.cat([first] + parts, dim=1)


class STDCShallowNet(nn.Module):
    """STDC1's first two stages on a ``in_channels`` input: features at 1/8 and 1/16.

    Convention:
        - input (B, in_channels, H, W) -> ``(feat8, feat16)`` = (B, 256, ceil(H/8), ceil(W/8))
          and (B, 512, ceil(H/16), ceil(W/16)) (each stride-2 layer rounds up).
        - ISDNet/WSDNet use ``in_channels=6`` (the two Laplacian residuals) and plain BN (the
          original hard-codes SyncBatchNorm; convert with
          ``nn.SyncBatchNorm.convert_sync_batchnorm`` for distributed training).
        - initialisation: Kaiming-normal (fan_out) convolutions, BN weight 1 / bias 0.
        - 1.279 M parameters with 6 input channels (ISDNet's count).

    Args:
        in_channels: input channels.
        base: width of the second ConvX (STDC1: 64).
        layers: CatBottlenecks per kept stage (STDC1: (2, 2)).
        block_num: ConvX layers per CatBottleneck (STDC1: 4).
        norm_layer: normalisation factory.

    Example:
        >>> f8, f16 = STDCShallowNet(6).eval()(torch.rand(1, 6, 64, 64))
        >>> tuple(f8.shape), tuple(f16.shape)
        ((1, 256, 8, 8), (1, 512, 4, 4))
    """

    def __init__(self, in_channels: int = 6, base: int = 64, layers: Sequence[int] = (2, 2),
                 block_num: int = 4, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.in_channels = in_channels
        feats: list[nn.Module] = [ConvX(in_channels, base // 2, 3, 2, norm_layer),
                                  ConvX(base // 2, base, 3, 2, norm_layer)]
        width = base
        self.stage_ends: list[int] = []
        for i, n in enumerate(layers):
            out = base * 2 ** (i + 2)
            for j in range(n):
                feats.append(CatBottleneck(width if j == 0 else out, out, block_num,
                                           2 if j == 0 else 1, norm_layer))
            width = out
            self.stage_ends.append(len(feats))
        self.features = nn.Sequential(*feats)
        self.out_channels = tuple(base * 2 ** (i + 2) for i in range(len(layers)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """One feature per kept stage: ``(feat8, feat16)`` for STDC1's two stages."""
        outs = []
        start = 0
        for end in self.stage_ends:  # the first stage also runs the two ConvX layers
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return tuple(outs)


def stdc1_shallow(in_channels: int = 6, weights: str | os.PathLike | None = None,
                  expand: str = "duplicate", **kwargs) -> STDCShallowNet:
    """Build ISDNet's shallow network (STDC1, two stages) and optionally load ImageNet weights.

    Args:
        in_channels: input channels (6 for the Laplacian residuals).
        weights: local STDC1 ImageNet file for :func:`load_stdc1_imagenet`, or None.
        expand: first-conv expansion for ``in_channels`` > 3 (see the loader).
        **kwargs: more :class:`STDCShallowNet` options.

    Returns:
        The model.
    """
    model = STDCShallowNet(in_channels=in_channels, **kwargs)
    if weights is not None:
        load_stdc1_imagenet(model, weights, expand=expand)
    return model


# Parts of the full STDC1 ImageNet network that the shallow net does not have.
_STDC_EXTRA = ("conv_last.", "fc.", "bn.", "linear.", "gap.", "x2.", "x4.", "x8.", "x16.", "x32.")


def load_stdc1_imagenet(model: STDCShallowNet, source: str | os.PathLike | Mapping[str, Tensor],
                        expand: str = "duplicate", strict: bool = True) -> dict[str, list[str]]:
    """Load the STDC1 ImageNet weights (``STDCNet813M_73.91.tar``) into the shallow net.

    Convention:
        - keys ``features.0`` ... ``features.{n-1}`` fill the model; the later stages
          (``features.6``, ``features.7``), ``conv_last``, ``fc``, ``bn``, ``linear`` and the
          ``x2``/``x4``/``x8``/``x16``/``x32`` aliases the STDC code also registers are ignored.
        - the first conv (3 input channels in the file) is expanded to ``in_channels`` (a
          multiple of 3) by repeating it along the input-channel axis: ``expand="duplicate"``
          keeps the repeated weights as they are (ISDNet's choice: a 6-channel input of two
          identical images then gives twice the response), ``"average"`` divides them by the
          number of copies (the same response).
        - a missing key or a shape mismatch is refused; with ``strict=True`` so is any key
          that is neither in the model nor in the ignored list above.

    Args:
        model: the shallow net to fill.
        source: local file path (``torch.save`` checkpoint with ``"state_dict"``, a plain
            state dict, or safetensors) or a mapping.
        expand: ``"duplicate"`` or ``"average"``.
        strict: refuse unexpected keys.

    Returns:
        ``{"loaded": [...], "kept": [], "ignored": [...]}`` key lists.

    Raises:
        WeightsError: unreadable file, missing keys, shape mismatches, unexpected keys.
    """
    op = "load_stdc1_imagenet"
    if expand not in ("duplicate", "average"):
        raise ValueError(f"{op}(): `expand` must be 'duplicate' or 'average'; got {expand!r}.")
    sd = read_state_dict(source)
    where = f" ({os.fspath(source)})" if not isinstance(source, Mapping) else ""
    own = model.state_dict()
    n_feat = len(model.features)
    first = "features.0.conv.weight"
    if first in sd and sd[first].dim() == 4 and sd[first].shape[1] != own[first].shape[1]:
        w = sd[first]
        cin, cout = w.shape[1], own[first].shape[1]
        if cout % cin:
            raise WeightsError(f"{op}(): cannot expand the first conv from {cin} to {cout} "
                               f"input channels (not a multiple). Fix: build the model with a "
                               f"multiple of {cin} input channels.")
        k = cout // cin
        w = w.repeat(1, k, 1, 1)
        sd = dict(sd)
        sd[first] = w / k if expand == "average" else w
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{op}(): the weights{where} lack {len(missing)} key(s) of the model: "
                           f"{list_keys(missing)}. Fix: pass the STDC1 (STDCNet813) ImageNet "
                           f"file.")
    bad = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
           for k in own if k in sd and sd[k].shape != own[k].shape]
    if bad:
        raise WeightsError(f"{op}(): shape mismatch{where}: {'; '.join(bad[:6])}. Fix: the file "
                           f"is not STDC1 (STDC2 has the same keys but more blocks per stage).")
    use, ignored, unexpected = {}, [], []
    for k in sd:
        if k in own:
            use[k] = sd[k]
        elif k.startswith(_STDC_EXTRA) or (
                k.startswith("features.") and k.split(".")[1].isdigit()
                and int(k.split(".")[1]) >= n_feat):
            ignored.append(k)
        else:
            unexpected.append(k)
    if unexpected and strict:
        raise WeightsError(f"{op}(): the weights{where} hold {len(unexpected)} key(s) that STDC1 "
                           f"does not have: {list_keys(unexpected)}. Fix: pass the STDC1 "
                           f"ImageNet file, or strict=False to ignore them.")
    copy_state(model, use)
    return {"loaded": sorted(use), "kept": [], "ignored": sorted(ignored + unexpected)}
