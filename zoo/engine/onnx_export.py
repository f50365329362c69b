"""Export a trained zoo model to ONNX: the per-window network, with the facts the tiling
pipeline and a deployer need recorded as ``metadata_props``.

What is exported (tiling, merging and argmax stay outside, in the pipeline that calls it):

- ``wsdnet``: the whole network in eval mode, ``image`` (B, 3, H, W) RGB in [0, 1] ->
  ``logits`` (B, n, H, W); the ImageNet normalisation and the pad to a multiple of 32 are in
  the graph. ``dynamic=True``: B, H and W dynamic with H, W multiples of 32 (the model pads
  other sizes, a branch an exported graph cannot keep; the runtime engine pads the same way
  before calling it, so any size runs); otherwise a fixed (H, W) and a dynamic B.
- ``fctl``: the local model of one stage, ``patch`` (B, 3, p, p) and one input per context of
  the stage (``context_medium``, ``context_large``: (B, 3, p, p) windows already resized, or
  for DeepGlobe's "global" context the whole image resized, (1, 3, p, p)) -> ``logits``
  (B, n, p, p); B dynamic, p = ``fctl.patch_size`` (or ``size``).

Metadata keys (all strings; JSON where structured): ``uhrops.format`` (= "zoo-onnx/1"),
``zoo.family``, ``zoo.config`` (the resolved config, JSON), ``zoo.classes``, ``zoo.palette``,
``zoo.num_classes``, ``zoo.normalization`` ({"mean", "std", "in_graph"} or null: raw [0, 1]
input), ``zoo.input_range``, ``zoo.inputs``, ``zoo.outputs``, ``zoo.size`` (null when
dynamic), ``zoo.size_multiple``, ``zoo.pad_mode`` (WSDNet), ``zoo.context_scales`` (FCtL),
``zoo.checkpoint`` (file name and sha256 of its first MiB), ``uhrops.version``,
``torch.version``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

import uhrops
from uhrops.export import require_onnx, to_onnx
from zoo.core.errors import ConfigError
from zoo.data.registry import dataset_rules, palette_for
from zoo.engine.task import Task

__all__ = ["FORMAT", "FCtLExportWrapper", "export_onnx", "export_spec"]

FORMAT = "zoo-onnx/1"
_EXPORTABLE = ("wsdnet", "fctl")


class FCtLExportWrapper(nn.Module):
    """FCtL's local model with positional inputs: ``(patch, *contexts)`` -> logits.

    Convention:
        one context input per ``model.context_names``; a numeric scale takes the resized
        window of every patch (B, 3, p, p), "global" the whole image resized (1, 3, p, p),
        encoded inside the graph and shared by the batch (the PyTorch pipeline encodes it once
        per image; here once per call).
    """

    def __init__(self, model: nn.Module, scales: Sequence[float | str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.scales = tuple(model.context_scales if scales is None else scales)

    def forward(self, patch: Tensor, *contexts: Tensor) -> Tensor:
        m = self.model
        if not m.context_names:
            return m(patch)
        feats: list[Tensor | None] = []
        ctxs: list[Tensor | None] = []
        for name, scale, image in zip(m.context_names, self.scales, contexts):
            if scale == "global":
                f = m.encode_context(name, image)
                feats.append(f.expand(patch.shape[0], -1, -1, -1))
                ctxs.append(None)
            else:
                feats.append(None)
                ctxs.append(image)
        if all(f is None for f in feats):
            return m(patch, tuple(ctxs))
        return m(patch, tuple(ctxs), context_features=feats)


def _checkpoint_id(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return json.dumps({"file": os.path.basename(path), "sha256_first_mib": h.hexdigest()[:16]})


def export_spec(task: Task, model: nn.Module, size: Sequence[int] | None,
                dynamic: bool) -> dict[str, Any]:
    """Module, example inputs, names, dynamic shapes and metadata for ``model``."""
    cfg = task.cfg
    family = cfg["family"]
    if family not in _EXPORTABLE:
        raise ConfigError(f"zoo.export: family {family!r} is not exportable; ONNX export covers "
                          f"{', '.join(_EXPORTABLE)} (the refinement network CSRN is not "
                          "exported).")
    batch = torch.export.Dim("batch", min=1, max=4096)
    meta: dict[str, Any] = {"zoo.family": family, "zoo.num_classes": task.num_classes,
                            "zoo.input_range": "RGB float32 in [0, 1], (B, 3, H, W)"}
    if family == "wsdnet":
        norm = None if model.mean is None else {
            "mean": [float(v) for v in model.mean.flatten()],
            "std": [float(v) for v in model.std.flatten()], "in_graph": True}
        divisor = int(model.size_divisor)
        if dynamic and size is None:
            size = (2 * divisor, 3 * divisor)  # example only; the graph takes any multiple
        elif size is None:
            size = tuple(cfg["eval"]["window"])
        h, w = (int(s) for s in size)
        if min(h, w) < 1:
            raise ConfigError(f"zoo.export: --size must be positive; got {h} {w}.")
        if dynamic and (h % divisor or w % divisor):
            raise ConfigError(f"zoo.export: with --dynamic the example --size must be a "
                              f"multiple of {divisor}; got {h} {w}.")
        args: tuple = (torch.rand(2, 3, h, w),)
        module: nn.Module = model
        names = ["image"]
        shapes: Any = ({0: batch, 2: divisor * torch.export.Dim("h", min=1, max=1024),
                        3: divisor * torch.export.Dim("w", min=1, max=1024)},) if dynamic \
            else ({0: batch},)
        meta.update({"zoo.normalization": norm, "zoo.size_multiple": divisor if dynamic else 1,
                     "zoo.pad_mode": model.pad_mode})
    else:
        p = int(cfg["fctl"]["patch_size"]) if size is None else int(size[0])
        if size is not None and int(size[0]) != int(size[1]):
            raise ConfigError(f"zoo.export: FCtL patches are square; got --size {size[0]} "
                              f"{size[1]}.")
        h = w = p
        names = ["patch"] + [f"context_{n}" for n in model.context_names]
        scales = list(task._scales(model)) if model.context_names else []
        args = (torch.rand(2, 3, p, p),) + tuple(
            torch.rand(1 if s == "global" else 2, 3, p, p) for s in scales)
        module = FCtLExportWrapper(model, scales)
        ctx_shapes = tuple(None if s == "global" else {0: batch} for s in scales)
        shapes = ({0: batch}, ctx_shapes) if scales else ({0: batch},)  # *contexts: one tuple
        if dynamic:
            print("zoo.export: FCtL exports with a dynamic batch and a fixed patch size "
                  f"({p}); its decoder crops at fixed offsets of the patch.")
        dynamic = False
        meta.update({"zoo.normalization": None, "zoo.size_multiple": 1,
                     "zoo.context_scales": [s if s == "global" else float(s) for s in scales],
                     "zoo.context_names": list(model.context_names),
                     "zoo.stage": model.stage})
    rules = dataset_rules(cfg)
    meta.update({
        "uhrops.format": FORMAT,
        "zoo.config": cfg,
        "zoo.classes": list(rules.classes),
        "zoo.palette": [list(c) for c in palette_for(cfg)],
        "zoo.inputs": names,
        "zoo.outputs": ["logits"],
        "zoo.size": None if dynamic else [h, w],
        "uhrops.version": uhrops.__version__,
        "torch.version": torch.__version__,
    })
    return {"module": module, "args": args, "input_names": names, "dynamic_shapes": shapes,
            "metadata": meta}


def _as_strings(meta: Mapping[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def export_onnx(task: Task, model: nn.Module, out: str, *, checkpoint: str | None = None,
                size: Sequence[int] | None = None, dynamic: bool = False,
                opset_version: int | None = None) -> dict[str, Any]:
    """Export ``model`` (built and loaded by ``task``) to ``out``; returns the metadata."""
    require_onnx("zoo.export")
    model = model.eval()
    spec = export_spec(task, model, size, dynamic)
    if checkpoint:
        spec["metadata"]["zoo.checkpoint"] = _checkpoint_id(checkpoint)
    meta = _as_strings(spec["metadata"])
    with torch.no_grad():
        to_onnx(spec["module"], spec["args"], out, input_names=spec["input_names"],
                output_names=["logits"], dynamic_shapes=spec["dynamic_shapes"], metadata=meta,
                opset_version=opset_version)
    return meta
