"""The per-window call of the inference pipeline on an exported ONNX model (ONNX Runtime).

``python -m zoo.infer --engine onnxruntime --model model.onnx`` runs the same pipeline as
the PyTorch engine (:meth:`zoo.engine.task.Task.predict`: whole image, ``uhrops``'
``sliding_window`` or FCtL's patch pipeline, TTA, argmax, mask files); only the network call
changes. The stand-ins below are ``nn.Module`` s that take and return torch tensors, so the
pipeline cannot tell them from the models they were exported from:

- :class:`OnnxWSDNet`: ``model(image)`` -> logits. On a graph exported with ``--dynamic`` an
  image whose sides are not multiples of 32 is padded as WSDNet pads (``pad_mode``) and the
  logits cropped back, which is what the PyTorch model does inside its forward, so the
  result is the same; a fixed-size graph takes only its size (:func:`load_engine` then makes
  the pipeline slide windows of that size).
- :class:`OnnxFCtL`: the FCtL local model as :class:`zoo.fctl.FCtLSegmenter` calls it
  (``model(patches, contexts, context_features=...)``, ``encode_context`` for DeepGlobe's
  global image, which the graph encodes itself).

Both run on ONNX Runtime's CPU provider by default (CUDA's when asked and installed).
Needs ``pip install 'uhrops[onnx]'``.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uhrops.export import MissingExtraError
from zoo.core.errors import ConfigError

__all__ = ["OnnxFCtL", "OnnxWSDNet", "load_engine", "read_metadata", "require_onnxruntime"]

FORMAT = "zoo-onnx/1"


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or :class:`MissingExtraError` naming the extra."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtraError(
            "--engine onnxruntime needs the package onnxruntime, which is not installed. Fix: "
            "pip install 'uhrops[onnx]' (onnx, onnxscript and onnxruntime).") from None
    return onnxruntime


def _session(path: str, providers: Sequence[str] | None) -> Any:
    ort = require_onnxruntime()
    if not os.path.isfile(path):
        raise ConfigError(f"--model {path}: file not found. Fix: export one with python -m "
                          "zoo.export --config ... --checkpoint ... --out model.onnx.")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = torch.get_num_threads()  # the process' thread budget (OMP_NUM_THREADS, ...)
    opts.intra_op_num_threads = max(1, threads)
    available = ort.get_available_providers()
    chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available]
    if not chosen:
        raise ConfigError(f"ONNX Runtime providers {list(providers or [])} are not available "
                          f"here (available: {available}).")
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=chosen)
    except Exception as exc:  # an invalid or truncated file: one line naming it
        raise ConfigError(f"--model {path}: ONNX Runtime cannot load it "
                          f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]})."
                          ) from None


def read_metadata(session: Any, path: str = "the model") -> dict[str, Any]:
    """The zoo metadata of a session's model (JSON values decoded)."""
    raw = dict(session.get_modelmeta().custom_metadata_map)
    if raw.get("uhrops.format") != FORMAT:
        raise ConfigError(f"--model {path}: not a zoo.export file (metadata uhrops.format is "
                          f"{raw.get('uhrops.format')!r}, expected {FORMAT!r}). Fix: export it "
                          "with python -m zoo.export.")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


class _OnnxModule(nn.Module):
    def __init__(self, session: Any, meta: Mapping[str, Any]) -> None:
        super().__init__()
        self.session = session
        self.meta = dict(meta)
        self.num_classes = int(meta["zoo.num_classes"])
        self.input_names = [i.name for i in session.get_inputs()]
        # the pipeline asks the model for its device (next(model.parameters())): the CPU,
        # where ONNX Runtime takes and returns its arrays
        self._device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def _run(self, *inputs: Tensor) -> Tensor:
        feed = {name: t.detach().to("cpu", torch.float32).contiguous().numpy()
                for name, t in zip(self.input_names, inputs)}
        (logits,) = self.session.run(["logits"], feed)
        return torch.from_numpy(np.ascontiguousarray(logits))


class OnnxWSDNet(_OnnxModule):
    """An exported WSDNet as ``model(image) -> logits`` (see the module docstring)."""

    def __init__(self, session: Any, meta: Mapping[str, Any]) -> None:
        super().__init__(session, meta)
        self.size = meta.get("zoo.size")
        self.multiple = int(meta.get("zoo.size_multiple") or 1)
        self.pad_mode = meta.get("zoo.pad_mode") or "constant"

    def forward(self, image: Tensor) -> Tensor:
        H, W = image.shape[-2:]
        if self.size is not None:
            if [H, W] != list(self.size):
                raise ValueError(f"OnnxWSDNet: the graph takes {self.size[0]}x{self.size[1]} "
                                 f"images; got {H}x{W}. Fix: export with --dynamic, or "
                                 "segment window by window (eval.sliding=true, eval.window = "
                                 "the exported size).")
            return self._run(image).to(image.device)
        ph, pw = -H % self.multiple, -W % self.multiple
        out = self._run(self._pad(image, ph, pw) if ph or pw else image)
        return out[..., :H, :W].contiguous().to(image.device)


    def _pad(self, image: Tensor, ph: int, pw: int) -> Tensor:
        """WSDNet pads the normalised image: zeros there are the channel means here, and
        reflect/replicate padding commutes with the per-channel normalisation."""
        if self.pad_mode != "constant":
            return F.pad(image, (0, pw, 0, ph), mode=self.pad_mode)
        B, C, H, W = image.shape
        norm = self.meta.get("zoo.normalization")
        fill = torch.zeros(C, dtype=image.dtype) if not norm else \
            torch.tensor(norm["mean"], dtype=image.dtype)
        x = fill.view(1, C, 1, 1).expand(B, C, H + ph, W + pw).to(image.device).clone()
        x[..., :H, :W] = image
        return x


class OnnxFCtL(_OnnxModule):
    """An exported FCtL local model, called as :class:`zoo.fctl.FCtLSegmenter` calls an FCtL."""

    #: lets FCtLSegmenter accept it in place of a zoo FCtL
    fctl_compatible = True

    def __init__(self, session: Any, meta: Mapping[str, Any]) -> None:
        super().__init__(session, meta)
        self.stage = meta["zoo.stage"]
        self.context_names = tuple(meta["zoo.context_names"])
        self.context_scales = tuple(meta["zoo.context_scales"])

    def encode_context(self, name: str, image: Tensor) -> Tensor:
        """The graph encodes the global image itself: the "feature" handed back is the image."""
        return image

    def forward(self, patch: Tensor, contexts: Sequence[Tensor | None] = (), *,
                context_features: Sequence[Tensor | None] | None = None) -> Tensor:
        k = len(self.context_names)
        feats = list(context_features) if context_features is not None else [None] * k
        ctxs = list(contexts) if contexts else [None] * k
        inputs = [patch]
        for i, name in enumerate(self.context_names):
            t = feats[i] if feats[i] is not None else ctxs[i]
            if t is None:
                raise ValueError(f"OnnxFCtL: context {name!r} is missing.")
            inputs.append(t)
        return self._run(*inputs).to(patch.device)


def config_from_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config recorded by zoo.export (validated again by zoo.config)."""
    import tempfile

    from zoo.config import dump_config, load_config

    cfg = meta.get("zoo.config")
    if not isinstance(cfg, dict):
        raise ConfigError("the model's metadata holds no zoo.config. Fix: pass --config.")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        dump_config(cfg, path)
        return load_config(path)


def load_engine(path: str, cfg: dict[str, Any] | None = None,
                providers: Sequence[str] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(stand-in model, config) for an exported file; ``cfg`` None takes the recorded one.

    A fixed-size WSDNet graph makes the config slide windows of its size
    (``eval.sliding=true``, ``eval.window`` = the size) so every image runs through it.
    """
    session = _session(path, providers)
    meta = read_metadata(session, path)
    cfg = config_from_metadata(meta) if cfg is None else copy.deepcopy(cfg)
    family = meta["zoo.family"]
    if cfg["family"] != family:
        raise ConfigError(f"--model {path} holds a {family!r} network but the config is a "
                          f"{cfg['family']!r} one. Fix: pass the config it was exported from, "
                          "or none (the recorded one is used).")
    if int(cfg["model"]["num_classes"]) != int(meta["zoo.num_classes"]):
        raise ConfigError(f"--model {path} predicts {meta['zoo.num_classes']} classes but the "
                          f"config says model.num_classes={cfg['model']['num_classes']}.")
    if family == "wsdnet":
        model: nn.Module = OnnxWSDNet(session, meta)
        if meta.get("zoo.size") is not None:
            cfg["eval"]["sliding"] = True
            cfg["eval"]["window"] = list(meta["zoo.size"])
    elif family == "fctl":
        model = OnnxFCtL(session, meta)
        if meta.get("zoo.stage") != "global" and \
                int(cfg["fctl"]["patch_size"]) != int(meta["zoo.size"][0]):
            raise ConfigError(f"--model {path} takes {meta['zoo.size'][0]} px patches but "
                              f"fctl.patch_size is {cfg['fctl']['patch_size']}.")
    else:
        raise ConfigError(f"--model {path}: family {family!r} has no ONNX engine.")
    return model.eval(), cfg
