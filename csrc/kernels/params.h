// Every kernel's plain parameter struct, and the table of one device's kernels that the
// device-generic layer code (layers/) calls through. Only pointers, sizes and scalars: nvcc
// compiles the CUDA kernels without ATen headers, and the CPU loops mirror them one for one.
//
// --- the B1 layers (linear, readout, conv2d) ------------------------------------------------
// Every TTFS layer is one vendor GEMM/convolution between two element-wise passes:
//   prologue  before it: spike times -> activations, or grad_out -> gated gradients;
//   epilogue  after it:  potentials -> spike times (bias, threshold, clamp at t_max).
#pragma once

#include <cstdint>

namespace ttfs_ext {

enum class Dtype : int32_t { Float64 = 0, Float32 = 1, Float16 = 2, BFloat16 = 3 };

// out[i] = cast<out_dtype>(scale * (in[i] - offset)), times (gate[i] < t_max) when gate is set.
//   activations   x = t_min - t_in      : offset = t_min, scale = -1
//   delays        d = t_in - t_min      : offset = t_min, scale = +1
//   gated grads   g * [t_out < t_max]   : offset = 0,     scale = +1, gate = t_out
// The subtraction runs in in_dtype (the spike-time dtype): differences keep float32 precise.
struct PrologueParams {
  const void* in = nullptr;
  const void* gate = nullptr;  // spike times, same dtype as `in`; nullptr = no gate
  void* out = nullptr;
  Dtype in_dtype = Dtype::Float32;
  Dtype out_dtype = Dtype::Float32;
  int64_t numel = 0;
  double offset = 0.0;
  double scale = 1.0;  // +1 or -1: exact in floating point
  double t_max = 0.0;  // gate threshold
  // Host flag, set to 1 when an `in` element is NaN or inf; nullptr = no check. Only devices
  // with KernelTable::checks_finite_in_prologue (the CPU) take it: there the input check
  // rides on the forward's one read of the spike times instead of a separate pass.
  int32_t* nonfinite = nullptr;
};

// Output laid out as (batch, channels, positions), contiguous.
//   spiking: out = min(t_max - (u + bias), t_max); t_max means no spike, NaN propagates
//   readout: out = u + bias
// bias[c * bias_stride_c + p * bias_stride_p] has out_dtype; nullptr = no bias.
// `out` may alias `u` when both have the same dtype.
struct EpilogueParams {
  const void* u = nullptr;
  const void* bias = nullptr;
  void* out = nullptr;
  Dtype u_dtype = Dtype::Float32;
  Dtype out_dtype = Dtype::Float32;
  int64_t numel = 0;
  int64_t channels = 1;
  int64_t positions = 1;
  int64_t bias_stride_c = 0;
  int64_t bias_stride_p = 0;
  double t_max = 0.0;
  bool spiking = true;
};

// --- the one-pass GEMMs of linear layers with few rows (CPU) -----------------------------------
// With few rows, both weight-sized GEMMs of the backward (grad_in = g W, grad_w = g^T (t_in -
// t_min)) and the forward's GEMM stream W through memory with little arithmetic per element;
// these kernels read each W tile once (cpu/linear_one_pass.h: when they pay).
// All row-major and contiguous; grad_in may be nullptr (no input gradient wanted).
//   grad_in[r, i] = sum_o grad[r, o] * weight[o, i]
//   grad_w[o, i]  = sum_r grad[r, o] * (t_in[r, i] - t_min)
struct LinearOnePassBackwardParams {
  const void* grad = nullptr;    // (rows, out_features): the gated upstream gradient
  const void* t_in = nullptr;    // (rows, in_features): input spike times
  const void* weight = nullptr;  // (out_features, in_features)
  void* grad_in = nullptr;       // (rows, in_features) or nullptr
  void* grad_w = nullptr;        // (out_features, in_features)
  Dtype dtype = Dtype::Float32;  // of every tensor
  int64_t rows = 0;
  int64_t in_features = 0;
  int64_t out_features = 0;
  double t_min = 0.0;
};

// The forward GEMM of the same layers, u[r, o] = sum_i x[r, i] * weight[o, i], reading each
// weight row once, in order, straight from the matrix (a vendor GEMM packs the weight first:
// one more W-sized pass; at few rows the arithmetic is too little to pay for it).
struct LinearOnePassForwardParams {
  const void* x = nullptr;       // (rows, in_features): activations
  const void* weight = nullptr;  // (out_features, in_features)
  void* u = nullptr;             // (rows, out_features)
  Dtype dtype = Dtype::Float32;  // of every tensor
  int64_t rows = 0;
  int64_t in_features = 0;
  int64_t out_features = 0;
};

// --- the event-exact general neuron (first_spike_linear, first_spike_conv2d) ------------------
// A neuron integrates dV/dt = alpha H(t - t_start) + sum_j W_j H(t - t_j) from V(t_start) = 0
// and fires at the first crossing of its threshold. The device-generic code (layers/first_spike.cpp)
// turns dense inputs and conv patches alike into rows: one row per (sample, output position),
// K inputs per row, O outputs (neurons) per row and group. Three kernels run on rows:
//   forward      scan the row's inputs in arrival order, first crossing of each neuron;
//   grad_input   grad_patch[r, k] = sum_o g[r, o] W[o, k] [t'[r, k] < t_out[r, o]];
//   grad_weight  partial[s, o, k] = sum_{r in split s} g[r, o] (t'[r, k] - t_out[r, o]) [t' < t_out],
// with g = dL/dt_out / slope (0 for neurons without a gradient) and t' = max(t_in, t_start).
// Output times may lie on an axis of their own (local time, each window from its start):
// t_out = t - t_origin, with t on the inputs' axis, and t_max (no spike) on the outputs' axis;
// the gradient kernels add t_origin back. Times, weights and parameters share one dtype
// (float32 or float64); the kernels accumulate in float64.

// A device either sorts each row itself (KernelTable::sorts_rows: the CPU, in per-task
// buffers) and reads tau, or is given the rows sorted by at::sort (CUDA: a segmented sort on the device) and reads
// tau_sorted and order. Either way ties keep input order, and +inf (padding) sorts last.
struct FirstSpikeForwardParams {
  const void* tau = nullptr;         // (rows, k) arrivals relative to t_start, unsorted (sorts_rows)
  const void* tau_sorted = nullptr;  // (rows, k) arrivals relative to t_start, ascending; +inf never arrives
  const int64_t* order = nullptr;    // (rows, k) index of each sorted arrival in the row's inputs
  const void* weight_t = nullptr;    // (k, outputs) the weight transposed: a row per input
  const void* alpha = nullptr;       // alpha[(r % param_rows) * param_ld + o]
  const void* threshold = nullptr;   // threshold[(r % param_rows) * param_ld + o]
  void* t_out = nullptr;             // t_out[r * out_ld + o]: spike time - t_origin, t_max if none
  void* slope = nullptr;             // slope[r * out_ld + o]: dV/dt at the spike, 0 without gradient
  Dtype dtype = Dtype::Float32;
  int64_t rows = 0;
  int64_t k = 0;
  int64_t outputs = 0;
  int64_t param_rows = 1;  // 1: per channel; positions: per position (rows are (b, l), l fastest)
  int64_t param_ld = 0;
  int64_t out_ld = 0;
  double t_start = 0.0;   // on the inputs' time axis
  double t_max = 0.0;     // on the outputs' time axis
  double t_origin = 0.0;  // where the outputs' time axis starts on the inputs'
};

struct FirstSpikeGradInputParams {
  const void* grad = nullptr;     // g[r * out_ld + o]
  const void* t_out = nullptr;    // t_out[r * out_ld + o], on the outputs' axis
  const void* t_patch = nullptr;  // (rows, k) max(t_in, t_start) on the inputs' axis, unsorted; +inf never arrives
  const void* weight = nullptr;   // (outputs, k)
  void* grad_patch = nullptr;     // (rows, k)
  Dtype dtype = Dtype::Float32;
  int64_t rows = 0;
  int64_t k = 0;
  int64_t outputs = 0;
  int64_t out_ld = 0;
  double t_origin = 0.0;  // t_out + t_origin is on the inputs' axis
};

struct FirstSpikeGradWeightParams {
  const void* grad = nullptr;     // g[r * out_ld + o]
  const void* t_out = nullptr;    // t_out[r * out_ld + o], on the outputs' axis
  const void* t_patch = nullptr;  // (rows, k) as for grad_input
  double* partial = nullptr;      // (splits, outputs, k); the caller sums over splits (deterministic)
  Dtype dtype = Dtype::Float32;
  int64_t rows = 0;
  int64_t k = 0;
  int64_t outputs = 0;
  int64_t out_ld = 0;
  int64_t splits = 1;  // split s holds rows [s * ceil(rows / splits), (s + 1) * ceil(rows / splits))
  double t_origin = 0.0;  // as for grad_input
};

// --- few-spikes neurons (fs_activation; Stoeckl & Maass) ----------------------------------------
// One K-step neuron per element, parameters h, d, T (K values each) shared by all:
//   v = x; for t < K: z = v > T[t]; y += z ? d[t] : 0; v -= z ? h[t] : 0
// (the inference step order: spike with T(t), emit d(t), then subtract h(t)). y has x's dtype;
// the steps run in x's dtype (float32 for float16/bfloat16 x on CUDA, whose h, d, T are float32).
// NaN x gives NaN y. The per-step regulariser of the fitting loss, where asked for, is
//   m[t] = mean_x max(|v_s(t)| - 1, 0),   v_s(t) = (v(t) - T[t]) / (|v(t)| + 1),
// returned as `partials` rows of K partial sums (double) that the caller adds in a fixed order.
constexpr int kFsMaxSteps = 32;
constexpr const char* kFsDtypeError =
    "unsupported dtypes: x float64 or float32 with h, d, T of its dtype, or float16/bfloat16 with float32 h, d, T";

struct FsForwardParams {
  const void* x = nullptr;
  const void* h = nullptr;  // K values each, in param_dtype
  const void* d = nullptr;
  const void* T = nullptr;
  void* y = nullptr;
  void* spikes = nullptr;          // spike_mode 1: uint8 counts, 2: int32 K-bit masks (bit t: step t); else nullptr
  double* reg_partial = nullptr;   // (partials, K) partial sums of max(|v_s| - 1, 0); nullptr = none
  int32_t* nonfinite = nullptr;    // host flag, set to 1 for a NaN/inf x; nullptr = no check (the CPU only)
  Dtype dtype = Dtype::Float32;    // of x and y
  Dtype param_dtype = Dtype::Float32;
  int64_t numel = 0;
  int64_t partials = 1;            // rows of reg_partial: KernelTable::fs_partials(numel)
  int32_t steps = 0;               // K, 1..kFsMaxSteps
  int32_t spike_mode = 0;
};

// The surrogate backward, recomputing the K steps per element (nothing per step is stored):
// dz/dv_s = max(0, 1 - |v_s|), differentiated through v_s as autograd differentiates the
// reference loop, plus grad_reg[t] / numel * [|v_s| > 1] sign(v_s) from the regulariser.
struct FsBackwardParams {
  const void* grad_y = nullptr;      // x's dtype
  const double* grad_reg = nullptr;  // K values on the device, already divided by numel; nullptr = none
  const void* x = nullptr;
  const void* h = nullptr;
  const void* d = nullptr;
  const void* T = nullptr;
  void* grad_x = nullptr;            // x's dtype; nullptr = not wanted
  double* param_partial = nullptr;   // (partials, 3, K): h, d, T; nullptr = not wanted
  Dtype dtype = Dtype::Float32;
  Dtype param_dtype = Dtype::Float32;
  int64_t numel = 0;
  int64_t partials = 1;
  int32_t steps = 0;
};

using FsForwardFn = const char* (*)(const FsForwardParams&, void* stream);
using FsBackwardFn = const char* (*)(const FsBackwardParams&, void* stream);
using FsPartialsFn = int64_t (*)(int64_t numel);

const char* fs_forward_cpu(const FsForwardParams& p, void* stream);
const char* fs_backward_cpu(const FsBackwardParams& p, void* stream);
int64_t fs_partials_cpu(int64_t numel);
const char* fs_forward_cuda(const FsForwardParams& p, void* stream);
const char* fs_backward_cuda(const FsBackwardParams& p, void* stream);
int64_t fs_partials_cuda(int64_t numel);

// --- the neurons of feedback SNNs (spide_forward_step, spide_backward_step) -------------------
// One time step of a population of IDE/SPIDE neurons (Xiao et al. 2021, 2023), element-wise
// over n neurons, in place on the membrane potential u and the accumulated rate; every tensor
// has n elements in one memory layout (the layer code's) and one dtype (float64 or float32).
//   forward (IF/LIF, binary spikes):
//     v = u + current [+ extra];  s = [v >= v_th];  u = (v - reset s) * leak;
//     rate = leak * rate + s;     out = s [* gate]
//   backward (ternary spikes, the SPIDE neuron couple):
//     v = u + current [* current_gate] [+ inject];
// (the element math: kernels/element_math.h, spide_*). The kernels take every pointer as
// __restrict: check_spide_step refuses arguments that overlap in memory.  k = [v >= v_th] - [v <= -v_th];
//     u = (v - reset k) * leak;  rate = leak * rate + amplitude k;  out = amplitude k [* gate]
// reset is the quantum V_th - u_rest; leak is 1 for IF.
struct SpideStepParams {
  void* u = nullptr;
  void* rate = nullptr;
  const void* current = nullptr;
  const void* current_gate = nullptr;  // backward: the dropout mask of the layer's input, or nullptr
  const void* extra = nullptr;         // forward: a constant input, or nullptr
  const void* inject = nullptr;        // backward: the injected gradient, or nullptr
  const void* gate = nullptr;          // multiplies the output spikes, or nullptr
  void* out = nullptr;
  Dtype dtype = Dtype::Float32;
  int64_t numel = 0;
  double v_th = 1.0;
  double reset = 1.0;
  double amplitude = 1.0;  // backward only
  double leak = 1.0;
};

// --- event-driven products with spike tensors (spike_conv2d) ---------------------------------
// conv2d or conv_transpose2d (groups 1) of a mostly-zero input, by scattering each nonzero
// input element's weight rows: cost proportional to the nonzeros, not to the input's size.
//   input [n, h_in, w_in, c_in] and out [n, h_out, w_out, c_out] (channels last; out: bias or
//   0, plus the sums); weight packed [c_in, kh, kw, c_out] (contiguous);
//   direct:     out[oy, ox] += in[c, iy, ix] w[c, ky, kx] where oy stride - pad + ky dil = iy;
//   transposed: out[oy, ox] += in[c, iy, ix] w[c, ky, kx] where oy = iy stride - pad + ky dil.
struct SpikeConvParams {
  const void* input = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;  // [c_out] or nullptr
  void* out = nullptr;
  Dtype dtype = Dtype::Float32;
  int64_t n = 0, c_in = 0, h_in = 0, w_in = 0, c_out = 0, h_out = 0, w_out = 0;
  int64_t kh = 1, kw = 1;
  int64_t stride[2] = {1, 1}, pad[2] = {0, 0}, dil[2] = {1, 1};
  bool transposed = false;
};

// --- one device's kernels ------------------------------------------------------------------
// Launchers return nullptr on success, else a message (the CUDA error string, or an
// unsupported dtype); the layer code turns it into an exception.
using PrologueFn = const char* (*)(const PrologueParams&, void* stream);
using EpilogueFn = const char* (*)(const EpilogueParams&, void* stream);
using LinearOnePassBackwardFn = const char* (*)(const LinearOnePassBackwardParams&, void* stream);
using LinearOnePassForwardFn = const char* (*)(const LinearOnePassForwardParams&, void* stream);
using OnePassPaysFn = bool (*)(int64_t rows, int64_t weight_bytes);
using FirstSpikeForwardFn = const char* (*)(const FirstSpikeForwardParams&, void* stream);
using FirstSpikeGradInputFn = const char* (*)(const FirstSpikeGradInputParams&, void* stream);
using FirstSpikeGradWeightFn = const char* (*)(const FirstSpikeGradWeightParams&, void* stream);
using SpideStepFn = const char* (*)(const SpideStepParams&, void* stream);
using SpikeConvFn = const char* (*)(const SpikeConvParams&, void* stream);

// Built per call by register.cpp (the stream is the current one).
struct KernelTable {
  PrologueFn prologue;
  EpilogueFn epilogue;
  FirstSpikeForwardFn first_spike_forward;
  FirstSpikeGradInputFn first_spike_grad_input;
  FirstSpikeGradWeightFn first_spike_grad_weight;
  void* stream = nullptr;  // cudaStream_t on CUDA, unused on CPU
  // The one-pass GEMMs and where they pay; nullptr where a device has none (CUDA: its vendor
  // GEMMs have not been measured against them).
  LinearOnePassForwardFn linear_one_pass_forward = nullptr;
  LinearOnePassBackwardFn linear_one_pass_backward = nullptr;
  OnePassPaysFn one_pass_forward_pays = nullptr;
  OnePassPaysFn one_pass_backward_pays = nullptr;
  bool checks_finite_in_prologue = false;  // the prologue honours PrologueParams::nonfinite
  bool sorts_rows = false;                 // first_spike_forward reads tau and sorts each row itself
  // Whether the ops check their data for NaN/inf now (data_checks_enabled: on CUDA only when
  // asked for, since it synchronises the host; never while a CUDA graph is being captured).
  bool checks_data = true;
  // fs_activation (nullptr where a build has none).
  FsForwardFn fs_forward = nullptr;
  FsBackwardFn fs_backward = nullptr;
  FsPartialsFn fs_partials = nullptr;
  // The feedback-SNN neuron steps (register.cpp sets them on every device).
  SpideStepFn spide_forward_step = nullptr;
  SpideStepFn spide_backward_step = nullptr;
  // Event-driven spike products: CPU only (on CUDA the dense cuDNN convolution is the fast one).
  SpikeConvFn spike_conv = nullptr;
};

// Defined in cpu/*_kernel.cpp and cuda/*_kernel.cu.
const char* prologue_cpu(const PrologueParams& p, void* stream);
const char* epilogue_cpu(const EpilogueParams& p, void* stream);
const char* linear_one_pass_backward_cpu(const LinearOnePassBackwardParams& p, void* stream);
const char* linear_one_pass_forward_cpu(const LinearOnePassForwardParams& p, void* stream);
const char* first_spike_forward_cpu(const FirstSpikeForwardParams& p, void* stream);
const char* first_spike_grad_input_cpu(const FirstSpikeGradInputParams& p, void* stream);
const char* first_spike_grad_weight_cpu(const FirstSpikeGradWeightParams& p, void* stream);
const char* prologue_cuda(const PrologueParams& p, void* stream);
const char* epilogue_cuda(const EpilogueParams& p, void* stream);
const char* first_spike_forward_cuda(const FirstSpikeForwardParams& p, void* stream);
const char* first_spike_grad_input_cuda(const FirstSpikeGradInputParams& p, void* stream);
const char* first_spike_grad_weight_cuda(const FirstSpikeGradWeightParams& p, void* stream);
const char* spide_forward_step_cpu(const SpideStepParams& p, void* stream);
const char* spide_backward_step_cpu(const SpideStepParams& p, void* stream);
const char* spike_conv_cpu(const SpikeConvParams& p, void* stream);
const char* spide_forward_step_cuda(const SpideStepParams& p, void* stream);
const char* spide_backward_step_cuda(const SpideStepParams& p, void* stream);

}  // namespace ttfs_ext
