#include "checks.h"

#include <cmath>

namespace ttfs_ext {

void check_finite(const char* op, const char* name, double value) {
  TORCH_CHECK(std::isfinite(value), op, ": ", name, " must be finite, got ", value);
}

void check_window(const char* op, const char* lo_name, double lo, const char* hi_name, double hi) {
  check_finite(op, lo_name, lo);
  check_finite(op, hi_name, hi);
  TORCH_CHECK(hi > lo, op, ": the window must satisfy ", lo_name, " < ", hi_name, ", got ", lo_name, "=", lo,
              " and ", hi_name, "=", hi);
}

void check_time_dtype(const char* op, const at::Tensor& t_in) {
  const auto ts = t_in.scalar_type();
  TORCH_CHECK(ts == at::kDouble || ts == at::kFloat, op, ": t_in (spike times) must be float32 or float64, got ",
              ts);
}

void check_device(const char* op, const char* name, const at::Tensor& x, const at::Tensor& t_in) {
  TORCH_CHECK(x.device() == t_in.device(), op, ": ", name, " is on ", x.device(), " but t_in is on ",
              t_in.device());
}

void check_like(const char* op, const char* name, const at::Tensor& x, const at::Tensor& t_in) {
  TORCH_CHECK(x.scalar_type() == t_in.scalar_type(), op, ": ", name, " must have the dtype of t_in (",
              t_in.scalar_type(), "), got ", x.scalar_type());
  check_device(op, name, x, t_in);
}

void check_shape(const char* op, const char* name, const at::Tensor& x, at::IntArrayRef expected) {
  TORCH_CHECK(x.sizes() == expected, op, ": ", name, " has shape ", x.sizes(), ", expected ", expected);
}

namespace {

std::array<int64_t, 2> pair_arg(const char* op, const char* name, at::IntArrayRef v, int64_t minimum) {
  TORCH_CHECK(v.size() == 2 && v[0] >= minimum && v[1] >= minimum, op, ": ", name, " must be two ints >= ",
              minimum, ", got ", v);
  return {v[0], v[1]};
}

}  // namespace

ConvGeometry check_conv(const char* op, const at::Tensor& t_in, const at::Tensor& weight, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(t_in.dim() == 4, op, ": t_in must be 4-D (N, C, H, W), got shape ", t_in.sizes());
  TORCH_CHECK(weight.dim() == 4, op, ": weight must be 4-D (C_out, C_in/groups, kH, kW), got shape ",
              weight.sizes());
  TORCH_CHECK(groups >= 1, op, ": groups must be positive, got ", groups);
  TORCH_CHECK(t_in.size(1) == weight.size(1) * groups, op, ": t_in has ", t_in.size(1), " channels but weight ",
              weight.sizes(), " with groups=", groups, " expects ", weight.size(1) * groups);
  TORCH_CHECK(weight.size(0) % groups == 0, op, ": out channels (", weight.size(0),
              ") must be divisible by groups (", groups, ")");
  ConvGeometry g;
  g.stride = pair_arg(op, "stride", stride, 1);
  g.padding = pair_arg(op, "padding", padding, 0);
  g.dilation = pair_arg(op, "dilation", dilation, 1);
  g.groups = groups;
  const int64_t kh = weight.size(2), kw = weight.size(3);
  const int64_t span_h = t_in.size(2) + 2 * g.padding[0] - g.dilation[0] * (kh - 1) - 1;
  const int64_t span_w = t_in.size(3) + 2 * g.padding[1] - g.dilation[1] * (kw - 1) - 1;
  TORCH_CHECK(kh >= 1 && kw >= 1 && span_h >= 0 && span_w >= 0, op, ": kernel ", weight.sizes().slice(2),
              " with dilation ", dilation, " does not fit the padded input ", t_in.sizes().slice(2), " (padding ",
              padding, ")");
  g.h_out = span_h / g.stride[0] + 1;
  g.w_out = span_w / g.stride[1] + 1;
  g.out_shape = {t_in.size(0), weight.size(0), g.h_out, g.w_out};
  return g;
}

}  // namespace ttfs_ext
