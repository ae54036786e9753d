// CPU registrations: the device-generic layers with the CPU element-wise passes, and the
// general neuron with the CPU scans. Mirrors cuda/ops_cuda.cpp.
#include <torch/library.h>

#include "first_spike_layers.h"
#include "layers.h"
#include "linear_one_pass.h"

namespace ttfs_ext {
namespace {

ElementwiseBackend cpu_backend() {
  const bool one_pass = linear_one_pass_enabled();  // not with SSE2 code (linear_one_pass.h)
  return {prologue_cpu, epilogue_cpu, nullptr, one_pass ? linear_one_pass_backward_cpu : nullptr,
          one_pass ? linear_one_pass_forward_cpu : nullptr, /*checks_finite_in_prologue=*/true,
          /*sums_spans_in_prologue=*/true};
}

FirstSpikeBackend first_spike_cpu_backend() {
  return {first_spike_forward_cpu, first_spike_grad_input_cpu, first_spike_grad_weight_cpu, nullptr,
          /*sorts_rows=*/true};
}

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

std::tuple<at::Tensor, at::Tensor> first_spike_dense_cpu(const at::Tensor& t_in, const at::Tensor& weight,
                                                         const at::Tensor& alpha, const at::Tensor& threshold,
                                                         double t_start, double t_max, double t_origin) {
  return first_spike_dense_forward(first_spike_cpu_backend(), t_in, weight, alpha, threshold, t_start, t_max,
                                   t_origin);
}

FirstSpikeGrads first_spike_dense_backward_cpu(const at::Tensor& grad_out, const at::Tensor& t_in,
                                               const at::Tensor& weight, const at::Tensor& t_out,
                                               const at::Tensor& slope, double t_start, double t_origin,
                                                std::array<bool, 4> mask) {
  return first_spike_dense_backward(first_spike_cpu_backend(), grad_out, t_in, weight, t_out, slope, t_start,
                                    t_origin, mask);
}

std::tuple<at::Tensor, at::Tensor> first_spike_conv2d_cpu(const at::Tensor& t_in, const at::Tensor& weight,
                                                          const at::Tensor& alpha, const at::Tensor& threshold,
                                                          double t_start, double t_max, at::IntArrayRef stride,
                                                          at::IntArrayRef padding, at::IntArrayRef dilation,
                                                          int64_t groups, int64_t workspace, double t_origin) {
  return first_spike_conv2d_forward(first_spike_cpu_backend(), t_in, weight, alpha, threshold, t_start, t_max,
                                    stride, padding, dilation, groups, workspace, t_origin);
}

FirstSpikeGrads first_spike_conv2d_backward_cpu(const at::Tensor& grad_out, const at::Tensor& t_in,
                                                const at::Tensor& weight, const at::Tensor& t_out,
                                                const at::Tensor& slope, double t_start, double t_origin, at::IntArrayRef stride,
                                                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                                bool alpha_per_position, bool threshold_per_position,
                                                std::array<bool, 4> mask, int64_t workspace) {
  return first_spike_conv2d_backward(first_spike_cpu_backend(), grad_out, t_in, weight, t_out, slope, t_start, t_origin,
                                     stride, padding, dilation, groups, alpha_per_position, threshold_per_position,
                                     mask, workspace);
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, CPU, m) {
  m.impl("dense", &dense_cpu);
  m.impl("_dense_backward", &dense_backward_cpu);
  m.impl("readout", &readout_cpu);
  m.impl("_readout_backward", &readout_backward_cpu);
  m.impl("conv2d", &conv2d_cpu);
  m.impl("_conv2d_backward", &conv2d_backward_cpu);
  m.impl("first_spike_dense", &first_spike_dense_cpu);
  m.impl("_first_spike_dense_backward", &first_spike_dense_backward_cpu);
  m.impl("first_spike_conv2d", &first_spike_conv2d_cpu);
  m.impl("_first_spike_conv2d_backward", &first_spike_conv2d_backward_cpu);
}

}  // namespace ttfs_ext
