"""Triton backend of sample_clicks (csrc/common/sample_clicks.h): the squared distances by
distance_transform's Triton kernels (to the background, to the object, and for strategy 3 from the
band to G, the masks as bytes made by torch ops on the device), then ``_select_kernel``, a program
per image (each click depends on those before): per click one pass over the image in chunks for
the candidate of smallest (key, pixel) (chunk minima carried as scalars) and one pass dropping the
candidates within d_step of it; strategy 3 keeps every band pixel's squared distance to G and the
clicks in float64 and takes the farthest (ties: smallest (key, pixel)). The loops run their full
count; a program with no candidate left stores nothing (Triton has no break). The thresholds reach
the kernel as the bits of their float64 (``_common.f64_bits``: a Python float argument would be
float32, a device tensor made from them a host sync)."""

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from ._common import device_ctx, expect, f64_bits, f64_from_bits, mask_bytes
from .distance_transform import transform

_BLOCK = 1024
_NONE = tl.constexpr(2**62)  # larger than any key (< 2^42) or pixel


@triton.jit
def _first(alive_ptr, keys_ptr, P, sel, far, d2_ptr, FAR: tl.constexpr, BLOCK: tl.constexpr):
    """The smallest (key, pixel) among the alive pixels (FAR: those with d2 >= far), as scalars;
    pixel _NONE when there is none. sel: the image's offset."""
    bk = tl.full([], _NONE, tl.int64)
    bp = tl.full([], _NONE, tl.int64)
    for i0 in range(0, P, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        on = i < P
        ok = on & (tl.load(alive_ptr + sel + i, mask=on, other=0) != 0)
        if FAR:
            ok = ok & (tl.load(d2_ptr + sel + i, mask=on, other=-1.0) >= far)
        k = tl.where(ok, tl.load(keys_ptr + sel + i, mask=on, other=0), _NONE)
        kmin = tl.min(k, 0)
        pmin = tl.min(tl.where(ok & (k == kmin), i.to(tl.int64), _NONE), 0)
        better = (kmin < bk) | ((kmin == bk) & (pmin < bp))
        bk = tl.where(better, kmin, bk)
        bp = tl.where(better, pmin, bp)
    return bk, bp


@triton.jit
def _store_click(out_ptr, row, pixel, n, W):
    found = pixel != _NONE
    y = (pixel // W).to(tl.float32)
    x = (pixel % W).to(tl.float32)
    tl.store(out_ptr + row, y, mask=found)
    tl.store(out_ptr + row + 1, x, mask=found)
    tl.store(out_ptr + row + 2, tl.zeros([], tl.float32) + n, mask=found)


@triton.jit
def _greedy(alive_ptr, keys_ptr, out_ptr, sel, rows, P, W, num, step2, BLOCK: tl.constexpr):
    for n in range(0, num):
        _, c = _first(alive_ptr, keys_ptr, P, sel, 0.0, alive_ptr, False, BLOCK)
        _store_click(out_ptr, rows + 3 * n, c, n, W)
        # without a click nothing is alive: the pass below (around pixel 0 then) changes nothing
        c = tl.where(c == _NONE, 0, c)
        cy = c // W
        cx = c % W
        tl.debug_barrier()
        for i0 in range(0, P, BLOCK):  # drop the candidates within d_step of the click
            i = i0 + tl.arange(0, BLOCK)
            on = i < P
            dy = (i // W - cy).to(tl.int64)
            dx = (i % W - cx).to(tl.int64)
            near = (i == c) | ((dy * dy + dx * dx).to(tl.float64) < step2)
            tl.store(alive_ptr + sel + i, tl.zeros([BLOCK], tl.uint8), mask=on & near)
        tl.debug_barrier()


@triton.jit
def _select_kernel(gt_ptr, oth_ptr, keys_ptr, dist_ptr, alive_ptr, d2_ptr, out_ptr, B, P, W, N, num_pos, num_neg,
                   pos_len, neg_len, band_hi, band_lo, step_hi, step_lo, margin_hi, margin_lo, STRATEGY: tl.constexpr,
                   BLOCK: tl.constexpr):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    band2 = f64_from_bits(band_hi, band_lo)
    step2 = f64_from_bits(step_hi, step_lo)
    margin2 = f64_from_bits(margin_hi, margin_lo)
    sel = b * P
    rows = b * 2 * N * 3
    to_bg = dist_ptr  # (B, P) each: to the background, to the object, from the band to G
    to_obj = dist_ptr + B * P
    g2 = dist_ptr + 2 * B * P
    # pos_len/neg_len: P, or 0 when there are no such clicks (their distances were not computed)
    for i0 in range(0, pos_len, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        on = i < pos_len
        obj = tl.load(gt_ptr + sel + i, mask=on, other=0) != 0
        cand = obj & (tl.load(to_bg + sel + i, mask=on, other=0.0).to(tl.float64) >= margin2)
        tl.store(alive_ptr + sel + i, cand.to(tl.uint8), mask=on)
    tl.debug_barrier()
    _greedy(alive_ptr, keys_ptr, out_ptr, sel, rows, P, W, num_pos, step2, BLOCK)
    for i0 in range(0, neg_len, BLOCK):  # (strategy 2 reads no distance)
        i = i0 + tl.arange(0, BLOCK)
        on = i < neg_len
        bg = tl.load(gt_ptr + sel + i, mask=on, other=1) == 0
        if STRATEGY == 2:
            cand = bg & (tl.load(oth_ptr + sel + i, mask=on, other=0) != 0)
        else:
            d_obj = tl.load(to_obj + sel + i, mask=on, other=0.0).to(tl.float64)
            band = bg & (d_obj < band2)
            if STRATEGY == 1:
                cand = band & (d_obj >= margin2)
            else:
                cand = band
                tl.store(d2_ptr + sel + i, tl.load(g2 + sel + i, mask=on, other=0.0).to(tl.float64), mask=on)
        tl.store(alive_ptr + sel + i, cand.to(tl.uint8), mask=on)
    tl.debug_barrier()
    neg = rows + 3 * N
    if STRATEGY == 3:
        live = tl.full([], 1, tl.int1)  # false once no band pixel is at a positive distance
        for n in range(0, num_neg):
            far = tl.full([], -1.0, tl.float64)
            for i0 in range(0, P, BLOCK):
                i = i0 + tl.arange(0, BLOCK)
                on = i < P
                ok = on & (tl.load(alive_ptr + sel + i, mask=on, other=0) != 0)
                far = tl.maximum(far, tl.max(tl.where(ok, tl.load(d2_ptr + sel + i, mask=on, other=-1.0), -1.0), 0))
            live = live & ((n == 0) | (far > 0.0))
            # the first click: any band pixel (d2 >= -1); then the farthest (d2 >= its maximum)
            _, c = _first(alive_ptr, keys_ptr, P, sel, tl.where(n == 0, -1.0, far), d2_ptr, True, BLOCK)
            c = tl.where(live, c, _NONE)
            _store_click(out_ptr, neg + 3 * n, c, n, W)
            # without a click no later one is taken: the distances below (to pixel 0 then) are not read
            c = tl.where(c == _NONE, 0, c)
            cy = c // W
            cx = c % W
            tl.debug_barrier()
            for i0 in range(0, P, BLOCK):
                i = i0 + tl.arange(0, BLOCK)
                on = i < P
                dy = (i // W - cy).to(tl.int64)
                dx = (i % W - cx).to(tl.int64)
                d = tl.load(d2_ptr + sel + i, mask=on, other=0.0)
                tl.store(d2_ptr + sel + i, tl.minimum(d, (dy * dy + dx * dx).to(tl.float64)), mask=on)
            tl.debug_barrier()
    else:
        _greedy(alive_ptr, keys_ptr, out_ptr, sel, neg, P, W, num_neg, step2, BLOCK)


@triton_variant("sample_clicks")
def sample_clicks_op(gt, keys, other, num_positive, num_negative, strategy, d_band, d_step, d_margin):
    op = "sample_clicks"
    expect(gt.dim() == 3, op, "gt must be (B, H, W), got ", tuple(gt.shape))
    expect(keys.shape == gt.shape and keys.dtype == torch.int64, op, "keys must be int64 of gt's shape")
    expect(strategy in (1, 2, 3), op, "strategy must be 1, 2 or 3, got ", strategy)
    expect(strategy != 2 or other is not None, op, "strategy 2 samples from `other`: pass the other objects' mask")
    expect(num_positive >= 0 and num_negative >= 0, op, "num_positive and num_negative must be >= 0")
    B, H, W = gt.shape
    P, N = H * W, max(num_positive, num_negative)
    expect(P < 2**31, op, "H * W must be < 2^31, got ", P)
    dev = gt.device
    out = torch.full((B, 2 * N, 3), -1.0, dtype=torch.float32, device=dev)
    if out.numel() == 0 or P == 0:
        return out
    g = mask_bytes(gt)
    obj = g != 0
    dist = torch.empty(3, B, H, W, dtype=torch.float32, device=dev)
    band2, step2, margin2 = float(d_band) ** 2, float(d_step) ** 2, float(d_margin) ** 2
    with device_ctx(out):
        # only the distances the clicks read
        if num_positive > 0:
            transform(B, H, W, dev, mask=g, dist=dist[0], squared=True)  # to the background
        if num_negative > 0 and strategy != 2:
            transform(B, H, W, dev, mask=(~obj).view(torch.uint8), dist=dist[1], squared=True)  # to the object
        if num_negative > 0 and strategy == 3:  # from the band (background within d_band of the object) to G
            band = ~obj & (dist[1].to(torch.float64) < band2)
            transform(B, H, W, dev, mask=band.view(torch.uint8), dist=dist[2], squared=True)
        alive = torch.empty(B, H, W, dtype=torch.uint8, device=dev)
        d2 = torch.empty((B, H, W) if strategy == 3 else (1,), dtype=torch.float64, device=dev)
        oth = mask_bytes(other) if strategy == 2 else g
        _select_kernel[(B,)](g, oth, keys.contiguous(), dist, alive, d2, out, B, P, W, N, num_positive, num_negative,
                             P if num_positive > 0 else 0, P if num_negative > 0 else 0, *f64_bits(band2), *f64_bits(step2), *f64_bits(margin2), STRATEGY=strategy, BLOCK=_BLOCK,
                             num_warps=4)  # fmt: skip
    return out


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check."""
    ptrs = {"gt_ptr": "*u8", "oth_ptr": "*u8", "keys_ptr": "*i64", "dist_ptr": "*fp32", "alive_ptr": "*u8",
            "d2_ptr": "*fp64", "out_ptr": "*fp32"}  # fmt: skip
    return [(_select_kernel, ptrs, {"STRATEGY": s, "BLOCK": _BLOCK}, 4) for s in (1, 2, 3)]
