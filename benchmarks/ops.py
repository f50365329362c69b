"""Operator benchmarks: ``python -m benchmarks.ops [--device cpu|cuda] [--only wavelet,...]``.

Each op family is a section module ``benchmarks/ops_<family>.py`` with
``run(device: str, quick: bool) -> list[dict]``; every row is one (case, impl, pass)
measurement with ``median_ms``/``iqr_ms`` and optional ``peak_mb``, ``bytes`` (bytes read +
written by an ideal kernel, for GB/s on the GPU). Implementations whose name starts with
"uhrops" are ours; every other implementation in the same (case, pass) group is an anchor,
and the table reports anchor_time / our_time ("speed-up", > 1 means we are faster), all
measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

import torch

from benchmarks.common import copy_bandwidth_gbs, fmt_table, metadata, write_json

SECTIONS = ("wavelet", "pyramid", "attention", "tiling")


def add_ratios(rows: list[dict[str, Any]], copy_gbs: float | None) -> None:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["pass"]), []).append(r)
        if r.get("bytes") and r.get("median_ms"):
            r["gbs"] = r["bytes"] / (r["median_ms"] * 1e-3) / 1e9
            if copy_gbs:
                r["pct_copy"] = 100.0 * r["gbs"] / copy_gbs
    for group in groups.values():
        ours = [r for r in group if r["impl"].startswith("uhrops") and r.get("median_ms")]
        if not ours:
            continue
        best = min(ours, key=lambda r: r["median_ms"])
        for r in group:
            if r.get("median_ms"):
                r["speedup_of_best_uhrops"] = r["median_ms"] / best["median_ms"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help="comma-separated sections: " + ", ".join(SECTIONS))
    p.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    p.add_argument("--json", default=None,
                   help="output path (default benchmarks/results/<device>.json)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible; use --device cpu")

    copy_gbs = copy_bandwidth_gbs(args.device)
    results: dict[str, Any] = {}
    for name in [s.strip() for s in args.only.split(",") if s.strip()]:
        if name not in SECTIONS:
            p.error(f"--only: unknown section {name!r}; choose from {', '.join(SECTIONS)}")
        try:
            module = importlib.import_module(f"benchmarks.ops_{name}")
        except ImportError as exc:
            print(f"[{name}] skipped: {exc}", file=sys.stderr)
            continue
        rows = module.run(args.device, args.quick)
        add_ratios(rows, copy_gbs)
        results[name] = rows
        cols = ["case", "pass", "impl", "median_ms", "iqr_ms", "peak_mb",
                "speedup_of_best_uhrops"]
        if copy_gbs:
            cols += ["gbs", "pct_copy"]
        print(f"\n== {name} ({args.device}) ==")
        print(fmt_table(rows, cols))
    meta = metadata(args.device)
    meta["copy_gbs"] = copy_gbs
    meta["quick"] = args.quick
    tag = args.device.split(":")[0]
    if tag == "cpu":
        tag = f"cpu-{torch.get_num_threads()}t"
    path = args.json or os.path.join(os.path.dirname(__file__), "results", f"ops-{tag}.json")
    if args.quick and args.json is None:
        path = path.replace(".json", "-quick.json")
    write_json(path, {"metadata": meta, "results": results})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
