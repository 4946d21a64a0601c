// max_pool2d: schemas of the forward and backward ops, and the backward's checks
// (the forward's are pool2d_check).
#include "max_pool2d.h"

#include <torch/library.h>

namespace convext {

int64_t max_pool2d_backward_check(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& indices, const char* op) {
  check_rank(input, 4, op, "input", "(N, C, H, W)");
  check_rank(grad_output, 4, op, "grad_output", "(N, C, out_h, out_w)");
  check_supported_dtype(input, op, "input");
  check_same_dtype_and_device(grad_output, input, op, "grad_output", "input");
  TORCH_CHECK(indices.scalar_type() == at::kLong, op, ": expected int64 indices, got ",
              indices.scalar_type());
  TORCH_CHECK(indices.device() == input.device(), op,
              ": expected indices on the device of input (", input.device(), "), got ",
              indices.device());
  TORCH_CHECK(indices.sizes() == grad_output.sizes(), op,
              ": expected indices of the size of grad_output ", grad_output.sizes(), ", got ",
              indices.sizes());
  TORCH_CHECK(grad_output.size(0) == input.size(0) && grad_output.size(1) == input.size(1),
              op, ": grad_output of size ", grad_output.sizes(),
              " does not match the batch and channels of input of size ", input.sizes());
  return input.size(2) * input.size(3);
}

}  // namespace convext

TORCH_LIBRARY_FRAGMENT(convext, m) {
  // indices: flat position in the input's H*W plane of each output's maximum.
  m.def(
      "max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  m.def("max_pool2d_backward(Tensor grad_output, Tensor input, Tensor indices) -> Tensor");
}
