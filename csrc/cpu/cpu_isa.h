// Instruction sets of the CPU kernels.
//
// The extension is built for the baseline x86-64 ISA (SSE2) so that one wheel runs anywhere;
// ATen's own kernels dispatch to AVX2/AVX-512 at run time. The hot loops here do the same:
// each is written once as a TTFS_INLINE `run` of a small struct, and run_for_isa<Loop>(...)
// calls a copy of it compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2) or the baseline,
// the one cpu_isa() names. That is the best the CPU supports, or the one set_cpu_isa() forces,
// so that the tests run every ISA's code on whatever CPU they find (a load-time choice, as
// GCC's target_clones make, could not be forced).
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TTFS_HAVE_ISA_VARIANTS 1
// One function compiled for one ISA.
#define TTFS_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define TTFS_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define TTFS_HAVE_ISA_VARIANTS 0
#endif

#if defined(__GNUC__)
#define TTFS_INLINE inline __attribute__((always_inline))
#else
#define TTFS_INLINE inline
#endif

namespace ttfs_ext {

enum class CpuIsa : int { Baseline = 0, V3 = 1, V4 = 2 };  // ordered: each runs the ones below it

// The best ISA this CPU (and this build) can run.
CpuIsa detected_cpu_isa();
// The ISA the CPU loops run now: detected_cpu_isa(), or the one set_cpu_isa() forced.
CpuIsa cpu_isa();
// "x86-64-v4", "x86-64-v3" or "baseline".
const char* cpu_isa_name(CpuIsa isa);
// For tests and measurements: run every CPU loop with one ISA's code, or "" for automatic.
// Returns nullptr, or why not (an unknown name, an ISA this CPU cannot run).
const char* set_cpu_isa(const char* name);
// Parses an ISA name; returns false for an unknown one.
bool parse_cpu_isa(const char* name, CpuIsa* isa);

#if TTFS_HAVE_ISA_VARIANTS
template <typename Loop, typename... Args>
TTFS_TARGET_V4 auto run_v4(Args... args) {
  return Loop::run(args...);
}
template <typename Loop, typename... Args>
TTFS_TARGET_V3 auto run_v3(Args... args) {
  return Loop::run(args...);
}
// Loops written on explicit GCC vectors take the ISA's native width as a template argument:
// GCC lowers a generic vector wider than the ISA's piecewise, and its compares and selects
// then become scalar code (a 64-byte loop ran 3-4x slower with AVX2 code than the same loop on
// 32-byte vectors).
template <typename Loop, typename... Args>
TTFS_TARGET_V4 auto run_v4_vec(Args... args) {
  return Loop::template run<64>(args...);
}
template <typename Loop, typename... Args>
TTFS_TARGET_V3 auto run_v3_vec(Args... args) {
  return Loop::template run<32>(args...);
}
#endif
template <typename Loop, typename... Args>
auto run_baseline(Args... args) {
  return Loop::run(args...);
}
template <typename Loop, typename... Args>
auto run_baseline_vec(Args... args) {
  return Loop::template run<16>(args...);
}

// Loop::run(args...) in the code of the ISA the CPU loops run (cpu_isa()).
template <typename Loop, typename... Args>
auto run_for_isa(Args... args) {
#if TTFS_HAVE_ISA_VARIANTS
  switch (cpu_isa()) {
    case CpuIsa::V4: return run_v4<Loop>(args...);
    case CpuIsa::V3: return run_v3<Loop>(args...);
    case CpuIsa::Baseline: break;
  }
#endif
  return run_baseline<Loop>(args...);
}

// Loop::run<kVecBytes>(args...) in the code of the ISA the CPU loops run, with its native vector
// width in bytes (64 AVX-512, 32 AVX2, 16 SSE2).
template <typename Loop, typename... Args>
auto run_for_isa_vec(Args... args) {
#if TTFS_HAVE_ISA_VARIANTS
  switch (cpu_isa()) {
    case CpuIsa::V4: return run_v4_vec<Loop>(args...);
    case CpuIsa::V3: return run_v3_vec<Loop>(args...);
    case CpuIsa::Baseline: break;
  }
#endif
  return run_baseline_vec<Loop>(args...);
}

// How the CPU kernels' at::parallel_for runs: "openmp" or "native" (torch's thread pool), or
// "one thread" when torch uses OpenMP but this library was compiled without it
// (cpu/elementwise_kernel.cpp).
const char* cpu_parallel_backend();

}  // namespace ttfs_ext
