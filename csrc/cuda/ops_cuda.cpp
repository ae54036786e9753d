// CUDA registrations: the device-generic layers with the CUDA element-wise passes, and the
// general neuron with the CUDA scans, launched on the current stream of the input's device.
// Mirrors cpu/ops_cpu.cpp.
// Built only in CUDA builds (it needs torch's CUDA headers).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "first_spike_layers.h"
#include "layers.h"

namespace ttfs_ext {
namespace {

// The dispatcher sends a call here when any tensor argument is on CUDA; the device guard needs
// t_in there (the ops' own checks then name any other argument on another device).
c10::Device cuda_device(const char* op, const at::Tensor& t_in) {
  TORCH_CHECK(t_in.is_cuda(), op, ": t_in is on ", t_in.device(),
              " but another argument is on CUDA: all tensors must be on one device");
  return t_in.device();
}

ElementwiseBackend cuda_backend() {
  return {prologue_cuda, epilogue_cuda, static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream())};
}

FirstSpikeBackend first_spike_cuda_backend() {
  return {first_spike_forward_cuda, first_spike_grad_input_cuda, first_spike_grad_weight_cuda,
          static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream())};
}

at::Tensor dense_cuda(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      double t_min, double t_max) {
  const c10::cuda::CUDAGuard guard(cuda_device("ttfs_ext.linear", t_in));
  return dense_forward(cuda_backend(), t_in, weight, bias, t_min, t_max);
}

Grads dense_backward_cuda(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                          const at::Tensor& t_out, double t_min, double t_max, std::array<bool, 3> mask) {
  const c10::cuda::CUDAGuard guard(cuda_device("ttfs_ext.linear backward", t_in));
  return dense_backward(cuda_backend(), grad_out, t_in, weight, t_out, t_min, t_max, mask);
}

at::Tensor readout_cuda(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        double t_min) {
  const c10::cuda::CUDAGuard guard(cuda_device("ttfs_ext.readout", t_in));
  return readout_forward(cuda_backend(), t_in, weight, bias, t_min);
}

Grads readout_backward_cuda(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                            double t_min, std::array<bool, 3> mask) {
  const c10::cuda::CUDAGuard guard(cuda_device("ttfs_ext.readout backward", t_in));
  return readout_backward(cuda_backend(), grad_out, t_in, weight, t_min, mask);
}

at::Tensor conv2d_cuda(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       double t_min, double t_max, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t groups) {
  const c10::cuda::CUDAGuard guard(cuda_device("ttfs_ext.conv2d", t_in));
  return conv2d_forward(cuda_backend(), t_in, weight, bias, t_min, t_max, stride, padding, dilation, groups);
}

Grads conv2d_backward_cuda(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                           const at::Tensor& t_out, double t_min, double t_max, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                           bool bias_per_position, std::array<bool, 3> mask) {
  const c10::cuda::CUDAGuard guard(cuda_device("ttfs_ext.conv2d backward", t_in));
  return conv2d_backward(cuda_backend(), grad_out, t_in, weight, t_out, t_min, t_max, stride, padding,
                         dilation, groups, bias_per_position, mask);
}

std::tuple<at::Tensor, at::Tensor> first_spike_dense_cuda(const at::Tensor& t_in, const at::Tensor& weight,
                                                          const at::Tensor& alpha, const at::Tensor& threshold,
                                                          double t_start, double t_max, double t_origin) {
  const c10::cuda::CUDAGuard guard(cuda_device("ttfs_ext.first_spike_dense", t_in));
  return first_spike_dense_forward(first_spike_cuda_backend(), t_in, weight, alpha, threshold, t_start, t_max,
                                   t_origin);
}

FirstSpikeGrads first_spike_dense_backward_cuda(const at::Tensor& grad_out, const at::Tensor& t_in,
                                                const at::Tensor& weight, const at::Tensor& t_out,
                                                const at::Tensor& slope, double t_start, double t_origin,
                                                std::array<bool, 4> mask) {
  const c10::cuda::CUDAGuard guard(cuda_device("ttfs_ext.first_spike_dense backward", t_in));
  return first_spike_dense_backward(first_spike_cuda_backend(), grad_out, t_in, weight, t_out, slope, t_start,
                                    t_origin, mask);
}

std::tuple<at::Tensor, at::Tensor> first_spike_conv2d_cuda(const at::Tensor& t_in, const at::Tensor& weight,
                                                           const at::Tensor& alpha, const at::Tensor& threshold,
                                                           double t_start, double t_max, at::IntArrayRef stride,
                                                           at::IntArrayRef padding, at::IntArrayRef dilation,
                                                           int64_t groups, int64_t workspace, double t_origin) {
  const c10::cuda::CUDAGuard guard(cuda_device("ttfs_ext.first_spike_conv2d", t_in));
  return first_spike_conv2d_forward(first_spike_cuda_backend(), t_in, weight, alpha, threshold, t_start, t_max,
                                    stride, padding, dilation, groups, workspace, t_origin);
}

FirstSpikeGrads first_spike_conv2d_backward_cuda(const at::Tensor& grad_out, const at::Tensor& t_in,
                                                 const at::Tensor& weight, const at::Tensor& t_out,
                                                 const at::Tensor& slope, double t_start, double t_origin, at::IntArrayRef stride,
                                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                                 bool alpha_per_position, bool threshold_per_position,
                                                 std::array<bool, 4> mask, int64_t workspace) {
  const c10::cuda::CUDAGuard guard(cuda_device("ttfs_ext.first_spike_conv2d backward", t_in));
  return first_spike_conv2d_backward(first_spike_cuda_backend(), grad_out, t_in, weight, t_out, slope, t_start, t_origin,
                                     stride, padding, dilation, groups, alpha_per_position, threshold_per_position,
                                     mask, workspace);
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, CUDA, m) {
  m.impl("dense", &dense_cuda);
  m.impl("_dense_backward", &dense_backward_cuda);
  m.impl("readout", &readout_cuda);
  m.impl("_readout_backward", &readout_backward_cuda);
  m.impl("conv2d", &conv2d_cuda);
  m.impl("_conv2d_backward", &conv2d_backward_cuda);
  m.impl("first_spike_dense", &first_spike_dense_cuda);
  m.impl("_first_spike_dense_backward", &first_spike_dense_backward_cuda);
  m.impl("first_spike_conv2d", &first_spike_conv2d_cuda);
  m.impl("_first_spike_conv2d_backward", &first_spike_conv2d_backward_cuda);
}

}  // namespace ttfs_ext
