// CPU registrations: the device-generic layers with the CPU element-wise passes.
// Mirrors cuda/ops_cuda.cpp.
#include <torch/library.h>

#include "layers.h"

namespace ttfs_ext {
namespace {

ElementwiseBackend cpu_backend() { return {prologue_cpu, epilogue_cpu, nullptr}; }

at::Tensor dense_cpu(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                     double t_min, double t_max) {
  return dense_forward(cpu_backend(), t_in, weight, bias, t_min, t_max);
}

Grads dense_backward_cpu(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                         const at::Tensor& t_out, double t_min, double t_max, std::array<bool, 3> mask) {
  return dense_backward(cpu_backend(), grad_out, t_in, weight, t_out, t_min, t_max, mask);
}

at::Tensor readout_cpu(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       double t_min) {
  return readout_forward(cpu_backend(), t_in, weight, bias, t_min);
}

Grads readout_backward_cpu(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                           double t_min, std::array<bool, 3> mask) {
  return readout_backward(cpu_backend(), grad_out, t_in, weight, t_min, mask);
}

at::Tensor conv2d_cpu(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      double t_min, double t_max, at::IntArrayRef stride, at::IntArrayRef padding,
                      at::IntArrayRef dilation, int64_t groups) {
  return conv2d_forward(cpu_backend(), t_in, weight, bias, t_min, t_max, stride, padding, dilation, groups);
}

Grads conv2d_backward_cpu(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                          const at::Tensor& t_out, double t_min, double t_max, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                          bool bias_per_position, std::array<bool, 3> mask) {
  return conv2d_backward(cpu_backend(), grad_out, t_in, weight, t_out, t_min, t_max, stride, padding,
                         dilation, groups, bias_per_position, mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, CPU, m) {
  m.impl("dense", &dense_cpu);
  m.impl("_dense_backward", &dense_backward_cpu);
  m.impl("readout", &readout_cpu);
  m.impl("_readout_backward", &readout_backward_cpu);
  m.impl("conv2d", &conv2d_cpu);
  m.impl("_conv2d_backward", &conv2d_backward_cpu);
}

}  // namespace ttfs_ext
