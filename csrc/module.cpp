// The importable extension module ttfs_ext._C. Importing it loads this library, whose
// static initialisers register the ops; the module itself only reports how it was built.
#include <pybind11/pybind11.h>

#include "cpu/cpu_isa.h"
#include "cpu/linear_one_pass.h"
#include "layers/checks.h"

#if TTFS_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "ttfs_ext compiled ops (registered under torch.ops.ttfs_ext)";
  m.def("build_info", [] {
    py::dict info;
    info["version"] = TTFS_VERSION;
    info["torch_version"] = TTFS_TORCH_VERSION;
    info["with_cuda"] = static_cast<bool>(TTFS_WITH_CUDA);
    // "cpu", "cpu-with-cuda-torch" (CPU kernels only, against a CUDA build of torch) or "cuda",
    // and why CMake decided so.
    info["build"] = TTFS_BUILD_KIND;
    info["build_reason"] = TTFS_BUILD_REASON;
    info["cpu_isa"] = ttfs_ext::cpu_isa_name(ttfs_ext::cpu_isa());
    info["cpu_isa_detected"] = ttfs_ext::cpu_isa_name(ttfs_ext::detected_cpu_isa());
    info["cpu_parallel"] = ttfs_ext::cpu_parallel_backend();
    py::dict one_pass;  // where the CPU linear layers take the one-pass kernels
    one_pass["enabled"] = ttfs_ext::linear_one_pass_enabled();
    one_pass["isa"] = ttfs_ext::linear_one_pass_isa();
    one_pass["min_rows"] = ttfs_ext::kOnePassMinRows;
    one_pass["max_rows"] = ttfs_ext::kOnePassMaxRows;  // backward
    one_pass["forward_max_rows"] = ttfs_ext::linear_one_pass_forward_max_rows();
    one_pass["min_weight_bytes"] = ttfs_ext::kOnePassMinWeightBytes;
    info["cpu_dense_one_pass"] = one_pass;
#if TTFS_WITH_CUDA
    info["cuda_version"] = py::str(std::to_string(CUDART_VERSION / 1000) + "." +
                                   std::to_string((CUDART_VERSION % 1000) / 10));
    info["cuda_arch_list"] = TTFS_CUDA_ARCH_LIST;
#else
    info["cuda_version"] = py::none();
    info["cuda_arch_list"] = py::none();
#endif
    return info;
  }, "How this library was built: version, torch version, build kind and why, CUDA version and architectures, the instruction set of the CPU loops, how the CPU kernels run in parallel, and where the CPU linear layers take the one-pass kernels.");
  m.def("_set_input_checks", &ttfs_ext::set_input_checks,
        "Set by ttfs_ext.set_input_checks: whether the ops check their data for NaN/inf.");
  m.def("_input_checks_enabled", &ttfs_ext::input_checks_enabled);
  m.def("_set_cuda_input_checks", &ttfs_ext::set_cuda_input_checks,
        "Set by ttfs_ext.set_input_checks(cuda=...): whether the data checks also run on CUDA, where "
        "each synchronises the host.");
  m.def("_cuda_input_checks_enabled", &ttfs_ext::cuda_input_checks_enabled);
  m.def("_set_cpu_kernel_profile", [](const std::string& name) {
    if (!ttfs_ext::set_cpu_kernel_profile(name)) {
      throw py::value_error("ttfs_ext: the CPU kernel profile must be 'cpu' or 'cuda', got '" + name + "'");
    }
  }, "For tests: drive the CPU kernels as the CUDA device drives its own ('cuda': its KernelTable "
     "flags, dtype rules and data-check rule) or as the CPU does ('cpu', the default).");
  m.def("_cpu_kernel_profile", &ttfs_ext::cpu_kernel_profile);
  m.def("_set_cpu_isa", [](const std::string& name) {
    const char* err = ttfs_ext::set_cpu_isa(name.c_str());
    if (err != nullptr) throw py::value_error(std::string("ttfs_ext: ") + err);
  }, "For tests and measurements: run every CPU loop in one ISA's code ('x86-64-v4', "
     "'x86-64-v3', 'baseline'; any this CPU can run), or '' for automatic (the best it can).");
  m.def("_set_one_pass_isa", [](const std::string& name) {
    const char* err = ttfs_ext::set_linear_one_pass_isa(name.c_str());
    if (err != nullptr) throw py::value_error(std::string("ttfs_ext: ") + err);
  }, "For tests and measurements: run the CPU one-pass linear kernels with one ISA's code "
     "('x86-64-v4', 'x86-64-v3', 'baseline'; used even with 'baseline'), or '' for automatic.");
}
