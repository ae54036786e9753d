// Launch geometry shared by the CUDA kernels: one block size, and a bounded grid that the
// kernels' grid-stride loops cover, enough blocks to fill any current GPU.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ttfs_ext {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535));
}

}  // namespace ttfs_ext
