"""The one prepared GPU call: ``python -m benchmarks.gpu_check [--budget 540] [--out FILE]``.

A GPU is lent to a task rarely and for minutes (one H100 or H200, about 15 minutes in all,
at most 10 a command), on a machine with python3 3.12, torch 2.11 and Triton 3.6 and nothing
installable from a registry. Everything to learn from one loan is in one command, ordered by
value, each stage bounded in time (Triton's compilation included), so that the whole run fits
in 9 minutes; ``--plan`` prints that command and the folder to copy with it:

1. ``preflight`` (<= 45 s): versions (python, torch, CUDA, Triton, driver), device name, SM
   count and L2, every import the later stages need, and one tiny launch of every Triton
   kernel family forward and backward against the PyTorch path. Any failure ends the whole
   check at once with one line naming what is missing and the fix.
2. ``cuda-tests``: the CUDA tests of ``tests/uhrops`` (every kernel against the PyTorch path,
   forward and backward; the wavelet tests also against PyWavelets) with
   ``UHROPS_STRICT_KERNELS=1``; ran/passed/failed/skipped and the skip reasons are recorded.
3. ``memcheck``: a small selection of launches (every kernel at least once with a vector
   width above 1, odd widths, non-zero storage offsets, channels_last, 5000 x 4999) under
   ``compute-sanitizer --tool memcheck``; any report fails the stage.
4. ``ops``: ``benchmarks.ops --device cuda`` (UHR sizes, GB/s, % of the copy bandwidth, the
   anchors ptwt, pytorch_wavelets, kornia and MONAI from the travelling wheels).
5. ``models``: WSDNet and FCtL at 2448^2 (batch-1 protocol).
6. ``fps-test``: WSDNet under ISDNet's ``fps_test`` protocol (1958^2, fp32, 100 + 300 calls).
7. ``report``: regenerates the README tables from the results.

Each stage runs as a subprocess with its own time limit; a stage cut short keeps what it
finished (the benchmarks merge section by section). After every stage the whole record
(versions, per-stage exit code, duration, counts, output tail) is written to ``--out``.

``--dry-run`` runs every stage on the CPU at toy sizes into a temporary folder (nothing
committed changes); ``--like-device`` adds what the GPU machine lacks: PyWavelets, ptwt,
pytorch_wavelets, kornia, MONAI and rasterio are made unimportable in every stage
(tools/import_blocker.py), so a stage that would break there for a missing package breaks
here first. CI runs ``--dry-run --like-device``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELS = ".gpuwheels"  # benchmarks/gpu_wheels.py fills it; the device command installs it
PREFLIGHT_S = 45.0
# Imports the stages need that the GPU machine has, and those that travel as wheels.
ON_DEVICE = ("torch", "triton", "numpy", "pytest", "hypothesis", "cv2", "PIL", "yaml")
FROM_WHEELS = ("pywt", "ptwt", "pytorch_wavelets", "kornia", "monai")


@dataclass
class Stage:
    name: str
    argv: list[str]
    share: float  # fraction of the budget this stage may use
    env: dict[str, str] = field(default_factory=dict)
    ok_codes: tuple[int, ...] = (0,)
    cap_s: float | None = None  # hard cap (the preflight's 45 s)


def stages(dry_run: bool, out_dir: str) -> list[Stage]:
    """The stages, in the order they run. ``out_dir``: where a dry run writes everything and
    where the CUDA tests' JUnit report goes."""
    py = sys.executable
    strict = {"UHROPS_STRICT_KERNELS": "1", "TRITON_INTERPRET": "0"}
    me = [py, "-m", "benchmarks.gpu_check"]
    junit = os.path.join(out_dir, "cuda-tests.xml")
    if dry_run:
        results = os.path.join(out_dir, "cpu-dry-run.json")
        readme = os.path.join(out_dir, "README.md")
        interp = {"TRITON_INTERPRET": "1"}
        return [
            # No 45 s cap here: the interpreter on a shared CPU is what is slow, not the check.
            Stage("preflight", me + ["--preflight", "--device", "cpu"], 0.1, env=interp),
            # Collecting proves the selection and the test modules import; exit 5 = none
            # selected (no CUDA here), which is what a CPU machine should see.
            Stage("cuda-tests", [py, "-m", "pytest", "-q", "--collect-only", "-k", "cuda",
                                 "tests/uhrops", "-p", "no:cacheprovider",
                                 f"--junitxml={junit}"], 0.15, ok_codes=(0, 5)),
            Stage("memcheck", me + ["--memcheck-cases", "--device", "cpu", "--toy"], 0.2,
                  env=interp),
            Stage("ops", [py, "-m", "benchmarks.ops", "--device", "cpu", "--quick", "--only",
                          "wavelet,tiling", "--json", results, "--threads", "1"], 0.2),
            Stage("models", [py, "-m", "benchmarks.models", "--device", "cpu", "--quick",
                             "--model", "wsdnet", "--variants", "fp32", "--no-accuracy",
                             "--json", results, "--threads", "1"], 0.15),
            Stage("fps-test", me + ["--fps-test", "--device", "cpu", "--size", "96",
                                    "--warmup", "1", "--repeats", "2", "--json", results], 0.1),
            Stage("report", [py, "-m", "benchmarks.report", "--readme", readme,
                             "--results-dir", out_dir, "--no-plots"], 0.1),
        ]
    memcheck = me + ["--memcheck-cases", "--device", "cuda"]
    sanitizer = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    return [
        Stage("preflight", me + ["--preflight", "--device", "cuda"], 0.06, env=strict,
              cap_s=PREFLIGHT_S),
        Stage("cuda-tests", [py, "-m", "pytest", "-q", "-k", "cuda", "tests/uhrops",
                             "-p", "no:cacheprovider", "-m", "not compile_matrix", "-rs",
                             f"--junitxml={junit}"], 0.30,
              env=strict | {"UHROPS_TEST_NO_INTERPRET": "1"}),
        Stage("memcheck", [sanitizer, "--tool", "memcheck", "--error-exitcode", "1",
                           "--print-limit", "20"] + memcheck, 0.16, env=strict),
        Stage("ops", [py, "-m", "benchmarks.ops", "--device", "cuda"], 0.22, env=strict),
        Stage("models", [py, "-m", "benchmarks.models", "--device", "cuda", "--size", "2448"],
              0.16, env=strict),
        Stage("fps-test", me + ["--fps-test", "--device", "cuda"], 0.07, env=strict),
        Stage("report", [py, "-m", "benchmarks.report"], 0.03),
    ]


def device_command(budget: float = 540.0) -> str:
    """The one command to run on the GPU machine, from the repository root (at most 2,000
    characters; ``$OUT`` is the folder whose files come back)."""
    return (
        "set -u; W=$(mktemp -d); "
        f"python3 -m pip install -q --no-index --no-deps --target \"$W\" {WHEELS}/*.whl "
        "|| { echo 'gpu_check: wheels did not install; run python -m benchmarks.gpu_wheels "
        f"here and carry {WHEELS}'; exit 3; }}; "
        f"PYTHONPATH=\"$W:$PWD\" timeout {int(budget) + 30} python3 -m benchmarks.gpu_check "
        f"--budget {int(budget)} --out \"$OUT/gpu-check.json\"; rc=$?; "
        "cp benchmarks/results/cuda-*.json benchmarks/results/*.png README.md \"$OUT/\" "
        "2>/dev/null; exit $rc"
    )


def plan_text(budget: float = 540.0) -> str:
    cmd = device_command(budget)
    return (f"Run on the GPU machine, from the repository root (carry the ignored folder "
            f"{WHEELS}/, filled here by `python -m benchmarks.gpu_wheels`), timeout "
            f"{int(budget) + 60} s:\n\n{cmd}\n\n({len(cmd)} characters; carry: {WHEELS})")


# --------------------------------------------------------------------------------------------
# Running the stages
# --------------------------------------------------------------------------------------------
def _junit_counts(path: str) -> dict[str, Any] | None:
    """ran / passed / failed / skipped and the skip reasons from pytest's JUnit report."""
    if not os.path.exists(path):
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"ran": 0, "passed": 0, "failed": 0, "skipped": 0}
    reasons: dict[str, int] = {}
    for suite in suites:
        for case in suite.iter("testcase"):
            counts["ran"] += 1
            skip = case.find("skipped")
            if skip is not None:
                counts["skipped"] += 1
                why = (skip.get("message") or "").strip()[:160]
                reasons[why] = reasons.get(why, 0) + 1
            elif case.find("failure") is not None or case.find("error") is not None:
                counts["failed"] += 1
            else:
                counts["passed"] += 1
    counts["skip_reasons"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
    return counts


def run_stage(stage: Stage, limit_s: float, env_extra: dict[str, str],
              junit: str) -> dict[str, Any]:
    env = {**os.environ, **env_extra, **stage.env}
    if stage.env.get("TRITON_INTERPRET") == "0":
        env.pop("TRITON_INTERPRET")
    start = time.perf_counter()
    print(f"\n=== {stage.name} (limit {limit_s:.0f} s): {' '.join(stage.argv[1:])}", flush=True)
    try:
        proc = subprocess.run(stage.argv, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=max(limit_s, 1.0))
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = 124
        text = exc.stdout or b""
        out = (text.decode(errors="replace") if isinstance(text, bytes) else text) + \
            "\n[stopped at the stage's time limit]"
    except FileNotFoundError as exc:
        rc, out = 127, f"{exc}"
    seconds = time.perf_counter() - start
    tail = out[-4000:]
    print(tail, flush=True)
    ok = rc in stage.ok_codes
    print(f"=== {stage.name}: {'ok' if ok else f'FAILED (exit {rc})'} in {seconds:.1f} s",
          flush=True)
    row: dict[str, Any] = {"stage": stage.name, "rc": rc, "ok": ok,
                           "seconds": round(seconds, 1), "limit_s": round(limit_s),
                           "tail": tail[-1500:]}
    if stage.name == "cuda-tests":
        row["tests"] = _junit_counts(junit)
    if stage.name == "memcheck":
        m = re.search(r"ERROR SUMMARY: (\d+) error", out)
        row["memcheck_errors"] = int(m.group(1)) if m else None
    if stage.name == "preflight":
        m = re.search(r"^PREFLIGHT-JSON (.*)$", out, re.M)
        if m:
            row["facts"] = json.loads(m.group(1))
        fail = re.search(r"^PREFLIGHT FAILED: (.*)$", out, re.M)
        row["reason"] = fail.group(1) if fail else (
            f"the preflight ran past its {limit_s:.0f} s: a Triton compile or launch hangs; "
            "run `python -m benchmarks.gpu_check --preflight` alone to see which family"
            if rc == 124 else None)
    return row


def _write(path: str | None, record: dict[str, Any]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# The stages that live here: preflight, memcheck cases, fps_test
# --------------------------------------------------------------------------------------------
def _facts(device: str) -> dict[str, Any]:
    import platform

    import torch

    facts: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                             "cuda": torch.version.cuda, "device": device}
    try:
        import triton

        facts["triton"] = triton.__version__
    except Exception as exc:  # reported as a missing import below
        facts["triton"] = f"unavailable: {type(exc).__name__}"
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        facts.update({"name": props.name, "sms": props.multi_processor_count,
                      "l2_bytes": getattr(props, "L2_cache_size", None),
                      "memory_bytes": props.total_memory,
                      "capability": f"{props.major}.{props.minor}"})
        try:
            facts["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            facts["driver"] = None
        facts["compute_sanitizer"] = shutil.which("compute-sanitizer") or (
            "/usr/local/cuda/bin/compute-sanitizer"
            if os.path.exists("/usr/local/cuda/bin/compute-sanitizer") else None)
    return facts


def _missing_imports(like_device_wheels: bool) -> list[str]:
    import importlib

    missing = []
    for name in ON_DEVICE + FROM_WHEELS:
        try:
            importlib.import_module(name)
        except Exception as exc:
            fix = (f"run `python -m benchmarks.gpu_wheels` here and carry {WHEELS}/ (the "
                   f"device command installs it)" if name in FROM_WHEELS else
                   "this machine's python3 lacks it; nothing installs from a registry there")
            if name in FROM_WHEELS and like_device_wheels:
                continue  # blocked on purpose in the device-like dry run: the wheels bring it
            missing.append(f"import {name} failed ({type(exc).__name__}): {fix}")
    return missing


def _family_launches(device: str) -> list[tuple[str, Any, Any]]:
    """(family, run(backend) -> (outputs, grads), tolerance) for one tiny call of every
    Triton kernel family, forward and backward."""
    import torch

    import uhrops

    def call(fn, *shapes, dtype=torch.float32):
        def run(backend: str):
            torch.manual_seed(0)
            xs = [torch.randn(s, device=device, dtype=dtype, requires_grad=True)
                  for s in shapes]
            with uhrops.use_backend(backend):
                out = fn(*xs)
                flat = [o for o in (out if isinstance(out, (list, tuple)) else [out])]
                flat = [t for o in flat for t in (o if isinstance(o, (list, tuple)) else [o])]
                torch.manual_seed(1)
                grads = [torch.randn_like(o) for o in flat]
                torch.autograd.backward(flat, grads)
            return [o.detach() for o in flat], [x.grad for x in xs]
        return run

    grid = uhrops.PatchGrid.from_stride((40, 48), (16, 24), (12, 12))
    # On the CPU (the dry run) the interpreter runs each program in Python: a smaller pyramid.
    pyr = (1, 1, 13, 18) if device == "cpu" else (1, 2, 37, 50)
    return [
        ("wavelet", call(lambda x: uhrops.haar_waverec2(*uhrops.haar_wavedec2(x, 2)),
                         (1, 2, 32, 40)), 1e-4),
        ("wavelet-packet", call(lambda x: uhrops.haar_packet2d(x, 2), (1, 2, 16, 24)), 1e-4),
        ("pyramid", call(lambda x: uhrops.laplacian_pyramid(x, 2), pyr), 1e-4),
        ("attention", call(lambda q, k, v: uhrops.context_attention(q, k, v),
                           (1, 16, 5, 7), (1, 16, 6, 4), (1, 16, 6, 4)), 2e-3),
        ("tiling", call(lambda x: uhrops.merge_patches(uhrops.extract_patches(x, grid), grid,
                                                       weight="gaussian"), (1, 2, 40, 48)),
         1e-4),
    ]


def preflight(device: str, like_device: bool) -> int:
    """Versions, imports and one tiny launch per kernel family; prints one PREFLIGHT line."""
    start = time.perf_counter()
    facts = _facts(device)
    problems = _missing_imports(like_device)
    if device == "cuda" and not facts.get("compute_sanitizer"):
        problems.append("compute-sanitizer not found (memcheck stage): put CUDA's bin on PATH")
    kernels: dict[str, Any] = {}
    if not problems:
        import torch

        for family, run, tol in _family_launches(device):
            t0 = time.perf_counter()
            try:
                got, got_g = run("triton")
                ref, ref_g = run("torch")
                err = max(float((a.double() - b.double()).abs().max())
                          for a, b in zip(got + got_g, ref + ref_g))
                scale = max(float(b.double().abs().max()) for b in ref + ref_g) or 1.0
                ok = err <= tol * max(1.0, scale)
                kernels[family] = {"ok": ok, "max_abs_err": err,
                                   "seconds": round(time.perf_counter() - t0, 2)}
                if not ok:
                    problems.append(f"{family}: Triton differs from PyTorch by {err:.3g} "
                                    f"(tolerance {tol:g}): a kernel bug on this GPU; see the "
                                    "cuda-tests stage by running it with --only cuda-tests")
            except Exception as exc:
                kernels[family] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
                problems.append(f"{family}: the Triton kernel failed ({type(exc).__name__}: "
                                f"{str(exc)[:160]}); fix the kernel or the Triton version "
                                f"(setup.py: triton>=3.6,<3.10)")
        if device == "cuda":
            torch.cuda.synchronize()
    facts["kernels"] = kernels
    facts["seconds"] = round(time.perf_counter() - start, 1)
    print("PREFLIGHT-JSON " + json.dumps(facts), flush=True)
    if problems:
        print("PREFLIGHT FAILED: " + problems[0] + (f" (+{len(problems) - 1} more: "
              + "; ".join(problems[1:3]) + ")" if len(problems) > 1 else ""), flush=True)
        return 2
    print(f"preflight ok in {facts['seconds']} s: {facts}", flush=True)
    return 0


def memcheck_selection(device: str, toy: bool) -> dict[str, Any]:
    """The launches memcheck watches, by name: every kernel with a vector width above 1
    (aligned sizes), odd widths, non-zero storage offsets, channels_last and 5000 x 4999
    (forward and backward, from dense gradients)."""
    import torch

    import uhrops

    big = (34, 33) if toy else (5000, 4999)
    # toy: the interpreter runs every program on the CPU, so the same cases at a few tiles
    aligned_wave, aligned_pyr, fctl_c, fctl_hw = (
        ((1, 1, 32, 64), (1, 1, 16, 64), 16, (9, 9)) if toy else
        ((1, 3, 64, 128), (1, 3, 96, 128), 64, (23, 23)))
    odd_pyr, cl_pyr, cl_pyr_out = ((1, 1, 13, 19), (1, 2, 5, 7), (9, 13)) if toy else \
        ((2, 3, 37, 51), (1, 3, 19, 25), (37, 50))

    def img(shape, cl=False, offset=0):
        flat = torch.randn(offset + int(torch.tensor(shape).prod()), device=device)
        x = flat[offset:].view(shape)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.requires_grad_(True)

    def back(out):
        flat = out if isinstance(out, (list, tuple)) else [out]
        flat = [t for o in flat for t in (o if isinstance(o, (list, tuple)) else [o])]
        torch.autograd.backward(flat, [torch.randn_like(o) for o in flat])

    grid = uhrops.PatchGrid.from_stride((64, 96), (32, 48), (16, 24))  # VEC 4 (aligned)
    odd_grid = uhrops.PatchGrid.from_stride((37, 45), (16, 15), (7, 10))
    cases = {
        "wavelet/aligned": lambda: back(uhrops.haar_waverec2(
            *uhrops.haar_wavedec2(img(aligned_wave), 3))),
        "wavelet/odd+offset": lambda: back(uhrops.haar_wavedec2(
            img((1, 2, 37, 45), offset=3), 2, pad_mode="symmetric")),
        "wavelet/channels_last": lambda: back(uhrops.haar_dwt2d(img((1, 3, 32, 48), cl=True))),
        "wavelet/packet": lambda: back(uhrops.haar_ipacket2d(uhrops.haar_packet2d(
            img((1, 2, 32, 64)), 2))),
        "pyramid/aligned": lambda: back(uhrops.laplacian_pyramid(img(aligned_pyr),
                                                                 1 if toy else 3)),
        "pyramid/odd+offset": lambda: back(uhrops.pyr_down(img(odd_pyr, offset=5))),
        "pyramid/channels_last": lambda: back(uhrops.pyr_up(img(cl_pyr, cl=True),
                                                            size=cl_pyr_out)),
        "attention/fctl": lambda: back(uhrops.context_attention(
            img((1, fctl_c, *fctl_hw)), img((1, fctl_c, *fctl_hw)), img((1, fctl_c, *fctl_hw)))),
        "attention/odd+cl": lambda: back(uhrops.context_attention(
            img((1, 16, 5, 3), cl=True), img((1, 16, 7, 2)), img((1, 16, 7, 2), offset=1))),
        "tiling/aligned": lambda: back(uhrops.merge_patches(
            uhrops.extract_patches(img((1, 2, 64, 96)), grid), grid, weight="gaussian")),
        "tiling/odd+offset+cl": lambda: back(uhrops.merge_patches(uhrops.extract_patches(
            img((1, 3, 37, 45), cl=True, offset=2), odd_grid), odd_grid)),
        f"pyramid/{big[0]}x{big[1]}": lambda: back(uhrops.gaussian_pyramid(img((1, 1, *big)),
                                                                           2)),
        f"wavelet/{big[0]}x{big[1]}": lambda: back(uhrops.haar_dwt2d(img((1, 1, *big)),
                                                                     pad_mode="symmetric")),
    }
    return cases


def memcheck_cases(device: str, toy: bool) -> int:
    """Run :func:`memcheck_selection` with the Triton backend: under compute-sanitizer on the
    GPU; on the CPU (dry run) through the interpreter at toy sizes."""
    import torch

    import uhrops

    torch.manual_seed(0)
    failed = 0
    with uhrops.use_backend("triton"):
        for name, run in memcheck_selection(device, toy).items():
            t0 = time.perf_counter()
            try:
                run()
                if device == "cuda":
                    torch.cuda.synchronize()
                print(f"memcheck case {name}: ran in {time.perf_counter() - t0:.1f} s",
                      flush=True)
            except Exception as exc:
                failed += 1
                print(f"memcheck case {name}: FAILED {type(exc).__name__}: {exc}"[:400],
                      flush=True)
    return 1 if failed else 0


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


def stage_limits(selected: list[Stage], budget: float, used: float, i: int) -> float:
    """Seconds stage ``i`` may use: its share of what is left, plus what earlier stages left
    unused, minus a 10 s floor kept for each later stage, within its cap."""
    stage, left = selected[i], budget - used
    later = sum(s.share for s in selected[i + 1:])
    limit = max(10.0, min(left - 10.0 * len(selected[i + 1:]),
                          left * stage.share / (stage.share + later)
                          if stage.share + later else left))
    return min(limit, stage.cap_s) if stage.cap_s else limit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=540.0,
                   help="seconds for all stages together (default 540 = 9 minutes)")
    p.add_argument("--out", default=None, help="write the whole record (JSON) here, after "
                   "every stage")
    p.add_argument("--plan", action="store_true",
                   help="print the one device command and the folder to carry, and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="every stage on the CPU at toy sizes, into a temporary folder")
    p.add_argument("--like-device", action="store_true",
                   help="with --dry-run: the packages the GPU machine lacks are unimportable")
    p.add_argument("--only", default=None, help="comma-separated stage names")
    p.add_argument("--keep", default=None, help="dry run: keep its output folder here")
    # The stages that run here (as subprocesses of the orchestrator).
    p.add_argument("--preflight", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memcheck-cases", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--toy", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fps-test", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=2448)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.plan:
        print(plan_text(args.budget))
        return 0
    if args.preflight:
        return preflight(args.device, os.environ.get("UHROPS_LIKE_DEVICE") == "1")
    if args.memcheck_cases:
        return memcheck_cases(args.device, args.toy)
    if args.fps_test:
        return fps_test(args.device, args.size, args.warmup, args.repeats, args.json)
    if args.like_device and not args.dry_run:
        p.error("--like-device goes with --dry-run (on the GPU machine the wheels are there)")

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
    env_extra: dict[str, str] = {}
    if args.like_device:
        sys.path.insert(0, REPO)
        from tools.import_blocker import ABSENT_ON_DEVICE, blocker_env

        blocked = blocker_env(ABSENT_ON_DEVICE, folder=tempfile.mkdtemp(dir=out_dir))
        env_extra = {"PYTHONPATH": blocked["PYTHONPATH"], "UHROPS_LIKE_DEVICE": "1"}
    record: dict[str, Any] = {"dry_run": args.dry_run, "like_device": args.like_device,
                              "budget_s": args.budget, "stages": [],
                              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    start = time.perf_counter()
    for i, stage in enumerate(selected):
        limit = stage_limits(selected, args.budget, time.perf_counter() - start, i)
        row = run_stage(stage, limit, env_extra, os.path.join(out_dir, "cuda-tests.xml"))
        record["stages"].append(row)
        record["seconds"] = round(time.perf_counter() - start, 1)
        _write(args.out, record)
        if stage.name == "preflight" and not row["ok"]:
            print(f"\ngpu_check stopped after the preflight: "
                  f"{row.get('reason') or row['tail'][-300:]}")
            return 2
    results = record["stages"]
    failed = [r["stage"] for r in results if not r["ok"]]
    total = time.perf_counter() - start
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
