// CPU kernel of spike_conv2d (kernels/params.h, SpikeConvParams): an event-driven convolution.
// A spike tensor is mostly zeros (feedback SNNs: 0.1-10 % of the forward neurons fire per step,
// under 1 % of SPIDE's backward neurons), so instead of a dense GEMM over every input element
// each nonzero element adds its c_out weights to the kh x kw output positions it reaches: a
// vectorised axpy over the contiguous c_out of the packed weight and of the channels-last
// output. The work is nonzeros x taps x c_out; zeros cost a vector test per block of channels.
// Samples run in parallel, each in a fixed order: the results do not depend on the thread
// count (nor, without fused multiply-adds, on the ISA). No CUDA twin: on GPUs the dense cuDNN
// convolution is the fast one at these sizes.
#include "kernels/params.h"
#include "cpu/cpu_isa.h"
#include "kernels/static_switch.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace ttfs_ext {
namespace {

// One output position: out[0:c] += v w[0:c] (GCC vectorises it; -ffp-contract=off: a multiply
// and an add, the same bits for every ISA).
template <typename T>
TTFS_INLINE void axpy(T* __restrict out, const T* __restrict w, T v, int64_t c) {
  for (int64_t o = 0; o < c; ++o) out[o] += v * w[o];
}

constexpr int64_t kBlock = 32;  // input elements tested for zero at once

// Whether x[0:n] are all +0 or -0 (an OR of the bits without the sign, which GCC vectorises).
template <typename T>
TTFS_INLINE bool all_zero(const T* __restrict x, int64_t n) {
  using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  constexpr Bits kNoSign = ~(Bits(1) << (8 * sizeof(T) - 1));
  Bits any = 0;
  for (int64_t i = 0; i < n; ++i) {
    Bits b;
    std::memcpy(&b, x + i, sizeof(T));
    any |= b & kNoSign;
  }
  return any == 0;
}

// Where each input row (or column) lands: for input index i, the (kernel tap, output index)
// pairs taps[start[i]] .. taps[start[i + 1]] - 1. Built once per call, so that the loop over
// the nonzeros does no integer division.
struct TapTable {
  std::vector<int64_t> start;
  std::vector<std::pair<int64_t, int64_t>> taps;

  TapTable(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil, int64_t size, bool transposed) {
    start.reserve(in + 1);
    for (int64_t i = 0; i < in; ++i) {
      start.push_back(static_cast<int64_t>(taps.size()));
      for (int64_t kk = 0; kk < k; ++kk) {
        int64_t o;
        if (transposed) {
          o = i * stride - pad + kk * dil;
        } else {
          const int64_t t = i + pad - kk * dil;  // o stride = t
          if (t < 0 || t % stride != 0) continue;
          o = t / stride;
        }
        if (o >= 0 && o < size) taps.emplace_back(kk, o);
      }
    }
    start.push_back(static_cast<int64_t>(taps.size()));
  }
};

template <typename T>
struct ScatterSample {
  static TTFS_INLINE int run(const SpikeConvParams& p, const TapTable* rows, const TapTable* cols,
                             const T* __restrict in, const T* __restrict weight, const T* __restrict bias,
                             T* __restrict out) {
    const int64_t c_in = p.c_in, c_out = p.c_out, taps = p.kh * p.kw;
    const int64_t positions = p.h_out * p.w_out;
    for (int64_t q = 0; q < positions; ++q) {
      T* row = out + q * c_out;
      for (int64_t o = 0; o < c_out; ++o) row[o] = bias != nullptr ? bias[o] : T(0);
    }
    for (int64_t iy = 0; iy < p.h_in; ++iy) {
      for (int64_t ix = 0; ix < p.w_in; ++ix) {
        const T* in_q = in + (iy * p.w_in + ix) * c_in;  // the position's c_in inputs
        for (int64_t c0 = 0; c0 < c_in; c0 += kBlock) {
          const int64_t c1 = std::min(c_in, c0 + kBlock);
          if (all_zero(in_q + c0, c1 - c0)) continue;  // the point: a block of zeros costs a vector test
          for (int64_t c = c0; c < c1; ++c) {
            const T v = in_q[c];
            if (v == T(0)) continue;
            const T* w_c = weight + c * taps * c_out;
            for (int64_t a = rows->start[iy]; a < rows->start[iy + 1]; ++a) {
              const auto [ky, oy] = rows->taps[a];
              for (int64_t b = cols->start[ix]; b < cols->start[ix + 1]; ++b) {
                const auto [kx, ox] = cols->taps[b];
                axpy(out + (oy * p.w_out + ox) * c_out, w_c + (ky * p.kw + kx) * c_out, v, c_out);
              }
            }
          }
        }
      }
    }
    return 0;
  }
};

template <typename T>
void spike_conv_impl(const SpikeConvParams& p) {
  const T* in = static_cast<const T*>(p.input);
  const T* weight = static_cast<const T*>(p.weight);
  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
  const int64_t in_sample = p.c_in * p.h_in * p.w_in, out_sample = p.h_out * p.w_out * p.c_out;
  const TapTable rows(p.h_in, p.kh, p.stride[0], p.pad[0], p.dil[0], p.h_out, p.transposed);
  const TapTable cols(p.w_in, p.kw, p.stride[1], p.pad[1], p.dil[1], p.w_out, p.transposed);
  at::parallel_for(0, p.n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      run_for_isa<ScatterSample<T>>(p, &rows, &cols, in + i * in_sample, weight, bias, out + i * out_sample);
  });
}

}  // namespace

const char* spike_conv_cpu(const SpikeConvParams& p, void*) {
  if (p.n == 0 || p.h_out == 0 || p.w_out == 0 || p.c_out == 0) return nullptr;
  const bool ok = TIME_DTYPE_SWITCH(p.dtype, T, [&] { spike_conv_impl<T>(p); });
  return ok ? nullptr : "unsupported dtype: the input must be float64 or float32";
}

}  // namespace ttfs_ext
