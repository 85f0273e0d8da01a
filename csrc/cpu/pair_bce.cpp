// pair_bce CPU kernels (csrc/common/pair_bce.h), float32 and float64.
//
// The logits exist one tile at a time: kTN rows of x times kTK rows of y, from ATen's GEMM on the
// tile, then ATen's vectorised elementwise ops on it in place (z = a S + c, the loss or its
// derivative, the mask of the pairs that take no part). Per tile:
//   forward   out_i += Σ_j bce(z_ij, t_ij)
//   backward  E = g_i (σ(z) - t) masked; rows_i += (Σ_j E S, Σ_j E); dx += (a E) y; dy += (a E)ᵀ x
// (these contractions in double, see backward()), a multiplied per pair and masked after: the
// chain rule's per-pair products, so an infinite or NaN a gives what the reference gives and
// reaches no row that takes no part; those rows are zeroed at the end. Tasks are
// fixed by the sizes alone and own their outputs, so results are bitwise the same for any thread
// count: forward and dx one task per (image, row tile of x), dy one per (image, row tile of y).
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

// Small problems (B Kx Ky (D + 1) up to kSmallPairs, as dense_similarity_loss's tests and a
// training step's per-class samples): one loop over the pairs, without the tiles' ATen calls,
// whose per-call cost is most of the op's host time there (issue 36). The same formulas: z
// rounded as the tiles round it (a S, then + c, S the dot rounded to T), e and the sums in
// double; rows and pairs that take no part are never read.
constexpr int64_t kSmallPairs = int64_t(1) << 15;

inline bool small_pairs(const PairBceArgs& a) { return a.B * a.Kx * a.Ky * (a.D + 1) <= kSmallPairs; }

template <typename T>
struct SmallPairs {
  const PairBceArgs& a;
  const T* x = static_cast<const T*>(a.x);
  const T* y = static_cast<const T*>(a.y);
  const T scale = *static_cast<const T*>(a.scale), bias = *static_cast<const T*>(a.bias);
  int64_t lx(int64_t b, int64_t i) const { return label_at(a.x_labels, b * a.Kx + i); }
  int64_t ly(int64_t b, int64_t j) const { return label_at(a.y_labels, b * a.Ky + j); }
  T dot(int64_t b, int64_t i, int64_t j) const {
    const T* xi = x + (b * a.Kx + i) * a.D;
    const T* yj = y + (b * a.Ky + j) * a.D;
    double s = 0.0;
    for (int64_t d = 0; d < a.D; ++d) s += double(xi[d]) * double(yj[d]);
    return T(s);
  }
  T logit(T s) const { return T(scale * s) + bias; }
};

template <typename T>
void forward_small(const PairBceForward& p) {
  const SmallPairs<T> sp{p.a};
  T* out = static_cast<T*>(p.out);
  for (int64_t b = 0; b < p.a.B; ++b)
    for (int64_t i = 0; i < p.a.Kx; ++i) {
      const int64_t li = sp.lx(b, i);
      double sum = 0.0;
      for (int64_t j = 0; j < p.a.Ky && li >= 0; ++j) {
        const int64_t lj = sp.ly(b, j);
        if (lj >= 0) sum += double(pair_bce::loss(sp.logit(sp.dot(b, i, j)), li == lj));
      }
      out[b * p.a.Kx + i] = T(sum);
    }
}

template <typename T>
void backward_small(const PairBceBackward& p) {
  const PairBceArgs& a = p.a;
  const SmallPairs<T> sp{a};
  const int64_t D = a.D;
  const T* g = static_cast<const T*>(p.grad_out);
  std::vector<double> dx(size_t(a.Kx * D)), dy(size_t(a.Ky * D));
  for (int64_t b = 0; b < a.B; ++b) {
    std::fill(dx.begin(), dx.end(), 0.0);
    std::fill(dy.begin(), dy.end(), 0.0);
    for (int64_t i = 0; i < a.Kx; ++i) {
      const int64_t li = sp.lx(b, i);
      double r0 = 0.0, r1 = 0.0;
      for (int64_t j = 0; j < a.Ky && li >= 0; ++j) {
        const int64_t lj = sp.ly(b, j);
        if (lj < 0) continue;
        const T s = sp.dot(b, i, j);
        const double e = double(g[(b * a.Kx + i) * p.grad_stride]) * double(pair_bce::dloss(sp.logit(s), li == lj));
        r0 += e * double(s);
        r1 += e;
        const double ae = double(sp.scale) * e;  // a per pair (an infinite a at e = 0 gives NaN)
        const T* xi = sp.x + (b * a.Kx + i) * D;
        const T* yj = sp.y + (b * a.Ky + j) * D;
        for (int64_t d = 0; d < D; ++d) {
          dx[size_t(i * D + d)] += ae * double(yj[d]);
          dy[size_t(j * D + d)] += ae * double(xi[d]);
        }
      }
      T* rows = static_cast<T*>(p.rows) + (b * a.Kx + i) * 2;
      rows[0] = T(r0);
      rows[1] = T(r1);
    }
    T* gx = static_cast<T*>(p.grad_x) + b * a.Kx * D;
    T* gy = static_cast<T*>(p.grad_y) + b * a.Ky * D;
    for (int64_t k = 0; k < a.Kx * D; ++k) gx[k] = T(dx[size_t(k)]);
    for (int64_t k = 0; k < a.Ky * D; ++k) gy[k] = T(dy[size_t(k)]);
  }
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
  const int64_t tile_size = std::min(kTN, Kx) * std::min(kTK, Ky);  // small inputs: small tiles
  at::parallel_for(0, a.B * nt, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> S(tile_size), L(tile_size);
    std::vector<uint8_t> tg(tile_size), off(tile_size);
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
        // bce = (max(z, 0) - t z) + log1p(exp(-|z|)), the first term exact (max(-z, 0) where t):
        // where the target agrees and |z| is large, the log1p term is all that is left, and
        // adding it to z before subtracting z again lost it to z's rounding (1 % at z = 30)
        at::abs_out(l, z).neg_().exp_().log1p_();
        l.add_(at::where(bools(tg.data(), n, k), z.neg().clamp_min_(T(0)), z.clamp_min(T(0))))
            .masked_fill_(bools(off.data(), n, k), T(0));
        o.add_(l.sum(1));
      }
    }
  });
}

// The backward's contractions (dx, dy and the row partials) run in double for float32 too: each
// sums thousands of products e·y of mixed sign, which a float32 GEMM rounds to ~1e-5 relative
// (SPEC §4's float32 tolerance), where the logits' own float32 rounding costs a third of that.
// Two passes, each task owning its outputs (no partials: memory stays at the tiles, and the
// result is the same for any thread count): dx and the row partials per (image, row tile of
// x), then dy per (image, row tile of y), recomputing the same logit tiles.
template <typename T>
struct GradTiles {
  // sized by the largest tile of the call: a full tile's buffers are 480 KiB, and zeroing them
  // per task was most of a small call's time (2x9 by 2x7 rows: 110 us of the backward's 115)
  explicit GradTiles(int64_t size)
      : S(size), raw(size), E(size), Ed(size), rawd(size), tg(size), off(size) {}
  std::vector<T> S, raw, E;
  std::vector<double> Ed, rawd;
  std::vector<uint8_t> tg, off;

  // e = g_i (σ(z) - t), 0 for the pairs that take no part, as a double (n, k) matrix; the raw
  // products as another when `with_raw`. scaled() turns it into a·e, 0 where no part.
  at::Tensor e(const Tile<T>& tile, const T* g, int64_t gs, int64_t b, int64_t i0, int64_t n, int64_t j0, int64_t k,
               bool with_raw) {
    tile.logits(b, i0, n, j0, k, S.data(), raw.data());
    tile.pairs(b, i0, n, j0, k, tg.data(), off.data());
    const at::Tensor z = matrix(S.data(), n, k);
    at::Tensor et = matrix(E.data(), n, k), ed = matrix(Ed.data(), n, k);
    // σ(z) - t as -σ(-z) where t = 1: no cancellation
    at::sigmoid_out(et, z);
    et.copy_(at::where(bools(tg.data(), n, k), at::sigmoid(z.neg()).neg_(), et));
    ed.copy_(et).mul_(matrix(g + (b * tile.a.Kx + i0) * gs, n, 1, gs)).masked_fill_(bools(off.data(), n, k), 0.0);
    if (with_raw) matrix(rawd.data(), n, k).copy_(matrix(raw.data(), n, k));
    return ed;
  }
  // masked after the product: 0·inf or 0·NaN must not reach a pair that takes no part
  at::Tensor scaled(at::Tensor ed, double scale, int64_t n, int64_t k) {
    return ed.mul_(scale).masked_fill_(bools(off.data(), n, k), 0.0);
  }
};

// Rows with a negative label take part in nothing: 0, whatever went through the products
// (a valid row's NaN times an invalid pair's zero coefficient).
template <typename T>
void zero_ignored(T* grad, const std::vector<int64_t>& lab, int64_t r0, int64_t n, int64_t D) {
  for (int64_t i = 0; i < n; ++i)
    if (lab[r0 + i] < 0) std::fill_n(grad + (r0 + i) * D, D, T(0));
}

template <typename T>
void backward(const PairBceBackward& p) {
  const PairBceArgs& a = p.a;
  const int64_t B = a.B, Kx = a.Kx, Ky = a.Ky, D = a.D;
  const Side<T> x(a.x_labels, static_cast<const T*>(a.x), B * Kx, D);
  const Side<T> y(a.y_labels, static_cast<const T*>(a.y), B * Ky, D);
  const double scale = double(*static_cast<const T*>(a.scale));
  const Tile<T> tile{a, x, y, T(scale), *static_cast<const T*>(a.bias)};
  const T* g = static_cast<const T*>(p.grad_out);
  const int64_t nt = (Kx + kTN - 1) / kTN, kt = (Ky + kTK - 1) / kTK;
  const int64_t tn = std::min(kTN, Kx), tk = std::min(kTK, Ky);
  // dx and the rows: a task per (image, row tile of x)
  at::parallel_for(0, B * nt, 1, [&](int64_t t0, int64_t t1) {
    GradTiles<T> w(tn * tk);
    std::vector<double> yd(tk * D), dxd(tn * D), rd(tn * 2);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nt, i0 = (t % nt) * kTN, n = std::min(kTN, Kx - i0);
      at::Tensor dx = matrix(dxd.data(), n, D), r = matrix(rd.data(), n, 2);
      dx.zero_();
      r.zero_();
      for (int64_t j0 = 0; j0 < Ky; j0 += kTK) {
        const int64_t k = std::min(kTK, Ky - j0);
        const at::Tensor ed = w.e(tile, g, p.grad_stride, b, i0, n, j0, k, true);
        at::Tensor yt = matrix(yd.data(), k, D);
        yt.copy_(matrix(y.v + (b * Ky + j0) * D, k, D));
        r.select(1, 0).add_(matrix(w.rawd.data(), n, k).mul_(ed).sum(1));
        r.select(1, 1).add_(ed.sum(1));
        dx.addmm_(w.scaled(ed, scale, n, k), yt);
      }
      matrix(static_cast<T*>(p.grad_x) + (b * Kx + i0) * D, n, D).copy_(dx);
      zero_ignored(static_cast<T*>(p.grad_x), x.lab, b * Kx + i0, n, D);
      matrix(static_cast<T*>(p.rows) + (b * Kx + i0) * 2, n, 2).copy_(r);
    }
  });
  // dy: a task per (image, row tile of y), over the same logit tiles
  at::parallel_for(0, B * kt, 1, [&](int64_t t0, int64_t t1) {
    GradTiles<T> w(tn * tk);
    std::vector<double> xd(tn * D), dyd(tk * D);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / kt, j0 = (t % kt) * kTK, k = std::min(kTK, Ky - j0);
      at::Tensor dy = matrix(dyd.data(), k, D);
      dy.zero_();
      for (int64_t i0 = 0; i0 < Kx; i0 += kTN) {
        const int64_t n = std::min(kTN, Kx - i0);
        const at::Tensor ed = w.e(tile, g, p.grad_stride, b, i0, n, j0, k, false);
        at::Tensor xt = matrix(xd.data(), n, D);
        xt.copy_(matrix(x.v + (b * Kx + i0) * D, n, D));
        dy.addmm_(w.scaled(ed, scale, n, k).t(), xt);
      }
      matrix(static_cast<T*>(p.grad_y) + (b * Ky + j0) * D, k, D).copy_(dy);
      zero_ignored(static_cast<T*>(p.grad_y), y.lab, b * Ky + j0, k, D);
    }
  });
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {

Status launch(OnCpu, const PairBceForward& p) {
  if (p.a.B * p.a.Kx == 0) return nullptr;
  return cpu::dispatch_float(p.a.dtype, [&](auto t) {
    using T = decltype(t);
    cpu::small_pairs(p.a) ? cpu::forward_small<T>(p) : cpu::forward<T>(p);
  });
}

Status launch(OnCpu, const PairBceBackward& p) {
  if (p.a.B == 0) return nullptr;
  return cpu::dispatch_float(p.a.dtype, [&](auto t) {
    using T = decltype(t);
    cpu::small_pairs(p.a) ? cpu::backward_small<T>(p) : cpu::backward<T>(p);
  });
}

}  // namespace pixelkernels
