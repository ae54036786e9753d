// Plain parameter structs for the event-exact general neuron (first_spike_* ops).
//
// A neuron integrates dV/dt = alpha H(t - t_start) + sum_j W_j H(t - t_j) from V(t_start) = 0
// and fires at the first crossing of its threshold. The device-generic code (first_spike.cpp)
// turns dense inputs and conv patches alike into rows: one row per (sample, output position),
// K inputs per row, O outputs (neurons) per row and group. Three kernels run on rows:
//   forward      scan the row's inputs in arrival order, first crossing of each neuron;
//   grad_input   grad_patch[r, k] = sum_o g[r, o] W[o, k] [t'[r, k] < t_out[r, o]];
//   grad_weight  partial[s, o, k] = sum_{r in split s} g[r, o] (t'[r, k] - t_out[r, o]) [t' < t_out],
// with g = dL/dt_out / slope (0 for neurons without a gradient) and t' = max(t_in, t_start).
// Output times may lie on an axis of their own (local time, each window from its start):
// t_out = t - t_origin, with t on the inputs' axis, and t_max (no spike) on the outputs' axis;
// the gradient kernels add t_origin back.
// Like elementwise.h: only pointers, sizes and scalars, so nvcc compiles the CUDA kernels
// without ATen headers. Times, weights and parameters share one dtype (float32 or float64);
// the kernels accumulate in float64.
#pragma once

#include <cstdint>

#include "elementwise.h"

namespace ttfs_ext {

// A backend either sorts each row itself (sorts_rows: the CPU, in per-task buffers) and reads
// tau, or is given the rows sorted by at::sort (CUDA: a segmented sort on the device) and reads
// tau_sorted and order. Either way ties keep input order, and +inf (padding) sorts last.
struct FirstSpikeForwardParams {
  const void* tau = nullptr;         // (rows, k) arrivals relative to t_start, unsorted (sorts_rows)
  const void* tau_sorted = nullptr;  // (rows, k) arrivals relative to t_start, ascending; +inf never arrives
  const int64_t* order = nullptr;    // (rows, k) index of each sorted arrival in the row's inputs
  const void* weight_t = nullptr;    // (k, outputs) the weight transposed: a row per input
  const void* alpha = nullptr;       // alpha[(r % param_rows) * param_ld + o]
  const void* threshold = nullptr;   // threshold[(r % param_rows) * param_ld + o]
  void* t_out = nullptr;             // t_out[r * out_ld + o]: spike time - t_origin, t_max if none
  void* slope = nullptr;             // slope[r * out_ld + o]: dV/dt at the spike, 0 without gradient
  Dtype dtype = Dtype::Float32;
  int64_t rows = 0;
  int64_t k = 0;
  int64_t outputs = 0;
  int64_t param_rows = 1;  // 1: per channel; positions: per position (rows are (b, l), l fastest)
  int64_t param_ld = 0;
  int64_t out_ld = 0;
  double t_start = 0.0;   // on the inputs' time axis
  double t_max = 0.0;     // on the outputs' time axis
  double t_origin = 0.0;  // where the outputs' time axis starts on the inputs'
};

struct FirstSpikeGradInputParams {
  const void* grad = nullptr;     // g[r * out_ld + o]
  const void* t_out = nullptr;    // t_out[r * out_ld + o], on the outputs' axis
  const void* t_patch = nullptr;  // (rows, k) max(t_in, t_start) on the inputs' axis, unsorted; +inf never arrives
  const void* weight = nullptr;   // (outputs, k)
  void* grad_patch = nullptr;     // (rows, k)
  Dtype dtype = Dtype::Float32;
  int64_t rows = 0;
  int64_t k = 0;
  int64_t outputs = 0;
  int64_t out_ld = 0;
  double t_origin = 0.0;  // t_out + t_origin is on the inputs' axis
};

struct FirstSpikeGradWeightParams {
  const void* grad = nullptr;     // g[r * out_ld + o]
  const void* t_out = nullptr;    // t_out[r * out_ld + o], on the outputs' axis
  const void* t_patch = nullptr;  // (rows, k) as for grad_input
  double* partial = nullptr;      // (splits, outputs, k); the caller sums over splits (deterministic)
  Dtype dtype = Dtype::Float32;
  int64_t rows = 0;
  int64_t k = 0;
  int64_t outputs = 0;
  int64_t out_ld = 0;
  int64_t splits = 1;  // split s holds rows [s * ceil(rows / splits), (s + 1) * ceil(rows / splits))
  double t_origin = 0.0;  // as for grad_input
};

// Launchers return nullptr on success, else a message (as in elementwise.h).
using FirstSpikeForwardFn = const char* (*)(const FirstSpikeForwardParams&, void* stream);
using FirstSpikeGradInputFn = const char* (*)(const FirstSpikeGradInputParams&, void* stream);
using FirstSpikeGradWeightFn = const char* (*)(const FirstSpikeGradWeightParams&, void* stream);

struct FirstSpikeBackend {
  FirstSpikeForwardFn forward;
  FirstSpikeGradInputFn grad_input;
  FirstSpikeGradWeightFn grad_weight;
  void* stream;             // cudaStream_t on CUDA, unused on CPU
  bool sorts_rows = false;  // forward reads tau and sorts each row itself (see FirstSpikeForwardParams)
};

// Defined in cpu/first_spike_cpu.cpp and cuda/first_spike_cuda.cu.
const char* first_spike_forward_cpu(const FirstSpikeForwardParams& p, void* stream);
const char* first_spike_grad_input_cpu(const FirstSpikeGradInputParams& p, void* stream);
const char* first_spike_grad_weight_cpu(const FirstSpikeGradWeightParams& p, void* stream);
const char* first_spike_forward_cuda(const FirstSpikeForwardParams& p, void* stream);
const char* first_spike_grad_input_cuda(const FirstSpikeGradInputParams& p, void* stream);
const char* first_spike_grad_weight_cuda(const FirstSpikeGradWeightParams& p, void* stream);

}  // namespace ttfs_ext
