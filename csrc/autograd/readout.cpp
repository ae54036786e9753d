// Autograd of readout: V = W (t_min - t_in) + b.
#include "autograd/autograd.h"
#include "ttfs_ext.h"

namespace ttfs_ext {
namespace {

class ReadoutFunction : public torch::autograd::Function<ReadoutFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& t_in, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, double t_min) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor v = readout(t_in, weight, bias, t_min);
    ctx->save_for_backward({t_in, weight});
    ctx->saved_data["t_min"] = t_min;
    ctx->saved_data["has_bias"] = bias.has_value();
    return v;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const auto [g_in, g_w, g_b] = _readout_backward(grads[0], saved[0], saved[1], d["t_min"].toDouble(),
                                                    layer_mask(ctx, d["has_bias"].toBool()));
    return {g_in, g_w, g_b, at::Tensor()};
  }
};

at::Tensor readout_autograd(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            double t_min) {
  return ReadoutFunction::apply(t_in, weight, bias, t_min);
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, Autograd, m) {
  m.impl("readout", &readout_autograd);
  impl_no_double_backward(m, "_readout_backward");
}

}  // namespace ttfs_ext
