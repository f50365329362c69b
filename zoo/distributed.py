"""Process groups for ``torchrun`` and synced BatchNorm; the code lives in
:mod:`zoo.core.distributed`, these names stay importable from here."""

from zoo.core.distributed import (AllReduceBatchNorm2d, barrier, convert_sync_batchnorm,
                                  init_from_env, lost_peer, shutdown, world)

__all__ = ["AllReduceBatchNorm2d", "barrier", "convert_sync_batchnorm", "init_from_env",
           "lost_peer", "shutdown", "world"]
