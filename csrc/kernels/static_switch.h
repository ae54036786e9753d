// Run-time values to compile-time template arguments, as flash-attention's static_switch.h:
//   BOOL_SWITCH(p.gate != nullptr, kGate, [&] { kernel<kGate>(p); });
//   TIME_DTYPE_SWITCH(p.dtype, T, [&] { kernel<T>(p); })  -> false for a dtype other than
//                                                            float64/float32 (nothing runs)
// Each instantiates the body once per value; plain C++17, so nvcc compiles it too.
#pragma once

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
