#pragma once
// NCHW-indexed access to a 4-D tensor in any memory layout (contiguous,
// channels_last, or a strided slice), so kernels never need a layout copy.
#include <ATen/core/Tensor.h>

#include "shape.h"

namespace convext {

template <typename T>
struct Nchw {
  T* data;
  int64_t stride_n, stride_c, stride_h, stride_w;

  CONVEXT_HOST_DEVICE T& operator()(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return data[n * stride_n + c * stride_c + h * stride_h + w * stride_w];
  }
};

template <typename T>
Nchw<const T> read_view(const at::Tensor& t) {
  return {t.const_data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

template <typename T>
Nchw<T> write_view(const at::Tensor& t) {
  return {t.mutable_data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

}  // namespace convext
