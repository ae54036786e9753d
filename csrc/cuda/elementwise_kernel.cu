// CUDA element-wise passes of the TTFS layers: launch and indexing around the element math of
// kernels/element_math.h, which cpu/elementwise_kernel.cpp runs too.
// Includes only CUDA and project headers so that nvcc can compile it anywhere.
#include "kernels/element_math.h"
#include "kernels/params.h"
#include "cuda/launch.cuh"
#include "kernels/static_switch.h"

#include <cuda_runtime.h>

namespace ttfs_ext {
namespace {

template <typename in_t, typename out_t, bool kGate, bool kNegate>
__global__ void prologue_kernel(PrologueParams p) {
  const in_t* __restrict__ in = static_cast<const in_t*>(p.in);
  const in_t* __restrict__ gate = static_cast<const in_t*>(p.gate);
  out_t* __restrict__ out = static_cast<out_t*>(p.out);
  const in_t offset = static_cast<in_t>(p.offset);
  const in_t t_max = static_cast<in_t>(p.t_max);
  for (int64_t i = thread_index(); i < p.numel; i += thread_stride()) {
    in_t v = math::shift<kNegate>(in[i], offset);
    if (kGate) v = math::gated(v, gate[i], t_max);
    out[i] = math::cast<out_t>(v);
  }
}

// Rows of (channels, positions) elements, contiguous.
template <typename u_t, typename time_t, bool kSpiking>
__global__ void epilogue_kernel(EpilogueParams p) {
  const u_t* u = static_cast<const u_t*>(p.u);  // may alias out
  const time_t* __restrict__ bias = static_cast<const time_t*>(p.bias);
  time_t* out = static_cast<time_t*>(p.out);
  const time_t t_max = static_cast<time_t>(p.t_max);
  for (int64_t i = thread_index(); i < p.numel; i += thread_stride()) {
    time_t v = math::cast<time_t>(u[i]);
    if (bias != nullptr) {
      const int64_t pos = i % p.positions;
      const int64_t c = (i / p.positions) % p.channels;
      v = math::add_bias(v, bias[c * p.bias_stride_c + pos * p.bias_stride_p]);
    }
    out[i] = math::epilogue<kSpiking>(v, t_max);
  }
}

}  // namespace

const char* prologue_cuda(const PrologueParams& p, void* stream) {
  if (p.nonfinite != nullptr) return "the CUDA prologue does not check its input (see KernelTable)";
  if (p.numel == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const bool ran = time_and_matrix_dtypes(p.in_dtype, p.out_dtype, [&](auto t, auto m) {
    BOOL_SWITCH(p.gate != nullptr, kGate, [&] {
      BOOL_SWITCH(p.scale < 0, kNegate, [&] {
        prologue_kernel<decltype(t), decltype(m), kGate, kNegate><<<blocks_for(p.numel), kThreads, 0, s>>>(p);
      });
    });
  });
  return ran ? last_error() : kTimeAndMatrixDtypeError;
}

const char* epilogue_cuda(const EpilogueParams& p, void* stream) {
  if (p.numel == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const bool ran = time_and_matrix_dtypes(p.out_dtype, p.u_dtype, [&](auto t, auto m) {
    BOOL_SWITCH(p.spiking, kSpiking, [&] {
      epilogue_kernel<decltype(m), decltype(t), kSpiking><<<blocks_for(p.numel), kThreads, 0, s>>>(p);
    });
  });
  return ran ? last_error() : kTimeAndMatrixDtypeError;
}

}  // namespace ttfs_ext
