// similarity_reduce CPU kernels (csrc/common/similarity_reduce.h), float32 and float64.
//
// The scores exist one tile at a time: kTN queries x kTK refs, from ATen's GEMM on the tile (the
// BLAS micro-kernels; inside at::parallel_for it runs on the calling thread) and ATen's vectorised
// elementwise ops for the cosine, the affine and the sigmoid (`scores`). Then, per tile:
//   sum, mean   one more GEMM with the tile's class matrix (k, C + 1) into a (kTN, C + 1) state
//               (per score instead when the tile holds an inf or NaN: a product with the class
//               matrix's zeros would spread it to the other classes);
//   max         per score, in ref order (max and tie count);
//   softmax     per score: an online softmax, one rescale of the row's state per tile.
// The backward recomputes each tile (for max, twice: a first pass over the refs finds the query
// tile's maxima and ties with the same calls on the same buffers as the second, so its equality
// test meets the same bits), turns it into dZ in place
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
#include <ATen/ops/where.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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
  std::vector<T> count;       // (B, C)
  std::vector<T> rnorm;       // (B, K), cosine: |w_j ref_j| clamped at norm_floor (0: no part)
  std::vector<T> rclean;      // (B, K, D) when needed
  std::vector<T> wclean;      // (B, K) with a weight
  std::vector<uint8_t> atfloor;  // (B, K) bool, cosine: a valid ref whose norm is clamped
  const T* r;                 // ref (its strides) or rclean (contiguous)
  int64_t sb, sk, sd;         // r's strides
  const T* w;                 // (B, K) weights (wclean) or null
  int64_t K;
  T floor;                    // the norms' (cosine)
  // bad_count: where not null, the number of labels outside [0, C) other than -1 (the forward's
  // label check, SimilarityReduceForward)
  Tables(const SimilarityReduceArgs& a, const T* ref, int64_t* bad_count = nullptr)
      : r(ref), sb(a.r_sb), sk(a.r_sk), sd(a.r_sd), w(nullptr), K(a.K), floor(T(a.norm_floor)) {
    const int64_t B = a.B, K = a.K, C = a.C, D = a.D;
    cls.resize(B * K);
    off.resize(B * K);
    count.assign(B * C, T(0));
    bool dirty = false;
    int64_t bad = 0;
    for (int64_t i = 0; i < B * K; ++i) {
      const int64_t l = similarity_reduce::ref_label(a.labels, i);
      const bool v = similarity_reduce::valid(l, C);
      bad += !v && l != -1;
      cls[i] = v ? int32_t(l) : -1;
      off[i] = !v;
      if (v) count[(i / K) * C + l] += T(1);
      if (!v)
        for (int64_t d = 0; d < D && !dirty; ++d) dirty = !std::isfinite(row(i / K, i % K)[d * sd]);
    }
    if (bad_count != nullptr) *bad_count = bad;
    if (a.weight != nullptr) {
      const T* w0 = static_cast<const T*>(a.weight);
      wclean.resize(B * K);
      for (int64_t i = 0; i < B * K; ++i) wclean[i] = off[i] ? T(0) : w0[i];
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
        rnorm[i] = cls[i] < 0 ? T(0)
                              : similarity_reduce::clamp_norm<T>(
                                    raw_norm(row(i / K, i % K), D, sd) * (w ? std::abs(w[i]) : T(1)), floor);
      atfloor.resize(B * K);
      for (int64_t i = 0; i < B * K; ++i) atfloor[i] = cls[i] >= 0 && !(rnorm[i] > floor);
    }
  }
  const T* row(int64_t b, int64_t j) const { return r + b * sb + j * sk; }
  // refs [j0, j0 + k) of image b as a (k, D) matrix
  at::Tensor rows(int64_t b, int64_t j0, int64_t k, int64_t D) const { return matrix(row(b, j0), k, D, sk, sd); }
  static T raw_norm(const T* v, int64_t D, int64_t stride = 1) {
    T s = 0;
    for (int64_t d = 0; d < D; ++d) s += v[d * stride] * v[d * stride];
    return std::sqrt(s);
  }
};

template <typename T>
struct Ctx {
  const SimilarityReduceArgs& a;
  const T* q;
  const Tables<T>& t;
  T scale, bias, eps, temp;
  // rows [i0, i0 + n) of image b of query (or of grad_query: the same strides), as an (n, D) matrix
  template <typename U>
  at::Tensor rows(U* base, int64_t b, int64_t i0, int64_t n) const {
    return matrix(base + b * a.q_sb + i0 * a.q_sn, n, a.D, a.q_sn, a.q_sd);
  }
  T qnorm(int64_t b, int64_t i) const {
    return similarity_reduce::clamp_norm<T>(Tables<T>::raw_norm(q + b * a.q_sb + i * a.q_sn, a.D, a.q_sd), t.floor);
  }
};

// (1, k) bool: the refs [j0, j0 + k) of image b that take no part; undefined when there is none.
template <typename T>
at::Tensor off_mask(const Tables<T>& t, int64_t b, int64_t j0, int64_t k) {
  const uint8_t* off = t.off.data() + b * t.K + j0;
  if (std::none_of(off, off + k, [](uint8_t o) { return o != 0; })) return {};
  return at::from_blob(const_cast<uint8_t*>(off), {1, k}, at::TensorOptions().dtype(at::kBool));
}

// (1, k) bool, cosine: the refs [j0, j0 + k) of image b whose norm is at the floor; undefined
// when there is none.
template <typename T>
at::Tensor floor_mask(const Tables<T>& t, int64_t b, int64_t j0, int64_t k) {
  const uint8_t* f = t.atfloor.data() + b * t.K + j0;
  if (std::none_of(f, f + k, [](uint8_t o) { return o != 0; })) return {};
  return at::from_blob(const_cast<uint8_t*>(f), {1, k}, at::TensorOptions().dtype(at::kBool));
}

// The activated score tile of image b, queries [i0, i0 + n) x refs [j0, j0 + k): S = s_ij of the
// header, by ATen's GEMM and vectorised elementwise ops on the tile (in place in S, row stride k).
// cosine also leaves den_ij = |q_i| |r_j| + eps in `den` and sim_ij in `sim` (when not null), and
// with a weight the unweighted q_i·ref_j in `raw` (when not null), and with the sigmoid
// 1 - s_ij = sigmoid(-z_ij) in `comp` (when not null): not 1 - s, which is 0 wherever the score
// saturates (s rounds to 1 past z ~ 17 in float32) while the derivative s (1 - s) is e^-z there.
// The max's tiles hold z (similarity_reduce::activates): its ties are decided on the logits.
// The forward and both backward uses make the same calls on the same shapes: the same bits.
template <typename T>
void scores(const Ctx<T>& x, int64_t b, int64_t i0, int64_t n, int64_t j0, int64_t k, const T* qn, T* S,
            T* den, T* sim, T* raw = nullptr, T* comp = nullptr) {
  const SimilarityReduceArgs& a = x.a;
  at::Tensor s = matrix(S, n, k);
  at::mm_out(s, x.rows(x.q, b, i0, n), x.t.rows(b, j0, k, a.D).t());
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
  if (const at::Tensor off = off_mask(x.t, b, j0, k); off.defined()) s.masked_fill_(off, T(0));
  if (a.metric == Metric::Cosine && sim != nullptr) matrix(sim, n, k).copy_(s);
  if (x.scale != T(1)) s.mul_(x.scale);
  if (x.bias != T(0)) s.add_(x.bias);
  if (a.sigmoid && comp != nullptr) matrix(comp, n, k).copy_(s).neg_().sigmoid_();
  if (similarity_reduce::activates(a.sigmoid, a.reduce)) s.sigmoid_();
}

// h (k, C + 1) for the refs [j0, j0 + k) of image b: h[j][c] = w_c where c is ref j's class
// (w_c = 1, or 1 / n_c for mean), 0 elsewhere; column C is the refs that take no part.
template <typename T>
void class_matrix(const Tables<T>& tab, const SimilarityReduceArgs& a, int64_t b, int64_t j0, int64_t k, T* h) {
  const int64_t C = a.C;
  std::fill_n(h, k * (C + 1), T(0));
  for (int64_t j = 0; j < k; ++j) {
    const int32_t c = tab.cls[b * a.K + j0 + j];
    if (c >= 0) h[j * (C + 1) + c] = a.reduce == Reduce::Mean ? T(1) / tab.count[b * C + c] : T(1);
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

// y += a x over D elements with strides; the unit-stride case in its own loop, which the
// compiler vectorises.
template <typename T>
inline void axpy(int64_t D, T a, const T* x, int64_t sx, T* y, int64_t sy) {
  if (sx == 1 && sy == 1) {
    for (int64_t d = 0; d < D; ++d) y[d] += a * x[d];
  } else {
    for (int64_t d = 0; d < D; ++d) y[d * sy] += a * x[d * sx];
  }
}

template <typename T>
void forward(const SimilarityReduceForward& p) {
  const SimilarityReduceArgs& a = p.a;
  const int64_t N = a.N, K = a.K, C = a.C;
  const T* q = static_cast<const T*>(a.query);
  const Tables<T> tab(a, static_cast<const T*>(a.ref), p.bad_count);
  const Ctx<T> x{a, q, tab, T(a.scale), T(a.bias), T(a.eps), T(a.temperature)};
  T* out = static_cast<T*>(p.out);
  T* aux = static_cast<T*>(p.aux);
  const T inf = std::numeric_limits<T>::infinity();
  const bool linear = a.reduce == Reduce::Sum || a.reduce == Reduce::Mean;
  const int64_t nt = (N + kTN - 1) / kTN;
  // a tile's extents: small inputs, small buffers (zeroing two 64 KiB tiles was most of a tiny call)
  const int64_t tn = std::min(kTN, N), tk = std::min(kTK, K);
  at::parallel_for(0, a.B * nt, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> S(tn * tk), den(a.metric == Metric::Cosine ? tn * tk : 0), qn(tn), M(tn), L(tn);
    std::vector<T> h(linear ? tk * (C + 1) : 0), acc(linear ? tn * (C + 1) : 0);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nt, i0 = (t % nt) * kTN, n = std::min(kTN, N - i0);
      T* o = out + (b * N + i0) * C;
      T* ties = a.reduce == Reduce::Max ? aux + (b * N + i0) * C : nullptr;
      std::fill_n(o, n * C, a.reduce == Reduce::Max ? -inf : T(0));
      if (ties) std::fill_n(ties, n * C, T(0));
      std::fill_n(M.data(), n, -inf);
      std::fill_n(L.data(), n, T(0));
      std::fill_n(acc.data(), acc.size(), T(0));
      for (int64_t i = 0; i < n && a.metric == Metric::Cosine; ++i) qn[i] = x.qnorm(b, i0 + i);
      const int32_t* cls = tab.cls.data() + b * K;
      for (int64_t j0 = 0; j0 < K; j0 += kTK) {
        const int64_t k = std::min(kTK, K - j0);
        scores(x, b, i0, n, j0, k, qn.data(), S.data(), den.data(), static_cast<T*>(nullptr));
        if (ties) {
          max_tile(S.data(), n, k, cls + j0, C, o, ties);
          continue;
        }
        const at::Tensor st = matrix(S.data(), n, k);
        // Sum and mean: one GEMM with the class matrix, when every score is finite (a product with
        // the class matrix's zeros would turn another class's inf or NaN into NaN); else per score.
        if (linear && at::isfinite(st).all().template item<bool>()) {
          class_matrix(tab, a, b, j0, k, h.data());
          matrix(acc.data(), n, C + 1).addmm_(st, matrix(h.data(), k, C + 1));
          continue;
        }
        for (int64_t i = 0; i < n; ++i) {
          T* s = S.data() + i * k;
          T* oi = linear ? acc.data() + i * (C + 1) : o + i * C;
          if (a.reduce == Reduce::Softmax) {
            // Online softmax: the tile's max first, one rescale of the row's state per tile.
            T tmax = -inf;
            bool any = false;
            for (int64_t j = 0; j < k; ++j) {
              if (cls[j0 + j] < 0) continue;
              s[j] /= x.temp;
              if (similarity_reduce::above(s[j], tmax)) tmax = s[j];
              any = true;
            }
            if (!any) continue;
            const T m = similarity_reduce::above(tmax, M[i]) ? tmax : M[i];
            if (m != M[i]) {
              const T f = std::exp(M[i] - m);
              L[i] *= f;
              for (int64_t c = 0; c < C; ++c) oi[c] *= f;
              M[i] = m;
            }
            for (int64_t j = 0; j < k; ++j) {
              if (cls[j0 + j] < 0) continue;
              const T e = std::exp(s[j] - m);
              L[i] += e;
              oi[cls[j0 + j]] += e;
            }
            continue;
          }
          for (int64_t j = 0; j < k; ++j) {
            const int32_t c = cls[j0 + j];
            if (c >= 0) oi[c] += a.reduce == Reduce::Mean ? s[j] / tab.count[b * C + c] : s[j];
          }
        }
      }
      for (int64_t i = 0; i < n; ++i) {
        T* oi = o + i * C;
        if (linear)
          for (int64_t c = 0; c < C; ++c) oi[c] = tab.count[b * C + c] > T(0) ? acc[i * (C + 1) + c] : T(0);
        if (a.reduce == Reduce::Softmax) {
          // No valid ref: the softmax is over nothing, 0 (never 0/0); m = log l = -inf.
          // L != 0, not L > 0: a NaN score makes L NaN, and the row NaN as the reference's, but
          // for its empty classes (0: they have no term).
          for (int64_t c = 0; c < C; ++c) oi[c] = L[i] != T(0) && tab.count[b * C + c] > T(0) ? oi[c] / L[i] : T(0);
          aux[(b * N + i0 + i) * 2] = M[i];
          aux[(b * N + i0 + i) * 2 + 1] = std::log(L[i]);
        }
        if (ties && a.sigmoid)  // the max of z, activated once (max_out)
          for (int64_t c = 0; c < C; ++c) oi[c] = similarity_reduce::max_out(oi[c], ties[i * C + c]);
        if (p.labels != nullptr) p.labels[b * N + i0 + i] = similarity_reduce::argmax_row(oi, C);
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
  const Ctx<T> x{a, q, tab, T(a.scale), T(a.bias), T(a.eps), T(a.temperature)};
  const T* g = static_cast<const T*>(p.grad_out);
  const T* out = static_cast<const T*>(p.out);
  const T* aux = static_cast<const T*>(p.aux);
  T* gq = static_cast<T*>(p.grad_query);
  T* gr = static_cast<T*>(p.grad_ref);  // ref's strides a.r_s*
  T* gw = static_cast<T*>(p.grad_weight);
  const bool cosine = a.metric == Metric::Cosine, max = a.reduce == Reduce::Max;
  const int64_t nt = (N + kTN - 1) / kTN;
  // Groups of query tiles, each with its own (K, D) partial of dr (+ (K,) of cosine's norm term)
  // in double, each tile's product a float GEMM added in double: a group sums N / (64 G) tiles,
  // and float32 partials drifted past SPEC's tolerance from N = 1e5 on (1.6e-5 relative at 1e5
  // random queries against 2 refs, 7.9e-4 at 1e6). One group (N + K < 20 K: the refs are many)
  // accumulates in grad_ref itself, in the input dtype (no ref-sized buffer: prior_mask's
  // support map); the partials are at most a fifth of the inputs' bytes.
  const int64_t budget = std::max<int64_t>(1, (N + K) / (10 * std::max<int64_t>(K, 1)));
  const int64_t G = std::max<int64_t>(1, std::min({nt, kGroups, budget}));
  const bool direct = G == 1;
  std::vector<double> part(direct ? 0 : size_t(B * G * K * D), 0.0), colpart(size_t(B * G * K), 0.0);
  for (int64_t b = 0; b < B && direct; ++b) matrix(gr + b * a.r_sb, K, D, a.r_sk, a.r_sd).zero_();
  // Cosine with a weight: dw_j = eps Σ_i A_ij (q_i·ref_j) / den_ij, per pair (see the last loop).
  const bool wcos = cosine && tab.w != nullptr && gw != nullptr;
  std::vector<double> epart(wcos ? size_t(B * G * K) : 0, 0.0);  // in double: signed terms, and a few

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
  // a tile's extents: small inputs, small buffers (as the forward)
  const int64_t tn = std::min(kTN, N), tk = std::min(kTK, K);
  at::parallel_for(0, B * G, 1, [&](int64_t t0, int64_t t1) {
    const size_t tile = tn * tk;
    std::vector<T> S(tile), Z(tile), den(cosine ? tile : 0), sim(cosine ? tile : 0), raw(wcos ? tile : 0), qn(tn);
    std::vector<T> gx(tn * (C + 1)), row(tn), mrow(tn), lrow(tn);
    std::vector<T> mx(max ? tn * C : 0), tie(max ? tn * C : 0);
    std::vector<T> asim(max && cosine ? tn * C : 0), aden(max && cosine ? tn * C : 0);
    std::vector<T> comp(a.sigmoid ? tile : 0), acomp(max && a.sigmoid ? tn * C : 0);  // 1 - s (scores())
    T* cp = a.sigmoid ? comp.data() : nullptr;
    std::vector<int64_t> arg(max ? tn * C : 0);
    std::vector<T> qtile(max ? tn * D : 0), dqtile(max ? tn * D : 0);
    std::vector<int64_t> col_of(tk);
    std::vector<T> prod(G > 1 ? size_t(tk * D) : 0), colt(tk);  // a tile's dZᵀ q and Σ_i A sim |q_i|, added in double
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / G, grp = t % G;
      // this group's dr: rows of grad_ref (direct) or of its double partial; its column term (K)
      T* drd = direct ? gr + b * a.r_sb : nullptr;
      double* dr = direct ? nullptr : part.data() + (b * G + grp) * K * D;
      double* col = colpart.data() + (b * G + grp) * K;
      double* ecol = wcos ? epart.data() + (b * G + grp) * K : nullptr;
      const int32_t* cls = tab.cls.data() + b * K;
      const T* rn = cosine ? tab.rnorm.data() + b * K : nullptr;
      for (int64_t it = grp; it < nt; it += G) {
        const int64_t i0 = it * kTN, n = std::min(kTN, N - i0);
        const T* gi0 = g + (b * N + i0) * C;
        const T* oi0 = out + (b * N + i0) * C;
        at::Tensor dq = x.rows(gq, b, i0, n);
        dq.zero_();
        std::fill_n(row.data(), n, T(0));
        // gx (n, C + 1): what dS_ij reads for ref j of class c at column c (column C, for the
        // refs that take no part, is 0): g_ic; / n_c (mean); h_ic of softmax_centered.
        for (int64_t i = 0; i < n; ++i) {
          T* gxi = gx.data() + i * (C + 1);
          if (cosine) qn[i] = x.qnorm(b, i0 + i);
          if (a.reduce == Reduce::Softmax) {
            similarity_reduce::softmax_centered(gi0 + i * C, oi0 + i * C, C, gxi);
            mrow[i] = aux[(b * N + i0 + i) * 2];
            lrow[i] = aux[(b * N + i0 + i) * 2 + 1];
          } else {
            for (int64_t c = 0; c < C; ++c)
              gxi[c] = a.reduce == Reduce::Mean ? gi0[i * C + c] / tab.count[b * C + c] : gi0[i * C + c];
          }
          gxi[C] = T(0);
        }
        bool unique = false;  // max: the gradient already taken from the unique maxima
        if (max) {
          // The max's gradient goes to the refs whose score equals the row's class max. That max
          // and its tie count are recomputed here, by this task, from the very score tiles of
          // the pass below (the same calls on the same buffers: the same bits). A max from
          // another pass can differ in the last bit (another thread count inside the GEMM, or
          // another backend's `out`), and an equality test against it would miss.
          std::fill_n(mx.data(), n * C, -std::numeric_limits<T>::infinity());
          std::fill_n(tie.data(), n * C, T(0));
          for (int64_t j0 = 0; j0 < K; j0 += kTK) {
            const int64_t k = std::min(kTK, K - j0);
            scores(x, b, i0, n, j0, k, qn.data(), S.data(), den.data(), sim.data(), static_cast<T*>(nullptr), cp);
            max_tile(S.data(), n, k, cls + j0, C, mx.data(), tie.data(), arg.data(), j0,
                     cosine ? sim.data() : nullptr, den.data(), asim.data(), aden.data(), cp, acomp.data());
          }
          // Every class max of the tile finite and unique (the usual case): dS has one nonzero
          // per (row, class), at the recorded ref, so the gradient is n C vector updates, not a
          // second pass of score tiles and two (n, k) x (k, D) products. Ties, NaN or an infinite
          // max take the general pass below.
          unique = refs_finite[b] != 0;
          for (int64_t e = 0; e < n * C && unique; ++e)
            unique = tie[e] == T(0) || (tie[e] == T(1) && std::isfinite(mx[e]));
          if (unique) {
            // The query tile and its gradient as contiguous (n, D) rows (label_transfer's query is
            // a D-major map, read in place: one strided pass each way instead of one per class),
            // so that every update below is a unit-stride axpy on the query side.
            T* qt = qtile.data();
            T* dqt = dqtile.data();
            matrix(qt, n, D).copy_(x.rows(q, b, i0, n));
            std::fill_n(dqt, n * D, T(0));
            for (int64_t i = 0; i < n; ++i) {
              const T* qi = qt + i * D;
              T* gi = dqt + i * D;
              for (int64_t c = 0; c < C; ++c) {
                const int64_t e = i * C + c;
                if (tie[e] == T(0)) continue;
                // dZ as the general pass forms it: g / 1, the sigmoid's s (1 - s) (mx: the max's z),
                // scale, / den
                T z = gx[i * (C + 1) + c] / tie[e];
                if (a.sigmoid) z = z * similarity_reduce::max_out(mx[e], T(1)) * acomp[e];
                if (x.scale != T(1)) z *= x.scale;
                const int64_t j = arg[e];
                const T* rj = tab.row(b, j);
                if (cosine) {
                  z /= aden[e];
                  row[i] += z * asim[e] * rn[j];
                  col[j] += z * asim[e] * qn[i];
                  if (wcos) {
                    double dot = 0;  // q_i·ref_j (exact products: a cancelling dot keeps its digits)
                    for (int64_t d = 0; d < D; ++d) dot += double(qi[d]) * rj[d * tab.sd];
                    ecol[j] += tab.atfloor[b * K + j] ? double(z) * dot : double(z) * dot / aden[e] * a.eps;
                  }
                }
                const T zw = tab.w ? z * tab.w[b * K + j] : z;  // dq_i += dZ (w r_j)
                axpy(D, zw, rj, tab.sd, gi, 1);
                if (direct) {  // dr_j += dZ q_i
                  axpy(D, z, qi, 1, drd + j * a.r_sk, a.r_sd);
                } else {
                  double* drj = dr + j * D;
                  for (int64_t d = 0; d < D; ++d) drj[d] += double(z) * qi[d];
                }
              }
            }
            dq.copy_(matrix(dqt, n, D));
          }
        }
        const at::Tensor gxt = matrix(gx.data(), n, C + 1);
        for (int64_t j0 = 0; j0 < K && !unique; j0 += kTK) {
          const int64_t k = std::min(kTK, K - j0);
          scores(x, b, i0, n, j0, k, qn.data(), S.data(), den.data(), sim.data(), wcos ? raw.data() : nullptr, cp);
          const at::Tensor st = matrix(S.data(), n, k);
          at::Tensor zt = matrix(Z.data(), n, k);
          for (int64_t j = 0; j < k; ++j) col_of[j] = cls[j0 + j] >= 0 ? cls[j0 + j] : C;
          // dS: g of each score's class, gathered (a gather, not a product with the class matrix:
          // an inf or NaN gradient of one class must not reach the others').
          at::index_select_out(zt, gxt, 1, at::from_blob(col_of.data(), {k}, at::kLong));
          if (a.reduce == Reduce::Softmax) {
            // p_ij = exp((s_ij / T - m_i) - log l_i); dS = p h / T
            zt.mul_(st.div(x.temp).sub_(matrix(mrow.data(), n, 1)).sub_(matrix(lrow.data(), n, 1)).exp_()).div_(x.temp);
          } else if (a.reduce == Reduce::Max) {
            for (int64_t i = 0; i < n; ++i)
              for (int64_t j = 0; j < k; ++j) {
                const int64_t c = col_of[j];
                Z[i * k + j] = c < C ? similarity_reduce::grad_score(Reduce::Max, Z[i * k + j], S[i * k + j], T(1),
                                                                     mx[i * C + c], tie[i * C + c], T(0), T(0), T(1))
                                     : T(0);
              }
          }
          // sigmoid' = s (1 - s), 1 - s from scores(); the max's tile holds z, its s formed here
          if (a.sigmoid) zt.mul_(max ? st.sigmoid() : st).mul_(matrix(cp, n, k));
          if (x.scale != T(1)) zt.mul_(x.scale);
          if (cosine) zt.div_(matrix(den.data(), n, k));  // A = dZ / den
          // The refs that take no part: dZ = 0 exactly (their p = exp(0 / T - ...) can overflow,
          // their den be 0 with eps = 0: a product with them would be NaN).
          if (const at::Tensor off = off_mask(tab, b, j0, k); off.defined()) zt.masked_fill_(off, T(0));
          if (cosine) {
            // the norms' terms: row_i += Σ_j A sim |r_j|, col_j += Σ_i A sim |q_i|
            const at::Tensor as = matrix(sim.data(), n, k).mul_(zt);
            vec(row.data(), n).addmv_(as, vec(rn + j0, k));
            at::Tensor ct = vec(colt.data(), k);
            at::mv_out(ct, as.t(), vec(qn.data(), n));
            for (int64_t j = 0; j < k; ++j) col[j0 + j] += colt[j];
            if (wcos) {
              // Σ_i A (q·ref) eps / den of a ref with a norm, Σ_i A (q·ref) at the floor (see below)
              at::Tensor e = matrix(raw.data(), n, k).mul_(zt);
              at::Tensor unclamped = e.div(matrix(den.data(), n, k)).mul_(x.eps);
              const at::Tensor fl = floor_mask(tab, b, j0, k);
              if (fl.defined()) unclamped = at::where(fl, e, unclamped);
              vec(ecol + j0, k).add_(unclamped.sum(0, false, at::kDouble));
            }
          }
          // dr (of the weighted refs) += dZᵀ q; dq += dZ (w r)
          if (direct) {
            matrix(drd + j0 * a.r_sk, k, D, a.r_sk, a.r_sd).addmm_(zt.t(), x.rows(q, b, i0, n));
          } else {
            at::Tensor pt = matrix(prod.data(), k, D);
            at::mm_out(pt, zt.t(), x.rows(q, b, i0, n));
            for (int64_t e = 0; e < k * D; ++e) dr[j0 * D + e] += prod[e];
          }
          if (tab.w != nullptr) zt.mul_(matrix(tab.w + b * K + j0, 1, k));
          dq.addmm_(zt, tab.rows(b, j0, k, D));
        }
        // Cosine: minus (q / |q|) times the row's norm term (0 where |q| is at the floor).
        for (int64_t i = 0; i < n && cosine; ++i) {
          if (!(qn[i] > tab.floor)) continue;
          const T f = row[i] / qn[i];
          const T* qi = q + b * a.q_sb + (i0 + i) * a.q_sn;
          T* gi = gq + b * a.q_sb + (i0 + i) * a.q_sn;
          for (int64_t d = 0; d < D; ++d) gi[d * a.q_sd] -= f * qi[d * a.q_sd];
        }
      }
    }
  });
  // dr = the partials in group order, then cosine's norm term, in double, rounded once: G_j, the
  // gradient of the weighted ref; with a weight, d ref_j = w_j G_j and dw_j = ref_j·G_j. 0 for
  // refs that take no part.
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
      const T w = tab.w != nullptr ? tab.w[rj] : T(1);
      const T* r = tab.row(b, j);
      if (cosine && !tab.atfloor[rj]) {
        const double f = colsum * w / tab.rnorm[rj];  // (w r) / |w r| times the column's norm term
        for (int64_t d = 0; d < D; ++d) acc[d] -= f * r[d * tab.sd];
      }
      for (int64_t d = 0; d < D; ++d) o[d * od] = T(acc[d]);
      if (gw != nullptr) {
        // Cosine: ref_j·G_j is Σ_i A_ij (q_i·ref_j) - sign(w) |ref_j| Σ_i A_ij sim_ij |q_i|, two
        // near-equal sums (the cosine is scale-invariant in w but for eps) whose difference,
        // eps Σ_i A_ij (q_i·ref_j) / den_ij, float32 would lose; it is summed per pair instead
        // (Σ_i A_ij (q_i·ref_j) for a ref at the norm floor: no norm term there).
        T dw = 0;
        if (wcos) {
          dw = T(esum);
        } else {
          for (int64_t d = 0; d < D; ++d) dw += r[d * tab.sd] * o[d * od];
        }
        gw[rj] = dw;
        for (int64_t d = 0; d < D; ++d) o[d * od] *= w;
      }
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
