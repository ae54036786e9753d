// CPU element-wise passes of the TTFS layers; mirrors cuda/elementwise_kernel.cu.
//
// Each parallel task hands a span to a loop over plain __restrict pointers and by-value
// scalars, with selects instead of branches, compiled with -fno-trapping-math
// (CMakeLists.txt): GCC then vectorises it. Without these the gated pass stayed a scalar,
// branchy loop, many times slower than ATen's threshold_backward
// (benchmarks/NOTES.md).
#include "kernels/params.h"
#include "cpu/cpu_isa.h"
#include "kernels/static_switch.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>

namespace ttfs_ext {
namespace {

constexpr int64_t kGrain = 32768;

// One vectorised loop per span, compiled per ISA (run_for_isa): spans that fit in L2 run at
// its speed only with the wide vectors. kCheck also returns whether an input is NaN or inf (the unordered
// compare is true for NaN), in the same read.
template <typename in_t, typename out_t, bool kGate, bool kNegate, bool kCheck>
struct PrologueSpan {
  static TTFS_INLINE int run(const in_t* __restrict in, const in_t* __restrict gate, out_t* __restrict out,
                             int64_t n, in_t offset, in_t t_max) {
    int nonfinite = 0;
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (kCheck) nonfinite |= math::nonfinite(in[i], std::numeric_limits<in_t>::max());
      in_t v = math::shift<kNegate>(in[i], offset);
      if constexpr (kGate) v = math::gated(v, gate[i], t_max);
      out[i] = math::cast<out_t>(v);
    }
    return nonfinite;
  }
};

template <typename in_t, typename out_t, bool kGate, bool kNegate, bool kCheck>
void prologue_kernel_impl(const PrologueParams& p) {
  const in_t* in = static_cast<const in_t*>(p.in);
  const in_t* gate = static_cast<const in_t*>(p.gate);
  out_t* out = static_cast<out_t*>(p.out);
  const in_t offset = static_cast<in_t>(p.offset);
  const in_t t_max = static_cast<in_t>(p.t_max);
  std::atomic<int> nonfinite{0};
  at::parallel_for(0, p.numel, kGrain, [&](int64_t begin, int64_t end) {
    if (run_for_isa<PrologueSpan<in_t, out_t, kGate, kNegate, kCheck>>(in + begin, kGate ? gate + begin : nullptr,
                                                                       out + begin, end - begin, offset, t_max)) {
      nonfinite.store(1, std::memory_order_relaxed);
    }
  });
  if constexpr (kCheck) *p.nonfinite = nonfinite.load();
}

template <typename in_t, typename out_t>
void prologue_dispatch(const PrologueParams& p) {
  // The gated pass never checks (prologue_cpu refuses the pair).
  BOOL_SWITCH(p.gate != nullptr, kGate, [&] {
    BOOL_SWITCH(p.scale < 0, kNegate, [&] {
      BOOL_SWITCH(p.nonfinite != nullptr && !kGate, kCheck, [&] {
        prologue_kernel_impl<in_t, out_t, kGate, kNegate, kCheck && !kGate>(p);
      });
    });
  });
}

// out[i] = fire(u[i] + bias[i * bias_stride]) for i < n. In place (the common case: the GEMM
// wrote the spike-time dtype) gets its own loop: GCC's run-time alias check would reject
// out == u and fall back to the scalar loop.
template <typename time_t, bool kSpiking>
struct EpilogueSpanInplace {
  static TTFS_INLINE void run(time_t* __restrict io, const time_t* __restrict bias, int64_t bias_stride, int64_t n,
                              time_t t_max) {
    if (bias == nullptr) {
      for (int64_t i = 0; i < n; ++i) io[i] = math::epilogue<kSpiking>(io[i], t_max);
    } else if (bias_stride == 0) {
      const time_t b = bias[0];
      for (int64_t i = 0; i < n; ++i) io[i] = math::epilogue<kSpiking>(math::add_bias(io[i], b), t_max);
    } else if (bias_stride == 1) {  // a contiguous loop, not a gather
      for (int64_t i = 0; i < n; ++i) io[i] = math::epilogue<kSpiking>(math::add_bias(io[i], bias[i]), t_max);
    } else {
      for (int64_t i = 0; i < n; ++i) io[i] = math::epilogue<kSpiking>(math::add_bias(io[i], bias[i * bias_stride]), t_max);
    }
  }
};

template <typename u_t, typename time_t, bool kSpiking>
struct EpilogueSpan {
  static TTFS_INLINE void run(const u_t* __restrict u, const time_t* __restrict bias, int64_t bias_stride,
                              time_t* __restrict out, int64_t n, time_t t_max) {
    for (int64_t i = 0; i < n; ++i) {
      const time_t v = math::cast<time_t>(u[i]);
      out[i] = math::epilogue<kSpiking>(bias != nullptr ? math::add_bias(v, bias[i * bias_stride]) : v, t_max);
    }
  }
};

// Rows of (channels, positions) elements; a span is one channel of one row (conv) or one
// whole row (dense, positions == 1: one bias per element).
template <typename u_t, typename time_t, bool kSpiking>
void epilogue_kernel_impl(const EpilogueParams& p) {
  const u_t* u = static_cast<const u_t*>(p.u);
  const time_t* bias = static_cast<const time_t*>(p.bias);
  time_t* out = static_cast<time_t*>(p.out);
  const time_t t_max = static_cast<time_t>(p.t_max);
  const bool inplace = static_cast<const void*>(u) == static_cast<const void*>(out);
  const bool dense = p.positions == 1;
  const int64_t span = dense ? p.channels : p.positions;  // elements per span
  const int64_t spans_per_row = dense ? 1 : p.channels;
  const int64_t spans = p.numel / span;
  at::parallel_for(0, spans, std::max<int64_t>(1, kGrain / span), [=](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const int64_t c = s % spans_per_row;  // channel of a conv span; 0 for dense
      const time_t* b = bias == nullptr ? nullptr : bias + (dense ? 0 : c * p.bias_stride_c);
      const int64_t b_stride = dense ? p.bias_stride_c : p.bias_stride_p;
      if constexpr (std::is_same_v<u_t, time_t>) {
        if (inplace) {
          run_for_isa<EpilogueSpanInplace<time_t, kSpiking>>(out + s * span, b, b_stride, span, t_max);
          continue;
        }
      }
      run_for_isa<EpilogueSpan<u_t, time_t, kSpiking>>(u + s * span, b, b_stride, out + s * span, span, t_max);
    }
  });
}

template <typename u_t, typename time_t>
void epilogue_dispatch(const EpilogueParams& p) {
  BOOL_SWITCH(p.spiking, kSpiking, [&] { epilogue_kernel_impl<u_t, time_t, kSpiking>(p); });
}

}  // namespace

const char* cpu_parallel_backend() {
#if AT_PARALLEL_OPENMP && defined(_OPENMP)
  return "openmp";
#elif AT_PARALLEL_OPENMP
  return "one thread";  // the omp pragma in at::parallel_for compiled away (no -fopenmp)
#else
  return "native";
#endif
}

// The dtype pairs of every device (time_and_matrix_dtypes): the CPU B1 layers use matrices of
// the spike-time dtype; the float16/bfloat16 pairs of CUDA autocast run here too, in the CUDA-like
// kernel profile of the tests.
const char* prologue_cpu(const PrologueParams& p, void* /*stream*/) {
  if (p.gate != nullptr && p.nonfinite != nullptr) return "the gated prologue does not check its input";
  if (p.nonfinite != nullptr) *p.nonfinite = 0;
  if (p.numel == 0) return nullptr;
  const bool ran = time_and_matrix_dtypes(p.in_dtype, p.out_dtype, [&](auto t, auto m) {
    prologue_dispatch<decltype(t), decltype(m)>(p);
  });
  return ran ? nullptr : kTimeAndMatrixDtypeError;
}

const char* epilogue_cpu(const EpilogueParams& p, void* /*stream*/) {
  if (p.numel == 0) return nullptr;
  const bool ran = time_and_matrix_dtypes(p.out_dtype, p.u_dtype, [&](auto t, auto m) {
    epilogue_dispatch<decltype(m), decltype(t)>(p);
  });
  return ran ? nullptr : kTimeAndMatrixDtypeError;
}

}  // namespace ttfs_ext
