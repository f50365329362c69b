"""Crude masks for training FCtL's CSRN: their storage format, writer and dataset.

The command that makes them is ``python -m zoo.fctl.make_refine_data``:

    python -m zoo.fctl.make_refine_data --config fctl_deepglobe_refine [--splits train val]
        [--data-root DIR] [--local-checkpoint FILE] [--out DIR] [--set key=value ...]

The FCtL paper trains its refinement network on masks of a local model stopped early (after
20 of 50 epochs), so that the refiner sees the errors of a model that has not memorised the
training images (§4.2; never released, ``reference/fctl.md`` §10). This command runs that
local model (``refine.local_config`` + ``refine.local_checkpoint`` of the refine config) over
every image of the requested splits of the config's dataset, on the grid of the config's
``fctl.patch_size`` / ``fctl.min_overlap``, averages the patch logits into the crude mask and
stores, per image, ``<out>/<split>/<id>.npz``:

- ``logp``: uint8 (n, H, W), the crude mask's log-probabilities quantised in steps of 1/16:
  ``q = clip(round(-16 · log_softmax(logits)), 0, 255)`` (probabilities down to e^-16 are
  kept; compressed, about 10 MB for a DeepGlobe image instead of 168 MB of float32 logits).
  The CSRN only sees softmax(logits) and adds its residual to logits, and log_softmax differs
  from the logits by one constant per pixel, so training on log-probabilities is training on
  the logits, up to the quantisation;
- ``mask``: the ground truth (uint8, or int16 beyond 255 classes).

Every file is written atomically (temporary file, then rename), and images whose file exists
are skipped, so an interrupted run continues where it stopped. ``<out>/manifest.json``
records the classes and the source (local model, checkpoint fingerprint, grid); a folder made
by another local model is refused. :class:`RefineMasks` reads a split back for the trainer
(``family: fctl_refine`` configs read ``refine.masks``).
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from zoo.core.atomic import atomic_write_bytes, atomic_write_text
from zoo.core.errors import ConfigError, DataFileError

__all__ = ["FORMAT", "LOGP_STEPS", "RefineMasks", "decode_logp", "encode_logp", "refine_dataset",
           "write_refine_masks"]

FORMAT = "uhrops-refine-masks-1"
LOGP_STEPS = 16  # quantisation steps per unit of log-probability


def encode_logp(logits: Tensor) -> np.ndarray:
    """Quantise a crude mask's logits for storage.

    Convention:
        (n, H, W) logits -> uint8 numpy (n, H, W), q = clip(round(-LOGP_STEPS ·
        log_softmax(logits, 0)), 0, 255): steps of 1/16 in log-probability, down to
        -255/16 (p ~ 1.2e-7). A per-pixel constant added to the logits changes nothing.
    """
    logp = torch.log_softmax(logits.float(), 0)
    q = (-logp * LOGP_STEPS).round().clamp_(0, 255)
    return q.to(torch.uint8).cpu().numpy()


def decode_logp(q: np.ndarray | Tensor) -> Tensor:
    """Inverse of :func:`encode_logp` up to the quantisation.

    Convention:
        uint8 (n, H, W) -> float32 tensor -q / LOGP_STEPS: log-probabilities, which the CSRN
        takes as logits (within 1/32 of log_softmax of the stored logits above -255/16).
    """
    t = torch.as_tensor(np.asarray(q))
    return t.float().mul_(-1.0 / LOGP_STEPS)


def _file_name(sample_id: object) -> str:
    # ids are file stems or "synthetic-<seed>-<i>"; keep them readable but path-safe
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(sample_id))
    return (name or "_") + ".npz"


def _read_manifest(folder: str) -> dict[str, Any] | None:
    path = os.path.join(folder, "manifest.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise DataFileError(f"{path}: unreadable refine-mask manifest ({exc}). Fix: delete the "
                            "folder and run python -m zoo.fctl.make_refine_data again.") from None
    if manifest.get("format") != FORMAT:
        raise DataFileError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}.")
    return manifest


def write_refine_masks(segment: Callable[[Tensor], Tensor], dataset: Any, folder: str,
                       split: str, source: Mapping[str, Any], *,
                       device: torch.device | str | None = None,
                       progress: bool = False) -> dict[str, int]:
    """Write the crude mask of every image of ``dataset`` to ``<folder>/<split>/``.

    Convention:
        - ``segment(image)``: (1, 3, H, W) on ``device`` -> merged local logits (1, n, H, W)
          (FCtL: :class:`zoo.fctl.FCtLSegmenter` with ``merge="mean"``).
        - One ``<id>.npz`` per image (``logp`` and ``mask``, see the module docstring),
          written atomically; existing files are skipped (``segment`` is not called for them).
        - ``manifest.json`` gets the dataset's classes and ``source`` (a JSON-able mapping
          that identifies the local model and grid); an existing manifest with another source
          or other classes raises ValueError.

    Args:
        segment: image -> crude logits.
        dataset: samples with "image", "mask", "id"; CLASSES / PALETTE / exclude_from_mean /
            ignore_index attributes are recorded when present.
        folder: output folder.
        split: sub-folder name ("train", "val", "test").
        source: what made the masks.
        device: where images go before ``segment``.
        progress: one line per written image on stderr.

    Returns:
        {"written": k, "skipped": m}.
    """
    source = json.loads(json.dumps(dict(source), sort_keys=True, default=str))
    classes = list(getattr(dataset, "CLASSES", []))
    manifest = _read_manifest(folder)
    if manifest is not None:
        if manifest.get("source") != source:
            raise ValueError(
                f"write_refine_masks(): {folder} holds masks of another local model or grid "
                f"(manifest source {manifest.get('source')} != {source}). Fix: pass another "
                "--out folder, or delete this one.")
        if manifest.get("classes") != classes:
            raise ValueError(f"write_refine_masks(): {folder} holds masks of classes "
                             f"{manifest.get('classes')}, the dataset has {classes}.")
    else:
        manifest = {"format": FORMAT, "source": source, "classes": classes,
                    "palette": [list(c) for c in getattr(dataset, "PALETTE", [])],
                    "num_classes": int(getattr(dataset, "num_classes", len(classes))),
                    "exclude_from_mean": list(getattr(dataset, "exclude_from_mean", ())),
                    "ignore_index": getattr(dataset, "ignore_index", 255),
                    "logp_steps": LOGP_STEPS, "splits": {}}
    out_dir = os.path.join(folder, split)
    os.makedirs(out_dir, exist_ok=True)
    # Recorded before any mask, so that a rerun after an interruption checks the source too.
    atomic_write_text(os.path.join(folder, "manifest.json"),
                      json.dumps(manifest, indent=1, sort_keys=True))
    names: list[str] = []
    written = skipped = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        name = _file_name(sample["id"])
        if name in names:
            raise ValueError(f"write_refine_masks(): two images map to the file name {name!r} "
                             f"(ids must be unique); got id {sample['id']!r} again.")
        names.append(name)
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            skipped += 1
            continue
        image = sample["image"][None]
        if device is not None:
            image = image.to(device)
        with torch.no_grad():
            logits = segment(image)
        if logits.dim() != 4 or logits.shape[0] != 1 or \
                tuple(logits.shape[-2:]) != tuple(sample["mask"].shape):
            raise ValueError(f"write_refine_masks(): `segment` must return (1, n, H, W) logits "
                             f"at the image size {tuple(sample['mask'].shape)}; got "
                             f"{tuple(logits.shape)}.")
        mask = sample["mask"].cpu().numpy()
        mask = mask.astype(np.uint8 if mask.max(initial=0) <= 255 and mask.min(initial=0) >= 0
                           else np.int16)
        buf = io.BytesIO()
        np.savez_compressed(buf, logp=encode_logp(logits[0]), mask=mask)
        atomic_write_bytes(path, buf.getvalue())
        written += 1
        if progress:
            print(f"make_refine_data: {split} {i + 1}/{len(dataset)} {name}", file=sys.stderr)
    manifest = dict(manifest)
    manifest["splits"] = {**manifest.get("splits", {}), split: names}
    atomic_write_text(os.path.join(folder, "manifest.json"),
                      json.dumps(manifest, indent=1, sort_keys=True))
    return {"written": written, "skipped": skipped}


class RefineMasks(torch.utils.data.Dataset):
    """A split of crude masks written by :func:`write_refine_masks`, as training samples.

    Convention:
        Sample i = {"image": float32 (n, H, W) log-probabilities of the crude mask
        (:func:`decode_logp`), "mask": int64 (H, W) ground truth, "id": file stem}; the
        "image" is what :class:`zoo.engine.fctl_task.RefineTask` feeds the CSRN (the trainer's flips and
        rotations apply to it like to an image). ``CLASSES``, ``PALETTE``, ``num_classes``,
        ``ignore_index``, ``exclude_from_mean`` come from the manifest. A missing or
        unreadable file raises :class:`zoo.data.base.DataFileError` naming it.

    Args:
        folder: the folder given to make_refine_data (holds manifest.json).
        split: "train", "val" or "test".
        transform: optional callable on the sample dict.
    """

    def __init__(self, folder: str, split: str, transform: Callable | None = None) -> None:
        manifest = _read_manifest(folder)
        if manifest is None:
            raise DataFileError(f"RefineMasks(): no manifest.json in {folder}. Fix: run python "
                                "-m zoo.fctl.make_refine_data --config <refine config> first.")
        if split not in manifest["splits"]:
            raise DataFileError(f"RefineMasks(): {folder} has no split {split!r} (it has "
                                f"{sorted(manifest['splits'])}). Fix: python -m "
                                f"zoo.fctl.make_refine_data ... --splits {split}.")
        self.folder, self.split, self.transform = folder, split, transform
        self.files = [os.path.join(folder, split, n) for n in manifest["splits"][split]]
        missing = [f for f in self.files if not os.path.exists(f)]
        if missing:
            raise DataFileError(f"RefineMasks(): {len(missing)} of {len(self.files)} masks of "
                                f"split {split!r} are missing (e.g. {missing[0]}). Fix: rerun "
                                "make_refine_data; it skips the finished images.")
        self.CLASSES = tuple(manifest["classes"])
        self.PALETTE = tuple(tuple(c) for c in manifest["palette"])
        self.num_classes = int(manifest["num_classes"])
        self.ignore_index = manifest["ignore_index"]
        self.exclude_from_mean = tuple(manifest["exclude_from_mean"])
        self.source = manifest["source"]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        path = self.files[i]
        try:
            with np.load(path) as z:
                q, mask = z["logp"], z["mask"]
        except Exception as exc:  # zipfile / numpy errors of a damaged file
            raise DataFileError(f"cannot read {path}: {type(exc).__name__}: {exc}. Fix: delete "
                                "it and rerun make_refine_data.") from exc
        sample = {"image": decode_logp(q), "mask": torch.from_numpy(mask.astype(np.int64)),
                  "id": os.path.splitext(os.path.basename(path))[0]}
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return f"RefineMasks({self.folder!r}, {self.split!r}, {len(self)} masks)"


def refine_dataset(cfg: Mapping[str, Any], split: str, transform: Callable | None = None
                   ) -> RefineMasks:
    """The refine-mask split a ``family: fctl_refine`` config trains / validates on.

    Convention:
        :class:`RefineMasks` of ``cfg["refine"]["masks"]`` and ``split``; ConfigError when
        ``refine.masks`` is unset. :meth:`zoo.engine.fctl_task.RefineTask.build_dataset`
        calls it for every split of a ``fctl_refine`` config.
    """
    folder = cfg["refine"]["masks"]
    if not folder:
        raise ConfigError("refine.masks is not set: give the folder written by python -m "
                          "zoo.fctl.make_refine_data (--set refine.masks=DIR).")
    return RefineMasks(folder, split, transform)


