// Autograd of conv2d: the linear form with a convolution.
#include "autograd/autograd.h"
#include "ttfs_ext.h"

namespace ttfs_ext {
namespace {

class Conv2dFunction : public torch::autograd::Function<Conv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& t_in, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, double t_min, double t_max,
                            c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                            int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor t_out = conv2d(t_in, weight, bias, t_min, t_max, stride, padding, dilation, groups);
    ctx->save_for_backward({t_in, weight, t_out});
    ctx->saved_data["t_min"] = t_min;
    ctx->saved_data["t_max"] = t_max;
    save_geometry(ctx, stride, padding, dilation, groups);
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["bias_per_position"] = bias.has_value() && bias->dim() == 3;
    return t_out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const Geometry g = saved_geometry(ctx);
    const auto [g_in, g_w, g_b] =
        _conv2d_backward(grads[0], saved[0], saved[1], saved[2], d["t_min"].toDouble(), d["t_max"].toDouble(),
                         g.stride, g.padding, g.dilation, g.groups, d["bias_per_position"].toBool(),
                         layer_mask(ctx, d["has_bias"].toBool()));
    variable_list out{g_in, g_w, g_b};
    out.resize(9);  // no gradient for t_min .. groups
    return out;
  }
};

at::Tensor conv2d_autograd(const at::Tensor& t_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           double t_min, double t_max, c10::IntArrayRef stride, c10::IntArrayRef padding,
                           c10::IntArrayRef dilation, int64_t groups) {
  return Conv2dFunction::apply(t_in, weight, bias, t_min, t_max, stride, padding, dilation, groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, Autograd, m) {
  m.impl("conv2d", &conv2d_autograd);
  impl_no_double_backward(m, "_conv2d_backward");
}

}  // namespace ttfs_ext
