"""benchmarks.common: the per-machine results file and its atomic, section-wise merge."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import pytest

from benchmarks import common


def test_merge_keeps_other_sections(tmp_path):
    path = str(tmp_path / "cpu-2t.json")
    common.merge_section(path, "ops.wavelet", [{"case": "a", "median_ms": 1.0}], {"m": 1})
    common.merge_section(path, "models.wsdnet",
                         [{"model": "wsdnet", "size": 2448, "variant": "fp32", "fps": 1.0},
                          {"model": "wsdnet", "size": 2448, "variant": "bf16", "fps": 2.0}],
                         {"m": 2}, key=("model", "size", "variant"))
    # a keyed merge replaces only the matching row and keeps the others
    doc = common.merge_section(path, "models.wsdnet",
                               [{"model": "wsdnet", "size": 2448, "variant": "bf16", "fps": 3.0}],
                               {"m": 3}, key=("model", "size", "variant"))
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == doc
    assert doc["schema"] == common.SCHEMA
    assert doc["sections"]["ops.wavelet"]["rows"] == [{"case": "a", "median_ms": 1.0}]
    rows = doc["sections"]["models.wsdnet"]["rows"]
    assert [(r["variant"], r["fps"]) for r in rows] == [("fp32", 1.0), ("bf16", 3.0)]
    assert doc["sections"]["models.wsdnet"]["metadata"] == {"m": 3}
    # an unkeyed merge replaces the whole section
    doc = common.merge_section(path, "ops.wavelet", [{"case": "b"}], {})
    assert doc["sections"]["ops.wavelet"]["rows"] == [{"case": "b"}]
    assert len(doc["sections"]["models.wsdnet"]["rows"]) == 2


def test_failed_write_leaves_file_intact(tmp_path, monkeypatch):
    path = str(tmp_path / "cpu-2t.json")
    common.merge_section(path, "ops.wavelet", [{"case": "a"}], {})
    before = open(path, encoding="utf-8").read()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(common.json, "dump", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        common.merge_section(path, "ops.pyramid", [{"case": "b"}], {})
    assert open(path, encoding="utf-8").read() == before
    assert os.listdir(tmp_path) == ["cpu-2t.json"]  # no temporary or lock file left beside it


def test_wrong_schema_is_refused(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"metadata": {}, "results": {}}))
    with pytest.raises(ValueError, match="not a uhrops benchmark results file"):
        common.merge_section(str(path), "ops.wavelet", [], {})
    with pytest.raises(ValueError, match="section"):
        common.merge_section(str(tmp_path / "new.json"), "wavelet", [], {})


def _writer(path: str, section: str, n: int) -> None:
    for i in range(n):
        common.merge_section(path, section, [{"model": section, "i": i}], {"i": i},
                             key=("model", "i"))


def test_concurrent_merges_lose_nothing(tmp_path):
    path = str(tmp_path / "cpu-2t.json")
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    procs = [ctx.Process(target=_writer, args=(path, s, 15))
             for s in ("models.wsdnet", "models.fctl", "ops.tiling")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    doc = common.load_results(path)
    for s in ("models.wsdnet", "models.fctl", "ops.tiling"):
        assert [r["i"] for r in doc["sections"][s]["rows"]] == list(range(15))


def test_device_tag_and_paths(tmp_path):
    assert common.device_tag("cpu", threads=2) == "cpu-2t"
    with pytest.raises(ValueError, match="unsupported device"):
        common.device_tag("mps")
    assert common.results_path("cpu", str(tmp_path / "x.json")) == str(tmp_path / "x.json")
    assert common.results_path("cpu").startswith(common.RESULTS_DIR)
    assert not common.results_path("cpu", quick=True).startswith(common.RESULTS_DIR)


def test_committed_results_are_current():
    """Every committed results file of this schema is readable (other JSON files there, e.g.
    an ablation's, are skipped by the report); README blocks, where present, are current."""
    for name in os.listdir(common.RESULTS_DIR):
        if name.endswith(".json"):
            path = os.path.join(common.RESULTS_DIR, name)
            with open(path, encoding="utf-8") as f:
                if json.load(f).get("schema") == common.SCHEMA:
                    common.load_results(path)
    readme = os.path.join(os.path.dirname(common.RESULTS_DIR), "..", "README.md")
    with open(readme, encoding="utf-8") as f:
        if "<!-- bench:" not in f.read():
            pytest.skip("README has no generated benchmark blocks yet "
                        "(run `python -m benchmarks.report`)")
    from benchmarks import report

    assert report.main(["--check"]) == 0, "README out of date: run python -m benchmarks.report"


def test_cpu_peak_memory_of_one_call():
    import torch

    x = torch.rand(1 << 20)  # 4 MiB

    def two_temporaries():
        return (x * 2 + 1).sum()  # x * 2 and (x * 2) + 1 are alive together: 8 MiB

    peak = common.peak_memory_mb(two_temporaries, "cpu")
    if peak is None:
        pytest.skip("this torch's profiler reports no memory events")
    assert 8.0 <= peak < 8.1
    assert common.peak_rss_mb() >= (common.current_rss_mb() or 0) > 0
