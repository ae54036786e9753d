// spide_forward_step, spide_backward_step: one time step of a population of the feedback-SNN
// neurons of IDE/SPIDE (Xiao et al.), in place on the membrane potential u and the rate
// accumulator (layers/spide_neuron.cpp; the formulas in kernels/params.h, SpideStepParams).
// Not differentiable: the network (ttfs_ext.spide) runs them without a graph.
#include "ops/schema.h"

#include <ATen/core/LegacyTypeDispatch.h>

#include "layers/checks.h"
#include "ttfs_ext.h"

namespace ttfs_ext {

at::Tensor spide_forward_step(const at::Tensor& u, const at::Tensor& rate, const at::Tensor& current,
                              const std::optional<at::Tensor>& extra, const std::optional<at::Tensor>& gate,
                              double v_th, double reset, double leak) {
  static const auto op = op_handle<decltype(spide_forward_step)>("ttfs_ext::spide_forward_step");
  return op.call(u, rate, current, extra, gate, v_th, reset, leak);
}

at::Tensor spide_backward_step(const at::Tensor& u, const at::Tensor& rate, const at::Tensor& current,
                               const std::optional<at::Tensor>& current_gate, const std::optional<at::Tensor>& inject,
                               const std::optional<at::Tensor>& gate, double v_th, double reset, double amplitude,
                               double leak) {
  static const auto op = op_handle<decltype(spide_backward_step)>("ttfs_ext::spide_backward_step");
  return op.call(u, rate, current, current_gate, inject, gate, v_th, reset, amplitude, leak);
}

namespace {

const at::Tensor* opt(const std::optional<at::Tensor>& x) { return x.has_value() ? &*x : nullptr; }

void spide_forward_step_check(const at::Tensor& u, const at::Tensor& rate, const at::Tensor& current,
                              const std::optional<at::Tensor>& extra, const std::optional<at::Tensor>& gate,
                              double v_th, double reset, double leak) {
  check_spide_step("ttfs_ext.spide_forward_step", u, rate, {{"current", &current}, {"extra", opt(extra)},
                   {"gate", opt(gate)}}, v_th, reset, 1.0, leak);
}

void spide_backward_step_check(const at::Tensor& u, const at::Tensor& rate, const at::Tensor& current,
                               const std::optional<at::Tensor>& current_gate, const std::optional<at::Tensor>& inject,
                               const std::optional<at::Tensor>& gate, double v_th, double reset, double amplitude,
                               double leak) {
  check_spide_step("ttfs_ext.spide_backward_step", u, rate, {{"current", &current},
                   {"current_gate", opt(current_gate)}, {"inject", opt(inject)}, {"gate", opt(gate)}}, v_th, reset,
                   amplitude, leak);
}

}  // namespace

// The check-only twins take the same (mutable) arguments but mutate nothing: their schemas
// drop the alias annotations (def_op appends the same argument list; "(a!)" would be wrong
// there), so they are defined here by hand.
TORCH_LIBRARY_FRAGMENT(ttfs_ext, m) {
  m.def(torch::schema(
      "spide_forward_step(Tensor(a!) u, Tensor(b!) rate, Tensor current, Tensor? extra, Tensor? gate, float v_th, "
      "float reset, float leak) -> Tensor"));
  m.def(torch::schema(
      "_spide_forward_step_check(Tensor u, Tensor rate, Tensor current, Tensor? extra, Tensor? gate, float v_th, "
      "float reset, float leak) -> ()"));
  m.def(torch::schema(
      "spide_backward_step(Tensor(a!) u, Tensor(b!) rate, Tensor current, Tensor? current_gate, Tensor? inject, "
      "Tensor? gate, float v_th, float reset, float amplitude, float leak) -> Tensor"));
  m.def(torch::schema(
      "_spide_backward_step_check(Tensor u, Tensor rate, Tensor current, Tensor? current_gate, Tensor? inject, "
      "Tensor? gate, float v_th, float reset, float amplitude, float leak) -> ()"));
}

TORCH_LIBRARY_IMPL(ttfs_ext, CompositeImplicitAutograd, m) {
  m.impl("_spide_forward_step_check", &spide_forward_step_check);
  m.impl("_spide_backward_step_check", &spide_backward_step_check);
}

namespace {

// In place as PyTorch understands it: the kernel below Autograd and ADInplaceOrView, then u's and
// rate's version counters bumped, so that autograd refuses a graph that saved them before the step
// ("modified by an inplace operation"), as with the reference's own in-place ops.
void bump_versions(const at::Tensor& u, const at::Tensor& rate) {
  u.unsafeGetTensorImpl()->bump_version();
  rate.unsafeGetTensorImpl()->bump_version();
}

at::Tensor spide_forward_step_inplace(const at::Tensor& u, const at::Tensor& rate, const at::Tensor& current,
                                      const std::optional<at::Tensor>& extra, const std::optional<at::Tensor>& gate,
                                      double v_th, double reset, double leak) {
  at::Tensor out;
  {
    const at::AutoDispatchBelowADInplaceOrView guard;
    out = spide_forward_step(u, rate, current, extra, gate, v_th, reset, leak);
  }
  bump_versions(u, rate);
  return out;
}

at::Tensor spide_backward_step_inplace(const at::Tensor& u, const at::Tensor& rate, const at::Tensor& current,
                                       const std::optional<at::Tensor>& current_gate,
                                       const std::optional<at::Tensor>& inject, const std::optional<at::Tensor>& gate,
                                       double v_th, double reset, double amplitude, double leak) {
  at::Tensor out;
  {
    const at::AutoDispatchBelowADInplaceOrView guard;
    out = spide_backward_step(u, rate, current, current_gate, inject, gate, v_th, reset, amplitude, leak);
  }
  bump_versions(u, rate);
  return out;
}

}  // namespace

// Autograd (grad mode; the ops are not differentiable: no formula, outputs without history) and
// ADInplaceOrView (inference mode with normal tensors) alike: one bump per call.
TORCH_LIBRARY_IMPL(ttfs_ext, Autograd, m) {
  m.impl("spide_forward_step", &spide_forward_step_inplace);
  m.impl("spide_backward_step", &spide_backward_step_inplace);
}

TORCH_LIBRARY_IMPL(ttfs_ext, ADInplaceOrView, m) {
  m.impl("spide_forward_step", &spide_forward_step_inplace);
  m.impl("spide_backward_step", &spide_backward_step_inplace);
}

}  // namespace ttfs_ext
