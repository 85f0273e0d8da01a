// next_clicks CPU kernel (csrc/common/next_clicks.h): next_clicks_kernels.h, built twice
// (baseline here, AVX2 in next_clicks_avx2.cpp) and picked at run time (csrc/cpu/isa.h). One task
// per (image, error mask), each with its own scratch, then one pass picks each image's click.
#include "common/next_clicks.h"

#include <ATen/Parallel.h>

#include <vector>

#include "cpu/isa.h"

#define PK_CPU_ISA base
#include "cpu/next_clicks_kernels.h"

#ifdef PK_HAVE_AVX2_BUILD
namespace pixelkernels::cpu::avx2::clicks {
void next_clicks_task(const NextClicks& p, int64_t i, const cpu::clicks::Work& w, cpu::clicks::Best* best);
}  // namespace pixelkernels::cpu::avx2::clicks
#endif

namespace pixelkernels {

Status launch(OnCpu, const NextClicks& p) {
  const int64_t B = p.B, H = p.H, W = p.W;
  if (B <= 0) return nullptr;
  std::vector<cpu::clicks::Best> best(static_cast<size_t>(2 * B), cpu::clicks::Best{0.0f, -1});
  if (H > 0 && W > 0) {
    const auto task = PK_CPU_PICK(cpu::base::clicks::next_clicks_task, cpu::avx2::clicks::next_clicks_task);
    const int64_t Hp = H + 2, Wp = W + 2;
    at::parallel_for(0, 2 * B, 1, [&](int64_t i0, int64_t i1) {
      std::vector<uint8_t> mask(static_cast<size_t>(Hp * Wp));
      std::vector<int32_t> t(static_cast<size_t>(Hp * Wp)), down(Wp), cols(Wp), v(Wp + 1);
      std::vector<float> row(Wp);
      std::vector<int64_t> a(Wp + 1), zn(Wp + 1), zd(Wp + 1);
      const cpu::clicks::Work w{mask.data(), t.data(), down.data(), cols.data(), row.data(),
                                cpu::edt::Scratch{v.data(), a.data(), nullptr, zn.data(), zd.data(), nullptr}};
      for (int64_t i = i0; i < i1; ++i) task(p, i, w, best.data());
    });
  }
  for (int64_t b = 0; b < B; ++b) {
    const cpu::clicks::Best& fn = best[2 * b];
    const cpu::clicks::Best& fp = best[2 * b + 1];
    const bool positive = fn.v > fp.v;  // a tie is negative, as in the clickers
    const cpu::clicks::Best& c = positive ? fn : fp;
    int64_t* o = p.out + 3 * b;
    if (c.v > 0.0f) {
      o[0] = c.at / W;
      o[1] = c.at % W;
      o[2] = positive ? 1 : 0;
    } else {
      o[0] = o[1] = o[2] = -1;
    }
  }
  return nullptr;
}

}  // namespace pixelkernels
