"""Whole-model inference speed: ``python -m benchmarks.models [--model fctl|wsdnet] [--size N]``.

The papers' protocol: batch 1, random-initialised weights (speed does not depend on them),
eval mode under ``torch.inference_mode()``, warm-up, then timed runs (CUDA synchronised),
reporting the median time per image, FPS and peak memory (``torch.cuda.max_memory_allocated``
on a GPU; on the CPU the process's peak RSS, a coarse upper bound that includes the model).

- ``wsdnet``: one whole-image forward at ``size`` x ``size``.
- ``fctl``: the DeepGlobe final model (7 classes, x3 context and the global image) through
  :class:`zoo.fctl.FCtLSegmenter` over the FCtL grid (36 patches of 508 at 2448), patches in
  batches of ``--batch``; also one 508 patch forward alone (``--patch``).
Results go to ``benchmarks/results/models-<device>.json`` (merged with what is there).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from typing import Any, Callable

import torch

from benchmarks.common import metadata, write_json


def _time(fn: Callable[[], Any], device: str, warmup: int, runs: int) -> list[float]:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_wsdnet(size: int, device: str, warmup: int, runs: int) -> dict[str, Any]:
    from zoo.wsdnet import WSDNet

    model = WSDNet(7).to(device).eval()
    x = torch.rand(1, 3, size, size, device=device)
    with torch.inference_mode():
        times = _time(lambda: model(x), device, warmup, runs)
    return {"model": "wsdnet", "size": size, "median_s": statistics.median(times),
            "fps": 1 / statistics.median(times), "runs": runs, "peak_mb": _peak_mb(device),
            "peak_kind": "cuda_max_allocated" if device.startswith("cuda") else "process_rss"}


def bench_fctl(size: int, device: str, warmup: int, runs: int, batch: int,
               patch_only: bool) -> dict[str, Any]:
    from zoo.fctl import FCtL, FCtLSegmenter

    model = FCtL(7, "deepglobe", "full").to(device).eval()
    if patch_only:
        p = torch.rand(1, 3, 508, 508, device=device)
        ctx = torch.rand(1, 3, 508, 508, device=device)
        with torch.inference_mode():
            times = _time(lambda: model(p, (ctx, ctx)), device, warmup, runs)
        what = "one 508 patch (full model, both contexts)"
    else:
        seg = FCtLSegmenter(model, batch_size=batch)
        x = torch.rand(1, 3, size, size, device=device)
        with torch.inference_mode():
            times = _time(lambda: seg(x), device, warmup, runs)
        what = f"whole {size}^2 image, patches in batches of {batch}"
    return {"model": "fctl-deepglobe-full", "what": what, "size": 508 if patch_only else size,
            "median_s": statistics.median(times), "fps": 1 / statistics.median(times),
            "runs": runs, "peak_mb": _peak_mb(device),
            "peak_kind": "cuda_max_allocated" if device.startswith("cuda") else "process_rss"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("wsdnet", "fctl"), default="wsdnet")
    p.add_argument("--size", type=int, default=2448)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="FCtL patches per forward")
    p.add_argument("--patch", action="store_true", help="FCtL: time one 508 patch only")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.model == "wsdnet":
        row = bench_wsdnet(args.size, args.device, args.warmup, args.runs)
    else:
        row = bench_fctl(args.size, args.device, args.warmup, args.runs, args.batch, args.patch)
    row["threads"] = torch.get_num_threads()
    print(json.dumps(row, indent=1))
    tag = args.device.split(":")[0]
    if tag == "cpu":
        tag = f"cpu-{torch.get_num_threads()}t"
    path = args.json or os.path.join(os.path.dirname(__file__), "results", f"models-{tag}.json")
    payload: dict[str, Any] = {"metadata": metadata(args.device), "results": []}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
        payload["metadata"] = metadata(args.device)
    payload["results"] = [r for r in payload["results"]
                          if (r["model"], r.get("what"), r["size"]) !=
                          (row["model"], row.get("what"), row["size"])] + [row]
    write_json(path, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
