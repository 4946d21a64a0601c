#pragma once
// Argument checks shared by the ops. Every op validates its arguments once, at
// its entry, and each message names the op, the argument and the sizes.
#include <ATen/core/Tensor.h>

#include "shape.h"

namespace convext {

void check_rank(const at::Tensor& t, int64_t rank, const char* op, const char* arg,
                const char* layout);
// The dtypes the ops take: float32 and float64 kernels; float16 and bfloat16
// compute in float32 (see cpu/widen.h).
void check_supported_dtype(const at::Tensor& t, const char* op, const char* arg);
void check_same_dtype_and_device(const at::Tensor& t, const at::Tensor& like,
                                 const char* op, const char* arg, const char* like_arg);
// Window values from the caller and the sizes derived from them (padded input,
// dilated kernel, transposed output) stay at or below kMaxExtent: a sum of
// three of them still fits in int64, so no kernel's index arithmetic can
// overflow. Derived sizes are computed in 128 bits and checked.
constexpr int64_t kMaxExtent = int64_t{1} << 61;

// A pair of window parameters, each in [min_value, kMaxExtent].
void check_pair(at::IntArrayRef values, int64_t min_value, const char* op, const char* arg);

// A size derived from the caller's arguments, checked against kMaxExtent; the
// message pieces say what it is (joined only when the check fails).
template <typename... Message>
int64_t check_extent(__int128 size, const Message&... message) {
  TORCH_CHECK(size <= kMaxExtent, message..., " is more than 2^61");
  return static_cast<int64_t>(size);
}

// The span of a dilated kernel along `axis` ("height" or "width"), checked.
int64_t kernel_span(int64_t kernel, int64_t dilation, const char* op, const char* axis);

// One axis of a window: the input padded on both sides and the dilated
// kernel's span, each checked against kMaxExtent.
struct AxisExtents {
  int64_t padded, kernel;
};
AxisExtents axis_extents(int64_t in, int64_t kernel, int64_t pad, int64_t dilation, const char* op,
                         const char* axis);
// grad_output has the size of the forward output from input.
void check_grad_output_size(const at::Tensor& grad_output, at::IntArrayRef expected,
                            const at::Tensor& input, const char* op);

// Pooling shape rules shared by max_pool2d and avg_pool2d (avg passes dilation 1).
Pool2dShape pool2d_check(const at::Tensor& input, at::IntArrayRef kernel_size,
                         at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef dilation, bool ceil_mode, const char* op);

// Outputs follow the input's layout: channels_last in, channels_last out.
at::Tensor empty_like_layout(at::IntArrayRef sizes, const at::Tensor& like,
                             at::MemoryFormat format, at::ScalarType dtype);

}  // namespace convext
