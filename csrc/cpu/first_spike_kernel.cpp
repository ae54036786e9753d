// CPU kernels of the event-exact general neuron: loops around the element math of
// kernels/element_math.h (the segment test, the arrivals, the outputs, the gradient terms),
// which cuda/first_spike_kernel.cu runs too.
// A task owns whole rows (forward, grad_input) or whole splits of rows (grad_weight), and
// the inner loops run over outputs or inputs so that they vectorise. The inner loops are
// compiled for AVX-512, AVX2 and the x86-64 baseline and run in the code of cpu_isa()
// (cpu/cpu_isa.h: only these loops get the wider code, so nothing built for AVX-512 can be
// shared with, and run on, a CPU without it).
#include "kernels/element_math.h"
#include "kernels/params.h"
#include "cpu/cpu_isa.h"
#include "kernels/static_switch.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace ttfs_ext {
namespace {

constexpr int64_t kGrainWork = 32768;  // multiply-adds per parallel task, at least
constexpr double kInf = std::numeric_limits<double>::infinity();

int64_t grain_rows(int64_t work_per_row) { return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, work_per_row)); }

// x[0, n) as float64: x itself, or converted into buf. The inner loops then run on doubles
// only, which vectorises.
template <typename scalar_t>
const double* as_double(const scalar_t* x, int64_t n, std::vector<double>& buf) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return x;
  } else {
    buf.resize(n);
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<double>(x[i]);
    return buf.data();
  }
}

// An input of a row: its arrival time (relative to t_start) and its index in the row.
struct Arrival {
  double time;
  int64_t index;
};

// The order of at::sort(stable=true), which the CUDA path and the reference use: ascending
// times, ties in input order, NaN last. NaN arrives only with input checks off, so rows
// without one take the plain comparison.
inline bool arrives_before(const Arrival& a, const Arrival& b) {
  return a.time < b.time || (a.time == b.time && a.index < b.index);
}
inline bool arrives_before_nan_last(const Arrival& a, const Arrival& b) {
  const bool a_nan = std::isnan(a.time), b_nan = std::isnan(b.time);
  if (a_nan != b_nan) return b_nan;
  return a_nan ? a.index < b.index : arrives_before(a, b);
}

// Sorts one row's arrivals in place. Short rows (a 3-channel 3x3 conv has 27 inputs) by
// insertion, which beats at::sort's per-row merge sort and its (rows, K) value and index
// tensors several times over there; longer rows by std::sort, which the unique (time, index)
// keys make stable.
template <typename Before>
void sort_arrivals(Arrival* a, int64_t n, Before before) {
  constexpr int64_t kInsertionMax = 32;
  if (n > kInsertionMax) {
    std::sort(a, a + n, before);
    return;
  }
  for (int64_t i = 1; i < n; ++i) {
    const Arrival x = a[i];
    int64_t j = i;
    for (; j > 0 && before(x, a[j - 1]); --j) a[j] = a[j - 1];
    a[j] = x;
  }
}

// Segment [start, end] of one row for the silent neurons o in [begin, n): slope b = alpha + S
// and crossing (theta + P) / b; the first segment with b > 0 and a crossing <= end holds the
// spike. & and selects rather than && and branches: the loop vectorises.
TTFS_INLINE void test_segment(const double* __restrict A, const double* __restrict Th,
                              const double* __restrict S, const double* __restrict P, double* __restrict t_rel,
                              double* __restrict slope, int64_t begin, int64_t n, double start, double end) {
  for (int64_t o = begin; o < n; ++o) {
    const double b = math::segment_slope(A[o], S[o]);
    const double cross = math::segment_crossing(Th[o], P[o], b);
    const bool hit = (t_rel[o] == kInf) & math::segment_holds_spike(b, cross, end);
    const double t_hit = math::spike_in_segment(cross, start);
    t_rel[o] = hit ? t_hit : t_rel[o];
    slope[o] = hit ? b : slope[o];
  }
}

// Whether a silent neuron in [begin, n) may fire in the segment ending at `end`: the test of
// test_segment without its division, theta + P <= end * b, loosened by 8 ulp and by DBL_MIN
// (underflow), so that it never rejects a crossing the division accepts (fl(num / b) <= end
// implies num <= end * b * (1 + DBL_EPSILON)). It only gates test_segment, whose division
// (vdivpd) bounds the scan: a row of K inputs has at most O spikes in its K + 1 segments, so
// on long rows most segments hold none and skip it. Same sums as test_segment (no FMA).
TTFS_INLINE bool may_fire_in_segment(const double* __restrict A, const double* __restrict Th,
                                     const double* __restrict S, const double* __restrict P,
                                     const double* __restrict t_rel, int64_t begin, int64_t n, double end) {
  const double bound = end * (1.0 + 8.0 * std::numeric_limits<double>::epsilon());
  int any = 0;
  for (int64_t o = begin; o < n; ++o) {
    const double b = math::segment_slope(A[o], S[o]);
    const double num = Th[o] + P[o];  // segment_crossing's numerator
    any |= (t_rel[o] == kInf) & (b > 0.0) & (num <= bound * b + std::numeric_limits<double>::min());
  }
  return any != 0;
}

// The input arriving at `end` with weights w adds w to the slopes and w * end to P.
TTFS_INLINE void add_arrival(double* __restrict S, double* __restrict P, const double* __restrict w,
                             int64_t begin, int64_t n, double end) {
  for (int64_t o = begin; o < n; ++o) math::add_arrival(S[o], P[o], w[o], end);
}

// The segments of one row, arrivals sorted: walk them (k outer) and test every silent neuron
// (o inner, branch-free, so that it vectorises); stop once every neuron has fired. One copy
// per ISA with the three loops inlined: the loops are a few vectors long, and calling each
// as a per-ISA function of its own cost a quarter of the dense forward.
struct ScanRow {
  static TTFS_INLINE void run(const double* __restrict A, const double* __restrict Th, double* __restrict S,
                              double* __restrict P, double* __restrict t_rel, double* __restrict slope,
                              const Arrival* __restrict arrivals, int64_t K, int64_t O, const double* __restrict w) {
    double start = 0.0;
    int64_t first_silent = 0;  // the neurons before it have all fired
    for (int64_t k = 0;; ++k) {
      while (first_silent < O && t_rel[first_silent] != kInf) ++first_silent;
      if (first_silent == O) return;
      const double end = k < K ? arrivals[k].time : kInf;  // +inf: last segment
      if (may_fire_in_segment(A, Th, S, P, t_rel, first_silent, O, end)) {
        test_segment(A, Th, S, P, t_rel, slope, first_silent, O, start, end);
      }
      if (end == kInf) return;  // padding sorts last and never arrives
      add_arrival(S, P, w + arrivals[k].index * O, first_silent, O, end);
      start = end;
    }
  }
};

// Per row: walk the segments between arrivals (k outer) and test every neuron (o inner,
// branch-free, so that it vectorises). Segment k, [start, end] with k inputs arrived, has
// slope alpha + S and crosses the threshold at (theta + P) / (alpha + S); the first segment
// with a positive slope and a crossing <= end holds the spike. t_rel = +inf marks a neuron
// still silent; the row stops once every neuron has fired.
template <typename scalar_t>
void forward_impl(const FirstSpikeForwardParams& p) {
  // Unsorted rows, which the CPU sorts itself (KernelTable::sorts_rows), or rows sorted by the
  // caller with their order (the CUDA path, which the CUDA-like kernel profile runs here).
  const auto* tau = static_cast<const scalar_t*>(p.tau);
  const auto* tau_sorted = static_cast<const scalar_t*>(p.tau_sorted);
  const int64_t* order = p.order;
  const auto* wt = static_cast<const scalar_t*>(p.weight_t);
  const auto* alpha = static_cast<const scalar_t*>(p.alpha);
  const auto* theta = static_cast<const scalar_t*>(p.threshold);
  auto* t_out = static_cast<scalar_t*>(p.t_out);
  auto* slope_out = static_cast<scalar_t*>(p.slope);
  const int64_t K = p.k, O = p.outputs;
  at::parallel_for(0, p.rows, grain_rows(K * O), [&](int64_t begin, int64_t end_row) {
    std::vector<double> wt_buf;
    const double* w = as_double(wt, K * O, wt_buf);
    // Per neuron: alpha, theta, prefix sums S and P, spike time relative to t_start, slope there.
    std::vector<double> A(O), Th(O), S(O), P(O), t_rel(O), slope(O);
    std::vector<Arrival> arrivals(K);
    for (int64_t r = begin; r < end_row; ++r) {
      const scalar_t* alpha_r = alpha + (r % p.param_rows) * p.param_ld;
      const scalar_t* theta_r = theta + (r % p.param_rows) * p.param_ld;
      if (tau != nullptr) {
        const scalar_t* tau_r = tau + r * K;
        bool has_nan = false;
        for (int64_t k = 0; k < K; ++k) {
          arrivals[k] = {static_cast<double>(tau_r[k]), k};
          has_nan |= std::isnan(arrivals[k].time);
        }
        if (has_nan) sort_arrivals(arrivals.data(), K, arrives_before_nan_last);
        else sort_arrivals(arrivals.data(), K, arrives_before);
      } else {  // rows sorted by the caller (at::sort), as the CUDA kernel takes them
        for (int64_t k = 0; k < K; ++k) arrivals[k] = {static_cast<double>(tau_sorted[r * K + k]), order[r * K + k]};
      }
      for (int64_t o = 0; o < O; ++o) {
        A[o] = static_cast<double>(alpha_r[o]);
        Th[o] = static_cast<double>(theta_r[o]);
        S[o] = 0.0;
        P[o] = 0.0;
        slope[o] = 0.0;
        t_rel[o] = math::first_spike_initial(Th[o], kInf);
      }
      run_for_isa<ScanRow>(A.data(), Th.data(), S.data(), P.data(), t_rel.data(), slope.data(), arrivals.data(), K, O,
                             w);
      scalar_t* t_out_r = t_out + r * p.out_ld;
      scalar_t* slope_r = slope_out + r * p.out_ld;
      for (int64_t o = 0; o < O; ++o) {
        double t, b;
        math::first_spike_output(t_rel[o], slope[o], p.t_start, p.t_origin, p.t_max, t, b);
        t_out_r[o] = static_cast<scalar_t>(t);
        slope_r[o] = static_cast<scalar_t>(b);
      }
    }
  });
}

// acc[k] += go w[k] [tp[k] < to]. bool times double, not ?:, which GCC (trapping math) does
// not vectorise well.
struct AddGradInput {
  static TTFS_INLINE void run(double* __restrict acc, const double* __restrict tp, const double* __restrict w,
                              int64_t n, double go, double to) {
    for (int64_t k = 0; k < n; ++k) acc[k] += math::grad_input_term(go, w[k], tp[k], to);
  }
};

// acc[k] += go (min(tp[k], to) - to): go (t' - t_out) where t' < t_out, else 0 (also for +inf padding).
struct AddGradWeight {
  static TTFS_INLINE void run(double* __restrict acc, const double* __restrict tp, int64_t n, double go,
                              double to) {
    for (int64_t k = 0; k < n; ++k) acc[k] += math::grad_weight_term(go, tp[k], to);
  }
};

// grad_patch[r, k] = sum_o g[r, o] W[o, k] [t'[r, k] < t_out[r, o]]; o outer, k inner.
template <typename scalar_t>
void grad_input_impl(const FirstSpikeGradInputParams& p) {
  const auto* g = static_cast<const scalar_t*>(p.grad);
  const auto* t_out = static_cast<const scalar_t*>(p.t_out);
  const auto* t_patch = static_cast<const scalar_t*>(p.t_patch);
  auto* grad_patch = static_cast<scalar_t*>(p.grad_patch);
  const int64_t K = p.k, O = p.outputs;
  at::parallel_for(0, p.rows, grain_rows(K * O), [&](int64_t begin, int64_t end) {
    std::vector<double> w_buf, tp_buf, acc(K);
    const double* weight = as_double(static_cast<const scalar_t*>(p.weight), O * K, w_buf);
    for (int64_t r = begin; r < end; ++r) {
      const double* tp = as_double(t_patch + r * K, K, tp_buf);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t o = 0; o < O; ++o) {
        const double go = static_cast<double>(g[r * p.out_ld + o]);
        if (go == 0.0) continue;  // silent neurons and those without gradient
        const double to = math::on_inputs_axis(static_cast<double>(t_out[r * p.out_ld + o]), p.t_origin);  // the inputs' axis
        run_for_isa<AddGradInput>(acc.data(), tp, weight + o * K, K, go, to);
      }
      for (int64_t k = 0; k < K; ++k) grad_patch[r * K + k] = static_cast<scalar_t>(acc[k]);
    }
  });
}

// partial[s, o, k] = sum over the rows r of split s of g[r, o] (t'[r, k] - t_out[r, o]) [t' < t_out].
template <typename scalar_t>
void grad_weight_impl(const FirstSpikeGradWeightParams& p) {
  const auto* g = static_cast<const scalar_t*>(p.grad);
  const auto* t_out = static_cast<const scalar_t*>(p.t_out);
  const auto* t_patch = static_cast<const scalar_t*>(p.t_patch);
  const int64_t K = p.k, O = p.outputs;
  const int64_t rows_per_split = (p.rows + p.splits - 1) / p.splits;
  at::parallel_for(0, p.splits, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> tp_buf;
    for (int64_t s = begin; s < end; ++s) {
      double* acc = p.partial + s * O * K;
      std::fill(acc, acc + O * K, 0.0);
      const int64_t r_end = std::min(p.rows, (s + 1) * rows_per_split);
      for (int64_t r = s * rows_per_split; r < r_end; ++r) {
        const double* tp = as_double(t_patch + r * K, K, tp_buf);
        for (int64_t o = 0; o < O; ++o) {
          const double go = static_cast<double>(g[r * p.out_ld + o]);
          if (go == 0.0) continue;
          const double to = math::on_inputs_axis(static_cast<double>(t_out[r * p.out_ld + o]), p.t_origin);  // the inputs' axis
          run_for_isa<AddGradWeight>(acc + o * K, tp, K, go, to);
        }
      }
    }
  });
}

constexpr const char* kDtypeError = "first_spike kernels support float64 and float32 only";

}  // namespace

const char* first_spike_forward_cpu(const FirstSpikeForwardParams& p, void* /*stream*/) {
  if (p.rows == 0 || p.outputs == 0) return nullptr;
  if (!TIME_DTYPE_SWITCH(p.dtype, T, [&] { forward_impl<T>(p); })) return kDtypeError;
  return nullptr;
}

const char* first_spike_grad_input_cpu(const FirstSpikeGradInputParams& p, void* /*stream*/) {
  if (p.rows == 0 || p.k == 0) return nullptr;
  if (!TIME_DTYPE_SWITCH(p.dtype, T, [&] { grad_input_impl<T>(p); })) return kDtypeError;
  return nullptr;
}

const char* first_spike_grad_weight_cpu(const FirstSpikeGradWeightParams& p, void* /*stream*/) {
  if (p.outputs == 0 || p.k == 0) return nullptr;
  if (!TIME_DTYPE_SWITCH(p.dtype, T, [&] { grad_weight_impl<T>(p); })) return kDtypeError;
  return nullptr;
}

}  // namespace ttfs_ext
