"""Triton backend of region_hinge (csrc/common/region_hinge.h): the variance term of the
discriminative loss, a second pixel pass once the centroids mu_r are known,

    hinge[b, r]         = sum_{p in r} [d_p - delta]_+^2,     d_p = ||x_p - mu_r||
    grad_emb[b, :, p]   = g[b, r] * f_p * (x_p - mu_r),       f_p = 2 [d_p - delta]_+ / d_p (0 at d_p = 0)
    grad_centroid[b, r] = - sum_{p in r} grad_emb[b, :, p]

A pixel takes part iff 0 <= label < R and label != ignore_index; other labels are masked,
never used as an index, and such pixels get grad_emb 0 (selected away with tl.where, so a
NaN there reaches nothing). A NaN distance propagates to its own region only. Statistics
and per-pixel factors are float32 (float64 for float64 input); delta is passed as float64
and rounded to that type, as the C++ kernels do.

Deterministic everywhere (no atomics): every program owns a chunk of whole pixel tiles of
one image (chunks * R rows per image are capped, so the workspace stays small for any R and
P; chunks grow longer instead) and one block of BLOCK_R regions; it keeps its regions'
partials in registers across its tiles and writes them once; the launcher adds the
(B, chunks, ...) partials over chunks in a fixed order. Within a tile, only the regions
present in it cost a reduction: `while` the tile has unvisited members, take the smallest
remaining label r, reduce its pixels, drop them. Spatially coherent label maps have a few
regions per tile, so the work is ~1 pass whatever R (random labels: up to BLOCK_P rounds).

* `_rh_forward_kernel`, grid ((chunk, image), region block): per tile, the pixels of its
  region block load their D values and their own centroid row (masked gathers from the
  (B, R, D) table, D blocks looped), giving the pixel's hinge term; partials (B, chunks, R).
  BLOCK_R covers up to 1024 regions, so emb is read once for R <= 1024.
* `_rh_factor_kernel` (backward, only when D > BLOCK_D), grid ((tile, image)): the full
  distance needs all D before any gradient, so this pass writes the per-pixel factor
  g[r] * f_p (0 for pixels that take no part) to a (B, P) workspace. For D <= BLOCK_D the
  gradient kernel computes it from the tile it already holds (FUSED: emb read once).
* `_rh_grad_kernel` (backward), grid ((chunk, image), region block, D block): writes
  grad_emb of its region block's pixels (region block 0 also writes the zeros of pixels that
  take no part: every element exactly once) and keeps -sum grad_emb per region in an
  on-chip [BLOCK_R, BLOCK_D] accumulator; partials (B, chunks, R, D). EMB_GRAD=False
  (emb_grad=False, centroid_hinge's first pass): the same sums, grad_emb neither allocated
  nor stored.

The launchers never sync with the host; block sizes depend on shapes only; the batch is on
the flat axis 0 (`grid_items`), so any B runs. Two opaque ops with the schemas of
pixelkernels/schemas.def and the direct-call checks of csrc/region_hinge.cpp; fake and
autograd come from pixelkernels/_op.py.
"""

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from ._common import (
    INT32_MAX,
    checked_labels,
    device_ctx,
    expect,
    expect_labels_match,
    expect_same_device,
    expect_sizes,
    grid_items,
    load_regions,
    pixel_blocks,
    pixel_offsets,
    pixel_view,
    split_pid,
    stats_dtype,
    warps,
    with_strides_of,
)

# Caps on the partials workspace per image (forward: chunks * R values; backward:
# chunks * R * D values). Beyond them a chunk spans several tiles.
MAX_FORWARD_PARTIALS = 1 << 16
MAX_BACKWARD_PARTIALS = 1 << 20


# --------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------


@triton.jit
def _sumsq(x_ptr, c_ptr, b, offs_p, member, region, D, R, sb, sd, sp, ACC: tl.constexpr, BLOCK_P: tl.constexpr,
           BLOCK_D: tl.constexpr):  # fmt: skip
    """||x_p - centroid[b, region_p]||^2 of the member pixels (0 elsewhere), D blocks looped."""
    ss = tl.zeros([BLOCK_P], ACC)
    crow = (b * R + region) * D
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        m = member[:, None] & (offs_d < D)[None, :]
        x = tl.load(x_ptr + pixel_offsets(b, offs_p, offs_d, sb, sd, sp), mask=m, other=0.0).to(ACC)
        c = tl.load(c_ptr + crow[:, None] + offs_d[None, :], mask=m, other=0.0).to(ACC)
        u = tl.where(m, x - c, 0.0)
        ss += tl.sum(u * u, axis=1)
    return ss


@triton.jit
def _factor(ss, dlt):
    """(hinge term, gradient factor f) of a pixel from its squared distance (region_hinge::term)."""
    d = tl.sqrt(ss)
    h = tl.maximum(d - dlt, 0.0)
    nan = d != d  # noqa: PLR0124  (NaN test)
    val = tl.where(nan, d, h * h)
    f = tl.where(nan, d, tl.where(d > 0, 2.0 * h / tl.where(d > 0, d, 1.0), 0.0))
    return val, f


@triton.jit
def _rh_forward_kernel(x_ptr, lab_ptr, c_ptr, part_ptr, P, D, R, ignore_index, delta: tl.float64, num_chunks,
                       tiles_per_chunk, sb, sd, sp, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
                       BLOCK_R: tl.constexpr):  # fmt: skip
    ACC = part_ptr.dtype.element_ty
    dlt = tl.full([], delta, ACC)  # float64 argument, rounded once (acc_t(delta) in C++)
    b, chunk = split_pid(num_chunks)
    chunk = chunk.to(tl.int64)
    r0 = tl.program_id(1) * BLOCK_R
    offs_r = tl.arange(0, BLOCK_R)
    lab_b = lab_ptr + b * P
    acc = tl.zeros([BLOCK_R], ACC)
    p0 = chunk * tiles_per_chunk * BLOCK_P
    for t in range(tiles_per_chunk):
        offs_p = p0 + t * BLOCK_P + tl.arange(0, BLOCK_P)
        valid, region = load_regions(lab_b, offs_p, offs_p < P, R, ignore_index)
        member = valid & (region >= r0) & (region < r0 + BLOCK_R)
        if tl.max(member.to(tl.int32), axis=0) > 0:
            ss = _sumsq(x_ptr, c_ptr, b, offs_p, member, region, D, R, sb, sd, sp, ACC, BLOCK_P, BLOCK_D)
            val, _f = _factor(ss, dlt)
            # One reduction per region present in the tile, in increasing label order.
            rem = member
            r = tl.min(tl.where(rem, region, R), axis=0)
            while r < R:
                sel = rem & (region == r)
                s = tl.sum(tl.where(sel, val, 0.0), axis=0)
                acc = tl.where(offs_r == r - r0, acc + s, acc)
                rem = rem & (region != r)
                r = tl.min(tl.where(rem, region, R), axis=0)
    out = r0 + offs_r
    tl.store(part_ptr + (b * num_chunks + chunk) * R + out, acc, mask=out < R)


@triton.jit
def _rh_factor_kernel(x_ptr, lab_ptr, c_ptr, gh_ptr, f_ptr, P, D, R, ignore_index, delta: tl.float64, sb, sd, sp,
                      BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    ACC = f_ptr.dtype.element_ty
    b, blk = split_pid(tl.cdiv(P, BLOCK_P))
    offs_p = blk.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    valid, region = load_regions(lab_ptr + b * P, offs_p, pmask, R, ignore_index)
    ss = _sumsq(x_ptr, c_ptr, b, offs_p, valid, region, D, R, sb, sd, sp, ACC, BLOCK_P, BLOCK_D)
    _val, f = _factor(ss, tl.full([], delta, ACC))
    g = tl.load(gh_ptr + b * R + region, mask=valid, other=0.0)
    tl.store(f_ptr + b * P + offs_p, tl.where(valid, g * f, 0.0), mask=pmask)


@triton.jit
def _rh_grad_kernel(x_ptr, lab_ptr, c_ptr, gh_ptr, f_ptr, o_ptr, gx_ptr, part_ptr, P, D, R, ignore_index,
                    delta: tl.float64, num_chunks, tiles_per_chunk, sb, sd, sp, BLOCK_P: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, FUSED: tl.constexpr,
                    HAS_OFFSET: tl.constexpr, EMB_GRAD: tl.constexpr):  # fmt: skip
    ACC = part_ptr.dtype.element_ty
    b, chunk = split_pid(num_chunks)
    chunk = chunk.to(tl.int64)
    rb = tl.program_id(1)
    r0 = rb * BLOCK_R
    offs_r = tl.arange(0, BLOCK_R)
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    lab_b = lab_ptr + b * P
    acc = tl.zeros([BLOCK_R, BLOCK_D], ACC)
    p0 = chunk * tiles_per_chunk * BLOCK_P
    for t in range(tiles_per_chunk):
        offs_p = p0 + t * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = offs_p < P
        valid, region = load_regions(lab_b, offs_p, pmask, R, ignore_index)
        member = valid & (region >= r0) & (region < r0 + BLOCK_R)
        if EMB_GRAD:
            # This program writes its regions' pixels; region block 0 also the zeros of the
            # pixels that take no part.
            writes = member | (pmask & (valid.to(tl.int32) == 0) & (tl.zeros([BLOCK_P], tl.int32) + rb == 0))
        else:
            writes = member
        if tl.max(writes.to(tl.int32), axis=0) > 0:
            m = member[:, None] & dmask[None, :]
            offs = pixel_offsets(b, offs_p, offs_d, sb, sd, sp)
            x = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC)
            c = tl.load(c_ptr + ((b * R + region) * D)[:, None] + offs_d[None, :], mask=m, other=0.0)
            u = tl.where(m, x - c, 0.0)
            if FUSED:  # the tile holds all D: the distance comes from it
                _val, f = _factor(tl.sum(u * u, axis=1), tl.full([], delta, ACC))
                f = tl.load(gh_ptr + b * R + region, mask=member, other=0.0) * f
            else:
                f = tl.load(f_ptr + b * P + offs_p, mask=member, other=0.0)
            # Pixels that do not take part: exactly 0, even where x is NaN.
            v = tl.where(m, f[:, None] * u, 0.0)
            if EMB_GRAD:
                w = v
                if HAS_OFFSET:  # added in ACC before the one rounding; the centroid sums see v only
                    o = tl.load(o_ptr + ((b * R + region) * D)[:, None] + offs_d[None, :], mask=m, other=0.0)
                    w = tl.where(m, v + o, 0.0)
                tl.store(gx_ptr + offs, w.to(gx_ptr.dtype.element_ty), mask=writes[:, None] & dmask[None, :])
            rem = member
            r = tl.min(tl.where(rem, region, R), axis=0)
            while r < R:
                sel = rem & (region == r)
                s = tl.sum(tl.where(sel[:, None], v, 0.0), axis=0)
                acc = tl.where((offs_r == r - r0)[:, None], acc - s[None, :], acc)
                rem = rem & (region != r)
                r = tl.min(tl.where(rem, region, R), axis=0)
    out = r0 + offs_r
    rows = (b * num_chunks + chunk) * R + out
    tl.store(part_ptr + rows[:, None] * D + offs_d[None, :], acc, mask=(out < R)[:, None] & dmask[None, :])


# --------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------


def _plan_chunks(P: int, per_chunk: int, block_p: int, max_partials: int):
    """(num_chunks, tiles_per_chunk): chunks of whole tiles, num_chunks * per_chunk <= max_partials
    (or a single chunk)."""
    n_tiles = triton.cdiv(P, block_p)
    nc = min(n_tiles, max(1, max_partials // max(per_chunk, 1)))
    tiles = triton.cdiv(n_tiles, nc)
    return triton.cdiv(n_tiles, tiles), tiles


def _forward_blocks(P: int, D: int, R: int):
    block_p, block_d = pixel_blocks(P, D, tile=4096, max_d=32)
    block_r = min(triton.next_power_of_2(R), 1024)
    return block_p, block_d, block_r


def _backward_blocks(P: int, D: int, R: int, st: torch.dtype):
    # float64: 2048-element tiles. At 4096 (64 x 64 in 8 warps: 16 doubles a thread in each of
    # x, c, u, v and the offset's tile) the fused kernel with grad_emb hit 255 registers and
    # spilled up to 168 B, 74 local accesses in its pixel loop (sm_90 report of 2026-11-24).
    block_p, block_d = pixel_blocks(P, D, tile=2048 if st == torch.float64 else 4096, max_d=64)
    block_r = max(1, min(triton.next_power_of_2(R), 2048 // block_d))
    return block_p, block_d, block_r


def region_hinge_forward(emb, labels, centroid, delta, ignore_index, *, max_partials=MAX_FORWARD_PARTIALS):
    """emb (B, D, H, W), labels (B, H, W), centroid (B, R, D) -> hinge (B, R), statistics dtype.
    `max_partials` caps chunks * R per image (tests lower it to force multi-tile chunks)."""
    B, D, H, W = emb.shape
    R, P = centroid.shape[1], H * W
    st = stats_dtype(emb.dtype)
    if B == 0 or P == 0 or R == 0:
        return torch.zeros(B, R, dtype=st, device=emb.device)
    x, (sb, sd, sp) = pixel_view(emb)
    c = centroid.to(st).contiguous()
    bp, bd, br = _forward_blocks(P, D, R)
    nc, tiles = _plan_chunks(P, R, bp, max_partials)
    part = torch.empty(B, nc, R, dtype=st, device=emb.device)
    with device_ctx(x):
        _rh_forward_kernel[grid_items(nc, B, triton.cdiv(R, br))](
            x, labels.contiguous(), c, part, P, D, R, ignore_index, float(delta), nc, tiles, sb, sd, sp,
            BLOCK_P=bp, BLOCK_D=bd, BLOCK_R=br, num_warps=warps(bp * bd),
        )  # fmt: skip
    return part.sum(1)  # chunks added in a fixed order


def region_hinge_backward(grad_hinge, emb, labels, centroid, delta, ignore_index, offset=None, emb_grad=True,
                          *, max_partials=MAX_BACKWARD_PARTIALS):  # fmt: skip
    """-> grad_emb (emb's shape, dtype and strides), grad_centroid (centroid's shape and dtype).
    `offset` (B, R, D) or None: added to each taking-part pixel's grad_emb, not to grad_centroid.
    `emb_grad=False`: grad_emb is an empty (0,) tensor and nothing pixel-sized is written; the
    same grad_centroid, bitwise."""
    B, D, H, W = emb.shape
    R, P = centroid.shape[1], H * W
    st = stats_dtype(emb.dtype)
    grad_emb = torch.empty_like(emb) if emb_grad else emb.new_empty((0,))
    if emb.numel() == 0 or R == 0:  # B, D or P is 0 (R = 0 only in a direct call)
        return grad_emb.zero_(), torch.zeros(centroid.shape, dtype=centroid.dtype, device=emb.device)
    x, (sb, sd, sp) = pixel_view(emb)
    if emb_grad:
        out = grad_emb if grad_emb.stride() == x.stride() else with_strides_of(None, x)
    else:
        offset = out = None  # the offset only adds to grad_emb; the kernel gets part as an unused gx
    c = centroid.to(st).contiguous()
    g = grad_hinge.to(st).contiguous()
    o = g if offset is None else offset.to(st).contiguous()  # g: an unused pointer
    lab = labels.contiguous()
    bp, bd, br = _backward_blocks(P, D, R, st)
    fused = D <= bd
    nc, tiles = _plan_chunks(P, R * D, bp, max_partials)
    part = torch.empty(B, nc, R, D, dtype=st, device=emb.device)
    with device_ctx(x):
        if fused:
            f = part  # unused
        else:
            f = torch.empty(B, P, dtype=st, device=emb.device)
            fp, fd = pixel_blocks(P, D, tile=4096, max_d=32)
            _rh_factor_kernel[grid_items(triton.cdiv(P, fp), B)](
                x, lab, c, g, f, P, D, R, ignore_index, float(delta), sb, sd, sp, BLOCK_P=fp, BLOCK_D=fd,
                num_warps=warps(fp * fd),
            )  # fmt: skip
        _rh_grad_kernel[grid_items(nc, B, triton.cdiv(R, br), triton.cdiv(D, bd))](
            x, lab, c, g, f, o, part if out is None else out, part, P, D, R, ignore_index, float(delta), nc,
            tiles, sb, sd, sp, BLOCK_P=bp, BLOCK_D=bd, BLOCK_R=br, FUSED=fused, HAS_OFFSET=offset is not None,
            EMB_GRAD=emb_grad, num_warps=warps(bp * bd),
        )  # fmt: skip
    if out is not None and out is not grad_emb:
        grad_emb.copy_(out)
    return grad_emb, part.sum(1).to(centroid.dtype)  # chunks added in a fixed order


# --------------------------------------------------------------------------------------
# Opaque ops (schemas: pixelkernels/schemas.def; fake and autograd: pixelkernels/ops/region_hinge.py)
# --------------------------------------------------------------------------------------


def _expect_centroid(emb, centroid, op):
    B, D = emb.shape[:2]
    expect(
        centroid.dim() == 3 and centroid.shape[0] == B and centroid.shape[2] == D
        and 1 <= centroid.shape[1] <= INT32_MAX,
        op, "centroid must be (B, R, D) with 1 <= R < 2^31 for emb ", list(emb.shape), ", got ",
        list(centroid.shape),
    )  # fmt: skip


@triton_variant("region_hinge")
def region_hinge_op(emb, labels, centroid, delta, ignore_index, check):
    op = "region_hinge"
    expect_labels_match(emb, labels, op)
    _expect_centroid(emb, centroid, op)
    expect_same_device(op, emb, labels, centroid)
    checked_labels(labels, centroid.shape[1], ignore_index, check)
    return region_hinge_forward(emb, labels, centroid, delta, ignore_index)


@triton_variant("region_hinge_backward")
def region_hinge_backward_op(grad_hinge, emb, labels, centroid, delta, ignore_index, offset, emb_grad):
    op = "region_hinge_backward"
    expect_labels_match(emb, labels, op)
    _expect_centroid(emb, centroid, op)
    expect_sizes(grad_hinge, centroid.shape[:2], op, "grad_hinge")
    expect_same_device(op, emb, labels, centroid, grad_hinge)
    if offset is not None:
        expect_sizes(offset, centroid.shape, op, "offset")
        expect_same_device(op, emb, offset)
    return region_hinge_backward(grad_hinge, emb, labels, centroid, delta, ignore_index, offset, emb_grad)


def compile_specs():
    """(kernel, pointer/scalar signature, constexprs, num_warps) for the offline GPU compile
    check (.ci/triton_compile_check.py); other arguments compile as i32. Each input dtype is
    paired with another label width, so every width is compiled."""
    specs = []
    for e, a, lab in (("fp32", "fp32", "u8"), ("fp64", "fp64", "i64"), ("bf16", "fp32", "i16"),
                      ("fp16", "fp32", "i32"), ("fp32", "fp32", "i8")):  # fmt: skip
        base = {"x_ptr": "*" + e, "lab_ptr": "*" + lab, "c_ptr": "*" + a, "delta": "fp64"}
        fwd = {"BLOCK_P": 128, "BLOCK_D": 32, "BLOCK_R": 1024}
        specs.append((_rh_forward_kernel, {**base, "part_ptr": "*" + a}, fwd, 8))
        specs.append((_rh_factor_kernel, {**base, "gh_ptr": "*" + a, "f_ptr": "*" + a},
                      {"BLOCK_P": 128, "BLOCK_D": 32}, 8))  # fmt: skip
        # the gradient's tiles by the launcher's own rule at its largest (D >= 64, R >= 32)
        bp, bd, br = _backward_blocks(1 << 20, 64, 1 << 10, torch.float64 if e == "fp64" else torch.float32)
        for fused in (True, False):
            # (HAS_OFFSET, EMB_GRAD): the offset only comes with grad_emb
            for has_offset, emb_grad in ((False, True), (True, True), (False, False)):
                specs.append(
                    (
                        _rh_grad_kernel,
                        {**base, "gh_ptr": "*" + a, "f_ptr": "*" + a, "o_ptr": "*" + a,
                         "gx_ptr": "*" + (e if emb_grad else a), "part_ptr": "*" + a},  # fmt: skip
                        {"BLOCK_P": bp, "BLOCK_D": bd, "BLOCK_R": br, "FUSED": fused, "HAS_OFFSET": has_offset,
                         "EMB_GRAD": emb_grad},  # fmt: skip
                        warps(bp * bd),
                    )
                )
    return specs
