// Schemas of every ttfs_ext op. Kernels: cpu/ops_cpu.cpp, cuda/ops_cuda.cpp.
// Fake kernels, autograd and autocast are registered from Python (ttfs_ext/_ops.py).
#include <torch/library.h>

TORCH_LIBRARY(ttfs_ext, m) {
  // The B1 layers. t_min is the end of the input window on the inputs' time axis, t_max the end
  // of the layer's window on the outputs': with one absolute axis, the window [t_min, t_max];
  // in local time (each window measured from its start), the input width and the layer's width.
  m.def("dense(Tensor t_in, Tensor weight, Tensor? bias, float t_min, float t_max) -> Tensor");
  m.def(
      "_dense_backward(Tensor grad_out, Tensor t_in, Tensor weight, Tensor t_out, float t_min, "
      "float t_max, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def("readout(Tensor t_in, Tensor weight, Tensor? bias, float t_min) -> Tensor");
  m.def(
      "_readout_backward(Tensor grad_out, Tensor t_in, Tensor weight, float t_min, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "conv2d(Tensor t_in, Tensor weight, Tensor? bias, float t_min, float t_max, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups) -> Tensor");
  m.def(
      "_conv2d_backward(Tensor grad_out, Tensor t_in, Tensor weight, Tensor t_out, float t_min, "
      "float t_max, int[2] stride, int[2] padding, int[2] dilation, int groups, bool bias_per_position, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // The event-exact general neuron. The forward ops also return the slope dV/dt at each spike
  // (0 where a neuron has no gradient) for their backward. t_start lies on the inputs' time
  // axis, the outputs and t_max (no spike) on the outputs' axis, which starts at t_origin on the
  // inputs' (0: one axis; local time: the input width). `workspace` bounds the elements of the
  // im2col/sort buffers of one chunk of the conv batch (a knob for tests).
  m.def(
      "first_spike_dense(Tensor t_in, Tensor weight, Tensor alpha, Tensor threshold, float t_start, "
      "float t_max, float t_origin=0.0) -> (Tensor, Tensor)");
  m.def(
      "_first_spike_dense_backward(Tensor grad_out, Tensor t_in, Tensor weight, Tensor t_out, Tensor slope, "
      "float t_start, float t_origin, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "first_spike_conv2d(Tensor t_in, Tensor weight, Tensor alpha, Tensor threshold, float t_start, "
      "float t_max, int[2] stride, int[2] padding, int[2] dilation, int groups, int workspace=8388608, "
      "float t_origin=0.0) -> (Tensor, Tensor)");
  m.def(
      "_first_spike_conv2d_backward(Tensor grad_out, Tensor t_in, Tensor weight, Tensor t_out, Tensor slope, "
      "float t_start, float t_origin, int[2] stride, int[2] padding, int[2] dilation, int groups, "
      "bool alpha_per_position, bool threshold_per_position, bool[4] output_mask, int workspace=8388608) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}
