"""The README/documentation blocks of the compiled-kernel reports, rendered from the files
``python -m tools.kernels.compile_check`` (``kernels-sm<arch>.json``, with ``--figures`` the
static figures of :mod:`tools.kernels.static_figures`) and ``python -m tools.kernels.matmul_work
--json`` (``kernels-attention-work.json``) write into ``benchmarks/results``.

The renderers live here rather than beside their producers in ``tools/kernels`` because the
tooling sits below the benchmarks: ``tools`` imports nothing from ``benchmarks``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import sys
from typing import Any

from benchmarks.markdown import fnum, load_json, md_table

BLOCKS = ("kernels", "kernel-figures", "attention-work")
ATTENTION_WORK_FILE = "kernels-attention-work.json"


def load_kernel_reports(results_dir: str) -> dict[int, dict[str, Any]]:
    """``kernels-sm<arch>.json`` files (the compile check's output) keyed by arch."""
    reports: dict[int, dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "kernels-sm*.json"))):
        m = re.search(r"kernels-sm(\d+)\.json$", path)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            print(f"report: skipped {path}: {exc}", file=sys.stderr)
            continue
        if m and isinstance(doc, dict) and "specialisations" in doc:
            reports[int(m.group(1))] = doc
    return reports


def _widest(counts: dict[str, int]) -> str:
    return f"{max(int(k) for k in counts)}" if counts else "—"


def kernels_block(reports: dict[int, dict[str, Any]]) -> str:
    """Per kernel and architecture: what the compile check found in the compiled code."""
    if not reports:
        return ("Compiled kernels: **no report** (run `python -m tools.kernels.compile_check "
                "--arch 80,90,100`).")
    out = []
    for arch, doc in sorted(reports.items()):
        meta = doc.get("metadata", {})
        specs = doc["specialisations"]
        out.append(f"**sm_{arch}** (Triton {meta.get('triton', '?')}, commit "
                   f"{meta.get('commit', '?')}, {meta.get('date', '?')}; ahead-of-time "
                   f"compile, no GPU needed): {sum(s['ok'] for s in specs)} of {len(specs)} "
                   f"specialisations compile; problems: {len(doc.get('problems', []))}.")
        out.append("")
        body = []
        for kernel in sorted({s["kernel"] for s in specs}):
            mine = [s for s in specs if s["kernel"] == kernel]
            ok = [s for s in mine if s["ok"]]
            regs = [s["registers"] for s in ok]
            tc = sum(s.get("mma", 0) + s.get("wgmma", 0) + s.get("tcgen05_mma", 0) for s in ok)
            loads: dict[str, int] = {}
            stores: dict[str, int] = {}
            for s in ok:
                for k, v in s["global_loads"].items():
                    loads[k] = loads.get(k, 0) + v
                for k, v in s["global_stores"].items():
                    stores[k] = stores.get(k, 0) + v
            body.append([
                f"`{kernel}`", mine[0]["family"], f"{len(ok)}/{len(mine)}",
                f"{min(regs)}–{max(regs)}" if regs else "—",
                str(max((s["spill_store_bytes"] for s in ok), default=0)),
                fnum(max((s["shared_bytes"] + s["static_shared_bytes"] for s in ok),
                         default=0) / 1024),
                "yes" if tc else "no", _widest(loads), _widest(stores)])
        out.append(md_table(["kernel", "family", "compiled", "registers", "max spill (B)",
                             "max shared (KiB)", "tensor cores", "widest load (bit)",
                             "widest store (bit)"], body))
        out.append("")
    return "\n".join(out).rstrip()


def _widths(counts: dict[str, int]) -> str:
    pairs = sorted(counts.items(), key=lambda kv: int(kv[0]))
    return ", ".join(f"{bits}×{n}" for bits, n in pairs)


def kernel_figures_block(reports: dict[int, dict[str, Any]], arch: int = 90) -> str:
    """The memory-bound kernels' static figures at their main specialisations (sm_90)."""
    figs = reports.get(arch, {}).get("figures")
    if not figs:
        return ("Static figures: **no report** (run `python -m tools.kernels.compile_check "
                "--arch 80,90,100 --figures`).")
    body = []
    for f in figs:
        if not f.get("ok"):
            body.append([f["name"], f"`{f['kernel']}`"] + ["does not compile"] + [""] * 6)
            continue
        body.append([f["name"], f"`{f['kernel']}`", str(f["registers"]),
                     str(f["spill_store_bytes"]), f"{f['loads_per_element']:.2f}",
                     f"{f['load_instructions_per_output']:.2f}", _widths(f["load_widths"]),
                     _widths(f["store_widths"]), str(math.prod(f["grid"]))])
    return (f"sm_{arch}, from `kernels-sm{arch}.json` (fetches per element: bytes a program "
            "loads over the bytes of its tile plus halo; widths: bits × instructions per "
            "thread).\n\n" + md_table(
                ["case", "kernel", "registers", "spill (B)", "fetches / element",
                 "load instr / output", "load widths", "store widths", "blocks"], body))


def load_attention_work(results_dir: str) -> dict[str, Any] | None:
    """``kernels-attention-work.json`` (``python -m tools.kernels.matmul_work --json``)."""
    doc = load_json(results_dir, ATTENTION_WORK_FILE)
    return doc if doc is not None and "rows" in doc else None


def attention_work_block(doc: dict[str, Any] | None) -> str:
    """Matmul work of the attention launches against the minimum, and blocks per kernel."""
    if doc is None:
        return ("Attention work: **no report** (run `python -m tools.kernels.matmul_work "
                "--json benchmarks/results/kernels-attention-work.json`).")
    meta = doc.get("metadata", {})
    out = [f"Launch plans a CUDA call makes (Triton {meta.get('triton', '?')}, commit "
           f"{meta.get('commit', '?')}, {meta.get('date', '?')}; {doc.get('sms', '?')} SMs "
           "assumed). Work ratios include block padding; blocks are per launch, in launch "
           "order.", ""]
    body = []
    for r in doc["rows"]:
        blocks = "; ".join(f"`{k.strip('_').replace('_kernel', '')}` "
                           + "+".join(str(n) for n in v) for k, v in r["blocks"].items())
        body.append([r["shape"], r["dtype"], r["precision"] if r["dtype"] == "float32" else "—",
                     f"{r['forward_work_ratio']:.2f}x", f"{r['backward_work_ratio']:.2f}x",
                     str(r["min_blocks_matmul_kernels"]), blocks])
    out.append(md_table(["shape", "dtype", "fp32 precision", "forward work / minimum",
                         "backward work / FA2-style", "fewest blocks (matmul kernels)",
                         "blocks per launch"], body))
    return "\n".join(out)


def render_blocks(results_dir: str, plots_rel: str | None = None) -> dict[str, str]:
    """``bench:kernels``, ``bench:kernel-figures`` and ``bench:attention-work`` from the kernel
    reports in ``results_dir``."""
    reports = load_kernel_reports(results_dir)
    return {"kernels": kernels_block(reports), "kernel-figures": kernel_figures_block(reports),
            "attention-work": attention_work_block(load_attention_work(results_dir))}
