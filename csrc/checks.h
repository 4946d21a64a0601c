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
// A pair of window parameters, each >= min_value.
void check_pair(at::IntArrayRef values, int64_t min_value, const char* op, const char* arg);
void check_grad_output_size(const at::Tensor& grad_output, at::IntArrayRef expected,
                            const char* op);

// Pooling shape rules shared by max_pool2d and avg_pool2d (avg passes dilation 1).
Pool2dShape pool2d_check(const at::Tensor& input, at::IntArrayRef kernel_size,
                         at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef dilation, bool ceil_mode, const char* op);

// Outputs follow the input's layout: channels_last in, channels_last out.
at::Tensor empty_like_layout(at::IntArrayRef sizes, const at::Tensor& like,
                             at::MemoryFormat format, at::ScalarType dtype);

}  // namespace convext
