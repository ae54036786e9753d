// Autocast of fs_activation on CUDA: an element-wise op, so x keeps its dtype (float16/bfloat16
// from the layer before, or float32); the K steps run in float32 for low-precision x, whose
// h, d, T are then cast to float32 (the kernel reads them so). float64 calls are left alone.
#include "autocast/autocast.h"
#include "ttfs_ext.h"

#include <torch/library.h>

namespace ttfs_ext {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> fs_activation_autocast(const at::Tensor& x, const at::Tensor& h,
                                                                       const at::Tensor& d, const at::Tensor& T,
                                                                       int64_t spike_mode, bool with_reg) {
  const NoAutocast guard(kAutocastKey);
  const auto xs = x.scalar_type();
  if (xs != at::kHalf && xs != at::kBFloat16) return fs_activation(x, h, d, T, spike_mode, with_reg);
  constexpr auto cuda = c10::DeviceType::CUDA;
  return fs_activation(x, at::autocast::cached_cast(at::kFloat, h, cuda), at::autocast::cached_cast(at::kFloat, d, cuda),
                       at::autocast::cached_cast(at::kFloat, T, cuda), spike_mode, with_reg);
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, AutocastCUDA, m) { m.impl("fs_activation", &fs_activation_autocast); }

}  // namespace ttfs_ext
