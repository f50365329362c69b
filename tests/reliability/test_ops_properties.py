"""Every public uhrops op under random, often hostile, input (DESIGN.md §4).

For each name in ``uhrops.__all__`` a hypothesis strategy draws one case: a valid base input
(random shapes, odd and even, zero-size batches, every float dtype, contiguous /
channels_last / transposed / strided / expanded views, uniform / large / NaN / Inf values,
the CPU or the meta device, the PyTorch or the Triton backend) and then, half of the time, one
fault (a non-tensor, a wrong rank, an integer, bool or complex dtype, a mismatched dtype or
device, an impossible size, a bad option). The expected outcome is decided here, from the
documented contract, not from the library:

- a valid case must run and equal the float64 oracle of ``_oracles.py`` (independent
  formulas) on the same values, to the tolerance of its dtype, NaN and Inf included (shape and
  dtype only on the meta device);
- a faulty case must raise the documented exception type (TypeError / ValueError, or
  BackendUnavailableError where the Triton backend has no kernel) with a message that names the
  op and the offending argument (as `name` or name=).

Each case and each distinct (exception type, message template) is counted into the session
report (``tests/reliability/last_run.json``). ``UHROPS_RELI_EXAMPLES`` sets the examples
per op of the default run (default 30); the ``long`` variant runs 400 per op.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import uhrops
from tests.conftest import triton_ready
from tests.reliability import _oracles as O
from tests.reliability._report import REPORT
from tests.uhrops.test_tiling import glnet_starts, mmseg_starts  # the grid-rule oracles
from uhrops import BackendUnavailableError, PatchGrid

F64 = torch.float64
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
BAD_DTYPES = (torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64)
LAYOUTS = ("contiguous", "channels_last", "transposed", "strided", "expanded", "sliced")
VALUES = ("uniform", "uniform", "large", "nan", "inf", "mixed")
# tolerance relative to (1 + max |oracle|), per dtype
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
TRITON = triton_ready("cpu") is None
DEVICES = ("cpu", "meta") + (("cuda",) if torch.cuda.is_available() else ())

EXAMPLES = int(os.environ.get("UHROPS_RELI_EXAMPLES", "30"))
LONG_EXAMPLES = 400
_HYP = dict(deadline=None, database=None, print_blob=True,
            suppress_health_check=list(HealthCheck))


# --------------------------------------------------------------------------------------------
# building tensors
# --------------------------------------------------------------------------------------------


@dataclass
class TSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    layout: str = "contiguous"
    values: str = "uniform"
    seed: int = 0
    magnitude: float = 1.0

    def build(self, device: str = "cpu") -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        shape = self.shape
        expand = self.layout == "expanded" and len(shape) >= 1 and shape[0] >= 1
        base_shape = (1,) + tuple(shape[1:]) if expand else tuple(shape)
        x = (torch.rand(base_shape, generator=g, dtype=F64) * 2 - 1) * self.magnitude
        n = x.numel()
        if n and self.values in ("nan", "inf", "mixed"):
            k = int(torch.randint(1, 4, (1,), generator=g))
            flat = x.view(-1)
            for j in range(k):
                pos = int(torch.randint(0, n, (1,), generator=g))
                kind = self.values if self.values != "mixed" else ("nan", "inf", "-inf")[j % 3]
                flat[pos] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[kind] * (
                    -1 if kind == "inf" and j % 2 else 1)
        if self.dtype.is_floating_point or self.dtype.is_complex:
            x = x.to(self.dtype)
        elif self.dtype == torch.bool:
            x = x > 0
        else:
            x = torch.nan_to_num(x * 5).round().clamp(0 if self.dtype == torch.uint8 else -9, 9)
            x = x.to(self.dtype)
        if expand:
            x = x.expand(*shape)
        elif self.layout == "channels_last" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        elif self.layout == "transposed" and x.dim() >= 2:
            x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
        elif self.layout == "sliced" and x.dim() >= 2:
            # every other batch entry, channels 1.. of a larger tensor: odd strides on dims 0, 1
            big = torch.zeros(2 * x.shape[0] + 1, x.shape[1] + 2, *x.shape[2:], dtype=x.dtype)
            big[1::2, 1:1 + x.shape[1]] = x
            x = big[1::2, 1:1 + x.shape[1]]
        elif self.layout == "strided" and x.dim() >= 1:
            wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1] + 1, dtype=x.dtype)
            wide[..., 1::2] = x
            x = wide[..., 1::2]
        if device != "cpu":
            x = x.to(device)
        return x


def reference(t: torch.Tensor) -> torch.Tensor:
    """The oracle's input: the same values as a contiguous float64 CPU tensor (zeros on meta)."""
    if t.device.type == "meta":
        return torch.zeros(t.shape, dtype=F64)
    return t.detach().cpu().to(F64).contiguous()


def draw_tspec(data, shape, dtype=None, *, allow_special=True, magnitude=None) -> TSpec:
    if dtype is None:
        dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
    values = data.draw(st.sampled_from(VALUES if allow_special else ("uniform", "large")),
                       label="values")
    if magnitude is None:
        magnitude = 1.0 if values != "large" else (30.0 if dtype in (torch.float16,
                                                                     torch.bfloat16) else 1e3)
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    return TSpec(tuple(shape), dtype, layout, values, seed, magnitude)


# --------------------------------------------------------------------------------------------
# one case: how to run it and what must happen
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    call: Callable[[], Any]
    oracle: Callable[[], Any] | None = None
    expect: tuple[type, tuple[str, ...]] | None = None  # (exception type, accepted names)
    backend: str | None = "torch"
    dtype: torch.dtype = torch.float32
    tol_scale: float = 1.0
    meta: bool = False
    note: dict = field(default_factory=dict)
    check: Callable[[Any], Any] | None = None  # checks the returned object itself


# what an error message may call the op: the module twins raise from their functions
ALIASES = {
    "HaarDWT2d": ("HaarDWT2d", "haar_dwt2d", "haar_wavedec2"),
    "HaarIDWT2d": ("HaarIDWT2d", "haar_idwt2d", "haar_waverec2"),
    "HaarPacket2d": ("HaarPacket2d", "haar_packet2d"),
    "HaarIPacket2d": ("HaarIPacket2d", "haar_ipacket2d"),
    "GaussianPyramid": ("GaussianPyramid", "gaussian_pyramid"),
    "LaplacianPyramid": ("LaplacianPyramid", "laplacian_pyramid"),
    "MergePatches": ("MergePatches", "merge_patches"),
    "ExtractContexts": ("ExtractContexts", "extract_contexts"),
    "LocalContextCorrelation": ("LocalContextCorrelation", "context_attention"),
    "set_backend": ("set_backend", "use_backend", "triton_unavailable_reason"),
}


def _tname(etype) -> str:
    return "/".join(t.__name__ for t in etype) if isinstance(etype, tuple) else etype.__name__


def _names_argument(msg: str, names: tuple[str, ...]) -> bool:
    for name in names:
        if f"`{name}`" in msg or re.search(rf"(?<![\w.]){re.escape(name)}(=|\b)", msg):
            return True
    return False


def _compare(out, ref, dtype: torch.dtype, tol_scale: float, meta: bool, where: str) -> None:
    if isinstance(ref, (list, tuple)):
        assert isinstance(out, (list, tuple)) and len(out) == len(ref), \
            f"{where}: expected {len(ref)} outputs, got {type(out).__name__}"
        for i, (a, b) in enumerate(zip(out, ref)):
            _compare(a, b, dtype, tol_scale, meta, f"{where}[{i}]")
        return
    assert isinstance(out, torch.Tensor), f"{where}: not a tensor: {type(out).__name__}"
    assert tuple(out.shape) == tuple(ref.shape), f"{where}: shape {tuple(out.shape)} != " \
                                                 f"oracle {tuple(ref.shape)}"
    assert out.dtype == dtype, f"{where}: dtype {out.dtype}, expected {dtype}"
    if meta:
        assert out.device.type == "meta", where
        return
    got = out.detach().cpu().to(F64)
    finite = ref[torch.isfinite(ref)]
    scale = 1.0 + (float(finite.abs().max()) if finite.numel() else 0.0)
    tol = TOL[dtype] * tol_scale
    torch.testing.assert_close(got, ref, atol=tol * scale, rtol=tol, equal_nan=True,
                               msg=lambda m: f"{where}: {m}")


def run_case(op: str, case: Case) -> None:
    """Run one case under its backend and check its outcome against the contract."""
    try:
        if case.backend is None:  # the backend functions themselves: no scope around them
            out = case.call()
        else:
            with uhrops.use_backend(case.backend):
                out = case.call()
    except Exception as exc:  # noqa: BLE001 - every exception is judged below
        if case.expect is None:
            raise AssertionError(f"{op}: a valid input was rejected ({case.note}): "
                                 f"{type(exc).__name__}: {exc}") from exc
        etype, names = case.expect
        if not isinstance(exc, etype):
            raise AssertionError(f"{op}: expected {_tname(etype)} naming {names} "
                                 f"({case.note}); got {type(exc).__name__}: {exc}") from exc
        msg = str(exc)
        assert any(a in msg for a in ALIASES.get(op, (op,))), \
            f"{op}: the message does not name the op: {msg!r}"
        if etype is not BackendUnavailableError:
            assert _names_argument(msg, names), \
                f"{op}: the message does not name any of {names}: {msg!r} ({case.note})"
        else:
            assert "Triton" in msg, msg
        REPORT.case(op, "rejected", exc)
        return
    if case.expect is not None:
        raise AssertionError(f"{op}: accepted an invalid input ({case.note}); expected "
                             f"{_tname(case.expect[0])} naming {case.expect[1]}")
    if case.check is not None:
        case.check(out)
    else:
        assert case.oracle is not None
        _compare(out, case.oracle(), case.dtype, case.tol_scale, case.meta, op)
    REPORT.case(op, "valid")


# --------------------------------------------------------------------------------------------
# shared drawing helpers
# --------------------------------------------------------------------------------------------


def draw_backend_device(data, dtype, *, has_triton=True, has_f64_kernel=True):
    """(backend, device, expected BackendUnavailableError or None)."""
    device = data.draw(st.sampled_from(DEVICES + ("cpu",) * 4), label="device")
    choices = ["torch", "torch", "auto"] + (["triton"] if TRITON else [])
    backend = data.draw(st.sampled_from(choices), label="backend")
    unavailable = backend == "triton" and (device == "meta" or not has_triton or
                                           (dtype == F64 and not has_f64_kernel))
    return backend, device, unavailable


def small_sides(data, backend, lo=1, hi=12, label="side"):
    top = min(hi, 9) if backend == "triton" else hi
    return data.draw(st.integers(lo, top), label=label)


def draw_batch(data, backend):
    return data.draw(st.sampled_from((0, 1, 1, 2, 2, 3) if backend != "triton" else (0, 1, 2)),
                     label="B")


NON_TENSORS = st.sampled_from(["list", "float", "none", "ndarray"])


def non_tensor(kind: str, spec: TSpec):
    import numpy as np

    return {"list": [[0.0, 1.0]], "float": 1.5, "none": None,
            "ndarray": np.zeros(spec.shape, dtype=np.float32)}[kind]


def tensor_fault(data, spec: TSpec, rank: int) -> tuple[str, TSpec | Any]:
    """A fault on one tensor argument: ('not_tensor' | 'rank' | 'dtype', replacement)."""
    kind = data.draw(st.sampled_from(["not_tensor", "rank", "dtype"]), label="tensor fault")
    if kind == "not_tensor":
        return kind, non_tensor(data.draw(NON_TENSORS), spec)
    if kind == "rank":
        new_rank = data.draw(st.sampled_from([r for r in (2, 3, 4, 5, 6) if r != rank]))
        shape = (tuple(spec.shape) + (2, 2, 2))[:new_rank] if new_rank > len(spec.shape) \
            else tuple(spec.shape)[len(spec.shape) - new_rank:]
        return kind, TSpec(shape, spec.dtype, "contiguous", "uniform", spec.seed)
    dtype = data.draw(st.sampled_from(BAD_DTYPES))
    return kind, TSpec(spec.shape, dtype, spec.layout, "uniform", spec.seed)


FAULT_ERR = {"not_tensor": TypeError, "rank": ValueError, "dtype": TypeError}


def materialize(obj, device):
    return obj.build(device) if isinstance(obj, TSpec) else obj


BAD_INTS = st.sampled_from([0, -1, 1.5, True, "2", None])


def bad_int_expect(value, minimum=1) -> type:
    if isinstance(value, bool) or not isinstance(value, int):
        return TypeError
    return ValueError


# --------------------------------------------------------------------------------------------
# wavelets
# --------------------------------------------------------------------------------------------

PAD_MODES = (None, "zero", "symmetric", "reflect", "periodic", "constant", "periodization")


def case_haar_dwt2d(data, module=False):
    fault = data.draw(st.sampled_from([None] * 6 + ["x", "odd", "empty", "pad_mode", "reflect1"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype, has_f64_kernel=False)
    B = draw_batch(data, backend)
    C = data.draw(st.integers(0 if fault is None else 1, 3))
    H, W = small_sides(data, backend), small_sides(data, backend)
    pad = data.draw(st.sampled_from(PAD_MODES))
    if fault is None:
        if pad is None:
            H, W = H + H % 2, W + W % 2
        if pad == "reflect" and (H == 1 or W == 1):
            pad = "symmetric"
    spec = draw_tspec(data, (B, C, H, W), dtype)
    expect = None
    x: Any = spec
    if fault == "x":
        kind, x = tensor_fault(data, spec, 4)
        expect = (FAULT_ERR[kind], ("x",))
    elif fault == "odd":
        pad, x = None, TSpec((B, C, 2 * H + 1, W), dtype)
        expect = (ValueError, ("x",))
    elif fault == "empty":
        x = TSpec((B, C, 0, W), dtype)
        expect = (ValueError, ("x",))
    elif fault == "pad_mode":
        pad = data.draw(st.sampled_from(["edge", "Zero", 1, "", "wrap"]))
        expect = (ValueError, ("pad_mode",))
    elif fault == "reflect1":
        pad, x = "reflect", TSpec((B, C, 1, 2 * W + 1), dtype)
        expect = (ValueError, ("pad_mode",))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    xt = materialize(x, device)

    def call():
        if module:
            return uhrops.HaarDWT2d(1, pad)(xt)
        return uhrops.haar_dwt2d(xt, pad)

    return Case(call, lambda: O.dwt(reference(xt), pad), expect, backend, dtype,
                meta=device == "meta", note=dict(fault=fault, pad=pad, spec=spec))


def case_haar_idwt2d(data, module=False):
    fault = data.draw(st.sampled_from([None] * 4 + ["y", "bands", "output_size"]
                                      if module else [None] * 4 + ["y", "bands"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype, has_f64_kernel=False)
    B = draw_batch(data, backend)
    C = data.draw(st.integers(1, 3))
    h, w = small_sides(data, backend, hi=6), small_sides(data, backend, hi=6)
    spec = draw_tspec(data, (B, C, 4, h, w), dtype)
    y: Any = spec
    expect = None
    out_size = None
    if module and data.draw(st.booleans()):
        out_size = (2 * h - data.draw(st.integers(0, 1)), 2 * w - data.draw(st.integers(0, 1)))
    if fault == "y":
        kind, y = tensor_fault(data, spec, 5)
        expect = (FAULT_ERR[kind], ("y",))
        if module and kind == "not_tensor" and isinstance(y, list):
            # the module reads a list as (low, highs)
            expect = ((TypeError, ValueError), ("y", "low", "highs"))
    elif fault == "bands":
        y = TSpec((B, C, data.draw(st.sampled_from([1, 3, 5, 16])), h, w), dtype)
        expect = (ValueError, ("y",))
    elif fault == "output_size":
        out_size = data.draw(st.sampled_from([(2 * h + 1, 2 * w), (2 * h, 2 * w - 2), (0, 0),
                                              (-1, 2 * w), 5, "ab", (2 * h,)]))
        expect = ((ValueError, TypeError), ("output_size",))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    yt = materialize(y, device)

    def call():
        if module:
            return uhrops.HaarIDWT2d()(yt, output_size=out_size)
        return uhrops.haar_idwt2d(yt)

    def oracle():
        out = O.idwt(reference(yt))
        return out if out_size is None else out[..., :out_size[0], :out_size[1]]

    return Case(call, oracle, expect, backend, dtype, meta=device == "meta",
                note=dict(fault=fault, out_size=out_size, spec=spec))


def level_inputs(H: int, W: int, levels: int) -> list[tuple[int, int]]:
    sizes = [(H, W)]
    for _ in range(levels - 1):
        h, w = sizes[-1]
        sizes.append((-(-h // 2), -(-w // 2)))
    return sizes


def wavedec_valid(H, W, levels, pad) -> bool:
    for h, w in level_inputs(H, W, levels):
        if pad is None and (h % 2 or w % 2):
            return False
        if pad == "reflect" and ((h % 2 and h < 2) or (w % 2 and w < 2)):
            return False
    return True


def case_haar_wavedec2(data, module=False):
    fault = data.draw(st.sampled_from([None] * 5 + ["x", "levels", "pad_mode", "sizes"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype, has_f64_kernel=False)
    B = draw_batch(data, backend)
    C = data.draw(st.integers(1, 3))
    levels = data.draw(st.integers(1, 3 if backend == "triton" else 4))
    pad = data.draw(st.sampled_from(PAD_MODES))
    if fault is None or fault != "sizes":
        # sizes that fit the mode at every level
        if pad is None:
            m = 2 ** levels
            H = m * data.draw(st.integers(1, max(1, 12 // m)))
            W = m * data.draw(st.integers(1, max(1, 12 // m)))
        else:
            H, W = small_sides(data, backend, 2), small_sides(data, backend, 2)
            if not wavedec_valid(H, W, levels, pad):
                pad = "symmetric"
    else:  # an odd side at some level without padding, or reflect of a 1-sample side
        pad = data.draw(st.sampled_from([None, "reflect"]))
        H = 2 * data.draw(st.integers(0, 3)) + 1 if pad is None else 1
        W = 2 * data.draw(st.integers(1, 3))
        if pad == "reflect":
            levels = max(levels, 1)
    spec = draw_tspec(data, (B, C, H, W), dtype)
    x: Any = spec
    expect = None
    if fault == "x":
        kind, x = tensor_fault(data, spec, 4)
        expect = (FAULT_ERR[kind], ("x",))
    elif fault == "levels":
        levels = data.draw(BAD_INTS)
        expect = (bad_int_expect(levels), ("levels",))
    elif fault == "pad_mode":
        pad = data.draw(st.sampled_from(["edge", "Zero", 1, "", "wrap"]))
        expect = (ValueError, ("pad_mode",))
    elif fault == "sizes":
        expect = (ValueError, ("x", "pad_mode", "levels"))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    xt = materialize(x, device)

    def call():
        if module:
            out = uhrops.HaarDWT2d(levels, pad)(xt)
            if isinstance(out, torch.Tensor):  # levels == 1: the haar_dwt2d layout
                return [out[:, :, 0], [out[:, :, 1:]]]
            return [out[0], list(out[1])]
        low, highs = uhrops.haar_wavedec2(xt, levels, pad)
        return [low, list(highs)]

    def oracle():
        low, highs = O.wavedec(reference(xt), levels, pad)
        return [low, highs]

    return Case(call, oracle, expect, backend, dtype, meta=device == "meta",
                note=dict(fault=fault, levels=levels, pad=pad, spec=spec))


def case_haar_waverec2(data, module=False):
    fault = data.draw(st.sampled_from([None] * 6 + ["low", "highs_type", "highs_empty",
                                                    "highs_rank", "highs_dtype", "highs_shape",
                                                    "low_size", "output_size", "device"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype, has_f64_kernel=False)
    if fault == "device":
        device = "cpu"
    B = draw_batch(data, backend)
    C = data.draw(st.integers(1, 3))
    levels = data.draw(st.integers(1, 3))
    H, W = small_sides(data, backend, 1), small_sides(data, backend, 1)
    shapes_low, shapes_highs = O.wavedec(torch.zeros(B, C, H, W, dtype=F64), levels, "zero")
    specs = [draw_tspec(data, shapes_low.shape, dtype)] + [
        draw_tspec(data, h.shape, dtype) for h in shapes_highs]
    low: Any = specs[0]
    highs: Any = list(specs[1:])
    out_size = data.draw(st.sampled_from([None, "orig", "even"]))
    h1, w1 = shapes_highs[0].shape[-2:]
    out_size = {None: None, "orig": (H, W), "even": (2 * h1, 2 * w1)}[out_size]
    expect = None
    if fault == "low":
        kind, low = tensor_fault(data, specs[0], 4)
        expect = (FAULT_ERR[kind], ("low",))
    elif fault == "highs_type":
        highs = data.draw(st.sampled_from(["tuple-of-none", "tensor", "dict"]))
        if highs == "tuple-of-none":
            highs, expect = (None,), (TypeError, ("highs[0]",))
        elif highs == "tensor":
            highs, expect = specs[1], (TypeError, ("highs",))
        else:
            highs, expect = {0: specs[1]}, (TypeError, ("highs",))
    elif fault == "highs_empty":
        highs, expect = [], (ValueError, ("highs",))
    elif fault == "highs_rank":
        i = data.draw(st.integers(0, levels - 1))
        highs[i] = TSpec(specs[1 + i].shape[1:], dtype)
        expect = (ValueError, (f"highs[{i}]",))
    elif fault == "highs_dtype":
        i = data.draw(st.integers(0, levels - 1))
        other = data.draw(st.sampled_from([d for d in FLOATS + BAD_DTYPES if d != dtype]))
        highs[i] = TSpec(specs[1 + i].shape, other)
        expect = (TypeError, (f"highs[{i}]",))
    elif fault == "highs_shape":
        i = data.draw(st.integers(0, levels - 1))
        s = list(specs[1 + i].shape)
        s[data.draw(st.sampled_from([1, 2]))] += 1
        highs[i] = TSpec(tuple(s), dtype)
        expect = (ValueError, (f"highs[{i}]",))
    elif fault == "low_size":
        s = list(specs[0].shape)
        s[3] += 1
        low = TSpec(tuple(s), dtype)
        expect = (ValueError, ("low",) + tuple(f"highs[{i}]" for i in range(levels)))
    elif fault == "output_size":
        out_size = data.draw(st.sampled_from([(2 * h1 + 1, 2 * w1), (2 * h1 - 2, 2 * w1),
                                              (2 * h1, 0), 7, "ab", (2.5, 2 * w1),
                                              (2 * h1, 2 * w1, 1)]))
        expect = ((TypeError, ValueError), ("output_size",))
    elif fault == "device":
        i = data.draw(st.integers(0, levels - 1))
        expect = (ValueError, (f"highs[{i}]",))
        highs[i] = ("meta", specs[1 + i])
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    lowt = materialize(low, device)
    if isinstance(highs, (list, tuple)):
        hs = [h[1].build("meta") if isinstance(h, tuple) else materialize(h, device)
              for h in highs]
        hs = tuple(hs) if isinstance(highs, tuple) else hs
    else:
        hs = materialize(highs, device) if not isinstance(highs, dict) else \
            {k: materialize(v, device) for k, v in highs.items()}

    def call():
        if module:
            return uhrops.HaarIDWT2d()((lowt, hs), output_size=out_size)
        return uhrops.haar_waverec2(lowt, hs, out_size)

    return Case(call, lambda: O.waverec(reference(lowt), [reference(h) for h in hs], out_size),
                expect, backend, dtype, tol_scale=2.0, meta=device == "meta",
                note=dict(fault=fault, levels=levels, size=(H, W), out_size=out_size))


def case_haar_packet2d(data, module=False):
    fault = data.draw(st.sampled_from([None] * 5 + ["x", "levels", "size"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype, has_f64_kernel=False)
    B = draw_batch(data, backend)
    C = data.draw(st.integers(1, 3))
    levels = data.draw(st.integers(1, 2 if backend == "triton" else 3))
    m = 2 ** levels
    H = m * data.draw(st.integers(1, max(1, 12 // m)))
    W = m * data.draw(st.integers(1, max(1, 12 // m)))
    spec = draw_tspec(data, (B, C, H, W), dtype)
    x: Any = spec
    expect = None
    if fault == "x":
        kind, x = tensor_fault(data, spec, 4)
        expect = (FAULT_ERR[kind], ("x",))
    elif fault == "levels":
        levels = data.draw(st.sampled_from([0, -1, 9, 1.0, True, "1"]))
        expect = (bad_int_expect(levels), ("levels",))
    elif fault == "size":
        x = TSpec((B, C, H + data.draw(st.integers(1, m - 1)) if m > 1 else H + 1, W), dtype)
        expect = (ValueError, ("x",))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    xt = materialize(x, device)

    def call():
        return uhrops.HaarPacket2d(levels)(xt) if module else uhrops.haar_packet2d(xt, levels)

    return Case(call, lambda: O.packet(reference(xt), levels), expect, backend, dtype,
                tol_scale=2.0, meta=device == "meta", note=dict(fault=fault, levels=levels))


def case_haar_ipacket2d(data, module=False):
    fault = data.draw(st.sampled_from([None] * 4 + ["y", "bands"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype, has_f64_kernel=False)
    B = draw_batch(data, backend)
    C = data.draw(st.integers(1, 3))
    levels = data.draw(st.integers(1, 2 if backend == "triton" else 3))
    h, w = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    spec = draw_tspec(data, (B, C, 4 ** levels, h, w), dtype)
    y: Any = spec
    expect = None
    if fault == "y":
        kind, y = tensor_fault(data, spec, 5)
        expect = (FAULT_ERR[kind], ("y",))
    elif fault == "bands":
        y = TSpec((B, C, data.draw(st.sampled_from([1, 2, 3, 8, 12, 32])), h, w), dtype)
        expect = (ValueError, ("y",))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    yt = materialize(y, device)

    def call():
        return uhrops.HaarIPacket2d()(yt) if module else uhrops.haar_ipacket2d(yt)

    return Case(call, lambda: O.ipacket(reference(yt)), expect, backend, dtype, tol_scale=2.0,
                meta=device == "meta", note=dict(fault=fault, levels=levels))


def case_module_ctor(data, cls, args_ok, bad):
    """Constructor faults of the module twins (raised when built, naming the argument)."""
    name, value, etype = data.draw(st.sampled_from(bad))

    def call():
        kwargs = dict(args_ok)
        kwargs[name] = value
        return cls(**kwargs)

    return Case(call, None, (etype, (name,)), "torch", torch.float32,
                note=dict(ctor=cls.__name__, arg=name, value=value))


# --------------------------------------------------------------------------------------------
# pyramids
# --------------------------------------------------------------------------------------------


def case_pyr_down(data, module=False):
    fault = data.draw(st.sampled_from([None] * 4 + ["x", "empty"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype)
    B = draw_batch(data, backend)
    C = data.draw(st.integers(0 if fault is None else 1, 3))
    H, W = small_sides(data, backend), small_sides(data, backend)
    spec = draw_tspec(data, (B, C, H, W), dtype)
    x: Any = spec
    expect = None
    if fault == "x":
        kind, x = tensor_fault(data, spec, 4)
        expect = (FAULT_ERR[kind], ("x",))
    elif fault == "empty":
        x = TSpec((B, C, H, 0), dtype)
        expect = (ValueError, ("x",))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    xt = materialize(x, device)
    return Case(lambda: uhrops.pyr_down(xt), lambda: O.pyr_down(reference(xt)), expect, backend,
                dtype, meta=device == "meta", note=dict(fault=fault))


def case_pyr_up(data, module=False):
    fault = data.draw(st.sampled_from([None] * 4 + ["x", "size", "size_type"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype)
    B = draw_batch(data, backend)
    C = data.draw(st.integers(1, 3))
    h, w = small_sides(data, backend, hi=7), small_sides(data, backend, hi=7)
    spec = draw_tspec(data, (B, C, h, w), dtype)
    size = data.draw(st.sampled_from([None, (0, 0), (1, 0), (0, 1), (1, 1)]))
    if size is not None:
        size = (2 * h - size[0], 2 * w - size[1])
    x: Any = spec
    expect = None
    if fault == "x":
        kind, x = tensor_fault(data, spec, 4)
        expect = (FAULT_ERR[kind], ("x",))
    elif fault == "size":
        size = data.draw(st.sampled_from([
            s for s in [(2 * h + 1, 2 * w), (2 * h - 2, 2 * w), (h, w), (2 * h, 2 * w + 2),
                        (0, 2 * w)]
            if not (s[0] in (2 * h - 1, 2 * h) and s[1] in (2 * w - 1, 2 * w))]))
        expect = (ValueError, ("size",))
    elif fault == "size_type":
        size = data.draw(st.sampled_from([2 * h, (2.0 * h, 2 * w), "ab", (2 * h,), [None, 1]]))
        expect = (TypeError, ("size", "size[0]", "size[1]"))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    xt = materialize(x, device)
    return Case(lambda: uhrops.pyr_up(xt, size), lambda: O.pyr_up(reference(xt), size), expect,
                backend, dtype, meta=device == "meta", note=dict(fault=fault, size=size))


def case_pyramid(data, which: str, module=False):
    fault = data.draw(st.sampled_from([None] * 4 + ["x", "levels", "too_many"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype)
    B = draw_batch(data, backend)
    C = data.draw(st.integers(1, 3))
    H, W = small_sides(data, backend, hi=14), small_sides(data, backend, hi=14)
    most = O.max_levels(H, W)
    if most == 0 and fault is None:
        H, W, most = H + 1, W + 1, O.max_levels(H + 1, W + 1)
    levels = data.draw(st.integers(1, max(1, min(most, 3 if backend == "triton" else 4))))
    spec = draw_tspec(data, (B, C, H, W), dtype)
    x: Any = spec
    expect = None
    if fault == "x":
        kind, x = tensor_fault(data, spec, 4)
        expect = (FAULT_ERR[kind], ("x",))
    elif fault == "levels":
        levels = data.draw(BAD_INTS)
        expect = (bad_int_expect(levels), ("levels",))
    elif fault == "too_many":
        levels = most + data.draw(st.integers(1, 3))
        expect = (ValueError, ("levels",))
    if module and fault == "levels":  # the module checks levels when it is built
        pass
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    xt = materialize(x, device)
    fn = {"gaussian": uhrops.gaussian_pyramid, "laplacian": uhrops.laplacian_pyramid}[which]
    mod = {"gaussian": uhrops.GaussianPyramid, "laplacian": uhrops.LaplacianPyramid}[which]
    ofn = {"gaussian": O.gaussian_pyramid, "laplacian": O.laplacian_pyramid}[which]

    def call():
        return mod(levels)(xt) if module else fn(xt, levels)

    return Case(call, lambda: ofn(reference(xt), levels), expect, backend, dtype, tol_scale=2.0,
                meta=device == "meta", note=dict(fault=fault, levels=levels, size=(H, W)))


def case_laplacian_reconstruct(data, module=False):
    fault = data.draw(st.sampled_from([None] * 5 + ["type", "short", "entry", "shape", "dtype",
                                                    "device"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype)
    if fault == "device":
        device = "cpu"
    B = draw_batch(data, backend)
    C = data.draw(st.integers(1, 3))
    H, W = small_sides(data, backend, 2, 14), small_sides(data, backend, 2, 14)
    levels = data.draw(st.integers(1, min(O.max_levels(H, W), 3)))
    shapes = [tuple(t.shape) for t in O.gaussian_pyramid(torch.zeros(B, C, H, W, dtype=F64),
                                                         levels)]
    specs = [draw_tspec(data, s, dtype) for s in shapes]
    pyr: Any = list(specs)
    expect = None
    i = data.draw(st.integers(1, levels))
    if fault == "type":
        pyr, expect = specs[0], (TypeError, ("pyramid",))
    elif fault == "short":
        pyr, expect = specs[:1], (ValueError, ("pyramid",))
    elif fault == "entry":
        kind, pyr[i] = tensor_fault(data, specs[i], 4)
        expect = (FAULT_ERR[kind], (f"pyramid[{i}]",))
    elif fault == "shape":
        s = list(shapes[i])
        s[data.draw(st.sampled_from([1, 2, 3]))] += 1
        pyr[i] = TSpec(tuple(s), dtype)
        expect = (ValueError, (f"pyramid[{i}]",))
    elif fault == "dtype":
        pyr[i] = TSpec(shapes[i], data.draw(st.sampled_from([d for d in FLOATS if d != dtype])))
        expect = (TypeError, (f"pyramid[{i}]",))
    elif fault == "device":
        pyr[i] = ("meta", specs[i])
        expect = (ValueError, (f"pyramid[{i}]",))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    if isinstance(pyr, list):
        pt = [p[1].build("meta") if isinstance(p, tuple) else materialize(p, device) for p in pyr]
    else:
        pt = materialize(pyr, device)
    return Case(lambda: uhrops.laplacian_reconstruct(pt),
                lambda: O.laplacian_reconstruct([reference(p) for p in pt]), expect, backend,
                dtype, tol_scale=2.0, meta=device == "meta", note=dict(fault=fault, i=i))


# --------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------

ATT_TOL = {torch.float64: 1.0, torch.float32: 5.0, torch.float16: 8.0, torch.bfloat16: 8.0}


def case_context_attention(data, module=False):
    fault = data.draw(st.sampled_from(
        [None] * 6 + ["query", "key", "value", "dtype_mismatch", "batch", "channels",
                      "positions", "no_channels", "empty_key", "scale_type", "scale_value",
                      "center", "device"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype, has_f64_kernel=False)
    if fault == "device":
        device = "cpu"
    B = draw_batch(data, backend)
    cq, cv = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    hq, wq = data.draw(st.integers(0 if fault is None else 1, 5)), data.draw(st.integers(1, 5))
    hk, wk = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    mag = 2.0
    q_spec = draw_tspec(data, (B, cq, hq, wq), dtype, magnitude=mag)
    k_spec = draw_tspec(data, (B, cq, hk, wk), dtype, magnitude=mag)
    v_spec = draw_tspec(data, (B, cv, hk, wk), dtype, magnitude=mag)
    scale = data.draw(st.sampled_from([1.0, 0.5, 2, -1.0, 0.0, 1e-3]))
    center = data.draw(st.booleans())
    args: dict[str, Any] = {"query": q_spec, "key": k_spec, "value": v_spec}
    expect = None
    if fault in ("query", "key", "value"):
        kind, args[fault] = tensor_fault(data, args[fault], 4)
        expect = (FAULT_ERR[kind], (fault,))
    elif fault == "dtype_mismatch":
        which = data.draw(st.sampled_from(["key", "value"]))
        other = data.draw(st.sampled_from([d for d in FLOATS if d != dtype]))
        s = args[which]
        args[which] = TSpec(s.shape, other)
        expect = (TypeError, (which,))
    elif fault == "batch":
        which = data.draw(st.sampled_from(["key", "value"]))
        s = args[which]
        args[which] = TSpec((s.shape[0] + 1,) + s.shape[1:], dtype)
        expect = (ValueError, ("query", "key", "value"))
    elif fault == "channels":
        args["key"] = TSpec((B, cq + 1, hk, wk), dtype)
        expect = (ValueError, ("key",))
    elif fault == "positions":
        args["value"] = TSpec((B, cv, hk + 1, wk), dtype)
        expect = (ValueError, ("key", "value"))
    elif fault == "no_channels":
        if data.draw(st.booleans()):
            args["query"], args["key"] = TSpec((B, 0, hq or 1, wq), dtype), TSpec((B, 0, hk, wk),
                                                                                  dtype)
        else:
            args["value"] = TSpec((B, 0, hk, wk), dtype)
        expect = (ValueError, ("query", "value"))
    elif fault == "empty_key":
        args["key"], args["value"] = TSpec((B, cq, 0, wk), dtype), TSpec((B, cv, 0, wk), dtype)
        expect = (ValueError, ("key",))
    elif fault == "scale_type":
        scale = data.draw(st.sampled_from(["1", None, True, torch.tensor(1.0), [1.0]]))
        expect = (TypeError, ("scale",))
    elif fault == "scale_value":
        scale = data.draw(st.sampled_from([math.inf, -math.inf, math.nan]))
        expect = (ValueError, ("scale",))
    elif fault == "center":
        center = data.draw(st.sampled_from([1, 0, "yes", None]))
        expect = (TypeError, ("center",))
    elif fault == "device":
        which = data.draw(st.sampled_from(["key", "value"]))
        args[which] = ("meta", args[which])
        expect = (ValueError, (which,))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    t = {k: (v[1].build("meta") if isinstance(v, tuple) else materialize(v, device))
         for k, v in args.items()}
    return Case(lambda: uhrops.context_attention(t["query"], t["key"], t["value"], scale=scale,
                                                 center=center),
                lambda: O.attention(reference(t["query"]), reference(t["key"]),
                                    reference(t["value"]), float(scale), center),
                expect, backend, dtype, tol_scale=ATT_TOL[dtype] * (4.0 if center else 1.0),
                meta=device == "meta", note=dict(fault=fault, scale=scale, center=center))


def case_local_context_correlation(data, module=True):
    fault = data.draw(st.sampled_from([None] * 4 + ["ctor", "local", "context", "channels"]))
    if fault == "ctor":
        return case_module_ctor(data, uhrops.LocalContextCorrelation, {"channels": 4}, [
            ("channels", 0, ValueError), ("channels", 2.0, TypeError),
            ("key_channels", 0, ValueError), ("key_channels", "8", TypeError),
            ("center", 1, TypeError), ("center", "yes", TypeError)])
    dtype = data.draw(st.sampled_from((torch.float32, torch.float64, torch.bfloat16)))
    backend, device, unavailable = draw_backend_device(data, dtype, has_f64_kernel=False)
    device = "cpu"
    unavailable = backend == "triton" and dtype == F64
    B = draw_batch(data, backend)
    c, kc = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    center = data.draw(st.booleans())
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    block = uhrops.LocalContextCorrelation(c, kc, center=center).to(dtype)
    with torch.no_grad():  # gamma starts at 0: make the output depend on the attention
        block.gamma.fill_(data.draw(st.sampled_from([0.5, -1.25, 2.0])))
        for conv in (block.conv_query, block.conv_key, block.conv_value):
            conv.weight.mul_(50)
    loc = draw_tspec(data, (B, c, data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))),
                     dtype, allow_special=False)
    ctx = draw_tspec(data, (B, c, data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))),
                     dtype, allow_special=False)
    args: dict[str, Any] = {"local": loc, "context": ctx}
    expect = None
    if fault in ("local", "context"):
        kind, args[fault] = tensor_fault(data, args[fault], 4)
        expect = (FAULT_ERR[kind], (fault,))
    elif fault == "channels":
        which = data.draw(st.sampled_from(["local", "context"]))
        s = args[which]
        args[which] = TSpec((s.shape[0], c + 1) + s.shape[2:], dtype)
        expect = (ValueError, (which,))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    t = {k: materialize(v, device) for k, v in args.items()}
    tol = {torch.float32: 10.0, torch.float64: 1.0, torch.bfloat16: 10.0}[dtype]
    return Case(lambda: block(t["local"], t["context"]),
                lambda: O.local_context_correlation(block, reference(t["local"]),
                                                    reference(t["context"])),
                expect, backend, dtype, tol_scale=tol, note=dict(fault=fault, center=center))


# --------------------------------------------------------------------------------------------
# tiling
# --------------------------------------------------------------------------------------------


def draw_grid(data, H, W, backend="torch"):
    kind = data.draw(st.sampled_from(["stride", "min_overlap"]))
    ph = data.draw(st.integers(1, max(1, min(H + 2, 7))))
    pw = data.draw(st.integers(1, max(1, min(W + 2, 7))))
    if kind == "stride":
        return PatchGrid.from_stride((H, W), (ph, pw), (data.draw(st.integers(1, ph)),
                                                        data.draw(st.integers(1, pw))))
    ov = data.draw(st.integers(0, min(ph, pw) - 1))
    return PatchGrid.from_min_overlap((H, W), (ph, pw), ov)


def case_patch_grid(data, module=False):
    fault = data.draw(st.sampled_from([None] * 5 + ["image_size", "patch_size", "stride",
                                                    "min_overlap", "starts"]))
    kind = data.draw(st.sampled_from(["stride", "min_overlap", "explicit"]))
    H, W = data.draw(st.integers(1, 300)), data.draw(st.integers(1, 300))
    ph, pw = data.draw(st.integers(1, 80)), data.draw(st.integers(1, 80))
    sh, sw = data.draw(st.integers(1, ph)), data.draw(st.integers(1, pw))
    ov = data.draw(st.sampled_from([0, 0.5, 1, 7, 20.25, "edge"]))
    if ov == "edge":  # the largest legal overlap: a stride of exactly one pixel
        ov = min(ph, pw) - 1
    if ov > min(ph, pw) - 1:  # a stride below one pixel is refused (the "min_overlap" fault)
        ov = 0
    image_size: Any = data.draw(st.sampled_from([(H, W), [H, W], torch.Size([H, W])])) \
        if H != W else data.draw(st.sampled_from([H, (H, W)]))
    patch_size: Any = (ph, pw) if ph != pw else ph
    stride: Any = (sh, sw)
    ys = tuple(mmseg_starts(H, ph, sh))
    xs = tuple(mmseg_starts(W, pw, sw))
    expect = None
    if fault == "image_size":
        image_size = data.draw(st.sampled_from([0, (H, 0), (-3, W), (H, W, 1), 2.5, "big"]))
        expect = ((TypeError, ValueError), ("image_size", "image_size[0]", "image_size[1]"))
    elif fault == "patch_size":
        patch_size = data.draw(st.sampled_from([0, (ph, 0), (1.5, 2), None, (ph,)]))
        expect = ((TypeError, ValueError), ("patch_size", "patch_size[0]", "patch_size[1]"))
    elif fault == "stride":
        kind = "stride"
        stride = data.draw(st.sampled_from([0, (ph + 1, sw), (sh, pw + 1), 1.5, (sh, -1),
                                            (sh, 0), -1]))
        expect = ((TypeError, ValueError), ("stride", "stride[0]", "stride[1]"))
    elif fault == "min_overlap":
        kind = "min_overlap"
        H, W = max(H, ph + 1), max(W, pw + 1)
        image_size = (H, W)
        # just past the edge: a stride below one pixel (2.999 on 3-pixel patches was a
        # 49-million-patch grid of repeated starts)
        ov = data.draw(st.sampled_from([-1, min(ph, pw), math.nan, math.inf, "5", None,
                                        min(ph, pw) - 0.5, min(ph, pw) - 1e-6,
                                        min(ph, pw) - 1 + 1e-9]))
        expect = ((TypeError, ValueError), ("min_overlap",))
    elif fault == "starts":
        kind = "explicit"
        H, W = max(H, ph + 2), max(W, pw + 2)
        image_size = (H, W)
        ys, xs = tuple(mmseg_starts(H, ph, sh)), tuple(mmseg_starts(W, pw, sw))
        bad = data.draw(st.sampled_from(["unsorted", "past", "negative", "empty", "float",
                                         "repeated"]))
        ys = {"unsorted": (H - ph, 0), "past": (0, H - ph + 1), "negative": (-1, 0),
              "empty": (), "float": (0.0, 1), "repeated": (0, H - ph, H - ph)}[bad]
        expect = ((TypeError, ValueError), ("ys", "ys[i]"))

    def call():
        if kind == "stride":
            return PatchGrid.from_stride(image_size, patch_size, stride)
        if kind == "min_overlap":
            return PatchGrid.from_min_overlap(image_size, patch_size, ov)
        return PatchGrid(image_size, patch_size, ys, xs)

    def check(grid):
        """Starts against the oracle rules, and the coverage of every pixel."""
        if kind == "stride":
            want = (mmseg_starts(H, ph, sh), mmseg_starts(W, pw, sw))
        elif kind == "min_overlap":
            want = (glnet_starts(H, ph, ov), glnet_starts(W, pw, ov))
        else:
            want = (list(ys), list(xs))
        assert (list(grid.ys), list(grid.xs)) == want, (grid, want)
        assert grid.image_size == (H, W) and grid.patch_size == (ph, pw)
        for starts, size, p in ((grid.ys, H, ph), (grid.xs, W, pw)):
            covered = torch.zeros(size, dtype=torch.bool)
            for s in starts:
                covered[s:s + p] = True
            assert bool(covered.all()), f"pixels left uncovered: {grid}"
        assert len(grid) == len(grid.ys) * len(grid.xs) == grid.boxes.shape[0]
        return grid

    return Case(call, None, expect, "torch", torch.float32, note=dict(fault=fault, kind=kind),
                check=check)


def case_extract_patches(data, module=False):
    fault = data.draw(st.sampled_from([None] * 4 + ["image", "grid", "size"]))
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype, has_f64_kernel=False)
    B = draw_batch(data, backend)
    C = data.draw(st.integers(0 if fault is None else 1, 3))
    H, W = small_sides(data, backend), small_sides(data, backend)
    grid = draw_grid(data, H, W, backend)
    spec = draw_tspec(data, (B, C, H, W), dtype)
    x: Any = spec
    g: Any = grid
    expect = None
    if fault == "image":
        kind, x = tensor_fault(data, spec, 4)
        expect = (FAULT_ERR[kind], ("image",))
    elif fault == "grid":
        g = data.draw(st.sampled_from([None, (H, W), "grid"]))
        expect = (TypeError, ("grid",))
    elif fault == "size":
        x = TSpec((B, C, H + 1, W), dtype)
        expect = (ValueError, ("image",))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    xt = materialize(x, device)
    return Case(lambda: uhrops.extract_patches(xt, g), lambda: O.extract(reference(xt), grid),
                expect, backend, dtype, meta=device == "meta", note=dict(fault=fault, grid=grid))


# weight scales for a weighted mean (weights in [0.01, 1.01) times these): Σw overflowed
# float32 at 1e38, 1/Σw at 1e-39; float64 weights far outside float32 became 0 or inf
WEIGHT_SCALES = {torch.float32: (1.0, 1.0, 1.0, 1e38, 1e-39, 1e-45),
                 torch.float64: (1.0, 1.0, 1e38, 1e-39, 1e-300, 1e300)}


def case_merge_patches(data, module=False):
    fault = data.draw(st.sampled_from([None] * 5 + ["patches", "grid", "count", "psize",
                                                    "reduction", "weight_str", "weight_shape",
                                                    "weight_dtype", "weight_negative",
                                                    "weight_device"]))
    if module and fault == "reduction" and data.draw(st.booleans()):
        return case_module_ctor(data, uhrops.MergePatches, {}, [
            ("reduction", "max", ValueError), ("reduction", None, ValueError)])
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype, has_f64_kernel=False)
    if fault == "weight_device":
        device = "cpu"
    B = data.draw(st.integers(1, 2))
    C = data.draw(st.integers(0 if fault is None else 1, 3))
    H, W = small_sides(data, backend), small_sides(data, backend)
    grid = draw_grid(data, H, W, backend)
    n = len(grid)
    ph, pw = grid.patch_size
    spec = draw_tspec(data, (B * n, C, ph, pw), dtype)
    reduction = data.draw(st.sampled_from(["mean", "sum"]))
    wkind = data.draw(st.sampled_from([None, "constant", "gaussian", "tensor"]))
    weight: Any = wkind
    wscale = 1.0
    if wkind == "tensor":
        wdtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
        weight = TSpec((ph, pw), wdtype, "contiguous", "uniform", data.draw(st.integers(0, 99)))
        if reduction == "mean":  # only ratios matter: any finite scale gives the same mean
            wscale = data.draw(st.sampled_from(WEIGHT_SCALES[wdtype]), label="weight scale")
    p: Any = spec
    g: Any = grid
    expect = None
    if fault == "patches":
        kind, p = tensor_fault(data, spec, 4)
        expect = (FAULT_ERR[kind], ("patches",))
    elif fault == "grid":
        g = data.draw(st.sampled_from([None, (H, W), "grid"]))
        expect = (TypeError, ("grid",))
    elif fault == "count":
        bad_count = data.draw(st.sampled_from([0, B * n + 1, B * n - 1]))
        if bad_count % n == 0 and bad_count > 0:  # one patch per image is any count
            bad_count = 0
        p = TSpec((bad_count, C, ph, pw), dtype)
        expect = (ValueError, ("patches",))
    elif fault == "psize":
        p = TSpec((B * n, C, ph + 1, pw), dtype)
        expect = (ValueError, ("patches",))
    elif fault == "reduction":
        reduction = data.draw(st.sampled_from(["max", "Mean", None, 1]))
        expect = (ValueError, ("reduction",))
    elif fault == "weight_str":
        weight = data.draw(st.sampled_from(["gauss", "ones", ""]))
        expect = (ValueError, ("weight",))
    elif fault == "weight_shape":
        weight = TSpec((ph + 1, pw), torch.float32)
        expect = (ValueError, ("weight",))
    elif fault == "weight_dtype":
        weight = TSpec((ph, pw), data.draw(st.sampled_from(BAD_DTYPES)))
        expect = (TypeError, ("weight",))
    elif fault == "weight_negative":
        weight = ("neg", TSpec((ph, pw), torch.float32, seed=3))
        expect = (ValueError, ("weight",))
    elif fault == "weight_device":
        weight = ("meta", TSpec((ph, pw), torch.float32))
        expect = (ValueError, ("weight",))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    pt = materialize(p, device)
    if isinstance(weight, tuple):
        wt = weight[1].build("meta") if weight[0] == "meta" else -weight[1].build().abs() - 0.5
    else:
        wt = materialize(weight, device if isinstance(weight, TSpec) else "cpu")
        if isinstance(weight, TSpec) and fault not in ("weight_shape", "weight_dtype"):
            wt = wt.abs() + 0.01 if device != "meta" else wt  # valid weights are >= 0
            wt = wt * wscale

    def call():
        if module:
            return uhrops.MergePatches(reduction, wt)(pt, g)
        return uhrops.merge_patches(pt, g, reduction, wt)

    def oracle():
        w = wt if not isinstance(wt, torch.Tensor) else reference(wt)
        return O.merge(reference(pt), grid, reduction, w)

    return Case(call, oracle, expect, backend, dtype, tol_scale=4.0, meta=device == "meta",
                note=dict(fault=fault, grid=grid, reduction=reduction, weight=wkind,
                          wscale=wscale))


def case_extract_contexts(data, module=False):
    fault = data.draw(st.sampled_from([None] * 5 + ["image", "grid", "scale_type", "scale_value",
                                                    "size", "pad_value", "antialias"]))
    if module and fault in ("scale_type", "scale_value") and data.draw(st.booleans()):
        return case_module_ctor(data, uhrops.ExtractContexts, {"scale": 2.0}, [
            ("scale", 0, ValueError), ("scale", -1.5, ValueError), ("scale", math.nan, ValueError),
            ("scale", "3", TypeError), ("scale", None, TypeError)])
    dtype = data.draw(st.sampled_from(FLOATS))
    backend, device, unavailable = draw_backend_device(data, dtype, has_triton=False)
    B = draw_batch(data, backend)
    C = data.draw(st.integers(1, 3))
    H, W = small_sides(data, backend), small_sides(data, backend)
    grid = draw_grid(data, H, W)
    # finite values: a resize may give a zero weight to a tap at the window border, and
    # 0 * NaN is NaN in one filter implementation and skipped in another
    spec = draw_tspec(data, (B, C, H, W), dtype, allow_special=False)
    scale: Any = data.draw(st.sampled_from([1.0, 1.5, 2, 3.0, 0.5, 0.25, 2.7]))
    size: Any = data.draw(st.sampled_from([None, 3, (2, 5), (6, 1)]))
    pad_value: Any = data.draw(st.sampled_from([0.0, 1, -0.5]))
    antialias: Any = data.draw(st.booleans())
    x: Any = spec
    g: Any = grid
    expect = None
    if fault == "image":
        kind, x = tensor_fault(data, spec, 4)
        expect = (FAULT_ERR[kind], ("image",))
    elif fault == "grid":
        g = data.draw(st.sampled_from([None, (H, W)]))
        expect = (TypeError, ("grid",))
    elif fault == "scale_type":
        scale = data.draw(st.sampled_from(["3", None, True, [2.0]]))
        expect = (TypeError, ("scale",))
    elif fault == "scale_value":
        scale = data.draw(st.sampled_from([0, -1.0, math.inf, math.nan]))
        expect = (ValueError, ("scale",))
    elif fault == "size":
        size = data.draw(st.sampled_from([0, (0, 3), (2, 2, 2), 1.5, "4"]))
        expect = ((TypeError, ValueError), ("size", "size[0]", "size[1]"))
    elif fault == "pad_value":
        pad_value = data.draw(st.sampled_from(["0", None, True, torch.tensor(0.0)]))
        expect = (TypeError, ("pad_value",))
    elif fault == "antialias":
        antialias = data.draw(st.sampled_from([1, "yes", None]))
        expect = (TypeError, ("antialias",))
    if expect is None and unavailable:
        expect = (BackendUnavailableError, ())
    xt = materialize(x, device)

    def call():
        if module:
            return uhrops.ExtractContexts(scale, size, pad_value, antialias)(xt, g)
        return uhrops.extract_contexts(xt, g, scale, size, pad_value, antialias)

    return Case(call, lambda: O.contexts(reference(xt), grid, float(scale), size,
                                         float(pad_value), antialias),
                expect, backend, dtype, tol_scale=4.0, meta=device == "meta",
                note=dict(fault=fault, grid=grid, scale=scale, size=size))


def case_gaussian_weight(data, module=False):
    fault = data.draw(st.sampled_from([None] * 3 + ["patch_size", "sigma_scale", "dtype"]))
    ph, pw = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    sigma = data.draw(st.sampled_from([0.125, 0.05, 0.5, 1, 2.0]))
    dtype = data.draw(st.sampled_from(FLOATS))
    device = data.draw(st.sampled_from(DEVICES))
    patch: Any = (ph, pw)
    expect = None
    if fault == "patch_size":
        patch = data.draw(st.sampled_from([0, (ph, 0), (1.5, 2), None, (ph, pw, 1)]))
        expect = ((TypeError, ValueError), ("patch_size", "patch_size[0]", "patch_size[1]"))
    elif fault == "sigma_scale":
        sigma = data.draw(st.sampled_from([0, 0.0, -0.125, math.nan, math.inf, "0.1", None]))
        expect = ((TypeError, ValueError), ("sigma_scale",))
    elif fault == "dtype":
        dtype = data.draw(st.sampled_from(BAD_DTYPES + ("float32",)))
        expect = (TypeError, ("dtype",))
    return Case(lambda: uhrops.gaussian_weight(patch, sigma, device=device, dtype=dtype),
                lambda: O.gaussian_weight((ph, pw), float(sigma)), expect, "torch",
                dtype if isinstance(dtype, torch.dtype) else torch.float32,
                meta=device == "meta", note=dict(fault=fault, sigma=sigma))


def case_hann_weight(data, module=False):
    fault = data.draw(st.sampled_from([None] * 3 + ["patch_size", "dtype"]))
    ph, pw = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    dtype = data.draw(st.sampled_from(FLOATS))
    device = data.draw(st.sampled_from(DEVICES))
    patch: Any = (ph, pw)
    expect = None
    if fault == "patch_size":
        patch = data.draw(st.sampled_from([0, (ph, 0), (1.5, 2), None, (ph, pw, 1)]))
        expect = ((TypeError, ValueError), ("patch_size", "patch_size[0]", "patch_size[1]"))
    elif fault == "dtype":
        dtype = data.draw(st.sampled_from(BAD_DTYPES + ("float32",)))
        expect = (TypeError, ("dtype",))
    return Case(lambda: uhrops.hann_weight(patch, device=device, dtype=dtype),
                lambda: O.hann_weight((ph, pw)), expect, "torch",
                dtype if isinstance(dtype, torch.dtype) else torch.float32,
                meta=device == "meta", note=dict(fault=fault))


class _Fn:
    """A deterministic stand-in network for sliding_window: out = 2 p[:, :c] + 0.25 (+ the mean
    of each context). The oracle applies the same formula to the oracle's patches.
    ``inplace``: the same values computed in place in the batch (allowed by the contract);
    ``bad="channels"/"dtype"``: one more channel, or another dtype, from the second call on."""

    def __init__(self, c_out: int, bad: str | None = None, inplace: bool = False) -> None:
        self.c_out, self.bad, self.inplace, self.calls = c_out, bad, inplace, 0

    def __call__(self, p, *ctx):
        self.calls += 1
        if self.inplace:
            y = p.mul_(2).add_(0.25)[:, : self.c_out]
        else:
            y = 2 * p[:, : self.c_out] + 0.25
        for c in ctx:
            y = y + c.mean(dim=1, keepdim=True)
        if self.bad == "channels" and self.calls > 1:
            return torch.cat([y, y[:, :1]], 1)
        if self.bad == "dtype" and self.calls > 1:
            return y.float() if y.dtype == F64 else y.double()
        if self.bad == "shape":
            return y[..., :-1]
        if self.bad == "int":
            return y.to(torch.int32)
        if self.bad == "list":
            return [y]
        return y


def case_sliding_window(data, module=False):
    fault = data.draw(st.sampled_from([None] * 6 + ["fn", "image", "grid", "batch_size",
                                                    "contexts", "context_entry", "fn_shape",
                                                    "fn_dtype", "fn_changes", "reduction",
                                                    "weight", "out_device", "device",
                                                    "empty"]))
    dtype = data.draw(st.sampled_from((torch.float32, torch.float64, torch.bfloat16)))
    backend = data.draw(st.sampled_from(["torch", "auto"] + (["triton"] if TRITON else [])))
    B = data.draw(st.integers(1, 2))
    C = data.draw(st.integers(1, 3))
    H, W = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
    grid = draw_grid(data, H, W)
    scales = data.draw(st.sampled_from([(), (2.0,), (1.5, 3)]))
    spec = draw_tspec(data, (B, C, H, W), dtype, allow_special=not scales)
    c_out = data.draw(st.integers(1, C))
    inplace = data.draw(st.booleans(), label="fn in place")
    grad = data.draw(st.booleans(), label="image requires grad")  # the autograd path
    fn: Any = _Fn(c_out, inplace=inplace)
    batch_size: Any = data.draw(st.integers(1, 5))
    reduction: Any = data.draw(st.sampled_from(["mean", "sum"]))
    weight: Any = data.draw(st.sampled_from([None, "gaussian", "tensor"]))
    if weight == "tensor":  # a weight pattern at an extreme scale (for a mean)
        wdtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
        wscale = data.draw(st.sampled_from(WEIGHT_SCALES[wdtype])) if reduction == "mean" \
            else 1.0
        weight = (torch.rand(grid.patch_size, generator=torch.Generator().manual_seed(
            data.draw(st.integers(0, 99))), dtype=F64) + 0.01).to(wdtype) * wscale
    contexts: Any = scales
    out_device: Any = data.draw(st.sampled_from([None, "cpu", torch.device("cpu")]))
    device: Any = None
    x: Any = spec
    g: Any = grid
    expect = None
    if fault == "fn":
        fn = data.draw(st.sampled_from([None, 3, "model"]))
        expect = (TypeError, ("fn",))
    elif fault == "image":
        kind, x = tensor_fault(data, spec, 4)
        expect = (FAULT_ERR[kind], ("image",))
    elif fault == "grid":
        g = data.draw(st.sampled_from([None, (H, W)]))
        expect = (TypeError, ("grid",))
    elif fault == "batch_size":
        batch_size = data.draw(BAD_INTS)
        expect = (bad_int_expect(batch_size), ("batch_size",))
    elif fault == "contexts":
        contexts = data.draw(st.sampled_from([2.0, "3", {3: 1}]))
        expect = (TypeError, ("contexts",))
    elif fault == "context_entry":
        contexts = (data.draw(st.sampled_from([0, -2.0, math.nan, "3", None])),)
        expect = ((TypeError, ValueError), ("contexts[0]",))
    elif fault == "fn_shape":
        fn = _Fn(c_out, data.draw(st.sampled_from(["shape", "list"])))
        expect = (ValueError, ("fn",))
    elif fault == "fn_dtype":
        fn = _Fn(c_out, "int")
        expect = (TypeError, ("fn",))
    elif fault == "fn_changes":  # refused at the second batch: make sure there is one
        fn = _Fn(c_out, data.draw(st.sampled_from(["channels", "dtype"])), inplace=inplace)
        batch_size = 1
        if len(grid) == 1:
            B = 2
            spec = draw_tspec(data, (B, C, H, W), dtype, allow_special=not scales)
            x = spec
        expect = (ValueError, ("fn",))
    elif fault == "reduction":
        reduction = data.draw(st.sampled_from(["max", None]))
        expect = (ValueError, ("reduction",))
    elif fault == "weight":
        weight = data.draw(st.sampled_from(["gauss", "tensor-shape"]))
        if weight == "tensor-shape":
            weight = torch.ones(grid.patch_size[0] + 1, grid.patch_size[1])
        expect = (ValueError, ("weight",))
    elif fault == "out_device":
        out_device = data.draw(st.sampled_from(["bogus", "cpu:x", 3.5, "cuda:99"
                                                if not torch.cuda.is_available() else "bogus"]))
        expect = ((ValueError, TypeError, RuntimeError), ("out_device",))
    elif fault == "device":
        device = data.draw(st.sampled_from(["bogus", 2.5]))
        expect = ((ValueError, TypeError), ("device",))
    elif fault == "empty":
        x = TSpec((0, C, H, W), dtype)
        expect = (ValueError, ("image",))
    xt = materialize(x, "cpu")
    if grad and isinstance(xt, torch.Tensor) and xt.dtype.is_floating_point:
        xt = xt.detach().requires_grad_()

    def call():
        return uhrops.sliding_window(fn, xt, g, batch_size, contexts, out_device,
                                     reduction=reduction, weight=weight, device=device)

    def oracle():
        return O.sliding(lambda p, *c: _Fn(c_out)(p, *c), reference(xt), grid, scales,
                         reduction, weight)

    return Case(call, oracle, expect, backend, dtype, tol_scale=8.0,
                note=dict(fault=fault, grid=grid, scales=scales, batch=batch_size,
                          inplace=inplace, grad=grad, weight=type(weight).__name__))


def case_backend(data, module=False):
    """set_backend / use_backend / get_backend / triton_unavailable_reason."""
    which = data.draw(st.sampled_from(["set", "use", "reason"]))
    if which in ("set", "use"):
        name = data.draw(st.one_of(st.sampled_from(["auto", "torch", "triton"]),
                                   st.sampled_from(["Torch", "cuda", "", None, 1, "pytorch"]),
                                   st.text(max_size=6)))
        valid = name in ("auto", "torch", "triton")

        def call():
            before = uhrops.get_backend()
            if which == "use":
                with uhrops.use_backend(name):
                    inside = uhrops.get_backend()
                assert uhrops.get_backend() == before, "use_backend did not restore"
                return inside
            try:
                uhrops.set_backend(name)
                return uhrops.get_backend()
            finally:
                uhrops.set_backend(before)

        def same(got):
            assert got == name, (got, name)

        return Case(call, None, None if valid else (ValueError, ("name",)), None,
                    note=dict(which=which, name=name), check=same)
    device = data.draw(st.sampled_from(["cpu", "meta", "cuda", "cuda:0", torch.device("cpu"),
                                        "bogus", "", None, 3.5, "cpu:0", "mps"]))
    known = isinstance(device, torch.device) or device in ("cpu", "meta", "cuda", "cuda:0",
                                                           "cpu:0", "mps")

    def call_reason():
        return uhrops.triton_unavailable_reason(device)

    def check(reason):
        assert reason is None or (isinstance(reason, str) and reason), reason
        dev = torch.device(device)
        if dev.type == "cpu":
            assert (reason is None) == TRITON, reason
        if dev.type in ("meta", "mps"):
            assert reason is not None and dev.type in reason, reason
        return reason

    return Case(call_reason, None, None if known else ((TypeError, ValueError), ("device",)),
                None, note=dict(device=device), check=check)


# --------------------------------------------------------------------------------------------
# the registry: every public name -> its case generator
# --------------------------------------------------------------------------------------------


OPS: dict[str, Callable[[Any], Case]] = {
    "haar_dwt2d": case_haar_dwt2d,
    "haar_idwt2d": case_haar_idwt2d,
    "haar_wavedec2": case_haar_wavedec2,
    "haar_waverec2": case_haar_waverec2,
    "haar_packet2d": case_haar_packet2d,
    "haar_ipacket2d": case_haar_ipacket2d,
    "HaarDWT2d": lambda d: (d.draw(st.sampled_from([case_haar_dwt2d, case_haar_wavedec2,
                                                     _dwt_ctor])))(d, module=True),
    "HaarIDWT2d": lambda d: (d.draw(st.sampled_from([case_haar_idwt2d, case_haar_waverec2])))(
        d, module=True),
    "HaarPacket2d": lambda d: (d.draw(st.sampled_from([case_haar_packet2d, _packet_ctor])))(
        d, module=True),
    "HaarIPacket2d": lambda d: case_haar_ipacket2d(d, module=True),
    "pyr_down": case_pyr_down,
    "pyr_up": case_pyr_up,
    "gaussian_pyramid": lambda d: case_pyramid(d, "gaussian"),
    "laplacian_pyramid": lambda d: case_pyramid(d, "laplacian"),
    "laplacian_reconstruct": case_laplacian_reconstruct,
    "GaussianPyramid": lambda d: case_pyramid(d, "gaussian", module=True),
    "LaplacianPyramid": lambda d: case_pyramid(d, "laplacian", module=True),
    "context_attention": case_context_attention,
    "LocalContextCorrelation": case_local_context_correlation,
    "PatchGrid": case_patch_grid,
    "extract_patches": case_extract_patches,
    "merge_patches": case_merge_patches,
    "MergePatches": lambda d: case_merge_patches(d, module=True),
    "extract_contexts": case_extract_contexts,
    "ExtractContexts": lambda d: case_extract_contexts(d, module=True),
    "gaussian_weight": case_gaussian_weight,
    "hann_weight": case_hann_weight,
    "sliding_window": case_sliding_window,
    "set_backend": case_backend,
}
# names covered by another entry's cases
COVERED_BY = {"get_backend": "set_backend", "use_backend": "set_backend",
              "triton_unavailable_reason": "set_backend",
              "BackendUnavailableError": "context_attention",
              # its property test is tests/reliability/test_kernel_failures.py
              "KernelLaunchError": "test_kernel_failures",
              # the streaming protocols and the in-memory reader: drawn readers (band orders,
              # channel/dtype changes at a random window), sinks with and without rows, in
              # tests/reliability/test_gis_properties.py
              "WindowReader": "test_gis_properties", "BandSink": "test_gis_properties",
              "TensorReader": "test_gis_properties"}


def _dwt_ctor(data, module=True):
    return case_module_ctor(data, uhrops.HaarDWT2d, {}, [
        ("levels", 0, ValueError), ("levels", 1.0, TypeError), ("levels", None, TypeError),
        ("pad_mode", "edge", ValueError), ("pad_mode", 0, ValueError)])


def _packet_ctor(data, module=True):
    return case_module_ctor(data, uhrops.HaarPacket2d, {}, [
        ("levels", 0, ValueError), ("levels", 9, ValueError), ("levels", "2", TypeError)])


def test_every_public_name_has_a_property_test():
    missing = [n for n in uhrops.__all__ if n not in OPS and n not in COVERED_BY]
    assert not missing, f"public names without a reliability property test: {missing}"


def _run(op: str, data) -> None:
    run_case(op, OPS[op](data))


@pytest.mark.parametrize("op", sorted(OPS))
@settings(max_examples=EXAMPLES, **_HYP)
@given(data=st.data())
def test_op_contract(op, data):
    _run(op, data)


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("op", sorted(OPS))
@settings(max_examples=LONG_EXAMPLES, **_HYP)
@given(data=st.data())
def test_op_contract_long(op, data):
    _run(op, data)
