// linear and readout share one form: u = (t_min - t_in) W^T, then the epilogue; gradients
//   dL/dt_in = gm W,   dL/dW = gm^T (t_in - t_min),   dL/db = -sum(gm),
// with gm = grad * [t_out < t_max] (linear) or -grad (readout).
#include "layers/checks.h"
#include "layers/layers.h"

#include <vector>

namespace ttfs_ext {
namespace {

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

// Checked by the caller.
at::Tensor forward(const char* op, const KernelTable& k, const at::Tensor& t_in, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, double t_min, double t_max, bool spiking) {
  const int64_t in_f = weight.size(1), out_f = weight.size(0), rows = rows_of(t_in);
  const at::Tensor t = t_in.contiguous();
  at::Tensor x = at::empty({rows, in_f}, weight.options());
  run_forward_prologue(op, k, t, x, t_min);
  at::Tensor u;
  if (k.linear_one_pass_forward != nullptr && weight.scalar_type() == t.scalar_type() &&
      k.one_pass_forward_pays(rows, weight.numel() * weight.element_size())) {
    // Few rows, a large W: one pass over W, unpacked (cpu/linear_one_pass.h).
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
    check_launch(k.linear_one_pass_forward(p, k.stream), "one-pass forward");
  } else {
    u = at::mm(x, weight.t());
  }
  // The epilogue runs in place when the GEMM already produced the spike-time dtype.
  at::Tensor out = u.scalar_type() == t.scalar_type() ? u : at::empty({rows, out_f}, t.options());
  run_epilogue(k, u, bias, false, out, out_f, 1, t_max, spiking);
  return out.view(with_last(t_in.sizes(), out_f));
}

// Checked by the caller; t_out nullptr for readout.
Grads3 backward(const KernelTable& k, const at::Tensor& grad_out, const at::Tensor& t_in, const at::Tensor& weight,
                const at::Tensor* t_out, double t_min, double t_max, std::array<bool, 3> mask) {
  const int64_t in_f = weight.size(1), out_f = weight.size(0), rows = rows_of(t_in);
  const at::Tensor gate = t_out != nullptr ? t_out->contiguous() : at::Tensor();
  const auto [gm, gm_time] = gated_grad(k, grad_out, t_out != nullptr ? &gate : nullptr,
                                        t_out != nullptr ? 1.0 : -1.0, t_max, weight.scalar_type());

  at::Tensor g_in, g_w, g_b;
  if (mask[1] && k.linear_one_pass_backward != nullptr && weight.scalar_type() == t_in.scalar_type() &&
      k.one_pass_backward_pays(rows, weight.numel() * weight.element_size())) {
    // Few rows, a large W: both weight-sized GEMMs stream W; one pass does both.
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
    check_launch(k.linear_one_pass_backward(p, k.stream), "one-pass backward");
  } else {
    if (mask[0]) g_in = at::mm(gm.view({rows, out_f}), weight).to(t_in.scalar_type()).view(t_in.sizes());
    if (mask[1]) {
      at::Tensor d = at::empty({rows, in_f}, weight.options());
      run_prologue(k, t_in.contiguous(), nullptr, d, t_min, 1.0, 0.0);
      g_w = at::mm(gm.view({rows, out_f}).t(), d);
    }
  }
  if (mask[2]) g_b = gm_time.view({rows, out_f}).sum(0).neg_();
  return {g_in, g_w, g_b};
}

}  // namespace

at::Tensor linear_forward(const KernelTable& k, const at::Tensor& t_in, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, double t_min, double t_max) {
  const char* op = "ttfs_ext.linear";
  check_linear(op, t_in, weight, bias, t_min, t_max);
  return forward(op, k, t_in, weight, bias, t_min, t_max, true);
}

Grads3 linear_backward(const KernelTable& k, const at::Tensor& grad_out, const at::Tensor& t_in,
                       const at::Tensor& weight, const at::Tensor& t_out, double t_min, double t_max,
                       std::array<bool, 3> output_mask) {
  check_linear_backward("ttfs_ext.linear backward", grad_out, t_in, weight, &t_out, t_min, t_max);
  return backward(k, grad_out, t_in, weight, &t_out, t_min, t_max, output_mask);
}

at::Tensor readout_forward(const KernelTable& k, const at::Tensor& t_in, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, double t_min) {
  const char* op = "ttfs_ext.readout";
  check_linear(op, t_in, weight, bias, t_min, std::nullopt);
  return forward(op, k, t_in, weight, bias, t_min, 0.0, false);
}

Grads3 readout_backward(const KernelTable& k, const at::Tensor& grad_out, const at::Tensor& t_in,
                        const at::Tensor& weight, double t_min, std::array<bool, 3> output_mask) {
  check_linear_backward("ttfs_ext.readout backward", grad_out, t_in, weight, nullptr, t_min, std::nullopt);
  return backward(k, grad_out, t_in, weight, nullptr, t_min, 0.0, output_mask);
}

}  // namespace ttfs_ext
