// Autocast of the B1 layers on CUDA (autocast/<op>.cpp), as torchvision's autocast kernels:
// the matrix operand (weight) takes the autocast dtype (the GEMM/convolution accumulates in
// float32); spike times and bias stay float32 at layer boundaries; float64 calls are left alone.
// at::autocast::cached_cast keeps one cast of a leaf weight per autocast region.
#pragma once

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <optional>
#include <tuple>

namespace ttfs_ext {

struct AutocastOperands {
  at::Tensor t_in, weight;
  std::optional<at::Tensor> bias;
};

inline AutocastOperands autocast_operands(const at::Tensor& t_in, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias) {
  if (t_in.scalar_type() == at::kDouble) return {t_in, weight, bias};
  constexpr auto cuda = c10::DeviceType::CUDA;
  return {at::autocast::cached_cast(at::kFloat, t_in, cuda),
          at::autocast::cached_cast(at::autocast::get_autocast_dtype(cuda), weight, cuda),
          at::autocast::cached_cast(at::kFloat, bias, cuda)};
}

// Below autocast for the rest of the call.
using NoAutocast = c10::impl::ExcludeDispatchKeyGuard;
constexpr auto kAutocastKey = c10::DispatchKey::AutocastCUDA;

}  // namespace ttfs_ext
