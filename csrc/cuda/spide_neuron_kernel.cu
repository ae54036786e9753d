// CUDA kernels of the feedback-SNN neuron steps (kernels/params.h, SpideStepParams); mirrors
// cpu/spide_neuron_kernel.cpp: one grid-stride pass per step and population.
// Includes only CUDA and project headers so that nvcc can compile it anywhere.
#include "kernels/params.h"
#include "cuda/launch.cuh"
#include "kernels/static_switch.h"

#include <cuda_runtime.h>

namespace ttfs_ext {
namespace {

// Products rounded on their own (no fused multiply-add), as the CPU loops (-ffp-contract=off)
// and the reference round them.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <typename T, bool kExtra, bool kGate>
__global__ void forward_step_kernel(SpideStepParams p) {
  T* __restrict__ u = static_cast<T*>(p.u);
  T* __restrict__ rate = static_cast<T*>(p.rate);
  const T* __restrict__ current = static_cast<const T*>(p.current);
  const T* __restrict__ extra = static_cast<const T*>(p.extra);
  const T* __restrict__ gate = static_cast<const T*>(p.gate);
  T* __restrict__ out = static_cast<T*>(p.out);
  const T v_th = static_cast<T>(p.v_th), reset = static_cast<T>(p.reset), leak = static_cast<T>(p.leak);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += stride) {
    T v = u[i] + current[i];
    if (kExtra) v += extra[i];
    const T s = v >= v_th ? T(1) : T(0);
    u[i] = mul_rn(v - reset * s, leak);  // reset * s: exact (s is 0 or 1)
    rate[i] = mul_rn(leak, rate[i]) + s;
    out[i] = kGate ? s * gate[i] : s;
  }
}

template <typename T, bool kCurrentGate, bool kInject, bool kGate>
__global__ void backward_step_kernel(SpideStepParams p) {
  T* __restrict__ u = static_cast<T*>(p.u);
  T* __restrict__ rate = static_cast<T*>(p.rate);
  const T* __restrict__ current = static_cast<const T*>(p.current);
  const T* __restrict__ current_gate = static_cast<const T*>(p.current_gate);
  const T* __restrict__ inject = static_cast<const T*>(p.extra);
  const T* __restrict__ gate = static_cast<const T*>(p.gate);
  T* __restrict__ out = static_cast<T*>(p.out);
  const T v_th = static_cast<T>(p.v_th), reset = static_cast<T>(p.reset);
  const T amplitude = static_cast<T>(p.amplitude), leak = static_cast<T>(p.leak);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += stride) {
    T v = kCurrentGate ? u[i] + mul_rn(current[i], current_gate[i]) : u[i] + current[i];
    if (kInject) v += inject[i];
    const T k = (v >= v_th ? T(1) : T(0)) - (v <= -v_th ? T(1) : T(0));
    u[i] = mul_rn(v - mul_rn(reset, k), leak);
    const T s = mul_rn(amplitude, k);
    rate[i] = mul_rn(leak, rate[i]) + s;
    out[i] = kGate ? s * gate[i] : s;
  }
}

template <typename T>
void launch_forward(const SpideStepParams& p, cudaStream_t stream) {
  const unsigned int blocks = blocks_for(p.numel);
  BOOL_SWITCH(p.extra != nullptr, kExtra, [&] {
    BOOL_SWITCH(p.gate != nullptr, kGate, [&] {
      forward_step_kernel<T, kExtra, kGate><<<blocks, kThreads, 0, stream>>>(p);
    });
  });
}

template <typename T>
void launch_backward(const SpideStepParams& p, cudaStream_t stream) {
  const unsigned int blocks = blocks_for(p.numel);
  BOOL_SWITCH(p.current_gate != nullptr, kCurrentGate, [&] {
    BOOL_SWITCH(p.extra != nullptr, kInject, [&] {
      BOOL_SWITCH(p.gate != nullptr, kGate, [&] {
        backward_step_kernel<T, kCurrentGate, kInject, kGate><<<blocks, kThreads, 0, stream>>>(p);
      });
    });
  });
}

const char* launch_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* spide_forward_step_cuda(const SpideStepParams& p, void* stream) {
  if (p.numel == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const bool ok = TIME_DTYPE_SWITCH(p.dtype, T, [&] { launch_forward<T>(p, s); });
  return ok ? launch_error() : "unsupported dtype: the neuron state must be float64 or float32";
}

const char* spide_backward_step_cuda(const SpideStepParams& p, void* stream) {
  if (p.numel == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const bool ok = TIME_DTYPE_SWITCH(p.dtype, T, [&] { launch_backward<T>(p, s); });
  return ok ? launch_error() : "unsupported dtype: the neuron state must be float64 or float32";
}

}  // namespace ttfs_ext
