// triplet_hinge CPU kernels (csrc/common/triplet_hinge.h).
//
// Distances of the slots' own pairs (the loss, and the backward's factors) are read straight
// from emb. A map with unit pixel stride (contiguous) is read a channel row at a time for all
// of an image's slots (row_pair_squares: tasks over groups of channels, whose partial sums add
// in group order); other layouts a chunk of slots at a time, each slot's channels in increasing
// order. Either way the order is fixed by the sizes, so the bits do not depend on the thread
// count, and the forward and the backward agree on which hinges are active. The loss of an image
// sums its hinge terms in slot order.
//
// Batch-hard mining is an n x n search per image (n slots taking part; per group of slots with
// `groups`, each group then an image of its own) that never holds an n x n matrix. The image's anchors are gathered into (n, D) rows, its positives and negatives
// into panels of W candidates stored channel-major ([D][W]), so that one vector load holds
// channel d of W candidates. A register tile of 4 anchors x W candidates sums the exact squared
// differences over d (not |a|^2 + |c|^2 - 2ac: the reference compares these sums, and equal
// distances must stay exactly equal for the ties to go to the lowest slot). Each lane keeps
// its own running best with the rule of triplet_hinge::better (a lane meets its candidates in
// increasing slot order), and the lanes' winners merge with the same rule by slot order. Tasks
// are (image, tile of anchors); one task alone decides an anchor, so the results do not depend
// on the thread count. The tile loop is built twice from one source: baseline with 16-byte
// vectors, and AVX2+FMA with 32-byte ones (`flatten` inlines the generic code into an entry
// compiled for that target), picked per call like the other ops' kernels (cpu/isa.h). The two
// builds can pick differently only where FMA rounds a near tie differently; the loss does not
// depend on the build (its distances are recomputed by the baseline code above).
//
// Backward: first each slot's factors (fu, fv; slots that are not active() dropped, the rest
// kept in slot order) and its differences a - p, a - n (O(K D) scratch: emb's random reads are
// most of the time outside the gradient's write, and this way they happen once), then the
// gradient. A pixel-inner map is written one (image, channel) row per task: zero the row, add
// every active slot's terms in slot order while the row is in cache. Other layouts are zeroed
// in pixel chunks, then each (image, group of channels) task adds the slots in slot order.
// Every element's sum thus has one fixed order: bitwise the same for any thread count.
#include "common/triplet_hinge.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "cpu/isa.h"
#include "cpu/pixel_tiles.h"

// The vector types below never cross a call boundary (every user is inlined); quiet GCC's note
// about their ABI in the baseline build.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace pixelkernels::cpu {
namespace {

using triplet_hinge::in_range;

constexpr int64_t kSlots = 256;        // slots per task of the pair-distance passes
constexpr int kMR = 4;                 // anchors per register tile
constexpr int kNV = 2;                 // vectors of candidates per register tile
constexpr int64_t kAnchorTile = 64;    // anchors per mining task (a multiple of kMR)
constexpr int64_t kBlockBytes = 16384; // bytes of candidate panels per pass over a tile's anchors (L1)
constexpr int64_t kChannelGroup = 16;  // channels per scatter task (other than pixel-inner maps)
constexpr int64_t kRowGroup = 8;       // channels per task of the pixel-row distance pass
constexpr int64_t kPrefetchRowBytes = int64_t(2) << 20;  // rows prefetched before their gather (an L2)

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// A channel row of P pixels fetched in order before the slots gather from it: they read most of
// its lines in random order, each a miss at memory latency, where the row fetched in order
// streams at the prefetchers' bandwidth (W1's 800 kB rows: is_triplet_loss 57 -> 49 ms f+b on 2
// cores). Only rows an L2 can hold; larger ones would be evicted before the slots reach them.
template <typename T>
void prefetch_row(const T* row, int64_t P) {
  if (P * int64_t(sizeof(T)) > kPrefetchRowBytes) return;
  for (int64_t i = 0; i < P; i += 64 / int64_t(sizeof(T))) __builtin_prefetch(row + i);
}

// Flat tasks over images whose task counts differ: task t is image b's (t - start[b])-th.
struct ImageTasks {
  std::vector<int64_t> start;
  template <typename Count>
  ImageTasks(int64_t B, Count&& count) : start(B + 1, 0) {
    for (int64_t b = 0; b < B; ++b) start[b + 1] = start[b] + count(b);
  }
  template <typename F>
  void run(F&& f) const {
    at::parallel_for(0, start.back(), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = std::upper_bound(start.begin(), start.end(), t) - start.begin() - 1;
        f(b, t - start[b]);
      }
    });
  }
};

// The slots of each image that take part, in slot order: slots[b * K + j], j < count[b].
struct ValidSlots {
  std::unique_ptr<int64_t[]> slots;
  std::vector<int64_t> count;
  ValidSlots(int64_t B, int64_t K, int64_t P, const int64_t* a, const int64_t* p, const int64_t* n)
      : slots(scratch<int64_t>(B * K)), count(B, 0) {
    for (int64_t b = 0; b < B; ++b) {
      int64_t c = 0;
      for (int64_t k = b * K; k < (b + 1) * K; ++k)
        if (in_range(a[k], P) && in_range(p[k], P) && in_range(n[k], P)) slots[b * K + c++] = k - b * K;
      count[b] = c;
    }
  }
  const int64_t* of(int64_t b, int64_t K) const { return slots.get() + b * K; }
};

// Where the backward keeps the slots' differences a - p and a - n: element (j, d) at
// j * sj + d * sd from u and v (the slots of one chunk), so that the gradient pass need not
// gather emb a second time.
template <typename T>
struct Diffs {
  T *u, *v;
  int64_t sj, sd;
};

// |a - p|^2 and |a - n|^2 of the slots vs[0, n) (n <= kSlots) of image b, whose indices are
// in range; channels added in increasing order whatever the loop nest. With `keep`, also the
// differences themselves.
template <typename T, bool kKeep>
void pair_squares(const PixelMap& m, int64_t b, const int64_t* anchor, const int64_t* positive,
                  const int64_t* negative, const int64_t* vs, int64_t n, T* sap, T* san, Diffs<T> keep = {}) {
  const T* x = static_cast<const T*>(m.data) + b * m.sb;
  int64_t oa[kSlots], op[kSlots], on[kSlots];
  for (int64_t j = 0; j < n; ++j) {
    oa[j] = anchor[vs[j]] * m.sp;
    op[j] = positive[vs[j]] * m.sp;
    on[j] = negative[vs[j]] * m.sp;
    sap[j] = san[j] = T(0);
  }
  if (m.sd >= m.sp) {
    for (int64_t d = 0; d < m.D; ++d) {
      const T* xd = x + d * m.sd;
      prefetch_row(xd, m.P);
      for (int64_t j = 0; j < n; ++j) {
        const T xa = xd[oa[j]], u = xa - xd[op[j]], v = xa - xd[on[j]];
        sap[j] += u * u;
        san[j] += v * v;
        if constexpr (kKeep) {
          keep.u[j * keep.sj + d * keep.sd] = u;
          keep.v[j * keep.sj + d * keep.sd] = v;
        }
      }
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      T su = 0, sv = 0;
      for (int64_t d = 0; d < m.D; ++d) {
        const int64_t o = d * m.sd;
        const T xa = x[oa[j] + o], u = xa - x[op[j] + o], v = xa - x[on[j] + o];
        su += u * u;
        sv += v * v;
        if constexpr (kKeep) {
          keep.u[j * keep.sj + d * keep.sd] = u;
          keep.v[j * keep.sj + d * keep.sd] = v;
        }
      }
      sap[j] = su;
      san[j] = sv;
    }
  }
}

template <typename T>
T distance(T sq, bool squared) {
  return squared ? sq : std::sqrt(sq);
}

// |a - p|^2 and |a - n|^2 of every valid slot of every image of a map with unit pixel stride
// (sap/san[b * K + j], j < count[b]), with `kKeep` also the differences (du/dv[(b * D + d) * K
// + j]). Tasks are (image, group of kRowGroup channels), each over all the image's slots: a
// channel row (P pixels) is fetched once for all of them, where chunks of slots each fetched
// most of its lines again (2.6x the DRAM lines at W1). The groups' partial sums are added in
// group order: fixed by D alone, so the bits do not depend on the thread count, and the
// forward and the backward (both here for these maps) agree on every hinge.
template <typename T, bool kKeep>
void row_pair_squares(const PixelMap& m, const ValidSlots& vs, int64_t K, const int64_t* anchor,
                      const int64_t* positive, const int64_t* negative, T* sap, T* san, T* du = nullptr,
                      T* dv = nullptr) {
  const int64_t B = m.B, D = m.D, G = (D + kRowGroup - 1) / kRowGroup;
  auto part = scratch<T>(2 * B * G * K);
  ImageTasks tasks(B, [&](int64_t b) { return vs.count[b] > 0 ? G : 0; });
  tasks.run([&](int64_t b, int64_t g) {
    const int64_t n = vs.count[b], bk = b * K;
    const int64_t* s = vs.of(b, K);
    const T* x = static_cast<const T*>(m.data) + b * m.sb;
    T* pu = part.get() + (b * G + g) * 2 * K;
    T* pv = pu + K;
    std::fill(pu, pu + n, T(0));
    std::fill(pv, pv + n, T(0));
    for (int64_t d = g * kRowGroup; d < std::min(D, (g + 1) * kRowGroup); ++d) {
      const T* xd = x + d * m.sd;
      prefetch_row(xd, m.P);
      for (int64_t j = 0; j < n; ++j) {
        const int64_t k = bk + s[j];
        const T xa = xd[anchor[k]], u = xa - xd[positive[k]], v = xa - xd[negative[k]];
        pu[j] += u * u;
        pv[j] += v * v;
        if constexpr (kKeep) {
          du[(b * D + d) * K + j] = u;
          dv[(b * D + d) * K + j] = v;
        }
      }
    }
  });
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t j = 0; j < vs.count[b]; ++j) {
        T su = 0, sv = 0;
        for (int64_t g = 0; g < G; ++g) {
          su += part[(b * G + g) * 2 * K + j];
          sv += part[((b * G + g) * 2 + 1) * K + j];
        }
        sap[b * K + j] = su;
        san[b * K + j] = sv;
      }
  });
}

// ---------------------------------------------------------------------------------------------
// Mining.

// One image's mining input: `rows` holds its anchors (D values each, zero rows up to a
// multiple of kMR), `pos`/`neg` its candidates in panels of the picked build's W ([D][W] each,
// zero lanes past n).
template <typename T>
struct MineImage {
  const T* rows;
  const T* pos;
  const T* neg;
  int64_t n, D;
};

// Anchors [j0, j1) of an image: the slot (in [0, n)) of each one's farthest positive and
// nearest negative.
template <typename T>
using MineFn = void (*)(const MineImage<T>&, int64_t j0, int64_t j1, int64_t* far, int64_t* near);

template <typename T, int VB>
struct Miner {
  typedef T V __attribute__((vector_size(VB)));
  using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;  // a lane mask of V, a slot
  typedef I IV __attribute__((vector_size(VB)));
  static constexpr int L = VB / int(sizeof(T));
  static constexpr int W = kNV * L;  // candidates per panel
  static constexpr I kNone = std::numeric_limits<I>::max();

  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }

  // The running best of each lane of anchors' rows: `best` and `slot`, W lanes per anchor.
  // Starting from -inf (farthest) or +inf (nearest) with no slot is the same as starting from
  // the lane's first candidate, except for a nearest whose candidates are all +inf: that lane
  // keeps no slot, and merge() then falls back to the first slot, as the sequential scan would.
  static void search(const T* rows, const T* panels, int64_t n, int64_t D, int64_t na, bool farthest, T* best,
                     I* slot) {
    const T start = farthest ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
    for (int64_t i = 0; i < na * W; ++i) {
      best[i] = start;
      slot[i] = kNone;
    }
    IV lane;
    for (int l = 0; l < L; ++l) lane[l] = I(l);
    const V fill = V{} + start;
    const int64_t np = (n + W - 1) / W, panel = D * W;
    const int64_t block = std::max<int64_t>(1, kBlockBytes / std::max<int64_t>(1, panel * int64_t(sizeof(T))));
    for (int64_t pb = 0; pb < np; pb += block) {
      const int64_t pe = std::min(np, pb + block);
      for (int64_t g = 0; g < na; g += kMR) {
        const T* a = rows + g * D;
        for (int64_t pi = pb; pi < pe; ++pi) {
          const T* c = panels + pi * panel;
          V acc[kMR][kNV] = {};
          for (int64_t d = 0; d < D; ++d) {
            V cv[kNV];
#pragma GCC unroll 4
            for (int v = 0; v < kNV; ++v) cv[v] = load(c + d * W + v * L);
#pragma GCC unroll 4
            for (int i = 0; i < kMR; ++i) {
              const T ai = a[i * D + d];
#pragma GCC unroll 4
              for (int v = 0; v < kNV; ++v) {
                // c - a, squared: the same bits as a - c. A vector minus a scalar is one broadcast;
                // a broadcast written as a function of its own was built lane by lane (GCC 12
                // lowers it before `flatten` brings it under the AVX2 target).
                const V u = cv[v] - ai;
                acc[i][v] += u * u;
              }
            }
          }
          const bool tail = pi == np - 1 && n % W != 0;
#pragma GCC unroll 4
          for (int v = 0; v < kNV; ++v) {
            const IV j = lane + I(pi * W + v * L);
#pragma GCC unroll 4
            for (int i = 0; i < kMR; ++i) {
              V dv = acc[i][v];
              if (tail) dv = j < I(n) ? dv : fill;  // padding lanes never win
              T* bp = best + (g + i) * W + v * L;
              I* sl = slot + (g + i) * W + v * L;
              V bv = load(bp);
              IV sv;
              std::memcpy(&sv, sl, sizeof sv);
              // triplet_hinge::better(dv, bv, farthest), lane by lane.
              const IV wins = (bv == bv) & ((dv != dv) | (farthest ? dv > bv : dv < bv));
              bv = wins ? dv : bv;
              sv = wins ? j : sv;
              std::memcpy(bp, &bv, sizeof bv);
              std::memcpy(sl, &sv, sizeof sv);
            }
          }
        }
      }
    }
  }

  // The winner among one anchor's lanes: lane (d, j) beats the best so far (b, r) iff it comes
  // first in slot order and r is not better than it, or comes later and is better than r.
  static int64_t merge(const T* best, const I* slot, bool farthest) {
    int64_t r = -1;
    T rb = 0;
    for (int l = 0; l < W; ++l) {
      if (slot[l] == kNone) continue;
      const int64_t j = slot[l];
      const bool wins = r < 0 || (j < r ? !triplet_hinge::better(rb, best[l], farthest)
                                        : triplet_hinge::better(best[l], rb, farthest));
      if (wins) {
        r = j;
        rb = best[l];
      }
    }
    return r < 0 ? 0 : r;
  }

  static void mine(const MineImage<T>& im, int64_t j0, int64_t j1, int64_t* far, int64_t* near) {
    const int64_t na = round_up(j1 - j0, kMR);
    T best[kAnchorTile * W];
    I slot[kAnchorTile * W];
    const T* rows = im.rows + j0 * im.D;
    search(rows, im.pos, im.n, im.D, na, true, best, slot);
    for (int64_t i = 0; i < j1 - j0; ++i) far[i] = merge(best + i * W, slot + i * W, true);
    search(rows, im.neg, im.n, im.D, na, false, best, slot);
    for (int64_t i = 0; i < j1 - j0; ++i) near[i] = merge(best + i * W, slot + i * W, false);
  }
};

template <typename T>
void mine_base(const MineImage<T>& im, int64_t j0, int64_t j1, int64_t* far, int64_t* near) {
  Miner<T, 16>::mine(im, j0, j1, far, near);
}

#ifdef PK_HAVE_AVX2_BUILD
// The same source with 32-byte vectors, every call inlined and compiled for AVX2 + FMA. Nothing
// defined outside this function is compiled for AVX2 (no inline function of a header is
// instantiated under the target), so no AVX2 code can leak into the baseline build.
template <typename T>
__attribute__((target("avx2,fma"), flatten)) void mine_avx2(const MineImage<T>& im, int64_t j0, int64_t j1,
                                                            int64_t* far, int64_t* near) {
  Miner<T, 32>::mine(im, j0, j1, far, near);
}
#endif

template <typename T>
struct MinerPick {
  MineFn<T> fn = mine_base<T>;
  int64_t width = Miner<T, 16>::W;
  MinerPick() {
#ifdef PK_HAVE_AVX2_BUILD
    if (use_avx2()) {
      fn = mine_avx2<T>;
      width = Miner<T, 32>::W;
    }
#endif
  }
};

// positive_used / negative_used of the valid slots: each anchor's mined candidates. A group of
// slots mines as an image of its own: the (B, K) sets are (B G, K / G) segments of the same
// memory, segment b of image b / G (vs: the segments' valid slots; image_slots where G = 1).
template <typename T>
void mine(const TripletHingeForward& a, const ValidSlots& image_slots) {
  const PixelMap& m = a.emb;
  const int64_t G = a.groups, B = m.B * G, K = a.K / G, D = m.D;
  std::optional<ValidSlots> segments;
  if (G > 1) segments.emplace(B, K, m.P, a.anchor, a.positive, a.negative);
  const ValidSlots& vs = G > 1 ? *segments : image_slots;
  const MinerPick<T> pick;
  const int64_t W = pick.width, KR = round_up(K, kMR), KW = round_up(K, W);
  auto rows = scratch<T>(B * KR * D);
  auto pos = scratch<T>(B * KW * D);
  auto neg = scratch<T>(B * KW * D);
  const T* x = static_cast<const T*>(m.data);

  // Gather, a chunk of slots per task; the chunk holding an image's last slot zeroes its
  // padding (rows up to a multiple of kMR, panel lanes up to a multiple of W).
  ImageTasks gather(B, [&](int64_t b) { return (vs.count[b] + kSlots - 1) / kSlots; });
  gather.run([&](int64_t b, int64_t c) {
    const int64_t n = vs.count[b], j0 = c * kSlots, j1 = std::min(n, j0 + kSlots);
    const int64_t* s = vs.of(b, K);
    T* r = rows.get() + b * KR * D;
    T* pp = pos.get() + b * KW * D;
    T* pn = neg.get() + b * KW * D;
    int64_t oa[kSlots], op[kSlots], on[kSlots];
    const int64_t base = b / G * m.sb, bk = b * K;
    for (int64_t j = j0; j < j1; ++j) {
      oa[j - j0] = base + a.anchor[bk + s[j]] * m.sp;
      op[j - j0] = base + a.positive[bk + s[j]] * m.sp;
      on[j - j0] = base + a.negative[bk + s[j]] * m.sp;
    }
    auto at = [&](int64_t j, int64_t d) { return (j / W) * D * W + d * W + j % W; };
    if (m.sd >= m.sp) {
      for (int64_t d = 0; d < D; ++d)
        for (int64_t j = j0; j < j1; ++j) {
          const int64_t o = d * m.sd;
          r[j * D + d] = x[oa[j - j0] + o];
          pp[at(j, d)] = x[op[j - j0] + o];
          pn[at(j, d)] = x[on[j - j0] + o];
        }
    } else {
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t d = 0; d < D; ++d) {
          const int64_t o = d * m.sd;
          r[j * D + d] = x[oa[j - j0] + o];
          pp[at(j, d)] = x[op[j - j0] + o];
          pn[at(j, d)] = x[on[j - j0] + o];
        }
    }
    if (j1 == n) {
      std::fill(r + n * D, r + round_up(n, kMR) * D, T(0));
      for (int64_t j = n; j < round_up(n, W); ++j)
        for (int64_t d = 0; d < D; ++d) pp[at(j, d)] = pn[at(j, d)] = T(0);
    }
  });

  ImageTasks tiles(B, [&](int64_t b) { return (vs.count[b] + kAnchorTile - 1) / kAnchorTile; });
  tiles.run([&](int64_t b, int64_t t) {
    const int64_t n = vs.count[b], j0 = t * kAnchorTile, j1 = std::min(n, j0 + kAnchorTile);
    const MineImage<T> im{rows.get() + b * KR * D, pos.get() + b * KW * D, neg.get() + b * KW * D, n, D};
    int64_t far[kAnchorTile], near[kAnchorTile];
    pick.fn(im, j0, j1, far, near);
    const int64_t* s = vs.of(b, K);
    const int64_t bk = b * K;
    for (int64_t j = j0; j < j1; ++j) {
      a.positive_used[bk + s[j]] = a.positive[bk + s[far[j - j0]]];
      a.negative_used[bk + s[j]] = a.negative[bk + s[near[j - j0]]];
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Forward and backward.

template <typename T>
void forward(const TripletHingeForward& a) {
  const PixelMap& m = a.emb;
  const int64_t B = m.B, K = a.K;
  const ValidSlots vs(B, K, m.P, a.anchor, a.positive, a.negative);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t k = b * K; k < (b + 1) * K; ++k) a.positive_used[k] = a.negative_used[k] = -1;
    if (!a.hard)
      for (int64_t j = 0; j < vs.count[b]; ++j) {
        const int64_t k = b * K + vs.of(b, K)[j];
        a.positive_used[k] = a.positive[k];
        a.negative_used[k] = a.negative[k];
      }
  }
  if (a.hard) mine<T>(a, vs);

  auto terms = scratch<T>(B * K);
  const T margin = T(a.margin);
  const bool rows = m.sp == 1;
  auto sq = scratch<T>(rows ? 2 * B * K : 0);
  if (rows) row_pair_squares<T, false>(m, vs, K, a.anchor, a.positive_used, a.negative_used, sq.get(), sq.get() + B * K);
  ImageTasks chunks(B, [&](int64_t b) { return (vs.count[b] + kSlots - 1) / kSlots; });
  chunks.run([&](int64_t b, int64_t c) {
    const int64_t j0 = c * kSlots, n = std::min(vs.count[b] - j0, kSlots), bk = b * K;
    T sap_c[kSlots], san_c[kSlots];
    const T* sap = rows ? sq.get() + bk + j0 : sap_c;
    const T* san = rows ? sq.get() + B * K + bk + j0 : san_c;
    if (!rows)
      pair_squares<T, false>(m, b, a.anchor + bk, a.positive_used + bk, a.negative_used + bk, vs.of(b, K) + j0, n,
                             sap_c, san_c);
    for (int64_t j = 0; j < n; ++j)
      terms[bk + j0 + j] = triplet_hinge::hinge(distance(sap[j], a.squared), distance(san[j], a.squared), margin);
  });
  T* loss = static_cast<T*>(a.loss);
  T total = 0;  // mean: the images' losses in image order, as the reference's sum
  int64_t images = 0;
  for (int64_t b = 0; b < B; ++b) {
    T s = 0;
    for (int64_t j = 0; j < vs.count[b]; ++j) s += terms[b * K + j];
    const T l = vs.count[b] > 0 ? s / T(vs.count[b]) : T(0);
    if (a.mean) {
      total += l;
      images += vs.count[b] > 0;
    } else {
      loss[b] = l;
    }
  }
  if (a.mean) loss[0] = total / T(std::max<int64_t>(images, 1));
}

// One active slot's gradient terms: its pixels, its factors and where its differences are
// kept (its place j among the image's valid slots).
template <typename T>
struct Active {
  int64_t a, p, n, j;
  T fu, fv;
};

template <typename T>
void backward(const TripletHingeBackward& a) {
  const PixelMap& m = a.emb;
  const int64_t B = m.B, K = a.K, D = m.D, P = m.P;
  T* gx = static_cast<T*>(a.grad_emb);
  const T* gl = static_cast<const T*>(a.grad_loss);
  const ValidSlots vs(B, K, P, a.anchor, a.positive, a.negative);
  // mean: the mean's gradient, g / #{b : n_b > 0}, then each image's 1 / n_b
  T g_mean = 0;
  if (a.mean) {
    int64_t images = 0;
    for (int64_t b = 0; b < B; ++b) images += vs.count[b] > 0;
    g_mean = gl[0] / T(std::max<int64_t>(images, 1));
  }
  // Pixel-inner maps are written a channel row at a time: differences kept channel-major
  // ([b][d][j]); other layouts a pixel's channel group at a time: slot-major ([b][j][d]).
  const bool rows = m.sp == 1;
  auto du = scratch<T>(B * K * D), dv = scratch<T>(B * K * D);

  // Active slots, compacted within each chunk of valid slots: chunk c of image b holds
  // count[start[b] + c] records from act[b * K + c * kSlots], in slot order.
  auto act = scratch<Active<T>>(B * K);
  const T margin = T(a.margin);
  auto sq = scratch<T>(rows ? 2 * B * K : 0);
  if (rows) row_pair_squares<T, true>(m, vs, K, a.anchor, a.positive, a.negative, sq.get(), sq.get() + B * K, du.get(), dv.get());
  ImageTasks chunks(B, [&](int64_t b) { return (vs.count[b] + kSlots - 1) / kSlots; });
  std::vector<int64_t> count(chunks.start.back(), 0);
  chunks.run([&](int64_t b, int64_t c) {
    const int64_t j0 = c * kSlots, n = std::min(vs.count[b] - j0, kSlots), bk = b * K;
    const int64_t* s = vs.of(b, K) + j0;
    T sap_c[kSlots], san_c[kSlots];
    const T* sap = rows ? sq.get() + bk + j0 : sap_c;
    const T* san = rows ? sq.get() + B * K + bk + j0 : san_c;
    if (!rows) {
      const Diffs<T> keep{du.get() + (bk + j0) * D, dv.get() + (bk + j0) * D, D, 1};
      pair_squares<T, true>(m, b, a.anchor + bk, a.positive + bk, a.negative + bk, s, n, sap_c, san_c, keep);
    }
    const T cb = (a.mean ? g_mean : gl[b]) / T(vs.count[b]);
    Active<T>* out = act.get() + bk + j0;
    int64_t q = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (!triplet_hinge::active(distance(sap[j], a.squared), distance(san[j], a.squared), margin)) continue;
      const int64_t k = bk + s[j];
      out[q++] = {a.anchor[k], a.positive[k], a.negative[k], j0 + j,
                  triplet_hinge::grad_factor(cb, sap[j], a.squared), triplet_hinge::grad_factor(cb, san[j], a.squared)};
    }
    count[chunks.start[b] + c] = q;
  });
  auto each_active = [&](int64_t b, auto&& f) {
    for (int64_t c = 0; c < chunks.start[b + 1] - chunks.start[b]; ++c) {
      const Active<T>* r = act.get() + b * K + c * kSlots;
      for (int64_t q = 0; q < count[chunks.start[b] + c]; ++q) f(r[q]);
    }
  };

  advise_huge_pages(gx, map_bytes<T>(m));
  if (rows) {
    // One (image, channel) row per task: zeroed, then the slots' terms while it is in cache.
    at::parallel_for(0, B * D, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / D, d = t % D;
        T* gr = gx + b * m.sb + d * m.sd;
        const T* ur = du.get() + (b * D + d) * K;
        const T* vr = dv.get() + (b * D + d) * K;
        std::fill(gr, gr + P, T(0));
        each_active(b, [&](const Active<T>& r) {
          const T u = r.fu * ur[r.j], v = r.fv * vr[r.j];
          gr[r.a] += u - v;
          gr[r.p] -= u;
          gr[r.n] += v;
        });
      }
    });
    return;
  }
  // Any other layout: zero in pixel chunks (one contiguous span per chunk for channels_last),
  // then one (image, channel group) per task.
  parallel_chunks(B, P, 8 * kTile, [&](int64_t b, int64_t, int64_t p0, int64_t n) {
    T* g = gx + b * m.sb + p0 * m.sp;
    if (m.sd == 1 && m.sp == D) {
      std::fill(g, g + n * D, T(0));
      return;
    }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < D; ++d) g[i * m.sp + d * m.sd] = T(0);
  });
  const int64_t groups = (D + kChannelGroup - 1) / kChannelGroup;
  at::parallel_for(0, B * groups, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / groups, d0 = (t % groups) * kChannelGroup, d1 = std::min(D, d0 + kChannelGroup);
      T* gb = gx + b * m.sb;
      each_active(b, [&](const Active<T>& r) {
        const T* ur = du.get() + (b * K + r.j) * D;
        const T* vr = dv.get() + (b * K + r.j) * D;
        const int64_t oa = r.a * m.sp, op = r.p * m.sp, on = r.n * m.sp;
        for (int64_t d = d0; d < d1; ++d) {
          const int64_t o = d * m.sd;
          const T u = r.fu * ur[d], v = r.fv * vr[d];
          gb[oa + o] += u - v;
          gb[op + o] -= u;
          gb[on + o] += v;
        }
      });
    }
  });
}

}  // namespace
}  // namespace pixelkernels::cpu

#pragma GCC diagnostic pop

namespace pixelkernels {
Status launch(OnCpu, const TripletHingeForward& p) {
  return cpu::dispatch_float(p.emb.dtype, [&](auto t) { cpu::forward<decltype(t)>(p); });
}
Status launch(OnCpu, const TripletHingeBackward& p) {
  return cpu::dispatch_float(p.emb.dtype, [&](auto t) { cpu::backward<decltype(t)>(p); });
}
}  // namespace pixelkernels
