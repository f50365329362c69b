"""FCtL (Li et al., ICCV 2021): the local segmentation model of the released code.

"From Contexts to Locality: Ultra-high Resolution Image Segmentation via Locality-aware
Contextual Correlation". The model reads top to bottom like the paper's Fig. 2 and the
authors' ``models/fcn.py`` / ``models/FCtL.py`` (see ``reference/fctl.md`` §3-§4):

1. **Encoders.** The 508 px local patch goes through a trainable FCN-8s VGG16 (conv1_1 pad 100,
   ceil-mode pools) giving pool3/pool4/pool5. Each context (an image window around the patch,
   already cropped and resized, usually to the patch size) is encoded to pool5 by a frozen
   VGG16 (``model.context_encoders``, filled from earlier-stage checkpoints) - or, in the
   ``"single_context"`` stage, by the local encoder itself (shared, trainable weights).
2. **Locality-aware contextual correlation.** One :class:`uhrops.attention.
   LocalContextCorrelation` per context source (self, medium, large/global): q from the local
   pool5, k and v from the context pool5, softmax over keys with no 1/sqrt(d) scaling, times a
   learnable gamma initialised to 0 (so a fresh model is the FCN-8s baseline). The DeepGlobe
   variant centres q and k over positions first.
3. **Multi-context fusion ("squeeze and split").** 1x1 conv per branch, concatenation, 1x1
   conv over all 3·512 channels, split, 1x1 conv + sigmoid per branch, softmax across the three
   branches, per channel and position (each weight lies in [1/(1+2e), e/(e+2)] ≈ [0.155,
   0.576]); pool5 + Σ w_i · corr_i.
4. **Decoder.** FCN-8s "at once": conv6 (7x7) / conv7 with ReLU and Dropout, a 1x1 score conv,
   two frozen bilinear x2 transposed convs with the 0.01·pool4 and 0.0001·pool3 skips (crops
   5 and 9), a frozen bilinear x8 transposed conv and a crop at 31 back to the input size.

Variants: ``"inria"`` (``main`` branch, mode 3): medium = x2 and large = x3 windows around the
patch, no centring, the fusion ordered (medium, large, self) and initialised N(0, 0.01) like
the correlations. ``"deepglobe"`` (``Deepglobe`` branch, mode 4): medium = x3 window, large =
the whole image resized to the patch size (one per image, broadcast over the patches), q/k
centring, three separate correlation modules, the fusion ordered (self, medium, large) with
PyTorch's default initialisation.

Stages (the official ``--mode``): ``"fcn"`` (1, FCN-8s on patches), ``"single_context"`` (2,
one medium context through the shared local encoder, pool5 + gamma·corr), ``"global"``
(DeepGlobe 0, the FCN-8s trained on whole images resized to 508), ``"full"`` (Inria 3 /
DeepGlobe 4).

Differences from the released code, all without effect on the outputs: the unused VGG
classifier (123.6 M parameters) is not built, the aliased key sets are not duplicated, the
correlation branches that a stage never uses are not built, and the frozen context encoders
hold only the VGG16 ``features`` (14.7 M each instead of a whole 138.4 M VGG16).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from uhrops import checks
from uhrops.attention import LocalContextCorrelation
from zoo.backbones.vgg import VGG16, load_state_file
from zoo.core.weights import strip_prefixes

__all__ = [
    "FCtL",
    "FCN8sDecoder",
    "MultiContextFusion",
    "bilinear_kernel",
    "VARIANTS",
    "STAGES",
]

VARIANTS = ("inria", "deepglobe")
STAGES = ("fcn", "single_context", "global", "full")

# Order of the three correlation outputs inside the fusion, as the official code wires it.
_FUSION_ORDER = {"inria": ("medium", "large", "self"), "deepglobe": ("self", "medium", "large")}
# Context scales each variant/stage expects (a number: window = scale x patch; "global": the
# whole image resized to the patch size). Used by the pipeline; recorded on the model.
_CONTEXTS = {
    ("inria", "single_context"): (2.0,),
    ("inria", "full"): (2.0, 3.0),
    ("deepglobe", "single_context"): (3.0,),
    ("deepglobe", "full"): (3.0, "global"),
}

# FCN-8s decoder constants of the released code.
_POOL4_SCALE = 0.01
_POOL3_SCALE = 0.0001
_CROP_POOL4, _CROP_POOL3, _CROP_OUT = 5, 9, 31


def bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """The class-diagonal bilinear kernel that initialises FCN upsampling transposed convs.

    Convention:
        factor = ceil(k / 2); centre = factor - 1 for odd k, factor - 0.5 for even k;
        ``w[i, i, y, x] = (1 - |y - centre| / factor) · (1 - |x - centre| / factor)``, zero off the
        diagonal. Laid out (in, out, k, k) like ``nn.ConvTranspose2d.weight``. With stride
        ``factor`` the transposed conv is bilinear interpolation (align_corners=False
        sampling, shifted by the FCN crops).

    Args:
        channels: number of classes (in = out channels).
        kernel_size: k (4 for x2, 16 for x8).

    Returns:
        (channels, channels, k, k) float32 tensor.

    Example:
        >>> bilinear_kernel(1, 4)[0, 0, 0]
        tensor([0.0625, 0.1875, 0.1875, 0.0625])
    """
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    r = torch.arange(kernel_size, dtype=torch.float64)
    f1 = 1 - (r - centre).abs() / factor
    filt = (f1[:, None] * f1[None, :]).float()
    w = torch.zeros(channels, channels, kernel_size, kernel_size)
    idx = torch.arange(channels)
    w[idx, idx] = filt
    return w


class FCN8sDecoder(nn.Module):
    """The FCN-8s "at once" head of FCtL: score, skips, frozen bilinear upsampling, crops.

    Convention:
        - ``forward(fc7, pool4, pool3, size)``: s = score(fc7); u1 = up2(s); u1 +=
          score_pool4(0.01·pool4) cropped at 5; u2 = up2_pool4(u1); u2 += score_pool3(
          0.0001·pool3) cropped at 9; out = up8(u2) cropped at 31 to ``size``. At 508:
          17 -> 36 -> 74 -> 600 -> 508.
        - The three transposed convs hold the bilinear kernels of :func:`bilinear_kernel`,
          have no bias and are frozen (``requires_grad=False``), as in the released code;
          the 1x1 convs keep PyTorch's default initialisation (not FCN's zero init).

    Args:
        num_classes: n.

    Example:
        >>> dec = FCN8sDecoder(2)
        >>> dec(torch.rand(1, 4096, 3, 3), torch.rand(1, 512, 17, 17),
        ...     torch.rand(1, 256, 33, 33), (64, 64)).shape
        torch.Size([1, 2, 64, 64])
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        n = checks.check_int(num_classes, "num_classes", "FCN8sDecoder", 1)
        self.num_classes = n
        self.score = nn.Conv2d(4096, n, 1)
        self.score_pool4 = nn.Conv2d(512, n, 1)
        self.score_pool3 = nn.Conv2d(256, n, 1)
        self.up2 = nn.ConvTranspose2d(n, n, 4, stride=2, bias=False)
        self.up2_pool4 = nn.ConvTranspose2d(n, n, 4, stride=2, bias=False)
        self.up8 = nn.ConvTranspose2d(n, n, 16, stride=8, bias=False)
        for up in (self.up2, self.up2_pool4, self.up8):
            with torch.no_grad():
                up.weight.copy_(bilinear_kernel(n, up.kernel_size[0]))
            up.weight.requires_grad_(False)

    def forward(self, fc7: Tensor, pool4: Tensor, pool3: Tensor,
                size: Sequence[int]) -> Tensor:
        h, w = int(size[0]), int(size[1])
        u = self.up2(self.score(fc7))
        c = _CROP_POOL4
        u = u + self.score_pool4(_POOL4_SCALE * pool4)[:, :, c:c + u.shape[2], c:c + u.shape[3]]
        u = self.up2_pool4(u)
        c = _CROP_POOL3
        u = u + self.score_pool3(_POOL3_SCALE * pool3)[:, :, c:c + u.shape[2], c:c + u.shape[3]]
        c = _CROP_OUT
        return self.up8(u)[:, :, c:c + h, c:c + w].contiguous()


class MultiContextFusion(nn.Module):
    """FCtL's "squeeze and split" fusion of K correlation outputs with a residual.

    Convention:
        - ``forward(x, corrs)``: H_i = in_convs[i](corrs[i]); T = trans(cat(H_1..H_K));
          S_i = sigmoid(out_convs[i](split(T)[i])); W = softmax over i of S (per channel and
          position); returns x + Σ_i W_i · corrs[i]. There is no nonlinearity before the
          sigmoid, so each weight lies in [1/(1 + (K-1)e), e/(e + K - 1)] (K = 3: [0.155,
          0.576]).
        - ``weights(corrs)`` returns W as (K, B, C, H, W).
        - All convs are 1x1 with bias; initialisation is ``init="normal"`` (N(0, 0.01), zero
          bias: FCtL ``main``) or ``"default"`` (PyTorch's: FCtL ``Deepglobe``).

    Args:
        channels: C of each correlation output (512 in FCtL).
        num_contexts: K (3 in FCtL).
        init: "normal" or "default".

    Example:
        >>> fus = MultiContextFusion(8, 3)
        >>> x = torch.rand(2, 8, 5, 5)
        >>> fus(x, [torch.zeros_like(x)] * 3).equal(x)
        True
    """

    def __init__(self, channels: int = 512, num_contexts: int = 3, init: str = "normal") -> None:
        super().__init__()
        op = "MultiContextFusion"
        c = checks.check_int(channels, "channels", op, 1)
        k = checks.check_int(num_contexts, "num_contexts", op, 1)
        checks.check_choice(init, "init", op, ("normal", "default"))
        self.channels, self.num_contexts = c, k
        self.in_convs = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(k))
        self.trans = nn.Conv2d(k * c, k * c, 1)
        self.out_convs = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(k))
        if init == "normal":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, 0.01)
                    nn.init.zeros_(m.bias)

    def weights(self, corrs: Sequence[Tensor]) -> Tensor:
        if len(corrs) != self.num_contexts:
            raise ValueError(f"MultiContextFusion(): expected {self.num_contexts} correlation "
                             f"outputs; got {len(corrs)}.")
        h = torch.cat([conv(c) for conv, c in zip(self.in_convs, corrs)], 1)
        parts = torch.split(self.trans(h), self.channels, 1)
        s = torch.stack([torch.sigmoid(conv(p)) for conv, p in zip(self.out_convs, parts)], 0)
        return torch.softmax(s, 0)

    def forward(self, x: Tensor, corrs: Sequence[Tensor]) -> Tensor:
        w = self.weights(corrs)
        out = x
        for i, c in enumerate(corrs):
            out = out + w[i] * c
        return out

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_contexts={self.num_contexts}"


class FCtL(nn.Module):
    """FCtL's local segmentation model (encoders, correlation, fusion, FCN-8s decoder).

    Convention:
        - ``forward(patch, contexts=())``: patch (B, 3, H, W) -> logits (B, n, H, W) at the
          patch size (any H, W >= 1; FCtL uses 508). ``contexts`` holds one image tensor per
          entry of ``model.context_names`` - () for "fcn"/"global", (medium,) for
          "single_context", (medium, large) for "full" - each (B, 3, h, w) or (1, 3, h, w)
          (broadcast over the patches: the DeepGlobe global image), already cropped and
          resized (the pipeline resizes every context to the patch size, as FCtL does).
        - ``context_features=`` may give, per context, its pool5 features from
          :meth:`encode_context` instead (the corresponding ``contexts`` entry may then be
          None): the pipeline encodes the DeepGlobe global image once per image this way.
        - Inputs are used as given: FCtL feeds [0, 1] images without ImageNet normalisation
          (the pipeline has the option). The frozen context encoders always run in eval
          mode under ``torch.no_grad()``; their parameters have ``requires_grad=False`` and
          :meth:`train` leaves them in eval mode. In "single_context" the context goes through
          the trainable local encoder, and gradients flow from both passes.
        - ``model.context_scales`` records what each context is (a window scale, or
          "global"), for the pipeline.
        - Without checkpoints the VGG16 is randomly initialised (see
          :class:`zoo.backbones.vgg.VGG16`); load ImageNet weights with
          ``load_vgg16_imagenet(model.encoder, path)``, official checkpoints with
          :func:`zoo.fctl.load_official_checkpoints`.

    Args:
        num_classes: n (7 for DeepGlobe, 2 for Inria).
        variant: "inria" or "deepglobe" (see the module docstring).
        stage: "fcn", "single_context", "global" (DeepGlobe only) or "full".

    Example:
        >>> model = FCtL(2, "inria", "full").eval()
        >>> p = torch.rand(1, 3, 64, 64)
        >>> model(p, (torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))).shape
        torch.Size([1, 2, 64, 64])
    """

    def __init__(self, num_classes: int, variant: str = "inria", stage: str = "full") -> None:
        super().__init__()
        op = "FCtL"
        n = checks.check_int(num_classes, "num_classes", op, 1)
        checks.check_choice(variant, "variant", op, VARIANTS)
        checks.check_choice(stage, "stage", op, STAGES)
        if stage == "global" and variant != "deepglobe":
            raise ValueError(f"{op}(): stage 'global' exists only for variant 'deepglobe' (the "
                             "Inria model has no global context); got variant "
                             f"{variant!r}. Fix: use stage='fcn' for a plain FCN-8s.")
        self.num_classes, self.variant, self.stage = n, variant, stage
        center = variant == "deepglobe"
        self.context_scales: tuple = _CONTEXTS.get((variant, stage), ())
        self.context_names: tuple[str, ...] = (("medium",) if stage == "single_context" else
                                               ("medium", "large") if stage == "full" else ())

        self.encoder = VGG16(include_fc=True)
        if stage == "full":
            self.context_encoders = nn.ModuleDict(
                {name: VGG16(include_fc=False) for name in self.context_names})
            self.context_encoders.requires_grad_(False)
            self.context_encoders.eval()
            self.fusion_order: tuple[str, ...] = _FUSION_ORDER[variant]
            self.correlations = nn.ModuleDict(
                {name: LocalContextCorrelation(512, center=center) for name in self.fusion_order})
            self.fusion = MultiContextFusion(512, 3, "normal" if variant == "inria" else "default")
        elif stage == "single_context":
            self.fusion_order = ()
            self.correlations = nn.ModuleDict(
                {"medium": LocalContextCorrelation(512, center=center)})
        else:
            self.fusion_order = ()
        self.decoder = FCN8sDecoder(n)

    # -- training mode: the frozen encoders stay in eval ---------------------------------
    def train(self, mode: bool = True) -> "FCtL":
        super().train(mode)
        if hasattr(self, "context_encoders"):
            self.context_encoders.eval()
        return self

    # -- contexts ------------------------------------------------------------------------
    def encode_context(self, name: str, image: Tensor) -> Tensor:
        """pool5 features (b, 512, h5, w5) of a context image through its encoder.

        "full": the frozen encoder ``context_encoders[name]`` under no_grad; "single_context":
        the shared local encoder (with autograd).
        """
        op = "FCtL.encode_context"
        checks.check_choice(name, "name", op, self.context_names)
        image = checks.check_image(image, "image", op)
        if self.stage == "single_context":
            return self.encoder(image)[2]
        enc = self.context_encoders[name]
        with torch.no_grad():
            return enc(image)[2]

    def _context_feature(self, i: int, name: str, image: Tensor | None,
                         feature: Tensor | None, batch: int) -> Tensor:
        op = "FCtL.forward"
        if feature is None:
            if image is None:
                raise ValueError(f"{op}(): context {i} ({name!r}) is None and no "
                                 "context_features entry replaces it.")
            image = checks.check_image(image, f"contexts[{i}]", op)
            feature = self.encode_context(name, image)
        else:
            checks.check_tensor(feature, f"context_features[{i}]", op)
            checks.check_rank(feature, f"context_features[{i}]", op, 4, "(B, 512, h, w)")
        if feature.shape[0] == batch:
            return feature
        if feature.shape[0] == 1:
            return feature.expand(batch, -1, -1, -1)
        raise ValueError(f"{op}(): context {i} ({name!r}) has batch {feature.shape[0]} but the "
                         f"patches have batch {batch}. Fix: pass one context per patch, or a "
                         "single one (batch 1) to share.")

    def forward(self, patch: Tensor, contexts: Sequence[Tensor | None] = (), *,
                context_features: Sequence[Tensor | None] | None = None) -> Tensor:
        op = "FCtL.forward"
        patch = checks.check_image(patch, "patch", op)
        if not isinstance(contexts, (list, tuple)):
            raise TypeError(f"{op}(): `contexts` must be a tuple of tensors (one per "
                            f"{self.context_names}); got {type(contexts).__name__}.")
        k = len(self.context_names)
        feats = list(context_features) if context_features is not None else [None] * k
        ctxs = list(contexts) if contexts or context_features is None else [None] * k
        if len(ctxs) != k or len(feats) != k:
            got = len(ctxs) if len(ctxs) != k else len(feats)
            raise ValueError(
                f"{op}(): stage {self.stage!r} ({self.variant}) takes {k} context(s) "
                f"{self.context_names}; got {got}. Fix: pass contexts=(" +
                ", ".join(f"<{n} image>" for n in self.context_names) + ").")
        B = patch.shape[0]

        pool3, pool4, pool5 = self.encoder(patch)
        if self.stage == "single_context":
            ctx = self._context_feature(0, "medium", ctxs[0], feats[0], B)
            pool5 = pool5 + self.correlations["medium"](pool5, ctx)
        elif self.stage == "full":
            sources = {"self": pool5}
            for i, name in enumerate(self.context_names):
                sources[name] = self._context_feature(i, name, ctxs[i], feats[i], B)
            corrs = [self.correlations[name](pool5, sources[name]) for name in self.fusion_order]
            pool5 = self.fusion(pool5, corrs)
        return self.decoder(self.encoder.fc(pool5), pool4, pool3, patch.shape[-2:])

    # -- weights ---------------------------------------------------------------------------
    def load_context_encoders(self, medium: object = None, large: object = None) -> None:
        """Fill the frozen context encoders from earlier-stage models or checkpoints.

        Convention:
            Each argument (None leaves that encoder as it is) may be an :class:`FCtL` (its
            local encoder is copied: the official stage-2 / global models), a
            :class:`~zoo.backbones.vgg.VGG16`, a state dict of either (keys
            ``encoder.features.*`` or ``features.*``; a DataParallel ``module.`` prefix is
            stripped), or the path of such a file. Only the VGG16 ``features`` are read; a
            missing one raises ValueError. Official checkpoints: use
            :func:`zoo.fctl.load_official_checkpoints`.

        Args:
            medium: source for ``context_encoders["medium"]``.
            large: source for ``context_encoders["large"]`` (DeepGlobe: the global model).

        Example:
            >>> full = FCtL(2, "inria", "full")
            >>> full.load_context_encoders(FCtL(2, "inria", "single_context"),
            ...                            FCtL(2, "inria", "single_context"))
        """
        op = "FCtL.load_context_encoders"
        if self.stage != "full":
            raise ValueError(f"{op}(): only stage 'full' has frozen context encoders; this "
                             f"model is stage {self.stage!r}.")
        for name, src in (("medium", medium), ("large", large)):
            if src is None:
                continue
            if isinstance(src, FCtL):
                state = {k: v for k, v in src.encoder.state_dict().items()}
            elif isinstance(src, VGG16):
                state = src.state_dict()
            elif isinstance(src, Mapping):
                state = dict(src)
            elif isinstance(src, (str, os.PathLike)):
                state = load_state_file(src)
            else:
                raise TypeError(f"{op}(): `{name}` must be an FCtL, a VGG16, a state dict or "
                                f"a path; got {type(src).__name__}.")
            state = strip_prefixes(state, ("module.",), repeat=False)
            if any(k.startswith("encoder.features.") for k in state):
                state = {k[len("encoder."):]: v for k, v in state.items()
                         if k.startswith("encoder.features.")}
            target = self.context_encoders[name]
            new = {}
            for key, p in target.state_dict().items():
                if key not in state:
                    raise ValueError(f"{op}(): the `{name}` source lacks {key!r}. Fix: pass a "
                                     "model or state dict with the VGG16 features.")
                if tuple(state[key].shape) != tuple(p.shape):
                    raise ValueError(f"{op}(): `{name}` {key!r} has shape "
                                     f"{tuple(state[key].shape)}; expected {tuple(p.shape)}.")
                new[key] = state[key]
            target.load_state_dict(new)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, variant={self.variant!r}, "
                f"stage={self.stage!r}")
