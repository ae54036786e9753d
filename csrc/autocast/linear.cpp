// Autocast of linear (autocast/autocast.h).
#include "autocast/autocast.h"
#include "ttfs_ext.h"

#include <torch/library.h>

namespace ttfs_ext {
namespace {

at::Tensor linear_autocast(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           double t_min, double t_max) {
  const NoAutocast guard(kAutocastKey);
  const auto a = autocast_operands(t_in, weight, bias);
  return linear(a.t_in, a.weight, a.bias, t_min, t_max);
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, AutocastCUDA, m) { m.impl("linear", &linear_autocast); }

}  // namespace ttfs_ext
