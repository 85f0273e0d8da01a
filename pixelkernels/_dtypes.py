"""The dtype rules, in one place (the C++ side mirrors `stats_dtype` in
csrc/torch_utils.h; the tests check that every backend agrees)."""

from __future__ import annotations

import torch

FLOAT_TYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF_TYPES = (torch.float16, torch.bfloat16)
# Label maps are read at their own width by every kernel (no int64 copy).
LABEL_TYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics (counts, centroids, variances, losses): float32 for half inputs, else the
    input dtype; computations on half inputs accumulate in float32."""
    return torch.float32 if dtype in HALF_TYPES else dtype


def name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
