// pair_bce CPU kernels (csrc/common/pair_bce.h), float32 and float64.
//
// The logits exist one tile at a time: kTN rows of x times kTK rows of y, from ATen's GEMM on the
// tile, then ATen's vectorised elementwise ops on it in place (z = a S + c, the loss or its
// derivative, the mask of the pairs that take no part). Per tile:
//   forward   out_i += Σ_j bce(z_ij, t_ij)
//   backward  E = g_i (σ(z) - t) masked; rows_i += (Σ_j E S, Σ_j E); dx += E y; dy += Eᵀ x
// (these contractions in double, see backward()) and a times dx and dy at the end. Tasks are fixed by the sizes alone, so results are bitwise
// the same for any thread count: forward one task per (image, row tile); backward one task per
// (image, group of row tiles), each group with its own (Ky, D) partial of dy, summed in group
// order (the groups are as few as keep those partials under a tenth of the inputs).
#include "common/pair_bce.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/where.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/gemm_tiles.h"
#include "cpu/pixel_tiles.h"

namespace pixelkernels::cpu {
namespace {

constexpr int64_t kGroups = 8;

// Per call: each row's label widened (negative: takes no part) and, when an ignored row holds
// an inf or NaN, a copy of x or y with those rows zeroed (0 · NaN would reach the sums).
template <typename T>
struct Side {
  std::vector<int64_t> lab;
  std::vector<T> clean;
  const T* v;
  Side(const LabelMap& m, const T* data, int64_t rows, int64_t D) : lab(rows), v(data) {
    bool dirty = false;
    for (int64_t i = 0; i < rows; ++i) {
      lab[i] = label_at(m, i);
      for (int64_t d = 0; d < D && lab[i] < 0 && !dirty; ++d) dirty = !std::isfinite(data[i * D + d]);
    }
    if (!dirty) return;
    clean.assign(data, data + rows * D);
    for (int64_t i = 0; i < rows; ++i)
      if (lab[i] < 0) std::fill_n(clean.data() + i * D, D, T(0));
    v = clean.data();
  }
};

template <typename T>
struct Tile {
  const PairBceArgs& a;
  const Side<T>& x;
  const Side<T>& y;
  T scale, bias;

  // z (n, k) of image b, rows [i0, i0 + n) of x and [j0, j0 + k) of y, into S (row stride k);
  // S keeps the raw products when `raw` is given (the backward's Σ E S).
  void logits(int64_t b, int64_t i0, int64_t n, int64_t j0, int64_t k, T* S, T* raw) const {
    const int64_t D = a.D;
    at::Tensor s = matrix(S, n, k);
    at::mm_out(s, matrix(x.v + (b * a.Kx + i0) * D, n, D), matrix(y.v + (b * a.Ky + j0) * D, k, D).t());
    if (raw != nullptr) matrix(raw, n, k).copy_(s);
    s.mul_(scale).add_(bias);
  }
  // target (n, k) bool and the mask of pairs that take no part
  void pairs(int64_t b, int64_t i0, int64_t n, int64_t j0, int64_t k, uint8_t* t, uint8_t* off) const {
    const int64_t* lx = x.lab.data() + b * a.Kx + i0;
    const int64_t* ly = y.lab.data() + b * a.Ky + j0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) {
        t[i * k + j] = lx[i] == ly[j];
        off[i * k + j] = lx[i] < 0 || ly[j] < 0;
      }
  }
};

at::Tensor bools(uint8_t* p, int64_t n, int64_t k) {
  return at::from_blob(p, {n, k}, at::TensorOptions().dtype(at::kBool));
}

template <typename T>
void forward(const PairBceForward& p) {
  const PairBceArgs& a = p.a;
  const int64_t Kx = a.Kx, Ky = a.Ky, D = a.D;
  const Side<T> x(a.x_labels, static_cast<const T*>(a.x), a.B * Kx, D);
  const Side<T> y(a.y_labels, static_cast<const T*>(a.y), a.B * Ky, D);
  const Tile<T> tile{a, x, y, *static_cast<const T*>(a.scale), *static_cast<const T*>(a.bias)};
  T* out = static_cast<T*>(p.out);
  const int64_t nt = (Kx + kTN - 1) / kTN;
  at::parallel_for(0, a.B * nt, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> S(kTN * kTK), L(kTN * kTK);
    std::vector<uint8_t> tg(kTN * kTK), off(kTN * kTK);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nt, i0 = (t % nt) * kTN, n = std::min(kTN, Kx - i0);
      at::Tensor o = vec(out + b * Kx + i0, n);
      o.zero_();
      for (int64_t j0 = 0; j0 < Ky; j0 += kTK) {
        const int64_t k = std::min(kTK, Ky - j0);
        tile.logits(b, i0, n, j0, k, S.data(), nullptr);
        tile.pairs(b, i0, n, j0, k, tg.data(), off.data());
        const at::Tensor z = matrix(S.data(), n, k);
        at::Tensor l = matrix(L.data(), n, k);
        // bce = max(z, 0) - t z + log1p(exp(-|z|))
        at::abs_out(l, z).neg_().exp_().log1p_().add_(z.clamp_min(T(0)));
        l.sub_(at::where(bools(tg.data(), n, k), z, T(0))).masked_fill_(bools(off.data(), n, k), T(0));
        o.add_(l.sum(1));
      }
    }
  });
}

// The backward's contractions (dx, dy and the row partials) run in double for float32 too: each
// sums thousands of products e·y of mixed sign, which a float32 GEMM rounds to ~1e-5 relative
// (SPEC §4's float32 tolerance), where the logits' own float32 rounding costs a third of that.
template <typename T>
void backward(const PairBceBackward& p) {
  const PairBceArgs& a = p.a;
  const int64_t B = a.B, Kx = a.Kx, Ky = a.Ky, D = a.D;
  const Side<T> x(a.x_labels, static_cast<const T*>(a.x), B * Kx, D);
  const Side<T> y(a.y_labels, static_cast<const T*>(a.y), B * Ky, D);
  const T scale = *static_cast<const T*>(a.scale);
  const Tile<T> tile{a, x, y, scale, *static_cast<const T*>(a.bias)};
  const T* g = static_cast<const T*>(p.grad_out);
  T* gx = static_cast<T*>(p.grad_x);
  T* gy = static_cast<T*>(p.grad_y);
  T* rows = static_cast<T*>(p.rows);
  const int64_t nt = (Kx + kTN - 1) / kTN;
  const int64_t budget = std::max<int64_t>(1, (Kx + Ky) / (10 * std::max<int64_t>(Ky, 1)));
  const int64_t G = std::max<int64_t>(1, std::min({nt, kGroups, budget}));
  std::vector<double> part(size_t(B * G * Ky * D), 0.0);
  at::parallel_for(0, B * G, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> S(kTN * kTK), raw(kTN * kTK), E(kTN * kTK);
    std::vector<double> Ed(kTN * kTK), rawd(kTN * kTK), xd(kTN * D), yd(kTK * D), dxd(kTN * D), rd(kTN * 2);
    std::vector<uint8_t> tg(kTN * kTK), off(kTN * kTK);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / G, grp = t % G;
      double* dy = part.data() + (b * G + grp) * Ky * D;
      for (int64_t it = grp; it < nt; it += G) {
        const int64_t i0 = it * kTN, n = std::min(kTN, Kx - i0);
        at::Tensor dx = matrix(dxd.data(), n, D), r = matrix(rd.data(), n, 2), xt = matrix(xd.data(), n, D);
        dx.zero_();
        r.zero_();
        xt.copy_(matrix(x.v + (b * Kx + i0) * D, n, D));
        const at::Tensor gi = matrix(g + b * Kx + i0, n, 1);
        for (int64_t j0 = 0; j0 < Ky; j0 += kTK) {
          const int64_t k = std::min(kTK, Ky - j0);
          tile.logits(b, i0, n, j0, k, S.data(), raw.data());
          tile.pairs(b, i0, n, j0, k, tg.data(), off.data());
          const at::Tensor z = matrix(S.data(), n, k);
          at::Tensor e = matrix(E.data(), n, k), ed = matrix(Ed.data(), n, k), sd = matrix(rawd.data(), n, k);
          at::Tensor yt = matrix(yd.data(), k, D);
          // σ(z) - t as -σ(-z) where t = 1: no cancellation
          at::sigmoid_out(e, z);
          e.copy_(at::where(bools(tg.data(), n, k), at::sigmoid(z.neg()).neg_(), e));
          ed.copy_(e).mul_(gi).masked_fill_(bools(off.data(), n, k), 0.0);
          sd.copy_(matrix(raw.data(), n, k));
          yt.copy_(matrix(y.v + (b * Ky + j0) * D, k, D));
          r.select(1, 0).add_(sd.mul_(ed).sum(1));
          r.select(1, 1).add_(ed.sum(1));
          dx.addmm_(ed, yt);
          matrix(dy + j0 * D, k, D).addmm_(ed.t(), xt);
        }
        matrix(gx + (b * Kx + i0) * D, n, D).copy_(dx.mul_(double(scale)));
        matrix(rows + (b * Kx + i0) * 2, n, 2).copy_(r);
      }
    }
  });
  // dy = a times the partials summed in group order.
  at::parallel_for(0, B * Ky, 64, [&](int64_t r0, int64_t r1) {
    std::vector<double> acc(D);
    for (int64_t rj = r0; rj < r1; ++rj) {
      const int64_t b = rj / Ky, j = rj % Ky;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t grp = 0; grp < G; ++grp) {
        const double* pp = part.data() + ((b * G + grp) * Ky + j) * D;
        for (int64_t d = 0; d < D; ++d) acc[d] += pp[d];
      }
      for (int64_t d = 0; d < D; ++d) gy[rj * D + d] = T(acc[d] * double(scale));
    }
  });
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {

Status launch(OnCpu, const PairBceForward& p) {
  if (p.a.B * p.a.Kx == 0) return nullptr;
  return cpu::dispatch_float(p.a.dtype, [&](auto t) { cpu::forward<decltype(t)>(p); });
}

Status launch(OnCpu, const PairBceBackward& p) {
  if (p.a.B == 0) return nullptr;
  return cpu::dispatch_float(p.a.dtype, [&](auto t) { cpu::backward<decltype(t)>(p); });
}

}  // namespace pixelkernels
