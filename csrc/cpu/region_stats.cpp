// region_stats on CPU (SPEC §3.1).
//
// Forward: one task = one chunk of pixels of one image, all D dims (at::parallel_for
// over B * num_chunks tasks). The chunk (~128 KiB of emb) is swept twice while it is
// in L2: sweep 1 sums per (region, dim), sweep 2 sums the squares centred on the
// chunk-local mean. Each chunk writes (n, mean, M2) partials; a second parallel loop
// over (image, region) merges them in chunk order (common/region_stats.h), so DRAM
// sees emb once and the result is bitwise reproducible for any thread count.
// Invalid pixels go to a sentinel bin R that is dropped, which keeps the inner loops
// branch-free. For few regions (R + 1 <= 8) the contiguous layout uses per-bin
// vector accumulators (select instead of scatter: no store-to-load dependency chain).
//
// Backward: one streaming pass, grad = (gc[r] + 2 gv[r] (x - c[r])) / n[r].
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/region_stats.h"

namespace pixelkernels::cpu {
namespace {

using region_stats::grad_element;
using region_stats::plan_chunks;
using region_stats::takes_part;

constexpr int64_t kChunkBytes = 128 * 1024;
constexpr int64_t kMaxPartialRows = 1 << 16;
constexpr int kLanes = 8;     // independent accumulators per bin: vectorisable, fixed order
constexpr int kMaxFastBins = 8;

// Emb addressing: x[b, d, p] = base[b * sb + d * sd + p * sp]; either sp == 1 (contiguous)
// or sd == 1 (channels_last).
struct Layout {
  int64_t B, D, P, sb, sd, sp;
};

// Bins of the chunk's pixels: label if it takes part, else the sentinel R.
inline void chunk_bins(const int64_t* lab, int64_t n, int64_t R, int64_t ignore, int32_t* bins) {
  for (int64_t i = 0; i < n; ++i) bins[i] = takes_part(lab[i], R, ignore) ? int32_t(lab[i]) : int32_t(R);
}

// Sum over i of (bins[i] == k ? f(v[i]) : 0) for k < K, kLanes-wide so the compiler
// vectorises it without reassociating floats. out[k] += result.
template <int K, typename acc_t, typename scalar_t, typename F>
inline void binned_sums(const scalar_t* v, const int32_t* bins, int64_t n, F f, acc_t* out) {
  acc_t acc[K][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < K; ++k) {
      for (int j = 0; j < kLanes; ++j) {
        acc_t val = f(acc_t(v[i + j]), k);
        acc[k][j] += bins[i + j] == k ? val : acc_t(0);
      }
    }
  }
  for (; i < n; ++i) {
    int k = bins[i];
    acc[k][0] += f(acc_t(v[i]), k);
  }
  for (int k = 0; k < K; ++k) {
    acc_t s = 0;
    for (int j = 0; j < kLanes; ++j) s += acc[k][j];
    out[k] += s;
  }
}

// Per-chunk statistics with the accumulators laid out as [D][R + 1] (pixel-inner
// layout) or [R + 1][D] (dim-inner layout). Writes count, mean, M2 for bins < R.
template <typename scalar_t, typename acc_t, int K>
void chunk_stats_pixel_inner(const scalar_t* x, const Layout& L, const int32_t* bins, int64_t n,
                             int64_t R, int64_t* cnt, acc_t* mean, acc_t* m2) {
  const int64_t nb = R + 1;
  std::vector<acc_t> sum(L.D * nb, acc_t(0)), sq(L.D * nb, acc_t(0));
  std::vector<int64_t> c(nb, 0);
  for (int64_t i = 0; i < n; ++i) ++c[bins[i]];
  auto ident = [](acc_t v, int) { return v; };
  for (int64_t d = 0; d < L.D; ++d) {
    const scalar_t* xd = x + d * L.sd;
    acc_t* s = sum.data() + d * nb;
    if constexpr (K > 0) {
      binned_sums<K>(xd, bins, n, ident, s);
    } else {
      for (int64_t i = 0; i < n; ++i) s[bins[i]] += acc_t(xd[i]);
    }
    for (int64_t k = 0; k < R; ++k) s[k] = c[k] > 0 ? s[k] / acc_t(c[k]) : acc_t(0);
    acc_t* q = sq.data() + d * nb;
    if constexpr (K > 0) {
      auto centred = [s](acc_t v, int k) { acc_t t = v - s[k]; return t * t; };
      binned_sums<K>(xd, bins, n, centred, q);
    } else {
      for (int64_t i = 0; i < n; ++i) {
        acc_t t = acc_t(xd[i]) - s[bins[i]];
        q[bins[i]] += t * t;
      }
    }
  }
  for (int64_t k = 0; k < R; ++k) {
    cnt[k] = c[k];
    for (int64_t d = 0; d < L.D; ++d) {
      mean[k * L.D + d] = sum[d * nb + k];
      m2[k * L.D + d] = sq[d * nb + k];
    }
  }
}

template <typename scalar_t, typename acc_t>
void chunk_stats_dim_inner(const scalar_t* x, const Layout& L, const int32_t* bins, int64_t n,
                           int64_t R, int64_t* cnt, acc_t* mean, acc_t* m2) {
  const int64_t D = L.D;
  std::vector<acc_t> sum((R + 1) * D, acc_t(0)), sq((R + 1) * D, acc_t(0));
  std::vector<int64_t> c(R + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t* xi = x + i * L.sp;
    acc_t* s = sum.data() + bins[i] * D;
    ++c[bins[i]];
    for (int64_t d = 0; d < D; ++d) s[d] += acc_t(xi[d]);
  }
  for (int64_t k = 0; k < R; ++k)
    for (int64_t d = 0; d < D; ++d)
      sum[k * D + d] = c[k] > 0 ? sum[k * D + d] / acc_t(c[k]) : acc_t(0);
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t* xi = x + i * L.sp;
    const acc_t* mu = sum.data() + bins[i] * D;
    acc_t* q = sq.data() + bins[i] * D;
    for (int64_t d = 0; d < D; ++d) {
      acc_t t = acc_t(xi[d]) - mu[d];
      q[d] += t * t;
    }
  }
  std::copy(c.begin(), c.begin() + R, cnt);
  std::copy(sum.begin(), sum.begin() + R * D, mean);
  std::copy(sq.begin(), sq.begin() + R * D, m2);
}

template <typename scalar_t, typename acc_t>
void forward_impl(const scalar_t* x, const Layout& L, const int64_t* labels, int64_t R,
                  int64_t ignore, acc_t* count, acc_t* centroid, acc_t* variance) {
  const int64_t D = L.D, P = L.P;
  const int64_t target = std::max<int64_t>(256, kChunkBytes / std::max<int64_t>(1, D * sizeof(scalar_t)));
  const auto plan = plan_chunks(P, R, target, kMaxPartialRows);
  const int64_t NC = plan.num_chunks;
  std::vector<int64_t> pn(L.B * NC * R);
  std::vector<acc_t> pmean(L.B * NC * R * D), pm2(L.B * NC * R * D);

  at::parallel_for(0, L.B * NC, 1, [&](int64_t t0, int64_t t1) {
    std::vector<int32_t> bins(plan.chunk);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / NC, c = t % NC;
      const int64_t p0 = c * plan.chunk, n = std::min(plan.chunk, P - p0);
      chunk_bins(labels + b * P + p0, n, R, ignore, bins.data());
      const scalar_t* xc = x + b * L.sb + p0 * L.sp;
      int64_t* cn = pn.data() + t * R;
      acc_t* mu = pmean.data() + t * R * D;
      acc_t* m2 = pm2.data() + t * R * D;
      if (L.sp != 1) {
        chunk_stats_dim_inner<scalar_t, acc_t>(xc, L, bins.data(), n, R, cn, mu, m2);
      } else {
        // K = number of bins (regions + sentinel) as a compile-time constant.
        auto run = [&](auto K) {
          chunk_stats_pixel_inner<scalar_t, acc_t, decltype(K)::value>(xc, L, bins.data(), n, R, cn, mu, m2);
        };
        switch (R + 1) {
          case 2: run(std::integral_constant<int, 2>{}); break;
          case 3: run(std::integral_constant<int, 3>{}); break;
          case 4: run(std::integral_constant<int, 4>{}); break;
          case 5: run(std::integral_constant<int, 5>{}); break;
          case 6: run(std::integral_constant<int, 6>{}); break;
          case 7: run(std::integral_constant<int, 7>{}); break;
          case 8: run(std::integral_constant<int, kMaxFastBins>{}); break;
          default: run(std::integral_constant<int, 0>{});
        }
      }
    }
  });

  // Merge the chunks of each (image, region) in chunk order.
  at::parallel_for(0, L.B * R, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / R, r = t % R;
      int64_t n = 0;
      for (int64_t c = 0; c < NC; ++c) n += pn[(b * NC + c) * R + r];
      acc_t* cen = centroid + t * D;
      acc_t var = 0;
      for (int64_t d = 0; d < D; ++d) {
        acc_t s = 0;
        for (int64_t c = 0; c < NC; ++c) {
          const int64_t row = (b * NC + c) * R + r;
          s += acc_t(pn[row]) * pmean[row * D + d];
        }
        const acc_t mu = n > 0 ? s / acc_t(n) : acc_t(0);
        acc_t m2 = 0;
        for (int64_t c = 0; c < NC; ++c) {
          const int64_t row = (b * NC + c) * R + r;
          const acc_t dm = pmean[row * D + d] - mu;
          m2 += pm2[row * D + d] + (pn[row] > 0 ? acc_t(pn[row]) * dm * dm : acc_t(0));
        }
        cen[d] = mu;
        var += m2;
      }
      count[t] = acc_t(n);
      variance[t] = n > 0 ? var / acc_t(n) : acc_t(0);
    }
  });
}

template <typename scalar_t, typename acc_t>
void backward_impl(const acc_t* gc, const acc_t* gv, const scalar_t* x, const Layout& L,
                   const int64_t* labels, const acc_t* count, const acc_t* centroid, int64_t R,
                   int64_t ignore, scalar_t* gx) {
  const int64_t D = L.D, P = L.P;
  constexpr int64_t kTile = 4096;
  const int64_t tiles = (P + kTile - 1) / kTile;
  at::parallel_for(0, L.B * tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / tiles, p0 = (t % tiles) * kTile, p1 = std::min(P, p0 + kTile);
      const int64_t* lab = labels + b * P;
      std::vector<acc_t> inv_n(R);
      for (int64_t r = 0; r < R; ++r) inv_n[r] = count[b * R + r] > 0 ? acc_t(1) / count[b * R + r] : acc_t(0);
      const acc_t* cen = centroid + b * R * D;
      const acc_t* g_c = gc + b * R * D;
      const acc_t* g_v = gv + b * R;
      const scalar_t* xb = x + b * L.sb;
      scalar_t* gb = gx + b * L.sb;
      auto grad = [&](int64_t p, int64_t d, int64_t l) -> scalar_t {
        if (!takes_part(l, R, ignore)) return scalar_t(0);
        const acc_t v = acc_t(xb[d * L.sd + p * L.sp]);
        return scalar_t(grad_element<acc_t>(v, cen[l * D + d], g_c[l * D + d], g_v[l], inv_n[l]));
      };
      if (L.sp == 1) {
        for (int64_t d = 0; d < D; ++d)
          for (int64_t p = p0; p < p1; ++p) gb[d * L.sd + p] = grad(p, d, lab[p]);
      } else {
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t l = lab[p];
          for (int64_t d = 0; d < D; ++d) gb[d * L.sd + p * L.sp] = grad(p, d, l);
        }
      }
    }
  });
}

// Collapse (H, W) into one pixel axis; copy only when the strides do not allow it.
at::Tensor pixel_view_source(const at::Tensor& emb) {
  const bool collapsible = emb.stride(2) == emb.size(3) * emb.stride(3) || emb.size(2) == 1;
  const bool fast = emb.stride(3) == 1 || emb.stride(1) == 1;
  return collapsible && fast ? emb : emb.contiguous();
}

Layout layout_of(const at::Tensor& e) {
  return Layout{e.size(0), e.size(1), e.size(2) * e.size(3), e.stride(0), e.stride(1), e.stride(3)};
}

at::ScalarType stats_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> region_stats_cpu(const at::Tensor& emb_in,
                                                                const at::Tensor& labels_in,
                                                                int64_t R, int64_t ignore_index) {
  TORCH_CHECK(emb_in.dim() == 4, "region_stats: emb must be (B, D, H, W), got ", emb_in.sizes());
  TORCH_CHECK(labels_in.dim() == 3, "region_stats: labels must be (B, H, W), got ", labels_in.sizes());
  TORCH_CHECK(R >= 1, "region_stats: num_regions must be >= 1, got ", R);
  TORCH_CHECK(emb_in.scalar_type() == at::kFloat || emb_in.scalar_type() == at::kDouble,
              "region_stats (cpu): emb must be float32 or float64, got ", emb_in.scalar_type());
  const at::Tensor emb = pixel_view_source(emb_in);
  const at::Tensor labels = labels_in.to(at::kLong).contiguous();
  const Layout L = layout_of(emb);
  TORCH_CHECK(labels.numel() == L.B * L.P, "region_stats: labels shape ", labels.sizes(),
              " does not match emb ", emb.sizes());
  auto opts = emb.options().dtype(stats_type(emb.scalar_type()));
  at::Tensor count = at::zeros({L.B, R}, opts);
  at::Tensor centroid = at::zeros({L.B, R, L.D}, opts);
  at::Tensor variance = at::zeros({L.B, R}, opts);
  if (L.B == 0) return {count, centroid, variance};
  AT_DISPATCH_FLOATING_TYPES(emb.scalar_type(), "region_stats_cpu", [&] {
    forward_impl<scalar_t, scalar_t>(emb.const_data_ptr<scalar_t>(), L, labels.const_data_ptr<int64_t>(), R,
                                     ignore_index, count.mutable_data_ptr<scalar_t>(),
                                     centroid.mutable_data_ptr<scalar_t>(), variance.mutable_data_ptr<scalar_t>());
  });
  return {count, centroid, variance};
}

at::Tensor region_stats_backward_cpu(const at::Tensor& grad_centroid, const at::Tensor& grad_variance,
                                     const at::Tensor& emb_in, const at::Tensor& labels_in,
                                     const at::Tensor& count, const at::Tensor& centroid,
                                     int64_t ignore_index) {
  TORCH_CHECK(emb_in.dim() == 4, "region_stats_backward: emb must be (B, D, H, W), got ", emb_in.sizes());
  const at::Tensor emb = pixel_view_source(emb_in);
  const Layout L = layout_of(emb);
  const int64_t R = count.size(1);
  TORCH_CHECK(centroid.sizes() == at::IntArrayRef({L.B, R, L.D}) &&
                  grad_centroid.sizes() == centroid.sizes() && grad_variance.sizes() == count.sizes(),
              "region_stats_backward: inconsistent shapes");
  const auto st = stats_type(emb.scalar_type());
  const at::Tensor gc = grad_centroid.to(st).contiguous(), gv = grad_variance.to(st).contiguous();
  const at::Tensor cnt = count.to(st).contiguous(), cen = centroid.to(st).contiguous();
  const at::Tensor labels = labels_in.to(at::kLong).contiguous();
  at::Tensor grad = at::empty_like(emb);
  if (grad.numel() == 0) return grad;
  AT_DISPATCH_FLOATING_TYPES(emb.scalar_type(), "region_stats_backward_cpu", [&] {
    backward_impl<scalar_t, scalar_t>(gc.const_data_ptr<scalar_t>(), gv.const_data_ptr<scalar_t>(),
                                      emb.const_data_ptr<scalar_t>(), L, labels.const_data_ptr<int64_t>(),
                                      cnt.const_data_ptr<scalar_t>(), cen.const_data_ptr<scalar_t>(), R,
                                      ignore_index, grad.mutable_data_ptr<scalar_t>());
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelkernels, CPU, m) {
  m.impl("region_stats", &region_stats_cpu);
  m.impl("region_stats_backward", &region_stats_backward_cpu);
}

}  // namespace pixelkernels::cpu
