"""Triton backend of triplet_hinge (csrc/common/triplet_hinge.h): the hinge over sampled pixel
triplets of each image, with random (given) or batch-hard (mined) positives and negatives.

    slot k of image b takes part iff anchor[b,k], positive[b,k], negative[b,k] are in [0, P)
    loss[b] = 1/n_b sum_{k takes part} h_k,   h_k = [ d(a_k, p_k) - d(a_k, n_k) + margin ]_+

(0 where n_b = 0; h > 0 or NaN keeps h: NaN propagates), d the Euclidean distance (squared: its
square), a_k = emb[b, :, anchor[b,k]]. hard: p_k is the farthest of {positive[b,j]} and n_k the
nearest of {negative[b,j]} over the slots j that take part, by squared distance; a NaN distance
wins over any number (the first NaN stays), then the lowest j among equals (better() of the
header). positive_used / negative_used: the p_k, n_k each slot used (-1 where it takes no part).
The backward reads only those:

    h_k > 0 or NaN:  u = a - p, v = a - n, c = grad_loss[b] / n_b,
              fu = 2c (squared) or c / |u| (0 where |u| = 0), fv likewise with v
              grad a += fu u - fv v,   grad p -= fu u,   grad n += fv v     (repeated pixels add up)

Everything is computed in the statistics type (float32; float64 for float64 emb); margin is
passed as float64 and rounded to it once, as the C++ kernels do (acc_t(margin)).

Kernels:

* `_th_mine_kernel` (hard only), grid ((anchor block, image), role): role 0 mines the farthest
  positive, role 1 the nearest negative (minimising d is maximising -d, so one comparison
  serves both; -NaN is NaN). With groups G the (B, K) sets are read as (B G, K / G) (the same
  memory): each group of K / G slots mines as an image of its own, of the map's image b; the
  group is grid axis 2 (launches of 65535 groups). A program holds BLOCK_A anchors and walks the K candidates in tiles of BLOCK_J slots, in increasing slot order, never materialising K x K: per tile it
  computes the [BLOCK_A, BLOCK_J] squared distances, reduces each row to (first NaN slot,
  best value, first slot with it) and merges that into a running (best, best slot, NaN seen)
  with better()'s rules (the running best changes only on a strictly better value, so ties
  keep the lowest slot; a NaN replaces any number and then stays). It writes the mined pixel
  of every slot (-1 where the slot takes no part). Distances:
  - exact path (float32, float64, and half with D < 16): sum_d (a_d - c_d)^2 in the
    accumulation type over [BLOCK_A, BLOCK_J, BLOCK_E] chunks of dims, as the reference does
    (differences first: no cancellation, bit-exact on exactly representable inputs).
    32 x 32 tiles, BLOCK_E = 4 dims (D = 2: 2; D = 1: 1, float64 2), 4 warps: 72-142
    registers, no spill (compiled offline for D = 1 and all-multiple-of-16 arguments too).
  - DOT path (float16/bfloat16 with D >= 16): |a|^2 + |c|^2 - 2 a.c, the cross term a
    tensor-core tl.dot of the half tiles with float32 accumulation, the norms in float32.
    On exactly representable inputs (the integer-valued tie tests: products and partial sums
    are small integers) every term is exact, so the mined slots equal the reference's; on
    general inputs the cancellation moves d^2 by ~1e-7 |a|^2, which can only flip
    near-ties (within float32 rounding) of half-precision embeddings. The expansion is
    used only where it is safe: a pre-pass over the block's anchors and the image's
    candidates (one more read of the candidates, 1/BLOCK_A of the loop's arithmetic) checks
    every float32 squared norm; if one is NaN, inf or above 2^120 (a NaN/inf pixel, or huge
    bfloat16 values), the block takes the exact loop instead (one dim at a time on 2-D
    tiles), so inf - inf never turns an inf distance into a NaN that would win, and every
    anchor row is compared by one formula throughout. The pairs' losses are recomputed
    exactly by the forward kernel below. 32 x 32 tiles, BLOCK_D = 16 or 32, 4 warps:
    ~130-165 registers, no spill (64 x 64 tiles spill at 4 warps).
    (CPU tensors only run under the interpreter, whose tl.dot reads bfloat16 as raw uint16
    bits in triton 3.9: there, and only there, bfloat16 tiles are widened to float32 first,
    which is exact.)
* `_th_forward_kernel`, grid ((slot block, image)): gathers a, p, n of BLOCK_K slots in
  [BLOCK_K, BLOCK_D] tiles (D blocks looped), sums (a-p)^2 and (a-n)^2, the hinge, and writes
  the block's partial sum of h and count of taking-part slots to (B, blocks) workspaces; the
  launcher adds the blocks in a fixed order (torch sum, no atomics: bitwise reproducible) and
  divides. Random mode: it also writes positive_used / negative_used (the given indices, -1
  where the slot takes no part); hard mode: it reads the mined ones (the same slots take part).
  The slot kernels use 1024-element tiles (BLOCK_D = 8 for D <= 8, else 32) with 8 warps:
  ~100-125 registers, no spill, 25 % occupancy.
* `_th_backward_kernel`, grid ((slot block, image)): recomputes u, v, h and the factors fu, fv
  (0 for slots with h <= 0 or taking no part; a NaN h passes its gradient, as relu's and the
  header's active()), then
  - ATOMIC (default): a second sweep over the D blocks adds fu u - fv v, -fu u, fv v at the
    three pixels with relaxed tl.atomic_add into a zeroed buffer in the accumulation type
    laid out like emb (half: a float32 buffer, rounded once into grad_emb at the end). Float
    atomics: the last bits depend on scheduling.
  - deterministic (torch.are_deterministic_algorithms_enabled()): writes fu, fv (B, 2, K) and
    the 3K target pixels of each image (P for entries that take no gradient) instead; the
    launcher sorts the targets (torch.sort, stable) and `_th_scatter_kernel`, grid ((entry,
    image), D block), lets the first entry of each run of equal targets add the run's
    contributions in sorted order and store the pixel's gradient once (the zero-filled
    gradient keeps 0 elsewhere): no atomics, bitwise reproducible, one rounding.

Contiguous and channels_last maps are read in place (other strides copied once, pixel_view);
indices are (B, K) int64 read at any value: out-of-range slots take no part and are never used
as an address (masked loads, index 0 substituted). K = 0, P = 0 and B = 0 return without a
launch; D = 0 launches on a dummy pointer with every load masked. The batch is on the flat
axis 0 (`grid_items`), so any B runs; block sizes depend on shapes only; no host syncs.
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
    pixel_offsets,
    pixel_view,
    split_pid,
    stats_dtype,
    with_strides_of,
)

# The DOT path's smallest D: tl.dot needs tiles of at least 16 along the reduced dim.
DOT_MIN_D = 16


# --------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------


@triton.jit
def _slots(a_ptr, p_ptr, n_ptr, b, offs_k, K, P):
    """(takes part, anchor, positive, negative) of slots offs_k of image b: the indices where
    the slot takes part, else 0 (a safe address). Slots past K load -1 (take no part)."""
    kmask = offs_k < K
    row = b * K + offs_k
    a = tl.load(a_ptr + row, mask=kmask, other=-1)
    p = tl.load(p_ptr + row, mask=kmask, other=-1)
    n = tl.load(n_ptr + row, mask=kmask, other=-1)
    valid = kmask & (a >= 0) & (a < P) & (p >= 0) & (p < P) & (n >= 0) & (n < P)
    # Clamped into [0, P), not tl.where(valid, a, 0): any pixel of the image is a safe address
    # (every load through these indices is masked by valid), and Triton 3.6 (the GPU image's)
    # fails to compile the half-precision DOT mining kernel when a value computed from valid
    # meets the exact fallback's 2-D tiles (TritonGPURemoveLayoutConversions: "condition and
    # result layouts differ").
    last = P - 1
    return valid, tl.minimum(tl.maximum(a, 0), last), tl.minimum(tl.maximum(p, 0), last), tl.minimum(tl.maximum(n, 0), last)


@triton.jit
def _sq_dists(x_ptr, b, ia, ip, i_n, valid, D, sb, sd, sp, ACC: tl.constexpr, BLOCK_K: tl.constexpr,
              BLOCK_D: tl.constexpr):  # fmt: skip
    """(|a - p|^2, |a - n|^2) of the slots (0 where they take no part), D blocks looped."""
    su = tl.zeros([BLOCK_K], ACC)
    sv = tl.zeros([BLOCK_K], ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        xa = load_tile(x_ptr, b, ia, offs_d, valid, dmask, sb, sd, sp, ACC)
        u = xa - load_tile(x_ptr, b, ip, offs_d, valid, dmask, sb, sd, sp, ACC)
        v = xa - load_tile(x_ptr, b, i_n, offs_d, valid, dmask, sb, sd, sp, ACC)
        su += tl.sum(u * u, axis=1)
        sv += tl.sum(v * v, axis=1)
    return su, sv


@triton.jit
def _hinge(su, sv, mg, SQUARED: tl.constexpr):
    """[d(a,p) - d(a,n) + margin]_+ from the squared distances; NaN propagates (hinge())."""
    if SQUARED:
        h = su - sv + mg
    else:
        h = tl.sqrt(su) - tl.sqrt(sv) + mg
    return tl.where((h > 0) | (h != h), h, 0.0)  # noqa: PLR0124  (NaN test)


@triton.jit
def _grad_factor(c, sq, SQUARED: tl.constexpr):
    """f with grad = f * u for the distance of squared length sq (grad_factor())."""
    if SQUARED:
        f = tl.zeros_like(sq) + 2.0 * c
    else:
        pos = sq > 0
        f = tl.where(pos, c / tl.sqrt(tl.where(pos, sq, 1.0)), 0.0)
        f = tl.where(sq != sq, sq, f)  # noqa: PLR0124  (NaN reaches every channel, as grad_factor())
    return f


@triton.jit
def _exact_d2(x_ptr, b, ia, va, ic, vc, D, sb, sd, sp, ACC: tl.constexpr, BLOCK_A: tl.constexpr,
              BLOCK_J: tl.constexpr, BLOCK_E: tl.constexpr):  # fmt: skip
    """[BLOCK_A, BLOCK_J] squared distances sum_d (a_d - c_d)^2 in ACC (differences first),
    BLOCK_E dims at a time (1: one dim at a time on 2-D tiles, the DOT kernel's light fallback)."""
    d2 = tl.zeros([BLOCK_A, BLOCK_J], ACC)
    if BLOCK_E == 1:
        pa = x_ptr + b * sb + ia * sp
        pc = x_ptr + b * sb + ic * sp
        for d in range(0, D):
            # 64-bit offset from an int64 zero: d is a plain int in the interpreter (no .to()),
            # and sd may be the constant 1 (Triton specialises an int argument equal to 1).
            dd = (tl.zeros([], tl.int64) + d) * sd
            xa = tl.load(pa + dd, mask=va, other=0.0).to(ACC)
            xc = tl.load(pc + dd, mask=vc, other=0.0).to(ACC)
            diff = xa[:, None] - xc[None, :]
            d2 += diff * diff
    else:
        for d0 in range(0, D, BLOCK_E):
            offs_d = d0 + tl.arange(0, BLOCK_E)
            dmask = offs_d < D
            xa = load_tile(x_ptr, b, ia, offs_d, va, dmask, sb, sd, sp, ACC)
            xc = load_tile(x_ptr, b, ic, offs_d, vc, dmask, sb, sd, sp, ACC)
            diff = xa[:, None, :] - xc[None, :, :]
            d2 += tl.sum(diff * diff, axis=2)
    return d2


@triton.jit
def _dot_d2(x_ptr, b, ia, va, ic, vc, D, sb, sd, sp, BLOCK_A: tl.constexpr, BLOCK_J: tl.constexpr,
            BLOCK_D: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    """[BLOCK_A, BLOCK_J] squared distances |a|^2 + |c|^2 - 2 a.c in float32, the cross term a
    tl.dot of the half tiles (float32 accumulation)."""
    an = tl.zeros([BLOCK_A], tl.float32)
    cn = tl.zeros([BLOCK_J], tl.float32)
    cross = tl.zeros([BLOCK_A, BLOCK_J], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        ma = va[:, None] & dmask[None, :]
        mc = vc[:, None] & dmask[None, :]
        xa = tl.load(x_ptr + pixel_offsets(b, ia, offs_d, sb, sd, sp), mask=ma, other=0.0)
        xc = tl.load(x_ptr + pixel_offsets(b, ic, offs_d, sb, sd, sp), mask=mc, other=0.0)
        fa = xa.to(tl.float32)
        fc = xc.to(tl.float32)
        an += tl.sum(fa * fa, axis=1)
        cn += tl.sum(fc * fc, axis=1)
        if DOT_F32:  # the interpreter's bfloat16 (see the module docstring): an exact widening
            cross = tl.dot(fa, tl.trans(fc), cross, input_precision="ieee")
        else:
            cross = tl.dot(xa, tl.trans(xc), cross)
    return an[:, None] + cn[None, :] - 2.0 * cross


@triton.jit
def _any_wide(x_ptr, b, idx, valid, D, sb, sd, sp, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """1 if a row that takes part has a squared norm (float32) that is NaN, inf or above 2^120
    (where |a|^2 + |c|^2 - 2 a.c could overflow or meet inf - inf), else 0."""
    nn = tl.zeros([BLOCK_N], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        x = load_tile(x_ptr, b, idx, offs_d, valid, offs_d < D, sb, sd, sp, tl.float32)
        nn += tl.sum(x * x, axis=1)
    wide = valid & ((nn <= 1.329228e36) == 0)  # 2^120; NaN compares false
    return tl.max(wide.to(tl.int32), axis=0)


@triton.jit
def _merge(d2, sign, vj, offs_j, K, best, best_j, best_nan):
    """Merge one candidate tile into the running (best, best slot, NaN seen) of each anchor,
    maximising sign * d2 with better()'s rules: a NaN wins over any number and then stays
    (the first NaN: tiles come in increasing slot order, and within a tile the lowest slot);
    among numbers the running best changes only on a strictly larger value (ties: lowest slot)."""
    key = d2 * sign
    jj = tl.zeros_like(best_j)[:, None] + offs_j[None, :]
    cand = vj[None, :]
    isnan = cand & (key != key)  # noqa: PLR0124  (NaN test)
    num = cand & (key == key)  # noqa: PLR0124
    nan_j = tl.min(tl.where(isnan, jj, K), axis=1)  # the tile's first NaN (K: none)
    kn = tl.where(num, key, float("-inf"))
    tile_best = tl.max(kn, axis=1)
    tile_j = tl.min(tl.where(num & (kn == tile_best[:, None]), jj, K), axis=1)  # its first slot
    open_ = best_nan == 0
    new_nan = open_ & (nan_j < K)
    take = open_ & (nan_j == K) & (tile_j < K) & ((best_j == K) | (tile_best > best))
    best_j = tl.where(new_nan, nan_j, tl.where(take, tile_j, best_j))
    best = tl.where(take, tile_best, best)
    best_nan = tl.where(new_nan, 1, best_nan)
    return best, best_j, best_nan


@triton.jit
def _mine_tiles(x_ptr, a_ptr, p_ptr, n_ptr, b, img, ia, va, role, sign, K, P, D, sb, sd, sp, best, best_j, best_nan,
                ACC: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
                BLOCK_E: tl.constexpr, EXACT: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    """The walk over the image's candidate tiles in slot order, by one formula (EXACT: the sum of
    squared differences, else the tl.dot expansion); the mined slot of every anchor (K: none).
    One formula per call, chosen at compile time: a run-time branch inside the loop would keep
    both paths' registers live (measured: the DOT kernel's 96 registers became 121)."""
    for j0 in range(0, K, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        vj, _ja, jp, jn = _slots(a_ptr, p_ptr, n_ptr, b, offs_j, K, P)
        ic = tl.where(role == 0, jp, jn)
        if EXACT:
            d2 = _exact_d2(x_ptr, img, ia, va, ic, vj, D, sb, sd, sp, ACC, BLOCK_A, BLOCK_J, BLOCK_E)
        else:
            d2 = _dot_d2(x_ptr, img, ia, va, ic, vj, D, sb, sd, sp, BLOCK_A, BLOCK_J, BLOCK_D, DOT_F32)
        best, best_j, best_nan = _merge(d2, sign, vj, offs_j, K, best, best_j, best_nan)
    return best_j


@triton.jit
def _th_mine_kernel(x_ptr, a_ptr, p_ptr, n_ptr, pu_ptr, nu_ptr, K, P, D, sb, sd, sp, num_blocks, groups, g0,
                    ACC: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_E: tl.constexpr, DOT: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    img, blk = split_pid(num_blocks)
    # the group's K slots (K / groups of the op's) of image img; the group is grid axis 2 (the
    # (image, group) pair as axis 0's item, divided back, left 16 B of stack in the tl.dot kernel)
    b = img * groups + g0 + tl.program_id(2)
    role = tl.program_id(1)  # 0: farthest positive, 1: nearest negative
    sign = 1.0 - 2.0 * role.to(ACC)  # maximise sign * d^2 (-NaN is NaN)
    offs_a = blk * BLOCK_A + tl.arange(0, BLOCK_A)
    va, ia, _ip, _in = _slots(a_ptr, p_ptr, n_ptr, b, offs_a, K, P)
    best = tl.full([BLOCK_A], float("-inf"), ACC)
    best_j = tl.zeros([BLOCK_A], tl.int32) + K  # K: none yet
    best_nan = tl.zeros([BLOCK_A], tl.int32)
    if DOT:
        # The expansion holds only where every norm is finite and moderate: otherwise (a NaN or
        # inf pixel among the block's anchors or the image's candidates) the exact loop runs.
        wide = _any_wide(x_ptr, img, ia, va, D, sb, sd, sp, BLOCK_A, BLOCK_D)
        for j0 in range(0, K, BLOCK_J):
            vj, _ja, jp, jn = _slots(a_ptr, p_ptr, n_ptr, b, j0 + tl.arange(0, BLOCK_J), K, P)
            wide += _any_wide(x_ptr, img, tl.where(role == 0, jp, jn), vj, D, sb, sd, sp, BLOCK_J, BLOCK_D)
        if wide > 0:
            best_j = _mine_tiles(x_ptr, a_ptr, p_ptr, n_ptr, b, img, ia, va, role, sign, K, P, D, sb, sd, sp, best, best_j,
                                 best_nan, ACC, BLOCK_A, BLOCK_J, BLOCK_D, BLOCK_E, True, DOT_F32)  # fmt: skip
        else:
            best_j = _mine_tiles(x_ptr, a_ptr, p_ptr, n_ptr, b, img, ia, va, role, sign, K, P, D, sb, sd, sp, best, best_j,
                                 best_nan, ACC, BLOCK_A, BLOCK_J, BLOCK_D, BLOCK_E, False, DOT_F32)  # fmt: skip
    else:
        best_j = _mine_tiles(x_ptr, a_ptr, p_ptr, n_ptr, b, img, ia, va, role, sign, K, P, D, sb, sd, sp, best, best_j,
                             best_nan, ACC, BLOCK_A, BLOCK_J, BLOCK_D, BLOCK_E, True, DOT_F32)  # fmt: skip
    # A slot that takes part is a candidate of itself: best_j < K there.
    row = b * K
    js = tl.where(va, best_j, 0)
    mined_p = tl.load(p_ptr + row + js, mask=va, other=-1)
    mined_n = tl.load(n_ptr + row + js, mask=va, other=-1)
    mined = tl.where(va, tl.where(role == 0, mined_p, mined_n), -1)
    kmask = offs_a < K
    if role == 0:
        tl.store(pu_ptr + row + offs_a, mined, mask=kmask)
    else:
        tl.store(nu_ptr + row + offs_a, mined, mask=kmask)


@triton.jit
def _th_forward_kernel(x_ptr, a_ptr, p_ptr, n_ptr, pu_ptr, nu_ptr, part_ptr, cnt_ptr, K, P, D,
                       margin: tl.float64, sb, sd, sp, num_blocks, SQUARED: tl.constexpr,
                       WRITE_USED: tl.constexpr, ACC: tl.constexpr, BLOCK_K: tl.constexpr,
                       BLOCK_D: tl.constexpr):  # fmt: skip
    b, blk = split_pid(num_blocks)
    offs_k = blk * BLOCK_K + tl.arange(0, BLOCK_K)
    valid, ia, ip, i_n = _slots(a_ptr, p_ptr, n_ptr, b, offs_k, K, P)
    su, sv = _sq_dists(x_ptr, b, ia, ip, i_n, valid, D, sb, sd, sp, ACC, BLOCK_K, BLOCK_D)
    h = tl.where(valid, _hinge(su, sv, tl.full([], margin, ACC), SQUARED), 0.0)
    out = b * num_blocks + blk
    tl.store(part_ptr + out, tl.sum(h, axis=0))
    tl.store(cnt_ptr + out, tl.sum(valid.to(tl.int32), axis=0))
    if WRITE_USED:
        kmask = offs_k < K
        tl.store(pu_ptr + b * K + offs_k, tl.where(valid, ip, -1), mask=kmask)
        tl.store(nu_ptr + b * K + offs_k, tl.where(valid, i_n, -1), mask=kmask)


@triton.jit
def _th_backward_kernel(x_ptr, a_ptr, p_ptr, n_ptr, c_ptr, g_ptr, f_ptr, t_ptr, K, P, D, margin: tl.float64,
                        sb, sd, sp, num_blocks, SQUARED: tl.constexpr, ATOMIC: tl.constexpr,
                        ACC: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    b, blk = split_pid(num_blocks)
    offs_k = blk * BLOCK_K + tl.arange(0, BLOCK_K)
    valid, ia, ip, i_n = _slots(a_ptr, p_ptr, n_ptr, b, offs_k, K, P)
    su, sv = _sq_dists(x_ptr, b, ia, ip, i_n, valid, D, sb, sd, sp, ACC, BLOCK_K, BLOCK_D)
    h = _hinge(su, sv, tl.full([], margin, ACC), SQUARED)
    active = valid & ((h > 0) | (h != h))  # noqa: PLR0124  (a NaN hinge passes its gradient, as relu's)
    c = tl.load(c_ptr + b)
    fu = tl.where(active, _grad_factor(c, su, SQUARED), 0.0)
    fv = tl.where(active, _grad_factor(c, sv, SQUARED), 0.0)
    if ATOMIC:
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            dmask = offs_d < D
            m = active[:, None] & dmask[None, :]
            xa = load_tile(x_ptr, b, ia, offs_d, active, dmask, sb, sd, sp, ACC)
            gu = fu[:, None] * (xa - load_tile(x_ptr, b, ip, offs_d, active, dmask, sb, sd, sp, ACC))
            gv = fv[:, None] * (xa - load_tile(x_ptr, b, i_n, offs_d, active, dmask, sb, sd, sp, ACC))
            tl.atomic_add(g_ptr + pixel_offsets(b, ia, offs_d, sb, sd, sp), gu - gv, mask=m, sem="relaxed")
            tl.atomic_add(g_ptr + pixel_offsets(b, ip, offs_d, sb, sd, sp), -gu, mask=m, sem="relaxed")
            tl.atomic_add(g_ptr + pixel_offsets(b, i_n, offs_d, sb, sd, sp), gv, mask=m, sem="relaxed")
    else:
        kmask = offs_k < K
        tl.store(f_ptr + 2 * b * K + offs_k, fu, mask=kmask)
        tl.store(f_ptr + (2 * b + 1) * K + offs_k, fv, mask=kmask)
        trow = t_ptr + 3 * b * K + offs_k
        tl.store(trow, tl.where(active, ia, P), mask=kmask)
        tl.store(trow + K, tl.where(active, ip, P), mask=kmask)
        tl.store(trow + 2 * K, tl.where(active, i_n, P), mask=kmask)


@triton.jit
def _th_scatter_kernel(x_ptr, a_ptr, p_ptr, n_ptr, f_ptr, key_ptr, ord_ptr, gx_ptr, K, P, D, sb, sd, sp,
                       ACC: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    E = 3 * K
    b, e = split_pid(E)
    row = b * E
    t = tl.load(key_ptr + row + e)
    prev = tl.load(key_ptr + row + e - 1, mask=e > 0, other=-1)
    if (t < P) & (t != prev):  # the first entry of a run of equal targets (P: no gradient)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        dofs = b * sb + offs_d.to(tl.int64) * sd
        acc = tl.zeros([BLOCK_D], ACC)
        j = e
        tj = t
        while tj == t:
            ent = tl.load(ord_ptr + row + j)  # entry role * K + slot
            role = ent // K
            k = ent - role * K
            ia = tl.load(a_ptr + b * K + k)
            ip = tl.load(p_ptr + b * K + k)
            i_n = tl.load(n_ptr + b * K + k)
            fu = tl.load(f_ptr + 2 * b * K + k)  # f: (B, 2, K)
            fv = tl.load(f_ptr + (2 * b + 1) * K + k)
            xa = tl.load(x_ptr + dofs + ia * sp, mask=dmask, other=0.0).to(ACC)
            gu = fu * (xa - tl.load(x_ptr + dofs + ip * sp, mask=dmask, other=0.0).to(ACC))
            gv = fv * (xa - tl.load(x_ptr + dofs + i_n * sp, mask=dmask, other=0.0).to(ACC))
            acc += tl.where(role == 0, gu - gv, tl.where(role == 1, -gu, gv))
            j += 1
            tj = tl.load(key_ptr + row + j, mask=j < E, other=P)
        tl.store(gx_ptr + dofs + t * sp, acc.to(gx_ptr.dtype.element_ty), mask=dmask)


# --------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------


_MAX_GROUPS = 65535  # a Triton grid's axis 2


def _slot_blocks(K: int, D: int):
    """(BLOCK_K, BLOCK_D, num_warps) of the slot kernels: 1024-element tiles (BLOCK_K at most K's
    power of 2), 4 elements a thread: ~100-125 registers, no spill, 25 % occupancy (sm_80/90)."""
    block_d = 8 if D <= 8 else 32
    block_k = min(1024 // block_d, max(16, triton.next_power_of_2(max(K, 1))))
    return block_k, block_d, 8 if block_k * block_d >= 1024 else 4


def _mine_blocks(K: int, D: int, dtype: torch.dtype):
    """(BLOCK_A, BLOCK_J, BLOCK_D, BLOCK_E, DOT, num_warps) of the mining kernel."""
    kk = max(16, triton.next_power_of_2(max(K, 1)))
    if dtype in (torch.float16, torch.bfloat16) and D >= DOT_MIN_D:
        t = min(32, kk)
        return t, t, 32 if D >= 32 else 16, 1, True, 4
    t = min(32, kk)
    # Dims per step of the exact loop: up to 4, one for D = 1 (no masked lanes), but two in
    # float64, whose one-dim loop spills (8 B of stack on sm_90; two dims: 142 registers, none).
    e = min(4, triton.next_power_of_2(max(D, 1)))
    return t, t, 1, max(e, 2) if dtype == torch.float64 else e, False, 4


def _pixels(emb):
    """(map to read, strides): in place where pixel_view allows; a 1-element dummy for D = 0
    (every load is masked, but the pointer must be a real allocation)."""
    x, strides = pixel_view(emb)
    if x.numel() == 0:
        x = torch.zeros(1, dtype=emb.dtype, device=emb.device)
    return x, strides


def triplet_hinge_forward(emb, anchor, positive, negative, margin, squared, hard, mean=False, groups=1):
    """emb (B, D, H, W), anchor/positive/negative (B, K) int64 -> loss (B,) (mean: () over the
    images with n_b > 0) in the statistics dtype, positive_used, negative_used (B, K) int64;
    hard mining within groups of K / groups slots."""
    B, D, H, W = emb.shape
    P, K = H * W, anchor.shape[1]
    st = stats_dtype(emb.dtype)
    a, p, n = anchor.contiguous(), positive.contiguous(), negative.contiguous()
    if B == 0 or K == 0 or P == 0:  # no slot takes part
        return (torch.zeros(() if mean else B, dtype=st, device=emb.device), torch.full_like(a, -1),
                torch.full_like(a, -1))  # fmt: skip
    x, (sb, sd, sp) = _pixels(emb)
    acc = tl.float64 if st == torch.float64 else tl.float32
    pu, nu = torch.empty_like(a), torch.empty_like(a)
    bk, bd, nw = _slot_blocks(K, D)
    nblk = triton.cdiv(K, bk)
    part = torch.empty(B, nblk, dtype=st, device=emb.device)
    cnt = torch.empty(B, nblk, dtype=torch.int32, device=emb.device)
    with device_ctx(x):
        if hard:
            kg = K // groups  # each group of slots mines as an image of its own: (B groups, kg) sets
            ba, bj, bdd, be, dot, mw = _mine_blocks(kg, D, emb.dtype)
            na = triton.cdiv(kg, ba)
            # CPU tensors: the interpreter, whose bfloat16 tl.dot needs the float32 widening
            dot_f32 = dot and emb.dtype == torch.bfloat16 and not emb.is_cuda
            for g0 in range(0, groups, _MAX_GROUPS):  # grid axis 2: one launch (groups beyond it: more)
                _th_mine_kernel[grid_items(na, B, 2, min(groups - g0, _MAX_GROUPS))](
                    x, a, p, n, pu, nu, kg, P, D, sb, sd, sp, na, groups, g0, ACC=acc, BLOCK_A=ba, BLOCK_J=bj,
                    BLOCK_D=bdd, BLOCK_E=be, DOT=dot, DOT_F32=dot_f32, num_warps=mw,
                )  # fmt: skip
            p, n = pu, nu
        _th_forward_kernel[grid_items(nblk, B)](
            x, a, p, n, pu, nu, part, cnt, K, P, D, float(margin), sb, sd, sp, nblk, SQUARED=bool(squared),
            WRITE_USED=not hard, ACC=acc, BLOCK_K=bk, BLOCK_D=bd, num_warps=nw,
        )  # fmt: skip
    # blocks added in a fixed order; n_b = 0 gives 0 / 1
    n = cnt.sum(1)
    loss = part.sum(1) / n.clamp(min=1).to(st)
    if mean:
        loss = loss.sum() / (n > 0).sum().clamp(min=1).to(st)
    return loss, pu, nu


def triplet_hinge_backward(grad_loss, emb, anchor, positive_used, negative_used, margin, squared, mean=False):
    """-> grad_emb (emb's shape, dtype and strides). Float atomics unless deterministic
    algorithms are on (then sorted targets: bitwise reproducible)."""
    B, D, H, W = emb.shape
    P, K = H * W, anchor.shape[1]
    st = stats_dtype(emb.dtype)
    grad_emb = torch.empty_like(emb)
    if grad_emb.numel() == 0:
        return grad_emb
    if K == 0:
        return grad_emb.zero_()
    a, p, n = anchor.contiguous(), positive_used.contiguous(), negative_used.contiguous()
    x, (sb, sd, sp) = pixel_view(emb)
    acc = acc_of(x)
    out = grad_emb if grad_emb.stride() == x.stride() else with_strides_of(None, x)
    valid = ((a >= 0) & (a < P) & (p >= 0) & (p < P) & (n >= 0) & (n < P)).sum(1)
    g = grad_loss.to(st)
    if mean:  # the mean's g / #{b : n_b > 0}, then each image's 1 / n_b (the reference's rounding)
        g = (g / (valid > 0).sum().clamp(min=1).to(st)).expand(B)
    c = (g / valid.clamp(min=1).to(st)).contiguous()
    bk, bd, nw = _slot_blocks(K, D)
    nblk = triton.cdiv(K, bk)
    deterministic = torch.are_deterministic_algorithms_enabled()
    with device_ctx(x):
        if not deterministic:
            # float32/float64: the atomics add into the output itself; half: into a float32 buffer
            buf = out
            if out.dtype != st:
                buf = torch.empty_strided(x.shape, x.stride(), dtype=st, device=x.device)
            buf.zero_()
            _th_backward_kernel[grid_items(nblk, B)](
                x, a, p, n, c, buf, c, a, K, P, D, float(margin), sb, sd, sp, nblk, SQUARED=bool(squared),
                ATOMIC=True, ACC=acc, BLOCK_K=bk, BLOCK_D=bd, num_warps=nw,
            )  # fmt: skip
            if buf is not out:
                out.copy_(buf)  # half: one rounding
        else:
            f = torch.empty(B, 2, K, dtype=st, device=x.device)
            tgt = torch.empty(B, 3 * K, dtype=torch.int64, device=x.device)
            _th_backward_kernel[grid_items(nblk, B)](
                x, a, p, n, c, c, f, tgt, K, P, D, float(margin), sb, sd, sp, nblk, SQUARED=bool(squared),
                ATOMIC=False, ACC=acc, BLOCK_K=bk, BLOCK_D=bd, num_warps=nw,
            )  # fmt: skip
            keys, order = torch.sort(tgt, dim=1, stable=True)
            out.zero_()
            sd_block = 32 if D <= 32 else 128
            _th_scatter_kernel[grid_items(3 * K, B, triton.cdiv(D, sd_block))](
                x, a, p, n, f, keys, order, out, K, P, D, sb, sd, sp, ACC=acc, BLOCK_D=sd_block, num_warps=1,
            )  # fmt: skip
    if out is not grad_emb:
        grad_emb.copy_(out)
    return grad_emb


# --------------------------------------------------------------------------------------
# Opaque ops (schemas: pixelkernels/schemas.def; fake and autograd: pixelkernels/ops/triplet_hinge.py)
# --------------------------------------------------------------------------------------


def _expect_index_sets(op, emb, anchor, *named):
    """(B, K) int64 index sets for emb, as csrc/triplet_hinge.cpp checks them."""
    expect(anchor.dim() == 2, op, "anchor must be (B, K), got ", list(anchor.shape))
    sizes = (emb.shape[0], anchor.shape[1])
    for t, name in ((anchor, "anchor"), *named):
        expect(t.dtype == torch.int64, op, name, " must be int64, got ", t.dtype)
        expect_sizes(t, sizes, op, name)


@triton_variant("triplet_hinge")
def triplet_hinge_op(emb, anchor, positive, negative, margin, squared, hard, mean, groups):
    op = "triplet_hinge"
    expect_map(emb, op)
    expect_same_device(op, emb, anchor, positive, negative)
    _expect_index_sets(op, emb, anchor, (positive, "positive"), (negative, "negative"))
    K = anchor.shape[1]
    expect(groups >= 1 and K % groups == 0, op, "groups must be >= 1 and divide K = ", K, ", got ", groups)
    return triplet_hinge_forward(emb, anchor, positive, negative, margin, squared, hard, mean, groups)


@triton_variant("triplet_hinge_backward")
def triplet_hinge_backward_op(grad_loss, emb, anchor, positive_used, negative_used, margin, squared, mean):
    op = "triplet_hinge_backward"
    expect_map(emb, op)
    expect_same_device(op, emb, grad_loss, anchor, positive_used, negative_used)
    expect_sizes(grad_loss, () if mean else emb.shape[:1], op, "grad_loss")
    _expect_index_sets(op, emb, anchor, (positive_used, "positive_used"), (negative_used, "negative_used"))
    return triplet_hinge_backward(grad_loss, emb, anchor, positive_used, negative_used, margin, squared, mean)


def compile_specs():
    """(kernel, pointer/scalar signature, constexprs, num_warps) for the offline GPU compile
    check (.ci/triton_compile_check.py); other arguments compile as i32. The configurations the
    launchers pick at full size (a small K only shrinks BLOCK_K / BLOCK_A / BLOCK_J)."""
    specs = []
    types = (("fp32", "fp32", tl.float32), ("fp64", "fp64", tl.float64), ("bf16", "fp32", tl.float32),
             ("fp16", "fp32", tl.float32))  # fmt: skip
    for e, a, acc in types:
        x = {"x_ptr": "*" + e, "a_ptr": "*i64", "p_ptr": "*i64", "n_ptr": "*i64"}
        used = {"pu_ptr": "*i64", "nu_ptr": "*i64"}
        fwd = {**x, **used, "part_ptr": "*" + a, "cnt_ptr": "*i32", "margin": "fp64"}
        bwd = {**x, "c_ptr": "*" + a, "g_ptr": "*" + a, "f_ptr": "*" + a, "t_ptr": "*i64", "margin": "fp64"}
        for bk, bd in ((128, 8), (32, 32)):
            blocks = {"ACC": acc, "BLOCK_K": bk, "BLOCK_D": bd}
            for sq in (False, True):
                for write in (True, False):  # random mode writes the used sets, hard mode reads them
                    specs.append((_th_forward_kernel, fwd, {"SQUARED": sq, "WRITE_USED": write, **blocks}, 8))
                for atomic in (True, False):
                    specs.append((_th_backward_kernel, bwd, {"SQUARED": sq, "ATOMIC": atomic, **blocks}, 8))
        mine = {**x, **used}
        tiles = {"ACC": acc, "BLOCK_A": 32, "BLOCK_J": 32, "DOT_F32": False}
        for be in (2, 4) if e == "fp64" else (1, 2, 4):  # the exact loop's dims per step: D = 1, 2, >= 3
            specs.append((_th_mine_kernel, mine, {**tiles, "BLOCK_D": 1, "BLOCK_E": be, "DOT": False}, 4))
        if e in ("fp16", "bf16"):
            for bdd in (16, 32):
                specs.append((_th_mine_kernel, mine, {**tiles, "BLOCK_D": bdd, "BLOCK_E": 1, "DOT": True}, 4))
        scatter = {**x, "f_ptr": "*" + a, "key_ptr": "*i64", "ord_ptr": "*i64", "gx_ptr": "*" + e}
        for bd in (32, 128):
            specs.append((_th_scatter_kernel, scatter, {"ACC": acc, "BLOCK_D": bd}, 1))
    return specs
