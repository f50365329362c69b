"""The CPU "done when" goals of the attention and tiling issues, measured as paired rounds.

``python -m benchmarks.goals [--only attention,tiling] [--rounds 15] [--quick] [--json PATH]
[--threads N]``

The op sections time each implementation in its own block of runs, so on a shared or
throttling machine a slow spell can land on one side only; a goal stated as "no slower than"
is then decided by the noise. Here every round runs ours and the anchor back to back (in
alternating order), and the ratio of each round is kept:

- ``attention fwd time``: ``context_attention`` forward on (1, 256, 128, 128) NCHW float32 maps
  (N = 16384, scale 1) against SDPA's flash kernel on ready-made contiguous [1, 1, N, C]
  tokens (the fastest SDPA backend on the CPU, its layout prepared outside the timer). Goal:
  no slower (ratio >= 1). Two more pairs are recorded for context, not judged: SDPA flash
  timed from the same maps (layout changes included) and our op on channels_last maps.
- ``attention fwd memory``: peak extra memory of that forward (profiler allocation events);
  goal < 256 MiB (the N x N matrix alone is 1 GiB).
- ``sliding_window time``: identity ``fn`` over 1x3x2448x2448, 508 px windows at stride 381
  (49 windows), batch 8, constant weights, against MONAI's ``sliding_window_inference`` on
  the same windows (overlap 0.25). Goal: ratio >= 3 (issue 5); issue 21: ratio >= 1.5 and
  the steadiness ``p90 / median`` of our calls <= 1.5 (the output and batch buffers are
  reused between calls, so no call pays for fresh pages).
- ``streaming memory``: 1x3x10240x10240 through a 1-channel ``fn`` (FCtL grid) in a fresh
  process; growth of the peak RSS beyond the input; goal < 700 MiB (the output alone is
  400 MiB).

For a time goal: ``ratio`` is the median over rounds of anchor_ms / ours_ms (paired),
``ours_ms``/``anchor_ms`` the plain medians, ``wins`` the rounds ours was faster. ``met`` compares
``ratio`` with ``target``. Results are merged into ``benchmarks/results/<tag>.json`` as section
``goals.cpu`` (``--quick``: small shapes, written to the temporary folder, never judged),
from which :func:`render_blocks` renders the README/documentation block ``goals``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from benchmarks.common import load_device_results, machine_info, merge_section, metadata, \
    peak_memory_mb, results_path
from benchmarks.markdown import fnum, fratio, md_table

GOALS = ("attention", "tiling")
BLOCKS = ("goals",)  # the README/documentation block rendered from the goals.cpu sections


def paired_rounds(fns: dict[str, Callable[[], Any]], rounds: int,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Times (ms) of every fn over ``rounds`` rounds; each round runs all of them once, the
    order reversed every other round (so neither side always runs first, after a pause).
    ``clock``: wall time by default; ``time.process_time`` gives the process's CPU time
    (all threads), which other jobs on a shared machine disturb much less."""
    names = list(fns)
    for fn in fns.values():  # warm-up: first-call allocations, lazy imports, kernel caches
        fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            gc.collect()
            t0 = clock()
            fns[n]()
            times[n].append((clock() - t0) * 1e3)
    return times


def time_goal(goal: str, issue: int, ours: str, anchor: str, times: dict[str, list[float]],
              target: float | None) -> dict[str, Any]:
    """A time row: paired median ratio anchor / ours (> 1: ours faster)."""
    a, o = times[anchor], times[ours]
    ratio = statistics.median(x / y for x, y in zip(a, o))
    return {"goal": goal, "issue": issue, "metric": "time", "ours": ours, "anchor": anchor,
            "rounds": len(o), "ours_ms": statistics.median(o),
            "anchor_ms": statistics.median(a), "ratio": ratio,
            "wins": sum(y < x for x, y in zip(a, o)), "target": target,
            "met": None if target is None else ratio >= target}


def steadiness_goal(goal: str, issue: int, ours: str, times: list[float],
                    limit: float) -> dict[str, Any]:
    """The 90th percentile of a call's time over its median (1 = every call alike): stalls
    such as page faults in fresh buffers show up here, not in the median."""
    med = statistics.median(times)
    p90 = statistics.quantiles(times, n=10)[-1]
    return {"goal": goal, "issue": issue, "metric": "steadiness", "ours": ours,
            "anchor": None, "rounds": len(times), "ours_ms": med, "p90_ms": p90,
            "p90_over_median": p90 / med, "max_ms": max(times), "target": limit,
            "met": p90 / med <= limit}


def memory_goal(goal: str, issue: int, ours: str, mib: float | None, limit: float,
                note: str) -> dict[str, Any]:
    return {"goal": goal, "issue": issue, "metric": "memory", "ours": ours, "anchor": None,
            "peak_mb": mib, "target": limit, "met": None if mib is None else mib < limit,
            "note": note}


def attention_goals(rounds: int, quick: bool) -> list[dict[str, Any]]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from uhrops import use_backend
    from uhrops.attention import context_attention

    side, c = (16, 32) if quick else (128, 256)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, c, side, side, generator=gen) * (c ** -0.25 if i < 2 else 1.0)
               for i in range(3))
    tokens = tuple(t.flatten(2).transpose(1, 2).unsqueeze(1).contiguous() for t in (q, k, v))
    maps_cl = tuple(t.contiguous(memory_format=torch.channels_last) for t in (q, k, v))

    def ours(*maps):
        with use_backend("torch"):
            return context_attention(*maps, scale=1.0)

    def sdpa(*tok):
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(*tok, scale=1.0)

    def sdpa_from_maps():  # what a caller holding NCHW maps writes around SDPA
        o = sdpa(*(t.flatten(2).transpose(1, 2).unsqueeze(1).contiguous() for t in (q, k, v)))
        return o[:, 0].transpose(1, 2).reshape(1, c, side, side)

    fns = {"uhrops-torch": lambda: ours(q, k, v), "sdpa-flash": lambda: sdpa(*tokens),
           "sdpa-flash from maps": sdpa_from_maps,
           "uhrops-torch channels_last": lambda: ours(*maps_cl)}
    case = f"N={side * side} ({side}x{side}) C={c} float32"
    with torch.no_grad():
        times = paired_rounds(fns, rounds)
        mib = peak_memory_mb(fns["uhrops-torch"], "cpu")
    rows = [time_goal(f"attention fwd time, {case}", 4, "uhrops-torch", "sdpa-flash", times, 1.0),
            time_goal(f"attention fwd time, {case}", 4, "uhrops-torch", "sdpa-flash from maps",
                      times, None),
            time_goal(f"attention fwd time, {case}", 4, "uhrops-torch channels_last",
                      "sdpa-flash", times, None),
            memory_goal(f"attention fwd memory, {case}", 4, "uhrops-torch", mib, 256.0,
                        "profiler: peak of the CPU allocations during one call")]
    return rows


def tiling_goals(rounds: int, quick: bool) -> list[dict[str, Any]]:
    from uhrops import use_backend
    from uhrops.tiling import PatchGrid, sliding_window

    side, patch, stride = (128, 32, 24) if quick else (2448, 508, 381)
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    grid = PatchGrid.from_stride(side, patch, stride)
    case = f"1x3x{side}x{side}, {len(grid)} windows of {patch} at stride {stride}, batch 8"

    def ours():
        with use_backend("torch"):
            return sliding_window(lambda b: b, x, grid, 8)

    fns: dict[str, Callable[[], Any]] = {"uhrops-torch": ours}
    rows: list[dict[str, Any]] = []
    try:
        from monai.inferers import sliding_window_inference
    except ImportError as exc:
        rows.append({"goal": f"sliding_window time, {case}", "issue": 5, "metric": "time",
                     "ours": "uhrops-torch", "anchor": "monai", "met": None, "target": 3.0,
                     "note": f"monai not importable: {exc}"})
    else:
        fns["monai"] = lambda: sliding_window_inference(x, (patch, patch), 8, lambda b: b,
                                                        overlap=0.25, mode="constant")
        with torch.no_grad():
            diff = (fns["monai"]() - ours()).abs().max().item()
            if diff > 1e-5:  # the two must compute the same thing for the ratio to mean much
                raise RuntimeError(f"sliding_window and MONAI differ by {diff} on {case}")
            times = paired_rounds(fns, rounds)
        rows.append(time_goal(f"sliding_window time, {case}", 5, "uhrops-torch", "monai",
                              times, 3.0))
        rows.append(time_goal(f"sliding_window time, {case}", 21, "uhrops-torch", "monai",
                              times, 1.5))
        rows.append(steadiness_goal(f"sliding_window steadiness, {case}", 21, "uhrops-torch",
                                    times["uhrops-torch"], 1.5))
        # the same in process CPU time (all threads): blind to being descheduled by other
        # jobs, but it counts the spinning of idle OpenMP threads (noisy with > 1 thread)
        with torch.no_grad():
            cpu = paired_rounds(fns, rounds, clock=time.process_time)
        rows.append(time_goal(f"sliding_window CPU time, {case}", 21, "uhrops-torch",
                              "monai", cpu, 1.5))
        rows.append(steadiness_goal(f"sliding_window CPU-time steadiness, {case}", 21,
                                    "uhrops-torch", cpu["uhrops-torch"], 1.5))
    if not quick:
        from benchmarks.ops_tiling import stream_row

        r = stream_row(10240, 508)
        rows.append(memory_goal("streaming memory, 1x3x10240x10240 -> 1 channel", 5,
                                "uhrops-torch", r.get("peak_mb"), 700.0,
                                f"{r['case']}: {r.get('note', '')}"))
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Plain-text lines of the goal rows (console output)."""
    out = []
    for r in rows:
        met = {True: "met", False: "NOT met", None: "info"}[r.get("met")]
        if r["metric"] == "time" and r.get("ratio") is not None:
            out.append(f"[{met}] {r['goal']}: {r['anchor']} / {r['ours']} = {r['ratio']:.3f}x "
                       f"(paired median of {r['rounds']}; medians {r['anchor_ms']:.1f} / "
                       f"{r['ours_ms']:.1f} ms; ours faster in {r['wins']}/{r['rounds']}; "
                       f"target {r['target']})")
        elif r["metric"] == "steadiness":
            out.append(f"[{met}] {r['goal']}: p90 / median = {r['p90_over_median']:.2f} "
                       f"(median {r['ours_ms']:.1f} ms, p90 {r['p90_ms']:.1f}, max "
                       f"{r['max_ms']:.1f}; {r['rounds']} rounds; limit {r['target']})")
        elif r["metric"] == "memory":
            out.append(f"[{met}] {r['goal']}: {r.get('peak_mb')} MiB (limit {r['target']})")
        else:
            out.append(f"[{met}] {r['goal']}: {r.get('note')}")
    return "\n".join(out)


def goals_block(docs: dict[str, dict[str, Any]]) -> str:
    """Markdown of the goals block: the ``goals.cpu`` rows of every machine (not --quick)."""
    parts = []
    for tag, doc in docs.items():
        sec = doc.get("sections", {}).get("goals.cpu")
        if not sec or sec.get("metadata", {}).get("quick"):
            continue
        body = []
        for r in sec.get("rows", []):
            met = {True: "yes", False: "**no**", None: "—"}[r.get("met")]
            if r.get("metric") == "time" and r.get("ratio") is not None:
                result = (f"{fratio(r['ratio'])} ({fnum(r['anchor_ms'])} / {fnum(r['ours_ms'])} ms"
                          f", faster in {r['wins']}/{r['rounds']})")
                target = f">= {r['target']:g}x" if r.get("target") is not None else "(context)"
                who = f"{r['anchor']} / {r['ours']}"
            elif r.get("metric") == "memory":
                result = f"{fnum(r.get('peak_mb'))} MiB"
                target = f"< {r['target']:g} MiB"
                who = str(r.get("ours"))
            else:
                result, target, who = str(r.get("note", "—")), "—", str(r.get("ours"))
            body.append([str(r.get("issue", "")), str(r["goal"]), who, result, target, met])
        if body:
            parts.append(f"`{tag}`:\n\n" + md_table(
                ["issue", "goal", "measured", "result", "target", "met"], body))
    if not parts:
        return "No goal measurements yet (`python -m benchmarks.goals`)."
    return ("Time ratios are the median over paired rounds of anchor / uhrops (each round runs "
            "both back to back; > 1x: uhrops faster), with the plain medians in ms.\n\n"
            + "\n\n".join(parts))


def render_blocks(results_dir: str, plots_rel: str | None = None) -> dict[str, str]:
    """``bench:goals`` from the ``goals.cpu`` section of every machine's results file."""
    return {"goals": goals_block(load_device_results(results_dir))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.goals",
                                description="Paired measurements of the CPU goals of the "
                                            "attention and tiling issues.")
    p.add_argument("--only", default=",".join(GOALS),
                   help="comma-separated: " + ", ".join(GOALS))
    p.add_argument("--rounds", type=int, default=15, help="paired rounds per time goal")
    p.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    p.add_argument("--json", default=None,
                   help="results file to merge into (default benchmarks/results/<tag>.json)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--note", default=None, help="free text stored with the section")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [n for n in names if n not in GOALS]
    if unknown:
        p.error(f"--only: unknown goal group(s) {unknown}; choose from {', '.join(GOALS)}")
    if args.rounds < 3:
        p.error(f"--rounds {args.rounds}: use at least 3 (a median of fewer is not one)")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for name in names:
        rows += {"attention": attention_goals, "tiling": tiling_goals}[name](args.rounds,
                                                                             args.quick)
    if args.quick:  # small shapes say nothing about the goals
        for r in rows:
            r["met"] = None
    print(format_rows(rows))
    path = results_path("cpu", args.json, args.quick)
    meta = metadata("cpu")
    meta.update({"quick": args.quick, "note": args.note, "command": " ".join(sys.argv),
                 "rounds": args.rounds})
    merge_section(path, "goals.cpu", rows, meta, key=("goal", "ours", "anchor"),
                  machine=machine_info("cpu"))
    print(f"merged into {path} [goals.cpu]\nregenerate the README tables with: "
          f"python -m benchmarks.report")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
