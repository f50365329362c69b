"""A run written before the zoo was rebuilt (main at 53a7b08, issue 20) still loads and
evaluates: its config.yaml, its checkpoint and the numbers zoo.evaluate reported for it.

The fixture is written by ``python -m tests.zoo.fixtures.make_checkpoint_fixture``.
"""

from __future__ import annotations

import json
import os

import torch

from tests.zoo.fixtures.make_checkpoint_fixture import HERE, probe_input, write_masks


def test_pre_redesign_checkpoint_loads_and_evaluates_the_same(tmp_path, one_thread):
    from safetensors.torch import load_file

    from zoo.config import load_config
    from zoo.cli.evaluate import main as eval_main
    from zoo.core.checkpoint import load_checkpoint, read_checkpoint
    from zoo.engine.families import make_task

    config = os.path.join(HERE, "config.yaml")
    checkpoint = os.path.join(HERE, "last.safetensors")
    _, state = read_checkpoint(checkpoint)
    assert state["iteration"] == 1 and state["family"] == "fctl_refine"

    task = make_task(load_config(config))
    model = task.build_model()
    load_checkpoint(checkpoint, model)
    model.eval()
    want = load_file(os.path.join(HERE, "probe.safetensors"))["logits"]
    torch.testing.assert_close(task.predict(model, probe_input()), want, rtol=1e-5, atol=1e-6)

    masks = str(tmp_path / "masks")
    write_masks(masks)
    out = str(tmp_path / "evaluate.json")
    assert eval_main(["--config", config, "--checkpoint", checkpoint, "--set",
                      f"refine.masks={masks}", "--json", out]) == 0
    with open(out, encoding="utf-8") as f:
        got = json.load(f)
    with open(os.path.join(HERE, "evaluate.json"), encoding="utf-8") as f:
        before = json.load(f)
    for key in ("confusion", "images", "class_names", "exclude_from_mean"):
        assert got[key] == before[key], key
    for key in ("miou", "f1", "accuracy"):
        assert abs(got[key] - before[key]) < 1e-9, key
