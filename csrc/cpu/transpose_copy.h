#pragma once
// Copies between NCHW and NHWC storage by SIMD transposes (isa.h): torch's
// copy_ between the layouts took 1.6-1.8 ms for an 8x144x56x56 tensor here,
// longer than the depthwise convolution on it.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>

#include "../shape.h"
#include "isa.h"
#include "parallel.h"

namespace convext::cpu {

// dst.copy_(src) for (N, C, H, W) views of the same sizes: by transposes when
// one has unit channel stride and the other unit column stride, row by row
// when both have unit column stride (NCHW planes into padded ones), by copy_
// otherwise.
template <typename T>
void copy_into(const KernelsFor<T>& k, const at::Tensor& dst, const at::Tensor& src) {
  const int64_t batch = src.size(0), channels = src.size(1), height = src.size(2), width = src.size(3);
  if (src.numel() == 0) {
    return;
  }
  if (dst.stride(3) == 1 && src.stride(3) == 1) {
    const T* from = src.const_data_ptr<T>();
    T* to = dst.mutable_data_ptr<T>();
    parallel_over(batch * channels, height * width, [&](int64_t plane) {
      const int64_t c = plane % channels, n = plane / channels;
      for (int64_t h = 0; h < height; ++h) {
        std::copy_n(from + n * src.stride(0) + c * src.stride(1) + h * src.stride(2), width,
                    to + n * dst.stride(0) + c * dst.stride(1) + h * dst.stride(2));
      }
    });
    return;
  }
  const bool to_nhwc = dst.stride(1) == 1 && src.stride(3) == 1;
  const bool to_nchw = dst.stride(3) == 1 && src.stride(1) == 1;
  if (channels == 1 || width == 1 || !(to_nhwc || to_nchw)) {
    dst.copy_(src);
    return;
  }
  // Whole planes as one row of pixels when both views allow it.
  const bool planes = src.stride(2) == width * src.stride(3) && dst.stride(2) == width * dst.stride(3);
  const int64_t rows = planes ? 1 : height, pixels = planes ? height * width : width;
  constexpr int64_t kPixelsPerItem = 256;
  const int64_t runs = ceil_div(pixels, kPixelsPerItem);
  const T* from = src.const_data_ptr<T>();
  T* to = dst.mutable_data_ptr<T>();
  parallel_over(batch * rows * runs, kPixelsPerItem * channels, [&](int64_t item) {
    const int64_t run = item % runs, row = item / runs % rows, n = item / (runs * rows);
    const int64_t first = run * kPixelsPerItem, count = std::min(kPixelsPerItem, pixels - first);
    const T* s = from + n * src.stride(0) + row * src.stride(2) + first * src.stride(3);
    T* d = to + n * dst.stride(0) + row * dst.stride(2) + first * dst.stride(3);
    if (to_nhwc) {  // channels x pixels into pixels x channels
      k.transpose(s, src.stride(1), d, dst.stride(3), channels, count);
    } else {
      k.transpose(s, src.stride(3), d, dst.stride(1), count, channels);
    }
  });
}

// t in `format`, copied (by copy_into) only when it is not already.
template <typename T>
at::Tensor in_layout(const KernelsFor<T>& k, const at::Tensor& t, at::MemoryFormat format) {
  if (t.is_contiguous(format)) {
    return t;
  }
  at::Tensor result = at::empty(t.sizes(), t.options().memory_format(format));
  copy_into<T>(k, result, t);
  return result;
}

}  // namespace convext::cpu
