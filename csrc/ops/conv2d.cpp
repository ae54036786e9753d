// conv2d: linear with a convolution (layers/conv2d.cpp); padding holds t_min (activation 0).
// bias is (C_out,) or per output position (C_out, H_out, W_out).
#include "ops/schema.h"
#include "layers/checks.h"
#include "ttfs_ext.h"

namespace ttfs_ext {

at::Tensor conv2d(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  double t_min, double t_max, c10::IntArrayRef stride, c10::IntArrayRef padding,
                  c10::IntArrayRef dilation, int64_t groups) {
  static const auto op = op_handle<decltype(conv2d)>("ttfs_ext::conv2d");
  return op.call(t_in, weight, bias, t_min, t_max, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> _conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& t_out,
    double t_min, double t_max, c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    int64_t groups, bool bias_per_position, std::array<bool, 3> output_mask) {
  static const auto op = op_handle<decltype(_conv2d_backward)>("ttfs_ext::_conv2d_backward");
  return op.call(grad_out, t_in, weight, t_out, t_min, t_max, stride, padding, dilation, groups, bias_per_position,
                 output_mask);
}

namespace {

void conv2d_check(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  double t_min, double t_max, c10::IntArrayRef stride, c10::IntArrayRef padding,
                  c10::IntArrayRef dilation, int64_t groups) {
  check_conv2d("ttfs_ext.conv2d", t_in, weight, bias, t_min, t_max, stride, padding, dilation, groups);
  check_finite_data("ttfs_ext.conv2d", "t_in", t_in);
}

void conv2d_backward_check(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                           const at::Tensor& t_out, double t_min, double t_max, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups, bool,
                           std::array<bool, 3>) {
  check_conv2d_backward("ttfs_ext.conv2d backward", grad_out, t_in, weight, t_out, t_min, t_max, stride, padding,
                        dilation, groups);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ttfs_ext, m) {
  def_op(m, "conv2d",
         "(Tensor t_in, Tensor weight, Tensor? bias, float t_min, float t_max, int[2] stride, int[2] padding, "
         "int[2] dilation, int groups)",
         "Tensor");
  def_op(m, "_conv2d_backward",
         "(Tensor grad_out, Tensor t_in, Tensor weight, Tensor t_out, float t_min, float t_max, int[2] stride, "
         "int[2] padding, int[2] dilation, int groups, bool bias_per_position, bool[3] output_mask)",
         "(Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ttfs_ext, CompositeImplicitAutograd, m) {
  m.impl("_conv2d_check", &conv2d_check);
  m.impl("_conv2d_backward_check", &conv2d_backward_check);
}

}  // namespace ttfs_ext
