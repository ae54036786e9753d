// The feedback-SNN neuron steps (kernels/params.h, SpideStepParams): checks, then one kernel
// pass over the population, in place on u and rate. The convolutions between steps stay
// ATen calls of the Python network (ttfs_ext.spide).
#include "layers/checks.h"
#include "layers/layers.h"

namespace ttfs_ext {
namespace {

const void* ptr_or_null(const at::Tensor& x) { return x.defined() ? x.const_data_ptr() : nullptr; }

at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& x) {
  return x.has_value() && x->defined() ? x->contiguous() : at::Tensor();
}

}  // namespace

at::Tensor spide_forward_step_impl(const KernelTable& k, const at::Tensor& u, const at::Tensor& rate,
                                   const at::Tensor& current, const std::optional<at::Tensor>& extra,
                                   const std::optional<at::Tensor>& gate, double v_th, double reset, double leak) {
  const char* op = "ttfs_ext.spide_forward_step";
  const at::Tensor e = contiguous_or_undefined(extra), g = contiguous_or_undefined(gate);
  check_spide_step(op, u, rate, {{"current", &current}, {"extra", &e}, {"gate", &g}}, v_th, reset, 1.0, leak);
  const at::Tensor c = current.contiguous();
  at::Tensor out = at::empty_like(u, at::MemoryFormat::Contiguous);
  SpideStepParams p;
  p.u = u.data_ptr();
  p.rate = rate.data_ptr();
  p.current = c.const_data_ptr();
  p.extra = ptr_or_null(e);
  p.gate = ptr_or_null(g);
  p.out = out.data_ptr();
  p.dtype = to_dtype(u.scalar_type());
  p.numel = u.numel();
  p.v_th = v_th;
  p.reset = reset;
  p.leak = leak;
  check_launch(k.spide_forward_step(p, k.stream), "spide_forward_step");
  return out;
}

at::Tensor spide_backward_step_impl(const KernelTable& k, const at::Tensor& u, const at::Tensor& rate,
                                    const at::Tensor& current, const std::optional<at::Tensor>& current_gate,
                                    const std::optional<at::Tensor>& inject, const std::optional<at::Tensor>& gate,
                                    double v_th, double reset, double amplitude, double leak) {
  const char* op = "ttfs_ext.spide_backward_step";
  const at::Tensor cg = contiguous_or_undefined(current_gate), inj = contiguous_or_undefined(inject);
  const at::Tensor g = contiguous_or_undefined(gate);
  check_spide_step(op, u, rate, {{"current", &current}, {"current_gate", &cg}, {"inject", &inj}, {"gate", &g}},
                   v_th, reset, amplitude, leak);
  const at::Tensor c = current.contiguous();
  at::Tensor out = at::empty_like(u, at::MemoryFormat::Contiguous);
  SpideStepParams p;
  p.u = u.data_ptr();
  p.rate = rate.data_ptr();
  p.current = c.const_data_ptr();
  p.current_gate = ptr_or_null(cg);
  p.extra = ptr_or_null(inj);
  p.gate = ptr_or_null(g);
  p.out = out.data_ptr();
  p.dtype = to_dtype(u.scalar_type());
  p.numel = u.numel();
  p.v_th = v_th;
  p.reset = reset;
  p.amplitude = amplitude;
  p.leak = leak;
  check_launch(k.spide_backward_step(p, k.stream), "spide_backward_step");
  return out;
}

}  // namespace ttfs_ext
