#pragma once
// convext's ops as C++ calls through the dispatcher: a call runs every kernel
// its dispatch keys select (autocast, autograd, then the backend), as a call
// from Python does. The autocast and autograd kernels call the ops this way.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>

namespace convext::ops {

template <const char* name, class Signature>
struct Op;

template <const char* name, class Result, class... Args>
struct Op<name, Result(Args...)> {
  using Signature = Result(Args...);
  static Result call(Args... args) {
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
    return op.call(args...);
  }
};

using at::IntArrayRef;
using at::Tensor;

inline constexpr char kConv2d[] = "convext::conv2d";
inline constexpr char kConv2dBackwardInput[] = "convext::conv2d_backward_input";
inline constexpr char kConv2dBackwardWeight[] = "convext::conv2d_backward_weight";
inline constexpr char kConv2dBackwardBias[] = "convext::conv2d_backward_bias";
inline constexpr char kConvTranspose2d[] = "convext::conv_transpose2d";
inline constexpr char kMaxPool2d[] = "convext::max_pool2d";
inline constexpr char kMaxPool2dBackward[] = "convext::max_pool2d_backward";
inline constexpr char kAvgPool2d[] = "convext::avg_pool2d";
inline constexpr char kAvgPool2dBackward[] = "convext::avg_pool2d_backward";

using Conv2d = Op<kConv2d, Tensor(const Tensor& input, const Tensor& weight, const std::optional<Tensor>& bias,
                                  IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups)>;
// The backward ops take the forward's grad_output, input and weight.
using Conv2dBackwardInput = Op<kConv2dBackwardInput, Tensor(const Tensor&, const Tensor&, const Tensor&, IntArrayRef,
                                                            IntArrayRef, IntArrayRef, int64_t)>;
using Conv2dBackwardWeight = Op<kConv2dBackwardWeight, Conv2dBackwardInput::Signature>;
using Conv2dBackwardBias = Op<kConv2dBackwardBias, Tensor(const Tensor& grad_output)>;
using ConvTranspose2d =
    Op<kConvTranspose2d, Tensor(const Tensor& input, const Tensor& weight, const std::optional<Tensor>& bias,
                                IntArrayRef stride, IntArrayRef padding, IntArrayRef output_padding, int64_t groups,
                                IntArrayRef dilation)>;
using MaxPool2d = Op<kMaxPool2d, std::tuple<Tensor, Tensor>(const Tensor& input, IntArrayRef kernel_size,
                                                            IntArrayRef stride, IntArrayRef padding,
                                                            IntArrayRef dilation, bool ceil_mode)>;
using MaxPool2dBackward =
    Op<kMaxPool2dBackward, Tensor(const Tensor& grad_output, const Tensor& input, const Tensor& indices,
                                  IntArrayRef kernel_size, IntArrayRef stride, IntArrayRef padding,
                                  IntArrayRef dilation, bool ceil_mode)>;
using AvgPool2d = Op<kAvgPool2d, Tensor(const Tensor& input, IntArrayRef kernel_size, IntArrayRef stride,
                                        IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                        std::optional<int64_t> divisor_override)>;
using AvgPool2dBackward =
    Op<kAvgPool2dBackward, Tensor(const Tensor& grad_output, const Tensor& input, IntArrayRef kernel_size,
                                  IntArrayRef stride, IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                  std::optional<int64_t> divisor_override)>;

}  // namespace convext::ops
