// CPU kernels of the feedback-SNN neuron steps (kernels/params.h, SpideStepParams): loops around
// the element math of kernels/element_math.h, which cuda/spide_neuron_kernel.cu runs too. One pass over the neurons replaces the reference's five to
// eight element-wise ops per step: each parallel task runs a loop over plain __restrict
// pointers with selects instead of branches (compiled with -fno-trapping-math, per ISA), which
// GCC vectorises.
#include "kernels/element_math.h"
#include "kernels/params.h"
#include "cpu/cpu_isa.h"
#include "kernels/static_switch.h"

#include <ATen/Parallel.h>

namespace ttfs_ext {
namespace {

constexpr int64_t kGrain = 32768;

template <typename T, bool kExtra, bool kGate>
struct ForwardSpan {
  static TTFS_INLINE int run(T* __restrict u, T* __restrict rate, const T* __restrict current,
                             const T* __restrict extra, const T* __restrict gate, T* __restrict out, int64_t n,
                             T v_th, T reset, T leak) {
    for (int64_t i = 0; i < n; ++i) {
      // Locals, not references into u and rate: the loop stays a vectorisable one.
      const T v = math::spide_forward_input<kExtra>(u[i], current[i], kExtra ? extra[i] : T(0));
      T ui, ri = rate[i];
      const T s = math::spide_forward_neuron(v, ui, ri, v_th, reset, leak);
      u[i] = ui;
      rate[i] = ri;
      out[i] = math::spide_output<kGate>(s, kGate ? gate[i] : T(0));
    }
    return 0;
  }
};

template <typename T, bool kCurrentGate, bool kInject, bool kGate>
struct BackwardSpan {
  static TTFS_INLINE int run(T* __restrict u, T* __restrict rate, const T* __restrict current,
                             const T* __restrict current_gate, const T* __restrict inject, const T* __restrict gate,
                             T* __restrict out, int64_t n, T v_th, T reset, T amplitude, T leak) {
    for (int64_t i = 0; i < n; ++i) {
      const T v = math::spide_backward_input<kCurrentGate, kInject>(u[i], current[i],
                                                                    kCurrentGate ? current_gate[i] : T(0),
                                                                    kInject ? inject[i] : T(0));
      T ui, ri = rate[i];
      const T s = math::spide_backward_neuron(v, ui, ri, v_th, reset, amplitude, leak);
      u[i] = ui;
      rate[i] = ri;
      out[i] = math::spide_output<kGate>(s, kGate ? gate[i] : T(0));
    }
    return 0;
  }
};

template <typename T>
void forward_impl(const SpideStepParams& p) {
  T* u = static_cast<T*>(p.u);
  T* rate = static_cast<T*>(p.rate);
  const T* current = static_cast<const T*>(p.current);
  const T* extra = static_cast<const T*>(p.extra);
  const T* gate = static_cast<const T*>(p.gate);
  T* out = static_cast<T*>(p.out);
  const T v_th = static_cast<T>(p.v_th), reset = static_cast<T>(p.reset), leak = static_cast<T>(p.leak);
  BOOL_SWITCH(extra != nullptr, kExtra, [&] {
    BOOL_SWITCH(gate != nullptr, kGate, [&] {
      at::parallel_for(0, p.numel, kGrain, [&](int64_t b, int64_t e) {
        run_for_isa<ForwardSpan<T, kExtra, kGate>>(u + b, rate + b, current + b, kExtra ? extra + b : nullptr,
                                                   kGate ? gate + b : nullptr, out + b, e - b, v_th, reset, leak);
      });
    });
  });
}

template <typename T>
void backward_impl(const SpideStepParams& p) {
  T* u = static_cast<T*>(p.u);
  T* rate = static_cast<T*>(p.rate);
  const T* current = static_cast<const T*>(p.current);
  const T* current_gate = static_cast<const T*>(p.current_gate);
  const T* inject = static_cast<const T*>(p.inject);
  const T* gate = static_cast<const T*>(p.gate);
  T* out = static_cast<T*>(p.out);
  const T v_th = static_cast<T>(p.v_th), reset = static_cast<T>(p.reset);
  const T amplitude = static_cast<T>(p.amplitude), leak = static_cast<T>(p.leak);
  BOOL_SWITCH(current_gate != nullptr, kCurrentGate, [&] {
    BOOL_SWITCH(inject != nullptr, kInject, [&] {
      BOOL_SWITCH(gate != nullptr, kGate, [&] {
        at::parallel_for(0, p.numel, kGrain, [&](int64_t b, int64_t e) {
          run_for_isa<BackwardSpan<T, kCurrentGate, kInject, kGate>>(
              u + b, rate + b, current + b, kCurrentGate ? current_gate + b : nullptr, kInject ? inject + b : nullptr,
              kGate ? gate + b : nullptr, out + b, e - b, v_th, reset, amplitude, leak);
        });
      });
    });
  });
}

}  // namespace

const char* spide_forward_step_cpu(const SpideStepParams& p, void*) {
  if (p.numel == 0) return nullptr;
  const bool ok = TIME_DTYPE_SWITCH(p.dtype, T, [&] { forward_impl<T>(p); });
  return ok ? nullptr : "unsupported dtype: the neuron state must be float64 or float32";
}

const char* spide_backward_step_cpu(const SpideStepParams& p, void*) {
  if (p.numel == 0) return nullptr;
  const bool ok = TIME_DTYPE_SWITCH(p.dtype, T, [&] { backward_impl<T>(p); });
  return ok ? nullptr : "unsupported dtype: the neuron state must be float64 or float32";
}

}  // namespace ttfs_ext
