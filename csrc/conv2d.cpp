// conv2d: schemas of the forward and backward ops, and their argument checks.
#include "conv2d.h"

#include <torch/library.h>

#include "autocast.h"

namespace convext {
namespace {

// What conv2d and conv_transpose2d check alike: ranks, dtypes, devices, the
// window parameters and non-empty sizes.
void check_tensors_and_window(const at::Tensor& input, const at::Tensor& weight,
                              const char* weight_layout, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                              const char* op) {
  check_rank(input, 4, op, "input", "(N, C, H, W)");
  check_rank(weight, 4, op, "weight", weight_layout);
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
}

void check_bias(const std::optional<at::Tensor>& bias, const at::Tensor& input,
                const at::Tensor& weight, int64_t out_channels, int64_t groups, const char* op) {
  if (bias.has_value()) {
    check_same_dtype_and_device(*bias, input, op, "bias", "input");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_channels, op,
                ": expected bias of size [", out_channels, "] for weight of size ",
                weight.sizes(), " and groups=", groups, ", got bias of size ", bias->sizes());
  }
}

}  // namespace

Conv2dShape conv2d_check(const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                         const char* op) {
  check_tensors_and_window(input, weight, "(out_channels, in_channels / groups, kernel_h, kernel_w)",
                           stride, padding, dilation, groups, op);

  const int64_t out_channels = weight.size(0);
  TORCH_CHECK(out_channels % groups == 0, op, ": groups=", groups,
              " must divide out_channels, but weight has size ", weight.sizes());
  TORCH_CHECK(input.size(1) == weight.size(1) * groups, op, ": groups=", groups,
              " and weight of size ", weight.sizes(), " expect input with ",
              weight.size(1) * groups, " channels, got input of size ", input.sizes());
  check_bias(bias, input, weight, out_channels, groups, op);

  const int64_t kernel_h = weight.size(2), kernel_w = weight.size(3);
  const AxisExtents h = axis_extents(input.size(2), kernel_h, padding[0], dilation[0], op, "height");
  const AxisExtents w = axis_extents(input.size(3), kernel_w, padding[1], dilation[1], op, "width");
  TORCH_CHECK(h.padded >= h.kernel && w.padded >= w.kernel, op, ": padded input of size ", h.padded,
              "x", w.padded, " is smaller than the dilated kernel of size ", h.kernel, "x", w.kernel,
              " (input size ", input.sizes(), ", weight size ", weight.sizes(), ", padding ",
              padding, ", dilation ", dilation, ")");

  const auto axis = [&](int64_t dim, int64_t kernel, int i) {
    const int64_t in = input.size(dim);
    const int64_t out = conv_output_size(in, kernel, stride[i], padding[i], dilation[i]);
    return WindowAxis{in, out, kernel, stepping_stride(stride[i], out), padding[i], dilation[i]};
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
  check_grad_output_size(grad_output, {s.batch, s.out_channels, s.h.out_size, s.w.out_size}, input, op);
  return s;
}

Conv2dShape conv_transpose2d_check(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef output_padding, int64_t groups,
                                   at::IntArrayRef dilation, const char* op) {
  check_tensors_and_window(input, weight, "(in_channels, out_channels / groups, kernel_h, kernel_w)",
                           stride, padding, dilation, groups, op);
  check_pair(output_padding, 0, op, "output_padding");
  TORCH_CHECK(weight.size(0) % groups == 0, op, ": groups=", groups,
              " must divide in_channels, but weight has size ", weight.sizes());
  TORCH_CHECK(input.size(1) == weight.size(0), op, ": weight of size ", weight.sizes(),
              " expects input with ", weight.size(0), " channels, got input of size ",
              input.sizes());
  const int64_t out_channels = weight.size(1) * groups;
  check_bias(bias, input, weight, out_channels, groups, op);
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK(output_padding[i] < stride[i] || output_padding[i] < dilation[i], op,
                ": output_padding must be smaller than stride or dilation, got output_padding ",
                output_padding, ", stride ", stride, ", dilation ", dilation);
  }
  // The transposed convolution is the input gradient of the convolution from
  // its output (of size `size`) to its input. Rows that output_padding adds
  // past the last stride step read as zeros: out_size stays the input's.
  const auto axis = [&](int i) {
    const int64_t in = input.size(i + 2), kernel = weight.size(i + 2);
    const char* name = i == 0 ? "height" : "width";
    const int64_t span = kernel_span(kernel, dilation[i], op, name);
    const int64_t size = check_extent(
        (__int128{in} - 1) * stride[i] - 2 * __int128{padding[i]} + span + output_padding[i], op,
        ": the output ", name, " ((in - 1) * stride - 2 * padding + the dilated kernel + output_padding)");
    TORCH_CHECK(size >= 0, op, ": input of size ", input.sizes(), " gives an output of size ",
                size, " in dimension ", i + 2, " (weight size ", weight.sizes(), ", stride ",
                stride, ", padding ", padding, ", output_padding ", output_padding,
                ", dilation ", dilation, ")");
    return WindowAxis{size, in, kernel, stepping_stride(stride[i], in), padding[i], dilation[i]};
  };
  return {input.size(0), out_channels, weight.size(0), groups, axis(0), axis(1)};
}

at::MemoryFormat conv2d_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  // cuDNN keeps float64 in NCHW, and torch's CUDA convolutions with it.
  if (input.is_cuda() && input.scalar_type() == at::kDouble) {
    return at::MemoryFormat::Contiguous;
  }
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
  // torch's argument order (groups before dilation), as in aten::conv_transpose2d.
  m.def(
      "conv_transpose2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, "
      "int[2] padding, int[2] output_padding, int groups, int[2] dilation) -> Tensor");
}

namespace {

template <c10::DeviceType device>
void register_autocast(torch::Library& m) {
  m.impl("conv2d", &convext::LowerPrecision<device, convext::ops::Conv2d>::call);
  m.impl("conv_transpose2d", &convext::LowerPrecision<device, convext::ops::ConvTranspose2d>::call);
}

}  // namespace

// The backward ops have none: torch's convolution backward is not on autocast's
// lists either, and autograd runs them in the dtypes the forward saw.
TORCH_LIBRARY_IMPL(convext, AutocastCPU, m) { register_autocast<c10::DeviceType::CPU>(m); }
TORCH_LIBRARY_IMPL(convext, AutocastCUDA, m) { register_autocast<c10::DeviceType::CUDA>(m); }
