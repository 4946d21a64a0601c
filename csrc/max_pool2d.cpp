// max_pool2d: schemas of the forward and backward ops, and the backward's checks
// (the forward's are pool2d_check).
#include "max_pool2d.h"

#include <torch/library.h>

namespace convext {

Pool2dShape max_pool2d_backward_check(const at::Tensor& grad_output, const at::Tensor& input,
                                      const at::Tensor& indices, at::IntArrayRef kernel_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, bool ceil_mode, const char* op) {
  const Pool2dShape s = pool2d_check(input, kernel_size, stride, padding, dilation, ceil_mode, op);
  check_same_dtype_and_device(grad_output, input, op, "grad_output", "input");
  check_grad_output_size(grad_output, {s.batch, s.channels, s.h.out_size, s.w.out_size}, input, op);
  TORCH_CHECK(indices.scalar_type() == at::kLong, op, ": expected int64 indices, got ",
              indices.scalar_type());
  TORCH_CHECK(indices.device() == input.device(), op,
              ": expected indices on the device of input (", input.device(), "), got ",
              indices.device());
  TORCH_CHECK(indices.sizes() == grad_output.sizes(), op,
              ": expected indices of the size of grad_output ", grad_output.sizes(), ", got ",
              indices.sizes());
  return s;
}

}  // namespace convext

TORCH_LIBRARY_FRAGMENT(convext, m) {
  // indices: flat position in the input's H*W plane of each output's maximum.
  m.def(
      "max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  // The forward's window too: a backward that gathers needs it to find the
  // outputs that can point at an input element.
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor input, Tensor indices, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
}
