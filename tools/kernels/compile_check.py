"""Compile every Triton kernel specialisation uhrops launches, ahead of time, for real GPUs.

The Triton interpreter (how CI runs the kernels on a CPU) accepts programs the GPU compiler
refuses, so values checked there say nothing about whether a kernel builds for a GPU. This
module closes that gap without a GPU:

1. **Record.** Representative calls of every public op (forward and backward; float32,
   float16, bfloat16 and float64 where a kernel takes it; NCHW and channels_last; sizes on
   and off the block grid, 2448 and 5000-class images, 1 to 5 levels) run on CPU tensors
   under the default backend ("auto") while :func:`uhrops.kernels._launch.recording`
   records each launch instead of running it. The host code makes the choices it makes on a CUDA device (block
   sizes, warps), not the interpreter's.
2. **Specialise.** Each launch is bound exactly as ``JITFunction.run`` binds it on a GPU
   (Triton's own binder: argument dtypes, integer and pointer-alignment specialisation,
   constexprs, options), once per target architecture.
3. **Compile.** Each distinct specialisation goes through Triton's full pipeline down to
   ptxas and a cubin for ``GPUTarget("cuda", arch, 32)``. ptxas' ``-v`` report gives
   registers, spill bytes and stack; Triton's metadata gives shared memory; the PTX gives
   the MMA instructions and the vector width of every global load and store.

Run ``python -m tools.kernels.compile_check --arch 80,90,100`` for the full matrix (it writes
``benchmarks/results/kernels-sm<arch>.json``), or ``--suite quick`` for one representative
set per kernel (what the default test run compiles). The process must not have
``TRITON_INTERPRET=1`` set: under the interpreter ``triton.jit`` builds no compilable kernels.

Convention:
    Limits asserted (:func:`problems`): every specialisation compiles; grids within CUDA's
    limits; shared memory within the architecture's per-block opt-in limit (sm_80: 163 KiB,
    sm_90 and sm_100: 227 KiB); no spill bytes on sm_90 except where ``SPILL_BUDGET`` names
    a deliberate, documented trade (fp32 exact-product attention, at most 32 bytes); ``tl.dot`` lowered to tensor-core instructions (mma or
    wgmma) for float16/bfloat16 attention.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Iterable

import torch

from tools.kernels.ptx import compile_launch, describe, metadata, spec_key, specialise
from uhrops.kernels._launch import Launch, recording

# Shared memory a block may opt in to, per architecture (CUDA programming guide, compute
# capabilities table): 163 KiB on sm_80, 227 KiB on sm_90 and sm_100.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024,
                100: 227 * 1024, 120: 99 * 1024}

# Spill bytes (stores) allowed on sm_90 per (kernel, attention precision), where a spill is a
# deliberate, documented trade; everything else must not spill.
#
# fp32 attention with exact products (PREC "ieee", torch's default "highest" matmul
# precision) multiplies on the FMA units: ptxas holds these kernels to 128 registers and
# spills 8-32 bytes per thread (16 bytes of stack) at some channel counts. Eight block/warp
# configurations were compiled over every recorded shape (64x32/32x32/32x64 token blocks,
# 16/32-wide reduction tiles, 32-128-wide channel chunks, 4 and 8 warps); none was free of
# spills at every shape, and the best (the one in uhrops/kernels/attention.py) keeps each
# at 32 bytes or under. The 16-bit kernels (tensor cores) spill nothing.
SPILL_BUDGET: dict[tuple[str, str], int] = {
    ("_fwd_kernel", "ieee"): 32,
    ("_bwd_dkdv_kernel", "ieee"): 32,
    ("_bwd_dq_kernel", "ieee"): 32,
}


def spill_budget(spec: dict[str, Any]) -> int:
    """Spill bytes a compiled specialisation may store on sm_90 (0 unless listed above)."""
    return SPILL_BUDGET.get((spec["kernel"], str(spec["constexprs"].get("PREC", ""))), 0)

# Kernels whose float16/bfloat16 specialisations must use tensor cores.
MMA_KERNELS = ("_fwd_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel")

FAMILIES = {
    "uhrops.kernels.wavelet": "wavelet",
    "uhrops.kernels.pyramid": "pyramid",
    "uhrops.kernels.attention": "attention",
    "uhrops.kernels.tiling": "tiling",
}


# --------------------------------------------------------------------------------------------
# Recording the launches of representative calls
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    name: str
    run: Callable[[], None]
    quick: bool = False  # part of the quick suite (the default test run)


def _image(shape, dtype, channels_last=False, grad=True):
    x = torch.randn(shape, dtype=torch.float32).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(grad)


def _backward(out) -> None:
    """Backward from dense random gradients, each in its output's dtype and memory format:
    what a loss in a training step hands the op. (A ``.sum().backward()`` hands it an expanded
    gradient with stride 0, which Triton specialises differently from the unit-stride
    gradients of real training: the compile check then compiled, and reported the registers
    of, kernels no user runs; see :func:`fctl_attention_cases`.)"""
    outs = out if isinstance(out, (list, tuple)) else [out]
    flat = []
    for o in outs:
        flat.extend(o if isinstance(o, (list, tuple)) else [o])
    flat = [o for o in flat if o.requires_grad]
    torch.autograd.backward(flat, [torch.randn_like(o) for o in flat])


def _wavelet_cases() -> list[Case]:
    import uhrops

    cases = []
    dtypes = [torch.float32, torch.float16, torch.bfloat16]
    for dt in dtypes:
        name = str(dt).replace("torch.", "")
        quick = dt in (torch.float32, torch.bfloat16)
        for cl in (False, True):
            fmt = "cl" if cl else "nchw"
            cases.append(Case(f"haar_dwt2d/{name}/{fmt}/64x96", lambda dt=dt, cl=cl: _backward(
                uhrops.haar_dwt2d(_image((2, 3, 64, 96), dt, cl))), quick=quick and not cl))
            cases.append(Case(f"haar_idwt2d/{name}/{fmt}/50x30", lambda dt=dt, cl=cl: _backward(
                uhrops.haar_idwt2d(_image((1, 2, 4, 25, 15), dt)))))
        for mode in ("zero", "symmetric", "reflect", "periodic"):
            cases.append(Case(f"haar_dwt2d/{name}/{mode}/33x47", lambda dt=dt, m=mode: _backward(
                uhrops.haar_dwt2d(_image((1, 3, 33, 47), dt), pad_mode=m)),
                quick=quick and mode == "symmetric"))
        for levels in (1, 2, 3, 4, 5):
            for size in ((2448, 2448), (96, 160), (40, 72)):
                if levels >= 4 and size == (40, 72) or (size == (2448, 2448) and dt != torch.float32
                                                         and levels not in (1, 4)):
                    continue
                b = 1 if size[0] > 1000 else 2
                label = f"{name}/L{levels}/{size[0]}x{size[1]}"
                divides = size[0] % (1 << levels) == 0 and size[1] % (1 << levels) == 0
                pad = None if divides else "symmetric"
                cases.append(Case(f"haar_wavedec2/{label}", lambda dt=dt, L=levels, s=size, b=b,
                                  pad=pad: _backward(uhrops.haar_waverec2(*uhrops.haar_wavedec2(
                                      _image((b, 3, *s), dt), L, pad_mode=pad))),
                                  quick=quick and size == (96, 160) and levels in (1, 2, 4)))
                if divides:
                    cases.append(Case(f"haar_packet2d/{label}", lambda dt=dt, L=levels, s=size, b=b:
                                      _backward(uhrops.haar_ipacket2d(uhrops.haar_packet2d(
                                          _image((b, 3, *s), dt), L))),
                                      quick=quick and size == (96, 160) and levels in (1, 2, 4)))
        cases.append(Case(f"haar_wavedec2/{name}/L3/odd-101x67", lambda dt=dt: _backward(
            uhrops.haar_waverec2(*uhrops.haar_wavedec2(_image((1, 2, 101, 67), dt), 3,
                                                       pad_mode="reflect")))))
        cases.append(Case(f"haar_wavedec2/{name}/L2/cl-5000x5000", lambda dt=dt: _backward(
            uhrops.haar_wavedec2(_image((1, 3, 5000, 5000), dt, True), 2))))
    return cases


def _pyramid_cases() -> list[Case]:
    import uhrops

    cases = []
    for dt in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        name = str(dt).replace("torch.", "")
        quick = dt in (torch.float32, torch.bfloat16, torch.float64)
        for cl in (False, True):
            fmt = "cl" if cl else "nchw"
            cases.append(Case(f"pyr_down/{name}/{fmt}/37x50", lambda dt=dt, cl=cl: _backward(
                uhrops.pyr_down(_image((2, 3, 37, 50), dt, cl))), quick=not cl))
            cases.append(Case(f"pyr_up/{name}/{fmt}/19x25->37x50", lambda dt=dt, cl=cl: _backward(
                uhrops.pyr_up(_image((2, 3, 19, 25), dt, cl), size=(37, 50))),
                quick=quick and not cl))
        cases.append(Case(f"laplacian_pyramid/{name}/2448/L4", lambda dt=dt: _backward(
            uhrops.laplacian_reconstruct(uhrops.laplacian_pyramid(
                _image((1, 3, 2448, 2448), dt), 4))), quick=quick))
        cases.append(Case(f"gaussian_pyramid/{name}/5000x4999/L3", lambda dt=dt: _backward(
            uhrops.gaussian_pyramid(_image((1, 1, 5000, 4999), dt), 3))))
    return cases


def _attention_cases() -> list[Case]:
    import uhrops

    cases = []
    shapes = [  # (C, (Hq, Wq), (Hk, Wk))
        (512, (23, 23), (23, 23)),  # FCtL's pool5 at 508 px patches
        (256, (64, 64), (32, 32)),
        (64, (37, 41), (29, 31)),  # N % 16 != 0, Nq != Nk
        (32, (128, 128), (128, 128)),  # N = 16384
        (16, (5, 3), (7, 2)),
        (384, (12, 12), (12, 12)),
    ]
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        name = str(dt).replace("torch.", "")
        for c, q_hw, k_hw in shapes:
            for cl in (False, True):
                fmt = "cl" if cl else "nchw"
                quick = (dt != torch.float16 and not cl and c in (512, 256, 64, 16))
                cases.append(Case(
                    f"context_attention/{name}/{fmt}/C{c}/{q_hw[0]}x{q_hw[1]}<-{k_hw[0]}x{k_hw[1]}",
                    lambda dt=dt, c=c, q_hw=q_hw, k_hw=k_hw, cl=cl: _backward(
                        uhrops.context_attention(_image((1, c, *q_hw), dt, cl),
                                                 _image((1, c, *k_hw), dt, cl),
                                                 _image((1, c, *k_hw), dt, cl),
                                                 scale=c ** -0.5, center=c == 512)),
                    quick=quick))
        cases.append(Case(f"context_attention/{name}/Cq64-Cv256/16x16", lambda dt=dt: _backward(
            uhrops.context_attention(_image((2, 64, 16, 16), dt), _image((2, 64, 16, 16), dt),
                                     _image((2, 256, 16, 16), dt)))))
    # float32 under torch.set_float32_matmul_precision("high"): TF32 tensor cores.
    for c, q_hw, k_hw in shapes:
        cases.append(Case(
            f"context_attention/float32-tf32/nchw/C{c}/{q_hw[0]}x{q_hw[1]}<-{k_hw[0]}x{k_hw[1]}",
            lambda c=c, q_hw=q_hw, k_hw=k_hw: _with_matmul_precision("high", lambda: _backward(
                uhrops.context_attention(_image((1, c, *q_hw), torch.float32),
                                         _image((1, c, *k_hw), torch.float32),
                                         _image((1, c, *k_hw), torch.float32),
                                         scale=c ** -0.5))),
            quick=c in (512, 64)))
    return cases + fctl_attention_cases()


# FCtL's correlation (uhrops.attention.LocalContextCorrelation in zoo.fctl): pool5 of a
# 508 px patch is 23 x 23; the contexts are resized to the patch, so their pool5 is 23 x 23
# too, and a context kept at twice the patch's side gives 46 x 46. Widths: every power of two
# from 16 to 512 (key_channels of the block) and 384; batch 1 (inference, the README's
# protocol) and 8 (training).
FCTL_WIDTHS = (16, 32, 64, 128, 256, 384, 512)
FCTL_MAPS = ((23, 23), (23, 23))
FCTL_WIDE_CONTEXT = ((23, 23), (46, 46))
# (label, dtype, torch float32 matmul precision): every dtype and precision a kernel takes.
PRECISIONS = (("float32", torch.float32, "highest"), ("float32-tf32", torch.float32, "high"),
              ("float16", torch.float16, "highest"), ("bfloat16", torch.bfloat16, "highest"))


def fctl_attention_call(c: int, q_hw: tuple[int, int], k_hw: tuple[int, int], batch: int,
                        dtype: torch.dtype, precision: str) -> None:
    """One training step's attention call as FCtL makes it: dense q, k, v (the outputs of
    1x1 convolutions), ``scale=1``, backward from a dense gradient."""
    import uhrops

    def run() -> None:
        q = _image((batch, c, *q_hw), dtype)
        k, v = _image((batch, c, *k_hw), dtype), _image((batch, c, *k_hw), dtype)
        _backward(uhrops.context_attention(q, k, v, scale=1.0))

    _with_matmul_precision(precision, run)


def fctl_attention_cases() -> list[Case]:
    """Every width, batch, dtype and precision of FCtL's correlation (the full suite); the
    quick suite keeps C = 256 and 512 at batch 1 in exact fp32 and bfloat16 (the dQ pass at
    C = 256 and the exact-fp32 backward at C = 512 are the kernels nearest their registers)."""
    out = []
    for label, dt, prec in PRECISIONS:
        for c in FCTL_WIDTHS:
            for batch in (1, 8):
                quick = c in (256, 512) and batch == 1 and label in ("float32", "bfloat16")
                out.append(Case(f"fctl_attention/{label}/C{c}/B{batch}/23x23<-23x23",
                                lambda c=c, b=batch, dt=dt, p=prec: fctl_attention_call(
                                    c, *FCTL_MAPS, b, dt, p), quick=quick))
        out.append(Case(f"fctl_attention/{label}/C512/B1/23x23<-46x46",
                        lambda dt=dt, p=prec: fctl_attention_call(512, *FCTL_WIDE_CONTEXT, 1,
                                                                  dt, p)))
    return out


def _with_matmul_precision(precision: str, run: Callable[[], None]) -> None:
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        run()
    finally:
        torch.set_float32_matmul_precision(old)


def _tiling_cases() -> list[Case]:
    import uhrops

    cases = []
    grid_2448 = uhrops.PatchGrid.from_min_overlap((2448, 2448), (508, 508), min_overlap=50)
    grid_odd = uhrops.PatchGrid.from_stride((101, 77), (32, 24), (20, 17))
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        name = str(dt).replace("torch.", "")
        quick = dt in (torch.float32, torch.bfloat16)
        for cl in (False, True):
            fmt = "cl" if cl else "nchw"
            cases.append(Case(f"extract_patches/{name}/{fmt}/2448-508", lambda dt=dt, cl=cl:
                              _backward(uhrops.extract_patches(
                                  _image((1, 3, 2448, 2448), dt, cl), grid_2448)),
                              quick=quick and not cl))
        for reduction, weight in (("mean", None), ("sum", None), ("mean", "gaussian")):
            cases.append(Case(f"merge_patches/{name}/{reduction}-{weight}/2448-508",
                              lambda dt=dt, r=reduction, w=weight: _backward(
                                  uhrops.merge_patches(_image((36, 2, 508, 508), dt), grid_2448,
                                                       reduction=r, weight=w)),
                              quick=quick))
            cases.append(Case(f"merge_patches/{name}/{reduction}-{weight}/odd-101x77",
                              lambda dt=dt, r=reduction, w=weight: _backward(
                                  uhrops.merge_patches(
                                      _image((2 * len(grid_odd), 3, 32, 24), dt), grid_odd,
                                      reduction=r, weight=w))))
        for antialias in (True, False):
            cases.append(Case(f"extract_contexts/{name}/aa={antialias}/odd-101x77",
                              lambda dt=dt, a=antialias: _backward(uhrops.extract_contexts(
                                  _image((1, 3, 101, 77), dt), grid_odd, 2.0, antialias=a)),
                              quick=quick and antialias))
        cases.append(Case(f"sliding_window/{name}/2448-508", lambda dt=dt: _backward(
            uhrops.sliding_window(lambda p: p * 2, _image((1, 3, 2448, 2448), dt), grid_2448,
                                  batch_size=8))))
    # Shapes at CUDA's grid limits: B * C over 65535 planes (axis 1 before the fix).
    tiny = uhrops.PatchGrid.from_stride((4, 4), (2, 2), (2, 2))
    cases.append(Case("merge_patches/float32/B*C=70000", lambda: _backward(
        uhrops.merge_patches(_image((4, 70000, 2, 2), torch.float32), tiny)), quick=True))
    cases.append(Case("extract_patches/float32/B*C=70000", lambda: _backward(
        uhrops.extract_patches(_image((1, 70000, 4, 4), torch.float32), tiny)), quick=True))
    return cases


def cases(suite: str = "full", families: Iterable[str] | None = None,
          only: Iterable[str] | None = None) -> list[Case]:
    """The representative calls: ``suite`` "full" (every case) or "quick" (a subset that still
    launches every kernel at least once); ``only``: keep the cases whose name contains one of
    these strings."""
    makers = {"wavelet": _wavelet_cases, "pyramid": _pyramid_cases,
              "attention": _attention_cases, "tiling": _tiling_cases}
    wanted = list(makers) if families is None else list(families)
    out: list[Case] = []
    for fam in wanted:
        out.extend(c for c in makers[fam]() if suite == "full" or c.quick)
    if only:
        out = [c for c in out if any(part in c.name for part in only)]
    return out


def record(selected: list[Case]) -> list[Launch]:
    launches: list[Launch] = []
    torch.manual_seed(0)
    for case in selected:
        with recording(launches, case.name):
            case.run()
    return launches


def check(archs: list[int], suite: str = "full", families: Iterable[str] | None = None,
          log: Callable[[str], None] = lambda s: None,
          only: Iterable[str] | None = None) -> dict[str, Any]:
    """Record, specialise and compile; returns {"specialisations": [...], "launch_problems":
    [...]} with one entry per distinct (kernel, specialisation, arch)."""
    from uhrops.kernels._launch import grid_problem, kernel_name

    selected = cases(suite, families, only)
    launches = record(selected)
    log(f"{len(selected)} cases recorded {len(launches)} launches")
    specs: dict[str, dict[str, Any]] = {}
    launch_problems = []
    for launch in launches:
        name = kernel_name(launch.kernel)
        problem = grid_problem(launch.grid)
        if problem is not None:
            launch_problems.append({"kernel": name, "case": launch.case, "grid": launch.grid,
                                    "problem": problem})
        for arch in archs:
            src, options = specialise(launch, arch)
            key = spec_key(src, options, arch)
            if key in specs:
                specs[key]["cases"].append(launch.case)
                continue
            entry = {"kernel": name, "family": FAMILIES.get(launch.kernel.module, "?"),
                     "arch": arch, **describe(src, options), "cases": [launch.case],
                     "grid_example": list(launch.grid)}
            entry.update(compile_launch(src, options, arch))
            specs[key] = entry
            log(f"sm_{arch} {name} {entry['constexprs']} -> "
                + ("ok" if entry["ok"] else "FAILED: " + entry["error"][:160]))
    return {"specialisations": list(specs.values()), "launch_problems": launch_problems,
            "cases": [c.name for c in selected]}


def problems(result: dict[str, Any], spills: bool = True) -> list[str]:
    """Every violated limit, one line each (empty when all hold); ``spills=False`` leaves the
    sm_90 spill budget out (see ``--spills``)."""
    out = [f"{p['kernel']} ({p['case']}): {p['problem']}" for p in result["launch_problems"]]
    for rows in result.get("figures", {}).values():
        out.extend(f"sm_{r['arch']} {r['kernel']} figures ({r['name']}): does not compile: "
                   f"{r['error'][:300]}" for r in rows if not r["ok"])
    for s in result["specialisations"]:
        what = f"sm_{s['arch']} {s['kernel']} {s['constexprs']} warps={s['num_warps']}"
        if not s["ok"]:
            out.append(f"{what}: does not compile: {s['error'][:300]}")
            continue
        shared = s["shared_bytes"] + s["static_shared_bytes"]
        limit = SHARED_LIMIT.get(s["arch"])
        if limit is not None and shared > limit:
            out.append(f"{what}: {shared} bytes of shared memory, over sm_{s['arch']}'s {limit}")
        if spills and s["arch"] == 90 and s["spill_store_bytes"] > spill_budget(s):
            out.append(f"{what}: spills {s['spill_store_bytes']} bytes on sm_90 (budget "
                       f"{spill_budget(s)})")
        half = any(t in ("*fp16", "*bf16") for t in s["pointer_types"])
        if s["kernel"] in MMA_KERNELS and half and s["mma"] + s["wgmma"] + s["tcgen05_mma"] == 0:
            out.append(f"{what}: no tensor-core (mma/wgmma/tcgen05) instruction for a 16-bit "
                       "input")
    return out


def summary(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per kernel and arch: specialisations, compiled, max registers, max spill, max shared."""
    table: dict[str, dict[str, Any]] = {}
    for s in result["specialisations"]:
        row = table.setdefault(f"{s['kernel']}@sm_{s['arch']}", {
            "family": s["family"], "specialisations": 0, "compiled": 0, "max_registers": 0,
            "max_spill_store_bytes": 0, "max_shared_bytes": 0})
        row["specialisations"] += 1
        if s["ok"]:
            row["compiled"] += 1
            row["max_registers"] = max(row["max_registers"], s["registers"])
            row["max_spill_store_bytes"] = max(row["max_spill_store_bytes"],
                                               s["spill_store_bytes"])
            row["max_shared_bytes"] = max(row["max_shared_bytes"],
                                          s["shared_bytes"] + s["static_shared_bytes"])
    return dict(sorted(table.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.kernels.compile_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="80,90,100",
                        help="comma-separated compute capabilities (default 80,90,100)")
    parser.add_argument("--suite", choices=("full", "quick"), default="full")
    parser.add_argument("--family", action="append", choices=sorted(set(FAMILIES.values())),
                        help="only these op families (repeatable)")
    parser.add_argument("--case", action="append", metavar="TEXT",
                        help="only the cases whose name contains TEXT (repeatable; e.g. "
                             "fctl_attention/float32/C512); writes no results file unless "
                             "--results-dir is given")
    parser.add_argument("--spills", choices=("enforce", "report"), default="enforce",
                        help="report: spills over the sm_90 budget are printed but do not "
                             "fail (register allocation is judged under the pinned Triton; "
                             "CI's run under the lowest supported Triton checks that "
                             "everything compiles)")
    parser.add_argument("--json", help="write the whole result here")
    parser.add_argument("--results-dir", default=None,
                        help="write kernels-sm<arch>.json here (default benchmarks/results "
                             "for the full suite, nothing for quick)")
    parser.add_argument("--figures", action="store_true",
                        help="also compute the static per-element figures of the memory-bound "
                             "kernels (tools.kernels.static_figures) into a \"figures\" "
                             "section, per arch")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("TRITON_INTERPRET=1 is set: the interpreter builds no compilable kernels; "
                     "run this command without it")
    archs = [int(a) for a in args.arch.split(",") if a.strip()]
    start = time.perf_counter()
    result = check(archs, args.suite, args.family,
                   log=(lambda s: None) if args.quiet else (lambda s: print(s, flush=True)),
                   only=args.case)
    result["metadata"] = {**metadata(), "suite": args.suite, "archs": archs,
                          "seconds": round(time.perf_counter() - start, 1)}
    result["summary"] = summary(result)
    if args.figures:
        from tools.kernels import static_figures

        fams = [f for f in (args.family or ["pyramid", "wavelet", "tiling"]) if f != "attention"]
        rows = static_figures.compute(archs, fams) if fams else []
        result["figures"] = {str(a): [r for r in rows if r["arch"] == a] for a in archs}
    found = problems(result, spills=args.spills == "enforce")
    result["problems"] = found
    noted = [p for p in problems(result) if p not in found]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    results_dir = args.results_dir
    if results_dir is None and args.suite == "full" and not args.family and not args.case:  # "" writes nothing
        results_dir = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "results")
    if results_dir:
        for arch in archs:
            path = os.path.join(results_dir, f"kernels-sm{arch}.json")
            per_arch = {"metadata": result["metadata"] | {"arch": arch},
                        "summary": {k: v for k, v in result["summary"].items()
                                    if k.endswith(f"@sm_{arch}")},
                        "specialisations": [s for s in result["specialisations"]
                                            if s["arch"] == arch],
                        "problems": [p for p in found if p.startswith(f"sm_{arch} ")]}
            if "figures" in result:
                per_arch["figures"] = result["figures"][str(arch)]
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(per_arch, f, indent=1)
            os.replace(tmp, path)
    print(f"{len(result['specialisations'])} specialisations for sm_{','.join(map(str, archs))} "
          f"from {len(result['cases'])} cases in {result['metadata']['seconds']} s")
    for key, row in result["summary"].items():
        print(f"  {key:34s} {row['compiled']}/{row['specialisations']} compiled, "
              f"max {row['max_registers']} regs, spill {row['max_spill_store_bytes']} B, "
              f"shared {row['max_shared_bytes']} B")
    for line in found:
        print("PROBLEM:", line)
    for line in noted:
        print("NOTE (not enforced, --spills report):", line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
