"""WSDNet on the CPU: eager PyTorch against ONNX Runtime on the exported network.

    python -m benchmarks.onnx_export [--size 2448] [--rounds 3] [--quick] [--json PATH]

One whole-image forward of the random-initialised WSDNet(7) (DeepGlobe's model) at
size x size, batch 1, fp32, in paired rounds in one process (``benchmarks.goals.paired_rounds``:
every round runs every contender once, the order reversed every other round), so load on a
shared machine hits all of them alike. Contenders:

- ``eager fp32``: ``torch.inference_mode()``, NCHW (the plain model);
- ``eager fp32+cl+fold``: the zoo's eval path, ``zoo.engine.inference.prepare_for_eval``
  (batch norms folded into the convolutions, channels_last weights, each convolution taking
  its input to channels_last) on the NCHW image, as ``zoo.evaluate`` and ``zoo.infer`` run
  it with ``eval.fold_bn`` and ``eval.channels_last`` on;
- ``onnxruntime dynamic``: the file ``python -m zoo.export --dynamic`` writes (batch, height
  and width dynamic, multiples of 32), ONNX Runtime's CPU provider with all graph
  optimisations, called through ``zoo.infer``'s engine (which pads 2448 to 2464 as WSDNet
  does and crops the logits);
- ``onnxruntime static``: the same network exported at this size.

Every call runs with freed host memory kept for the next one
(``zoo.core.runtime.reuse_freed_memory``, as ``zoo.infer`` and ``zoo.evaluate`` run by
default; ``--allocator default`` measures glibc's own behaviour, which gives large blocks
back to the kernel at once and faults fresh pages in at every call). Both runtimes get the
same thread count (torch's). The ONNX outputs are compared with the
eager fp32 logits (max relative error, argmax agreement). Wall and process CPU time (all
threads) of every call; medians, the paired ratios (eager / ONNX Runtime: > 1 means ONNX
Runtime is faster), the load average and the metadata go to
``benchmarks/results/onnx-cpu.json`` (``--quick``: 96 px, one round, results-quick folder).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from benchmarks.common import RESULTS_DIR, metadata, write_json
from benchmarks.goals import paired_rounds
from benchmarks.markdown import fnum, load_json, md_table, not_measured
from benchmarks.models import build_model

__all__ = ["BLOCKS", "RESULTS_FILE", "main", "onnx_block", "render_blocks", "run"]

RESULTS_FILE = "onnx-cpu.json"
BLOCKS = ("onnx",)  # the documentation block rendered from RESULTS_FILE
SIZE_MULTIPLE = 32  # the dynamic graph's sides: WSDNet pads to this multiple


def _ort_session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def _export(model: torch.nn.Module, size: int, dynamic: bool, path: str) -> float:
    from uhrops.export import to_onnx

    t0 = time.perf_counter()
    if dynamic:
        dim = torch.export.Dim
        shapes = ({0: dim("batch", min=1, max=64), 2: 32 * dim("h", min=1, max=1024),
                   3: 32 * dim("w", min=1, max=1024)},)
        example = torch.rand(2, 3, 64, 96)
    else:
        shapes, example = None, torch.rand(1, 3, size, size)
    with torch.no_grad():
        to_onnx(model, (example,), path, input_names=["image"], output_names=["logits"],
                dynamic_shapes=shapes)
    return time.perf_counter() - t0


def run(size: int, rounds: int) -> dict[str, Any]:
    from uhrops.export import require_onnx

    require_onnx("benchmarks.onnx_export")
    threads = torch.get_num_threads()
    model, desc = build_model("wsdnet", size)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    tmp = tempfile.mkdtemp(prefix="uhrops-onnx-bench-")
    paths = {"dynamic": os.path.join(tmp, "dynamic.onnx"),
             "static": os.path.join(tmp, "static.onnx")}
    export_s = {k: _export(model, size, k == "dynamic", p) for k, p in paths.items()}
    sessions = {k: _ort_session(p, threads) for k, p in paths.items()}

    from zoo.engine.inference import prepare_for_eval

    fast = prepare_for_eval(model, fold_bn=True, channels_last=True)
    folded = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) - sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    feed = {"image": x.numpy()}

    def eager(net: torch.nn.Module, inp: torch.Tensor):
        def call() -> torch.Tensor:
            with torch.inference_mode():
                return net(inp)
        return call

    def ort_call(name: str):
        return lambda: sessions[name].run(["logits"], feed)[0]

    # The dynamic graph takes multiples of 32: zoo.infer's engine pads the image as WSDNet
    # does (channel means, i.e. zeros after the normalisation) and crops the logits; timed
    # with that work, as deployed.
    from zoo.engine.onnx_engine import OnnxWSDNet

    dyn = OnnxWSDNet(sessions["dynamic"], {
        "zoo.num_classes": model.num_classes, "zoo.size": None, "zoo.size_multiple": SIZE_MULTIPLE,
        "zoo.pad_mode": model.pad_mode, "zoo.normalization": {
            "mean": [float(v) for v in model.mean.flatten()],
            "std": [float(v) for v in model.std.flatten()], "in_graph": True}})

    fns = {"eager fp32": eager(model, x), "eager fp32+cl+fold": eager(fast, x),
           "onnxruntime dynamic": lambda: dyn(x), "onnxruntime static": ort_call("static")}
    with torch.inference_mode():
        ref = model(x)
    accuracy = {}
    for name in ("eager fp32+cl+fold", "onnxruntime dynamic", "onnxruntime static"):
        out = torch.as_tensor(fns[name]()).float()
        err = float((out - ref).abs().max()) / float(ref.abs().max())
        agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
        accuracy[name] = {"max_rel_err": err, "argmax_agreement": agree}
    # process CPU time of every call too (all threads, ONNX Runtime's included): steadier
    # than wall time on a shared machine (the first entry is paired_rounds' warm-up call)
    cpu_ms: dict[str, list[float]] = {n: [] for n in fns}

    def with_cpu(name: str):
        def call() -> Any:
            c0 = time.process_time()
            out = fns[name]()
            cpu_ms[name].append((time.process_time() - c0) * 1e3)
            return out
        return call

    times = paired_rounds({n: with_cpu(n) for n in fns}, rounds)
    rows = []
    for name, ts in times.items():
        cpu = cpu_ms[name][1:]
        row = {"contender": name, "size": size, "rounds": len(ts),
               "median_ms": statistics.median(ts), "times_ms": ts,
               "median_cpu_ms": statistics.median(cpu), "cpu_ms": cpu}
        if name in accuracy:
            row.update(accuracy[name])
        rows.append(row)
    ratios, cpu_ratios = {}, {}
    for eager_name in ("eager fp32", "eager fp32+cl+fold"):
        for ort_name in ("onnxruntime dynamic", "onnxruntime static"):
            key = f"{eager_name} / {ort_name}"
            ratios[key] = statistics.median(
                a / b for a, b in zip(times[eager_name], times[ort_name]))
            cpu_ratios[key] = statistics.median(
                a / b for a, b in zip(cpu_ms[eager_name][1:], cpu_ms[ort_name][1:]))
    for p in paths.values():
        os.remove(p)
    os.rmdir(tmp)
    import onnxruntime

    return {"model": desc, "size": size, "batch": 1, "threads": threads,
            "folded_batch_norms": folded, "export_s": export_s, "rows": rows,
            "paired_median_ratios": ratios, "paired_median_cpu_ratios": cpu_ratios,
            "onnxruntime": onnxruntime.__version__}


def _paired(num: list[float], den: list[float]) -> float:
    """Median over rounds of num / den, round by round (the lists are in round order)."""
    return statistics.median(a / b for a, b in zip(num, den))


def onnx_block(doc: dict[str, Any] | None) -> str:
    """``bench:onnx``: wall and process CPU time per image of every contender, the paired
    ratios against eager fp32 and the agreement with its logits, from ``onnx-cpu.json``."""
    if not doc:
        return not_measured("python -m benchmarks.onnx_export", RESULTS_FILE)
    meta = doc.get("metadata", {})
    size, ort = doc["size"], doc.get("onnxruntime", "?")
    padded = -(-size // SIZE_MULTIPLE) * SIZE_MULTIPLE
    labels = {"eager fp32": "eager fp32, `inference_mode`",
              "eager fp32+cl+fold": "eager fp32 + channels_last + folded BN",
              "onnxruntime dynamic": f"ONNX Runtime {ort}, `--dynamic` graph via `zoo.infer`'s "
                                     f"engine (pad {size} -> {padded}, crop)",
              "onnxruntime static": f"ONNX Runtime {ort}, graph exported at {size}²"}
    rows = {r["contender"]: r for r in doc["rows"]}
    base = rows.get("eager fp32")
    body = []
    for name, r in rows.items():
        if r is base:
            vs = "1x, 1x"
        elif base is not None:
            vs = (f"{_paired(base['times_ms'], r['times_ms']):.2f}x, "
                  f"{_paired(base['cpu_ms'], r['cpu_ms']):.2f}x")
            vs = f"**{vs}**" if name.startswith("onnxruntime") else vs
        else:
            vs = "—"
        acc = "—"
        if r.get("max_rel_err") is not None:
            acc = f"{r['max_rel_err']:.1e}".replace("e-0", "e-") + " max rel"
            if r.get("argmax_agreement") is not None:
                acc += f", argmax {100 * r['argmax_agreement']:.4g} %"
        body.append([labels.get(name, name), fnum(r["median_ms"] / 1e3),
                     fnum(r["median_cpu_ms"] / 1e3), vs, acc])
    rounds = max((r["rounds"] for r in doc["rows"]), default=0)
    load = (f" Load average (1 min) {meta['loadavg_start'][0]:.1f} at the start and "
            f"{meta['loadavg_end'][0]:.1f} at the end of the run."
            if meta.get("loadavg_start") and meta.get("loadavg_end") else "")
    head = (f"{doc['model']} at {size}², batch {doc['batch']}, fp32, {doc['threads']} threads "
            f"for both runtimes, {rounds} paired rounds in one process (every contender once "
            f"per round, order alternating); torch {meta.get('torch', '?')}, commit "
            f"{(meta.get('commit') or '?')[:8]}, {(meta.get('time') or '?')[:10]}.{load}")
    if doc.get("allocator"):
        head += f" Host allocator: {doc['allocator']}."
    if meta.get("note"):
        head += f" Conditions: {meta['note']}."
    best = "eager fp32+cl+fold"
    ratios, cpu = doc.get("paired_median_ratios", {}), doc.get("paired_median_cpu_ratios", {})
    tail = []
    dyn, sta = f"{best} / onnxruntime dynamic", f"{best} / onnxruntime static"
    if dyn in ratios and sta in ratios:
        tail.append(f"Against the best eager variant (channels_last + folded BN) the paired "
                    f"ratios are {ratios[dyn]:.2f}x (wall) and {cpu[dyn]:.2f}x (CPU) for the "
                    f"dynamic graph, {ratios[sta]:.2f}x and {cpu[sta]:.2f}x for the static "
                    f"one.")
    if doc.get("export_s"):
        tail.append(f"Export itself took {doc['export_s']['dynamic']:.0f} s (dynamic) and "
                    f"{doc['export_s']['static']:.0f} s (static) on the same machine.")
    table = md_table([f"WSDNet {size}², cpu-{doc['threads']}t", "s / image (wall)",
                      "CPU s / image", "eager fp32 / this: wall, CPU",
                      "vs eager fp32 logits"], body)
    return head + "\n\n" + table + ("\n\n" + " ".join(tail) if tail else "")


def render_blocks(results_dir: str, plots_rel: str | None = None) -> dict[str, str]:
    """``bench:onnx`` from ``results_dir``'s :data:`RESULTS_FILE`."""
    return {"onnx": onnx_block(load_json(results_dir, RESULTS_FILE))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.onnx_export",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2448)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="96 px, 1 round (a smoke run)")
    p.add_argument("--allocator", choices=("kept", "default"), default="kept",
                   help="kept: freed host memory reused across calls, as zoo.infer runs "
                        "(zoo.core.runtime.reuse_freed_memory); default: glibc's own")
    p.add_argument("--note", default=None, help="free text stored with the results (load)")
    p.add_argument("--json", default=None, help="output file (default "
                   "benchmarks/results/onnx-cpu.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size, rounds = (96, 1) if args.quick else (args.size, args.rounds)
    load = os.getloadavg()
    from zoo.core.runtime import reuse_freed_memory

    with reuse_freed_memory(args.allocator == "kept") as why_not:
        result = run(size, rounds)
    result["allocator"] = "freed memory kept (zoo.core.runtime.reuse_freed_memory)" \
        if why_not is None else f"glibc's default ({why_not})"
    meta = metadata("cpu")
    meta.update({"quick": args.quick, "note": args.note, "loadavg_start": load,
                 "loadavg_end": os.getloadavg()})
    path = args.json or (os.path.join(RESULTS_DIR, RESULTS_FILE) if not args.quick else
                         os.path.join(tempfile.gettempdir(), "uhrops-onnx-cpu-quick.json"))
    write_json(path, {"schema": "uhrops-bench-onnx/1", "metadata": meta, **result})
    for row in result["rows"]:
        extra = (f"  max rel err {row['max_rel_err']:.1e}, argmax agree "
                 f"{row['argmax_agreement']:.4f}" if "max_rel_err" in row else "")
        print(f"{row['contender']:>22}: {row['median_ms']:9.1f} ms wall, "
              f"{row['median_cpu_ms']:9.1f} ms CPU{extra}")
    for k, v in result["paired_median_ratios"].items():
        print(f"  {k}: {v:.2f}x wall, {result['paired_median_cpu_ratios'][k]:.2f}x CPU")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
