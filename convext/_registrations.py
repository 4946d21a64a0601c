"""Fake (meta) kernels of the torch.ops.convext ops.

The C++ side defines the schemas and the autocast, autograd and backend
kernels (csrc/autograd.cpp has the derivatives); here each op gets a fake
kernel: its results' sizes, dtypes and layouts, for torch.compile and meta
tensors.
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


# -- conv_transpose2d ---------------------------------------------------------

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
