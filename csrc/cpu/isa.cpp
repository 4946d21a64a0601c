// Chooses the SIMD kernels: the best the CPU supports, unless CONVEXT_CPU_ISA names one.
#include "isa.h"

#include <c10/util/Exception.h>

#include <cstdint>
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

int64_t env_bytes(const char* name, int64_t fallback, bool zero_allowed) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') {
    return fallback;
  }
  char* end = nullptr;
  const long long bytes = std::strtoll(text, &end, 10);
  TORCH_CHECK(*end == '\0' && (zero_allowed ? bytes >= 0 : bytes > 0), name, "=", text,
              zero_allowed ? ": expected a number of bytes, 0 or more" : ": expected a positive number of bytes");
  return bytes;
}

// The threshold: the depthwise channels_last forward of 8 x 144 @40 (7.4 MB of
// output) took 1.26 ms with plain stores and 0.77-0.83 with streaming ones
// (three rounds); @28 (3.6 MB) 0.33-0.48 and 0.30-0.43, within the noise.
bool streaming_stores(const void* output, int64_t elements, int64_t step, int64_t lanes, int64_t element_size) {
  const int64_t threshold = env_bytes("CONVEXT_CPU_STREAM_BYTES", int64_t{4} << 20, true);
  return elements * element_size >= threshold &&
         reinterpret_cast<std::uintptr_t>(output) % (lanes * element_size) == 0 && step % lanes == 0;
}

}  // namespace convext::cpu
