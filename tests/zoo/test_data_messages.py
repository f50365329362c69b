"""Issue 32's small messages: grey and 4-band images fed to RGB models are converted with a
one-time warning that says what was done and the fix; loader workers are clamped to the
cores (PyTorch's own rule is the oracle)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import zoo.data.base as base
from zoo.data.base import read_image
from zoo.engine.trainer import loader_workers


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(base, "_WARNED", set())


def test_grey_image_is_repeated_with_one_warning(tmp_path, fresh_warnings):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (9, 7), np.uint8)
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"g{i}.png"))
        Image.fromarray(grey).save(paths[-1])
    with pytest.warns(UserWarning) as record:
        first = read_image(paths[0])
        second = read_image(paths[1])
    msgs = [str(w.message) for w in record]
    assert len(msgs) == 1, msgs  # once, not per file
    assert paths[0] in msgs[0] and "grey" in msgs[0] and "repeated into R, G and B" in msgs[0]
    assert "Fix:" in msgs[0] and "RGB" in msgs[0]
    expected = torch.from_numpy(grey.astype(np.float32) / 255.0).expand(3, -1, -1)
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_rgba_and_four_band_images_warn_naming_the_band_dropped(tmp_path, fresh_warnings):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (6, 5, 4), np.uint8)
    path = str(tmp_path / "a.png")
    Image.fromarray(rgba, "RGBA").save(path)
    with pytest.warns(UserWarning, match="4-band RGBA image: its alpha band is left out") \
            as record:
        out = read_image(path)
    assert "Fix:" in str(record[0].message) and "gdal_translate -b 1 -b 2 -b 3" in \
        str(record[0].message)
    assert torch.equal(out, torch.from_numpy(rgba[..., :3].astype(np.float32) / 255.0)
                       .permute(2, 0, 1))
    # an RGB image says nothing
    rgb = str(tmp_path / "c.png")
    Image.fromarray(rgba[..., :3]).save(rgb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(rgb)


@pytest.mark.parametrize("cores,requested,expected", [(2, 4, 2), (2, 0, 0), (8, 4, 4),
                                                      (1, 2, 1)])
def test_loader_workers_clamp_to_the_cores(monkeypatch, cores, requested, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    n = loader_workers(requested)
    assert n == expected
    # PyTorch's own rule (the warning issue 32 saw on 2 cores) is silent for the clamped count
    loader = torch.utils.data.DataLoader(list(range(4)), num_workers=n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.check_worker_number_rationality()
    if requested > cores:
        with pytest.warns(UserWarning, match="worker"):
            torch.utils.data.DataLoader(list(range(4)), num_workers=requested) \
                .check_worker_number_rationality()
