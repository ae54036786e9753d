// fs_activation on any device: checks, allocation, the kernels of the device's table, and the
// fixed-order sums of the kernels' partial rows (deterministic whatever the thread count).
#include "layers/layers.h"
#include "layers/checks.h"

#include <utility>

namespace ttfs_ext {
namespace {

void check_params_finite(const char* op, const KernelTable& k, const at::Tensor& h, const at::Tensor& d,
                         const at::Tensor& T) {
  if (!k.checks_data) return;
  for (const auto& [name, p] : {std::pair<const char*, const at::Tensor&>{"h", h}, {"d", d}, {"T", T}}) {
    check_finite_data(op, name, p);
  }
}

void require_kernels(const char* op, const KernelTable& k) {
  TORCH_CHECK(k.fs_forward != nullptr && k.fs_backward != nullptr && k.fs_partials != nullptr, op,
              ": this build has no fs_activation kernels for the device");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> fs_activation_forward(const KernelTable& k, const at::Tensor& x,
                                                                     const at::Tensor& h, const at::Tensor& d,
                                                                     const at::Tensor& T, int64_t spike_mode,
                                                                     bool with_reg) {
  const char* op = "ttfs_ext.fs_activation";
  check_fs_activation(op, x, h, d, T, spike_mode);
  require_kernels(op, k);
  check_params_finite(op, k, h, d, T);
  const at::Tensor xc = x.contiguous(), hc = h.contiguous(), dc = d.contiguous(), Tc = T.contiguous();
  const int64_t steps = h.size(0);
  at::Tensor y = at::empty_like(xc);
  at::Tensor spikes = spike_mode == 1   ? at::empty(x.sizes(), x.options().dtype(at::kByte))
                      : spike_mode == 2 ? at::empty(x.sizes(), x.options().dtype(at::kInt))
                                        : at::empty({0}, x.options().dtype(at::kByte));
  const int64_t partials = k.fs_partials(x.numel());
  at::Tensor reg_partial = with_reg ? at::zeros({partials, steps}, x.options().dtype(at::kDouble)) : at::Tensor();
  FsForwardParams p;
  p.x = xc.const_data_ptr();
  p.h = hc.const_data_ptr();
  p.d = dc.const_data_ptr();
  p.T = Tc.const_data_ptr();
  p.y = y.data_ptr();
  p.spikes = spike_mode != 0 ? spikes.data_ptr() : nullptr;
  p.reg_partial = with_reg ? reg_partial.data_ptr<double>() : nullptr;
  p.dtype = to_dtype(x.scalar_type());
  p.param_dtype = to_dtype(h.scalar_type());
  p.numel = x.numel();
  p.partials = partials;
  p.steps = static_cast<int32_t>(steps);
  p.spike_mode = static_cast<int32_t>(spike_mode);
  int32_t nonfinite = 0;
  if (k.checks_finite_in_prologue) {
    if (k.checks_data) p.nonfinite = &nonfinite;
  } else if (k.checks_data) {
    check_finite_data(op, "x", x);
  }
  if (x.numel() > 0) check_launch(k.fs_forward(p, k.stream), "fs_activation forward");
  TORCH_CHECK_VALUE(nonfinite == 0, op, ": x contains NaN or inf");
  at::Tensor reg = with_reg ? (x.numel() > 0 ? reg_partial.sum(0) / static_cast<double>(x.numel())
                                             : at::full({steps}, NAN, reg_partial.options()))
                                  .to(h.scalar_type())
                            : at::empty({0}, h.options());
  return {y, spikes, reg};
}

Grads4 fs_activation_backward(const KernelTable& k, const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_reg,
                              const at::Tensor& x, const at::Tensor& h, const at::Tensor& d, const at::Tensor& T,
                              std::array<bool, 4> output_mask) {
  const char* op = "ttfs_ext.fs_activation backward";
  check_fs_activation_backward(op, grad_y, grad_reg, x, h, d, T);
  require_kernels(op, k);
  const int64_t steps = h.size(0);
  const bool want_x = output_mask[0], want_params = output_mask[1] || output_mask[2] || output_mask[3];
  at::Tensor grad_x = want_x ? at::empty_like(x, at::MemoryFormat::Contiguous) : at::Tensor();
  if (!want_x && !want_params) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  const int64_t partials = k.fs_partials(x.numel());
  at::Tensor partial = want_params ? at::zeros({partials, 3, steps}, x.options().dtype(at::kDouble)) : at::Tensor();
  if (x.numel() > 0) {
    const at::Tensor xc = x.contiguous(), gyc = grad_y.contiguous(), hc = h.contiguous(), dc = d.contiguous(),
                     Tc = T.contiguous();
    at::Tensor greg;
    if (grad_reg.has_value()) {
      greg = (grad_reg->to(at::kDouble) / static_cast<double>(x.numel())).contiguous();
    }
    FsBackwardParams p;
    p.grad_y = gyc.const_data_ptr();
    p.grad_reg = greg.defined() ? greg.const_data_ptr<double>() : nullptr;
    p.x = xc.const_data_ptr();
    p.h = hc.const_data_ptr();
    p.d = dc.const_data_ptr();
    p.T = Tc.const_data_ptr();
    p.grad_x = want_x ? grad_x.data_ptr() : nullptr;
    p.param_partial = want_params ? partial.data_ptr<double>() : nullptr;
    p.dtype = to_dtype(x.scalar_type());
    p.param_dtype = to_dtype(h.scalar_type());
    p.numel = x.numel();
    p.partials = partials;
    p.steps = static_cast<int32_t>(steps);
    check_launch(k.fs_backward(p, k.stream), "fs_activation backward");
  }
  at::Tensor sums = want_params ? partial.sum(0).to(h.scalar_type()) : at::Tensor();  // (3, K)
  return {grad_x, output_mask[1] ? sums[0].clone() : at::Tensor(), output_mask[2] ? sums[1].clone() : at::Tensor(),
          output_mask[3] ? sums[2].clone() : at::Tensor()};
}

}  // namespace ttfs_ext
