"""Triton backend of region_stats (SPEC §3.1): count, centroid and variance per region.

emb (B, D, H, W) is read as P = H*W pixels at `b*stride_b + d*stride_d + p*stride_p`, so
contiguous (stride_p = 1) and channels_last (stride_d = 1) inputs are read in place, without
a copy. Statistics accumulate in float32 (float64 for float64 input). A pixel takes part iff
`0 <= label < R and label != ignore_index`; every other label is masked, never used as an
index. Values of non-member pixels are removed with `tl.where`, never multiplied by a 0/1
mask, so a NaN/inf reaches only the region that holds it.

Kernels (per program; traffic counted per pixel, E = element size of emb, D dims):

* `_rs_partials_kernel` (deterministic path, pass 1), grid ((chunk, image), d-block).
  The program loads its [BLOCK_P, BLOCK_D] tile and the tile's labels once, then for each
  region r computes, on chip, the chunk-local count n_c, sum s_c and centred sum of squares
  M2_c = sum (x - s_c/n_c)^2 (the tile is still in registers, so no E[x^2]-E[x]^2
  cancellation), and writes (n_c, s_c, M2_c) to a workspace laid out (B, R, chunks[, D]).
  Regions absent from the tile cost one count reduction and skip the rest.
  Traffic: D*E + L bytes read per pixel (L = label width; labels once per d-block), plus
  R*(2*D*acc + 4)/chunk_len bytes of workspace written per pixel (~2R/BLOCK_P of the input).
  When B*R*chunks would make the workspace too large (large R in deterministic mode), the
  chunk becomes several tiles long; the program then walks its tiles once per region and
  merges them in registers with Chan's formula (the labels are re-read per region, the
  pixel tile only when the region occurs in it).
* `_rs_merge_kernel` (deterministic path, pass 2), grid ((region, image)). Merges the chunks
  of one (b, r) in a fixed order, exactly like csrc/common/region_stats.h:
      n = sum_c n_c,  mean = sum_c s_c / n,
      M2 = sum_c M2_c + n_c * (s_c/n_c - mean)^2      (chunks with n_c = 0 left out),
  one d-block at a time inside the program, so variance = sum_d M2_d / n is reduced in a
  fixed order too. No atomics anywhere: the result is bitwise reproducible run to run.
  (We store the chunk sum s_c rather than the chunk mean the C++ header describes; it is
  the same merge, one rounding fewer for the centroid.)
* `_rs_atomic_sum_kernel` / `_rs_atomic_sqdev_kernel` (large-R path: R > 32 and
  deterministic algorithms off). Pass 1 scatters counts and sums with `tl.atomic_add` into
  (B, R) / (B, R, D) accumulators -> centroid = sum / count; pass 2 re-reads the pixels,
  gathers each pixel's own centroid by pointer arithmetic and atomically adds
  ||x - centroid||^2 into (B, R). Two passes, so still no cancellation, and the workspace is
  O(B*R*D) whatever the image size; but float atomics make the last bits depend on
  scheduling: this path is NOT bitwise deterministic, which is why
  `torch.are_deterministic_algorithms_enabled()` always selects the chunked path.
  Traffic: 2*(D*E + L) bytes read per pixel plus D+1 relaxed atomics per valid pixel.
* `_rs_backward_kernel`, grid ((pixel tile, image), d-block), elementwise:
      grad[b, d, p] = (grad_centroid[b,r,d] + 2*grad_variance[b,r]*(x - centroid[b,r,d])) / count[b,r]
  for a member pixel of region r, 0 otherwise (the centroid path inside the variance
  vanishes since sum_p (x_p - centroid) = 0). Reads D*E + L bytes per pixel (L alone where
  the region's grad_variance is 0: x is then not needed) plus gathers from the small
  (B, R, D) tables (cache resident), writes D*E; grad_emb keeps emb's strides.

The launchers never sync with the host; block sizes depend on shapes only. Two opaque ops
(`pixelkernels::region_stats_triton`, `pixelkernels::region_stats_backward_triton`) wrap the
launchers (`_schema.triton_variant`: the schemas of pixelkernels/schemas.def, with the direct-call
checks of csrc/region_stats.cpp); fake and autograd come from pixelkernels/_op.py.
Every grid puts the batch on the flat axis 0 (`grid_items`), so any B runs.
Runs on CPU tensors under `TRITON_INTERPRET=1` (float16 and bfloat16 included).
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
    grid_items,
    load_regions,
    pixel_offsets,
    pixel_stride,
    pixel_view,
    split_pid,
    stats_dtype,
    warps,
)

# Above this many regions (and with deterministic algorithms off) the forward uses the
# atomic two-pass path: the chunked path costs O(R) reductions per tile and O(R) workspace
# per chunk.
ATOMIC_MIN_REGIONS = 32
# Cap on workspace rows (chunks * regions) per image for the chunked path; beyond it chunks
# grow to several tiles (mirrors plan_chunks in csrc/common/region_stats.h).
MAX_PARTIAL_ROWS = 1 << 14


# --------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------


@triton.jit
def _rs_partials_kernel(
    emb_ptr,
    lab_ptr,
    ws_n_ptr,
    ws_s_ptr,
    ws_m2_ptr,
    P,
    D,
    R,
    ignore_index,
    num_chunks,
    tiles_per_chunk,
    stride_b,
    stride_d,
    stride_p,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ONE_TILE: tl.constexpr,
):
    ACC = ws_s_ptr.dtype.element_ty
    b, c = split_pid(num_chunks)
    c = c.to(tl.int64)
    db = tl.program_id(1)

    offs_d = db * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    lab_b = lab_ptr + b * P
    # Workspace row of (b, r, c) is (b*R + r)*num_chunks + c.
    row0 = b * R * num_chunks + c
    first_dblock = db == 0

    if ONE_TILE:
        offs_p = c * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = offs_p < P
        valid, lab = load_regions(lab_b, offs_p, pmask, R, ignore_index)
        x = tl.load(
            emb_ptr + pixel_offsets(b, offs_p, offs_d, stride_b, stride_d, stride_p),
            mask=pmask[:, None] & dmask[None, :],
            other=0.0,
        ).to(ACC)
        for r in range(R):
            member = valid & (lab == r)
            n = tl.sum(member.to(tl.int32), axis=0)
            s = tl.zeros([BLOCK_D], ACC)
            m2 = tl.zeros([BLOCK_D], ACC)
            if n > 0:
                s = tl.sum(tl.where(member[:, None], x, 0.0), axis=0)
                mean = s / n.to(ACC)
                dev = tl.where(member[:, None], x - mean[None, :], 0.0)
                m2 = tl.sum(dev * dev, axis=0)
            row = row0 + r * num_chunks
            tl.store(ws_n_ptr + row, n, mask=first_dblock)
            tl.store(ws_s_ptr + row * D + offs_d, s, mask=dmask)
            tl.store(ws_m2_ptr + row * D + offs_d, m2, mask=dmask)
    else:
        # A chunk of several tiles: per region, walk the tiles and merge them (Chan).
        p0 = c * tiles_per_chunk * BLOCK_P
        for r in range(R):
            n_run = tl.full([], 0, tl.int32)
            s_run = tl.zeros([BLOCK_D], ACC)
            m2_run = tl.zeros([BLOCK_D], ACC)
            for t in range(tiles_per_chunk):
                offs_p = p0 + t * BLOCK_P + tl.arange(0, BLOCK_P)
                valid, lab = load_regions(lab_b, offs_p, offs_p < P, R, ignore_index)
                member = valid & (lab == r)
                n_t = tl.sum(member.to(tl.int32), axis=0)
                if n_t > 0:
                    x = tl.load(
                        emb_ptr + pixel_offsets(b, offs_p, offs_d, stride_b, stride_d, stride_p),
                        mask=member[:, None] & dmask[None, :],
                        other=0.0,
                    ).to(ACC)
                    s_t = tl.sum(tl.where(member[:, None], x, 0.0), axis=0)
                    mean_t = s_t / n_t.to(ACC)
                    dev = tl.where(member[:, None], x - mean_t[None, :], 0.0)
                    m2_t = tl.sum(dev * dev, axis=0)
                    n_new = n_run + n_t
                    delta = mean_t - s_run / tl.maximum(n_run, 1).to(ACC)
                    weight = n_run.to(ACC) * n_t.to(ACC) / n_new.to(ACC)
                    m2_run = m2_run + m2_t + tl.where(n_run > 0, delta * delta * weight, 0.0)
                    s_run = s_run + s_t
                    n_run = n_new
            row = row0 + r * num_chunks
            tl.store(ws_n_ptr + row, n_run, mask=first_dblock)
            tl.store(ws_s_ptr + row * D + offs_d, s_run, mask=dmask)
            tl.store(ws_m2_ptr + row * D + offs_d, m2_run, mask=dmask)


@triton.jit
def _rs_merge_kernel(
    ws_n_ptr,
    ws_s_ptr,
    ws_m2_ptr,
    count_ptr,
    centroid_ptr,
    var_ptr,
    D,
    R,
    num_chunks,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    ACC = centroid_ptr.dtype.element_ty
    b, r = split_pid(R)
    out = b * R + r
    row0 = out * num_chunks
    offs_c = tl.arange(0, BLOCK_C)

    n_acc = tl.zeros([BLOCK_C], tl.int32)
    for c0 in range(0, num_chunks, BLOCK_C):
        cmask = c0 + offs_c < num_chunks
        n_acc += tl.load(ws_n_ptr + row0 + c0 + offs_c, mask=cmask, other=0)
    n = tl.sum(n_acc, axis=0)
    n_div = tl.maximum(n, 1).to(ACC)

    var_acc = tl.zeros([BLOCK_D], ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        s_acc = tl.zeros([BLOCK_C, BLOCK_D], ACC)
        for c0 in range(0, num_chunks, BLOCK_C):
            rows = row0 + c0 + offs_c
            m = (c0 + offs_c < num_chunks)[:, None] & dmask[None, :]
            s_acc += tl.load(ws_s_ptr + rows[:, None] * D + offs_d[None, :], mask=m, other=0.0)
        mean = tl.sum(s_acc, axis=0) / n_div
        m2_acc = tl.zeros([BLOCK_C, BLOCK_D], ACC)
        for c0 in range(0, num_chunks, BLOCK_C):
            rows = row0 + c0 + offs_c
            cmask = c0 + offs_c < num_chunks
            m = cmask[:, None] & dmask[None, :]
            n_c = tl.load(ws_n_ptr + rows, mask=cmask, other=0)
            s_c = tl.load(ws_s_ptr + rows[:, None] * D + offs_d[None, :], mask=m, other=0.0)
            m2_c = tl.load(ws_m2_ptr + rows[:, None] * D + offs_d[None, :], mask=m, other=0.0)
            delta = s_c / tl.maximum(n_c, 1).to(ACC)[:, None] - mean[None, :]
            term = m2_c + n_c.to(ACC)[:, None] * (delta * delta)
            m2_acc += tl.where(m & (n_c > 0)[:, None], term, 0.0)
        m2 = tl.sum(m2_acc, axis=0)
        tl.store(centroid_ptr + out * D + offs_d, mean, mask=dmask)
        var_acc += tl.where(dmask, m2, 0.0)
    tl.store(count_ptr + out, n.to(ACC))
    tl.store(var_ptr + out, tl.sum(var_acc, axis=0) / n_div)


@triton.jit
def _tile_rows(lab_ptr, P, D, R, ignore_index, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """The (pixel block, image) x d-block tile of this program (grid_items over pixel blocks):
    its offsets, its labels' validity, each pixel's flat (b, r) row and the mask of its valid
    elements."""
    b, tile = split_pid(tl.cdiv(P, BLOCK_P))
    offs_p = tile * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    pmask = offs_p < P
    dmask = offs_d < D
    valid, lab = load_regions(lab_ptr + b * P, offs_p, pmask, R, ignore_index)
    out = b * R + lab
    m = valid[:, None] & dmask[None, :]
    return b, offs_p, offs_d, pmask, dmask, valid, out, m


@triton.jit
def _pixel_tile(
    emb_ptr,
    lab_ptr,
    P,
    D,
    R,
    ignore_index,
    stride_b,
    stride_d,
    stride_p,
    acc_dtype,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """_tile_rows and the tile's emb values (0 outside valid pixels)."""
    b, offs_p, offs_d, pmask, dmask, valid, out, m = _tile_rows(
        lab_ptr, P, D, R, ignore_index, BLOCK_P, BLOCK_D
    )
    x = tl.load(
        emb_ptr + pixel_offsets(b, offs_p, offs_d, stride_b, stride_d, stride_p), mask=m, other=0.0
    ).to(acc_dtype)
    return b, offs_p, offs_d, pmask, dmask, valid, out, m, x


@triton.jit
def _rs_atomic_sum_kernel(
    emb_ptr,
    lab_ptr,
    cnt_ptr,
    sum_ptr,
    P,
    D,
    R,
    ignore_index,
    stride_b,
    stride_d,
    stride_p,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    _b, _offs_p, offs_d, _pmask, _dmask, valid, out, m, x = _pixel_tile(
        emb_ptr,
        lab_ptr,
        P,
        D,
        R,
        ignore_index,
        stride_b,
        stride_d,
        stride_p,
        sum_ptr.dtype.element_ty,
        BLOCK_P,
        BLOCK_D,
    )
    count_mask = valid & (tl.zeros([BLOCK_P], tl.int32) + tl.program_id(1) == 0)  # d-block 0 counts
    # Relaxed: nothing is read back until the kernel ends, so no ordering is needed.
    tl.atomic_add(cnt_ptr + out, tl.full([BLOCK_P], 1, tl.int32), mask=count_mask, sem="relaxed")
    tl.atomic_add(sum_ptr + out[:, None] * D + offs_d[None, :], x, mask=m, sem="relaxed")


@triton.jit
def _rs_atomic_sqdev_kernel(
    emb_ptr,
    lab_ptr,
    centroid_ptr,
    ss_ptr,
    P,
    D,
    R,
    ignore_index,
    stride_b,
    stride_d,
    stride_p,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    _b, _offs_p, offs_d, _pmask, _dmask, valid, out, m, x = _pixel_tile(
        emb_ptr,
        lab_ptr,
        P,
        D,
        R,
        ignore_index,
        stride_b,
        stride_d,
        stride_p,
        ss_ptr.dtype.element_ty,
        BLOCK_P,
        BLOCK_D,
    )
    cen = tl.load(centroid_ptr + out[:, None] * D + offs_d[None, :], mask=m, other=0.0)
    dev = tl.where(m, x - cen, 0.0)
    tl.atomic_add(ss_ptr + out, tl.sum(dev * dev, axis=1), mask=valid, sem="relaxed")


@triton.jit
def _rs_backward_kernel(
    emb_ptr,
    lab_ptr,
    gc_ptr,
    gv_ptr,
    count_ptr,
    centroid_ptr,
    scale_ptr,
    grad_ptr,
    P,
    D,
    R,
    ignore_index,
    stride_b,
    stride_d,
    stride_p,
    gstride_b,
    gstride_d,
    gstride_p,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_SCALE: tl.constexpr,
):
    b, offs_p, offs_d, pmask, dmask, valid, out, m = _tile_rows(
        lab_ptr, P, D, R, ignore_index, BLOCK_P, BLOCK_D
    )
    n = tl.load(count_ptr + out, mask=valid, other=0.0)
    # A labelled pixel of a region with count 0 only arises from a hand-made count; it gets 0
    # like every pixel that takes no part (as in the C++ kernels), never a division by 0.
    m = m & (n > 0)[:, None]
    gv = tl.load(gv_ptr + out, mask=valid, other=0.0)
    # emb only where the region's grad_variance is nonzero: without a variance gradient
    # (with_variance=False, or the variance unused) the backward moves half the bytes.
    x = tl.load(
        emb_ptr + pixel_offsets(b, offs_p, offs_d, stride_b, stride_d, stride_p),
        mask=m & (gv != 0.0)[:, None],
        other=0.0,
    ).to(centroid_ptr.dtype.element_ty)
    idx = out[:, None] * D + offs_d[None, :]
    cen = tl.load(centroid_ptr + idx, mask=m, other=0.0)
    gc = tl.load(gc_ptr + idx, mask=m, other=0.0)
    # A zero grad_variance (e.g. the variance output was not used) contributes exactly
    # nothing, even where x or the centroid is NaN, as autograd would for an unused output.
    dev = tl.where(gv[:, None] != 0.0, 2.0 * gv[:, None] * (x - cen), 0.0)
    den = tl.where(n > 0, n, 1.0)
    if HAS_SCALE:  # region_loss: both incoming gradients times the loss's gradient, on the row's divisor
        den = den / tl.load(scale_ptr)
    g = tl.where(m, (gc + dev) / den[:, None], 0.0)
    tl.store(
        grad_ptr + pixel_offsets(b, offs_p, offs_d, gstride_b, gstride_d, gstride_p),
        g.to(grad_ptr.dtype.element_ty),
        mask=pmask[:, None] & dmask[None, :],
    )


# --------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------


def _tile_blocks(P: int, D: int, max_d: int, tile: int):
    """(BLOCK_P, BLOCK_D) with BLOCK_P * BLOCK_D <= tile elements (powers of two).

    Sizes were checked with ptxas for sm_80/sm_90 (fp32 and fp64, 8 warps): no spills.
    """
    block_d = min(triton.next_power_of_2(max(D, 1)), max_d)
    block_p = min(max(16, min(1024, tile // block_d)), max(16, triton.next_power_of_2(P)))
    return block_p, block_d


def _plan_chunks(P: int, R: int, block_p: int, max_rows: int):
    """(num_chunks, tiles_per_chunk): chunks of whole tiles, at most max_rows // R chunks."""
    n_tiles = triton.cdiv(P, block_p)
    nc = min(n_tiles, max(1, max_rows // max(R, 1)))
    tiles = triton.cdiv(n_tiles, nc)
    return triton.cdiv(n_tiles, tiles), tiles


def region_stats_forward(
    emb: torch.Tensor,
    labels: torch.Tensor,
    num_regions: int,
    ignore_index: int,
    *,
    path: str = "auto",
    max_partial_rows: int = MAX_PARTIAL_ROWS,
):
    """emb (B, D, H, W), labels (B, H, W) -> count (B, R), centroid (B, R, D), variance (B, R).

    `path`: "auto" (chunked when R <= ATOMIC_MIN_REGIONS or deterministic algorithms are on,
    else atomic), "chunked" (bitwise deterministic) or "atomic" (not bitwise deterministic).
    `max_partial_rows` caps chunks * R per image (tests lower it to force multi-tile chunks).
    """
    B, D, H, W = emb.shape
    R = int(num_regions)
    P = H * W
    sdt = stats_dtype(emb.dtype)
    dev = emb.device
    if B == 0 or P == 0 or R == 0:
        return (
            torch.zeros(B, R, dtype=sdt, device=dev),
            torch.zeros(B, R, D, dtype=sdt, device=dev),
            torch.zeros(B, R, dtype=sdt, device=dev),
        )
    emb, (sb, sd, sp) = pixel_view(emb)
    labels = labels.contiguous()  # at its own width
    count = torch.empty(B, R, dtype=sdt, device=dev)
    centroid = torch.empty(B, R, D, dtype=sdt, device=dev)
    variance = torch.empty(B, R, dtype=sdt, device=dev)

    if path == "auto":
        atomic = R > ATOMIC_MIN_REGIONS and not torch.are_deterministic_algorithms_enabled()
    elif path in ("chunked", "atomic"):
        atomic = path == "atomic"
    else:
        raise ValueError(f"path must be 'auto', 'chunked' or 'atomic', got {path!r}")

    with device_ctx(emb):
        if atomic:
            block_p, block_d = _tile_blocks(P, D, max_d=64, tile=4096)
            grid = grid_items(triton.cdiv(P, block_p), B, max(1, triton.cdiv(D, block_d)))
            cnt = torch.zeros(B, R, dtype=torch.int32, device=dev)
            sums = torch.zeros(B, R, D, dtype=sdt, device=dev)
            _rs_atomic_sum_kernel[grid](
                emb,
                labels,
                cnt,
                sums,
                P,
                D,
                R,
                ignore_index,
                sb,
                sd,
                sp,
                BLOCK_P=block_p,
                BLOCK_D=block_d,
                num_warps=warps(block_p * block_d),
            )
            count.copy_(cnt)
            n_div = count.clamp_min(1)
            torch.div(sums, n_div.unsqueeze(-1), out=centroid)
            ss = torch.zeros(B, R, dtype=sdt, device=dev)
            if D > 0:
                _rs_atomic_sqdev_kernel[grid](
                    emb,
                    labels,
                    centroid,
                    ss,
                    P,
                    D,
                    R,
                    ignore_index,
                    sb,
                    sd,
                    sp,
                    BLOCK_P=block_p,
                    BLOCK_D=block_d,
                    num_warps=warps(block_p * block_d),
                )
            torch.div(ss, n_div, out=variance)
        else:
            block_p, block_d = _tile_blocks(P, D, max_d=32, tile=8192)
            num_chunks, tiles = _plan_chunks(P, R, block_p, max_partial_rows)
            ws_n = torch.empty(B, R, num_chunks, dtype=torch.int32, device=dev)
            ws_s = torch.empty(B, R, num_chunks, D, dtype=sdt, device=dev)
            ws_m2 = torch.empty(B, R, num_chunks, D, dtype=sdt, device=dev)
            grid = grid_items(num_chunks, B, max(1, triton.cdiv(D, block_d)))
            _rs_partials_kernel[grid](
                emb,
                labels,
                ws_n,
                ws_s,
                ws_m2,
                P,
                D,
                R,
                ignore_index,
                num_chunks,
                tiles,
                sb,
                sd,
                sp,
                BLOCK_P=block_p,
                BLOCK_D=block_d,
                ONE_TILE=tiles == 1,
                num_warps=warps(block_p * block_d),
            )
            mblock_d = min(triton.next_power_of_2(max(D, 1)), 64)
            mtile = 1024 if sdt == torch.float64 else 2048
            mblock_c = max(1, min(triton.next_power_of_2(num_chunks), mtile // mblock_d))
            _rs_merge_kernel[grid_items(R, B)](
                ws_n,
                ws_s,
                ws_m2,
                count,
                centroid,
                variance,
                D,
                R,
                num_chunks,
                BLOCK_C=mblock_c,
                BLOCK_D=mblock_d,
                num_warps=4,
            )
    return count, centroid, variance


def region_stats_backward(
    grad_centroid: torch.Tensor,
    grad_variance: torch.Tensor,
    emb: torch.Tensor,
    labels: torch.Tensor,
    count: torch.Tensor,
    centroid: torch.Tensor,
    ignore_index: int,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gradient of (centroid, variance) w.r.t. emb; same shape, dtype and strides as emb.
    `scale` (one element, on the device) multiplies both incoming gradients: region_loss."""
    grad = torch.empty_like(emb)
    B, D, H, W = emb.shape
    R = count.shape[1]
    P = H * W
    if grad.numel() == 0:
        return grad
    if R == 0:
        return grad.zero_()
    sdt = stats_dtype(emb.dtype)
    emb, (sb, sd, sp) = pixel_view(emb)
    out = grad if pixel_stride(grad) is not None else torch.empty_like(emb)
    labels = labels.contiguous()
    gc = grad_centroid.to(sdt).contiguous()
    gv = grad_variance.to(sdt).contiguous()
    count = count.to(sdt).contiguous()
    centroid = centroid.to(sdt).contiguous()
    scale = scale.to(sdt).reshape(1) if scale is not None else None
    block_p, block_d = _tile_blocks(P, D, max_d=64, tile=2048)
    grid = grid_items(triton.cdiv(P, block_p), B, triton.cdiv(D, block_d))
    with device_ctx(emb):
        _rs_backward_kernel[grid](
            emb,
            labels,
            gc,
            gv,
            count,
            centroid,
            scale if scale is not None else centroid,
            out,
            P,
            D,
            R,
            ignore_index,
            sb,
            sd,
            sp,
            out.stride(0),
            out.stride(1),
            pixel_stride(out),
            BLOCK_P=block_p,
            BLOCK_D=block_d,
            HAS_SCALE=scale is not None,
            num_warps=warps(block_p * block_d),
        )
    if out is not grad:
        grad.copy_(out)
    return grad


# --------------------------------------------------------------------------------------
# Opaque ops (schemas: pixelkernels/schemas.def; fake and autograd: pixelkernels/ops/region_stats.py)
# --------------------------------------------------------------------------------------


@triton_variant("region_stats")
def region_stats_op(emb, labels, num_regions, ignore_index, with_variance, check):
    op = "region_stats"
    expect_labels_match(emb, labels, op)
    expect(1 <= num_regions <= INT32_MAX, op, "num_regions must be in [1, 2^31), got ", num_regions)
    expect_same_device(op, emb, labels)
    checked_labels(labels, num_regions, ignore_index, check)
    count, centroid, variance = region_stats_forward(emb, labels, num_regions, ignore_index)
    # Memory-bound on a GPU, so the centred sweep stays; only the contract (variance 0) is kept.
    return count, centroid, variance if with_variance else variance.zero_()


@triton_variant("region_stats_backward")
def region_stats_backward_op(grad_centroid, grad_variance, emb, labels, count, centroid, ignore_index,
                             with_variance, grad_scale):  # fmt: skip
    op = "region_stats_backward"
    expect_labels_match(emb, labels, op)
    B, D = emb.shape[:2]
    R = count.shape[1] if count.dim() == 2 else -1
    expect(
        count.dim() == 2 and count.shape[0] == B and 1 <= R <= INT32_MAX
        and tuple(centroid.shape) == (B, R, D) and grad_centroid.shape == centroid.shape
        and (grad_variance is None or grad_variance.shape == count.shape),
        op, "inconsistent shapes: emb ", list(emb.shape), ", count ", list(count.shape), ", centroid ",
        list(centroid.shape), ", grad_centroid ", list(grad_centroid.shape), ", grad_variance ",
        None if grad_variance is None else list(grad_variance.shape),
    )  # fmt: skip
    expect_same_device(op, emb, labels, count, centroid, grad_centroid,
                       *(() if grad_variance is None else (grad_variance,)))  # fmt: skip
    if grad_scale is not None:
        expect(grad_scale.numel() == 1, op, "grad_scale must have one element, got ", list(grad_scale.shape))
        expect_same_device(op, emb, grad_scale)
    # Without variance that output is a constant 0: whatever gradient it got, none flows; None
    # (the autograd's, for a variance without gradient) is a zero gradient too.
    gv = grad_variance if with_variance and grad_variance is not None else count.new_zeros(count.shape)
    return region_stats_backward(grad_centroid, gv, emb, labels, count, centroid, ignore_index, grad_scale)


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for every kernel, input dtype and
    mode, used by the offline GPU compile check (.ci/triton_compile_check.py); other
    arguments compile as i32 scalars. Each input dtype is paired with another label width,
    so every width is compiled without multiplying the builds. The tiles and warps are the
    launchers' own (_tile_blocks, warps, the merge's tile rule) at D = 16 and D >= 64: the
    largest each kernel runs (they were 128 x 64 for the backward and the atomic path, which
    no launch uses, and spilled there)."""
    big = 1 << 20  # pixels: the tile rules' largest BLOCK_P

    def tiles(max_d, tile):
        return [_tile_blocks(big, d, max_d=max_d, tile=tile) for d in (16, 64)]

    specs = []
    for e, a, lab in (
        ("fp32", "fp32", "u8"),
        ("fp64", "fp64", "i64"),
        ("bf16", "fp32", "i16"),
        ("fp16", "fp32", "i32"),
        ("fp32", "fp32", "i8"),
    ):
        tile = {"emb_ptr": "*" + e, "lab_ptr": "*" + lab}
        for bp, bd in tiles(32, 8192):
            for one in (True, False):
                specs.append(
                    (
                        _rs_partials_kernel,
                        {**tile, "ws_n_ptr": "*i32", "ws_s_ptr": "*" + a, "ws_m2_ptr": "*" + a},
                        {"BLOCK_P": bp, "BLOCK_D": bd, "ONE_TILE": one},
                        warps(bp * bd),
                    )
                )
        mtile = 1024 if a == "fp64" else 2048  # the merge's launcher: BLOCK_C * BLOCK_D <= mtile
        for md in (16, 64):
            specs.append(
                (
                    _rs_merge_kernel,
                    {
                        "ws_n_ptr": "*i32",
                        "ws_s_ptr": "*" + a,
                        "ws_m2_ptr": "*" + a,
                        "count_ptr": "*" + a,
                        "centroid_ptr": "*" + a,
                        "var_ptr": "*" + a,
                    },
                    {"BLOCK_C": mtile // md, "BLOCK_D": md},
                    4,
                )
            )
        for bp, bd in tiles(64, 4096):
            specs.append(
                (
                    _rs_atomic_sum_kernel,
                    {**tile, "cnt_ptr": "*i32", "sum_ptr": "*" + a},
                    {"BLOCK_P": bp, "BLOCK_D": bd},
                    warps(bp * bd),
                )
            )
            specs.append(
                (
                    _rs_atomic_sqdev_kernel,
                    {**tile, "centroid_ptr": "*" + a, "ss_ptr": "*" + a},
                    {"BLOCK_P": bp, "BLOCK_D": bd},
                    warps(bp * bd),
                )
            )
        for bp, bd in tiles(64, 2048):
            for scaled in (False, True):
                specs.append(
                    (
                        _rs_backward_kernel,
                        {
                            **tile,
                            "gc_ptr": "*" + a,
                            "gv_ptr": "*" + a,
                            "count_ptr": "*" + a,
                            "centroid_ptr": "*" + a,
                            "scale_ptr": "*" + a,
                            "grad_ptr": "*" + e,
                        },
                        {"BLOCK_P": bp, "BLOCK_D": bd, "HAS_SCALE": scaled},
                        warps(bp * bd),
                    )
                )
    return specs
