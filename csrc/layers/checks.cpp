#include "layers/checks.h"

#include <ATen/MemoryOverlap.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <utility>

namespace ttfs_ext {
namespace {

std::atomic<bool> g_input_checks{true};        // set_input_checks(); read by every forward call
std::atomic<bool> g_cuda_input_checks{false};  // set_cuda_input_checks()
std::atomic<bool> g_cpu_cuda_profile{false};   // set_cpu_kernel_profile("cuda")

using Named = std::pair<const char*, const at::Tensor&>;

void check_time_dtype(const char* op, const at::Tensor& t_in) {
  const auto ts = t_in.scalar_type();
  TORCH_CHECK_TYPE(ts == at::kDouble || ts == at::kFloat, op,
                   ": t_in (spike times) must be float32 or float64, got ", ts);
}

void check_device(const char* op, const char* name, const at::Tensor& x, const at::Tensor& t_in) {
  TORCH_CHECK_VALUE(x.device() == t_in.device(), op, ": ", name, " is on ", x.device(), " but t_in is on ",
                    t_in.device());
}

void check_shape(const char* op, const char* name, const at::Tensor& x, at::IntArrayRef expected) {
  TORCH_CHECK_VALUE(x.sizes() == expected, op, ": ", name, " has shape ", x.sizes(), ", expected ", expected);
}

// The matrix operand may be float16/bfloat16 with float32 spike times (autocast), on every device.
void check_weight_dtype(const char* op, const at::Tensor& weight, const at::Tensor& t_in) {
  const auto ts = t_in.scalar_type(), ws = weight.scalar_type();
  const bool low_precision = (ws == at::kHalf || ws == at::kBFloat16) && ts == at::kFloat;
  TORCH_CHECK_TYPE(ws == ts || low_precision, op, ": weight must have the dtype of t_in (", ts,
                   "), or float16/bfloat16 with float32 t_in (autocast); got ", ws);
}

// The B1 layers' tensors: spike times, the matrix operand, a bias in the spike-time dtype.
void check_layer_operands(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias) {
  check_time_dtype(op, t_in);
  check_weight_dtype(op, weight, t_in);
  check_device(op, "weight", weight, t_in);
  if (bias.has_value()) {
    TORCH_CHECK_TYPE(bias->is_floating_point(), op, ": bias must be a floating-point tensor or None, got ",
                     bias->scalar_type());
    check_like(op, "bias", *bias, t_in);
  }
}

// What a backward op receives besides the inputs: the upstream gradient and the forward's
// outputs, of the output's shape.
void check_outputs(const char* op, const at::Tensor& t_in, std::initializer_list<Named> outputs,
                   at::IntArrayRef out_shape) {
  for (const auto& [name, x] : outputs) {
    check_like(op, name, x, t_in);
    check_shape(op, name, x, out_shape);
  }
}

void check_linear_shapes(const char* op, const at::Tensor& t_in, const at::Tensor& weight) {
  TORCH_CHECK_VALUE(weight.dim() == 2, op, ": weight must be 2-D (out_features, in_features), got shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(t_in.dim() >= 1 && t_in.size(-1) == weight.size(1), op, ": t_in must have shape (..., ",
                    weight.size(1), ") to match weight ", weight.sizes(), ", got ", t_in.sizes());
}

std::vector<int64_t> linear_out_shape(const at::Tensor& t_in, const at::Tensor& weight) {
  std::vector<int64_t> out(t_in.sizes().begin(), t_in.sizes().end());
  out.back() = weight.size(0);
  return out;
}

std::array<int64_t, 2> pair_arg(const char* op, const char* name, at::IntArrayRef v, int64_t minimum) {
  TORCH_CHECK_VALUE(v.size() == 2 && v[0] >= minimum && v[1] >= minimum, op, ": ", name, " must be an int >= ",
                    minimum, " or a pair of them, got ", v);
  return {v[0], v[1]};
}

// Ranks, channels, groups, stride >= 1, padding >= 0, dilation >= 1, a kernel that fits.
ConvGeometry check_conv(const char* op, const at::Tensor& t_in, const at::Tensor& weight, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK_VALUE(t_in.dim() == 4, op, ": t_in must be (N, C, H, W), got shape ", t_in.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4, op, ": weight must be 4-D (C_out, C_in/groups, kH, kW), got shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(groups >= 1, op, ": groups must be a positive int, got ", groups);
  TORCH_CHECK_VALUE(t_in.size(1) == weight.size(1) * groups, op, ": t_in has ", t_in.size(1),
                    " channels but weight ", weight.sizes(), " with groups=", groups, " expects ",
                    weight.size(1) * groups);
  TORCH_CHECK_VALUE(weight.size(0) % groups == 0, op, ": out channels (", weight.size(0),
                    ") must be divisible by groups (", groups, ")");
  ConvGeometry g;
  g.stride = pair_arg(op, "stride", stride, 1);
  g.padding = pair_arg(op, "padding", padding, 0);
  g.dilation = pair_arg(op, "dilation", dilation, 1);
  g.groups = groups;
  const int64_t kh = weight.size(2), kw = weight.size(3);
  const int64_t span_h = t_in.size(2) + 2 * g.padding[0] - g.dilation[0] * (kh - 1) - 1;
  const int64_t span_w = t_in.size(3) + 2 * g.padding[1] - g.dilation[1] * (kw - 1) - 1;
  TORCH_CHECK_VALUE(kh >= 1 && kw >= 1 && span_h >= 0 && span_w >= 0, op, ": the kernel ", weight.sizes().slice(2),
                    " (dilation ", dilation, ") does not fit the padded input ", t_in.sizes().slice(2),
                    " (padding ", padding, ")");
  g.h_out = span_h / g.stride[0] + 1;
  g.w_out = span_w / g.stride[1] + 1;
  g.out_shape = {t_in.size(0), weight.size(0), g.h_out, g.w_out};
  return g;
}

// A per-channel (C_out,) or per-position (C_out, H_out, W_out) parameter of a convolution.
void check_conv_param(const char* op, const char* name, const at::Tensor& x, const ConvGeometry& g) {
  const int64_t c_out = g.out_shape[1];
  const bool per_channel = x.dim() == 1 && x.size(0) == c_out;
  const bool per_position = x.dim() == 3 && x.size(0) == c_out && x.size(1) == g.h_out && x.size(2) == g.w_out;
  TORCH_CHECK_VALUE(per_channel || per_position, op, ": ", name, " must have shape (", c_out, ",) or (", c_out, ", ",
                    g.h_out, ", ", g.w_out, "), got ", x.sizes());
}

// The general neuron: every tensor in the spike-time dtype, on t_in's device.
void check_neuron_operands(const char* op, const at::Tensor& t_in, std::initializer_list<Named> params) {
  check_time_dtype(op, t_in);
  for (const auto& [name, x] : params) check_like(op, name, x, t_in);
}

// The window ends after integration starts: t_max (outputs' axis) + t_origin > t_start (inputs').
void check_neuron_window(const char* op, double t_start, double t_max, double t_origin) {
  check_finite(op, "t_start", t_start);
  check_finite(op, "t_max", t_max);
  check_finite(op, "t_origin", t_origin);
  TORCH_CHECK_VALUE(t_max + t_origin > t_start, op, ": the window must end after integration starts, t_start < "
                    "t_max + t_origin, got t_start=", t_start, ", t_max=", t_max, " and t_origin=", t_origin);
}

void check_first_spike_rows(const char* op, const at::Tensor& t_in, const at::Tensor& weight) {
  TORCH_CHECK_VALUE(t_in.dim() == 2, op, ": t_in must be 2-D (rows, in_features), got shape ", t_in.sizes());
  check_linear_shapes(op, t_in, weight);
}

}  // namespace

void set_input_checks(bool enabled) { g_input_checks.store(enabled, std::memory_order_relaxed); }
bool input_checks_enabled() { return g_input_checks.load(std::memory_order_relaxed); }
void set_cuda_input_checks(bool enabled) { g_cuda_input_checks.store(enabled, std::memory_order_relaxed); }
bool cuda_input_checks_enabled() { return g_cuda_input_checks.load(std::memory_order_relaxed); }

bool set_cpu_kernel_profile(const std::string& name) {
  if (name != "cpu" && name != "cuda") return false;
  g_cpu_cuda_profile.store(name == "cuda", std::memory_order_relaxed);
  return true;
}
const char* cpu_kernel_profile() { return cpu_runs_cuda_profile() ? "cuda" : "cpu"; }
bool cpu_runs_cuda_profile() { return g_cpu_cuda_profile.load(std::memory_order_relaxed); }
bool cuda_rules(const c10::Device& device) { return device.is_cuda() || (device.is_cpu() && cpu_runs_cuda_profile()); }

bool data_checks_enabled(const c10::Device& device) {
  return input_checks_enabled() && (!cuda_rules(device) || cuda_input_checks_enabled());
}

void check_finite(const char* op, const char* name, double value) {
  TORCH_CHECK_VALUE(std::isfinite(value), op, ": ", name, " must be finite, got ", value);
}

void check_like(const char* op, const char* name, const at::Tensor& x, const at::Tensor& t_in) {
  TORCH_CHECK_TYPE(x.scalar_type() == t_in.scalar_type(), op, ": ", name, " must have the dtype of t_in (",
                   t_in.scalar_type(), "), got ", x.scalar_type());
  check_device(op, name, x, t_in);
}

void check_finite_data(const char* op, const char* name, const at::Tensor& x) {
  if (!data_checks_enabled(x.device()) || x.numel() == 0 || x.is_meta() ||
      x.key_set().has(c10::DispatchKey::Python)) {
    return;
  }
  // A finite sum of squares proves it in one vectorised read (a NaN or inf element makes it NaN
  // or +inf, squares cannot cancel); only a non-finite one, which overflow can also give, pays
  // for the exact test.
  const at::Tensor flat = x.contiguous().view(-1);
  const bool finite = std::isfinite(at::dot(flat, flat).item<double>()) || at::isfinite(flat).all().item<bool>();
  TORCH_CHECK_VALUE(finite, op, ": ", name, " contains NaN or inf", std::string(name) == "t_in" ? " spike times" : "");
}

void check_linear(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, double t_min, std::optional<double> t_max) {
  // The scalars are the end of the input window on the inputs' axis and the end of the layer's
  // on the outputs' (local time: two widths): any finite pair is a layer. The order of an
  // absolute window is the Python API's rule.
  check_finite(op, "t_min", t_min);
  if (t_max.has_value()) check_finite(op, "t_max", *t_max);
  check_layer_operands(op, t_in, weight, bias);
  check_linear_shapes(op, t_in, weight);
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": bias must have shape (",
                      weight.size(0), ",), got ", bias->sizes());
  }
}

void check_linear_backward(const char* op, const at::Tensor& grad_out, const at::Tensor& t_in,
                           const at::Tensor& weight, const at::Tensor* t_out, double t_min,
                           std::optional<double> t_max) {
  check_linear(op, t_in, weight, std::nullopt, t_min, t_max);
  const auto out_shape = linear_out_shape(t_in, weight);
  if (t_out != nullptr) {
    check_outputs(op, t_in, {{"grad_out", grad_out}, {"t_out", *t_out}}, out_shape);
  } else {
    check_outputs(op, t_in, {{"grad_out", grad_out}}, out_shape);
  }
}

ConvGeometry check_conv2d(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, double t_min, double t_max, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_finite(op, "t_min", t_min);
  check_finite(op, "t_max", t_max);
  check_layer_operands(op, t_in, weight, bias);
  const ConvGeometry g = check_conv(op, t_in, weight, stride, padding, dilation, groups);
  if (bias.has_value()) check_conv_param(op, "bias", *bias, g);
  return g;
}

ConvGeometry check_conv2d_backward(const char* op, const at::Tensor& grad_out, const at::Tensor& t_in,
                                   const at::Tensor& weight, const at::Tensor& t_out, double t_min, double t_max,
                                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                   int64_t groups) {
  const ConvGeometry g = check_conv2d(op, t_in, weight, std::nullopt, t_min, t_max, stride, padding, dilation, groups);
  check_outputs(op, t_in, {{"grad_out", grad_out}, {"t_out", t_out}}, g.out_shape);
  return g;
}

void check_first_spike_linear(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                              const at::Tensor& alpha, const at::Tensor& threshold, double t_start, double t_max,
                              double t_origin) {
  check_neuron_window(op, t_start, t_max, t_origin);
  check_neuron_operands(op, t_in, {{"weight", weight}, {"alpha", alpha}, {"threshold", threshold}});
  check_first_spike_rows(op, t_in, weight);
  for (const auto& [name, x] : {Named{"alpha", alpha}, Named{"threshold", threshold}}) {
    TORCH_CHECK_VALUE(x.dim() == 1 && x.size(0) == weight.size(0), op, ": ", name, " must have shape (",
                      weight.size(0), ",), got ", x.sizes());
  }
}

void check_first_spike_linear_backward(const char* op, const at::Tensor& grad_out, const at::Tensor& t_in,
                                       const at::Tensor& weight, const at::Tensor& t_out, const at::Tensor& slope,
                                       double t_start, double t_origin) {
  check_finite(op, "t_start", t_start);
  check_finite(op, "t_origin", t_origin);
  check_neuron_operands(op, t_in, {{"weight", weight}});
  check_first_spike_rows(op, t_in, weight);
  check_outputs(op, t_in, {{"grad_out", grad_out}, {"t_out", t_out}, {"slope", slope}},
                {t_in.size(0), weight.size(0)});
}

namespace {

ConvGeometry check_neuron_conv(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups, int64_t workspace) {
  const ConvGeometry g = check_conv(op, t_in, weight, stride, padding, dilation, groups);
  TORCH_CHECK_VALUE(workspace >= 1, op, ": workspace must be positive, got ", workspace);
  return g;
}

}  // namespace

ConvGeometry check_first_spike_conv2d(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                                      const at::Tensor& alpha, const at::Tensor& threshold, double t_start,
                                      double t_max, at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups, int64_t workspace, double t_origin) {
  check_neuron_window(op, t_start, t_max, t_origin);
  check_neuron_operands(op, t_in, {{"weight", weight}, {"alpha", alpha}, {"threshold", threshold}});
  const ConvGeometry g = check_neuron_conv(op, t_in, weight, stride, padding, dilation, groups, workspace);
  check_conv_param(op, "alpha", alpha, g);
  check_conv_param(op, "threshold", threshold, g);
  return g;
}

ConvGeometry check_first_spike_conv2d_backward(const char* op, const at::Tensor& grad_out, const at::Tensor& t_in,
                                               const at::Tensor& weight, const at::Tensor& t_out,
                                               const at::Tensor& slope, double t_start, double t_origin,
                                               at::IntArrayRef stride, at::IntArrayRef padding,
                                               at::IntArrayRef dilation, int64_t groups, int64_t workspace) {
  check_finite(op, "t_start", t_start);
  check_finite(op, "t_origin", t_origin);
  check_neuron_operands(op, t_in, {{"weight", weight}});
  const ConvGeometry g = check_neuron_conv(op, t_in, weight, stride, padding, dilation, groups, workspace);
  check_outputs(op, t_in, {{"grad_out", grad_out}, {"t_out", t_out}, {"slope", slope}}, g.out_shape);
  return g;
}

// --- fs_activation ---------------------------------------------------------------------------

void check_fs_activation(const char* op, const at::Tensor& x, const at::Tensor& h, const at::Tensor& d,
                         const at::Tensor& T, int64_t spike_mode) {
  const auto xs = x.scalar_type();
  const bool low_precision = (xs == at::kHalf || xs == at::kBFloat16) && cuda_rules(x.device());
  TORCH_CHECK_TYPE(xs == at::kDouble || xs == at::kFloat || low_precision, op,
                   ": x must be float32 or float64 (or float16/bfloat16 on CUDA), got ", xs);
  const auto ps = low_precision ? at::kFloat : xs;
  const int64_t k = h.dim() == 1 ? h.size(0) : -1;
  for (const auto& [name, p] : {Named{"h", h}, Named{"d", d}, Named{"T", T}}) {
    TORCH_CHECK_TYPE(p.scalar_type() == ps, op, ": ", name, " must have dtype ", ps,
                     low_precision ? " (float32 for float16/bfloat16 x)" : " (the dtype of x)", ", got ",
                     p.scalar_type());
    TORCH_CHECK_VALUE(p.device() == x.device(), op, ": ", name, " is on ", p.device(), " but x is on ", x.device());
    TORCH_CHECK_VALUE(p.dim() == 1, op, ": ", name, " must be 1-D (K,), got shape ", p.sizes());
    TORCH_CHECK_VALUE(p.size(0) == k, op, ": h, d and T must have one length K, got h ", h.sizes(), ", d ",
                      d.sizes(), " and T ", T.sizes());
  }
  TORCH_CHECK_VALUE(k >= 1 && k <= 32, op, ": the number of steps K (the length of h, d and T) must be in 1..32, got ",
                    k);
  TORCH_CHECK_VALUE(spike_mode >= 0 && spike_mode <= 2, op,
                    ": spike_mode must be 0 (none), 1 (counts) or 2 (masks), got ", spike_mode);
}

void check_fs_activation_backward(const char* op, const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_reg,
                                  const at::Tensor& x, const at::Tensor& h, const at::Tensor& d, const at::Tensor& T) {
  check_fs_activation(op, x, h, d, T, 0);
  TORCH_CHECK_TYPE(grad_y.scalar_type() == x.scalar_type(), op, ": grad_y must have the dtype of x (",
                   x.scalar_type(), "), got ", grad_y.scalar_type());
  TORCH_CHECK_VALUE(grad_y.device() == x.device(), op, ": grad_y is on ", grad_y.device(), " but x is on ",
                    x.device());
  check_shape(op, "grad_y", grad_y, x.sizes());
  if (grad_reg.has_value()) {
    TORCH_CHECK_TYPE(grad_reg->is_floating_point(), op, ": grad_reg must be a floating-point tensor or None, got ",
                     grad_reg->scalar_type());
    TORCH_CHECK_VALUE(grad_reg->device() == x.device(), op, ": grad_reg is on ", grad_reg->device(),
                      " but x is on ", x.device());
    check_shape(op, "grad_reg", *grad_reg, h.sizes());
  }
}

}  // namespace ttfs_ext

namespace ttfs_ext {

at::MemoryFormat spide_memory_format(const at::Tensor& u) {
  return u.is_contiguous() ? at::MemoryFormat::Contiguous : at::MemoryFormat::ChannelsLast;
}

void check_spide_step(const char* op, const at::Tensor& u, const at::Tensor& rate,
                      std::initializer_list<std::pair<const char*, const at::Tensor*>> inputs, double v_th,
                      double reset, double amplitude, double leak) {
  const auto us = u.scalar_type();
  TORCH_CHECK_TYPE(us == at::kDouble || us == at::kFloat, op,
                   ": u (the membrane potential) must be float32 or float64, got ", us);
  TORCH_CHECK_VALUE(u.is_contiguous() || (u.dim() == 4 && u.is_contiguous(at::MemoryFormat::ChannelsLast)), op,
                    ": u (updated in place) must be contiguous, or channels last");
  auto like_u = [&](const char* name, const at::Tensor& x) {
    TORCH_CHECK_TYPE(x.scalar_type() == us, op, ": ", name, " must have the dtype of u (", us, "), got ",
                     x.scalar_type());
    TORCH_CHECK_VALUE(x.device() == u.device(), op, ": ", name, " is on ", x.device(), " but u is on ", u.device());
    TORCH_CHECK_VALUE(x.sizes() == u.sizes(), op, ": ", name, " has shape ", x.sizes(), ", expected u's shape ",
                      u.sizes());
  };
  like_u("rate", rate);
  TORCH_CHECK_VALUE(rate.is_contiguous(spide_memory_format(u)), op,
                    ": rate (updated in place) must have the memory layout of u (",
                    u.is_contiguous() ? "contiguous" : "channels last", "), got strides ", rate.strides());
  // In place as PyTorch's own in-place ops are (the ADInplaceOrView kernels in ops/spide_neuron.cpp
  // bump the version counters): never on a leaf that requires grad, nor on an inference tensor
  // outside inference mode, with PyTorch's words.
  for (const auto& [name, x] : {std::pair<const char*, const at::Tensor&>{"u", u}, {"rate", rate}}) {
    TORCH_CHECK(!(at::GradMode::is_enabled() && x.requires_grad() && x.is_leaf()), op, ": ", name,
                " (updated in place) is a leaf Variable that requires grad: a leaf Variable that requires grad is "
                "being used in an in-place operation.");
    TORCH_CHECK(!(x.is_inference() && !c10::InferenceMode::is_enabled()), op, ": ", name,
                " (updated in place) is an inference tensor: Inplace update to inference tensor outside "
                "InferenceMode is not allowed. You can make a clone to get a normal tensor before doing inplace "
                "update.");
  }
  // The kernels take every pointer as __restrict: what they write (u, rate) may share no memory
  // with any other argument. Read-only arguments may alias each other.
  auto overlap = [](const at::Tensor& a, const at::Tensor& b) {
    const auto status = at::get_overlap_status(a, b);
    return status == at::MemOverlapStatus::Full || status == at::MemOverlapStatus::Partial;
  };
  TORCH_CHECK_VALUE(u.numel() == 0 || !overlap(rate, u), op,
                    ": rate and u must not overlap in memory (both are updated in place)");
  for (const auto& [name, x] : inputs) {
    if (x == nullptr || !x->defined()) continue;
    like_u(name, *x);
    for (const auto& [written, w] : {std::pair<const char*, const at::Tensor&>{"u", u}, {"rate", rate}}) {
      TORCH_CHECK_VALUE(x->numel() == 0 || !overlap(*x, w), op, ": ", name, " must not overlap ", written,
                        " in memory (", written, " is updated in place)");
    }
  }
  TORCH_CHECK_VALUE(std::isfinite(v_th) && v_th > 0, op, ": v_th must be finite and positive, got ", v_th);
  TORCH_CHECK_VALUE(std::isfinite(reset) && reset >= 0, op, ": reset must be finite and >= 0, got ", reset);
  TORCH_CHECK_VALUE(std::isfinite(amplitude), op, ": amplitude must be finite, got ", amplitude);
  TORCH_CHECK_VALUE(leak > 0 && leak <= 1, op, ": leak must lie in (0, 1], got ", leak);
}

}  // namespace ttfs_ext

namespace ttfs_ext {

void check_spike_conv2d(const char* op, const at::Tensor& input, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                        at::IntArrayRef dilation, bool transposed, at::IntArrayRef output_size) {
  const auto dt = input.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kDouble || dt == at::kFloat, op, ": input must be float32 or float64, got ", dt);
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be 4-D (N, C_in, H, W), got shape ", input.sizes());
  TORCH_CHECK_TYPE(weight.scalar_type() == dt, op, ": weight must have the dtype of input (", dt, "), got ",
                   weight.scalar_type());
  TORCH_CHECK_VALUE(weight.device() == input.device(), op, ": weight is on ", weight.device(), " but input is on ",
                    input.device());
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(0) == input.size(1), op,
                    ": weight must be packed (C_in, kH, kW, C_out) with C_in = input.size(1) = ", input.size(1),
                    " (ttfs_ext.functional.spike_conv_weight), got shape ", weight.sizes());
  // What the dense convolution (the reference) refuses, or computes incoherently (C_in = 0).
  TORCH_CHECK_VALUE(input.size(1) >= 1, op, ": input must have at least one channel, got shape ", input.sizes());
  TORCH_CHECK_VALUE(weight.size(1) >= 1 && weight.size(2) >= 1, op,
                    ": kernel size should be greater than zero, but got kernel_height: ", weight.size(1),
                    " kernel_width: ", weight.size(2));
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK_TYPE(bias->scalar_type() == dt, op, ": bias must have the dtype of input (", dt, "), got ",
                     bias->scalar_type());
    TORCH_CHECK_VALUE(bias->device() == input.device(), op, ": bias is on ", bias->device(), " but input is on ",
                      input.device());
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(3), op, ": bias must have shape (",
                      weight.size(3), ",), got ", bias->sizes());
  }
  const std::pair<const char*, at::IntArrayRef> lists[] = {
      {"stride", stride}, {"padding", padding}, {"dilation", dilation}, {"output_size", output_size}};
  for (const auto& [name, v] : lists) {
    TORCH_CHECK_VALUE(v.size() == 2, op, ": ", name, " must have 2 entries, got ", v);
  }
  // The kernel lists channels as int32; geometry beyond int32 would overflow the size formulas.
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  TORCH_CHECK_VALUE(input.size(1) <= kMax, op, ": input has ", input.size(1), " channels, at most ", kMax);
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK_VALUE(stride[i] >= 1 && stride[i] <= kMax, op, ": stride must be >= 1 (and fit int32), got ", stride);
    TORCH_CHECK_VALUE(padding[i] >= 0 && padding[i] <= kMax, op, ": padding must be >= 0 (and fit int32), got ",
                      padding);
    TORCH_CHECK_VALUE(dilation[i] >= 1 && dilation[i] <= kMax, op, ": dilation must be >= 1 (and fit int32), got ",
                      dilation);
    const int64_t in = input.size(2 + i), span = dilation[i] * (weight.size(1 + i) - 1) + 1;
    if (transposed) {
      // conv_transpose2d's sizes: the smallest plus an output_padding below max(stride, dilation).
      const int64_t lo = (in - 1) * stride[i] - 2 * padding[i] + span;
      const int64_t hi = lo + std::max(stride[i], dilation[i]) - 1;
      TORCH_CHECK_VALUE(output_size[i] >= std::max<int64_t>(lo, 0) && output_size[i] <= hi, op, ": output_size ",
                        output_size, " is not a size conv_transpose2d gives for input ", input.sizes(),
                        " (dimension ", i, ": ", lo, " to ", hi, ")");
    } else {
      const int64_t expect = (in + 2 * padding[i] - span) / stride[i] + 1;
      TORCH_CHECK_VALUE(in + 2 * padding[i] >= span && output_size[i] == expect, op, ": output_size ",
                        output_size, " is not the conv2d output size of input ", input.sizes(), " (dimension ", i,
                        ": ", expect, ")");
    }
  }
}

}  // namespace ttfs_ext
