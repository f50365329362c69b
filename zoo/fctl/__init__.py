"""FCtL (Li et al., ICCV 2021) on uhrops ops: the local model, official-checkpoint loading,
whole-image inference and uhrops' contextual semantics refinement network (CSRN, never
released). See ``reference/fctl.md`` for what the released code does."""

from zoo.fctl.checkpoints import OfficialLoadReport, load_official_checkpoints, official_key_map
from zoo.fctl.csrn import CSRN, refine_logits
from zoo.fctl.merging import evaluate_merges, montage_patches, seam_band_mask, seam_positions
from zoo.fctl.model import FCtL, FCN8sDecoder, MultiContextFusion, bilinear_kernel
from zoo.fctl.pipeline import (FCtLSegmenter, released_contexts, released_resize_global,
                               resize_global)

__all__ = [
    "FCtL",
    "FCN8sDecoder",
    "MultiContextFusion",
    "bilinear_kernel",
    "load_official_checkpoints",
    "official_key_map",
    "OfficialLoadReport",
    "FCtLSegmenter",
    "resize_global",
    "released_contexts",
    "released_resize_global",
    "CSRN",
    "refine_logits",
    "montage_patches",
    "seam_positions",
    "seam_band_mask",
    "evaluate_merges",
]
