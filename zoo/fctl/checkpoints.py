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
import warnings
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
        initialised: uhrops keys left as they were (only with ``partial=True``: the
            weights the released scripts also leave to the model's own initialisation).
    """

    loaded: list[str] = field(default_factory=list)
    unused: dict[str, list[str]] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.initialised:
            lines.append(f"{len(self.initialised)} stayed initialised: " +
                         ", ".join(self.initialised))
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
        if tuple(t.shape) != shape:
            # Compared exactly, never by element count: a (256, 2) weight reshaped into
            # (2, 256, 1, 1) has the right size but every value in the wrong place.
            hint = ("Fix: build the model with the checkpoint's number of classes and variant."
                    if t.numel() != target[ours].numel() else
                    "The same number of elements in another layout is not reshaped (it would "
                    "load scrambled). Fix: pass a checkpoint saved by the released code.")
            raise ValueError(f"{op}(): `{what}` {present[0]!r} has shape {tuple(t.shape)}, but "
                             f"{ours!r} needs {shape}. {hint}")
        new[ours] = t
        used.update(present)


# Held by every released checkpoint and read by no stage (fctl.md §3.1): never worth a warning.
_ALWAYS_UNUSED = ("vgg.classifier.",)


def _unexpected(unused: list[str]) -> list[str]:
    """The unused official keys that are not the always-present ImageNet classifier."""
    return [k for k in unused if not k.startswith(_ALWAYS_UNUSED)]


def load_official_checkpoints(model: FCtL, main: object | None,
                              contexts: Sequence[object] | None = (), *,
                              partial: bool = False) -> OfficialLoadReport:
    """Load the authors' released checkpoint(s) into an :class:`FCtL`.

    Convention:
        - ``main``: the checkpoint of the model's own stage (Inria: ``Bfcn`` / ``B10`` /
          ``B15`` / ``all``; DeepGlobe: ``Afcn`` / ``medium`` / ``global`` / ``all``), as a
          path or a state dict; None loads only the context encoders. ``contexts``: for
          stage "full" the checkpoints of the frozen context encoders in
          ``model.context_names`` order (Inria: B10, B15; DeepGlobe: medium, global); only
          their VGG16 features are read. ``contexts=None`` leaves the context encoders as
          they are (filled by another call or from uhrops checkpoints).
        - The DataParallel ``module.`` prefix is stripped; aliased copies must agree; shapes
          must be equal exactly (a weight in another layout is an error naming both shapes).
        - Every uhrops weight must be found: otherwise ValueError listing all missing ones and
          the checkpoint keys nothing took (a renamed key shows up on both sides). Unlike the
          official loader, which keeps only matching keys, nothing is skipped silently.
        - ``partial=True`` is the released scripts' stage start (``k in state``): weights of
          the main model that ``main`` lacks stay as initialised and are listed in the
          report's ``initialised`` (e.g. the DeepGlobe final stage started from ``Afcn``: its
          three correlations and the fusion). Context encoders are never partial.
        - Official keys of ``main`` that have no place (branches the stage does not build,
          another stage's modules) are listed in the report and named in a UserWarning; the
          ImageNet classifier ``vgg.classifier.*`` every released file holds is only listed.
        - The model is only modified when everything was found.

    Args:
        model: the model to fill.
        main: path or state dict of the main checkpoint, or None.
        contexts: paths or state dicts of the context-encoder checkpoints, or None.
        partial: let weights missing from ``main`` keep their initial values.

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
    if contexts is not None and not isinstance(contexts, (list, tuple)):
        raise TypeError(f"{op}(): `contexts` must be a list or tuple of checkpoints or None; "
                        f"got {type(contexts).__name__}.")
    if not isinstance(partial, bool):
        raise TypeError(f"{op}(): `partial` must be a bool; got {type(partial).__name__}.")
    k = len(model.context_names)
    if contexts and (len(contexts) != k or k == 0):
        raise ValueError(f"{op}(): stage {model.stage!r} has {k} context encoder(s) "
                         f"{model.context_names}; got {len(contexts)} context checkpoint(s).")
    if main is None and not contexts:
        raise ValueError(f"{op}(): `main` is None and no `contexts` were given: nothing to "
                         "load. Fix: pass the stage's checkpoint as `main`.")
    target = model.state_dict()
    report = OfficialLoadReport()
    missing: list[str] = []
    unexpected: list[str] = []
    new: dict[str, Tensor] = {}

    if main is not None:
        state = _as_state(main, "main")
        used: set[str] = set()
        aliases: list[str] = []
        main_missing: list[str] = []
        mapping = official_key_map(model)
        _take(state, target, mapping, "main", used, aliases, main_missing, new)
        report.unused["main"] = sorted(k_ for k_ in state if k_ not in used)
        report.aliases["main"] = sorted(aliases)
        if partial:
            report.initialised = [key for key in mapping if key not in new]
        else:
            missing += main_missing
        unexpected += [f"main: {k_}" for k_ in _unexpected(report.unused["main"])]

    for i, name in enumerate(model.context_names):
        if contexts is None:  # filled elsewhere: neither read nor demanded here
            break
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
        before = len(missing)
        _take(cstate, target, mapping, what, cused, caliases, missing, new)
        report.unused[what] = sorted(k_ for k_ in cstate if k_ not in cused)
        report.aliases[what] = sorted(caliases)
        if len(missing) > before:  # a renamed feature key: name what the file holds instead
            unexpected += [f"{what}: {k_}" for k_ in report.unused[what]
                           if ".features." in k_ or k_.startswith(("pool", "big_pool"))]

    if missing:
        hint = ""
        if any("context_encoders" in m for m in missing) and not contexts:
            hint = (f" Fix: pass contexts=(<{'>, <'.join(model.context_names)} checkpoint>) "
                    "(Inria: B10, B15; DeepGlobe: medium, global), or contexts=None to leave "
                    "the context encoders as they are.")
        elif main is not None and not partial and any("(from main" in m for m in missing):
            hint = (" Fix: pass the checkpoint of this stage, or partial=True where the "
                    "released scripts start the stage from an earlier one (the missing "
                    "weights then keep their initial values).")
        extra = ""
        if unexpected:
            extra = (f" Keys in the checkpoint(s) that nothing took: {', '.join(unexpected[:6])}"
                     + (" ..." if len(unexpected) > 6 else "") + ".")
        raise ValueError(f"{op}(): {len(missing)} weight(s) the model needs are not in the "
                         "checkpoint(s): " + "; ".join(missing[:6]) +
                         (" ..." if len(missing) > 6 else "") + "." + extra + hint)
    if main is not None and unexpected:
        # A checkpoint of another stage can cover the model and still carry modules the
        # model lacks: the load is then most likely not the one meant, so say which keys.
        warnings.warn(f"{op}(): {len(unexpected)} key(s) of `main` have no place in this "
                      f"{model.variant} {model.stage!r} model and were not loaded: "
                      f"{', '.join(k_[len('main: '):] for k_ in unexpected)}. (A released Inria B10/B15 file carries the untrained _1/_2 branches "
                      "and the fusion; anything else means `main` is probably another stage's "
                      "checkpoint. Fix: pass the checkpoint of this stage.)",
                      UserWarning, stacklevel=2)
    with torch.no_grad():
        for key, t in new.items():
            target[key].copy_(t)
    report.loaded = sorted(new)
    return report
