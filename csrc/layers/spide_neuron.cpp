// The feedback-SNN neuron steps (kernels/params.h, SpideStepParams): checks, then one kernel
// pass over the population in memory order (u contiguous or channels last, every other tensor
// read in u's layout), in place on u and rate. The products between steps are the Python
// network's (ttfs_ext.spide).
#include "layers/checks.h"
#include "layers/layers.h"

namespace ttfs_ext {
namespace {

const void* ptr_or_null(const at::Tensor& x) { return x.defined() ? x.const_data_ptr() : nullptr; }

const at::Tensor* opt(const std::optional<at::Tensor>& x) { return x.has_value() ? &*x : nullptr; }

// x in the memory layout of the state u (the kernels run over the neurons in memory order).
at::Tensor in_layout_or_undefined(const std::optional<at::Tensor>& x, at::MemoryFormat layout) {
  return x.has_value() && x->defined() ? x->contiguous(layout) : at::Tensor();
}

}  // namespace

at::Tensor spide_forward_step_impl(const KernelTable& k, const at::Tensor& u, const at::Tensor& rate,
                                   const at::Tensor& current, const std::optional<at::Tensor>& extra,
                                   const std::optional<at::Tensor>& gate, double v_th, double reset, double leak) {
  const char* op = "ttfs_ext.spide_forward_step";
  check_spide_step(op, u, rate, {{"current", &current}, {"extra", opt(extra)}, {"gate", opt(gate)}}, v_th, reset, 1.0,
                   leak);
  const auto layout = spide_memory_format(u);
  const at::Tensor e = in_layout_or_undefined(extra, layout), g = in_layout_or_undefined(gate, layout);
  const at::Tensor c = current.contiguous(layout);
  at::Tensor out = at::empty_like(u, layout);
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
  check_spide_step(op, u, rate, {{"current", &current}, {"current_gate", opt(current_gate)},
                   {"inject", opt(inject)}, {"gate", opt(gate)}}, v_th, reset, amplitude, leak);
  const auto layout = spide_memory_format(u);
  const at::Tensor cg = in_layout_or_undefined(current_gate, layout), inj = in_layout_or_undefined(inject, layout);
  const at::Tensor g = in_layout_or_undefined(gate, layout);
  const at::Tensor c = current.contiguous(layout);
  at::Tensor out = at::empty_like(u, layout);
  SpideStepParams p;
  p.u = u.data_ptr();
  p.rate = rate.data_ptr();
  p.current = c.const_data_ptr();
  p.current_gate = ptr_or_null(cg);
  p.inject = ptr_or_null(inj);
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
