"""uhrops: differentiable operators for ultra-high-resolution image segmentation.

Every op has a PyTorch path (the reference; any device and float dtype) and, where it pays,
a Triton path with its own backward. ``uhrops.use_backend("auto" | "torch" | "triton")``
picks between them; see :mod:`uhrops._backend`.
"""

from uhrops._backend import (
    BackendUnavailableError,
    KernelLaunchError,
    get_backend,
    set_backend,
    triton_unavailable_reason,
    use_backend,
)
from uhrops import checks  # the argument checks, a module (so not in __all__, which lists ops)
from uhrops import export  # torch.export / ONNX decompositions of the ops, a module likewise
from uhrops.attention import LocalContextCorrelation, context_attention
from uhrops.pyramid import (
    GaussianPyramid,
    LaplacianPyramid,
    gaussian_pyramid,
    laplacian_pyramid,
    laplacian_reconstruct,
    pyr_down,
    pyr_up,
)
from uhrops.tiling import (
    BandSink,
    ExtractContexts,
    MergePatches,
    PatchGrid,
    TensorReader,
    WindowReader,
    extract_contexts,
    extract_patches,
    gaussian_weight,
    hann_weight,
    merge_patches,
    sliding_window,
)
from uhrops.wavelet import (
    HaarDWT2d,
    HaarIDWT2d,
    HaarIPacket2d,
    HaarPacket2d,
    haar_dwt2d,
    haar_idwt2d,
    haar_ipacket2d,
    haar_packet2d,
    haar_wavedec2,
    haar_waverec2,
)

__version__ = "0.2.0"

__all__ = [
    "BackendUnavailableError",
    "KernelLaunchError",
    "get_backend",
    "set_backend",
    "triton_unavailable_reason",
    "use_backend",
    "context_attention",
    "LocalContextCorrelation",
    "GaussianPyramid",
    "LaplacianPyramid",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "laplacian_reconstruct",
    "pyr_down",
    "pyr_up",
    "ExtractContexts",
    "MergePatches",
    "PatchGrid",
    "extract_contexts",
    "extract_patches",
    "gaussian_weight",
    "hann_weight",
    "merge_patches",
    "sliding_window",
    "WindowReader",
    "BandSink",
    "TensorReader",
    "HaarDWT2d",
    "HaarIDWT2d",
    "HaarIPacket2d",
    "HaarPacket2d",
    "haar_dwt2d",
    "haar_idwt2d",
    "haar_ipacket2d",
    "haar_packet2d",
    "haar_wavedec2",
    "haar_waverec2",
]
