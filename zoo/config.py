"""Run configuration: YAML files with inheritance, typed overrides and strict validation.

A config is a nested mapping. Every key must exist in :data:`DEFAULTS` (the schema) with a
value of the same type, except inside the free-form sections ``model.kwargs`` and
``loss.kwargs``, which are passed to constructors that check their own arguments. A file may
name ``base: other.yaml`` (a path relative to itself, or the name of a shipped config); the
file's keys are merged over the base's. ``--set a.b=value`` overrides parse ``value`` as YAML.

Errors name the file or override, the key, what was given and what is expected. The
families (``family``) and datasets (``data.dataset``) a config may name are those of their
registries, :mod:`zoo.engine.families` and :mod:`zoo.data.registry`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from typing import Any, Mapping

import yaml

from zoo.core.atomic import atomic_write_text
from zoo.core.errors import ConfigError
from zoo.data.registry import dataset_names
from zoo.engine.families import family_names

__all__ = ["CONFIG_DIR", "ConfigError", "DEFAULTS", "FREE_FORM", "NULLABLE", "apply_overrides",
           "config_hash", "dump_config", "load_config", "resolve_path"]

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")

# The schema: every key with its default. None means "optional string/number, default unset".
DEFAULTS: dict[str, Any] = {
    "name": "run",
    "family": "wsdnet",  # "wsdnet" (whole-image crops) | "fctl" (patches with contexts)
    # | "fctl_refine" (FCtL's CSRN trained on crude masks of an early local model); the
    # names are those of zoo.engine.families
    "model": {
        "num_classes": 7,
        "kwargs": {},  # free-form: passed to the model constructor
        "init": None,  # path of a checkpoint to initialise from (weights only; FCtL also
        # takes the authors' released .pth files)
        "init_partial": False,  # FCtL, released .pth: weights the file lacks keep their
        # initialisation (the released stage starts; the run prints which)
        "pretrained": {},  # free-form: backbone name -> local weights file, or "none" (below)
        # true (the paper configs): training from scratch refuses to start until every
        # backbone of the family has a file in `pretrained`, or `pretrained: none` (or
        # `<backbone>: none`) says random on purpose; a paper run from random backbones is
        # a different experiment, and nothing else would tell the user.
        "require_pretrained": False,
    },
    "loss": {
        "kwargs": {},  # free-form: passed to the loss constructor
    },
    "data": {
        "dataset": "synthetic",  # synthetic | deepglobe | inria | urur | folder (the names of
        # zoo.data.registry)
        "root": None,
        "train_split": "train",
        "val_split": "val",
        "test_split": "test",
        "missing": "error",  # error | skip: use only the pairs present (a partial download)
        "split_files": {},  # split -> text file of image ids, replacing that split's list
        # The rules of a folder dataset (null: inherited from `like`, else the default):
        "like": None,  # a declared dataset whose rules a folder dataset takes, e.g. deepglobe
        "classes": None,  # class names, e.g. [background, building]
        "palette": None,  # one [R, G, B] per class; colour masks (mask_encoding palette)
        "ignore_index": None,  # mask value of unlabelled pixels (folder default: none declared)
        "exclude_from_mean": None,  # classes left out of the mean IoU, e.g. [0]
        "mask_encoding": None,  # index | palette | binary (0/255) | rgb_binarised (DeepGlobe)
        "synthetic_train": 64,  # scenes in the synthetic training set
        "synthetic_val": 8,  # held-out synthetic scenes (other seeds)
        "synthetic_size": [512, 512],
        "synthetic_seed": 0,
        "crop_size": [256, 256],  # training crops (wsdnet); patch size comes from fctl
        "cat_max_ratio": 1.0,  # mmseg's crop retry when one class covers more than this
        "resize_ratio": 1.0,  # training images resized by this factor first (Inria: 0.8)
        "hflip": 0.5,
        "vflip": 0.0,
        "rotate90": 0.0,  # probability of a random k*90 degree rotation (FCtL)
        "rotate": 0.0,  # probability of an arbitrary rotation (ISDNet: 0.5)
        "rotate_degrees": [90.0, 270.0],
        "photometric": False,
        "num_workers": 0,
        "val_limit": 0,  # evaluate on at most this many validation images (0: all)
    },
    "fctl": {
        "patch_size": 508,
        "min_overlap": 50,
        "sub_batch": 4,  # patches per forward/backward (the released scripts: 4)
        "images_per_step": 6,  # gradient accumulation over all patches of this many images
        "contexts": [],  # override of the model's context scales, e.g. [3] for Inria's B15
        "init_stage": None,  # checkpoint of the previous stage (local encoder + correlation)
        "context_checkpoints": [],  # checkpoints whose encoders become the frozen contexts
        # (zoo.train checkpoints or the authors' released .pth files)
        "context_resize": "float",  # contexts and global image at evaluation: float (torch
        # antialiased bilinear, differentiable) | released (8-bit image, PIL bilinear: the
        # released checkpoints' inputs exactly); training steps always use float
    },
    "refine": {  # family fctl_refine; the grid and sub-batching come from the fctl section
        "masks": None,  # folder of crude masks (python -m zoo.fctl.make_refine_data writes it)
        "local_config": None,  # config (name or path) of the local model making the masks
        "local_checkpoint": None,  # its checkpoint taken early (the paper: after 20 epochs)
    },
    "train": {
        "iters": 200,
        "batch_size": 8,
        "optimizer": "sgd",  # sgd | adam | adamw
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "poly_power": 0.9,
        "min_lr": 0.0,
        "warmup_iters": 0,
        "grad_clip": 0.0,
        "val_every": 100,
        "log_every": 10,
        "ckpt_every": 100,
        "seed": 0,
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "amp": "none",  # none | bf16 | fp16
        "channels_last": False,
        "deterministic": True,
        "dist_timeout": 600.0,  # seconds a process waits for the others (torchrun) before failing
        "predictions": 4,  # validation images saved as colour masks and overlays
    },
    "eval": {
        "split": "val",
        "tta": False,
        "batch_size": 1,
        "sliding": False,  # whole-image inference through uhrops.sliding_window
        "window": [1024, 1024],
        "window_overlap": 128,
        # Images whose whole-image inference would need more than max_memory GiB (estimated
        # per family: WSDNet ~150 B/pixel, so up to ~5700^2 fits 5 GiB: the papers' 5000^2
        # Inria and 5120^2 URUR images are still segmented whole) go window by window,
        # streamed from the file by zoo.infer, in bounded memory whatever their size.
        "max_memory": 5.0,
        # GiB the streamed labels merge's class accumulator may hold when zoo.infer writes
        # masks only (uhrops.sliding_window's max_accumulator_bytes): an image so wide that
        # classes x window height x width floats exceed it is merged in column bands (the
        # window column across each cut runs twice); widened to the narrowest band the
        # windows allow rather than refused.
        "max_merge_memory": 2.0,
        "max_whole_pixels": 0,  # > 0: also stream images with more pixels than this
        # zoo.evaluate, zoo.infer and validation run an eval copy of the model
        # (zoo.engine.inference.prepare_for_eval); the trained model is never changed.
        "fold_bn": True,  # batch norms folded into their convolutions (same outputs, rounding)
        "channels_last": True,  # channels_last weights and maps (CPU, WSDNet 1024^2: 0.76x the
        # CPU time of NCHW)
        "compile": False,  # torch.compile the copy (CPU: ~0.9x the time after a compile of
        # 15-60 s per image size; see docs/zoo)
        # freed host memory kept for the next image while evaluating or inferring
        # (zoo.core.runtime.reuse_freed_memory; CPU, WSDNet 2448^2: 0.63x the CPU time, but
        # a peak 1.39x higher: the heap fragments; python -m benchmarks.host_allocator;
        # max_memory's estimates are without it). false where host memory is tight.
        "reuse_freed_memory": True,
    },
}

PRETRAINED_KEY = ("model", "pretrained")
FREE_FORM = {("model", "kwargs"), ("model", "pretrained"), ("loss", "kwargs"),
             ("data", "split_files")}
# keys with a non-null default that also take null (documented meaning)
NULLABLE = {("data", "crop_size")}  # null: whole images, no crop (FCtL's training)
_CHOICES = {
    ("data", "missing"): ("error", "skip"),
    ("train", "optimizer"): ("sgd", "adam", "adamw"),
    ("train", "amp"): ("none", "bf16", "fp16"),
    ("fctl", "context_resize"): ("float", "released"),
}


def _choices(key: tuple[str, ...]) -> tuple[str, ...] | None:
    """The values ``key`` may take (None: any of its type); families and datasets come from
    their registries, so a new one is declared in one place."""
    if key == ("family",):
        return family_names()
    if key == ("data", "dataset"):
        return dataset_names()
    return _CHOICES.get(key)


def _type_ok(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list)
    return isinstance(value, type(default))


def _merge(base: dict[str, Any], over: Mapping[str, Any], schema: Mapping[str, Any],
           where: str, path: tuple[str, ...] = ()) -> None:
    for key, value in over.items():
        full = path + (key,)
        dotted = ".".join(full)
        if path == () and key == "base":
            continue
        if not isinstance(schema, Mapping) or key not in schema:
            known = ", ".join(sorted(schema)) if isinstance(schema, Mapping) else ""
            raise ConfigError(f"{where}: unknown key {dotted!r}. Known keys here: {known}.")
        default = schema[key]
        if full == PRETRAINED_KEY and isinstance(value, str) and value.lower() == "none":
            base[key] = "none"  # random backbones on purpose (see DEFAULTS)
        elif full in FREE_FORM:
            if full == PRETRAINED_KEY and isinstance(value, str):
                raise ConfigError(f"{where}: {dotted!r} must be a mapping backbone -> local "
                                  f"file, or the word none (random backbones on purpose); "
                                  f"got {value!r}.")
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {dotted!r} must be a mapping; got {value!r}.")
            # A mapping given after `none` starts afresh: the files now say what to load.
            before = base.get(key, {})
            before = before if isinstance(before, Mapping) else {}
            base[key] = {**before, **copy.deepcopy(dict(value))}
        elif isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {dotted!r} is a section; got {value!r}. "
                                  f"Fix: give its keys, e.g. {dotted}.{next(iter(default))}.")
            _merge(base[key], value, default, where, full)
        else:
            if value is None and default is not None and full not in NULLABLE:
                raise ConfigError(
                    f"{where}: {dotted!r} cannot be null; it must be {type(default).__name__} "
                    f"(default {default!r}). Fix: give a value, or leave the key out for the "
                    f"default.")
            if not _type_ok(default, value):
                raise ConfigError(
                    f"{where}: {dotted!r} must be {type(default).__name__} (default "
                    f"{default!r}); got {type(value).__name__} {value!r}.")
            if isinstance(default, float) and isinstance(value, int):
                value = float(value)
            choices = _choices(full)
            if choices is not None and value not in choices:
                raise ConfigError(f"{where}: {dotted!r} must be one of {choices}; "
                                  f"got {value!r}.")
            base[key] = copy.deepcopy(value)


def resolve_path(name_or_path: str) -> str:
    """A shipped config name (``quickstart``) or a YAML path."""
    if os.path.isfile(name_or_path):
        return name_or_path
    shipped = os.path.join(CONFIG_DIR, name_or_path)
    for candidate in (shipped, shipped + ".yaml"):
        if os.path.isfile(candidate):
            return candidate
    names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))
    raise ConfigError(f"config {name_or_path!r} not found: not a file, and not a shipped "
                      f"config ({', '.join(names)}).")


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections; got "
                          f"{type(data).__name__}.")
    return data


def load_config(name_or_path: str = "quickstart", overrides: list[str] | tuple[str, ...] = (),
                _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a config (with its ``base`` chain) over :data:`DEFAULTS`, then apply overrides."""
    path = os.path.abspath(resolve_path(name_or_path))
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself.")
    data = _read_yaml(path)
    if "base" in data:
        base_ref = data["base"]
        if not isinstance(base_ref, str):
            raise ConfigError(f"{path}: 'base' must be a config name or path; got {base_ref!r}.")
        local = os.path.join(os.path.dirname(path), base_ref)
        cfg = load_config(local if os.path.isfile(local) else base_ref, (), _seen + (path,))
    else:
        cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, data, DEFAULTS, path)
    apply_overrides(cfg, overrides)
    return cfg


def apply_overrides(cfg: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> None:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.iters=200.")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        nested: Any = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        _merge(cfg, nested, DEFAULTS, f"--set {item!r}")
    check_values(cfg)


def check_values(cfg: Mapping[str, Any]) -> None:
    """Values whose type alone does not make them usable (checked once the config and its
    overrides are merged, so a key and the one it is compared with may come from either):
    a window of two positive ints, an overlap below it, a positive merge memory, a positive
    iteration count."""
    ev, tr = cfg.get("eval", {}), cfg.get("train", {})
    window = ev.get("window")
    if not (isinstance(window, list) and len(window) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in window)):
        raise ConfigError(f"'eval.window' must be [height, width], two positive ints; got "
                          f"{window!r}. Fix: e.g. --set eval.window=[1024,1024].")
    overlap = ev.get("window_overlap")
    if not (isinstance(overlap, int) and not isinstance(overlap, bool)) or overlap < 0 \
            or overlap >= min(window):
        raise ConfigError(
            f"'eval.window_overlap' must be an int with 0 <= overlap < the smaller side of "
            f"eval.window {window} (the windows advance by window - overlap pixels); got "
            f"{overlap!r}. Fix: e.g. --set eval.window_overlap={min(window) // 8}.")
    merge = ev.get("max_merge_memory")
    if isinstance(merge, (int, float)) and not isinstance(merge, bool) and not merge > 0:
        raise ConfigError(f"'eval.max_merge_memory' must be a positive number of GiB; got "
                          f"{merge!r}. Fix: e.g. --set eval.max_merge_memory=2.0.")
    iters = tr.get("iters")
    if isinstance(iters, int) and not isinstance(iters, bool) and iters <= 0:
        raise ConfigError(f"'train.iters' must be a positive number of iterations; got "
                          f"{iters}. Fix: e.g. --set train.iters=200.")


def config_hash(cfg: Mapping[str, Any], keys: tuple[str, ...] = ("family", "model")) -> str:
    """Hash of the parts of a config that decide the model's parameters."""
    part = {k: cfg[k] for k in keys if k in cfg}
    part = json.loads(json.dumps(part, sort_keys=True, default=str))
    if isinstance(part.get("model"), dict):  # init/pretrained paths do not change the shapes
        part["model"] = {k: v for k, v in part["model"].items() if k in ("num_classes", "kwargs")}
    blob = json.dumps(part, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def dump_config(cfg: Mapping[str, Any], path: str) -> None:
    atomic_write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False))
