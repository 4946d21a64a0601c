"""Malformed calls raise a Python exception that names the problem; nothing crashes."""

import pytest
import torch

import convext

ops = torch.ops.convext


def x(*shape, **kw):
    return torch.randn(*shape, **kw)


BAD_CALLS = [
    # conv2d
    ("5-D input", lambda: convext.conv2d(x(1, 1, 3, 8, 8), x(4, 3, 3, 3)), RuntimeError, r"3-D \(unbatched\) or 4-D"),
    ("2-D input", lambda: convext.conv2d(x(8, 8), x(4, 3, 3, 3)), RuntimeError, r"size \[8, 8\]"),
    ("3-D weight", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3)), RuntimeError, r"weight to be 4-D.*\[4, 3, 3\]"),
    ("channel mismatch", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 2, 3, 3)), RuntimeError,
     r"expect input with 2 channels, got input of size \[1, 3, 8, 8\]"),
    ("groups not dividing out_channels", lambda: convext.conv2d(x(1, 4, 8, 8), x(3, 2, 3, 3), groups=2),
     RuntimeError, r"groups=2 must divide out_channels.*\[3, 2, 3, 3\]"),
    ("groups not dividing in_channels", lambda: convext.conv2d(x(1, 5, 8, 8), x(4, 2, 3, 3), groups=2),
     RuntimeError, r"expect input with 4 channels"),
    ("zero groups", lambda: convext.conv2d(x(1, 4, 8, 8), x(4, 4, 3, 3), groups=0), RuntimeError,
     r"groups must be positive, got 0"),
    ("kernel larger than padded input", lambda: convext.conv2d(x(1, 3, 2, 2), x(4, 3, 3, 3)), RuntimeError,
     r"padded input of size 2x2 is smaller than the dilated kernel of size 3x3"),
    ("dilated kernel larger than padded input", lambda: convext.conv2d(x(1, 3, 5, 5), x(4, 3, 3, 3), dilation=3),
     RuntimeError, r"dilated kernel of size 7x7"),
    ("zero stride", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), stride=0), RuntimeError,
     r"stride must be positive, got \[0, 0\]"),
    ("negative stride", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), stride=(1, -1)), RuntimeError,
     r"stride must be positive"),
    ("zero dilation", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), dilation=0), RuntimeError,
     r"dilation must be positive"),
    ("negative padding", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), padding=-1), RuntimeError,
     r"padding must be non-negative, got \[-1, -1\]"),
    ("three strides", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), stride=(1, 1, 1)), TypeError,
     r"stride must be an int or a pair"),
    ("float padding", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), padding=1.5), TypeError, r"padding"),
    ("same padding with stride", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), stride=2, padding="same"),
     RuntimeError, r"padding='same' is not supported for strided"),
    ("unknown padding string", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), padding="full"), ValueError,
     r"'valid', 'same'"),
    ("bias of wrong size", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), x(3)), RuntimeError,
     r"expected bias of size \[4\].*got bias of size \[3\]"),
    ("2-D bias", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), x(4, 1)), RuntimeError, r"bias of size \[4, 1\]"),
    ("weight dtype differs", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3, dtype=torch.float64)),
     RuntimeError, r"weight to have the dtype of input \(Float\), got Double"),
    ("bias dtype differs", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), x(4, dtype=torch.float64)),
     RuntimeError, r"bias to have the dtype of input"),
    ("integer input", lambda: convext.conv2d(torch.ones(1, 3, 8, 8, dtype=torch.int64),
                                             torch.ones(4, 3, 3, 3, dtype=torch.int64)),
     RuntimeError, r"unsupported dtype Long; supported: float32, float64, float16, bfloat16"),
    # conv_transpose2d
    ("transposed channel mismatch", lambda: convext.conv_transpose2d(x(1, 3, 5, 5), x(4, 2, 3, 3)), RuntimeError,
     r"weight of size \[4, 2, 3, 3\] expects input with 4 channels, got input of size \[1, 3, 5, 5\]"),
    ("transposed groups not dividing in_channels",
     lambda: convext.conv_transpose2d(x(1, 3, 5, 5), x(3, 2, 3, 3), groups=2), RuntimeError,
     r"groups=2 must divide in_channels"),
    ("output_padding not below stride or dilation",
     lambda: convext.conv_transpose2d(x(1, 2, 5, 5), x(2, 2, 3, 3), stride=2, output_padding=2), RuntimeError,
     r"output_padding must be smaller than stride or dilation, got output_padding \[2, 2\]"),
    ("negative output_padding", lambda: convext.conv_transpose2d(x(1, 2, 5, 5), x(2, 2, 3, 3), output_padding=-1),
     RuntimeError, r"output_padding must be non-negative"),
    ("transposed output of negative size",
     lambda: convext.conv_transpose2d(x(1, 2, 1, 1), x(2, 2, 1, 1), padding=1), RuntimeError,
     r"gives an output of size -1 in dimension 2"),
    ("transposed bias of wrong size",
     lambda: convext.conv_transpose2d(x(1, 4, 5, 5), x(4, 3, 3, 3), x(3), groups=2), RuntimeError,
     r"expected bias of size \[6\] for weight of size \[4, 3, 3, 3\] and groups=2"),
    ("complex input", lambda: convext.conv_transpose2d(x(1, 2, 5, 5, dtype=torch.complex64),
                                                       x(2, 2, 3, 3, dtype=torch.complex64)),
     RuntimeError, r"unsupported dtype ComplexFloat"),
    ("weight on another device", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3, device="meta")), RuntimeError,
     r"weight on the device of input \(cpu\), got meta"),
    ("bias on another device", lambda: convext.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), x(4, device="meta")),
     RuntimeError, r"bias on the device of input"),
    ("zero-size channels", lambda: convext.conv2d(x(1, 0, 8, 8), x(4, 0, 3, 3)), RuntimeError,
     r"non-zero channels, height and width"),
    ("input not a tensor", lambda: convext.conv2d([[1.0]], x(4, 3, 3, 3)), TypeError, r"input must be a Tensor"),
    ("wrong-size grad_output", lambda: ops.conv2d_backward_input(x(1, 4, 5, 5), x(1, 3, 8, 8), x(4, 3, 3, 3),
                                                                 [1, 1], [0, 0], [1, 1], 1),
     RuntimeError, r"expected grad_output of size \[1, 4, 6, 6\], got \[1, 4, 5, 5\]"),
    ("op called with one stride", lambda: ops.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), None, [1], [0, 0], [1, 1], 1),
     RuntimeError, r"stride to have 2 values"),
    ("corr2d of a 3-D tensor", lambda: convext.corr2d(x(1, 3, 3), x(2, 2)), RuntimeError, r"2-D X and K"),
    # max_pool2d and avg_pool2d
    ("pool 5-D input", lambda: convext.max_pool2d(x(1, 1, 1, 4, 4), 2), RuntimeError, r"3-D \(unbatched\) or 4-D"),
    ("pool zero kernel", lambda: convext.max_pool2d(x(1, 1, 4, 4), 0), RuntimeError, r"kernel_size must be positive"),
    ("pool zero stride", lambda: convext.avg_pool2d(x(1, 1, 4, 4), 2, stride=0), RuntimeError,
     r"stride must be positive"),
    ("pool zero dilation", lambda: convext.max_pool2d(x(1, 1, 4, 4), 2, dilation=0), RuntimeError,
     r"dilation must be positive"),
    ("pool negative padding", lambda: convext.avg_pool2d(x(1, 1, 4, 4), 2, padding=-1), RuntimeError,
     r"padding must be non-negative"),
    ("pool padding over half the kernel", lambda: convext.max_pool2d(x(1, 1, 8, 8), 3, padding=2), RuntimeError,
     r"padding must be at most half of kernel_size, got padding \[2, 2\] for kernel_size \[3, 3\]"),
    ("avg padding over half the kernel", lambda: convext.avg_pool2d(x(1, 1, 8, 8), (2, 4), padding=(1, 3)),
     RuntimeError, r"at most half of kernel_size"),
    ("pool output too small", lambda: convext.max_pool2d(x(1, 1, 2, 2), 3), RuntimeError,
     r"input of size \[1, 1, 2, 2\] is too small for kernel_size \[3, 3\]"),
    ("zero divisor", lambda: convext.avg_pool2d(x(1, 1, 4, 4), 2, divisor_override=0), RuntimeError,
     r"divisor_override must be non-zero"),
    ("pool integer input", lambda: convext.max_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.int64), 2), RuntimeError,
     r"unsupported dtype Long"),
    ("pool zero-size channels", lambda: convext.avg_pool2d(x(1, 0, 4, 4), 2), RuntimeError, r"non-zero channels"),
    ("int32 indices", lambda: ops.max_pool2d_backward(x(1, 1, 2, 2), x(1, 1, 4, 4),
                                                      torch.zeros(1, 1, 2, 2, dtype=torch.int32)),
     RuntimeError, r"expected int64 indices, got Int"),
    ("indices of the wrong size", lambda: ops.max_pool2d_backward(x(1, 1, 2, 2), x(1, 1, 4, 4),
                                                                  torch.zeros(1, 1, 2, 3, dtype=torch.int64)),
     RuntimeError, r"indices of the size of grad_output \[1, 1, 2, 2\], got \[1, 1, 2, 3\]"),
    ("avg grad_output of the wrong size", lambda: ops.avg_pool2d_backward(x(1, 1, 3, 3), x(1, 1, 4, 4), [2, 2],
                                                                          [2, 2], [0, 0], False, True, None),
     RuntimeError, r"expected grad_output of size \[1, 1, 2, 2\], got \[1, 1, 3, 3\]"),
]


@pytest.mark.parametrize("call,error,message", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_call_raises_a_named_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


TORCH_REJECTS = [
    lambda F: F.conv2d(x(1, 3, 8, 8), x(4, 2, 3, 3)),
    lambda F: F.conv2d(x(1, 3, 2, 2), x(4, 3, 3, 3)),
    lambda F: F.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), stride=0),
    lambda F: F.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), padding=-1),
    lambda F: F.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), x(3)),
    lambda F: F.conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3, dtype=torch.float64)),
    lambda F: F.conv_transpose2d(x(1, 3, 5, 5), x(4, 2, 3, 3)),
    lambda F: F.conv_transpose2d(x(1, 2, 5, 5), x(2, 2, 3, 3), stride=2, output_padding=2),
    lambda F: F.conv_transpose2d(x(1, 2, 1, 1), x(2, 2, 1, 1), padding=1),
    lambda F: F.conv_transpose2d(x(1, 2, 5, 5, dtype=torch.float16), x(2, 2, 3, 3)),
    lambda F: F.max_pool2d(x(1, 1, 8, 8), 3, padding=2),
    lambda F: F.max_pool2d(x(1, 1, 2, 2), 3),
    lambda F: F.avg_pool2d(x(1, 1, 4, 4), 2, divisor_override=0),
    lambda F: F.max_pool2d(x(1, 1, 4, 4), 2, stride=0),
]


@pytest.mark.parametrize("call", TORCH_REJECTS)
def test_calls_torch_rejects_are_rejected(call):
    with pytest.raises(RuntimeError):
        call(torch.nn.functional)
    with pytest.raises(RuntimeError):
        call(convext)


def test_a_failed_call_leaves_its_inputs_untouched():
    a, w = x(1, 3, 8, 8), x(4, 2, 3, 3)
    before = (a.clone(), w.clone())
    with pytest.raises(RuntimeError):
        convext.conv2d(a, w)
    assert torch.equal(a, before[0]) and torch.equal(w, before[1])
