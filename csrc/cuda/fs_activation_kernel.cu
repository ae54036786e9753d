// CUDA kernels of fs_activation: launch, indexing and reductions around the element math of
// kernels/element_math.h (a step forward, a step backward, the regulariser's term), which
// cpu/fs_activation_kernel.cpp runs too.
// Includes only CUDA and project headers so that nvcc can compile it anywhere.
//
// A fixed grid of fs_partials_cuda(numel) blocks of kThreads threads covers the elements with a
// grid-stride loop; each block reads h, d, T once into shared memory, each thread keeps its
// potential (and, in the backward, the K potentials of its element and its parameter-gradient
// sums) in registers: the step loops are unrolled to a compile-time bound kMaxK >= K, so every
// array index is a constant after unrolling. Each block writes one partial row of the
// reductions (warp shuffles, then across warps), which the layer code sums in order:
// deterministic.
#include "kernels/element_math.h"
#include "kernels/params.h"
#include "cuda/launch.cuh"
#include "kernels/static_switch.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace ttfs_ext {
namespace {

constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// Sums acc[j] over the block (launched with kThreads threads) for the j < kN with
// active(j), and writes the sum of acc[j] to out[index(j)]; a fixed order of additions.
template <int kN, typename Active, typename Index>
__device__ __forceinline__ void block_sums(const double (&acc)[kN], Active active, Index index, double* out) {
  __shared__ double warp_part[kWarps][kN];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int j = 0; j < kN; ++j) {
    if (active(j)) {
      const double s = warp_sum(acc[j]);
      if (lane == 0) warp_part[warp][j] = s;
    }
  }
  __syncthreads();
  for (int j = threadIdx.x; j < kN; j += kThreads) {
    if (!active(j)) continue;
    double s = 0.0;
    for (int w = 0; w < kWarps; ++w) s += warp_part[w][j];
    out[index(j)] = s;
  }
}

template <typename x_t, typename C, int kMode, bool kReg, int kMaxK>
__global__ void __launch_bounds__(kThreads) fs_forward_kernel(FsForwardParams p) {
  __shared__ C sh[3][kFsMaxSteps];
  const int steps = p.steps;
  for (int j = threadIdx.x; j < steps; j += kThreads) {
    sh[0][j] = static_cast<const C*>(p.h)[j];
    sh[1][j] = static_cast<const C*>(p.d)[j];
    sh[2][j] = static_cast<const C*>(p.T)[j];
  }
  __syncthreads();
  const x_t* __restrict__ x = static_cast<const x_t*>(p.x);
  x_t* __restrict__ y = static_cast<x_t*>(p.y);
  constexpr int kRegN = kReg ? kMaxK : 1;
  double reg[kRegN];
#pragma unroll
  for (int t = 0; t < kRegN; ++t) reg[t] = 0.0;
  for (int64_t i = thread_index(); i < p.numel; i += thread_stride()) {
    const C xi = math::cast<C>(x[i]);
    C v = xi, acc = C(0);
    uint32_t count = 0;
#pragma unroll
    for (int t = 0; t < kMaxK; ++t) {
      if (t < steps) {
        const C tt = sh[2][t];
        if (kReg) reg[kReg ? t : 0] += static_cast<double>(math::fs_reg_term(v, tt));
        const bool z = v > tt;
        math::fs_step(v, acc, z, sh[0][t], sh[1][t]);
        if (kMode == 1) count += z ? 1u : 0u;
        if (kMode == 2) count |= (z ? 1u : 0u) << t;
      }
    }
    y[i] = math::cast<x_t>(math::fs_output(xi, acc));
    if (kMode == 1) static_cast<uint8_t*>(p.spikes)[i] = static_cast<uint8_t>(count);
    if (kMode == 2) static_cast<int32_t*>(p.spikes)[i] = static_cast<int32_t>(count);
  }
  if (kReg) {
    block_sums(reg, [&](int t) { return t < steps; }, [](int t) { return t; }, p.reg_partial + blockIdx.x * steps);
  }
}

// The backward, the steps in reverse (element_math.h: fs_step_backward).
template <typename x_t, typename C, int kMaxK, bool kWantX, bool kWantParams, bool kReg>
__global__ void __launch_bounds__(kThreads) fs_backward_kernel(FsBackwardParams p) {
  __shared__ C sh[3][kFsMaxSteps];
  __shared__ double sh_greg[kFsMaxSteps];
  const int steps = p.steps;
  for (int j = threadIdx.x; j < steps; j += kThreads) {
    sh[0][j] = static_cast<const C*>(p.h)[j];
    sh[1][j] = static_cast<const C*>(p.d)[j];
    sh[2][j] = static_cast<const C*>(p.T)[j];
    sh_greg[j] = kReg ? p.grad_reg[j] : 0.0;
  }
  __syncthreads();
  const x_t* __restrict__ x = static_cast<const x_t*>(p.x);
  const x_t* __restrict__ gy = static_cast<const x_t*>(p.grad_y);
  x_t* __restrict__ gx = static_cast<x_t*>(p.grad_x);
  // Parameter-gradient sums laid out (3, kMaxK): h, d, T.
  constexpr int kAcc = kWantParams ? 3 * kMaxK : 1;
  double acc[kAcc];
#pragma unroll
  for (int j = 0; j < kAcc; ++j) acc[j] = 0.0;
  for (int64_t i = thread_index(); i < p.numel; i += thread_stride()) {
    C v[kMaxK];
    v[0] = math::cast<C>(x[i]);
#pragma unroll
    for (int t = 0; t + 1 < kMaxK; ++t) {
      if (t + 1 < steps) v[t + 1] = math::fs_potential_after(v[t], sh[0][t], sh[2][t]);
    }
    const C g = math::cast<C>(gy[i]);
    C a = C(0);
#pragma unroll
    for (int t = kMaxK - 1; t >= 0; --t) {
      if (t < steps) {
        C neg_h, pos_d, neg_T;
        math::fs_step_backward<kReg>(v[t], g, a, sh[0][t], sh[1][t], sh[2][t], static_cast<C>(sh_greg[t]), neg_h,
                                     pos_d, neg_T);
        if (kWantParams) {
          acc[kWantParams ? t : 0] -= static_cast<double>(neg_h);
          acc[kWantParams ? kMaxK + t : 0] += static_cast<double>(pos_d);
          acc[kWantParams ? 2 * kMaxK + t : 0] -= static_cast<double>(neg_T);
        }
      }
    }
    if (kWantX) gx[i] = math::cast<x_t>(a);
  }
  if (kWantParams) {
    // (3, kMaxK) sums into the partial row (3, steps).
    block_sums(acc, [&](int j) { return j % kMaxK < steps; },
               [&](int j) { return (j / kMaxK) * steps + j % kMaxK; }, p.param_partial + blockIdx.x * 3 * steps);
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
  return last_error();
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
  return last_error();
}

// x float64/float32 with parameters of its dtype, or float16/bfloat16 with float32 parameters
// (the rule of every device: time_and_matrix_dtypes, with the parameters as "times").
template <typename Params, typename Launch>
const char* dispatch(const Params& p, Launch&& launch) {
  const char* err = nullptr;
  const bool ran = time_and_matrix_dtypes(p.param_dtype, p.dtype, [&](auto c, auto x) {
    err = launch(x, c);
  });
  return ran ? err : kFsDtypeError;
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
