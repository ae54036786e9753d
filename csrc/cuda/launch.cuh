// Launch geometry and error handling shared by the CUDA kernels: one block size, a bounded
// grid that the kernels' grid-stride loops cover (enough blocks to fill any current GPU), and
// the launch error as a message for the layer code.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace ttfs_ext {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535));
}

__device__ __forceinline__ int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t thread_stride() { return static_cast<int64_t>(blockDim.x) * gridDim.x; }

// nullptr after a successful launch, else CUDA's message.
inline const char* last_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace ttfs_ext
