"""What keeping freed host memory (``eval.reuse_freed_memory``) buys and costs on the CPU.

    python -m benchmarks.host_allocator [--size 2448] [--images 4] [--rounds 2] [--json PATH]

The zoo's eval path (``zoo.engine.inference.prepare_for_eval``: batch norms folded,
channels_last) of the random-initialised WSDNet(7) segments ``--images`` images of
size x size, batch 1, 2 threads, once with freed memory kept
(``zoo.core.runtime.reuse_freed_memory``) and once with glibc's own behaviour, each run in a
fresh process so that its page faults and its peak resident memory are its own. The two run
in rounds, the order reversed every other round, so load on a shared machine hits both
alike. Per run: process CPU time (user and kernel) and minor page faults of every image
after the first (the first builds the heap either way), and the peak RSS above the RSS
before the first image (``VmHWM`` after ``clear_refs``). Results:
``benchmarks/results/host-allocator.json`` (documentation block ``bench:host-allocator``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from typing import Any

import torch

from benchmarks.common import RESULTS_DIR, metadata, proc_status_kb, reset_peak_rss, write_json
from benchmarks.markdown import fnum, load_json, md_table, not_measured

__all__ = ["BLOCKS", "RESULTS_FILE", "host_allocator_block", "main", "render_blocks",
           "run_one"]

RESULTS_FILE = "host-allocator.json"
BLOCKS = ("host-allocator",)
SETTINGS = ("kept", "default")
THREADS = 2


def run_one(setting: str, size: int, images: int) -> dict[str, Any]:
    """One run in this process: ``images`` forwards of the zoo's eval path."""
    from benchmarks.models import build_model
    from zoo.core.runtime import reuse_freed_memory
    from zoo.engine.inference import prepare_for_eval

    torch.set_num_threads(THREADS)
    model, desc = build_model("wsdnet", size)
    net = prepare_for_eval(model, fold_bn=True, channels_last=True)
    del model
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    per_image = []
    with reuse_freed_memory(setting == "kept") as why_not, torch.inference_mode():
        reset_peak_rss()
        before = proc_status_kb("VmRSS") or 0
        for _ in range(images):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            net(x)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            per_image.append({"user_s": r1.ru_utime - r0.ru_utime,
                              "sys_s": r1.ru_stime - r0.ru_stime,
                              "minor_faults": r1.ru_minflt - r0.ru_minflt})
        peak = proc_status_kb("VmHWM") or 0
    return {"setting": setting, "applied": why_not is None, "why_not": why_not,
            "model": desc, "size": size, "images": per_image,
            "peak_above_start_mb": (peak - before) / 1024, "peak_rss_mb": peak / 1024}


def _subprocess(setting: str, size: int, images: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.host_allocator", "--one", setting,
           "--size", str(size), "--images", str(images)]
    # the run's own allocator: no inherited glibc or malloc settings
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", "LD_PRELOAD") and not k.startswith("MALLOC_")}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(run: dict[str, Any]) -> dict[str, float]:
    later = run["images"][1:] or run["images"]
    return {"cpu_s": statistics.median(i["user_s"] + i["sys_s"] for i in later),
            "sys_s": statistics.median(i["sys_s"] for i in later),
            "minor_faults": statistics.median(i["minor_faults"] for i in later),
            "peak_above_start_mb": run["peak_above_start_mb"]}


def run(size: int, images: int, rounds: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for setting in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
            one = _subprocess(setting, size, images)
            one.update(round=r, **_summary(one))
            runs.append(one)
    by = {s: [x for x in runs if x["setting"] == s] for s in SETTINGS}
    pairs = list(zip(by["kept"], by["default"]))
    paired = {"cpu": statistics.median(k["cpu_s"] / d["cpu_s"] for k, d in pairs),
              "peak": statistics.median(k["peak_above_start_mb"] / d["peak_above_start_mb"]
                                        for k, d in pairs)}
    return {"size": size, "images_per_run": images, "rounds": rounds, "threads": THREADS,
            "runs": runs, "paired_median_kept_over_default": paired}


def host_allocator_block(doc: dict[str, Any] | None) -> str:
    """``bench:host-allocator``: CPU time, kernel time, page faults and peak memory of the
    zoo's eval path with freed memory kept and with glibc's default, from
    ``host-allocator.json``."""
    if not doc:
        return not_measured("python -m benchmarks.host_allocator", RESULTS_FILE)
    names = {"kept": "freed memory kept (`eval.reuse_freed_memory: true`)",
             "default": "glibc's default (`false`)"}
    body = []
    for s in SETTINGS:
        rows = [r for r in doc["runs"] if r["setting"] == s]
        if not rows:
            continue
        med = {k: statistics.median(r[k] for r in rows)
               for k in ("cpu_s", "sys_s", "minor_faults", "peak_above_start_mb")}
        body.append([names[s], fnum(med["cpu_s"]), fnum(med["sys_s"]),
                     f"{med['minor_faults']:,.0f}", fnum(med["peak_above_start_mb"])])
    meta = doc.get("metadata", {})
    p = doc["paired_median_kept_over_default"]
    head = (f"WSDNet(7) random init, the zoo's eval path (folded, channels_last), "
            f"{doc['size']}², batch 1, {doc['threads']} threads; {doc['images_per_run']} "
            f"images per run, each run in its own process, {doc['rounds']} rounds in "
            f"alternating order; torch {meta.get('torch', '?')}, "
            f"{(meta.get('time') or '?')[:10]}. Per image after the first: medians of process "
            f"CPU time, its kernel part and minor page faults; peak RSS above the process "
            f"before the first image.")
    tail = (f"Kept / default, paired by round: {p['cpu']:.2f}x the CPU time, "
            f"{p['peak']:.2f}x the peak memory.")
    table = md_table(["host allocator", "CPU s / image", "kernel s / image",
                      "page faults / image", "peak above start (MB)"], body)
    return head + "\n\n" + table + "\n\n" + tail


def render_blocks(results_dir: str, plots_rel: str | None = None) -> dict[str, str]:
    """``bench:host-allocator`` from ``results_dir``'s :data:`RESULTS_FILE`."""
    return {"host-allocator": host_allocator_block(load_json(results_dir, RESULTS_FILE))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.host_allocator",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--one", choices=SETTINGS, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=2448)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=os.path.join(RESULTS_DIR, RESULTS_FILE))
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.size, args.images)))
        return 0
    load = os.getloadavg()
    result = run(args.size, args.images, args.rounds)
    meta = metadata("cpu")
    meta.update({"loadavg_start": load, "loadavg_end": os.getloadavg()})
    write_json(args.json, {"schema": "uhrops-bench-host-allocator/1", "metadata": meta,
                           **result})
    print(host_allocator_block({"metadata": meta, **result}))
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
