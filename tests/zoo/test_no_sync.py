"""A training step's loss path turns no tensor into a Python value (``.item()``, ``bool()``,
``float()``, ``int()``, ``.tolist()``): each would wait for the device every step. Counted
by patching those conversions of ``torch.Tensor`` during :meth:`Task.step` (forward, loss,
backward); on CUDA the step also runs under ``torch.cuda.set_sync_debug_mode("error")``."""

from __future__ import annotations

import contextlib

import pytest
import torch

from zoo.config import load_config
from zoo.engine.families import make_task

WSDNET = ["model.num_classes=3", "model.kwargs={sr_channels: [8, 8, 16], aspp_dilations: [1, 2]}"]
REFINE = ["model.num_classes=3", "model.kwargs={context_scale: 2.0, width: 4, depth: 2}",
          "fctl.patch_size=16", "fctl.min_overlap=4", "fctl.sub_batch=3", "train.predictions=0"]


@contextlib.contextmanager
def count_conversions():
    counts: dict[str, int] = {}
    names = ("item", "tolist", "__bool__", "__float__", "__int__")
    real = {n: getattr(torch.Tensor, n) for n in names}

    def wrap(name):
        def conv(self, *args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return real[name](self, *args, **kwargs)
        return conv

    for n in names:
        setattr(torch.Tensor, n, wrap(n))
    try:
        yield counts
    finally:
        for n, f in real.items():
            setattr(torch.Tensor, n, f)


def test_the_counter_sees_a_conversion():
    with count_conversions() as counts:
        bool(torch.ones(1).any())
        torch.zeros(()).item()
    assert counts == {"__bool__": 1, "item": 1}


def _batch(family: str, device: torch.device):
    g = torch.Generator().manual_seed(0)
    if family == "wsdnet":
        images = torch.rand(2, 3, 32, 32, generator=g)
    else:
        images = torch.log_softmax(torch.randn(2, 3, 24, 28, generator=g), 1)
    masks = torch.randint(0, 3, images.shape[:1] + images.shape[2:], generator=g)
    masks[0, 0, :4] = 255  # ignored pixels take the same path
    return images.to(device), masks.to(device)


@pytest.mark.parametrize("config,overrides", [("quickstart", WSDNET),
                                              ("fctl_deepglobe_refine", REFINE)])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_training_step_converts_no_tensor(config, overrides, device, one_thread):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    dev = torch.device(device)
    task = make_task(load_config(config, overrides))
    torch.manual_seed(0)
    model = task.build_model().to(dev).train()
    loss_fn = task.build_loss().to(dev)
    images, masks = _batch(task.family, dev)
    task.step(model, loss_fn, images, masks, contextlib.nullcontext)  # warm-up (lazy init)
    model.zero_grad()
    sync_debug = contextlib.nullcontext()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        sync_debug = _sync_debug_error()
    with count_conversions() as counts, sync_debug:
        terms = task.step(model, loss_fn, images, masks, contextlib.nullcontext)
    assert counts == {}, counts
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    loss = terms["loss"]
    assert isinstance(loss, torch.Tensor) and loss.device.type == dev.type
    assert torch.isfinite(loss)


@contextlib.contextmanager
def _sync_debug_error():
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")
