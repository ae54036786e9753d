// Device-generic ops of the event-exact general neuron: sorting, im2col, groups and the
// parameter reductions in ATen, the scans and gradient sums from the device's
// FirstSpikeBackend (cpu/ or cuda/). The kernels' structs live in first_spike.h, which nvcc
// compiles without ATen; this header is for the C++ side only.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>

#include "first_spike.h"

namespace ttfs_ext {

// (t_in, weight, alpha, threshold)
using FirstSpikeGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// t_in (R, N), weight (O, N), alpha and threshold (O,). Returns (t_out, slope), both (R, O);
// slope is dV/dt at the spike for neurons with a gradient, else 0. t_start is on the inputs' time
// axis; t_out, the spike time minus t_origin, and t_max (no spike) on the outputs' axis.
std::tuple<at::Tensor, at::Tensor> first_spike_dense_forward(const FirstSpikeBackend& be, const at::Tensor& t_in,
                                                             const at::Tensor& weight, const at::Tensor& alpha,
                                                             const at::Tensor& threshold, double t_start,
                                                             double t_max, double t_origin);
FirstSpikeGrads first_spike_dense_backward(const FirstSpikeBackend& be, const at::Tensor& grad_out,
                                           const at::Tensor& t_in, const at::Tensor& weight,
                                           const at::Tensor& t_out, const at::Tensor& slope, double t_start,
                                           double t_origin, std::array<bool, 4> output_mask);

// t_in (B, C_in, H, W), weight (C_out, C_in/groups, kH, kW); alpha and threshold each (C_out,)
// or (C_out, H_out, W_out). Padding never arrives. The batch runs in chunks whose patch
// matrix has at most `workspace` elements (at least one sample per chunk; the schema's
// default is 1 << 23).
std::tuple<at::Tensor, at::Tensor> first_spike_conv2d_forward(
    const FirstSpikeBackend& be, const at::Tensor& t_in, const at::Tensor& weight, const at::Tensor& alpha,
    const at::Tensor& threshold, double t_start, double t_max, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t workspace, double t_origin);
FirstSpikeGrads first_spike_conv2d_backward(const FirstSpikeBackend& be, const at::Tensor& grad_out,
                                            const at::Tensor& t_in, const at::Tensor& weight,
                                            const at::Tensor& t_out, const at::Tensor& slope, double t_start,
                                            double t_origin, at::IntArrayRef stride, at::IntArrayRef padding,
                                            at::IntArrayRef dilation, int64_t groups, bool alpha_per_position,
                                            bool threshold_per_position, std::array<bool, 4> output_mask,
                                            int64_t workspace);

}  // namespace ttfs_ext
