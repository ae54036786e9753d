// Autograd of linear: t_out = min(t_max - (W (t_min - t_in) + b), t_max).
#include "autograd/autograd.h"
#include "ttfs_ext.h"

namespace ttfs_ext {
namespace {

class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& t_in, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, double t_min, double t_max) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor t_out = linear(t_in, weight, bias, t_min, t_max);
    ctx->save_for_backward({t_in, weight, t_out});
    ctx->saved_data["t_min"] = t_min;
    ctx->saved_data["t_max"] = t_max;
    ctx->saved_data["has_bias"] = bias.has_value();
    return t_out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const auto [g_in, g_w, g_b] = _linear_backward(grads[0], saved[0], saved[1], saved[2], d["t_min"].toDouble(),
                                                   d["t_max"].toDouble(), layer_mask(ctx, d["has_bias"].toBool()));
    return {g_in, g_w, g_b, at::Tensor(), at::Tensor()};
  }
};

at::Tensor linear_autograd(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           double t_min, double t_max) {
  return LinearFunction::apply(t_in, weight, bias, t_min, t_max);
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, Autograd, m) {
  m.impl("linear", &linear_autograd);
  impl_no_double_backward(m, "_linear_backward");
}

}  // namespace ttfs_ext
