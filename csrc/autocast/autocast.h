// Autocast of the B1 layers (autocast/<op>.cpp), as torchvision's autocast kernels. On CUDA the
// matrix operand (weight) takes the autocast dtype (the GEMM/convolution accumulates in float32);
// on the CPU, whose kernels compute in float32 and float64 only, every operand is float32 (the
// op's inner convolution would otherwise be cast to bfloat16 by AutocastCPU). Spike times and bias
// stay float32 at layer boundaries; float64 calls are left alone. The CPU under the CUDA-like
// kernel profile of the tests (layers/checks.h) takes CUDA's rule. at::autocast::cached_cast keeps
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
  const bool cuda = device == c10::DeviceType::CUDA || cpu_runs_cuda_profile();
  const auto matrix_dtype = cuda ? at::autocast::get_autocast_dtype(device) : at::kFloat;
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
