// The argument checks of every op, the only copy: the kernels (layers/*.cpp) and the check-only
// twin of each op (ops/*.cpp: "_<op>_check", run by the reference path and the fake kernels)
// call them. Each message names the op and the argument. Bad shapes, values and devices raise
// ValueError in Python (TORCH_CHECK_VALUE), wrong dtypes TypeError (TORCH_CHECK_TYPE). The
// backward ops check every tensor they receive too, so that a direct call of
// torch.ops.ttfs_ext.* never reads out of bounds or hands another device's pointer to a kernel.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>

namespace ttfs_ext {

// --- the pieces ----------------------------------------------------------------------------

void check_finite(const char* op, const char* name, double value);
// x has t_in's dtype and lives on its device.
void check_like(const char* op, const char* name, const at::Tensor& x, const at::Tensor& t_in);

// The data check of spike times and parameters (NaN/inf), where it is a read of its own (the
// CPU B1 kernels fuse it into their prologue instead). Runs where data_checks_enabled(x's
// device); skipped for tensors without data (meta, fake).
void check_finite_data(const char* op, const char* name, const at::Tensor& x);

// --- settings ------------------------------------------------------------------------------
// ttfs_ext.set_input_checks: the NaN/inf data checks on (default) or off; on CUDA they run only
// when also asked for there (cuda=True), since a data check reads a flag back to the host: a
// synchronisation per op call. Shape, dtype, device and window checks always run.
void set_input_checks(bool enabled);
bool input_checks_enabled();
void set_cuda_input_checks(bool enabled);
bool cuda_input_checks_enabled();
// Whether the data checks run for tensors on `device` now (under the CUDA-like CPU profile, the
// CPU follows the CUDA rule).
bool data_checks_enabled(const c10::Device& device);

// For tests: the CPU kernels driven as the CUDA device drives its own (the KernelTable's CUDA
// flags, CUDA's dtype rules and data-check rule; register.cpp, autocast/autocast.h), so that the
// CPU suite runs every branch the CUDA path takes through the device-generic code.
// "cpu" (the default) or "cuda"; set_cpu_kernel_profile returns false for another name.
bool set_cpu_kernel_profile(const std::string& name);
const char* cpu_kernel_profile();
bool cpu_runs_cuda_profile();
// Whether a tensor on `device` takes CUDA's rules: a CUDA device, or the CPU under that profile.
bool cuda_rules(const c10::Device& device);

// The geometry of a convolution of t_in (N, C_in, H, W) with weight (C_out, C_in/groups, kH, kW).
struct ConvGeometry {
  std::array<int64_t, 2> stride, padding, dilation;
  int64_t groups, h_out, w_out;
  std::array<int64_t, 4> out_shape;  // (N, C_out, H_out, W_out)
};

// --- per op: the op's name (errors say "ttfs_ext.<op>"), then its arguments as in its schema

// linear, readout (t_max: nullopt) and their backward ops (t_out: nullptr for readout's).
void check_linear(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, double t_min, std::optional<double> t_max);
void check_linear_backward(const char* op, const at::Tensor& grad_out, const at::Tensor& t_in,
                           const at::Tensor& weight, const at::Tensor* t_out, double t_min,
                           std::optional<double> t_max);

ConvGeometry check_conv2d(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, double t_min, double t_max, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
ConvGeometry check_conv2d_backward(const char* op, const at::Tensor& grad_out, const at::Tensor& t_in,
                                   const at::Tensor& weight, const at::Tensor& t_out, double t_min, double t_max,
                                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                   int64_t groups);

void check_first_spike_linear(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                              const at::Tensor& alpha, const at::Tensor& threshold, double t_start, double t_max,
                              double t_origin);
void check_first_spike_linear_backward(const char* op, const at::Tensor& grad_out, const at::Tensor& t_in,
                                       const at::Tensor& weight, const at::Tensor& t_out, const at::Tensor& slope,
                                       double t_start, double t_origin);

// alpha and threshold each (C_out,) or per output position (C_out, H_out, W_out).
ConvGeometry check_first_spike_conv2d(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                                      const at::Tensor& alpha, const at::Tensor& threshold, double t_start,
                                      double t_max, at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups, int64_t workspace, double t_origin);
ConvGeometry check_first_spike_conv2d_backward(const char* op, const at::Tensor& grad_out, const at::Tensor& t_in,
                                               const at::Tensor& weight, const at::Tensor& t_out,
                                               const at::Tensor& slope, double t_start, double t_origin,
                                               at::IntArrayRef stride, at::IntArrayRef padding,
                                               at::IntArrayRef dilation, int64_t groups, int64_t workspace);

// fs_activation: x float32/float64 (or float16/bfloat16 on CUDA, with float32 h, d, T), h, d, T
// 1-D of one length K in 1..32 on x's device, spike_mode 0..2; the backward also grad_y (x's
// shape and dtype) and grad_reg ((K,), float, or None).
void check_fs_activation(const char* op, const at::Tensor& x, const at::Tensor& h, const at::Tensor& d,
                         const at::Tensor& T, int64_t spike_mode);
void check_fs_activation_backward(const char* op, const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_reg,
                                  const at::Tensor& x, const at::Tensor& h, const at::Tensor& d, const at::Tensor& T);

}  // namespace ttfs_ext

namespace ttfs_ext {

// spike_conv2d: input (N, C_in, H, W); weight packed (C_in, kH, kW, C_out); output_size the
// (H_out, W_out) that conv2d gives (direct) or that conv_transpose2d can give (transposed).
void check_spike_conv2d(const char* op, const at::Tensor& input, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                        at::IntArrayRef dilation, bool transposed, at::IntArrayRef output_size);

// spide_forward_step and spide_backward_step: u (the state, updated in place) float32 or
// float64, contiguous or channels last; rate the same, in u's layout; every other tensor of
// u's shape, dtype and device (`inputs`: the optional ones may be undefined; the kernels read
// them in u's layout, spide_memory_format); v_th > 0, reset >= 0, leak in (0, 1], amplitude
// finite.
at::MemoryFormat spide_memory_format(const at::Tensor& u);
void check_spide_step(const char* op, const at::Tensor& u, const at::Tensor& rate,
                      std::initializer_list<std::pair<const char*, const at::Tensor*>> inputs, double v_th,
                      double reset, double amplitude, double leak);

}  // namespace ttfs_ext
