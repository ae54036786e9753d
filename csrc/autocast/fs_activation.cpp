// Autocast of fs_activation: an element-wise op, so x keeps its dtype (float16/bfloat16 from the
// layer before, or float32); the K steps run in float32 for low-precision x, whose h, d, T are
// then cast to float32. The CUDA kernels read low-precision x themselves; the CPU kernels
// support float32/float64 only, so on the CPU x is cast to float32 and y back to x's dtype.
// float64 calls are left alone.
#include "autocast/autocast.h"
#include "ttfs_ext.h"

#include <torch/library.h>

namespace ttfs_ext {
namespace {

template <c10::DeviceType device>
std::tuple<at::Tensor, at::Tensor, at::Tensor> fs_activation_autocast(const at::Tensor& x, const at::Tensor& h,
                                                                       const at::Tensor& d, const at::Tensor& T,
                                                                       int64_t spike_mode, bool with_reg) {
  const NoAutocast guard(kAutocastKey<device>);
  const auto xs = x.scalar_type();
  if (xs != at::kHalf && xs != at::kBFloat16) return fs_activation(x, h, d, T, spike_mode, with_reg);
  // (K,) each: a plain cast (cached_cast leaves float64 alone, as autocast does everywhere).
  const at::Tensor hf = h.to(at::kFloat), df = d.to(at::kFloat), Tf = T.to(at::kFloat);
  if (device == c10::DeviceType::CUDA || cpu_runs_cuda_profile()) return fs_activation(x, hf, df, Tf, spike_mode, with_reg);
  auto [y, spikes, reg] = fs_activation(x.to(at::kFloat), hf, df, Tf, spike_mode, with_reg);
  return {y.to(xs), spikes, reg};
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, AutocastCUDA, m) {
  m.impl("fs_activation", &fs_activation_autocast<c10::DeviceType::CUDA>);
}
TORCH_LIBRARY_IMPL(ttfs_ext, AutocastCPU, m) {
  m.impl("fs_activation", &fs_activation_autocast<c10::DeviceType::CPU>);
}

}  // namespace ttfs_ext
