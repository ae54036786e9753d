// Autocast of the B1 layers (autocast/<op>.cpp), as torchvision's autocast kernels: on every
// device the matrix operand (weight) takes the autocast dtype, so the GEMM/convolution runs in it
// (accumulating in float32) as the ReLU twin's does, and the prologue writes the activations that
// feed it in that dtype; spike times and bias stay float32 at layer boundaries; float64 calls are
// left alone. (Until 0.1 the CPU ran every operand in float32: a bfloat16 VGG16 step then took
// 1.4x its twin's; benchmarks/results/places365_train_*.json.) at::autocast::cached_cast keeps
// one cast of a leaf weight per autocast region.
#pragma once

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include "layers/checks.h"

#include <optional>
#include <tuple>

namespace ttfs_ext {

struct AutocastOperands {
  at::Tensor t_in, weight;
  std::optional<at::Tensor> bias;
};

template <c10::DeviceType device>
AutocastOperands autocast_operands(const at::Tensor& t_in, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  if (t_in.scalar_type() == at::kDouble) return {t_in, weight, bias};
  const auto matrix_dtype = at::autocast::get_autocast_dtype(device);
  return {at::autocast::cached_cast(at::kFloat, t_in, device),
          at::autocast::cached_cast(matrix_dtype, weight, device),
          at::autocast::cached_cast(at::kFloat, bias, device)};
}

// Below autocast for the rest of the call.
using NoAutocast = c10::impl::ExcludeDispatchKeyGuard;
template <c10::DeviceType device>
constexpr c10::DispatchKey kAutocastKey =
    device == c10::DeviceType::CUDA ? c10::DispatchKey::AutocastCUDA : c10::DispatchKey::AutocastCPU;

}  // namespace ttfs_ext
