// The GPU's copy bandwidth probe for the benchmark: a grid-stride copy of
// 16-byte words, the widest a thread loads in one instruction, the ceiling
// against which pooling's GB/s is measured.
#include <torch/library.h>

#include "common.cuh"

namespace convext::cuda {
namespace {

__global__ void stream_copy_kernel(const int4* src, int4* dst, int64_t words) {
  CONVEXT_GRID_STRIDE_LOOP(i, words) { dst[i] = src[i]; }
}

void stream_copy(at::Tensor& dst, const at::Tensor& src) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % sizeof(int4) == 0; };
  TORCH_CHECK(dst.is_contiguous() && src.is_contiguous() && dst.nbytes() == src.nbytes() &&
                  src.nbytes() % sizeof(int4) == 0 && aligned(dst.data_ptr()) && aligned(src.const_data_ptr()) &&
                  dst.device() == src.device(),
              "convext._stream_copy: expected 16-byte aligned contiguous tensors of the same size "
              "(a multiple of 16 bytes) on one device");
  const c10::cuda::CUDAGuard guard(src.device());
  const auto words = static_cast<int64_t>(src.nbytes() / sizeof(int4));
  stream_copy_kernel<<<blocks_for(words), kThreads, 0, stream()>>>(
      static_cast<const int4*>(src.const_data_ptr()), static_cast<int4*>(dst.data_ptr()), words);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace
}  // namespace convext::cuda

TORCH_LIBRARY_IMPL(convext, CUDA, m) { m.impl("_stream_copy", &convext::cuda::stream_copy); }
