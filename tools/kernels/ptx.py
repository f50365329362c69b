"""Shared helpers of the kernel build tools: specialise a recorded launch the way Triton does
on a GPU of a given architecture, compile it down to ptxas, and read its resource figures.

Used by :mod:`tools.kernels.compile_check` (every specialisation the host code launches) and
:mod:`tools.kernels.static_figures` (per-element figures of the memory-bound kernels). The
launches come from :func:`uhrops.kernels._launch.recording`.

Triton's internals differ between the versions we support (3.6 to 3.9, setup.py): options
that ``JITFunction.run`` adds before binding are read only where the running Triton has them
(:func:`run_options`), so the same binding happens under each.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import subprocess
import tempfile
import time
from typing import Any

import torch

from uhrops.kernels._launch import Launch


# --------------------------------------------------------------------------------------------
# 2. Specialising a launch the way Triton does on a GPU of the given architecture
# --------------------------------------------------------------------------------------------
_binders: dict[tuple[int, int], Any] = {}


def target(arch: int):
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", arch, 32)


# Options JITFunction.run copies from Triton's knobs into the launch's keyword arguments before
# binding, by the knob's (section, name). Each is added only where the running Triton has the
# knob: 3.6 has no fpsan_homomorphic_casts (3.9 does), and passing an option the backend does
# not know fails in ``_pack_args`` with "Keyword argument ... unrecognised".
RUN_KNOBS: tuple[tuple[str, str], ...] = (("compilation", "instrumentation_mode"),
                                          ("compilation", "fpsan_homomorphic_casts"))


def run_options(kernel: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """The extra options ``JITFunction.run`` adds before binding, under the running Triton."""
    from triton import knobs

    out = {"debug": meta.get("debug", kernel.debug) or knobs.runtime.debug}
    for section, name in RUN_KNOBS:
        group = getattr(knobs, section, None)
        if group is not None and hasattr(group, name):
            out[name] = getattr(group, name)
    return out


def specialise(launch: Launch, arch: int) -> tuple[Any, Any]:
    """(ASTSource, options) that ``launch`` would compile to on an sm_<arch> GPU."""
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    slot = (id(kernel), arch)
    if slot not in _binders:
        backend = make_backend(target(arch))
        _binders[slot] = (backend, create_function_from_signature(kernel.signature,
                                                                  kernel.params, backend))
    backend, binder = _binders[slot]
    kwargs = dict(launch.meta)
    kwargs.update(run_options(kernel, kwargs))
    bound_args, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args,
                                                              specialization, options)
    return ASTSource(kernel, signature, constexprs, attrs), options


# --------------------------------------------------------------------------------------------
# 3. Compiling and reading the resource figures
# --------------------------------------------------------------------------------------------
_PTXAS_FN = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SMEM = re.compile(r"(\d+) bytes smem")


def ptxas_report(ptx: str, arch: int, log: str | None) -> dict[str, int]:
    """Registers, spills and stack from ptxas -v: the log of Triton's own ptxas run when the
    compile ran it, else a second ptxas run on the same PTX with Triton's flags."""
    if not log or "Used" not in log:
        from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "k.ptx")
            with open(src, "w") as f:
                f.write(ptx)
            cmd = [get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
                   f"--gpu-name={sm_arch_from_capability(arch)}", src,
                   "-o", os.path.join(tmp, "k.o")]
            log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    fn = _PTXAS_FN.search(log)
    regs = _PTXAS_REGS.search(log)
    smem = _PTXAS_SMEM.search(log)
    return {"registers": int(regs.group(1)) if regs else -1,
            "stack_bytes": int(fn.group(1)) if fn else -1,
            "spill_store_bytes": int(fn.group(2)) if fn else -1,
            "spill_load_bytes": int(fn.group(3)) if fn else -1,
            "static_shared_bytes": int(smem.group(1)) if smem else 0}


# An instruction at the start of a PTX line, after an optional guard predicate (@%p3 / @!%p3).
_GUARD = r"^\s*(?:@!?%p\d+\s+)?"
_LD = re.compile(_GUARD + r"ld\.global[.\w:]*?(?:\.v(\d))?\.(b|f|u|s)(\d+)\s", re.M)
_ST = re.compile(_GUARD + r"st\.global[.\w:]*?(?:\.v(\d))?\.(b|f|u|s)(\d+)\s", re.M)


def _count(op: str, ptx: str) -> int:
    return len(re.findall(_GUARD + re.escape(op), ptx, re.M))


def _widths(pattern: re.Pattern, ptx: str) -> dict[str, int]:
    """Count of global memory instructions by access width in bits ("32", "64", "128")."""
    out: dict[str, int] = {}
    for m in pattern.finditer(ptx):
        bits = int(m.group(1) or 1) * int(m.group(3))
        out[str(bits)] = out.get(str(bits), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def ptx_figures(ptx: str) -> dict[str, Any]:
    """Static instruction counts read from the PTX (each instruction once, loops not unrolled
    by ptxas counted once)."""
    return {
        "mma": _count("mma.sync", ptx),
        "wgmma": _count("wgmma.mma_async", ptx),
        "tcgen05_mma": _count("tcgen05.mma.", ptx),
        "fma_f32": _count("fma.rn.f32", ptx),
        "global_loads": _widths(_LD, ptx),
        "global_stores": _widths(_ST, ptx),
    }


def describe(src, options) -> dict[str, Any]:
    consts = {str(k[0] if isinstance(k, tuple) and len(k) == 1 else k): (
        v if isinstance(v, (bool, int, float, str)) else str(v))
        for k, v in src.constants.items()}
    names = list(src.fn.arg_names)
    named = {}
    for path, value in consts.items():
        try:
            named[names[int(path)]] = value
        except (ValueError, IndexError):
            named[path] = value
    pointers = sorted({v for v in src.signature.values() if isinstance(v, str) and
                       v.startswith("*")})
    return {"constexprs": named, "num_warps": options.num_warps,
            "num_stages": options.num_stages, "pointer_types": pointers}


def compile_launch(src, options, arch: int) -> dict[str, Any]:
    """Compile one specialisation; returns its figures or its error."""
    import triton
    from triton import knobs

    start = time.perf_counter()
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), knobs.nvidia.scope():
            knobs.nvidia.dump_ptxas_log = True
            compiled = triton.compile(src, target=target(arch), options=options.__dict__)
    except Exception as exc:  # the compiler's error is the finding
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        return {"ok": False, "error": text[:600], "compile_s": time.perf_counter() - start}
    ptx = compiled.asm["ptx"]
    figures = {"ok": True, "shared_bytes": int(compiled.metadata.shared)}
    figures.update(ptxas_report(ptx, arch, buf.getvalue()))
    figures.update(ptx_figures(ptx))
    figures["compile_s"] = round(time.perf_counter() - start, 3)
    return figures


def spec_key(src, options, arch: int) -> str:
    h = hashlib.sha256()
    h.update(src.hash().encode())
    h.update(repr(sorted((k, str(v)) for k, v in options.__dict__.items())).encode())
    h.update(str(arch).encode())
    return h.hexdigest()[:16]


def metadata() -> dict[str, Any]:
    import triton

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        commit = ""
    return {"triton": triton.__version__, "torch": torch.__version__, "commit": commit,
            "date": time.strftime("%Y-%m-%d")}
