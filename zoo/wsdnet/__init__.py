"""WSDNet (CVPR 2023) on uhrops ops: the model and its losses (Wavelet Smooth Loss)."""

from zoo.wsdnet.losses import (
    WaveletSmoothLoss,
    WSDNetLoss,
    structure_distillation_loss,
    wavelet_smooth_loss,
)
from zoo.wsdnet.model import WSDNet, padded_size

__all__ = [
    "WSDNet",
    "WSDNetLoss",
    "WaveletSmoothLoss",
    "padded_size",
    "structure_distillation_loss",
    "wavelet_smooth_loss",
]
