"""FCtL's paper configs do not start from a random VGG16 without saying so (as WSDNet's,
issue 19): the first stages refuse a from-scratch start until the ImageNet VGG16 file is
given or ``model.pretrained: none`` says random on purpose; stages started from the previous
stage's checkpoint, and the CSRN, are not asked."""

from __future__ import annotations

import pytest

from zoo.config import ConfigError, load_config
from zoo.engine.families import make_task

FIRST_STAGES = ["fctl_deepglobe_fcn", "fctl_deepglobe_global", "fctl_inria_fcn"]
LATER_STAGES = ["fctl_deepglobe_medium", "fctl_deepglobe_full", "fctl_inria_ctx2",
                "fctl_inria_full", "fctl_deepglobe_refine", "fctl_inria_refine"]


@pytest.mark.parametrize("name", FIRST_STAGES)
def test_first_stage_without_vgg16_is_refused(name):
    task = make_task(load_config(name))
    with pytest.raises(ConfigError) as info:
        task.check_pretrained()
    for part in ("model.pretrained", "vgg16", "vgg16-397923af.pth", "model.pretrained=none"):
        assert part in str(info.value), part
    make_task(load_config(name, ["model.pretrained=none"])).check_pretrained()
    make_task(load_config(name, ["model.pretrained={vgg16: /x/vgg16.pth}"])).check_pretrained()


@pytest.mark.parametrize("name", LATER_STAGES)
def test_later_stages_are_not_asked(name):
    cfg = load_config(name)
    assert cfg["model"]["require_pretrained"] is True  # inherited from _fctl_paper.yaml
    make_task(cfg).check_pretrained()


def test_loaded_vgg16_is_reported(monkeypatch):
    import zoo.engine.fctl_task as fctl_task

    calls = []

    def fake_loader(encoder, path):  # the real file is 528 MB; the wiring is what is tested
        calls.append(path)
        return {"loaded": ["features.0.weight"], "unused": ["classifier.6.weight"]}

    monkeypatch.setattr(fctl_task, "load_vgg16_imagenet", fake_loader)
    task = make_task(load_config("fctl_inria_fcn", ["model.pretrained={vgg16: /x/vgg16.pth}"]))
    task.build_model()
    assert calls == ["/x/vgg16.pth"]
    assert task.pretrained_report == {"vgg16": {"file": "/x/vgg16.pth",
                                                "loaded": ["features.0.weight"], "kept": [],
                                                "ignored": ["classifier.6.weight"]}}


def test_stage_started_from_init_stage_reports_it(monkeypatch, capsys):
    """pretrained.json of a later stage: the local encoder comes from the previous stage's
    checkpoint (not "random"), and every part says where its weights came from."""
    import torch

    import zoo.engine.fctl_task as fctl_task
    from zoo.engine.trainer import RANDOM, _pretrained_report, _print_pretrained
    from zoo.fctl import FCtL

    torch.manual_seed(1)
    previous = {k: v.clone() for k, v in FCtL(2, "inria", "fcn").state_dict().items()}
    path = "/x/fcn/checkpoints/best.safetensors"  # not read: the tensors come from above
    monkeypatch.setattr(fctl_task, "read_model_weights",
                        lambda p: previous if p == path else pytest.fail(p))
    cfg = load_config("fctl_inria_ctx2", ["model.pretrained=none", f"fctl.init_stage={path}"])
    task = make_task(cfg)
    torch.manual_seed(2)
    model = task.build_model()
    report = _pretrained_report(task, cfg, model, task.weight_sources)
    vgg = report["vgg16"]
    assert vgg["file"] == path and vgg["source"] == "fctl.init_stage"
    assert vgg["state"] == "loaded" and vgg["left_random"] == []
    src = f"earlier stage {path} (fctl.init_stage)"
    own = model.state_dict()
    # the oracle: which tensors equal the previous stage's, compared one by one
    same = {k for k, v in own.items() if k in previous and previous[k].shape == v.shape
            and torch.equal(previous[k], v)}
    claimed = {k for k, s in task.weight_sources.items() if s == src}
    assert claimed == same
    assert vgg["loaded"] == sum(k.startswith("encoder.") for k in same)
    parts = report["parts"]
    assert parts["encoder"] == {src: sum(k.startswith("encoder.") for k in own)}
    # the stage's new correlation was not in the fcn checkpoint: it keeps its initialisation
    new = {k.split(".", 1)[0] for k in own if k not in same}
    assert new and all(RANDOM in parts[p] for p in new)
    _print_pretrained(report)
    err = capsys.readouterr().err
    assert f"vgg16: {path} (fctl.init_stage): {vgg['loaded']} tensors loaded, 0 left random" in err
    assert "random initialisation (no file given)" not in err
