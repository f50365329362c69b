"""Long inference runs: flat memory image after image, bounded memory on a huge image, and an
interrupted folder run that resumes without recomputing what is finished.

``python -m zoo.infer`` runs as a subprocess through ``_infer_rss`` (the real CLI with the peak
RSS measured per image by resetting the kernel's VmHWM counter, and an optional SIGKILL after
K images), with a tiny untrained WSDNet forced onto the tiled path (``eval.max_whole_pixels``
small, ``eval.window`` windows through ``uhrops.sliding_window``).

Default run: 5 images of 128^2 (windows of 128) killed after 3 and resumed, then a 768^2 image
(windows of 512). Long variant: 20 images of 1024^2 and one 10240^2 image (windows of
512), the 105-Mpixel image alone taking about 10 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.reliability._report import REPORT

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_MODEL = ["model.kwargs={sr_channels: [8, 8, 16], aspp_dilations: [1, 2], "
               "aspp_channels: 32, fuse_channels: 32, head_channels: 16}"]
pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                                reason="per-image peak RSS needs Linux /proc")


def _setup(folder, window: int, overlap: int) -> tuple[str, str]:
    from zoo.config import dump_config, load_config
    from zoo.core.checkpoint import save_checkpoint
    from zoo.engine.families import make_task

    cfg = load_config("quickstart", ["train.device=cpu", f"eval.window=[{window}, {window}]",
                                     f"eval.window_overlap={overlap}", "eval.batch_size=2",
                                     "eval.max_whole_pixels=4096"] + SMALL_MODEL)
    cfg_path = os.path.join(folder, "config.yaml")
    dump_config(cfg, cfg_path)
    torch.manual_seed(0)
    ckpt = os.path.join(folder, "model.safetensors")
    save_checkpoint(ckpt, make_task(cfg).build_model(), {"iteration": 0})
    return cfg_path, ckpt


def _scene(path: str, n: int, seed: int) -> str:
    """An n x n aerial-looking JPEG (smooth fields, noise, a few straight roads), written
    in row blocks so that a 10240^2 scene costs little memory to make."""
    rng = np.random.default_rng(seed)
    img = np.empty((n, n, 3), np.uint8)
    base = rng.integers(40, 200, 3)
    step = 1024
    for r in range(0, n, step):
        y = np.arange(r, min(r + step, n))[:, None]
        x = np.arange(n)[None, :]
        field = ((x // 97 + y // 89 + seed) % 5) * 23
        for c in range(3):
            img[r:r + step, :, c] = np.clip(base[c] + field - 40 + rng.integers(0, 24, (len(y), n)),
                                            0, 255)
        img[r:r + step, ::331] = 90
    img[::257, :] = 90
    Image.fromarray(img).save(path, quality=90)
    return path


def _infer(cfg_path, ckpt, images, out, rss_log, kill_after=0, timeout=3600):
    env = dict(os.environ, OMP_NUM_THREADS="2", UHROPS_RSS_LOG=rss_log,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if kill_after:
        env["UHROPS_INFER_KILL_AFTER"] = str(kill_after)
    p = subprocess.run([sys.executable, "-m", "tests.reliability._infer_rss", "--config",
                        cfg_path, "--checkpoint", ckpt, *images, "--out", out], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=timeout)
    return p


def _records(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _outputs(out: str, image: str) -> list[str]:
    stem = os.path.splitext(os.path.basename(image))[0]
    return [os.path.join(out, f"{stem}_{k}.png") for k in ("mask", "color", "overlay")]


def _check_flat(records: list[dict], label: str) -> dict:
    """After the first third of the images (warm-up: the allocator's pools settle), no image
    peaks more than 2% + 16 MiB above the warm-up's highest peak, and the process is never
    left more than 16 MiB larger than after the warm-up: nothing accumulates per image."""
    peaks = [r["peak_rss_mib"] for r in records]
    after = [r["rss_after_mib"] for r in records]
    warm = max(1, len(records) // 3)
    assert all(r["peak_reset"] for r in records)
    if len(records) > warm:
        assert max(peaks[warm:]) <= max(peaks[:warm]) * 1.02 + 16, f"{label}: peaks grow: {peaks}"
        assert max(after[warm:]) <= max(after[:warm]) + 16, \
            f"{label}: resident memory grows: {after}"
    return {"images": len(records), "warm_up_images": warm,
            "peak_rss_mib_first": round(peaks[0], 1), "peak_rss_mib_max": round(max(peaks), 1),
            "peak_rss_mib_min": round(min(peaks), 1),
            "peak_rss_mib_per_image": [round(p, 1) for p in peaks],
            "rss_after_mib_per_image": [round(a, 1) for a in after],
            "seconds_per_image": round(sum(r["seconds"] for r in records) / len(records), 2)}


def _check_big(record: dict, n: int, label: str) -> dict:
    """A huge image through the tiled path: the growth over the process before it stays
    within 48 bytes per pixel (the float32 image, 12 B/px, and the 7-class float32 logits,
    28 B/px, are the floor) plus 1.5 GiB for the model and one window batch."""
    grown = record["peak_rss_mib"] - record["rss_before_mib"]
    per_px = grown * 2**20 / (n * n)
    assert grown <= 48 * n * n / 2**20 + 1536, f"{label}: {grown:.0f} MiB for {n}^2"
    return {"size": n, "megapixels": round(n * n / 1e6, 1),
            "peak_rss_mib": round(record["peak_rss_mib"], 1),
            "growth_mib": round(grown, 1), "bytes_per_pixel": round(per_px, 1),
            "seconds": record["seconds"]}


def _run(tmp_path, n_small: int, small: int, kill_after: int, big: int, window_small: int,
         label: str):
    folder = str(tmp_path)
    data = os.path.join(folder, "images")
    os.makedirs(data)
    images = [_scene(os.path.join(data, f"tile{i:02d}.jpg"), small, i) for i in range(n_small)]
    big_image = _scene(os.path.join(folder, f"big{big}.jpg"), big, 99)
    cfg_small, ckpt = _setup(folder, window_small, window_small // 8)
    out = os.path.join(folder, "pred")
    log1 = os.path.join(folder, "rss-first.jsonl")
    # 1. the folder, killed after `kill_after` images
    p = _infer(cfg_small, ckpt, images, out, log1, kill_after=kill_after)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    first = _records(log1)
    assert len(first) == kill_after
    done = images[:kill_after]
    stamps = {}
    for img in done:
        for f in _outputs(out, img):
            st = os.stat(f)
            stamps[f] = (st.st_ino, st.st_mtime_ns, st.st_size)
    # 2. the same command again: the finished images are skipped, the rest are done
    log2 = os.path.join(folder, "rss-resume.jsonl")
    p = _infer(cfg_small, ckpt, images, out, log2)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"skipping {kill_after} image(s)" in p.stdout, p.stdout
    second = _records(log2)
    assert [r["image"] for r in second] == [os.path.basename(i) for i in images[kill_after:]]
    for f, stamp in stamps.items():
        st = os.stat(f)
        assert (st.st_ino, st.st_mtime_ns, st.st_size) == stamp, f"{f} was recomputed"
    for img in images:
        for f in _outputs(out, img):
            assert os.path.isfile(f), f
        mask = np.asarray(Image.open(_outputs(out, img)[0]))
        assert mask.shape == (small, small) and mask.max() < 7
    assert not [f for f in os.listdir(out) if ".tmp" in f]
    # 3. the huge image, windows of 512
    big_dir = os.path.join(folder, "big-cfg")
    os.makedirs(big_dir)
    cfg_big, ckpt_big = _setup(big_dir, 512, 64)
    log3 = os.path.join(folder, "rss-big.jsonl")
    t0 = time.perf_counter()
    p = _infer(cfg_big, ckpt_big, [big_image], out, log3)
    assert p.returncode == 0, p.stderr[-2000:]
    big_rec = _records(log3)[0]
    mask = Image.open(_outputs(out, big_image)[0])
    assert mask.size == (big, big)
    section = {
        "folder": _check_flat(first, label) | {"image_size": small, "window": window_small},
        "interrupted_folder": {"images": n_small, "killed_after": kill_after,
                               "recomputed_on_resume": 0,
                               "done_on_resume": len(second)},
        "huge_image": _check_big(big_rec, big, label) | {"window": 512,
                                                         "wall_s": round(time.perf_counter()
                                                                         - t0, 1)},
    }
    REPORT.set("long_runs", label, section)


def test_folder_memory_is_flat_and_an_interrupted_run_resumes(tmp_path):
    _run(tmp_path, n_small=5, small=128, kill_after=3, big=768, window_small=128,
         label="default")


@pytest.mark.slow
@pytest.mark.long
def test_20_images_and_a_10240_image(tmp_path):
    _run(tmp_path, n_small=20, small=1024, kill_after=12, big=10240, window_small=512,
         label="long")
