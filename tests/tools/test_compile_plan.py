"""The launches the compile check compiles are the launches users make (issue 28).

An independent capture of what an H100 (132 SMs) launches for FCtL's 23 x 23 correlation
found spills the compile check did not report: the check's backward ran from
``.sum().backward()``, whose expanded gradient has stride 0, so Triton specialised the dO
strides differently from a training step's dense gradient and the check compiled kernels no
user runs. Here the check's recorded FCtL cases are compared, launch by launch, with the
launches of the real module (uhrops.LocalContextCorrelation, as zoo.fctl builds it) in a
training step, by everything Triton specialises on: kernel, grid, constexprs and options,
argument dtypes, pointer alignment, and integers equal to 1 or divisible by 16. The grids are
also held to the plan the host code makes for a CUDA device with 132 SMs.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import triton  # noqa: E402

import uhrops  # noqa: E402
from tools.kernels import compile_check  # noqa: E402
from uhrops.kernels import attention as A  # noqa: E402
from uhrops.kernels._launch import Launch, kernel_name, recording  # noqa: E402

SMS = 132  # an H100's / H200's streaming multiprocessors
CASES = {c.name: c for c in compile_check.cases("full", ["attention"])}


def _triton_key(launch: Launch) -> tuple:
    """What Triton's binder specialises on for this launch (JITFunction.run on a GPU)."""
    args = []
    for a in launch.args:
        if isinstance(a, torch.Tensor):
            args.append(("tensor", str(a.dtype), a.data_ptr() % 16 == 0))
        elif isinstance(a, bool):
            args.append(("bool", a))
        elif isinstance(a, int):
            args.append(("int", a == 1, a % 16 == 0))
        else:
            args.append((type(a).__name__,))
    meta = tuple(sorted((k, v) for k, v in launch.meta.items()))
    return kernel_name(launch.kernel), launch.grid, meta, tuple(args)


def _training_step(c: int, batch: int, dtype: torch.dtype, precision: str) -> list[Launch]:
    torch.manual_seed(0)
    block = uhrops.LocalContextCorrelation(c).to(dtype)
    local = torch.randn(batch, c, 23, 23).to(dtype)
    context = torch.randn(batch, c, 23, 23).to(dtype)
    launches: list[Launch] = []
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        with recording(launches, "training step"):
            out = block(local, context)
            (out * torch.randn_like(out)).sum().backward()  # a dense dL/dout
    finally:
        torch.set_float32_matmul_precision(old)
    return launches


def _recorded(name: str) -> list[Launch]:
    launches: list[Launch] = []
    with recording(launches, name):
        CASES[name].run()
    return launches


PARAMS = [(c, b, label) for c in (256, 512) for b in (1, 8) for label in ("float32", "bfloat16")]


@pytest.mark.parametrize("c,batch,label", PARAMS)
def test_compile_check_records_the_launches_of_a_training_step(c, batch, label):
    dtype, precision = {"float32": (torch.float32, "highest"),
                        "bfloat16": (torch.bfloat16, "highest")}[label]
    name = f"fctl_attention/{label}/C{c}/B{batch}/23x23<-23x23"
    assert name in CASES, sorted(CASES)[:5]
    checked = [_triton_key(x) for x in _recorded(name)]
    users = [_triton_key(x) for x in _training_step(c, batch, dtype, precision)]
    assert len(checked) == len(users)
    for mine, theirs in zip(checked, users):
        assert mine == theirs, f"compile check {mine}\n   training step {theirs}"


@pytest.mark.parametrize("c,batch,label", PARAMS)
def test_recorded_grids_are_the_plan_for_132_sms(c, batch, label):
    dtype = torch.float32 if label == "float32" else torch.bfloat16
    n = 23 * 23
    cfg = A.block_config(n, n, c, c, torch.device("cuda"), dtype)
    nv = triton.cdiv(c, cfg["BLOCK_DV"])
    programs = triton.cdiv(n, cfg["BLOCK_M"]) * batch * nv
    splits, per = A.splits_to_fill(programs, n, cfg["BLOCK_N"], SMS)
    launches = _recorded(f"fctl_attention/{label}/C{c}/B{batch}/23x23<-23x23")
    fwd = [x for x in launches if kernel_name(x.kernel) == "_fwd_kernel"]
    assert len(fwd) == 1
    assert fwd[0].grid == (triton.cdiv(n, cfg["BLOCK_M"]), batch, splits * nv)
    assert fwd[0].meta["BLOCK_M"] == cfg["BLOCK_M"] and fwd[0].meta["SPLIT"] == (splits > 1)
    assert fwd[0].meta["num_warps"] == cfg["WARPS_FWD"]
    # the dQ pass: query blocks x batch x channel chunks, keys split to fill 132 SMs
    bm, bn = cfg.get("BLOCK_M_DQ", cfg["BLOCK_M_BWD"]), cfg.get("BLOCK_N_DQ", cfg["BLOCK_N_BWD"])
    chunks = triton.cdiv(c, cfg.get("BLOCK_CO_DQ", cfg["BLOCK_CO"]))
    splits_dq, _ = A.splits_to_fill(triton.cdiv(n, bm) * batch * chunks, n, bn, SMS)
    dq = [x for x in launches if kernel_name(x.kernel) == "_bwd_dq_kernel"]
    assert [x.grid for x in dq] == [(triton.cdiv(n, bm), batch, splits_dq * chunks)]
