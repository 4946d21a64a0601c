// The SIMD kernels for x86-64 with AVX2 and FMA: 32-byte vectors, 16 registers.
#if defined(__x86_64__)
#pragma GCC target("avx2,fma")
#define CONVEXT_ISA_NAMESPACE convext_isa_avx2
#include "simd_kernels.h"

namespace convext::cpu {

extern constinit const IsaKernels kIsaAvx2 = {
    "avx2",
    convext_isa_avx2::Kernels<float, 32, 16>::table<KernelsFor<float>>(),
    convext_isa_avx2::Kernels<double, 32, 16>::table<KernelsFor<double>>(),
};

}  // namespace convext::cpu
#endif
