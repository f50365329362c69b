"""VGG16 (configuration D) with the FCN-8s modifications FCtL's released code uses.

The layer list is the classic one (13 3x3 convs, each followed by a ReLU, and 5 max-pools),
held in one ``features`` ``nn.Sequential`` of 31 modules so that the parameter names are those
of the usual ImageNet VGG16 state dict (``features.0.weight`` ... ``features.28.bias``). The
FCN-8s changes (Long et al., "at once" variant, as in FCtL's ``models/fcn.py``):

- conv1_1 (``features[0]``) is padded by 100 pixels instead of 1, so that any input size
  survives the five poolings and the 7x7 conv6 (32 -> pool5 8x8, 64 -> 9x9, 128 -> 11x11,
  508 -> 23x23);
- every max-pool rounds up (``ceil_mode=True``);
- the three taps pool3 = ``features[0:17]``, pool4 = ``features[17:24]``, pool5 =
  ``features[24:31]`` are returned;
- the ImageNet FC6/FC7 become the convolutions ``conv6`` (7x7, 512 -> 4096, no padding) and
  ``conv7`` (1x1, 4096 -> 4096), each followed by ReLU and Dropout(0.5). FC8 (1000 ImageNet
  classes) is not kept.

Nothing is ever downloaded: :func:`load_vgg16_imagenet` reads a local file (for instance
torchvision's ``vgg16-397923af.pth``; ``.safetensors`` works too).
"""

from __future__ import annotations

import os
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uhrops import checks
from zoo.core.weights import read_state_dict, strip_prefixes

__all__ = ["VGG16", "VGG16_CONFIG", "load_vgg16_imagenet", "load_state_file"]

# Configuration D: output channels of each 3x3 conv, "M" for a 2x2 max-pool.
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                512, 512, 512, "M", 512, 512, 512, "M")
# End indices (exclusive) of the pool3 / pool4 / pool5 blocks inside ``features``.
_TAPS = (17, 24, 31)


class VGG16(nn.Module):
    """VGG16 encoder with FCN-8s taps (pool3, pool4, pool5) and optional conv6/conv7.

    Convention:
        - Input (B, 3, H, W), any H, W >= 1 (thanks to the pad-100 conv1_1). Outputs for
          the default options: pool3 (B, 256, h3, w3), pool4 (B, 512, h4, w4), pool5
          (B, 512, h5, w5) with h3 = ceil(ceil(ceil((H + 198) / 2) / 2) / 2), h4 =
          ceil(h3 / 2), h5 = ceil(h4 / 2); 508 -> 89, 45, 23; 64 -> 33, 17, 9.
        - ``fc(pool5)`` = Dropout(ReLU(conv7(Dropout(ReLU(conv6(pool5)))))) of size
          (B, 4096, h5 - 6, w5 - 6) (17x17 at 508).
        - State-dict keys: ``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}``
          (as the ImageNet VGG16 file) and ``conv6.*``, ``conv7.*`` (its ``classifier.0/3``
          reshaped, see :func:`load_vgg16_imagenet`).
        - Random initialisation (used when no ImageNet file is loaded) is the usual VGG one:
          convs Kaiming-normal (fan_out, ReLU) with zero bias; conv6/conv7, which stand for
          Linear layers, N(0, 0.01) with zero bias.
        - No input normalisation happens here (FCtL feeds [0, 1] images as they are).

    Args:
        conv1_padding: padding of conv1_1 (100 for FCN-8s, 1 for the plain VGG16).
        ceil_mode: round the max-pools up (FCN-8s) or down (plain VGG16).
        include_fc: build conv6/conv7 (a context encoder only needs the taps).
        dropout: dropout probability after conv6 and conv7.

    Example:
        >>> enc = VGG16(include_fc=False)
        >>> [t.shape[-1] for t in enc(torch.rand(1, 3, 64, 64))]
        [33, 17, 9]
    """

    def __init__(self, conv1_padding: int = 100, ceil_mode: bool = True, include_fc: bool = True,
                 dropout: float = 0.5) -> None:
        super().__init__()
        op = "VGG16"
        checks.check_int(conv1_padding, "conv1_padding", op, 0)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"{op}(): `dropout` must be in [0, 1); got {dropout}.")
        self.conv1_padding = conv1_padding
        self.ceil_mode = bool(ceil_mode)
        self.include_fc = bool(include_fc)
        self.dropout = float(dropout)
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG16_CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=self.ceil_mode))
            else:
                pad = conv1_padding if not layers else 1
                layers += [nn.Conv2d(cin, int(v), 3, padding=pad), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        if self.include_fc:
            self.conv6 = nn.Conv2d(512, 4096, 7)
            self.conv7 = nn.Conv2d(4096, 4096, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw every weight with the random initialisation of the Convention block."""
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        if self.include_fc:
            for m in (self.conv6, self.conv7):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def pool3(self) -> nn.Sequential:
        """conv1_1 ... pool3 (``features[0:17]``)."""
        return self.features[:_TAPS[0]]

    @property
    def pool4(self) -> nn.Sequential:
        """conv4_1 ... pool4 (``features[17:24]``)."""
        return self.features[_TAPS[0]:_TAPS[1]]

    @property
    def pool5(self) -> nn.Sequential:
        """conv5_1 ... pool5 (``features[24:31]``)."""
        return self.features[_TAPS[1]:_TAPS[2]]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = checks.check_image(x, "x", "VGG16")
        if x.shape[1] != 3:
            raise ValueError(f"VGG16(): `x` must have 3 channels (RGB); got {x.shape[1]}.")
        f = self.features
        p3 = x
        for i in range(0, _TAPS[0]):
            p3 = f[i](p3)
        p4 = p3
        for i in range(_TAPS[0], _TAPS[1]):
            p4 = f[i](p4)
        p5 = p4
        for i in range(_TAPS[1], _TAPS[2]):
            p5 = f[i](p5)
        return p3, p4, p5

    def fc(self, pool5: Tensor) -> Tensor:
        """conv6 -> ReLU -> Dropout -> conv7 -> ReLU -> Dropout on pool5 features."""
        if not self.include_fc:
            raise RuntimeError("VGG16.fc(): this encoder was built with include_fc=False. "
                               "Fix: build it with VGG16(include_fc=True).")
        x = F.dropout(F.relu(self.conv6(pool5)), self.dropout, self.training)
        return F.dropout(F.relu(self.conv7(x)), self.dropout, self.training)

    def extra_repr(self) -> str:
        return (f"conv1_padding={self.conv1_padding}, ceil_mode={self.ceil_mode}, "
                f"include_fc={self.include_fc}, dropout={self.dropout}")


def load_state_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from a local file without unpickling arbitrary objects.

    Convention:
        :func:`zoo.core.weights.read_state_dict` without prefix stripping: safetensors,
        or ``torch.load(weights_only=True)``; ``{"state_dict": ...}``/``{"model": ...}``
        wrappers are unwrapped; every value must be a tensor. A missing file raises
        ``FileNotFoundError`` (also a ``WeightsError``), an unreadable one ``WeightsError``
        (a ``ValueError``).

    Example:
        >>> sd = load_state_file("vgg16-397923af.pth")  # doctest: +SKIP
    """
    return read_state_dict(os.fspath(path), strip_prefixes=())


def load_vgg16_imagenet(model: VGG16, weights: str | os.PathLike | Mapping[str, Tensor]
                        ) -> dict[str, list[str]]:
    """Load ImageNet VGG16 weights (a local file or a state dict) into a :class:`VGG16`.

    Convention:
        - ``features.N.*`` are copied as they are (padding and ceil mode do not change the
          weights); ``classifier.0.weight`` (4096, 25088) is reshaped to (4096, 512, 7, 7) for
          ``conv6`` and ``classifier.3.weight`` (4096, 4096) to (4096, 4096, 1, 1) for
          ``conv7``, exactly as FCN-8s (and FCtL) initialise them; biases are copied.
        - ``classifier.6`` (FC8, ImageNet classes) and any other key are reported unused. A
          DataParallel ``module.`` prefix is stripped.
        - A weight the model needs that is absent, or a shape mismatch, raises ValueError
          naming the key: nothing is skipped silently.

    Args:
        model: the encoder to fill (for an FCtL model pass ``model.encoder``).
        weights: path of a ``.pth``/``.safetensors`` file, or a state dict.

    Returns:
        ``{"loaded": [model keys], "unused": [file keys]}``.

    Example:
        >>> enc = VGG16()
        >>> load_vgg16_imagenet(enc, "vgg16-397923af.pth")  # doctest: +SKIP
    """
    op = "load_vgg16_imagenet"
    if not isinstance(model, VGG16):
        raise TypeError(f"{op}(): `model` must be a zoo VGG16; got {type(model).__name__}. "
                        "Fix: for an FCtL model pass model.encoder.")
    if isinstance(weights, Mapping):
        src = dict(weights)
    else:
        src = load_state_file(weights)
    src = strip_prefixes(src, ("module.",), repeat=False)
    wanted: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, p in model.state_dict().items():
        if name.startswith("features."):
            wanted[name] = (name, tuple(p.shape))
        elif name.startswith("conv6."):
            wanted[name] = ("classifier.0." + name.split(".", 1)[1], tuple(p.shape))
        elif name.startswith("conv7."):
            wanted[name] = ("classifier.3." + name.split(".", 1)[1], tuple(p.shape))
    new_state = {}
    used = set()
    for name, (key, shape) in wanted.items():
        if key not in src:
            raise ValueError(f"{op}(): the weights lack {key!r} (needed for {name!r}). Fix: "
                             "pass a complete ImageNet VGG16 (configuration D) state dict.")
        t = src[key]
        if t.numel() != int(torch.tensor(shape).prod()):
            raise ValueError(f"{op}(): {key!r} has shape {tuple(t.shape)}, which does not fit "
                             f"{name!r} of shape {shape}. Fix: use VGG16 (configuration D) "
                             "weights without batch norm.")
        new_state[name] = t.reshape(shape)
        used.add(key)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, t in new_state.items():
            params[name].copy_(t)
    return {"loaded": sorted(new_state), "unused": sorted(k for k in src if k not in used)}
