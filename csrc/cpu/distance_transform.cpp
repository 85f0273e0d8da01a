// distance_transform CPU kernel (csrc/common/distance_transform.h): the kernels of
// distance_transform_kernels.h, built twice (baseline here, AVX2 in distance_transform_avx2.cpp)
// and picked at run time (csrc/cpu/isa.h).
//
// With at least as many images as threads, one task per image: its column sweep, then each row
// (bottom-up) as soon as its nearest-target rows are known, so the image's int32 workspace
// (4 bytes a pixel) stays in cache. With fewer images, two parallel phases: column strips, then
// blocks of rows. Every pixel's value is the same either way (each row is computed alone).
#include "common/distance_transform.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/isa.h"

#define PK_CPU_ISA base
#define PK_DISTANCE_TRANSFORM_ENTRIES
#include "cpu/distance_transform_kernels.h"

namespace pixelkernels {
namespace {

namespace edt = cpu::base::edt;

// One thread's envelope scratch for rows of W pixels.
struct RowScratch {
  std::vector<int32_t> v, cols;
  std::vector<int64_t> a, zn, zd;
  std::vector<double> f, z;
  edt::Scratch s;
  explicit RowScratch(int64_t W)
      : v(W + 1), cols(W), a(W + 1), zn(W + 1), zd(W + 1), f(W + 1), z(W + 1),
        s{v.data(), a.data(), f.data(), zn.data(), zd.data(), z.data()} {}
};

constexpr int64_t kColumnStrip = 256;  // columns per task of the two-phase path
constexpr int64_t kRowBlock = 16;      // rows per task

}  // namespace

Status launch(OnCpu, const DistanceTransform& p) {
  if (p.B <= 0 || p.H <= 0 || p.W <= 0) return nullptr;
  const int64_t B = p.B, H = p.H, W = p.W;
  const auto columns = PK_CPU_PICK(edt::columns, cpu::avx2::edt::columns);
  const auto rows = PK_CPU_PICK(edt::rows, cpu::avx2::edt::rows);
  const auto image = PK_CPU_PICK(edt::image, cpu::avx2::edt::image);
  if (B >= at::get_num_threads()) {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<int32_t> t(static_cast<size_t>(H * W)), down(W);
      RowScratch rs(W);
      for (int64_t b = b0; b < b1; ++b) image(p, b, t.data(), down.data(), rs.cols.data(), rs.s);
    });
    return nullptr;
  }
  std::vector<int32_t> t(static_cast<size_t>(B * H * W));
  const int64_t strips = (W + kColumnStrip - 1) / kColumnStrip;
  at::parallel_for(0, B * strips, 1, [&](int64_t i0, int64_t i1) {
    std::vector<int32_t> down(W);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / strips, x0 = (i % strips) * kColumnStrip;
      columns(p, b, x0, std::min(W, x0 + kColumnStrip), t.data() + b * H * W, down.data());
    }
  });
  const int64_t blocks = (H + kRowBlock - 1) / kRowBlock;
  at::parallel_for(0, B * blocks, 1, [&](int64_t i0, int64_t i1) {
    RowScratch rs(W);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / blocks, y0 = (i % blocks) * kRowBlock;
      rows(p, b, y0, std::min(H, y0 + kRowBlock), t.data() + b * H * W, rs.cols.data(), rs.s);
    }
  });
  return nullptr;
}

}  // namespace pixelkernels
