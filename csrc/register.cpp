// The kernels of every op, written once over a device's KernelTable and bound to CPU and, in
// CUDA builds, CUDA: each kernel guards the device, builds the table (the current stream) and
// runs the device-generic layer code (layers/layers.h).
#include <torch/library.h>

#include <tuple>

#include "cpu/linear_one_pass.h"
#include "kernels/params.h"
#include "layers/checks.h"
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
    Guard(const at::Tensor&, const char*) {}
  };
  static KernelTable table() {
    KernelTable k{prologue_cpu, epilogue_cpu, first_spike_forward_cpu, first_spike_grad_input_cpu,
                  first_spike_grad_weight_cpu};
    // The CUDA-like profile of the tests (layers/checks.h) keeps the CUDA table's flags and
    // leaves out what CUDA has not: every branch the CUDA path takes then runs on the CPU.
    const bool cuda_like = cpu_runs_cuda_profile();
    if (linear_one_pass_enabled() && !cuda_like) {  // not with SSE2 code (cpu/linear_one_pass.h)
      k.linear_one_pass_forward = linear_one_pass_forward_cpu;
      k.linear_one_pass_backward = linear_one_pass_backward_cpu;
      k.one_pass_forward_pays = linear_one_pass_forward_pays;
      k.one_pass_backward_pays = linear_one_pass_pays;
    }
    k.checks_finite_in_prologue = !cuda_like;
    k.sorts_rows = !cuda_like;
    k.checks_data = data_checks_enabled(c10::Device(c10::kCPU));
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
  // needs the op's first tensor there (the checks then name any other argument on another
  // device). `name` is that argument's name in the op's schema.
  struct Guard {
    Guard(const at::Tensor& first, const char* name) : guard(device_of(first, name)) {}
    static c10::Device device_of(const at::Tensor& first, const char* name) {
      TORCH_CHECK_VALUE(first.is_cuda(), "ttfs_ext: ", name, " is on ", first.device(),
                        " but another argument is on CUDA: all tensors must be on one device");
      return first.device();
    }
    c10::cuda::CUDAGuard guard;
  };
  static KernelTable table() {
    KernelTable k{prologue_cuda, epilogue_cuda, first_spike_forward_cuda, first_spike_grad_input_cuda,
                  first_spike_grad_weight_cuda};
    k.stream = static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream());
    k.checks_data = data_checks_enabled(c10::Device(c10::kCUDA)) &&
                    c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
    k.fs_forward = fs_forward_cuda;
    k.fs_backward = fs_backward_cuda;
    k.fs_partials = fs_partials_cuda;
    k.spide_forward_step = spide_forward_step_cuda;
    k.spide_backward_step = spide_backward_step_cuda;
    return k;
  }
};
#endif

// The kernel of one op on Device: Layer(table, args...), with the device taken from the
// argument at First (named *Name in the schema).
template <class Device, typename Fn, Fn* Layer, size_t First, const char* const* Name>
struct Kernel;

template <class Device, typename R, typename... Args, R (*Layer)(const KernelTable&, Args...), size_t First,
          const char* const* Name>
struct Kernel<Device, R(const KernelTable&, Args...), Layer, First, Name> {
  static R call(Args... args) {
    const typename Device::Guard guard(std::get<First>(std::forward_as_tuple(args...)), *Name);
    return Layer(Device::table(), args...);
  }
};

// The first tensor argument of each op, by its schema name.
constexpr const char* kTIn = "t_in";
constexpr const char* kGradOut = "grad_out";
constexpr const char* kX = "x";
constexpr const char* kGradY = "grad_y";
constexpr const char* kU = "u";
constexpr const char* kInput = "input";

#define TTFS_KERNEL(op, layer, index, name) \
  m.impl(op, &Kernel<Device, decltype(layer), &layer, index, &name>::call)

template <class Device>
void register_kernels(torch::Library& m) {
  TTFS_KERNEL("linear", linear_forward, 0, kTIn);
  TTFS_KERNEL("_linear_backward", linear_backward, 1, kTIn);
  TTFS_KERNEL("readout", readout_forward, 0, kTIn);
  TTFS_KERNEL("_readout_backward", readout_backward, 1, kTIn);
  TTFS_KERNEL("conv2d", conv2d_forward, 0, kTIn);
  TTFS_KERNEL("_conv2d_backward", conv2d_backward, 1, kTIn);
  TTFS_KERNEL("first_spike_linear", first_spike_linear_forward, 0, kTIn);
  TTFS_KERNEL("_first_spike_linear_backward", first_spike_linear_backward, 1, kTIn);
  TTFS_KERNEL("first_spike_conv2d", first_spike_conv2d_forward, 0, kTIn);
  TTFS_KERNEL("_first_spike_conv2d_backward", first_spike_conv2d_backward, 1, kTIn);
  TTFS_KERNEL("fs_activation", fs_activation_forward, 0, kX);
  TTFS_KERNEL("_fs_activation_backward", fs_activation_backward, 2, kX);
  TTFS_KERNEL("spide_forward_step", spide_forward_step_impl, 0, kU);
  TTFS_KERNEL("spide_backward_step", spide_backward_step_impl, 0, kU);
  TTFS_KERNEL("spike_conv2d", spike_conv2d_impl, 0, kInput);
}

#undef TTFS_KERNEL

}  // namespace

TORCH_LIBRARY_IMPL(ttfs_ext, CPU, m) { register_kernels<Cpu>(m); }

#if TTFS_WITH_CUDA
TORCH_LIBRARY_IMPL(ttfs_ext, CUDA, m) { register_kernels<Cuda>(m); }
#endif

}  // namespace ttfs_ext
