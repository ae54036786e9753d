// When the CPU linear layers take the one-pass kernels (their structs: kernels/params.h).
// With few rows, both weight-sized GEMMs of a backward, and the forward's, stream W through
// memory with little arithmetic per element: two vendor GEMMs make two passes over W-sized
// memory (and pack W first), these kernels one. They pay with a few rows and a weight that
// streams from beyond the caches; one row gains nothing (the vendor GEMV is one pass already).
// The limits come from benchmarks/bench_one_pass.py (benchmarks/NOTES.md).
#pragma once

#include <cstdint>

namespace ttfs_ext {

constexpr int64_t kOnePassMinRows = 2;
constexpr int64_t kOnePassMaxRows = 32;
constexpr int64_t kOnePassForwardMaxRows = 16;       // with AVX-512 code
constexpr int64_t kOnePassForwardMaxRowsNarrow = 8;  // with AVX2 (or forced SSE2) code
constexpr int64_t kOnePassMinWeightBytes = int64_t{16} << 20;

// Whether the CPU layers use the kernels: with AVX-512 or AVX2 code (each with its own vector
// width and blocking); not with baseline SSE2 code, slower than the vendor GEMMs. Read at each
// layer call.
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

}  // namespace ttfs_ext
