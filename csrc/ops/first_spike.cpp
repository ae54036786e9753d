// first_spike_linear, first_spike_conv2d: the event-exact general neuron (layers/first_spike.cpp).
// The forward ops also return the slope dV/dt at each spike (0 where a neuron has no gradient)
// for their backward. t_start lies on the inputs' time axis, the outputs and t_max (no spike) on
// the outputs' axis, which starts at t_origin on the inputs' (0: one axis; local time: the input
// width). `workspace` bounds the elements of the im2col/sort buffers of one chunk of the conv
// batch (a knob for tests).
#include "ops/schema.h"
#include "layers/checks.h"
#include "ttfs_ext.h"

namespace ttfs_ext {

using Grads4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

std::tuple<at::Tensor, at::Tensor> first_spike_linear(const at::Tensor& t_in, const at::Tensor& weight,
                                                      const at::Tensor& alpha, const at::Tensor& threshold,
                                                      double t_start, double t_max, double t_origin) {
  static const auto op = op_handle<decltype(first_spike_linear)>("ttfs_ext::first_spike_linear");
  return op.call(t_in, weight, alpha, threshold, t_start, t_max, t_origin);
}

Grads4 _first_spike_linear_backward(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                                    const at::Tensor& t_out, const at::Tensor& slope, double t_start,
                                    double t_origin, std::array<bool, 4> output_mask) {
  static const auto op = op_handle<decltype(_first_spike_linear_backward)>("ttfs_ext::_first_spike_linear_backward");
  return op.call(grad_out, t_in, weight, t_out, slope, t_start, t_origin, output_mask);
}

std::tuple<at::Tensor, at::Tensor> first_spike_conv2d(const at::Tensor& t_in, const at::Tensor& weight,
                                                      const at::Tensor& alpha, const at::Tensor& threshold,
                                                      double t_start, double t_max, c10::IntArrayRef stride,
                                                      c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                                      int64_t groups, int64_t workspace, double t_origin) {
  static const auto op = op_handle<decltype(first_spike_conv2d)>("ttfs_ext::first_spike_conv2d");
  return op.call(t_in, weight, alpha, threshold, t_start, t_max, stride, padding, dilation, groups, workspace,
                 t_origin);
}

Grads4 _first_spike_conv2d_backward(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                                    const at::Tensor& t_out, const at::Tensor& slope, double t_start,
                                    double t_origin, c10::IntArrayRef stride, c10::IntArrayRef padding,
                                    c10::IntArrayRef dilation, int64_t groups, bool alpha_per_position,
                                    bool threshold_per_position, std::array<bool, 4> output_mask, int64_t workspace) {
  static const auto op = op_handle<decltype(_first_spike_conv2d_backward)>("ttfs_ext::_first_spike_conv2d_backward");
  return op.call(grad_out, t_in, weight, t_out, slope, t_start, t_origin, stride, padding, dilation, groups,
                 alpha_per_position, threshold_per_position, output_mask, workspace);
}

namespace {

void check_neuron_data(const char* op, const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& alpha,
                       const at::Tensor& threshold) {
  check_finite_data(op, "t_in", t_in);
  check_finite_data(op, "weight", weight);
  check_finite_data(op, "alpha", alpha);
  check_finite_data(op, "threshold", threshold);
}

void first_spike_linear_check(const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& alpha,
                              const at::Tensor& threshold, double t_start, double t_max, double t_origin) {
  const char* op = "ttfs_ext.first_spike_linear";
  check_first_spike_linear(op, t_in, weight, alpha, threshold, t_start, t_max, t_origin);
  check_neuron_data(op, t_in, weight, alpha, threshold);
}

void first_spike_linear_backward_check(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                                       const at::Tensor& t_out, const at::Tensor& slope, double t_start,
                                       double t_origin, std::array<bool, 4>) {
  check_first_spike_linear_backward("ttfs_ext.first_spike_linear backward", grad_out, t_in, weight, t_out, slope,
                                    t_start, t_origin);
}

void first_spike_conv2d_check(const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& alpha,
                              const at::Tensor& threshold, double t_start, double t_max, c10::IntArrayRef stride,
                              c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups, int64_t workspace,
                              double t_origin) {
  const char* op = "ttfs_ext.first_spike_conv2d";
  check_first_spike_conv2d(op, t_in, weight, alpha, threshold, t_start, t_max, stride, padding, dilation, groups,
                           workspace, t_origin);
  check_neuron_data(op, t_in, weight, alpha, threshold);
}

void first_spike_conv2d_backward_check(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                                       const at::Tensor& t_out, const at::Tensor& slope, double t_start,
                                       double t_origin, c10::IntArrayRef stride, c10::IntArrayRef padding,
                                       c10::IntArrayRef dilation, int64_t groups, bool, bool, std::array<bool, 4>,
                                       int64_t workspace) {
  check_first_spike_conv2d_backward("ttfs_ext.first_spike_conv2d backward", grad_out, t_in, weight, t_out, slope,
                                    t_start, t_origin, stride, padding, dilation, groups, workspace);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ttfs_ext, m) {
  def_op(m, "first_spike_linear",
         "(Tensor t_in, Tensor weight, Tensor alpha, Tensor threshold, float t_start, float t_max, "
         "float t_origin=0.0)",
         "(Tensor, Tensor)");
  def_op(m, "_first_spike_linear_backward",
         "(Tensor grad_out, Tensor t_in, Tensor weight, Tensor t_out, Tensor slope, float t_start, float t_origin, "
         "bool[4] output_mask)",
         "(Tensor, Tensor, Tensor, Tensor)");
  def_op(m, "first_spike_conv2d",
         "(Tensor t_in, Tensor weight, Tensor alpha, Tensor threshold, float t_start, float t_max, int[2] stride, "
         "int[2] padding, int[2] dilation, int groups, int workspace=8388608, float t_origin=0.0)",
         "(Tensor, Tensor)");
  def_op(m, "_first_spike_conv2d_backward",
         "(Tensor grad_out, Tensor t_in, Tensor weight, Tensor t_out, Tensor slope, float t_start, float t_origin, "
         "int[2] stride, int[2] padding, int[2] dilation, int groups, bool alpha_per_position, "
         "bool threshold_per_position, bool[4] output_mask, int workspace=8388608)",
         "(Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ttfs_ext, CompositeImplicitAutograd, m) {
  m.impl("_first_spike_linear_check", &first_spike_linear_check);
  m.impl("_first_spike_linear_backward_check", &first_spike_linear_backward_check);
  m.impl("_first_spike_conv2d_check", &first_spike_conv2d_check);
  m.impl("_first_spike_conv2d_backward_check", &first_spike_conv2d_backward_check);
}

}  // namespace ttfs_ext
