"""Fake (meta) kernels and autograd formulas of the torch.ops.convext ops.

The C++ side defines the schemas and the backend kernels; here each op gets a
fake kernel (output size, dtype and layout, for torch.compile and meta tensors)
and a derivative. Every derivative is written with convext ops, which are
differentiable themselves, so double backward works.
"""

import torch
from torch._prims_common import suggest_memory_format

try:
    from . import _C  # noqa: F401  (loads the schemas and kernels)
except ImportError as error:
    raise ImportError(
        "convext's compiled ops (convext._C) are missing: build them with `pip install --no-build-isolation .` "
        "(or `-e .` to develop in place). A source checkout on sys.path shadows an installed convext."
    ) from error

ops = torch.ops.convext


# -- shapes (mirrors csrc/shape.h for fake tensors, which may carry SymInts) --

def _conv_output_size(size, kernel, stride, pad, dilation):
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _conv_memory_format(input, weight):
    if input.is_cuda and input.dtype == torch.float64:  # cuDNN keeps float64 in NCHW, and torch with it
        return torch.contiguous_format
    channels_last = torch.channels_last in (suggest_memory_format(input), suggest_memory_format(weight))
    return torch.channels_last if channels_last else torch.contiguous_format


def _empty(size, like, memory_format, dtype=None):
    return torch.empty(size, dtype=dtype or like.dtype, device=like.device, memory_format=memory_format)


def _pool_memory_format(input):
    return torch.channels_last if suggest_memory_format(input) == torch.channels_last else torch.contiguous_format


def _check_devices(op, input, **others):
    """A Meta tensor beside real ones sends the call here, not to a kernel:
    reject mixed devices as the kernels do."""
    for name, t in others.items():
        if t is not None and t.device != input.device:
            raise RuntimeError(f"convext.{op}: expected {name} on the device of input ({input.device}), got {t.device}")


# -- conv2d -----------------------------------------------------------------

@torch.library.register_fake("convext::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    _check_devices("conv2d", input, weight=weight, bias=bias)
    size = [input.shape[0], weight.shape[0]] + [
        _conv_output_size(input.shape[i + 2], weight.shape[i + 2], stride[i], padding[i], dilation[i])
        for i in range(2)
    ]
    return _empty(size, input, _conv_memory_format(input, weight))


@torch.library.register_fake("convext::conv2d_backward_input")
def _conv2d_backward_input_fake(grad_output, input, weight, stride, padding, dilation, groups):
    _check_devices("conv2d_backward_input", input, grad_output=grad_output, weight=weight)
    return _empty(input.shape, input, _conv_memory_format(input, weight))


@torch.library.register_fake("convext::conv2d_backward_weight")
def _conv2d_backward_weight_fake(grad_output, input, weight, stride, padding, dilation, groups):
    _check_devices("conv2d_backward_weight", input, grad_output=grad_output, weight=weight)
    return _empty(weight.shape, weight, _conv_memory_format(input, weight))


@torch.library.register_fake("convext::conv2d_backward_bias")
def _conv2d_backward_bias_fake(grad_output):
    return grad_output.new_empty(grad_output.shape[1])


def _conv2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.params = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def _conv2d_backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    needs_input, needs_weight, needs_bias = ctx.needs_input_grad[:3]
    grad_input = grad_weight = grad_bias = None
    if needs_input:
        grad_input = ops.conv2d_backward_input(grad_output, input, weight, *ctx.params)
    if needs_weight:
        grad_weight = ops.conv2d_backward_weight(grad_output, input, weight, *ctx.params)
    if ctx.has_bias and needs_bias:
        grad_bias = ops.conv2d_backward_bias(grad_output)
    return grad_input, grad_weight, grad_bias, None, None, None, None


torch.library.register_autograd("convext::conv2d", _conv2d_backward, setup_context=_conv2d_setup)


# backward_input(gy, x, w) is linear in (gy, w): its transpose in gy is the
# forward conv, in w the weight gradient. Likewise for backward_weight.
def _conv2d_backward_setup(ctx, inputs, output):
    grad_output, input, weight, *params = inputs
    ctx.save_for_backward(grad_output, input, weight)
    ctx.params = params


def _conv2d_backward_input_backward(ctx, grad):
    grad_output, input, weight = ctx.saved_tensors
    needs_grad_output, _, needs_weight = ctx.needs_input_grad[:3]
    d_grad_output = d_weight = None
    if needs_grad_output:
        d_grad_output = ops.conv2d(grad, weight, None, *ctx.params)
    if needs_weight:
        d_weight = ops.conv2d_backward_weight(grad_output, grad, weight, *ctx.params)
    return d_grad_output, None, d_weight, None, None, None, None


torch.library.register_autograd(
    "convext::conv2d_backward_input", _conv2d_backward_input_backward,
    setup_context=_conv2d_backward_setup,
)


def _conv2d_backward_weight_backward(ctx, grad):
    grad_output, input, weight = ctx.saved_tensors
    needs_grad_output, needs_input = ctx.needs_input_grad[:2]
    d_grad_output = d_input = None
    if needs_grad_output:
        d_grad_output = ops.conv2d(input, grad, None, *ctx.params)
    if needs_input:
        d_input = ops.conv2d_backward_input(grad_output, input, grad, *ctx.params)
    return d_grad_output, d_input, None, None, None, None, None


torch.library.register_autograd(
    "convext::conv2d_backward_weight", _conv2d_backward_weight_backward,
    setup_context=_conv2d_backward_setup,
)


def _conv2d_backward_bias_setup(ctx, inputs, output):
    ctx.grad_output_shape = inputs[0].shape


def _conv2d_backward_bias_backward(ctx, grad):
    return grad.view(1, -1, 1, 1).expand(ctx.grad_output_shape)


torch.library.register_autograd(
    "convext::conv2d_backward_bias", _conv2d_backward_bias_backward,
    setup_context=_conv2d_backward_bias_setup,
)


# -- conv_transpose2d ---------------------------------------------------------
# conv_transpose2d(x, w) is the input gradient of the convolution by w from its
# result to x, computed by the same kernel. Its own gradients are that
# convolution (for x) and its weight gradient with x in grad_output's place.

def _conv_transpose_output_size(size, kernel, stride, pad, output_pad, dilation):
    return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + 1 + output_pad


@torch.library.register_fake("convext::conv_transpose2d")
def _conv_transpose2d_fake(input, weight, bias, stride, padding, output_padding, groups, dilation):
    _check_devices("conv_transpose2d", input, weight=weight, bias=bias)
    size = [input.shape[0], weight.shape[1] * groups] + [
        _conv_transpose_output_size(input.shape[i + 2], weight.shape[i + 2], stride[i], padding[i],
                                    output_padding[i], dilation[i])
        for i in range(2)
    ]
    return _empty(size, input, _conv_memory_format(input, weight))


def _conv_transpose2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, _output_padding, groups, dilation = inputs
    ctx.save_for_backward(input, weight)
    ctx.params = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def _conv_transpose2d_backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    stride, padding, dilation, _ = ctx.params
    needs_input, needs_weight, needs_bias = ctx.needs_input_grad[:3]
    # output_padding >= stride (allowed when dilation is larger) adds rows that
    # no input row reaches: the convolution of the result is then longer than
    # input, by rows that read as zeros.
    conv_size = [
        _conv_output_size(grad_output.shape[i + 2], weight.shape[i + 2], stride[i], padding[i], dilation[i])
        for i in range(2)
    ]
    extra_h, extra_w = conv_size[0] - input.shape[2], conv_size[1] - input.shape[3]
    grad_input = grad_weight = grad_bias = None
    if grad_output.shape[2] == 0 or grad_output.shape[3] == 0:  # padding cropped the whole output
        return (torch.zeros_like(input) if needs_input else None, torch.zeros_like(weight) if needs_weight else None,
                grad_output.new_zeros(grad_output.shape[1]) if ctx.has_bias and needs_bias else None,
                None, None, None, None, None)
    if needs_input:
        grad_input = ops.conv2d(grad_output, weight, None, *ctx.params)
        if extra_h or extra_w:
            grad_input = grad_input[:, :, :input.shape[2], :input.shape[3]].contiguous(
                memory_format=_conv_memory_format(input, weight))
    if needs_weight:
        padded = torch.nn.functional.pad(input, [0, extra_w, 0, extra_h]) if extra_h or extra_w else input
        grad_weight = ops.conv2d_backward_weight(padded, grad_output, weight, *ctx.params)
    if ctx.has_bias and needs_bias:
        grad_bias = ops.conv2d_backward_bias(grad_output)
    return grad_input, grad_weight, grad_bias, None, None, None, None, None


torch.library.register_autograd(
    "convext::conv_transpose2d", _conv_transpose2d_backward, setup_context=_conv_transpose2d_setup
)


# -- max_pool2d -------------------------------------------------------------

@torch.library.register_fake("convext::max_pool2d")
def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    size = list(input.shape[:2]) + [
        _pool_output_size(input.shape[i + 2], kernel_size[i], stride[i], padding[i], dilation[i], ceil_mode)
        for i in range(2)
    ]
    memory_format = _pool_memory_format(input)
    return _empty(size, input, memory_format), _empty(size, input, memory_format, torch.int64)


@torch.library.register_fake("convext::max_pool2d_backward")
def _max_pool2d_backward_fake(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    _check_devices("max_pool2d_backward", input, grad_output=grad_output, indices=indices)
    return _empty(input.shape, input, _pool_memory_format(input))


def _max_pool2d_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output[1])
    ctx.window = inputs[1:]
    # The indices have no gradient: without this, autograd would fill a tensor
    # of their size with zeros for each backward (0.3 ms on the benchmark's 3x3/2 pool).
    ctx.set_materialize_grads(False)


def _max_pool2d_backward(ctx, grad_output, _grad_indices):
    input, indices = ctx.saved_tensors
    grad_input = None if grad_output is None else ops.max_pool2d_backward(grad_output, input, indices, *ctx.window)
    return grad_input, None, None, None, None, None


torch.library.register_autograd("convext::max_pool2d", _max_pool2d_backward, setup_context=_max_pool2d_setup)


def _max_pool2d_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[2])


def _max_pool2d_backward_backward(ctx, grad):
    # The backward scatters grad_output to the argmax positions; its transpose
    # gathers from them.
    (indices,) = ctx.saved_tensors
    gathered = grad.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)
    return gathered, None, None, None, None, None, None, None


torch.library.register_autograd(
    "convext::max_pool2d_backward", _max_pool2d_backward_backward, setup_context=_max_pool2d_backward_setup
)


# -- avg_pool2d -------------------------------------------------------------

@torch.library.register_fake("convext::avg_pool2d")
def _avg_pool2d_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    size = list(input.shape[:2]) + [
        _pool_output_size(input.shape[i + 2], kernel_size[i], stride[i], padding[i], 1, ceil_mode)
        for i in range(2)
    ]
    return _empty(size, input, _pool_memory_format(input))


@torch.library.register_fake("convext::avg_pool2d_backward")
def _avg_pool2d_backward_fake(grad_output, input, *params):
    _check_devices("avg_pool2d_backward", input, grad_output=grad_output)
    return _empty(input.shape, input, _pool_memory_format(input))


def _avg_pool2d_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.params = inputs[1:]


def _avg_pool2d_backward(ctx, grad_output):
    (input,) = ctx.saved_tensors
    return (ops.avg_pool2d_backward(grad_output, input, *ctx.params),) + (None,) * len(ctx.params)


torch.library.register_autograd("convext::avg_pool2d", _avg_pool2d_backward, setup_context=_avg_pool2d_setup)


def _avg_pool2d_backward_setup(ctx, inputs, output):
    ctx.params = inputs[2:]


def _avg_pool2d_backward_backward(ctx, grad):
    # avg_pool2d is linear: the transpose of its backward is itself.
    return (ops.avg_pool2d(grad, *ctx.params), None) + (None,) * len(ctx.params)


torch.library.register_autograd(
    "convext::avg_pool2d_backward", _avg_pool2d_backward_backward, setup_context=_avg_pool2d_backward_setup
)
