// How ops/<op>.cpp define an op: its schema, a typed entry point (ttfs_ext.h) through the
// dispatcher, and a check-only twin "_<op>_check" (the op's arguments, no result, no kernel of
// its own: CompositeImplicitAutograd, so one function serves every device). The twin runs the
// op's argument checks (layers/checks.h) for the reference path and the fake kernels
// (python/ttfs_ext/functional.py), so that they raise what the kernels raise.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>

namespace ttfs_ext {

inline std::string check_op_name(const std::string& op) {
  return "_" + op.substr(op.find_first_not_of('_')) + "_check";
}

// Defines `op(args) -> returns` and `_<op>_check(args) -> ()`.
inline void def_op(torch::Library& m, const std::string& op, const std::string& args, const std::string& returns) {
  m.def(torch::schema((op + args + " -> " + returns).c_str()));
  m.def(torch::schema((check_op_name(op) + args + " -> ()").c_str()));
}

template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* qualified_name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(qualified_name, "").typed<Signature>();
}

}  // namespace ttfs_ext
