"""The dtype rules every op shares: which dtypes are half precision, and what they compute in.

Half-precision inputs (fp16, bf16) are accumulated in float32 and returned in their own
dtype; float64 stays float64 everywhere; float32 is float32.
"""

from __future__ import annotations

import torch

__all__ = ["HALF_DTYPES", "accumulation_dtype", "float32_or_64"]

HALF_DTYPES = (torch.float16, torch.bfloat16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for fp16/bf16, else ``dtype`` itself."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def float32_or_64(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64, else float32 (what weights and normalisers are computed in)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
