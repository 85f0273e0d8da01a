"""Reference stochastic pooling (SPEC §3.3; seed 003 §2.2 eq. 2): K reference vectors per class.

    idx = sample_pixels(labels, C, k)                       (B, C, k): up to k distinct pixels of
                                                            class c in random order, -1 padding
    vectors[b, c·k + j] = emb[b, :, idx[b, c, j]]           0 where idx[b, c, j] = -1
    labels[b, c·k + j]  = c                                 -1 where idx[b, c, j] = -1

so a class with n_c < k pixels fills its first n_c slots, and an absent class is all padding.
The slots are class-major (class c owns slots c·k .. c·k + k - 1). The pixels are those
pixelkernels.sample_pixels draws from the same generator state: the same 42-bit keys are drawn
here the same way and handed to the sampler's reference (as reference/triplet_losses.py does),
so the oracle stays in the reference layer (no dispatch, no label check and its host sync).
The gather is differentiable in emb: the gradient of a slot goes back to its pixel (padding
slots send none, so an inf or NaN at a pixel no slot takes reaches nothing; with H·W = 0 the
vectors are zeros still attached to emb's graph). vectors keep emb's dtype (a gather computes
nothing); labels are int64.
Contiguous and channels_last maps both work (channels_last gathers rows of D contiguous values).
"""

from __future__ import annotations

import torch

from .sample_pixels import draw_keys, sample_pixels


def stochastic_pool(
    emb: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    num_classes: int,
    ignore_index: int = -1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """emb (B, D, H, W), labels (B, H, W) integer -> vectors (B, C·k, D), labels (B, C·k) int64."""
    # Exactly the draw of pixelkernels.ops.sample_pixels: one key per pixel, then the sampler.
    keys = draw_keys(labels, generator)
    return gather_slots(emb, sample_pixels(labels, keys, num_classes, k, ignore_index))


def gather_slots(emb: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """emb (B, D, H, W), the sampler's indices (B, C, k) -> vectors (B, C·k, D) (0 for padding),
    labels (B, C·k) (the slot's class, -1 for padding); differentiable in emb."""
    B, D, H, W = emb.shape
    C, k = indices.shape[1:]
    P = H * W
    idx = indices.reshape(B, C * k)
    filled = idx >= 0
    cls = torch.arange(C, device=idx.device).repeat_interleave(k).expand(B, C * k)
    out_labels = torch.where(filled, cls, torch.full_like(cls, -1))
    if P == 0:  # every slot padding: zeros, still attached to emb's graph (an empty sum is 0)
        return emb.new_zeros(B, C * k, D) + emb.sum((2, 3))[:, None, :], out_labels
    x = emb.reshape(B, D, P).transpose(1, 2)  # (B, P, D); a view for both layouts
    rows = x.gather(1, torch.where(filled, idx, 0)[..., None].expand(B, C * k, D))
    vectors = torch.where(filled[..., None], rows, torch.zeros((), dtype=emb.dtype, device=emb.device))
    return vectors, out_labels
