"""Operator benchmarks: ``python -m benchmarks.ops [--device cpu|cuda] [--only wavelet,...]
[--quick] [--json PATH]``.

Each op family is a section module ``benchmarks/ops_<family>.py`` with
``run(device: str, quick: bool) -> list[dict]``; every row is one (case, impl, pass)
measurement with ``median_ms``/``iqr_ms`` and optional ``peak_mb``, ``bytes`` (bytes read +
written by an ideal kernel, for GB/s on the GPU) and ``flops``. Implementations whose name
starts with "uhrops" are ours; every other implementation in the same (case, pass) group is an
anchor. Each family prints one table: our time (median [IQR]) and peak memory, then for every
anchor its time with the ratio anchor / ours (> 1: we are faster) and, where both peaks are
known, its peak memory with the same ratio; on CUDA also our GB/s and % of the measured
device-to-device copy bandwidth, and TFLOP/s for attention. All figures of a table come from
the same run. Each family is merged into ``benchmarks/results/<device-tag>.json`` as section
``ops.<family>`` as soon as it finishes (``--quick`` runs go to a temporary folder unless
``--json`` is given).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

import torch

from benchmarks.common import (attention_flops, copy_bandwidth_gbs, fmt_table, is_ours,
                               machine_info, merge_section, metadata, results_path)

SECTIONS = ("wavelet", "pyramid", "attention", "tiling")


def add_ratios(rows: list[dict[str, Any]], copy_gbs: float | None,
               family: str | None = None) -> None:
    """Add derived fields in place: ``gbs``/``pct_copy`` (from ``bytes``), ``flops``/``tflops``
    (attention), and ``speedup_of_best_uhrops`` = this row's time / our best time in its
    (case, pass) group (> 1 for an anchor: we are faster)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("case"), r.get("pass")), []).append(r)
        ms = r.get("median_ms")
        if r.get("bytes") and ms:
            r["gbs"] = r["bytes"] / (ms * 1e-3) / 1e9
            if copy_gbs:
                r["pct_copy"] = 100.0 * r["gbs"] / copy_gbs
        if family == "attention" and r.get("flops") is None and isinstance(r.get("case"), str):
            flops = attention_flops(r["case"], str(r.get("pass")))
            if flops is not None:
                r["flops"] = flops
        if r.get("flops") and ms:
            r["tflops"] = r["flops"] / (ms * 1e-3) / 1e12
    for group in groups.values():
        ours = [r for r in group if is_ours(str(r.get("impl", ""))) and r.get("median_ms")]
        if not ours:
            continue
        best = min(ours, key=lambda r: r["median_ms"])
        for r in group:
            if r.get("median_ms"):
                r["speedup_of_best_uhrops"] = r["median_ms"] / best["median_ms"]


def family_text_table(family: str, rows: list[dict[str, Any]], device: str) -> str:
    """The console table of one family (same layout as the README's, plain text)."""
    from benchmarks.report import family_table

    header, body, notes = family_table(family, rows, gpu=device.startswith("cuda"))
    table = fmt_table([dict(zip(header, r)) for r in body], header)
    return table + ("\n" + "\n".join(notes) if notes else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ops",
                                description="Operator benchmarks against their anchors.")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda[:i] (default: cuda when visible)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help="comma-separated sections: " + ", ".join(SECTIONS))
    p.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    p.add_argument("--json", default=None,
                   help="results file to merge into (default benchmarks/results/<tag>.json)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--note", default=None, help="free text stored with the sections")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible; use --device cpu")
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        p.error(f"--device {args.device!r}: use cpu or cuda[:i]")
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        p.error(f"--only: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")

    path = results_path(args.device, args.json, args.quick)
    copy_gbs = copy_bandwidth_gbs(args.device)
    meta = metadata(args.device)
    meta.update({"copy_gbs": copy_gbs, "quick": args.quick, "note": args.note,
                 "command": " ".join(sys.argv)})
    for name in names:
        try:
            module = importlib.import_module(f"benchmarks.ops_{name}")
        except ImportError as exc:
            print(f"[{name}] skipped: {exc}", file=sys.stderr)
            continue
        rows = module.run(args.device, args.quick)
        add_ratios(rows, copy_gbs, name)
        print(f"\n== {name} ({args.device}) ==")
        print(family_text_table(name, rows, args.device))
        merge_section(path, f"ops.{name}", rows, meta, machine=machine_info(args.device))
        print(f"merged into {path} [ops.{name}]")
    print("\nregenerate the README tables with: python -m benchmarks.report")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
