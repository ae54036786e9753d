// Autograd of fs_activation: the surrogate gradient of y and of the regulariser means with
// respect to x, h, d and T (the backward op recomputes the K steps; only the inputs are saved).
#include "autograd/autograd.h"
#include "ttfs_ext.h"

namespace ttfs_ext {
namespace {

class FsActivationFunction : public torch::autograd::Function<FsActivationFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& h, const at::Tensor& d,
                               const at::Tensor& T, int64_t spike_mode, bool with_reg) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, spikes, reg] = fs_activation(x, h, d, T, spike_mode, with_reg);
    ctx->save_for_backward({x, h, d, T});
    ctx->saved_data["with_reg"] = with_reg;
    ctx->mark_non_differentiable({spikes});
    if (!with_reg) ctx->mark_non_differentiable({reg});
    return {y, spikes, reg};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor& x = s[0];
    const at::Tensor grad_y = grads[0].defined() ? grads[0] : at::zeros_like(x);
    std::optional<at::Tensor> grad_reg;
    if (ctx->saved_data["with_reg"].toBool() && grads[2].defined()) grad_reg = grads[2];
    const auto [gx, gh, gd, gT] = _fs_activation_backward(grad_y, grad_reg, x, s[1], s[2], s[3], neuron_mask(ctx));
    return {gx, gh, gd, gT, at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> fs_activation_autograd(const at::Tensor& x, const at::Tensor& h,
                                                                      const at::Tensor& d, const at::Tensor& T,
                                                                      int64_t spike_mode, bool with_reg) {
  const auto out = FsActivationFunction::apply(x, h, d, T, spike_mode, with_reg);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, Autograd, m) {
  m.impl("fs_activation", &fs_activation_autograd);
  impl_no_double_backward(m, "_fs_activation_backward");
}

}  // namespace ttfs_ext
