// Plain parameter structs of the one-pass backward and forward of dense TTFS layers with few rows.
//
// With few rows (a small batch), both weight-sized GEMMs of a dense layer's backward pass,
//   grad_in = g W            (reads W)
//   grad_w  = g^T (t_in - t_min)   (writes a W-sized result)
// stream the weight matrix through memory and do little arithmetic per element: two vendor
// GEMMs then cost two passes over W-sized memory plus the delays' element-wise pass. This
// kernel makes one pass: each W tile is read once, its grad_w tile written once, and the
// delays are computed in cache (benchmarks/NOTES.md, v4). The forward's GEMM gets the same
// treatment below.
#pragma once

#include <cstdint>

#include "elementwise.h"

namespace ttfs_ext {

// When the CPU layers take the one-pass kernels: a few rows, and a weight matrix that streams
// from beyond the caches. From benchmarks/bench_one_pass.py on the project's 2-core machine
// (results/one_pass_cpu*.json, NOTES v4), on weights of 16-400 MB, AVX-512 code: the backward
// op took 0.68-0.90x the time of the twin's (gate and two vendor GEMMs) at 8-32 rows, 1.0x at
// 64; the forward 0.38-0.77x the twin's at 8-16 rows, 1.2-1.4x at 32 (the rows of x no longer
// fit in L2 and are read again for every group of weight rows). One row gains nothing: the
// vendor GEMV and rank-1 update are one pass already; the gain at more rows is the packing of
// W and the second pass the vendor GEMMs make. On weights of 1-4 MB, which stay in cache, the
// vendor GEMMs win.
constexpr int64_t kOnePassMinRows = 2;
constexpr int64_t kOnePassMaxRows = 32;
constexpr int64_t kOnePassForwardMaxRows = 16;       // with AVX-512 code
constexpr int64_t kOnePassForwardMaxRowsNarrow = 8;  // with AVX2 (or forced SSE2) code (NOTES v4)
constexpr int64_t kOnePassMinWeightBytes = int64_t{16} << 20;

// Whether the CPU layers use the kernels: with AVX-512 or AVX2 code (each with its own vector
// width and blocking), measured faster than the vendor GEMMs; not with baseline SSE2 code,
// measured slower. Read at each layer call.
bool linear_one_pass_enabled();
// The ISA whose code the kernels run ("x86-64-v4", "x86-64-v3" or "baseline").
const char* linear_one_pass_isa();
// For tests and measurements: run one ISA's code (and use the kernels even with "baseline"),
// or "" for automatic. Returns nullptr, or why not (an unknown name, an ISA this CPU lacks).
const char* set_linear_one_pass_isa(const char* name);

inline bool linear_one_pass_pays(int64_t rows, int64_t weight_bytes) {
  return rows >= kOnePassMinRows && rows <= kOnePassMaxRows && weight_bytes >= kOnePassMinWeightBytes;
}
// The forward's row limit for the ISA whose code runs.
int64_t linear_one_pass_forward_max_rows();

inline bool linear_one_pass_forward_pays(int64_t rows, int64_t weight_bytes) {
  return rows >= kOnePassMinRows && rows <= linear_one_pass_forward_max_rows() &&
         weight_bytes >= kOnePassMinWeightBytes;
}

// All row-major and contiguous; grad_in may be nullptr (no input gradient wanted).
//   grad_in[r, i] = sum_o grad[r, o] * weight[o, i]
//   grad_w[o, i]  = sum_r grad[r, o] * (t_in[r, i] - t_min)
struct LinearOnePassBackwardParams {
  const void* grad = nullptr;    // (rows, out_features): the gated upstream gradient
  const void* t_in = nullptr;    // (rows, in_features): input spike times
  const void* weight = nullptr;  // (out_features, in_features)
  void* grad_in = nullptr;       // (rows, in_features) or nullptr
  void* grad_w = nullptr;        // (out_features, in_features)
  Dtype dtype = Dtype::Float32;  // of every tensor
  int64_t rows = 0;
  int64_t in_features = 0;
  int64_t out_features = 0;
  double t_min = 0.0;
};

// LinearOnePassBackwardFn (elementwise.h) returns nullptr on success, else a message (an unsupported
// dtype). Correct for any sizes; linear_one_pass_pays decides where it is used.
// Defined in cpu/linear_one_pass_cpu.cpp.
const char* linear_one_pass_backward_cpu(const LinearOnePassBackwardParams& p, void* stream);

// The forward GEMM of the same layers, u[r, o] = sum_i x[r, i] * weight[o, i], reading each
// weight row once, in order, straight from the matrix (a vendor GEMM packs the weight first:
// one more W-sized pass; at few rows the arithmetic is too little to pay for it).
struct LinearOnePassForwardParams {
  const void* x = nullptr;       // (rows, in_features): activations
  const void* weight = nullptr;  // (out_features, in_features)
  void* u = nullptr;             // (rows, out_features)
  Dtype dtype = Dtype::Float32;  // of every tensor
  int64_t rows = 0;
  int64_t in_features = 0;
  int64_t out_features = 0;
};

const char* linear_one_pass_forward_cpu(const LinearOnePassForwardParams& p, void* stream);

}  // namespace ttfs_ext
