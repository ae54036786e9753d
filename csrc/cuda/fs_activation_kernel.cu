// CUDA kernels of fs_activation; mirrors cpu/fs_activation_kernel.cpp.
// Includes only CUDA and project headers so that nvcc can compile it anywhere.
//
// A fixed grid of fs_partials_cuda(numel) blocks covers the elements with a grid-stride loop;
// each block reads h, d, T once into shared memory, each thread keeps its potential (and, in
// the backward, the K potentials of its element and its parameter-gradient sums) in
// registers: the step loops are unrolled to a compile-time bound kMaxK >= K. Each block
// writes one partial row of the reductions (warp shuffles, then across warps), which the
// layer code sums in order: deterministic.
#include "kernels/params.h"
#include "cuda/launch.cuh"
#include "kernels/static_switch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace ttfs_ext {
namespace {

constexpr int kWarps = kThreads / 32;

template <typename T>
__device__ __forceinline__ float to_compute(T v) {
  return static_cast<float>(v);
}
__device__ __forceinline__ double to_compute(double v) { return v; }
template <>
__device__ __forceinline__ float to_compute<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_compute<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T, typename C>
__device__ __forceinline__ T from_compute(C v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half from_compute<__half, float>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_compute<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename C>
__device__ __forceinline__ C sgn(C v) {
  return v > C(0) ? C(1) : (v < C(0) ? C(-1) : C(0));  // sign(0) = 0, as autograd's abs
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// Sums acc[j] (j < n <= kN) over the block into out[j]; fixed order.
template <int kN>
__device__ __forceinline__ void block_sums(const double (&acc)[kN], int n, double* out) {
  __shared__ double warp_part[kWarps][kN];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int j = 0; j < kN; ++j) {
    if (j < n) {
      const double s = warp_sum(acc[j]);
      if (lane == 0) warp_part[warp][j] = s;
    }
  }
  __syncthreads();
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    double s = 0.0;
    for (int w = 0; w < kWarps; ++w) s += warp_part[w][j];
    out[j] = s;
  }
}

template <typename x_t, typename C, int kMode, bool kReg, int kMaxK>
__global__ void __launch_bounds__(kThreads) fs_forward_kernel(FsForwardParams p) {
  __shared__ C sh[3][kFsMaxSteps];
  const int steps = p.steps;
  for (int j = threadIdx.x; j < steps; j += blockDim.x) {
    sh[0][j] = static_cast<const C*>(p.h)[j];
    sh[1][j] = static_cast<const C*>(p.d)[j];
    sh[2][j] = static_cast<const C*>(p.T)[j];
  }
  __syncthreads();
  const x_t* __restrict__ x = static_cast<const x_t*>(p.x);
  x_t* __restrict__ y = static_cast<x_t*>(p.y);
  double reg[kReg ? kMaxK : 1];
#pragma unroll
  for (int t = 0; t < (kReg ? kMaxK : 1); ++t) reg[t] = 0.0;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += stride) {
    const C xi = to_compute(x[i]);
    C v = xi, acc = C(0);
    uint32_t count = 0;
#pragma unroll
    for (int t = 0; t < kMaxK; ++t) {
      if (t < steps) {
        const C tt = sh[2][t];
        if (kReg) {
          const C r = fabs((v - tt) / (fabs(v) + C(1))) - C(1);
          reg[kReg ? t : 0] += static_cast<double>(r > C(0) ? r : C(0));
        }
        const bool z = v > tt;
        acc += z ? sh[1][t] : C(0);
        v -= z ? sh[0][t] : C(0);
        if (kMode == 1) count += z ? 1u : 0u;
        if (kMode == 2) count |= (z ? 1u : 0u) << t;
      }
    }
    y[i] = from_compute<x_t>(xi != xi ? xi : acc);  // NaN in, NaN out
    if (kMode == 1) static_cast<uint8_t*>(p.spikes)[i] = static_cast<uint8_t>(count);
    if (kMode == 2) static_cast<int32_t*>(p.spikes)[i] = static_cast<int32_t>(count);
  }
  if (kReg) block_sums<kReg ? kMaxK : 1>(reg, steps, p.reg_partial + blockIdx.x * steps);
}

// The backward (cpu/fs_activation_kernel.cpp has the recursion).
template <typename x_t, typename C, int kMaxK, bool kWantX, bool kWantParams, bool kReg>
__global__ void __launch_bounds__(kThreads) fs_backward_kernel(FsBackwardParams p) {
  __shared__ C sh[3][kFsMaxSteps];
  __shared__ double sh_greg[kFsMaxSteps];
  const int steps = p.steps;
  for (int j = threadIdx.x; j < steps; j += blockDim.x) {
    sh[0][j] = static_cast<const C*>(p.h)[j];
    sh[1][j] = static_cast<const C*>(p.d)[j];
    sh[2][j] = static_cast<const C*>(p.T)[j];
    sh_greg[j] = kReg ? p.grad_reg[j] : 0.0;
  }
  __syncthreads();
  const x_t* __restrict__ x = static_cast<const x_t*>(p.x);
  const x_t* __restrict__ gy = static_cast<const x_t*>(p.grad_y);
  x_t* __restrict__ gx = static_cast<x_t*>(p.grad_x);
  constexpr int kAcc = kWantParams ? 3 * kMaxK : 1;
  double acc[kAcc];
#pragma unroll
  for (int j = 0; j < kAcc; ++j) acc[j] = 0.0;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += stride) {
    C v[kMaxK];
    v[0] = to_compute(x[i]);
#pragma unroll
    for (int t = 0; t + 1 < kMaxK; ++t) {
      if (t + 1 < steps) v[t + 1] = v[t] - (v[t] > sh[2][t] ? sh[0][t] : C(0));
    }
    const C g = to_compute(gy[i]);
    C a = C(0);
#pragma unroll
    for (int t = kMaxK - 1; t >= 0; --t) {
      if (t < steps) {
        const C vt = v[t], tt = sh[2][t];
        const bool z = vt > tt;
        const C num = vt - tt, den = fabs(vt) + C(1);
        const C vs = num / den;
        const C gz = g * sh[1][t] - a * sh[0][t];
        const C tri = C(1) - fabs(vs);
        C gvs = gz * (tri > C(0) ? tri : C(0));
        if (kReg) gvs += fabs(vs) > C(1) ? static_cast<C>(sh_greg[t]) * sgn(vs) : C(0);
        const C gnum = gvs / den;
        const C gden = -gvs * (vs / den);  // as autograd differentiates num / den
        if (kWantParams) {
          acc[kWantParams ? t : 0] -= z ? static_cast<double>(a) : 0.0;
          acc[kWantParams ? kMaxK + t : 0] += z ? static_cast<double>(g) : 0.0;
          acc[kWantParams ? 2 * kMaxK + t : 0] -= static_cast<double>(gnum);
        }
        a += gnum + gden * sgn(vt);
      }
    }
    if (kWantX) gx[i] = from_compute<x_t>(a);
  }
  if (kWantParams) {
    // acc is laid out (3, kMaxK); the partial row is (3, steps).
    double packed[kAcc];
#pragma unroll
    for (int j = 0; j < kAcc; ++j) packed[j] = 0.0;
#pragma unroll
    for (int q = 0; q < 3; ++q) {
#pragma unroll
      for (int t = 0; t < kMaxK; ++t) {
        if (t < steps) packed[q * steps + t] = acc[q * kMaxK + t];
      }
    }
    block_sums<kAcc>(packed, 3 * steps, p.param_partial + blockIdx.x * 3 * steps);
  }
}

#define FS_MAX_K_SWITCH(STEPS, CONST, ...) \
  [&] {                                    \
    if ((STEPS) <= 8) {                    \
      constexpr static int CONST = 8;      \
      return __VA_ARGS__();                \
    } else if ((STEPS) <= 16) {            \
      constexpr static int CONST = 16;     \
      return __VA_ARGS__();                \
    } else {                               \
      constexpr static int CONST = 32;     \
      return __VA_ARGS__();                \
    }                                      \
  }()

template <typename x_t, typename C>
const char* launch_forward(const FsForwardParams& p, cudaStream_t stream) {
  const unsigned int blocks = static_cast<unsigned int>(p.partials);
  FS_MAX_K_SWITCH(p.steps, kMaxK, [&] {
    BOOL_SWITCH(p.reg_partial != nullptr, kReg, [&] {
      switch (p.spike_mode) {
        case 1: fs_forward_kernel<x_t, C, 1, kReg, kMaxK><<<blocks, kThreads, 0, stream>>>(p); break;
        case 2: fs_forward_kernel<x_t, C, 2, kReg, kMaxK><<<blocks, kThreads, 0, stream>>>(p); break;
        default: fs_forward_kernel<x_t, C, 0, kReg, kMaxK><<<blocks, kThreads, 0, stream>>>(p); break;
      }
    });
  });
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <typename x_t, typename C>
const char* launch_backward(const FsBackwardParams& p, cudaStream_t stream) {
  const unsigned int blocks = static_cast<unsigned int>(p.partials);
  FS_MAX_K_SWITCH(p.steps, kMaxK, [&] {
    BOOL_SWITCH(p.grad_x != nullptr, kWantX, [&] {
      BOOL_SWITCH(p.param_partial != nullptr, kWantParams, [&] {
        BOOL_SWITCH(p.grad_reg != nullptr, kReg, [&] {
          fs_backward_kernel<x_t, C, kMaxK, kWantX, kWantParams, kReg><<<blocks, kThreads, 0, stream>>>(p);
        });
      });
    });
  });
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

// x float64/float32 with parameters of its dtype, or float16/bfloat16 with float32 parameters.
template <typename Params, typename Launch>
const char* dispatch(const Params& p, Launch&& launch) {
  if (p.dtype == Dtype::Float64 && p.param_dtype == Dtype::Float64) return launch(double(), double());
  if (p.param_dtype == Dtype::Float32) {
    switch (p.dtype) {
      case Dtype::Float32: return launch(float(), float());
      case Dtype::Float16: return launch(__half(), float());
      case Dtype::BFloat16: return launch(__nv_bfloat16(), float());
      default: break;
    }
  }
  return "unsupported dtypes: x float64 or float32 with h, d, T of its dtype, or float16/bfloat16 with "
         "float32 h, d, T";
}

}  // namespace

// A grid that fills any current GPU; each block writes one partial row.
int64_t fs_partials_cuda(int64_t numel) {
  return std::min<int64_t>(std::max<int64_t>((numel + 4 * kThreads - 1) / (4 * kThreads), 1), 4096);
}

const char* fs_forward_cuda(const FsForwardParams& p, void* stream) {
  if (p.nonfinite != nullptr) return "the CUDA kernel does not check its input (see KernelTable)";
  if (p.steps < 1 || p.steps > kFsMaxSteps) return "the number of steps must be in 1..32";
  if (p.partials != fs_partials_cuda(p.numel)) return "partials must be fs_partials_cuda(numel)";
  if (p.numel == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  return dispatch(p, [&](auto x0, auto c0) { return launch_forward<decltype(x0), decltype(c0)>(p, s); });
}

const char* fs_backward_cuda(const FsBackwardParams& p, void* stream) {
  if (p.steps < 1 || p.steps > kFsMaxSteps) return "the number of steps must be in 1..32";
  if (p.partials != fs_partials_cuda(p.numel)) return "partials must be fs_partials_cuda(numel)";
  if (p.numel == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  return dispatch(p, [&](auto x0, auto c0) { return launch_backward<decltype(x0), decltype(c0)>(p, s); });
}

}  // namespace ttfs_ext
