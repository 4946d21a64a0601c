#include "checks.h"

#include <ATen/ops/empty.h>

namespace convext {

void check_rank(const at::Tensor& t, int64_t rank, const char* op, const char* arg,
                const char* layout) {
  TORCH_CHECK(t.dim() == rank, op, ": expected ", arg, " to be ", rank, "-D ", layout,
              ", got ", t.dim(), "-D ", arg, " of size ", t.sizes());
}

void check_supported_dtype(const at::Tensor& t, const char* op, const char* arg) {
  const auto dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              op, ": ", arg, " has unsupported dtype ", dtype,
              "; supported: float32, float64, float16, bfloat16");
}

void check_same_dtype_and_device(const at::Tensor& t, const at::Tensor& like,
                                 const char* op, const char* arg, const char* like_arg) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": expected ", arg,
              " to have the dtype of ", like_arg, " (", like.scalar_type(), "), got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": expected ", arg, " on the device of ",
              like_arg, " (", like.device(), "), got ", t.device());
}

void check_pair(at::IntArrayRef values, int64_t min_value, const char* op, const char* arg) {
  TORCH_CHECK(values.size() == 2, op, ": expected ", arg, " to have 2 values (h, w), got ",
              values);
  TORCH_CHECK(values[0] >= min_value && values[1] >= min_value, op, ": ", arg,
              " must be ", (min_value > 0 ? "positive" : "non-negative"), ", got ", values);
  TORCH_CHECK(values[0] <= kMaxExtent && values[1] <= kMaxExtent, op, ": ", arg,
              " must be at most 2^61, got ", values);
}

int64_t kernel_span(int64_t kernel, int64_t dilation, const char* op, const char* axis) {
  return check_extent(__int128{dilation} * (kernel - 1) + 1, op, ": the kernel ", axis,
                      " times the dilation");
}

AxisExtents axis_extents(int64_t in, int64_t kernel, int64_t pad, int64_t dilation, const char* op,
                         const char* axis) {
  return {check_extent(__int128{in} + 2 * __int128{pad}, op, ": the input ", axis, " with its padding"),
          kernel_span(kernel, dilation, op, axis)};
}

void check_grad_output_size(const at::Tensor& grad_output, at::IntArrayRef expected,
                            const at::Tensor& input, const char* op) {
  TORCH_CHECK(grad_output.sizes() == expected, op, ": expected grad_output of size ",
              expected, " for input of size ", input.sizes(), ", got ", grad_output.sizes());
}

Pool2dShape pool2d_check(const at::Tensor& input, at::IntArrayRef kernel_size,
                         at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef dilation, bool ceil_mode, const char* op) {
  check_rank(input, 4, op, "input", "(N, C, H, W)");
  check_supported_dtype(input, op, "input");
  TORCH_CHECK(input.size(1) > 0 && input.size(2) > 0 && input.size(3) > 0, op,
              ": expected input with non-zero channels, height and width, got size ",
              input.sizes());
  check_pair(kernel_size, 1, op, "kernel_size");
  check_pair(stride, 1, op, "stride");
  check_pair(padding, 0, op, "padding");
  check_pair(dilation, 1, op, "dilation");
  TORCH_CHECK(padding[0] <= kernel_size[0] / 2 && padding[1] <= kernel_size[1] / 2, op,
              ": padding must be at most half of kernel_size, got padding ", padding,
              " for kernel_size ", kernel_size);
  const int64_t height = input.size(2), width = input.size(3);
  axis_extents(height, kernel_size[0], padding[0], dilation[0], op, "height");
  axis_extents(width, kernel_size[1], padding[1], dilation[1], op, "width");
  const int64_t out_h = pool_output_size(height, kernel_size[0], stride[0], padding[0],
                                         dilation[0], ceil_mode);
  const int64_t out_w = pool_output_size(width, kernel_size[1], stride[1], padding[1],
                                         dilation[1], ceil_mode);
  TORCH_CHECK(out_h > 0 && out_w > 0, op, ": input of size ", input.sizes(),
              " is too small for kernel_size ", kernel_size, " with padding ", padding,
              " and dilation ", dilation, " (output would be ", out_h, "x", out_w, ")");
  return {input.size(0),
          input.size(1),
          {height, out_h, kernel_size[0], stepping_stride(stride[0], out_h), padding[0], dilation[0]},
          {width, out_w, kernel_size[1], stepping_stride(stride[1], out_w), padding[1], dilation[1]}};
}

at::Tensor empty_like_layout(at::IntArrayRef sizes, const at::Tensor& like,
                             at::MemoryFormat format, at::ScalarType dtype) {
  return at::empty(sizes, like.options().dtype(dtype).memory_format(format));
}

}  // namespace convext
