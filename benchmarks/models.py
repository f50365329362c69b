"""Whole-model inference speed: ``python -m benchmarks.models [--device cpu|cuda]
[--model wsdnet|fctl|all] [--size 2448|5000|5120] [--variants LIST] [--repeats N] [--quick]``.

The papers' protocol: batch 1, random-initialised weights (speed does not depend on them),
eval mode under ``torch.inference_mode()``, warm-up calls, then timed calls each ended by a
device synchronisation; we report the median seconds per image with its min-max spread, FPS
= 1 / median, and peak memory: ``torch.cuda.max_memory_allocated`` (absolute, weights and
input included, reset before each variant) plus the allocator's reserved peak and the device
memory in use on CUDA; the process's peak RSS (high-water mark reset before each variant) on
the CPU. Each timed call's process CPU time (all threads) is recorded too: on a CPU shared
with other jobs it is a steadier figure than the wall time.

- ``wsdnet``: one whole-image forward at size x size (7 classes at 2448, 2 at 5000, 8 at 5120).
- ``fctl``: the final model (DeepGlobe "full" with x3 context and the global image at 2448 and
  5120, Inria "full" with x2/x3 contexts at 5000) through :class:`zoo.fctl.FCtLSegmenter`:
  the 508 px grid (36 patches at 2448), ``--fctl-batch`` patches per forward, summed logits.
  ``--patch`` times one batch of patches alone instead.

Protocol variants (``--variants``, comma-separated; each a ``+``-joined list of tokens):

=================== ===================================================================
token               meaning
=================== ===================================================================
``fp32``            float32; on CUDA with TF32 off (the paper's RTX 2080Ti has none)
``tf32``            float32 with TF32 convolutions/matmuls (CUDA)
``bf16``/``fp16``   ``torch.autocast`` to that dtype (bf16 autocast exists on the CPU too)
``cl``              channels_last weights and input
``fold``            batch norms folded into the convolution before them (eager; the zoo's
                    ``zoo.engine.inference.fold_batch_norms``), one pass over each
                    activation fewer
``bench``           ``torch.backends.cudnn.benchmark = True`` (CUDA; off otherwise)
``compile``         ``torch.compile`` (inductor, with weight freezing)
``compile-graphs``  ``torch.compile(mode="reduce-overhead")``: inductor + CUDA graphs
``cudagraph``       the whole forward captured once in a ``torch.cuda.CUDAGraph`` and replayed
``device``          FCtL, CUDA: the image is copied once into device memory from pinned host
                    memory with ``non_blocking=True`` on a side stream, the next image's copy
                    overlapping this image's compute; patches and contexts are cut on the GPU.
                    Without it the image stays in host memory and every batch of patches and
                    contexts is prepared on the CPU and copied (FCtL's released code path).
=================== ===================================================================

Every variant other than plain ``fp32`` is checked against the fp32 output on the same input
and weights: argmax agreement (% of pixels) and the largest absolute logit difference (the
weights are random, so logits are small and nearly tied: agreement is a pessimistic figure).
Results are merged into ``benchmarks/results/<device-tag>.json`` (sections ``models.wsdnet``
and ``models.fctl``; ``--json PATH`` for another file; ``--quick`` runs go to a temporary
folder unless ``--json`` is given).

The README/documentation block ``models`` (:func:`render_blocks`: every protocol variant,
the papers' figures and the GPU goals) and the plot ``models-fps-memory.png``
(:func:`write_plots`) are rendered here from those sections.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import torch

from benchmarks.common import (current_rss_mb, device_tag, is_gpu, load_device_results,
                               machine_info, merge_section, metadata, peak_rss_mb, reset_peak_rss,
                               results_path)
from benchmarks.markdown import fnum, fratio, md_table

SIZES = (2448, 5000, 5120)
BLOCKS = ("models",)  # the README/documentation block rendered from the models.* sections
MODEL_NAMES = {"wsdnet": "WSDNet", "fctl": "FCtL"}
QUICK_SIZE = {"wsdnet": 96, "fctl": 80}
QUICK_FCTL_PATCH = (48, 16)  # patch size, minimal overlap: a 2x2 grid on the 80 px image

# The papers' figures (batch 1). WSDNet: Ji et al., CVPR 2023, RTX 2080Ti, Tables 2-4 (memory
# measured with gpustat, §5.2: the process's whole GPU memory, not the allocator's peak).
# FCtL: Li et al., ICCV 2021, 8 s per DeepGlobe image.
PAPERS: dict[str, dict[int, dict[str, Any]]] = {
    "wsdnet": {
        2448: {"fps": 30.3, "mb": 1876.0, "hardware": "RTX 2080Ti", "dataset": "DeepGlobe"},
        5000: {"fps": 7.8, "mb": 4379.0, "hardware": "RTX 2080Ti", "dataset": "Inria Aerial"},
        5120: {"fps": 7.13, "mb": 4560.0, "hardware": "RTX 2080Ti", "dataset": "URUR"},
    },
    "fctl": {
        2448: {"fps": 1 / 8.0, "mb": None, "hardware": None, "dataset": "DeepGlobe"},
    },
}
# Issue 11's GPU goals at 2448^2, batch 1.
GPU_GOALS: dict[str, dict[str, Any]] = {
    "wsdnet": {"size": 2448, "fps_factor": 10.0, "mb_below": 1876.0, "dtype": "bf16"},
    "fctl": {"size": 2448, "fps_factor": 15.0, "mb_below": None, "dtype": None},
}

DEFAULT_VARIANTS: dict[tuple[str, str], list[str]] = {
    ("wsdnet", "cpu"): ["fp32", "fp32+cl", "fp32+cl+fold", "bf16", "bf16+cl", "bf16+cl+fold",
                        "fp32+cl+compile", "bf16+cl+compile"],
    ("fctl", "cpu"): ["fp32", "fp32+cl", "bf16+cl"],
    ("wsdnet", "cuda"): ["fp32", "fp32+bench", "tf32+bench", "fp16+bench", "bf16+bench",
                         "bf16+cl+bench", "bf16+cl+fold+bench", "bf16+cl+bench+compile",
                         "bf16+cl+fold+bench+cudagraph", "bf16+cl+bench+compile-graphs"],
    ("fctl", "cuda"): ["fp32", "bf16+cl+bench", "bf16+cl+bench+device",
                       "fp16+cl+bench+device"],
}
QUICK_VARIANTS: dict[tuple[str, str], list[str]] = {
    ("wsdnet", "cpu"): ["fp32", "fp32+cl", "bf16", "bf16+cl+fold"],
    ("fctl", "cpu"): ["fp32", "bf16+cl"],
    ("wsdnet", "cuda"): ["fp32", "bf16+cl+bench", "bf16+cl+fold+bench+cudagraph"],
    ("fctl", "cuda"): ["fp32", "bf16+cl+bench+device"],
}
DEFAULT_RUNS: dict[tuple[str, str], tuple[int, int]] = {  # (warm-up, timed)
    ("wsdnet", "cpu"): (1, 3),
    ("fctl", "cpu"): (1, 2),
    ("wsdnet", "cuda"): (20, 100),
    ("fctl", "cuda"): (2, 10),
}

_DTYPES = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_FLAGS = ("cl", "fold", "bench", "compile", "compile-graphs", "cudagraph", "device")


@dataclass(frozen=True)
class Variant:
    """One protocol variant (see the module docstring for the tokens)."""

    name: str
    precision: str = "fp32"
    channels_last: bool = False
    fold_bn: bool = False
    cudnn_benchmark: bool = False
    compile_mode: str | None = None
    cuda_graph: bool = False
    image_on_device: bool = False

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _DTYPES[self.precision]

    @property
    def tf32(self) -> bool:
        return self.precision == "tf32"


def parse_variant(name: str, device: str) -> Variant:
    """Parse ``"bf16+cl+bench"`` into a :class:`Variant`, checking it fits ``device``.

    Raises:
        ValueError: unknown token, two precisions, or a CUDA-only token on the CPU.
    """
    tokens = [t.strip() for t in name.split("+") if t.strip()]
    precisions = [t for t in tokens if t in _DTYPES]
    unknown = [t for t in tokens if t not in _DTYPES and t not in _FLAGS]
    if unknown:
        raise ValueError(f"--variants: unknown token(s) {unknown} in {name!r}; precisions "
                         f"{sorted(_DTYPES)} and flags {list(_FLAGS)}, joined with '+'.")
    if len(precisions) > 1:
        raise ValueError(f"--variants: {name!r} names {len(precisions)} precisions "
                         f"{precisions}; give one.")
    cuda = device.startswith("cuda")
    cuda_only = [t for t in tokens if t in ("tf32", "bench", "compile-graphs", "cudagraph",
                                            "device")]
    if cuda_only and not cuda:
        raise ValueError(f"--variants: {name!r} uses CUDA-only token(s) {cuda_only}; drop "
                         f"them for --device cpu.")
    if "compile" in tokens and "compile-graphs" in tokens:
        raise ValueError(f"--variants: {name!r} gives both 'compile' and 'compile-graphs'; "
                         f"pick one.")
    if ("compile" in tokens or "compile-graphs" in tokens) and "cudagraph" in tokens:
        raise ValueError(f"--variants: {name!r}: 'cudagraph' captures the eager model; use "
                         f"'compile-graphs' for compiled code with CUDA graphs.")
    mode = "default" if "compile" in tokens else (
        "reduce-overhead" if "compile-graphs" in tokens else None)
    return Variant(name="+".join(tokens), precision=precisions[0] if precisions else "fp32",
                   channels_last="cl" in tokens, fold_bn="fold" in tokens,
                   cudnn_benchmark="bench" in tokens,
                   compile_mode=mode, cuda_graph="cudagraph" in tokens,
                   image_on_device="device" in tokens)


# ---- settings per variant ------------------------------------------------------------------


@contextlib.contextmanager
def _backend_flags(v: Variant, device: str) -> Iterator[None]:
    """cudnn.benchmark and TF32 as the variant says (CUDA), restored afterwards."""
    if not device.startswith("cuda"):
        yield
        return
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.benchmark = v.cudnn_benchmark
    torch.backends.cudnn.allow_tf32 = v.tf32
    torch.backends.cuda.matmul.allow_tf32 = v.tf32
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = saved


def _autocast(v: Variant, device: str, cache: bool = True) -> contextlib.AbstractContextManager:
    if v.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=v.autocast_dtype, cache_enabled=cache)


@contextlib.contextmanager
def _inductor_freezing() -> Iterator[None]:
    """Inductor's weight freezing for inference: weights become constants, so batch norms
    fold into the convolutions and (on the CPU) oneDNN weights are prepacked."""
    import torch._inductor.config as inductor_config

    saved = inductor_config.freezing
    inductor_config.freezing = True
    try:
        yield
    finally:
        inductor_config.freezing = saved


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---- models ----------------------------------------------------------------------------------


def wsdnet_classes(size: int) -> int:
    """Class count of the dataset a size stands for (DeepGlobe 7, Inria 2, URUR 8)."""
    return {5000: 2}.get(size, 8 if size == 5120 else 7)


def build_model(name: str, size: int) -> tuple[torch.nn.Module, str]:
    """The random-initialised model for ``name`` at ``size`` and a description of it."""
    torch.manual_seed(0)
    if name == "wsdnet":
        from zoo.wsdnet import WSDNet

        k = wsdnet_classes(size)
        return WSDNet(k).eval(), f"WSDNet({k}) random init"
    if name == "fctl":
        from zoo.fctl import FCtL

        if size == 5000:
            return FCtL(2, "inria", "full").eval(), "FCtL(2, 'inria', 'full') random init"
        k = 8 if size == 5120 else 7
        return FCtL(k, "deepglobe", "full").eval(), f"FCtL({k}, 'deepglobe', 'full') random init"
    raise ValueError(f"build_model(): unknown model {name!r}; use 'wsdnet' or 'fctl'.")


class _Prefetcher:
    """FCtL images in pinned host memory, each copied to the device with ``non_blocking`` on a
    side stream while the previous one is being segmented; ``__call__`` segments one image."""

    def __init__(self, seg: Callable[[torch.Tensor], torch.Tensor], host: list[torch.Tensor],
                 device: str) -> None:
        self.seg, self.host, self.device = seg, host, device
        self.stream = torch.cuda.Stream(device=device)
        self.i = 0
        self.next = self._launch(0)

    def _launch(self, i: int) -> torch.Tensor:
        with torch.cuda.stream(self.stream):
            return self.host[i % len(self.host)].to(self.device, non_blocking=True)

    def __call__(self) -> torch.Tensor:
        main = torch.cuda.current_stream(self.device)
        main.wait_stream(self.stream)
        image = self.next
        image.record_stream(main)  # the allocator must not reuse it before main is done
        self.i += 1
        self.next = self._launch(self.i)  # overlaps with the segmentation below
        return self.seg(image)


def _make_call(model_name: str, model: torch.nn.Module, v: Variant, size: int, device: str,
               fctl_batch: int, patch_only: bool, quick: bool
               ) -> tuple[Callable[[], torch.Tensor], dict[str, Any]]:
    """The function timed for one variant (one image per call) and facts about it."""
    info: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(1)
    if model_name == "wsdnet":
        x = torch.rand(1, 3, size, size, generator=gen).to(device)
        if v.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if v.cuda_graph:
            return _graph_call(model, x, v, device), info
        net = model
        if v.compile_mode is not None:
            net = torch.compile(model, mode=v.compile_mode)
            info["compile"] = f"torch.compile(mode={v.compile_mode!r}), inductor freezing on"

        def call() -> torch.Tensor:
            with _autocast(v, device):
                return net(x)

        return call, info

    from zoo.fctl import FCtLSegmenter

    if v.cuda_graph or v.compile_mode is not None:
        raise ValueError("fctl: 'compile'/'cudagraph' variants are WSDNet-only here (FCtL's "
                         "last batch of patches changes shape); drop them from --variants.")
    patch, overlap = QUICK_FCTL_PATCH if quick else (508, 50)
    fmt = torch.channels_last if v.channels_last else torch.contiguous_format
    if patch_only:
        n = fctl_batch
        p = torch.rand(n, 3, patch, patch, generator=gen).to(device).contiguous(memory_format=fmt)
        ctx = tuple(torch.rand(n, 3, patch, patch, generator=gen).to(device)
                    .contiguous(memory_format=fmt) for _ in model.context_names)
        info["what"] = f"{n} patch(es) of {patch} with their contexts, one forward"

        def call_patch() -> torch.Tensor:
            with _autocast(v, device):
                return model(p, ctx)

        return call_patch, info
    seg = FCtLSegmenter(model, patch_size=patch, min_overlap=overlap, batch_size=fctl_batch)
    image = torch.rand(1, 3, size, size, generator=gen)
    info["what"] = (f"whole {size}^2 image, {patch} px patches in batches of {fctl_batch}, "
                    f"summed logits")

    def run(img: torch.Tensor) -> torch.Tensor:
        with _autocast(v, device):
            return seg(img)

    if device.startswith("cuda") and v.image_on_device:
        host = [image.pin_memory(), torch.rand(1, 3, size, size, generator=gen).pin_memory()]
        info["image_on"] = "device (pinned host memory, non_blocking prefetch on a side stream)"
        return _Prefetcher(run, host, device), info
    info["image_on"] = "host" if device.startswith("cuda") else "cpu"
    return (lambda: run(image)), info


def _graph_call(model: torch.nn.Module, x: torch.Tensor, v: Variant, device: str
                ) -> Callable[[], torch.Tensor]:
    """Capture ``model(x)`` in a CUDA graph (after side-stream warm-up); replay per call."""
    static_x = x.clone()
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            with _autocast(v, device, cache=False):
                model(static_x)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        with _autocast(v, device, cache=False):
            static_out = model(static_x)

    def replay() -> torch.Tensor:
        graph.replay()
        return static_out

    return replay


# ---- measurement -----------------------------------------------------------------------------


def _time_calls(fn: Callable[[], torch.Tensor], device: str, warmup: int, repeats: int
                ) -> tuple[list[float], list[float], float | None, torch.Tensor]:
    """Warm-up then timed calls (each synchronised). Returns the wall times (s), the process
    CPU times of the same calls (s, all threads: on a shared CPU this moves much less with
    other processes' load than the wall time), the first call's wall time, the last output."""
    first = None
    out = None
    for i in range(warmup):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        if i == 0:
            first = time.perf_counter() - t0
    times, cpu_times = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    assert out is not None
    return times, cpu_times, first, out


def _accuracy(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    o, r = out.detach().float(), ref.detach().float().to(out.device)
    if o.shape != r.shape:
        raise ValueError(f"accuracy check: output shape {tuple(o.shape)} differs from the fp32 "
                         f"reference {tuple(r.shape)}.")
    diff = (o - r).abs()
    return {"argmax_agree_pct": float((o.argmax(1) == r.argmax(1)).float().mean()) * 100,
            "max_abs_logit_diff": float(diff.max()),
            "mean_abs_logit_diff": float(diff.mean()),
            "ref_max_abs_logit": float(r.abs().max())}


def _memory_start(device: str) -> dict[str, Any]:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return {}
    return {"reset": reset_peak_rss(), "base": current_rss_mb()}


def _memory_end(device: str, start: dict[str, Any]) -> dict[str, Any]:
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        return {"peak_mb": torch.cuda.max_memory_allocated() / 2**20,
                "peak_kind": "cuda_max_allocated",
                "cuda_max_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
                "device_used_mb": (total - free) / 2**20}
    return {"peak_mb": peak_rss_mb(),
            "peak_kind": "process_rss" if start.get("reset") else "process_rss_lifetime",
            "rss_base_mb": start.get("base")}


def paper_row(model: str, size: int) -> dict[str, Any] | None:
    """The paper's figures for ``model`` at ``size`` (None when the paper gives none)."""
    return PAPERS.get(model, {}).get(size)


class _Reference:
    """The fp32 reference output, parked in a temporary file while other variants run (so it
    does not count in their peak memory)."""

    def __init__(self) -> None:
        self.path: str | None = None

    def store(self, out: torch.Tensor) -> None:
        import tempfile

        fd, self.path = tempfile.mkstemp(prefix="uhrops-ref-", suffix=".pt")
        os.close(fd)
        torch.save(out.detach().float().cpu().clone(), self.path)

    def load(self) -> torch.Tensor | None:
        return None if self.path is None else torch.load(self.path)

    def close(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None


def bench_variant(model_name: str, v: Variant, size: int, device: str, warmup: int,
                  repeats: int, fctl_batch: int, patch_only: bool, quick: bool,
                  ref: _Reference | None) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Measure one variant on a freshly built model (same seed, so the same weights in every
    variant); returns its row and its last output."""
    # patch rows are keyed by the patch side (the image side does not matter to them)
    shown = (QUICK_FCTL_PATCH[0] if quick else 508) if patch_only else size
    row: dict[str, Any] = {
        "model": model_name, "size": shown, "scope": "patch" if patch_only else "image",
        "variant": v.name, "device": device, "batch": 1,
        **{k: val for k, val in asdict(v).items() if k != "name"},
        "tf32": v.tf32 if device.startswith("cuda") else None,
    }
    if model_name == "fctl":
        row["fctl_batch"] = fctl_batch
    if v.compile_mode is not None or v.cuda_graph:
        warmup = max(warmup, 1)  # compilation / capture never lands in the timed calls
    model, row["model_desc"] = build_model(model_name, size)
    if v.fold_bn:
        from zoo.engine.inference import fold_batch_norms

        row["folded_bn"] = len(fold_batch_norms(model).folded)
    model = model.to(device)
    if v.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if v.compile_mode:
        torch._dynamo.reset()  # no graphs or guards left over from another variant
    out = None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_backend_flags(v, device))
            stack.enter_context(torch.inference_mode())
            if v.compile_mode:
                stack.enter_context(_inductor_freezing())
            mem0 = _memory_start(device)
            t_setup = time.perf_counter()
            call, info = _make_call(model_name, model, v, size, device, fctl_batch, patch_only,
                                    quick)
            setup_s = time.perf_counter() - t_setup
            times, cpu_times, first, out = _time_calls(call, device, warmup, repeats)
            row.update(_memory_end(device, mem0))
            del call
        row.update(info)
        if v.cuda_graph:
            row["capture_s"] = setup_s
        if v.compile_mode is not None and first is not None:
            row["first_call_s"] = first  # includes compilation
        med = statistics.median(times)
        row.update({"warmup": warmup, "repeats": repeats, "times_s": times, "median_s": med,
                    "min_s": min(times), "max_s": max(times), "fps": 1.0 / med,
                    "cpu_times_s": cpu_times, "median_cpu_s": statistics.median(cpu_times)})
        reference = ref.load() if ref is not None else None
        if reference is not None and out is not None:
            row.update(_accuracy(out, reference))
        del reference
    except Exception as exc:  # a variant that cannot run here: record why, go on
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        row.update({"median_s": None, "fps": None,
                    "error": f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__})
        out = None
    finally:
        del model
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    paper = paper_row(model_name, size)
    if paper is not None and not patch_only:
        row["paper_fps"] = paper["fps"]
        row["paper_mb"] = paper["mb"]
        row["paper_hardware"] = paper["hardware"]
        if row.get("fps"):
            row["fps_vs_paper"] = row["fps"] / paper["fps"]
        if row.get("peak_mb") and paper["mb"]:
            row["mem_vs_paper"] = row["peak_mb"] / paper["mb"]
    return row, out


def run_model(model_name: str, size: int, device: str, variants: list[Variant], warmup: int,
              repeats: int, fctl_batch: int, patch_only: bool, quick: bool,
              accuracy: bool = True, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """All variants of one model at one size; the fp32 variant (or an extra, untimed fp32
    run) is the accuracy reference for the others."""
    rows: list[dict[str, Any]] = []
    ordered = sorted(variants, key=lambda v: v.name != "fp32")  # reference first
    ref = _Reference()
    try:
        if accuracy and not any(v.name == "fp32" for v in ordered):
            log(f"[{model_name} {size}] computing the fp32 reference output (not timed)")
            _, out = bench_variant(model_name, parse_variant("fp32", device), size, device, 0, 1,
                                   fctl_batch, patch_only, quick, None)
            if out is not None:
                ref.store(out)
            del out
        for v in ordered:
            log(f"[{model_name} {size}] {v.name} ...")
            use_ref = ref if (accuracy and v.name != "fp32") else None
            row, out = bench_variant(model_name, v, size, device, warmup, repeats, fctl_batch,
                                     patch_only, quick, use_ref)
            if v.name == "fp32" and accuracy and out is not None:
                ref.store(out)
            del out
            rows.append(row)
            log("   " + _summary(row))
    finally:
        ref.close()
    return rows


def _summary(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"failed: {row['error']}"
    parts = [f"{row['median_s']:.3f} s/image [{row['min_s']:.3f}-{row['max_s']:.3f}]",
             f"process CPU {row['median_cpu_s']:.3f} s",
             f"{row['fps']:.3g} FPS", f"peak {row['peak_mb']:.0f} MiB ({row['peak_kind']})"]
    if "argmax_agree_pct" in row:
        parts.append(f"argmax agree {row['argmax_agree_pct']:.2f}%, "
                     f"max|dlogit| {row['max_abs_logit_diff']:.3g}")
    if "fps_vs_paper" in row:
        parts.append(f"{row['fps_vs_paper']:.3g}x paper FPS")
    return ", ".join(parts)


# ---- README block and plot -------------------------------------------------------------------


def model_rows(docs: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(tag, row) for every non-quick whole-model row of every machine."""
    out = []
    for tag, doc in docs.items():
        for model in ("wsdnet", "fctl"):
            sec = doc.get("sections", {}).get(f"models.{model}")
            if not sec:
                continue
            for r in sec.get("rows", []):
                if r.get("quick") or sec.get("metadata", {}).get("quick") and "quick" not in r:
                    continue
                out.append((tag, r))
    return out


def _mem_kind(kind: str | None) -> str:
    return {"process_rss": "RSS", "process_rss_lifetime": "RSS*",
            "cuda_max_allocated": "alloc"}.get(kind or "", kind or "?")


def _paper_cell(model: str, size: int) -> tuple[str, dict[str, Any] | None]:
    p = PAPERS.get(model, {}).get(size)
    if p is None:
        return "—", None
    text = f"{fnum(p['fps'])} FPS"
    if model == "fctl":
        text = f"{fnum(1 / p['fps'])} s/image"
    if p.get("mb"):
        text += f", {fnum(p['mb'])} MB"
    return text + (f" ({p['hardware']})" if p.get("hardware") else ""), p


def models_block(docs: dict[str, dict[str, Any]]) -> str:
    """Markdown of the models block: measured rows, GPU "not measured" rows, GPU goals."""
    header = ["model", "input", "machine", "variant", "s / image [min–max]", "CPU s / image",
              "FPS", "peak MiB", "vs fp32: argmax agree, max abs Δlogit", "paper",
              "FPS / paper"]
    body = []
    rows = model_rows(docs)
    order = {"wsdnet": 0, "fctl": 1}
    rows.sort(key=lambda tr: (order.get(tr[1].get("model"), 9), tr[1].get("size", 0),
                              tr[1].get("scope") != "image", is_gpu(tr[0]), tr[0]))
    for tag, r in rows:
        model = r.get("model", "?")
        size = r.get("size", 0)
        what = (f"{size}²" if r.get("scope") == "image"
                else f"{size}² patch ×{r.get('fctl_batch', 1)}")
        if model == "fctl" and r.get("scope") == "image":
            what += f", batches of {r.get('fctl_batch', '?')}"
        variant = r.get("variant", "?")
        paper, p = _paper_cell(model, size) if r.get("scope") == "image" else ("—", None)
        if r.get("median_s") is None:
            body.append([MODEL_NAMES.get(model, model), what, tag, variant,
                         f"failed: {r.get('error', '?')}", "—", "—", "—", "—", paper,
                         "—"])
            continue
        spread = ""
        if r.get("min_s") is not None and r.get("max_s") is not None:
            spread = f" [{fnum(r['min_s'])}–{fnum(r['max_s'])}]"
        n = r.get("repeats")
        runs = f", {n} run{'s' if n != 1 else ''}" if n is not None else ""
        acc = "—"
        if r.get("argmax_agree_pct") is not None:
            acc = f"{r['argmax_agree_pct']:.2f} %, {fnum(r.get('max_abs_logit_diff'))}"
        peak = "—"
        if r.get("peak_mb") is not None:
            peak = f"{fnum(r['peak_mb'])} ({_mem_kind(r.get('peak_kind'))})"
        vs = "—"
        if p is not None and r.get("fps"):
            vs = fratio(r["fps"] / p["fps"])
        cpu_s = fnum(r["median_cpu_s"]) if r.get("median_cpu_s") is not None else "—"
        body.append([MODEL_NAMES.get(model, model), what, tag, variant,
                     fnum(r["median_s"]) + spread + runs, cpu_s, fnum(r.get("fps")), peak, acc,
                     paper, vs])
    measured_gpu = {(r.get("model"), r.get("size")) for t, r in rows
                    if is_gpu(t) and r.get("scope") == "image" and r.get("median_s")}
    for model in ("wsdnet", "fctl"):
        size = GPU_GOALS[model]["size"]
        if (model, size) not in measured_gpu:
            paper, _ = _paper_cell(model, size)
            body.append([MODEL_NAMES[model], f"{size}²", "GPU", "—", "not measured", "—",
                         "—", "—", "—", paper, "—"])
    notes = ("Batch 1, random weights, `torch.inference_mode()`; s / image is the median of the "
             "timed runs (warm-up excluded; compilation and CUDA-graph capture happen in the "
             "warm-up); CPU s / image is the process CPU time of those calls summed over "
             "threads (steadier than wall time on a shared machine; not recorded for rows "
             "migrated from the first benchmark version). Peak: RSS = the process's peak "
             "resident memory during the variant (high-water mark reset first; model, input "
             "and output included; RSS* = process lifetime peak), alloc = "
             "`torch.cuda.max_memory_allocated` (weights included). "
             "The argmax agreement compares with the fp32 output of the same weights and "
             "input; random weights give small, nearly tied logits, so it understates "
             "agreement on a trained model. The papers' figures are GPU figures: WSDNet "
             f"{PAPERS['wsdnet'][2448]['fps']} FPS and {fnum(PAPERS['wsdnet'][2448]['mb'])} MB "
             "(RTX 2080Ti, 2448² DeepGlobe), "
             f"{PAPERS['wsdnet'][5000]['fps']:.2f} FPS and {fnum(PAPERS['wsdnet'][5000]['mb'])} "
             "MB (5000² Inria), "
             f"{PAPERS['wsdnet'][5120]['fps']:.2f} FPS and {fnum(PAPERS['wsdnet'][5120]['mb'])} "
             "MB (5120² URUR; memory by gpustat, i.e. the whole process), "
             "FCtL 8 s per 2448² DeepGlobe image.")
    conditions = []
    for tag, r in rows:
        if not r.get("note"):
            continue
        what = (f"- `{tag}`, {MODEL_NAMES.get(r.get('model'), r.get('model'))} "
                f"{'per-patch' if r.get('scope') == 'patch' else 'whole-image'} rows: "
                f"{r['note']}")
        if what not in conditions:
            conditions.append(what)
    text = notes + "\n\n" + md_table(header, body)
    if conditions:
        text += "\n\nConditions recorded with the rows:\n\n" + "\n".join(conditions)
    return text + "\n\n" + goals_table(rows)


def goals_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """The GPU goals of issue 11 with their status."""
    body = []
    w = GPU_GOALS["wsdnet"]
    target = PAPERS["wsdnet"][w["size"]]["fps"] * w["fps_factor"]
    cand = [r for t, r in rows if is_gpu(t) and r.get("model") == "wsdnet"
            and r.get("size") == w["size"] and r.get("scope") == "image"
            and r.get("precision") == w["dtype"] and r.get("fps")]
    if cand:
        fits = [r for r in cand if r.get("peak_mb") is not None and r["peak_mb"] < w["mb_below"]]
        best = max(fits or cand, key=lambda r: r["fps"])
        ok = best["fps"] >= target and best.get("peak_mb") is not None \
            and best["peak_mb"] < w["mb_below"]
        got = f"{fnum(best['fps'])} FPS, {fnum(best.get('peak_mb'))} MiB ({best['variant']})"
        status = "met" if ok else "**not met**"
    else:
        got, status = "—", "not measured"
    body.append([f"WSDNet {w['size']}², batch 1, {w['dtype']}",
                 f"≥ {fnum(target)} FPS (10x the paper's 30.3) and peak < {fnum(w['mb_below'])} "
                 f"MB", got, status])
    f = GPU_GOALS["fctl"]
    paper_s = 1 / PAPERS["fctl"][f["size"]]["fps"]
    target_s = paper_s / f["fps_factor"]
    cand = [r for t, r in rows if is_gpu(t) and r.get("model") == "fctl"
            and r.get("size") == f["size"] and r.get("scope") == "image" and r.get("median_s")]
    if cand:
        best = min(cand, key=lambda r: r["median_s"])
        got = f"{fnum(best['median_s'])} s/image ({best['variant']})"
        status = "met" if best["median_s"] <= target_s else "**not met**"
    else:
        got, status = "—", "not measured"
    body.append([f"FCtL {f['size']}² DeepGlobe image", f"≤ {fnum(target_s)} s/image (15x faster "
                 f"than the paper's {fnum(paper_s)} s)", got, status])
    return md_table(["GPU goal", "target", "best measured", "status"], body)


def render_blocks(results_dir: str, plots_rel: str | None = None) -> dict[str, str]:
    """``bench:models`` from the ``models.*`` sections of every machine's results file, led by
    the FPS-vs-memory plot when ``plots_rel`` is given and there are rows."""
    docs = load_device_results(results_dir)
    models = models_block(docs)
    if plots_rel and any(model_rows(docs)):
        models = f"![model FPS vs peak memory]({plots_rel}/models-fps-memory.png)\n\n" + models
    return {"models": models}


def plot_models(docs: dict[str, dict[str, Any]], path: str) -> bool:
    """FPS against peak memory for every measured whole-image row, with the papers' points."""
    from benchmarks.plot import PALETTE, HLine, Point, scatter_chart

    colours = {"wsdnet": PALETTE[0], "fctl": PALETTE[1]}
    pts = []
    for tag, r in model_rows(docs):
        if r.get("scope") != "image" or not r.get("fps") or not r.get("peak_mb"):
            continue
        gpu = r.get("peak_kind") == "cuda_max_allocated"
        model = r.get("model", "?")
        pts.append(Point(r["peak_mb"], r["fps"],
                         f"{MODEL_NAMES.get(model, model)} {r['size']}² {tag} {r['variant']}: "
                         f"{fnum(r['fps'])} FPS, {fnum(r['peak_mb'])} MiB",
                         colours.get(model, PALETTE[2]), "square" if gpu else "circle"))
    if not pts:
        return False
    pw = PAPERS["wsdnet"][2448]
    pts.append(Point(pw["mb"], pw["fps"], f"WSDNet paper 2448²: {pw['fps']} FPS, "
                     f"{fnum(pw['mb'])} MB GPU memory ({pw['hardware']})", colours["wsdnet"],
                     "star"))
    fc = PAPERS["fctl"][2448]
    lines = [HLine(fc["fps"], f"FCtL paper: {fnum(1 / fc['fps'])} s per 2448² image "
                              f"(memory not reported)", colours["fctl"]),
             HLine(pw["fps"] * GPU_GOALS["wsdnet"]["fps_factor"],
                   "WSDNet GPU goal: 10x paper FPS", colours["wsdnet"]),
             HLine(fc["fps"] * GPU_GOALS["fctl"]["fps_factor"],
                   "FCtL GPU goal: 15x paper speed", colours["fctl"])]
    scatter_chart(path, pts, "Whole-model inference: FPS vs peak memory (batch 1)",
                  "peak memory, MiB (log scale)", "frames per second (log scale)", lines,
                  subtitle="ours (every protocol variant) and the papers' figures; CPU memory "
                           "is process RSS, GPU memory torch.cuda.max_memory_allocated",
                  marker_legend=[("circle", "ours, CPU (peak RSS)"),
                                 ("square", "ours, GPU (max allocated)"),
                                 ("star", "paper (GPU)")])
    return True


def write_plots(results_dir: str, plots_dir: str) -> list[str]:
    """``models-fps-memory.png`` when there are whole-image rows; the paths written."""
    out = os.path.join(plots_dir, "models-fps-memory.png")
    return [out] if plot_models(load_device_results(results_dir), out) else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.models",
                                description="Whole-model inference speed and memory "
                                            "(papers' batch-1 protocol).")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda[:i] (default: cuda when visible)")
    p.add_argument("--model", choices=("wsdnet", "fctl", "all"), default="all")
    p.add_argument("--size", type=int, choices=SIZES, default=2448,
                   help="image side (2448 DeepGlobe, 5000 Inria, 5120 URUR)")
    p.add_argument("--variants", default=None,
                   help="comma-separated variants such as fp32,bf16+cl (default: per device; "
                        "see the module docstring)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per variant")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per variant")
    p.add_argument("--fctl-batch", type=int, default=None,
                   help="FCtL patches per forward (default 4 on the CPU, 12 on CUDA)")
    p.add_argument("--patch", action="store_true",
                   help="FCtL: time one forward of --fctl-batch patches with their contexts "
                        "(rows keyed by the patch side, 508)")
    p.add_argument("--quick", action="store_true",
                   help="tiny images, 1 warm-up + 1 timed call, no compile: a smoke run")
    p.add_argument("--no-accuracy", action="store_true", help="skip the fp32 comparison")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--note", default=None, help="free text stored with the rows (e.g. load)")
    p.add_argument("--json", default=None,
                   help="results file to merge into (default benchmarks/results/<tag>.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {device}: no CUDA device is visible; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        p.error(f"--device {device!r}: use cpu or cuda[:i]")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    for flag in ("warmup", "repeats", "fctl_batch"):
        val = getattr(args, flag)
        if val is not None and val < (0 if flag == "warmup" else 1):
            p.error(f"--{flag.replace('_', '-')} must be >= {0 if flag == 'warmup' else 1}; "
                    f"got {val}")
    models = ["wsdnet", "fctl"] if args.model == "all" else [args.model]
    path = results_path(device, args.json, args.quick)
    meta = metadata(device)
    meta.update({"quick": args.quick, "note": args.note, "command": " ".join(sys.argv)})
    for name in models:
        table = QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS
        names = args.variants.split(",") if args.variants else table[(name, kind)]
        try:
            variants = [parse_variant(n, device) for n in names if n.strip()]
        except ValueError as exc:
            p.error(str(exc))
        if name == "fctl":
            bad = [v.name for v in variants if v.compile_mode or v.cuda_graph]
            if bad:
                p.error(f"--variants {bad}: compile/cudagraph variants are WSDNet-only; FCtL's "
                        f"batches change shape at the end of the grid.")
        w_def, r_def = (1, 1) if args.quick else DEFAULT_RUNS[(name, kind)]
        warmup = w_def if args.warmup is None else args.warmup
        repeats = r_def if args.repeats is None else args.repeats
        batch = args.fctl_batch or (12 if kind == "cuda" else 4)
        size = QUICK_SIZE[name] if args.quick else args.size
        rows = run_model(name, size, device, variants, warmup, repeats, batch,
                         args.patch and name == "fctl", args.quick, not args.no_accuracy)
        stamp = {"commit": meta.get("commit"), "time": meta.get("time"),
                 "threads": torch.get_num_threads(), "quick": args.quick}
        if args.note:
            stamp["note"] = args.note
        for r in rows:
            r.update(stamp)
        merge_section(path, f"models.{name}", rows, meta,
                      key=("model", "size", "scope", "variant"), machine=machine_info(device))
        print(f"merged {len(rows)} row(s) into {path} [models.{name}]")
    tag = device_tag(device)
    print(f"device tag {tag}; regenerate the README tables with: python -m benchmarks.report")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
