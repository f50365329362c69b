"""Saved activations of one WSDNet training step, per image, on the CPU (issue 19).

``python -m benchmarks.wsdnet_train_memory [--sizes 512 1248] [--sr-output image haar1]``:
a train-mode forward of WSDNet (paper widths, 7 classes) and its loss on a batch of two random
crops, under ``torch.autograd.graph.saved_tensors_hooks`` that count every distinct storage
autograd keeps for the backward pass (a tensor saved by two ops, or a view of a saved
tensor, is counted once). Half the total is the per-image figure; the split by top-level
module is where the bytes are. Parameters, gradients and the optimizer state are not
included (they do not depend on the crop). Nothing is run backward, so the figure is the
activation memory autograd holds at the end of the forward pass, which is the peak of a step
up to the transient buffers of single ops.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from zoo.wsdnet import WSDNet
from zoo.wsdnet.losses import WSDNetLoss


def saved_bytes(size: int, batch: int = 2, **model_kwargs) -> tuple[int, dict[str, int]]:
    torch.manual_seed(0)
    model = WSDNet(7, **model_kwargs).train()
    seen: dict[tuple[int, int], str] = {}
    current = ["(loss)"]
    per_module: dict[str, int] = defaultdict(int)

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        key = (st.data_ptr(), st.nbytes())
        if key not in seen:
            seen[key] = current[0]
            per_module[current[0]] += st.nbytes()
        return t

    def enter(name):
        def hook(*_):
            current[0] = name
        return hook

    for name, child in model.named_children():
        child.register_forward_pre_hook(enter(name))
    images = torch.rand(batch, 3, size, size)
    masks = torch.randint(0, 7, (batch, size, size))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        current[0] = "(input)"
        out = model(images)
        current[0] = "(loss)"
        WSDNetLoss()(out, masks)
    return sum(per_module.values()), dict(per_module)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1248])
    ap.add_argument("--sr-output", nargs="+", default=["image"])
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    for sr in args.sr_output:
        for size in args.sizes:
            kw = {} if sr == "image" else {"sr_output": sr}
            total, parts = saved_bytes(size, **kw)
            top = sorted(parts.items(), key=lambda kv: -kv[1])
            share = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in top[:5])
            print(f"sr_output={sr} {size}^2: {total / 2 / 2**20:.0f} MiB per image "
                  f"({total / 2 / size**2:.0f} B/pixel); {share}", flush=True)


if __name__ == "__main__":
    main()
