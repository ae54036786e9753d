// Autograd of the ttfs_ext ops, in C++ (as torchvision registers its ops): a Python autograd
// wrapper (torch.library.register_autograd) cost ~20-40 us per call, a visible share of a
// small layer's step (benchmarks/NOTES.md, v1). Each forward op's backward is its own op,
// called through the dispatcher, so torch.compile traces both; the backward ops take no
// gradient (double backward raises). Fake kernels and autocast stay in ttfs_ext/_ops.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ttfs_ext {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;
using Grads3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Grads4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Pair = std::tuple<at::Tensor, at::Tensor>;

template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

std::array<bool, 3> layer_mask(AutogradContext* ctx, bool has_bias) {
  // Edges follow the tensor arguments; an absent bias has none.
  return {ctx->needs_input_grad(0), ctx->needs_input_grad(1), has_bias && ctx->needs_input_grad(2)};
}

std::array<bool, 4> neuron_mask(AutogradContext* ctx) {
  return {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2), ctx->needs_input_grad(3)};
}

// The convolution geometry, kept for the backward.
struct Geometry {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
};

void save_geometry(AutogradContext* ctx, c10::IntArrayRef stride, c10::IntArrayRef padding,
                   c10::IntArrayRef dilation, int64_t groups) {
  ctx->saved_data["stride"] = stride;
  ctx->saved_data["padding"] = padding;
  ctx->saved_data["dilation"] = dilation;
  ctx->saved_data["groups"] = groups;
}

Geometry saved_geometry(AutogradContext* ctx) {
  auto& d = ctx->saved_data;
  return {d["stride"].toIntVector(), d["padding"].toIntVector(), d["dilation"].toIntVector(), d["groups"].toInt()};
}

// --- dense: t_out = min(t_max - (W (t_min - t_in) + b), t_max) ---------------------------

class DenseFunction : public torch::autograd::Function<DenseFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& t_in, const at::Tensor& weight,
                            const OptTensor& bias, double t_min, double t_max) {
    static const auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double,
                                                double)>("ttfs_ext::dense");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor t_out = op.call(t_in, weight, bias, t_min, t_max);
    ctx->save_for_backward({t_in, weight, t_out});
    ctx->saved_data["t_min"] = t_min;
    ctx->saved_data["t_max"] = t_max;
    ctx->saved_data["has_bias"] = bias.has_value();
    return t_out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op =
        op_handle<Grads3(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                         std::array<bool, 3>)>("ttfs_ext::_dense_backward");
    const auto saved = ctx->get_saved_variables();
    const auto [g_in, g_w, g_b] =
        op.call(grads[0], saved[0], saved[1], saved[2], ctx->saved_data["t_min"].toDouble(),
                ctx->saved_data["t_max"].toDouble(), layer_mask(ctx, ctx->saved_data["has_bias"].toBool()));
    return {g_in, g_w, g_b, at::Tensor(), at::Tensor()};
  }
};

// --- readout: V = W (t_min - t_in) + b ---------------------------------------------------

class ReadoutFunction : public torch::autograd::Function<ReadoutFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& t_in, const at::Tensor& weight,
                            const OptTensor& bias, double t_min) {
    static const auto op =
        op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double)>("ttfs_ext::readout");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor v = op.call(t_in, weight, bias, t_min);
    ctx->save_for_backward({t_in, weight});
    ctx->saved_data["t_min"] = t_min;
    ctx->saved_data["has_bias"] = bias.has_value();
    return v;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<Grads3(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                                            std::array<bool, 3>)>("ttfs_ext::_readout_backward");
    const auto saved = ctx->get_saved_variables();
    const auto [g_in, g_w, g_b] = op.call(grads[0], saved[0], saved[1], ctx->saved_data["t_min"].toDouble(),
                                          layer_mask(ctx, ctx->saved_data["has_bias"].toBool()));
    return {g_in, g_w, g_b, at::Tensor()};
  }
};

// --- conv2d: the dense form with a convolution -------------------------------------------

class Conv2dFunction : public torch::autograd::Function<Conv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& t_in, const at::Tensor& weight,
                            const OptTensor& bias, double t_min, double t_max, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
    static const auto op =
        op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double, double, c10::IntArrayRef,
                             c10::IntArrayRef, c10::IntArrayRef, int64_t)>("ttfs_ext::conv2d");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor t_out = op.call(t_in, weight, bias, t_min, t_max, stride, padding, dilation, groups);
    ctx->save_for_backward({t_in, weight, t_out});
    ctx->saved_data["t_min"] = t_min;
    ctx->saved_data["t_max"] = t_max;
    save_geometry(ctx, stride, padding, dilation, groups);
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["bias_per_position"] = bias.has_value() && bias->dim() == 3;
    return t_out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op =
        op_handle<Grads3(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                         c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t, bool,
                         std::array<bool, 3>)>("ttfs_ext::_conv2d_backward");
    const auto saved = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const Geometry g = saved_geometry(ctx);
    const auto [g_in, g_w, g_b] =
        op.call(grads[0], saved[0], saved[1], saved[2], d["t_min"].toDouble(), d["t_max"].toDouble(), g.stride,
                g.padding, g.dilation, g.groups, d["bias_per_position"].toBool(),
                layer_mask(ctx, d["has_bias"].toBool()));
    return {g_in, g_w, g_b, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// --- the event-exact general neuron: (t_out, slope); the slope takes no gradient ----------

class FirstSpikeDenseFunction : public torch::autograd::Function<FirstSpikeDenseFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& t_in, const at::Tensor& weight,
                               const at::Tensor& alpha, const at::Tensor& threshold, double t_start, double t_max,
                               double t_origin) {
    static const auto op = op_handle<Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          double, double, double)>("ttfs_ext::first_spike_dense");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [t_out, slope] = op.call(t_in, weight, alpha, threshold, t_start, t_max, t_origin);
    ctx->save_for_backward({t_in, weight, t_out, slope});
    ctx->mark_non_differentiable({slope});
    ctx->saved_data["t_start"] = t_start;
    ctx->saved_data["t_origin"] = t_origin;
    return {t_out, slope};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op =
        op_handle<Grads4(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         double, double, std::array<bool, 4>)>("ttfs_ext::_first_spike_dense_backward");
    const auto saved = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const auto [g_in, g_w, g_a, g_th] = op.call(grads[0], saved[0], saved[1], saved[2], saved[3],
                                                d["t_start"].toDouble(), d["t_origin"].toDouble(), neuron_mask(ctx));
    return {g_in, g_w, g_a, g_th, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class FirstSpikeConv2dFunction : public torch::autograd::Function<FirstSpikeConv2dFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& t_in, const at::Tensor& weight,
                               const at::Tensor& alpha, const at::Tensor& threshold, double t_start, double t_max,
                               c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                               int64_t groups, int64_t workspace, double t_origin) {
    static const auto op =
        op_handle<Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                       c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t, int64_t, double)>(
            "ttfs_ext::first_spike_conv2d");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [t_out, slope] = op.call(t_in, weight, alpha, threshold, t_start, t_max, stride, padding, dilation, groups,
                                  workspace, t_origin);
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
    static const auto op =
        op_handle<Grads4(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         double, double, c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t, bool, bool,
                         std::array<bool, 4>, int64_t)>("ttfs_ext::_first_spike_conv2d_backward");
    const auto saved = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const Geometry g = saved_geometry(ctx);
    const auto [g_in, g_w, g_a, g_th] =
        op.call(grads[0], saved[0], saved[1], saved[2], saved[3], d["t_start"].toDouble(), d["t_origin"].toDouble(),
                g.stride, g.padding, g.dilation, g.groups, d["alpha_per_position"].toBool(),
                d["threshold_per_position"].toBool(), neuron_mask(ctx), d["workspace"].toInt());
    variable_list out{g_in, g_w, g_a, g_th};
    out.resize(12);  // no gradient for t_start .. t_origin
    return out;
  }
};

// --- the backward ops: their own backward raises ------------------------------------------

// Autograd nodes are held by std::shared_ptr up to torch 2.12 and by c10::intrusive_ptr since.
using NodePtr = std::decay_t<decltype(std::declval<const at::Tensor&>().grad_fn())>;

template <typename Ptr = NodePtr>
Ptr make_error_node(std::string message, torch::autograd::edge_list&& edges) {
  if constexpr (std::is_same_v<Ptr, std::shared_ptr<torch::autograd::Node>>) {
    return std::make_shared<torch::autograd::Error>(std::move(message), std::move(edges));
  } else {
    return c10::make_intrusive<torch::autograd::Error>(std::move(message), std::move(edges));
  }
}

// Runs a backward op below autograd; where the caller differentiates through it
// (create_graph=True with inputs that require grad), its outputs get a node that raises.
void no_double_backward(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const auto n_args = schema.arguments().size();
  torch::autograd::edge_list edges;
  bool any_requires_grad = false;
  if (torch::autograd::GradMode::is_enabled()) {
    for (size_t i = stack->size() - n_args; i < stack->size(); ++i) {
      const c10::IValue& v = (*stack)[i];
      if (v.isTensor() && v.toTensor().requires_grad()) any_requires_grad = true;
    }
  }
  if (any_requires_grad) {
    std::vector<at::Tensor> inputs;
    for (size_t i = stack->size() - n_args; i < stack->size(); ++i) {
      if ((*stack)[i].isTensor()) inputs.push_back((*stack)[i].toTensor());
    }
    edges = torch::autograd::collect_next_edges(inputs);
  }
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  }
  if (!any_requires_grad) return;
  const std::string name = schema.name().substr(schema.name().find("::_") + 3);
  const NodePtr node = make_error_node("ttfs_ext: double backward through " + name +
                                           " is not supported (use ttfs_ext.reference for higher-order gradients)",
                                       std::move(edges));
  const auto n_out = schema.returns().size();
  for (size_t i = stack->size() - n_out; i < stack->size(); ++i) {
    at::Tensor t = (*stack)[i].isTensor() ? (*stack)[i].toTensor() : at::Tensor();
    if (t.defined() && t.is_floating_point()) torch::autograd::set_history(t, node);
  }
}

// The autograd kernels have the op's exact signature.
at::Tensor dense_autograd(const at::Tensor& t_in, const at::Tensor& weight, const OptTensor& bias, double t_min,
                          double t_max) {
  return DenseFunction::apply(t_in, weight, bias, t_min, t_max);
}

at::Tensor readout_autograd(const at::Tensor& t_in, const at::Tensor& weight, const OptTensor& bias, double t_min) {
  return ReadoutFunction::apply(t_in, weight, bias, t_min);
}

at::Tensor conv2d_autograd(const at::Tensor& t_in, const at::Tensor& weight, const OptTensor& bias, double t_min,
                           double t_max, c10::IntArrayRef stride, c10::IntArrayRef padding,
                           c10::IntArrayRef dilation, int64_t groups) {
  return Conv2dFunction::apply(t_in, weight, bias, t_min, t_max, stride, padding, dilation, groups);
}

Pair first_spike_dense_autograd(const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& alpha,
                                const at::Tensor& threshold, double t_start, double t_max, double t_origin) {
  auto out = FirstSpikeDenseFunction::apply(t_in, weight, alpha, threshold, t_start, t_max, t_origin);
  return {out[0], out[1]};
}

Pair first_spike_conv2d_autograd(const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& alpha,
                                 const at::Tensor& threshold, double t_start, double t_max, c10::IntArrayRef stride,
                                 c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                                 int64_t workspace, double t_origin) {
  auto out = FirstSpikeConv2dFunction::apply(t_in, weight, alpha, threshold, t_start, t_max, stride, padding,
                                             dilation, groups, workspace, t_origin);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, Autograd, m) {
  m.impl("dense", &dense_autograd);
  m.impl("readout", &readout_autograd);
  m.impl("conv2d", &conv2d_autograd);
  m.impl("first_spike_dense", &first_spike_dense_autograd);
  m.impl("first_spike_conv2d", &first_spike_conv2d_autograd);
  for (const char* name : {"_dense_backward", "_readout_backward", "_conv2d_backward", "_first_spike_dense_backward",
                           "_first_spike_conv2d_backward"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&no_double_backward>());
  }
}

}  // namespace ttfs_ext
