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
