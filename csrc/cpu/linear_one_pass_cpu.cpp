// The one-pass backward and forward GEMMs of dense TTFS layers with few rows (linear_one_pass.h).
//
// Backward: each parallel task owns a tile of input columns (up to a page of each weight row):
// it computes the tile's delays t_in - t_min into a buffer (rounded as the delays prologue rounds
// them), then walks the weight rows kGroup at a time. A step reads the group's W tile once,
// adds it into the tile's input gradient (kept in cache) and writes the group's finished
// grad_w tile. Tasks own disjoint columns: no reduction between threads, and every sum runs in
// a fixed order (grad_in over the output features, grad_w over the rows), whatever the tiling.
// Written with GCC/Clang vector extensions, the compilers this library builds with.
#include "linear_one_pass.h"
#include "cpu/cpu_isa.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

namespace ttfs_ext {
namespace {

template <typename T>
constexpr int64_t kVec = 64 / sizeof(T);  // elements per 64-byte vector: one AVX-512 register
template <typename T>
constexpr int64_t kMaxTile = 4096 / sizeof(T);  // columns per task at most: a page of each weight row
constexpr int kGroup = 8;  // weight rows per step: the grad_in tile is read and written once per 8

// A 64-byte vector of T (GCC/Clang vector extension): each TTFS_CPU_CLONES clone lowers it to
// its own ISA (one AVX-512 register, two AVX2 ones, four SSE2 ones). memcpy is an unaligned load.
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(64)));
};
template <typename T>
TTFS_INLINE typename Vec<T>::type load(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
TTFS_INLINE void store(T* p, typename Vec<T>::type v) {
  std::memcpy(p, &v, sizeof v);
}

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
template <typename T, int K, bool kWantIn>
TTFS_CPU_CLONES void one_pass_step(const T* __restrict w, T* __restrict gw, int64_t ld, const T* __restrict g,
                                   const T* __restrict d, T* __restrict acc, int64_t rows, int64_t n,
                                   const T* next_w, T* next_gw) {
  using V = typename Vec<T>::type;
  int64_t c = 0;
  for (; c + kVec<T> <= n; c += kVec<T>) {
    if (next_w != nullptr) {
      for (int k = 0; k < K; ++k) {
        __builtin_prefetch(next_w + k * ld + c, 0);
        __builtin_prefetch(next_gw + k * ld + c, 1);
      }
    }
    V wk[K], s[K];
    for (int k = 0; k < K; ++k) {
      wk[k] = load(w + k * ld + c);
      s[k] = V{};
    }
    const T* __restrict dc = d + c * rows;  // the vectors of columns [c, c + kVec)
    T* __restrict ac = acc + c * rows;
    for (int64_t r = 0; r < rows; ++r) {
      const V dv = load(dc + r * kVec<T>);
      for (int k = 0; k < K; ++k) s[k] += g[k * rows + r] * dv;
      if constexpr (kWantIn) {
        V a = load(ac + r * kVec<T>);
        for (int k = 0; k < K; ++k) a += g[k * rows + r] * wk[k];
        store(ac + r * kVec<T>, a);
      }
    }
    for (int k = 0; k < K; ++k) store(gw + k * ld + c, s[k]);
  }
  const T* __restrict dc = d + c * rows;  // the last, partial vector: the same sums, one at a time
  T* __restrict ac = acc + c * rows;
  for (int64_t j = 0; c + j < n; ++j) {
    for (int k = 0; k < K; ++k) {
      T sum = 0;
      for (int64_t r = 0; r < rows; ++r) sum += g[k * rows + r] * dc[r * kVec<T> + j];
      gw[k * ld + c + j] = sum;
    }
    if constexpr (kWantIn) {
      for (int64_t r = 0; r < rows; ++r) {
        T a = ac[r * kVec<T> + j];
        for (int k = 0; k < K; ++k) a += g[k * rows + r] * w[k * ld + c + j];
        ac[r * kVec<T> + j] = a;
      }
    }
  }
}

template <typename T, bool kWantIn>
void one_pass_impl(const LinearOnePassBackwardParams& p) {
  const T* grad = static_cast<const T*>(p.grad);
  const T* t_in = static_cast<const T*>(p.t_in);
  const T* weight = static_cast<const T*>(p.weight);
  T* grad_in = static_cast<T*>(p.grad_in);
  T* grad_w = static_cast<T*>(p.grad_w);
  const int64_t rows = p.rows, in_f = p.in_features, out_f = p.out_features;
  const T t_min = static_cast<T>(p.t_min);  // as the delays prologue: in - offset, in T

  // grad transposed, (out_features, rows): a group's gradients are then one contiguous run.
  std::vector<T> grad_t(static_cast<size_t>(out_f * rows));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out_f; ++o) grad_t[o * rows + r] = grad[r * out_f + o];

  // Tiles as wide as a page (long runs for the prefetcher), narrower where that leaves a
  // thread without one; a whole number of vectors.
  const int64_t per_thread = (in_f + at::get_num_threads() - 1) / at::get_num_threads();
  const int64_t tw = std::clamp((per_thread + kVec<T> - 1) / kVec<T> * kVec<T>, kVec<T>, kMaxTile<T>);
  const int64_t tiles = (in_f + tw - 1) / tw;
  const auto at = [rows](int64_t r, int64_t j) {  // (row, column) of a vector-major tile
    return j / kVec<T> * rows * kVec<T> + r * kVec<T> + j % kVec<T>;
  };
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> d(static_cast<size_t>(rows * tw));
    std::vector<T> acc(kWantIn ? static_cast<size_t>(rows * tw) : 0);
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t i0 = tile * tw, n = std::min(tw, in_f - i0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < n; ++j) d[at(r, j)] = t_in[r * in_f + i0 + j] - t_min;
      std::fill(acc.begin(), acc.end(), T(0));
      const auto step = [&](auto group, int64_t o) {
        constexpr int K = decltype(group)::value;
        const bool last = o + K >= out_f;
        one_pass_step<T, K, kWantIn>(weight + o * in_f + i0, grad_w + o * in_f + i0, in_f, grad_t.data() + o * rows,
                                     d.data(), acc.data(), rows, n,
                                     last ? nullptr : weight + (o + K) * in_f + i0,
                                     last ? nullptr : grad_w + (o + K) * in_f + i0);
      };
      int64_t o = 0;
      for (; o + kGroup <= out_f; o += kGroup) step(std::integral_constant<int, kGroup>{}, o);
      for (; o < out_f; ++o) step(std::integral_constant<int, 1>{}, o);
      if constexpr (kWantIn) {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) grad_in[r * in_f + i0 + j] = acc[at(r, j)];
      }
    }
  });
}

// Forward: K weight rows against R rows of x, over columns [i0, i0 + n): the R x K dot
// products accumulate as vectors of lane sums (vector r * K + k of vacc), in registers within a call
// and in memory between calls; a partial vector at the end of the row goes to the scalars
// tail[r * K + k]. A tile of kFwdTile columns of the K weight rows (8 KiB in float32) stays in
// L1 while every block of R rows passes over it. Lanes are summed once per dot product, at the
// end: a lane sum per tile made the loop 7x slower.
template <typename T>
constexpr int64_t kFwdTile = 2048 / sizeof(T);

template <typename T, int K, int R>
TTFS_CPU_CLONES void forward_block(const T* __restrict w, const T* __restrict x, int64_t ld, int64_t n,
                                   T* __restrict vacc, T* __restrict tail) {
  using V = typename Vec<T>::type;
  V acc[R][K];
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < K; ++k) acc[r][k] = load(vacc + (r * K + k) * kVec<T>);
  int64_t c = 0;
  for (; c + kVec<T> <= n; c += kVec<T>) {
    V wk[K];
    for (int k = 0; k < K; ++k) wk[k] = load(w + k * ld + c);
    for (int r = 0; r < R; ++r) {
      const V xr = load(x + r * ld + c);
      for (int k = 0; k < K; ++k) acc[r][k] += xr * wk[k];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int k = 0; k < K; ++k) {
      store(vacc + (r * K + k) * kVec<T>, acc[r][k]);
      for (int64_t j = c; j < n; ++j) tail[r * K + k] += x[r * ld + j] * w[k * ld + j];
    }
  }
}

// u[:, o:o+K] for one group of K weight rows.
template <typename T, int K>
void forward_group(const T* w, const T* x, T* u, int64_t rows, int64_t in_f, int64_t out_f,
                   T* vacc, T* tail) {
  constexpr int R = 4;
  std::fill(vacc, vacc + rows * K * kVec<T>, T(0));
  std::fill(tail, tail + rows * K, T(0));
  for (int64_t i0 = 0; i0 < in_f; i0 += kFwdTile<T>) {
    const int64_t n = std::min(kFwdTile<T>, in_f - i0);
    int64_t r = 0;
    for (; r + R <= rows; r += R)
      forward_block<T, K, R>(w + i0, x + r * in_f + i0, in_f, n, vacc + r * K * kVec<T>, tail + r * K);
    for (; r < rows; ++r)
      forward_block<T, K, 1>(w + i0, x + r * in_f + i0, in_f, n, vacc + r * K * kVec<T>, tail + r * K);
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int k = 0; k < K; ++k) {
      T s = 0;
      for (int64_t l = 0; l < kVec<T>; ++l) s += vacc[(r * K + k) * kVec<T> + l];
      u[r * out_f + k] = s + tail[r * K + k];
    }
  }
}

template <typename T>
void forward_impl(const LinearOnePassForwardParams& p) {
  const T* x = static_cast<const T*>(p.x);
  const T* weight = static_cast<const T*>(p.weight);
  T* u = static_cast<T*>(p.u);
  const int64_t rows = p.rows, in_f = p.in_features, out_f = p.out_features;
  constexpr int K = 4;
  const int64_t groups = (out_f + K - 1) / K;  // the last one may be partial: rows one at a time
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> vacc(static_cast<size_t>(rows * K * kVec<T>));
    std::vector<T> tail(static_cast<size_t>(rows * K));
    for (int64_t grp = begin; grp < end; ++grp) {
      const int64_t o = grp * K;
      if (o + K <= out_f) {
        forward_group<T, K>(weight + o * in_f, x, u + o, rows, in_f, out_f, vacc.data(), tail.data());
      } else {
        for (int64_t oo = o; oo < out_f; ++oo)
          forward_group<T, 1>(weight + oo * in_f, x, u + oo, rows, in_f, out_f, vacc.data(), tail.data());
      }
    }
  });
}

template <typename T>
void one_pass_dispatch(const LinearOnePassBackwardParams& p) {
  if (p.grad_in != nullptr) one_pass_impl<T, true>(p);
  else one_pass_impl<T, false>(p);
}

}  // namespace

bool linear_one_pass_enabled() {
  static const bool enabled = std::strcmp(cpu_clone_isa(), "x86-64-v4") == 0;
  return enabled;
}

const char* linear_one_pass_backward_cpu(const LinearOnePassBackwardParams& p, void* /*stream*/) {
  if (p.dtype == Dtype::Float64) one_pass_dispatch<double>(p);
  else if (p.dtype == Dtype::Float32) one_pass_dispatch<float>(p);
  else return "CPU kernels support float64 and float32 only";
  return nullptr;
}

const char* linear_one_pass_forward_cpu(const LinearOnePassForwardParams& p, void* /*stream*/) {
  if (p.dtype == Dtype::Float64) forward_impl<double>(p);
  else if (p.dtype == Dtype::Float32) forward_impl<float>(p);
  else return "CPU kernels support float64 and float32 only";
  return nullptr;
}

}  // namespace ttfs_ext
