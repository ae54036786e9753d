// CUDA kernels of the feedback-SNN neuron steps (kernels/params.h, SpideStepParams): one
// grid-stride pass per step and population around the element math of kernels/element_math.h,
// which cpu/spide_neuron_kernel.cpp runs too.
// Includes only CUDA and project headers so that nvcc can compile it anywhere.
#include "kernels/element_math.h"
#include "kernels/params.h"
#include "cuda/launch.cuh"
#include "kernels/static_switch.h"

#include <cuda_runtime.h>

namespace ttfs_ext {
namespace {

template <typename T, bool kExtra, bool kGate>
__global__ void forward_step_kernel(SpideStepParams p) {
  T* __restrict__ u = static_cast<T*>(p.u);
  T* __restrict__ rate = static_cast<T*>(p.rate);
  const T* __restrict__ current = static_cast<const T*>(p.current);
  const T* __restrict__ extra = static_cast<const T*>(p.extra);
  const T* __restrict__ gate = static_cast<const T*>(p.gate);
  T* __restrict__ out = static_cast<T*>(p.out);
  const T v_th = static_cast<T>(p.v_th), reset = static_cast<T>(p.reset), leak = static_cast<T>(p.leak);
  for (int64_t i = thread_index(); i < p.numel; i += thread_stride()) {
    const T v = math::spide_forward_input<kExtra>(u[i], current[i], kExtra ? extra[i] : T(0));
    T ui = u[i], ri = rate[i];
    const T s = math::spide_forward_neuron(v, ui, ri, v_th, reset, leak);
    u[i] = ui;
    rate[i] = ri;
    out[i] = math::spide_output<kGate>(s, kGate ? gate[i] : T(0));
  }
}

template <typename T, bool kCurrentGate, bool kInject, bool kGate>
__global__ void backward_step_kernel(SpideStepParams p) {
  T* __restrict__ u = static_cast<T*>(p.u);
  T* __restrict__ rate = static_cast<T*>(p.rate);
  const T* __restrict__ current = static_cast<const T*>(p.current);
  const T* __restrict__ current_gate = static_cast<const T*>(p.current_gate);
  const T* __restrict__ inject = static_cast<const T*>(p.inject);
  const T* __restrict__ gate = static_cast<const T*>(p.gate);
  T* __restrict__ out = static_cast<T*>(p.out);
  const T v_th = static_cast<T>(p.v_th), reset = static_cast<T>(p.reset);
  const T amplitude = static_cast<T>(p.amplitude), leak = static_cast<T>(p.leak);
  for (int64_t i = thread_index(); i < p.numel; i += thread_stride()) {
    const T v = math::spide_backward_input<kCurrentGate, kInject>(u[i], current[i],
                                                                  kCurrentGate ? current_gate[i] : T(0),
                                                                  kInject ? inject[i] : T(0));
    T ui = u[i], ri = rate[i];
    const T s = math::spide_backward_neuron(v, ui, ri, v_th, reset, amplitude, leak);
    u[i] = ui;
    rate[i] = ri;
    out[i] = math::spide_output<kGate>(s, kGate ? gate[i] : T(0));
  }
}

constexpr const char* kDtypeError = "unsupported dtype: the neuron state must be float64 or float32";

}  // namespace

const char* spide_forward_step_cuda(const SpideStepParams& p, void* stream) {
  if (p.numel == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const bool ran = TIME_DTYPE_SWITCH(p.dtype, T, [&] {
    BOOL_SWITCH(p.extra != nullptr, kExtra, [&] {
      BOOL_SWITCH(p.gate != nullptr, kGate, [&] {
        forward_step_kernel<T, kExtra, kGate><<<blocks_for(p.numel), kThreads, 0, s>>>(p);
      });
    });
  });
  return ran ? last_error() : kDtypeError;
}

const char* spide_backward_step_cuda(const SpideStepParams& p, void* stream) {
  if (p.numel == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const bool ran = TIME_DTYPE_SWITCH(p.dtype, T, [&] {
    BOOL_SWITCH(p.current_gate != nullptr, kCurrentGate, [&] {
      BOOL_SWITCH(p.inject != nullptr, kInject, [&] {
        BOOL_SWITCH(p.gate != nullptr, kGate, [&] {
          backward_step_kernel<T, kCurrentGate, kInject, kGate><<<blocks_for(p.numel), kThreads, 0, s>>>(p);
        });
      });
    });
  });
  return ran ? last_error() : kDtypeError;
}

}  // namespace ttfs_ext
