"""Triton backend of masked_sum (csrc/common/masked_sum.h): per image,

    sum[b, c] = sum_p feat[b, c, p] * mask[b, p]        mass[b] = sum_p mask[b, p]
    grad_feat[b, c, p] = gs[c] * mask[b, p]             grad_mask[b, p] = sum_c gs[c] * feat[b, c, p] + gm

The mask is read as a contiguous (B, P) map rounded to feat's dtype (as every backend reads
it); sums accumulate in float32 (float64 for float64 feat). A NaN anywhere in feat or mask
propagates as in the formula (a product with mask is the op itself, not a membership mask).

* `_partials_kernel`, grid ((pixel block, image)): loads the block's mask once, then per
  D block its [BLOCK_P, BLOCK_D] feat tile, and writes the block's C channel sums and its
  mass to a (B, blocks, C + 1) workspace (~1/BLOCK_P of the input). `_merge_kernel` adds the
  blocks in a fixed order, BLOCK_K at a time (one launch, where two torch sums were): no
  atomics, the result is bitwise reproducible. One read of feat and mask.
* `_backward_kernel`, grid ((pixel block, image)), elementwise: per D block writes
  gs * mask and accumulates gs . feat in registers, then writes grad_mask (computed in the
  accumulation type, stored in feat's dtype, then cast to mask's dtype like the C++ op).
  One read of feat and mask, one write of each gradient; grad_feat has feat's strides.

Contiguous and channels_last maps are read in place (other strides copied once); the batch
is on the flat axis 0 (`grid_items`), so any B runs; no host syncs.
"""

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from ._common import (
    acc_of,
    device_ctx,
    expect,
    expect_map,
    expect_same_device,
    expect_sizes,
    grid_items,
    load_tile,
    pixel_blocks,
    pixel_offsets,
    pixel_view,
    split_pid,
    stats_dtype,
    warps,
    with_strides_of,
)


@triton.jit
def _partials_kernel(x_ptr, w_ptr, part_ptr, P, D, sb, sd, sp, ACC: tl.constexpr, BLOCK_P: tl.constexpr,
                     BLOCK_D: tl.constexpr):  # fmt: skip
    nblk = tl.cdiv(P, BLOCK_P)
    b, blk = split_pid(nblk)
    offs_p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    w = tl.load(w_ptr + b * P + offs_p, mask=pmask, other=0.0).to(ACC)
    row = part_ptr + (b * nblk + blk) * (D + 1)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        x = load_tile(x_ptr, b, offs_p, offs_d, pmask, offs_d < D, sb, sd, sp, ACC)
        tl.store(row + offs_d, tl.sum(x * w[:, None], axis=0), mask=offs_d < D)
    tl.store(row + D, tl.sum(w, axis=0))


@triton.jit
def _merge_kernel(part_ptr, out_ptr, mass_ptr, nblk, D, eps: tl.float64, ACC: tl.constexpr, NORM: tl.constexpr,
                  BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """Per (D block, image): the blocks' partials (B, nblk, D + 1) added in a fixed order,
    BLOCK_K blocks a step; NORM 0 writes the sums, 1 and 2 (masked_mean) sum / (mass + eps),
    2 with 0 where mass + eps is not > 0. The D block 0 program writes the mass."""
    b, dblk = split_pid(tl.cdiv(tl.maximum(D, 1), BLOCK_D))  # one program per image at D == 0 (the mass)
    offs_d = dblk * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    s = tl.zeros([BLOCK_D], ACC)
    m = tl.zeros([BLOCK_K], ACC)
    row = part_ptr + b * nblk * (D + 1)
    for k0 in range(0, nblk, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        kmask = offs_k < nblk
        t = tl.load(row + offs_k[:, None] * (D + 1) + offs_d[None, :], mask=kmask[:, None] & dmask[None, :], other=0.0)
        s += tl.sum(t.to(ACC), axis=0)
        m += tl.load(row + offs_k * (D + 1) + D, mask=kmask, other=0.0).to(ACC)
    mass = tl.sum(m, axis=0)
    if NORM == 0:
        out = s
    else:
        den = mass + tl.full([], eps, ACC)
        out = tl.where((NORM == 1) | (den > 0), s / den, 0.0)
    tl.store(out_ptr + b * D + offs_d, out, mask=dmask)
    tl.store(mass_ptr + b, mass, mask=dblk == 0)


MERGE_BLOCK_K = 32


def launch_merge(part, out, mass, nblk, eps, norm):
    """`_merge_kernel` over part (B, nblk, C + 1) into out (B, C) and mass (B,)."""
    B, C = out.shape
    bd = min(64, triton.next_power_of_2(max(C, 1)))
    _merge_kernel[grid_items(triton.cdiv(max(C, 1), bd), B)](part, out, mass, nblk, C, float(eps), ACC=acc_of(part),
                                                              NORM=norm, BLOCK_K=MERGE_BLOCK_K, BLOCK_D=bd)  # fmt: skip


@triton.jit
def _backward_kernel(x_ptr, w_ptr, gs_ptr, gm_ptr, mean_ptr, eps: tl.float64, gx_ptr, gin_ptr, gw_ptr, P, D, sb, sd,
                     sp, ACC: tl.constexpr, NORM: tl.constexpr, ADD: tl.constexpr, BLOCK_P: tl.constexpr,
                     BLOCK_D: tl.constexpr):  # fmt: skip
    b, blk = split_pid(tl.cdiv(P, BLOCK_P))
    offs_p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    w = tl.load(w_ptr + b * P + offs_p, mask=pmask, other=0.0).to(ACC)
    if NORM == 0:
        gm = tl.load(gm_ptr + b).to(ACC)
        den = tl.full([], 1.0, ACC)
        on = True
    else:  # masked_mean: gs_ptr holds the mean's gradient, gm_ptr the mass (triton/masked_mean.py)
        den = tl.load(gm_ptr + b).to(ACC) + tl.full([], eps, ACC)
        on = (NORM == 1) | (den > 0)
        t = tl.zeros([BLOCK_D], ACC)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            dmask = offs_d < D
            g = tl.load(gs_ptr + b * D + offs_d, mask=dmask, other=0.0).to(ACC)
            t += g * tl.load(mean_ptr + b * D + offs_d, mask=dmask, other=0.0).to(ACC)
        gm = tl.where(on, -tl.sum(t, axis=0) / den, 0.0)
    acc = tl.zeros([BLOCK_P], ACC) + gm
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        gs = tl.load(gs_ptr + b * D + offs_d, mask=dmask, other=0.0).to(ACC)
        if NORM != 0:
            gs = tl.where(on, gs / den, 0.0)
        x = load_tile(x_ptr, b, offs_p, offs_d, pmask, dmask, sb, sd, sp, ACC)
        acc += tl.sum(x * gs[None, :], axis=1)
        offs = pixel_offsets(b, offs_p, offs_d, sb, sd, sp)
        m2 = pmask[:, None] & dmask[None, :]
        v = gs[None, :] * w[:, None]
        if ADD:  # gin_ptr at gx's strides, added before the one rounding (menet_saliency)
            v += tl.load(gin_ptr + offs, mask=m2, other=0.0).to(ACC)
        tl.store(gx_ptr + offs, v.to(gx_ptr.dtype.element_ty), mask=m2)
    tl.store(gw_ptr + b * P + offs_p, acc.to(gw_ptr.dtype.element_ty), mask=pmask)


def _expect_mask_match(feat, mask, op):
    expect_map(feat, op, "feat")
    B, _, H, W = feat.shape
    expect(tuple(mask.shape) == (B, H, W), op, "mask ", list(mask.shape), " does not match feat ",
           list(feat.shape))  # fmt: skip


@triton_variant("masked_sum")
def masked_sum_op(feat, mask):
    _expect_mask_match(feat, mask, "masked_sum")
    expect_same_device("masked_sum", feat, mask)
    return launch_forward(feat, mask, 0.0, 0)


def launch_forward(feat, mask, eps, norm):
    """(sums or means, mass): `_partials_kernel` then `launch_merge` with `norm` (0: masked_sum;
    1 or 2: masked_mean's division). Arguments already checked by the caller."""
    B, C, H, W = feat.shape
    P = H * W
    st = stats_dtype(feat.dtype)
    out = torch.empty(B, C, dtype=st, device=feat.device)
    mass = torch.empty(B, dtype=st, device=feat.device)
    if B == 0:
        return out, mass
    x, (sb, sd, sp) = pixel_view(feat)
    bp, bd = pixel_blocks(P, C)
    nblk = triton.cdiv(P, bp)
    part = torch.empty(B, nblk, C + 1, dtype=st, device=feat.device)
    with device_ctx(x):
        if nblk > 0:
            w = mask.to(feat.dtype).contiguous()
            _partials_kernel[grid_items(nblk, B)](x, w, part, P, C, sb, sd, sp, ACC=acc_of(part), BLOCK_P=bp,
                                                  BLOCK_D=bd, num_warps=warps(bp * bd))  # fmt: skip
        # the blocks added in a fixed order; also when P == 0 (no partials): sums and mass 0
        launch_merge(part, out, mass, nblk, eps, norm)
    return out, mass


@triton_variant("masked_sum_backward")
def masked_sum_backward_op(grad_sum, grad_mass, feat, mask):
    op = "masked_sum_backward"
    _expect_mask_match(feat, mask, op)
    B, C = feat.shape[:2]
    expect_sizes(grad_sum, (B, C), op, "grad_sum")
    expect_sizes(grad_mass, (B,), op, "grad_mass")
    expect_same_device(op, feat, mask, grad_sum, grad_mass)
    return launch_backward(feat, mask, grad_sum, grad_mass, None, 0.0, 0)


def launch_backward(feat, mask, gs, gm, mean, eps, norm, grad_feat_in=None):
    """(grad_feat, grad_mask) from `_backward_kernel`: norm 0, gs and gm the sums' and the mass's
    gradients (mean not read); norm 1 or 2 (masked_mean), gs the mean's gradient, gm the mass and
    mean the forward's mean; grad_feat_in, when given, added to grad_feat. Arguments already
    checked by the caller."""
    B, C, H, W = feat.shape
    P = H * W
    grad_feat = torch.empty_like(feat)
    grad_mask = torch.empty(mask.shape, dtype=feat.dtype, device=feat.device)
    if B == 0 or P == 0:
        return grad_feat, grad_mask.to(mask.dtype)
    x, (sb, sd, sp) = pixel_view(feat)
    out = grad_feat if grad_feat.stride() == x.stride() else with_strides_of(None, x)
    st = stats_dtype(feat.dtype)
    g, m = gs.to(st).contiguous(), gm.to(st).contiguous()
    gin = None if grad_feat_in is None else with_strides_of(grad_feat_in.to(st), x)  # accumulation type
    bp, bd = pixel_blocks(P, C)
    with device_ctx(x):
        _backward_kernel[grid_items(triton.cdiv(P, bp), B)](
            x, mask.to(feat.dtype).contiguous(), g, m, m if mean is None else mean.to(st).contiguous(), float(eps),
            out, out if gin is None else gin, grad_mask, P, C, sb, sd, sp, ACC=acc_of(g), NORM=norm,
            ADD=gin is not None, BLOCK_P=bp, BLOCK_D=bd, num_warps=warps(bp * bd),
        )  # fmt: skip
    if out is not grad_feat:
        grad_feat.copy_(out)
    return grad_feat, grad_mask.to(mask.dtype)


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check
    (.ci/triton_compile_check.py); other arguments compile as i32."""
    specs = []
    for e, a, acc in (("fp32", "fp32", tl.float32), ("fp64", "fp64", tl.float64), ("bf16", "fp32", tl.float32),
                      ("fp16", "fp32", tl.float32)):  # fmt: skip
        for bp, bd in ((256, 16), (64, 64)):
            nw = warps(bp * bd)  # the launcher's (it was 4 for 256 x 16, which runs 8 warps)
            c = {"ACC": acc, "BLOCK_P": bp, "BLOCK_D": bd}
            specs.append((_partials_kernel, {"x_ptr": "*" + e, "w_ptr": "*" + e, "part_ptr": "*" + a}, c, nw))
            if e == a and bp == 256:  # the merge reads and writes the accumulation type
                for norm in (0, 1, 2):
                    specs.append((_merge_kernel, {"part_ptr": "*" + a, "out_ptr": "*" + a, "mass_ptr": "*" + a,
                                                  "eps": "fp64"},
                                  {"ACC": acc, "NORM": norm, "BLOCK_K": MERGE_BLOCK_K, "BLOCK_D": 64}, 4))  # fmt: skip
            for norm, add in ((0, False), (1, False), (2, False), (2, True)):  # ADD: menet_saliency's
                specs.append((_backward_kernel, {"x_ptr": "*" + e, "w_ptr": "*" + e, "gs_ptr": "*" + a,
                                                 "gm_ptr": "*" + a, "mean_ptr": "*" + a, "eps": "fp64",
                                                 "gx_ptr": "*" + e, "gin_ptr": "*" + a, "gw_ptr": "*" + e},
                              c | {"NORM": norm, "ADD": add}, nw))  # fmt: skip
    return specs
