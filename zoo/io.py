"""Files that must never be half-written or unsafely read: atomic writes and checkpoints.

A checkpoint is ONE safetensors file: the model's tensors under ``model.``, the optimizer's
tensors under ``optim.<param index>.<name>``, and the JSON trainer state (iteration,
optimizer and scheduler settings, RNG states, config hash, model class, metrics) in the
file's metadata under ``uhrops.state``. It is written to a temporary file in the same folder,
flushed to disk and renamed over the old one, so a process killed at any moment leaves
either the old or the new checkpoint, never a torn one. A ``.json`` copy of the state is
written next to it for people to read; loading never trusts it. Loading uses safetensors
(no pickle at all); backbone weight files are read by ``zoo.backbones._weights``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import tempfile
from typing import Any, Mapping

import numpy as np
import torch

FORMAT = "uhrops-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another model/config."""


def atomic_write_bytes(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # mkstemp makes the file private (0600); give it the mode a plain open() would
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask() would race other threads)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# The temporary names atomic_write_bytes makes: "." + final name + "." + mkstemp's 8 random
# characters + ".tmp" (and the "<file>.tmp.png" / ".tmp.tif" of the mask writers).
_STALE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$|^.+\.(png|tif)\.tmp\.(png|tif)$")


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete the half-written temporary files that a process killed inside an atomic write
    left in ``folder`` (never a finished file); returns their paths. Call it before writing
    into a folder that a killed run may have used."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if _STALE.match(name):
            path = os.path.join(folder, name)
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- RNG state as JSON ---------------------------------------------------------------------


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": _b64(torch.get_rng_state()),
        "numpy": [np_state[0], base64.b64encode(np_state[1].tobytes()).decode("ascii"),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(_unb64(state["torch"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.frombuffer(base64.b64decode(keys), dtype=np.uint32).copy(),
                         pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


# ---- checkpoints ---------------------------------------------------------------------------


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
    import hashlib

    items = sorted((k, tuple(v.shape)) for k, v in model.state_dict().items())
    return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


def save_checkpoint(path: str, model: torch.nn.Module, state: Mapping[str, Any],
                    optimizer: torch.optim.Optimizer | None = None) -> None:
    """Write model weights (+ optimizer) and the JSON ``state`` atomically to ``path``."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous()
               for k, v in _unwrap(model).state_dict().items()}
    meta = dict(state)
    meta["format"] = FORMAT
    meta["model_class"] = type(_unwrap(model)).__name__
    meta["model_signature"] = model_signature(_unwrap(model))
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


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


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


def read_model_weights(path: str) -> dict[str, torch.Tensor]:
    """The model's state dict stored in a checkpoint (its ``model.`` tensors, prefix removed)."""
    tensors, _ = read_checkpoint(path)
    return _model_part(tensors)


def _model_part(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def load_checkpoint(path: str, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    expect_config_hash: str | None = None) -> dict[str, Any]:
    """Load weights (and optimizer state) into ``model`` after checking they belong to it."""
    tensors, state = read_checkpoint(path)
    target = _unwrap(model)
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
