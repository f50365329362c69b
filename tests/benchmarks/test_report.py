"""benchmarks.report: tables from synthetic results match the JSON, --check, idempotence,
marker insertion, plots."""

from __future__ import annotations

import json

import pytest

from benchmarks import kernel_reports, merge_labels, report, wsdnet_train_memory, wsl_magnitudes
from benchmarks.common import SCHEMA
from benchmarks.models import models_block


def _fmt(x: float) -> str:
    """The report's number format, restated: ~3 significant figures, no exponent."""
    if x >= 100:
        return str(round(x))
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _row(case, pass_, impl, ms, iqr=0.5, peak=None, note=None):
    r = {"case": case, "pass": pass_, "impl": impl, "median_ms": ms, "iqr_ms": iqr,
         "peak_mb": peak, "bytes": None}
    if note:
        r["note"] = note
    return r


WAVELET = [
    _row("1x3x64x64 L=1", "fwd", "uhrops-torch", 10.0, 1.25),
    _row("1x3x64x64 L=1", "fwd", "ptwt", 80.0),
    _row("1x3x64x64 L=1", "fwd", "naive-reshape", 25.0),
    _row("1x3x64x64 L=1", "fwd+bwd", "uhrops-torch", 40.0),
    _row("1x3x64x64 L=1", "fwd+bwd", "ptwt", 120.0),
    _row("1x3x64x64 L=1", "fwd+bwd", "naive-reshape", 30.0),  # a loss, must be published
]
ATTENTION = [
    _row("N=64 (8x8) C=32 float32", "fwd", "uhrops-torch", 2.0, peak=4.0),
    _row("N=64 (8x8) C=32 float32", "fwd", "sdpa-math", 3.0, peak=50.0),
    _row("N=64 (8x8) C=32 float32", "fwd", "sdpa-flash", 1.5, peak=2.0),
    {"case": "N=64 (8x8) C=32 float32", "pass": "fwd", "impl": "sdpa-cudnn", "median_ms": None,
     "iqr_ms": None, "peak_mb": None, "bytes": None, "note": "not run: no cuDNN on the CPU"},
]
WSDNET = {"model": "wsdnet", "size": 2448, "scope": "image", "variant": "bf16+cl",
          "device": "cpu", "precision": "bf16", "median_s": 0.8, "min_s": 0.75, "max_s": 0.9,
          "repeats": 3, "fps": 1.25, "peak_mb": 1600.0, "peak_kind": "process_rss",
          "argmax_agree_pct": 99.5, "max_abs_logit_diff": 0.0123, "quick": False}


def _doc(tag: str, sections: dict) -> dict:
    meta = {"commit": "0123456789abcdef", "time": "2026-01-02T03:04:05+0000", "quick": False}
    return {"schema": SCHEMA, "device_tag": tag,
            "machine": {"machine": "x86_64", "cpu_count": 2, "threads": 2, "torch": "2.x"},
            "sections": {k: {"metadata": dict(meta), "rows": v} for k, v in sections.items()}}


@pytest.fixture
def results(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    doc = _doc("cpu-2t", {"ops.wavelet": WAVELET, "ops.attention": ATTENTION,
                          "models.wsdnet": [WSDNET]})
    (d / "cpu-2t.json").write_text(json.dumps(doc))
    (d / "notes.json").write_text(json.dumps({"something": "else"}))  # skipped, not fatal
    return d


def _run(results_dir, readme, *extra) -> int:
    return report.main(["--results-dir", str(results_dir), "--readme", str(readme),
                        "--plots-dir", str(results_dir), *extra])


def _block(text: str, name: str) -> str:
    begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
    assert text.count(begin) == 1 and text.count(end) == 1
    return text.split(begin)[1].split(end)[0]


def test_tables_match_json(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Benchmarks\n\nHand-written intro.\n\n## Tests\n\nrun them\n")
    assert _run(results, readme) == 0
    text = readme.read_text()
    # Blocks land inside the Benchmarks section, before "## Tests"; other text is untouched.
    assert text.index("Hand-written intro.") < text.index("<!-- bench:summary begin -->")
    assert text.index("<!-- bench:models end -->") < text.index("## Tests")
    assert text.endswith("## Tests\n\nrun them\n")

    ops = _block(text, "ops-cpu")
    # wavelet fwd: ours 10 ms [IQR 1.25]; ptwt 80 ms -> 8x; naive 25 ms -> 2.5x
    ours = {(r["case"], r["pass"]): r for r in WAVELET if r["impl"] == "uhrops-torch"}
    for r in WAVELET:
        if r["impl"] == "uhrops-torch":
            continue
        base = ours[r["case"], r["pass"]]["median_ms"]
        expected = f"{_fmt(r['median_ms'])} ({_fmt(r['median_ms'] / base)}x)"
        assert expected in ops, expected
    assert "| 1x3x64x64 L=1 | fwd | 10.0 [1.25] | 80.0 (8.00x) | 25.0 (2.50x) |" in ops
    assert "30.0 (0.75x)" in ops  # the loss against the naive reshape is shown
    # attention: time and memory ratios against sdpa-math and sdpa-flash; cudnn noted
    assert "3.00 (1.50x) · 50.0 MiB (12.5x)" in ops
    assert "1.50 (0.75x) · 2.00 MiB (0.5x)" in ops
    assert "sdpa-cudnn: not run (no cuDNN on the CPU)" in ops
    assert "GPU: **not measured**" in _block(text, "ops-gpu")

    summary = _block(text, "summary")
    # wavelet vs ptwt: ratios 8 and 3 -> worst 3.00x, best 8.00x, met; worst vs any: 0.75x
    assert "| wavelet | time vs ptwt | 2 | 3.00x | 8.00x | yes | 0.75x vs naive-reshape " \
           "(1x3x64x64 L=1 fwd+bwd) |" in summary
    assert "| attention | peak memory vs SDPA math | 1 | 12.5x | 12.5x | yes |" in summary

    models = _block(text, "models")
    assert (f"| WSDNet | 2448² | cpu-2t | bf16+cl | {_fmt(0.8)} [{_fmt(0.75)}–{_fmt(0.9)}], "
            "3 runs | — | "
            f"{_fmt(1.25)} | "
            "1600 (RSS) | 99.50 %, 0.0123 | 30.3 FPS, 1876 MB (RTX 2080Ti) | "
            f"{_fmt(1.25 / 30.3)}x |") in models
    assert "| WSDNet | 2448² | GPU | — | not measured |" in models
    assert "| FCtL | 2448² | GPU | — | not measured |" in models
    cpu_row = dict(WSDNET, median_cpu_s=1.5)
    assert "| 1.50 | 1.25 | 1600 (RSS) |" in models_block(
        {"cpu-2t": _doc("cpu-2t", {"models.wsdnet": [cpu_row]})})
    assert models.count("not measured") >= 4  # two rows and two GPU goals

    for png in ("ops-speedup-cpu-2t.png", "models-fps-memory.png"):
        data = (results / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_idempotent_and_check(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nno benchmark section here\n")
    assert _run(results, readme, "--no-plots", "--check") == 1  # blocks missing
    assert _run(results, readme, "--no-plots") == 0
    first = readme.read_text()
    assert "## Benchmarks" in first  # section appended
    assert _run(results, readme, "--no-plots") == 0
    assert readme.read_text() == first  # idempotent
    assert _run(results, readme, "--no-plots", "--check") == 0

    # a changed measurement makes the README stale
    path = results / "cpu-2t.json"
    doc = json.loads(path.read_text())
    doc["sections"]["ops.wavelet"]["rows"][1]["median_ms"] = 90.0
    path.write_text(json.dumps(doc))
    assert _run(results, readme, "--no-plots", "--check") == 1
    assert readme.read_text() == first  # --check writes nothing
    assert _run(results, readme, "--no-plots") == 0
    assert "90.0 (9.00x)" in readme.read_text()
    assert _run(results, readme, "--no-plots", "--check") == 0

    # a hand edit inside a block is stale too; one that is outside is not
    text = readme.read_text()
    readme.write_text(text.replace("90.0 (9.00x)", "1.0 (0.1x)") + "\nmore prose\n")
    assert _run(results, readme, "--no-plots", "--check") == 1
    readme.write_text(text + "\nmore prose\n")
    assert _run(results, readme, "--no-plots", "--check") == 0


def test_quick_sections_left_out(results, tmp_path):
    path = results / "cpu-2t.json"
    doc = json.loads(path.read_text())
    doc["sections"]["ops.attention"]["metadata"]["quick"] = True
    path.write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text("")
    assert _run(results, readme, "--no-plots") == 0
    text = readme.read_text()
    assert "**wavelet**" in text and "**attention**" not in text


def test_unpaired_marker_is_an_error(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench:models begin -->\nhalf a block\n")
    with pytest.raises(SystemExit) as exc:
        _run(results, readme, "--no-plots")
    assert exc.value.code == 2
    assert "half a block" in readme.read_text()


def test_gpu_results_fill_gpu_rows(results, tmp_path):
    row = dict(WSDNET, device="cuda", variant="bf16+cl+bench", median_s=0.003, fps=1 / 0.003,
               min_s=0.0029, max_s=0.0031, peak_mb=900.0, peak_kind="cuda_max_allocated")
    ops = [dict(r, gbs=500.0, pct_copy=25.0) for r in WAVELET]
    doc = _doc("cuda-test-gpu", {"ops.wavelet": ops, "models.wsdnet": [row]})
    doc["machine"]["gpu"] = "Test GPU"
    (results / "cuda-test-gpu.json").write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text("")
    assert _run(results, readme, "--no-plots") == 0
    text = readme.read_text()
    gpu_ops = _block(text, "ops-gpu")
    assert "Test GPU" in gpu_ops and "| GB/s | % copy |" in gpu_ops
    models = _block(text, "models")
    assert "| WSDNet | 2448² | GPU | — | not measured |" not in models
    assert "| FCtL | 2448² | GPU | — | not measured |" in models
    # 333 FPS >= 303 and 900 MiB < 1876: the WSDNet goal is met
    assert "| 333 FPS, 900 MiB (bf16+cl+bench) | met |" in models


def test_attention_work_block(tmp_path):
    rows = [{"shape": "B1 C512/512 23x23<-23x23", "dtype": "bfloat16", "precision": "highest",
             "forward_work_ratio": 1.0575, "backward_work_ratio": 1.2087,
             "min_blocks_matmul_kernels": 153,
             "blocks": {"_fwd_kernel": [153], "_bwd_dkdv_kernel": [153, 17]}, "sms": 132}]
    path = tmp_path / "kernels-attention-work.json"
    path.write_text(json.dumps({"metadata": {"commit": "abc"}, "sms": 132, "rows": rows}))
    block = kernel_reports.attention_work_block(kernel_reports.load_attention_work(str(tmp_path)))
    line = [x for x in block.splitlines() if x.startswith("| B1 C512")][0]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:6] == ["bfloat16", "—", "1.06x", "1.21x", "153"]
    assert "`fwd` 153" in cells[6] and "`bwd_dkdv` 153+17" in cells[6]
    assert "no report" in kernel_reports.attention_work_block(kernel_reports.load_attention_work(
        str(tmp_path / "missing")))


MIB = 2 ** 20
MEMORY = {
    "schema": "uhrops-wsdnet-train-memory/1", "date": "2026-01-02", "torch": "2.x",
    "command": "python -m benchmarks.wsdnet_train_memory", "batch": 2, "dtype": "float32",
    "device_bytes": 80e9, "paper_crops": {"wsdnet_a": 512, "wsdnet_b": 1024},
    "variants": {
        "today": {"kwargs": {}, "description": "before", "fixed": 200 * MIB,
                  "crops": {"512": {"saved": 600 * MIB, "peak": 800 * MIB, "flops": 3e11},
                            "1024": {"saved": 2400 * MIB, "peak": 3200 * MIB, "flops": 1.2e12}}},
        "new": {"kwargs": {"sr_output": "haar1"}, "description": "after", "fixed": 200 * MIB,
                "crops": {"512": {"saved": 150 * MIB, "peak": 200 * MIB, "flops": 1.5e11}}},
    },
    "validation": [{"variant": "new", "size": 64, "saved_real": 10, "saved_fake": 10,
                    "peak_real": 20, "peak_fake": 20}],
}


def test_wsdnet_memory_block(tmp_path):
    text = wsdnet_train_memory.wsdnet_memory_block(MEMORY)
    assert "| 512² | 600 · 800 | 150 (25 %) · 200 (25 %) |" in text
    assert "| 1024² | 2400 · 3200 | — |" in text
    assert "| 512² | 300 | 150 |" in text  # GFLOP
    # batch that fits: (80e9 - 200 MiB) // peak per image
    fit_today = int((80e9 - 200 * MIB) // (800 * MIB))
    fit_new = int((80e9 - 200 * MIB) // (200 * MIB))
    assert f"| `wsdnet_a` | 512² | {fit_today} | {fit_new} |" in text
    assert "Batch that fits 80 GB" in text
    assert "at 64² (1 run: each variant once) the saved and peak bytes are identical." in text
    off = json.loads(json.dumps(MEMORY))
    off["validation"][0]["peak_fake"] = 21
    assert "within 5 %." in wsdnet_train_memory.wsdnet_memory_block(off)
    assert wsdnet_train_memory.wsdnet_memory_block(None).startswith("Not measured")
    # The block is rendered from its file by the command.
    d = tmp_path / "results"
    d.mkdir()
    (d / "wsdnet-train-memory.json").write_text(json.dumps(MEMORY))
    readme = tmp_path / "README.md"
    readme.write_text("")
    assert _run(d, readme, "--no-plots") == 0
    assert "150 (25 %) · 200 (25 %)" in _block(readme.read_text(), "wsdnet-memory")
    assert "Not measured" in _block(readme.read_text(), "wsl-magnitudes")


def test_wsl_magnitudes_block():
    doc = {"data": "two crops", "command": "python -m benchmarks.wsl_magnitudes",
           "ce_seg": 2.0, "ce_aux": 1.5,
           "rows": [{"label": "Eq. 4", "kwargs": {}, "wsl": 40.0},
                    {"label": "mean", "kwargs": {"reduction": "mean"}, "wsl": 5.0}]}
    text = wsl_magnitudes.wsl_magnitudes_block(doc)
    assert "CE(seg) 2.00, CE(aux) 1.50" in text
    assert "| Eq. 4 | 40.0 | 20.0 |" in text and "| mean | 5.00 | 2.50 |" in text
    assert wsl_magnitudes.wsl_magnitudes_block(None).startswith("Not measured")


def test_merge_labels_block():
    doc = {"command": "python -m benchmarks.merge_labels", "metadata": {"torch": "2.x",
                                                                         "time": "today"},
           "setup": {"patch": 512, "stride": 384, "batch": 4, "threads": 2,
                     "weights": "constant", "predictor": "1x1 conv 3 -> C"},
           "results": [{"method": "labels", "size": 2448, "classes": 7, "time_s": 5.5,
                        "peak_rss_mb": 600.0, "peak_above_start_mb": 175.0},
                       {"method": "monai", "size": 10240, "classes": 100, "skipped": True,
                        "needs_bytes": 44 * 2**30, "available_bytes": 20 * 2**30}]}
    text = merge_labels.merge_labels_block(doc)
    assert "| 2448² | 7 | `sliding_window(argmax=True)` | 5.50 | 175 | 600 |" in text
    assert "not run: needs ≥ 44.0 GiB (available 20.0 GiB)" in text
    assert merge_labels.merge_labels_block(None).startswith("Not measured")


def test_kernel_figures_block():
    fig = {"name": "pyr_down/float32/2448", "kernel": "_down_kernel", "ok": True,
           "registers": 62, "spill_store_bytes": 0, "loads_per_element": 1.5589,
           "load_instructions_per_output": 2.375, "load_widths": {"128": 38, "32": 19},
           "store_widths": {"128": 8}, "grid": [1080, 2]}
    block = kernel_reports.kernel_figures_block({90: {"figures": [fig]}})
    line = [x for x in block.splitlines() if x.startswith("| pyr_down")][0]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:] == ["62", "0", "1.56", "2.38", "32×19, 128×38", "128×8", "2160"]
    assert "no report" in kernel_reports.kernel_figures_block({})
