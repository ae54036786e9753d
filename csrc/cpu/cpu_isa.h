// Instruction-set helpers of the CPU kernels.
//
// The extension is built for the baseline x86-64 ISA (SSE2) so that one wheel runs anywhere;
// ATen's own kernels dispatch to AVX2/AVX-512 at run time. TTFS_CPU_CLONES gives a hot loop
// the same: GCC emits an x86-64-v4 (AVX-512), an x86-64-v3 (AVX2) and a baseline clone and
// picks one when the library loads. The loops a clone calls are TTFS_INLINE: inlined into
// each clone, so compiled for its ISA with it (a call from one clone to another cannot be
// inlined).
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define TTFS_HAVE_CPU_CLONES 1
#define TTFS_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
// One function compiled for one ISA, for code whose blocking differs per ISA (the caller picks
// it with cpu_clone_isa()).
#define TTFS_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define TTFS_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define TTFS_HAVE_CPU_CLONES 0
#define TTFS_CPU_CLONES
#endif

#if defined(__GNUC__)
#define TTFS_INLINE inline __attribute__((always_inline))
#else
#define TTFS_INLINE inline
#endif
