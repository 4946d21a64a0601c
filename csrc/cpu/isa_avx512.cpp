// The SIMD kernels for x86-64 with AVX-512: 64-byte vectors, 32 registers.
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define CONVEXT_ISA_NAMESPACE convext_isa_avx512
#include "simd_kernels.h"

namespace convext::cpu {

extern constinit const IsaKernels kIsaAvx512 = {
    "avx512",
    convext_isa_avx512::Kernels<float, 64, 32>::table<KernelsFor<float>>(),
    convext_isa_avx512::Kernels<double, 64, 32>::table<KernelsFor<double>>(),
};

}  // namespace convext::cpu
#endif
