// spike_conv2d: conv2d or conv_transpose2d of a spike tensor (mostly zeros), event-driven: the
// work is proportional to the nonzero inputs (kernels/params.h, SpikeConvParams). The weight
// comes packed [c_in, kh, kw, c_out] (python: ttfs_ext.functional.spike_conv_weight), once per
// simulation rather than once per step. Not differentiable: the feedback SNNs (ttfs_ext.spide)
// run it inside their simulations, without a graph. CPU only.
#include "ops/schema.h"
#include "layers/checks.h"
#include "ttfs_ext.h"

namespace ttfs_ext {

at::Tensor spike_conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
                        at::IntArrayRef output_size) {
  static const auto op = op_handle<decltype(spike_conv2d)>("ttfs_ext::spike_conv2d");
  return op.call(input, weight, bias, stride, padding, dilation, transposed, output_size);
}

namespace {

void spike_conv2d_check(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
                        at::IntArrayRef output_size) {
  check_spike_conv2d("ttfs_ext.spike_conv2d", input, weight, bias, stride, padding, dilation, transposed,
                     output_size);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ttfs_ext, m) {
  def_op(m, "spike_conv2d",
         "(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, "
         "bool transposed, int[2] output_size)",
         "Tensor");
}

TORCH_LIBRARY_IMPL(ttfs_ext, CompositeImplicitAutograd, m) { m.impl("_spike_conv2d_check", &spike_conv2d_check); }

}  // namespace ttfs_ext
