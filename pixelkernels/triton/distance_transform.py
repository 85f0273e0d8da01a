"""Triton backend of distance_transform (csrc/common/distance_transform.h): the CUDA kernels'
algorithm (csrc/cuda/distance_transform.cu) in three launches, with t, pos and rank in torch
buffers.

- ``_columns_kernel``: a program per block of columns of one image sweeps tiles of rows down (the
  last target at or above every pixel: a max down the tile, carried from the tile above), then up
  (the first at or below, a min up the tile; the nearer wins, the upper on a tie): t,
  the row of the nearest target in the pixel's column (KNONE: the column has none).
- ``_compact_kernel``: a program per image: pos, the columns with a target in order, and rank[x],
  how many of them are at or left of x (a cumulative sum over chunks of columns).
- ``_rows_kernel``: a program per block of pixels; every lane walks pos outward from its column,
  each column q giving (y - t)²·sy² + (x - q)²·sx², and
  stops on each side once (x - q)²·sx² alone is no better than its best. The loop runs while any
  lane walks. Without spacing the values are int64 (exact); with it float64 products and sums
  rounded as written (compiled without FMA contraction, ``enable_fp_fusion=False``), the
  reference's values. The squared spacings reach the kernel as the bits of their float64
  (``_common.f64_bits``: a Python float argument would be float32, a device tensor made from them a
  host sync).
"""

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from ._common import device_ctx, expect, f64_bits, f64_from_bits, grid_items, mask_bytes, split_pid

KNONE = tl.constexpr(0x3FFFFFFF)  # t of a column without a target: larger than any row
_FAR = tl.constexpr(2**62)  # an int64 squared distance no pixel reaches (H, W < 2^31)
_TILE = (32, 16)  # rows x columns of a column-sweep tile
_CHUNK, _ROWS = 1024, 128  # columns a step of the compaction, pixels per program of the row step
# Under the CPU interpreter: more columns and pixels a program (lanes that never interact: only the
# number of programs changes; the row tiles, whose carries do interact, stay 32)
_CPU_COLS, _CPU_ROWS = 64, 1024


@triton.jit
def _scan(v, r, none, DOWN: tl.constexpr):
    """Along the rows of the [ROWS, COLS] tile v (r = arange(ROWS)): DOWN, the max over the rows
    at or above; else the min over the rows at or below. As one masked reduction of a
    [ROWS, ROWS, COLS] broadcast: ROWS times the work of a scan, but no dependent steps, and the
    CPU interpreter runs it as a few array operations (tl.associative_scan there calls the
    combine function element by element: 100 ms a tile)."""
    if DOWN:
        keep = r[None, :] <= r[:, None]  # [i, j]: row j at or above row i
        out = tl.max(tl.where(keep[:, :, None], v[None, :, :], none), 1)
    else:
        keep = r[None, :] >= r[:, None]
        out = tl.min(tl.where(keep[:, :, None], v[None, :, :], none), 1)
    return out


@triton.jit
def _targets(m_ptr, pred_ptr, gt_ptr, ign_ptr, b, y, x, at, ok, B0, H0, W0, FRAMED: tl.constexpr,
             IGNORE: tl.constexpr):  # fmt: skip
    """Whether the [ROWS, COLS] pixels (y, x) (flat `at`) of image b are targets (False where not
    ok). A byte mask: where the byte is 0. FRAMED (next_clicks): the 2B framed (H + 2) x (W + 2)
    error masks of the B0 images of H0 x W0, read from pred, gt and ignore: images 0..B0-1 the
    false negatives, B0..2B0-1 the false positives; a target on the frame and wherever the image
    has no error of that kind."""
    if FRAMED:
        fn = b < B0
        inside = ok & (y >= 1) & (x >= 1) & (y <= H0) & (x <= W0)
        j = (tl.where(fn, b, b - B0) * H0 + y - 1) * W0 + x - 1
        g = tl.load(gt_ptr + j, mask=inside, other=0) != 0
        pr = tl.load(pred_ptr + j, mask=inside, other=0) != 0
        err = inside & tl.where(fn, g & (pr == 0), pr & (g == 0))
        if IGNORE:
            err = err & (tl.load(ign_ptr + j, mask=inside, other=1) == 0)
        tgt = ok & (err == 0)
    else:
        tgt = tl.load(m_ptr + at, mask=ok, other=1) == 0
    return tgt


@triton.jit
def _columns_kernel(m_ptr, pred_ptr, gt_ptr, ign_ptr, t_ptr, H, W, B0, H0, W0, FRAMED: tl.constexpr,
                    IGNORE: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):  # fmt: skip
    b, blk = split_pid(tl.cdiv(W, COLS))
    x = blk * COLS + tl.arange(0, COLS)
    col = b * H * W + x
    r = tl.arange(0, ROWS)
    carry = tl.full([COLS], -1, tl.int32)  # the last target above the tile
    for y0 in range(0, H, ROWS):
        y = y0 + r
        at = col[None, :] + (y * W)[:, None]  # y * W < H * W < 2^31
        ok = (y < H)[:, None] & (x < W)[None, :]
        tgt = _targets(m_ptr, pred_ptr, gt_ptr, ign_ptr, b, y[:, None], x[None, :], at, ok, B0, H0, W0, FRAMED,
                       IGNORE)  # fmt: skip
        above = tl.maximum(_scan(tl.where(tgt, y[:, None], -1), r, -1, True), carry[None, :])
        tl.store(t_ptr + at, above, mask=ok)
        carry = tl.max(above, 0)
    tl.debug_barrier()  # the upward sweep reads what the downward one wrote
    n = tl.cdiv(H, ROWS)
    carry = tl.full([COLS], KNONE, tl.int32)  # the first target below the tile
    for k in range(0, n):
        y = (n - 1 - k) * ROWS + r
        at = col[None, :] + (y * W)[:, None]
        ok = (y < H)[:, None] & (x < W)[None, :]
        tgt = _targets(m_ptr, pred_ptr, gt_ptr, ign_ptr, b, y[:, None], x[None, :], at, ok, B0, H0, W0, FRAMED,
                       IGNORE)  # fmt: skip
        below = tl.minimum(_scan(tl.where(tgt, y[:, None], KNONE), r, KNONE, False), carry[None, :])
        u = tl.load(t_ptr + at, mask=ok, other=-1)
        yy = y[:, None]
        tl.store(t_ptr + at, tl.where((u >= 0) & (yy - u <= below - yy), u, below), mask=ok)
        carry = tl.min(below, 0)


@triton.jit
def _compact_kernel(t_ptr, pos_ptr, rank_ptr, H, W, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    row = t_ptr + b * H * W  # any row: KNONE exactly in the columns without a target
    count = tl.full([], 0, tl.int32)
    for x0 in range(0, W, BLOCK):
        x = x0 + tl.arange(0, BLOCK)
        on = x < W
        has = tl.load(row + x, mask=on, other=KNONE) != KNONE
        r = count + tl.cumsum(has.to(tl.int32), 0)  # columns <= x with a target
        tl.store(rank_ptr + b * W + x, r, mask=on)
        tl.store(pos_ptr + b * W + r - 1, x, mask=has)
        count += tl.sum(has.to(tl.int32), 0)


@triton.jit
def _walk(i, go, best, bq, x, y, trow, cols, n, sy2, sx2, LEFT: tl.constexpr, EXACT: tl.constexpr):
    """One side's walk: every lane with go takes the columns cols[i], cols[i -/+ 1], ... while the
    column distance alone beats its best. Leftward an equal distance takes over, rightward it
    does not: a tie goes to the smallest column, as the reference's argmin has it."""
    while tl.max(go.to(tl.int32), 0) > 0:
        q = tl.load(cols + i, mask=go, other=0)
        dx = (x - q).to(tl.int64)
        ty = tl.load(trow + q, mask=go, other=0)
        dy = (y - ty).to(tl.int64)
        if EXACT:
            dx2 = dx * dx
            c = dy * dy + dx2
        else:
            dx2 = (dx * dx).to(tl.float64) * sx2
            c = (dy * dy).to(tl.float64) * sy2 + dx2
        if LEFT:
            go = go & (dx2 <= best)
            better = go & (c <= best)
        else:
            go = go & (dx2 < best)
            better = go & (c < best)
        best = tl.where(better, c, best)
        bq = tl.where(better, q, bq)
        if LEFT:
            i -= 1
            go = go & (i >= 0)
        else:
            i += 1
            go = go & (i < n)
    return best, bq


@triton.jit
def _rows_kernel(t_ptr, pos_ptr, rank_ptr, dist_ptr, idx_ptr, clk_ptr, keys_ptr, H, W, B0, H0, W0, sy_hi, sy_lo,
                 sx_hi, sx_lo,
                 EXACT: tl.constexpr, SQUARED: tl.constexpr, INDICES: tl.constexpr, FARTHEST: tl.constexpr,
                 CLICKED: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """Each pixel's squared distance to its nearest target: written (the distance, or with SQUARED
    its square; INDICES: and the target), or with FARTHEST (next_clicks, the framed masks of
    _targets) reduced to the image's key, the float32 D²'s bits above H0·W0 - 1 - j for pixel j of
    the unframed image (a larger D², then the first pixel in raster order, wins; the frame and
    clicked pixels count 0): a max over the program, one atomic max a program."""
    P = H * W
    b, blk = split_pid(tl.cdiv(P, BLOCK))
    p = blk * BLOCK + tl.arange(0, BLOCK)
    on = p < P
    y = p // W
    x = p - y * W
    trow = t_ptr + b * P + y * W
    if EXACT:
        sy2 = 1.0
        sx2 = 1.0
        best = tl.full([BLOCK], _FAR, tl.int64)
    else:
        sy2 = f64_from_bits(sy_hi, sy_lo)
        sx2 = f64_from_bits(sx_hi, sx_lo)
        best = tl.full([BLOCK], float("inf"), tl.float64)
    bq = tl.full([BLOCK], -1, tl.int32)
    cols = pos_ptr + b * W
    n = tl.load(rank_ptr + b * W + W - 1)  # columns with a target
    r = tl.load(rank_ptr + b * W + x, mask=on, other=0)  # cols[r - 1] <= x < cols[r]
    best, bq = _walk(r - 1, on & (r > 0), best, bq, x, y, trow, cols, n, sy2, sx2, True, EXACT)  # x itself first
    best, bq = _walk(r, on & (r < n), best, bq, x, y, trow, cols, n, sy2, sx2, False, EXACT)
    found = bq >= 0
    d2 = best.to(tl.float64)
    if FARTHEST:
        v = d2.to(tl.float32)  # distance_transform's squared float32
        inside = on & (y >= 1) & (x >= 1) & (y <= H0) & (x <= W0)
        j = (y - 1) * W0 + x - 1
        if CLICKED:
            bi = tl.where(b < B0, b, b - B0)
            inside = inside & (tl.load(clk_ptr + bi * H0 * W0 + j, mask=inside, other=1) == 0)
        key = (v.to(tl.int32, bitcast=True).to(tl.int64) << 32) | (H0 * W0 - 1 - j).to(tl.int64)
        top = tl.max(tl.where(inside & (v > 0), key, 0), 0)
        tl.atomic_max(keys_ptr + b, top, mask=top > 0)
    else:
        if not SQUARED:
            d2 = tl.sqrt(d2)  # float64: correctly rounded (sqrt.rn.f64)
        tl.store(dist_ptr + b * P + p, tl.where(found, d2.to(tl.float32), float("inf")), mask=on)
        if INDICES:
            iy = tl.load(trow + bq, mask=on & found, other=-1)
            tl.store(idx_ptr + b * 2 * P + p, tl.where(found, iy, -1).to(tl.int64), mask=on)
            tl.store(idx_ptr + (b * 2 + 1) * P + p, bq.to(tl.int64), mask=on)


def transform(B, H, W, dev, sampling=(1.0, 1.0), *, mask=None, errors=None, dist=None, indices=None, squared=False,
              farthest=None):  # fmt: skip
    """The three launches for B images of H x W (H * W < 2^31): targets from a byte `mask`
    (B, H, W) or from `errors` = (pred, gt, ignore or None, clicked or None) as bytes (the framed
    error masks of _targets; B, H, W then the framed sizes); each pixel's result into `dist` (and
    `indices`) or, with `farthest`, an int64 (B,) tensor of zeros, the keys of _rows_kernel."""
    t = torch.empty(B, H, W, dtype=torch.int32, device=dev)
    pos = torch.empty(B, W, dtype=torch.int32, device=dev)
    rank = torch.empty(B, W, dtype=torch.int32, device=dev)
    if errors is None:
        src, img, ignore, clicked = (mask, mask, mask), (B, H, W), None, None
    else:
        pred, gt, ignore, clicked = errors
        src, img, mask = (pred, gt, gt if ignore is None else ignore), (B // 2, H - 2, W - 2), gt
    out = farthest if farthest is not None else dist
    cols, rows = (_CPU_COLS, _CPU_ROWS) if dev.type == "cpu" else (_TILE[1], _ROWS)
    _columns_kernel[grid_items(triton.cdiv(W, cols), B)](
        mask, *src, t, H, W, *img, FRAMED=errors is not None, IGNORE=ignore is not None, ROWS=_TILE[0],
        COLS=cols, num_warps=4,
    )  # fmt: skip
    _compact_kernel[(B,)](t, pos, rank, H, W, BLOCK=_CHUNK, num_warps=4)
    _rows_kernel[grid_items(triton.cdiv(H * W, rows), B)](
        t, pos, rank, out, out if indices is None else indices, out if clicked is None else clicked, out, H, W,
        *img, *f64_bits(sampling[0] ** 2), *f64_bits(sampling[1] ** 2), EXACT=tuple(sampling) == (1.0, 1.0), SQUARED=squared, INDICES=indices is not None,
        FARTHEST=farthest is not None, CLICKED=clicked is not None, BLOCK=rows, num_warps=4,
        enable_fp_fusion=False,
    )  # fmt: skip


@triton_variant("distance_transform")
def distance_transform_op(mask, sy, sx, squared, return_indices):
    op = "distance_transform"
    expect(mask.dim() == 3, op, "mask must be (B, H, W), got ", tuple(mask.shape))
    expect(sy > 0 and sx > 0, op, "sampling must be positive, got (", sy, ", ", sx, ")")
    B, H, W = mask.shape
    dev = mask.device
    dist = torch.empty(B, H, W, dtype=torch.float32, device=dev)
    indices = torch.empty((B, 2, H, W) if return_indices else (0,), dtype=torch.int64, device=dev)
    if dist.numel() == 0:
        return dist, indices
    expect(H * W < 2**31, op, "H * W must be < 2^31, got ", H * W)
    with device_ctx(dist):
        transform(B, H, W, dev, (sy, sx), mask=mask_bytes(mask), dist=dist,
                  indices=indices if return_indices else None, squared=squared)  # fmt: skip
    return dist, indices


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps[, options]) for the offline GPU compile
    check (.ci/triton_compile_check.py); other arguments compile as i32."""
    cols = {"m_ptr": "*u8", "pred_ptr": "*u8", "gt_ptr": "*u8", "ign_ptr": "*u8", "t_ptr": "*i32"}
    rows = {"t_ptr": "*i32", "pos_ptr": "*i32", "rank_ptr": "*i32", "dist_ptr": "*fp32",
            "idx_ptr": "*i64", "clk_ptr": "*u8", "keys_ptr": "*i64"}  # fmt: skip
    plain = {"FARTHEST": False, "CLICKED": False}
    return [
        (_columns_kernel, cols, {"FRAMED": f, "IGNORE": i, "ROWS": _TILE[0], "COLS": _TILE[1]}, 4)
        for f, i in ((False, False), (True, False), (True, True))
    ] + [
        (_compact_kernel, {"t_ptr": "*i32", "pos_ptr": "*i32", "rank_ptr": "*i32"}, {"BLOCK": _CHUNK}, 4),
    ] + [
        (_rows_kernel, rows, {"EXACT": e, "SQUARED": sq, "INDICES": ix, **plain, "BLOCK": _ROWS}, 4,
         {"enable_fp_fusion": False})
        for e in (True, False) for sq in (False, True) for ix in (False, True)
    ] + [
        (_rows_kernel, rows, {"EXACT": True, "SQUARED": True, "INDICES": False, "FARTHEST": True, "CLICKED": c,
                              "BLOCK": _ROWS}, 4, {"enable_fp_fusion": False})
        for c in (False, True)
    ]  # fmt: skip
