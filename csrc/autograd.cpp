// Autograd kernels of convext's ops. Each is a torch::autograd::Function: its
// forward runs the op below autograd, its backward is written with convext's
// ops, which are differentiable in turn, so double backward works. A gradient
// nobody asked for is not computed.
//
// In C++ rather than Python (torch.library.register_autograd): a Python
// autograd kernel cost every call about 6 us without gradients and 30 us with
// them (a 4x4 max_pool2d), more than the whole of torch's call.
#include <torch/autograd.h>
#include <torch/library.h>

#include "conv2d.h"
#include "ops.h"
#include "shape.h"

namespace convext {
namespace {

using at::IntArrayRef;
using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::Function;
using torch::autograd::variable_list;

// The forward's arguments that are not tensors, kept in ctx->saved_data
// (where compiled autograd finds them).
struct ConvWindow {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;

  void save(AutogradContext* ctx) const {
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
  }
  static ConvWindow of(AutogradContext* ctx) {
    return {ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
            ctx->saved_data["dilation"].toIntVector(), ctx->saved_data["groups"].toInt()};
  }
  // A backward op (grad_output, input, weight) of this window.
  template <class Op>
  Tensor call(const Tensor& grad_output, const Tensor& input, const Tensor& weight) const {
    return Op::call(grad_output, input, weight, stride, padding, dilation, groups);
  }
  Tensor conv2d(const Tensor& input, const Tensor& weight) const {
    return ops::Conv2d::call(input, weight, std::nullopt, stride, padding, dilation, groups);
  }
};

struct MaxPoolWindow {
  std::vector<int64_t> kernel_size, stride, padding, dilation;
  bool ceil_mode;

  void save(AutogradContext* ctx) const {
    ctx->saved_data["kernel_size"] = kernel_size;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["ceil_mode"] = ceil_mode;
  }
  static MaxPoolWindow of(AutogradContext* ctx) {
    return {ctx->saved_data["kernel_size"].toIntVector(), ctx->saved_data["stride"].toIntVector(),
            ctx->saved_data["padding"].toIntVector(), ctx->saved_data["dilation"].toIntVector(),
            ctx->saved_data["ceil_mode"].toBool()};
  }
};

struct AvgPoolWindow {
  std::vector<int64_t> kernel_size, stride, padding;
  bool ceil_mode, count_include_pad;
  std::optional<int64_t> divisor_override;

  void save(AutogradContext* ctx) const {
    ctx->saved_data["kernel_size"] = kernel_size;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["ceil_mode"] = ceil_mode;
    ctx->saved_data["count_include_pad"] = count_include_pad;
    ctx->saved_data["divisor_override"] = divisor_override;
  }
  static AvgPoolWindow of(AutogradContext* ctx) {
    return {ctx->saved_data["kernel_size"].toIntVector(), ctx->saved_data["stride"].toIntVector(),
            ctx->saved_data["padding"].toIntVector(), ctx->saved_data["ceil_mode"].toBool(),
            ctx->saved_data["count_include_pad"].toBool(),
            ctx->saved_data["divisor_override"].toOptional<int64_t>()};
  }
  Tensor avg_pool2d(const Tensor& input) const {
    return ops::AvgPool2d::call(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                divisor_override);
  }
  Tensor avg_pool2d_backward(const Tensor& grad_output, const Tensor& input) const {
    return ops::AvgPool2dBackward::call(grad_output, input, kernel_size, stride, padding, ceil_mode,
                                        count_include_pad, divisor_override);
  }
};

bool defined(const std::optional<Tensor>& t) { return t.has_value() && t->defined(); }

// -- conv2d ---------------------------------------------------------------

struct Conv2dFunction : Function<Conv2dFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight,
                        const std::optional<Tensor>& bias, IntArrayRef stride, IntArrayRef padding,
                        IntArrayRef dilation, int64_t groups) {
    ctx->save_for_backward({input, weight});
    ConvWindow{stride.vec(), padding.vec(), dilation.vec(), groups}.save(ctx);
    ctx->saved_data["has_bias"] = defined(bias);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return ops::Conv2d::call(input, weight, bias, stride, padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &input = saved[0], &weight = saved[1], &grad_output = grads[0];
    const ConvWindow window = ConvWindow::of(ctx);
    Tensor grad_input, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) {
      grad_input = window.call<ops::Conv2dBackwardInput>(grad_output, input, weight);
    }
    if (ctx->needs_input_grad(1)) {
      grad_weight = window.call<ops::Conv2dBackwardWeight>(grad_output, input, weight);
    }
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) {
      grad_bias = ops::Conv2dBackwardBias::call(grad_output);
    }
    return {grad_input, grad_weight, grad_bias, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// The forward of conv2d_backward_input or _weight: runs Op, and saves
// grad_output and the operand (weight or input) its derivative needs.
template <class Op>
Tensor conv_backward_forward(AutogradContext* ctx, const Tensor& operand, const Tensor& grad_output,
                             const Tensor& input, const Tensor& weight, IntArrayRef stride,
                             IntArrayRef padding, IntArrayRef dilation, int64_t groups) {
  ctx->save_for_backward({grad_output, operand});
  ConvWindow{stride.vec(), padding.vec(), dilation.vec(), groups}.save(ctx);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return Op::call(grad_output, input, weight, stride, padding, dilation, groups);
}

// backward_input(gy, x, w) is linear in (gy, w): its transpose in gy is the
// forward convolution, in w the weight gradient (with the incoming gradient in
// x's place). Likewise backward_weight(gy, x, w), linear in (gy, x).
struct Conv2dBackwardInputFunction : Function<Conv2dBackwardInputFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& grad_output, const Tensor& input,
                        const Tensor& weight, IntArrayRef stride, IntArrayRef padding,
                        IntArrayRef dilation, int64_t groups) {
    return conv_backward_forward<ops::Conv2dBackwardInput>(ctx, weight, grad_output, input, weight, stride,
                                                           padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &grad_output = saved[0], &weight = saved[1], &grad = grads[0];
    const ConvWindow window = ConvWindow::of(ctx);
    Tensor d_grad_output, d_weight;
    if (ctx->needs_input_grad(0)) {
      d_grad_output = window.conv2d(grad, weight);
    }
    if (ctx->needs_input_grad(2)) {
      d_weight = window.call<ops::Conv2dBackwardWeight>(grad_output, grad, weight);
    }
    return {d_grad_output, Tensor(), d_weight, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

struct Conv2dBackwardWeightFunction : Function<Conv2dBackwardWeightFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& grad_output, const Tensor& input,
                        const Tensor& weight, IntArrayRef stride, IntArrayRef padding,
                        IntArrayRef dilation, int64_t groups) {
    return conv_backward_forward<ops::Conv2dBackwardWeight>(ctx, input, grad_output, input, weight, stride,
                                                            padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &grad_output = saved[0], &input = saved[1], &grad = grads[0];
    const ConvWindow window = ConvWindow::of(ctx);
    Tensor d_grad_output, d_input;
    if (ctx->needs_input_grad(0)) {
      d_grad_output = window.conv2d(input, grad);
    }
    if (ctx->needs_input_grad(1)) {
      d_input = window.call<ops::Conv2dBackwardInput>(grad_output, input, grad);
    }
    return {d_grad_output, d_input, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

struct Conv2dBackwardBiasFunction : Function<Conv2dBackwardBiasFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& grad_output) {
    ctx->saved_data["grad_output_size"] = grad_output.sym_sizes();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return ops::Conv2dBackwardBias::call(grad_output);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const std::vector<c10::SymInt> size = ctx->saved_data["grad_output_size"].toSymIntVector();
    return {grads[0].view({1, -1, 1, 1}).expand_symint(size)};
  }
};

// -- conv_transpose2d -------------------------------------------------------
// conv_transpose2d(x, w) is the input gradient of the convolution by w from its
// result to x. Its own gradients are that convolution (for x) and its weight
// gradient with x in grad_output's place.

struct ConvTranspose2dFunction : Function<ConvTranspose2dFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight,
                        const std::optional<Tensor>& bias, IntArrayRef stride, IntArrayRef padding,
                        IntArrayRef output_padding, int64_t groups, IntArrayRef dilation) {
    ctx->save_for_backward({input, weight});
    ConvWindow{stride.vec(), padding.vec(), dilation.vec(), groups}.save(ctx);
    ctx->saved_data["has_bias"] = defined(bias);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return ops::ConvTranspose2d::call(input, weight, bias, stride, padding, output_padding, groups, dilation);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &input = saved[0], &weight = saved[1], &grad_output = grads[0];
    const ConvWindow window = ConvWindow::of(ctx);
    const bool needs_input = ctx->needs_input_grad(0), needs_weight = ctx->needs_input_grad(1);
    const bool needs_bias = ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2);
    Tensor grad_input, grad_weight, grad_bias;
    if (grad_output.sym_size(2) == 0 || grad_output.sym_size(3) == 0) {  // padding cropped the whole output
      return {needs_input ? at::zeros_like(input) : Tensor(), needs_weight ? at::zeros_like(weight) : Tensor(),
              needs_bias ? at::zeros_symint({grad_output.sym_size(1)}, grad_output.options()) : Tensor(),
              Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    }
    // output_padding >= stride (allowed when dilation is larger) adds rows that
    // no input row reaches: the convolution of the result is then longer than
    // input, by rows that read as zeros.
    c10::SymInt extra[2];
    for (int i = 0; i < 2; ++i) {
      extra[i] = conv_output_size(grad_output.sym_size(i + 2), weight.sym_size(i + 2), window.stride[i],
                                  window.padding[i], window.dilation[i]) -
                 input.sym_size(i + 2);
    }
    const bool longer = extra[0] != 0 || extra[1] != 0;
    if (needs_input) {
      grad_input = window.conv2d(grad_output, weight);
      if (longer) {
        grad_input = grad_input.slice_symint(2, 0, input.sym_size(2))
                         .slice_symint(3, 0, input.sym_size(3))
                         .contiguous(conv2d_memory_format(input, weight));
      }
    }
    if (needs_weight) {
      const Tensor padded = longer ? at::constant_pad_nd_symint(input, {0, extra[1], 0, extra[0]}) : input;
      grad_weight = window.call<ops::Conv2dBackwardWeight>(padded, grad_output, weight);
    }
    if (needs_bias) {
      grad_bias = ops::Conv2dBackwardBias::call(grad_output);
    }
    return {grad_input, grad_weight, grad_bias, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// -- max_pool2d -------------------------------------------------------------

struct MaxPool2dFunction : Function<MaxPool2dFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, IntArrayRef kernel_size,
                               IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
                               bool ceil_mode) {
    Tensor output, indices;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(output, indices) = ops::MaxPool2d::call(input, kernel_size, stride, padding, dilation, ceil_mode);
    }
    ctx->save_for_backward({input, indices});
    MaxPoolWindow{kernel_size.vec(), stride.vec(), padding.vec(), dilation.vec(), ceil_mode}.save(ctx);
    // The indices have no gradient: materialised, autograd would fill a tensor
    // of their size with zeros for each backward.
    ctx->set_materialize_grads(false);
    return {output, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) {
      return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    }
    const variable_list saved = ctx->get_saved_variables();
    const MaxPoolWindow w = MaxPoolWindow::of(ctx);
    return {ops::MaxPool2dBackward::call(grads[0], saved[0], saved[1], w.kernel_size, w.stride, w.padding,
                                         w.dilation, w.ceil_mode),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// The backward scatters grad_output to the argmax positions; its transpose
// gathers from them.
struct MaxPool2dBackwardFunction : Function<MaxPool2dBackwardFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& grad_output, const Tensor& input,
                        const Tensor& indices, IntArrayRef kernel_size, IntArrayRef stride,
                        IntArrayRef padding, IntArrayRef dilation, bool ceil_mode) {
    ctx->save_for_backward({indices});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return ops::MaxPool2dBackward::call(grad_output, input, indices, kernel_size, stride, padding, dilation,
                                        ceil_mode);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor indices = ctx->get_saved_variables()[0];
    const Tensor gathered = grads[0].flatten(2).gather(2, indices.flatten(2)).view_symint(indices.sym_sizes());
    return {gathered, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// -- avg_pool2d -------------------------------------------------------------

struct AvgPool2dFunction : Function<AvgPool2dFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, IntArrayRef kernel_size,
                        IntArrayRef stride, IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                        std::optional<int64_t> divisor_override) {
    ctx->save_for_backward({input});
    const AvgPoolWindow window{kernel_size.vec(), stride.vec(), padding.vec(), ceil_mode, count_include_pad,
                               divisor_override};
    window.save(ctx);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return window.avg_pool2d(input);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor input = ctx->get_saved_variables()[0];
    return {AvgPoolWindow::of(ctx).avg_pool2d_backward(grads[0], input), Tensor(), Tensor(), Tensor(),
            Tensor(), Tensor(), Tensor()};
  }
};

// avg_pool2d is linear: the transpose of its backward is itself.
struct AvgPool2dBackwardFunction : Function<AvgPool2dBackwardFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& grad_output, const Tensor& input,
                        IntArrayRef kernel_size, IntArrayRef stride, IntArrayRef padding, bool ceil_mode,
                        bool count_include_pad, std::optional<int64_t> divisor_override) {
    const AvgPoolWindow window{kernel_size.vec(), stride.vec(), padding.vec(), ceil_mode, count_include_pad,
                               divisor_override};
    window.save(ctx);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return window.avg_pool2d_backward(grad_output, input);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {AvgPoolWindow::of(ctx).avg_pool2d(grads[0]), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
            Tensor(), Tensor()};
  }
};

// The Autograd kernel of an op of signature Op::Signature: Fn::apply.
template <class Fn, class Op, class Signature = typename Op::Signature>
struct Autograd;

template <class Fn, class Op, class Result, class... Args>
struct Autograd<Fn, Op, Result(Args...)> {
  static Result call(Args... args) {
    if constexpr (std::is_same_v<Result, Tensor>) {
      return Fn::apply(args...);
    } else {
      const variable_list outputs = Fn::apply(args...);
      return {outputs[0], outputs[1]};
    }
  }
};

}  // namespace
}  // namespace convext

TORCH_LIBRARY_IMPL(convext, Autograd, m) {
  using namespace convext;
  m.impl("conv2d", &Autograd<Conv2dFunction, ops::Conv2d>::call);
  m.impl("conv2d_backward_input", &Autograd<Conv2dBackwardInputFunction, ops::Conv2dBackwardInput>::call);
  m.impl("conv2d_backward_weight", &Autograd<Conv2dBackwardWeightFunction, ops::Conv2dBackwardWeight>::call);
  m.impl("conv2d_backward_bias", &Autograd<Conv2dBackwardBiasFunction, ops::Conv2dBackwardBias>::call);
  m.impl("conv_transpose2d", &Autograd<ConvTranspose2dFunction, ops::ConvTranspose2d>::call);
  m.impl("max_pool2d", &Autograd<MaxPool2dFunction, ops::MaxPool2d>::call);
  m.impl("max_pool2d_backward", &Autograd<MaxPool2dBackwardFunction, ops::MaxPool2dBackward>::call);
  m.impl("avg_pool2d", &Autograd<AvgPool2dFunction, ops::AvgPool2d>::call);
  m.impl("avg_pool2d_backward", &Autograd<AvgPool2dBackwardFunction, ops::AvgPool2dBackward>::call);
}
