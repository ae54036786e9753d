// Autograd of the event-exact general neuron: (t_out, slope); the slope takes no gradient.
#include "autograd/autograd.h"
#include "ttfs_ext.h"

namespace ttfs_ext {
namespace {

using TensorPair = std::tuple<at::Tensor, at::Tensor>;

class FirstSpikeLinearFunction : public torch::autograd::Function<FirstSpikeLinearFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& t_in, const at::Tensor& weight,
                               const at::Tensor& alpha, const at::Tensor& threshold, double t_start, double t_max,
                               double t_origin) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [t_out, slope] = first_spike_linear(t_in, weight, alpha, threshold, t_start, t_max, t_origin);
    ctx->save_for_backward({t_in, weight, t_out, slope});
    ctx->mark_non_differentiable({slope});
    ctx->saved_data["t_start"] = t_start;
    ctx->saved_data["t_origin"] = t_origin;
    return {t_out, slope};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const auto [g_in, g_w, g_a, g_th] =
        _first_spike_linear_backward(grads[0], saved[0], saved[1], saved[2], saved[3], d["t_start"].toDouble(),
                                     d["t_origin"].toDouble(), neuron_mask(ctx));
    return {g_in, g_w, g_a, g_th, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class FirstSpikeConv2dFunction : public torch::autograd::Function<FirstSpikeConv2dFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& t_in, const at::Tensor& weight,
                               const at::Tensor& alpha, const at::Tensor& threshold, double t_start, double t_max,
                               c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                               int64_t groups, int64_t workspace, double t_origin) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [t_out, slope] = first_spike_conv2d(t_in, weight, alpha, threshold, t_start, t_max, stride, padding,
                                             dilation, groups, workspace, t_origin);
    ctx->save_for_backward({t_in, weight, t_out, slope});
    ctx->mark_non_differentiable({slope});
    ctx->saved_data["t_start"] = t_start;
    ctx->saved_data["t_origin"] = t_origin;
    save_geometry(ctx, stride, padding, dilation, groups);
    ctx->saved_data["workspace"] = workspace;
    ctx->saved_data["alpha_per_position"] = alpha.dim() == 3;
    ctx->saved_data["threshold_per_position"] = threshold.dim() == 3;
    return {t_out, slope};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const Geometry g = saved_geometry(ctx);
    const auto [g_in, g_w, g_a, g_th] = _first_spike_conv2d_backward(
        grads[0], saved[0], saved[1], saved[2], saved[3], d["t_start"].toDouble(), d["t_origin"].toDouble(),
        g.stride, g.padding, g.dilation, g.groups, d["alpha_per_position"].toBool(),
        d["threshold_per_position"].toBool(), neuron_mask(ctx), d["workspace"].toInt());
    variable_list out{g_in, g_w, g_a, g_th};
    out.resize(12);  // no gradient for t_start .. t_origin
    return out;
  }
};

TensorPair first_spike_linear_autograd(const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& alpha,
                                       const at::Tensor& threshold, double t_start, double t_max, double t_origin) {
  auto out = FirstSpikeLinearFunction::apply(t_in, weight, alpha, threshold, t_start, t_max, t_origin);
  return {out[0], out[1]};
}

TensorPair first_spike_conv2d_autograd(const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& alpha,
                                       const at::Tensor& threshold, double t_start, double t_max,
                                       c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                       int64_t groups, int64_t workspace, double t_origin) {
  auto out = FirstSpikeConv2dFunction::apply(t_in, weight, alpha, threshold, t_start, t_max, stride, padding,
                                             dilation, groups, workspace, t_origin);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, Autograd, m) {
  m.impl("first_spike_linear", &first_spike_linear_autograd);
  m.impl("first_spike_conv2d", &first_spike_conv2d_autograd);
  impl_no_double_backward(m, "_first_spike_linear_backward");
  impl_no_double_backward(m, "_first_spike_conv2d_backward");
}

}  // namespace ttfs_ext
