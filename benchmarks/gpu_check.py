"""The one prepared GPU call: ``python -m benchmarks.gpu_check [--budget 480] [--dry-run]``.

A GPU is lent to a task rarely and for minutes, so everything to learn from one is in one
command, ordered by value and each stage bounded in time, so that the whole run fits in about
8 minutes on one H100/H200 including Triton's compilation:

1. ``cuda-tests``: the CUDA-parametrised tests of ``tests/uhrops`` (every Triton kernel
   against the PyTorch path, forward and backward, fp32 and bf16, every family) with
   ``UHROPS_STRICT_KERNELS=1`` (a kernel that fails to compile or launch is an error, not a
   fallback) and the interpreter off.
2. ``ops``: ``benchmarks.ops --device cuda`` (UHR sizes, GB/s and % of the device copy
   bandwidth measured in the same run, attention against every SDPA backend that accepts
   the shape), one section at a time so a stage cut short keeps what finished.
3. ``models``: ``benchmarks.models --device cuda`` for WSDNet and FCtL at 2448^2 (our batch-1
   protocol; allocator peak and device memory in use).
4. ``fps-test``: WSDNet under ISDNet's ``fps_test`` protocol: input 0.8 x 2448 (1958^2),
   fp32, 100 warm-up then 300 timed calls, FPS = 300 / total seconds.
5. ``report``: regenerates the README tables from the results.

Every stage runs as a subprocess with its own time limit; their exit codes, durations and
output tails are merged into ``benchmarks/results/cuda-<device>.json`` as section
``gpu_check``. ``--dry-run`` runs the same stages on the CPU at toy sizes into a temporary
folder (nothing committed changes), so the command cannot rot between GPU loans; CI runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Stage:
    name: str
    argv: list[str]
    share: float  # fraction of the budget this stage may use
    env: dict[str, str] = field(default_factory=dict)
    ok_codes: tuple[int, ...] = (0,)


def stages(dry_run: bool, out_dir: str) -> list[Stage]:
    """The stages, in the order they run. ``out_dir``: where a dry run writes everything."""
    py = sys.executable
    strict = {"UHROPS_STRICT_KERNELS": "1", "TRITON_INTERPRET": "0"}
    if dry_run:
        results = os.path.join(out_dir, "cpu-dry-run.json")
        readme = os.path.join(out_dir, "README.md")
        return [
            # Collecting proves the selection and the test modules import; exit 5 = none
            # selected (no CUDA here), which is what a CPU machine should see.
            Stage("cuda-tests", [py, "-m", "pytest", "-q", "--collect-only", "-k", "cuda",
                                 "tests/uhrops", "-p", "no:cacheprovider"], 0.2,
                  ok_codes=(0, 5)),
            Stage("ops", [py, "-m", "benchmarks.ops", "--device", "cpu", "--quick", "--only",
                          "wavelet,tiling", "--json", results, "--threads", "1"], 0.3),
            Stage("models", [py, "-m", "benchmarks.models", "--device", "cpu", "--quick",
                             "--model", "wsdnet", "--variants", "fp32", "--no-accuracy",
                             "--json", results, "--threads", "1"], 0.3),
            Stage("fps-test", [py, "-m", "benchmarks.gpu_check", "--fps-test", "--device",
                               "cpu", "--size", "96", "--warmup", "1", "--repeats", "2",
                               "--json", results], 0.1),
            Stage("report", [py, "-m", "benchmarks.report", "--readme", readme,
                             "--results-dir", out_dir, "--no-plots"], 0.1),
        ]
    return [
        Stage("cuda-tests", [py, "-m", "pytest", "-q", "-x", "-k", "cuda", "tests/uhrops",
                             "-p", "no:cacheprovider", "-m", "not compile_matrix"], 0.3,
              env=strict | {"UHROPS_TEST_NO_INTERPRET": "1"}),
        Stage("ops", [py, "-m", "benchmarks.ops", "--device", "cuda"], 0.3, env=strict),
        Stage("models", [py, "-m", "benchmarks.models", "--device", "cuda", "--size", "2448"],
              0.25, env=strict),
        Stage("fps-test", [py, "-m", "benchmarks.gpu_check", "--fps-test", "--device", "cuda"],
              0.1, env=strict),
        Stage("report", [py, "-m", "benchmarks.report"], 0.05),
    ]


def run_stage(stage: Stage, limit_s: float) -> dict[str, Any]:
    env = {**os.environ, **stage.env}
    start = time.perf_counter()
    print(f"\n=== {stage.name} (limit {limit_s:.0f} s): {' '.join(stage.argv[1:])}", flush=True)
    try:
        proc = subprocess.run(stage.argv, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=max(limit_s, 1.0))
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = 124
        out = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes)
               else (exc.stdout or "")) + "\n[stopped at the stage's time limit]"
    seconds = time.perf_counter() - start
    tail = out[-4000:]
    print(tail, flush=True)
    ok = rc in stage.ok_codes
    print(f"=== {stage.name}: {'ok' if ok else f'FAILED (exit {rc})'} in {seconds:.1f} s",
          flush=True)
    return {"stage": stage.name, "rc": rc, "ok": ok, "seconds": round(seconds, 1),
            "limit_s": round(limit_s), "tail": tail[-1500:]}


def fps_test(device: str, size: int, warmup: int, repeats: int, json_path: str | None) -> int:
    """ISDNet's fps_test protocol for WSDNet: random input of 0.8 x size, fp32, ``warmup``
    calls, then ``repeats`` timed calls; FPS = repeats / total time of the timed calls."""
    import torch

    from benchmarks.common import machine_info, merge_section, metadata, results_path
    from benchmarks.models import build_model

    side = int(round(0.8 * size))
    model, desc = build_model("wsdnet", 2448 if size >= 1000 else size)
    model = model.to(device)
    x = torch.randn(1, 3, side, side, device=device)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.cuda.reset_peak_memory_stats()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        sync()
        total = time.perf_counter() - start
    row = {"case": f"wsdnet-{size}-fps_test", "impl": "uhrops", "protocol": "isdnet-fps_test",
           "input": [1, 3, side, side], "warmup": warmup, "repeats": repeats,
           "total_s": total, "fps": repeats / total, "model": desc}
    if device.startswith("cuda"):
        row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        free, whole = torch.cuda.mem_get_info()
        row["device_used_mb"] = (whole - free) / 2**20
    print(f"fps_test: {row['fps']:.2f} FPS ({repeats} calls in {total:.2f} s, input {side}^2)")
    path = results_path(device, json_path)
    merge_section(path, "models.fps_test", [row], metadata(device),
                  machine=machine_info(device))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=480.0,
                   help="seconds for all stages together (default 480)")
    p.add_argument("--dry-run", action="store_true",
                   help="every stage on the CPU at toy sizes, into a temporary folder")
    p.add_argument("--only", default=None, help="comma-separated stage names")
    p.add_argument("--keep", default=None, help="dry run: keep its output folder here")
    # The fps_test stage itself (run by the orchestrator as a subprocess).
    p.add_argument("--fps-test", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=2448)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.fps_test:
        return fps_test(args.device, args.size, args.warmup, args.repeats, args.json)

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device is visible; run with --dry-run to exercise the stages on the CPU")
    out_dir = args.keep or tempfile.mkdtemp(prefix="uhrops-gpu-check-")
    os.makedirs(out_dir, exist_ok=True)
    if args.dry_run:
        shutil.copy(os.path.join(REPO, "README.md"), os.path.join(out_dir, "README.md"))
    selected = stages(args.dry_run, out_dir)
    if args.only:
        wanted = {s.strip() for s in args.only.split(",")}
        unknown = wanted - {s.name for s in selected}
        if unknown:
            p.error(f"--only: unknown stage(s) {sorted(unknown)}; choose from "
                    f"{', '.join(s.name for s in selected)}")
        selected = [s for s in selected if s.name in wanted]
    start = time.perf_counter()
    results = []
    for i, stage in enumerate(selected):
        left = args.budget - (time.perf_counter() - start)
        later = sum(s.share for s in selected[i + 1:])
        # A stage may use its share, plus whatever earlier stages left unused, minus a floor
        # kept for the stages after it.
        limit = max(10.0, min(left - 10.0 * len(selected[i + 1:]),
                              left * stage.share / (stage.share + later)
                              if stage.share + later else left))
        results.append(run_stage(stage, limit))
    total = time.perf_counter() - start
    failed = [r["stage"] for r in results if not r["ok"]]
    print(f"\ngpu_check{' (dry run)' if args.dry_run else ''}: {len(results) - len(failed)}/"
          f"{len(results)} stages ok in {total:.0f} s" + (f"; failed: {failed}" if failed else ""))
    if not args.dry_run:
        from benchmarks.common import machine_info, merge_section, metadata, results_path

        merge_section(results_path("cuda"), "gpu_check", results, metadata("cuda"),
                      machine=machine_info("cuda"))
    elif not args.keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
