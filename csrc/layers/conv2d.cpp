// conv2d: the linear form (linear.cpp) with a convolution. Zero padding of activations is
// t_min padding of spike times.
//
// Memory format: the op keeps its input's (conv_memory_format): a channels_last network runs
// NHWC throughout, as its ReLU twin does, instead of converting at every layer. The element-wise
// passes walk dense memory in either layout; only the bias needs the channel of an element: in
// NCHW the spans of one (image, channel), in NHWC rows of C channels (a per-position bias as
// (H, W, C) rows).
#include "layers/checks.h"
#include "layers/layers.h"

namespace ttfs_ext {

at::MemoryFormat conv_memory_format(const at::Tensor& t) {
  const bool nhwc = t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
  return nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor conv2d_forward(const KernelTable& k, const at::Tensor& t_in, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, double t_min, double t_max, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const char* op = "ttfs_ext.conv2d";
  check_conv2d(op, t_in, weight, bias, t_min, t_max, stride, padding, dilation, groups);
  const at::MemoryFormat fmt = conv_memory_format(t_in);
  const at::Tensor t = t_in.contiguous(fmt);
  at::Tensor x = at::empty(t.sizes(), weight.options().memory_format(fmt));
  run_forward_prologue(op, k, t, x, t_min);
  const int64_t zeros[2] = {0, 0};
  at::Tensor u = at::convolution(x, weight.contiguous(fmt), std::nullopt, stride, padding, dilation, false, zeros,
                                 groups)
                     .contiguous(fmt);
  at::Tensor out = u.scalar_type() == t.scalar_type() ? u : at::empty(u.sizes(), t.options().memory_format(fmt));
  const bool per_position = bias.has_value() && bias->dim() == 3;
  const int64_t channels = u.size(1), positions = u.size(2) * u.size(3);
  if (fmt == at::MemoryFormat::ChannelsLast) {
    const std::optional<at::Tensor> rows = per_position ? std::optional<at::Tensor>(bias->permute({1, 2, 0})) : bias;
    run_epilogue(k, u, rows, false, out, per_position ? positions * channels : channels, 1, t_max, true);
  } else {
    run_epilogue(k, u, bias, per_position, out, channels, positions, t_max, true);
  }
  return out;
}

Grads3 conv2d_backward(const KernelTable& k, const at::Tensor& grad_out, const at::Tensor& t_in,
                       const at::Tensor& weight, const at::Tensor& t_out, double t_min, double t_max,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       bool bias_per_position, std::array<bool, 3> mask) {
  check_conv2d_backward("ttfs_ext.conv2d backward", grad_out, t_in, weight, t_out, t_min, t_max, stride, padding,
                        dilation, groups);
  const at::MemoryFormat fmt = conv_memory_format(t_in);
  const at::Tensor gate = t_out.contiguous(fmt);
  // A per-channel bias gradient comes from the convolution's backward, as the ReLU twin's does
  // (the sum of the gated gradient it reads anyway: no pass of its own), so the gating pass writes
  // the matrix dtype directly; a per-position one, or one without the convolution, is summed
  // from the gated gradient in the spike-time dtype.
  const bool conv_runs = mask[0] || mask[1];
  const bool bias_from_conv = mask[2] && !bias_per_position && conv_runs;
  const bool bias_from_time = mask[2] && !bias_from_conv;
  const auto [gm, gm_time] = gated_grad(k, grad_out, &gate, 1.0, t_max, weight.scalar_type(), bias_from_time, fmt);

  at::Tensor g_in, g_w, g_b;
  if (conv_runs) {
    // The weight gradient needs the delays t_in - t_min; the input gradient only their shape.
    at::Tensor d = at::empty(t_in.sizes(), weight.options().memory_format(fmt));
    if (mask[1]) run_prologue(k, t_in.contiguous(fmt), nullptr, d, t_min, 1.0, 0.0);
    const int64_t zeros[2] = {0, 0};
    const int64_t bias_size[1] = {weight.size(0)};
    auto grads = at::convolution_backward(gm, d, weight.contiguous(fmt),
                                          bias_from_conv ? at::OptionalIntArrayRef(bias_size) : std::nullopt, stride,
                                          padding, dilation, false, zeros, groups, {mask[0], mask[1], bias_from_conv});
    // Each gradient in the layout of what it is the gradient of (the fake kernels' rule).
    if (mask[0]) g_in = std::get<0>(grads).to(t_in.scalar_type()).contiguous(fmt);
    if (mask[1]) g_w = std::get<1>(grads).contiguous(conv_memory_format(weight));
    if (bias_from_conv) g_b = std::get<2>(grads).to(t_in.scalar_type()).neg_();
  }
  if (bias_from_time) g_b = (bias_per_position ? gm_time.sum(0).contiguous() : gm_time.sum({0, 2, 3})).neg_();
  return {g_in, g_w, g_b};
}

}  // namespace ttfs_ext
