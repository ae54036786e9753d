// CPU element-wise passes of the TTFS layers; mirrors cuda/elementwise_cuda.cu.
#include "elementwise.h"

#include <ATen/Parallel.h>

namespace ttfs_ext {
namespace {

constexpr int64_t kGrain = 32768;

template <typename in_t, typename out_t>
void prologue_kernel_impl(const PrologueParams& p) {
  const in_t* in = static_cast<const in_t*>(p.in);
  const in_t* gate = static_cast<const in_t*>(p.gate);
  out_t* out = static_cast<out_t*>(p.out);
  const in_t offset = static_cast<in_t>(p.offset);
  const in_t t_max = static_cast<in_t>(p.t_max);
  const bool negate = p.scale < 0;
  at::parallel_for(0, p.numel, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      in_t v = in[i] - offset;
      v = negate ? -v : v;
      if (gate != nullptr && !(gate[i] < t_max)) v = in_t(0);
      out[i] = static_cast<out_t>(v);
    }
  });
}

template <typename u_t, typename time_t>
void epilogue_kernel_impl(const EpilogueParams& p) {
  const u_t* u = static_cast<const u_t*>(p.u);
  const time_t* bias = static_cast<const time_t*>(p.bias);
  time_t* out = static_cast<time_t*>(p.out);
  const time_t t_max = static_cast<time_t>(p.t_max);
  at::parallel_for(0, p.numel, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      time_t v = static_cast<time_t>(u[i]);
      if (bias != nullptr) {
        const int64_t pos = i % p.positions;
        const int64_t c = (i / p.positions) % p.channels;
        v += bias[c * p.bias_stride_c + pos * p.bias_stride_p];
      }
      if (p.spiking) {
        const time_t t = t_max - v;
        v = t >= t_max ? t_max : t;  // no spike in the window: t_max (NaN stays NaN)
      }
      out[i] = v;
    }
  });
}

}  // namespace

// CPU kernels support float64 and float32 spike times with matrices of the same dtype.
const char* prologue_cpu(const PrologueParams& p, void* /*stream*/) {
  if (p.numel == 0) return nullptr;
  if (p.in_dtype == Dtype::Float64 && p.out_dtype == Dtype::Float64) {
    prologue_kernel_impl<double, double>(p);
  } else if (p.in_dtype == Dtype::Float32 && p.out_dtype == Dtype::Float32) {
    prologue_kernel_impl<float, float>(p);
  } else {
    return "CPU kernels support float64 and float32 only";
  }
  return nullptr;
}

const char* epilogue_cpu(const EpilogueParams& p, void* /*stream*/) {
  if (p.numel == 0) return nullptr;
  if (p.u_dtype == Dtype::Float64 && p.out_dtype == Dtype::Float64) {
    epilogue_kernel_impl<double, double>(p);
  } else if (p.u_dtype == Dtype::Float32 && p.out_dtype == Dtype::Float32) {
    epilogue_kernel_impl<float, float>(p);
  } else {
    return "CPU kernels support float64 and float32 only";
  }
  return nullptr;
}

}  // namespace ttfs_ext
