// click_maps, the torch side for CPU and CUDA tensors (csrc/common/click_maps.h): the points as
// they are (float32 or float64), the kernels scaling each click as they read it (+inf for padding
// rows: max(y, x) < 0, or a NaN coordinate), then one pass over the output's pixels. One launch.
#include "common/click_maps.h"

#include <cmath>
#include <string_view>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

ClickMode mode_code(std::string_view m, const char* op) {
  if (m == "distance") return ClickMode::Distance;
  if (m == "disk") return ClickMode::Disk;
  PK_EXPECT(m == "tanh", op, "mode must be 'distance', 'disk' or 'tanh', got '", std::string(m), "'");
  return ClickMode::Tanh;
}

template <class On>
at::Tensor click_maps(const at::Tensor& points, int64_t height, int64_t width, c10::string_view mode,
                      double radius, double spatial_scale, double max_distance) {
  const char* op = "click_maps";
  PK_EXPECT(points.dim() == 3 && points.size(2) == 3 && points.size(1) % 2 == 0, op,
            "points must be (B, 2N, 3), got ", points.sizes());
  PK_EXPECT(points.is_floating_point(), op, "points must be a float tensor, got ", points.scalar_type());
  PK_EXPECT(height >= 0 && width >= 0, op, "height and width must be >= 0, got ", height, " and ", width);
  const ClickMode code = mode_code(mode, op);
  PK_EXPECT(radius >= 0 && spatial_scale > 0 && max_distance >= 0, op,
            "need radius >= 0, spatial_scale > 0, max_distance >= 0");
  Launcher<On> launcher(points, op);
  const int64_t B = points.size(0), N = points.size(1) / 2;
  at::Tensor out = at::empty({B, 2, height, width}, points.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  // The kernels scale the clicks as they read them (common/click_maps.h); half points widened
  // to float32 first (exactly), any other layout copied.
  const bool f64 = points.scalar_type() == at::kDouble;
  const at::Tensor pts = (f64 || points.scalar_type() == at::kFloat ? points : points.to(at::kFloat)).contiguous();
  const double r = radius * spatial_scale;
  launcher(ClickMaps{pts.const_data_ptr(), f64, spatial_scale, B, N, height, width, code, static_cast<float>(r * r),
                     static_cast<float>(max_distance), out.mutable_data_ptr<float>()});
  return out;
}

#define CLICK_MAPS_IMPLS(m, On) m.impl("click_maps", &click_maps<On>);

PK_REGISTER_IMPLS(CLICK_MAPS_IMPLS)

}  // namespace
}  // namespace pixelkernels
