// The one-pass backward and forward GEMMs of dense TTFS layers with few rows (cpu/linear_one_pass.h).
//
// Backward: each parallel task owns a tile of input columns (up to a page of each weight row):
// it computes the tile's delays t_in - t_min into a buffer (rounded as the delays prologue rounds
// them), then walks the weight rows kGroup at a time. A step reads the group's W tile once,
// adds it into the tile's input gradient (kept in cache) and writes the group's finished
// grad_w tile. Tasks own disjoint columns: no reduction between threads, and every sum runs in
// a fixed order (grad_in over the output features, grad_w over the rows), whatever the tiling.
// Written with GCC/Clang vector extensions, the compilers this library builds with. Each ISA
// gets its own vector width and blocking (Isa* below), compiled for it (TTFS_TARGET_*): the
// AVX-512 code as an AVX2 clone spilled registers and ran several times slower (NOTES.md).
#include "cpu/linear_one_pass.h"
#include "kernels/params.h"
#include "cpu/cpu_isa.h"
#include "kernels/static_switch.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

namespace ttfs_ext {
namespace {

// Vector width and blocking per instruction set, sized to its registers: a backward step holds
// kGroup weight vectors and kGroup sums, a forward block kFwdRows x 4 sums and 4 weight vectors.
struct IsaV4 {  // AVX-512: 32 registers of 64 bytes
  static constexpr int kBytes = 64, kGroup = 8, kFwdRows = 4;
};
struct IsaV3 {  // AVX2: 16 registers of 32 bytes
  static constexpr int kBytes = 32, kGroup = 4, kFwdRows = 2;
};
struct IsaBase {  // SSE2: 16 registers of 16 bytes
  static constexpr int kBytes = 16, kGroup = 4, kFwdRows = 2;
};
constexpr int kFwdGroup = 4;  // weight rows per forward block

template <typename T, typename Isa>
constexpr int64_t kVec = Isa::kBytes / sizeof(T);  // elements per vector
template <typename T>
constexpr int64_t kMaxTile = 4096 / sizeof(T);  // backward columns per task at most: a page of each weight row
template <typename T>
constexpr int64_t kFwdTile = 2048 / sizeof(T);  // forward columns per tile: 2 KiB of a weight row

// A vector of B bytes of T (GCC/Clang vector extension); memcpy is an unaligned load or store.
template <typename T, int B>
struct Vec {
  typedef T type __attribute__((vector_size(B)));
};
template <int B, typename T>
TTFS_INLINE typename Vec<T, B>::type load(const T* p) {
  typename Vec<T, B>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int B, typename T>
TTFS_INLINE void store(T* p, typename Vec<T, B>::type v) {
  std::memcpy(p, &v, sizeof v);
}

// --- backward ----------------------------------------------------------------------------------

// One step of K weight rows over the tile's n columns:
//   acc[r, :] = (((acc[r, :] + g[0, r] w_0) + g[1, r] w_1) + ...)   (kWantIn)
//   gw_k[:]   = sum_r g[k, r] d[r, :]
// w and gw point at the group's first row in the tile, rows ld apart; g is (K, rows). d and
// acc are vector-major: the vectors of all rows for columns [c, c + kVec) lie next to each
// other (element (r, c) at c / kVec * rows * kVec + r * kVec + c % kVec), so the loop over
// rows walks memory in order (row-major tiles put every row in one L1 set: 4 KiB apart).
// Per row r and vector of columns: 2K multiply-adds for two loads and a store, the vectors
// of w and of the K sums staying in registers. The next group's rows (next_w, next_gw;
// nullptr after the last group) are prefetched a vector at a time: a tile is a short run of
// each row, which the hardware prefetcher may not run ahead of.
template <typename T, typename Isa, int K, bool kWantIn>
TTFS_INLINE void one_pass_step(const T* __restrict w, T* __restrict gw, int64_t ld, const T* __restrict g,
                               const T* __restrict d, T* __restrict acc, int64_t rows, int64_t n,
                               const T* next_w, T* next_gw) {
  constexpr int B = Isa::kBytes;
  constexpr int64_t L = kVec<T, Isa>;
  using V = typename Vec<T, B>::type;
  int64_t c = 0;
  for (; c + L <= n; c += L) {
    if (next_w != nullptr) {
      for (int k = 0; k < K; ++k) {
        __builtin_prefetch(next_w + k * ld + c, 0);
        __builtin_prefetch(next_gw + k * ld + c, 1);
      }
    }
    V wk[K], s[K];
    for (int k = 0; k < K; ++k) {
      wk[k] = load<B>(w + k * ld + c);
      s[k] = V{};
    }
    const T* __restrict dc = d + c * rows;  // the vectors of columns [c, c + L)
    T* __restrict ac = acc + c * rows;
    for (int64_t r = 0; r < rows; ++r) {
      const V dv = load<B>(dc + r * L);
      for (int k = 0; k < K; ++k) s[k] += g[k * rows + r] * dv;
      if constexpr (kWantIn) {
        V a = load<B>(ac + r * L);
        for (int k = 0; k < K; ++k) a += g[k * rows + r] * wk[k];
        store<B>(ac + r * L, a);
      }
    }
    for (int k = 0; k < K; ++k) store<B>(gw + k * ld + c, s[k]);
  }
  const T* __restrict dc = d + c * rows;  // the last, partial vector: the same sums, one at a time
  T* __restrict ac = acc + c * rows;
  for (int64_t j = 0; c + j < n; ++j) {
    for (int k = 0; k < K; ++k) {
      T sum = 0;
      for (int64_t r = 0; r < rows; ++r) sum += g[k * rows + r] * dc[r * L + j];
      gw[k * ld + c + j] = sum;
    }
    if constexpr (kWantIn) {
      for (int64_t r = 0; r < rows; ++r) {
        T a = ac[r * L + j];
        for (int k = 0; k < K; ++k) a += g[k * rows + r] * w[k * ld + c + j];
        ac[r * L + j] = a;
      }
    }
  }
}

// Everything one task does for one tile of columns [i0, i0 + n).
template <typename T>
struct BackwardTile {
  const T* grad_t;  // (out_features, rows): the gradients transposed
  const T* t_in;
  const T* weight;
  T* grad_in;  // nullptr: not wanted
  T* grad_w;
  T* d;  // rows x n buffers, vector-major, in whole vectors (rows x tile width)
  T* acc;
  int64_t rows, in_f, out_f, i0, n;
  T t_min;
};

template <typename T, typename Isa, bool kWantIn>
TTFS_INLINE void backward_tile(const BackwardTile<T>& a) {
  constexpr int64_t L = kVec<T, Isa>;
  constexpr int G = Isa::kGroup;
  const int64_t rows = a.rows, in_f = a.in_f, out_f = a.out_f, i0 = a.i0, n = a.n;
  const auto at = [rows](int64_t r, int64_t j) { return j / L * rows * L + r * L + j % L; };
  for (int64_t r = 0; r < rows; ++r)  // the delays, rounded as the delays prologue rounds them
    for (int64_t j = 0; j < n; ++j) a.d[at(r, j)] = a.t_in[r * in_f + i0 + j] - a.t_min;
  if constexpr (kWantIn) std::fill(a.acc, a.acc + rows * ((n + L - 1) / L * L), T(0));  // whole vectors
  int64_t o = 0;
  for (; o + G <= out_f; o += G) {
    const bool last = o + G >= out_f;
    one_pass_step<T, Isa, G, kWantIn>(a.weight + o * in_f + i0, a.grad_w + o * in_f + i0, in_f, a.grad_t + o * rows,
                                      a.d, a.acc, rows, n, last ? nullptr : a.weight + (o + G) * in_f + i0,
                                      last ? nullptr : a.grad_w + (o + G) * in_f + i0);
  }
  for (; o < out_f; ++o)
    one_pass_step<T, Isa, 1, kWantIn>(a.weight + o * in_f + i0, a.grad_w + o * in_f + i0, in_f, a.grad_t + o * rows,
                                      a.d, a.acc, rows, n, nullptr, nullptr);
  if constexpr (kWantIn) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) a.grad_in[r * in_f + i0 + j] = a.acc[at(r, j)];
  }
}

// --- forward -----------------------------------------------------------------------------------

// K weight rows against R rows of x, over columns [0, n) of a tile: the R x K dot products
// accumulate as vectors of lane sums (vector r * K + k of vacc), in registers within a call and
// in memory between calls; a partial vector at the end of the row goes to the scalars
// tail[r * K + k]. A tile of the K weight rows stays in L1 while every block of R rows passes
// over it. Lanes are summed once per dot product, at the end: a lane sum per tile made the
// loop 7x slower.
template <typename T, typename Isa, int K, int R>
TTFS_INLINE void forward_block(const T* __restrict w, const T* __restrict x, int64_t ld, int64_t n,
                               T* __restrict vacc, T* __restrict tail) {
  constexpr int B = Isa::kBytes;
  constexpr int64_t L = kVec<T, Isa>;
  using V = typename Vec<T, B>::type;
  V acc[R][K];
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < K; ++k) acc[r][k] = load<B>(vacc + (r * K + k) * L);
  int64_t c = 0;
  for (; c + L <= n; c += L) {
    V wk[K];
    for (int k = 0; k < K; ++k) wk[k] = load<B>(w + k * ld + c);
    for (int r = 0; r < R; ++r) {
      const V xr = load<B>(x + r * ld + c);
      for (int k = 0; k < K; ++k) acc[r][k] += xr * wk[k];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int k = 0; k < K; ++k) {
      store<B>(vacc + (r * K + k) * L, acc[r][k]);
      for (int64_t j = c; j < n; ++j) tail[r * K + k] += x[r * ld + j] * w[k * ld + j];
    }
  }
}

// u[:, 0:K] (u points at column o) for K weight rows (w points at row o); vacc holds
// rows * K vectors, tail rows * K scalars.
template <typename T, typename Isa, int K>
TTFS_INLINE void forward_group(const T* w, const T* x, T* u, int64_t rows, int64_t in_f, int64_t out_f, T* vacc,
                               T* tail) {
  constexpr int R = Isa::kFwdRows;
  constexpr int64_t L = kVec<T, Isa>;
  std::fill(vacc, vacc + rows * K * L, T(0));
  std::fill(tail, tail + rows * K, T(0));
  for (int64_t i0 = 0; i0 < in_f; i0 += kFwdTile<T>) {
    const int64_t n = std::min(kFwdTile<T>, in_f - i0);
    int64_t r = 0;
    for (; r + R <= rows; r += R)
      forward_block<T, Isa, K, R>(w + i0, x + r * in_f + i0, in_f, n, vacc + r * K * L, tail + r * K);
    for (; r < rows; ++r)
      forward_block<T, Isa, K, 1>(w + i0, x + r * in_f + i0, in_f, n, vacc + r * K * L, tail + r * K);
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int k = 0; k < K; ++k) {
      T s = 0;
      for (int64_t l = 0; l < L; ++l) s += vacc[(r * K + k) * L + l];
      u[r * out_f + k] = s + tail[r * K + k];
    }
  }
}

// The groups [begin, end) of kFwdGroup weight rows (the last one may be partial: its rows one
// at a time).
template <typename T>
struct ForwardGroups {
  const T* x;
  const T* weight;
  T* u;
  T* vacc;  // rows * kFwdGroup * (64 / sizeof(T)) elements: enough for every ISA
  T* tail;  // rows * kFwdGroup
  int64_t rows, in_f, out_f, begin, end;
};

template <typename T, typename Isa>
TTFS_INLINE void forward_groups(const ForwardGroups<T>& a) {
  constexpr int K = kFwdGroup;
  for (int64_t grp = a.begin; grp < a.end; ++grp) {
    const int64_t o = grp * K;
    if (o + K <= a.out_f) {
      forward_group<T, Isa, K>(a.weight + o * a.in_f, a.x, a.u + o, a.rows, a.in_f, a.out_f, a.vacc, a.tail);
    } else {
      for (int64_t oo = o; oo < a.out_f; ++oo)
        forward_group<T, Isa, 1>(a.weight + oo * a.in_f, a.x, a.u + oo, a.rows, a.in_f, a.out_f, a.vacc, a.tail);
    }
  }
}

// --- one instantiation per ISA, compiled for it ------------------------------------------------

template <typename T, bool kWantIn>
void backward_tile_base(const BackwardTile<T>& a) { backward_tile<T, IsaBase, kWantIn>(a); }
template <typename T>
void forward_groups_base(const ForwardGroups<T>& a) { forward_groups<T, IsaBase>(a); }
#if TTFS_HAVE_ISA_VARIANTS
template <typename T, bool kWantIn>
TTFS_TARGET_V4 void backward_tile_v4(const BackwardTile<T>& a) { backward_tile<T, IsaV4, kWantIn>(a); }
template <typename T, bool kWantIn>
TTFS_TARGET_V3 void backward_tile_v3(const BackwardTile<T>& a) { backward_tile<T, IsaV3, kWantIn>(a); }
template <typename T>
TTFS_TARGET_V4 void forward_groups_v4(const ForwardGroups<T>& a) { forward_groups<T, IsaV4>(a); }
template <typename T>
TTFS_TARGET_V3 void forward_groups_v3(const ForwardGroups<T>& a) { forward_groups<T, IsaV3>(a); }
#endif

// The ISA whose code runs: the CPU loops' (cpu_isa(), which tests can force for every CPU
// loop), or one set for these kernels alone (set_linear_one_pass_isa).
std::atomic<int> forced_isa{-1};

CpuIsa running_isa() {
  const int forced = forced_isa.load(std::memory_order_relaxed);
  return forced >= 0 ? static_cast<CpuIsa>(forced) : cpu_isa();
}

template <typename T, bool kWantIn>
auto backward_tile_for(CpuIsa isa) {
#if TTFS_HAVE_ISA_VARIANTS
  if (isa == CpuIsa::V4) return &backward_tile_v4<T, kWantIn>;
  if (isa == CpuIsa::V3) return &backward_tile_v3<T, kWantIn>;
#endif
  (void)isa;
  return &backward_tile_base<T, kWantIn>;
}

template <typename T>
auto forward_groups_for(CpuIsa isa) {
#if TTFS_HAVE_ISA_VARIANTS
  if (isa == CpuIsa::V4) return &forward_groups_v4<T>;
  if (isa == CpuIsa::V3) return &forward_groups_v3<T>;
#endif
  (void)isa;
  return &forward_groups_base<T>;
}

// --- drivers -----------------------------------------------------------------------------------

template <typename T, bool kWantIn>
void backward_impl(const LinearOnePassBackwardParams& p) {
  const T* grad = static_cast<const T*>(p.grad);
  const int64_t rows = p.rows, in_f = p.in_features, out_f = p.out_features;

  // grad transposed, (out_features, rows): a group's gradients are then one contiguous run.
  std::vector<T> grad_t(static_cast<size_t>(out_f * rows));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out_f; ++o) grad_t[o * rows + r] = grad[r * out_f + o];

  // Tiles as wide as a page (long runs for the prefetcher), narrower where that leaves a
  // thread without one; a whole number of 64-byte vectors (of every ISA's vectors).
  constexpr int64_t L = 64 / sizeof(T);
  const int64_t per_thread = (in_f + at::get_num_threads() - 1) / at::get_num_threads();
  const int64_t tw = std::clamp((per_thread + L - 1) / L * L, L, kMaxTile<T>);
  const int64_t tiles = (in_f + tw - 1) / tw;
  const auto run_tile = backward_tile_for<T, kWantIn>(running_isa());
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> d(static_cast<size_t>(rows * tw));
    std::vector<T> acc(kWantIn ? static_cast<size_t>(rows * tw) : 0);
    BackwardTile<T> a;  // one task's tiles differ only in i0 and n
    a.grad_t = grad_t.data();
    a.t_in = static_cast<const T*>(p.t_in);
    a.weight = static_cast<const T*>(p.weight);
    a.grad_in = static_cast<T*>(p.grad_in);
    a.grad_w = static_cast<T*>(p.grad_w);
    a.d = d.data();
    a.acc = acc.data();
    a.rows = rows;
    a.in_f = in_f;
    a.out_f = out_f;
    a.t_min = static_cast<T>(p.t_min);  // as the delays prologue: in - offset, in T
    for (int64_t tile = begin; tile < end; ++tile) {
      a.i0 = tile * tw;
      a.n = std::min(tw, in_f - a.i0);
      run_tile(a);
    }
  });
}

template <typename T>
void forward_impl(const LinearOnePassForwardParams& p) {
  const int64_t rows = p.rows, out_f = p.out_features;
  const int64_t groups = (out_f + kFwdGroup - 1) / kFwdGroup;
  const auto run_groups = forward_groups_for<T>(running_isa());
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> vacc(static_cast<size_t>(rows * kFwdGroup * (64 / sizeof(T))));
    std::vector<T> tail(static_cast<size_t>(rows * kFwdGroup));
    ForwardGroups<T> a;
    a.x = static_cast<const T*>(p.x);
    a.weight = static_cast<const T*>(p.weight);
    a.u = static_cast<T*>(p.u);
    a.vacc = vacc.data();
    a.tail = tail.data();
    a.rows = rows;
    a.in_f = p.in_features;
    a.out_f = out_f;
    a.begin = begin;
    a.end = end;
    run_groups(a);
  });
}

template <typename T>
void backward_dispatch(const LinearOnePassBackwardParams& p) {
  BOOL_SWITCH(p.grad_in != nullptr, kGradIn, [&] { backward_impl<T, kGradIn>(p); });
}

}  // namespace

bool linear_one_pass_enabled() {
  // Measured faster than the vendor GEMMs with AVX-512 and AVX2 code, slower with SSE2.
  return forced_isa.load(std::memory_order_relaxed) >= 0 || running_isa() != CpuIsa::Baseline;
}

const char* linear_one_pass_isa() { return cpu_isa_name(running_isa()); }

int64_t linear_one_pass_forward_max_rows() {
  // The AVX2 forward (2 x 4 blocks) lost to the vendor GEMM at 16 rows (1.1-1.6x) and won at 8.
  return running_isa() == CpuIsa::V4 ? kOnePassForwardMaxRows : kOnePassForwardMaxRowsNarrow;
}

const char* set_linear_one_pass_isa(const char* name) {
  if (name == nullptr || name[0] == '\0') {
    forced_isa.store(-1);
    return nullptr;
  }
  CpuIsa isa;
  if (!parse_cpu_isa(name, &isa)) return "unknown ISA: expected 'x86-64-v4', 'x86-64-v3', 'baseline' or '' (automatic)";
  if (static_cast<int>(isa) > static_cast<int>(detected_cpu_isa())) return "this CPU cannot run that ISA's code";
  forced_isa.store(static_cast<int>(isa));
  return nullptr;
}

const char* linear_one_pass_backward_cpu(const LinearOnePassBackwardParams& p, void* /*stream*/) {
  if (!TIME_DTYPE_SWITCH(p.dtype, T, [&] { backward_dispatch<T>(p); })) {
    return "CPU kernels support float64 and float32 only";
  }
  return nullptr;
}

const char* linear_one_pass_forward_cpu(const LinearOnePassForwardParams& p, void* /*stream*/) {
  if (!TIME_DTYPE_SWITCH(p.dtype, T, [&] { forward_impl<T>(p); })) {
    return "CPU kernels support float64 and float32 only";
  }
  return nullptr;
}

}  // namespace ttfs_ext
