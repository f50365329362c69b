"""Static performance figures of the memory-bound kernels, read from their compiled code.

For each memory-bound kernel (pyramid, Haar wavelet, tiling) at its main specialisation —
float32 and bfloat16, contiguous NCHW, the sizes UHR users have (2448² images, 1224-wide
bands, 508-wide patches, 5000 x 4999 images) — this module records the launch the op makes
on a GPU (as :mod:`tools.kernels.compile_check` does, through :mod:`tools.kernels.ptx`),
compiles it for an architecture and reads from ptxas and the PTX:

- registers and spill bytes per thread (ptxas -v);
- the global load and store instructions per thread, by access width in bits;
- how often each element is fetched, and with how many instructions.

Convention:
    The kernels here have no loops over data (``tl.static_range`` is unrolled; the tiling
    scatter's loop over covering patches is the exception, see below), so every thread
    executes each ``ld.global``/``st.global`` of the PTX exactly once: the static count is the
    dynamic count per thread. Masked lanes still count (they issue the instruction).

    For one program (``num_warps * 32`` threads) that reads the distinct input elements
    ``E_in`` (its tile plus the halo its outputs depend on, every input tensor counted; index
    tables not counted) and writes ``E_out`` output elements:

    - ``load_instructions_per_element`` = load instructions per thread x threads / ``E_in``
      (0.25 for 128-bit float32 loads of each element once, 0.125 for bfloat16);
    - ``loads_per_element`` = bytes requested per thread x threads / (``E_in`` x element
      size): how many times each input element is fetched (1.0 = exactly once; the halo that
      two programs share counts once per program, since ``E_in`` includes it). Loads of index
      tables (int32 patch origins) are included in the bytes, so this can read slightly
      above 1.0 for the tiling kernels;
    - the same two for stores against ``E_out`` (``store_instructions_per_element``,
      ``stores_per_element``);
    - ``load_instructions_per_output`` = load instructions per thread x threads / ``E_out``
      (25 for a 5 x 5 gather that loads every tap of every output on its own);
    - ``load_widths``/``store_widths``: instruction counts per thread by access width in bits.

    ``_scatter_kernel`` (merge) loops over the patches covering its output tile; its load
    figures are per loop iteration (one covering patch, ``E_in`` = one tile of that patch),
    its store figures per program.

Run ``python -m tools.kernels.static_figures --arch 90`` (or ``compile_check --figures``).
The process must not have ``TRITON_INTERPRET=1`` set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable, Iterable

import torch

from tools.kernels.ptx import compile_launch, describe, spec_key, specialise
from uhrops.kernels._launch import Launch, kernel_name, recording


# --------------------------------------------------------------------------------------------
# Elements a program reads (E_in) and writes (E_out), from its constexprs
# --------------------------------------------------------------------------------------------
def _c(consts: dict[str, Any], *names: str) -> list[int]:
    return [int(consts[n]) for n in names]


def _pyr_footprint(kernel: str, k: dict[str, Any]) -> tuple[int, int]:
    if "RS" in k:  # the vectorised interior kernels: RS strips x G groups, BH rows a strip
        rs, bh, g = _c(k, "RS", "BH", "G")
        if kernel == "_down_kernel":  # 4 outputs a group, each reads 2j-2 .. 2j+2 per axis
            return (2 * rs * bh + 3) * (8 * g + 3), rs * bh * 4 * g
        # _up_kernel: BH coarse rows a strip -> 2 BH output rows; 4 coarse columns a group
        e_out = 2 * rs * bh * 8 * g
        return (rs * bh + 2) * (4 * g + 2) + (e_out if k.get("HAS_BASE") else 0), e_out
    bh, bw = _c(k, "BH", "BW")
    if kernel in ("_down_edge_kernel", "_up_adj_kernel"):
        # outputs i read inputs 2i-2 .. 2i+2 per axis
        return (2 * bh + 3) * (2 * bw + 3), bh * bw
    # _up_edge_kernel / _down_adj_kernel: outputs r read coarse r//2-1 .. r//2+1 per axis
    e_in = (bh // 2 + 2) * (bw // 2 + 2)
    if kernel == "_up_edge_kernel" and k.get("HAS_BASE"):
        e_in += bh * bw
    return e_in, bh * bw


def _haar_footprint(kernel: str, k: dict[str, Any]) -> tuple[int, int]:
    bh, bw, levels = _c(k, "BH", "BW", "LEVELS")
    n = (bh << levels) * (bw << levels)
    return n, n


def _tiling_footprint(kernel: str, k: dict[str, Any]) -> tuple[int, int]:
    n = int(k["BLOCK_H"]) * int(k["BLOCK_W"])
    if kernel == "_gather_kernel":
        return n * (1 + bool(k.get("HAS_W")) + bool(k.get("HAS_N"))), n
    return n * (1 + bool(k.get("HAS_W"))), n  # scatter: per covering patch


FOOTPRINT: dict[str, Callable[[str, dict[str, Any]], tuple[int, int]]] = {
    "_down_kernel": _pyr_footprint, "_up_kernel": _pyr_footprint,
    "_down_edge_kernel": _pyr_footprint, "_up_edge_kernel": _pyr_footprint,
    "_down_adj_kernel": _pyr_footprint, "_up_adj_kernel": _pyr_footprint,
    "_wavedec_kernel": _haar_footprint, "_waverec_kernel": _haar_footprint,
    "_packet_kernel": _haar_footprint, "_ipacket_kernel": _haar_footprint,
    "_gather_kernel": _tiling_footprint, "_scatter_kernel": _tiling_footprint,
}


# --------------------------------------------------------------------------------------------
# The main specialisations
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Main:
    """One op call at UHR size; ``pick`` chooses, among its launches of ``kernel``, the one
    whose figures are reported (default: the launch with the most programs)."""
    name: str
    family: str
    kernel: str
    run: Callable[[], None]
    pick: Callable[[list], Any] | None = None


def _img(shape, dtype):
    return torch.randn(shape, dtype=torch.float32).to(dtype).requires_grad_(True)


def _grad_of(out) -> None:
    outs = out if isinstance(out, (list, tuple)) else [out]
    flat = []
    for o in outs:
        flat.extend(o if isinstance(o, (list, tuple)) else [o])
    sum(o.float().sum() for o in flat).backward()


def _largest(launches):
    def size(launch):
        n = 1
        for g in launch.grid:
            n *= g
        return n
    return max(launches, key=size)


def _with_levels(levels: int):
    return lambda ls: _largest([x for x in ls if x.meta.get("LEVELS") == levels])


def mains(families: Iterable[str] | None = None) -> list[Main]:
    import uhrops

    fams = set(families) if families else {"pyramid", "wavelet", "tiling"}
    out: list[Main] = []
    for dt in (torch.float32, torch.bfloat16):
        name = str(dt).replace("torch.", "")
        if "pyramid" in fams:
            lap = (lambda dt=dt: _grad_of(uhrops.laplacian_pyramid(_img((1, 3, 2448, 2448), dt),
                                                                   1)))
            # Forward: pyr_down's and the fused expand's interior kernels. Backward (recorded
            # after the forward, hence the last launch of each kernel): the interior tiles of
            # the adjoints run the same two kernels (pyr_up's adjoint on _down_kernel,
            # pyr_down's on _up_kernel without a base); the border frame runs the gathers.
            first, last = (lambda ls: ls[0]), (lambda ls: ls[-1])
            for kern, what, pick in (("_down_kernel", "pyr_down", first),
                                     ("_up_kernel", "pyr_up+base", first),
                                     ("_up_kernel", "pyr_down backward", last),
                                     ("_down_kernel", "pyr_up backward", last)):
                out.append(Main(f"{what}/{name}/2448", "pyramid", kern, lap, pick))
            out.append(Main(f"pyr_down/{name}/5000x4999", "pyramid", "_down_kernel",
                            lambda dt=dt: uhrops.pyr_down(_img((1, 1, 5000, 4999), dt)
                                                          .detach())))
        if "wavelet" in fams:
            for levels in (1, 4):
                run = (lambda dt=dt, L=levels: _grad_of(uhrops.haar_waverec2(
                    *uhrops.haar_wavedec2(_img((1, 3, 2448, 2448), dt), L))))
                out.append(Main(f"haar_wavedec2/{name}/L{levels}/2448", "wavelet",
                                "_wavedec_kernel", run, _with_levels(levels)))
                out.append(Main(f"haar_waverec2/{name}/L{levels}/2448", "wavelet",
                                "_waverec_kernel", run, _with_levels(levels)))
            pk = (lambda dt=dt: uhrops.haar_ipacket2d(uhrops.haar_packet2d(
                _img((1, 3, 2448, 2448), dt).detach(), 2)))
            out.append(Main(f"haar_packet2d/{name}/L2/2448", "wavelet", "_packet_kernel", pk))
            out.append(Main(f"haar_ipacket2d/{name}/L2/2448", "wavelet", "_ipacket_kernel", pk))
            out.append(Main(f"haar_dwt2d/{name}/5000x4999-symmetric", "wavelet",
                            "_wavedec_kernel", lambda dt=dt: uhrops.haar_dwt2d(
                                _img((1, 1, 5000, 4999), dt).detach(), pad_mode="symmetric")))
        if "tiling" in fams:
            grid = uhrops.PatchGrid.from_min_overlap((2448, 2448), (508, 508), min_overlap=50)
            out.append(Main(f"extract_patches/{name}/2448-508", "tiling", "_gather_kernel",
                            lambda dt=dt, g=grid: uhrops.extract_patches(
                                _img((1, 3, 2448, 2448), dt).detach(), g)))
            out.append(Main(f"merge_patches/{name}/mean/2448-508", "tiling", "_scatter_kernel",
                            lambda dt=dt, g=grid: uhrops.merge_patches(
                                _img((36, 3, 508, 508), dt).detach(), g)))
    return out


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def figures_of(kernel: str, consts: dict[str, Any], num_warps: int, elem_bytes: int,
               compiled: dict[str, Any]) -> dict[str, Any]:
    """The per-element figures of one compiled specialisation (see the module Convention)."""
    threads = 32 * num_warps
    e_in, e_out = FOOTPRINT[kernel](kernel, consts)
    out: dict[str, Any] = {"threads": threads, "elements_read": e_in, "elements_written": e_out,
                           "per_iteration_loads": kernel == "_scatter_kernel"}
    # Load instructions per thread x threads / outputs: the "taps per output" view (25 for a
    # 5x5 gather that loads each tap separately).
    n_ld = sum(int(c) for c in compiled["global_loads"].values())
    out["load_instructions_per_output"] = round(n_ld * threads / e_out, 4)
    for what, key, n_el in (("load", "global_loads", e_in), ("store", "global_stores", e_out)):
        widths = {int(b): int(c) for b, c in compiled[key].items()}
        instr = sum(widths.values())
        nbytes = sum(b // 8 * c for b, c in widths.items())
        out[f"{what}_widths"] = {str(b): c for b, c in sorted(widths.items())}
        out[f"{what}_instructions_per_thread"] = instr
        out[f"{what}_instructions_per_element"] = round(instr * threads / n_el, 4)
        out[f"{what}s_per_element"] = round(nbytes * threads / (n_el * elem_bytes), 4)
        out[f"min_{what}_bits"] = min(widths) if widths else 0
        out[f"max_{what}_bits"] = max(widths) if widths else 0
    return out


def compute(archs: list[int], families: Iterable[str] | None = None,
            log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """Figures of every main specialisation for each architecture in ``archs``."""
    rows: list[dict[str, Any]] = []
    torch.manual_seed(0)
    compiled_cache: dict[str, dict[str, Any]] = {}
    for main in mains(families):
        launches: list[Launch] = []
        with recording(launches, main.name):
            main.run()
        mine = [x for x in launches if kernel_name(x.kernel) == main.kernel]
        if not mine:
            raise RuntimeError(f"{main.name}: no launch of {main.kernel} recorded")
        launch = (main.pick or _largest)(mine)
        elem = next(a for a in launch.args if isinstance(a, torch.Tensor)).element_size()
        for arch in archs:
            src, options = specialise(launch, arch)
            key = spec_key(src, options, arch)
            if key not in compiled_cache:
                compiled_cache[key] = compile_launch(src, options, arch)
            comp = compiled_cache[key]
            desc = describe(src, options)
            row = {"name": main.name, "family": main.family, "kernel": main.kernel,
                   "arch": arch, "constexprs": desc["constexprs"],
                   "num_warps": desc["num_warps"], "grid": list(launch.grid),
                   "ok": comp["ok"]}
            if comp["ok"]:
                row.update({"registers": comp["registers"],
                            "spill_store_bytes": comp["spill_store_bytes"],
                            "spill_load_bytes": comp["spill_load_bytes"]})
                row.update(figures_of(main.kernel, desc["constexprs"], desc["num_warps"], elem,
                                      comp))
            else:
                row["error"] = comp["error"]
            rows.append(row)
            log(format_row(row))
    return rows


def format_row(r: dict[str, Any]) -> str:
    if not r["ok"]:
        return f"sm_{r['arch']} {r['name']:40s} {r['kernel']:17s} FAILED {r['error'][:120]}"
    return (f"sm_{r['arch']} {r['name']:40s} {r['kernel']:17s} regs {r['registers']:3d} "
            f"spill {r['spill_store_bytes']:3d}  ld/el {r['loads_per_element']:6.3f} "
            f"({r['load_instructions_per_element']:.3f} instr, {r['load_widths']})  "
            f"st/el {r['stores_per_element']:.3f} "
            f"({r['store_instructions_per_element']:.3f} instr, {r['store_widths']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.kernels.static_figures",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="90", help="comma-separated compute capabilities")
    parser.add_argument("--family", action="append", choices=["pyramid", "wavelet", "tiling"],
                        help="only these op families (repeatable)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("TRITON_INTERPRET=1 is set: run this command without it")
    archs = [int(a) for a in args.arch.split(",") if a.strip()]
    rows = compute(archs, args.family,
                   log=(lambda s: None) if args.quiet else (lambda s: print(s, flush=True)))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"figures": rows}, f, indent=1)
        os.replace(tmp, args.json)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
