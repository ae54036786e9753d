// The kernels of every op, written once over a device's KernelTable and bound to CPU and, in
// CUDA builds, CUDA: each kernel guards the device, builds the table (the current stream) and
// runs the device-generic layer code (layers/layers.h).
#include <torch/library.h>

#include <tuple>

#include "cpu/linear_one_pass.h"
#include "kernels/params.h"
#include "layers/layers.h"

#if TTFS_WITH_CUDA
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ttfs_ext {
namespace {

struct Cpu {
  struct Guard {
    explicit Guard(const at::Tensor&) {}
  };
  static KernelTable table() {
    KernelTable k{prologue_cpu, epilogue_cpu, first_spike_forward_cpu, first_spike_grad_input_cpu,
                  first_spike_grad_weight_cpu};
    if (linear_one_pass_enabled()) {  // not with SSE2 code (cpu/linear_one_pass.h)
      k.linear_one_pass_forward = linear_one_pass_forward_cpu;
      k.linear_one_pass_backward = linear_one_pass_backward_cpu;
      k.one_pass_forward_pays = linear_one_pass_forward_pays;
      k.one_pass_backward_pays = linear_one_pass_pays;
    }
    k.checks_finite_in_prologue = true;
    k.sums_spans_in_prologue = true;
    k.sorts_rows = true;
    k.fs_forward = fs_forward_cpu;
    k.fs_backward = fs_backward_cpu;
    k.fs_partials = fs_partials_cpu;
    k.spide_forward_step = spide_forward_step_cpu;
    k.spide_backward_step = spide_backward_step_cpu;
    k.spike_conv = spike_conv_cpu;
    return k;
  }
};

#if TTFS_WITH_CUDA
struct Cuda {
  // The dispatcher sends a call here when any tensor argument is on CUDA; the device guard
  // needs t_in there (the checks then name any other argument on another device).
  struct Guard {
    explicit Guard(const at::Tensor& t_in) : guard(device_of(t_in)) {}
    static c10::Device device_of(const at::Tensor& t_in) {
      TORCH_CHECK_VALUE(t_in.is_cuda(), "ttfs_ext: t_in is on ", t_in.device(),
                        " but another argument is on CUDA: all tensors must be on one device");
      return t_in.device();
    }
    c10::cuda::CUDAGuard guard;
  };
  static KernelTable table() {
    KernelTable k{prologue_cuda, epilogue_cuda, first_spike_forward_cuda, first_spike_grad_input_cuda,
                  first_spike_grad_weight_cuda};
    k.stream = static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream());
    k.can_sync = c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
    k.fs_forward = fs_forward_cuda;
    k.fs_backward = fs_backward_cuda;
    k.fs_partials = fs_partials_cuda;
    k.spide_forward_step = spide_forward_step_cuda;
    k.spide_backward_step = spide_backward_step_cuda;
    return k;
  }
};
#endif

// The kernel of one op on Device: Layer(table, args...), with t_in the argument at TIn.
template <class Device, typename Fn, Fn* Layer, size_t TIn>
struct Kernel;

template <class Device, typename R, typename... Args, R (*Layer)(const KernelTable&, Args...), size_t TIn>
struct Kernel<Device, R(const KernelTable&, Args...), Layer, TIn> {
  static R call(Args... args) {
    const typename Device::Guard guard(std::get<TIn>(std::forward_as_tuple(args...)));
    return Layer(Device::table(), args...);
  }
};

#define TTFS_KERNEL(op, layer, t_in_index) \
  m.impl(op, &Kernel<Device, decltype(layer), &layer, t_in_index>::call)

template <class Device>
void register_kernels(torch::Library& m) {
  TTFS_KERNEL("linear", linear_forward, 0);
  TTFS_KERNEL("_linear_backward", linear_backward, 1);
  TTFS_KERNEL("readout", readout_forward, 0);
  TTFS_KERNEL("_readout_backward", readout_backward, 1);
  TTFS_KERNEL("conv2d", conv2d_forward, 0);
  TTFS_KERNEL("_conv2d_backward", conv2d_backward, 1);
  TTFS_KERNEL("first_spike_linear", first_spike_linear_forward, 0);
  TTFS_KERNEL("_first_spike_linear_backward", first_spike_linear_backward, 1);
  TTFS_KERNEL("first_spike_conv2d", first_spike_conv2d_forward, 0);
  TTFS_KERNEL("_first_spike_conv2d_backward", first_spike_conv2d_backward, 1);
  TTFS_KERNEL("fs_activation", fs_activation_forward, 0);
  TTFS_KERNEL("_fs_activation_backward", fs_activation_backward, 2);
  TTFS_KERNEL("spide_forward_step", spide_forward_step_impl, 0);
  TTFS_KERNEL("spide_backward_step", spide_backward_step_impl, 0);
  TTFS_KERNEL("spike_conv2d", spike_conv2d_impl, 0);
}

#undef TTFS_KERNEL

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, CPU, m) { register_kernels<Cpu>(m); }

#if TTFS_WITH_CUDA
TORCH_LIBRARY_IMPL(ttfs_ext, CUDA, m) { register_kernels<Cuda>(m); }
#endif

}  // namespace ttfs_ext
