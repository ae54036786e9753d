// readout: the membrane potential of a non-spiking layer at t_min, V = W (t_min - t_in) + b:
// the logits (layers/linear.cpp, which linear shares).
#include "ops/schema.h"
#include "layers/checks.h"
#include "ttfs_ext.h"

namespace ttfs_ext {

at::Tensor readout(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   double t_min) {
  static const auto op = op_handle<decltype(readout)>("ttfs_ext::readout");
  return op.call(t_in, weight, bias, t_min);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> _readout_backward(const at::Tensor& grad_out, const at::Tensor& t_in,
                                                                 const at::Tensor& weight, double t_min,
                                                                 std::array<bool, 3> output_mask) {
  static const auto op = op_handle<decltype(_readout_backward)>("ttfs_ext::_readout_backward");
  return op.call(grad_out, t_in, weight, t_min, output_mask);
}

namespace {

void readout_check(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   double t_min) {
  check_linear("ttfs_ext.readout", t_in, weight, bias, t_min, std::nullopt);
  check_finite_data("ttfs_ext.readout", "t_in", t_in);
}

void readout_backward_check(const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                            double t_min, std::array<bool, 3>) {
  check_linear_backward("ttfs_ext.readout backward", grad_out, t_in, weight, nullptr, t_min, std::nullopt);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ttfs_ext, m) {
  def_op(m, "readout", "(Tensor t_in, Tensor weight, Tensor? bias, float t_min)", "Tensor");
  def_op(m, "_readout_backward", "(Tensor grad_out, Tensor t_in, Tensor weight, float t_min, bool[3] output_mask)",
         "(Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ttfs_ext, CompositeImplicitAutograd, m) {
  m.impl("_readout_check", &readout_check);
  m.impl("_readout_backward_check", &readout_backward_check);
}

}  // namespace ttfs_ext
