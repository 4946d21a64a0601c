// avg_pool2d: schemas of the forward and backward ops, and their checks.
#include "avg_pool2d.h"

#include <torch/library.h>

#include <algorithm>

namespace convext {

Pool2dShape avg_pool2d_check(const at::Tensor& input, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode,
                             std::optional<int64_t> divisor_override, const char* op) {
  TORCH_CHECK(!divisor_override.has_value() || *divisor_override != 0, op,
              ": divisor_override must be non-zero");
  const int64_t no_dilation[2] = {1, 1};
  const Pool2dShape s = pool2d_check(input, kernel_size, stride, padding, no_dilation, ceil_mode, op);
  // The divisor multiplies the window's extents, each at most the padded input.
  check_extent(__int128{std::min(s.h.kernel, s.h.in_size + 2 * s.h.pad)} *
                   std::min(s.w.kernel, s.w.in_size + 2 * s.w.pad),
               op, ": the window area (kernel_size, clipped to the padded input)");
  return s;
}

Pool2dShape avg_pool2d_backward_check(const at::Tensor& grad_output, const at::Tensor& input,
                                      at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, bool ceil_mode,
                                      std::optional<int64_t> divisor_override, const char* op) {
  const Pool2dShape s =
      avg_pool2d_check(input, kernel_size, stride, padding, ceil_mode, divisor_override, op);
  check_same_dtype_and_device(grad_output, input, op, "grad_output", "input");
  check_grad_output_size(grad_output, {s.batch, s.channels, s.h.out_size, s.w.out_size}, input, op);
  return s;
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
