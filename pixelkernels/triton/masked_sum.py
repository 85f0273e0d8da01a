"""Triton backend of masked_sum (csrc/common/masked_sum.h): sum[b, c] = Σ_p feat·mask,
mass[b] = Σ_p mask. Forward: one program per (pixel block, image) writes its partial sums
(a (B, blocks, C + 1) workspace), added over blocks in a fixed order (deterministic).
Backward: elementwise per pixel block, grad_mask reduced over the D blocks in registers.
"""

import torch
import triton
import triton.language as tl

from ._common import (
    acc_of,
    device_ctx,
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
def _backward_kernel(x_ptr, w_ptr, gs_ptr, gm_ptr, gx_ptr, gw_ptr, P, D, sb, sd, sp, ACC: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    b, blk = split_pid(tl.cdiv(P, BLOCK_P))
    offs_p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    w = tl.load(w_ptr + b * P + offs_p, mask=pmask, other=0.0).to(ACC)
    acc = tl.zeros([BLOCK_P], ACC) + tl.load(gm_ptr + b).to(ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        gs = tl.load(gs_ptr + b * D + offs_d, mask=dmask, other=0.0).to(ACC)
        x = load_tile(x_ptr, b, offs_p, offs_d, pmask, dmask, sb, sd, sp, ACC)
        acc += tl.sum(x * gs[None, :], axis=1)
        offs = pixel_offsets(b, offs_p, offs_d, sb, sd, sp)
        tl.store(
            gx_ptr + offs,
            (gs[None, :] * w[:, None]).to(gx_ptr.dtype.element_ty),
            mask=pmask[:, None] & dmask[None, :],
        )
    tl.store(gw_ptr + b * P + offs_p, acc.to(gw_ptr.dtype.element_ty), mask=pmask)


@torch.library.custom_op("pixelkernels::masked_sum_triton", mutates_args=())
def masked_sum_op(feat: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    B, C, H, W = feat.shape
    P = H * W
    st = stats_dtype(feat.dtype)
    if B == 0 or P == 0:
        return torch.zeros(B, C, dtype=st, device=feat.device), torch.zeros(B, dtype=st, device=feat.device)
    x, (sb, sd, sp) = pixel_view(feat)
    w = mask.to(feat.dtype).contiguous()
    bp, bd = pixel_blocks(P, C)
    nblk = triton.cdiv(P, bp)
    part = torch.empty(B, nblk, C + 1, dtype=st, device=feat.device)
    with device_ctx(x):
        _partials_kernel[grid_items(nblk, B)](x, w, part, P, C, sb, sd, sp, ACC=acc_of(part), BLOCK_P=bp, BLOCK_D=bd,
                                              num_warps=warps(bp * bd))  # fmt: skip
    # Blocks added in order; two separate tensors (a custom op's outputs may not alias).
    return part[:, :, :C].sum(1), part[:, :, C].sum(1)


@torch.library.custom_op("pixelkernels::masked_sum_backward_triton", mutates_args=())
def masked_sum_backward_op(grad_sum: torch.Tensor, grad_mass: torch.Tensor, feat: torch.Tensor,
                           mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    B, C, H, W = feat.shape
    P = H * W
    grad_feat = torch.empty_like(feat)
    grad_mask = torch.empty(mask.shape, dtype=feat.dtype, device=feat.device)
    if B == 0 or P == 0:
        return grad_feat, grad_mask.to(mask.dtype)
    x, (sb, sd, sp) = pixel_view(feat)
    out = grad_feat if grad_feat.stride() == x.stride() else with_strides_of(None, x)
    st = stats_dtype(feat.dtype)
    bp, bd = pixel_blocks(P, C)
    with device_ctx(x):
        _backward_kernel[grid_items(triton.cdiv(P, bp), B)](
            x,
            mask.to(feat.dtype).contiguous(),
            grad_sum.to(st).contiguous(),
            grad_mass.to(st).contiguous(),
            out,
            grad_mask,
            P,
            C,
            sb,
            sd,
            sp,
            ACC=acc_of(grad_sum.to(st)),
            BLOCK_P=bp,
            BLOCK_D=bd,
            num_warps=warps(bp * bd),
        )
    if out is not grad_feat:
        grad_feat.copy_(out)
    return grad_feat, grad_mask.to(mask.dtype)


def compile_specs():
    specs = []
    for e, a, acc in (("fp32", "fp32", tl.float32), ("fp64", "fp64", tl.float64), ("bf16", "fp32", tl.float32),
                      ("fp16", "fp32", tl.float32)):  # fmt: skip
        c = {"ACC": acc, "BLOCK_P": 256, "BLOCK_D": 16}
        specs.append((_partials_kernel, {"x_ptr": "*" + e, "w_ptr": "*" + e, "part_ptr": "*" + a}, c, 4))
        specs.append((_backward_kernel, {"x_ptr": "*" + e, "w_ptr": "*" + e, "gs_ptr": "*" + a, "gm_ptr": "*" + a,
                                         "gx_ptr": "*" + e, "gw_ptr": "*" + e}, c, 4))  # fmt: skip
    return specs
