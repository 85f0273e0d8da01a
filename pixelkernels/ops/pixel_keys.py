"""pixel_keys (csrc/common/pixel_keys.h): the samplers' keys from per-image seeds in one launch.

    seeds (B,) int64 -> keys (B, P) int64 in [0, 2^42),  key[b, p] = mix32(p ^ h(seed_b, stream)) << 10

The reference (reference/sample_pixels.py pixel_keys) is the same hash in about 80 torch ops;
this is one pass on every backend, bit for bit the same keys. Internal: the samplers
(sample_pixels, is_triplet_loss, stochastic_pool, sample_clicks) draw through ``draw_keys``.
"""

from __future__ import annotations

import importlib

import torch

from .. import _op

_ref = importlib.import_module("pixelkernels.reference.sample_pixels")


def _fake(seeds, num_pixels, stream):
    return seeds.new_empty((seeds.shape[0], num_pixels), dtype=torch.int64)


OP = _op.define("pixel_keys", reference=_ref.pixel_keys, fake=_fake, outputs=("keys",))


def draw_keys(t: torch.Tensor, generator, stream: int = 0, backend: str = "reference") -> torch.Tensor:
    """reference/sample_pixels.py draw_keys on `backend`: per-image seeds through the pixel_keys
    op (one launch), a Generator (or None) through torch.randint as there."""
    if not isinstance(generator, torch.Tensor) or backend == "reference":
        return _ref.draw_keys(t, generator, stream)
    P = t.shape[1:].numel()
    return _op.run(OP, backend, generator, P, stream).reshape(t.shape)
