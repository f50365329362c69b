"""``python -m zoo.fctl.make_refine_data``: crude masks for training the CSRN.

The command lives in :mod:`zoo.cli.make_refine_data`, the storage format, writer and dataset
in :mod:`zoo.fctl.refine_masks`, the local model loader in :mod:`zoo.fctl.local_model`; the
names scripts import from here stay here.
"""

from zoo.cli.make_refine_data import main
from zoo.fctl.local_model import load_local_model
from zoo.fctl.refine_masks import (FORMAT, LOGP_STEPS, RefineMasks, decode_logp, encode_logp,
                                   refine_dataset, write_refine_masks)

__all__ = ["FORMAT", "LOGP_STEPS", "RefineMasks", "decode_logp", "encode_logp", "load_local_model",
           "main", "refine_dataset", "write_refine_masks"]

if __name__ == "__main__":
    raise SystemExit(main())
