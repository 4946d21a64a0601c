#pragma once
#include <optional>

#include "checks.h"

namespace convext {

// Validates a conv2d call and returns its shape. Shared by the forward and the
// backward ops of every backend.
Conv2dShape conv2d_check(const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                         const char* op);

// conv2d_check for a backward op, plus grad_output against the forward's output.
Conv2dShape conv2d_backward_check(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& weight, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups, const char* op);

// Validates a conv_transpose2d call (weight (in_channels, out_channels / groups,
// kh, kw)) and returns the shape of the convolution whose input gradient it
// is: that convolution's input is the result, its output this input.
Conv2dShape conv_transpose2d_check(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef output_padding, int64_t groups,
                                   at::IntArrayRef dilation, const char* op);

// torch's rule: channels_last when either the input or the weight is, but
// float64 on CUDA.
at::MemoryFormat conv2d_memory_format(const at::Tensor& input, const at::Tensor& weight);

}  // namespace convext
