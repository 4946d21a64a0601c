#pragma once
#include <optional>

#include "checks.h"

namespace convext {

// Validates an avg_pool2d call (forward or backward) and returns its shape.
Pool2dShape avg_pool2d_check(const at::Tensor& input, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode,
                             std::optional<int64_t> divisor_override, const char* op);

// avg_pool2d_check, plus grad_output against the forward's output.
Pool2dShape avg_pool2d_backward_check(const at::Tensor& grad_output, const at::Tensor& input,
                                      at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, bool ceil_mode,
                                      std::optional<int64_t> divisor_override, const char* op);

}  // namespace convext
