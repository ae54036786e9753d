// Autocast of linear (autocast/autocast.h).
#include "autocast/autocast.h"
#include "ttfs_ext.h"

#include <torch/library.h>

namespace ttfs_ext {
namespace {

template <c10::DeviceType device>
at::Tensor linear_autocast(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           double t_min, double t_max) {
  const NoAutocast guard(kAutocastKey<device>);
  const auto a = autocast_operands<device>(t_in, weight, bias);
  return linear(a.t_in, a.weight, a.bias, t_min, t_max);
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, AutocastCUDA, m) { m.impl("linear", &linear_autocast<c10::DeviceType::CUDA>); }
TORCH_LIBRARY_IMPL(ttfs_ext, AutocastCPU, m) { m.impl("linear", &linear_autocast<c10::DeviceType::CPU>); }

}  // namespace ttfs_ext
