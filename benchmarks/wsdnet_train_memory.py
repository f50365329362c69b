"""Activation memory of one WSDNet training step, per image, on the CPU (issue 19).

``python -m benchmarks.wsdnet_train_memory [--sizes 512 1248 2016 2560] [--validate 512]
[--out benchmarks/results/wsdnet-train-memory.json]``

For each SR-head / checkpointing variant (:data:`VARIANTS`) and crop, a train-mode forward
of WSDNet (paper widths, 7 classes), its loss (the paper's: Eq. 4 ``sum_bands``) and the
backward pass, on a batch of two random crops, divided by two:

- **saved**: the bytes autograd keeps for backward at the end of the forward pass, counted
  under ``torch.autograd.graph.saved_tensors_hooks``: every distinct storage packed once (a
  tensor saved by two ops, or a view of a saved tensor, counts once). With activation
  checkpointing the tensors saved inside a checkpointed segment are never packed by the
  outer hooks (only the segment's inputs are), which is the point of checkpointing.
- **peak**: the largest live memory during forward, loss and backward, less the parameters,
  buffers and parameter gradients (i.e. activations, their gradients and ops' temporaries),
  from ``torch.distributed._tools.mem_tracker.MemTracker``, which follows every storage's
  allocation and release. With checkpointing this includes the recomputed segments during
  backward, which the "saved" figure does not see.

Both are counted on fake tensors (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes,
dtypes and storages without data), so a 2560² crop costs no memory; ``--validate`` sizes are
also run on real tensors and both counts are written side by side (they must agree; the
tests check it at a small size). Weights, gradients and the optimizer state are not included
(they do not depend on the crop): :func:`fixed_bytes` gives them for the "batch that fits"
column of the README block (``benchmarks.report``: 80 GB less those, divided by the peak
per image).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import warnings
from collections import defaultdict
from typing import Any, Iterator

import torch
from torch import nn

from benchmarks.markdown import fnum, load_json, md_table, not_measured
from zoo.core.atomic import atomic_write_text
from zoo.wsdnet import WSDNet
from zoo.wsdnet.losses import WaveletSmoothLoss, WSDNetLoss

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_FILE = "wsdnet-train-memory.json"
RESULTS = os.path.join(HERE, "results", RESULTS_FILE)
BLOCKS = ("wsdnet-memory",)  # the documentation block rendered from RESULTS_FILE
MIB = 2 ** 20
NUM_CLASSES = 7
BATCH = 2
DEVICE_BYTES = 80e9  # "80 GB" accelerators (A100/H100 80GB)

# name -> (WSDNet kwargs, description). "today" is the model before issue 19's memory work;
# the last two are what the shipped configs build (tests/zoo/test_wsdnet_memory.py checks it).
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "today": ({}, "full-resolution SR head, no checkpointing"),
    "haar1": ({"sr_output": "haar1"}, "SR head stops at 1/2 (level-1 subbands)"),
    "image+ckpt": ({"sr_output": "image", "activation_checkpoint": ["shallow", "sr_head"]},
                   "the paper's full-resolution SR head, shallow branch and SR head "
                   "checkpointed: the paper configs, `wsdnet_<dataset>.yaml`"),
    "haar1+ckpt": ({"sr_output": "haar1", "activation_checkpoint": ["shallow", "sr_head"]},
                   "level-1 subband SR head, shallow branch and SR head checkpointed: the "
                   "memory-budget configs, `wsdnet_<dataset>_lowmem.yaml`"),
}
# Paper config -> crop it trains on, padded to WSDNet's multiple of 32.
PAPER_CROPS = {"wsdnet_deepglobe": 1248, "wsdnet_inria": 2016, "wsdnet_urur": 2560}


def build(variant: str, seed: int = 0) -> WSDNet:
    torch.manual_seed(seed)
    return WSDNet(NUM_CLASSES, **VARIANTS[variant][0]).train()


def loss_fn() -> WSDNetLoss:
    return WSDNetLoss(wsl=WaveletSmoothLoss(reduction="sum_bands"))


def _batch(size: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(batch, 3, size, size), torch.randint(0, NUM_CLASSES, (batch, size, size))


@contextlib.contextmanager
def _maybe_fake(fake: bool) -> Iterator[None]:
    if not fake:
        yield
        return
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        yield


def count_saved(model: nn.Module, images: torch.Tensor, masks: torch.Tensor
                ) -> tuple[int, dict[str, int]]:
    """Bytes autograd holds for backward after ``model``'s forward and loss on
    ``(images, masks)`` (the whole batch), less ``model``'s parameters and buffers (a conv
    saves its weight), and their split by the top-level module that saved them. Works on
    real and on fake tensors alike (model and batch made under the same FakeTensorMode)."""
    # A storage is identified by its StorageImpl's address (``_cdata``): the same for every
    # view, for real and fake tensors (fake storages have no data pointer); the tensors
    # counted stay alive until the end, so no address is reused meanwhile.
    seen = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}
    per_module: dict[str, int] = defaultdict(int)
    current = ["(input)"]

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st._cdata not in seen:
            seen.add(st._cdata)
            per_module[current[0]] += st.nbytes()
        return t

    def enter(name: str):
        def hook(*_: Any) -> None:
            current[0] = name
        return hook

    handles = [child.register_forward_pre_hook(enter(name))
               for name, child in model.named_children()]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(images)
            current[0] = "(loss)"
            loss_fn()(out, masks)
    finally:
        for h in handles:
            h.remove()
    return sum(per_module.values()), dict(per_module)


def saved_bytes(variant: str, size: int, batch: int = BATCH, fake: bool = True
                ) -> tuple[int, dict[str, int]]:
    """:func:`count_saved` for a :data:`VARIANTS` model on ``batch`` random ``size``² crops,
    model and data made on fake tensors (``fake=True``: no memory) or real ones."""
    with _maybe_fake(fake):
        model = build(variant)
        return count_saved(model, *_batch(size, batch))


def peak_bytes(variant: str, size: int, batch: int = BATCH, fake: bool = True) -> int:
    """Peak live bytes of forward + loss + backward on ``batch`` random ``size``² crops, less
    parameters, buffers and parameter gradients (MemTracker's ACT + TEMP at the peak)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    with _maybe_fake(fake):
        model = build(variant)
        tracker = MemTracker()
        tracker.track_external(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ModTracker's notes on hooks it could not place
            with tracker:
                images, masks = _batch(size, batch)  # inside: the batch is part of the step
                loss_fn()(model(images), masks).backward()
    peak = {str(k).rsplit(".", 1)[-1]: v
            for k, v in next(iter(tracker.get_tracker_snapshot("peak").values())).items()}
    return int(peak["Total"] - peak.get("PARAM", 0) - peak.get("BUFFER", 0)
               - peak.get("GRAD", 0) - peak.get("OPT", 0))


def step_flops(variant: str, size: int, batch: int = BATCH) -> int:
    """FLOPs of forward + loss + backward (``torch.utils.flop_counter``: convolutions and
    matrix products), recomputed checkpoint segments included: the time cost of
    checkpointing, without timing a shared machine."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with _maybe_fake(True):
        model = build(variant)
        with counter:
            images, masks = _batch(size, batch)
            loss_fn()(model(images), masks).backward()
    return int(counter.get_total_flops())


def fixed_bytes(model: nn.Module) -> int:
    """Weights + gradients + SGD momentum (+ buffers): 3x the parameters."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return 3 * params + sum(b.numel() * b.element_size() for b in model.buffers())


def measure(sizes: list[int], validate: list[int], log=print) -> dict[str, Any]:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    doc: dict[str, Any] = {
        "schema": "uhrops-wsdnet-train-memory/1",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "torch": torch.__version__, "python": platform.python_version(),
        "command": "python -m benchmarks.wsdnet_train_memory --sizes "
                   + " ".join(map(str, sizes)) + " --validate " + " ".join(map(str, validate)),
        "batch": BATCH, "dtype": "float32", "num_classes": NUM_CLASSES,
        "unit": "bytes per image (batch of 2, divided by 2)",
        "variants": {}, "validation": [], "paper_crops": PAPER_CROPS,
        "device_bytes": DEVICE_BYTES,
    }
    for name, (kwargs, desc) in VARIANTS.items():
        rows = {}
        for size in sizes:
            saved, parts = saved_bytes(name, size)
            peak = peak_bytes(name, size)
            flops = step_flops(name, size)
            rows[str(size)] = {"saved": saved // BATCH, "peak": peak // BATCH,
                               "flops": flops // BATCH,
                               "saved_by_module": {k: v // BATCH for k, v in sorted(parts.items())}}
            log(f"{name:>11} {size}²: saved {saved / BATCH / 2**20:8.1f} MiB, peak "
                f"{peak / BATCH / 2**20:8.1f} MiB, {flops / BATCH / 1e9:7.1f} GFLOP per image")
        doc["variants"][name] = {"kwargs": kwargs, "description": desc,
                                 "fixed": fixed_bytes(build(name)), "crops": rows}
    for size in validate:
        for name in VARIANTS:
            row = {"variant": name, "size": size}
            for mode, f in (("real", False), ("fake", True)):
                row[f"saved_{mode}"] = saved_bytes(name, size, fake=f)[0] // BATCH
                row[f"peak_{mode}"] = peak_bytes(name, size, fake=f) // BATCH
            doc["validation"].append(row)
            log(f"validate {name:>11} {size}²: saved real {row['saved_real'] / 2**20:.1f} / "
                f"fake {row['saved_fake'] / 2**20:.1f} MiB, peak real "
                f"{row['peak_real'] / 2**20:.1f} / fake {row['peak_fake'] / 2**20:.1f} MiB")
    return doc


def _pct(x: float, ref: float) -> str:
    return f"{100 * x / ref:.0f} %"


def wsdnet_memory_block(doc: dict[str, Any] | None) -> str:
    """``bench:wsdnet-memory``: saved and peak activation memory per image of a WSDNet training
    step per crop and variant, the FLOPs, the batch that fits the device and the fake- vs
    real-tensor validation, from ``wsdnet-train-memory.json``."""
    if not doc:
        return not_measured("python -m benchmarks.wsdnet_train_memory", RESULTS_FILE)
    variants = doc["variants"]
    names = list(variants)
    ref = names[0]
    crops = sorted({int(c) for v in variants.values() for c in v["crops"]})
    header = ["crop"] + [f"`{n}`: saved · peak" for n in names]
    body = []
    for c in crops:
        row = [f"{c}²"]
        base = variants[ref]["crops"].get(str(c))
        for n in names:
            r = variants[n]["crops"].get(str(c))
            if r is None:
                row.append("—")
            elif n == ref or base is None:
                row.append(f"{fnum(r['saved'] / MIB)} · {fnum(r['peak'] / MIB)}")
            else:
                row.append(f"{fnum(r['saved'] / MIB)} ({_pct(r['saved'], base['saved'])}) · "
                           f"{fnum(r['peak'] / MIB)} ({_pct(r['peak'], base['peak'])})")
        body.append(row)
    parts = [f"MiB per image (batch {doc['batch']}, {doc['dtype']}; in parentheses: against "
             f"`{ref}`), `{doc['command']}`, torch {doc['torch']}, {doc['date']}. Variants:",
             "\n".join(f"- `{n}`: {v['description']}; WSDNet kwargs `{json.dumps(v['kwargs'])}`"
                       for n, v in variants.items()),
             md_table(header, body)]
    flops = [[f"{c}²"] + [fnum(variants[n]["crops"][str(c)]["flops"] / 1e9)
                          if str(c) in variants[n]["crops"] else "—" for n in names]
             for c in crops]
    parts.append("GFLOP per image of the step (forward, loss, backward; recomputation "
                 "included):\n\n" + md_table(["crop"] + [f"`{n}`" for n in names], flops))
    fit = []
    cap = doc["device_bytes"]
    for cfg, c in doc["paper_crops"].items():
        cells = []
        for n in names:
            r = variants[n]["crops"].get(str(c))
            cells.append("—" if r is None else
                         str(int((cap - variants[n]["fixed"]) // r["peak"])))
        fit.append([f"`{cfg}`", f"{c}²"] + cells)
    parts.append(f"Batch that fits {cap / 1e9:g} GB by the peak (less weights, gradients and "
                 f"SGD momentum, {fnum(variants[ref]['fixed'] / MIB)} MiB):\n\n"
                 + md_table(["paper config", "crop (padded)"] + [f"`{n}`" for n in names], fit))
    checks = doc.get("validation") or []
    if checks:
        same = all(v["saved_real"] == v["saved_fake"] and v["peak_real"] == v["peak_fake"]
                   for v in checks)
        sizes = ", ".join(sorted({f"{v['size']}²" for v in checks}))
        worst = max(max(abs(v["saved_real"] - v["saved_fake"]) / max(v["saved_real"], 1),
                        abs(v["peak_real"] - v["peak_fake"]) / max(v["peak_real"], 1))
                    for v in checks)
        runs = f"{len(checks)} run" + ("s" if len(checks) != 1 else "")
        parts.append(f"Counted on fake tensors; on real tensors at {sizes} ({runs}: each variant "
                     f"once) the saved and peak bytes are "
                     + ("identical." if same else f"within {100 * worst:.2g} %."))
    return "\n\n".join(parts)


def render_blocks(results_dir: str, plots_rel: str | None = None) -> dict[str, str]:
    """``bench:wsdnet-memory`` from ``results_dir``'s :data:`RESULTS_FILE`."""
    return {"wsdnet-memory": wsdnet_memory_block(load_json(results_dir, RESULTS_FILE))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1248, 2016, 2560])
    ap.add_argument("--validate", type=int, nargs="*", default=[512],
                    help="crops also counted on real tensors (allocates them)")
    ap.add_argument("--out", default=RESULTS, help="results JSON ('' for none)")
    args = ap.parse_args(argv)
    doc = measure(args.sizes, args.validate)
    if args.out:
        atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
