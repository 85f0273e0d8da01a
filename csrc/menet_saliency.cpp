// menet_saliency (seed 001 eq. 5), the torch side for CPU and CUDA tensors: no kernel of its own.
// The forward is masked_mean (eps 0, zero_empty: the center) and center_distance around it; the
// backward runs center_distance's backward (its emb gradient in the accumulation type), then
// masked_mean's with that gradient handed in (grad_feat_in), which its one pass adds before the
// one rounding to emb's dtype. As
// two autograd nodes the two gradients of emb were summed by autograd: one more launch and one
// more read and write of a map. pixelkernels/triton/menet_saliency.py is the same composition.
#include <optional>
#include <tuple>

#include "library_op.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

using Tensors2 = std::tuple<at::Tensor, at::Tensor>;
using Tensors3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Check = std::optional<c10::string_view>;

// The weights' check (`check`) is masked_mean's: its forward reads them.
Tensors3 menet_saliency(const at::Tensor& emb, const at::Tensor& weights, bool squared, Check check) {
  static const auto mean =
      library_op<Tensors2(const at::Tensor&, const at::Tensor&, double, bool, Check)>("masked_mean");
  static const auto distance =
      library_op<at::Tensor(const at::Tensor&, const at::Tensor&, bool)>("center_distance");
  auto [center, mass] = mean.call(emb, weights, 0.0, true, check);
  return {distance.call(emb, center, squared), center, mass};
}

Tensors2 menet_saliency_backward(const at::Tensor& grad_saliency, const at::Tensor& emb, const at::Tensor& weights,
                                 const at::Tensor& center, const at::Tensor& mass, bool squared) {
  static const auto distance_backward =
      library_op<Tensors2(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, bool)>(
          "center_distance_backward");
  static const auto mean_backward =
      library_op<Tensors2(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&, double, bool, const std::optional<at::Tensor>&)>("masked_mean_backward");
  // emb's first gradient unrounded (the accumulation type), rounded once with the second
  auto [grad_emb, grad_center] = distance_backward.call(grad_saliency, emb, center, squared, true);
  return mean_backward.call(grad_center, emb, weights, center, mass, 0.0, true, grad_emb);
}

#define MENET_SALIENCY_IMPLS(m, On)            \
  m.impl("menet_saliency", &menet_saliency); \
  m.impl("menet_saliency_backward", &menet_saliency_backward);

PK_REGISTER_IMPLS(MENET_SALIENCY_IMPLS)

}  // namespace
}  // namespace pixelkernels
