// The SIMD kernels for any CPU: 16-byte vectors, which the compiler lowers to
// the baseline instruction set (SSE2 on x86-64, NEON on Arm) or to scalars.
#define CONVEXT_ISA_NAMESPACE convext_isa_generic
#include "simd_kernels.h"

namespace convext::cpu {

extern constinit const IsaKernels kIsaGeneric = {
    "generic",
    convext_isa_generic::Kernels<float, 16, 16>::table<KernelsFor<float>>(),
    convext_isa_generic::Kernels<double, 16, 16>::table<KernelsFor<double>>(),
};

}  // namespace convext::cpu
