// Schemas of every ttfs_ext op. Kernels: cpu/ops_cpu.cpp, cuda/ops_cuda.cpp.
// Fake kernels, autograd and autocast are registered from Python (ttfs_ext/_ops.py).
#include <torch/library.h>

TORCH_LIBRARY(ttfs_ext, m) {
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
}
