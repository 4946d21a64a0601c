// avg_pool2d: schemas of the forward and backward ops, and their checks.
#include "avg_pool2d.h"

#include <torch/library.h>

namespace convext {

Pool2dShape avg_pool2d_check(const at::Tensor& input, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode,
                             std::optional<int64_t> divisor_override, const char* op) {
  TORCH_CHECK(!divisor_override.has_value() || *divisor_override != 0, op,
              ": divisor_override must be non-zero");
  const int64_t no_dilation[2] = {1, 1};
  return pool2d_check(input, kernel_size, stride, padding, no_dilation, ceil_mode, op);
}

}  // namespace convext

TORCH_LIBRARY_FRAGMENT(convext, m) {
  m.def(
      "avg_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
      "bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");
  m.def(
      "avg_pool2d_backward(Tensor grad_output, Tensor input, int[2] kernel_size, int[2] stride, "
      "int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");
}
