// CUDA kernels of the event-exact general neuron: launch and indexing around the element math
// of kernels/element_math.h (segment test, arrivals, outputs, gradient terms), which
// cpu/first_spike_kernel.cpp runs too.
// Includes only CUDA and project headers so that nvcc can compile it anywhere.
// One thread per output element: (r, o) for the forward scan, (r, k) for grad_input and
// (split, o, k) for grad_weight; consecutive threads take consecutive o or k, so a warp
// reads the weight and the patches coalesced.
#include "kernels/element_math.h"
#include "kernels/params.h"
#include "cuda/launch.cuh"
#include "kernels/static_switch.h"

#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <cstdint>

namespace ttfs_ext {
namespace {

// Thread (r, o) walks the segments between the sorted arrivals of row r until neuron o
// crosses its threshold: segment k, [start, end] with k inputs arrived, has slope
// alpha + S and crossing (theta + P) / (alpha + S); the first segment with a positive slope
// and a crossing <= end holds the spike.
template <typename scalar_t>
__global__ void forward_kernel(FirstSpikeForwardParams p) {
  const auto* __restrict__ tau = static_cast<const scalar_t*>(p.tau_sorted);
  const int64_t* __restrict__ order = p.order;
  const auto* __restrict__ wt = static_cast<const scalar_t*>(p.weight_t);
  const auto* __restrict__ alpha = static_cast<const scalar_t*>(p.alpha);
  const auto* __restrict__ theta = static_cast<const scalar_t*>(p.threshold);
  auto* __restrict__ t_out = static_cast<scalar_t*>(p.t_out);
  auto* __restrict__ slope_out = static_cast<scalar_t*>(p.slope);
  const int64_t K = p.k, O = p.outputs;
  const double inf = CUDART_INF;
  for (int64_t i = thread_index(); i < p.rows * O; i += thread_stride()) {
    const int64_t r = i / O, o = i % O;
    const int64_t param = (r % p.param_rows) * p.param_ld + o;
    const double a = static_cast<double>(alpha[param]);
    const double th = static_cast<double>(theta[param]);
    double t_rel = math::first_spike_initial(th, inf);
    double slope = 0.0;
    if (t_rel == inf) {
      const scalar_t* tau_r = tau + r * K;
      const int64_t* order_r = order + r * K;
      double S = 0.0, P = 0.0, start = 0.0;
      for (int64_t k = 0;; ++k) {
        const double end = k < K ? static_cast<double>(tau_r[k]) : inf;  // +inf: last segment
        const double b = math::segment_slope(a, S);
        const double cross = math::segment_crossing(th, P, b);
        if (math::segment_holds_spike(b, cross, end)) {
          t_rel = math::spike_in_segment(cross, start);
          slope = b;
          break;
        }
        if (end == inf) break;  // padding sorts last and never arrives
        math::add_arrival(S, P, static_cast<double>(wt[order_r[k] * O + o]), end);
        start = end;
      }
    }
    double t, b;
    math::first_spike_output(t_rel, slope, p.t_start, p.t_origin, p.t_max, t, b);
    t_out[r * p.out_ld + o] = static_cast<scalar_t>(t);
    slope_out[r * p.out_ld + o] = static_cast<scalar_t>(b);
  }
}

// grad_patch[r, k] = sum_o g[r, o] W[o, k] [t'[r, k] < t_out[r, o]].
template <typename scalar_t>
__global__ void grad_input_kernel(FirstSpikeGradInputParams p) {
  const auto* __restrict__ g = static_cast<const scalar_t*>(p.grad);
  const auto* __restrict__ t_out = static_cast<const scalar_t*>(p.t_out);
  const auto* __restrict__ t_patch = static_cast<const scalar_t*>(p.t_patch);
  const auto* __restrict__ weight = static_cast<const scalar_t*>(p.weight);
  auto* __restrict__ grad_patch = static_cast<scalar_t*>(p.grad_patch);
  const int64_t K = p.k, O = p.outputs;
  for (int64_t i = thread_index(); i < p.rows * K; i += thread_stride()) {
    const int64_t r = i / K, k = i % K;
    const double tp = static_cast<double>(t_patch[i]);
    double acc = 0.0;
    for (int64_t o = 0; o < O; ++o) {
      const double go = static_cast<double>(g[r * p.out_ld + o]);
      if (go == 0.0) continue;  // silent neurons and those without gradient
      const double to = math::on_inputs_axis(static_cast<double>(t_out[r * p.out_ld + o]), p.t_origin);  // the inputs' axis
      acc += math::grad_input_term(go, static_cast<double>(weight[o * K + k]), tp, to);
    }
    grad_patch[i] = static_cast<scalar_t>(acc);
  }
}

// partial[s, o, k] = sum over the rows r of split s of g[r, o] (t'[r, k] - t_out[r, o]) [t' < t_out].
template <typename scalar_t>
__global__ void grad_weight_kernel(FirstSpikeGradWeightParams p) {
  const auto* __restrict__ g = static_cast<const scalar_t*>(p.grad);
  const auto* __restrict__ t_out = static_cast<const scalar_t*>(p.t_out);
  const auto* __restrict__ t_patch = static_cast<const scalar_t*>(p.t_patch);
  const int64_t K = p.k, O = p.outputs;
  const int64_t rows_per_split = (p.rows + p.splits - 1) / p.splits;
  for (int64_t i = thread_index(); i < p.splits * O * K; i += thread_stride()) {
    const int64_t s = i / (O * K), o = (i / K) % O, k = i % K;
    const int64_t r_end = min(p.rows, (s + 1) * rows_per_split);
    double acc = 0.0;
    for (int64_t r = s * rows_per_split; r < r_end; ++r) {
      const double go = static_cast<double>(g[r * p.out_ld + o]);
      if (go == 0.0) continue;
      const double to = math::on_inputs_axis(static_cast<double>(t_out[r * p.out_ld + o]), p.t_origin);  // the inputs' axis
      const double tp = static_cast<double>(t_patch[r * K + k]);
      acc += math::grad_weight_term(go, tp, to);
    }
    p.partial[i] = acc;
  }
}

constexpr const char* kDtypeError = "first_spike kernels support float64 and float32 only";

}  // namespace

const char* first_spike_forward_cuda(const FirstSpikeForwardParams& p, void* stream) {
  if (p.rows == 0 || p.outputs == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const unsigned int blocks = blocks_for(p.rows * p.outputs);
  if (!TIME_DTYPE_SWITCH(p.dtype, T, [&] { forward_kernel<T><<<blocks, kThreads, 0, s>>>(p); })) return kDtypeError;
  return last_error();
}

const char* first_spike_grad_input_cuda(const FirstSpikeGradInputParams& p, void* stream) {
  if (p.rows == 0 || p.k == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const unsigned int blocks = blocks_for(p.rows * p.k);
  if (!TIME_DTYPE_SWITCH(p.dtype, T, [&] { grad_input_kernel<T><<<blocks, kThreads, 0, s>>>(p); })) return kDtypeError;
  return last_error();
}

const char* first_spike_grad_weight_cuda(const FirstSpikeGradWeightParams& p, void* stream) {
  if (p.outputs == 0 || p.k == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const unsigned int blocks = blocks_for(p.splits * p.outputs * p.k);
  if (!TIME_DTYPE_SWITCH(p.dtype, T, [&] { grad_weight_kernel<T><<<blocks, kThreads, 0, s>>>(p); })) return kDtypeError;
  return last_error();
}

}  // namespace ttfs_ext
