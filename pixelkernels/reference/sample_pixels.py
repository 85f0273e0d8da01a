"""Reference of sample_pixels' deterministic part (SPEC §3.2): given one random key per pixel,
each image's pixels of class c with the k smallest keys, in increasing key order.

    out[b, c, j] = the pixel of class c in image b of rank j by (key, pixel index), j < n_c
                 = -1                                                              j >= n_c

With keys drawn i.i.d. uniformly (pixelkernels.sample_pixels draws them), the first min(k, n_c)
entries are a uniform sample without replacement of the class's pixels, in uniformly random
order. Pixels labelled ignore_index, or outside [0, C), belong to no class.
"""

from __future__ import annotations

import torch

# Keys are KEY_BITS-bit integers; the class goes in the bits above (C < 2^(63 - KEY_BITS)).
KEY_BITS = 42
KEY_MASK = (1 << KEY_BITS) - 1
MAX_CLASSES = 1 << (63 - KEY_BITS - 1)
_M32 = 0xFFFFFFFF


def _mulmod32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 x in [0, 2^32), by 16-bit halves of c: no product reaches 2^63
    (signed overflow would be undefined in the kernels torch.compile generates)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijection of [0, 2^32) with full avalanche (C. Wellons' "lowbias32" constants)."""
    x = x ^ (x >> 16)
    x = _mulmod32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mulmod32(x, 0x846CA68B)
    return x ^ (x >> 16)


def draw_keys(t: torch.Tensor, generator=None, stream: int = 0) -> torch.Tensor:
    """The samplers' one random step: (B, H, W) int64 keys in [0, 2^KEY_BITS) for t (B, H, W).

    generator None or a torch.Generator: ``torch.randint`` with it (successive calls draw
    independently; `stream` is not used). generator a (B,) int64 tensor of per-image seeds:
    image b's keys are a hash of (seed_b, stream, pixel index), so they do not depend on which
    other images share the batch or on torch's RNG state: a DDP rank draws for its images what
    one process draws for them in the global batch (the same seed and stream give the same
    keys; vary one for independent draws)."""
    if not isinstance(generator, torch.Tensor):
        return torch.randint(0, 1 << KEY_BITS, t.shape, generator=generator, device=t.device)
    P = t.shape[1:].numel()  # not t[0]: an empty batch has no image 0
    return pixel_keys(generator, P, stream).reshape(t.shape)


def pixel_keys(seeds: torch.Tensor, num_pixels: int, stream: int) -> torch.Tensor:
    """draw_keys with per-image seeds: (B,) int64 seeds -> (B, num_pixels) int64 keys (the
    pixel_keys op's oracle; the op takes num_pixels < 2^31)."""
    s = seeds.to(torch.int64)
    lo, hi = s & _M32, (s >> 32) & _M32
    h = _mix32(lo ^ _mix32(hi ^ _mix32(torch.full_like(s, stream & _M32))))  # (B,) per image and stream
    p = torch.arange(num_pixels, device=s.device, dtype=torch.int64)
    # One round: _mix32 is a bijection, so an image's keys are distinct (no ties to break) and
    # their order over the pixels a pseudo-random permutation; 32 bits, placed at the top of
    # the KEY_BITS range the sampler sorts.
    return _mix32(p ^ h[:, None]) << (KEY_BITS - 32)


def sample_pixels(labels: torch.Tensor, keys: torch.Tensor, num_classes: int, k: int, ignore_index: int = -1,
                  check: str | None = None, draws: int = 0):  # fmt: skip
    """labels (B, H, W) integer, keys (B, H, W) int64 -> (B, C, k) int64 flat pixel indices;
    draws > 0: keys (B,) int64 per-image seeds -> (draws, B, C, k), draw s from the keys of
    stream s (pixel_keys). `check` (the compiled variants' folded label check) is made by the
    caller here."""
    B, H, W = labels.shape
    if draws > 0:
        return torch.stack([
            sample_pixels(labels, pixel_keys(keys, H * W, s).reshape(B, H, W), num_classes, k, ignore_index)
            for s in range(draws)
        ])  # fmt: skip
    P, C = H * W, num_classes
    out = torch.full((B, C, k), -1, dtype=torch.int64, device=labels.device)
    if P == 0 or B == 0:
        return out
    lab = labels.reshape(B, P).long()
    cls = torch.where((lab >= 0) & (lab < C) & (lab != ignore_index), lab, C)
    # Grouped by class, then by key; the stable sort puts equal keys in pixel order.
    order = torch.sort((cls << KEY_BITS) | (keys.reshape(B, P) & KEY_MASK), dim=1, stable=True).indices
    counts = torch.zeros(B, C + 1, dtype=torch.int64, device=labels.device)
    counts.scatter_add_(1, cls, torch.ones_like(cls))
    start = counts.cumsum(1) - counts
    j = torch.arange(k, device=labels.device)
    pos = (start[:, :C, None] + j).clamp(max=P - 1).reshape(B, C * k)
    picked = order.gather(1, pos).reshape(B, C, k)
    return torch.where(j < counts[:, :C, None], picked, out)
