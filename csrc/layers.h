// Device-generic TTFS layer ops: one vendor GEMM/convolution between two element-wise
// passes, which come from the device's ElementwiseBackend (cpu/ or cuda/).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "elementwise.h"

namespace ttfs_ext {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;  // (t_in, weight, bias)

// t_out = min(t_max - (W (t_min - t_in) + b), t_max); t_in (..., in), weight (out, in).
at::Tensor dense_forward(const ElementwiseBackend& be, const at::Tensor& t_in, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, double t_min, double t_max);
Grads dense_backward(const ElementwiseBackend& be, const at::Tensor& grad_out, const at::Tensor& t_in,
                     const at::Tensor& weight, const at::Tensor& t_out, double t_min, double t_max,
                     std::array<bool, 3> output_mask);

// V = W (t_min - t_in) + b: the membrane potential of a non-spiking layer at t_min.
at::Tensor readout_forward(const ElementwiseBackend& be, const at::Tensor& t_in, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, double t_min);
Grads readout_backward(const ElementwiseBackend& be, const at::Tensor& grad_out, const at::Tensor& t_in,
                       const at::Tensor& weight, double t_min, std::array<bool, 3> output_mask);

// The dense form with a convolution; padding holds t_min (activation 0). bias is (C_out,)
// or per output position (C_out, H_out, W_out).
at::Tensor conv2d_forward(const ElementwiseBackend& be, const at::Tensor& t_in, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, double t_min, double t_max,
                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                          int64_t groups);
Grads conv2d_backward(const ElementwiseBackend& be, const at::Tensor& grad_out, const at::Tensor& t_in,
                      const at::Tensor& weight, const at::Tensor& t_out, double t_min, double t_max,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                      int64_t groups, bool bias_per_position, std::array<bool, 3> output_mask);

}  // namespace ttfs_ext
