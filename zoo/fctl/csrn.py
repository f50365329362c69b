"""FCtL's contextual semantics refinement network (CSRN), as uhrops designs it.

The paper (§3.2, Fig. 4) describes the CSRN only in words and its code was never released
(``reference/fctl.md`` §10): "a two-stream variant of U-Net" that correlates the features of a
local mask with those of a context mask "rescaled to the same dimension as the local mask",
with U-Net skip connections and the focal loss. uhrops fills the gaps as follows, and the
model below reads top to bottom like that figure:

1. **Inputs.** From the crude high-resolution mask (the local model's logits merged over the
   patch grid): the logits of one patch (the *local mask*) and of the window ``context_scale``
   times larger centred on it, padded with 0 logits (uniform) outside the image and resized to
   the patch size (the *context mask*, :func:`uhrops.tiling.extract_contexts`). Both streams
   see softmax probabilities, so the logits' scale does not matter.
2. **Two encoders** of the same shape, one per mask: ``depth`` levels of two 3x3 conv +
   GroupNorm + ReLU, a 2x2 max-pool between levels, ``width * 2**level`` channels.
3. **Local-context relevance** at the bottleneck: q from the local features, k and v from the
   context features, :class:`uhrops.attention.LocalContextCorrelation` (FCtL's correlation,
   softmax over context positions, a learnable gamma initialised to 0), added to the local
   features as a residual.
4. **Decoder** as in U-Net: bilinear x2 up-sampling to the size of the matching local-stream
   skip, concatenation, two 3x3 convs; a 1x1 head to the classes.
5. **Residual output.** refined logits = input local logits + head(...). The head is
   zero-initialised, so an untrained CSRN returns its input exactly.

GroupNorm rather than BatchNorm: FCtL trains on sub-batches of 4 patches of one image, and a
refiner applied patch by patch should not depend on which patches share its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uhrops import checks
from uhrops.attention import LocalContextCorrelation
from uhrops.tiling import PatchGrid, sliding_window

__all__ = ["CSRN", "refine_logits"]


def _groups(channels: int) -> int:
    """Up to 8 GroupNorm groups that divide ``channels`` (tiny test widths included)."""
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class _DoubleConv(nn.Sequential):
    """U-Net's unit: (3x3 conv, GroupNorm, ReLU) twice, padding 1 (size kept)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(_groups(cout), cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(_groups(cout), cout),
            nn.ReLU(inplace=True))


class _Encoder(nn.Module):
    """One stream: features of every level, finest first (level i has width·2^i channels)."""

    def __init__(self, cin: int, width: int, depth: int) -> None:
        super().__init__()
        chans = [width * 2 ** i for i in range(depth)]
        self.levels = nn.ModuleList(
            _DoubleConv(cin if i == 0 else chans[i - 1], c) for i, c in enumerate(chans))

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for i, level in enumerate(self.levels):
            if i:
                # ceil_mode keeps odd sizes (508 -> 254 -> 127 -> 64); the decoder resizes back
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = level(x)
            feats.append(x)
        return feats


class _Up(nn.Module):
    """Decoder step: up-sample to the skip's size, concatenate the skip, two convs."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv = _DoubleConv(cin + cskip, cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], 1))


class CSRN(nn.Module):
    """Contextual semantics refinement network: refine a local mask with its context mask.

    Convention:
        - ``forward(local_logits, context_logits)``: local_logits (B, n, h, w), the logits of
          one patch of the crude merged mask; context_logits (B, n, h', w'), the logits of the
          window ``context_scale`` x the patch centred on it, resized (normally to (h, w)).
          Returns refined logits (B, n, h, w) = ``local_logits + head(...)``, in the input
          dtype. Any h, w >= 1 (odd sizes included).
        - Both streams work on ``softmax(logits, dim=1)``: adding a per-pixel constant to the
          logits changes neither the probabilities nor the argmax of the output.
        - Encoders: ``depth`` levels of ``width * 2**i`` channels (default 32, 64, 128, 256),
          two 3x3 conv + GroupNorm + ReLU each, 2x2 max-pool (ceil) between levels. The
          bottleneck (stride 2**(depth-1)) of the local stream gets ``relevance(local,
          context)`` added: :class:`~uhrops.attention.LocalContextCorrelation` with gamma = 0
          at initialisation. Decoder: bilinear up-sampling, concatenation of the local
          stream's skip, two 3x3 convs per level; 1x1 head to n classes.
        - Initialisation: the head's weight and bias are zero, so an untrained CSRN returns
          ``local_logits`` exactly (bit for bit) and merging its patches reproduces the crude
          mask. Consequence for training: at the first step only the head has a non-zero
          gradient; the local stream and gamma receive gradient once the head is non-zero, the
          context stream once gamma is non-zero (after two optimiser steps).
        - ``context_scale`` is stored for the pipelines (:func:`refine_logits`,
          :class:`zoo.fctl.FCtLSegmenter`); the paper's ablation uses 1.5, 2 and 2.5 (762,
          1016 and 1270 px windows around 508 px patches; 2 was best).

    Args:
        num_classes: n, the classes of the masks.
        context_scale: size of the context window as a multiple of the patch (> 0).
        width: channels of the first level (>= 1).
        depth: number of levels (1..8); the bottleneck has stride 2**(depth - 1).

    Example:
        >>> net = CSRN(7, width=8, depth=3)
        >>> local, ctx = torch.randn(2, 7, 40, 40), torch.randn(2, 7, 40, 40)
        >>> torch.equal(net(local, ctx), local)
        True
    """

    def __init__(self, num_classes: int, context_scale: float = 2.0, width: int = 32,
                 depth: int = 4) -> None:
        super().__init__()
        op = "CSRN"
        n = checks.check_int(num_classes, "num_classes", op, 1)
        w = checks.check_int(width, "width", op, 1)
        d = checks.check_int(depth, "depth", op, 1, 8)
        if isinstance(context_scale, bool) or not isinstance(context_scale, (int, float)) \
                or not 0 < float(context_scale) < float("inf"):
            raise ValueError(f"{op}(): `context_scale` must be a positive number (the context "
                             f"window as a multiple of the patch, e.g. 2.0); got "
                             f"{context_scale!r}.")
        self.num_classes, self.width, self.depth = n, w, d
        self.context_scale = float(context_scale)
        chans = [w * 2 ** i for i in range(d)]

        self.local_encoder = _Encoder(n, w, d)
        self.context_encoder = _Encoder(n, w, d)
        self.relevance = LocalContextCorrelation(chans[-1])
        self.decoder = nn.ModuleList(
            _Up(chans[i + 1], chans[i], chans[i]) for i in reversed(range(d - 1)))
        self.head = nn.Conv2d(chans[0], n, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _check(self, local_logits: Tensor, context_logits: Tensor) -> None:
        op = "CSRN.forward"
        checks.check_image(local_logits, "local_logits", op)
        checks.check_image(context_logits, "context_logits", op)
        checks.check_same_device(op, local_logits=local_logits, context_logits=context_logits)
        for name, t in (("local_logits", local_logits), ("context_logits", context_logits)):
            if t.shape[1] != self.num_classes:
                raise ValueError(f"{op}(): `{name}` must have {self.num_classes} channels (one "
                                 f"logit per class); got shape {tuple(t.shape)}. Fix: pass "
                                 f"the local model's logits, or build CSRN({t.shape[1]}).")
        if context_logits.shape[0] != local_logits.shape[0]:
            raise ValueError(f"{op}(): `context_logits` has batch {context_logits.shape[0]} "
                             f"but `local_logits` has {local_logits.shape[0]}. Fix: pass one "
                             "context window per local patch.")

    def forward(self, local_logits: Tensor, context_logits: Tensor) -> Tensor:
        self._check(local_logits, context_logits)
        # Masks as probabilities: the local model's logit scale is arbitrary (FCtL sums them).
        local = torch.softmax(local_logits.float(), 1).to(local_logits.dtype)
        context = torch.softmax(context_logits.float(), 1).to(context_logits.dtype)

        skips = self.local_encoder(local)
        bottleneck = self.context_encoder(context)[-1]
        x = skips[-1] + self.relevance(skips[-1], bottleneck)
        for up, skip in zip(self.decoder, reversed(skips[:-1])):
            x = up(x, skip)
        return local_logits + self.head(x)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, context_scale={self.context_scale}, "
                f"width={self.width}, depth={self.depth}")


def refine_logits(refiner: CSRN, crude: Tensor, grid: PatchGrid, batch_size: int = 4, *,
                  device: torch.device | str | None = None,
                  out_device: torch.device | str | None = None) -> Tensor:
    """The refinement pass: CSRN on every patch of a crude merged mask, merged by averaging.

    Convention:
        - crude (B, n, H, W): the local logits merged over ``grid`` (uhrops merges by mean, so
          the crude logits have a single patch's scale). For patch k the refiner gets the
          patch of ``crude`` and the window ``refiner.context_scale`` x the patch centred on
          it, 0 (uniform probabilities) outside the image, resized to the patch size with
          antialiased bilinear filtering (:func:`uhrops.tiling.extract_contexts` defaults).
          The refined patches are averaged where they overlap
          (:func:`uhrops.tiling.sliding_window`, ``reduction="mean"``).
        - With an untrained (identity) refiner the result equals ``crude`` up to the rounding
          of the average. Streams batches of ``batch_size`` patches; differentiable when grad
          mode is on and the refiner has trainable parameters.

    Args:
        refiner: the CSRN.
        crude: (B, n, H, W) floating tensor with (H, W) == ``grid.image_size``.
        grid: the patch grid of the local pass.
        batch_size: patches per refiner call.
        device: where the refiner runs (default: its parameters' device).
        out_device: device of the result (default: ``crude.device``).

    Returns:
        (B, n, H, W) refined logits.

    Example:
        >>> g = PatchGrid.from_min_overlap(48, 32, 8)
        >>> crude = torch.randn(1, 3, 48, 48)
        >>> torch.allclose(refine_logits(CSRN(3, width=4, depth=2), crude, g), crude)
        True
    """
    op = "refine_logits"
    if not isinstance(refiner, CSRN):
        raise TypeError(f"{op}(): `refiner` must be a zoo CSRN; got {type(refiner).__name__}.")
    crude = checks.check_image(crude, "crude", op)
    if crude.shape[1] != refiner.num_classes:
        raise ValueError(f"{op}(): `crude` has {crude.shape[1]} channels but the refiner takes "
                         f"{refiner.num_classes} classes. Fix: pass the merged logits of a "
                         "local model with the same classes.")
    if device is None:
        device = next(refiner.parameters()).device
    return sliding_window(refiner, crude, grid, batch_size, contexts=(refiner.context_scale,),
                          out_device=out_device, reduction="mean", device=device)
