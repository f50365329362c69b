"""Reading backbone weight files safely: safetensors, or torch.load(weights_only=True).

Shared by every backbone loader (VGG16, ResNet18-V1c, STDC1). Nothing is downloaded: the
loaders take local files, and a file that needs arbitrary unpickling is refused. The code
lives in :mod:`zoo.core.weights` (weight-file cleaning written once); these names stay here
for the loaders and for users who imported them.
"""

from __future__ import annotations

from zoo.core.errors import WeightsError, WeightsFileNotFoundError
from zoo.core.weights import WRAPPER_PREFIXES as _WRAPPER_PREFIXES  # noqa: F401
from zoo.core.weights import read_state_dict

__all__ = ["WeightsError", "WeightsFileNotFoundError", "read_state_dict"]
