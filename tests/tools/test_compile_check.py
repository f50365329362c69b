"""Every Triton kernel specialisation the host code launches compiles for real GPUs.

The kernels' values are tested through the interpreter elsewhere; here they go through
Triton's GPU pipeline down to ptxas and a cubin, ahead of time, for sm_90 (the quick suite:
every kernel at least once, in the default run) and for sm_80/90/100 over the full matrix
(``-m compile_matrix`` or ``UHROPS_COMPILE_MATRIX=1``). The compile runs in a subprocess:
this test process has the interpreter on, under which ``triton.jit`` builds nothing a GPU
compiler accepts.

The limits are the hardware's, written here from the CUDA programming guide rather than read
from the module under test: 227 KiB of shared memory per block on sm_90/sm_100 and 163 KiB
on sm_80; grid axes 1 and 2 at most 65535 blocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_KIB = {80: 163, 90: 227, 100: 227}
CUDA_GRID = (2**31 - 1, 65535, 65535)
TENSOR_CORE_KERNELS = ("_fwd_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel")


def _compile(tmp_path_factory, archs: str, suite: str) -> dict:
    out = tmp_path_factory.mktemp("compile") / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.kernels.compile_check", "--arch", archs, "--suite", suite,
         "--json", str(out), "--results-dir", "", "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if not out.exists():
        pytest.fail(f"compile check did not finish (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    print(proc.stdout[-4000:])
    return json.loads(out.read_text())


def _all_kernels() -> set[str]:
    """Every @triton.jit kernel (name ending in _kernel) in uhrops.kernels, found by looking."""
    import importlib

    names = set()
    for mod in ("wavelet", "pyramid", "attention", "tiling"):
        m = importlib.import_module(f"uhrops.kernels.{mod}")
        for name, obj in vars(m).items():
            if name.endswith("_kernel") and type(obj).__name__ in ("JITFunction",
                                                                  "InterpretedFunction"):
                names.add(name)
    return names


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    return _compile(tmp_path_factory, "90", "quick")


def _label(s: dict) -> str:
    return f"sm_{s['arch']} {s['kernel']} {s['constexprs']} warps={s['num_warps']}"


def _assert_limits(result: dict, archs: tuple[int, ...]) -> None:
    specs = result["specialisations"]
    assert specs, "the compile check recorded no launch"
    failed = [f"{_label(s)}: {s['error'][-300:]}" for s in specs if not s["ok"]]
    assert not failed, "specialisations that do not compile:\n" + "\n".join(failed)
    for arch in archs:
        covered = {s["kernel"] for s in specs if s["arch"] == arch}
        assert covered == _all_kernels(), f"sm_{arch}: kernels never launched by the cases: " \
            f"{sorted(_all_kernels() - covered)}"
    over = [f"{_label(s)}: {s['shared_bytes'] + s['static_shared_bytes']} B" for s in specs
            if s["shared_bytes"] + s["static_shared_bytes"] > SHARED_KIB[s["arch"]] * 1024]
    assert not over, "shared memory over the per-block limit:\n" + "\n".join(over)
    # Zero on sm_90, except fp32 exact-product attention (FMA units), whose bound of 32 bytes
    # is documented in tools.kernels.compile_check.SPILL_BUDGET.
    def allowed(s: dict) -> int:
        return 32 if s["kernel"] in TENSOR_CORE_KERNELS and \
            s["constexprs"].get("PREC") == "ieee" else 0

    spills = [f"{_label(s)}: {s['spill_store_bytes']} B stored, {s['spill_load_bytes']} B loaded"
              for s in specs if s["arch"] == 90 and s["spill_store_bytes"] > allowed(s)]
    assert not spills, "register spills on sm_90:\n" + "\n".join(spills)
    assert not [s for s in specs if s["arch"] == 90 and not allowed(s)
                and s["spill_load_bytes"]], "spill loads on sm_90"
    assert all(s["registers"] > 0 for s in specs), "ptxas report not read"
    no_mma = [_label(s) for s in specs if s["kernel"] in TENSOR_CORE_KERNELS
              and any(t in ("*fp16", "*bf16") for t in s["pointer_types"])
              and s["mma"] + s["wgmma"] + s["tcgen05_mma"] == 0]
    assert not no_mma, "16-bit attention without tensor-core instructions:\n" + "\n".join(no_mma)
    for p in result["launch_problems"]:
        pytest.fail(f"launch outside CUDA's grid limits: {p}")


def test_quick_suite_compiles_every_kernel_for_sm90(quick):
    _assert_limits(quick, (90,))


def test_multi_level_haar_kernels_compile(quick):
    # The kernels the interpreter accepted but the compiler refused (constexpr re-bound in an
    # unrolled loop): every fused depth must be among the compiled specialisations.
    for kernel in ("_wavedec_kernel", "_waverec_kernel", "_packet_kernel", "_ipacket_kernel"):
        levels = {s["constexprs"].get("LEVELS") for s in quick["specialisations"]
                  if s["kernel"] == kernel and s["ok"]}
        assert {1, 2, 4} <= levels, (kernel, levels)


def test_16bit_attention_uses_tensor_cores_on_sm90(quick):
    """wgmma where a block has the 64 rows a warpgroup multiplies (the dK/dV kernel's rows
    are its key block), mma.sync for the 32-row blocks of the widest channel counts."""
    seen = set()
    for s in quick["specialisations"]:
        if s["kernel"] in TENSOR_CORE_KERNELS and "*bf16" in s["pointer_types"]:
            c = s["constexprs"]
            rows = c["BLOCK_N"] if s["kernel"] == "_bwd_dkdv_kernel" else c["BLOCK_M"]
            if rows >= 64:
                assert s["wgmma"] > 0, _label(s)
            else:
                assert s["mma"] > 0, _label(s)
            seen.add(rows >= 64)
            assert s["fma_f32"] < 100, _label(s)  # the products are not on the FMA units
    assert seen == {True, False}


def test_recorded_grids_within_cuda_limits(quick):
    cases = set(quick["cases"])
    assert {"merge_patches/float32/B*C=70000", "extract_patches/float32/B*C=70000"} <= cases
    for s in quick["specialisations"]:
        assert all(n <= lim for n, lim in zip(s["grid_example"], CUDA_GRID)), _label(s)


def _matrix_requested(config) -> bool:
    return "compile_matrix" in (config.getoption("-m") or "") or \
        os.environ.get("UHROPS_COMPILE_MATRIX") == "1"


@pytest.mark.compile_matrix
def test_full_matrix_compiles_for_sm80_sm90_sm100(request, tmp_path_factory):
    if not _matrix_requested(request.config):
        pytest.skip("full compile matrix: run with -m compile_matrix or UHROPS_COMPILE_MATRIX=1 "
                    "(or python -m tools.kernels.compile_check)")
    _assert_limits(_compile(tmp_path_factory, "80,90,100", "full"), (80, 90, 100))


def test_fp32_attention_on_tensor_cores_when_matmul_precision_allows(quick):
    fp32 = [s for s in quick["specialisations"] if s["kernel"] in TENSOR_CORE_KERNELS
            and s["pointer_types"] == ["*fp32"]]
    tf32 = [s for s in fp32 if s["constexprs"].get("PREC") == "tf32"]
    ieee = [s for s in fp32 if s["constexprs"].get("PREC") == "ieee"]
    assert tf32 and ieee, "the quick suite must compile both fp32 precisions"
    for s in tf32:  # wgmma for 64-row blocks, mma.sync for the smaller ones above 64 channels
        assert s["wgmma"] + s["mma"] > 0 and s["spill_store_bytes"] == 0, _label(s)
    for s in ieee:
        assert s["wgmma"] == 0 and s["mma"] == 0, _label(s)  # exact products: FMA units


@pytest.mark.parametrize("precision,expected", [("highest", "ieee"), ("high", "tf32"),
                                                ("medium", "tf32")])
def test_fp32_attention_precision_follows_torch_setting(precision, expected):
    import torch

    import uhrops
    from uhrops.kernels._launch import Launch, recording

    launches: list[Launch] = []
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        q = torch.randn(1, 32, 4, 4, requires_grad=True)
        with recording(launches, "precision"):
            uhrops.context_attention(q, q, q).sum().backward()
    finally:
        torch.set_float32_matmul_precision(old)
    precs = {launch.meta["PREC"] for launch in launches if "PREC" in launch.meta}
    assert precs == {expected}
