"""Checkpoints: one safetensors file with the model, the optimizer and the trainer state.

A checkpoint is ONE safetensors file: the model's tensors under ``model.``, the optimizer's
tensors under ``optim.<param index>.<name>``, and the JSON trainer state (iteration,
optimizer and scheduler settings, RNG states, config hash, model class, metrics) in the
file's metadata under ``uhrops.state``. It is written to a temporary file in the same folder,
flushed to disk and renamed over the old one, so a process killed at any moment leaves
either the old or the new checkpoint, never a torn one. A ``.json`` copy of the state is
written next to it for people to read; loading never trusts it. Loading uses safetensors
(no pickle at all); backbone weight files are read by ``zoo.core.weights``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import torch

from zoo.core.atomic import atomic_write_bytes, atomic_write_text
from zoo.core.errors import CheckpointError
from zoo.core.weights import strip_prefixes, unwrap_module

__all__ = ["FORMAT", "is_safetensors", "load_checkpoint", "model_signature", "read_checkpoint",
           "read_model_weights", "save_checkpoint"]

FORMAT = "uhrops-checkpoint-1"



def _split_optimizer(sd: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        entry = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
                entry[k] = {"tensor": f"optim.{idx}.{k}"}
            else:
                entry[k] = v
        plain["state"][str(idx)] = entry
    return tensors, plain


def _join_optimizer(plain: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict:
    state = {}
    for idx, entry in plain["state"].items():
        state[int(idx)] = {k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v
                               else v) for k, v in entry.items()}
    return {"state": state, "param_groups": plain["param_groups"]}


def model_signature(model: torch.nn.Module) -> str:
    """Names and shapes of every tensor in the state dict, hashed: two models with the same
    signature can exchange weights."""
    items = sorted((k, tuple(v.shape)) for k, v in model.state_dict().items())
    return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


def save_checkpoint(path: str, model: torch.nn.Module, state: Mapping[str, Any],
                    optimizer: torch.optim.Optimizer | None = None) -> None:
    """Write model weights (+ optimizer) and the JSON ``state`` atomically to ``path``."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous()
               for k, v in unwrap_module(model).state_dict().items()}
    meta = dict(state)
    meta["format"] = FORMAT
    meta["model_class"] = type(unwrap_module(model)).__name__
    meta["model_signature"] = model_signature(unwrap_module(model))
    if optimizer is not None:
        opt_tensors, opt_plain = _split_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        meta["optimizer"] = opt_plain
    text = json.dumps(meta, sort_keys=True)
    # Tied or aliased tensors cannot be saved twice by safetensors: store distinct copies.
    seen: dict[int, str] = {}
    for k, v in list(tensors.items()):
        ptr = v.data_ptr()
        if ptr in seen and v.numel():
            tensors[k] = v.clone()
        seen[ptr] = k
    atomic_write_bytes(path, save(tensors, metadata={"uhrops.state": text}))
    atomic_write_text(os.path.splitext(path)[0] + ".json", json.dumps(meta, indent=1,
                                                                      sort_keys=True))


def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and state of a checkpoint file; CheckpointError if it is not a sound one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors checkpoint ({type(exc).__name__}: {exc}); it may "
            f"be truncated or not a checkpoint at all. Fix: use another checkpoint (e.g. best "
            f"instead of last) or retrain.") from None
    if "uhrops.state" not in meta:
        raise CheckpointError(f"{path}: a safetensors file without uhrops trainer state; it is "
                              f"not a zoo.train checkpoint (for plain weights use the model's "
                              f"loader).")
    try:
        state = json.loads(meta["uhrops.state"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: its trainer state is not valid JSON ({exc}).") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {state.get('format')!r}, expected {FORMAT!r}.")
    return tensors, state


def is_safetensors(path: str) -> bool:
    """Whether ``path`` starts like a safetensors file (8-byte header length, then JSON).

    Tells zoo checkpoints (always safetensors) from torch pickles such as released ``.pth``
    files without unpickling anything.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 8 + n <= size


def read_model_weights(path: str) -> dict[str, torch.Tensor]:
    """The model's state dict stored in a checkpoint (its ``model.`` tensors, prefix removed)."""
    tensors, _ = read_checkpoint(path)
    return _model_part(tensors)


def _model_part(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return strip_prefixes({k: v for k, v in tensors.items() if k.startswith("model.")},
                          ("model.",), repeat=False)


def load_checkpoint(path: str, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    expect_config_hash: str | None = None) -> dict[str, Any]:
    """Load weights (and optimizer state) into ``model`` after checking they belong to it."""
    tensors, state = read_checkpoint(path)
    target = unwrap_module(model)
    if state.get("model_class") != type(target).__name__:
        raise CheckpointError(f"{path}: holds a {state.get('model_class')} but the model is a "
                              f"{type(target).__name__}. Fix: pass the checkpoint of this model.")
    if expect_config_hash is not None and state.get("config_hash") != expect_config_hash:
        raise CheckpointError(
            f"{path}: was written for another model configuration (config hash "
            f"{state.get('config_hash')} != {expect_config_hash}). Fix: use the config it was "
            f"trained with (its config.yaml sits in the run folder).")
    weights = _model_part(tensors)
    own = target.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(f"{name}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                           for name, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("wrong shape", wrong)) if keys)
        raise CheckpointError(f"{path}: does not fit the model ({detail}).")
    target.load_state_dict(weights, strict=True)
    if optimizer is not None:
        if "optimizer" not in state:
            raise CheckpointError(f"{path}: has no optimizer state to resume from.")
        optimizer.load_state_dict(_join_optimizer(state["optimizer"], tensors))
    return state
