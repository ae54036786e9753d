// linear: the spike times of a dense B1 layer (layers/linear.cpp). t_min is the end of the
// input window on the inputs' time axis, t_max the end of the layer's window on the outputs':
// with one absolute axis, the window [t_min, t_max]; in local time (each window measured from
// its start), the input width and the layer's width.
#include "ops/schema.h"
#include "layers/checks.h"
#include "ttfs_ext.h"

namespace ttfs_ext {

at::Tensor linear(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  double t_min, double t_max) {
  static const auto op = op_handle<decltype(linear)>("ttfs_ext::linear");
  return op.call(t_in, weight, bias, t_min, t_max);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> _linear_backward(const at::Tensor& grad_out, const at::Tensor& t_in,
                                                                const at::Tensor& weight, const at::Tensor& t_out,
                                                                double t_min, double t_max,
                                                                std::array<bool, 3> output_mask) {
  static const auto op = op_handle<decltype(_linear_backward)>("ttfs_ext::_linear_backward");
  return op.call(grad_out, t_in, weight, t_out, t_min, t_max, output_mask);
}

namespace {

void linear_check(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  double t_min, double t_max) {
  check_linear("ttfs_ext.linear", t_in, weight, bias, t_min, t_max);
  check_finite_data("ttfs_ext.linear", "t_in", t_in);
}

void linear_backward_check(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                           const at::Tensor& t_out, double t_min, double t_max, std::array<bool, 3>) {
  check_linear_backward("ttfs_ext.linear backward", grad_out, t_in, weight, &t_out, t_min, t_max);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ttfs_ext, m) {
  def_op(m, "linear", "(Tensor t_in, Tensor weight, Tensor? bias, float t_min, float t_max)", "Tensor");
  def_op(m, "_linear_backward",
         "(Tensor grad_out, Tensor t_in, Tensor weight, Tensor t_out, float t_min, float t_max, bool[3] output_mask)",
         "(Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ttfs_ext, CompositeImplicitAutograd, m) {
  m.impl("_linear_check", &linear_check);
  m.impl("_linear_backward_check", &linear_backward_check);
}

}  // namespace ttfs_ext
