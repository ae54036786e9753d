// The element-wise passes around the B1 layers' GEMM/convolution (layers.h), for linear.cpp
// and conv2d.cpp.
#include "layers/checks.h"
#include "layers/layers.h"

namespace ttfs_ext {

Dtype to_dtype(at::ScalarType s) {
  switch (s) {
    case at::kDouble: return Dtype::Float64;
    case at::kFloat: return Dtype::Float32;
    case at::kHalf: return Dtype::Float16;
    case at::kBFloat16: return Dtype::BFloat16;
    default: TORCH_CHECK_TYPE(false, "ttfs_ext: unsupported dtype ", s);
  }
}

void check_launch(const char* err, const char* what) {
  TORCH_CHECK(err == nullptr, "ttfs_ext: ", what, " kernel failed: ", err == nullptr ? "" : err);
}

namespace {

void prologue(const KernelTable& k, const at::Tensor& in, const at::Tensor* gate, const at::Tensor& out,
              double offset, double scale, double t_max, int32_t* nonfinite) {
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
  check_launch(k.prologue(p, k.stream), "prologue");
}

}  // namespace

void run_prologue(const KernelTable& k, const at::Tensor& in, const at::Tensor* gate, const at::Tensor& out,
                  double offset, double scale, double t_max) {
  prologue(k, in, gate, out, offset, scale, t_max, nullptr);
}

void run_forward_prologue(const char* op, const KernelTable& k, const at::Tensor& t_in, const at::Tensor& x,
                          double t_min) {
  if (!k.checks_finite_in_prologue) {
    if (k.checks_data) check_finite_data(op, "t_in", t_in);
    prologue(k, t_in, nullptr, x, t_min, -1.0, 0.0, nullptr);
    return;
  }
  int32_t nonfinite = 0;
  prologue(k, t_in, nullptr, x, t_min, -1.0, 0.0, k.checks_data ? &nonfinite : nullptr);
  TORCH_CHECK_VALUE(nonfinite == 0, op, ": t_in contains NaN or inf spike times");
}

void run_epilogue(const KernelTable& k, const at::Tensor& u, const std::optional<at::Tensor>& bias,
                  bool bias_per_position, const at::Tensor& out, int64_t channels, int64_t positions, double t_max,
                  bool spiking) {
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
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
  check_launch(k.epilogue(p, k.stream), "epilogue");
}

std::pair<at::Tensor, at::Tensor> gated_grad(const KernelTable& k, const at::Tensor& grad_out,
                                             const at::Tensor* gate, double scale, double t_max,
                                             at::ScalarType matrix_dtype, bool want_time, at::MemoryFormat fmt) {
  const at::Tensor go = grad_out.contiguous(fmt);
  if (!want_time && matrix_dtype != go.scalar_type()) {  // one pass, written in the matrix dtype
    at::Tensor gm = at::empty(go.sizes(), go.options().dtype(matrix_dtype).memory_format(fmt));
    run_prologue(k, go, gate, gm, 0.0, scale, t_max);
    return {gm, at::Tensor()};
  }
  at::Tensor gm_time = at::empty(go.sizes(), go.options().memory_format(fmt));
  run_prologue(k, go, gate, gm_time, 0.0, scale, t_max);
  at::Tensor gm = matrix_dtype == go.scalar_type() ? gm_time : gm_time.to(matrix_dtype);
  return {gm, gm_time};
}

}  // namespace ttfs_ext
