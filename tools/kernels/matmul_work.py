"""Matmul work and launch sizes of the attention kernels, read from their recorded launches.

``python -m tools.kernels.matmul_work`` prints, for the shapes users run (FCtL's pool5
correlation: C = 512 on a 23 x 23 map at batch 1, and wider maps), the tensor-core work the
launches do against two references, and the blocks each kernel launches:

- forward minimum: ``2 B Nq Nk (Cq + Cv)`` flops (S = Q^T K once, P V^T once);
- FlashAttention-2-style backward in two kernels (one over key blocks forming S, dP, dV, dK;
  one over query blocks forming S, dP, dQ): ``2 B Nq Nk (4 Cq + 3 Cv)`` flops.

The work of a launch follows from its grid, its block constexprs and its loop bounds (the
kernels have no data-dependent control flow), written out per kernel in ``launch_flops``.
Ratios include the padding of the last block of each axis (N = 529 in blocks of 32 pads to
544: 1.057x on a product of two such axes). ``tests/tools/test_matmul_work.py`` checks
``launch_flops`` against the flops the Triton interpreter's ``tl.dot`` really executes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

import torch

from tools.kernels.ptx import metadata
from uhrops.kernels._launch import kernel_name, recording

# An H100/H200 has 132 SMs; the launch plans recorded on the CPU assume it (attention.sm_count).
SMS = 132

# (C, Hq, Wq, Hk, Wk, batch): FCtL's pool5 correlation at 508 px patches (the real case),
# a wide map, and a mid-size map with Nq != Nk.
SHAPES = [(512, 23, 23, 23, 23, 1), (512, 23, 23, 23, 23, 8), (256, 64, 64, 32, 32, 1),
          (64, 37, 41, 29, 31, 1)]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _params(launch: Any) -> dict[str, Any]:
    names = launch.kernel.arg_names
    return {**dict(zip(names, launch.args)), **launch.meta}


def launch_flops(launch: Any) -> int:
    """Multiply-add flops (2 per product) every ``tl.dot`` of one recorded launch executes."""
    name, p = kernel_name(launch.kernel), _params(launch)
    grid = list(launch.grid) + [1] * (3 - len(launch.grid))
    if name == "_fwd_kernel":
        bm, bn, bcr, bdv = p["BLOCK_M"], p["BLOCK_N"], p["BLOCK_CR"], p["BLOCK_DV"]
        per_pair = 2 * bm * bn * (_cdiv(p["CQ"], bcr) * bcr + bdv)
        key_blocks = _cdiv(p["NK"], bn)  # every split covers whole blocks of its range
        return grid[0] * grid[1] * p["N_VCHUNKS"] * key_blocks * per_pair
    if name == "_bwd_dkdv_kernel":
        bm, bn, bcr, bco = p["BLOCK_M"], p["BLOCK_N"], p["BLOCK_CR"], p["BLOCK_CO"]
        per_pair = 2 * bm * bn * _cdiv(p["CQ"], bcr) * bcr  # S^T
        if p["DO_DV"]:
            per_pair += 2 * bm * bn * bco
        if p["DO_DK"]:
            per_pair += 2 * bm * bn * (_cdiv(p["CV"], bcr) * bcr + bco)
        query_blocks = _cdiv(p["NQ"], bm)
        return grid[0] * grid[1] * p["N_CHUNKS"] * query_blocks * per_pair
    if name == "_bwd_dq_kernel":
        bm, bn, bcr, bco = p["BLOCK_M"], p["BLOCK_N"], p["BLOCK_CR"], p["BLOCK_CO"]
        per_pair = 2 * bm * bn * ((_cdiv(p["CQ"], bcr) + _cdiv(p["CV"], bcr)) * bcr + bco)
        key_blocks = _cdiv(p["NK"], bn)
        return grid[0] * grid[1] * p["N_CHUNKS"] * key_blocks * per_pair
    return 0  # the delta and combine kernels do no matmul


def minimum_flops(b: int, nq: int, nk: int, cq: int, cv: int) -> dict[str, int]:
    return {"forward": 2 * b * nq * nk * (cq + cv),
            "backward_fa2": 2 * b * nq * nk * (4 * cq + 3 * cv)}


def record_attention(b: int, cq: int, cv: int, hq: int, wq: int, hk: int, wk: int,
                     dtype: torch.dtype, precision: str = "highest") -> list[Any]:
    """The launches a CUDA call of context_attention (forward and backward) would make."""
    import uhrops

    def image(c, h, w):
        return torch.zeros(b, c, h, w, dtype=dtype, requires_grad=True)

    launches: list[Any] = []
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        with recording(launches, "figures"):
            out = uhrops.context_attention(image(cq, hq, wq), image(cq, hk, wk),
                                           image(cv, hk, wk), scale=cq ** -0.5)
            out.sum().backward()
    finally:
        torch.set_float32_matmul_precision(old)
    return launches


def figures(b: int, cq: int, cv: int, hq: int, wq: int, hk: int, wk: int,
            dtype: torch.dtype, precision: str = "highest") -> dict[str, Any]:
    """Work ratios and blocks per kernel for one shape (see the module docstring)."""
    launches = record_attention(b, cq, cv, hq, wq, hk, wk, dtype, precision)
    nq, nk = hq * wq, hk * wk
    minimum = minimum_flops(b, nq, nk, cq, cv)
    fwd = sum(launch_flops(x) for x in launches if kernel_name(x.kernel) == "_fwd_kernel")
    bwd = sum(launch_flops(x) for x in launches
              if kernel_name(x.kernel) in ("_bwd_dkdv_kernel", "_bwd_dq_kernel"))
    blocks: dict[str, list[int]] = {}
    for x in launches:
        blocks.setdefault(kernel_name(x.kernel), []).append(math.prod(x.grid))
    return {"shape": f"B{b} C{cq}/{cv} {hq}x{wq}<-{hk}x{wk}", "dtype": str(dtype)[6:],
            "precision": precision, "forward_work_ratio": round(fwd / minimum["forward"], 4),
            "backward_work_ratio": round(bwd / minimum["backward_fa2"], 4),
            "blocks": blocks, "min_blocks_matmul_kernels": min(
                n for k, v in blocks.items() for n in v
                if k in ("_fwd_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel")),
            "sms": SMS}


def table(dtypes=(torch.bfloat16, torch.float16)) -> list[dict[str, Any]]:
    rows = []
    for c, hq, wq, hk, wk, b in SHAPES:
        for dt in dtypes:
            rows.append(figures(b, c, c, hq, wq, hk, wk, dt))
    for c, hq, wq, hk, wk, b in SHAPES[:1]:
        rows.append(figures(b, c, c, hq, wq, hk, wk, torch.float32, "highest"))
        rows.append(figures(b, c, c, hq, wq, hk, wk, torch.float32, "high"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.kernels.matmul_work",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the rows to this file (the README's block "
                        "reads benchmarks/results/kernels-attention-work.json)")
    args = parser.parse_args(argv)
    rows = table()
    for r in rows:
        print(f"{r['shape']:28s} {r['dtype']:9s} {r['precision']:8s} "
              f"fwd {r['forward_work_ratio']:.3f}x  bwd {r['backward_work_ratio']:.3f}x  "
              f"fewest blocks {r['min_blocks_matmul_kernels']}  {r['blocks']}")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"metadata": metadata(), "sms": SMS, "rows": rows}, f, indent=1)
            f.write("\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
