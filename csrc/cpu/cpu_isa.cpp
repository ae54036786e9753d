#include "cpu/cpu_isa.h"

#include <atomic>
#include <cstring>

namespace ttfs_ext {
namespace {

std::atomic<int> forced_isa{-1};  // set_cpu_isa(); -1: automatic

}  // namespace

CpuIsa detected_cpu_isa() {
#if TTFS_HAVE_ISA_VARIANTS
  static const CpuIsa isa = __builtin_cpu_supports("x86-64-v4")   ? CpuIsa::V4
                            : __builtin_cpu_supports("x86-64-v3") ? CpuIsa::V3
                                                                  : CpuIsa::Baseline;
  return isa;
#else
  return CpuIsa::Baseline;
#endif
}

CpuIsa cpu_isa() {
  const int forced = forced_isa.load(std::memory_order_relaxed);
  return forced >= 0 ? static_cast<CpuIsa>(forced) : detected_cpu_isa();
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::V4: return "x86-64-v4";
    case CpuIsa::V3: return "x86-64-v3";
    case CpuIsa::Baseline: break;
  }
  return "baseline";
}

bool parse_cpu_isa(const char* name, CpuIsa* isa) {
  for (const CpuIsa candidate : {CpuIsa::V4, CpuIsa::V3, CpuIsa::Baseline}) {
    if (std::strcmp(name, cpu_isa_name(candidate)) == 0) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

const char* set_cpu_isa(const char* name) {
  if (name == nullptr || name[0] == '\0') {
    forced_isa.store(-1);
    return nullptr;
  }
  CpuIsa isa;
  if (!parse_cpu_isa(name, &isa)) return "unknown ISA: expected 'x86-64-v4', 'x86-64-v3', 'baseline' or '' (automatic)";
  if (static_cast<int>(isa) > static_cast<int>(detected_cpu_isa())) return "this CPU cannot run that ISA's code";
  forced_isa.store(static_cast<int>(isa));
  return nullptr;
}

}  // namespace ttfs_ext
