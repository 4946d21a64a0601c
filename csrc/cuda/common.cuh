#pragma once
// What the CUDA kernels share: 4-D tensors as (pointer, sizes, strides) with
// 64-bit indexing, so any layout (contiguous, channels_last, sliced) is read in
// place; grid-stride launches on the current stream, checked after each launch.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "../shape.h"

// float16 and bfloat16 are loaded and stored as themselves and summed in float.
#define CONVEXT_DISPATCH_CUDA_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

namespace convext::cuda {

template <typename T>
struct Tensor4 {
  T* data;
  int64_t size[4];
  int64_t stride[4];

  __device__ T& operator()(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return data[n * stride[0] + c * stride[1] + h * stride[2] + w * stride[3]];
  }
};

template <typename T>
Tensor4<T> view4(const at::Tensor& t) {
  Tensor4<T> v{const_cast<T*>(t.const_data_ptr<T>()), {}, {}};
  for (int d = 0; d < 4; ++d) {
    v.size[d] = t.size(d);
    v.stride[d] = t.stride(d);
  }
  return v;
}

// Element i of an (N, C, H, W) tensor in memory order: NCHW, or NHWC when
// channels_last, so that consecutive threads touch consecutive addresses.
struct Coords {
  int64_t n, c, h, w;
};

__device__ inline Coords coords_of(int64_t i, const int64_t size[4], bool channels_last) {
  Coords p;
  if (channels_last) {
    p.c = i % size[1];
    i /= size[1];
    p.w = i % size[3];
    i /= size[3];
    p.h = i % size[2];
    p.n = i / size[2];
  } else {
    p.w = i % size[3];
    i /= size[3];
    p.h = i % size[2];
    i /= size[2];
    p.c = i % size[1];
    p.n = i / size[1];
  }
  return p;
}

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over `count` items; the loop covers the rest.
inline unsigned int blocks_for(int64_t count) {
  return static_cast<unsigned int>(std::clamp<int64_t>(ceil_div(count, kThreads), 1, int64_t{1} << 20));
}

#define CONVEXT_GRID_STRIDE_LOOP(i, count)                                                  \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (count); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

inline cudaStream_t stream() { return at::cuda::getCurrentCUDAStream(); }

inline bool channels_last(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

}  // namespace convext::cuda
