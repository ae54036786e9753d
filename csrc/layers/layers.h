// Device-generic ATen code of every op: the layers call the kernels of the tensors' device
// through its KernelTable (kernels/params.h; register.cpp builds one per device and call).
//   linear.cpp       linear and readout: one GEMM between two element-wise passes
//   conv2d.cpp       conv2d: the same with a convolution
//   first_spike.cpp  the event-exact general neuron: sorting, im2col, groups, reductions
//   fs_activation.cpp  few-spikes neurons: one element-wise kernel, fixed-order partial sums
// Every function checks its arguments first (layers/checks.h).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "kernels/params.h"

namespace ttfs_ext {

using Grads3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;              // (t_in, weight, bias)
using Grads4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;  // (t_in, weight, alpha, threshold)
using TensorPair = std::tuple<at::Tensor, at::Tensor>;

// t_out = min(t_max - (W (t_min - t_in) + b), t_max); t_in (..., in), weight (out, in).
at::Tensor linear_forward(const KernelTable& k, const at::Tensor& t_in, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, double t_min, double t_max);
Grads3 linear_backward(const KernelTable& k, const at::Tensor& grad_out, const at::Tensor& t_in,
                       const at::Tensor& weight, const at::Tensor& t_out, double t_min, double t_max,
                       std::array<bool, 3> output_mask);

// V = W (t_min - t_in) + b: the membrane potential of a non-spiking layer at t_min.
at::Tensor readout_forward(const KernelTable& k, const at::Tensor& t_in, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, double t_min);
Grads3 readout_backward(const KernelTable& k, const at::Tensor& grad_out, const at::Tensor& t_in,
                        const at::Tensor& weight, double t_min, std::array<bool, 3> output_mask);

// The linear form with a convolution; padding holds t_min (activation 0). bias is (C_out,)
// or per output position (C_out, H_out, W_out).
// The memory format the conv ops keep: channels_last for a 4-d tensor laid out so (and not
// also contiguous), else contiguous; functional._memory_format is the fakes' copy of the rule.
at::MemoryFormat conv_memory_format(const at::Tensor& t);
at::Tensor conv2d_forward(const KernelTable& k, const at::Tensor& t_in, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, double t_min, double t_max, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
Grads3 conv2d_backward(const KernelTable& k, const at::Tensor& grad_out, const at::Tensor& t_in,
                       const at::Tensor& weight, const at::Tensor& t_out, double t_min, double t_max,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       bool bias_per_position, std::array<bool, 3> output_mask);

// t_in (R, N), weight (O, N), alpha and threshold (O,). Returns (t_out, slope), both (R, O);
// slope is dV/dt at the spike for neurons with a gradient, else 0. t_start is on the inputs' time
// axis; t_out, the spike time minus t_origin, and t_max (no spike) on the outputs' axis.
TensorPair first_spike_linear_forward(const KernelTable& k, const at::Tensor& t_in, const at::Tensor& weight,
                                      const at::Tensor& alpha, const at::Tensor& threshold, double t_start,
                                      double t_max, double t_origin);
Grads4 first_spike_linear_backward(const KernelTable& k, const at::Tensor& grad_out, const at::Tensor& t_in,
                                   const at::Tensor& weight, const at::Tensor& t_out, const at::Tensor& slope,
                                   double t_start, double t_origin, std::array<bool, 4> output_mask);

// t_in (B, C_in, H, W), weight (C_out, C_in/groups, kH, kW); alpha and threshold each (C_out,)
// or (C_out, H_out, W_out). Padding never arrives. The batch runs in chunks whose patch
// matrix has at most `workspace` elements (at least one sample per chunk).
TensorPair first_spike_conv2d_forward(const KernelTable& k, const at::Tensor& t_in, const at::Tensor& weight,
                                      const at::Tensor& alpha, const at::Tensor& threshold, double t_start,
                                      double t_max, at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups, int64_t workspace, double t_origin);
Grads4 first_spike_conv2d_backward(const KernelTable& k, const at::Tensor& grad_out, const at::Tensor& t_in,
                                   const at::Tensor& weight, const at::Tensor& t_out, const at::Tensor& slope,
                                   double t_start, double t_origin, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, int64_t groups, bool alpha_per_position,
                                   bool threshold_per_position, std::array<bool, 4> output_mask, int64_t workspace);

// Few-spikes neurons on x (any shape) with h, d, T (K,): (y, spikes, reg), as ttfs_ext.h says.
std::tuple<at::Tensor, at::Tensor, at::Tensor> fs_activation_forward(const KernelTable& k, const at::Tensor& x,
                                                                     const at::Tensor& h, const at::Tensor& d,
                                                                     const at::Tensor& T, int64_t spike_mode,
                                                                     bool with_reg);
// (grad_x, grad_h, grad_d, grad_T) of the surrogate gradient, for grad_y and grad_reg (or None).
Grads4 fs_activation_backward(const KernelTable& k, const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_reg,
                              const at::Tensor& x, const at::Tensor& h, const at::Tensor& d, const at::Tensor& T,
                              std::array<bool, 4> output_mask);

// --- shared by linear.cpp and conv2d.cpp (passes.cpp) ------------------------------------------

Dtype to_dtype(at::ScalarType s);
void check_launch(const char* err, const char* what);

// out = cast(scale * (in - offset)), zeroed where gate >= t_max (when a gate is given).
void run_prologue(const KernelTable& k, const at::Tensor& in, const at::Tensor* gate, const at::Tensor& out,
                  double offset, double scale, double t_max);
// The forward's prologue x = t_min - t_in, with the NaN/inf check of t_in: in the same read
// where the device can, else as a read of its own.
void run_forward_prologue(const char* op, const KernelTable& k, const at::Tensor& t_in, const at::Tensor& x,
                          double t_min);
// Bias, threshold and clamp on u laid out as (batch, channels, positions).
void run_epilogue(const KernelTable& k, const at::Tensor& u, const std::optional<at::Tensor>& bias,
                  bool bias_per_position, const at::Tensor& out, int64_t channels, int64_t positions, double t_max,
                  bool spiking);
// The upstream gradient, gated by the spike mask (gate != nullptr) or scaled by -1 (readout),
// in the matrix dtype (for the GEMMs) and, with want_time, in the spike-time dtype (for a bias
// gradient; under low precision the matrix operand is then its cast, else the pass writes the
// matrix dtype itself). The results and the gate are in memory format fmt (the gate already:
// the pass is element-wise).
std::pair<at::Tensor, at::Tensor> gated_grad(const KernelTable& k, const at::Tensor& grad_out,
                                             const at::Tensor* gate, double scale, double t_max,
                                             at::ScalarType matrix_dtype, bool want_time = true,
                                             at::MemoryFormat fmt = at::MemoryFormat::Contiguous);

}  // namespace ttfs_ext

namespace ttfs_ext {

// layers/spide_neuron.cpp: one step of a population of feedback-SNN neurons, in place on u
// and rate (kernels/params.h, SpideStepParams); returns the (gated) spikes.
at::Tensor spide_forward_step_impl(const KernelTable& k, const at::Tensor& u, const at::Tensor& rate,
                                   const at::Tensor& current, const std::optional<at::Tensor>& extra,
                                   const std::optional<at::Tensor>& gate, double v_th, double reset, double leak);
at::Tensor spide_backward_step_impl(const KernelTable& k, const at::Tensor& u, const at::Tensor& rate,
                                    const at::Tensor& current, const std::optional<at::Tensor>& current_gate,
                                    const std::optional<at::Tensor>& inject, const std::optional<at::Tensor>& gate,
                                    double v_th, double reset, double amplitude, double leak);

// layers/spike_conv.cpp: the event-driven conv2d / conv_transpose2d of a spike tensor
// (kernels/params.h, SpikeConvParams).
at::Tensor spike_conv2d_impl(const KernelTable& k, const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, bool transposed, at::IntArrayRef output_size);

}  // namespace ttfs_ext
