"""FCtL's Table 6 ablation: non-overlapping montage vs overlap averaging vs CSRN refinement.

    python -m benchmarks.csrn_ablation [--quick] [--out FILE]

runs the whole protocol on synthetic scenes (:mod:`zoo.data.synthetic`) on the CPU and writes
``benchmarks/results/csrn-ablation-synthetic.json``:

1. a local patch model is trained on random patches of the training scenes (seed 0), and a
   copy is kept at 40 % of its steps (the paper stops its local model after 20 of 50 epochs to
   make the refiner's training masks);
2. ``zoo.fctl.make_refine_data.write_refine_masks`` stores the early model's crude masks
   (averaged logits over the FCtL grid) of the training scenes and of validation scenes
   (seed 1000);
3. one CSRN per context size is trained by ``zoo.train`` (family ``fctl_refine``, the same
   optimiser settings as the local model, focal loss gamma 3);
4. on held-out test scenes (seed 1001) the final local model's patch logits are merged by
   montage, by averaging and by averaging + each CSRN (:func:`zoo.fctl.evaluate_merges`):
   mIoU over all pixels and over the seam band.

A diagnostic row adds a CSRN (x2) trained on the *final* model's masks of fresh scenes (seed
2000) that the local model never saw: synthetic data is unlimited, so the problem the paper's
early stopping works around (a local model's masks of its own training images are too clean)
can be avoided directly, which separates the CSRN design from the early-model protocol.

The geometry is FCtL's DeepGlobe setting scaled by 64/508: 64 px patches on 256 px scenes
(5 x 5 patches overlapping by 16 px, FCtL's ">= 50 px" rule scaled to 6 px), context windows
of 1.5, 2 and 2.5 patches (the paper's 762, 1016 and 1270 px around 508 px patches), a seam
band of 16 · 64/508 = 2 px. The local model is a small stand-in patch network, not FCtL's
VGG16 (whose CPU cost, about 2.5 s per patch step, would not fit in minutes): the ablation is
about merging, and any patch model with a limited field of view makes seam errors.

With checkpoints of a real run (FCtL local model, refiners trained by ``zoo.train``):

    python -m benchmarks.csrn_ablation --config fctl_deepglobe_refine --data-root DIR \\
        --local-checkpoint runs/fctl_deepglobe_full/checkpoints/best.safetensors \\
        --refiner 1.5=runs/r15/checkpoints/best.safetensors --refiner 2=... --refiner 2.5=... \\
        [--split test] [--out FILE]

evaluates the same table on a dataset split with the FCtL model of ``refine.local_config``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import fmt_table, metadata, write_json
from benchmarks.markdown import load_json, md_table, not_measured

RESULTS = os.path.join(os.path.dirname(__file__), "results")
RESULTS_FILE = "csrn-ablation-synthetic.json"  # the synthetic protocol's results
BLOCKS = ("csrn-ablation",)  # the documentation block rendered from RESULTS_FILE

# Synthetic protocol. "full" fits in about 10 minutes on 2 CPU cores; "quick" is a smoke run.
SETTINGS: dict[str, dict[str, Any]] = {
    "full": {"size": 256, "patch": 64, "min_overlap": 6, "train_scenes": 48, "val_scenes": 6,
             "test_scenes": 12, "local_width": 16, "local_steps": 400, "local_batch": 16,
             "refiner_width": 16, "refiner_depth": 3, "refiner_steps": 100,
             "scales": (1.5, 2.0, 2.5), "fresh_scale": 2.0, "lr": 2e-3},
    "quick": {"size": 96, "patch": 32, "min_overlap": 4, "train_scenes": 2, "val_scenes": 1,
              "test_scenes": 1, "local_width": 4, "local_steps": 4, "local_batch": 4,
              "refiner_width": 4, "refiner_depth": 2, "refiner_steps": 2,
              "scales": (2.0,), "fresh_scale": None, "lr": 2e-3},
}
EARLY_FRACTION = 0.4  # the paper's 20 of 50 epochs
FRESH_SEED = 2000  # scenes for the diagnostic refiner trained on the final model's masks
NUM_CLASSES = 7


class PatchNet(nn.Module):
    """Stand-in local model: a 3-level conv encoder-decoder on one patch, no context.

    Convention: (B, 3, p, p) in [0, 1] -> (B, n, p, p) logits; zero padding, so like any patch
    model it knows less near the patch borders.
    """

    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True))

        w = width
        self.enc1, self.enc2, self.enc3 = block(3, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.dec2, self.dec1 = block(6 * w, 2 * w), block(3 * w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2, ceil_mode=True))
        e3 = self.enc3(F.max_pool2d(e2, 2, ceil_mode=True))
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear"), e1], 1))
        return self.head(d1)


def _log(msg: str) -> None:
    print(f"[csrn_ablation {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_local(s: dict[str, Any], seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(early, final) stand-in local models trained on random patches (focal loss gamma 3)."""
    from zoo.data.synthetic import SyntheticUHR
    from zoo.losses import focal_loss
    from zoo.engine.samples import poly_lr

    data = SyntheticUHR(s["train_scenes"], size=(s["size"],) * 2, num_classes=NUM_CLASSES,
                        seed=seed)
    scenes = [data[i] for i in range(len(data))]
    images = torch.stack([d["image"] for d in scenes])
    masks = torch.stack([d["mask"] for d in scenes])
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = PatchNet(NUM_CLASSES, s["local_width"])
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"], weight_decay=5e-4)
    p, steps = s["patch"], s["local_steps"]
    early = None
    for it in range(steps):
        for group in opt.param_groups:
            group["lr"] = poly_lr(s["lr"], it, steps, 0.9)
        k = torch.randint(len(scenes), (s["local_batch"],), generator=g)
        y0 = torch.randint(s["size"] - p + 1, (s["local_batch"],), generator=g)
        x0 = torch.randint(s["size"] - p + 1, (s["local_batch"],), generator=g)
        flip = torch.rand(s["local_batch"], generator=g) < 0.5
        x = torch.stack([images[a, :, b:b + p, c:c + p] for a, b, c in zip(k, y0, x0)])
        t = torch.stack([masks[a, b:b + p, c:c + p] for a, b, c in zip(k, y0, x0)])
        x[flip], t[flip] = x[flip].flip(-1), t[flip].flip(-1)
        loss = focal_loss(model(x), t, gamma=3.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it + 1 == max(1, int(EARLY_FRACTION * steps)):
            early = copy.deepcopy(model).eval()
        if (it + 1) % 100 == 0:
            _log(f"local step {it + 1}/{steps}: focal loss {float(loss.detach()):.4f}")
    assert early is not None
    return early, model.eval()


def _patch_fn(model: nn.Module, patch: int, min_overlap: int):
    from uhrops.tiling import PatchGrid, extract_patches

    def fn(image: Tensor):
        grid = PatchGrid.from_min_overlap(tuple(image.shape[-2:]), patch, min_overlap)
        with torch.no_grad():
            return model(extract_patches(image, grid)), grid

    return fn


def _refine_cfg(s: dict[str, Any], masks: str, scale: float) -> dict[str, Any]:
    from zoo.config import load_config

    return load_config("fctl_deepglobe_refine", [
        "data.dataset=synthetic", f"data.synthetic_train={s['train_scenes']}",
        f"data.synthetic_val={s['val_scenes']}", f"data.synthetic_size=[{s['size']}, {s['size']}]",
        "data.num_workers=0", f"fctl.patch_size={s['patch']}",
        f"fctl.min_overlap={s['min_overlap']}", "fctl.images_per_step=1", "fctl.sub_batch=25",
        f"refine.masks={masks}", f"model.kwargs={{context_scale: {scale}, width: "
        f"{s['refiner_width']}, depth: {s['refiner_depth']}}}", f"train.lr={s['lr']}",
        f"train.iters={s['refiner_steps']}", "train.val_every=0", "train.log_every=20",
        f"train.ckpt_every={s['refiner_steps']}", "train.device=cpu", "train.seed=0"])


def run_synthetic(mode: str, work: str) -> dict[str, Any]:
    from zoo.data.synthetic import SyntheticUHR
    from zoo.data.registry import SYNTHETIC_VAL_SEED_OFFSET
    from zoo.fctl import CSRN, evaluate_merges
    from zoo.fctl.refine_masks import write_refine_masks
    from zoo.core.checkpoint import load_checkpoint
    from zoo.metrics import SegmentationMetrics
    from zoo.engine.trainer import train
    from uhrops.tiling import sliding_window, PatchGrid

    s = SETTINGS[mode]
    t0 = time.perf_counter()
    early, final = train_local(s)
    _log(f"local model trained ({time.perf_counter() - t0:.0f} s)")

    def crude_of(model: nn.Module):
        def crude(image: Tensor) -> Tensor:  # averaged local logits
            grid = PatchGrid.from_min_overlap(tuple(image.shape[-2:]), s["patch"],
                                              s["min_overlap"])
            return sliding_window(model, image, grid, 32, reduction="mean")
        return crude

    def scenes(n: int, seed: int) -> SyntheticUHR:
        return SyntheticUHR(n, size=(s["size"],) * 2, num_classes=NUM_CLASSES, seed=seed)

    # The paper's protocol: masks of the early model on the local model's training scenes.
    # Diagnostic: masks of the final model on scenes it never saw (unlimited synthetic data
    # avoids the memorised-training-set problem that early stopping works around).
    sources = [("early", early, 0, s["scales"])]
    if s["fresh_scale"]:
        sources.append(("fresh", final, FRESH_SEED, (s["fresh_scale"],)))
    refiners: dict[str, CSRN] = {}
    refiner_val: dict[str, float] = {}
    masks_val: dict[str, float] = {}
    for kind, model, train_seed, scales in sources:
        masks = os.path.join(work, f"masks-{kind}")
        source = {"local_model": f"benchmarks.csrn_ablation.PatchNet ({kind})", "mode": mode,
                  "patch_size": s["patch"], "min_overlap": s["min_overlap"]}
        write_refine_masks(crude_of(model), scenes(s["train_scenes"], train_seed), masks,
                           "train", source)
        val = scenes(s["val_scenes"], SYNTHETIC_VAL_SEED_OFFSET)
        write_refine_masks(crude_of(model), val, masks, "val", source)
        # what the refiners start from: averaging of this model on the validation scenes
        metrics = SegmentationMetrics.for_dataset(val)
        with torch.no_grad():
            for i in range(len(val)):
                metrics.update(crude_of(model)(val[i]["image"][None]).argmax(1),
                               val[i]["mask"][None])
        masks_val[kind] = metrics.compute()["miou"]
        _log(f"{kind} refine masks written, val mIoU of their averaging {masks_val[kind]:.4f} "
             f"({time.perf_counter() - t0:.0f} s)")
        for scale in scales:
            cfg = _refine_cfg(s, masks, scale)
            name = f"{scale:g}" if kind == "early" else f"{scale:g}-{kind}"
            out = os.path.join(work, f"refine-{name}")
            m = train(cfg, out)
            net = CSRN(NUM_CLASSES, **cfg["model"]["kwargs"])
            load_checkpoint(os.path.join(out, "checkpoints", "last.safetensors"), net)
            refiners[name] = net
            refiner_val[name] = m["miou"]
            _log(f"CSRN x{scale:g} on {kind} masks trained, val mIoU on those masks "
                 f"{m['miou']:.4f} ({time.perf_counter() - t0:.0f} s)")

    test = scenes(s["test_scenes"], SYNTHETIC_VAL_SEED_OFFSET + 1)
    result = evaluate_merges(_patch_fn(final, s["patch"], s["min_overlap"]), test, refiners,
                             batch_size=25)
    result["refiner_val_miou_on_their_masks"] = refiner_val
    result["averaging_val_miou_of_refiner_masks"] = masks_val
    result["settings"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()}
    result["settings"].update({"mode": mode, "early_fraction": EARLY_FRACTION,
                               "num_classes": NUM_CLASSES, "train_seed": 0,
                               "fresh_seed": FRESH_SEED,
                               "val_seed": SYNTHETIC_VAL_SEED_OFFSET,
                               "test_seed": SYNTHETIC_VAL_SEED_OFFSET + 1})
    result["seconds"] = time.perf_counter() - t0
    return result


def run_checkpoints(args: argparse.Namespace) -> dict[str, Any]:
    from zoo.config import load_config
    from zoo.data.registry import build_dataset
    from zoo.fctl import CSRN, FCtLSegmenter, evaluate_merges
    from zoo.fctl.local_model import load_local_model
    from zoo.core.checkpoint import load_checkpoint
    from zoo.core.runtime import pick_device

    overrides = list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])
    cfg = load_config(args.config, overrides)
    local_cfg = load_config(cfg["refine"]["local_config"])
    device = pick_device(cfg["train"]["device"])
    model = load_local_model(local_cfg, args.local_checkpoint, device)
    f = cfg["fctl"]
    seg = FCtLSegmenter(model, patch_size=f["patch_size"], min_overlap=f["min_overlap"],
                        batch_size=f["sub_batch"], context_scales=local_cfg["fctl"]["contexts"]
                        or None, out_device="cpu")
    refiners = {}
    for item in args.refiner:
        name, _, path = item.partition("=")
        kwargs = dict(cfg["model"]["kwargs"])
        kwargs["context_scale"] = float(name)
        net = CSRN(int(cfg["model"]["num_classes"]), **kwargs)
        load_checkpoint(path, net)
        refiners[f"{float(name):g}"] = net.to(device)
    dataset = build_dataset({**cfg, "family": "fctl"}, args.split)
    result = evaluate_merges(seg.patch_logits, dataset, refiners, batch_size=f["sub_batch"],
                             band_width=args.band, limit=args.limit, device=device,
                             progress=True)
    result["settings"] = {"config": args.config, "local_config": cfg["refine"]["local_config"],
                          "local_checkpoint": args.local_checkpoint, "refiners": args.refiner,
                          "split": args.split, "patch_size": f["patch_size"],
                          "min_overlap": f["min_overlap"]}
    return result


def table(result: dict[str, Any]) -> str:
    rows = []
    for name, m in result["methods"].items():
        ref = name.split("@")[1] if "@" in name else ""
        scale, _, kind = ref.partition("-")
        rows.append({"method": name.split("@")[0], "context": scale or "-",
                     "refiner masks": "-" if not ref else
                     "final model, unseen scenes" if kind == "fresh" else "early model",
                     "mIoU": f"{100 * m['miou']:.2f}",
                     "seam-band mIoU": f"{100 * m['band_miou']:.2f}",
                     "accuracy": f"{100 * m['accuracy']:.2f}"})
    return fmt_table(rows, ["method", "context", "refiner masks", "mIoU", "seam-band mIoU",
                            "accuracy"])


def _method_cells(name: str) -> list[str]:
    """(merge, context, refiner trained on) of a method key: ``montage``, ``averaging``,
    ``csrn@<scale>`` or ``csrn@<scale>-fresh`` (the diagnostic refiner)."""
    merge, _, ref = name.partition("@")
    if not ref:
        return [merge, "–", "–"]
    scale, _, kind = ref.partition("-")
    return ["CSRN" if merge == "csrn" else merge, f"×{scale}",
            "final-model masks, unseen scenes" if kind == "fresh" else "early-model masks"]


def ablation_block(doc: dict[str, Any] | None) -> str:
    """``bench:csrn-ablation``: mIoU over all pixels and over the seam band per merge, from
    the synthetic protocol's results file (percent, two decimals)."""
    if not doc:
        return not_measured("python -m benchmarks.csrn_ablation", RESULTS_FILE)
    res = doc["results"]
    meta = doc.get("metadata", {})
    body = [_method_cells(name) + [f"{100 * m['miou']:.2f}", f"{100 * m['band_miou']:.2f}"]
            for name, m in res["methods"].items()]
    minutes, seconds = divmod(round(res["seconds"]), 60) if "seconds" in res else (None, None)
    took = f"; the run took {minutes} min {seconds} s" if minutes is not None else ""
    head = (f"{res['images']} test scenes, {res['pixels']} labelled pixels, "
            f"{100 * res['band_fraction']:.1f} % of them in the seam band "
            f"({res['band_width']} px at {res['patch_size']} px patches); torch "
            f"{meta.get('torch', '?')}, {meta.get('threads', '?')} thread(s), commit "
            f"{(meta.get('commit') or '?')[:8]}, {(meta.get('time') or '?')[:10]}{took}.")
    return head + "\n\n" + md_table(["merge", "context", "refiner trained on", "mIoU",
                                      "seam-band mIoU"], body)


def render_blocks(results_dir: str, plots_rel: str | None = None) -> dict[str, str]:
    """``bench:csrn-ablation`` from ``results_dir``'s :data:`RESULTS_FILE`."""
    return {"csrn-ablation": ablation_block(load_json(results_dir, RESULTS_FILE))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.csrn_ablation",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run of the synthetic protocol")
    p.add_argument("--out", default=None, help="JSON file to write")
    p.add_argument("--work", default=None, help="folder for masks and refiner runs (default: "
                   "a temporary folder)")
    p.add_argument("--config", default=None, help="refine config (checkpoint mode)")
    p.add_argument("--local-checkpoint", default=None)
    p.add_argument("--refiner", action="append", default=[], metavar="SCALE=CHECKPOINT")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--data-root", default=None)
    p.add_argument("--band", type=int, default=None, help="seam band half-width in px "
                   "(default 16 * patch / 508)")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    # One intra-op thread: these small convolutions run several times faster that way on a
    # shared 2-core CPU (OpenMP spin-waits dominate otherwise).
    torch.set_num_threads(1)
    if args.config:
        if not args.local_checkpoint:
            p.error("--config needs --local-checkpoint (and usually --refiner SCALE=PATH)")
        result = run_checkpoints(args)
        out = args.out or os.path.join(
            RESULTS, f"csrn-ablation-{os.path.splitext(os.path.basename(args.config))[0]}.json")
    else:
        mode = "quick" if args.quick else "full"
        if args.work:
            os.makedirs(args.work, exist_ok=True)
            result = run_synthetic(mode, args.work)
        else:
            with tempfile.TemporaryDirectory(prefix="csrn-ablation-") as work:
                result = run_synthetic(mode, work)
        out = args.out or os.path.join(RESULTS, RESULTS_FILE)
    print(table(result))
    print(f"seam band: {result['band_width']} px around patch borders and montage cuts, "
          f"{100 * result['band_fraction']:.1f} % of {result['pixels']} labelled pixels of "
          f"{result['images']} images")
    write_json(out, {"metadata": metadata("cpu"), "results": result})
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
