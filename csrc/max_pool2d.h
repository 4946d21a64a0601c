#pragma once
#include "checks.h"

namespace convext {

// Validates a max_pool2d_backward call (the forward's window and its
// grad_output and indices) and returns the forward's shape.
Pool2dShape max_pool2d_backward_check(const at::Tensor& grad_output, const at::Tensor& input,
                                      const at::Tensor& indices, at::IntArrayRef kernel_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, bool ceil_mode, const char* op);

}  // namespace convext
