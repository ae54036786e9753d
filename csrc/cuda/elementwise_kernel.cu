// CUDA element-wise passes of the TTFS layers; mirrors cpu/elementwise_kernel.cpp.
// Includes only CUDA and project headers so that nvcc can compile it anywhere.
#include "kernels/params.h"
#include "cuda/launch.cuh"
#include "kernels/static_switch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

namespace ttfs_ext {
namespace {

template <typename out_t, typename in_t>
__device__ __forceinline__ out_t cast_to(in_t v) {
  return static_cast<out_t>(v);
}
template <>
__device__ __forceinline__ __half cast_to<__half, float>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 cast_to<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ float cast_to<float, __half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float cast_to<float, __nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename in_t, typename out_t, bool kGate, bool kNegate>
__global__ void prologue_kernel(PrologueParams p) {
  const in_t* __restrict__ in = static_cast<const in_t*>(p.in);
  const in_t* __restrict__ gate = static_cast<const in_t*>(p.gate);
  out_t* __restrict__ out = static_cast<out_t*>(p.out);
  const in_t offset = static_cast<in_t>(p.offset);
  const in_t t_max = static_cast<in_t>(p.t_max);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += stride) {
    in_t v = kNegate ? offset - in[i] : in[i] - offset;
    if (kGate) v = gate[i] < t_max ? v : in_t(0);
    out[i] = cast_to<out_t>(v);
  }
}

template <typename time_t, bool kSpiking>
__device__ __forceinline__ time_t fire(time_t v, time_t t_max) {
  if (!kSpiking) return v;
  const time_t t = t_max - v;
  return t >= t_max ? t_max : t;  // no spike in the window: t_max (NaN stays NaN)
}

template <typename u_t, typename time_t, bool kSpiking>
__global__ void epilogue_kernel(EpilogueParams p) {
  const u_t* u = static_cast<const u_t*>(p.u);  // may alias out
  const time_t* __restrict__ bias = static_cast<const time_t*>(p.bias);
  time_t* out = static_cast<time_t*>(p.out);
  const time_t t_max = static_cast<time_t>(p.t_max);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += stride) {
    time_t v = cast_to<time_t>(u[i]);
    if (bias != nullptr) {
      if (p.positions == 1) {  // dense
        v += bias[(i % p.channels) * p.bias_stride_c];
      } else {
        const int64_t pos = i % p.positions;
        const int64_t c = (i / p.positions) % p.channels;
        v += bias[c * p.bias_stride_c + pos * p.bias_stride_p];
      }
    }
    out[i] = fire<time_t, kSpiking>(v, t_max);
  }
}

template <typename in_t, typename out_t>
const char* launch_prologue(const PrologueParams& p, cudaStream_t stream) {
  const unsigned int blocks = blocks_for(p.numel);
  BOOL_SWITCH(p.gate != nullptr, kGate, [&] {
    BOOL_SWITCH(p.scale < 0, kNegate, [&] {
      prologue_kernel<in_t, out_t, kGate, kNegate><<<blocks, kThreads, 0, stream>>>(p);
    });
  });
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <typename u_t, typename time_t>
const char* launch_epilogue(const EpilogueParams& p, cudaStream_t stream) {
  const unsigned int blocks = blocks_for(p.numel);
  BOOL_SWITCH(p.spiking, kSpiking, [&] { epilogue_kernel<u_t, time_t, kSpiking><<<blocks, kThreads, 0, stream>>>(p); });
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

// Spike times are float64 or float32; matrices have the spike-time dtype, or
// float16/bfloat16 with float32 spike times (autocast).
const char* prologue_cuda(const PrologueParams& p, void* stream) {
  if (p.nonfinite != nullptr || p.span_sums != nullptr) {
    return "the CUDA prologue neither checks its input nor sums spans (see KernelTable)";
  }
  if (p.numel == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  if (p.in_dtype == Dtype::Float64 && p.out_dtype == Dtype::Float64) return launch_prologue<double, double>(p, s);
  if (p.in_dtype == Dtype::Float32) {
    switch (p.out_dtype) {
      case Dtype::Float32: return launch_prologue<float, float>(p, s);
      case Dtype::Float16: return launch_prologue<float, __half>(p, s);
      case Dtype::BFloat16: return launch_prologue<float, __nv_bfloat16>(p, s);
      default: break;
    }
  }
  return "unsupported dtype pair: spike times must be float64 or float32, matrices the same dtype "
         "or float16/bfloat16 with float32 spike times";
}

const char* epilogue_cuda(const EpilogueParams& p, void* stream) {
  if (p.numel == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  if (p.u_dtype == Dtype::Float64 && p.out_dtype == Dtype::Float64) return launch_epilogue<double, double>(p, s);
  if (p.out_dtype == Dtype::Float32) {
    switch (p.u_dtype) {
      case Dtype::Float32: return launch_epilogue<float, float>(p, s);
      case Dtype::Float16: return launch_epilogue<__half, float>(p, s);
      case Dtype::BFloat16: return launch_epilogue<__nv_bfloat16, float>(p, s);
      default: break;
    }
  }
  return "unsupported dtype pair: spike times must be float64 or float32, matrices the same dtype "
         "or float16/bfloat16 with float32 spike times";
}

}  // namespace ttfs_ext
