// distance_transform, the torch side (csrc/common/distance_transform.h). CPU tensors: the
// column sweeps and the lower envelope of csrc/cpu/distance_transform.cpp. CUDA tensors (no
// CUDA kernel yet): the same two steps in ATen on the device, the column step by cumulative
// max/min, the row step as the minimum over every column in row chunks (O(H·W²) work, O(W²)
// memory a row: pixelkernels/reference/distance_transform.py's algorithm).
#include "common/distance_transform.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <vector>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

// Row chunks of the ATen row step: (B, rows, W, W) elements at a time.
constexpr int64_t kChunkElements = int64_t(1) << 24;

std::tuple<at::Tensor, at::Tensor> on_device(const at::Tensor& target, double sy2, double sx2, bool squared,
                                             bool with_indices, at::Tensor dist, at::Tensor indices) {
  const int64_t B = target.size(0), H = target.size(1), W = target.size(2);
  const auto lo = target.options().dtype(at::kLong), fo = target.options().dtype(at::kDouble);
  const at::Tensor rows = at::arange(H, lo).view({1, H, 1}).expand({B, H, W});
  const at::Tensor above = std::get<0>(rows.where(target, -1).cummax(1));
  const at::Tensor below = std::get<0>(rows.where(target, 2 * H + 1).flip(1).cummin(1)).flip(1);
  const at::Tensor up_ok = above.ge(0), down_ok = below.le(H);
  const at::Tensor take_up = up_ok.logical_and(down_ok.logical_not().logical_or(rows.sub(above).le(below.sub(rows))));
  const at::Tensor ty = above.where(take_up, below.where(down_ok, -1));
  const double inf = std::numeric_limits<double>::infinity();
  const at::Tensor dy = rows.sub(ty).to(at::kDouble);
  const at::Tensor g2 = dy.mul(dy).mul(sy2).where(ty.ge(0), inf);
  const at::Tensor cols = at::arange(W, lo);
  const at::Tensor dxi = cols.view({W, 1}).sub(cols.view({1, W})).to(at::kDouble);
  const at::Tensor dx2 = dxi.mul(dxi).mul(sx2);  // (x, q)
  at::Tensor d2 = at::empty({B, H, W}, fo), q = at::empty({B, H, W}, lo);
  const int64_t chunk = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, B * W * W));
  for (int64_t y0 = 0; y0 < H; y0 += chunk) {
    const int64_t n = std::min(chunk, H - y0);
    const auto best = g2.slice(1, y0, y0 + n).unsqueeze(2).add(dx2).min(3);
    d2.slice(1, y0, y0 + n).copy_(std::get<0>(best));
    q.slice(1, y0, y0 + n).copy_(std::get<1>(best));
  }
  dist.copy_(squared ? d2 : d2.sqrt());  // +inf stays +inf
  if (with_indices) {
    const at::Tensor found = d2.lt(inf).unsqueeze(1);
    indices.copy_(at::stack({ty.gather(2, q), q}, 1).where(found, -1));
  }
  return {dist, indices};
}

template <class On>
std::tuple<at::Tensor, at::Tensor> distance_transform(const at::Tensor& mask, double sy, double sx, bool squared,
                                                      bool return_indices) {
  const char* op = "distance_transform";
  PK_EXPECT(mask.dim() == 3, op, "mask must be (B, H, W), got ", mask.sizes());
  PK_EXPECT(sy > 0 && sx > 0, op, "sampling must be positive, got (", sy, ", ", sx, ")");
  Launcher<On> launcher(mask, op);
  const int64_t B = mask.size(0), H = mask.size(1), W = mask.size(2);
  at::Tensor dist = at::empty({B, H, W}, mask.options().dtype(at::kFloat));
  const std::vector<int64_t> index_sizes = return_indices ? std::vector<int64_t>{B, 2, H, W} : std::vector<int64_t>{0};
  at::Tensor indices = at::empty(index_sizes, mask.options().dtype(at::kLong));
  if (dist.numel() == 0) return {dist, indices};
  const at::Tensor target = mask.eq(0).contiguous();
  if constexpr (std::is_same_v<On, OnCpu>) {
    launcher(DistanceTransform{reinterpret_cast<const uint8_t*>(target.const_data_ptr<bool>()), B, H, W, sy * sy,
                               sx * sx, squared, dist.mutable_data_ptr<float>(),
                               return_indices ? indices.mutable_data_ptr<int64_t>() : nullptr});
    return {dist, indices};
  } else {
    return on_device(target, sy * sy, sx * sx, squared, return_indices, dist, indices);
  }
}

#define DISTANCE_TRANSFORM_IMPLS(m, On) m.impl("distance_transform", &distance_transform<On>);

PK_REGISTER_IMPLS(DISTANCE_TRANSFORM_IMPLS)

}  // namespace
}  // namespace pixelkernels
