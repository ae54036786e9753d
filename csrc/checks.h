// Argument checks shared by every op (layers.cpp, first_spike.cpp): each message names the op
// and the argument. The ops check every tensor they receive, the backward ops included, so
// that a direct call of torch.ops.ttfs_ext.* with a wrong argument raises instead of reading
// out of bounds or handing another device's pointer to a kernel.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>

namespace ttfs_ext {

// lo and hi finite, lo < hi (names as the op's schema spells them).
void check_window(const char* op, const char* lo_name, double lo, const char* hi_name, double hi);
void check_finite(const char* op, const char* name, double value);

// t_in holds spike times: float32 or float64.
void check_time_dtype(const char* op, const at::Tensor& t_in);
// x lives on t_in's device.
void check_device(const char* op, const char* name, const at::Tensor& x, const at::Tensor& t_in);
// x has t_in's dtype and lives on its device.
void check_like(const char* op, const char* name, const at::Tensor& x, const at::Tensor& t_in);
void check_shape(const char* op, const char* name, const at::Tensor& x, at::IntArrayRef expected);

// The geometry of a convolution of t_in (N, C_in, H, W) with weight (C_out, C_in/groups, kH, kW).
struct ConvGeometry {
  std::array<int64_t, 2> stride, padding, dilation;
  int64_t groups, h_out, w_out;
  std::array<int64_t, 4> out_shape;  // (N, C_out, H_out, W_out)
};
// Checks the ranks, channels, groups, stride >= 1, padding >= 0, dilation >= 1 and that the
// kernel fits the padded input.
ConvGeometry check_conv(const char* op, const at::Tensor& t_in, const at::Tensor& weight, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

}  // namespace ttfs_ext
