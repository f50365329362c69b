"""zoo.engine.inference: batch-norm folding exact up to rounding, the pairs it must not fold,
and prepare_for_eval leaving the trained model as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.engine.inference import fold_batch_norms, prepare_for_eval

U64 = torch.finfo(torch.float64).eps


def _randomise_norms(model: nn.Module, seed: int) -> int:
    """Random running statistics and affine parameters, so a fold is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    n = 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n += 1
            m.running_mean.normal_(0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.normal_(0, 0.1, generator=gen)
    return n


def _rounding_bound(model: nn.Module) -> float:
    """Relative bound of the fold's float64 rounding at the output: each folded conv term
    carries a few more roundings (the scale g / sqrt(v + eps), the shifted bias) than the
    unfolded conv + norm, accumulated over a dot product of at most fan-in terms; summed over
    every convolution of the network, x10 for the growth of earlier errors through the layers.
    A wrong fold (a missing shift, a scale applied twice) is off by O(1)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fan_in = max(m.weight[0].numel() for m in convs)
    return 10 * len(convs) * (fan_in + 8) * U64


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k


@pytest.mark.usefixtures("one_thread")
def test_wsdnet_folded_equals_unfolded_in_float64():
    from zoo.wsdnet import WSDNet

    torch.manual_seed(0)
    model = WSDNet(7).double().eval()
    n_bn = _randomise_norms(model, 3)
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64)
    before = _state(model)
    with torch.inference_mode():
        ref = model(x)
        prepared = prepare_for_eval(model)
        out = prepared(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn
    _assert_same_state(model, before)  # the copy was folded, not the model
    err = float((out - ref).abs().max())
    assert err <= _rounding_bound(model) * float(ref.abs().max()), err


def test_wsdnet_report_names_every_norm():
    from zoo.wsdnet import WSDNet

    model = WSDNet(7).eval()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    report = fold_batch_norms(model)
    assert sorted(report.folded) == sorted(names) and report.skipped == []


@pytest.mark.usefixtures("one_thread")
def test_fctl_networks_unchanged():
    """FCtL's networks (VGG16 encoders, correlation, FCN-8s decoder; CSRN) hold no batch norm:
    preparing folds nothing and the outputs are the same bit for bit."""
    from zoo.fctl import FCtL
    from zoo.fctl.csrn import CSRN

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    fctl = FCtL(7, "deepglobe", "full").double().eval()
    p, c1, c2 = (torch.rand(1, 3, 48, 48, generator=gen, dtype=torch.float64)
                 for _ in range(3))
    csrn = CSRN(7).double().eval()
    crude, ctx = (torch.randn(1, 7, 48, 48, generator=gen, dtype=torch.float64)
                  for _ in range(2))
    for net, args in ((fctl, (p, (c1, c2))), (csrn, (crude, ctx))):
        assert fold_batch_norms(net).folded == []
        before = _state(net)
        with torch.inference_mode():
            ref = net(*args)
            out = prepare_for_eval(net)(*args)
        assert torch.equal(out, ref)
        _assert_same_state(net, before)


class _Residual(nn.Module):
    """conv -> bn, and the conv's output also added back: folding would change that term."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class _Between(nn.Module):
    """Something between the conv and its bn."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(torch.relu(self.conv(x)))


class _Twice(nn.Module):
    """The conv called twice, one call through the bn."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + self.conv(x)


class _Branchy(nn.Module):
    """Data-dependent control flow: not traceable, so nothing is proven."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) if bool(y.sum() > 0) else y


@pytest.mark.parametrize("cls, reason", [
    (_Residual, "also used elsewhere"), (_Between, "not the output of a Conv2d"),
    (_Twice, "called more than once"), (_Branchy, "does not trace")])
def test_unfoldable_pairs_are_skipped(cls, reason):
    torch.manual_seed(0)
    net = cls().double().eval()
    _randomise_norms(net, 4)
    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64)
    with torch.no_grad():
        ref = net(x)
        report = fold_batch_norms(net)
        out = net(x)
    assert report.folded == [] and len(report.skipped) == 1
    assert report.skipped[0][0] == "bn" and reason in report.skipped[0][1]
    assert isinstance(net.bn, nn.BatchNorm2d)
    assert torch.equal(out, ref)


def test_norm_in_training_mode_is_skipped_the_others_folded():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)).double().eval()
    _randomise_norms(net, 6)
    net[4].train()  # a norm left in training mode inside an eval model uses batch statistics
    report = fold_batch_norms(net)
    assert report.folded == ["1"]
    assert report.skipped == [("4", "uses batch statistics (training mode or no running "
                                    "statistics)")]
    assert isinstance(net[1], nn.Identity) and isinstance(net[4], nn.BatchNorm2d)


def test_training_model_is_refused_and_unchanged():
    from zoo.wsdnet import WSDNet

    model = WSDNet(7).train()
    before = _state(model)
    kinds = [type(m) for m in model.modules()]
    with pytest.raises(ValueError, match=r"fold_batch_norms\(model\): the model must be in eval "
                       r"mode \(in training mode .*Fix: call model.eval\(\) first"):
        fold_batch_norms(model)
    _assert_same_state(model, before)
    assert [type(m) for m in model.modules()] == kinds


@pytest.mark.usefixtures("one_thread")
def test_prepare_leaves_a_training_model_training_and_saveable(tmp_path):
    """Validation during training: the copy is folded and channels_last, the model keeps its
    mode, its norms and a state dict a checkpoint can hold (and load back)."""
    from zoo.wsdnet import WSDNet

    model = WSDNet(7).train()
    before = _state(model)
    prepared = prepare_for_eval(model, channels_last=True)
    assert model.training and not prepared.training
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    _assert_same_state(model, before)
    assert all(p.is_contiguous() for p in model.parameters())
    conv_w = [m.weight for m in prepared.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_w)
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    again = WSDNet(7)
    again.load_state_dict(torch.load(tmp_path / "ckpt.pt"))
    _assert_same_state(again, before)


def test_prepare_channels_last_takes_nchw_input():
    """With channels_last the convolutions get channels_last inputs whatever the caller gives
    (an NCHW map into channels_last weights is the slow case); values unchanged."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 2, 1)).double().eval()
    _randomise_norms(net, 7)
    seen = []
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(8),
                   dtype=torch.float64)
    prepared = prepare_for_eval(net, fold_bn=False, channels_last=True)
    for m in prepared.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, args, out: seen.append(
                args[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.no_grad():
        torch.testing.assert_close(prepared(x), net(x), rtol=0, atol=1e-12)
    assert seen == [True, True]


def test_prepare_arguments_are_checked():
    with pytest.raises(TypeError, match=r"prepare_for_eval\(\): channels_last must be True or "
                       r"False; got str 'yes'\."):
        prepare_for_eval(nn.Conv2d(1, 1, 1), channels_last="yes")  # type: ignore[arg-type]


# ---- the config keys and where they are used ----------------------------------------------

TINY = ["data.synthetic_train=2", "data.synthetic_val=2", "data.synthetic_size=[64, 64]",
        "model.kwargs={sr_channels: [8, 8, 16], aspp_dilations: [1, 2, 3, 4]}"]


def _tiny_cfg() -> dict:
    from zoo.config import load_config

    return load_config("quickstart", TINY + [
        "train.iters=1", "train.val_every=0", "train.batch_size=2", "train.ckpt_every=1",
        "train.predictions=0", "data.crop_size=[64, 64]"])


def test_config_defaults_and_errors():
    from zoo.config import ConfigError, load_config

    ev = load_config("quickstart")["eval"]
    assert (ev["fold_bn"], ev["channels_last"], ev["compile"]) == (True, True, False)
    with pytest.raises(ConfigError) as exc:
        load_config("quickstart", ["eval.compile=1"])
    assert str(exc.value) == ("--set 'eval.compile=1': 'eval.compile' must be bool (default "
                              "False); got int 1.")
    with pytest.raises(ConfigError) as exc:
        load_config("quickstart", ["eval.fold_bn=null"])
    assert str(exc.value) == ("--set 'eval.fold_bn=null': 'eval.fold_bn' cannot be null; it "
                              "must be bool (default True). Fix: give a value, or leave the "
                              "key out for the default.")
    with pytest.raises(ConfigError) as exc:
        load_config("quickstart", ["eval.channels_last=fast"])
    assert str(exc.value) == ("--set 'eval.channels_last=fast': 'eval.channels_last' must be "
                              "bool (default True); got str 'fast'.")


@pytest.mark.usefixtures("one_thread")
def test_evaluator_runs_a_prepared_copy(monkeypatch):
    """evaluate_model and measure_speed run the copy prepare_for_eval makes with the config's
    options; the model handed in keeps its training mode and weights, and the metrics are
    those of the unprepared model (same predictions up to rounding)."""
    from zoo.config import load_config
    from zoo.engine import evaluator
    from zoo.engine.families import make_task

    calls = []
    real = evaluator.prepare_for_eval

    def spy(model, **options):
        calls.append(options)
        return real(model, **options)

    monkeypatch.setattr(evaluator, "prepare_for_eval", spy)
    results = {}
    for fold in (False, True):
        cfg = load_config("quickstart", TINY + [f"eval.fold_bn={str(fold).lower()}",
                                                "eval.channels_last=false"])
        task = make_task(cfg)
        torch.manual_seed(0)
        model = task.build_model()
        _randomise_norms(model, 9)
        before = _state(model)
        data = task.build_dataset("val")
        results[fold] = evaluator.evaluate_model(task, model, data, cfg, torch.device("cpu"),
                                                 progress=False)
        evaluator.measure_speed(task, model, (64, 64), torch.device("cpu"), warmup=0, runs=1)
        assert model.training
        _assert_same_state(model, before)
    options = {"channels_last": False, "compile": False}
    assert calls == [{"fold_bn": False, **options}] * 2 + [{"fold_bn": True, **options}] * 2
    assert results[True]["iou"] == results[False]["iou"]


def test_infer_cli_prepares_the_model(tmp_path, monkeypatch):
    from PIL import Image

    from zoo.cli import infer
    from zoo.engine.trainer import train

    out = tmp_path / "run"
    train(_tiny_cfg(), str(out))
    seen = []
    real = infer.prepare_for_eval
    monkeypatch.setattr(infer, "prepare_for_eval",
                        lambda model, **o: seen.append((model.training, o)) or real(model, **o))
    image = tmp_path / "tile.png"
    Image.fromarray((torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(3))
                     .numpy() * 255).astype("uint8")).save(image)
    args = ["--config", str(out / "config.yaml"), "--checkpoint",
            str(out / "checkpoints" / "last.safetensors"), str(image), "--out",
            str(tmp_path / "pred"), "--outputs", "mask", "--set", "eval.channels_last=false"]
    assert infer.main(args) == 0
    assert seen == [(False, {"fold_bn": True, "channels_last": False, "compile": False})]
    assert (tmp_path / "pred" / "tile_mask.png").is_file()



def test_prepare_copies_no_gradient_and_leaves_the_models():
    """Validation mid-training must not hold a second copy of the gradients: the copy's
    parameters have none, the model keeps its own (same tensors, same values)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    model(torch.rand(2, 3, 8, 8)).sum().backward()
    grads = [p.grad for p in model.parameters()]
    kept = [g.clone() for g in grads]
    prepared = prepare_for_eval(model.eval(), fold_bn=False)
    assert all(p.grad is None for p in prepared.parameters())
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(g, k) for g, k in zip(grads, kept))
