"""Triton backend of sample_pixels (csrc/common/sample_pixels.h): the CUDA path's three launches
for the batch. A kernel forms each pixel's sort key (class << KEY_BITS | key, class C for a pixel
of none), torch.sort (a segmented radix sort on CUDA, stable: equal keys in pixel order) orders
them, and a kernel picks each class's first k: a program per tile of (image, class) rows and
output columns (many rows a program when k is small) finds each row's run in the sorted keys by
two binary searches and copies from it. Choosing the k
smallest keys per (image, class) is a sort's job, and every backend must give the same pixels:
a Triton top-k would have to match the sort bit for bit for no gain."""

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from ..reference.sample_pixels import KEY_BITS, KEY_MASK, MAX_CLASSES
from ._common import LABEL_TYPES, checked_labels, device_ctx, expect, grid_items, load_regions, split_pid
from .pixel_keys import _image_hash, _mix32

_BLOCK = 1024


@triton.jit
def _sort_keys_kernel(lab_ptr, keys_ptr, out_ptr, n, C, ignore_index, KEY_BITS: tl.constexpr,
                      KEY_MASK: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    valid, cls = load_regions(lab_ptr, offs, m, C, ignore_index)
    cls = tl.where(valid, cls, C).to(tl.int64)
    key = tl.load(keys_ptr + offs, mask=m, other=0)
    tl.store(out_ptr + offs, (cls << KEY_BITS) | (key & KEY_MASK), mask=m)


@triton.jit
def _seeded_sort_keys_kernel(lab_ptr, seeds_ptr, out_ptr, B, P, C, ignore_index, KEY_BITS: tl.constexpr,
                             KEY_MASK: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    # a block of pixels of row r = s * B + b: draw s of image b, its keys pixel_keys' hash of
    # (seed_b, stream s) (pixel_keys._keys_kernel's arithmetic)
    r, blk = split_pid(tl.cdiv(P, BLOCK))
    s = r // B
    b = r - s * B
    h = _image_hash(tl.load(seeds_ptr + b), s.to(tl.int64))
    offs = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < P
    valid, cls = load_regions(lab_ptr + b.to(tl.int64) * P, offs, m, C, ignore_index)
    cls = tl.where(valid, cls, C).to(tl.int64)
    key = _mix32(offs ^ h) << 10
    tl.store(out_ptr + r.to(tl.int64) * P + offs, (cls << KEY_BITS) | (key & KEY_MASK), mask=m)


@triton.jit
def _lower_bound(ptr, n, v, steps):
    """Per lane, the first index of ptr[0, n) (ascending) whose value is >= v (n = 0: 0, no
    load); steps >= bit_length(n)."""
    lo = v * 0
    hi = lo + n
    for _ in range(steps):
        go = lo < hi
        mid = (lo + hi) // 2
        a = tl.load(ptr + mid, mask=go, other=0)
        lo = tl.where(go & (a < v), mid + 1, lo)
        hi = tl.where(go & (a >= v), mid, hi)
    return lo


@triton.jit
def _pick_kernel(sorted_ptr, order_ptr, out_ptr, P, C, k, rows, n_kblk, steps, KEY_BITS: tl.constexpr,
                 ROWS: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    # a [ROWS, BLOCK_K] tile of the (B * C, k) output: small k packs many (image, class) rows
    pid = tl.program_id(0)
    rb = pid // n_kblk
    kb = pid - rb * n_kblk
    row = rb.to(tl.int64) * ROWS + tl.arange(0, ROWS)  # b * C + c
    rmask = row < rows
    b = row // C
    c = row - b * C
    base = b * P
    n = tl.where(rmask, P, 0).to(tl.int64)
    start = _lower_bound(sorted_ptr + base, n, c << KEY_BITS, steps)
    end = _lower_bound(sorted_ptr + base, n, (c + 1) << KEY_BITS, steps)
    j = kb.to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    m = rmask[:, None] & (j < k)[None, :]
    take = m & (j[None, :] < (end - start)[:, None])
    v = tl.load(order_ptr + (base + start)[:, None] + j[None, :], mask=take, other=-1)
    tl.store(out_ptr + row[:, None] * k + j[None, :], v, mask=m)


@triton_variant("sample_pixels")
def sample_pixels_op(labels, keys, num_classes, k, ignore_index, check, draws):
    op = "sample_pixels"
    expect(labels.dim() == 3 and labels.dtype in LABEL_TYPES, op, "labels must be (B, H, W) integer, got ",
           labels.dtype, " of shape ", tuple(labels.shape))  # fmt: skip
    expect(draws >= 0, op, "draws must be >= 0, got ", draws)
    want = labels.shape[:1] if draws > 0 else labels.shape
    expect(keys.shape == want and keys.dtype == torch.int64, op, "keys must be int64 of shape ", tuple(want),
           ", got ", keys.dtype, " of shape ", tuple(keys.shape))  # fmt: skip
    expect(keys.device == labels.device, op, "keys must be on the labels' device")
    expect(0 < num_classes < MAX_CLASSES, op, "num_classes out of range: ", num_classes)
    expect(k > 0, op, "k must be positive, got ", k)
    checked_labels(labels, num_classes, ignore_index, check)
    B, H, W = labels.shape
    P, C, S = H * W, num_classes, max(draws, 1)
    out = torch.empty((draws, B, C, k) if draws > 0 else (B, C, k), dtype=torch.int64, device=labels.device)
    if out.numel() == 0:
        return out
    if P == 0:
        return out.fill_(-1)
    expect(draws == 0 or P < 2**31, op, "H*W must be below 2^31 with seeds")
    lab, key = labels.reshape(B, P).contiguous(), keys.contiguous()
    sort_keys = torch.empty(S * B, P, dtype=torch.int64, device=labels.device)
    rows = S * B * C  # draw s of image b is image s * B + b from here on
    block_k = min(_BLOCK, triton.next_power_of_2(k))
    rows_blk = min(_BLOCK // block_k, triton.next_power_of_2(rows))
    n_kblk = triton.cdiv(k, block_k)
    with device_ctx(out):
        if draws > 0:
            _seeded_sort_keys_kernel[grid_items(triton.cdiv(P, _BLOCK), S * B)](
                lab, key, sort_keys, B, P, C, ignore_index, KEY_BITS=KEY_BITS, KEY_MASK=KEY_MASK, BLOCK=_BLOCK,
                num_warps=4)  # fmt: skip
        else:
            _sort_keys_kernel[(triton.cdiv(B * P, _BLOCK),)](lab, key, sort_keys, B * P, C, ignore_index,
                                                             KEY_BITS=KEY_BITS, KEY_MASK=KEY_MASK, BLOCK=_BLOCK,
                                                             num_warps=4)  # fmt: skip
        s, order = torch.sort(sort_keys, dim=1, stable=True)
        _pick_kernel[grid_items(n_kblk, triton.cdiv(rows, rows_blk))](
            s, order, out, P, C, k, rows, n_kblk, P.bit_length(), KEY_BITS=KEY_BITS, ROWS=rows_blk, BLOCK_K=block_k,
            num_warps=4)  # fmt: skip
    return out


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check
    (.ci/triton_compile_check.py); other arguments compile as i32."""
    return [
        (_sort_keys_kernel, {"lab_ptr": "*i64", "keys_ptr": "*i64", "out_ptr": "*i64"},
         {"KEY_BITS": KEY_BITS, "KEY_MASK": KEY_MASK, "BLOCK": _BLOCK}, 4),
        (_seeded_sort_keys_kernel, {"lab_ptr": "*i64", "seeds_ptr": "*i64", "out_ptr": "*i64"},
         {"KEY_BITS": KEY_BITS, "KEY_MASK": KEY_MASK, "BLOCK": _BLOCK}, 4),
        (_pick_kernel, {"sorted_ptr": "*i64", "order_ptr": "*i64", "out_ptr": "*i64"},
         {"KEY_BITS": KEY_BITS, "ROWS": 128, "BLOCK_K": 8}, 4),
    ]  # fmt: skip
