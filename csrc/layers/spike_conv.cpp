// spike_conv2d (kernels/params.h, SpikeConvParams): checks, then the device's kernel, which
// reads and writes channels-last memory (the axpy runs over contiguous channels).
#include "layers/checks.h"
#include "layers/layers.h"

namespace ttfs_ext {

at::Tensor spike_conv2d_impl(const KernelTable& k, const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, bool transposed, at::IntArrayRef output_size) {
  const char* op = "ttfs_ext.spike_conv2d";
  check_spike_conv2d(op, input, weight, bias, stride, padding, dilation, transposed, output_size);
  TORCH_CHECK_NOT_IMPLEMENTED(k.spike_conv != nullptr, op, ": no kernel on ", input.device(),
                              " (event-driven products are a CPU kernel; on CUDA use the dense convolution)");
  const at::Tensor in = input.contiguous(at::MemoryFormat::ChannelsLast), w = weight.contiguous();
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  at::Tensor out = at::empty({input.size(0), weight.size(3), output_size[0], output_size[1]},
                             input.options().memory_format(at::MemoryFormat::ChannelsLast));
  SpikeConvParams p;
  p.input = in.const_data_ptr();
  p.weight = w.const_data_ptr();
  p.bias = b.defined() ? b.const_data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.dtype = to_dtype(input.scalar_type());
  p.n = in.size(0);
  p.c_in = in.size(1);
  p.h_in = in.size(2);
  p.w_in = in.size(3);
  p.kh = w.size(1);
  p.kw = w.size(2);
  p.c_out = w.size(3);
  p.h_out = output_size[0];
  p.w_out = output_size[1];
  for (int i = 0; i < 2; ++i) {
    p.stride[i] = stride[i];
    p.pad[i] = padding[i];
    p.dil[i] = dilation[i];
  }
  p.transposed = transposed;
  check_launch(k.spike_conv(p, k.stream), "spike_conv2d");
  return out;
}

}  // namespace ttfs_ext
