// CPU kernels of fs_activation: loops around the element math of kernels/element_math.h (a
// step forward, a step backward, the regulariser's term), which cuda/fs_activation_kernel.cu
// runs too; here on scalars and on explicit GCC vectors alike.
//
// Elements run in tiles of kTile: the K steps are the outer loop and the tile the inner one,
// branch-free selects over plain arrays, so that GCC vectorises each step across the tile
// (compiled per ISA, run_for_isa; -fno-trapping-math, -ffp-contract=off: CMakeLists.txt). The
// potentials of a tile live on the stack; nothing per step goes to memory. Each fixed chunk of
// kChunk elements writes one partial row of the reductions (regulariser, parameter
// gradients), which the layer code sums in order: deterministic whatever the thread count.
#include "kernels/element_math.h"
#include "kernels/params.h"
#include "cpu/cpu_isa.h"
#include "kernels/static_switch.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace ttfs_ext {
namespace {

constexpr int64_t kChunk = 16384;  // elements per partial row and per parallel task
constexpr int kTile = 64;          // forward tile
constexpr int kBackTile = 32;      // backward tile (K potentials per element on the stack)

// One chunk of the forward. kMode: 0 no spikes, 1 uint8 counts, 2 int32 masks.
template <typename T, int kMode, bool kReg, bool kCheck>
struct FsForwardChunk {
  static TTFS_INLINE int run(const T* __restrict x, const T* __restrict h, const T* __restrict d,
                             const T* __restrict th, int steps, T* __restrict y, void* spikes, double* __restrict reg,
                             int64_t n) {
    int nonfinite = 0;
    double reg_lanes[kReg ? kFsMaxSteps : 1][kReg ? kTile : 1];
    if constexpr (kReg) {
      for (int t = 0; t < steps; ++t)
        for (int i = 0; i < kTile; ++i) reg_lanes[t][i] = 0.0;
    }
    for (int64_t i0 = 0; i0 < n; i0 += kTile) {
      const int nb = static_cast<int>(std::min<int64_t>(kTile, n - i0));
      T v[kTile], acc[kTile];
      uint32_t count[kTile];
      for (int i = 0; i < nb; ++i) {
        v[i] = x[i0 + i];
        acc[i] = T(0);
        count[i] = 0;
        if constexpr (kCheck) nonfinite |= math::nonfinite(v[i], std::numeric_limits<T>::max());
      }
      for (int t = 0; t < steps; ++t) {
        const T ht = h[t], dt = d[t], tt = th[t];
        if constexpr (kReg) {
          for (int i = 0; i < nb; ++i) reg_lanes[t][i] += static_cast<double>(math::fs_reg_term(v[i], tt));
        }
        for (int i = 0; i < nb; ++i) {
          const bool z = v[i] > tt;
          math::fs_step(v[i], acc[i], z, ht, dt);
          if constexpr (kMode == 1) count[i] += z ? 1u : 0u;
          if constexpr (kMode == 2) count[i] |= (z ? 1u : 0u) << t;
        }
      }
      for (int i = 0; i < nb; ++i) {
        y[i0 + i] = math::fs_output(x[i0 + i], acc[i]);
        if constexpr (kMode == 1) static_cast<uint8_t*>(spikes)[i0 + i] = static_cast<uint8_t>(count[i]);
        if constexpr (kMode == 2) static_cast<int32_t*>(spikes)[i0 + i] = static_cast<int32_t>(count[i]);
      }
    }
    if constexpr (kReg) {
      for (int t = 0; t < steps; ++t) {
        double s = 0.0;
        for (int i = 0; i < kTile; ++i) s += reg_lanes[t][i];
        reg[t] = s;
      }
    }
    return nonfinite;
  }
};

// The forward without the regulariser, in explicit GCC vectors of the ISA's native width
// (kBytes: run_for_isa_vec): kGroups independent vectors per step hide the latency of the v
// chain. The same IEEE operations as the scalar loop (and the reference), so the same bits; the
// tail of a chunk runs the scalar loop.
template <typename T, int kBytes>
struct FsVec {
  static constexpr int kLanes = kBytes / sizeof(T);
  typedef T vec __attribute__((vector_size(kBytes)));
  typedef std::conditional_t<sizeof(T) == 8, int64_t, int32_t> lane_int;
  typedef lane_int ivec __attribute__((vector_size(kBytes)));
};

template <typename T, int kMode, bool kCheck>
struct FsForwardChunkVec {
  template <int kBytes>
  static TTFS_INLINE int run(const T* __restrict x, const T* __restrict h, const T* __restrict d,
                             const T* __restrict th, int steps, T* __restrict y, void* spikes, int64_t n) {
    using V = FsVec<T, kBytes>;
    using vec = typename V::vec;
    using ivec = typename V::ivec;
    constexpr int kL = V::kLanes, kGroups = 4, kStep = kL * kGroups;
    int nonfinite = 0;
    int64_t i0 = 0;
    for (; i0 + kStep <= n; i0 += kStep) {
      vec v[kGroups], acc[kGroups];
      ivec cnt[kGroups];
      for (int g = 0; g < kGroups; ++g) {
        std::memcpy(&v[g], x + i0 + g * kL, sizeof(vec));
        acc[g] = vec{};
        cnt[g] = ivec{};
      }
      if constexpr (kCheck) {
        for (int j = 0; j < kStep; ++j) nonfinite |= math::nonfinite(x[i0 + j], std::numeric_limits<T>::max());
      }
      const vec zero{};
      for (int t = 0; t < steps; ++t) {
        const vec hv = zero + h[t], dv = zero + d[t], tv = zero + th[t];
        for (int g = 0; g < kGroups; ++g) {
          const ivec z = v[g] > tv;
          math::fs_step(v[g], acc[g], z, hv, dv);
          if constexpr (kMode == 1) cnt[g] -= z;
          if constexpr (kMode == 2) cnt[g] |= (z & 1) << t;
        }
      }
      for (int g = 0; g < kGroups; ++g) {
        vec xv;
        std::memcpy(&xv, x + i0 + g * kL, sizeof(vec));
        const vec out = math::fs_output(xv, acc[g]);
        std::memcpy(y + i0 + g * kL, &out, sizeof(vec));
        if constexpr (kMode == 1) {
          uint8_t* s = static_cast<uint8_t*>(spikes) + i0 + g * kL;
          for (int l = 0; l < kL; ++l) s[l] = static_cast<uint8_t>(cnt[g][l]);
        }
        if constexpr (kMode == 2) {
          int32_t* s = static_cast<int32_t*>(spikes) + i0 + g * kL;
          for (int l = 0; l < kL; ++l) s[l] = static_cast<int32_t>(cnt[g][l]);
        }
      }
    }
    if (i0 < n) {
      void* tail_spikes = kMode == 0 ? nullptr : static_cast<char*>(spikes) + i0 * (kMode == 1 ? 1 : 4);
      nonfinite |= FsForwardChunk<T, kMode, false, kCheck>::run(x + i0, h, d, th, steps, y + i0, tail_spikes, nullptr,
                                                                n - i0);
    }
    return nonfinite;
  }
};

template <typename T, int kMode, bool kReg, bool kCheck>
void fs_forward_impl(const FsForwardParams& p) {
  const T* x = static_cast<const T*>(p.x);
  const T* h = static_cast<const T*>(p.h);
  const T* d = static_cast<const T*>(p.d);
  const T* th = static_cast<const T*>(p.T);
  T* y = static_cast<T*>(p.y);
  const int elem = kMode == 1 ? 1 : 4;
  std::atomic<int> nonfinite{0};
  at::parallel_for(0, p.partials, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t lo = c * kChunk, n = std::min(kChunk, p.numel - lo);
      void* spikes = kMode == 0 ? nullptr : static_cast<char*>(p.spikes) + lo * elem;
      double* reg = kReg ? p.reg_partial + c * p.steps : nullptr;
      int bad;
      if constexpr (kReg) {
        bad = run_for_isa<FsForwardChunk<T, kMode, kReg, kCheck>>(x + lo, h, d, th, p.steps, y + lo, spikes, reg, n);
      } else {
        bad = run_for_isa_vec<FsForwardChunkVec<T, kMode, kCheck>>(x + lo, h, d, th, p.steps, y + lo, spikes, n);
      }
      if (bad) nonfinite.store(1, std::memory_order_relaxed);
    }
  });
  if constexpr (kCheck) *p.nonfinite = nonfinite.load();
}

template <typename T>
void fs_forward_dispatch(const FsForwardParams& p) {
  BOOL_SWITCH(p.reg_partial != nullptr, kReg, [&] {
    BOOL_SWITCH(p.nonfinite != nullptr, kCheck, [&] {
      switch (p.spike_mode) {
        case 1: return fs_forward_impl<T, 1, kReg, kCheck>(p);
        case 2: return fs_forward_impl<T, 2, kReg, kCheck>(p);
        default: return fs_forward_impl<T, 0, kReg, kCheck>(p);
      }
    });
  });
}

// One chunk of the backward: per tile, the forward's potentials of every step, then the steps
// in reverse with the adjoint a = dL/dv(t+1):
//   gz = gy d - a h;  gvs = gz max(0, 1 - |vs|) + greg [|vs| > 1] sign(vs)
//   grad_d += gy z;  grad_h -= a z;  grad_T -= gvs / den;  a += gvs dvs/dv
// with vs = num / den, num = v - T, den = |v| + 1, dvs/dv = 1/den - (vs / den) sign(v).
// Parameter gradients accumulate per lane in double, summed at the end of the chunk.
template <typename T, bool kWantX, bool kWantParams, bool kReg>
struct FsBackwardChunk {
  static TTFS_INLINE void run(const T* __restrict gy, const double* __restrict greg, const T* __restrict x,
                              const T* __restrict h, const T* __restrict d, const T* __restrict th, int steps,
                              T* __restrict gx, double* __restrict partial, int64_t n) {
    constexpr int kL = kWantParams ? kBackTile : 1;
    double lanes_h[kWantParams ? kFsMaxSteps : 1][kL], lanes_d[kWantParams ? kFsMaxSteps : 1][kL],
        lanes_T[kWantParams ? kFsMaxSteps : 1][kL];
    if constexpr (kWantParams) {
      for (int t = 0; t < steps; ++t)
        for (int i = 0; i < kL; ++i) lanes_h[t][i] = lanes_d[t][i] = lanes_T[t][i] = 0.0;
    }
    for (int64_t i0 = 0; i0 < n; i0 += kBackTile) {
      const int nb = static_cast<int>(std::min<int64_t>(kBackTile, n - i0));
      T v[kFsMaxSteps][kBackTile], a[kBackTile], g[kBackTile];
      for (int i = 0; i < nb; ++i) {
        v[0][i] = x[i0 + i];
        g[i] = gy[i0 + i];
        a[i] = T(0);
      }
      for (int t = 0; t + 1 < steps; ++t) {
        const T ht = h[t], tt = th[t];
        for (int i = 0; i < nb; ++i) v[t + 1][i] = math::fs_potential_after(v[t][i], ht, tt);
      }
      for (int t = steps - 1; t >= 0; --t) {
        const T ht = h[t], dt = d[t], tt = th[t];
        const T gr = kReg ? static_cast<T>(greg[t]) : T(0);
        for (int i = 0; i < nb; ++i) {
          T neg_h, pos_d, neg_T;
          math::fs_step_backward<kReg>(v[t][i], g[i], a[i], ht, dt, tt, gr, neg_h, pos_d, neg_T);
          if constexpr (kWantParams) {
            lanes_d[t][i] += static_cast<double>(pos_d);
            lanes_h[t][i] -= static_cast<double>(neg_h);
            lanes_T[t][i] -= static_cast<double>(neg_T);
          }
        }
      }
      if constexpr (kWantX) {
        for (int i = 0; i < nb; ++i) gx[i0 + i] = a[i];
      }
    }
    if constexpr (kWantParams) {
      for (int t = 0; t < steps; ++t) {
        double sh = 0.0, sd = 0.0, sT = 0.0;
        for (int i = 0; i < kL; ++i) {
          sh += lanes_h[t][i];
          sd += lanes_d[t][i];
          sT += lanes_T[t][i];
        }
        partial[t] = sh;
        partial[steps + t] = sd;
        partial[2 * steps + t] = sT;
      }
    }
  }
};

// The backward in the same explicit vectors: the tile is two 64-byte blocks (kBlocks) of
// kSub native vectors each, the K potentials of the tile on the stack; the parameter gradients
// are summed per lane of a 64-byte block in the element dtype over kFlush tiles, then added to
// double lanes (a fixed order): the same operations in the same order whatever the ISA's
// vector width, so the same bits on every CPU. The tail of a chunk runs the scalar loop.
template <typename T, bool kWantX, bool kWantParams, bool kReg>
struct FsBackwardChunkVec {
  static constexpr int kBlockLanes = 64 / sizeof(T), kBlocks = 2, kStep = kBlockLanes * kBlocks, kFlush = 16;

  template <int kBytes>
  static TTFS_INLINE void run(const T* __restrict gy, const double* __restrict greg, const T* __restrict x,
                              const T* __restrict h, const T* __restrict d, const T* __restrict th, int steps,
                              T* __restrict gx, double* __restrict partial, int64_t n) {
    using V = FsVec<T, kBytes>;
    using vec = typename V::vec;
    constexpr int kL = V::kLanes, kG = kStep / kL;  // native vectors per tile
    constexpr int kP = kWantParams ? kFsMaxSteps : 1;
    double lanes[3][kP][kBlockLanes];
    vec acc[3][kP][kG];
    if constexpr (kWantParams) {
      for (int q = 0; q < 3; ++q)
        for (int t = 0; t < steps; ++t) {
          for (int l = 0; l < kBlockLanes; ++l) lanes[q][t][l] = 0.0;
          for (int g = 0; g < kG; ++g) acc[q][t][g] = vec{};
        }
    }
    const vec zero{};
    int64_t i0 = 0;
    int tiles = 0;
    for (; i0 + kStep <= n; i0 += kStep) {
      vec vb[kFsMaxSteps][kG], a[kG], g[kG];
      for (int k = 0; k < kG; ++k) {
        std::memcpy(&vb[0][k], x + i0 + k * kL, sizeof(vec));
        std::memcpy(&g[k], gy + i0 + k * kL, sizeof(vec));
        a[k] = zero;
      }
      for (int t = 0; t + 1 < steps; ++t) {
        const vec hv = zero + h[t], tv = zero + th[t];
        for (int k = 0; k < kG; ++k) vb[t + 1][k] = math::fs_potential_after(vb[t][k], hv, tv);
      }
      for (int t = steps - 1; t >= 0; --t) {
        const vec hv = zero + h[t], dv = zero + d[t], tv = zero + th[t];
        const vec gr = zero + (kReg ? static_cast<T>(greg[t]) : T(0));
        for (int k = 0; k < kG; ++k) {
          vec neg_h, pos_d, neg_T;
          math::fs_step_backward<kReg>(vb[t][k], g[k], a[k], hv, dv, tv, gr, neg_h, pos_d, neg_T);
          if constexpr (kWantParams) {
            acc[0][t][k] -= neg_h;
            acc[1][t][k] += pos_d;
            acc[2][t][k] -= neg_T;
          }
        }
      }
      if constexpr (kWantX) {
        for (int k = 0; k < kG; ++k) std::memcpy(gx + i0 + k * kL, &a[k], sizeof(vec));
      }
      if constexpr (kWantParams) {
        if (++tiles == kFlush) {
          flush<kBytes>(acc, lanes, steps);
          tiles = 0;
        }
      }
    }
    if constexpr (kWantParams) {
      flush<kBytes>(acc, lanes, steps);
      for (int q = 0; q < 3; ++q)
        for (int t = 0; t < steps; ++t) {
          double sum = 0.0;
          for (int l = 0; l < kBlockLanes; ++l) sum += lanes[q][t][l];
          partial[q * steps + t] = sum;
        }
    }
    if (i0 < n) {
      double tail[3 * kFsMaxSteps];
      FsBackwardChunk<T, kWantX, kWantParams, kReg>::run(gy + i0, greg, x + i0, h, d, th, steps,
                                                         kWantX ? gx + i0 : nullptr, tail, n - i0);
      if constexpr (kWantParams) {
        for (int j = 0; j < 3 * steps; ++j) partial[j] += tail[j];
      }
    }
  }

  // Native vector k holds lanes (k % kSub) * kL .. of block k / kSub: each block lane adds its
  // blocks in order (block 0, then 1), as with one 64-byte vector per block.
  template <int kBytes, typename A, typename L>
  static TTFS_INLINE void flush(A& acc, L& lanes, int steps) {
    constexpr int kL = FsVec<T, kBytes>::kLanes, kSub = kBlockLanes / kL;
    for (int q = 0; q < 3; ++q)
      for (int t = 0; t < steps; ++t)
        for (int b = 0; b < kBlocks; ++b)
          for (int s = 0; s < kSub; ++s) {
            auto& v = acc[q][t][b * kSub + s];
            for (int l = 0; l < kL; ++l) lanes[q][t][s * kL + l] += static_cast<double>(v[l]);
            v = typename FsVec<T, kBytes>::vec{};
          }
  }
};

template <typename T, bool kWantX, bool kWantParams, bool kReg>
void fs_backward_impl(const FsBackwardParams& p) {
  const T* gy = static_cast<const T*>(p.grad_y);
  const T* x = static_cast<const T*>(p.x);
  const T* h = static_cast<const T*>(p.h);
  const T* d = static_cast<const T*>(p.d);
  const T* th = static_cast<const T*>(p.T);
  T* gx = static_cast<T*>(p.grad_x);
  at::parallel_for(0, p.partials, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t lo = c * kChunk, n = std::min(kChunk, p.numel - lo);
      double* partial = kWantParams ? p.param_partial + c * 3 * p.steps : nullptr;
      run_for_isa_vec<FsBackwardChunkVec<T, kWantX, kWantParams, kReg>>(gy + lo, p.grad_reg, x + lo, h, d, th, p.steps,
                                                                        kWantX ? gx + lo : nullptr, partial, n);
    }
  });
}

template <typename T>
void fs_backward_dispatch(const FsBackwardParams& p) {
  BOOL_SWITCH(p.grad_x != nullptr, kWantX, [&] {
    BOOL_SWITCH(p.param_partial != nullptr, kWantParams, [&] {
      BOOL_SWITCH(p.grad_reg != nullptr, kReg, [&] { fs_backward_impl<T, kWantX, kWantParams, kReg>(p); });
    });
  });
}

// float16/bfloat16 x with float32 h, d, T (CUDA's rule; the CPU takes it under the CUDA-like
// kernel profile of the tests): the float32 kernels on x converted to float32, the results
// converted back, which is what the CUDA kernels compute element by element.
template <typename x_t>
std::vector<float> to_float_vector(const void* x, int64_t n) {
  std::vector<float> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = math::cast<float>(static_cast<const x_t*>(x)[i]);
  return out;
}

template <typename x_t>
void from_float_vector(const std::vector<float>& x, void* out) {
  for (size_t i = 0; i < x.size(); ++i) static_cast<x_t*>(out)[i] = math::cast<x_t>(x[i]);
}

template <typename x_t>
void fs_forward_16(const FsForwardParams& p) {
  const std::vector<float> x = to_float_vector<x_t>(p.x, p.numel);
  std::vector<float> y(p.numel);
  FsForwardParams q = p;
  q.x = x.data();
  q.y = y.data();
  q.dtype = Dtype::Float32;
  fs_forward_dispatch<float>(q);
  from_float_vector<x_t>(y, p.y);
}

template <typename x_t>
void fs_backward_16(const FsBackwardParams& p) {
  const std::vector<float> x = to_float_vector<x_t>(p.x, p.numel), gy = to_float_vector<x_t>(p.grad_y, p.numel);
  std::vector<float> gx(p.grad_x != nullptr ? p.numel : 0);
  FsBackwardParams q = p;
  q.x = x.data();
  q.grad_y = gy.data();
  q.grad_x = p.grad_x != nullptr ? gx.data() : nullptr;
  q.dtype = Dtype::Float32;
  fs_backward_dispatch<float>(q);
  if (p.grad_x != nullptr) from_float_vector<x_t>(gx, p.grad_x);
}

// Runs fn(x_t{}) for float16/bfloat16 x with float32 parameters; false otherwise.
template <typename Params, typename Fn>
bool low_precision_x(const Params& p, Fn&& fn) {
  if (p.param_dtype != Dtype::Float32) return false;
  if (p.dtype == Dtype::Float16) return fn(math::Half()), true;
  if (p.dtype == Dtype::BFloat16) return fn(math::BFloat16()), true;
  return false;
}

}  // namespace

int64_t fs_partials_cpu(int64_t numel) { return std::max<int64_t>(1, (numel + kChunk - 1) / kChunk); }

const char* fs_forward_cpu(const FsForwardParams& p, void* /*stream*/) {
  if (p.nonfinite != nullptr) *p.nonfinite = 0;
  if (p.steps < 1 || p.steps > kFsMaxSteps) return "the number of steps must be in 1..32";
  if (p.partials != fs_partials_cpu(p.numel)) return "partials must be fs_partials_cpu(numel)";
  if (p.numel == 0) return nullptr;
  const bool ran = (p.dtype == p.param_dtype && TIME_DTYPE_SWITCH(p.dtype, T, [&] { fs_forward_dispatch<T>(p); })) ||
                   low_precision_x(p, [&](auto x) { fs_forward_16<decltype(x)>(p); });
  return ran ? nullptr : kFsDtypeError;
}

const char* fs_backward_cpu(const FsBackwardParams& p, void* /*stream*/) {
  if (p.steps < 1 || p.steps > kFsMaxSteps) return "the number of steps must be in 1..32";
  if (p.partials != fs_partials_cpu(p.numel)) return "partials must be fs_partials_cpu(numel)";
  if (p.numel == 0) return nullptr;
  const bool ran = (p.dtype == p.param_dtype && TIME_DTYPE_SWITCH(p.dtype, T, [&] { fs_backward_dispatch<T>(p); })) ||
                   low_precision_x(p, [&](auto x) { fs_backward_16<decltype(x)>(p); });
  return ran ? nullptr : kFsDtypeError;
}

}  // namespace ttfs_ext
