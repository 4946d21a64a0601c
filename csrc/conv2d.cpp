// conv2d: schemas of the forward and backward ops, and their argument checks.
#include "conv2d.h"

#include <torch/library.h>

namespace convext {

Conv2dShape conv2d_check(const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                         const char* op) {
  check_rank(input, 4, op, "input", "(N, C, H, W)");
  check_rank(weight, 4, op, "weight", "(out_channels, in_channels / groups, kernel_h, kernel_w)");
  check_supported_dtype(input, op, "input");
  check_same_dtype_and_device(weight, input, op, "weight", "input");
  check_pair(stride, 1, op, "stride");
  check_pair(padding, 0, op, "padding");
  check_pair(dilation, 1, op, "dilation");
  TORCH_CHECK(groups > 0, op, ": groups must be positive, got ", groups);
  TORCH_CHECK(input.size(1) > 0 && input.size(2) > 0 && input.size(3) > 0, op,
              ": expected input with non-zero channels, height and width, got size ",
              input.sizes());
  TORCH_CHECK(weight.numel() > 0, op, ": expected weight with non-zero sizes, got size ",
              weight.sizes());

  const int64_t out_channels = weight.size(0);
  TORCH_CHECK(out_channels % groups == 0, op, ": groups=", groups,
              " must divide out_channels, but weight has size ", weight.sizes());
  TORCH_CHECK(input.size(1) == weight.size(1) * groups, op, ": groups=", groups,
              " and weight of size ", weight.sizes(), " expect input with ",
              weight.size(1) * groups, " channels, got input of size ", input.sizes());
  if (bias.has_value()) {
    check_same_dtype_and_device(*bias, input, op, "bias", "input");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_channels, op,
                ": expected bias of size [", out_channels, "] for weight of size ",
                weight.sizes(), ", got bias of size ", bias->sizes());
  }

  const int64_t kernel_h = weight.size(2), kernel_w = weight.size(3);
  const int64_t padded_h = input.size(2) + 2 * padding[0];
  const int64_t padded_w = input.size(3) + 2 * padding[1];
  TORCH_CHECK(padded_h >= dilated_extent(kernel_h, dilation[0]) &&
                  padded_w >= dilated_extent(kernel_w, dilation[1]),
              op, ": padded input of size ", padded_h, "x", padded_w,
              " is smaller than the dilated kernel of size ",
              dilated_extent(kernel_h, dilation[0]), "x", dilated_extent(kernel_w, dilation[1]),
              " (input size ", input.sizes(), ", weight size ", weight.sizes(), ", padding ",
              padding, ", dilation ", dilation, ")");

  const auto axis = [&](int64_t dim, int64_t kernel, int i) {
    const int64_t in = input.size(dim);
    return WindowAxis{in, conv_output_size(in, kernel, stride[i], padding[i], dilation[i]),
                      kernel, stride[i], padding[i], dilation[i]};
  };
  return {input.size(0), input.size(1), out_channels, groups, axis(2, kernel_h, 0),
          axis(3, kernel_w, 1)};
}

Conv2dShape conv2d_backward_check(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& weight, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups, const char* op) {
  const Conv2dShape s =
      conv2d_check(input, weight, std::nullopt, stride, padding, dilation, groups, op);
  check_same_dtype_and_device(grad_output, input, op, "grad_output", "input");
  check_grad_output_size(grad_output, {s.batch, s.out_channels, s.h.out_size, s.w.out_size}, op);
  return s;
}

at::MemoryFormat conv2d_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  const bool channels_last =
      input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
      weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

}  // namespace convext

TORCH_LIBRARY_FRAGMENT(convext, m) {
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups) -> Tensor");
  // The input and weight of the backward ops give the result's size and layout.
  m.def(
      "conv2d_backward_input(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups) -> Tensor");
  m.def(
      "conv2d_backward_weight(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups) -> Tensor");
  m.def("conv2d_backward_bias(Tensor grad_output) -> Tensor");
}
