"""zoo.infer's inputs (files, folders, glob patterns) and --outputs, without a model."""

from __future__ import annotations

import os

import pytest

from zoo.cli.infer import expand_inputs, parse_outputs


def test_files_folders_and_patterns(tmp_path):
    for name in ("b.png", "a.tif", "c.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.tiff").write_bytes(b"x")
    files, missing = expand_inputs([str(tmp_path), str(tmp_path / "sub" / "*.tif*"),
                                    str(tmp_path / "b.png"), str(tmp_path / "none*.tif"),
                                    str(tmp_path / "absent.png")])
    names = [os.path.relpath(f, tmp_path) for f in files]
    # a folder gives its image files sorted (not sub-folders, not other files); a file
    # already listed is not repeated
    assert names == ["a.tif", "b.png", "c.jpg", os.path.join("sub", "d.tiff")]
    assert missing == [str(tmp_path / "none*.tif"), str(tmp_path / "absent.png")]


def test_outputs_flag():
    assert parse_outputs("auto") is None
    assert parse_outputs("tif, probs") == ("tif", "probs")
    with pytest.raises(ValueError, match="choose from"):
        parse_outputs("mask,geojson")
