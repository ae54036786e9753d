// The autograd kernel of every backward op: they take no gradient (double backward raises).
#include "autograd/autograd.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ttfs_ext {
namespace {

// Autograd nodes are held by std::shared_ptr up to torch 2.12 and by c10::intrusive_ptr since.
using NodePtr = std::decay_t<decltype(std::declval<const at::Tensor&>().grad_fn())>;

template <typename Ptr = NodePtr>
Ptr make_error_node(std::string message, torch::autograd::edge_list&& edges) {
  if constexpr (std::is_same_v<Ptr, std::shared_ptr<torch::autograd::Node>>) {
    return std::make_shared<torch::autograd::Error>(std::move(message), std::move(edges));
  } else {
    return c10::make_intrusive<torch::autograd::Error>(std::move(message), std::move(edges));
  }
}

// Runs a backward op below autograd; where the caller differentiates through it
// (create_graph=True with inputs that require grad), its outputs get a node that raises.
void no_double_backward_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const auto n_args = schema.arguments().size();
  torch::autograd::edge_list edges;
  bool any_requires_grad = false;
  if (torch::autograd::GradMode::is_enabled()) {
    for (size_t i = stack->size() - n_args; i < stack->size(); ++i) {
      const c10::IValue& v = (*stack)[i];
      if (v.isTensor() && v.toTensor().requires_grad()) any_requires_grad = true;
    }
  }
  if (any_requires_grad) {
    std::vector<at::Tensor> inputs;
    for (size_t i = stack->size() - n_args; i < stack->size(); ++i) {
      if ((*stack)[i].isTensor()) inputs.push_back((*stack)[i].toTensor());
    }
    edges = torch::autograd::collect_next_edges(inputs);
  }
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  }
  if (!any_requires_grad) return;
  const std::string name = schema.name().substr(schema.name().find("::_") + 3);
  const NodePtr node = make_error_node("ttfs_ext: double backward through " + name +
                                           " is not supported (use ttfs_ext.reference for higher-order gradients)",
                                       std::move(edges));
  const auto n_out = schema.returns().size();
  for (size_t i = stack->size() - n_out; i < stack->size(); ++i) {
    at::Tensor t = (*stack)[i].isTensor() ? (*stack)[i].toTensor() : at::Tensor();
    if (t.defined() && t.is_floating_point()) torch::autograd::set_history(t, node);
  }
}

}  // namespace

void impl_no_double_backward(torch::Library& m, const char* op) {
  m.impl(op, torch::CppFunction::makeFromBoxedFunction<&no_double_backward_kernel>());
}

}  // namespace ttfs_ext
