"""What each GPU kernel's machine code must show: one table, checked by
`python tools/sass_report.py --check` (make sass-check, in make test) against the SASS of every
CUDA instantiation and every Triton kernel compiled for sm_80 and sm_90.

A row matches kernels by a regular expression on `<source>:<kernel>` (`center_distance:
backward_kernel<float, float, 4>`, `triton:masked_sum:_partials_kernel[...]`); the first row
that matches holds the kernel. A kernel no row matches fails the check: a new kernel adds its
row here with what its design intends. Fields:

  threads         the block size its launches use (kThreads; Triton: num_warps * 32)
  dynamic_smem    the most dynamic shared memory its launches ask for (kSmemBudget), counted
                  in its occupancy with the static shared memory
  min_occupancy   theoretical occupancy at that block size, per architecture
  max_stack       bytes of stack frame per thread (where ptxas spills registers): 0 = no spill
  local_in_loop   LDL/STL allowed between a backward branch and its target (0: no local
                  memory in any loop, the hot loop included)
  wide_loads      (bits, n): at least n global loads of that width or wider (a vectorised
                  load the design relies on: splitting it into scalar loads fails the check)
  wide_stores     (bits, n): the same for global stores
  tensor_cores    at least one HMMA/HGMMA/IMMA instruction (matrix-product kernels in half)

Known debts are written as rows with their measured budget and the reason, so the check
catches any regression beyond them and the report shows what to fix.
"""

from __future__ import annotations

import dataclasses
import re


def tile_occupancy(key: str) -> float:
    """The occupancy floor of a register-tiled CUDA kernel, from its last template argument K
    (dims a thread keeps in registers; 0 = the untiled loop): K accumulators per thread cost
    registers and buy K independent loads in flight, so the floor falls with K — 50 % up to
    K = 2, then 37.5 %, 25 %, and one 256-thread block per SM (12.5 %) from K = 16."""
    m = re.search(r", (\d+)>$", key)
    k = int(m.group(1)) if m else 0
    return 0.5 if k <= 2 else 0.375 if k <= 4 else 0.25 if k <= 8 else 0.125


@dataclasses.dataclass(frozen=True)
class Expect:
    pattern: str
    threads: int = 256
    dynamic_smem: int = 0  # the most dynamic shared memory its launches ask for (bytes)
    min_occupancy: float | None = 0.5  # None: tile_occupancy(kernel)
    max_stack: int = 0
    local_in_loop: int = 0
    wide_loads: tuple[int, int] | None = None
    wide_stores: tuple[int, int] | None = None
    tensor_cores: bool = False
    why: str = ""

    def violations(self, row) -> list[str]:
        out = []
        want = tile_occupancy(row.key) if self.min_occupancy is None else self.min_occupancy
        if row.occupancy + 1e-9 < want:
            out.append(f"occupancy {row.occupancy:.3f} < {want:.3f} ({row.regs} registers, "
                       f"{row.smem} + {row.dyn_smem} B shared, "
                       f"{row.threads} threads)")  # fmt: skip
        if row.stack > self.max_stack:
            out.append(f"stack frame {row.stack} B > {self.max_stack} B (registers spilled: "
                       f"{row.spill if row.spill is not None else '?'} B of spill stores + loads)")  # fmt: skip
        in_loop = row.counts.get("local_in_loop", 0)
        if in_loop > self.local_in_loop:
            out.append(f"{in_loop} local-memory instructions (LDL/STL) inside a loop > {self.local_in_loop}")
        for kind, want in (("ldg", self.wide_loads), ("stg", self.wide_stores)):
            if want is None:
                continue
            bits, n = want
            have = sum(v for k, v in row.counts.items() if k.startswith(kind) and int(k[3:]) >= bits)
            if have < n:
                what = "loads" if kind == "ldg" else "stores"
                out.append(f"{have} global {what} of {bits} bits or wider < {n} (a vectorised {what[:-1]} split up?)")
        if self.tensor_cores and not row.counts.get("mma", 0):
            out.append("no tensor-core instruction (HMMA/HGMMA/IMMA)")
        return out


# Every kernel reads the map one element per thread, coalesced across the warp along the pixel
# axis (contiguous in NCHW): no map kernel asks for vector loads yet (check_values' flat scan does). Strides are runtime values, so
# neither nvcc nor Triton can prove 16-byte contiguity; a contiguous specialisation (stride 1 as
# a template argument / constexpr) is what would earn 128-bit loads and a wide_loads row.
_TILED = "register-tiled dims (K accumulators per thread): occupancy floor by K (tile_occupancy)"
_DEBT = "known debt (report of 2026-11-24): ptxas spills in some instantiations; budget = the measured worst"
_TRITON = "one program per block of num_warps * 32 threads; large tiles, one or two blocks per SM by design"

# similarity_reduce's float64 CUDA kernels: correct, deterministic, not fast (float64 is for tests).
_SIMPLE_SR = ("float64: a thread per query row (forward, dq) or per ref (dr; one backward launch for both, "
              "summed in the gradients' own rows) over the other side in order, FMA dot products, no tiling "
              "(float32 and half inputs take the tile kernels above)")

# pair_bce's float64 CUDA kernels, the same design.
_SIMPLE_PB = ("float64: a thread per row of x (forward, dx) or of y (dy) over the other side in order, "
              "FMA dot products and double sums, no tiling (float32 and half inputs take the tile kernels above)")

EXPECTATIONS: list[Expect] = [
    # CUDA (csrc/cuda/*.cu), kThreads = 256 everywhere
    # The folded label check (device_checks.cuh): the cold report() call after the sum sweep keeps
    # registers live across it, a 24-32 B frame whose STL/LDL run once per image of the grid-stride
    # image loop (read in the sm_80 SASS: two STL before the loops, one LDL after the zeroing),
    # not per pixel; the sweeps themselves touch no local memory.
    Expect(r"region_stats:region_partials_kernel<.*>", dynamic_smem=40 * 1024, max_stack=32, local_in_loop=2,
           why="shared-memory accumulators up to kSmemBudget = 40 KiB: four blocks per SM; the label "
               "check's report frame, per image; no spill"),
    Expect(r"region_stats:region_backward_vec_kernel<.*>", wide_loads=(128, 1), wide_stores=(128, 1),
           why="the backward's contiguous fast path: 16 bytes of x in one load (where a region of the "
               "vector has a variance gradient) and of the gradient in one streaming store (__stcs: a plain "
               "store of the 16-byte word was split into four), the labels at their width; no spill, two or "
               "more blocks per SM"),
    Expect(r"region_stats:.*", why="no spill, two or more blocks per SM"),
    Expect(r"region_loss:head_kernel<.*>", min_occupancy=0.125,
           why="one block a launch (__launch_bounds__(256, 1): occupancy is moot): a warp per image over (B, R, D) "
               "statistics, the images' losses summed warp by warp in order; a launch, not a bandwidth, to pay; "
               "no spill"),
    Expect(r"minmax_scale:(forward|backward)_kernel<.*>", why="a block per row: a strided fold of the row, the 256 "
           "partials merged in thread order from shared memory, then the write; no spill (the float64 backward's "
           "four sums spilled 40 B on sm_90 until its six RowGrad sums, 2026-11-30: 64 registers, no frame)"),
    Expect(r"class_scores:forward_kernel<double, double>", min_occupancy=0.375,
           why="a thread per pixel, 8 float64 class sums and the pixel's argmax in registers (80 on sm_90): 3 "
               "blocks per SM; no spill"),
    Expect(r"class_scores:forward_kernel<.*>", why="a thread per pixel (grid-stride), 8 float64 class sums over "
           "d in registers (64, launch bounds of 4 blocks; 80 unbounded on sm_80), the means broadcast to the "
           "warp; no spill"),
    Expect(r"class_scores:backward_kernel<.*>", min_occupancy=0.375,
           why="256-pixel tiles of 16 dims (8 for double) and 8 classes' gradients in 26 KiB (35) of shared "
               "memory, a thread's 8 float64 sums of g q, launch bounds of 3 blocks per SM (75-80 registers): at 4 "
               "(64) the loop over more than 8 classes spilled 8 B on sm_90; no spill"),
    Expect(r"class_scores:merge_kernel<.*>", why="a warp an element of the means' gradient: partials_sum's "
           "order over the blocks' float64 sums; no spill"),
    Expect(r"dense_moments:mean_kernel<.*>", min_occupancy=0.375, max_stack=32, local_in_loop=29,
           why="a block per (chunk, image, side): a thread per dim sums its column of the chunk in float64; the "
               "last blocks merge in order. sm_80 calls the float64 division's slow path (sum / n, the merge's "
               "per-dim loop) and saves 32 B of registers around the call; sm_90 inlines it; " + _DEBT),
    Expect(r"dense_moments:gram_kernel<.*>", min_occupancy=0.25,
           why="32 x 32 float64 tiles of the augmented rows in 17 KiB of shared memory (a tile that reaches the "
               "extra dims forms them, a warp a row, into 32 more values), 4 float64 sums a thread, launch "
               "bounds of 2 blocks per SM (84-104 registers; 162 unbounded on sm_80, and 85 spilled 88 B); "
               "no spill"),
    Expect(r"dense_moments:merge_kernel<.*>", why="a thread per Gram entry: the chunks' partials in order, the "
           "block's fixed tree; the last block merges the images; no spill"),
    Expect(r"dense_gradient:(sums|apply)_kernel<.*>", why="one block of fixed-order row sums, then a thread per "
           "gradient entry (the Gram's column coalesced over d); no spill"),
    Expect(r"pixel_normalize:(forward|backward)_kernel<.*>", min_occupancy=None, why=_TILED + "; no spill"),
    Expect(r"center_distance:backward_kernel<.*>", min_occupancy=None, max_stack=24, local_in_loop=25,
           why=_TILED + "; " + _DEBT),
    Expect(r"center_distance:forward_kernel<.*>", max_stack=16, local_in_loop=2, why=_DEBT),
    Expect(r"(center_distance|region_hinge):sum_partials_kernel<.*>", why="a short reduction, no spill"),
    Expect(r"region_hinge:offset_kernel<.*>",
           why="centroid_hinge's offset table: sum_partials' reduction, then one product and one quotient an "
               "output; no spill"),
    # +8 B (24): the frame of masked_mean's cold weight-check report (printf + assert, called once
    # after the pixel loop); the kV = 0 variant (C > 32 G, partials in the warp's slot) up to 40 B
    # and one more local access in its loop (the least weight and its pixel carried through it).
    Expect(r"masked_sum:partials_kernel<.*>", min_occupancy=None, max_stack=40, local_in_loop=3,
           why=_TILED + "; the weight check's report frame; " + _DEBT),
    # kAdd (menet_saliency's added gradient), half types, sm_80: an 8 B value stored before the
    # image loop and reloaded once per image (2 local instructions in all, read in the sm_80 SASS),
    # not in the pixel loop; sm_90 does not spill once that loop is unrolled twice (4 spilled there)
    Expect(r"masked_sum:backward_kernel<(__half|__nv_bfloat16), float, true>", max_stack=8, local_in_loop=1,
           why="the added gradient's pointer: one spill reloaded per image, not per pixel"),
    Expect(r"masked_sum:(backward|merge)_kernel<.*>", why="no spill"),
    Expect(r"region_hinge:backward_kernel<.*>", dynamic_smem=40 * 1024, min_occupancy=None, max_stack=56,
           local_in_loop=33, why=_TILED + "; shared-memory bins up to kSmemBudget = 40 KiB; " + _DEBT),
    # +16-40 B and 2 more local accesses in the image loop: the folded label check's report frame
    # (as region_stats' partials)
    Expect(r"region_hinge:forward_kernel<.*>", dynamic_smem=40 * 1024, max_stack=48, local_in_loop=3,
           why="shared-memory bins up to kSmemBudget = 40 KiB; the label check's report frame; " + _DEBT),
    Expect(r"triplet_hinge:mine_kernel<double, double>", min_occupancy=0.25,
           why="4 x 4 double accumulators per thread (16 x 16 threads over a 64 x 64 anchor x candidate tile): "
               "compiled for 2 blocks per SM (at most 128 registers), no spill"),
    Expect(r"triplet_hinge:mine_mma_kernel<.*>", min_occupancy=0.375, tensor_cores=True,
           why="half D >= 16: the cross term a.c by mma.sync m16n8k16 on 64 x 64 tiles (8 warps of 16 x 32), "
               "16 float accumulators per thread; the exact SIMT tile a call (noinline: inlined, it spills) for "
               "blocks with huge norms; "
               "compiled for 3 blocks per SM, no spill"),
    Expect(r"triplet_hinge:mine_kernel<.*>", min_occupancy=0.375,
           why="4 x 4 float accumulators per thread and 8 tile loads in flight: compiled for 3 blocks per SM "
               "(at most 85 registers; at 64 this ptxas spills), no spill"),
    Expect(r"triplet_hinge:.*", why="compiled for 4 blocks per SM (at most 64 registers, 50 %); static "
                                    "shared memory only (bucket_kernel's slot lists: < 13 KiB); no spill"),
    Expect(r"similarity_reduce:forward_tile_kernel<float, true>", threads=128, min_occupancy=0.25,
           wide_loads=(128, 1),
           why="the float32 max's forward, which keeps per row the ref of its maximum (MaxArg, a flag for a "
               "non-finite dot) in aux, and the backward's recomputation of the row tiles with a kAny row; "
               "compiled for 4 blocks per SM (at the forward's 5, sm_80's ptxas spills 8 B inside the tile "
               "loop); no spill"),
    Expect(r"similarity_reduce:forward_tile_kernel<float, false>", threads=128, min_occupancy=0.3125,
           wide_loads=(128, 1),
           why="float32: the half kernel's 64 x 64 tiles by FMA (pair_tiles::dot_tile_f32: 16-dim stages read in "
               "16-byte quads where the rows' dims are aligned and contiguous, transposed and swizzled in shared "
               "memory, 32 float accumulators a thread, its operands of a dim in one 8-byte and four 16-byte "
               "shared loads; TF32 would miss SPEC 4's float32 tolerance), the scores through shared memory to "
               "one reducing thread per row; compiled for 5 blocks per SM (96 registers: at 80, 6 blocks, it "
               "spills 56-84 B); no spill"),
    Expect(r"similarity_reduce:grad_f32_kernel<true, true>", threads=128, min_occupancy=0.125, wide_loads=(128, 1),
           why="the weighted refs' side (View::w: prior_mask's support mask, without a weighted copy): the row "
               "below plus each ref's weight gradient summed per pair (the cosine's eps / den form: two more "
               "doubles an owner through the tile's sums); compiled for two blocks per SM (at three it spilled "
               "8-16 B in the tile loop), no spill"),
    Expect(r"similarity_reduce:grad_f32_kernel<.*>", threads=128, min_occupancy=0.1875, wide_loads=(128, 1),
           why="float32 backward on pair_tiles::grad_pass_f32: the score tile by FMA, dZ in double in shared "
               "memory (33 KiB of the 47 KiB static), dq += dZ R (dr += dZ^T Q) in double, 8 accumulators a "
               "thread (one dim of 8 owner rows: coalesced stores), dr over splits of the queries; a tile pair "
               "whose dZ is 0 with finite dots is skipped, and in the product each warp walks only the k where "
               "one of its owners' dZ is nonzero (a 64-bit mask a tile: the max's backward), and before its dots "
               "a tile pair no row's only maximum lies in (MaxArg); an image with no tied maximum is taken before "
               "the pass by its sparse rows (a warp a query row or ref, each pair's dot by one lane: a row's C "
               "pairs, not its N x K tiles); the product two other rows a step (each owner's two Z one 16-byte "
               "shared load: 10 shared loads per 16 FP64 FMA, were 9 per 8); compiled for three blocks per SM (at most 168 "
               "registers: at sm_90's own choice of 128 the dr instantiation spilled 8 B in the tile loop), "
               "no spill"),
    Expect(r"similarity_reduce:forward_tile_kernel<.*>", threads=128, min_occupancy=0.375, max_stack=16,
           local_in_loop=10, tensor_cores=True,
           why="half: 64 query rows x 64-ref tiles by mma.sync m16n8k16 (4 warps of 16 x 64, 32 float "
               "accumulators a thread), the scores through shared memory to one reducing thread per row; "
               "the IEEE divisions' and sqrt's slow-path calls (cosine's denominator, softmax's 1/T) keep "
               "loop-invariant values on the stack around the call: 16 B, LDL/STL on those paths; " + _DEBT),
    Expect(r"similarity_reduce:grad_mma_kernel<.*>", threads=128, min_occupancy=0.1875, max_stack=8,
           local_in_loop=2, tensor_cores=True,
           why="half backward on pair_tiles::grad_pass: the score tile by mma, dZ scaled and split in two halves "
               "(hi + lo) in shared memory, dq += dZ R (dr += dZ^T Q) by mma in 64-dim chunks (a tile pair whose dZ "
               "is 0 with finite dots skipped); 44 KiB of static shared memory and up to 168 registers, three "
               "blocks per SM; the dr kernel keeps 8 B on the "
               "stack around the double division's call (grad_z's cosine chain); " + _DEBT),
    Expect(r"similarity_reduce:tables_kernel<.*>", threads=128, max_stack=24, local_in_loop=7,
           why="a thread per ref (|r|, the label check's read), per image (the class sizes) and, in the "
               "backward's launch, per query row (|q|, the per-class factors, Rows); the check's cold report "
               "call keeps its printf frame (24 B) and sm_80 16 bytes across the class loops; " + _DEBT),
    Expect(r"similarity_reduce:grad_f64_kernel", threads=128, max_stack=8, local_in_loop=3,
           why="the chain and the sums in double (the cosine gradient's near-cancelling terms): 8 bytes of the "
               "double division's call frame on the stack (16 and 4 in-loop LDL/STL before grad_z formed the "
               "sigmoid's slope in one value, 2026-11-30; 3 since the per-ref weight is applied in the kernel, "
               "its gradient summed per pair: the second session of 2026-11-30); " + _SIMPLE_SR + "; " + _DEBT),
    Expect(r"similarity_reduce:weight_(refs|grads)_kernel<.*>", threads=128,
           why="the CUDA weight path: a warp per ref row, lanes over the dims (a label and a weight a row), "
               "one value read and one written a lane and dim, the weight's gradient by warp_sum; no spill"),
    Expect(r"similarity_reduce:.*", threads=128, max_stack=8, local_in_loop=1,
           why=_SIMPLE_SR + "; tables_kernel<double, double, uint8> spills 8 B on sm_90; " + _DEBT),
    Expect(r"pair_bce:forward_tile_kernel<float>", threads=128, min_occupancy=0.3125, wide_loads=(128, 1),
           why="float32: the half kernel's 64 x 64 tiles by FMA (pair_tiles::dot_tile_f32, 16-byte quads where "
               "aligned), the losses summed in double per row through quad shuffles; compiled for 5 blocks per "
               "SM (96 registers); no spill"),
    Expect(r"pair_bce:grad_f32_kernel<.*>", threads=128, min_occupancy=0.1875, wide_loads=(128, 1),
           why="float32 backward on pair_tiles::grad_pass_f32 (dx with the row partials, dy), e and the second "
               "product in double over splits of the other side, two other rows a step (each owner's two Z "
               "one 16-byte shared load); 47.5 KiB of static shared memory; compiled for three blocks per SM "
               "as similarity_reduce's (at sm_90's own choice of 128 registers the pair step spilled 8 B, 3 "
               "local accesses in a loop); no spill"),
    Expect(r"pair_bce:forward_tile_kernel<.*>", threads=128, min_occupancy=0.4375, tensor_cores=True,
           why="half: 64 rows of x x 64-row tiles of y by mma.sync m16n8k16 (cuda/pair_tiles.cuh), the losses "
               "summed in double per row through quad shuffles (sm_80: 72 registers, occupancy 0.4375); no spill"),
    Expect(r"pair_bce:grad_mma_kernel<.*>", threads=128, min_occupancy=0.1875, tensor_cores=True,
           why="half backward on pair_tiles::grad_pass (dx with the row partials, dy): 44 KiB of static shared "
               "memory, up to 120 registers, three blocks per SM; no spill"),
    Expect(r"pair_bce:.*", threads=128, why=_SIMPLE_PB + "; no spill"),
    Expect(r"pixel_keys:keys_kernel", why="an elementwise hash, one 8-byte key stored per thread and pixel; no spill"),
    Expect(r"sample_pixels:sort_keys_kernel<.*>", min_occupancy=0.75, max_stack=24,
           why="elementwise: a label at its own width and a key read (or hashed from the image's seed), one "
               "8-byte sort key written a pixel; __launch_bounds__(256, 6) keeps it at 40 registers; the "
               "24-byte frame is the cold report() call's (is_triplet_loss' mask check: printf, the failed "
               "assert), after the loop, as check_values'; no spill"),
    Expect(r"sample_pixels:pick_kernel", min_occupancy=0.75,
           why="two threads binary-search the (image, class) run into 16 B of shared memory, every thread "
               "then copies one index (or -1) a column; no spill"),
    Expect(r"check_values:check_kernel<.*>", max_stack=24, wide_loads=(128, 1),
           why="one 16-byte load per word of values (the first kernel with vector loads); the 24-byte frame "
               "is the cold report() call's (printf, the failed assert), outside the loop; the message stays "
               "in parameter space (__grid_constant__)"),
    # Triton (pixelkernels/triton/*.py compile_specs(): the configurations the launchers pick);
    # threads=0: the block size is the compiled num_warps * 32
    # masked_sum, pixel_normalize: compiled at the launchers' num_warps (8 for their 4096-element
    # 256 x 16 and 64 x 64 tiles). The spills this table once budgeted (up to 696 B) were the
    # compile check's: it built the 256 x 16 tiles at 4 warps, which no launch uses.
    Expect(r"triton:masked_sum:_backward_kernel\[.*", threads=0, min_occupancy=0.125,
           why=_TRITON + "; 256 x 16 or 64 x 64 tiles in 8 warps, up to 254 registers (fp64 with menet_saliency's "
               "added gradient); no spill"),
    Expect(r"triton:pixel_normalize:_\w+_kernel\[.*", threads=0, min_occupancy=0.125,
           why=_TRITON + "; 256 x 16 or 64 x 64 tiles in 8 warps; no spill"),
    # region_stats: compiled at the launchers' tiles (_tile_blocks: the backward's 2048 elements, the
    # atomic path's 4096, the partials' 8192; the merge's 2048, 1024 in float64). The spills this
    # table once budgeted for the backward and the merge (216-288 B) were of 128 x 64 and 64 x 64
    # tiles no launch uses.
    Expect(r"triton:region_stats:_rs_atomic_sqdev_kernel\[fp16.*", threads=0, min_occupancy=0.25, max_stack=8,
           why=_TRITON + "; the atomic path (R > 32, not deterministic): at 48 registers ptxas keeps 8 B of the "
               "float16 instance's state on sm_90's stack (read in the loop in the report of 2026-11-24, outside "
               "it in that of 2026-11-30); " + _DEBT),
    Expect(r"triton:region_stats:_\w+_kernel\[.*", threads=0, min_occupancy=0.125,
           why=_TRITON + "; at the launchers' tiles in 8 warps (the merge in 4); no spill"),
    Expect(r"triton:triplet_hinge:_th_mine_kernel\[.*DOT=True.*", threads=0, min_occupancy=0.1875, tensor_cores=True,
           why="half D >= 16: the cross term a.c by tl.dot on 32 x 32 anchor x candidate tiles; no spill"),
    Expect(r"triton:triplet_hinge:_th_mine_kernel\[.*", threads=0, min_occupancy=0.1875,
           why="exact squared differences on 32 x 32 tiles (64 x 64 spill at 4 warps); no spill"),
    Expect(r"triton:triplet_hinge:_\w+\[.*", threads=0, min_occupancy=0.25, why=_TRITON + "; no spill"),
    Expect(r"triton:similarity_reduce:_\w+\[.*", threads=0, min_occupancy=0.0625, max_stack=16, local_in_loop=1,
           why="16 x 32 score tiles by tl.dot over D in chunks of 32, the per-class reduction a loop over the "
               "classes: 96-250 registers (float64 the most). The float32 IEEE gradient kernels run 8 warps "
               "(at 4: 255 registers, 24-40 B spilled, up to 7 local accesses in the loop; at 8: no spill, the "
               "same occupancy); the TF32 dq and the half dr keep 8-16 B at their 168 registers in 4 warps (at "
               "8 the TF32 max's dq spills in its loop): one local access in a loop at most. Not tuned, no GPU "
               "has timed it; " + _DEBT),
    Expect(r"triton:pair_bce:_\w+\[(bf16|fp16),.*", threads=0, min_occupancy=0.0625, tensor_cores=True,
           why="16 x 32 logit tiles by tl.dot over D in chunks of 32 on the tensor cores (the backward's "
               "contractions in IEEE float32); 119-232 registers; not tuned, no GPU has timed it"),
    Expect(r"triton:pair_bce:_\w+\[.*", threads=0, min_occupancy=0.0625,
           why="16 x 32 logit tiles by tl.dot over D in chunks of 32: 106-213 registers, no spill (the float32 "
               "IEEE dy kernel's 16 B of the 2026-11-24 report are gone: 190 registers in the report of "
               "2026-11-30); not tuned, no GPU has timed it"),
    Expect(r"triton:dense_moments:_gram_kernel\[.*", threads=0, min_occupancy=0.375,
           why="a program per (side, image, 32 x 32 tile of the (D + 2)² Gram), 8 warps: two dim blocks of the "
               "augmented rows (the mean and rows kernels', in the statistics dtype) by float64 tl.dot over all "
               "rows, 48-64 registers; no spill (reading and centring the inputs here took 181-255 registers "
               "and a 40 B frame, forming the extra dims here 128-167 and a 24 B frame, and Triton 3.6 failed "
               "to lower the half inputs' float64 dot); not tuned, no GPU has timed it"),
    Expect(r"triton:dense_moments:_\w+\[.*", threads=0, min_occupancy=0.25,
           why="a program per (side, image) over its rows (the means), per (1024 rows, image) (the rows' extra "
               "dims), one program over the images (the finish): a launch each, microseconds against the pair "
               "pass; no spill"),
    Expect(r"triton:dense_gradient:_apply_kernel\[.*", threads=0, min_occupancy=0.125,
           why="32 gradient rows a program, 8 warps: pair_bce's float64 dx' (dy' over its splits) and, with "
               "batch statistics, G'o t' by float64 tl.dot in 32 x 32 blocks of the (D + 2)² Gram (188-192 "
               "registers, one block a SM); no spill; not tuned, no GPU has timed it"),
    Expect(r"triton:dense_gradient:_sums_kernel\[.*", threads=0, min_occupancy=0.25,
           why="one program over every row in order (four float64 sums, and S over the Grams' rows of ones): a "
               "launch, not a bandwidth; no spill"),
    Expect(r"click_maps:click_maps_kernel<(float|double)>", min_occupancy=0.625,
           why="one pixel a thread, two float running minima, a 4 KiB shared tile of clicks read as "
               "broadcasts; the clicks scaled in float64 as they are staged (no preparation launch) take the "
               "float kernel to 48 registers on sm_90 (occupancy 0.625, was 0.75); no spill (bound by the "
               "output's write)"),
    Expect(r"triton:click_maps:_click_maps_kernel\[.*", threads=256, min_occupancy=0.5,
           why="1024 pixels a program (8 warps), two float running minima a lane, scalar click loads: "
               "no spill"),
    Expect(r"sample_clicks:edt::columns_kernel<NotBand>", min_occupancy=0.5, max_stack=8, local_in_loop=2,
           why="the band read from gt and the float distances to the object (two loads a pixel): at the 64 "
               "registers of 4 blocks a SM, sm_80 spills 8 B; " + _DEBT),
    Expect(r"sample_clicks:select_kernel", threads=512, min_occupancy=0.25,
           why="a block of 512 threads per image (each click depends on those before): per click a pass for "
               "the smallest (key, pixel) by warp shuffles and 16 warps' minima in shared memory, and a pass "
               "dropping the pixels within d_step; __launch_bounds__(512, 1): 60-68 registers, no spill (at "
               "the default 40 of three blocks a SM sm_80 spilled 188 B)"),
    Expect(r"(distance_transform|next_clicks|sample_clicks):edt::columns_kernel<.*>", min_occupancy=0.5,
           why="32 columns x 8 bands of rows a block, each band's first and last target in 2 KiB of static "
               "shared memory, the source's column addressing hoisted out of the row loops (next_clicks' "
               "framed error masks read from pred, gt and ignore: 59-64 registers); no spill"),
    Expect(r"(distance_transform|next_clicks|sample_clicks):edt::compact_kernel", min_occupancy=0.5,
           why="a warp per image, 32 columns a step by ballot and popc; no spill"),
    Expect(r"(distance_transform|next_clicks|sample_clicks):edt::rows_kernel<.*>", min_occupancy=0.625,
           why="a thread per pixel walking the columns with a target outward from its own: a best value and "
               "column in registers, independent loads of pos and the pixel's row of t; next_clicks' sink "
               "reduces to a 64-bit key (warp shuffles, 64 B of static shared memory, one atomicMax a block); "
               "30-40 registers, 46 for the float64 spacing on sm_80 (0.625); no spill"),
    Expect(r"next_clicks:(clear|pick)_kernel", min_occupancy=0.75, why="a thread per key / per image; no spill"),
    Expect(r"triton:distance_transform:_columns_kernel\[.*", threads=0, min_occupancy=0.25,
           why="32 x 16 tiles of rows x columns, the max/min along a tile's rows as a masked reduction of a "
               "32 x 32 x 16 broadcast (no dependent steps): ~80 registers, 4 warps; no spill"),
    Expect(r"triton:distance_transform:_compact_kernel\[.*", threads=0, min_occupancy=0.5,
           why="a program per image, 1024 columns a step by tl.cumsum; no spill"),
    Expect(r"triton:distance_transform:_rows_kernel\[.*", threads=0, min_occupancy=0.75,
           why="128 pixels a program, each lane walking the columns with a target outward from its own "
               "(while any lane walks); the next_clicks variant reduces to an int64 key and one atomic max "
               "a program; no spill"),
    Expect(r"triton:sample_clicks:_select_kernel\[.*", threads=0, min_occupancy=0.25,
           why="a program per image (4 warps), per click a pass over the image in 1024-pixel chunks for the "
               "smallest (key, pixel), carried as scalars, and one dropping the pixels within d_step; no spill"),
    Expect(r"triton:pixel_keys:_keys_kernel\[.*", threads=0, min_occupancy=0.75,
           why="an elementwise hash over 1024 pixels a program (4 warps), the image's hash once; no spill"),
    Expect(r"triton:sample_pixels:_sort_keys_kernel\[.*", threads=0, min_occupancy=0.5,
           why="elementwise over 1024 pixels a program (4 warps): a label, a key, one sort key; eight int64 "
               "keys a lane in flight take 63 registers on sm_90 (occupancy 0.5); no spill"),
    Expect(r"triton:sample_pixels:_seeded_sort_keys_kernel\[.*", threads=0, min_occupancy=0.5,
           why="the same with each key hashed from its image's seed and draw (pixel_keys' arithmetic, "
               "the row's hash once a program) instead of read: 64 registers on sm_90 (occupancy 0.5); no spill"),
    Expect(r"triton:sample_pixels:_pick_kernel\[.*", threads=0, min_occupancy=0.5,
           why="a [rows, columns] output tile a program (4 warps): each row's two binary searches as lanes, "
               "then one index (or -1) a column; no spill"),
    Expect(r"triton:class_scores:_\w+\[.*", threads=0, min_occupancy=0.25,
           why="a program per 64 pixels: [8 classes, 8 dims, 64 pixels] products summed a step (the forward 4 "
               "warps; the backward's two float64 products 8 warps, a float64 query's 2 dims a step on 4); no spill"),
    Expect(r"triton:minmax_scale:_\w+\[.*", threads=0, min_occupancy=0.25,
           why="a program per row (4 warps), 1024-value blocks in order for the extremes and sums; no spill"),
    Expect(r"triton:region_loss:_(disc_)?head_kernel\[.*", threads=0, min_occupancy=0.125, max_stack=8,
           local_in_loop=1,
           why="one program (4 warps) over the images in order, blocks of regions x dims; a launch, not a "
               "bandwidth, to pay: the float64 MEnet variants spill 8 B on sm_90, one local access in the image loop"),
    Expect(r"triton:(center_distance|masked_sum|region_hinge|region_stats):_\w+\[.*", threads=0,
           min_occupancy=0.125, why=_TRITON + "; no spill"),
]  # fmt: skip


def find(key: str) -> Expect | None:
    return next((e for e in EXPECTATIONS if re.fullmatch(e.pattern, key)), None)
