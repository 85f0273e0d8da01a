"""stochastic_pool (SPEC §3.3; seed 003 §2.2 eq. 2): k reference vectors per class, drawn without
replacement from the pixels of that class, as similarity_reduce and label_transfer take them.

    idx                 = sample_pixels(labels, C, k)        (B, C, k), -1 padding
    vectors[b, c·k + j] = emb[b, :, idx[b, c, j]]            0 for padding
    labels[b, c·k + j]  = c                                  -1 for padding

Class-major slots; a class with n_c < k pixels fills its first n_c slots. The pixels are the
sampler's (pixelkernels.sample_pixels, on `backend`), so the same generator state gives the same
vectors on every backend and in the reference (pixelkernels/reference/stochastic_pool.py). The
gather is plain torch (B·C·k·D values), differentiable in emb: a slot's gradient goes to its
pixel. vectors keep emb's dtype; labels are int64. No host sync.
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks
from .sample_pixels import sample_pixels

_ref = importlib.import_module("pixelkernels.reference.stochastic_pool")


def stochastic_pool(
    emb: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    num_classes: int,
    *,
    ignore_index: int = -1,
    generator: torch.Generator | torch.Tensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """emb (B, D, H, W), labels (B, H, W) integer -> vectors (B, C·k, D) in emb's dtype,
    labels (B, C·k) int64 (-1: padding)."""
    _checks.dense_map(emb, "emb")
    _checks.label_map(labels, "labels", emb, "emb")
    idx = sample_pixels(labels, num_classes, k, generator=generator, ignore_index=ignore_index, backend=backend)
    return _ref.gather_slots(emb, idx)
