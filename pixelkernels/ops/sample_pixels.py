"""sample_pixels (SPEC §3.2): per image and class, up to k distinct pixels of that class drawn
uniformly at random without replacement, in random order, then -1 padding.

One random key per pixel is drawn with torch's generator on the labels' device
(``torch.randint`` of 42 bits, the only random step); the op then keeps each (image, class)'s k
smallest keys in increasing order (ties, about one per 2^42 / P^2 images, go to the lower
pixel). I.i.d. keys make the first min(k, n_c) entries a uniform sample without replacement in
uniformly random order. The keys decide everything, so every backend returns the same pixels
for the same generator state: the CPU kernel (per class, the keys below a bound that k uniform
keys meet with overwhelming probability, sorted; a class with fewer than k below it collected
again in full), CUDA and Triton (ATen's sort on the device) and the reference. No host sync:
capturable in a CUDA graph.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference.sample_pixels import MAX_CLASSES
from ..reference.sample_pixels import sample_pixels as _reference
from . import pixel_keys as _keys


def _fake(labels, keys, num_classes, k, ignore_index):
    return labels.new_empty((labels.shape[0], num_classes, k), dtype=torch.int64)


OP = _op.define("sample_pixels", reference=_reference, fake=_fake, outputs=("indices",))


def sample_pixels(
    labels: torch.Tensor,
    num_classes: int,
    k: int,
    *,
    generator: torch.Generator | torch.Tensor | None = None,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    """labels (B, H, W) integer -> (B, C, k) int64 flat pixel indices y * W + x: for each image
    and class, min(k, n_c) distinct pixels of the class in random order, then -1. Pixels
    labelled ignore_index (or outside [0, C)) are never drawn. `generator` must live on the
    labels' device; two calls draw independently. `generator` may instead be a (B,) int64
    tensor of per-image seeds: each image's draw is then a function of its seed alone, the same
    whatever else is in the batch (a DDP rank draws what one process draws for those images; the
    same seeds draw the same pixels). No RNG state is read, so this also traces under
    torch.compile, where a Generator argument is a graph break. Inside a CUDA graph capture a user's CUDA
    generator must be registered first (``graph.register_generator_state(generator)``, torch's
    rule); the default generator needs nothing."""
    _checks.tensor(labels, "labels", ndim=3, dtypes=_checks.LABEL_TYPES, shape_doc="(B, H, W)")
    C = _checks.positive_int(num_classes, "num_classes")
    if C >= MAX_CLASSES:
        raise ValueError(f"num_classes must be < {MAX_CLASSES}, got {C}")
    k = _checks.positive_int(k, "k")
    ignore_index = _checks.plain_int(ignore_index, "ignore_index")
    _checks.generator(generator, labels, "labels", "the labels'")
    backend = _op.backend_for(OP, backend, labels, "labels")
    keys = _keys.draw_keys(labels, generator, 0, backend)
    return _op.run(OP, backend, labels, keys, C, k, ignore_index)
