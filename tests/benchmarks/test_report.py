"""benchmarks.report: tables from synthetic results match the JSON, --check, idempotence,
marker insertion, plots."""

from __future__ import annotations

import glob
import json
import math
import os
import re

import numpy as np
import pytest

from benchmarks import csrn_ablation, geo, host_allocator, kernel_reports, merge_labels, \
    onnx_export, report, wsdnet_train_memory, wsl_magnitudes
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
           "results": [{"method": "predictor", "size": 2448, "classes": 7, "time_s": 1.0,
                        "peak_rss_mb": 500.0, "peak_above_start_mb": 100.0, "windows": 49,
                        "patches_run": 49},
                       {"method": "labels", "size": 2448, "classes": 7, "time_s": 5.5,
                        "peak_rss_mb": 600.0, "peak_above_start_mb": 175.0},
                       {"method": "bounded", "size": 2448, "classes": 7, "time_s": 6.0,
                        "peak_rss_mb": 610.0, "peak_above_start_mb": 180.0, "windows": 40,
                        "patches_run": 50},
                       {"method": "monai", "size": 10240, "classes": 100, "skipped": True,
                        "needs_bytes": 44 * 2**30, "available_bytes": 20 * 2**30}]}
    doc["setup"]["bound_mib"] = 256
    text = merge_labels.merge_labels_block(doc)
    # no patch count in the row: "—"; 175 - 100 MB above the predictor alone
    assert "| 2448² | 7 | `sliding_window(argmax=True)` | 5.50 | — | 175 | 75.0 | 600 |" in text
    bounded = "`sliding_window(argmax=True, max_accumulator_bytes=256 MiB)`"
    assert f"| 2448² | 7 | {bounded} | 6.00 | +25% | 180 | 80.0 | 610 |" in text  # 50 / 40
    assert "| predictor" not in text  # the baseline row is a column of the others
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


# ---- every block has a producer; the geo, ONNX and CSRN-ablation blocks -----------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _page_names() -> tuple[set[str], set[str]]:
    """(README marker names, documentation ``{bench-block}`` names) in the repository."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        markers = set(re.findall(r"<!-- bench:(\S+) (?:begin|end) -->", f.read()))
    directives: set[str] = set()
    for page in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True):
        if f"{os.sep}_build{os.sep}" in page:
            continue
        with open(page, encoding="utf-8") as f:
            directives |= set(re.findall(r"^```\{bench-block\}\s+(\S+)", f.read(), re.M))
    return markers, directives


def test_every_block_has_one_producer_and_is_current():
    declared = [name for p in report.PRODUCERS for name in p.BLOCKS]
    assert len(declared) == len(set(declared)), "a block name declared by two producers"
    blocks = report.current_blocks()
    assert sorted(blocks) == sorted(declared)
    markers, directives = _page_names()
    assert markers and directives
    assert markers <= set(declared), f"README markers without a producer: {markers - set(declared)}"
    assert directives <= set(declared), \
        f"{{bench-block}} names without a producer: {directives - set(declared)}"
    # The tables that used to be copied by hand are generated now, from committed results.
    for name in ("geo", "onnx", "csrn-ablation"):
        assert name in directives
        assert not blocks[name].startswith("Not measured"), name
    assert report.main(["--check", "--no-plots"]) == 0  # the README's blocks are current


def test_marker_without_producer_is_named(results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench:summary begin -->\n<!-- bench:summary end -->\n\n"
                      "<!-- bench:no-such-table begin -->\nold\n<!-- bench:no-such-table end -->\n")
    for extra in ((), ("--check",)):
        with pytest.raises(SystemExit) as exc:
            _run(results, readme, "--no-plots", *extra)
        assert exc.value.code == 2
        assert "no-such-table" in capsys.readouterr().err
    assert "\nold\n" in readme.read_text()  # nothing written


def _side(n: int) -> str:
    return f"{n:,}".replace(",", " ") if n >= 10000 else str(n)


def _windows_per_side(size: int, window: int, overlap: int) -> int:
    """Window origins of a sliding window that ends flush with the image (a naive loop)."""
    starts, y, stride = [], 0, window - overlap
    while y + window < size:
        starts.append(y)
        y += stride
    return len(starts) + 1


def _geo_doc() -> dict:
    common_row = {"window": [1024, 1024], "window_overlap": 128, "batch_size": 1, "threads": 2}
    return {"meta": {"commit": "abcdef0123", "time": "2026-01-02T03:04:05+0000",
                     "torch": "2.x", "command": "python -m benchmarks.geo --rows 500"},
            "mosaic": {"size": 20000, "file_bytes": 1.25e9, "write_s": 10.0},
            "stream": dict(common_row, image=[20000, 20000], rows=500, windows_run=22,
                           windows_full_image=484, seconds_per_window=12.5,
                           peak_rss_mib=1800.4),
            "memory": dict(common_row, image=[4096, 4096], rows=1024, windows_run=5,
                           windows_full_image=5, seconds_per_window=10.0, peak_rss_mib=700.0),
            "full_image_rate_stream": 66115.7, "full_image_rate_memory": 67108.9,
            "stream_is_subset": True, "memory_is_subset": True,
            "full_mosaic_seconds_extrapolated": 484 * 12.5,
            "goals": {"peak_rss_le_2gb": True, "rate_within_10pct": False}}


def test_geo_block():
    doc = _geo_doc()
    text = geo.geo_block(doc)
    st, mem = doc["stream"], doc["memory"]
    assert (f"| seconds per 1024² window | {st['seconds_per_window']:.2f} | "
            f"{mem['seconds_per_window']:.2f} |") in text
    assert f"{_side(20000)}², rows 0:500 (22 windows of 1024²)" in text
    assert "4096 wide, rows 0:1024 (5 windows of 1024²)" in text
    full = _windows_per_side(4096, 1024, 128) ** 2
    assert f"{doc['full_image_rate_memory']:,.0f} ({full} windows for 4096²)" in text
    assert f"{doc['full_image_rate_stream']:,.0f} (484 windows for {_side(20000)}²)" in text
    assert f"**{st['peak_rss_mib']:,.0f} MiB** | 700 MiB (1024 rows only) |" in text
    slower = 100 * (st["seconds_per_window"] / mem["seconds_per_window"] - 1)
    assert f"{slower:.1f} % slower" in text
    assert "peak RSS ≤ 2 GB met" in text and "in-memory path's **not met**" in text
    assert f"{doc['full_mosaic_seconds_extrapolated'] / 3600:.1f} h" in text
    assert geo.geo_block(None).startswith("Not measured")
    changed = json.loads(json.dumps(doc))
    changed["stream"]["seconds_per_window"] = 9.0
    assert "10.0 % faster" in geo.geo_block(changed)


def _onnx_row(name: str, times: list[float], cpu: list[float], **acc) -> dict:
    return {"contender": name, "size": 100, "rounds": len(times),
            "median_ms": float(np.median(times)), "times_ms": times,
            "median_cpu_ms": float(np.median(cpu)), "cpu_ms": cpu, **acc}


def test_onnx_block():
    eager = ([20000.0, 40000.0, 30000.0], [9000.0, 9500.0, 9100.0])
    others = {"eager fp32+cl+fold": ([10000.0, 50000.0, 20000.0], [8000.0, 9000.0, 9100.0]),
              "onnxruntime dynamic": ([4000.0, 9000.0, 7000.0], [3000.0, 3100.0, 2900.0]),
              "onnxruntime static": ([5000.0, 8000.0, 6000.0], [2500.0, 2600.0, 2700.0])}
    rows = [_onnx_row("eager fp32", *eager)]
    rows += [_onnx_row(n, *t, max_rel_err=2.5e-6, argmax_agreement=0.995)
             for n, t in others.items()]
    doc = {"metadata": {"commit": "0123456789", "time": "2026-01-02T00:00:00+0000",
                        "torch": "2.x", "loadavg_start": [3.0, 2.0, 1.0],
                        "loadavg_end": [4.25, 2.0, 1.0], "note": "a quiet day"},
           "model": "WSDNet(7) random init", "size": 100, "batch": 1, "threads": 2,
           "export_s": {"dynamic": 61.4, "static": 12.6}, "rows": rows,
           "paired_median_ratios": {"eager fp32+cl+fold / onnxruntime dynamic": 2.345,
                                    "eager fp32+cl+fold / onnxruntime static": 3.0},
           "paired_median_cpu_ratios": {"eager fp32+cl+fold / onnxruntime dynamic": 2.5,
                                        "eager fp32+cl+fold / onnxruntime static": 3.125},
           "onnxruntime": "9.9.9"}
    text = onnx_export.onnx_block(doc)

    def cells(start: str) -> list[str]:
        line = [x for x in text.splitlines() if x.startswith("| " + start)][0]
        return [c.strip() for c in line.strip("|").split("|")]

    assert cells("eager fp32, `inference_mode`")[1:] == [_fmt(30.0), _fmt(9.1), "1x, 1x", "—"]
    for name, label in (("eager fp32+cl+fold", "eager fp32 + channels_last"),
                        ("onnxruntime dynamic", "ONNX Runtime 9.9.9, `--dynamic`"),
                        ("onnxruntime static", "ONNX Runtime 9.9.9, graph exported")):
        wall, cpu = others[name]
        rw = np.median(np.array(eager[0]) / np.array(wall))
        rc = np.median(np.array(eager[1]) / np.array(cpu))
        ratio = f"{rw:.2f}x, {rc:.2f}x"
        got = cells(label)
        assert got[1:3] == [_fmt(np.median(wall) / 1e3), _fmt(np.median(cpu) / 1e3)]
        assert got[3] == (ratio if name.startswith("eager") else f"**{ratio}**")
        assert got[4] == "2.5e-6 max rel, argmax 99.5 %"
    pad = math.ceil(100 / 32) * 32
    assert f"pad 100 -> {pad}, crop" in text
    assert "2.35x (wall) and 2.50x (CPU) for the dynamic graph, 3.00x and 3.12x" in text
    assert "61 s (dynamic) and 13 s (static)" in text
    assert "3 paired rounds" in text and "4.2 at the end" in text and "a quiet day" in text
    assert onnx_export.onnx_block(None).startswith("Not measured")


def test_host_allocator_block():
    rng = np.random.default_rng(7)

    def run(setting, r, cpu, sys_, faults, peak):
        images = [{"user_s": float(c - k), "sys_s": float(k), "minor_faults": int(f)}
                  for c, k, f in zip(cpu, sys_, faults)]
        one = {"setting": setting, "round": r, "images": images, "peak_above_start_mb": peak}
        one.update(host_allocator._summary(one))
        return one

    runs, raw = [], {"kept": [], "default": []}
    for r in range(3):
        for s, scale in (("kept", 1.0), ("default", 1.6)):
            cpu = rng.uniform(2, 3, 4) * scale
            sys_ = cpu * (0.02 if s == "kept" else 0.3)
            faults = rng.integers(1000, 900000, 4)
            peak = float(rng.uniform(900, 1400))
            runs.append(run(s, r, cpu, sys_, faults, peak))
            raw[s].append((cpu, sys_, faults, peak))
    # the oracle: numpy over the images after the first, then over the runs
    med = {s: [np.median([np.median(c[1:]) for c, _, _, _ in raw[s]]),
               np.median([np.median(k[1:]) for _, k, _, _ in raw[s]]),
               np.median([np.median(f[1:]) for _, _, f, _ in raw[s]]),
               np.median([p for _, _, _, p in raw[s]])] for s in raw}
    doc = {"metadata": {"torch": "2.x", "time": "2026-01-02T00:00:00+0000"}, "size": 64,
           "images_per_run": 4, "rounds": 3, "threads": 2, "runs": runs,
           "paired_median_kept_over_default": {"cpu": 0.625, "peak": 1.394}}
    text = host_allocator.host_allocator_block(doc)
    for s, start in (("kept", "| freed memory kept"), ("default", "| glibc's default")):
        line = [x for x in text.splitlines() if x.startswith(start)][0]
        got = [c.strip() for c in line.strip("|").split("|")][1:]
        assert got == [_fmt(med[s][0]), _fmt(med[s][1]), f"{med[s][2]:,.0f}", _fmt(med[s][3])]
    assert "0.62x the CPU time, 1.39x the peak memory" in text
    assert "64², batch 1, 2 threads; 4 images per run" in text and "3 rounds" in text
    assert host_allocator.host_allocator_block(None).startswith("Not measured")


def test_csrn_ablation_block():
    methods = {"montage": {"miou": 0.912345, "band_miou": 0.8},
               "averaging": {"miou": 0.9, "band_miou": 0.85555},
               "csrn@1.5": {"miou": 0.5, "band_miou": 0.25},
               "csrn@3-fresh": {"miou": 0.99994, "band_miou": 0.0}}
    doc = {"metadata": {"torch": "2.x", "threads": 1, "commit": "feedbeef99",
                        "time": "2026-01-02T00:00:00"},
           "results": {"methods": methods, "images": 4, "pixels": 1000, "band_pixels": 250,
                       "band_fraction": 0.25, "band_width": 3, "patch_size": 48,
                       "seconds": 125.4}}
    text = csrn_ablation.ablation_block(doc)
    for name, cells in (("montage", "montage | – | –"), ("averaging", "averaging | – | –"),
                        ("csrn@1.5", "CSRN | ×1.5 | early-model masks"),
                        ("csrn@3-fresh", "CSRN | ×3 | final-model masks, unseen scenes")):
        m = methods[name]
        assert f"| {cells} | {100 * m['miou']:.2f} | {100 * m['band_miou']:.2f} |" in text
    assert "4 test scenes, 1000 labelled pixels, 25.0 % of them in the seam band" in text
    assert "(3 px at 48 px patches)" in text and "2 min 5 s" in text
    assert csrn_ablation.ablation_block(None).startswith("Not measured")
