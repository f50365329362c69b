"""Issue 19: WSDNet's training memory budget.

Activation checkpointing (``activation_checkpoint``) must not change a training step: the
gradients, outputs and BatchNorm statistics of a checkpointed model are compared bit for bit
with the plain model's (the oracle: the same model without checkpointing). The memory
figures are compared with those of the full-resolution SR head without checkpointing
(the model before issue 19), and the fake-tensor counts the README's 2560² figures come from
with real allocations.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from benchmarks.wsdnet_train_memory import VARIANTS, count_saved, peak_bytes, saved_bytes
from zoo.config import ConfigError, load_config
from zoo.engine.families import make_task
from zoo.wsdnet import WSDNet
from zoo.wsdnet.losses import WSDNetLoss
from zoo.wsdnet.recompute import checkpoint_segment

BOTH = ["shallow", "sr_head"]


def _step(model: nn.Module, images: torch.Tensor, masks: torch.Tensor):
    torch.manual_seed(123)  # the heads' Dropout2d draws the same masks in both runs
    out = model(images)
    WSDNetLoss()(out, masks).backward()
    return out


@pytest.mark.parametrize("sr_output", ["image", "haar1"])
def test_checkpointed_step_equals_plain_bit_for_bit(sr_output):
    kw = dict(sr_output=sr_output, sr_channels=(16, 16, 32), aspp_channels=64,
              fuse_channels=64)  # narrower than the paper's: the same code, a faster test
    torch.manual_seed(0)
    plain = WSDNet(5, **kw).train()
    ckpt = WSDNet(5, **kw, activation_checkpoint=BOTH).train()
    ckpt.load_state_dict(plain.state_dict())
    images = torch.rand(2, 3, 32, 64, dtype=torch.float32)
    masks = torch.randint(0, 5, (2, 32, 64))
    out_p, out_c = _step(plain, images, masks), _step(ckpt, images, masks)
    for key in out_p:
        assert torch.equal(out_p[key], out_c[key]), key
    grads_p = {n: p.grad for n, p in plain.named_parameters()}
    differ = [n for n, p in ckpt.named_parameters() if not torch.equal(p.grad, grads_p[n])]
    assert not differ, f"gradients differ: {differ[:5]}"
    # BN running statistics updated once, not once more per recomputation.
    state_p = plain.state_dict()
    differ = [k for k, v in ckpt.state_dict().items() if not torch.equal(v, state_p[k])]
    assert not differ, f"state differs after the step: {differ[:5]}"
    assert int(ckpt.sr_head.stages[0][1].num_batches_tracked) == 1


def test_checkpoint_segment_respects_dropout_rng_and_bn():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Dropout(0.5), nn.Conv2d(8, 2, 1))
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    results = []
    for use_ckpt in (False, True):
        b = copy.deepcopy(block).train()
        xi = x.detach().clone().requires_grad_()
        torch.manual_seed(7)
        y = checkpoint_segment(b, [b], xi) if use_ckpt else b(xi)
        torch.manual_seed(99)  # the recomputation must not depend on the RNG state here
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append((y, xi.grad, [p.grad for p in b.parameters()],
                        [t.clone() for t in b[1].buffers()]))
    (y0, g0, p0, s0), (y1, g1, p1, s1) = results
    assert torch.equal(y0, y1) and torch.equal(g0, g1)
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert all(torch.equal(a, b) for a, b in zip(s0, s1))


def test_checkpointing_is_off_without_autograd():
    torch.manual_seed(0)
    model = WSDNet(3, sr_output="haar1", activation_checkpoint=BOTH).train()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(images)
    assert out["recon_bands"].shape == (2, 12, 32, 32)


def test_activation_checkpoint_is_validated():
    with pytest.raises(ValueError, match=r"list of parts.*\[shallow, sr_head\]"):
        WSDNet(3, activation_checkpoint="sr_head")
    with pytest.raises(ValueError, match=r"unknown part\(s\) \['srhead'\]"):
        WSDNet(3, activation_checkpoint=["srhead"])
    cfg = load_config("quickstart", ["model.kwargs={activation_checkpoint: true}"])
    with pytest.raises(ConfigError, match=r"model\.kwargs: .*activation_checkpoint"):
        make_task(cfg).build_model()
    cfg = load_config("quickstart", ["model.kwargs={checkpoint_sr: true}"])
    with pytest.raises(ConfigError, match=r"model\.kwargs: .*checkpoint_sr"):
        make_task(cfg).build_model()


def test_saved_activations_under_a_third_real_allocation():
    """Real tensors at 256²: what autograd keeps after forward + loss, the paper configs'
    setting against the full-resolution SR head without checkpointing."""
    torch.manual_seed(0)
    images, masks = torch.rand(2, 3, 256, 256), torch.randint(0, 7, (2, 256, 256))
    before, _ = count_saved(WSDNet(7).train(), images, masks)
    after, parts = count_saved(WSDNet(7, **VARIANTS["haar1+ckpt"][0]).train(), images, masks)
    assert after <= before / 3, (after, before)
    # The checkpointed parts keep only their inputs: the shallow branch saves nothing of its
    # own (xp is saved by the segment, before S's pre-hook) and the SR head keeps d8 and one
    # 64-channel map at 1/2 resolution.
    assert parts.get("shallow", 0) == 0
    assert parts["sr_head"] <= 2 * (128 * 32 * 32 + 64 * 128 * 128) * 4


def test_peak_under_a_third_and_sees_the_recomputation():
    """Peak live activations of forward + loss + backward at 256² (fake tensors: no memory),
    recomputation included: checkpointing a full-resolution SR head keeps little saved, but
    its recomputation during backward brings the peak back; the level-1 subband head with
    checkpointing stays under a third."""
    today = peak_bytes("today", 256)
    assert peak_bytes("haar1+ckpt", 256) <= today / 3
    assert saved_bytes("image+ckpt", 256)[0] <= today / 3
    assert peak_bytes("image+ckpt", 256) > today / 2


def test_fake_tensor_counts_equal_real_ones():
    """The README's large crops are counted on fake tensors; at a small crop the counts equal
    those on real tensors (the benchmark's JSON also records 512²)."""
    assert saved_bytes("today", 64, fake=True) == saved_bytes("today", 64, fake=False)
    variant = "haar1+ckpt"  # checkpointing: the recomputation is what could differ
    assert saved_bytes(variant, 64, fake=True) == saved_bytes(variant, 64, fake=False)
    assert peak_bytes(variant, 64, fake=True) == peak_bytes(variant, 64, fake=False)


@pytest.mark.parametrize("dataset", ["deepglobe", "inria", "urur"])
def test_readme_memory_variants_are_what_the_shipped_configs_build(dataset):
    # the README table's two last columns are labelled with these configs
    assert load_config(f"wsdnet_{dataset}")["model"]["kwargs"] == VARIANTS["image+ckpt"][0]
    assert load_config(f"wsdnet_{dataset}_lowmem")["model"]["kwargs"] == \
        VARIANTS["haar1+ckpt"][0]
