// The element math of every kernel, the only copy: each scalar formula that a CPU loop
// (cpu/*_kernel.cpp) and a CUDA kernel (cuda/*_kernel.cu) both compute is an inline function
// here, compiled for the host and the device alike (TTFS_HOST_DEVICE, as ATen's
// C10_HOST_DEVICE). The kernels around them hold only loops, launch and indexing code, so the
// CPU tests run every formula the CUDA kernels compute.
//
// Rounding is the same on both sides by construction: every product goes through mul_rn
// (__fmul_rn / __dmul_rn on the device, a plain product on the host, whose kernel files are
// compiled with -ffp-contract=off) and the CUDA files are compiled with -fmad=false
// (CMakeLists.txt), so no sum of products is contracted into a fused multiply-add anywhere.
// Divisions are IEEE round-to-nearest on both (nvcc's default -prec-div=true).
//
// Includes no torch or CUDA header: nvcc compiles it without ATen, the host without CUDA.
// The functions are templates on the value type where the CPU loops call them on explicit
// GCC vectors (fs_activation) as well as on scalars.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TTFS_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define TTFS_HOST_DEVICE inline __attribute__((always_inline))
#else
#define TTFS_HOST_DEVICE inline
#endif

namespace ttfs_ext {
namespace math {

// --- rounding -------------------------------------------------------------------------------

// a * b rounded on its own: never fused with a following addition.
template <typename T>
TTFS_HOST_DEVICE T mul_rn(T a, T b) {
  return a * b;
}
#if defined(__CUDA_ARCH__)
template <>
TTFS_HOST_DEVICE float mul_rn<float>(float a, float b) {
  return __fmul_rn(a, b);
}
template <>
TTFS_HOST_DEVICE double mul_rn<double>(double a, double b) {
  return __dmul_rn(a, b);
}
#endif

// Selects and magnitudes written with comparisons only: they apply element-wise to GCC vectors.
template <typename T>
TTFS_HOST_DEVICE T abs(T v) {
  return v < T{} ? -v : v;
}

// sign(0) = 0, as autograd differentiates abs.
template <typename T>
TTFS_HOST_DEVICE T sign(T v) {
  const T zero{};
  return v > zero ? zero + 1 : (v < zero ? zero - 1 : zero);
}

// --- 16-bit floats --------------------------------------------------------------------------
// Storage types bit-compatible with c10::Half / __half and c10::BFloat16 / __nv_bfloat16, with
// the conversions ATen uses (c10/util/Half.h, BFloat16.h): round to nearest even, subnormals
// kept; one copy for both devices.

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

TTFS_HOST_DEVICE uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}
TTFS_HOST_DEVICE float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

TTFS_HOST_DEVICE float to_float(BFloat16 v) { return float_of(static_cast<uint32_t>(v.bits) << 16); }

TTFS_HOST_DEVICE BFloat16 to_bfloat16(float f) {
  if (f != f) return BFloat16{0x7FC0};  // NaN
  const uint32_t u = bits_of(f);
  const uint32_t rounding_bias = ((u >> 16) & 1u) + 0x7FFFu;
  return BFloat16{static_cast<uint16_t>((u + rounding_bias) >> 16)};
}

// fp16_ieee_to_fp32_value / fp16_ieee_from_fp32_value (Maratyszcza's FP16), as c10 has them.
TTFS_HOST_DEVICE float to_float(Half v) {
  const uint32_t w = static_cast<uint32_t>(v.bits) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const uint32_t exp_offset = 0xE0u << 23;
  const float exp_scale = float_of(0x7800000u);  // 2^-112
  const float normalized = mul_rn(float_of((two_w >> 4) + exp_offset), exp_scale);
  const uint32_t magic_mask = 126u << 23;
  const float magic_bias = 0.5f;
  const float denormalized = float_of((two_w >> 17) | magic_mask) - magic_bias;
  const uint32_t denormalized_cutoff = 1u << 27;
  const uint32_t result = sign | (two_w < denormalized_cutoff ? bits_of(denormalized) : bits_of(normalized));
  return float_of(result);
}

TTFS_HOST_DEVICE Half to_half(float f) {
  const float scale_to_inf = float_of(0x77800000u);   // 2^112
  const float scale_to_zero = float_of(0x08800000u);  // 2^-110
  float base = mul_rn(mul_rn(abs(f), scale_to_inf), scale_to_zero);
  const uint32_t w = bits_of(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = float_of((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = bits_of(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return Half{static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign))};
}

// cast<To>(from): plain conversions, and the 16-bit ones above.
template <typename To>
struct Cast {
  template <typename From>
  static TTFS_HOST_DEVICE To from(From v) {
    return static_cast<To>(v);
  }
  static TTFS_HOST_DEVICE To from(Half v) { return static_cast<To>(to_float(v)); }
  static TTFS_HOST_DEVICE To from(BFloat16 v) { return static_cast<To>(to_float(v)); }
};
template <>
struct Cast<Half> {
  static TTFS_HOST_DEVICE Half from(float v) { return to_half(v); }
};
template <>
struct Cast<BFloat16> {
  static TTFS_HOST_DEVICE BFloat16 from(float v) { return to_bfloat16(v); }
};
template <typename To, typename From>
TTFS_HOST_DEVICE To cast(From v) {
  return Cast<To>::from(v);
}

// --- the B1 layers' element-wise passes (kernels/params.h: PrologueParams, EpilogueParams) ----

// Prologue: offset - t (activations) or t - offset (delays), in the spike-time dtype.
template <bool kNegate, typename T>
TTFS_HOST_DEVICE T shift(T t, T offset) {
  return kNegate ? offset - t : t - offset;
}

// The backward's gate: the value where the neuron spiked (t_out < t_max), else 0.
template <typename T>
TTFS_HOST_DEVICE T gated(T v, T t_out, T t_max) {
  return t_out < t_max ? v : T(0);
}

// Whether a value is NaN or inf (the unordered compare is true for NaN).
template <typename T, typename Limit>
TTFS_HOST_DEVICE bool nonfinite(T v, Limit max_finite) {
  return !(abs(v) <= max_finite);
}

// Epilogue of a spiking layer: the spike time of potential v, t_max - v, or t_max when the
// neuron does not spike in the window; NaN stays NaN.
template <typename T>
TTFS_HOST_DEVICE T fire(T v, T t_max) {
  const T t = t_max - v;
  return t >= t_max ? t_max : t;
}

// The epilogue of a layer: the potential plus its bias, then its spike time (spiking layers) or
// itself (readout).
template <typename T>
TTFS_HOST_DEVICE T add_bias(T u, T bias) {
  return u + bias;
}

template <bool kSpiking, typename T>
TTFS_HOST_DEVICE T epilogue(T v, T t_max) {
  return kSpiking ? fire(v, t_max) : v;
}

// --- the event-exact general neuron (FirstSpike*Params) ----------------------------------------
// Segment [start, end] of a row holds the arrivals before it: slope b = alpha + S and
// threshold crossing (theta + P) / b. The first segment with b > 0 and a crossing <= end holds
// the spike, at the crossing or, if that lies before the segment, at its start.

// theta <= 0: at threshold when integration starts; the neuron fires at t_start without
// gradient. Otherwise silent (+inf) until a segment holds its crossing.
template <typename T>
TTFS_HOST_DEVICE T first_spike_initial(T theta, T inf) {
  return theta <= T(0) ? T(0) : inf;
}

template <typename T>
TTFS_HOST_DEVICE T segment_slope(T alpha, T S) {
  return alpha + S;
}

template <typename T>
TTFS_HOST_DEVICE T segment_crossing(T theta, T P, T b) {
  return (theta + P) / b;
}

// & rather than &&: the CPU loops vectorise it.
template <typename T>
TTFS_HOST_DEVICE bool segment_holds_spike(T b, T cross, T end) {
  return (b > T(0)) & (cross <= end);
}

template <typename T>
TTFS_HOST_DEVICE T spike_in_segment(T cross, T start) {
  return cross < start ? start : cross;
}

// The input arriving at `end` with weight w adds w to the slope and w * end to P.
template <typename T>
TTFS_HOST_DEVICE void add_arrival(T& S, T& P, T w, T end) {
  S += w;
  P += mul_rn(w, end);
}

// The output of a neuron whose spike lies t_rel after t_start: its time on the outputs' axis
// and the slope there, or (t_max, 0) when it does not fire in the window.
template <typename T>
TTFS_HOST_DEVICE void first_spike_output(T t_rel, T slope, T t_start, T t_origin, T t_max, T& t_out, T& slope_out) {
  const T t = t_start + t_rel - t_origin;
  const bool fired = t < t_max;
  t_out = fired ? t : t_max;
  slope_out = fired ? slope : T(0);
}

// An output time (on the outputs' axis) on the inputs' axis, where the gradient kernels compare
// it with the input times.
template <typename T>
TTFS_HOST_DEVICE T on_inputs_axis(T t_out, T t_origin) {
  return t_out + t_origin;
}

// grad_input's term of output o for input k: g W [t' < t_out] (t_out on the inputs' axis). The
// gate multiplies, so a NaN or inf product stays visible where the gate is 0, as in the
// reference (masked products, not skipped ones).
template <typename T>
TTFS_HOST_DEVICE T grad_input_term(T g, T w, T t_patch, T t_out) {
  return static_cast<T>(t_patch < t_out) * mul_rn(g, w);
}

// grad_weight's term: g (min(t', t_out) - t_out) = g (t' - t_out) where t' < t_out, else 0 (also
// for +inf padding).
template <typename T>
TTFS_HOST_DEVICE T grad_weight_term(T g, T t_patch, T t_out) {
  return mul_rn(g, (t_patch < t_out ? t_patch : t_out) - t_out);
}

// --- few-spikes neurons (FsForwardParams, FsBackwardParams) -----------------------------------
// One step t of the K-step neuron: spike z = v > T[t], output y += d[t] z, potential v -= h[t] z.
// Selects of the sums (masked adds on AVX-512), the reference's y + d z and v - h z with z in
// {0, 1} up to the sign of a zero. Z is bool for scalars, the comparison's mask for GCC vectors.
template <typename V, typename Z>
TTFS_HOST_DEVICE void fs_step(V& v, V& y, Z z, V h, V d) {
  y = z ? y + d : y;
  v = z ? v - h : v;
}

template <typename V>
TTFS_HOST_DEVICE V fs_potential_after(V v, V h, V th) {
  return v > th ? v - h : v;
}

// The regulariser's term of one step: max(|v_s| - 1, 0), v_s = (v - T) / (|v| + 1).
template <typename V>
TTFS_HOST_DEVICE V fs_reg_term(V v, V th) {
  const V zero{}, one = zero + 1;
  const V r = abs((v - th) / (abs(v) + one)) - one;
  return r > zero ? r : zero;
}

// NaN in, NaN out; otherwise the sum of the emitted d.
template <typename V>
TTFS_HOST_DEVICE V fs_output(V x, V y) {
  return x != x ? x : y;
}

// One step of the surrogate backward, in reverse: given the step's potential v, the upstream
// gradient g of y and the adjoint a = dL/dv(t+1), returns the step's terms of the parameter
// gradients, which the caller accumulates as grad_h -= neg_h, grad_d += pos_d, grad_T -= neg_T
// (neg_h = a z, pos_d = g z, neg_T = gvs / den), and updates a to dL/dv(t):
//   gz = g d - a h;  gvs = gz max(0, 1 - |vs|) [+ greg [|vs| > 1] sign(vs)]
//   a += gvs dvs/dv, with vs = (v - T) / den, den = |v| + 1, as autograd differentiates num / den.
template <bool kReg, typename V>
TTFS_HOST_DEVICE void fs_step_backward(V v, V g, V& a, V h, V d, V th, V greg, V& neg_h, V& pos_d, V& neg_T) {
  const V zero{}, one = zero + 1;
  const auto z = v > th;
  const V num = v - th, den = abs(v) + one;
  const V vs = num / den;
  const V gz = mul_rn(g, d) - mul_rn(a, h);
  const V tri = one - abs(vs);
  V gvs = mul_rn(gz, tri > zero ? tri : zero);
  if (kReg) gvs = gvs + (abs(vs) > one ? mul_rn(greg, sign(vs)) : zero);
  const V gnum = gvs / den;
  const V gden = mul_rn(-gvs, vs / den);
  neg_h = z ? a : zero;
  pos_d = z ? g : zero;
  neg_T = gnum;
  a = a + (gnum + mul_rn(gden, sign(v)));
}

// --- the neurons of feedback SNNs (SpideStepParams) -------------------------------------------
// One step of an IF/LIF neuron with binary spikes (forward):
//   s = [v >= v_th];  u = (v - reset s) leak;  rate = leak rate + s.
// v is u + current (+ extra), computed by the caller. Returns s.
template <typename T>
TTFS_HOST_DEVICE T spide_forward_neuron(T v, T& u, T& rate, T v_th, T reset, T leak) {
  const T s = v >= v_th ? T(1) : T(0);
  u = mul_rn(v - mul_rn(reset, s), leak);  // reset * s: exact (s is 0 or 1)
  rate = mul_rn(leak, rate) + s;
  return s;
}

// One step of the SPIDE neuron couple with ternary spikes (backward):
//   k = [v >= v_th] - [v <= -v_th];  u = (v - reset k) leak;  rate = leak rate + amplitude k.
// Returns amplitude k.
template <typename T>
TTFS_HOST_DEVICE T spide_backward_neuron(T v, T& u, T& rate, T v_th, T reset, T amplitude, T leak) {
  const T k = (v >= v_th ? T(1) : T(0)) - (v <= -v_th ? T(1) : T(0));
  u = mul_rn(v - mul_rn(reset, k), leak);
  const T s = mul_rn(amplitude, k);
  rate = mul_rn(leak, rate) + s;
  return s;
}

// The input of the backward neuron: u + current (times its dropout gate) (+ the injected gradient).
template <bool kCurrentGate, bool kInject, typename T>
TTFS_HOST_DEVICE T spide_backward_input(T u, T current, T current_gate, T inject) {
  T v = kCurrentGate ? u + mul_rn(current, current_gate) : u + current;
  if (kInject) v += inject;
  return v;
}

template <bool kExtra, typename T>
TTFS_HOST_DEVICE T spide_forward_input(T u, T current, T extra) {
  T v = u + current;
  if (kExtra) v += extra;
  return v;
}

// The output spikes, times the gate (the dropout mask of the next connection) where there is one.
template <bool kGate, typename T>
TTFS_HOST_DEVICE T spide_output(T s, T gate) {
  return kGate ? mul_rn(s, gate) : s;
}

}  // namespace math
}  // namespace ttfs_ext
