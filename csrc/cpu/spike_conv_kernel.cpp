// CPU kernel of spike_conv2d (kernels/params.h, SpikeConvParams): an event-driven convolution.
// A spike tensor is mostly zeros (feedback SNNs: 0.1-15 % of the neurons fire per step), so
// instead of a dense GEMM over every input element the kernel first lists each input
// position's nonzero channels (one pass; a block of zero channels costs a vector test), then
// computes each output position from the nonzeros in its receptive field only: c_out sums in
// registers, each nonzero adding its packed weight row (contiguous over c_out). The work is
// nonzeros x taps x c_out multiply-adds and one store per output. Samples run in parallel, each
// in a fixed order: the results do not depend on the thread count, nor (no fused multiply-adds,
// -ffp-contract=off) on the ISA. No CUDA twin: on GPUs the dense cuDNN convolution is the fast
// one at these sizes.
#include "kernels/params.h"
#include "cpu/cpu_isa.h"
#include "kernels/static_switch.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace ttfs_ext {
namespace {

constexpr int64_t kBlock = 32;  // input channels tested for zero at once

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

// Which inputs each output row (or column) reads: for output index o, the (kernel tap, input
// index) pairs taps[start[o]] .. taps[start[o + 1]] - 1. Built once per call, so that the
// loops over the nonzeros do no integer division.
//   direct:     i = o stride - pad + k dil;
//   transposed: o = i stride - pad + k dil, so i = (o + pad - k dil) / stride where it divides.
struct TapTable {
  std::vector<int64_t> start;
  std::vector<std::pair<int64_t, int64_t>> taps;

  TapTable(int64_t out, int64_t k, int64_t stride, int64_t pad, int64_t dil, int64_t in, bool transposed) {
    start.reserve(out + 1);
    for (int64_t o = 0; o < out; ++o) {
      start.push_back(static_cast<int64_t>(taps.size()));
      for (int64_t kk = 0; kk < k; ++kk) {
        int64_t i;
        if (transposed) {
          const int64_t t = o + pad - kk * dil;
          if (t < 0 || t % stride != 0) continue;
          i = t / stride;
        } else {
          i = o * stride - pad + kk * dil;
        }
        if (i >= 0 && i < in) taps.emplace_back(kk, i);
      }
    }
    start.push_back(static_cast<int64_t>(taps.size()));
  }
};

// One sample's nonzero inputs, listed per input position (CSR): channels and values.
template <typename T>
struct Nonzeros {
  std::vector<int64_t> start;
  std::vector<int32_t> channel;
  std::vector<T> value;
};

template <typename T>
struct ListNonzeros {
  static TTFS_INLINE int run(const T* __restrict in, int64_t positions, int64_t c_in, Nonzeros<T>* nz) {
    // room for every input (allocated once per task, touched only where there are nonzeros)
    nz->start.resize(positions + 1);
    if (static_cast<int64_t>(nz->channel.size()) < positions * c_in) {
      nz->channel.resize(positions * c_in);
      nz->value.resize(positions * c_in);
    }
    int64_t* __restrict start = nz->start.data();
    int32_t* __restrict channel = nz->channel.data();
    T* __restrict value = nz->value.data();
    int64_t n = 0;
    for (int64_t q = 0; q < positions; ++q) {
      start[q] = n;
      const T* in_q = in + q * c_in;
      for (int64_t c0 = 0; c0 < c_in; c0 += kBlock) {
        const int64_t c1 = std::min(c_in, c0 + kBlock);
        if (all_zero(in_q + c0, c1 - c0)) continue;
        for (int64_t c = c0; c < c1; ++c) {
          channel[n] = static_cast<int32_t>(c);  // written always, kept where nonzero: no branch
          value[n] = in_q[c];
          n += in_q[c] != T(0);
        }
      }
    }
    start[positions] = n;
    return 0;
  }
};

// The sums of one sample: for every output position and tile of output channels, the
// accumulators stay in registers over every nonzero of the receptive field (explicit GCC
// vectors of 64 bytes, lowered to the ISA's width by run_for_isa): tiles of four vectors, then
// of one, then the last channels one by one.
template <typename T>
struct GatherSample {
  static constexpr int kLanes = 64 / sizeof(T);
  typedef T vec __attribute__((vector_size(64)));

  struct Ctx {
    const SpikeConvParams& p;
    const TapTable* rows;
    const TapTable* cols;
    const int64_t* start;
    const int32_t* channel;
    const T* value;
    const T* weight;
    const T* bias;
  };

  // add(w, v) for each nonzero v of the receptive field of output (oy, ox), w its weight row
  // from output channel o0 on: the one traversal the tiles and the tail share.
  template <typename Add>
  static TTFS_INLINE void receptive_field(const Ctx& c, int64_t oy, int64_t ox, int64_t o0, Add&& add) {
    const int64_t c_out = c.p.c_out, row_stride = c.p.kh * c.p.kw * c_out;  // weight[ch] to weight[ch + 1]
    for (int64_t a = c.rows->start[oy]; a < c.rows->start[oy + 1]; ++a) {
      const auto [ky, iy] = c.rows->taps[a];
      for (int64_t b = c.cols->start[ox]; b < c.cols->start[ox + 1]; ++b) {
        const auto [kx, ix] = c.cols->taps[b];
        const int64_t q = iy * c.p.w_in + ix;
        const T* w_tap = c.weight + (ky * c.p.kw + kx) * c_out + o0;
        for (int64_t e = c.start[q]; e < c.start[q + 1]; ++e) add(w_tap + c.channel[e] * row_stride, c.value[e]);
      }
    }
  }

  // Output channels o0 .. o0 + kVecs * kLanes of position (oy, ox).
  template <int kVecs>
  static TTFS_INLINE void tile(const Ctx& c, int64_t oy, int64_t ox, int64_t o0, T* __restrict out_q) {
    vec acc[kVecs];
    for (int j = 0; j < kVecs; ++j) {
      if (c.bias != nullptr) {
        std::memcpy(&acc[j], c.bias + o0 + j * kLanes, sizeof(vec));
      } else {
        acc[j] = vec{};
      }
    }
    receptive_field(c, oy, ox, o0, [&](const T* __restrict w, T value) __attribute__((always_inline)) {
      const vec v = vec{} + value;
      for (int j = 0; j < kVecs; ++j) {
        vec wj;
        std::memcpy(&wj, w + j * kLanes, sizeof(vec));
        acc[j] += v * wj;
      }
    });
    std::memcpy(out_q + o0, acc, sizeof(acc));
  }

  // Output channels o0 .. c_out - 1 (fewer than a vector), one by one.
  static TTFS_INLINE void tail(const Ctx& c, int64_t oy, int64_t ox, int64_t o0, T* __restrict out_q) {
    const int64_t n = c.p.c_out - o0;
    T acc[kLanes];
    for (int64_t o = 0; o < n; ++o) acc[o] = c.bias != nullptr ? c.bias[o0 + o] : T(0);
    receptive_field(c, oy, ox, o0, [&](const T* __restrict w, T v) __attribute__((always_inline)) {
      for (int64_t o = 0; o < n; ++o) acc[o] += v * w[o];
    });
    for (int64_t o = 0; o < n; ++o) out_q[o0 + o] = acc[o];
  }

  static TTFS_INLINE int run(const SpikeConvParams& p, const TapTable* rows, const TapTable* cols,
                             const Nonzeros<T>* nz, const T* __restrict weight, const T* __restrict bias,
                             T* __restrict out) {
    const Ctx c{p, rows, cols, nz->start.data(), nz->channel.data(), nz->value.data(), weight, bias};
    const int64_t c_out = p.c_out;
    for (int64_t oy = 0; oy < p.h_out; ++oy) {
      for (int64_t ox = 0; ox < p.w_out; ++ox) {
        T* out_q = out + (oy * p.w_out + ox) * c_out;
        int64_t o0 = 0;
        for (; o0 + 4 * kLanes <= c_out; o0 += 4 * kLanes) tile<4>(c, oy, ox, o0, out_q);
        for (; o0 + kLanes <= c_out; o0 += kLanes) tile<1>(c, oy, ox, o0, out_q);
        if (o0 < c_out) tail(c, oy, ox, o0, out_q);
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
  const int64_t positions = p.h_in * p.w_in, out_sample = p.h_out * p.w_out * p.c_out;
  const TapTable rows(p.h_out, p.kh, p.stride[0], p.pad[0], p.dil[0], p.h_in, p.transposed);
  const TapTable cols(p.w_out, p.kw, p.stride[1], p.pad[1], p.dil[1], p.w_in, p.transposed);
  at::parallel_for(0, p.n, 1, [&](int64_t b, int64_t e) {
    Nonzeros<T> nz;  // reused by the task's samples
    for (int64_t i = b; i < e; ++i) {
      run_for_isa<ListNonzeros<T>>(in + i * positions * p.c_in, positions, p.c_in, &nz);
      run_for_isa<GatherSample<T>>(p, &rows, &cols, static_cast<const Nonzeros<T>*>(&nz), weight, bias,
                                   out + i * out_sample);
    }
  });
}

}  // namespace

const char* spike_conv_cpu(const SpikeConvParams& p, void*) {
  if (p.n == 0 || p.h_out == 0 || p.w_out == 0 || p.c_out == 0) return nullptr;
  const bool ok = TIME_DTYPE_SWITCH(p.dtype, T, [&] { spike_conv_impl<T>(p); });
  return ok ? nullptr : "unsupported dtype: the input must be float64 or float32";
}

}  // namespace ttfs_ext
