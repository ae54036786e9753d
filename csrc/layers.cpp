#include "layers.h"

#include "checks.h"
#include "linear_one_pass.h"

#include <atomic>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

namespace ttfs_ext {
namespace {

Dtype to_dtype(at::ScalarType s) {
  switch (s) {
    case at::kDouble: return Dtype::Float64;
    case at::kFloat: return Dtype::Float32;
    case at::kHalf: return Dtype::Float16;
    case at::kBFloat16: return Dtype::BFloat16;
    default: TORCH_CHECK(false, "ttfs_ext: unsupported dtype ", s);
  }
}

void check_launch(const char* err, const char* what) {
  TORCH_CHECK(err == nullptr, "ttfs_ext: ", what, " kernel failed: ", err == nullptr ? "" : err);
}

std::atomic<bool> g_input_checks{true};  // set_input_checks(); read by every forward call

// out = cast(scale * (in - offset)), zeroed where gate >= t_max (when a gate is given). In the
// same pass, where the backend can: a NaN/inf check of `in` (nonfinite), or the sums of spans
// of `span` consecutive outputs (span_sums; PrologueParams).
void run_prologue(const ElementwiseBackend& be, const at::Tensor& in, const at::Tensor* gate,
                  const at::Tensor& out, double offset, double scale, double t_max, int32_t* nonfinite = nullptr,
                  const at::Tensor* span_sums = nullptr, int64_t span = 0) {
  PrologueParams p;
  p.in = in.const_data_ptr();
  p.gate = gate != nullptr ? gate->const_data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.in_dtype = to_dtype(in.scalar_type());
  p.out_dtype = to_dtype(out.scalar_type());
  p.numel = in.numel();
  p.offset = offset;
  p.scale = scale;
  p.t_max = t_max;
  p.nonfinite = nonfinite;
  p.span_sums = span_sums != nullptr ? span_sums->data_ptr() : nullptr;
  p.span = span;
  check_launch(be.prologue(p, be.stream), "prologue");
}

// The forward's prologue x = t_min - t_in, which also checks t_in for NaN/inf where the
// backend can in the same read (elsewhere Python checks before the call).
void run_forward_prologue(const char* op, const ElementwiseBackend& be, const at::Tensor& t_in,
                          const at::Tensor& x, double t_min) {
  int32_t nonfinite = 0;
  const bool check = be.checks_finite_in_prologue && input_checks_enabled();
  run_prologue(be, t_in, nullptr, x, t_min, -1.0, 0.0, check ? &nonfinite : nullptr);
  TORCH_CHECK_VALUE(nonfinite == 0, op, ": t_in contains NaN or inf spike times");
}

// Bias, threshold and clamp on u laid out as (batch, channels, positions).
void run_epilogue(const ElementwiseBackend& be, const at::Tensor& u, const std::optional<at::Tensor>& bias,
                  bool bias_per_position, const at::Tensor& out, int64_t channels, int64_t positions,
                  double t_max, bool spiking) {
  at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  EpilogueParams p;
  p.u = u.const_data_ptr();
  p.bias = b.defined() ? b.const_data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.u_dtype = to_dtype(u.scalar_type());
  p.out_dtype = to_dtype(out.scalar_type());
  p.numel = u.numel();
  p.channels = channels;
  p.positions = positions;
  p.bias_stride_c = bias_per_position ? positions : 1;
  p.bias_stride_p = bias_per_position ? 1 : 0;
  p.t_max = t_max;
  p.spiking = spiking;
  check_launch(be.epilogue(p, be.stream), "epilogue");
}

// --- argument checks (checks.h): every message names the argument ---------------------

// t_min is the end of the input window on the inputs' time axis and t_max the end of the layer's
// window on the outputs' (absolute time: one axis, t_min < t_max, which the Python API checks;
// local time: the input width and the layer's width). Any finite pair is a valid layer.
void check_scalars(const char* op, double t_min, double t_max) {
  check_finite(op, "t_min", t_min);
  check_finite(op, "t_max", t_max);
}

void check_operands(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias) {
  check_time_dtype(op, t_in);
  const auto ts = t_in.scalar_type(), ws = weight.scalar_type();
  const bool low_precision = (ws == at::kHalf || ws == at::kBFloat16) && ts == at::kFloat;
  TORCH_CHECK(ws == ts || low_precision, op, ": weight must have the dtype of t_in (", ts,
              "), or be float16/bfloat16 with float32 t_in; got ", ws);
  check_device(op, "weight", weight, t_in);
  if (bias.has_value()) check_like(op, "bias", *bias, t_in);
}

// The tensors a backward op receives besides its inputs: the upstream gradient and, for the
// spiking layers, the forward's output spike times, both of the output's shape.
void check_grad_out(const char* op, const at::Tensor& t_in, const at::Tensor& grad_out, const at::Tensor* t_out,
                    at::IntArrayRef out_shape) {
  check_like(op, "grad_out", grad_out, t_in);
  check_shape(op, "grad_out", grad_out, out_shape);
  if (t_out != nullptr) {
    check_like(op, "t_out", *t_out, t_in);
    check_shape(op, "t_out", *t_out, out_shape);
  }
}

void check_linear_shapes(const char* op, const at::Tensor& t_in, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(weight.dim() == 2, op, ": weight must be 2-D (out_features, in_features), got shape ",
              weight.sizes());
  TORCH_CHECK(t_in.dim() >= 1 && t_in.size(-1) == weight.size(1), op, ": t_in must have shape (..., ",
              weight.size(1), ") to match weight ", weight.sizes(), ", got ", t_in.sizes());
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": bias must have shape (",
                weight.size(0), ",), got ", bias->sizes());
  }
}

at::Tensor empty_grad() { return at::Tensor(); }

// The upstream gradient, gated by the spike mask (gate != nullptr) or negated (readout), in
// the spike-time dtype (for the bias gradient) and in the matrix dtype (for the GEMMs; a
// cast only under low precision). With span_sums, the same pass writes the sum of each span
// of `span` consecutive gated gradients into it.
std::pair<at::Tensor, at::Tensor> gated_grad(const ElementwiseBackend& be, const at::Tensor& grad_out,
                                             const at::Tensor* gate, double scale, double t_max,
                                             at::ScalarType matrix_dtype, const at::Tensor* span_sums = nullptr,
                                             int64_t span = 0) {
  const at::Tensor go = grad_out.contiguous();
  at::Tensor gm_time = at::empty(go.sizes(), go.options());
  run_prologue(be, go, gate, gm_time, 0.0, scale, t_max, nullptr, span_sums, span);
  at::Tensor gm = matrix_dtype == go.scalar_type() ? gm_time : gm_time.to(matrix_dtype);
  return {gm, gm_time};
}

int64_t rows_of(const at::Tensor& t) {  // product of all dimensions but the last
  int64_t m = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) m *= t.size(d);
  return m;
}

std::vector<int64_t> with_last(at::IntArrayRef sizes, int64_t last) {
  std::vector<int64_t> out(sizes.begin(), sizes.end());
  out.back() = last;
  return out;
}

// Shared by dense (spiking) and readout: u = (t_min - t_in) W^T, then the epilogue.
at::Tensor linear_forward(const char* op, const ElementwiseBackend& be, const at::Tensor& t_in,
                          const at::Tensor& weight, const std::optional<at::Tensor>& bias, double t_min,
                          double t_max, bool spiking) {
  check_operands(op, t_in, weight, bias);
  check_linear_shapes(op, t_in, weight, bias);
  const int64_t in_f = weight.size(1), out_f = weight.size(0), rows = rows_of(t_in);
  const at::Tensor t = t_in.contiguous();
  at::Tensor x = at::empty({rows, in_f}, weight.options());
  run_forward_prologue(op, be, t, x, t_min);
  at::Tensor u;
  if (be.linear_one_pass_forward != nullptr && weight.scalar_type() == t.scalar_type() &&
      linear_one_pass_forward_pays(rows, weight.numel() * weight.element_size())) {
    // Few rows, a large W: one pass over W, unpacked (linear_one_pass.h).
    const at::Tensor w = weight.contiguous();
    u = at::empty({rows, out_f}, w.options());
    LinearOnePassForwardParams p;
    p.x = x.const_data_ptr();
    p.weight = w.const_data_ptr();
    p.u = u.data_ptr();
    p.dtype = to_dtype(w.scalar_type());
    p.rows = rows;
    p.in_features = in_f;
    p.out_features = out_f;
    check_launch(be.linear_one_pass_forward(p, be.stream), "one-pass forward");
  } else {
    u = at::mm(x, weight.t());
  }
  // The epilogue runs in place when the GEMM already produced the spike-time dtype.
  at::Tensor out = u.scalar_type() == t.scalar_type() ? u : at::empty({rows, out_f}, t.options());
  run_epilogue(be, u, bias, false, out, out_f, 1, t_max, spiking);
  return out.view(with_last(t_in.sizes(), out_f));
}

// Gradients of dense (gm = grad * [t_out < t_max]) and readout (gm = -grad) share one form:
//   dL/dt_in = gm W,   dL/dW = gm^T (t_in - t_min),   dL/db = -sum(gm).
Grads linear_backward(const char* op, const ElementwiseBackend& be, const at::Tensor& grad_out,
                      const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor* t_out,
                      double t_min, double t_max, std::array<bool, 3> mask) {
  check_operands(op, t_in, weight, std::nullopt);
  check_linear_shapes(op, t_in, weight, std::nullopt);
  const int64_t in_f = weight.size(1), out_f = weight.size(0), rows = rows_of(t_in);
  check_grad_out(op, t_in, grad_out, t_out, with_last(t_in.sizes(), out_f));
  const at::Tensor gate = t_out != nullptr ? t_out->contiguous() : at::Tensor();
  const auto [gm, gm_time] = gated_grad(be, grad_out, t_out != nullptr ? &gate : nullptr,
                                        t_out != nullptr ? 1.0 : -1.0, t_max, weight.scalar_type());

  at::Tensor g_in = empty_grad(), g_w = empty_grad(), g_b = empty_grad();
  if (mask[1] && be.linear_one_pass_backward != nullptr && weight.scalar_type() == t_in.scalar_type() &&
      linear_one_pass_pays(rows, weight.numel() * weight.element_size())) {
    // Few rows, a large W: both weight-sized GEMMs stream W; one pass does both (linear_one_pass.h).
    const at::Tensor w = weight.contiguous(), t = t_in.contiguous();
    g_w = at::empty(w.sizes(), w.options());
    if (mask[0]) g_in = at::empty(t_in.sizes(), t_in.options());
    LinearOnePassBackwardParams p;
    p.grad = gm.const_data_ptr();
    p.t_in = t.const_data_ptr();
    p.weight = w.const_data_ptr();
    p.grad_in = mask[0] ? g_in.data_ptr() : nullptr;
    p.grad_w = g_w.data_ptr();
    p.dtype = to_dtype(w.scalar_type());
    p.rows = rows;
    p.in_features = in_f;
    p.out_features = out_f;
    p.t_min = t_min;
    check_launch(be.linear_one_pass_backward(p, be.stream), "one-pass backward");
  } else {
    if (mask[0]) g_in = at::mm(gm.view({rows, out_f}), weight).to(t_in.scalar_type()).view(t_in.sizes());
    if (mask[1]) {
      at::Tensor d = at::empty({rows, in_f}, weight.options());
      run_prologue(be, t_in.contiguous(), nullptr, d, t_min, 1.0, 0.0);
      g_w = at::mm(gm.view({rows, out_f}).t(), d);
    }
  }
  if (mask[2]) g_b = gm_time.view({rows, out_f}).sum(0).neg_();
  return {g_in, g_w, g_b};
}

}  // namespace

void set_input_checks(bool enabled) { g_input_checks.store(enabled, std::memory_order_relaxed); }
bool input_checks_enabled() { return g_input_checks.load(std::memory_order_relaxed); }

at::Tensor dense_forward(const ElementwiseBackend& be, const at::Tensor& t_in, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, double t_min, double t_max) {
  check_scalars("ttfs_ext.linear", t_min, t_max);
  return linear_forward("ttfs_ext.linear", be, t_in, weight, bias, t_min, t_max, true);
}

Grads dense_backward(const ElementwiseBackend& be, const at::Tensor& grad_out, const at::Tensor& t_in,
                     const at::Tensor& weight, const at::Tensor& t_out, double t_min, double t_max,
                     std::array<bool, 3> output_mask) {
  check_scalars("ttfs_ext.linear backward", t_min, t_max);
  return linear_backward("ttfs_ext.linear backward", be, grad_out, t_in, weight, &t_out, t_min, t_max,
                         output_mask);
}

at::Tensor readout_forward(const ElementwiseBackend& be, const at::Tensor& t_in, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, double t_min) {
  check_finite("ttfs_ext.readout", "t_min", t_min);
  return linear_forward("ttfs_ext.readout", be, t_in, weight, bias, t_min, 0.0, false);
}

Grads readout_backward(const ElementwiseBackend& be, const at::Tensor& grad_out, const at::Tensor& t_in,
                       const at::Tensor& weight, double t_min, std::array<bool, 3> output_mask) {
  check_finite("ttfs_ext.readout backward", "t_min", t_min);
  return linear_backward("ttfs_ext.readout backward", be, grad_out, t_in, weight, nullptr, t_min, 0.0,
                         output_mask);
}

namespace {

void check_conv_bias(const char* op, const std::optional<at::Tensor>& bias, const ConvGeometry& g) {
  if (!bias.has_value()) return;
  const auto& b = *bias;
  const int64_t c_out = g.out_shape[1];
  const bool per_channel = b.dim() == 1 && b.size(0) == c_out;
  const bool per_position = b.dim() == 3 && b.size(0) == c_out && b.size(1) == g.h_out && b.size(2) == g.w_out;
  TORCH_CHECK(per_channel || per_position, op, ": bias must have shape (", c_out, ",) or (", c_out, ", ", g.h_out,
              ", ", g.w_out, "), got ", b.sizes());
}

}  // namespace

at::Tensor conv2d_forward(const ElementwiseBackend& be, const at::Tensor& t_in, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, double t_min, double t_max,
                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                          int64_t groups) {
  const char* op = "ttfs_ext.conv2d";
  check_scalars(op, t_min, t_max);
  check_operands(op, t_in, weight, bias);
  const ConvGeometry geometry = check_conv(op, t_in, weight, stride, padding, dilation, groups);
  check_conv_bias(op, bias, geometry);
  const at::Tensor t = t_in.contiguous();
  at::Tensor x = at::empty(t.sizes(), weight.options());
  run_forward_prologue(op, be, t, x, t_min);
  // Zero padding of activations is t_min padding of spike times.
  const int64_t zeros[2] = {0, 0};
  at::Tensor u = at::convolution(x, weight.contiguous(), std::nullopt, stride, padding, dilation, false,
                                 zeros, groups)
                     .contiguous();
  at::Tensor out = u.scalar_type() == t.scalar_type() ? u : at::empty(u.sizes(), t.options());
  const bool per_position = bias.has_value() && bias->dim() == 3;
  run_epilogue(be, u, bias, per_position, out, u.size(1), u.size(2) * u.size(3), t_max, true);
  return out;
}

Grads conv2d_backward(const ElementwiseBackend& be, const at::Tensor& grad_out, const at::Tensor& t_in,
                      const at::Tensor& weight, const at::Tensor& t_out, double t_min, double t_max,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                      int64_t groups, bool bias_per_position, std::array<bool, 3> mask) {
  const char* op = "ttfs_ext.conv2d backward";
  check_scalars(op, t_min, t_max);
  check_operands(op, t_in, weight, std::nullopt);
  const ConvGeometry geometry = check_conv(op, t_in, weight, stride, padding, dilation, groups);
  check_grad_out(op, t_in, grad_out, &t_out, geometry.out_shape);
  const at::Tensor gate = t_out.contiguous();
  // The per-channel bias gradient: sums of (image, channel) spans from the gating pass, where
  // the backend can, then a sum over images; else one more read of the gradient.
  const int64_t positions = grad_out.size(2) * grad_out.size(3);
  const bool span_sums = mask[2] && !bias_per_position && be.sums_spans_in_prologue && positions > 0;
  const at::Tensor sums = span_sums ? at::empty({grad_out.size(0), grad_out.size(1)}, grad_out.options())
                                    : at::Tensor();
  const auto [gm, gm_time] = gated_grad(be, grad_out, &gate, 1.0, t_max, weight.scalar_type(),
                                        span_sums ? &sums : nullptr, positions);

  at::Tensor g_in = empty_grad(), g_w = empty_grad(), g_b = empty_grad();
  if (mask[0] || mask[1]) {
    // The weight gradient needs the delays t_in - t_min; the input gradient only their shape.
    at::Tensor d = at::empty(t_in.sizes(), weight.options());
    if (mask[1]) run_prologue(be, t_in.contiguous(), nullptr, d, t_min, 1.0, 0.0);
    const int64_t zeros[2] = {0, 0};
    auto grads = at::convolution_backward(gm, d, weight.contiguous(), std::nullopt, stride, padding, dilation,
                                          false, zeros, groups, {mask[0], mask[1], false});
    if (mask[0]) g_in = std::get<0>(grads).to(t_in.scalar_type());
    if (mask[1]) g_w = std::get<1>(grads);
  }
  if (mask[2]) {
    g_b = bias_per_position ? gm_time.sum(0) : span_sums ? sums.sum(0) : gm_time.sum({0, 2, 3});
    g_b.neg_();
  }
  return {g_in, g_w, g_b};
}

}  // namespace ttfs_ext
