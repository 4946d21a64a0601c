// Chooses the SIMD kernels: the best the CPU supports, unless CONVEXT_CPU_ISA names one.
#include "isa.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace convext::cpu {

extern const IsaKernels kIsaGeneric;
#if defined(__x86_64__)
extern const IsaKernels kIsaAvx2;
extern const IsaKernels kIsaAvx512;
#endif

namespace {

bool supported(const IsaKernels& isa) {
#if defined(__x86_64__)
  if (&isa == &kIsaAvx512) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  }
  if (&isa == &kIsaAvx2) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
#endif
  return true;
}

const IsaKernels* const kAllIsas[] = {
#if defined(__x86_64__)
    &kIsaAvx512, &kIsaAvx2,
#endif
    &kIsaGeneric,
};

}  // namespace

const IsaKernels& active_isa() {
  const char* wanted = std::getenv("CONVEXT_CPU_ISA");
  for (const IsaKernels* isa : kAllIsas) {
    if (wanted == nullptr || *wanted == '\0') {
      if (supported(*isa)) {
        return *isa;
      }
    } else if (std::string(wanted) == isa->name) {
      TORCH_CHECK(supported(*isa), "CONVEXT_CPU_ISA=", wanted, ": this CPU does not support it");
      return *isa;
    }
  }
  TORCH_CHECK(false, "CONVEXT_CPU_ISA=", wanted, ": unknown; use generic, avx2 or avx512");
}

}  // namespace convext::cpu
