// Plain parameter structs for the element-wise TTFS kernels.
//
// Every TTFS layer is one vendor GEMM/convolution between two element-wise passes:
//   prologue  before it: spike times -> activations, or grad_out -> gated gradients;
//   epilogue  after it:  potentials -> spike times (bias, threshold, clamp at t_max).
// These structs hold only pointers, sizes and scalars, so the CUDA kernels compile
// with nvcc alone (no ATen headers) and the CPU loops mirror them one for one.
#pragma once

#include <cstdint>

namespace ttfs_ext {

enum class Dtype : int32_t { Float64 = 0, Float32 = 1, Float16 = 2, BFloat16 = 3 };

// out[i] = cast<out_dtype>(scale * (in[i] - offset)), times (gate[i] < t_max) when gate is set.
//   activations   x = t_min - t_in      : offset = t_min, scale = -1
//   delays        d = t_in - t_min      : offset = t_min, scale = +1
//   gated grads   g * [t_out < t_max]   : offset = 0,     scale = +1, gate = t_out
// The subtraction runs in in_dtype (the spike-time dtype): differences keep float32 precise.
struct PrologueParams {
  const void* in = nullptr;
  const void* gate = nullptr;  // spike times, same dtype as `in`; nullptr = no gate
  void* out = nullptr;
  Dtype in_dtype = Dtype::Float32;
  Dtype out_dtype = Dtype::Float32;
  int64_t numel = 0;
  double offset = 0.0;
  double scale = 1.0;  // +1 or -1: exact in floating point
  double t_max = 0.0;  // gate threshold
  // Host flag, set to 1 when an `in` element is NaN or inf; nullptr = no check. Only backends
  // with checks_finite_in_prologue (the CPU) take it: there the input check rides on the
  // forward's one read of the spike times instead of a separate pass.
  int32_t* nonfinite = nullptr;
  // Where set (backends with sums_spans_in_prologue, for the gated gradient only): the sum of
  // each span of `span` consecutive outputs, numel / span values in in_dtype. A convolution's
  // bias gradient is then a sum over images of (image, channel) spans, instead of another
  // read of the gradient.
  void* span_sums = nullptr;
  int64_t span = 0;
};

// Output laid out as (batch, channels, positions), contiguous.
//   spiking: out = min(t_max - (u + bias), t_max); t_max means no spike, NaN propagates
//   readout: out = u + bias
// bias[c * bias_stride_c + p * bias_stride_p] has out_dtype; nullptr = no bias.
// `out` may alias `u` when both have the same dtype.
struct EpilogueParams {
  const void* u = nullptr;
  const void* bias = nullptr;
  void* out = nullptr;
  Dtype u_dtype = Dtype::Float32;
  Dtype out_dtype = Dtype::Float32;
  int64_t numel = 0;
  int64_t channels = 1;
  int64_t positions = 1;
  int64_t bias_stride_c = 0;
  int64_t bias_stride_p = 0;
  double t_max = 0.0;
  bool spiking = true;
};

// Launchers return nullptr on success, else a message (the CUDA error string, or an
// unsupported dtype pair); the ATen layer turns it into an exception.
using PrologueFn = const char* (*)(const PrologueParams&, void* stream);
using EpilogueFn = const char* (*)(const EpilogueParams&, void* stream);

struct LinearOnePassBackwardParams;  // linear_one_pass.h
struct LinearOnePassForwardParams;
using LinearOnePassBackwardFn = const char* (*)(const LinearOnePassBackwardParams& p, void* stream);
using LinearOnePassForwardFn = const char* (*)(const LinearOnePassForwardParams& p, void* stream);

// One implementation per device; the device-generic layer code calls through this table.
struct ElementwiseBackend {
  PrologueFn prologue;
  EpilogueFn epilogue;
  void* stream;  // cudaStream_t on CUDA, unused on CPU
  // The one-pass GEMMs of dense layers with few rows; nullptr where a device has none
  // (CUDA, for now: its vendor GEMMs have not been measured against them).
  LinearOnePassBackwardFn linear_one_pass_backward = nullptr;
  LinearOnePassForwardFn linear_one_pass_forward = nullptr;
  bool checks_finite_in_prologue = false;  // the prologue honours PrologueParams::nonfinite
  bool sums_spans_in_prologue = false;     // ... and PrologueParams::span_sums
};

// The data check of the forward ops' spike times (NaN/inf), for backends that fuse it into
// the prologue; Python's ttfs_ext.set_input_checks sets it (default on).
void set_input_checks(bool enabled);
bool input_checks_enabled();

// How the CPU kernels' at::parallel_for runs: "openmp" or "native" (torch's thread pool), or
// "one thread" when torch uses OpenMP but this library was compiled without it.
const char* cpu_parallel_backend();

// Defined in cpu/elementwise_cpu.cpp and cuda/elementwise_cuda.cu.
const char* prologue_cpu(const PrologueParams& p, void* stream);
const char* epilogue_cpu(const EpilogueParams& p, void* stream);
const char* prologue_cuda(const PrologueParams& p, void* stream);
const char* epilogue_cuda(const EpilogueParams& p, void* stream);

}  // namespace ttfs_ext
