"""Tests of FCtL's refinement stage: zoo.fctl.csrn, zoo.fctl.merging, make_refine_data, the
fctl_refine task and configs, FCtLSegmenter(refiner=...), and the Table 6 ablation.

Oracles are written here from the definitions: a patch-by-patch loop for the refinement pass
(crop, zero-padded context window, antialiased resize, average), per-pixel loops for the
montage (nearest patch centre), for the seams (rows where the set of covering patches or the
montage owner changes) and for the band-restricted confusion matrix.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uhrops.tiling import PatchGrid, extract_patches, merge_patches
from zoo.config import ConfigError, load_config
from zoo.fctl import CSRN, FCtL, FCtLSegmenter, refine_logits
from zoo.fctl.refine_masks import (LOGP_STEPS, RefineMasks, decode_logp, encode_logp, write_refine_masks)
from zoo.fctl.merging import (evaluate_merges, montage_patches, seam_band_mask, seam_positions,
                              seam_band_width)
from zoo.losses import focal_loss
from zoo.metrics import masked_confusion_matrix


def perturbed(net: CSRN, seed: int = 0, scale: float = 0.3) -> CSRN:
    """The refiner with a non-zero head and gamma, so that every part matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.head.weight.copy_(torch.randn(net.head.weight.shape, generator=g) * scale)
        net.head.bias.copy_(torch.randn(net.head.bias.shape, generator=g) * scale)
        net.relevance.gamma.fill_(0.7)
    return net


# ------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width,depth,size,ctx_size", [
    (4, 1, (9, 7), (9, 7)), (4, 2, (16, 16), (16, 16)), (6, 3, (21, 18), (13, 30)),
    (8, 4, (33, 40), (33, 40))])
def test_shapes_any_size(width, depth, size, ctx_size, one_thread):
    net = perturbed(CSRN(5, width=width, depth=depth))
    local = torch.randn(2, 5, *size)
    out = net(local, torch.randn(2, 5, *ctx_size))
    assert out.shape == local.shape and out.dtype == local.dtype
    assert not torch.equal(out, local)  # the perturbed head does change the logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_untrained_refiner_returns_its_input_exactly(dtype, one_thread):
    net = CSRN(7, width=4, depth=3).to(dtype)
    local = torch.randn(3, 7, 20, 22, dtype=dtype) * 50  # confident logits, any scale
    ctx = torch.randn(3, 7, 20, 22, dtype=dtype)
    for mode in (True, False):
        net.train(mode)
        assert torch.equal(net(local, ctx), local)


def _changed(before: dict, net: nn.Module) -> set[str]:
    return {k for k, v in net.named_parameters() if not torch.equal(v.detach(), before[k])}


def test_gradients_reach_both_streams(one_thread):
    """At initialisation the zero head blocks every gradient but its own, and gamma = 0 blocks
    the context stream; once they are non-zero, every part gets gradient."""
    torch.manual_seed(0)
    net = CSRN(4, width=4, depth=3)
    local, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    target = torch.randint(0, 4, (2, 16, 16))

    focal_loss(net(local, ctx), target).backward()
    nonzero = {k for k, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert nonzero == {"head.weight", "head.bias"}

    net.zero_grad()
    perturbed(net)
    focal_loss(net(local, ctx), target).backward()
    # The key bias shifts every logit of a query by the same amount: softmax over keys
    # ignores it, so its gradient is 0 in exact arithmetic (float rounding only).
    exempt = {"relevance.conv_key.bias"}
    for k, p in net.named_parameters():
        if k in exempt:
            assert p.grad.abs().max() < 1e-6
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, k
    streams = {k.split(".")[0] for k, p in net.named_parameters() if p.grad.abs().sum() > 0}
    assert {"local_encoder", "context_encoder", "relevance", "decoder", "head"} <= streams


def test_training_wakes_the_streams_in_order(one_thread):
    """Plain Adam (no weight decay, which would move every weight): step 1 moves only the
    head, step 2 the local stream, decoder and gamma, step 3 also the context stream."""
    torch.manual_seed(1)
    net = CSRN(3, width=4, depth=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=0.0)
    local, ctx = torch.randn(2, 3, 12, 12), torch.randn(2, 3, 12, 12)
    target = torch.randint(0, 3, (2, 12, 12))
    start = {k: v.detach().clone() for k, v in net.named_parameters()}

    def step() -> set[str]:
        opt.zero_grad()
        focal_loss(net(local, ctx), target).backward()
        opt.step()
        return _changed(start, net)

    assert step() == {"head.weight", "head.bias"}
    moved = step()
    assert "relevance.gamma" in moved
    assert any(k.startswith("local_encoder.") for k in moved)
    assert any(k.startswith("decoder.") for k in moved)
    assert not any(k.startswith("context_encoder.") for k in moved)
    assert not any(k.startswith("relevance.conv_") for k in moved)
    moved = step()
    assert all(k in moved for k, _ in net.named_parameters()
               if k.startswith("context_encoder.") or k == "relevance.conv_value.weight")


def test_model_input_errors():
    net = CSRN(3, width=4, depth=2)
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="local_logits.*3 channels"):
        net(torch.randn(2, 4, 8, 8), x)
    with pytest.raises(ValueError, match="context_logits.*3 channels"):
        net(x, torch.randn(2, 2, 8, 8))
    with pytest.raises(ValueError, match="batch"):
        net(x, torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="local_logits.*4-D"):
        net(x[0], x)
    with pytest.raises(TypeError, match="context_logits"):
        net(x, x.long())
    with pytest.raises(ValueError, match="context_scale"):
        CSRN(3, context_scale=0)
    with pytest.raises(ValueError, match="depth"):
        CSRN(3, depth=9)
    with pytest.raises(ValueError, match="width"):
        CSRN(3, width=0)


# ------------------------------------------------------------------------------------------
# The refinement pass against a patch loop
# ------------------------------------------------------------------------------------------


def loop_refine(net: CSRN, crude: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
    """Patch by patch: crop, zero-padded centred window, antialiased resize, average."""
    ph, pw = grid.patch_size
    L_h = int(np.floor(net.context_scale * ph + 0.5))
    L_w = int(np.floor(net.context_scale * pw + 0.5))
    oy, ox = (L_h - ph) // 2, (L_w - pw) // 2
    pad = max(L_h, L_w)
    padded = F.pad(crude, (pad, pad, pad, pad))
    acc = torch.zeros_like(crude)
    cnt = torch.zeros_like(crude[:, :1])
    for y in grid.ys:
        for x in grid.xs:
            local = crude[:, :, y:y + ph, x:x + pw]
            win = padded[:, :, pad + y - oy:pad + y - oy + L_h, pad + x - ox:pad + x - ox + L_w]
            ctx = F.interpolate(win, size=(ph, pw), mode="bilinear", align_corners=False,
                                antialias=True)
            acc[:, :, y:y + ph, x:x + pw] += net(local, ctx)
            cnt[:, :, y:y + ph, x:x + pw] += 1
    return acc / cnt


@pytest.mark.parametrize("size,patch,overlap,scale", [
    ((40, 40), 16, 4, 2.0), ((37, 29), 15, 5, 1.5), ((48, 30), 16, 8, 2.5)])
def test_refine_logits_matches_patch_loop(size, patch, overlap, scale, one_thread):
    net = perturbed(CSRN(3, context_scale=scale, width=4, depth=2)).double().eval()
    grid = PatchGrid.from_min_overlap(size, patch, overlap)
    crude = torch.randn(2, 3, *size, dtype=torch.float64) * 3
    with torch.no_grad():
        got = refine_logits(net, crude, grid, batch_size=3)
        want = loop_refine(net, crude, grid)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # an untrained refiner gives back the crude mask
    with torch.no_grad():
        same = refine_logits(CSRN(3, context_scale=scale, width=4, depth=2).double(), crude,
                             grid)
    torch.testing.assert_close(same, crude, rtol=1e-12, atol=1e-12)


def test_refine_logits_errors():
    grid = PatchGrid.from_min_overlap(32, 16, 4)
    with pytest.raises(TypeError, match="refiner"):
        refine_logits(nn.Identity(), torch.randn(1, 3, 32, 32), grid)
    with pytest.raises(ValueError, match="crude.*4 channels"):
        refine_logits(CSRN(3, width=2, depth=1), torch.randn(1, 4, 32, 32), grid)


# ------------------------------------------------------------------------------------------
# Montage, seams and the band-restricted confusion matrix
# ------------------------------------------------------------------------------------------

GRIDS = [PatchGrid.from_min_overlap((48, 48), 32, 8), PatchGrid.from_min_overlap((70, 53), 16, 5),
         PatchGrid.from_stride((41, 60), 16, 11), PatchGrid.from_stride((32, 20), 16, 16),
         PatchGrid.from_min_overlap((12, 40), 16, 4), PatchGrid((30, 30), 10, (0, 7, 20), (0, 20))]


def owner(starts, p, r):
    """Index of the patch whose centre is nearest to pixel r (ties: the earlier one)."""
    d = [abs(r + 0.5 - (s + p / 2)) for s in starts]
    return d.index(min(d))


@pytest.mark.parametrize("grid", GRIDS)
def test_montage_matches_pixel_loop(grid):
    (H, W), (ph, pw) = grid.image_size, grid.patch_size
    patches = torch.randn(2 * len(grid), 3, ph, pw)
    got = montage_patches(patches, grid)
    want = torch.zeros(2, 3, H, W)
    nx = len(grid.xs)
    for r in range(H):
        i = owner(grid.ys, ph, r)
        for c in range(W):
            j = owner(grid.xs, pw, c)
            dy, dx = r - grid.ys[i], c - grid.xs[j]
            if not (0 <= dy < ph and 0 <= dx < pw):
                continue  # a gap of a hand-made grid: no patch covers it, it stays 0
            for b in range(2):
                want[b, :, r, c] = patches[b * len(grid) + i * nx + j, :, dy, dx]
    assert torch.equal(got, want)
    if grid is not GRIDS[-1]:  # every factory grid covers the image: montage inverts extraction
        x = torch.randn(1, 2, H, W)
        assert torch.equal(montage_patches(extract_patches(x, grid), grid), x)


def seams_by_definition(starts, p, size):
    """Boundaries y (between rows y-1 and y) where the covering set or the owner changes."""
    def cover(r):
        return {i for i, s in enumerate(starts) if s <= r < s + p}
    return [y for y in range(1, size)
            if cover(y - 1) != cover(y) or owner(starts, p, y - 1) != owner(starts, p, y)]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("width", [1, 2, 5])
def test_seam_band_matches_definition(grid, width):
    (H, W), (ph, pw) = grid.image_size, grid.patch_size
    rows, cols = seams_by_definition(grid.ys, ph, H), seams_by_definition(grid.xs, pw, W)
    assert seam_positions(grid) == (rows, cols)
    want = torch.zeros(H, W, dtype=torch.bool)
    for r in range(H):
        for c in range(W):
            want[r, c] = any(abs(r + 0.5 - y) < width for y in rows) or \
                any(abs(c + 0.5 - x) < width for x in cols)
    assert torch.equal(seam_band_mask(grid, width), want)


def test_seam_band_width_scales_with_the_patch():
    assert seam_band_width(508) == 16
    assert seam_band_width(64) == 2
    assert seam_band_width(16) == 1
    with pytest.raises(ValueError, match="width"):
        seam_band_mask(GRIDS[0], 0)


def test_masked_confusion_matrix_matches_loop():
    g = torch.Generator().manual_seed(3)
    pred = torch.randint(0, 4, (2, 9, 11), generator=g)
    target = torch.randint(0, 4, (2, 9, 11), generator=g)
    target[0, 0, :5] = 255
    mask = torch.rand(9, 11, generator=g) < 0.4
    want = torch.zeros(4, 4, dtype=torch.int64)
    for b in range(2):
        for r in range(9):
            for c in range(11):
                if mask[r, c] and target[b, r, c] != 255:
                    want[target[b, r, c], pred[b, r, c]] += 1
    assert torch.equal(masked_confusion_matrix(pred, target, mask, 4), want)
    logits = F.one_hot(pred, 4).permute(0, 3, 1, 2).float()
    assert torch.equal(masked_confusion_matrix(logits, target, mask, 4), want)
    with pytest.raises(TypeError, match="mask"):
        masked_confusion_matrix(pred, target, mask.int(), 4)
    with pytest.raises(ValueError, match="mask"):
        masked_confusion_matrix(pred, target, mask[:, :5], 4)


# ------------------------------------------------------------------------------------------
# FCtLSegmenter with a refiner
# ------------------------------------------------------------------------------------------


class LinearFCN(FCtL):
    """An FCtL "fcn" stage reduced to a per-pixel linear map (cheap, deterministic)."""

    def __init__(self, num_classes: int) -> None:
        with torch.device("meta"):
            super().__init__(num_classes, "inria", "fcn")
        del self.encoder, self.decoder
        g = torch.Generator().manual_seed(5)
        self.w = nn.Parameter(torch.randn(num_classes, 3, generator=g))
        self.b = nn.Parameter(torch.randn(num_classes, generator=g))

    def forward(self, patch, contexts=(), *, context_features=None):
        # a position-dependent term, so that overlapping patches disagree as real ones do
        ramp = torch.linspace(-1, 1, patch.shape[-1])
        return torch.einsum("oc,bchw->bohw", self.w, patch) + self.b[:, None, None] * ramp


def test_segmenter_with_refiner(one_thread):
    model = LinearFCN(3)
    image = torch.rand(1, 3, 40, 36)
    grid = PatchGrid.from_min_overlap((40, 36), 16, 4)
    summed = FCtLSegmenter(model, patch_size=16, min_overlap=4, batch_size=5)(image)
    averaged = FCtLSegmenter(model, patch_size=16, min_overlap=4, merge="mean")(image)
    counts = merge_patches(torch.ones(len(grid), 1, 16, 16), grid, "sum")
    torch.testing.assert_close(averaged, summed / counts)

    patches, g2 = FCtLSegmenter(model, patch_size=16, min_overlap=4).patch_logits(image)
    assert g2 == grid and patches.shape == (len(grid), 3, 16, 16)
    torch.testing.assert_close(merge_patches(patches, grid, "sum"), summed)

    untrained = CSRN(3, width=4, depth=2)
    seg = FCtLSegmenter(model, patch_size=16, min_overlap=4, refiner=untrained)
    torch.testing.assert_close(seg(image), averaged)

    refiner = perturbed(CSRN(3, context_scale=1.5, width=4, depth=2))
    refiner.train()
    seg = FCtLSegmenter(model, patch_size=16, min_overlap=4, batch_size=4, refiner=refiner)
    got = seg(image)
    assert refiner.training  # restored
    refiner.eval()
    with torch.no_grad():
        want = loop_refine(refiner, averaged, grid)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert seg.predict(image).shape == (1, 40, 36)
    tta = FCtLSegmenter(model, patch_size=16, min_overlap=4, refiner=refiner, tta=True)(image)
    assert tta.shape == (1, 3, 40, 36)

    with pytest.raises(TypeError, match="refiner"):
        FCtLSegmenter(model, refiner=nn.Identity())
    with pytest.raises(ValueError, match="refiner.*4 classes"):
        FCtLSegmenter(model, refiner=CSRN(4, width=2, depth=1))
    with pytest.raises(ValueError, match="merge"):
        FCtLSegmenter(model, merge="max")


# ------------------------------------------------------------------------------------------
# Refinement data
# ------------------------------------------------------------------------------------------


def test_logp_quantisation():
    logits = torch.randn(5, 7, 9) * 6
    logp = torch.log_softmax(logits, 0)
    back = decode_logp(encode_logp(logits))
    kept = logp > -255 / LOGP_STEPS
    assert (back[kept] - logp[kept]).abs().max() <= 0.5 / LOGP_STEPS + 1e-6
    assert torch.all(back[~kept] == -255 / LOGP_STEPS)
    # a per-pixel constant added to the logits changes nothing
    assert np.array_equal(encode_logp(logits + torch.randn(1, 7, 9) * 10), encode_logp(logits))


class CountingSegment:
    def __init__(self, fail_at: int | None = None) -> None:
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, image):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("killed")
        g = torch.Generator().manual_seed(int(image.sum() * 1000) % 2**31)
        return torch.randn(1, 3, *image.shape[-2:], generator=g) * 4


def test_refine_masks_are_atomic_resumable_and_readable(tmp_path):
    from zoo.data.base import DataFileError
    from zoo.data.synthetic import SyntheticUHR

    ds = SyntheticUHR(3, size=(24, 20), num_classes=3, seed=4)
    folder = str(tmp_path / "masks")
    source = {"local": "probe", "patch_size": 16}
    with pytest.raises(KeyboardInterrupt):  # a run killed at the second image
        write_refine_masks(CountingSegment(fail_at=2), ds, folder, "train", source)
    assert len(os.listdir(os.path.join(folder, "train"))) == 1
    seg = CountingSegment()
    assert write_refine_masks(seg, ds, folder, "train", source) == {"written": 2, "skipped": 1}
    assert seg.calls == 2
    seg = CountingSegment()
    assert write_refine_masks(seg, ds, folder, "train", source) == {"written": 0, "skipped": 3}
    assert seg.calls == 0
    assert not [f for f in os.listdir(os.path.join(folder, "train")) if not f.endswith(".npz")]

    masks = RefineMasks(folder, "train")
    assert len(masks) == 3 and masks.num_classes == 3 and masks.exclude_from_mean == (0,)
    for i in range(3):
        sample = masks[i]
        want = decode_logp(encode_logp(CountingSegment()(ds[i]["image"][None])[0]))
        assert torch.equal(sample["image"], want)
        assert torch.equal(sample["mask"], ds[i]["mask"])

    with pytest.raises(ValueError, match="another local model"):
        write_refine_masks(CountingSegment(), ds, folder, "train", {"local": "other"})
    with pytest.raises(DataFileError, match="split 'val'"):
        RefineMasks(folder, "val")
    os.remove(masks.files[1])
    with pytest.raises(DataFileError, match="1 of 3 masks"):
        RefineMasks(folder, "train")
    with open(masks.files[0], "wb") as f:
        f.write(b"not a zip")
    masks.files = masks.files[:1]
    with pytest.raises(DataFileError, match=os.path.basename(masks.files[0])):
        masks[0]


# ------------------------------------------------------------------------------------------
# The fctl_refine task and its configs
# ------------------------------------------------------------------------------------------

TINY = ["data.dataset=synthetic", "fctl.patch_size=16", "fctl.min_overlap=4", "fctl.sub_batch=3",
        "model.kwargs={context_scale: 1.5, width: 4, depth: 2}", "train.device=cpu",
        "data.num_workers=0"]


def test_refine_configs_are_strict_and_build_a_csrn():
    from zoo.engine.families import make_task
    from zoo.engine.fctl_task import RefineTask

    for name, n in (("fctl_deepglobe_refine", 7), ("fctl_inria_refine", 2)):
        cfg = load_config(name)
        assert cfg["family"] == "fctl_refine" and cfg["loss"]["kwargs"] == {"gamma": 3.0}
        assert cfg["train"]["optimizer"] == "adam"
        local = load_config(cfg["refine"]["local_config"])
        assert local["family"] == "fctl" and local["model"]["num_classes"] == n
        for key in ("lr", "weight_decay", "poly_power"):  # the local model's optimiser
            assert cfg["train"][key] == local["train"][key]
        task = make_task(cfg)
        assert isinstance(task, RefineTask)
        net = task.build_model()
        assert isinstance(net, CSRN) and net.num_classes == n and net.context_scale == 2.0
    with pytest.raises(ConfigError, match="refine.foo"):
        load_config("fctl_deepglobe_refine", ["refine.foo=1"])
    with pytest.raises(ConfigError, match="family"):
        load_config("fctl_deepglobe_refine", ["family=refine"])
    with pytest.raises(ConfigError, match="predictions"):
        make_task(load_config("fctl_deepglobe_refine", ["train.predictions=2"])).build_model()
    with pytest.raises(ConfigError, match="refine.masks"):
        make_task(load_config("fctl_deepglobe_refine", ["refine.masks=null"])).build_dataset("train")


def test_refine_train_step_is_the_fctl_protocol(one_thread):
    """Gradient = sum over sub-batches of the mean focal loss of refined patches, each with
    its zero-padded context window (checked against a hand loop)."""
    from zoo.engine.families import make_task

    cfg = load_config("fctl_deepglobe_refine", TINY + ["model.num_classes=3"])
    task = make_task(cfg)
    torch.manual_seed(0)
    net = perturbed(task.build_model())
    crude = torch.log_softmax(torch.randn(2, 3, 24, 28) * 2, 1)
    masks = torch.randint(0, 3, (2, 24, 28))
    terms = task.train_step(net, task.build_loss(), crude, masks, torch.enable_grad)
    got = {k: p.grad.clone() for k, p in net.named_parameters()}
    net.zero_grad()

    grid = PatchGrid.from_min_overlap((24, 28), 16, 4)
    total, losses = 0.0, []
    for b in range(2):
        items = []
        pad = 12
        padded = F.pad(crude[b:b + 1], (pad,) * 4)
        for y in grid.ys:
            for x in grid.xs:
                win = padded[:, :, pad + y - 4:pad + y + 20, pad + x - 4:pad + x + 20]
                items.append((crude[b:b + 1, :, y:y + 16, x:x + 16],
                              F.interpolate(win, size=(16, 16), mode="bilinear",
                                            align_corners=False, antialias=True),
                              masks[b:b + 1, y:y + 16, x:x + 16]))
        for i in range(0, len(items), 3):
            part = items[i:i + 3]
            loss = focal_loss(net(torch.cat([p[0] for p in part]), torch.cat([p[1] for p in part])),
                              torch.cat([p[2] for p in part]), gamma=3.0)
            total = total + loss
            losses.append(float(loss.detach()))
    total.backward()
    assert terms["sub_batches"] == len(losses)
    assert terms["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    for k, p in net.named_parameters():
        torch.testing.assert_close(got[k], p.grad, rtol=1e-4, atol=1e-6, msg=k)


# ------------------------------------------------------------------------------------------
# End to end on synthetic scenes
# ------------------------------------------------------------------------------------------


def test_end_to_end_synthetic(tmp_path, capsys):
    """Local FCtL trained briefly -> early-model masks -> CSRN trained briefly -> montage /
    averaging / CSRN with seam-band mIoU on held-out scenes, through the user commands."""
    from benchmarks import csrn_ablation
    from zoo.cli import make_refine_data
    from zoo.fctl.local_model import load_local_model
    from zoo.engine.trainer import train

    common = ["data.dataset=synthetic", "data.synthetic_train=1", "data.synthetic_val=1",
              "data.synthetic_size=[40, 40]", "fctl.patch_size=32", "fctl.min_overlap=8",
              "fctl.images_per_step=1", "fctl.sub_batch=4", "train.val_every=0",
              "train.predictions=0", "train.device=cpu", "data.num_workers=0",
              "model.pretrained=none"]
    local = str(tmp_path / "local")
    # plain SGD keeps no optimiser state: a 0.5 GB checkpoint instead of 1.6 GB
    train(load_config("fctl_deepglobe_fcn", common + [
        "train.iters=1", "train.optimizer=sgd", "train.momentum=0.0"]), local)
    early = os.path.join(local, "checkpoints", "last.safetensors")

    masks = str(tmp_path / "masks")
    sets = sum((["--set", c] for c in common + [f"refine.local_config={local}/config.yaml"]), [])
    args = ["--config", "fctl_deepglobe_refine", "--out", masks, "--local-checkpoint", early]
    assert make_refine_data.main(args + sets) == 0
    assert "wrote 1" in capsys.readouterr().out
    assert make_refine_data.main(args + sets) == 0  # a second run skips every image
    assert "wrote 0, skipped 1" in capsys.readouterr().out

    refine = str(tmp_path / "refine")
    rcfg = common + [f"refine.masks={masks}", f"refine.local_config={local}/config.yaml",
                     "model.kwargs={context_scale: 2.0, width: 4, depth: 2}", "train.iters=2",
                     "train.lr=0.01"]
    metrics = train(load_config("fctl_deepglobe_refine", rcfg), refine)
    assert 0.0 <= metrics["miou"] <= 1.0
    refiner_ckpt = os.path.join(refine, "checkpoints", "last.safetensors")

    out = str(tmp_path / "ablation.json")
    assert csrn_ablation.main(["--config", "fctl_deepglobe_refine", "--local-checkpoint", early,
                               "--refiner", f"2={refiner_ckpt}", "--band", "2", "--out", out]
                              + sum((["--set", c] for c in rcfg), [])) == 0
    printed = capsys.readouterr().out
    assert "seam-band mIoU" in printed and "csrn" in printed
    with open(out) as f:
        result = json.load(f)["results"]
    assert set(result["methods"]) == {"montage", "averaging", "csrn@2"}
    for m in result["methods"].values():
        assert 0.0 <= m["band_miou"] <= 1.0 and 0.0 <= m["miou"] <= 1.0
    assert 0 < result["band_pixels"] < result["pixels"] == 40 * 40

    # the averaging numbers, recomputed independently from the segmenter and the band loop
    cfg = load_config("fctl_deepglobe_refine", rcfg)
    from zoo.data.registry import build_dataset
    from zoo.metrics import metrics_from_confusion

    test = build_dataset({**cfg, "family": "fctl"}, "test")
    model = load_local_model(load_config(f"{local}/config.yaml"), early)
    seg = FCtLSegmenter(model, patch_size=32, min_overlap=8, merge="mean")
    sample = test[0]
    pred = seg.predict(sample["image"][None])[0]
    grid = PatchGrid.from_min_overlap((40, 40), 32, 8)
    rows, cols = seams_by_definition(grid.ys, 32, 40), seams_by_definition(grid.xs, 32, 40)
    cm = torch.zeros(7, 7, dtype=torch.int64)
    for r in range(40):
        for c in range(40):
            if any(abs(r + 0.5 - y) < 2 for y in rows) or any(abs(c + 0.5 - x) < 2 for x in cols):
                cm[sample["mask"][r, c], pred[r, c]] += 1
    want = metrics_from_confusion(cm, (0,))["miou"]
    assert result["methods"]["averaging"]["band_miou"] == pytest.approx(want, abs=1e-12)


def test_synthetic_ablation_command_quick(tmp_path, one_thread):
    """The benchmark's own synthetic protocol, shrunk (--quick), writes its table."""
    from benchmarks import csrn_ablation

    out = str(tmp_path / "quick.json")
    assert csrn_ablation.main(["--quick", "--out", out]) == 0
    torch.set_num_threads(1)  # main() pins one thread; the fixture restores the suite's
    with open(out) as f:
        payload = json.load(f)
    assert {"metadata", "results"} <= set(payload)
    methods = payload["results"]["methods"]
    assert set(methods) == {"montage", "averaging", "csrn@2"}
    assert payload["results"]["images"] == 1
