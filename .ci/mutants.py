"""Mutation check: does the suite catch realistic kernel bugs? (`make mutants`, on demand.)

Each mutant below plants one bug (an off-by-one, a wrong stride or index, a dropped term, a
wrong accumulator type, a missing guard) in a copy of the tree, rebuilds what it touches and
runs the tests that should catch it. A mutant is killed when those tests fail; every mutant in
the table must be killed. Every kernel file has at least one; a new kernel file adds its own.

    python .ci/mutants.py              all mutants (copy in build/mutants/, reused between runs)
    python .ci/mutants.py --only ID    some (repeatable)
    python .ci/mutants.py --check      only that each mutant applies to the tree (no build)

The copy is built in place (setup.py build_ext --inplace, then ninja rebuilds only the mutated
file) and imported through PYTHONPATH; the CUDA emulator rebuilds only the mutated .cu.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments that must fail
    why: str


T_RS = "tests/test_region_stats.py"
T_RH = "tests/test_region_hinge.py"
T_CH = "tests/test_centroid_hinge.py"
T_PN = "tests/test_pixel_normalize.py"
T_MS = "tests/test_masked_sum.py"
T_CD = "tests/test_center_distance.py"
T_RL = "tests/test_region_losses.py"
T_TH = "tests/test_triplet_hinge.py"
T_TE = "tests/test_triplet_hinge_emu.py"
T_SP = "tests/test_sample_pixels.py"
T_SR = "tests/test_similarity_reduce.py"
T_LT = "tests/test_label_transfer.py"
T_PM = "tests/test_prior_mask.py"
T_PB = "tests/test_pair_bce.py"
T_DS = "tests/test_dense_similarity_loss.py"
T_SQ = "tests/test_stochastic_pool.py"
T_CM = "tests/test_click_maps.py"
T_DT = "tests/test_distance_transform.py"
T_NC = "tests/test_next_clicks.py"
T_SC = "tests/test_sample_clicks.py"
T_AD = "tests/test_adversarial.py"
T_AG = "tests/test_autograd.py"
T_HS = "tests/test_host_sync.py"
T_CV = "tests/test_check_values.py"
T_PK = "tests/test_pixel_keys.py"

MUTANTS = [
    Mutant("checks-sync-on-device", "pixelkernels/_checks.py",
           'if _mode == "sync" or (t.device.type == "cpu" and not _ASYNC_ON_CPU):',
           'if _mode != "off":',
           (T_HS,), "the default checks synchronise the host on a GPU again"),
    Mutant("checks-skipped-under-compile", "pixelkernels/_checks.py",
           'return "traced"  # torch._assert_async lands in the graph',
           "return None",
           (T_HS,), "compilation skips the value checks again"),
    Mutant("checks-255-not-moved", "pixelkernels/_checks.py",
           "v = t.masked_fill(t == ignore_index, low)",
           "v = t",
           (T_HS,), "the torch form of the device check refuses ignore_index = 255"),
    Mutant("autograd-grad-slot", "csrc/autograd.cpp",
           "const size_t k = s.slot[a.index];",
           "const size_t k = a.index;",
           (T_AG,), "the C++ autograd reads an output's gradient at the output's index, not the node's slot"),
    Mutant("op-triton-direct-meta", "pixelkernels/_op.py",
           "return body(*args) if type(t) in plain and not t.is_meta and not in_mode() else default(*args)",
           "return body(*args) if type(t) in plain and not in_mode() else default(*args)",
           (T_MS, "-k", "meta_tensors and triton"), "the Triton bodies run on meta tensors (no fake)"),
    Mutant("op-triton-direct-dispatched", "pixelkernels/_op.py",
           "return body(*args) if type(t) in plain and not t.is_meta and not in_mode() else default(*args)",
           "return default(*args)",
           (T_AG, "-k", "triton_eager"), "the Triton eager path goes through the custom op's dispatch again"),
    Mutant("autograd-double-backward-mining", "pixelkernels/ops/triplet_hinge.py",
           '"hard": False},',
           '"hard": True},',
           (T_AG,), "triplet_hinge's double backward mines again among the pixels the slots used"),
    Mutant("cpu-check_values-ignore", "csrc/cpu/check_values_kernels.h",
           "- static_cast<uint64_t>(lo) >= span) & (x != ig));",
           "- static_cast<uint64_t>(lo) >= span));",
           (T_CV,), "the CPU check refuses ignore_index"),
    Mutant("cpu-label-check-fold", "csrc/cpu/label_bins.h",
           "bad += int64_t(!in & (l != ignore));",
           "bad += int64_t((l < 0) & (l != ignore));",
           (T_HS,), "the CPU kernels' folded label check misses labels >= R"),
    Mutant("cpu-check_values-empty-range", "csrc/cpu/check_values_kernels.h",
           "const uint64_t span = hi > lo ? static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) : 0;",
           "const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);",
           (T_CV,), "the CPU scan's unsigned range test wraps an empty interval into a full one"),
    Mutant("cpu-pixel_keys-chunk", "csrc/cpu/pixel_keys.cpp",
           "const int64_t b = t / nc, q0 = (t % nc) * kChunk, q1 = std::min(p.P, q0 + kChunk);",
           "const int64_t b = t / nc, q0 = (t % nc) * kChunk, q1 = std::min(p.P - 1, q0 + kChunk);",
           (T_PK,), "the CPU keys leave each image's last pixel unwritten"),
    Mutant("cuda-pixel_keys-image-stride", "csrc/cuda/pixel_keys.cu",
           "int64_t* out = keys + b * P;",
           "int64_t* out = keys + b * (P - 1);",
           (T_PK,), "the CUDA keys of image b written at a wrong offset"),
    Mutant("common-pixel_keys-hash-high-word", "csrc/common/pixel_keys.h",
           "const uint32_t lo = static_cast<uint32_t>(s), hi = static_cast<uint32_t>(s >> 32);",
           "const uint32_t lo = static_cast<uint32_t>(s), hi = static_cast<uint32_t>(s >> 31);",
           (T_PK,), "the seeds' high word misread: keys differ from the reference's for large seeds"),
    Mutant("cuda-check_values-tail", "csrc/cuda/check_values.cu",
           "if (tail0 + threadIdx.x < n) check_one",
           "if (tail0 + threadIdx.x + 1 < n) check_one",
           (T_CV,), "the CUDA check skips the last value after the last 16-byte word"),
    # --- the six planted bugs the suite once let through (issue 21) ---------------------------
    Mutant("cpu-region_hinge-merge-index", "csrc/cpu/region_hinge.cpp",
           "for (int64_t c = 0; c < nc; ++c) s += part[(b * nc + c) * R + r];",
           "for (int64_t c = 0; c < nc; ++c) s += part[(b + c) * R + r];",
           (T_RH, T_CH), "forward merge of the chunk partials indexed as if one image"),
    Mutant("cpu-region_hinge-first-tile-labels", "csrc/cpu/region_hinge_kernels.h",
           "chunk_bins(lab, i0 + t0, nt, R, ignore, bins);",
           "chunk_bins(lab, i0, nt, R, ignore, bins);",
           (T_RH, T_CH), "every tile of a chunk reads the first tile's labels (first occurrence)"),
    Mutant("cuda-region_stats-backward-count-guard", "csrc/cuda/region_stats.cu",
           "if (takes_part(l, R, ignore) && count[br] > acc_t(0)) {",
           "if (takes_part(l, R, ignore)) {",
           (T_RS,), "backward without its count > 0 guard"),
    Mutant("op-count-differentiable", "pixelkernels/_op.py",
           "ctx.mark_non_differentiable(*(o for i, o in enumerate(outs) if i not in self.differentiable))",
           "pass",
           (T_RS, T_CH), "count outputs made differentiable"),
    Mutant("reference-masked_sum-mask-dtype", "pixelkernels/reference/masked_sum.py",
           "m = mask.to(feat.dtype).to(st)",
           "m = mask.to(st)",
           (T_MS,), "the mask no longer rounded to feat's dtype"),
    Mutant("reference-pixel_normalize-upcast", "pixelkernels/reference/pixel_normalize.py",
           "return y if upcast else y.to(emb.dtype)",
           "return y.to(emb.dtype)",
           (T_PN,), "upcast ignored"),
    # --- shared kernel helpers (issue 35: one per file with arithmetic; tails and lane groups) -
    Mutant("cpu-label_bins-lane-sum-tail", "csrc/cpu/label_bins.h",
           "  for (; i < n; ++i) s += v[i];\n", "  for (; i + 1 < n; ++i) s += v[i];\n",
           (T_RS, "-k", "cpu"), "a run's last pixel past the 8 lanes left out of its sum (runs not a multiple of 8)"),
    Mutant("cpu-simd-bins-tail-pad", "csrc/cpu/simd.h",
           "return load_first<Bins<T>>(p, n, pad);", "return load_first<Bins<T>>(p, n, 0);",
           (T_RS, "-k", "cpu"), "a tile's tail lanes padded with bin 0, not the sentinel: phantom pixels in region 0"),
    Mutant("cpu-pixel_tiles-last-chunk", "csrc/cpu/pixel_tiles.h",
           "f(b, c, p0, std::min(chunk, P - p0));", "f(b, c, p0, std::min(chunk, P - p0 - 1));",
           (T_PN, "-k", "cpu"), "every chunk one pixel short: the last pixel of an image never written"),
    Mutant("cuda-common-block-sum-last-warp", "csrc/cuda/common.cuh",
           "for (int w = 1; w < kThreads / 32; ++w) v += scratch[w];",
           "for (int w = 1; w + 1 < kThreads / 32; ++w) v += scratch[w];",
           (T_TH, T_TE), "a block's last warp left out of its sum (triplet_hinge's per-image loss)"),
    Mutant("cuda-common-group-sum-half", "csrc/cuda/common.cuh",
           "for (int m = (1 << gs) >> 1; m > 0; m >>= 1) v += __shfl_xor_sync(kFullMask, v, m);",
           "for (int m = (1 << gs) >> 2; m > 0; m >>= 1) v += __shfl_xor_sync(kFullMask, v, m);",
           (T_PN, "-k", "emulated"), "a pixel's lane group sums half its lanes (channels_last, 2 < D <= 32)"),
    Mutant("cuda-mma-emulated-fragment", "csrc/cuda/mma.cuh",
           "ar[r][2 * q + 8] = half_bits_to_float<scalar_t>(uint16_t(w[2 + r] & 0xffffu));",
           "ar[r][2 * q + 8] = half_bits_to_float<scalar_t>(uint16_t(w[r] & 0xffffu));",
           (T_PB, "-k", "emulated"), "the emulated mma.sync reads the wrong fragment word for k + 8 (the layout the instruction has)"),
    # --- the region family's references (issue 35: the kinds of input the tests never tried) --
    Mutant("reference-region_stats-ignored-not-zeroed", "pixelkernels/reference/region_stats.py",
           "    x = torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))\n", "",
           (T_RS, T_AD), "an ignored pixel's NaN reaches its own gradient through the spare bin's centroid"),
    Mutant("reference-region_hinge-ignored-not-replaced", "pixelkernels/reference/region_hinge.py",
           "    x = torch.where(valid.unsqueeze(-1), x, own.detach())\n", "",
           (T_RH, T_AD), "an ignored pixel's NaN reaches the gradient (masked after the distance only)"),
    Mutant("reference-centroid_hinge-centroid-detached", "pixelkernels/reference/centroid_hinge.py",
           "hinge = region_hinge(x, labels, centroid, delta, ignore_index)",
           "hinge = region_hinge(x, labels, centroid.detach(), delta, ignore_index)",
           (T_CH,), "the hinge's gradient through the centroids dropped"),
    Mutant("reference-center_distance-plain-sqrt", "pixelkernels/reference/center_distance.py",
           "return (sq if squared else safe_sqrt(sq)).to(emb.dtype)", "return (sq if squared else sq.sqrt()).to(emb.dtype)",
           (T_CD,), "a pixel on the center gets sqrt's infinite derivative, not 0"),
    Mutant("reference-math-nan-distance-gradient", "pixelkernels/reference/_math.py",
           "keep = (sq > 0) | sq.isnan()", "keep = sq > 0",
           (T_CD, T_RH, T_RL), "a NaN distance passes its gradient through unchanged instead of NaN"),
    Mutant("reference-region_losses-ignored-multiplied", "pixelkernels/reference/region_losses.py",
           "centroid = torch.where(m > 0, xf, zero).sum(-1) / n1", "centroid = (xf * m).sum(-1) / n1",
           (T_RL, T_AD), "non-members multiplied by 0, not selected away: an ignored NaN pixel poisons every centroid"),
    Mutant("reference-pixel_normalize-upcast-through-half", "pixelkernels/reference/pixel_normalize.py",
           "return y if upcast else y.to(emb.dtype)",
           "return y.to(emb.dtype).to(y.dtype) if upcast else y.to(emb.dtype)",
           (T_PN, "-k", "reference"), "upcast's float32 output rounded through half (right dtype, half's digits)"),
    # --- shared math (csrc/common) -------------------------------------------------------------
    Mutant("common-takes_part-ignore", "csrc/common/types.h",
           "return label >= 0 && label < num_regions && label != ignore_index;",
           "return label >= 0 && label < num_regions;",
           (T_RS,), "ignore_index inside [0, R) no longer ignored"),
    Mutant("common-region_hinge-delta", "csrc/common/region_hinge.h",
           "const acc_t h = d - delta > acc_t(0) ? d - delta : acc_t(0);",
           "const acc_t h = d > acc_t(0) ? d - delta : acc_t(0);",
           (T_RH,), "the hinge no longer clamped at 0"),
    Mutant("common-center_distance-grad", "csrc/common/center_distance.h",
           "return dist > acc_t(0) ? g / dist : acc_t(0);",
           "return dist > acc_t(0) ? g / (dist + acc_t(1e-3)) : acc_t(0);",
           (T_CD,), "a stray epsilon in the distance gradient"),
    Mutant("common-pixel_normalize-grad", "csrc/common/pixel_normalize.h",
           "return inv * (g - y * dot);",
           "return inv * g;",
           (T_PN,), "the projection term of the normalisation gradient dropped"),
    Mutant("common-region_stats-chunks", "csrc/common/region_stats.h",
           "nc = (P + chunk - 1) / chunk;",
           "nc = P / chunk;",
           (T_RS,), "the last partial chunk of pixels dropped"),
    # --- CPU kernels ---------------------------------------------------------------------------
    Mutant("cpu-pixel_normalize-sumsq", "csrc/cpu/pixel_normalize.cpp",
           "acc[i] += v * v;",
           "acc[i] += v;",
           (T_PN,), "the norm sums values, not squares"),
    Mutant("cpu-center_distance-merge", "csrc/cpu/center_distance.cpp",
           "for (int64_t c = 0; c < nc; ++c) s += part[(b * nc + c) * D + d];",
           "for (int64_t c = 1; c < nc; ++c) s += part[(b * nc + c) * D + d];",
           (T_CD,), "the first chunk's partial of the center gradient dropped"),
    Mutant("cpu-masked_sum-tail", "csrc/cpu/masked_sum.cpp",
           "for (; i < n; ++i) s += row[i] * wb[i];",
           "for (; i + 1 < n; ++i) s += row[i] * wb[i];",
           (T_MS,), "off by one in the unit-stride tail"),
    Mutant("cpu-masked_mean-empty", "csrc/cpu/masked_sum.cpp",
           "for (int64_t d = 0; d < C; ++d) sum[b * C + d] = on ? sum[b * C + d] / den : T(0);",
           "for (int64_t d = 0; d < C; ++d) sum[b * C + d] = sum[b * C + d] / den;",
           (T_RL,), "menet_saliency's empty image divides 0 by 0 instead of taking center 0"),
    Mutant("cpu-masked_mean-mass-term", "csrc/cpu/masked_sum.cpp",
           "gm[b] = on ? -t / den : T(0);",
           "gm[b] = T(0);",
           (T_RL,), "the mask gradient through the mean's denominator dropped"),
    Mutant("cpu-masked_mean-check", "csrc/cpu/masked_sum.cpp",
           "low = wb[i] < low ? wb[i] : low;",
           "low = wb[i] < low - 1 ? wb[i] : low;",
           (T_RL, "tests/test_host_sync.py"), "weights in (-1, 0) pass menet_saliency's check"),
    Mutant("torch-label_check-cpu-fold", "csrc/label_check.h",
           "if (!on_ || bad_ == 0) return;",
           "if (!on_ || bad_ >= 0) return;",
           (T_RS, "tests/test_host_sync.py"), "the CPU side of the region ops' folded label check never raises"),
    Mutant("cpu-menet_saliency-accumulate", "csrc/cpu/masked_sum.cpp",
           "gr[i] = ir[i] + g * wb[i];",
           "gr[i] = g * wb[i];",
           (T_RL,), "menet_saliency's backward drops center_distance's gradient of emb"),
    Mutant("cuda-menet_saliency-accumulate", "csrc/cuda/masked_sum.cu",
           "if constexpr (kAdd) store_from_acc(gx + k, gin[k] + gd * w);",
           "if constexpr (kAdd) store_from_acc(gx + k, gd * w);",
           (T_RL,), "menet_saliency's CUDA backward drops center_distance's gradient of emb"),
    Mutant("triton-menet_saliency-accumulate", "pixelkernels/triton/masked_sum.py",
           "v += tl.load(gin_ptr + offs, mask=m2, other=0.0).to(ACC)",
           "v += 0.0 * tl.load(gin_ptr + offs, mask=m2, other=0.0).to(ACC)",
           (T_RL,), "menet_saliency's Triton backward drops center_distance's gradient of emb"),
    Mutant("cpu-region_stats-merge", "csrc/cpu/region_stats.cpp",
           "m2 += pm2[row * D + d] + (pn[row] > 0 ? T(pn[row]) * dm * dm : T(0));",
           "m2 += pm2[row * D + d];",
           (T_RS,), "Chan's merge without the between-chunk term"),
    Mutant("cpu-region_stats-bins", "csrc/cpu/region_stats_kernels.h",
           "chunk_bins(lab, i0, n, R, ignore, bins);",
           "chunk_bins(lab, i0 + 1, n, R, ignore, bins);",
           (T_RS,), "labels read one pixel late (first occurrence)"),
    # --- CUDA kernels (run by the emulator) ----------------------------------------------------
    Mutant("cuda-pixel_normalize-tail", "csrc/cuda/pixel_normalize.cu",
           "if (on && j + i * G < D) store_from_acc(y + base + i * dstep, v[i] * inv);",
           "if (on && j + i * G <= D) store_from_acc(y + base + i * dstep, v[i] * inv);",
           (T_PN, "tests/test_adversarial.py"), "off by one past the last dim"),
    Mutant("cuda-center_distance-sqrt", "csrc/cuda/center_distance.cu",
           "if (on && j == 0) store_from_acc(dist + b * P + p, squared ? ss : acc_t(sqrt(ss)));",
           "if (on && j == 0) store_from_acc(dist + b * P + p, ss);",
           (T_CD,), "the square root dropped"),
    Mutant("cuda-masked_sum-merge", "csrc/cuda/masked_sum.cu",
           "for (int64_t c = lane; c < n; c += 32) {",
           "for (int64_t c = lane + 1; c < n; c += 32) {",
           (T_MS,), "the first warp partial of the merge dropped"),
    Mutant("cuda-masked_mean-merge-mass", "csrc/cuda/masked_sum.cu",
           "if (mean) m += part[(b * n + c) * K + C];",
           "if (mean && c > 0) m += part[(b * n + c) * K + C];",
           (T_RL,), "the mean divides by a mass without its first warp partial"),
    Mutant("cuda-masked_mean-mass-term", "csrc/cuda/masked_sum.cu",
           "return *on ? -t / *den : acc_t(0);",
           "return acc_t(0);",
           (T_RL,), "the mask gradient through the mean's denominator dropped"),
    Mutant("cuda-masked_mean-check", "csrc/cuda/masked_sum.cu",
           "if (check && low < 0) report_real(what, double(low), b * P + at);",
           "if (check && low < -1) report_real(what, double(low), b * P + at);",
           ("tests/test_host_sync.py",), "weights in (-1, 0) pass the device-side check"),
    Mutant("cuda-region_stats-label-check", "csrc/cuda/region_stats.cu",
           "else if (check && bad_label(l, R, ignore)) bad = p;",
           "else if (check && bad_label(l, R, ignore) && l < 0) bad = p;",
           ("tests/test_host_sync.py",), "labels >= R pass region_stats' device-side check"),
    Mutant("cuda-region_hinge-label-check", "csrc/cuda/region_hinge.cu",
           "if (check && r < 0 && j == 0 && p < c1",
           "if (check && r < 0 && j == 1 && p < c1",
           ("tests/test_host_sync.py",), "region_hinge's device-side label check made by no lane (G = 1)"),
    Mutant("cuda-region_hinge-barrier", "csrc/cuda/region_hinge.cu",
           "        if (lane == 0) slot[r] = s;\n      }\n      __syncthreads();  // bins are reused",
           "        if (lane == 0) slot[r] = s;\n      }\n      // bins are reused",
           (T_RH,), "the forward's barrier before the shared bins are reused removed (racecheck)"),
    Mutant("cuda-region_stats-merge", "csrc/cuda/region_stats.cu",
           "for (int64_t c = lane; c < nc; c += 32) nl += part_n[row_b + c * R];",
           "for (int64_t c = lane; c < nc; c += 32) nl += part_n[row_b + c];",
           (T_RS,), "the count partials read with the wrong stride"),
    # --- Triton kernels (run by the interpreter) -----------------------------------------------
    Mutant("triton-region_stats-variance", "pixelkernels/triton/region_stats.py",
           "m2_acc += tl.where(m & (n_c > 0)[:, None], term, 0.0)",
           "m2_acc += tl.where(m & (n_c > 0)[:, None], m2_c, 0.0)",
           (T_RS,), "Chan's merge without the between-chunk term"),
    Mutant("triton-pixel_normalize-eps", "pixelkernels/triton/pixel_normalize.py",
           "grad = tl.where(clamped[:, None], g * inv[:, None], inv[:, None] * (g - y * dot[:, None]))",
           "grad = inv[:, None] * (g - y * dot[:, None])",
           (T_PN,), "the clamped branch of the gradient dropped"),
    Mutant("triton-common-label-range", "pixelkernels/triton/_common.py",
           "valid = mask & (lab >= 0) & (lab < R) & (lab != ignore_index)",
           "valid = mask & (lab >= 0) & (lab <= R) & (lab != ignore_index)",
           (T_RS, T_RH), "a label equal to R taken as a region (checks off)"),
    Mutant("triton-masked_sum-mass", "pixelkernels/triton/masked_sum.py",
           "tl.store(row + D, tl.sum(w, axis=0))",
           "tl.store(row + D, tl.sum(w * w, axis=0))",
           (T_MS,), "the mass sums squared weights"),
    Mutant("triton-masked_mean-merge-mass", "pixelkernels/triton/masked_sum.py",
           "m += tl.load(row + offs_k * (D + 1) + D, mask=kmask, other=0.0).to(ACC)",
           "m += tl.load(row + offs_k * (D + 1) + D - 1, mask=kmask, other=0.0).to(ACC)",
           (T_MS, T_RL), "the merge's mass (and the mean's divisor) is the last channel's sum"),
    Mutant("triton-masked_sum-merge-step", "pixelkernels/triton/masked_sum.py",
           "for k0 in range(0, nblk, BLOCK_K):",
           "for k0 in range(0, nblk - 1, BLOCK_K):",
           (T_MS,), "the merge drops the last block's partials when nblk is 1 more than a multiple of BLOCK_K"),
    Mutant("triton-masked_mean-mass-term", "pixelkernels/triton/masked_sum.py",
           "gm = tl.where(on, -tl.sum(t, axis=0) / den, 0.0)",
           "gm = tl.where(on, 0.0 * den, 0.0)",
           (T_RL,), "the mask gradient through the mean's denominator dropped"),
    Mutant("triton-center_distance-sqrt", "pixelkernels/triton/center_distance.py",
           "out = ss if SQUARED else tl.sqrt(ss)",
           "out = ss",
           (T_CD,), "the square root dropped"),
    Mutant("triton-region_hinge-delta", "pixelkernels/triton/region_hinge.py",
           "_val, f = _factor(ss, tl.full([], delta, ACC))",
           "_val, f = _factor(ss, tl.full([], 2 * delta, ACC))",
           (T_RH,), "the margin doubled in the backward factor"),
    Mutant("triton-centroid_hinge-offset", "pixelkernels/triton/centroid_hinge.py",
           "offset = (grad_centroid.to(acc) + through) / count.to(acc).clamp_min(1).unsqueeze(-1)",
           "offset = grad_centroid.to(acc) / count.to(acc).clamp_min(1).unsqueeze(-1)",
           (T_CH,), "the gradient through the centroids dropped"),
    # --- the triplet family ------------------------------------------------------------------
    Mutant("cpu-triplet_hinge-mean-over-k", "csrc/cpu/triplet_hinge.cpp",
           "loss[b] = vs.count[b] > 0 ? s / T(vs.count[b]) : T(0);",
           "loss[b] = s / T(K > 0 ? K : 1);",
           (T_TH, "-k", "cpu"), "the mean over all K slots, padding included"),
    Mutant("cuda-triplet_hinge-negative-to-positive", "csrc/cuda/triplet_hinge.cu",
           "atomicAdd(acc.at(b, d, in), gv);",
           "atomicAdd(acc.at(b, d, ip), gv);",
           (T_TE,), "the negative's gradient added at the positive's pixel (atomic path)"),
    Mutant("cuda-triplet_hinge-mma-fragment", "csrc/cuda/triplet_hinge.cu",
           "const uint32_t bf[2] = {sc[col][t], sc[col][t + 4]};",
           "const uint32_t bf[2] = {sc[col][t + 4], sc[col][t]};",
           (T_TE, "-k", "tensor_core"), "the tensor-core kernel's B fragment with its k halves swapped"),
    Mutant("cuda-triplet_hinge-mma-wide-ignored", "csrc/cuda/triplet_hinge.cu",
           "for (int w = 0; w < kWarps; ++w) wide = wide || swide[w] != 0;",
           "for (int w = 0; w < kWarps; ++w) wide = wide && swide[w] != 0;",
           (T_TE, "-k", "tensor_core"), "huge norms left on the |a|^2 + |c|^2 - 2 a.c expansion"),
    Mutant("triton-triplet_hinge-scale", "pixelkernels/triton/triplet_hinge.py",
           "c = (grad_loss.to(st) / valid.clamp(min=1).to(st)).contiguous()",
           "c = grad_loss.to(st).contiguous()",
           (T_TH, "-k", "triton"), "the backward not divided by n_b"),
    Mutant("common-triplet_hinge-nan-loses", "csrc/common/triplet_hinge.h",
           "if (d != d) return true;",
           "if (d != d) return false;",
           (T_TH, "-k", "nan or emulated"), "a NaN distance never mined (torch.argmax picks it)"),
    Mutant("cpu-sample_pixels-unsorted", "csrc/cpu/sample_pixels.cpp",
           "std::partial_sort(v.begin(), v.begin() + n, v.end());",
           "std::sort(v.begin(), v.begin() + n);",
           (T_SP,), "the first n candidates in pixel order instead of the n smallest keys"),
    # issue 35: the inputs the suite never tried (repeated pixels in the deterministic backward,
    # ties past a vector or a tile, anchor-only inf in half mining, per-image seeds, the
    # sampler's fallback, padding that reads pixel 0)
    Mutant("cpu-triplet_hinge-lane-ties", "csrc/cpu/triplet_hinge.cpp",
           """const bool wins = r < 0 || (j < r ? !triplet_hinge::better(rb, best[l], farthest)
                                        : triplet_hinge::better(best[l], rb, farthest));""",
           "const bool wins = r < 0 || triplet_hinge::better(best[l], rb, farthest);",
           (T_TH, "-k", "spread_over and cpu"), "lanes merged in lane order: a tie past one vector of slots goes to "
           "the lower lane, not the lower slot"),
    Mutant("cuda-triplet_hinge-mma-anchor-norms-ignored", "csrc/cuda/triplet_hinge.cu",
           "bool wide = threadIdx.x < kTile && a0 + threadIdx.x < K && !(na[a0 + threadIdx.x] <= kMaxNorm);",
           "bool wide = false;",
           (T_TH, "-k", "only_an_anchor and emulated"), "the tensor-core kernel checks the candidates' norms only: "
           "an inf anchor meets inf - inf"),
    Mutant("triton-triplet_hinge-wide-anchors-ignored", "pixelkernels/triton/triplet_hinge.py",
           "wide = _any_wide(x_ptr, b, ia, va, D, sb, sd, sp, BLOCK_A, BLOCK_D)",
           "wide = 0",
           (T_TH, "-k", "only_an_anchor and triton"), "the DOT pre-pass checks the candidates' norms only"),
    Mutant("triton-triplet_hinge-tile-ties", "pixelkernels/triton/triplet_hinge.py",
           "take = open_ & (nan_j == K) & (tile_j < K) & ((best_j == K) | (tile_best > best))",
           "take = open_ & (nan_j == K) & (tile_j < K) & ((best_j == K) | (tile_best >= best))",
           (T_TH, "-k", "spread_over and triton"), "a tie in a later candidate tile replaces the running best"),
    Mutant("triton-triplet_hinge-deterministic-run", "pixelkernels/triton/triplet_hinge.py",
           "acc += tl.where(role == 0, gu - gv, tl.where(role == 1, -gu, gv))",
           "acc = tl.where(role == 0, gu - gv, tl.where(role == 1, -gu, gv))",
           (T_TH, "-k", "deterministic_backward_with and triton"), "the deterministic scatter keeps only the last "
           "entry of a run of equal pixels"),
    Mutant("reference-triplet_hinge-padding-reads-pixel-0", "pixelkernels/reference/triplet_hinge.py",
           "return torch.where(valid[..., None], g, torch.zeros((), dtype=x.dtype, device=x.device))",
           "return g",
           (T_TH, "-k", "reach_nothing"), "slots taking no part read pixel 0, masked only after the distances"),
    Mutant("reference-triplet_hinge-empty-detached", "pixelkernels/reference/triplet_hinge.py",
           "return x.sum((1, 2)), pos_used, neg_used",
           "return torch.zeros(B, dtype=st, device=emb.device), pos_used, neg_used",
           (T_TH, "-k", "attached"), "H*W = 0 returns a constant, detached from the graph"),
    Mutant("reference-triplet_losses-one-stream", "pixelkernels/reference/triplet_losses.py",
           "s1, s2 = draw(0), draw(1)",
           "s1, s2 = draw(0), draw(0)",
           ("tests/test_is_triplet_loss.py", "-k", "independent_pairs"), "the second draw reuses the first's stream "
           "(per-image seeds: F2 = F1, B2 = B1)"),
    Mutant("reference-sample_pixels-seed-low-bits", "pixelkernels/reference/sample_pixels.py",
           "h = _mix32(lo ^ _mix32(hi ^ _mix32(torch.full_like(s, stream & _M32))))",
           "h = _mix32(lo ^ _mix32(torch.full_like(s, stream & _M32)))",
           (T_SP, "-k", "high_32"), "the seed hash ignores the seed's high 32 bits (where training puts the step)"),
    Mutant("cpu-sample_pixels-fallback-keeps-partial", "csrc/cpu/sample_pixels.cpp",
           "      cand[i].clear();\n",
           "",
           (T_SP, "-k", "fallback_with_some and cpu"), "the exact fallback adds the class's keys to the partial "
           "candidates instead of replacing them (those below the bound twice)"),
    Mutant("triton-sample_pixels-ignore-index", "pixelkernels/triton/sample_pixels.py",
           "return _reference(labels, keys, num_classes, k, ignore_index)",
           "return _reference(labels, keys, num_classes, k)",
           (T_SP, "-k", "triton"), "ignore_index not passed on (-1 assumed)"),
    # --- the dense family -----------------------------------------------------------------------
    Mutant("common-similarity_reduce-sigmoid-complement", "csrc/common/similarity_reduce.h",
           "comp = z >= acc_t(0) ? e * s : acc_t(1) - s;", "comp = acc_t(1) - s;",
           (T_SR, "-k", "saturated_sigmoid and emulated"), "1 - s as such: a saturated score's e^-z derivative becomes 0"),
    Mutant("cpu-similarity_reduce-sigmoid-complement", "csrc/cpu/similarity_reduce.cpp",
           "if (a.sigmoid) zt.mul_(st).mul_(matrix(cp, n, k));", "if (a.sigmoid) zt.mul_(st).mul_(st.neg().add_(T(1)));",
           (T_SR, "-k", "saturated_sigmoid and cpu"), "1 - s as such: a saturated score's e^-z derivative becomes 0"),
    Mutant("triton-similarity_reduce-sigmoid-complement", "pixelkernels/triton/similarity_reduce.py",
           "comp = tl.where(z >= 0, e * s, 1.0 - s)", "comp = 1.0 - s",
           (T_SR, "-k", "saturated_sigmoid and triton"), "1 - s as such: a saturated score's e^-z derivative becomes 0"),
    Mutant("common-similarity_reduce-softmax-centre", "csrc/common/similarity_reduce.h",
           "for (int64_t c = 0; c < C; ++c) h[c] = c == top ? ht : (g[c] - g[top]) + ht;",
           "for (int64_t c = 0; c < C; ++c) h[c] = c == top ? ht : (g[c] - g[top]);",
           (T_SR, "-k", "cpu or emulated"), "softmax's centred gradient drops the top class's term"),
    Mutant("common-similarity_reduce-nan-max", "csrc/common/similarity_reduce.h",
           "case Reduce::Max: return s == o ? g / ties : o != o ? o : acc_t(0);",
           "case Reduce::Max: return s == o ? g / ties : acc_t(0);",
           (T_SR, "-k", "nan_score and cpu"), "a NaN max gives its members 0, not amax's NaN (s == o never holds)"),
    Mutant("reference-similarity_reduce-max-fill-ties", "pixelkernels/reference/similarity_reduce.py",
           'start = s.new_full((B, n, C + 1), float("nan"))',
           'start = s.new_full((B, n, C + 1), float("-inf"))',
           (T_SR, "-k", "minus_inf_class"), "the max's -inf start counts as a tie of a class whose max is -inf"),
    Mutant("reference-similarity_reduce-padding-weight", "pixelkernels/reference/similarity_reduce.py",
           "r = r * _zero_where_not(ref_weight.to(st), valid)[..., None]",
           "r = r * ref_weight.to(st)[..., None]",
           (T_SR, "-k", "nan_weight_on_padding"), "a padding slot's NaN weight multiplies into its ref's gradient"),
    Mutant("reference-label_transfer-linear-empty-class", "pixelkernels/reference/label_transfer.py",
           "scores = torch.where((counts > 0)[:, None, :], scores,",
           "scores = torch.where((counts >= 0)[:, None, :], scores,",
           (T_LT, "-k", "infinite_query"), "the linear path leaves an empty class to q.S_c (inf * 0 = NaN)"),
    Mutant("reference-prior_mask-empty-query", "pixelkernels/reference/prior_mask.py",
           "    if Hq * Wq == 0:",
           "    if Hq == 0:",
           (T_PM, "-k", "empty_query"), "a query map of width 0 reaches amin over no pixel"),
    Mutant("op-label_transfer-linear-empty-class", "pixelkernels/ops/label_transfer.py",
           "scores = scores.masked_fill((counts == 0)[:, None, :], 0.0)",
           "scores = scores.masked_fill((counts < 0)[:, None, :], 0.0)",
           (T_LT, "-k", "infinite_query"), "the op's linear path leaves an empty class to q.S_c (inf * 0 = NaN)"),
    Mutant("op-label_transfer-class-sums-padding", "pixelkernels/ops/label_transfer.py",
           "bins = ref_labels.long().clamp(-1, C) + 1",
           "bins = ref_labels.long().clamp(0, C) + 1",
           (T_LT,), "the op's class sums count the padding refs (label -1) in class 0"),
    Mutant("op-label_transfer-class-sums-above", "pixelkernels/ops/label_transfer.py",
           "bins = ref_labels.long().clamp(-1, C) + 1",
           "bins = ref_labels.long().clamp(-1, C - 1) + 1",
           (T_LT,), "with the checks off, the op's class sums count a label >= C in class C - 1"),
    Mutant("cpu-similarity_reduce-max-ties", "csrc/cpu/similarity_reduce.cpp",
           "        ties[i * C + c] += T(1);",
           "        ties[i * C + c] = T(1);",
           (T_SR, "-k", "cpu"), "max ties counted once: a tied max's gradient not split"),
    Mutant("cpu-similarity_reduce-group-partials", "csrc/cpu/similarity_reduce.cpp",
           "for (int64_t it = grp; it < nt; it += G) {",
           "for (int64_t it = grp; it < nt; it += 1) {",
           (T_SR, "-k", "cpu"), "every group walks the query tiles after its own (dr counted more than once)"),
    Mutant("cpu-similarity_reduce-unique-max-ref", "csrc/cpu/similarity_reduce.cpp",
           "axpy(D, z, qi, 1, dr + j * dsk, dsd);",
           "axpy(D, z * T(1.0001), qi, 1, dr + j * dsk, dsd);",
           (T_SR, "-k", "cpu"), "the unique-max backward's ref gradient slightly off"),
    Mutant("cpu-similarity_reduce-unique-max-dq-tile", "csrc/cpu/similarity_reduce.cpp",
           "            dq.copy_(matrix(dqt, n, D));",
           "            dq.copy_(matrix(dqt, n, D).mul(T(1.0001)));",
           (T_SR, "-k", "cpu"), "the unique-max backward's contiguous query-gradient tile written back slightly off"),
    Mutant("cpu-similarity_reduce-weight-unique-dq", "csrc/cpu/similarity_reduce.cpp",
           "const T zw = tab.w ? z * tab.w[b * K + j] : z;",
           "const T zw = z;",
           (T_SR, "-k", "cpu and weight"), "the unique-max backward's query gradient with the unweighted ref"),
    Mutant("cpu-similarity_reduce-weight-eps", "csrc/cpu/similarity_reduce.cpp",
           "dw = T(esum);",
           "dw = T(esum * 1.001);",
           (T_SR, "-k", "ref_weight_gradient"), "cosine's per-pair weight gradient slightly off"),
    Mutant("cpu-similarity_reduce-padding-dz", "csrc/cpu/similarity_reduce.cpp",
           "if (const at::Tensor off = off_mask(tab, b, j0, k); off.defined()) zt.masked_fill_(off, T(0));",
           "",
           (T_SR, "-k", "padding_at_low and cpu"), "padding's dZ left to the chain: exp(0/T - lse) overflows, 0 * inf"),
    Mutant("cpu-similarity_reduce-padding-weight", "csrc/cpu/similarity_reduce.cpp",
           "wclean[i] = off[i] ? T(0) : w0[i];",
           "wclean[i] = w0[i];",
           (T_SR, "-k", "nan_weight_on_padding and cpu"), "a padding slot's NaN weight multiplies into dZ w"),
    Mutant("cpu-similarity_reduce-softmax-empty-class", "csrc/cpu/similarity_reduce.cpp",
           "oi[c] = L[i] != T(0) && tab.count[b * C + c] > T(0) ? oi[c] / L[i] : T(0);",
           "oi[c] = L[i] != T(0) ? oi[c] / L[i] : T(0);",
           (T_SR, "-k", "nan_row and cpu"), "an empty class of a NaN row divided by the NaN sum"),
    Mutant("cuda-similarity_reduce-weight-chain", "csrc/similarity_reduce.cpp",
           "G.mul(rr).sum(-1).to(st)};",
           "G.mul(rr).sum(-1).mul(1.001).to(st)};",
           (T_SR, "-k", "emulated and weight"), "the CUDA path's weight gradient slightly off"),
    Mutant("cuda-similarity_reduce-cosine-norm-term", "csrc/cuda/similarity_reduce.cu",
           "for (int64_t d = 0; d < D; ++d) drj[d] -= f * double(to_acc(rj[d]));",
           "for (int64_t d = 0; d < D; ++d) drj[d] += f * double(to_acc(rj[d]));",
           (T_SR, "-k", "emulated"), "the ref norm's term of the cosine gradient added, not subtracted"),
    Mutant("cuda-similarity_reduce-padding-forward", "csrc/cuda/similarity_reduce.cu",
           "      if (c < 0) continue;\n      row.take(",
           "      row.take(",
           (T_SR, "-k", "padding_at_low and emulated"), "the SIMT forward reduces padding refs too (class -1)"),
    Mutant("cuda-similarity_reduce-padding-weight", "csrc/similarity_reduce.cpp",
           "at::where(valid, w.to(dtype), zero)};",
           "w.to(dtype)};",
           (T_SR, "-k", "nan_weight_on_padding and emulated"), "the CUDA path multiplies a padding slot's NaN weight in"),
    Mutant("cuda-similarity_reduce-low-temperature", "csrc/cuda/similarity_reduce.cu",
           "const acc_t e = exp(x - m);",
           "const acc_t e = exp(x) / exp(m);",
           (T_SR, "-k", "beyond_exp and emulated"), "the online softmax's term as a quotient: inf / inf past exp's range"),
    Mutant("cuda-similarity_reduce-softmax-lse", "csrc/cuda/similarity_reduce.cu",
           "exp((double(s / v.temp) - double(lse[2 * row])) - double(lse[2 * row + 1]))",
           "exp(double(s / v.temp) - double(lse[2 * row] + lse[2 * row + 1]))",
           (T_SR, "-k", "beyond_exp and emulated"), "p from m + log l rounded to one float (half an ulp of |s/T|)"),
    Mutant("cuda-similarity_reduce-nan-max", "csrc/cuda/similarity_reduce.cu",
           "ds = s == o ? g / ties : o != o ? double(o) : 0.0;",
           "ds = s == o ? g / ties : 0.0;",
           (T_SR, "-k", "nan_score and emulated"), "a NaN max gives its members 0, not amax's NaN"),
    Mutant("cuda-similarity_reduce-softmax-empty-class", "csrc/cuda/similarity_reduce.cu",
           "o[c] = l != acc_t(0) && count[c] > acc_t(0) ? o[c] / l : acc_t(0);",
           "o[c] = l != acc_t(0) ? o[c] / l : acc_t(0);",
           (T_SR, "-k", "nan_row and emulated"), "an empty class of a NaN row divided by the NaN sum"),
    Mutant("cuda-similarity_reduce-norm-floor", "csrc/cuda/similarity_reduce.cu",
           "rn[t] = part ? similarity_reduce::clamp_norm<acc_t>(sqrt(s), v.floor) : acc_t(0);",
           "rn[t] = part ? sqrt(s) : acc_t(0);",
           (T_SR, "-k", "eps_zero and emulated"), "a zero ref's norm unclamped: 0 / 0 with eps = 0"),
    Mutant("cuda-similarity_reduce-mma-scale", "csrc/cuda/pair_tiles.cuh",
           "+= sm.scale[x] * acc2[n][e];",
           "+= acc2[n][e];",
           (T_SR, "-k", "emulated"), "the half backward forgets the power-of-two scale of its dZ rows"),
    Mutant("cuda-similarity_reduce-mma-lo-half", "csrc/cuda/pair_tiles.cuh",
           "for (int half = 0; half < 2; ++half)",
           "for (int half = 0; half < 1; ++half)",
           (T_SR, "-k", "emulated"), "the half backward drops dZ's low half (bf16-rounded dZ, 2^-9 per term)"),
    Mutant("cuda-pair_tiles-owner-sums-order", "csrc/cuda/pair_tiles.cuh",
           "if (g == 0) sums[warp][n * 8 + 2 * t + e][s] = x;",
           "if (g == 0) sums[warp][n * 8 + 2 * t][s] = x;",
           (T_SR, "-k", "emulated"), "the ref side's norm-term sums written to the wrong column"),
    Mutant("cuda-similarity_reduce-f32-splits", "csrc/cuda/similarity_reduce.cu",
           "    for (int64_t s = 0; s < S; ++s) {\n      a += acc",
           "    for (int64_t s = 0; s < 1; ++s) {\n      a += acc",
           (T_SR, "-k", "emulated"), "the float32 backward sums the first split of the queries only"),
    Mutant("cuda-pair_tiles-f32-padding-rows", "csrc/cuda/pair_tiles.cuh",
           "sm.u.other[k][dd] = on ? O.value(b, p0 + k, d) : 0.0f;",
           "sm.u.other[k][dd] = p0 + k < other_n && d < D ? O.value(b, p0 + k, d) : 0.0f;",
           (T_SR, "-k", "emulated"), "float32: a ref that takes no part (NaN values) read into dq"),
    Mutant("cuda-pair_bce-f32-splits", "csrc/cuda/pair_bce.cu",
           "for (int64_t s = 0; s < S; ++s) a += acc[",
           "for (int64_t s = 0; s < 1; ++s) a += acc[",
           (T_PB, "-k", "emulated"), "the float32 backward sums the first split of the other side only"),
    Mutant("cuda-pair_bce-f32-row-partials", "csrc/cuda/pair_bce.cu",
           "rows[2 * r] = part ? float(r0) : 0.0f;",
           "rows[2 * r] = part ? float(r1) : 0.0f;",
           (T_PB, "-k", "emulated"), "float32: the first row partial (Σ_j e <x_i, y_j>) replaced by the second"),
    Mutant("triton-similarity_reduce-dr-splits", "pixelkernels/triton/similarity_reduce.py",
           "dr, col = dr.sum(0), col.sum(0)",
           "dr, col = dr[0], col[0]",
           (T_SR, "-k", "triton"), "the Triton dr keeps the first split of the queries only"),
    Mutant("cuda-pair_bce-mma-labels", "csrc/cuda/pair_bce.cu",
           "T.lc[me] = j0 + me < v.Ky ? label_at(v.ly, b * v.Ky + j0 + me) : -1;",
           "T.lc[me] = j0 + me < v.Ky ? label_at(v.ly, b * v.Ky + me) : -1;",
           (T_PB, "-k", "emulated"), "the half kernels read the first y tile's labels for every tile"),
    Mutant("triton-similarity_reduce-mean", "pixelkernels/triton/similarity_reduce.py",
           "        out = out / count.clamp_min(1)[:, None, :]",
           "        out = out / count.clamp_min(1)[:, None, :] * 1.0001",
           (T_SR, "-k", "triton"), "a slightly wrong mean (a stray factor)"),
    Mutant("triton-similarity_reduce-lane-mask", "pixelkernels/triton/similarity_reduce.py",
           "    dz = tl.where(pair, dz, 0.0)\n",
           "",
           (T_SR, "-k", "eps_zero and triton"), "masked lanes' dZ left to the chain: 0 / 0 where eps = 0"),
    Mutant("triton-similarity_reduce-padding-weight", "pixelkernels/triton/similarity_reduce.py",
           "return query.to(dtype), r, torch.where(valid, ref_weight.to(dtype), zero)",
           "return query.to(dtype), r, ref_weight.to(dtype)",
           (T_SR, "-k", "nan_weight_on_padding and triton"), "a padding slot's NaN weight multiplies into d ref"),
    Mutant("triton-similarity_reduce-low-temperature", "pixelkernels/triton/similarity_reduce.py",
           "e = tl.where(pair, tl.exp(x - m_new[:, None]), 0.0)",
           "e = tl.where(pair, tl.exp(x) / tl.exp(m_new[:, None]), 0.0)",
           (T_SR, "-k", "beyond_exp and triton"), "the online softmax's term as a quotient: inf / inf past exp's range"),
    Mutant("triton-similarity_reduce-nan-max", "pixelkernels/triton/similarity_reduce.py",
           "ds = tl.where(s == o, g / ties, tl.where(o != o, o, 0.0))",
           "ds = tl.where(s == o, g / ties, 0.0)",
           (T_SR, "-k", "nan_score and triton"), "a NaN max gives its members 0, not amax's NaN"),
    Mutant("triton-similarity_reduce-softmax-empty-class", "pixelkernels/triton/similarity_reduce.py",
           "has = (lsum != 0)[..., None] & (count > 0)[:, None, :]",
           "has = (lsum != 0)[..., None] & (count >= 0)[:, None, :]",
           (T_SR, "-k", "nan_row and triton"), "an empty class of a NaN row divided by the NaN sum"),
    Mutant("common-pair_bce-dloss", "csrc/common/pair_bce.h",
           "return t ? -acc_t(1) / (acc_t(1) + exp(z)) : acc_t(1) / (acc_t(1) + exp(-z));",
           "return t ? acc_t(1) / (acc_t(1) + exp(-z)) : acc_t(1) / (acc_t(1) + exp(-z));",
           (T_PB, "-k", "emulated"), "the target dropped from the BCE derivative"),
    Mutant("cpu-pair_bce-target", "csrc/cpu/pair_bce.cpp",
           "t[i * k + j] = lx[i] == ly[j];",
           "t[i * k + j] = lx[i] == ly[j] && j > 0;",
           (T_PB, "-k", "cpu"), "the first ref of every tile never a positive"),
    Mutant("cpu-pair_bce-dy-scale", "csrc/cpu/pair_bce.cpp",
           "dy.addmm_(w.scaled(ed, scale, n, k).t(), xt);",
           "dy.addmm_(ed.t(), xt);",
           (T_PB, "-k", "cpu"), "dy not multiplied by the scale"),
    Mutant("cuda-pair_bce-ignored-rows", "csrc/cuda/pair_bce.cu",
           "    for (int64_t i = 0; i < v.Kx && lj >= 0; ++i) {",
           "    for (int64_t i = 0; i < v.Kx; ++i) {",
           (T_PB, "-k", "emulated"), "an ignored y row gets a gradient"),
    Mutant("triton-pair_bce-log1p", "pixelkernels/triton/pair_bce.py",
           "    return tl.where(w == 1.0, u, tl.log(w) * (u / (w - 1.0)))",
           "    return tl.log(w)",
           (T_PB, "-k", "triton and saturated"), "log(1 + u) without its correction: saturated logits lose precision"),
    # --- issue 35: infinite logits, rows that take no part, exact centring --------------------
    Mutant("cpu-pair_bce-scale-before-mask", "csrc/cpu/pair_bce.cpp",
           "return ed.mul_(scale).masked_fill_(bools(off.data(), n, k), 0.0);",
           "return ed.masked_fill_(bools(off.data(), n, k), 0.0).mul_(scale);",
           (T_PB, "-k", "cpu and nan_scale"), "the scale multiplied after the mask: a NaN scale reaches rows without a partner"),
    Mutant("cpu-pair_bce-dy-padding-rows", "csrc/cpu/pair_bce.cpp",
           "      zero_ignored(static_cast<T*>(p.grad_y), y.lab, b * Ky + j0, k, D);\n",
           "",
           (T_PB, "-k", "cpu and take_no_part"), "padding rows of y keep 0 times a valid x row's NaN"),
    Mutant("common-pair_bce-loss-inf", "csrc/common/pair_bce.h",
           "  const acc_t u = t ? -z : z;\n  return (u > acc_t(0) ? u : acc_t(0)) + log1p(exp(-fabs(z)));",
           "  return (z > acc_t(0) ? z : acc_t(0)) - (t ? z : acc_t(0)) + log1p(exp(-fabs(z)));",
           (T_PB, "-k", "emulated and infinite"), "bce as max(z, 0) - t z: inf - inf = NaN at z = +inf where the target agrees"),
    Mutant("cuda-pair_bce-mma-unscaled", "csrc/cuda/pair_bce.cu",
           "    return W(a) * e;", "    return e;",
           (T_PB, "-k", "emulated"), "the tile backward's pair coefficient without the scale"),
    Mutant("cuda-pair_tiles-inf-lo", "csrc/cuda/pair_tiles.cuh",
           "half_bits<scalar_t>(fabsf(hv) < INFINITY ? a - hv : 0.0f);", "half_bits<scalar_t>(a - hv);",
           (T_PB, "-k", "emulated and half_inputs"), "an infinite coefficient's low half inf - inf = NaN: dx = inf·y becomes NaN"),
    Mutant("cuda-pair_tiles-scale-of-inf", "csrc/cuda/pair_tiles.cuh",
           "            if (m < INFINITY) big = fmaxf(big, m);", "            big = fmaxf(big, m);",
           (T_PB, "-k", "emulated and half_inputs"), "an infinite coefficient sets its line's scale: inf / inf = NaN"),
    Mutant("triton-pair_bce-loss-inf", "pixelkernels/triton/pair_bce.py",
           "loss = tl.where(t, tl.maximum(-z, 0.0), tl.maximum(z, 0.0)) + _log1p(tl.exp(-tl.abs(z)))",
           "loss = tl.maximum(z, 0.0) - tl.where(t, z, 0.0) + _log1p(tl.exp(-tl.abs(z)))",
           (T_PB, "-k", "triton and infinite"), "bce as max(z, 0) - t z: inf - inf = NaN at z = +inf where the target agrees"),
    Mutant("triton-pair_bce-scale-before-mask", "pixelkernels/triton/pair_bce.py",
           "        ea = tl.where(valid, e * a, 0.0)", "        ea = e * a",
           (T_PB, "-k", "triton and nan_scale"), "dx's coefficients scaled after the mask: 0·NaN reaches rows without a partner"),
    Mutant("reference-pair_bce-torch-bce", "pixelkernels/reference/pair_bce.py",
           "return torch.where(valid, bce_with_logits(z, t), zero).sum(2)",
           "return torch.where(valid, torch.nn.functional.binary_cross_entropy_with_logits(z, t.to(z.dtype), "
           "reduction=\"none\"), zero).sum(2)",
           (T_PB, "-k", "reference and infinite"), "torch's BCE with logits: (1 - t)·z = 0·inf = NaN at z = +inf, t = 1"),
    Mutant("reference-pair_bce-scale-unmasked", "pixelkernels/reference/pair_bce.py",
           "(x @ y.transpose(1, 2)) * torch.where(valid, a.to(x.device), zero) + c",
           "(x @ y.transpose(1, 2)) * a.to(x.device) + c",
           (T_PB, "-k", "reference and nan_scale"), "the scale on every pair: a NaN scale's 0·NaN reaches rows without a partner"),
    Mutant("reference-dense_similarity_loss-plain-mean", "pixelkernels/reference/dense_similarity_loss.py",
           "    mean = pivot_mean(psi.reshape(-1), valid.reshape(-1), 0)\n",
           "    mean = _masked(psi, valid).sum() / n\n",
           (T_DS, "-k", "reference and equal_valid"), "Σ Ψ / n: equal Ψ no longer centre to 0 (1/sqrt(eps) amplifies it)"),
    Mutant("reference-dense_similarity_loss-psi-unmasked", "pixelkernels/reference/dense_similarity_loss.py",
           "psi = _masked(x @ y.transpose(1, 2), valid)", "psi = x @ y.transpose(1, 2)",
           (T_DS, "-k", "reference and (only_rows or take_no_part)"),
           "invalid pairs' Ψ kept: a NaN weight or bias, or an inf in a row without a partner, reaches that row"),
    Mutant("ops-dense_similarity_loss-create-graph-total", "pixelkernels/ops/dense_similarity_loss.py",
           "xs, ys, ws, bs = (t.view_as(t) if t.requires_grad else", "xs, ys, ws, bs = (t if t.requires_grad else",
           (T_AD, "-k", "create_graph"), "create_graph differentiates the saved y itself: a path through y of x counted twice"),
    Mutant("ops-dense_similarity_loss-plain-global-mean", "pixelkernels/ops/dense_similarity_loss.py",
           "    mean = _ref.pivot_mean(mean_b, has, 0, w)\n",
           "    mean = (w * mean_b).sum() / n\n",
           (T_DS, "-k", "cpu and (equal_valid or one_valid_pair)"), "Σ_b n_b μ_b / n: equal pairs no longer centre to exactly 0"),
    Mutant("ops-dense_similarity_loss-side-mean-unpivoted", "pixelkernels/ops/dense_similarity_loss.py",
           "    mean = pivot + rows.sum(1) / n.clamp_min(1)[:, None]\n",
           "    mean = (pivot * n[:, None] + rows.sum(1)) / n.clamp_min(1)[:, None]\n",
           (T_DS, "-k", "cpu and equal_valid"), "the side means as Σ t / n: equal rows no longer centre to exactly 0"),
    Mutant("reference-stochastic_pool-padding-vectors", "pixelkernels/reference/stochastic_pool.py",
           "    vectors = torch.where(filled[..., None], rows, torch.zeros((), dtype=emb.dtype, device=emb.device))\n",
           "    vectors = rows\n",
           (T_SQ,), "padding slots keep the gathered pixel 0 (its NaN included)"),
    Mutant("reference-stochastic_pool-empty-detached", "pixelkernels/reference/stochastic_pool.py",
           "emb.new_zeros(B, C * k, D) + emb.sum((2, 3))[:, None, :]", "emb.new_zeros(B, C * k, D)",
           (T_SQ, "-k", "zero_sizes"), "H·W = 0: vectors detached from emb's graph"),
    Mutant("cpu-click_maps-reach", "csrc/cpu/click_maps.cpp",
           "std::floor(double(cx) - half) - 1", "std::floor(double(cx) - half) + 1",
           (T_CM, "-k", "cpu"), "a click's columns start two past its reach: the left edge of a disk is lost"),
    Mutant("cuda-click_maps-tile-offset", "csrc/cuda/click_maps.cu",
           "tile[c][n] = k[c * N + n0 + n];", "tile[c][n] = k[c * N + n];",
           (T_CM, "-k", "emulated"), "every shared-memory tile reloads the first clicks (N > 256 loses the rest)"),
    Mutant("reference-click_maps-padding-at-zero", "pixelkernels/reference/click_maps.py",
           "valid = yx.amax(3, keepdim=True) >= 0", "valid = yx.amax(3, keepdim=True) > 0",
           (T_CM, "-k", "not_padding and reference"), "a row with max(y, x) = 0 taken for padding: border clicks lost"),
    Mutant("torch-click_maps-padding-at-zero", "csrc/click_maps.cpp",
           "std::get<0>(yx.max(3, /*keepdim=*/true)).ge(0);", "std::get<0>(yx.max(3, /*keepdim=*/true)).gt(0);",
           (T_CM, "-k", "not_padding and (cpu or emulated)"), "a row with max(y, x) = 0 taken for padding (CPU and CUDA)"),
    Mutant("cpu-click_maps-negative-clamped", "csrc/cpu/click_maps.cpp",
           "cx = k[2 * n + 1], dy2", "cx = std::max(k[2 * n + 1], 0.0f), dy2",
           (T_CM, "-k", "not_padding and cpu"), "a click left of the map clamped to column 0"),
    Mutant("cpu-click_maps-far-reach", "csrc/cpu/click_maps.cpp",
           "if (!(lo_d <= double(W - 1) && hi_d >= 0)) continue;", "",
           (T_CM, "-k", "far_valid and cpu"), "a click at x = 1e30 or inf: its columns cast from a double beyond int64"),
    Mutant("cuda-click_maps-negative-clamped", "csrc/cuda/click_maps.cu",
           "ax = fj - a.y, ey", "ax = fj - fmaxf(a.y, 0.0f), ey",
           (T_CM, "-k", "emulated and not_padding"), "a positive click left of the map clamped to column 0"),
    Mutant("triton-click_maps-negative-clamped", "pixelkernels/triton/click_maps.py",
           "clicks = scaled_clicks(points, spatial_scale).to(torch.float32)",
           "clicks = scaled_clicks(points, spatial_scale).clamp(min=0).to(torch.float32)",
           (T_CM, "-k", "not_padding and triton"), "clicks off the map clamped onto it"),
    Mutant("common-click_maps-disk-edge", "csrc/common/click_maps.h",
           "return d2 <= r2 ? 1.0f : 0.0f;", "return d2 < r2 ? 1.0f : 0.0f;",
           (T_CM, "-k", "disk_edge and cpu"), "a disk's edge exclusive"),
    Mutant("reference-distance_transform-axes", "pixelkernels/reference/distance_transform.py",
           "(float(sampling[0]) ** 2, float(sampling[1]) ** 2)", "(float(sampling[1]) ** 2, float(sampling[0]) ** 2)",
           (T_DT, "-k", "one_axis and reference"), "each spacing applied to the other axis"),
    Mutant("cuda-distance_transform-axes", "csrc/cuda/distance_transform.cu",
           "p.sy2, p.sx2, ws,", "p.sx2, p.sy2, ws,",
           (T_DT, "-k", "emulated and one_axis"), "each spacing applied to the other axis"),
    Mutant("cuda-distance_transform-exact-on-sx", "csrc/cuda/distance_transform.cuh",
           "if (sy2 == 1.0 && sx2 == 1.0)", "if (sx2 == 1.0)",
           (T_DT, "-k", "emulated and one_axis"), "spacing (s, 1) takes the exact path: sy ignored"),
    Mutant("cpu-distance_transform-exact-on-sx", "csrc/cpu/distance_transform_kernels.h",
           "if (p.sy2 == 1.0 && p.sx2 == 1.0) {", "if (p.sx2 == 1.0) {",
           (T_DT, "-k", "cpu and one_axis"), "spacing (s, 1) takes the exact path: sy ignored"),
    Mutant("triton-distance_transform-exact-on-sx", "pixelkernels/triton/distance_transform.py",
           "EXACT=tuple(sampling) == (1.0, 1.0)", "EXACT=sampling[1] == 1.0",
           (T_DT, "-k", "triton and one_axis"), "spacing (s, 1) takes the exact path: sy ignored"),
    Mutant("cpu-distance_transform-two-phase-image", "csrc/cpu/distance_transform.cpp",
           "rows(p, b, y0, std::min(H, y0 + kRowBlock), t.data() + b * H * W,",
           "rows(p, b, y0, std::min(H, y0 + kRowBlock), t.data(),",
           (T_DT, "-k", "fewer_images"), "with fewer images than threads every image's rows read image 0's columns"),
    Mutant("cpu-distance_transform-column-below", "csrc/cpu/distance_transform_kernels.h",
           "t[x] = (u >= 0 && y - u <= d - y) ? u : d;", "t[x] = u >= 0 ? u : d;",
           (T_DT, "-k", "op and cpu"), "the column step takes a target above even where one below is nearer"),
    Mutant("cpu-distance_transform-row-spacing", "csrc/cpu/distance_transform_kernels.h",
           "const double d2 = f[j] + (dx * dx) * sx2;", "const double d2 = f[j] + (dx * dx);",
           (T_DT, "-k", "op and cpu"), "the row step drops the column spacing sx²"),
    Mutant("cpu-distance_transform-gap-bound", "csrc/cpu/distance_transform_kernels.h",
           "hi = g < W ? g : W - 1;", "hi = g < W ? g - 1 : W - 1;",
           (T_DT, "-k", "cpu"), "a gap's envelope leaves out the target that bounds it on the right"),
    Mutant("cpu-distance_transform-crossing-floor", "csrc/cpu/distance_transform_kernels.h",
           "return static_cast<int64_t>(__builtin_floor(double(n) / double(d)));", "return n / d;",
           (T_DT, "-k", "cpu"), "crossings truncated toward zero: a negative one ends its segment a pixel late"),
    Mutant("cpu-distance_transform-far-rounding", "csrc/cpu/distance_transform_kernels.h",
           "< 16777216.0f) {", "< 1e30f) {",
           (T_DT, "-k", "cpu_paths"), "d² of 2^24 and more rounded to float before the square root"),
    Mutant("cuda-distance_transform-band-carry", "csrc/cuda/distance_transform.cuh",
           "for (int j = band - 1; j >= 0 && above < 0; --j) above = last[j][lane];",
           "for (int j = band - 1; j >= 0 && above < 0; --j) above = -1;",
           (T_DT, "-k", "emulated"), "a band forgets the targets of the bands above it"),
    Mutant("cuda-distance_transform-rank", "csrc/cuda/distance_transform.cuh",
           "count + __popc(bits & at_or_below);", "count + __popc(bits & (at_or_below >> 1));",
           (T_DT, "-k", "emulated"), "rank counts the columns left of x only: the walks start one column off"),
    Mutant("cuda-distance_transform-right-walk", "csrc/cuda/distance_transform.cuh",
           "for (int32_t i = r; i < n && visit", "for (int32_t i = r + 1; i < n && visit",
           (T_DT, "-k", "emulated"), "the rightward walk skips the nearest column with a target"),
    Mutant("cuda-distance_transform-tie-own-column", "csrc/cuda/distance_transform.cuh",
           "if (left ? c <= best : c < best) {", "if (c < best) {",
           (T_DT, "-k", "ties and emulated"), "a tie keeps the pixel's own column, not the smallest (indices differ from every other backend)"),
    Mutant("triton-distance_transform-tie-own-column", "pixelkernels/triton/distance_transform.py",
           "            better = go & (c <= best)\n", "            better = go & (c < best)\n",
           (T_DT, "-k", "ties and triton"), "a tie keeps the pixel's own column, not the smallest"),
    Mutant("triton-distance_transform-tile-carry", "pixelkernels/triton/distance_transform.py",
           "above = tl.maximum(_scan(tl.where(tgt, y[:, None], -1), r, -1, True), carry[None, :])",
           "above = _scan(tl.where(tgt, y[:, None], -1), r, -1, True)",
           (T_DT, "-k", "triton"), "a tile of rows forgets the targets of the tiles above it"),
    Mutant("triton-distance_transform-right-walk", "pixelkernels/triton/distance_transform.py",
           "best, bq = _walk(r, on & (r < n),", "best, bq = _walk(r + 1, on & (r + 1 < n),",
           (T_DT, "-k", "triton"), "the rightward walk skips the nearest column with a target"),
    Mutant("cpu-next_clicks-tie-row", "csrc/cpu/next_clicks_kernels.h",
           "if (top > 0.0f && top >= best.v)", "if (top > 0.0f && top > best.v)",
           (T_NC, "-k", "cpu"), "an equal maximum in an upper row loses: not the first in raster order"),
    Mutant("cuda-next_clicks-key-order", "csrc/cuda/next_clicks.cu",
           "Key(uint32_t(H * W - 1 - j))", "Key(uint32_t(j))",
           (T_NC, "-k", "emulated"), "ties go to the last pixel in raster order"),
    Mutant("triton-next_clicks-key-order", "pixelkernels/triton/distance_transform.py",
           "| (H0 * W0 - 1 - j).to(tl.int64)", "| j.to(tl.int64)",
           (T_NC, "-k", "triton"), "ties go to the last pixel in raster order"),
    Mutant("reference-next_clicks-pixel-zero", "pixelkernels/reference/next_clicks.py",
           "done = best == 0", "done = first == 0",
           (T_NC, "-k", "pixel_zero and reference"), "a click at pixel (0, 0) taken for 'no error left'"),
    Mutant("cpu-next_clicks-pixel-zero", "csrc/cpu/next_clicks.cpp",
           "if (c.v > 0.0f) {", "if (c.at > 0) {",
           (T_NC, "-k", "pixel_zero and cpu"), "a click at pixel (0, 0) taken for 'no error left'"),
    Mutant("triton-next_clicks-tie-by-key", "pixelkernels/triton/next_clicks.py",
           "positive = (fn >> 32) > (fp >> 32)", "positive = fn > fp",
           (T_NC, "-k", "triton and ties"), "the maxima compared with their pixels: a tie goes to the earlier pixel"),
    Mutant("reference-sample_clicks-pixel-zero", "pixelkernels/reference/sample_clicks.py",
           "ok = cand.gather(1, idx[:, None]).squeeze(1)", "ok = idx > 0",
           (T_SC, "-k", "pixel_zero and reference"), "argmin's 0 taken for 'none found': pixel (0, 0) never clicked"),
    Mutant("cpu-sample_clicks-order", "csrc/cpu/sample_clicks.cpp",
           "  std::sort(cand.begin(), cand.end());\n", "",
           (T_SC, "-k", "cpu"), "candidates taken in raster order, not in key order"),
    Mutant("cpu-sample_clicks-first-farthest", "csrc/cpu/sample_clicks.cpp",
           "if (n > 0 && d2[k] != far) continue;", "if (d2[k] != far) continue;",
           (T_SC, "-k", "cpu"), "strategy 3's first click is a farthest band pixel, not a random one"),
    Mutant("cuda-sample_clicks-repeat", "csrc/cuda/sample_clicks.cu",
           "(i == c.pixel || sq_dist(i, c.pixel, W) < step2)", "(sq_dist(i, c.pixel, W) < step2)",
           (T_SC, "-k", "emulated"), "with d_step = 0 a click stays a candidate and is taken again"),
    Mutant("triton-sample_clicks-repeat", "pixelkernels/triton/sample_clicks.py",
           "near = (i == c) | ((dy * dy + dx * dx).to(tl.float64) < step2)",
           "near = (dy * dy + dx * dx).to(tl.float64) < step2",
           (T_SC, "-k", "triton"), "with d_step = 0 a click stays a candidate and is taken again"),
]  # fmt: skip

# The first-occurrence mutants may match more than once; all others exactly once.
FIRST_ONLY = {m.id for m in MUTANTS if "(first occurrence)" in m.why}


def apply(text: str, m: Mutant) -> str:
    n = text.count(m.old)
    if n == 0 or (n > 1 and m.id not in FIRST_ONLY):
        raise SystemExit(f"mutant {m.id}: {m.old!r} occurs {n} times in {m.file}; update the table")
    return text.replace(m.old, m.new, 1)


def copy_tree(dest: Path) -> None:
    """The working tree (tracked and untracked, not ignored) into dest, keeping dest's build/.
    A file an earlier copy brought that the tree no longer has is removed (a deleted source file
    left in the copy was still compiled, and registered its ops twice)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    files = [f for f in files if f]
    listing = dest / ".mutants-copied"
    if listing.exists():
        for f in set(listing.read_text().splitlines()) - set(files):
            (dest / f).unlink(missing_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join(files))
    for f in files:
        src, dst = ROOT / f, dest / f
        if not src.is_file():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copy2(src, dst)


def build(dest: Path) -> None:
    r = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=dest, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError(r.stdout[-3000:] + r.stderr[-3000:])


def run_tests(dest: Path, m: Mutant, timeout: int) -> tuple[bool, str]:
    env = dict(os.environ, PYTHONPATH=str(dest), PIXELKERNELS_WITH_CUDA="0")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", os.environ.get("PYTEST_WORKERS", "2"), *m.tests]
    try:
        r = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return True, "timeout (counted as killed)"
    tail = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
    return r.returncode not in (0, 5), tail[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="mutant id (repeatable)")
    ap.add_argument("--check", action="store_true", help="only check that every mutant applies")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per mutant's tests")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.id in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.id:42s} {m.file}: {m.why}")
        return 0
    for m in chosen:
        apply((ROOT / m.file).read_text(), m)
    if args.check:
        print(f"{len(chosen)} mutants apply")
        return 0
    dest = ROOT / "build" / "mutants"
    copy_tree(dest)
    build(dest)
    results = []
    for m in chosen:
        path = dest / m.file
        original = path.read_text()
        t0 = time.time()
        try:
            path.write_text(apply(original, m))
            try:
                if m.file.startswith("csrc/") and not m.file.startswith("csrc/cuda/"):
                    build(dest)
                killed, tail = run_tests(dest, m, args.timeout)
            except RuntimeError as e:  # a mutant must build: a table entry that does not is wrong
                killed, tail = False, f"does not build: {str(e).splitlines()[-1:]}"
        finally:
            path.write_text(original)
        results.append((m, killed, tail, time.time() - t0))
        print(f"{'killed  ' if killed else 'SURVIVED'} {m.id:42s} {time.time() - t0:6.0f}s  {tail}", flush=True)
    if any(m.file.startswith("csrc/") and not m.file.startswith("csrc/cuda/") for m, *_ in results):
        build(dest)  # leave the copy built from the unmutated tree
    killed = sum(k for _, k, *_ in results)
    print(f"\nkill rate: {killed}/{len(results)}")
    for m, k, tail, _ in results:
        if not k:
            print(f"  survived: {m.id} ({m.file}: {m.why})")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
