"""Verify a downloaded dataset before a long training run.

    python -m zoo.data.check ROOT --dataset deepglobe|inria|urur [--splits train val test]
                             [--full] [--limit N] [--set data.split_files.val=FILE ...]

``--set`` takes zoo.train's split options (``data.split_files.<split>=FILE``,
``data.<split>_split=NAME``), so the splits checked are those a run with them would read.

For each split: how many of the expected pairs are present, every mask decoded (values
inside the classes), image and mask sizes equal (from the image header; ``--full`` also
decodes every image), the class pixel fractions, and the image sizes seen. Prints a summary
and exits with status 1 when anything is missing or broken, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Sequence

import numpy as np

from .base import DataFileError, image_size, read_image

_EXPECTED_SIZE = {"deepglobe": (2448, 2448), "inria": (5000, 5000), "urur": (5120, 5120)}


# The split options of zoo.train that zoo.data.check takes too (--set KEY=VALUE).
SPLIT_KEYS = ("data.split_files.", "data.train_split", "data.val_split", "data.test_split")


def split_config(name: str, root: str, sets: Sequence[str] = ()) -> dict:
    """The config zoo.train would build for ``name`` at ``root`` with the split options
    ``sets`` (``data.split_files.<split>=FILE``, ``data.<split>_split=NAME``); anything else
    is refused (ConfigError naming the key)."""
    from zoo.config import ConfigError, load_config

    for item in sets:
        key = item.split("=", 1)[0].strip()
        if "=" not in item or not key.startswith(SPLIT_KEYS):
            raise ConfigError(f"zoo.data.check --set {item!r}: only the split options of "
                              f"zoo.train apply here (data.split_files.<split>=FILE, "
                              f"data.<split>_split=NAME). Fix: e.g. --set "
                              f"data.split_files.val=lists/val.txt.")
    return load_config("quickstart", [f"data.dataset={name}", f"data.root={root}",
                                      "data.missing=skip", *sets])


def _dataset(name: str, root: str, split: str, sets: Sequence[str] = ()):
    from .registry import split_name, build_dataset, split_ids_from_config

    cfg = split_config(name, root, sets)
    ds = build_dataset(cfg, split)
    listed = split_ids_from_config(cfg["data"], split)
    if listed is not None:
        return ds, len(listed)
    if name == "deepglobe":
        from .deepglobe import split_ids
        return ds, len(split_ids(split_name(cfg["data"], split)))
    if name == "inria":
        from .inria import split_ids
        return ds, len(split_ids(split_name(cfg["data"], split)))
    return ds, None


def check_split(name: str, root: str, split: str, full: bool = False,
                limit: int | None = None, progress: bool = False,
                sets: Sequence[str] = ()) -> dict:
    """Check one split; returns a report dict (see :func:`main` for the printed form).
    ``sets``: zoo.train's split options (``data.split_files.<split>=FILE`` ...).

    Keys: split, expected (None for URUR), found, problems (list of str), class_pixels
    (list of int per class), sizes (Counter of (H, W)).
    """
    report: dict = {"split": split, "expected": None, "found": 0, "problems": [],
                    "class_pixels": None, "sizes": Counter()}
    try:
        ds, expected = _dataset(name, root, split, sets)
    except (FileNotFoundError, DataFileError, ValueError) as exc:
        report["problems"].append(str(exc))
        return report
    report["expected"] = expected
    report["found"] = len(ds)
    if expected is not None and len(ds) < expected:
        report["problems"].append(f"{expected - len(ds)} of {expected} pairs missing")
    counts = np.zeros(256, dtype=np.int64)
    samples = ds.samples if limit is None else ds.samples[:limit]
    it = samples
    if progress:
        from tqdm import tqdm
        it = tqdm(samples, desc=f"{name}/{split}", unit="img")
    for sid, img_path, mask_path in it:
        try:
            h, w = image_size(img_path)
            if full:
                img = read_image(img_path)
                h, w = img.shape[1:]
            mask = ds.load_mask(mask_path)
        except DataFileError as exc:
            report["problems"].append(str(exc))
            continue
        report["sizes"][(h, w)] += 1
        if tuple(mask.shape) != (h, w):
            report["problems"].append(f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but "
                                      f"image {img_path} is {h}x{w}")
            continue
        counts += np.bincount(mask.numpy().ravel().clip(0, 255), minlength=256)
    report["class_pixels"] = counts[: ds.num_classes].tolist()
    report["ignored_pixels"] = int(counts[255])
    report["classes"] = list(ds.CLASSES)
    return report


def format_report(name: str, reports: Sequence[dict]) -> str:
    lines = [f"dataset: {name}"]
    for r in reports:
        exp = "" if r["expected"] is None else f" / {r['expected']} expected"
        lines.append(f"  {r['split']:>5}: {r['found']} pairs found{exp}")
        if r["sizes"]:
            sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in r["sizes"].most_common(5))
            lines.append(f"         sizes: {sizes}")
            want = _EXPECTED_SIZE.get(name)
            if want and set(r["sizes"]) != {want}:
                lines.append(f"         note: the papers use {want[0]}x{want[1]} images")
        if r.get("class_pixels") is not None and sum(r["class_pixels"]):
            total = sum(r["class_pixels"]) + r.get("ignored_pixels", 0)
            frac = ", ".join(f"{c} {100.0 * n / total:.1f}%"
                             for c, n in zip(r["classes"], r["class_pixels"]))
            lines.append(f"         classes: {frac}")
            if r.get("ignored_pixels"):
                lines.append(f"         ignore (255): {100.0 * r['ignored_pixels'] / total:.2f}%")
        for p in r["problems"][:20]:
            lines.append(f"         PROBLEM: {p}")
        if len(r["problems"]) > 20:
            lines.append(f"         ... and {len(r['problems']) - 20} more problems")
    ok = not any(r["problems"] for r in reports)
    lines.append("OK" if ok else "FAILED: see the problems above")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.data.check",
                                     description="Verify a downloaded UHR dataset.")
    parser.add_argument("root", help="dataset folder")
    parser.add_argument("--dataset", required=True, choices=["deepglobe", "inria", "urur"])
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"],
                        choices=["train", "val", "test"])
    parser.add_argument("--full", action="store_true", help="also decode every image")
    parser.add_argument("--limit", type=int, default=None, help="check at most N pairs a split")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="zoo.train's split options, e.g. --set "
                             "data.split_files.val=lists/val.txt (repeatable)")
    args = parser.parse_args(argv)
    progress = sys.stderr.isatty()
    try:
        split_config(args.dataset, args.root, args.sets)
    except ValueError as exc:  # ConfigError: a message, no traceback
        print(f"zoo.data.check: error: {exc}", file=sys.stderr)
        return 2
    reports = [check_split(args.dataset, args.root, s, args.full, args.limit, progress,
                           args.sets)
               for s in args.splits]
    print(format_report(args.dataset, reports))
    return 0 if not any(r["problems"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
