"""A model made ready for inference: batch norms folded into their convolutions, channels_last
weights, optionally compiled, always on a copy so the trained model (and its checkpoints) is
left as it was; and the host allocator setting inference loops run under
(:func:`eval_allocator`).

Folding rests on one identity: in eval mode ``bn(conv(x))`` is a convolution whose weight is
``w * g / sqrt(v + eps)`` and whose bias is ``(b - m) * g / sqrt(v + eps) + beta``, which holds
only when the batch norm's input *is* the convolution's output and nothing else reads that
output. :func:`fold_batch_norms` proves that from each parent module's traced forward
(``torch.fx``, children as leaves) rather than from the layers' names, and skips, with the
reason, every pair it cannot prove.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ContextManager, Mapping

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from zoo.core.runtime import reuse_freed_memory

__all__ = ["FoldReport", "eval_allocator", "eval_options", "fold_batch_norms",
           "prepare_for_eval"]

_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


@dataclass
class FoldReport:
    """What :func:`fold_batch_norms` did: the batch norms folded (qualified names) and the
    ones left in place, each with the reason."""

    folded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class _ChildrenAsLeaves(fx.Tracer):
    """Traces one module's own forward: every submodule call stays one ``call_module`` node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _qual(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _pairs_of(parent: nn.Module, prefix: str, shared: set[int], report: FoldReport
              ) -> list[tuple[str, str]]:
    """(conv child, norm child) pairs of ``parent`` whose fold is exact, read from the graph of
    its forward; every other norm child goes to ``report.skipped``."""
    kids = dict(parent.named_children())
    norms = [n for n, m in kids.items() if type(m) in _NORMS]
    if not norms:
        return []
    try:
        graph = _ChildrenAsLeaves().trace(parent)
    except Exception as exc:  # data-dependent control flow, untraceable ops: nothing proven
        why = f"the forward of {type(parent).__name__} does not trace ({type(exc).__name__})"
        report.skipped += [(_qual(prefix, n), why) for n in norms]
        return []
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)
    pairs = []
    for name in norms:
        bn = kids[name]
        why = None
        sites = calls.get(name, [])
        src = sites[0].args[0] if len(sites) == 1 and sites[0].args else None
        conv_name = str(src.target) if isinstance(src, fx.Node) and src.op == "call_module" \
            else None
        conv = kids.get(conv_name) if conv_name is not None else None
        if bn.training or bn.running_mean is None or bn.running_var is None:
            why = "uses batch statistics (training mode or no running statistics)"
        elif len(sites) != 1:
            why = f"called {len(sites)} times in the forward of {type(parent).__name__}"
        elif type(conv) is not nn.Conv2d:
            why = "its input is not the output of a Conv2d child"
        elif len(sites[0].args) != 1 or sites[0].kwargs:
            why = "called with more than its input"
        elif len(calls.get(conv_name, [])) != 1:
            why = f"its convolution {conv_name!r} is called more than once"
        elif len(src.users) != 1:
            # the conv's output also feeds something else, which would then see the fold
            why = f"the output of {conv_name!r} is also used elsewhere"
        elif conv.training:
            why = f"its convolution {conv_name!r} is in training mode"
        elif id(conv) in shared or id(bn) in shared:
            why = "the convolution or the norm is registered in more than one place"
        if why is None:
            pairs.append((conv_name, name))
        else:
            report.skipped.append((_qual(prefix, name), why))
    return pairs


def fold_batch_norms(model: nn.Module) -> FoldReport:
    """Fold every eval-mode batch norm into the convolution that feeds it, in place.

    Convention:
        - A ``BatchNorm2d`` (or ``SyncBatchNorm``) child of a module is folded into a
          ``Conv2d`` child of the same module when that module's forward, traced by
          ``torch.fx`` with its children as leaves, calls the norm exactly once, on the
          output of exactly one call of the convolution, and nothing else reads that output.
          The convolution gets the folded weight and bias (exact up to float rounding, in the
          parameters' dtype), the norm becomes ``nn.Identity``.
        - Skipped, with the reason in the report: norms in training mode or without running
          statistics, a forward that does not trace, anything between the convolution and
          the norm, a convolution whose output is also used elsewhere or that is called twice,
          modules registered in two places. Skipped norms keep the output exact; they only
          cost the time they took before.
        - Only the parent's own forward is read: a child called directly from code outside
          its parent's forward is not seen, so such models should not be folded.

    Args:
        model: the model, in eval mode (``model.eval()``).

    Returns:
        The :class:`FoldReport` (folded and skipped norms).

    Raises:
        ValueError: ``model`` is in training mode (folding would drop the batch statistics
            training needs); nothing is changed.
    """
    if model.training:
        raise ValueError("fold_batch_norms(model): the model must be in eval mode (in training "
                         "mode batch norms use batch statistics and cannot be folded). Fix: "
                         "call model.eval() first, or use prepare_for_eval(model), which folds "
                         "an eval-mode copy and leaves the model as it is.")
    seen: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        seen[id(m)] = seen.get(id(m), 0) + 1
    shared = {k for k, n in seen.items() if n > 1}
    report = FoldReport()
    for prefix, parent in list(model.named_modules()):
        for conv_name, bn_name in _pairs_of(parent, prefix, shared, report):
            conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(parent, bn_name, nn.Identity())
            report.folded.append(_qual(prefix, bn_name))
    return report


def _channels_last_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    # An NCHW map into channels_last weights costs oneDNN a reorder of the weights or the map
    # at every call (WSDNet 1024^2 on the CPU: 1.65x the time of NCHW throughout); one copy of
    # the map here is far cheaper, and a no-op when it is already channels_last.
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4 \
            and not x.is_contiguous(memory_format=torch.channels_last):
        return (x.contiguous(memory_format=torch.channels_last),) + args[1:]
    return None


def prepare_for_eval(model: nn.Module, fold_bn: bool = True, channels_last: bool = False,
                     compile: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` made faster for inference; ``model`` is not changed.

    Convention:
        - The copy is unwrapped from ``DistributedDataParallel`` / ``DataParallel`` and put in
          eval mode; ``model`` keeps its mode, parameters and modules, so training and
          checkpoint saving go on from it as before.
        - ``fold_bn``: :func:`fold_batch_norms` on the copy (outputs equal up to rounding).
        - ``channels_last``: 4-d weights and buffers in ``torch.channels_last``, and every
          ``Conv2d`` of the copy takes its input to channels_last first (a forward pre-hook;
          a no-op for a channels_last map), so callers pass NCHW images as before.
        - ``compile``: ``nn.Module.compile()`` on the copy (the module keeps its type and
          attributes; the first calls at each new shape pay the compile time).

    Args:
        model: the trained model (any mode).
        fold_bn: fold eval-mode batch norms into their convolutions.
        channels_last: convert the weights to channels_last.
        compile: compile the copy's forward with ``torch.compile``.

    Returns:
        The prepared copy, in eval mode.
    """
    for name, value in (("fold_bn", fold_bn), ("channels_last", channels_last),
                        ("compile", compile)):
        if not isinstance(value, bool):
            raise TypeError(f"prepare_for_eval(): {name} must be True or False; got "
                            f"{type(value).__name__} {value!r}.")
    net = model.module if isinstance(
        model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model
    # a copy, so that folding or converting never reaches the weights being trained or saved
    # (gradients left by training are not copied: the memo maps each to None)
    memo: dict[int, Any] = {id(p.grad): None for p in net.parameters() if p.grad is not None}
    prepared = copy.deepcopy(net, memo).eval()
    if fold_bn:
        fold_batch_norms(prepared)
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
        for m in prepared.modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_pre_hook(_channels_last_input)
    if compile:
        prepared.compile()
    return prepared


def eval_options(cfg: Mapping[str, Any]) -> dict[str, bool]:
    """:func:`prepare_for_eval`'s options from a config's ``eval.fold_bn``,
    ``eval.channels_last`` and ``eval.compile``."""
    from zoo.config import DEFAULTS

    ev = cfg.get("eval", {})
    # a config assembled by hand (not through load_config) may lack the keys: their defaults
    return {k: bool(ev.get(k, DEFAULTS["eval"][k]))
            for k in ("fold_bn", "channels_last", "compile")}


def eval_allocator(cfg: Mapping[str, Any]) -> ContextManager[str | None]:
    """The host allocator setting of a config's ``eval.reuse_freed_memory`` (default on):
    :func:`zoo.core.runtime.reuse_freed_memory`, for evaluation and inference loops."""
    from zoo.config import DEFAULTS

    key = "reuse_freed_memory"
    return reuse_freed_memory(bool(cfg.get("eval", {}).get(key, DEFAULTS["eval"][key])))
