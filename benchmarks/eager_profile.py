"""Where eager CPU inference spends its time: torch.profiler tables, by op, of one WSDNet or
FCtL forward at 2448², 2 threads.

    python -m benchmarks.eager_profile [--model wsdnet|fctl] [--size 2448] [--variant NAME]
                                       [--rows 25] [--out PATH]

Variants: ``plain`` (the model as built, NCHW), ``fold`` and ``fold+cl`` (the zoo's
``zoo.engine.inference.prepare_for_eval`` with batch norms folded, and channels_last weights
and input). One warm-up call, then one profiled
call under ``torch.inference_mode()``; the table (self CPU time by ATen op, and the top
modules' inclusive times) is printed and written to
``benchmarks/results/eager-profile-<model>-<variant>.txt``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.common import RESULTS_DIR
from benchmarks.models import build_model

__all__ = ["main", "profile_table"]


def _prepare(model_name: str, size: int, variant: str) -> tuple[torch.nn.Module, torch.Tensor]:
    model, _ = build_model(model_name, size)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    if variant != "plain":
        from zoo.engine.inference import prepare_for_eval

        model = prepare_for_eval(model, fold_bn=True, channels_last="cl" in variant)
    if "cl" in variant:
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x


def _call(model_name: str, model: torch.nn.Module, x: torch.Tensor) -> object:
    if model_name == "fctl":
        return _fctl_infer(model, x)
    return model(x)


def _fctl_infer(model: torch.nn.Module, x: torch.Tensor) -> object:
    """FCtL's DeepGlobe inference: the zoo's sliding-window segmenter over the image."""
    from zoo.config import load_config
    from zoo.engine.families import make_task

    task = make_task(load_config("fctl_deepglobe_full", []))
    return task.predict(model, x)


def profile_table(model_name: str, size: int, variant: str, rows: int) -> str:
    torch.set_num_threads(2)
    model, x = _prepare(model_name, size, variant)
    with torch.inference_mode():
        t0 = time.perf_counter()
        _call(model_name, model, x)  # warm-up (oneDNN primitives, allocator)
        warm = time.perf_counter() - t0
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    record_shapes=False) as prof:
            t0 = time.perf_counter()
            c0 = time.process_time()
            _call(model_name, model, x)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ka = prof.key_averages()
    head = (f"{model_name} {size}² variant={variant} threads={torch.get_num_threads()} "
            f"torch {torch.__version__}: profiled call {wall:.2f} s wall, {cpu:.2f} s CPU "
            f"(warm-up {warm:.2f} s), load {os.getloadavg()[0]:.1f}\n")
    return head + ka.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="wsdnet", choices=("wsdnet", "fctl"))
    ap.add_argument("--size", type=int, default=2448)
    ap.add_argument("--variant", default="plain", choices=("plain", "fold", "fold+cl"))
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    text = profile_table(args.model, args.size, args.variant, args.rows)
    print(text)
    out = args.out or os.path.join(RESULTS_DIR,
                                   f"eager-profile-{args.model}-{args.variant}.txt")
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
