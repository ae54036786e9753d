// The event-exact general neuron, device-generic: the sort (or not: KernelTable::sorts_rows),
// im2col with +inf padding, groups, batch chunks and the parameter reductions in ATen; the
// scans and gradient sums from the device's kernels (kernels/params.h).
#include "layers/checks.h"
#include "layers/layers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

namespace ttfs_ext {
namespace {

Dtype kernel_dtype(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? Dtype::Float64 : Dtype::Float32; }

void check_neuron_launch(const char* err, const char* what) {
  TORCH_CHECK(err == nullptr, "ttfs_ext: first_spike ", what, " kernel failed: ", err == nullptr ? "" : err);
}

// The data check of the forward's tensors: a read of its own on every device.
void check_data(const char* op, const KernelTable& kt,
                std::initializer_list<std::pair<const char*, const at::Tensor&>> xs) {
  if (!kt.checks_data) return;
  for (const auto& [name, x] : xs) check_finite_data(op, name, x);
}

// --- the kernels on rows ---------------------------------------------------------------

// dL/dt_out over dV/dt at the spike; 0 where a neuron has no gradient (slope 0).
at::Tensor grad_over_slope(const at::Tensor& grad_out, const at::Tensor& slope) {
  return at::where(slope > 0, grad_out / slope, 0.0).contiguous(conv_memory_format(slope));
}

// Sorts the relative arrivals tau (rows, K), here or in the kernel (kt.sorts_rows), and scans
// them. weight_t (K, O) contiguous; alpha, threshold (param_rows, O) and t_out, slope (rows, O)
// are row-major views whose rows may be longer than O (a group's columns).
void scan_rows(const KernelTable& kt, const at::Tensor& tau, const at::Tensor& weight_t,
               const at::Tensor& alpha, const at::Tensor& threshold, const at::Tensor& t_out,
               const at::Tensor& slope, double t_start, double t_max, double t_origin) {
  FirstSpikeForwardParams p;
  const at::Tensor t = tau.contiguous();
  at::Tensor sorted, order;  // only for a backend that does not sort rows itself
  if (kt.sorts_rows) {
    p.tau = t.const_data_ptr();
  } else {
    std::tie(sorted, order) = at::sort(t, /*stable=*/true, /*dim=*/1, /*descending=*/false);
    sorted = sorted.contiguous();
    order = order.contiguous();
    p.tau_sorted = sorted.const_data_ptr();
    p.order = order.const_data_ptr<int64_t>();
  }
  p.weight_t = weight_t.const_data_ptr();
  p.alpha = alpha.const_data_ptr();
  p.threshold = threshold.const_data_ptr();
  p.t_out = t_out.data_ptr();
  p.slope = slope.data_ptr();
  p.dtype = kernel_dtype(tau);
  p.rows = tau.size(0);
  p.k = tau.size(1);
  p.outputs = weight_t.size(1);
  p.param_rows = alpha.size(0);
  p.param_ld = alpha.stride(0);
  p.out_ld = t_out.stride(0);
  p.t_start = t_start;
  p.t_max = t_max;
  p.t_origin = t_origin;
  check_neuron_launch(kt.first_spike_forward(p, kt.stream), "forward");
}

// grad (rows, k) of the patches t_patch (rows, K) through weight (O, K); g and t_out are
// (rows, O) row-major views.
at::Tensor grad_patch_rows(const KernelTable& kt, const at::Tensor& g, const at::Tensor& t_out,
                           const at::Tensor& t_patch, const at::Tensor& weight, double t_origin) {
  at::Tensor grad_patch = at::empty(t_patch.sizes(), t_patch.options());
  FirstSpikeGradInputParams p;
  p.grad = g.const_data_ptr();
  p.t_out = t_out.const_data_ptr();
  p.t_patch = t_patch.const_data_ptr();
  p.weight = weight.const_data_ptr();
  p.grad_patch = grad_patch.data_ptr();
  p.dtype = kernel_dtype(t_patch);
  p.rows = t_patch.size(0);
  p.k = t_patch.size(1);
  p.outputs = weight.size(0);
  p.out_ld = g.stride(0);
  p.t_origin = t_origin;
  check_neuron_launch(kt.first_spike_grad_input(p, kt.stream), "grad_input");
  return grad_patch;
}

// dL/dW (O, K) in float64 from partial sums over splits of the rows: enough splits to keep
// the device busy, few enough that the partials stay small.
at::Tensor grad_weight_rows(const KernelTable& kt, const at::Tensor& g, const at::Tensor& t_out,
                            const at::Tensor& t_patch, int64_t outputs, double t_origin) {
  constexpr int64_t kRowsPerSplit = 256, kMaxPartial = int64_t(1) << 20;
  const int64_t rows = t_patch.size(0), k = t_patch.size(1);
  const int64_t by_rows = (rows + kRowsPerSplit - 1) / kRowsPerSplit;
  const int64_t by_memory = kMaxPartial / std::max<int64_t>(1, outputs * k);
  const int64_t splits = std::max<int64_t>(1, std::min(by_rows, by_memory));
  at::Tensor partial = at::empty({splits, outputs, k}, t_patch.options().dtype(at::kDouble));
  FirstSpikeGradWeightParams p;
  p.grad = g.const_data_ptr();
  p.t_out = t_out.const_data_ptr();
  p.t_patch = t_patch.const_data_ptr();
  p.partial = partial.data_ptr<double>();
  p.dtype = kernel_dtype(t_patch);
  p.rows = rows;
  p.k = k;
  p.outputs = outputs;
  p.out_ld = g.stride(0);
  p.splits = splits;
  p.t_origin = t_origin;
  check_neuron_launch(kt.first_spike_grad_weight(p, kt.stream), "grad_weight");
  return partial.sum(0);
}

}  // namespace

// --- linear --------------------------------------------------------------------------------

TensorPair first_spike_linear_forward(const KernelTable& kt, const at::Tensor& t_in, const at::Tensor& weight,
                                      const at::Tensor& alpha, const at::Tensor& threshold, double t_start,
                                      double t_max, double t_origin) {
  const char* op = "ttfs_ext.first_spike_linear";
  check_first_spike_linear(op, t_in, weight, alpha, threshold, t_start, t_max, t_origin);
  check_data(op, kt, {{"t_in", t_in}, {"weight", weight}, {"alpha", alpha}, {"threshold", threshold}});
  const int64_t rows = t_in.size(0), out_f = weight.size(0);
  at::Tensor t_out = at::empty({rows, out_f}, t_in.options());
  at::Tensor slope = at::empty({rows, out_f}, t_in.options());
  const at::Tensor tau = (t_in.contiguous() - t_start).clamp_min_(0.0);  // inputs before t_start act from it
  scan_rows(kt, tau, weight.t().contiguous(), alpha.contiguous().view({1, out_f}),
            threshold.contiguous().view({1, out_f}), t_out, slope, t_start, t_max, t_origin);
  return {t_out, slope};
}

Grads4 first_spike_linear_backward(const KernelTable& kt, const at::Tensor& grad_out, const at::Tensor& t_in,
                                   const at::Tensor& weight, const at::Tensor& t_out, const at::Tensor& slope,
                                   double t_start, double t_origin, std::array<bool, 4> mask) {
  check_first_spike_linear_backward("ttfs_ext.first_spike_linear backward", grad_out, t_in, weight, t_out, slope,
                                    t_start, t_origin);
  const at::Tensor g = grad_over_slope(grad_out, slope);
  const at::Tensor t_o = t_out.contiguous();
  at::Tensor g_in, g_w, g_alpha, g_theta;
  if (mask[0] || mask[1]) {
    const at::Tensor t = t_in.contiguous();
    const at::Tensor t_arrive = t.clamp_min(t_start);
    if (mask[0]) {
      g_in = grad_patch_rows(kt, g, t_o, t_arrive, weight.contiguous(), t_origin);
      g_in.masked_fill_(t < t_start, 0.0);  // held at t_start: no gradient; at t_start: arrives (reference.clamp)
    }
    if (mask[1]) g_w = grad_weight_rows(kt, g, t_o, t_arrive, weight.size(0), t_origin).to(weight.scalar_type());
  }
  // dt/dalpha = (t_start - t) / B, t on the inputs' axis: t_out + t_origin.
  if (mask[2]) g_alpha = (g * (t_o - (t_start - t_origin))).sum(0).neg_();
  if (mask[3]) g_theta = g.sum(0);
  return {g_in, g_w, g_alpha, g_theta};
}

// --- conv2d --------------------------------------------------------------------------------

namespace {

struct ConvShape {
  int64_t batch, c_in, height, width, c_out, kh, kw, h_out, w_out, positions;
  int64_t groups, k_group, o_group;
  int64_t chunk;  // samples per chunk of the batch
  std::array<int64_t, 2> stride, padding, dilation;
};

ConvShape conv_shape(const ConvGeometry& g, const at::Tensor& t_in, const at::Tensor& weight, int64_t workspace) {
  ConvShape c;
  c.stride = g.stride;
  c.padding = g.padding;
  c.dilation = g.dilation;
  c.batch = t_in.size(0);
  c.c_in = t_in.size(1);
  c.height = t_in.size(2);
  c.width = t_in.size(3);
  c.c_out = weight.size(0);
  c.kh = weight.size(2);
  c.kw = weight.size(3);
  c.h_out = g.h_out;
  c.w_out = g.w_out;
  c.positions = c.h_out * c.w_out;
  c.groups = g.groups;
  c.k_group = weight.size(1) * c.kh * c.kw;
  c.o_group = c.c_out / g.groups;
  c.chunk = std::max<int64_t>(1, workspace / std::max<int64_t>(1, c.c_in * c.kh * c.kw * c.positions));
  return c;
}

// alpha and threshold as row-major (param_rows, C_out): (1, C_out) when both are per channel,
// else (positions, C_out) with a per-channel one broadcast over the positions.
std::pair<at::Tensor, at::Tensor> neuron_params(const ConvShape& c, const at::Tensor& alpha,
                                                const at::Tensor& threshold) {
  const bool per_position = alpha.dim() == 3 || threshold.dim() == 3;
  const int64_t rows = per_position ? c.positions : 1;
  auto layout = [&](const at::Tensor& x) {
    return (x.dim() == 1 ? x.view({1, c.c_out}) : x.reshape({c.c_out, c.positions}).t()).expand({rows, c.c_out})
        .contiguous();
  };
  return {layout(alpha), layout(threshold)};
}

// Patches (n, C_in*kH*kW, positions) of x (n, C_in, H, W), padded with +inf: never arrives.
at::Tensor patches(const ConvShape& c, const at::Tensor& x) {
  const at::Tensor padded = at::constant_pad_nd(
      x, {c.padding[1], c.padding[1], c.padding[0], c.padding[0]}, std::numeric_limits<double>::infinity());
  return at::im2col(padded, {c.kh, c.kw}, c.dilation, {0, 0}, c.stride);
}

// Group g's rows (n * positions, K_group), contiguous, of patches (n, K_total, positions).
at::Tensor group_rows(const ConvShape& c, const at::Tensor& cols, int64_t g) {
  return cols.narrow(1, g * c.k_group, c.k_group).transpose(1, 2).reshape({-1, c.k_group}).contiguous();
}

// (B, C_out, H_out, W_out) <-> rows (B * positions, C_out): the rows are NHWC memory, so a
// channels_last tensor is its rows without a copy, either way.
at::Tensor to_rows(const ConvShape& c, const at::Tensor& x) {
  return x.permute({0, 2, 3, 1}).reshape({-1, c.c_out}).contiguous();
}
at::Tensor from_rows(const ConvShape& c, const at::Tensor& x, at::MemoryFormat fmt) {
  const at::Tensor nhwc = x.view({c.batch, c.h_out, c.w_out, c.c_out}).permute({0, 3, 1, 2});
  return fmt == at::MemoryFormat::ChannelsLast ? nhwc : nhwc.contiguous();
}

}  // namespace

TensorPair first_spike_conv2d_forward(const KernelTable& kt, const at::Tensor& t_in, const at::Tensor& weight,
                                      const at::Tensor& alpha, const at::Tensor& threshold, double t_start,
                                      double t_max, at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups, int64_t workspace, double t_origin) {
  const char* op = "ttfs_ext.first_spike_conv2d";
  const ConvShape c = conv_shape(check_first_spike_conv2d(op, t_in, weight, alpha, threshold, t_start, t_max, stride,
                                                          padding, dilation, groups, workspace, t_origin),
                                 t_in, weight, workspace);
  check_data(op, kt, {{"t_in", t_in}, {"weight", weight}, {"alpha", alpha}, {"threshold", threshold}});
  const auto [alpha_rows, theta_rows] = neuron_params(c, alpha, threshold);
  // Per group, the weight transposed to (K_group, O_group): a row per input.
  const at::Tensor weight_t = weight.reshape({groups, c.o_group, c.k_group}).transpose(1, 2).contiguous();
  at::Tensor t_out = at::empty({c.batch * c.positions, c.c_out}, t_in.options());
  at::Tensor slope = at::empty({c.batch * c.positions, c.c_out}, t_in.options());
  const at::Tensor t = t_in.contiguous();
  for (int64_t b0 = 0; b0 < c.batch; b0 += c.chunk) {
    const int64_t n = std::min(c.chunk, c.batch - b0);
    // A chunk starts at a sample, so that row r of the chunk is at position r % positions.
    const at::Tensor cols = patches(c, (t.narrow(0, b0, n) - t_start).clamp_min_(0.0));
    const int64_t r0 = b0 * c.positions, rows = n * c.positions;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t o0 = g * c.o_group;
      scan_rows(kt, group_rows(c, cols, g), weight_t[g], alpha_rows.narrow(1, o0, c.o_group),
                theta_rows.narrow(1, o0, c.o_group), t_out.narrow(0, r0, rows).narrow(1, o0, c.o_group),
                slope.narrow(0, r0, rows).narrow(1, o0, c.o_group), t_start, t_max, t_origin);
    }
  }
  // The outputs keep the input's memory format (conv_memory_format), as conv2d's.
  const at::MemoryFormat fmt = conv_memory_format(t_in);
  return {from_rows(c, t_out, fmt), from_rows(c, slope, fmt)};
}

Grads4 first_spike_conv2d_backward(const KernelTable& kt, const at::Tensor& grad_out, const at::Tensor& t_in,
                                   const at::Tensor& weight, const at::Tensor& t_out, const at::Tensor& slope,
                                   double t_start, double t_origin, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, int64_t groups, bool alpha_per_position,
                                   bool threshold_per_position, std::array<bool, 4> mask, int64_t workspace) {
  const ConvShape c = conv_shape(check_first_spike_conv2d_backward("ttfs_ext.first_spike_conv2d backward", grad_out,
                                                                   t_in, weight, t_out, slope, t_start, t_origin,
                                                                   stride, padding, dilation, groups, workspace),
                                 t_in, weight, workspace);
  const at::Tensor g = grad_over_slope(grad_out, slope);
  at::Tensor g_in, g_w, g_alpha, g_theta;
  // Per position: sum over the batch; per channel: over the batch and the positions.
  auto reduce = [](const at::Tensor& x, bool per_position) {
    return per_position ? x.sum(0).contiguous() : x.sum(at::IntArrayRef{0, 2, 3});
  };
  if (mask[2]) g_alpha = reduce(g * (t_out - (t_start - t_origin)), alpha_per_position).neg_();
  if (mask[3]) g_theta = reduce(g, threshold_per_position);
  if (!mask[0] && !mask[1]) return {g_in, g_w, g_alpha, g_theta};

  const at::Tensor g_rows = to_rows(c, g), t_out_rows = to_rows(c, t_out);
  const at::Tensor weight_rows = weight.reshape({groups, c.o_group, c.k_group}).contiguous();
  const at::Tensor t = t_in.contiguous();
  at::Tensor w_acc = mask[1] ? at::zeros({groups, c.o_group, c.k_group}, t.options().dtype(at::kDouble)) : at::Tensor();
  if (mask[0]) g_in = at::empty(t.sizes(), t.options());
  for (int64_t b0 = 0; b0 < c.batch; b0 += c.chunk) {
    const int64_t n = std::min(c.chunk, c.batch - b0);
    const at::Tensor cols = patches(c, t.narrow(0, b0, n).clamp_min(t_start));  // t' = max(t_in, t_start)
    at::Tensor grad_cols = mask[0] ? at::empty(cols.sizes(), cols.options()) : at::Tensor();
    const int64_t r0 = b0 * c.positions, rows = n * c.positions;
    for (int64_t grp = 0; grp < groups; ++grp) {
      const at::Tensor t_patch = group_rows(c, cols, grp);
      const at::Tensor g_grp = g_rows.narrow(0, r0, rows).narrow(1, grp * c.o_group, c.o_group);
      const at::Tensor t_out_grp = t_out_rows.narrow(0, r0, rows).narrow(1, grp * c.o_group, c.o_group);
      if (mask[0]) {
        const at::Tensor grad_patch = grad_patch_rows(kt, g_grp, t_out_grp, t_patch, weight_rows[grp], t_origin);
        grad_cols.narrow(1, grp * c.k_group, c.k_group).copy_(grad_patch.view({n, c.positions, c.k_group}).transpose(1, 2));
      }
      if (mask[1]) w_acc[grp].add_(grad_weight_rows(kt, g_grp, t_out_grp, t_patch, c.o_group, t_origin));
    }
    if (mask[0]) {
      g_in.narrow(0, b0, n).copy_(at::col2im(grad_cols, {c.height, c.width}, {c.kh, c.kw}, c.dilation, c.padding,
                                             c.stride));
    }
  }
  if (mask[0]) {
    g_in.masked_fill_(t < t_start, 0.0);  // held at t_start: no gradient; at t_start: arrives (reference.clamp)
    g_in = g_in.contiguous(conv_memory_format(t_in));  // each gradient in its tensor's layout (as conv2d)
  }
  if (mask[1]) g_w = w_acc.view(weight.sizes()).to(weight.scalar_type()).contiguous(conv_memory_format(weight));
  return {g_in, g_w, g_alpha, g_theta};
}

}  // namespace ttfs_ext
