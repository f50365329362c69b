"""Files that must never be half-written or unsafely read: atomic writes and checkpoints.

The code lives in :mod:`zoo.core` (``atomic``, ``checkpoint``, ``rng``); this module keeps
the names users and scripts import from ``zoo.io``.
"""

from __future__ import annotations

from zoo.core.atomic import atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from zoo.core.checkpoint import (FORMAT, load_checkpoint, model_signature, read_checkpoint,
                                 read_model_weights, save_checkpoint)
from zoo.core.errors import CheckpointError
from zoo.core.rng import rng_state, set_rng_state

__all__ = ["FORMAT", "CheckpointError", "atomic_write_bytes", "atomic_write_text",
           "load_checkpoint", "model_signature", "read_checkpoint", "read_model_weights",
           "remove_stale_temporaries", "rng_state", "save_checkpoint", "set_rng_state"]
