// Run-time values to compile-time template arguments, as flash-attention's static_switch.h:
//   BOOL_SWITCH(p.gate != nullptr, kGate, [&] { kernel<kGate>(p); });
//   TIME_DTYPE_SWITCH(p.dtype, T, [&] { kernel<T>(p); })  -> false for a dtype other than
//                                                            float64/float32 (nothing runs)
//   time_and_matrix_dtypes(p.in_dtype, p.out_dtype, [&](auto t, auto m) { ... })
// Each instantiates the body once per value; plain C++17, so nvcc compiles it too.
#pragma once

#include "kernels/element_math.h"
#include "kernels/params.h"

#define BOOL_SWITCH(COND, CONST_NAME, ...)      \
  [&] {                                         \
    if (COND) {                                 \
      constexpr static bool CONST_NAME = true;  \
      return __VA_ARGS__();                     \
    } else {                                    \
      constexpr static bool CONST_NAME = false; \
      return __VA_ARGS__();                     \
    }                                           \
  }()

#define TIME_DTYPE_SWITCH(DTYPE, TYPE, ...)          \
  [&] {                                              \
    if ((DTYPE) == ::ttfs_ext::Dtype::Float64) {     \
      using TYPE = double;                           \
      __VA_ARGS__();                                 \
      return true;                                   \
    }                                                \
    if ((DTYPE) == ::ttfs_ext::Dtype::Float32) {     \
      using TYPE = float;                            \
      __VA_ARGS__();                                 \
      return true;                                   \
    }                                                \
    return false;                                    \
  }()

namespace ttfs_ext {

// The dtype pairs of the B1 layers' element-wise passes, one rule for every device: spike
// times float64 or float32, the matrix operand of the GEMM/convolution the same dtype, or
// float16/bfloat16 with float32 spike times (autocast). Calls fn(time_t{}, matrix_t{}) once and
// returns true, or returns false for any other pair.
template <typename Fn>
bool time_and_matrix_dtypes(Dtype time, Dtype matrix, Fn&& fn) {
  if (time == Dtype::Float64 && matrix == Dtype::Float64) return fn(double(), double()), true;
  if (time != Dtype::Float32) return false;
  switch (matrix) {
    case Dtype::Float32: return fn(float(), float()), true;
    case Dtype::Float16: return fn(float(), math::Half()), true;
    case Dtype::BFloat16: return fn(float(), math::BFloat16()), true;
    default: return false;
  }
}

constexpr const char* kTimeAndMatrixDtypeError =
    "unsupported dtype pair: spike times must be float64 or float32, matrices the same dtype or "
    "float16/bfloat16 with float32 spike times";

}  // namespace ttfs_ext
