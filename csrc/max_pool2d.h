#pragma once
#include "checks.h"

namespace convext {

// Validates max_pool2d_backward's tensors against each other and returns the
// size of the input plane that the indices point into.
int64_t max_pool2d_backward_check(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& indices, const char* op);

}  // namespace convext
