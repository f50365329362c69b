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

README/documentation blocks (:data:`BLOCKS`, :func:`render_blocks`): ``summary`` (per machine
and family, the goal criterion of :data:`CRITERIA` with the worst and best ratio, and our
worst case against the fastest anchor) and ``ops-cpu`` / ``ops-gpu`` (the family tables, GPU
"not measured" without a CUDA file); :func:`write_plots` draws ``ops-speedup-<tag>.png``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Any, Iterable

import torch

from benchmarks.common import (attention_flops, copy_bandwidth_gbs, fmt_table, is_gpu, is_ours,
                               load_device_results, machine_info, merge_section, metadata,
                               pivot_family, ratio, results_path)
from benchmarks.markdown import fnum, fratio, md_table

SECTIONS = ("wavelet", "pyramid", "attention", "tiling")
# The README/documentation blocks this module renders from the ops.* sections.
BLOCKS = ("summary", "ops-cpu", "ops-gpu")
# family -> (metric, anchor, wording): the per-family goal of issue 11 on the CPU.
CRITERIA: dict[str, tuple[str, str, str]] = {
    "wavelet": ("time", "ptwt", "time vs ptwt"),
    "pyramid": ("time", "kornia", "time vs kornia"),
    "tiling": ("time", "monai", "time vs MONAI"),
    "attention": ("memory", "sdpa-math", "peak memory vs SDPA math"),
}


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
    header, body, notes = family_table(family, rows, gpu=device.startswith("cuda"))
    table = fmt_table([dict(zip(header, r)) for r in body], header)
    return table + ("\n" + "\n".join(notes) if notes else "")


# ---- README blocks and plots ---------------------------------------------------------------


def op_rows(doc: dict[str, Any], family: str) -> list[dict[str, Any]] | None:
    """Rows of section ``ops.<family>`` (None when absent or from a --quick run)."""
    sec = doc.get("sections", {}).get(f"ops.{family}")
    if not sec or sec.get("metadata", {}).get("quick"):
        return None
    return sec.get("rows", [])


def family_table(family: str, rows: list[dict[str, Any]], gpu: bool
                 ) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, body, notes) of one op family's side-by-side table.

    Columns: case, pass, each of our implementations (median ms [IQR]), our best peak MiB
    (when measured), each anchor: ``ms (anchor/ours x)`` plus ``· MiB (anchor/ours x)`` when
    both peaks are known; on the GPU our best GB/s and % of copy bandwidth, and TFLOP/s for
    attention. Ratios are against our fastest implementation in the same group.
    """
    piv = pivot_family(rows)
    ours_impls: list[str] = []
    for g in piv["groups"]:
        for impl in g["ours_all"]:
            if impl not in ours_impls:
                ours_impls.append(impl)
    has_peak = any(g["ours"] is not None and g["ours"].get("peak_mb") is not None
                   for g in piv["groups"])
    header = ["case", "pass"] + [f"{i} ms [IQR]" for i in ours_impls]
    if has_peak:
        header.append("uhrops peak MiB")
    header += [f"{a} ms (x)" for a in piv["anchors"]]
    show_bw = gpu and any(g["ours"] is not None and g["ours"].get("gbs") for g in piv["groups"])
    show_tf = gpu and family == "attention"
    if show_bw:
        header += ["GB/s", "% copy"]
    if show_tf:
        header.append("TFLOP/s")
    body = []
    for g in piv["groups"]:
        best = g["ours"]
        row = [g["case"], g["pass"]]
        for impl in ours_impls:
            r = g["ours_all"].get(impl)
            if r is None:
                row.append("—")
            elif r.get("median_ms") is None:
                row.append("n/a")
            else:
                row.append(f"{fnum(r['median_ms'])} [{fnum(r.get('iqr_ms'))}]")
        if has_peak:
            row.append(fnum(best.get("peak_mb")) if best is not None else "—")
        for a in piv["anchors"]:
            r = g["anchors"].get(a)
            if r is None:
                row.append("—")
                continue
            if r.get("median_ms") is None:
                row.append("n/a")
                continue
            cell = fnum(r["median_ms"])
            if best is not None:
                cell += f" ({fratio(ratio(r['median_ms'], best['median_ms']))})"
            if best is not None and r.get("peak_mb") is not None \
                    and best.get("peak_mb") is not None:
                cell += (f" · {fnum(r['peak_mb'])} MiB "
                         f"({fratio(ratio(r['peak_mb'], best['peak_mb']))})")
            row.append(cell)
        if show_bw:
            row += [fnum(best.get("gbs")) if best else "—",
                    fnum(best.get("pct_copy")) if best else "—"]
        if show_tf:
            row.append(fnum(best.get("tflops")) if best else "—")
        body.append(row)
    notes = []
    for impl, note in piv["not_run"].items():
        short = re.sub(r"\s+", " ", note).strip()
        short = re.sub(r"^not run:\s*", "", short)
        notes.append(f"{impl}: not run ({short[:140]})" if short else f"{impl}: not run")
    return header, body, notes


def _machine_line(tag: str, doc: dict[str, Any], sections: Iterable[str]) -> str:
    m = doc.get("machine", {})
    metas = [doc["sections"][s]["metadata"] for s in sections if s in doc.get("sections", {})]
    commits = sorted({(x.get("commit") or "")[:8] for x in metas if x.get("commit")})
    days = sorted({(x.get("time") or "")[:10] for x in metas if x.get("time")})
    notes = sorted({x["note"] for x in metas if x.get("note")})
    what = (m.get("gpu") if is_gpu(tag)
            else f"{m.get('cpu_count', '?')}-core {m.get('machine', '')} CPU")
    text = (f"`{tag}`: {what}, {m.get('threads', '?')} torch threads, torch {m.get('torch', '?')}, "
            f"commit {', '.join(commits) or '?'}, measured {', '.join(days) or '?'}")
    if notes:
        text += ". " + " ".join(notes)
    return text


def ops_block(docs: dict[str, dict[str, Any]], gpu: bool, plots_rel: str | None) -> str:
    """Markdown of the ops-cpu or ops-gpu block."""
    tags = [t for t in docs if is_gpu(t) == gpu]
    parts = []
    for tag in tags:
        doc = docs[tag]
        fams = [f for f in SECTIONS if op_rows(doc, f)]
        if not fams:
            continue
        parts.append("Machine " + _machine_line(tag, doc, [f"ops.{f}" for f in fams]) + ".")
        if plots_rel:
            parts.append(f"![op speed-ups, {tag}]({plots_rel}/ops-speedup-{tag}.png)")
        for fam in fams:
            header, body, notes = family_table(fam, op_rows(doc, fam) or [], is_gpu(tag))
            parts.append(f"**{fam}** (`{tag}`)\n\n" + md_table(header, body))
            if notes:
                parts.append("\n".join(f"- {n}" for n in notes))
    if not parts:
        return ("GPU: **not measured** (no `benchmarks/results/cuda-*.json`; run "
                "`python -m benchmarks.ops --device cuda` on a GPU machine)." if gpu else
                "CPU: **not measured** (run `python -m benchmarks.ops --device cpu`).")
    legend = ("Cells: median ms [inter-quartile range]; anchors: median ms (anchor time / "
              "uhrops time) and, where both were measured, peak MiB (anchor / uhrops); > 1x "
              "means uhrops is faster or leaner. Every ratio compares figures of the same run.")
    if gpu:
        legend += (" GB/s: bytes an ideal kernel moves / time; % copy: of the measured "
                   "device-to-device copy bandwidth; TFLOP/s: 4·N²·C forward, 2.5x that "
                   "backward.")
    return legend + "\n\n" + "\n\n".join(parts)


def family_summary(family: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Goal criterion and worst case of one family (see :data:`CRITERIA`)."""
    metric, anchor, wording = CRITERIA[family]
    key = "median_ms" if metric == "time" else "peak_mb"
    piv = pivot_family(rows)
    ratios = []
    worst_any: tuple[float, str, str] | None = None
    for g in piv["groups"]:
        best = g["ours"]
        if best is None:
            continue
        a = g["anchors"].get(anchor)
        ours_val = best.get(key)
        if metric == "memory":  # memory: our leanest implementation
            vals = [r.get(key) for r in g["ours_all"].values() if r.get(key) is not None]
            ours_val = min(vals) if vals else None
        r = ratio(a.get(key) if a else None, ours_val)
        if r is not None:
            ratios.append(r)
        timed = [(x["median_ms"], name) for name, x in g["anchors"].items()
                 if x.get("median_ms") is not None]
        if timed:
            t, name = min(timed)
            rr = t / best["median_ms"]
            if worst_any is None or rr < worst_any[0]:
                worst_any = (rr, name, f"{g['case']} {g['pass']}")
    return {"family": family, "criterion": wording, "cases": len(ratios),
            "worst": min(ratios) if ratios else None, "best": max(ratios) if ratios else None,
            "met": (min(ratios) > 1.0) if ratios else None, "worst_any": worst_any}


def summary_block(docs: dict[str, dict[str, Any]]) -> str:
    """Markdown of the summary block: one goal table per machine with op results."""
    parts = []
    for tag, doc in docs.items():
        body = []
        for fam in SECTIONS:
            rows = op_rows(doc, fam)
            if not rows:
                continue
            s = family_summary(fam, rows)
            met = {True: "yes", False: "**no**", None: "—"}[s["met"]]
            wa = s["worst_any"]
            worst_any = (f"{fratio(wa[0])} vs {wa[1]} ({wa[2]})" if wa else "—")
            body.append([fam, s["criterion"], str(s["cases"]), fratio(s["worst"]),
                         fratio(s["best"]), met, worst_any])
        if body:
            parts.append(f"`{tag}`:\n\n" + md_table(
                ["family", "goal: beat the anchor on", "cases", "worst ratio", "best ratio",
                 "met", "our worst case vs the fastest anchor (time)"], body))
    if not any(is_gpu(t) for t in docs):
        parts.append("GPU: **not measured** (no CUDA results file).")
    if not parts:
        return "No benchmark results yet (`python -m benchmarks.ops`)."
    return ("Ratios are anchor / uhrops (time, or peak memory for attention), per (case, pass), "
            "from one run; > 1x: uhrops wins.\n\n" + "\n\n".join(parts))


def render_blocks(results_dir: str, plots_rel: str | None = None) -> dict[str, str]:
    """``bench:summary``, ``bench:ops-cpu`` and ``bench:ops-gpu`` from the ``ops.*`` sections
    of every machine's results file in ``results_dir`` (``plots_rel``: where the README finds
    the speed-up plots; None: no plot links)."""
    docs = load_device_results(results_dir)
    return {"summary": summary_block(docs), "ops-cpu": ops_block(docs, False, plots_rel),
            "ops-gpu": ops_block(docs, True, plots_rel)}


def plot_ops(tag: str, doc: dict[str, Any], path: str) -> bool:
    """Bar chart of our speed-up against the fastest anchor, every case of every family (and
    attention's peak-memory ratio against SDPA math). False when there is nothing to plot."""
    from benchmarks.plot import Bar, bar_chart

    bars = []
    for fam in SECTIONS:
        rows = op_rows(doc, fam)
        if not rows:
            continue
        for g in pivot_family(rows)["groups"]:
            best = g["ours"]
            timed = [(r["median_ms"], n) for n, r in g["anchors"].items()
                     if r.get("median_ms") is not None]
            if best is None or not timed:
                continue
            t, name = min(timed)
            v = t / best["median_ms"]
            bars.append(Bar(f"{g['case']} · {g['pass']}", v, f"{fam}: time",
                            f"{fratio(v)} vs {name}"))
        if CRITERIA[fam][0] == "memory":
            anchor = CRITERIA[fam][1]
            for g in pivot_family(rows)["groups"]:
                a = g["anchors"].get(anchor)
                vals = [r.get("peak_mb") for r in g["ours_all"].values()
                        if r.get("peak_mb") is not None]
                v = ratio(a.get("peak_mb") if a else None, min(vals) if vals else None)
                if v is not None:
                    bars.append(Bar(f"{g['case']} · {g['pass']}", v, f"{fam}: peak memory",
                                    f"{fratio(v)} vs {anchor}"))
    if not bars:
        return False
    threads = doc.get("machine", {}).get("threads", "?")
    bar_chart(path, bars, f"uhrops ops vs the fastest anchor — {tag}",
              "anchor / uhrops, log scale (> 1x: uhrops faster; memory bars: leaner)",
              subtitle=f"time bars: fastest anchor's median / our median; memory bars: SDPA "
                       f"math peak / our peak; same run; {threads} threads")
    return True


def write_plots(results_dir: str, plots_dir: str) -> list[str]:
    """``ops-speedup-<tag>.png`` for every machine with op results; the paths written."""
    written = []
    for tag, doc in load_device_results(results_dir).items():
        out = os.path.join(plots_dir, f"ops-speedup-{tag}.png")
        if plot_ops(tag, doc, out):
            written.append(out)
    return written


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
