"""The Wavelet Smooth Loss's readings against cross-entropy on real DeepGlobe crops (issue 19).

``python -m benchmarks.wsl_magnitudes [--root DIR] [--crop N] [--out JSON]``: WSDNet at
initialisation (seed 0, random backbones, train mode) on the top-left ``N x N`` crops (1224,
the training crop) of the DeepGlobe images in ``DIR`` (default: shared/data/deepglobe, two
images = a batch of two, which the ASPP image-pool BN needs), and prints one Markdown row per
reading: the segmentation and auxiliary cross-entropies, and the WSL between the SR head's
reconstruction and the normalised input. The loss's weight against the CE terms is the number
that changes between readings (written to ``benchmarks/results/wsl-magnitudes.json``, the
README's ``bench:wsl-magnitudes`` block); at initialisation it is dominated by the
low-frequency (L2) terms, since the reconstruction starts near zero.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import torch

from benchmarks.markdown import fnum, load_json, md_table, not_measured
from zoo.config import load_config
from zoo.core.atomic import atomic_write_text
from zoo.data.registry import build_dataset
from zoo.wsdnet import WSDNet
from zoo.wsdnet.losses import WaveletSmoothLoss, labelled_cross_entropy

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_FILE = "wsl-magnitudes.json"
BLOCKS = ("wsl-magnitudes",)  # the documentation block rendered from RESULTS_FILE
DEFAULT_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "deepglobe"))

READINGS = [  # (label, WaveletSmoothLoss kwargs)
    ("Eq. 4 as written (default): packet, sum_bands", {}),
    ("packet, mean (the former default)", {"reduction": "mean"}),
    ("packet, sum_bands, ll_scale=average", {"ll_scale": "average"}),
    ("packet, mean, ll_scale=average", {"reduction": "mean", "ll_scale": "average"}),
    ("mallat, sum_bands", {"tree": "mallat"}),
    ("mallat, mean", {"tree": "mallat", "reduction": "mean"}),
    ("mallat, sum_bands, low term at the last level only",
     {"tree": "mallat", "low_every_level": False}),
]


def wsl_magnitudes_block(doc: dict[str, Any] | None) -> str:
    """``bench:wsl-magnitudes``: the Wavelet Smooth Loss's readings against cross-entropy on
    real images, from ``wsl-magnitudes.json``."""
    if not doc:
        return not_measured("python -m benchmarks.wsl_magnitudes", RESULTS_FILE)
    seg = doc["ce_seg"]
    head = (f"{doc['data']}, `{doc['command']}`: CE(seg) {fnum(seg)}, CE(aux) "
            f"{fnum(doc['ce_aux'])}.")
    body = [[r["label"], fnum(r["wsl"]), fnum(r["wsl"] / seg)] for r in doc["rows"]]
    return head + "\n\n" + md_table(["WSL reading (`WaveletSmoothLoss(...)`)", "WSL",
                                        "WSL / CE(seg)"], body)


def render_blocks(results_dir: str, plots_rel: str | None = None) -> dict[str, str]:
    """``bench:wsl-magnitudes`` from ``results_dir``'s :data:`RESULTS_FILE`."""
    return {"wsl-magnitudes": wsl_magnitudes_block(load_json(results_dir, RESULTS_FILE))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=DEFAULT_ROOT)
    ap.add_argument("--crop", type=int, default=1224)
    ap.add_argument("--out", default=os.path.join(HERE, "results", RESULTS_FILE),
                    help="results JSON ('' for none)")
    args = ap.parse_args(argv)
    cfg = load_config("wsdnet_deepglobe", [f"data.root={args.root}", "data.missing=skip"])
    ds = build_dataset(cfg, "train")
    n = args.crop
    samples = [ds[i] for i in range(len(ds))]
    images = torch.stack([s["image"][:, :n, :n] for s in samples])
    masks = torch.stack([s["mask"][:n, :n] for s in samples]).long()
    torch.manual_seed(0)
    model = WSDNet(7).train()
    with torch.no_grad():
        out = model(images)
    seg = float(labelled_cross_entropy(out["seg"], masks, 255))
    aux = float(labelled_cross_entropy(out["aux"], masks, 255))
    ids = ", ".join(str(s["id"]) for s in samples)
    print(f"DeepGlobe {ids}, top-left {n}x{n} crops, WSDNet(7) at initialisation (seed 0)")
    print(f"CE(seg) {seg:.3f}, CE(aux) {aux:.3f}, lambda_3 * CE(aux) {0.1 * aux:.3f}\n")
    print("| WSL reading | WSL | WSL / CE(seg) |")
    print("|---|---|---|")
    rows = []
    for label, kw in READINGS:
        wsl = float(WaveletSmoothLoss(**kw)(out["recon"], out["image"]))
        rows.append({"label": label, "kwargs": kw, "wsl": wsl})
        print(f"| {label} | {wsl:.3f} | {wsl / seg:.2f} |")
    if args.out:
        doc = {"schema": "uhrops-wsl-magnitudes/1", "torch": torch.__version__,
               "command": "python -m benchmarks.wsl_magnitudes"
                          + ("" if n == 1224 else f" --crop {n}"),
               "data": f"DeepGlobe {ids}, top-left {n}² crops, WSDNet(7) at initialisation "
                       f"(seed 0, random backbones, train mode)",
               "ce_seg": seg, "ce_aux": aux, "rows": rows}
        atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
