"""sample_clicks (SPEC §3.4; seed 004 §1.2, after Xu et al. 2016, "Deep Interactive Object
Selection"): random positive and negative training clicks simulated from a ground-truth mask, in
the click format of click_maps, for a batch of images on their device.

gt (B, H, W) bool or integer, the object O where nonzero. With D²_bg and D²_obj the squared
distances to the background and to O, and the band G^c the background pixels with
D²_obj < d_band² (the background within d_band of the object):

    positives   random pixels of O with D²_bg >= d_margin², pairwise >= d_step apart
    strategy 1  random band pixels with D²_obj >= d_margin², pairwise >= d_step apart
    strategy 2  random pixels of `other` (the other objects, a (B, H, W) mask) outside O,
                pairwise >= d_step apart
    strategy 3  the first a random band pixel, each next one the band pixel farthest from
                G ∪ the clicks so far (p_next = argmax f(p | S0 ∪ G), seed 004 §1.2)

-> points (B, 2N, 3) float32, N = max(num_positive, num_negative), rows (y, x, order): rows
0..N-1 positive, N..2N-1 negative, each half's clicks in sampling order then (-1, -1, -1)
padding; fewer clicks than asked only where no pixel qualifies. The decisions behind each rule
(strict band, distances to background pixels only, strategy 2 anywhere in the image, strategy 3
without d_margin or d_step, ties) are in pixelkernels/reference/sample_clicks.py.

"Random" is one key per pixel, drawn with `generator` on gt's device (``torch.randint`` of 42
bits, the only random step, as sample_pixels'); a click is the qualifying pixel of smallest
(key, pixel), then every pixel within d_step of it stops qualifying. The keys decide everything,
so every backend returns the same clicks for the same generator state. Backends: the reference
(a torch loop over the clicks, batched over images); CPU, a task per image: the distances by
distance_transform's CPU kernel, the candidates sorted once by (key, pixel) and taken greedily;
CUDA and Triton: distance_transform's kernels, then a block (program) per image, per click one
pass for the smallest (key, pixel) and one dropping the pixels within d_step. No host sync: a
user's CUDA generator inside a CUDA graph capture must be registered first
(``graph.register_generator_state(generator)``, torch's rule). `generator` may instead be a (B,)
int64 tensor of per-image seeds: each image's keys are a hash of its seed (sample_pixels'
``draw_keys``), so its clicks do not depend on the rest of the batch (what DDP needs).
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference.sample_clicks import STRATEGIES, sample_clicks_from_keys
from . import pixel_keys as _keys


def _fake(gt, keys, other, num_positive, num_negative, strategy, d_band, d_step, d_margin):
    return gt.new_empty((gt.shape[0], 2 * max(num_positive, num_negative), 3), dtype=torch.float32)


OP = _op.define("sample_clicks", reference=sample_clicks_from_keys, fake=_fake, outputs=("points",))


def sample_clicks(
    gt: torch.Tensor,
    *,
    num_positive: int,
    num_negative: int,
    strategy: int,
    d_band: float = 40,
    d_step: float = 10,
    d_margin: float = 5,
    other: torch.Tensor | None = None,
    generator: torch.Generator | torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """gt (B, H, W) bool/integer -> points (B, 2N, 3) float32, N = max(num_positive, num_negative)
    (module docstring)."""
    _checks.tensor(gt, "gt", ndim=3, dtypes=_checks.MASK_TYPES, shape_doc="(B, H, W) bool or integer")
    num_positive = _checks.plain_int(num_positive, "num_positive")
    num_negative = _checks.plain_int(num_negative, "num_negative")
    for name, v in (("num_positive", num_positive), ("num_negative", num_negative)):
        if not 0 <= v < 2**31:
            raise ValueError(f"{name} must be in [0, 2^31), got {v}")
    strategy = _checks.choice(strategy, "strategy", STRATEGIES)
    d_band = _checks.real(d_band, "d_band", minimum=0.0)
    d_step = _checks.real(d_step, "d_step", minimum=0.0)
    d_margin = _checks.real(d_margin, "d_margin", minimum=0.0)
    if strategy == 2:
        if other is None:
            raise ValueError("strategy 2 samples from `other`: pass the other objects' mask")
        _checks.mask_like(other, "other", gt, "gt")
    elif other is not None:
        _checks.mask_like(other, "other", gt, "gt")
        other = None  # only strategy 2 reads it
    H, W = gt.shape[1:]
    if H * W >= 2**31:
        raise ValueError(f"gt must have H * W < 2^31 pixels, got {H} x {W}")
    _checks.generator(generator, gt, "gt", "gt's")
    backend = _op.backend_for(OP, backend, gt, "gt")
    keys = _keys.draw_keys(gt, generator, 0, backend)
    return _op.run(OP, backend, gt, keys, other, num_positive, num_negative, strategy, d_band, d_step, d_margin)
