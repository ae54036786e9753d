// Autocast of conv2d (autocast/autocast.h).
#include "autocast/autocast.h"
#include "ttfs_ext.h"

#include <torch/library.h>

namespace ttfs_ext {
namespace {

template <c10::DeviceType device>
at::Tensor conv2d_autocast(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           double t_min, double t_max, c10::IntArrayRef stride, c10::IntArrayRef padding,
                           c10::IntArrayRef dilation, int64_t groups) {
  const NoAutocast guard(kAutocastKey<device>);
  const auto a = autocast_operands<device>(t_in, weight, bias);
  return conv2d(a.t_in, a.weight, a.bias, t_min, t_max, stride, padding, dilation, groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, AutocastCUDA, m) { m.impl("conv2d", &conv2d_autocast<c10::DeviceType::CUDA>); }
TORCH_LIBRARY_IMPL(ttfs_ext, AutocastCPU, m) { m.impl("conv2d", &conv2d_autocast<c10::DeviceType::CPU>); }

}  // namespace ttfs_ext
