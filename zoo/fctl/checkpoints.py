"""Load the authors' released FCtL checkpoints into :class:`zoo.fctl.model.FCtL`.

The official state dicts (``reference/fctl.md`` §3.7, §4, §5) were saved from
``nn.DataParallel`` models (keys start with ``module.``) and hold each VGG16 tensor under
several aliases (``vgg.features.i`` = ``pool3/4/5.j`` = ``big_pool3/4/5.j`` in stage-2
models), the unused ImageNet classifier (``vgg.classifier.*``), and, in the Inria branch, all
three correlation branches and the fusion even in stage 2. The naming:

==========================================  ===============================================
official key (after ``module.``)            uhrops key
==========================================  ===============================================
``pool3.j`` / ``pool4.j`` / ``pool5.j``      ``encoder.features.{j, 17+j, 24+j}``
(aliases ``vgg.features.i``, ``big_pool*``)
``output.0`` / ``output.3``                  ``encoder.conv6`` / ``encoder.conv7``
``output.6``                                 ``decoder.score``
``adj_pool4`` / ``adj_pool3``                ``decoder.score_pool4`` / ``decoder.score_pool3``
``up_output`` / ``up_pool4_out`` / ``up_final``  ``decoder.up2`` / ``decoder.up2_pool4`` /
                                             ``decoder.up8``
Inria: ``big_attention.conv_{query,key,      ``correlations.medium`` / ``.large`` / ``.self``
value}{,_1,_2}``, ``gamma{,_1,_2}``
Inria: ``big_attention.{in_i,trans,out_i}``  ``fusion.{in_convs.(i-1),trans,out_convs.(i-1)}``
DeepGlobe: ``local.*`` / ``medium.*`` /      ``correlations.self`` / ``.medium`` / ``.large``
``large.*`` (stage 2: ``big.*`` = medium)
DeepGlobe: ``in_i``, ``trans``, ``out_i``    ``fusion.*`` as above
==========================================  ===============================================

Context encoders (stage "full") come from the earlier-stage checkpoints: Inria B10 (medium,
x2) and B15 (large, x3); DeepGlobe ``medium`` (x3) and ``global`` (mode 0); only their VGG16
features are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import Tensor

from zoo.backbones.vgg import load_state_file
from zoo.core.weights import strip_prefixes, unwrap_state
from zoo.fctl.model import FCtL

__all__ = ["load_official_checkpoints", "official_key_map", "OfficialLoadReport"]

# uhrops.attention.LocalContextCorrelation names its convs like the official module.
_CORR_PARTS = {"conv_query": "conv_query", "conv_key": "conv_key", "conv_value": "conv_value"}


@dataclass
class OfficialLoadReport:
    """What :func:`load_official_checkpoints` did.

    Attributes:
        loaded: uhrops keys filled.
        unused: per source ("main", "contexts[0]", ...) the official keys that were not
            placed (the VGG classifier, branches the stage does not build, ...).
        aliases: per source the official keys that were equal copies of a placed tensor.
    """

    loaded: list[str] = field(default_factory=list)
    unused: dict[str, list[str]] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        for src, keys in self.unused.items():
            if keys:
                lines.append(f"{src}: {len(keys)} unused official keys: " + ", ".join(keys[:8]) +
                             (" ..." if len(keys) > 8 else ""))
        return "\n".join(lines)


def _feature_candidates(i: int) -> list[str]:
    """Official keys (without the .weight/.bias suffix) of VGG ``features[i]``."""
    if i < 17:
        blk, j = 3, i
    elif i < 24:
        blk, j = 4, i - 17
    else:
        blk, j = 5, i - 24
    return [f"pool{blk}.{j}", f"vgg.features.{i}", f"big_pool{blk}.{j}"]


def _corr_part(name: str) -> tuple[str, str]:
    """Split a LocalContextCorrelation parameter name into (part, suffix)."""
    head, _, tail = name.partition(".")
    return head, tail


def official_key_map(model: FCtL) -> dict[str, list[str]]:
    """uhrops key of ``model`` (context encoders excluded) -> official candidate keys.

    Convention:
        The first candidate present in a checkpoint is loaded, the other present ones must
        be equal copies (aliases). Keys are without the DataParallel ``module.`` prefix.

    Args:
        model: an :class:`FCtL`.

    Returns:
        dict, in ``model.state_dict()`` order.

    Example:
        >>> official_key_map(FCtL(2, "inria", "fcn"))["decoder.score.weight"]
        ['output.6.weight']
    """
    fixed = {"encoder.conv6": "output.0", "encoder.conv7": "output.3", "decoder.score": "output.6",
             "decoder.score_pool4": "adj_pool4", "decoder.score_pool3": "adj_pool3",
             "decoder.up2": "up_output", "decoder.up2_pool4": "up_pool4_out",
             "decoder.up8": "up_final"}
    if model.variant == "inria":
        suffix = {"medium": "", "large": "_1", "self": "_2"}
        corr_prefix = {n: "big_attention." for n in suffix}
        fusion_prefix = "big_attention."
    else:
        suffix = {"medium": "", "large": "", "self": ""}
        corr_prefix = ({"medium": "big."} if model.stage == "single_context" else
                       {"self": "local.", "medium": "medium.", "large": "large."})
        fusion_prefix = ""
    out: dict[str, list[str]] = {}
    for key in model.state_dict():
        if key.startswith("context_encoders."):
            continue
        mod, _, leaf = key.rpartition(".")
        if key.startswith("encoder.features."):
            i = int(key.split(".")[2])
            out[key] = [f"{c}.{leaf}" for c in _feature_candidates(i)]
        elif mod in fixed:
            out[key] = [f"{fixed[mod]}.{leaf}"]
        elif key.startswith("correlations."):
            _, branch, rest = key.split(".", 2)
            part, tail = _corr_part(rest)
            s, pre = suffix[branch], corr_prefix[branch]
            if part == "gamma":
                out[key] = [f"{pre}gamma{s}"]
            else:
                out[key] = [f"{pre}{_CORR_PARTS[part]}{s}.{tail}"]
        elif key.startswith("fusion."):
            rest = key[len("fusion."):]
            if rest.startswith("trans."):
                out[key] = [fusion_prefix + rest]
            else:
                kind, idx, leaf2 = rest.split(".", 2)
                base = "in_" if kind == "in_convs" else "out_"
                out[key] = [f"{fusion_prefix}{base}{int(idx) + 1}.{leaf2}"]
        else:  # pragma: no cover - a new submodule without a mapping
            raise RuntimeError(f"official_key_map(): no official name for {key!r}.")
    return out


def _as_state(src: object, what: str) -> dict[str, Tensor]:
    op = "load_official_checkpoints"
    if isinstance(src, (str, os.PathLike)):
        state = load_state_file(src)
    elif isinstance(src, Mapping):
        state = dict(unwrap_state(dict(src)))
    else:
        raise TypeError(f"{op}(): `{what}` must be a state dict or the path of a checkpoint "
                        f"file; got {type(src).__name__}.")
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{op}(): `{what}` holds non-tensor entries {bad[:4]}; pass the "
                         "model's state dict.")
    return strip_prefixes(state, ("module.",), repeat=False)


def _take(state: dict[str, Tensor], target: dict[str, Tensor], mapping: dict[str, list[str]],
          what: str, used: set[str], aliases: list[str], missing: list[str],
          new: dict[str, Tensor]) -> None:
    op = "load_official_checkpoints"
    for ours, cands in mapping.items():
        present = [c for c in cands if c in state]
        if not present:
            missing.append(f"{ours} (from {what}: {' or '.join(cands)})")
            continue
        t = state[present[0]]
        for alias in present[1:]:
            if state[alias].shape != t.shape or not torch.equal(state[alias], t):
                raise ValueError(f"{op}(): in `{what}` the aliased keys {present[0]!r} and "
                                 f"{alias!r} differ; the checkpoint is not an official one "
                                 "(they share one tensor in the released models).")
            aliases.append(alias)
        shape = tuple(target[ours].shape)
        if t.numel() != target[ours].numel():
            raise ValueError(f"{op}(): `{what}` {present[0]!r} has shape {tuple(t.shape)}, "
                             f"which does not fit {ours!r} {shape}. Fix: build the model with "
                             "the checkpoint's number of classes and variant.")
        new[ours] = t.reshape(shape)
        used.update(present)


def load_official_checkpoints(model: FCtL, main: object,
                              contexts: Sequence[object] = ()) -> OfficialLoadReport:
    """Load the authors' released checkpoint(s) into an :class:`FCtL`.

    Convention:
        - ``main``: the checkpoint of the model's own stage (Inria: ``Bfcn`` / ``B10`` /
          ``B15`` / ``all``; DeepGlobe: ``Afcn`` / ``medium`` / ``global`` / ``all``), as a
          path or a state dict; ``contexts``: for stage "full" the checkpoints of the frozen
          context encoders in ``model.context_names`` order (Inria: B10, B15; DeepGlobe:
          medium, global). Only their VGG16 features are read.
        - The DataParallel ``module.`` prefix is stripped; aliased copies must agree;
          tensors are reshaped when only the layout differs (same number of elements).
        - Every uhrops weight must be found: otherwise ValueError listing all missing ones
          (nothing is skipped silently, unlike the official loader that keeps only matching
          keys). Official keys that have no place (the unused ``vgg.classifier``, branches the
          stage does not build, ...) are listed in the returned report.
        - The model is only modified when everything was found.

    Args:
        model: the model to fill.
        main: path or state dict of the main checkpoint.
        contexts: paths or state dicts of the context-encoder checkpoints.

    Returns:
        An :class:`OfficialLoadReport`.

    Example:
        >>> model = FCtL(2, "inria", "full")
        >>> rep = load_official_checkpoints(model, "all.epoch.pth",
        ...                                 ("B10.epoch.pth", "B15.epoch.pth"))  # doctest: +SKIP
    """
    op = "load_official_checkpoints"
    if not isinstance(model, FCtL):
        raise TypeError(f"{op}(): `model` must be a zoo FCtL; got {type(model).__name__}.")
    if not isinstance(contexts, (list, tuple)):
        raise TypeError(f"{op}(): `contexts` must be a list or tuple of checkpoints; got "
                        f"{type(contexts).__name__}.")
    k = len(model.context_names)
    if len(contexts) not in (0, k) or (k == 0 and contexts):
        raise ValueError(f"{op}(): stage {model.stage!r} has {k} context encoder(s) "
                         f"{model.context_names}; got {len(contexts)} context checkpoint(s).")
    target = model.state_dict()
    report = OfficialLoadReport()
    missing: list[str] = []
    new: dict[str, Tensor] = {}

    state = _as_state(main, "main")
    used: set[str] = set()
    aliases: list[str] = []
    _take(state, target, official_key_map(model), "main", used, aliases, missing, new)
    report.unused["main"] = sorted(k_ for k_ in state if k_ not in used)
    report.aliases["main"] = sorted(aliases)

    for i, name in enumerate(model.context_names):
        prefix = f"context_encoders.{name}."
        mapping = {key: [f"{c}.{key.rpartition('.')[2]}"
                         for c in _feature_candidates(int(key.split(".")[3]))]
                   for key in target if key.startswith(prefix)}
        if not contexts:
            missing += [f"{key} (from contexts[{i}], the {name} context checkpoint)"
                        for key in mapping]
            continue
        what = f"contexts[{i}]"
        cstate = _as_state(contexts[i], what)
        cused: set[str] = set()
        caliases: list[str] = []
        _take(cstate, target, mapping, what, cused, caliases, missing, new)
        report.unused[what] = sorted(k_ for k_ in cstate if k_ not in cused)
        report.aliases[what] = sorted(caliases)

    if missing:
        hint = ""
        if any("context_encoders" in m for m in missing) and not contexts:
            hint = (f" Fix: pass contexts=(<{'>, <'.join(model.context_names)} checkpoint>) "
                    "(Inria: B10, B15; DeepGlobe: medium, global).")
        raise ValueError(f"{op}(): {len(missing)} weight(s) the model needs are not in the "
                         "checkpoint(s): " + "; ".join(missing[:6]) +
                         (" ..." if len(missing) > 6 else "") + "." + hint)
    with torch.no_grad():
        for key, t in new.items():
            target[key].copy_(t)
    report.loaded = sorted(new)
    return report
