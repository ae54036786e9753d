// fs_activation: few-spikes neurons (Stoeckl & Maass), one K-step neuron per element of x with
// the per-step parameters h (reset), d (output weight), T (threshold) shared by all
// (kernels/params.h: FsForwardParams); layers/fs_activation.cpp runs the kernels.
#include "ops/schema.h"
#include "layers/checks.h"
#include "ttfs_ext.h"

namespace ttfs_ext {

std::tuple<at::Tensor, at::Tensor, at::Tensor> fs_activation(const at::Tensor& x, const at::Tensor& h,
                                                             const at::Tensor& d, const at::Tensor& T,
                                                             int64_t spike_mode, bool with_reg) {
  static const auto op = op_handle<decltype(fs_activation)>("ttfs_ext::fs_activation");
  return op.call(x, h, d, T, spike_mode, with_reg);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> _fs_activation_backward(
    const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_reg, const at::Tensor& x, const at::Tensor& h,
    const at::Tensor& d, const at::Tensor& T, std::array<bool, 4> output_mask) {
  static const auto op = op_handle<decltype(_fs_activation_backward)>("ttfs_ext::_fs_activation_backward");
  return op.call(grad_y, grad_reg, x, h, d, T, output_mask);
}

namespace {

void fs_activation_check(const at::Tensor& x, const at::Tensor& h, const at::Tensor& d, const at::Tensor& T,
                         int64_t spike_mode, bool) {
  check_fs_activation("ttfs_ext.fs_activation", x, h, d, T, spike_mode);
  for (const auto& [name, p] : {std::pair<const char*, const at::Tensor&>{"x", x}, {"h", h}, {"d", d}, {"T", T}}) {
    check_finite_data("ttfs_ext.fs_activation", name, p);
  }
}

void fs_activation_backward_check(const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_reg,
                                  const at::Tensor& x, const at::Tensor& h, const at::Tensor& d, const at::Tensor& T,
                                  std::array<bool, 4>) {
  check_fs_activation_backward("ttfs_ext.fs_activation backward", grad_y, grad_reg, x, h, d, T);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ttfs_ext, m) {
  def_op(m, "fs_activation", "(Tensor x, Tensor h, Tensor d, Tensor T, int spike_mode, bool with_reg)",
         "(Tensor, Tensor, Tensor)");
  def_op(m, "_fs_activation_backward",
         "(Tensor grad_y, Tensor? grad_reg, Tensor x, Tensor h, Tensor d, Tensor T, bool[4] output_mask)",
         "(Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ttfs_ext, CompositeImplicitAutograd, m) {
  m.impl("_fs_activation_check", &fs_activation_check);
  m.impl("_fs_activation_backward_check", &fs_activation_backward_check);
}

}  // namespace ttfs_ext
