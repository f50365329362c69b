"""The early local FCtL model whose crude masks the CSRN learns from: loading it cheaply and
fingerprinting its checkpoint (so a mask folder made by another model is refused)."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

import torch

from zoo.core.checkpoint import load_checkpoint
from zoo.core.errors import ConfigError
from zoo.fctl.model import FCtL

__all__ = ["checkpoint_fingerprint", "load_local_model"]


def load_local_model(local_cfg: Mapping[str, Any], checkpoint: str,
                     device: torch.device | str = "cpu") -> torch.nn.Module:
    """The FCtL of a local config with a zoo.train checkpoint's weights, in eval mode.

    Convention:
        ``FCtL(model.num_classes, **model.kwargs)`` of ``local_cfg`` (family "fctl", else
        ConfigError), filled by :func:`zoo.core.checkpoint.load_checkpoint` (strict: a checkpoint of
        another model raises CheckpointError), on ``device``, in eval mode. The model is
        built on the meta device and materialised uninitialised before the load (every
        tensor comes from the checkpoint), which skips the random initialisation of its
        134-300 M parameters (seconds on a CPU).
    """
    if local_cfg["family"] != "fctl":
        raise ConfigError(f"the local model config is a {local_cfg['family']!r} config; crude "
                          "masks come from an FCtL local model (family fctl).")
    with torch.device("meta"):
        model = FCtL(int(local_cfg["model"]["num_classes"]), **dict(local_cfg["model"]["kwargs"]))
    model = model.to_empty(device="cpu")
    state_keys = set(model.state_dict())
    if any(name not in state_keys for name, _ in model.named_buffers()):
        raise RuntimeError("load_local_model(): the model has buffers outside its state dict; "
                           "they would stay uninitialised.")
    load_checkpoint(checkpoint, model)
    return model.to(device).eval()


def checkpoint_fingerprint(path: str, span: int = 1 << 22) -> str:
    """sha256 of a checkpoint's size, first and last 4 MiB: its header (trainer state with
    the iteration and RNG states) and tensor data, without reading gigabytes."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(span))
        if size > span:
            f.seek(max(span, size - span))
            h.update(f.read(span))
    return h.hexdigest()[:16]
