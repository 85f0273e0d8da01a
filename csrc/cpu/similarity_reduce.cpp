// similarity_reduce CPU kernels (csrc/common/similarity_reduce.h), float32 and float64.
//
// The scores exist one tile at a time: kTN queries x kTK refs, from ATen's GEMM on the tile (the
// BLAS micro-kernels; inside at::parallel_for it runs on the calling thread) and ATen's vectorised
// elementwise ops for the cosine, the affine and the sigmoid (`scores`).
// The arithmetic is float64 for both input dtypes: float32 inputs are widened a tile at a time
// (never a whole copy) and every result is the float64 computation on their values, rounded
// once. Float32 tiles were not enough: a cosine near 0, a class sum of +-scale terms that cancels
// and the cosine gradient (q - r̂ sim |q|) A, two near-equal terms, all reach a float32 dot's
// rounding (sqrt(D) 2^-24 of |q||r|), and 7.3 % of random cosine/sum cases at scale 40 missed
// SPEC §4's float32 tolerance (benchmarks/results/similarity_reduce_f32_scale40_2026-11-30.md);
// the softmax's backward reads the forward's m and log l, so both passes need the same scores.
// The price: float64 GEMMs, about twice float32's time. Then, per tile:
//   sum, mean   one more GEMM with the tile's class matrix (k, C + 1) into a (kTN, C + 1) state
//               (per score instead when the tile holds an inf or NaN: a product with the class
//               matrix's zeros would spread it to the other classes);
//   max         per score, in ref order (max and tie count);
//   softmax     an online softmax: the tile's row maxima, one rescale of a row's state where its
//               max grew, the tile's exponentials (vectorised) and their class sums by a GEMM.
// The backward recomputes each tile (for max, twice: a first pass over the refs finds the query
// tile's maxima and ties with the same calls on the same buffers as the second, so its equality
// test meets the same bits; for a float32 softmax, twice: a first pass finds every row's softmax
// state in float64, as the forward, since the float32 out is its probabilities rounded), turns it
// into dZ in place
// (dS gathered from the row's per-class factors, then the chain of the header) and contracts it
// twice: dq += dZ r, dr += dZᵀ q. Tasks are fixed by the sizes alone (never the thread count), so
// results are bitwise the same for any number of threads:
//   forward   one task per (image, query tile);
//   backward  one task per (image, group of query tiles), each group writing its own (K, D)
//             partial of dr, summed in group order; the groups are as few as keep those
//             partials under a tenth of the inputs (at least 1, at most kGroups).
#include "common/similarity_reduce.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/mv.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/where.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/gemm_tiles.h"
#include "cpu/pixel_tiles.h"

namespace pixelkernels::cpu {
namespace {

using similarity_reduce::Metric;
using similarity_reduce::Reduce;

constexpr int64_t kGroups = 8;

// The per-call tables: each ref's class (-1: takes no part), the class sizes, the weighted refs'
// norms (cosine), ref rows safe to multiply (the refs that take no part zeroed, as the
// reference does, when one of them is not finite: 0 * NaN would reach dq), and the weights
// with those refs' weights zeroed (a NaN weight there would reach dq through dZ·w).
template <typename T>
struct Tables {
  std::vector<int32_t> cls;   // (B, K)
  std::vector<uint8_t> off;   // (B, K) bool: the ref takes no part
  std::vector<double> count;  // (B, C)
  std::vector<double> rnorm;  // (B, K), cosine: |w_j ref_j| clamped at norm_floor (0: no part)
  std::vector<T> rclean;      // (B, K, D) when needed
  std::vector<double> wclean;  // (B, K) with a weight
  std::vector<uint8_t> atfloor;  // (B, K) bool, cosine: a valid ref whose norm is clamped
  const T* r;                 // ref (its strides) or rclean (contiguous)
  int64_t sb, sk, sd;         // r's strides
  const double* w;            // (B, K) weights (wclean) or null
  int64_t K;
  double floor;               // the norms' (cosine)
  // bad_count: where not null, the number of labels outside [0, C) other than -1 (the forward's
  // label check, SimilarityReduceForward)
  Tables(const SimilarityReduceArgs& a, const T* ref, int64_t* bad_count = nullptr)
      : r(ref), sb(a.r_sb), sk(a.r_sk), sd(a.r_sd), w(nullptr), K(a.K), floor(a.norm_floor) {
    const int64_t B = a.B, K = a.K, C = a.C, D = a.D;
    cls.resize(B * K);
    off.resize(B * K);
    count.assign(B * C, 0.0);
    bool dirty = false;
    int64_t bad = 0;
    for (int64_t i = 0; i < B * K; ++i) {
      const int64_t l = similarity_reduce::ref_label(a.labels, i);
      const bool v = similarity_reduce::valid(l, C);
      bad += !v && l != -1;
      cls[i] = v ? int32_t(l) : -1;
      off[i] = !v;
      if (v) count[(i / K) * C + l] += 1.0;
      if (!v)
        for (int64_t d = 0; d < D && !dirty; ++d) dirty = !std::isfinite(row(i / K, i % K)[d * sd]);
    }
    if (bad_count != nullptr) *bad_count = bad;
    if (a.weight != nullptr) {
      const T* w0 = static_cast<const T*>(a.weight);
      wclean.resize(B * K);
      for (int64_t i = 0; i < B * K; ++i) wclean[i] = off[i] ? 0.0 : double(w0[i]);
      w = wclean.data();
    }
    if (dirty) {
      rclean.resize(B * K * D);
      for (int64_t i = 0; i < B * K; ++i)
        for (int64_t d = 0; d < D; ++d) rclean[i * D + d] = cls[i] < 0 ? T(0) : row(i / K, i % K)[d * sd];
      r = rclean.data();
      sb = K * D, sk = D, sd = 1;
    }
    if (a.metric == Metric::Cosine) {
      rnorm.resize(B * K);
      for (int64_t i = 0; i < B * K; ++i)  // as the zeroed ref
        rnorm[i] = cls[i] < 0 ? 0.0
                              : similarity_reduce::clamp_norm<double>(
                                    raw_norm(row(i / K, i % K), D, sd) * (w ? std::abs(w[i]) : 1.0), floor);
      atfloor.resize(B * K);
      for (int64_t i = 0; i < B * K; ++i) atfloor[i] = cls[i] >= 0 && !(rnorm[i] > floor);
    }
  }
  const T* row(int64_t b, int64_t j) const { return r + b * sb + j * sk; }
  // refs [j0, j0 + k) of image b as a (k, D) matrix
  at::Tensor rows(int64_t b, int64_t j0, int64_t k, int64_t D) const { return matrix(row(b, j0), k, D, sk, sd); }
  static double raw_norm(const T* v, int64_t D, int64_t stride = 1) {
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += double(v[d * stride]) * v[d * stride];
    return std::sqrt(s);
  }
};

template <typename T>
struct Ctx {
  const SimilarityReduceArgs& a;
  const T* q;
  const Tables<T>& t;
  double scale, bias, eps, temp;
  // rows [i0, i0 + n) of image b of query (or of grad_query: the same strides), as an (n, D) matrix
  template <typename U>
  at::Tensor rows(U* base, int64_t b, int64_t i0, int64_t n) const {
    return matrix(base + b * a.q_sb + i0 * a.q_sn, n, a.D, a.q_sn, a.q_sd);
  }
  double qnorm(int64_t b, int64_t i) const {
    return similarity_reduce::clamp_norm<double>(Tables<T>::raw_norm(q + b * a.q_sb + i * a.q_sn, a.D, a.q_sd),
                                                 t.floor);
  }
};

// v (rows, cols) as a float64 matrix: v itself when it is one, else a widened copy in buf (rows
// x cols, dense in v's own order: a D-major ref tile stays D-major, a copy of whole rows and the
// GEMM's faster operand).
inline at::Tensor wide(const at::Tensor& v, double* buf) {
  if (v.scalar_type() == at::kDouble) return v;
  const int64_t r = v.size(0), c = v.size(1);
  at::Tensor w = v.stride(0) >= v.stride(1) ? matrix(buf, r, c) : matrix(buf, c, r).t();
  w.copy_(v);
  return w;
}

// Query tiles that share each widened ref tile (float32): widening a ref tile costs 1/kTN of its
// product with one tile in elements, but the copy runs slower than the GEMM (at D = 512 on this
// project's VM: 119 us against 283), so a chunk of tiles takes it once. The forward's chunk keeps
// a few scalars a row (16 tiles); the backward's keeps each tile's widened queries and their
// float64 gradient, as many tiles as hold those within 128 KiB (prior_mask's budget: little
// memory beyond the gradients, test_op_memory_is_the_gradients).
constexpr int64_t kChunk = 16;
inline int64_t chunk_tiles(int64_t D, bool widens) {
  return widens ? std::clamp<int64_t>((int64_t(128) << 10) / (kTN * std::max<int64_t>(D, 1) * 8), 1, kChunk) : 1;
}

// Refs per part of the backward's dZᵀ q product (its float64 buffer kProd x D).
constexpr int64_t kProd = 64;

// Zeroes the columns of the (n, k) tile S (row stride k) of the refs [j0, j0 + k) of image b that
// take no part: a loop over those columns only (ATen's masked_fill_ with a (1, k) mask was a
// scalar pass over the whole tile, 4 % of label_transfer W5's time).
template <typename T>
void zero_off(const Tables<T>& t, int64_t b, int64_t j0, int64_t n, int64_t k, double* S) {
  const uint8_t* off = t.off.data() + b * t.K + j0;
  for (int64_t j = 0; j < k; ++j)
    if (off[j])
      for (int64_t i = 0; i < n; ++i) S[i * k + j] = 0.0;
}

// (1, k) bool, cosine: the refs [j0, j0 + k) of image b whose norm is at the floor; undefined
// when there is none.
template <typename T>
at::Tensor floor_mask(const Tables<T>& t, int64_t b, int64_t j0, int64_t k) {
  const uint8_t* f = t.atfloor.data() + b * t.K + j0;
  if (std::none_of(f, f + k, [](uint8_t o) { return o != 0; })) return {};
  return at::from_blob(const_cast<uint8_t*>(f), {1, k}, at::TensorOptions().dtype(at::kBool));
}

// The activated score tile of image b, queries [i0, i0 + n) x refs [j0, j0 + k), from their rows
// qt (n, D) and rt (k, D), float64 (`wide`): S = s_ij of the header, by ATen's GEMM and vectorised
// elementwise ops on the tile (in place in S, row stride k).
// cosine also leaves den_ij = |q_i| |r_j| + eps in `den` and sim_ij in `sim` (when not null), and
// with a weight the unweighted q_i·ref_j in `raw` (when not null), and with the sigmoid
// 1 - s_ij = sigmoid(-z_ij) in `comp` (when not null): not 1 - s, which is 0 wherever the score
// saturates (s rounds to 1 past z ~ 17 in float32) while the derivative s (1 - s) is e^-z there.
// The max's tiles hold z (similarity_reduce::activates): its ties are decided on the logits.
// The forward and both backward uses make the same calls on the same shapes: the same bits.
template <typename T>
void scores(const Ctx<T>& x, const at::Tensor& qt, const at::Tensor& rt, int64_t b, int64_t j0, const double* qn,
            double* S, double* den, double* sim, double* raw = nullptr, double* comp = nullptr) {
  const SimilarityReduceArgs& a = x.a;
  const int64_t n = qt.size(0), k = rt.size(0);
  at::Tensor s = matrix(S, n, k);
  at::mm_out(s, qt, rt.t());
  if (x.t.w != nullptr) {
    if (raw != nullptr) matrix(raw, n, k).copy_(s);
    s.mul_(matrix(x.t.w + b * a.K + j0, 1, k));  // q·(w r) as w (q·r)
  }
  if (a.metric == Metric::Cosine) {
    at::Tensor d = matrix(den, n, k);
    at::mul_out(d, matrix(qn, n, 1), matrix(x.t.rnorm.data() + b * a.K + j0, 1, k));
    s.div_(d.add_(x.eps));
  }
  // The refs that take no part score 0 (sim too), as the reference's zeroed refs do before its
  // affine: a ref's own vector (cosine: dot / eps, or / 0 with eps = 0) would be inf or NaN.
  zero_off(x.t, b, j0, n, k, S);
  if (a.metric == Metric::Cosine && sim != nullptr) matrix(sim, n, k).copy_(s);
  if (x.scale != 1.0) s.mul_(x.scale);
  if (x.bias != 0.0) s.add_(x.bias);
  if (a.sigmoid && comp != nullptr) matrix(comp, n, k).copy_(s).neg_().sigmoid_();
  if (similarity_reduce::activates(a.sigmoid, a.reduce)) s.sigmoid_();
}

// h (k, C + 1) for the refs [j0, j0 + k) of image b: h[j][c] = w_c where c is ref j's class
// (w_c = 1, or 1 / n_c for mean), 0 elsewhere; column C is the refs that take no part.
template <typename T>
void class_matrix(const Tables<T>& tab, const SimilarityReduceArgs& a, int64_t b, int64_t j0, int64_t k, double* h) {
  const int64_t C = a.C;
  std::fill_n(h, k * (C + 1), 0.0);
  for (int64_t j = 0; j < k; ++j) {
    const int32_t c = tab.cls[b * a.K + j0 + j];
    if (c >= 0) h[j * (C + 1) + c] = a.reduce == Reduce::Mean ? 1.0 / tab.count[b * C + c] : 1.0;
  }
}

// The max reduction of one score tile (n, k) into rows o (n, C) and their tie counts, in ref order:
// a score above the class max replaces it (count 1), one equal to it adds a tie.
// With arg: also the ref j0 + j that last replaced the max (the max itself when its count is 1 and
// it is finite), and with sim/den (cosine) that pair's similarity and denominator, into asim/aden.
template <typename T>
void max_tile(const T* S, int64_t n, int64_t k, const int32_t* cls, int64_t C, T* o, T* ties,
              int64_t* arg = nullptr, int64_t j0 = 0, const T* sim = nullptr, const T* den = nullptr,
              T* asim = nullptr, T* aden = nullptr, const T* comp = nullptr, T* acomp = nullptr) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const int32_t c = cls[j];
      if (c < 0) continue;
      const T v = S[i * k + j];
      if (similarity_reduce::above(v, o[i * C + c])) {
        o[i * C + c] = v;
        ties[i * C + c] = T(1);
        if (arg != nullptr) {
          arg[i * C + c] = j0 + j;
          if (sim != nullptr) {
            asim[i * C + c] = sim[i * k + j];
            aden[i * C + c] = den[i * k + j];
          }
          if (comp != nullptr) acomp[i * C + c] = comp[i * k + j];
        }
      } else if (v == o[i * C + c]) {
        ties[i * C + c] += T(1);
      }
    }
}

// y += a x over D elements with strides, in float64, each y rounded to its own type; the
// unit-stride case in its own loop, which the compiler vectorises.
template <typename X, typename Y>
inline void axpy(int64_t D, double a, const X* x, int64_t sx, Y* y, int64_t sy) {
  if (sx == 1 && sy == 1) {
    for (int64_t d = 0; d < D; ++d) y[d] = Y(y[d] + a * x[d]);
  } else {
    for (int64_t d = 0; d < D; ++d) y[d * sy] = Y(y[d * sy] + a * x[d * sx]);
  }
}

// The class maxima over every ref of image b of the nu consecutive query tiles from tile it0 (a
// chunk: each ref tile widened once) into mx and tie, which the caller initialises, and where arg
// is not null the last arg with that pair's sim, den (cosine) and 1 - s (sigmoid); tile u's rows
// at u kTN (C per row). qn: the tiles' query norms (cosine). Scratch: the tiles S and den, sim and
// comp (cosine, sigmoid; else null), qw (kTN D) and rw (kTK D) where T widens. The forward's max
// and the backward's first pass: the same calls, the same bits.
template <typename T>
void chunk_maxima(const Ctx<T>& x, int64_t b, int64_t it0, int64_t nu, const double* qn, double* S, double* den,
                  double* sim, double* comp, double* qw, double* rw, double* mx, double* tie, int64_t* arg = nullptr,
                  double* asim = nullptr, double* aden = nullptr, double* acomp = nullptr) {
  const SimilarityReduceArgs& a = x.a;
  const int64_t N = a.N, K = a.K, C = a.C, D = a.D;
  for (int64_t j0 = 0; j0 < K; j0 += kTK) {
    const int64_t k = std::min(kTK, K - j0);
    const at::Tensor rt = wide(x.t.rows(b, j0, k, D), rw);
    for (int64_t u = 0; u < nu; ++u) {
      const int64_t i0 = (it0 + u) * kTN, n = std::min(kTN, N - i0), e = u * kTN * C;
      scores(x, wide(x.rows(x.q, b, i0, n), qw), rt, b, j0, qn + u * kTN, S, den, sim, nullptr, comp);
      max_tile(S, n, k, x.t.cls.data() + b * K + j0, C, mx + e, tie + e, arg ? arg + e : nullptr, j0, sim, den,
               asim ? asim + e : nullptr, aden ? aden + e : nullptr, comp, acomp ? acomp + e : nullptr);
    }
  }
}

// The softmax's online state over every ref of image b of the nu consecutive query tiles from tile
// it0 (a chunk: each ref tile widened once), per row: M, the max of the valid s / T; L, the sum of
// exp(s / T - M); o, the same sum per class (C per row), from (-inf, 0, 0). Tile u's rows at u kTN. qn and the scratch as chunk_maxima's, h (kTK (C + 1)) and e (kTN (C + 2)).
// Per tile: the row maxima, one rescale of a row's state where its max grew, then the tile's
// exponentials by ATen's vectorised exp and their class sums by a GEMM with the class matrix. The
// class matrix's zeros spread a NaN term to every class, which the row's sum then has too: its
// every probability is NaN anyway (each term is exp(s - m) <= 1 but for NaN, from a NaN score or
// an infinite max). The forward and the float32 backward's first pass: the same calls, the same bits.
template <typename T>
void chunk_softmax(const Ctx<T>& x, int64_t b, int64_t it0, int64_t nu, const double* qn, double* S, double* den,
                   double* qw, double* rw, double* h, double* e, double* M, double* L, double* o) {
  const SimilarityReduceArgs& a = x.a;
  const int64_t N = a.N, K = a.K, C = a.C, D = a.D;
  const int32_t* cls = x.t.cls.data() + b * K;
  for (int64_t u = 0; u < nu; ++u) {
    const int64_t n = std::min(kTN, N - (it0 + u) * kTN);
    std::fill_n(M + u * kTN, n, -std::numeric_limits<double>::infinity());
    std::fill_n(L + u * kTN, n, 0.0);
    std::fill_n(o + u * kTN * C, n * C, 0.0);
  }
  for (int64_t j0 = 0; j0 < K; j0 += kTK) {
    const int64_t k = std::min(kTK, K - j0);
    const bool any = std::any_of(cls + j0, cls + j0 + k, [](int32_t c) { return c >= 0; });
    if (!any) continue;  // no valid ref in the tile: no term
    const at::Tensor rt = wide(x.t.rows(b, j0, k, D), rw);
    class_matrix(x.t, a, b, j0, k, h);
    for (int64_t u = 0; u < nu; ++u) {
      const int64_t i0 = (it0 + u) * kTN, n = std::min(kTN, N - i0);
      double* Mu = M + u * kTN;
      double* Lu = L + u * kTN;
      double* ou = o + u * kTN * C;
      scores(x, wide(x.rows(x.q, b, i0, n), qw), rt, b, j0, qn + u * kTN, S, den, nullptr);
      at::Tensor st = matrix(S, n, k);
      if (x.temp != 1.0) st.div_(x.temp);
      for (int64_t i = 0; i < n; ++i) {
        const double* s = S + i * k;
        double m = Mu[i];
        for (int64_t j = 0; j < k; ++j)
          if (cls[j0 + j] >= 0 && similarity_reduce::above(s[j], m)) m = s[j];
        if (m != Mu[i]) {
          const double f = std::exp(Mu[i] - m);
          Lu[i] *= f;
          for (int64_t c = 0; c < C; ++c) ou[i * C + c] *= f;
          Mu[i] = m;
        }
      }
      st.sub_(matrix(Mu, n, 1)).exp_();
      zero_off(x.t, b, j0, n, k, S);  // the refs that take no part: no term
      // e: the rows' class sums (n, C + 1: the last column the refs that take no part, 0), then
      // the rows' sums (n)
      at::Tensor ec = matrix(e, n, C + 1), er = vec(e + n * (C + 1), n);
      at::mm_out(ec, st, matrix(h, k, C + 1));
      at::sum_out(er, st, 1);
      for (int64_t i = 0; i < n; ++i) {
        Lu[i] += e[n * (C + 1) + i];
        for (int64_t c = 0; c < C; ++c) ou[i * C + c] += e[i * (C + 1) + c];
      }
    }
  }
}

// A row's class probabilities from chunk_softmax's sums o and L: o_c / L, 0 for an empty class
// and with no valid ref (never 0 / 0). L != 0, not L > 0: a NaN score makes L NaN and the row
// NaN, as the reference's, but for its empty classes (0: they have no term). y may be o.
inline void softmax_probabilities(const double* o, double l, const double* count, int64_t C, double* y) {
  for (int64_t c = 0; c < C; ++c) y[c] = l != 0.0 && count[c] > 0.0 ? o[c] / l : 0.0;
}

template <typename T>
void forward(const SimilarityReduceForward& p) {
  const SimilarityReduceArgs& a = p.a;
  const int64_t N = a.N, K = a.K, C = a.C, D = a.D;
  const T* q = static_cast<const T*>(a.query);
  const Tables<T> tab(a, static_cast<const T*>(a.ref), p.bad_count);
  const Ctx<T> x{a, q, tab, a.scale, a.bias, a.eps, a.temperature};
  T* out = static_cast<T*>(p.out);
  T* aux = static_cast<T*>(p.aux);
  const double inf = std::numeric_limits<double>::infinity();
  const bool linear = a.reduce == Reduce::Sum || a.reduce == Reduce::Mean, max = a.reduce == Reduce::Max;
  const bool widens = !std::is_same_v<T, double>;
  const int64_t nt = (N + kTN - 1) / kTN;
  // a tile's extents: small inputs, small buffers (zeroing two 64 KiB tiles was most of a tiny call)
  const int64_t tn = std::min(kTN, N), tk = std::min(kTK, K), Q = std::min(widens ? kChunk : 1, nt);
  at::parallel_for(0, a.B * nt, 1, [&](int64_t t0, int64_t t1) {
    // per tile of a chunk (u): its queries' norms, out, ties, softmax state (M, L) and class sums
    const bool softmax = a.reduce == Reduce::Softmax;
    std::vector<double> S(tn * tk), den(a.metric == Metric::Cosine ? tn * tk : 0), qn(Q * tn);
    std::vector<double> M(softmax ? Q * tn : 0), L(softmax ? Q * tn : 0);
    std::vector<double> h(linear || softmax ? tk * (C + 1) : 0), acc(linear ? Q * tn * (C + 1) : 0);
    std::vector<double> e(softmax ? tn * (C + 2) : 0);
    std::vector<double> ob(Q * tn * C), tb(max ? Q * tn * C : 0);  // rounded at the end
    std::vector<double> qw(widens ? tn * D : 0), rw(widens ? tk * D : 0);  // widened tiles: one pair's
    // A chunk: the thread's next tiles of one image, at most Q. Each tile's arithmetic is the same
    // whatever its chunk (its own buffers, the refs in order): the same bits for any thread count.
    for (int64_t c0 = t0; c0 < t1;) {
      const int64_t b = c0 / nt, it0 = c0 % nt, nu = std::min({Q, t1 - c0, nt - it0});
      c0 += nu;
      auto rows_of = [&](int64_t u) { return std::min(kTN, N - (it0 + u) * kTN); };
      for (int64_t u = 0; u < nu; ++u) {
        const int64_t i0 = (it0 + u) * kTN, n = rows_of(u);
        if (!softmax) std::fill_n(ob.data() + u * tn * C, n * C, max ? -inf : 0.0);  // (chunk_softmax's own)
        if (max) std::fill_n(tb.data() + u * tn * C, n * C, 0.0);
        if (linear) std::fill_n(acc.data() + u * tn * (C + 1), n * (C + 1), 0.0);
        for (int64_t i = 0; i < n && a.metric == Metric::Cosine; ++i) qn[u * tn + i] = x.qnorm(b, i0 + i);
      }
      const int32_t* cls = tab.cls.data() + b * K;
      if (max)  // (tn = kTN where a chunk has more than one tile)
        chunk_maxima(x, b, it0, nu, qn.data(), S.data(), den.data(), nullptr, nullptr, qw.data(), rw.data(),
                     ob.data(), tb.data());
      if (softmax)
        chunk_softmax(x, b, it0, nu, qn.data(), S.data(), den.data(), qw.data(), rw.data(), h.data(), e.data(),
                      M.data(), L.data(), ob.data());
      for (int64_t j0 = 0; j0 < K && linear; j0 += kTK) {
        const int64_t k = std::min(kTK, K - j0);
        const at::Tensor rt = wide(tab.rows(b, j0, k, D), rw.data());
        for (int64_t u = 0; u < nu; ++u) {
          const int64_t n = rows_of(u);
          double* au = acc.data() + u * tn * (C + 1);
          const at::Tensor qt = wide(x.rows(x.q, b, (it0 + u) * kTN, n), qw.data());  // 1/k of its product
          scores(x, qt, rt, b, j0, qn.data() + u * tn, S.data(), den.data(), nullptr);
          const at::Tensor st = matrix(S.data(), n, k);
          // One GEMM with the class matrix, when every score is finite (a product with the class
          // matrix's zeros would turn another class's inf or NaN into NaN); else per score.
          if (at::isfinite(st).all().template item<bool>()) {
            class_matrix(tab, a, b, j0, k, h.data());
            matrix(au, n, C + 1).addmm_(st, matrix(h.data(), k, C + 1));
            continue;
          }
          for (int64_t i = 0; i < n; ++i) {
            const double* s = S.data() + i * k;
            double* oi = au + i * (C + 1);
            for (int64_t j = 0; j < k; ++j) {
              const int32_t c = cls[j0 + j];
              if (c >= 0) oi[c] += a.reduce == Reduce::Mean ? s[j] / tab.count[b * C + c] : s[j];
            }
          }
        }
      }
      for (int64_t u = 0; u < nu; ++u) {
        const int64_t i0 = (it0 + u) * kTN, n = rows_of(u);
        const double* ties = max ? tb.data() + u * tn * C : nullptr;
        for (int64_t i = 0; i < n; ++i) {
          double* oi = ob.data() + (u * tn + i) * C;
          T* ot = out + (b * N + i0 + i) * C;
          if (linear)
            for (int64_t c = 0; c < C; ++c) oi[c] = tab.count[b * C + c] > 0.0 ? acc[(u * tn + i) * (C + 1) + c] : 0.0;
          if (softmax) {
            // No valid ref: the softmax is over nothing, 0; m = log l = -inf.
            const double m = M[u * tn + i], l = L[u * tn + i];
            softmax_probabilities(oi, l, tab.count.data() + b * C, C, oi);
            // m as stored, and log l taken against that m: p = exp(s / T - m - log l) then loses
            // only log l's rounding (|log l| is small), not m's (half an ulp of |s / T|, 4e-6 of
            // every p at s / T = 80 in float32, which a cancelling gradient amplified)
            const T mr = T(m);
            aux[(b * N + i0 + i) * 2] = mr;
            aux[(b * N + i0 + i) * 2 + 1] = T(std::log(l) + (std::isfinite(m) ? m - double(mr) : 0.0));
          }
          if (ties) {
            for (int64_t c = 0; c < C; ++c) aux[(b * N + i0 + i) * C + c] = T(ties[i * C + c]);
            if (a.sigmoid)  // the max of z, activated once (max_out)
              for (int64_t c = 0; c < C; ++c) oi[c] = similarity_reduce::max_out(oi[c], ties[i * C + c]);
          }
          for (int64_t c = 0; c < C; ++c) ot[c] = T(oi[c]);
          // the argmax of the rounded row: the labels are out's argmax, as a user reads it
          if (p.labels != nullptr) p.labels[b * N + i0 + i] = similarity_reduce::argmax_row(ot, C);
        }
      }
    }
  });
}

template <typename T>
void backward(const SimilarityReduceBackward& p) {
  const SimilarityReduceArgs& a = p.a;
  const int64_t B = a.B, N = a.N, K = a.K, C = a.C, D = a.D;
  const T* q = static_cast<const T*>(a.query);
  const Tables<T> tab(a, static_cast<const T*>(a.ref));
  const Ctx<T> x{a, q, tab, a.scale, a.bias, a.eps, a.temperature};
  const T* g = static_cast<const T*>(p.grad_out);
  const T* out = static_cast<const T*>(p.out);
  const T* aux = static_cast<const T*>(p.aux);
  T* gq = static_cast<T*>(p.grad_query);
  T* gr = static_cast<T*>(p.grad_ref);  // ref's strides a.r_s*
  T* gw = static_cast<T*>(p.grad_weight);
  const bool cosine = a.metric == Metric::Cosine, max = a.reduce == Reduce::Max;
  const int64_t nt = (N + kTN - 1) / kTN;
  // Groups of query tiles, each with its own (K, D) partial of dr (+ (K,) of cosine's norm term)
  // in double, each tile's product added in double: a group sums N / (64 G) tiles, and float32
  // partials drifted past SPEC's tolerance from N = 1e5 on (1.6e-5 relative at 1e5 random
  // queries against 2 refs, 7.9e-4 at 1e6). One group (N + K < 20 K: the refs are many)
  // accumulates in grad_ref itself, in the input dtype (no ref-sized buffer: prior_mask's
  // support map), each tile's share of cosine's norm term folded into its product in double
  // first: rounded to float32 before that subtraction, a gradient that cancels would keep only
  // the rounding. The partials are at most a fifth of the inputs' bytes.
  const int64_t budget = std::max<int64_t>(1, (N + K) / (10 * std::max<int64_t>(K, 1)));
  const int64_t G = std::max<int64_t>(1, std::min({nt, kGroups, budget}));
  const bool direct = G == 1;
  std::vector<double> part(direct ? 0 : size_t(B * G * K * D), 0.0), colpart(size_t(B * G * K), 0.0);
  for (int64_t b = 0; b < B && direct; ++b) matrix(gr + b * a.r_sb, K, D, a.r_sk, a.r_sd).zero_();
  // Cosine with a weight: dw_j = eps Σ_i A_ij (q_i·ref_j) / den_ij, per pair (see the last loop).
  const bool wcos = cosine && tab.w != nullptr && gw != nullptr;
  std::vector<double> epart(wcos ? size_t(B * G * K) : 0, 0.0);  // signed terms, and a few

  // max: per image, every entry of the refs that take part finite. The unique-maxima path below
  // adds only the maxima's products; a ref that is no maximum but holds an inf or NaN adds
  // 0 * inf = NaN to every dq_i in the reference's (and the general pass's) products, so an
  // image with one takes the general pass.
  std::vector<uint8_t> refs_finite(max ? size_t(B) : 0, 1);
  at::parallel_for(0, max ? B : 0, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t j = 0; j < K && refs_finite[b]; ++j) {
        if (tab.cls[b * K + j] < 0) continue;
        const T* r = tab.row(b, j);
        for (int64_t d = 0; d < D; ++d)
          if (!std::isfinite(r[d * tab.sd])) {
            refs_finite[b] = 0;
            break;
          }
      }
  });
  // a tile's extents: small inputs, small buffers (as the forward); chunks of Q query tiles of a
  // group share each widened ref tile (the group's tiles in order, chunked by the sizes alone)
  const bool widens = !std::is_same_v<T, double>;
  const int64_t tn = std::min(kTN, N), tk = std::min(kTK, K), Q = std::min(chunk_tiles(D, widens), (nt + G - 1) / G);

  // max: every row's class maxima, their tie counts and last arg, with that pair's sim, den and
  // 1 - s, found first by one pass over every (image, query tile) in parallel, chunked as the
  // forward. The groups then take a tile's gradient from its unique maxima without an N x K pass
  // of their own: the groups are B G tasks, one an image where the refs are many (prior_mask), and
  // that pass ran on one thread there. 8-48 bytes per (row, class).
  const size_t NC = max ? size_t(B * N * C) : 0;
  std::vector<double> gmx(NC), gtie(NC), gsim(cosine ? NC : 0), gden(cosine ? NC : 0), gcomp(a.sigmoid ? NC : 0);
  std::vector<int64_t> garg(NC);
  at::parallel_for(0, max ? B * nt : 0, 1, [&](int64_t t0, int64_t t1) {
    const int64_t Qf = std::min(widens ? kChunk : 1, nt);
    std::vector<double> S(tn * tk), den(cosine ? tn * tk : 0), sim(cosine ? tn * tk : 0), comp(a.sigmoid ? tn * tk : 0);
    std::vector<double> qn(Qf * tn), qw(widens ? tn * D : 0), rw(widens ? tk * D : 0);
    double* cp = a.sigmoid ? comp.data() : nullptr;
    for (int64_t c0 = t0; c0 < t1;) {
      const int64_t b = c0 / nt, it0 = c0 % nt, nu = std::min({Qf, t1 - c0, nt - it0});
      c0 += nu;
      const size_t e = (b * N + it0 * kTN) * C;  // the chunk's first row
      for (int64_t u = 0; u < nu; ++u) {
        const int64_t i0 = (it0 + u) * kTN, n = std::min(kTN, N - i0);
        std::fill_n(gmx.data() + (b * N + i0) * C, n * C, -std::numeric_limits<double>::infinity());
        std::fill_n(gtie.data() + (b * N + i0) * C, n * C, 0.0);
        for (int64_t i = 0; i < n && cosine; ++i) qn[u * tn + i] = x.qnorm(b, i0 + i);
      }
      chunk_maxima(x, b, it0, nu, qn.data(), S.data(), den.data(), cosine ? sim.data() : nullptr, cp, qw.data(),
                   rw.data(), gmx.data() + e, gtie.data() + e, garg.data() + e, cosine ? gsim.data() + e : nullptr,
                   cosine ? gden.data() + e : nullptr, a.sigmoid ? gcomp.data() + e : nullptr);
    }
  });
  // softmax, float32: every row's softmax state in float64 first (M, log L and the class
  // probabilities o, C + 2 per row), by the forward's own pass over every (image, query tile) in
  // parallel. h = g - Σ_c g_c o_c reads o, and the float32 out is o rounded: the gradient
  // Σ_j p_ij h_ij r_j / T, whose terms cancel (to 0 exactly where the refs are equal), kept that
  // rounding times |r| / T (5e-6 at T = 1/64 against a gradient of 0; the fuzz's single kind).
  // A forward's worth of time (W5-softmax f+b 1.13x); float64 inputs read out and aux as they are.
  const bool exact_softmax = a.reduce == Reduce::Softmax && widens && C > 1;
  std::vector<double> gsm(exact_softmax ? size_t(B * N * (C + 2)) : 0);
  at::parallel_for(0, exact_softmax ? B * nt : 0, 1, [&](int64_t t0, int64_t t1) {
    const int64_t Qf = std::min(kChunk, nt);
    std::vector<double> S(tn * tk), den(cosine ? tn * tk : 0), qn(Qf * tn), M(Qf * tn), L(Qf * tn), o(Qf * tn * C);
    std::vector<double> qw(tn * D), rw(tk * D), h(tk * (C + 1)), e(tn * (C + 2));
    for (int64_t c0 = t0; c0 < t1;) {
      const int64_t b = c0 / nt, it0 = c0 % nt, nu = std::min({Qf, t1 - c0, nt - it0});
      c0 += nu;
      for (int64_t u = 0; u < nu; ++u) {
        const int64_t i0 = (it0 + u) * kTN, n = std::min(kTN, N - i0);
        for (int64_t i = 0; i < n && cosine; ++i) qn[u * tn + i] = x.qnorm(b, i0 + i);
      }
      chunk_softmax(x, b, it0, nu, qn.data(), S.data(), den.data(), qw.data(), rw.data(), h.data(), e.data(),
                    M.data(), L.data(), o.data());
      for (int64_t u = 0; u < nu; ++u) {
        const int64_t i0 = (it0 + u) * kTN, n = std::min(kTN, N - i0);
        for (int64_t i = 0; i < n; ++i) {
          double* y = gsm.data() + (b * N + i0 + i) * (C + 2);
          const double l = L[u * tn + i];
          y[0] = M[u * tn + i];
          y[1] = std::log(l);
          softmax_probabilities(o.data() + (u * tn + i) * C, l, tab.count.data() + b * C, C, y + 2);
        }
      }
    }
  });
  at::parallel_for(0, B * G, 1, [&](int64_t t0, int64_t t1) {
    const size_t tile = tn * tk, rows = Q * tn;
    std::vector<double> S(tile), Z(tile), den(cosine ? tile : 0), sim(cosine ? tile : 0), raw(wcos ? tile : 0);
    std::vector<double> comp(a.sigmoid ? tile : 0);  // 1 - s (scores())
    double* cp = a.sigmoid ? comp.data() : nullptr;
    // per tile u of a chunk, at u tn rows: its queries' norms, gx, norm terms, softmax statistics;
    // the max's maxima, ties, arg and the pair's sim, den and 1 - s; the query tile and its
    // gradient as contiguous float64 (n, D) rows (label_transfer's query is a D-major map, read
    // in place: one strided pass each way)
    std::vector<double> qn(rows), gx(rows * (C + 1)), row(rows), mrow(rows), lrow(rows), grow(C), orow(C);
    std::vector<double> mx(max ? rows * C : 0), tie(max ? rows * C : 0);
    std::vector<double> asim(max && cosine ? rows * C : 0), aden(max && cosine ? rows * C : 0);
    std::vector<double> acomp(max && a.sigmoid ? rows * C : 0);
    std::vector<int64_t> arg(max ? rows * C : 0);
    std::vector<double> qw(rows * D), dqw(rows * D), rw(widens ? tk * D : 0);
    std::vector<uint8_t> unique(Q);  // max: the tile's gradient already taken from its unique maxima
    std::vector<int64_t> col_of(tk);
    std::vector<double> prod(std::min(tk, kProd) * D), colt(tk);  // a tile's dZᵀ q (in parts), Σ_i A sim |q_i|
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / G, grp = t % G;
      // this group's dr: rows of grad_ref (direct) or of its double partial; its column term (K)
      T* drd = direct ? gr + b * a.r_sb : nullptr;
      double* dr = direct ? nullptr : part.data() + (b * G + grp) * K * D;
      double* col = colpart.data() + (b * G + grp) * K;
      double* ecol = wcos ? epart.data() + (b * G + grp) * K : nullptr;
      const int32_t* cls = tab.cls.data() + b * K;
      const double* rn = cosine ? tab.rnorm.data() + b * K : nullptr;
      for (int64_t it0 = grp; it0 < nt; it0 += Q * G) {
        const int64_t nu = std::min(Q, (nt - it0 + G - 1) / G);  // tiles it0, it0 + G, ...
        auto first = [&](int64_t u) { return (it0 + u * G) * kTN; };
        auto rows_of = [&](int64_t u) { return std::min(kTN, N - first(u)); };
        for (int64_t u = 0; u < nu; ++u) {
          const int64_t i0 = first(u), n = rows_of(u);
          const T* gi0 = g + (b * N + i0) * C;
          const T* oi0 = out + (b * N + i0) * C;
          matrix(qw.data() + u * tn * D, n, D).copy_(x.rows(q, b, i0, n));
          std::fill_n(dqw.data() + u * tn * D, n * D, 0.0);
          std::fill_n(row.data() + u * tn, n, 0.0);
          // gx (n, C + 1): what dS_ij reads for ref j of class c at column c (column C, for the
          // refs that take no part, is 0): g_ic; / n_c (mean); h_ic of softmax_centered.
          for (int64_t i = 0; i < n; ++i) {
            double* gxi = gx.data() + (u * tn + i) * (C + 1);
            if (cosine) qn[u * tn + i] = x.qnorm(b, i0 + i);
            if (a.reduce == Reduce::Softmax) {
              const double* sm = exact_softmax ? gsm.data() + (b * N + i0 + i) * (C + 2) : nullptr;
              for (int64_t c = 0; c < C; ++c) grow[c] = gi0[i * C + c], orow[c] = sm ? sm[2 + c] : oi0[i * C + c];
              similarity_reduce::softmax_centered(grow.data(), orow.data(), C, gxi);
              mrow[u * tn + i] = sm ? sm[0] : aux[(b * N + i0 + i) * 2];
              lrow[u * tn + i] = sm ? sm[1] : aux[(b * N + i0 + i) * 2 + 1];
            } else {
              for (int64_t c = 0; c < C; ++c)
                gxi[c] = a.reduce == Reduce::Mean ? gi0[i * C + c] / tab.count[b * C + c] : double(gi0[i * C + c]);
            }
            gxi[C] = 0.0;
          }
          unique[u] = 0;
        }
        auto qtile = [&](int64_t u) { return matrix(qw.data() + u * tn * D, rows_of(u), D); };
        if (max) {
          // Every class max of the tile finite and unique (the usual case): dS has one nonzero
          // per (row, class), at the recorded ref, so the gradient is n C vector updates, not a
          // second pass of score tiles and two (n, k) x (k, D) products. Ties, NaN or an infinite
          // max take the general pass below.
          for (int64_t u = 0; u < nu; ++u) {
            const int64_t n = rows_of(u);
            const size_t src = (b * N + first(u)) * C, dst = u * tn * C, m = n * C;
            std::copy_n(gmx.data() + src, m, mx.data() + dst);
            std::copy_n(gtie.data() + src, m, tie.data() + dst);
            std::copy_n(garg.data() + src, m, arg.data() + dst);
            if (cosine) std::copy_n(gsim.data() + src, m, asim.data() + dst);
            if (cosine) std::copy_n(gden.data() + src, m, aden.data() + dst);
            if (a.sigmoid) std::copy_n(gcomp.data() + src, m, acomp.data() + dst);
            bool uq = refs_finite[b] != 0;
            for (size_t e = dst; e < dst + m && uq; ++e) uq = tie[e] == 0.0 || (tie[e] == 1.0 && std::isfinite(mx[e]));
            unique[u] = uq;
          }
          // The general pass gives the max's gradient to the refs whose score equals the row's
          // class max. For its tiles that max and its tie count are recomputed here, by this
          // task, from the very score tiles of that pass (the same calls on the same buffers: the
          // same bits). A max from another pass can differ in the last bit (another thread count
          // inside the GEMM, or another backend's `out`), and an equality test against it would miss.
          for (int64_t u = 0; u < nu; ++u)
            if (!unique[u]) {
              std::fill_n(mx.data() + u * tn * C, rows_of(u) * C, -std::numeric_limits<double>::infinity());
              std::fill_n(tie.data() + u * tn * C, rows_of(u) * C, 0.0);
            }
          const bool again = std::any_of(unique.begin(), unique.begin() + nu, [](uint8_t v) { return v == 0; });
          for (int64_t j0 = 0; j0 < K && again; j0 += kTK) {
            const int64_t k = std::min(kTK, K - j0);
            const at::Tensor rt = wide(tab.rows(b, j0, k, D), rw.data());
            for (int64_t u = 0; u < nu; ++u) {
              if (unique[u]) continue;
              const size_t e = u * tn * C;
              scores(x, qtile(u), rt, b, j0, qn.data() + u * tn, S.data(), den.data(), sim.data(), nullptr, cp);
              max_tile(S.data(), rows_of(u), k, cls + j0, C, mx.data() + e, tie.data() + e, arg.data() + e, j0,
                       cosine ? sim.data() : nullptr, den.data(), asim.data() + (cosine ? e : 0),
                       aden.data() + (cosine ? e : 0), cp, acomp.data() + (a.sigmoid ? e : 0));
            }
          }
          for (int64_t u = 0; u < nu; ++u) {
            if (!unique[u]) continue;
            const int64_t n = rows_of(u);
            for (int64_t i = u * tn; i < u * tn + n; ++i) {  // rows of the chunk's buffers
              const double* qi = qw.data() + i * D;
              double* gi = dqw.data() + i * D;
              for (int64_t c = 0; c < C; ++c) {
                const int64_t e = i * C + c;
                if (tie[e] == 0.0) continue;
                // dZ as the general pass forms it: g / 1, the sigmoid's s (1 - s) (mx: the max's
                // z), scale, / den
                double z = gx[i * (C + 1) + c] / tie[e];
                if (a.sigmoid) z = z * similarity_reduce::max_out(mx[e], 1.0) * acomp[e];
                if (x.scale != 1.0) z *= x.scale;
                const int64_t j = arg[e];
                const T* rj = tab.row(b, j);
                if (cosine) {
                  z /= aden[e];
                  row[i] += z * asim[e] * rn[j];
                  col[j] += z * asim[e] * qn[i];
                  if (wcos) {
                    double dot = 0;  // q_i·ref_j (exact products: a cancelling dot keeps its digits)
                    for (int64_t d = 0; d < D; ++d) dot += qi[d] * rj[d * tab.sd];
                    ecol[j] += tab.atfloor[b * K + j] ? z * dot : z * dot / aden[e] * a.eps;
                  }
                }
                const double wj = tab.w ? tab.w[b * K + j] : 1.0;
                axpy(D, z * wj, rj, tab.sd, gi, 1);  // dq_i += dZ (w r_j)
                if (direct) {
                  // dr_j += dZ q_i minus, cosine, this pair's share of the norm term (see G)
                  const double f = cosine && !tab.atfloor[b * K + j] ? z * asim[e] * qn[i] * wj / rn[j] : 0.0;
                  T* y = drd + j * a.r_sk;
                  for (int64_t d = 0; d < D; ++d) y[d * a.r_sd] = T(y[d * a.r_sd] + (z * qi[d] - f * rj[d * tab.sd]));
                } else {
                  axpy(D, z, qi, 1, dr + j * D, 1);  // dr_j += dZ q_i
                }
              }
            }
          }
        }
        const bool general = std::any_of(unique.begin(), unique.begin() + nu, [](uint8_t v) { return v == 0; });
        for (int64_t j0 = 0; j0 < K && general; j0 += kTK) {
          const int64_t k = std::min(kTK, K - j0);
          const at::Tensor rt = wide(tab.rows(b, j0, k, D), rw.data());
          for (int64_t j = 0; j < k; ++j) col_of[j] = cls[j0 + j] >= 0 ? cls[j0 + j] : C;
          for (int64_t u = 0; u < nu; ++u) {
            if (unique[u]) continue;
            const int64_t n = rows_of(u);
            const at::Tensor qt = qtile(u);
            scores(x, qt, rt, b, j0, qn.data() + u * tn, S.data(), den.data(), sim.data(), wcos ? raw.data() : nullptr,
                   cp);
            const at::Tensor st = matrix(S.data(), n, k);
            at::Tensor zt = matrix(Z.data(), n, k);
            // dS: g of each score's class, gathered (a gather, not a product with the class matrix:
            // an inf or NaN gradient of one class must not reach the others').
            at::index_select_out(zt, matrix(gx.data() + u * tn * (C + 1), n, C + 1), 1,
                                 at::from_blob(col_of.data(), {k}, at::kLong));
            if (a.reduce == Reduce::Softmax) {
              // p_ij = exp((s_ij / T - m_i) - log l_i); dS = p h / T
              zt.mul_(st.div(x.temp)
                          .sub_(matrix(mrow.data() + u * tn, n, 1))
                          .sub_(matrix(lrow.data() + u * tn, n, 1))
                          .exp_())
                  .div_(x.temp);
            } else if (max) {
              const double* mxu = mx.data() + u * tn * C;
              const double* tieu = tie.data() + u * tn * C;
              for (int64_t i = 0; i < n; ++i)
                for (int64_t j = 0; j < k; ++j) {
                  const int64_t c = col_of[j];
                  Z[i * k + j] = c < C ? similarity_reduce::grad_score(Reduce::Max, Z[i * k + j], S[i * k + j], 1.0,
                                                                       mxu[i * C + c], tieu[i * C + c], 0.0, 0.0, 1.0)
                                       : 0.0;
                }
            }
            // sigmoid' = s (1 - s), 1 - s from scores(); the max's tile holds z, its s formed here
            if (a.sigmoid) zt.mul_(max ? st.sigmoid() : st).mul_(matrix(cp, n, k));
            if (x.scale != 1.0) zt.mul_(x.scale);
            if (cosine) zt.div_(matrix(den.data(), n, k));  // A = dZ / den
            // The refs that take no part: dZ = 0 exactly (their p = exp(0 / T - ...) can overflow,
            // their den be 0 with eps = 0: a product with them would be NaN).
            zero_off(tab, b, j0, n, k, Z.data());
            if (cosine) {
              // the norms' terms: row_i += Σ_j A sim |r_j|, col_j += Σ_i A sim |q_i|
              const at::Tensor as = matrix(sim.data(), n, k).mul_(zt);
              vec(row.data() + u * tn, n).addmv_(as, vec(rn + j0, k));
              at::Tensor ct = vec(colt.data(), k);
              at::mv_out(ct, as.t(), vec(qn.data() + u * tn, n));
              for (int64_t j = 0; j < k; ++j) col[j0 + j] += colt[j];
              if (wcos) {
                // Σ_i A (q·ref) eps / den of a ref with a norm, Σ_i A (q·ref) at the floor (see below)
                at::Tensor e = matrix(raw.data(), n, k).mul_(zt);
                at::Tensor unclamped = e.div(matrix(den.data(), n, k)).mul_(x.eps);
                const at::Tensor fl = floor_mask(tab, b, j0, k);
                if (fl.defined()) unclamped = at::where(fl, e, unclamped);
                vec(ecol + j0, k).add_(unclamped.sum(0));
              }
            }
            // dr (of the weighted refs) += dZᵀ q; dq += dZ (w r)
            // dZᵀ q a quarter ref tile at a time (a (64, D) float64 buffer: prior_mask's budget)
            for (int64_t h0 = 0; h0 < k; h0 += kProd) {
              const int64_t hk = std::min(kProd, k - h0);
              at::Tensor pt = matrix(prod.data(), hk, D);
              at::mm_out(pt, zt.narrow(1, h0, hk).t(), qt);
              if (direct) {
                // minus, cosine, the tile's share of the norm term (see G), then added and rounded
                for (int64_t j = h0; j < h0 + hk; ++j) {
                  double* pj = prod.data() + (j - h0) * D;
                  if (cosine && cls[j0 + j] >= 0 && !tab.atfloor[b * K + j0 + j]) {
                    const double f = colt[j] * (tab.w ? tab.w[b * K + j0 + j] : 1.0) / rn[j0 + j];
                    const T* r = tab.row(b, j0 + j);
                    for (int64_t d = 0; d < D; ++d) pj[d] -= f * r[d * tab.sd];
                  }
                  axpy(D, 1.0, pj, 1, drd + (j0 + j) * a.r_sk, a.r_sd);
                }
              } else {
                for (int64_t e = 0; e < hk * D; ++e) dr[(j0 + h0) * D + e] += prod[e];
              }
            }
            if (tab.w != nullptr) zt.mul_(matrix(tab.w + b * K + j0, 1, k));
            matrix(dqw.data() + u * tn * D, n, D).addmm_(zt, rt);
          }
        }
        for (int64_t u = 0; u < nu; ++u) {
          const int64_t n = rows_of(u);
          // Cosine: minus (q / |q|) times the row's norm term (0 where |q| is at the floor).
          for (int64_t i = u * tn; i < u * tn + n && cosine; ++i) {
            if (!(qn[i] > tab.floor)) continue;
            axpy(D, -row[i] / qn[i], qw.data() + i * D, 1, dqw.data() + i * D, 1);
          }
          x.rows(gq, b, first(u), n).copy_(matrix(dqw.data() + u * tn * D, n, D));
        }
      }
    }
  });
  // G_j, the gradient of the weighted ref: the partials in group order, then cosine's norm term
  // (the column's Σ_i A sim |q_i| times (w r) / |w r|), in double, rounded once (direct: grad_ref
  // holds G_j, the norm term folded in tile by tile). With a weight, d ref_j = w_j G_j and
  // dw_j = ref_j·G_j. 0 for refs that take no part.
  at::parallel_for(0, B * K, 64, [&](int64_t r0, int64_t r1) {
    std::vector<double> acc(D);
    for (int64_t rj = r0; rj < r1; ++rj) {
      const int64_t b = rj / K, j = rj % K, od = a.r_sd;
      T* o = gr + b * a.r_sb + j * a.r_sk;
      if (gw != nullptr) gw[rj] = T(0);
      if (tab.cls[rj] < 0) {
        for (int64_t d = 0; d < D; ++d) o[d * od] = T(0);
        continue;
      }
      for (int64_t d = 0; d < D; ++d) acc[d] = direct ? double(o[d * od]) : 0.0;
      double colsum = 0, esum = 0;
      for (int64_t grp = 0; grp < G; ++grp) {
        if (!direct) {
          const double* pp = part.data() + ((b * G + grp) * K + j) * D;
          for (int64_t d = 0; d < D; ++d) acc[d] += pp[d];
        }
        colsum += colpart[(b * G + grp) * K + j];
        if (wcos) esum += epart[(b * G + grp) * K + j];
      }
      const double w = tab.w != nullptr ? tab.w[rj] : 1.0;
      const T* r = tab.row(b, j);
      if (cosine && !tab.atfloor[rj] && !direct) {
        const double f = colsum * w / tab.rnorm[rj];  // (w r) / |w r| times the column's norm term
        for (int64_t d = 0; d < D; ++d) acc[d] -= f * r[d * tab.sd];
      }
      if (gw != nullptr) {
        // Cosine: ref_j·G_j is Σ_i A_ij (q_i·ref_j) - sign(w) |ref_j| Σ_i A_ij sim_ij |q_i|, two
        // near-equal sums (the cosine is scale-invariant in w but for eps) whose difference,
        // eps Σ_i A_ij (q_i·ref_j) / den_ij, would be lost; it is summed per pair instead
        // (Σ_i A_ij (q_i·ref_j) for a ref at the norm floor: no norm term there).
        double dw = 0;
        if (wcos) {
          dw = esum;
        } else {
          for (int64_t d = 0; d < D; ++d) dw += r[d * tab.sd] * acc[d];
        }
        gw[rj] = T(dw);
      }
      for (int64_t d = 0; d < D; ++d) o[d * od] = T(acc[d] * w);
    }
  });
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {

Status launch(OnCpu, const SimilarityReduceForward& p) {
  if (p.a.B * p.a.N == 0) return nullptr;
  return cpu::dispatch_float(p.a.dtype, [&](auto t) { cpu::forward<decltype(t)>(p); });
}

Status launch(OnCpu, const SimilarityReduceBackward& p) {
  if (p.a.B == 0) return nullptr;
  return cpu::dispatch_float(p.a.dtype, [&](auto t) { cpu::backward<decltype(t)>(p); });
}

}  // namespace pixelkernels
