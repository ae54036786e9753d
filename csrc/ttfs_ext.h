// The typed C++ entry points of every op: calls through the dispatcher (autograd, autocast,
// then the kernel of the tensors' device), as torch.ops.ttfs_ext.<op> from Python. Schemas and
// definitions: ops/<op>.cpp; the kernels: layers/ with the device's kernels (register.cpp).
// Backward ops keep the schema's leading underscore.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

namespace ttfs_ext {

// ops/linear.cpp: t_out = min(t_max - (W (t_min - t_in) + b), t_max). t_min is the end of the
// input window on the inputs' time axis, t_max the end of the layer's window on the outputs'.
at::Tensor linear(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  double t_min, double t_max);
std::tuple<at::Tensor, at::Tensor, at::Tensor> _linear_backward(const at::Tensor& grad_out, const at::Tensor& t_in,
                                                                const at::Tensor& weight, const at::Tensor& t_out,
                                                                double t_min, double t_max,
                                                                std::array<bool, 3> output_mask);

// ops/readout.cpp: V = W (t_min - t_in) + b.
at::Tensor readout(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   double t_min);
std::tuple<at::Tensor, at::Tensor, at::Tensor> _readout_backward(const at::Tensor& grad_out, const at::Tensor& t_in,
                                                                 const at::Tensor& weight, double t_min,
                                                                 std::array<bool, 3> output_mask);

// ops/conv2d.cpp: linear with a convolution.
at::Tensor conv2d(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  double t_min, double t_max, c10::IntArrayRef stride, c10::IntArrayRef padding,
                  c10::IntArrayRef dilation, int64_t groups);
std::tuple<at::Tensor, at::Tensor, at::Tensor> _conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& t_out,
    double t_min, double t_max, c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    int64_t groups, bool bias_per_position, std::array<bool, 3> output_mask);

// ops/first_spike.cpp: the event-exact general neuron; (t_out, slope).
std::tuple<at::Tensor, at::Tensor> first_spike_linear(const at::Tensor& t_in, const at::Tensor& weight,
                                                      const at::Tensor& alpha, const at::Tensor& threshold,
                                                      double t_start, double t_max, double t_origin);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> _first_spike_linear_backward(
    const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& t_out,
    const at::Tensor& slope, double t_start, double t_origin, std::array<bool, 4> output_mask);
std::tuple<at::Tensor, at::Tensor> first_spike_conv2d(const at::Tensor& t_in, const at::Tensor& weight,
                                                      const at::Tensor& alpha, const at::Tensor& threshold,
                                                      double t_start, double t_max, c10::IntArrayRef stride,
                                                      c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                                      int64_t groups, int64_t workspace, double t_origin);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> _first_spike_conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& t_out,
    const at::Tensor& slope, double t_start, double t_origin, c10::IntArrayRef stride, c10::IntArrayRef padding,
    c10::IntArrayRef dilation, int64_t groups, bool alpha_per_position, bool threshold_per_position,
    std::array<bool, 4> output_mask, int64_t workspace);

// ops/fs_activation.cpp: few-spikes neurons; (y, spikes, reg). spike_mode 0: spikes is empty,
// 1: uint8 spike counts, 2: int32 K-bit spike masks; reg: (K,) per-step regulariser means, or
// empty unless with_reg.
std::tuple<at::Tensor, at::Tensor, at::Tensor> fs_activation(const at::Tensor& x, const at::Tensor& h,
                                                             const at::Tensor& d, const at::Tensor& T,
                                                             int64_t spike_mode, bool with_reg);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> _fs_activation_backward(
    const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_reg, const at::Tensor& x, const at::Tensor& h,
    const at::Tensor& d, const at::Tensor& T, std::array<bool, 4> output_mask);

}  // namespace ttfs_ext

namespace ttfs_ext {

// ops/spide_neuron.cpp: one step of a population of feedback-SNN neurons (IDE/SPIDE), in
// place on u and rate; returns the spikes (times gate, when given).
at::Tensor spide_forward_step(const at::Tensor& u, const at::Tensor& rate, const at::Tensor& current,
                              const std::optional<at::Tensor>& extra, const std::optional<at::Tensor>& gate,
                              double v_th, double reset, double leak);
at::Tensor spide_backward_step(const at::Tensor& u, const at::Tensor& rate, const at::Tensor& current,
                               const std::optional<at::Tensor>& current_gate, const std::optional<at::Tensor>& inject,
                               const std::optional<at::Tensor>& gate, double v_th, double reset, double amplitude,
                               double leak);

// ops/spike_conv.cpp: conv2d (transposed false) or conv_transpose2d of a mostly-zero input,
// event-driven; weight packed [c_in, kh, kw, c_out]; CPU only.
at::Tensor spike_conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
                        at::IntArrayRef output_size);

}  // namespace ttfs_ext

