// Shared by the autograd kernels (autograd/<op>.cpp), registered in C++ as torchvision does:
// each forward op's Function saves what its backward op (called through the dispatcher, so
// torch.compile traces both) needs.
#pragma once

#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <vector>

namespace ttfs_ext {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Edges follow the tensor arguments; an absent bias has none.
inline std::array<bool, 3> layer_mask(AutogradContext* ctx, bool has_bias) {
  return {ctx->needs_input_grad(0), ctx->needs_input_grad(1), has_bias && ctx->needs_input_grad(2)};
}

inline std::array<bool, 4> neuron_mask(AutogradContext* ctx) {
  return {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2), ctx->needs_input_grad(3)};
}

// The convolution geometry, kept for the backward.
struct Geometry {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
};

inline void save_geometry(AutogradContext* ctx, c10::IntArrayRef stride, c10::IntArrayRef padding,
                          c10::IntArrayRef dilation, int64_t groups) {
  ctx->saved_data["stride"] = stride;
  ctx->saved_data["padding"] = padding;
  ctx->saved_data["dilation"] = dilation;
  ctx->saved_data["groups"] = groups;
}

inline Geometry saved_geometry(AutogradContext* ctx) {
  auto& d = ctx->saved_data;
  return {d["stride"].toIntVector(), d["padding"].toIntVector(), d["dilation"].toIntVector(), d["groups"].toInt()};
}

// Registers the autograd kernel of a backward op: it runs the op below autograd and, where the
// caller differentiates through it (create_graph=True), gives its outputs a node that raises.
void impl_no_double_backward(torch::Library& m, const char* op);

}  // namespace ttfs_ext
