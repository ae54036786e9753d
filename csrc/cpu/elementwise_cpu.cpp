// CPU element-wise passes of the TTFS layers; mirrors cuda/elementwise_cuda.cu.
#include "elementwise.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace ttfs_ext {
namespace {

constexpr int64_t kGrain = 32768;

template <typename in_t, typename out_t, bool kGate, bool kNegate>
void prologue_kernel_impl(const PrologueParams& p) {
  const in_t* in = static_cast<const in_t*>(p.in);
  const in_t* gate = static_cast<const in_t*>(p.gate);
  out_t* out = static_cast<out_t*>(p.out);
  const in_t offset = static_cast<in_t>(p.offset);
  const in_t t_max = static_cast<in_t>(p.t_max);
  at::parallel_for(0, p.numel, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      in_t v = kNegate ? offset - in[i] : in[i] - offset;
      if (kGate) v = gate[i] < t_max ? v : in_t(0);
      out[i] = static_cast<out_t>(v);
    }
  });
}

template <typename in_t, typename out_t>
void prologue_dispatch(const PrologueParams& p) {
  const bool gate = p.gate != nullptr, negate = p.scale < 0;
  if (gate && negate) prologue_kernel_impl<in_t, out_t, true, true>(p);
  else if (gate) prologue_kernel_impl<in_t, out_t, true, false>(p);
  else if (negate) prologue_kernel_impl<in_t, out_t, false, true>(p);
  else prologue_kernel_impl<in_t, out_t, false, false>(p);
}

template <typename time_t, bool kSpiking>
inline time_t fire(time_t v, time_t t_max) {
  if (!kSpiking) return v;
  const time_t t = t_max - v;
  return t >= t_max ? t_max : t;  // no spike in the window: t_max (NaN stays NaN)
}

// Rows of (channels, positions) elements; no per-element index arithmetic.
template <typename u_t, typename time_t, bool kSpiking>
void epilogue_kernel_impl(const EpilogueParams& p) {
  const u_t* u = static_cast<const u_t*>(p.u);
  const time_t* bias = static_cast<const time_t*>(p.bias);
  time_t* out = static_cast<time_t*>(p.out);
  const time_t t_max = static_cast<time_t>(p.t_max);
  const time_t zero(0);
  const int64_t row_size = p.channels * p.positions;
  at::parallel_for(0, p.numel / row_size, std::max<int64_t>(1, kGrain / row_size), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const u_t* u_row = u + r * row_size;
      time_t* out_row = out + r * row_size;
      if (p.positions == 1) {  // dense: one bias per element of the row
        for (int64_t c = 0; c < p.channels; ++c) {
          const time_t b = bias != nullptr ? bias[c * p.bias_stride_c] : zero;
          out_row[c] = fire<time_t, kSpiking>(static_cast<time_t>(u_row[c]) + b, t_max);
        }
        continue;
      }
      for (int64_t c = 0; c < p.channels; ++c) {
        const u_t* u_c = u_row + c * p.positions;
        time_t* out_c = out_row + c * p.positions;
        const time_t* bias_c = bias != nullptr ? bias + c * p.bias_stride_c : nullptr;
        for (int64_t q = 0; q < p.positions; ++q) {
          const time_t b = bias_c != nullptr ? bias_c[q * p.bias_stride_p] : zero;
          out_c[q] = fire<time_t, kSpiking>(static_cast<time_t>(u_c[q]) + b, t_max);
        }
      }
    }
  });
}

template <typename u_t, typename time_t>
void epilogue_dispatch(const EpilogueParams& p) {
  if (p.spiking) epilogue_kernel_impl<u_t, time_t, true>(p);
  else epilogue_kernel_impl<u_t, time_t, false>(p);
}

}  // namespace

// CPU kernels support float64 and float32 spike times with matrices of the same dtype.
const char* prologue_cpu(const PrologueParams& p, void* /*stream*/) {
  if (p.numel == 0) return nullptr;
  if (p.in_dtype == Dtype::Float64 && p.out_dtype == Dtype::Float64) {
    prologue_dispatch<double, double>(p);
  } else if (p.in_dtype == Dtype::Float32 && p.out_dtype == Dtype::Float32) {
    prologue_dispatch<float, float>(p);
  } else {
    return "CPU kernels support float64 and float32 only";
  }
  return nullptr;
}

const char* epilogue_cpu(const EpilogueParams& p, void* /*stream*/) {
  if (p.numel == 0) return nullptr;
  if (p.u_dtype == Dtype::Float64 && p.out_dtype == Dtype::Float64) {
    epilogue_dispatch<double, double>(p);
  } else if (p.u_dtype == Dtype::Float32 && p.out_dtype == Dtype::Float32) {
    epilogue_dispatch<float, float>(p);
  } else {
    return "CPU kernels support float64 and float32 only";
  }
  return nullptr;
}

}  // namespace ttfs_ext
