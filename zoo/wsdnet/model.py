"""WSDNet (Ji et al., CVPR 2023, "Ultra-High Resolution Segmentation with Ultra-Rich Context"),
built on uhrops' Haar wavelet and Laplacian pyramid ops.

No official WSDNet code exists; this follows the paper and its parent ISDNet's code, with
the interpretation fixed in ``shared/reference/wsdnet.md`` ("Decisions for uhrops"). Every
ambiguous choice is a constructor option whose default is that decision. The data flow,
top to bottom as in the paper's Fig. 2 (sizes for a padded input of H x W, H, W multiples
of 32)::

    image (B, 3, H, W) in [0, 1] --normalise--> x --pad to a multiple of 32-->
    shallow branch S:  laplacian_pyramid(x, 2) -> h0 (H), h1 (H/2, bilinear up to H)
                       -> cat 6 ch -> STDC1 stages 1-2 -> f8 (256 @ 1/8), f16 (512 @ 1/16)
    deep branch D:     DWT (12 @ 1/2) -> conv block (16) -> DWT (64 @ 1/4) -> conv (3)
                       -> ResNet18-V1c (OS 8) -> 512 @ 1/32 -> ASPP -> 128 @ 1/32
                       -> [conv 128->512, IWT] x 2 -> d8 (128 @ 1/8)
                       (deep_decoder="v3plus": after the first IWT, DeepLabV3+'s low-level
                       decoder: cat with 1x1 conv(layer1, 64 -> 48) @ 1/16, 2 x 3x3 conv)
    fusion:            1x1 conv-BN(f8) + up(1x1 conv-BN(f16)) + d8 -> 3x3 conv-BN-ReLU
    head:              Dropout2d, 3x3 conv-BN-ReLU 128->64, 1x1 -> K @ 1/8, bilinear to H x W,
                       cropped back to the input size
    training only:     aux = 1x1 classifier on the ASPP feature (1/32);
                       recon = SR head on d8: 3 x (nearest x2, 3x3 conv-BN-ReLU) -> 3 ch @ H.

Wavelet layout: uhrops' canonical PyWavelets layout (bands A, H, V, D per channel) is used
by default; ``wavelet_layout="mwcnn"`` concatenates MWCNN's (LL, HL, LH, HH) = (A, -V, -H, D)
band-major instead (the learned convolutions absorb either).
"""

from __future__ import annotations

import math
import os
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uhrops import checks
from uhrops.pyramid import laplacian_pyramid
from uhrops.wavelet import haar_dwt2d, haar_idwt2d
from zoo.backbones.resnet import ResNet18V1c, load_resnet18_imagenet
from zoo.backbones.stdc import STDCShallowNet, load_stdc1_imagenet
from zoo.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, apply_normalization,
                                 register_normalization)
from zoo.wsdnet.recompute import checkpoint_segment

__all__ = [
    "ASPP",
    "SRHead",
    "SegHead",
    "WSDNet",
    "WaveletDown",
    "WaveletUp",
    "dwt_channels",
    "idwt_channels",
    "padded_size",
]

NormLayer = Callable[[int], nn.Module]

SIZE_DIVISOR = 32
LAYOUTS = ("pywt", "mwcnn")


# --------------------------------------------------------------------------------------------
# Haar transforms with the bands as channels
# --------------------------------------------------------------------------------------------


def dwt_channels(x: Tensor, layout: str = "pywt") -> Tensor:
    """One Haar DWT level, bands stacked on channels: (B, C, H, W) -> (B, 4C, H/2, W/2).

    Convention:
        - ``layout="pywt"``: channel ``4c + b`` holds band b in (A, H, V, D) of input channel c
          (uhrops' :func:`uhrops.haar_dwt2d` flattened; pywt's (cA, cH, cV, cD)).
        - ``layout="mwcnn"``: MWCNN's band-major ``cat([LL, HL, LH, HH], dim=1)`` with
          (LL, HL, LH, HH) = (A, -V, -H, D); channel ``b * C + c``.
        - H and W must be even (ValueError from :func:`uhrops.haar_dwt2d` otherwise).

    Args:
        x: (B, C, H, W).
        layout: "pywt" or "mwcnn".

    Returns:
        (B, 4C, H/2, W/2).

    Example:
        >>> dwt_channels(torch.ones(1, 3, 4, 4)).shape
        torch.Size([1, 12, 2, 2])
    """
    y = haar_dwt2d(x)
    if layout == "pywt":
        return y.flatten(1, 2)
    a, h, v, d = y.unbind(2)
    return torch.cat([a, -v, -h, d], dim=1)


def idwt_channels(z: Tensor, layout: str = "pywt") -> Tensor:
    """Inverse of :func:`dwt_channels`: (B, 4C, h, w) -> (B, C, 2h, 2w).

    Convention:
        - the channel layout is read as in :func:`dwt_channels` (``4c + b`` for "pywt",
          ``b * C + c`` with MWCNN's signs for "mwcnn"); the channel count must be a
          multiple of 4.

    Args:
        z: (B, 4C, h, w).
        layout: "pywt" or "mwcnn".

    Returns:
        (B, C, 2h, 2w).
    """
    if z.shape[1] % 4:
        raise ValueError(f"idwt_channels(): `z` needs a multiple of 4 channels (4 bands per "
                         f"output channel); got {z.shape[1]}.")
    if layout == "pywt":
        y = z.unflatten(1, (z.shape[1] // 4, 4))
    else:
        ll, hl, lh, hh = z.chunk(4, dim=1)
        y = torch.stack([ll, -lh, -hl, hh], dim=2)
    return haar_idwt2d(y)


def _band_channel(c: int, layout: str) -> int:
    """Channel of the approximation band A of input channel ``c`` after :func:`dwt_channels`."""
    return 4 * c if layout == "pywt" else c


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class ConvBNReLU(nn.Sequential):
    """conv (no bias) -> norm -> ReLU (``relu=False``: conv -> norm)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, dilation: int = 1,
                 relu: bool = True, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel, padding=dilation * (kernel // 2),
                      dilation=dilation, bias=False),
            norm_layer(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class WaveletDown(nn.Module):
    """Deep-branch input: two Haar DWT levels "integrated with a CNN block" (1/4 resolution).

    Convention:
        - variant ``"A"`` (default): DWT (3 -> 12 ch) -> 3x3 conv-BN-ReLU (12 -> width) ->
          DWT (width -> 4 width) -> 3x3 conv with bias (4 width -> 3, linear so the output
          stays signed like a normalised image). Output (B, 3, H/4, W/4).
        - variant ``"B"``: DWT o DWT (48 ch) -> 1x1 conv with bias 48 -> 3. Output 3 channels.
        - variant ``"C"``: DWT o DWT, the 48 channels go straight into a backbone built with
          48 input channels (its first conv then cannot use ImageNet weights).
        - ``init="box"`` (default): the convolutions start as the 4x4 box filter, i.e. in
          eval mode (BN running statistics at their initial values) the output is the mean
          of each 4x4 block of the input, to within BN's eps (relative 5e-6): ISDNet's
          down-sampling with a box instead of nearest filter. For "A", block 1 passes +A and
          -A of each input channel through its ReLU (channels 0-2 and 3-5; the others start
          random) and block 2 sums (+A - A) / 4 of those after the second DWT (its other
          weights start at zero, so they still receive gradients). ``init="random"``:
          Kaiming-normal convolutions.
        - H and W must be divisible by 4.

    Args:
        variant: "A", "B" or "C".
        width: channels of variant A's conv block (>= 6 with ``init="box"``).
        init: "box" or "random".
        layout: wavelet channel layout, "pywt" or "mwcnn" (see :func:`dwt_channels`).
        in_channels: image channels.
        norm_layer: normalisation factory.
    """

    def __init__(self, variant: str = "A", width: int = 16, init: str = "box",
                 layout: str = "pywt", in_channels: int = 3,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        op = "WaveletDown"
        checks.check_choice(variant, "variant", op, ("A", "B", "C"))
        checks.check_choice(init, "init", op, ("box", "random"))
        checks.check_choice(layout, "layout", op, LAYOUTS)
        checks.check_int(width, "width", op, minimum=1)
        if variant == "A" and init == "box" and width < 2 * in_channels:
            raise ValueError(f"{op}(): init='box' needs width >= {2 * in_channels} (+A and -A of "
                             f"each input channel); got width={width}. Fix: use width >= "
                             f"{2 * in_channels} or init='random'.")
        self.variant, self.layout, self.init, self.in_channels = variant, layout, init, in_channels
        c = in_channels
        if variant == "A":
            self.block1 = ConvBNReLU(4 * c, width, 3, norm_layer=norm_layer)
            self.block2 = nn.Conv2d(4 * width, c, 3, padding=1, bias=True)
            self.out_channels = c
        elif variant == "B":
            self.proj = nn.Conv2d(16 * c, c, 1, bias=True)
            self.out_channels = c
        else:
            self.out_channels = 16 * c
        self.reset_parameters()

    def reset_parameters(self) -> None:
        c, layout = self.in_channels, self.layout
        with torch.no_grad():
            if self.variant == "A":
                conv1 = self.block1[0]
                nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
                nn.init.kaiming_normal_(self.block2.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(self.block2.bias)
                if self.init == "box":
                    conv1.weight[: 2 * c].zero_()
                    self.block2.weight.zero_()
                    for ch in range(c):
                        a1 = _band_channel(ch, layout)
                        conv1.weight[ch, a1, 1, 1] = 1.0
                        conv1.weight[c + ch, a1, 1, 1] = -1.0
                        self.block2.weight[ch, _band_channel(ch, layout), 1, 1] = 0.25
                        self.block2.weight[ch, _band_channel(c + ch, layout), 1, 1] = -0.25
            elif self.variant == "B":
                nn.init.kaiming_normal_(self.proj.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(self.proj.bias)
                if self.init == "box":
                    self.proj.weight.zero_()
                    for ch in range(c):
                        aa = _band_channel(_band_channel(ch, layout), layout)
                        self.proj.weight[ch, aa, 0, 0] = 0.25

    def forward(self, x: Tensor) -> Tensor:
        if self.variant == "A":
            y = self.block1(dwt_channels(x, self.layout))
            return self.block2(dwt_channels(y, self.layout))
        y = dwt_channels(dwt_channels(x, self.layout), self.layout)
        return self.proj(y) if self.variant == "B" else y


class ASPP(nn.Module):
    """DeepLabV3's atrous spatial pyramid pooling (mmseg ``ASPPHead`` without its classifier).

    Convention:
        - image-pool branch (global average, 1x1 conv-BN-ReLU, broadcast back), one 1x1 and
          one 3x3 dilated conv-BN-ReLU branch per further dilation, concatenated and fused by
          a 3x3 conv-BN-ReLU to ``channels``. 2.639 M parameters for 512 -> 128.
        - BN on the pooled (B, C, 1, 1) tensor needs >= 2 samples per batch in training.
    """

    def __init__(self, in_channels: int = 512, channels: int = 128,
                 dilations: Sequence[int] = (1, 12, 24, 36),
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                        ConvBNReLU(in_channels, channels, 1, norm_layer=norm_layer))
        self.branches = nn.ModuleList(
            ConvBNReLU(in_channels, channels, 1 if d == 1 else 3, dilation=d, norm_layer=norm_layer)
            for d in dilations)
        self.bottleneck = ConvBNReLU(channels * (len(dilations) + 1), channels, 3,
                                     norm_layer=norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.image_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        return self.bottleneck(torch.cat([pooled] + [b(x) for b in self.branches], dim=1))


class WaveletUp(nn.Module):
    """One IWT up-sampling step of the deep branch: (B, C, h, w) -> (B, C, 2h, 2w).

    Convention:
        - ``variant="expand"`` (default): ``kernel`` x ``kernel`` conv-BN-ReLU C -> 4C, then
          the Haar IWT (the 4C channels read as 4 bands per output channel).
        - ``variant="split"``: the C channels are read as C/4 channels x 4 bands directly:
          IWT -> C/4 channels, then a conv-BN-ReLU C/4 -> C.
        - ``skip_channels``: a skip feature at the output resolution is projected by a 1x1
          conv-BN and added (DeepLabV3+-like, off by default).
    """

    def __init__(self, channels: int = 128, kernel: int = 3, variant: str = "expand",
                 layout: str = "pywt", skip_channels: int | None = None,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        op = "WaveletUp"
        checks.check_choice(variant, "variant", op, ("expand", "split"))
        checks.check_choice(layout, "layout", op, LAYOUTS)
        checks.check_choice(kernel, "kernel", op, (1, 3))
        if channels % 4:
            raise ValueError(f"{op}(): `channels` must be a multiple of 4; got {channels}.")
        self.variant, self.layout = variant, layout
        if variant == "expand":
            self.conv = ConvBNReLU(channels, 4 * channels, kernel, norm_layer=norm_layer)
        else:
            self.conv = ConvBNReLU(channels // 4, channels, kernel, norm_layer=norm_layer)
        self.skip = (ConvBNReLU(skip_channels, channels, 1, relu=False, norm_layer=norm_layer)
                     if skip_channels else None)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.variant == "expand":
            y = idwt_channels(self.conv(x), self.layout)
        else:
            y = self.conv(idwt_channels(x, self.layout))
        if self.skip is not None and skip is not None:
            y = y + self.skip(skip)
        return y


class SegHead(nn.Sequential):
    """ISDNet's segmentation head: Dropout2d -> 3x3 conv-BN-ReLU -> 1x1 conv (with bias)."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int,
                 dropout: float = 0.1, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__(nn.Dropout2d(dropout),
                         ConvBNReLU(in_channels, mid_channels, 3, norm_layer=norm_layer),
                         nn.Conv2d(mid_channels, num_classes, 1))


class SRHead(nn.Module):
    """Super-resolution head (training only): 1/8 feature -> full-resolution 3-channel image.

    Convention:
        - ``len(channels)`` stages of (nearest x2, 3x3 conv-BN-ReLU), default 128 -> 64 -> 64
          -> 128 (1/8 -> 1/1), then a 3x3 conv-BN-ReLU (-> 64) and a 1x1 conv (-> 3).
        - returns ``(feature, image)``: the last stage's feature (for the structure
          distillation loss) and the reconstruction.
        - ``output="haar1"``: the last stage runs at 1/2 resolution without up-sampling and
          the 1x1 conv gives ``4 * out_channels`` channels, the reconstruction's level-1 Haar
          subbands (layout of :func:`dwt_channels`, "pywt"); the full-resolution stage, about
          3/4 of a training step's saved activations at the paper widths, is gone.
        - ``checkpoint=True`` (train mode with autograd on): the head runs as two
          activation-checkpointed segments (:func:`zoo.wsdnet.recompute.checkpoint_segment`),
          the stages up to 1/2 resolution and then the last stage with the output convs;
          backward keeps only their inputs and recomputes the rest, one segment at a time.
          Same outputs and gradients (bit for bit in float32), BN statistics updated once.
    """

    def __init__(self, in_channels: int = 128, channels: Sequence[int] = (64, 64, 128),
                 out_channels: int = 3, norm_layer: NormLayer = nn.BatchNorm2d,
                 output: str = "image", checkpoint: bool = False) -> None:
        super().__init__()
        checks.check_choice(output, "output", "SRHead", ("image", "haar1"))
        checks.check_choice(checkpoint, "checkpoint", "SRHead", (False, True))
        self.output, self.checkpoint = output, checkpoint
        if output == "haar1":
            # The level-1 Haar subbands of the image, 4 per channel, at 1/2 resolution.
            out_channels = 4 * out_channels
        stages = []
        cin = in_channels
        for c in channels:
            stages.append(ConvBNReLU(cin, c, 3, norm_layer=norm_layer))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.out = nn.Sequential(ConvBNReLU(cin, 64, 3, norm_layer=norm_layer),
                                 nn.Conv2d(64, out_channels, 1))

    def _stages(self, x: Tensor, first: int, stop: int) -> Tensor:
        last = len(self.stages) - 1
        for i in range(first, stop):
            if not (self.output == "haar1" and i == last):  # haar1: the last stage at 1/2
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.stages[i](x)
        return x

    def _tail(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self._stages(x, len(self.stages) - 1, len(self.stages))
        return x, self.out(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        last = len(self.stages) - 1
        if not (self.checkpoint and self.training):
            return self._tail(self._stages(x, 0, last))
        # Two segments: only d8 and the 1/4 -> 1/2 stage's output are kept for backward. One
        # segment keeps less, but its recomputation holds the whole head's activations at
        # once during backward, on top of the rest of the model's (the SR head's backward
        # runs first): haar1 at 1248^2, saved 510 vs 605 MiB per image but peak 1633 vs 1348.
        x = checkpoint_segment(lambda t: self._stages(t, 0, last), self.stages[:last], x)
        return checkpoint_segment(self._tail, [self.stages[last], self.out], x)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class WSDNet(nn.Module):
    """WSDNet: shallow Laplacian/STDC branch + deep DWT/ResNet18/ASPP/IWT branch, fused at 1/8.

    Convention:
        - input: (B, 3, H, W) floating RGB in [0, 1] (the zoo datasets' images), any H, W >= 1.
          It is normalised with ``mean``/``std`` (ImageNet's by default; ``mean=None`` skips
          this for already normalised input), padded at the bottom/right to a multiple of 32
          (``pad_mode``; "constant" pads the normalised image with 0, the mean colour) and
          every output is cropped back to (H, W).
        - eval mode: ``forward`` returns the logits (B, K, H, W) (bilinear, align_corners=False,
          from 1/8). The training-only heads (auxiliary classifier, SR head) are not run.
        - train mode: a dict with ``"seg"`` (B, K, H, W); ``"aux"`` (B, K, H, W), the ASPP
          logits at 1/32 bilinearly up-sampled; ``"recon"`` (B, 3, H, W), the SR head's
          reconstruction of ``"image"`` (B, 3, H, W), the normalised input (the WSL target);
          ``"feat_deep"`` (B, 128, Hp/32, Wp/32), the ASPP feature, and ``"feat_sr"``
          (B, 128, Hp, Wp), the SR head's last feature (for ISDNet's L_sd), both on the padded
          grid. Use :class:`zoo.wsdnet.losses.WSDNetLoss` on it.
        - BN on the ASPP image-pool branch needs batch >= 2 in train mode (as mmseg).
        - dtype: float32/float64 weights; under ``torch.autocast`` (bf16/fp16) the uhrops
          ops run in the convolutions' dtype, the normalisation and pyramid in the input's.
          channels_last inputs/weights work (the wavelet reshapes are views or copies as
          needed).
        - defaults = "Decisions for uhrops" in ``shared/reference/wsdnet.md``; each option
          below selects one of the alternatives listed there.

    Args:
        num_classes: K.
        mean, std: input normalisation (RGB), or None for none.
        pad_mode: "constant" (0 after normalisation), "reflect" (needs a padding smaller
            than the image, i.e. sides > 16 at worst) or "replicate".
        wavelet_layout: "pywt" (default) or "mwcnn" channel layout of the DWT/IWT bands.
        dwt_variant: deep input block, "A" (default), "B" or "C" (see :class:`WaveletDown`).
        dwt_width: variant A's conv block width c (16).
        dwt_init: "box" (default) or "random" (see :class:`WaveletDown`).
        aspp_channels: ASPP width (128).
        aspp_dilations: (1, 12, 24, 36).
        iwt_variant: "expand" (conv 128 -> 512 then IWT, default) or "split".
        iwt_kernel: 3 (default) or 1, the expansion conv's kernel.
        iwt_skips: add projected ResNet layer1 (1/16) and stem (1/8) features after the IWTs.
        deep_decoder: "none" (default: ASPP then the IWT steps, as ISDNet's code and the
            paper's description of D's output) or "v3plus": DeepLabV3+'s low-level decoder
            where the IWT path reaches the low-level feature's resolution (1/16): the ResNet
            layer1 output projected by a 1x1 conv-BN-ReLU to ``decoder_low_channels`` is
            concatenated with the first IWT's output, then two 3x3 conv-BN-ReLU back to
            ``aspp_channels`` (the paper names DeepLabV3+ for D; README "DeepLabV3+ decoder").
        decoder_low_channels: the low-level projection's width (48, DeepLabV3+'s).
        fuse_channels: width of the shallow features' 1x1 projections (128).
        fusion: "sum" (default: S + D, then 3x3 conv-BN-ReLU) or "concat" (3x3 conv on [S, D]).
        sr_channels: SR head stage widths (64, 64, 128).
        sr_output: "image" (default: the SR head reconstructs the full-resolution image,
            ``"recon"``) or "haar1": it stops at 1/2 resolution and predicts the
            reconstruction's level-1 Haar subbands, ``"recon_bands"`` (B, 12, ceil(H/2),
            ceil(W/2)) in place of ``"recon"``; the Wavelet Smooth Loss is the same Eq. 4 on
            ``idwt_channels(recon_bands)``, computed without building it (README "Training
            memory").
        activation_checkpoint: parts run under activation checkpointing in training, a
            list among "shallow" (the Laplacian input and STDC branch, one segment) and
            "sr_head" (two segments, see :class:`SRHead`); () by default. Outputs and
            gradients are unchanged (bit for bit in float32, dropout draws preserved), BN
            running statistics are updated once per step; the recomputation costs about a
            quarter more FLOPs per step. With ``sr_output="haar1"`` both parts bring the
            step's peak activation memory under a third of the full-resolution head's (the
            paper configs' setting; README "Training memory").
        head_channels: segmentation head's hidden width (64).
        dropout: Dropout2d rate before the classifiers (0.1).
        norm_layer: normalisation factory (BatchNorm2d; convert to SyncBatchNorm for DDP).

    Example:
        >>> model = WSDNet(7).eval()
        >>> model(torch.rand(1, 3, 100, 70)).shape
        torch.Size([1, 7, 100, 70])
    """

    def __init__(self, num_classes: int, *,
                 mean: Sequence[float] | None = IMAGENET_MEAN,
                 std: Sequence[float] | None = IMAGENET_STD,
                 pad_mode: str = "constant",
                 wavelet_layout: str = "pywt",
                 dwt_variant: str = "A",
                 dwt_width: int = 16,
                 dwt_init: str = "box",
                 aspp_channels: int = 128,
                 aspp_dilations: Sequence[int] = (1, 12, 24, 36),
                 iwt_variant: str = "expand",
                 iwt_kernel: int = 3,
                 iwt_skips: bool = False,
                 deep_decoder: str = "none",
                 decoder_low_channels: int = 48,
                 fuse_channels: int = 128,
                 fusion: str = "sum",
                 sr_channels: Sequence[int] = (64, 64, 128),
                 sr_output: str = "image",
                 activation_checkpoint: Sequence[str] = (),
                 head_channels: int = 64,
                 dropout: float = 0.1,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        op = "WSDNet"
        checks.check_int(num_classes, "num_classes", op, minimum=1)
        checks.check_choice(pad_mode, "pad_mode", op, ("constant", "reflect", "replicate"))
        checks.check_choice(wavelet_layout, "wavelet_layout", op, LAYOUTS)
        checks.check_choice(fusion, "fusion", op, ("sum", "concat"))
        checks.check_choice(deep_decoder, "deep_decoder", op, ("none", "v3plus"))
        checks.check_int(decoder_low_channels, "decoder_low_channels", op, minimum=1)
        if (mean is None) != (std is None):
            raise ValueError(f"{op}(): pass both `mean` and `std`, or neither (None, None) for "
                             f"already normalised input; got mean={mean!r}, std={std!r}.")
        if fusion == "sum" and fuse_channels != aspp_channels:
            raise ValueError(f"{op}(): fusion='sum' adds the shallow projections to the deep "
                             f"1/8 feature, so `fuse_channels` ({fuse_channels}) must equal "
                             f"`aspp_channels` ({aspp_channels}). Fix: make them equal or use "
                             f"fusion='concat'.")
        if len(sr_channels) != 3:
            raise ValueError(f"{op}(): `sr_channels` needs 3 widths (1/8 -> 1/4 -> 1/2 -> 1/1); "
                             f"got {tuple(sr_channels)}.")
        self.activation_checkpoint = _check_checkpoint_parts(activation_checkpoint, op)
        self.num_classes = num_classes
        self.pad_mode = pad_mode
        self.size_divisor = SIZE_DIVISOR
        self.iwt_skips = iwt_skips
        self.fusion = fusion
        register_normalization(self, mean, std)

        # Shallow branch S: 6-channel Laplacian residuals -> STDC1 stages 1-2.
        self.shallow = STDCShallowNet(6, norm_layer=norm_layer)
        # Deep branch D: two-level DWT input -> ResNet18-V1c -> ASPP -> two IWT steps.
        self.dwt_down = WaveletDown(dwt_variant, dwt_width, dwt_init, wavelet_layout, 3, norm_layer)
        self.backbone = ResNet18V1c(self.dwt_down.out_channels, norm_layer=norm_layer)
        self.aspp = ASPP(512, aspp_channels, aspp_dilations, norm_layer)
        skips = (64, 64) if iwt_skips else (None, None)
        self.iwt_up = nn.ModuleList(
            WaveletUp(aspp_channels, iwt_kernel, iwt_variant, wavelet_layout, s, norm_layer)
            for s in skips)
        self.deep_decoder = deep_decoder
        if deep_decoder == "v3plus":
            self.decoder_low = ConvBNReLU(64, decoder_low_channels, 1, norm_layer=norm_layer)
            self.decoder = nn.Sequential(
                ConvBNReLU(aspp_channels + decoder_low_channels, aspp_channels, 3,
                           norm_layer=norm_layer),
                ConvBNReLU(aspp_channels, aspp_channels, 3, norm_layer=norm_layer))
        # Fusion (no RAF) and the segmentation head.
        s8, s16 = self.shallow.out_channels
        self.proj16 = ConvBNReLU(s16, fuse_channels, 1, relu=False, norm_layer=norm_layer)
        self.proj8 = ConvBNReLU(s8, fuse_channels, 1, relu=False, norm_layer=norm_layer)
        fuse_in = aspp_channels if fusion == "sum" else fuse_channels + aspp_channels
        self.fuse = ConvBNReLU(fuse_in, aspp_channels, 3, norm_layer=norm_layer)
        self.seg_head = SegHead(aspp_channels, head_channels, num_classes, dropout, norm_layer)
        # Training only: auxiliary classifier on the ASPP feature, SR head on D's 1/8 output.
        self.aux_head = nn.Sequential(nn.Dropout2d(dropout),
                                      nn.Conv2d(aspp_channels, num_classes, 1))
        self.sr_head = SRHead(aspp_channels, sr_channels, 3, norm_layer, sr_output,
                              checkpoint="sr_head" in self.activation_checkpoint)
        self._init_new_layers()

    def _init_new_layers(self) -> None:
        for name, m in self.named_modules():
            if name.startswith(("shallow", "backbone", "dwt_down")):
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for head in (self.seg_head[-1], self.aux_head[-1], self.sr_head.out[-1]):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    # ---- weights -----------------------------------------------------------------------------

    def load_backbones(self, resnet: str | os.PathLike | Mapping[str, Tensor] | None = None,
                       stdc: str | os.PathLike | Mapping[str, Tensor] | None = None,
                       stdc_expand: str = "duplicate") -> dict[str, dict[str, list[str]]]:
        """Load ImageNet weights from local files into the ResNet18-V1c and the STDC1 branch.

        Args:
            resnet: ResNet18-V1c (or torchvision ResNet-18) file, see
                :func:`zoo.backbones.resnet.load_resnet18_imagenet`.
            stdc: STDC1 file, see :func:`zoo.backbones.stdc.load_stdc1_imagenet`.
            stdc_expand: first-conv expansion 3 -> 6 channels ("duplicate", ISDNet's, or
                "average").

        Returns:
            The loaders' reports, keyed "resnet" / "stdc".
        """
        out = {}
        if resnet is not None:
            out["resnet"] = load_resnet18_imagenet(self.backbone, resnet)
        if stdc is not None:
            out["stdc"] = load_stdc1_imagenet(self.shallow, stdc, expand=stdc_expand)
        return out

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per top-level module (and "total"), e.g. to compare with ISDNet's."""
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in self.named_children()}
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts

    # ---- forward -----------------------------------------------------------------------------

    def normalize(self, image: Tensor) -> Tensor:
        """``(image - mean) / std`` (identity when the model was built with ``mean=None``)."""
        return apply_normalization(image, self.mean, self.std)

    def _pad(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        ph, pw = -H % self.size_divisor, -W % self.size_divisor
        if ph == 0 and pw == 0:
            return x
        if self.pad_mode == "constant":
            return F.pad(x, (0, pw, 0, ph))
        if self.pad_mode == "reflect" and (ph >= H or pw >= W):
            raise ValueError(f"WSDNet.forward(): pad_mode='reflect' cannot pad ({H}, {W}) to "
                             f"({H + ph}, {W + pw}): the padding must be smaller than the image. "
                             f"Fix: build the model with pad_mode='constant' or 'replicate'.")
        return F.pad(x, (0, pw, 0, ph), mode=self.pad_mode)

    @staticmethod
    def _crop(x: Tensor, H: int, W: int) -> Tensor:
        if x.shape[-2:] == (H, W):
            return x
        return x[..., :H, :W].contiguous()

    def _laplacian_input(self, x: Tensor) -> Tensor:
        h0, h1, _ = laplacian_pyramid(x, 2)
        h1 = F.interpolate(h1, size=h0.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([h0, h1], dim=1)

    def _shallow(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        return self.shallow(self._laplacian_input(xp))

    def forward(self, image: Tensor) -> Tensor | dict[str, Tensor]:
        op = "WSDNet.forward"
        checks.check_image(image, "image", op)
        if image.shape[1] != 3:
            raise ValueError(f"{op}(): `image` must have 3 (RGB) channels; got shape "
                             f"{tuple(image.shape)}. Fix: pass (B, 3, H, W) RGB images.")
        H, W = image.shape[-2:]
        x = self.normalize(image)
        xp = self._pad(x)

        # Shallow branch S.
        if "shallow" in self.activation_checkpoint and self.training:
            # Only xp is kept; S runs again during backward, after the rest of the model's
            # backward has freed its tensors (S's ops are the first recorded, so the last
            # to run backward).
            f8, f16 = checkpoint_segment(self._shallow, [self.shallow], xp)
        else:
            f8, f16 = self._shallow(xp)

        # Deep branch D.
        stem, c1, _, _, c4 = self.backbone(self.dwt_down(xp), return_stem=True)
        feat32 = self.aspp(c4)
        d16 = self.iwt_up[0](feat32, c1 if self.iwt_skips else None)
        if self.deep_decoder == "v3plus":  # c1 and d16 are both at 1/16 of the padded input
            d16 = self.decoder(torch.cat([d16, self.decoder_low(c1)], dim=1))
        d8 = self.iwt_up[1](d16, stem if self.iwt_skips else None)

        # Fusion and head.
        s = self.proj8(f8) + F.interpolate(self.proj16(f16), size=f8.shape[-2:],
                                           mode="bilinear", align_corners=False)
        fused = self.fuse(s + d8 if self.fusion == "sum" else torch.cat([s, d8], dim=1))
        padded = xp.shape[-2:]
        seg = F.interpolate(self.seg_head(fused), size=padded, mode="bilinear",
                            align_corners=False)
        seg = self._crop(seg, H, W)
        if not self.training:
            return seg

        aux = F.interpolate(self.aux_head(feat32), size=padded, mode="bilinear",
                            align_corners=False)
        feat_sr, recon = self.sr_head(d8)
        if self.sr_head.output == "haar1":
            recon_key, recon = "recon_bands", self._crop(recon, (H + 1) // 2, (W + 1) // 2)
        else:
            recon_key, recon = "recon", self._crop(recon, H, W)
        return {
            "seg": seg,
            "aux": self._crop(aux, H, W),
            recon_key: recon,
            "image": x,
            "feat_deep": feat32,
            "feat_sr": feat_sr,
        }


CHECKPOINT_PARTS = ("shallow", "sr_head")


def _check_checkpoint_parts(parts: object, op: str) -> tuple[str, ...]:
    if isinstance(parts, str) or not isinstance(parts, (list, tuple)):
        raise ValueError(f"{op}(): `activation_checkpoint` must be a list of parts among "
                         f"{list(CHECKPOINT_PARTS)} (or [] for none); got {parts!r}. Fix: e.g. "
                         f"model.kwargs.activation_checkpoint: [shallow, sr_head].")
    bad = [p for p in parts if p not in CHECKPOINT_PARTS]
    if bad:
        raise ValueError(f"{op}(): `activation_checkpoint` names unknown part(s) {bad}; the "
                         f"parts that can be checkpointed are {list(CHECKPOINT_PARTS)}.")
    return tuple(p for p in CHECKPOINT_PARTS if p in parts)


def padded_size(size: int, divisor: int = SIZE_DIVISOR) -> int:
    """The side length WSDNet pads ``size`` to (the next multiple of 32)."""
    return int(math.ceil(size / divisor) * divisor)
