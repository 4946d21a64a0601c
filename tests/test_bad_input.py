"""Malformed calls raise a Python exception that names the problem; nothing crashes."""

import re

import pytest
import torch

import convext

ops = torch.ops.convext


def x(*shape, **kw):
    return torch.randn(*shape, **kw)


# max_pool2d_backward's window arguments for a 2x2 pool of stride 2.
POOL_2X2 = ([2, 2], [2, 2], [0, 0], [1, 1], False)

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
     RuntimeError, r"expected grad_output of size \[1, 4, 6, 6\] for input of size \[1, 3, 8, 8\], got \[1, 4, 5, 5\]"),
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
                                                      torch.zeros(1, 1, 2, 2, dtype=torch.int32), *POOL_2X2),
     RuntimeError, r"expected int64 indices, got Int"),
    ("indices of the wrong size", lambda: ops.max_pool2d_backward(x(1, 1, 2, 2), x(1, 1, 4, 4),
                                                                  torch.zeros(1, 1, 2, 3, dtype=torch.int64),
                                                                  *POOL_2X2),
     RuntimeError, r"indices of the size of grad_output \[1, 1, 2, 2\], got \[1, 1, 2, 3\]"),
    ("avg grad_output of the wrong size", lambda: ops.avg_pool2d_backward(x(1, 1, 3, 3), x(1, 1, 4, 4), [2, 2],
                                                                          [2, 2], [0, 0], False, True, None),
     RuntimeError, r"expected grad_output of size \[1, 1, 2, 2\] for input of size \[1, 1, 4, 4\], got \[1, 1, 3, 3\]"),
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


@pytest.mark.parametrize("value", ["many", "0", "-4096", "64k"])
def test_a_malformed_chunk_size_is_named(value, monkeypatch):
    monkeypatch.setenv("CONVEXT_CPU_CHUNK_BYTES", value)
    with pytest.raises(RuntimeError, match=f"CONVEXT_CPU_CHUNK_BYTES={value}: expected a positive number of bytes"):
        convext.conv2d(x(1, 32, 8, 8), x(32, 32, 3, 3))  # dense: the path that reads it


@pytest.mark.parametrize("value", ["many", "0", "1.5"])
def test_a_malformed_band_size_is_named(value, monkeypatch):
    monkeypatch.setenv("CONVEXT_CPU_BAND_BYTES", value)
    with pytest.raises(RuntimeError, match=f"CONVEXT_CPU_BAND_BYTES={value}: expected a positive number of bytes"):
        grouped = x(1, 32, 8, 8).contiguous(memory_format=torch.channels_last)
        convext.conv2d(grouped, x(32, 16, 3, 3), groups=2)  # channels_last, grouped: the path that reads it


@pytest.mark.parametrize("value", ["many", "-1", "4M"])
def test_a_malformed_streaming_threshold_is_named(value, monkeypatch):
    monkeypatch.setenv("CONVEXT_CPU_STREAM_BYTES", value)
    with pytest.raises(RuntimeError, match=f"CONVEXT_CPU_STREAM_BYTES={value}: expected a number of bytes, 0 or more"):
        depthwise = x(1, 16, 8, 8).contiguous(memory_format=torch.channels_last)
        convext.conv2d(depthwise, x(16, 1, 3, 3), groups=16)  # channels_last depthwise: a path that reads it


# ---- every argument of every entry point, each kind of wrong value ----------
#
# Each entry point has one valid call. Every argument is then replaced, one at a
# time, by each wrong value of its kind; the call must raise TypeError,
# ValueError or RuntimeError whose message names that argument.

def _tensor_mutations(valid):
    yield "not a tensor", valid.tolist()
    yield "one more dimension", valid.unsqueeze(0)
    if valid.dim() > 1:
        yield "one dimension less", valid[0]
    yield "one more element along dim 0", torch.cat([valid, valid[:1]])
    if valid.is_floating_point():
        yield "float64", valid.double()
        yield "int64", valid.long()
        yield "on the meta device", valid.to("meta")
    else:
        yield "int32", valid.int()
        yield "float32", valid.float()


def _pair_mutations(minimum):
    yield "three values", [1, 1, 1]
    yield "a float", 1.5
    yield "a string", "2"
    yield "negative", -1
    if minimum > 0:
        yield "zero", 0
    yield "2^62", 2**62
    yield "past int64", 2**64


def _positive_pairs(valid):
    return _pair_mutations(1)


def _non_negative_pairs(valid):
    return _pair_mutations(0)


def _int_mutations(valid):
    yield "zero", 0
    yield "negative", -1
    yield "a float", 1.5
    yield "a string", "1"
    yield "2^62", 2**62


def _optional_int_mutations(valid):
    yield "zero", 0
    yield "a float", 1.5
    yield "a string", "1"


def _bool_mutations(valid):
    yield "a string", "yes"
    yield "a list", [True]


def _python_truth(valid):
    """The functionals take any value as a bool, as torch.nn.functional does."""
    return ()


def _image():
    return torch.randn(2, 4, 6, 6)


def _indices():
    _, indices = ops.max_pool2d(_image(), [2, 2], [2, 2], [0, 0], [1, 1], False)
    return indices


# entry point, its arguments in order: (name, valid value, mutations of its kind)
ENTRY_POINTS = {
    "convext.conv2d": (convext.conv2d, [
        ("input", _image, _tensor_mutations), ("weight", lambda: x(6, 2, 3, 3), _tensor_mutations),
        ("bias", lambda: x(6), _tensor_mutations), ("stride", 1, _positive_pairs),
        ("padding", 1, _non_negative_pairs), ("dilation", 1, _positive_pairs),
        ("groups", 2, _int_mutations)]),
    "convext.conv_transpose2d": (convext.conv_transpose2d, [
        ("input", _image, _tensor_mutations), ("weight", lambda: x(4, 3, 3, 3), _tensor_mutations),
        ("bias", lambda: x(6), _tensor_mutations), ("stride", 2, _positive_pairs),
        ("padding", 1, _non_negative_pairs), ("output_padding", 1, _non_negative_pairs),
        ("groups", 2, _int_mutations), ("dilation", 1, _positive_pairs)]),
    "convext.max_pool2d": (convext.max_pool2d, [
        ("input", _image, _tensor_mutations), ("kernel_size", 3, _positive_pairs),
        ("stride", 2, _positive_pairs), ("padding", 1, _non_negative_pairs),
        ("dilation", 1, _positive_pairs)]),
    "convext.avg_pool2d": (convext.avg_pool2d, [
        ("input", _image, _tensor_mutations), ("kernel_size", 3, _positive_pairs),
        ("stride", 2, _positive_pairs), ("padding", 1, _non_negative_pairs),
        ("ceil_mode", False, _python_truth), ("count_include_pad", True, _python_truth),
        ("divisor_override", 5, _optional_int_mutations)]),
    "ops.conv2d_backward_input": (ops.conv2d_backward_input, [
        ("grad_output", lambda: x(2, 6, 6, 6), _tensor_mutations), ("input", _image, _tensor_mutations),
        ("weight", lambda: x(6, 2, 3, 3), _tensor_mutations), ("stride", [1, 1], _positive_pairs),
        ("padding", [1, 1], _non_negative_pairs), ("dilation", [1, 1], _positive_pairs),
        ("groups", 2, _int_mutations)]),
    "ops.conv2d_backward_weight": (ops.conv2d_backward_weight, [
        ("grad_output", lambda: x(2, 6, 6, 6), _tensor_mutations), ("input", _image, _tensor_mutations),
        ("weight", lambda: x(6, 2, 3, 3), _tensor_mutations), ("stride", [1, 1], _positive_pairs),
        ("padding", [1, 1], _non_negative_pairs), ("dilation", [1, 1], _positive_pairs),
        ("groups", 2, _int_mutations)]),
    "ops.conv2d_backward_bias": (ops.conv2d_backward_bias, [
        ("grad_output", lambda: x(2, 6, 6, 6), _tensor_mutations)]),
    "ops.max_pool2d_backward": (ops.max_pool2d_backward, [
        ("grad_output", lambda: x(2, 4, 3, 3), _tensor_mutations), ("input", _image, _tensor_mutations),
        ("indices", _indices, _tensor_mutations), ("kernel_size", [2, 2], _positive_pairs),
        ("stride", [2, 2], _positive_pairs), ("padding", [0, 0], _non_negative_pairs),
        ("dilation", [1, 1], _positive_pairs), ("ceil_mode", False, _bool_mutations)]),
    "ops.avg_pool2d_backward": (ops.avg_pool2d_backward, [
        ("grad_output", lambda: x(2, 4, 3, 3), _tensor_mutations), ("input", _image, _tensor_mutations),
        ("kernel_size", [2, 2], _positive_pairs), ("stride", [2, 2], _positive_pairs),
        ("padding", [0, 0], _non_negative_pairs), ("ceil_mode", False, _bool_mutations),
        ("count_include_pad", True, _bool_mutations), ("divisor_override", None, _optional_int_mutations)]),
}

# Wrong values that are valid after all, for this argument: torch takes them too.
ACCEPTED = {
    # conv2d_backward_bias reads only the channel count and sums the rest.
    ("ops.conv2d_backward_bias", "grad_output", "one more element along dim 0"),
    # An unbatched (C, H, W) input to the functionals is a batch of one.
    ("convext.conv2d", "input", "one dimension less"),
    ("convext.conv_transpose2d", "input", "one dimension less"),
    ("convext.max_pool2d", "input", "one dimension less"),
    ("convext.avg_pool2d", "input", "one dimension less"),
    # A batch of 3 images instead of 2: still a valid input.
    ("convext.conv2d", "input", "one more element along dim 0"),
    ("convext.conv_transpose2d", "input", "one more element along dim 0"),
    ("convext.max_pool2d", "input", "one more element along dim 0"),
    ("convext.avg_pool2d", "input", "one more element along dim 0"),
    # The only tensor of the call: any supported dtype and any device will do.
    ("convext.max_pool2d", "input", "float64"),
    ("convext.max_pool2d", "input", "on the meta device"),
    ("convext.avg_pool2d", "input", "float64"),
    ("convext.avg_pool2d", "input", "on the meta device"),
    ("ops.conv2d_backward_bias", "grad_output", "float64"),
    ("ops.conv2d_backward_bias", "grad_output", "on the meta device"),
}


def _valid_and_wrong_values(entry):
    """The valid call's values, and per argument name its wrong values by description."""
    arguments = ENTRY_POINTS[entry][1]
    values = [value() if callable(value) else value for _, value, _ in arguments]
    wrong = {name: dict(mutations(value)) for (name, _, mutations), value in zip(arguments, values, strict=True)}
    return values, wrong


def _bad_calls():
    for entry in ENTRY_POINTS:
        for name, wrong_values in _valid_and_wrong_values(entry)[1].items():
            for what in wrong_values:
                if (entry, name, what) not in ACCEPTED:
                    yield pytest.param(entry, name, what, id=f"{entry}-{name}-{what}")


def _call(entry, name, what):
    fn, arguments = ENTRY_POINTS[entry]
    values, wrong = _valid_and_wrong_values(entry)
    values[[n for n, _, _ in arguments].index(name)] = wrong[name][what]
    return fn(*values)


@pytest.mark.parametrize("entry,name,what", list(_bad_calls()))
def test_every_argument_rejects_wrong_values_by_name(entry, name, what):
    with pytest.raises((TypeError, ValueError, RuntimeError)) as raised:
        _call(entry, name, what)
    assert re.search(rf"\b{name}\b", str(raised.value)), str(raised.value)


@pytest.mark.parametrize("entry,name,what", sorted(ACCEPTED), ids=[f"{e}-{n}-{w}" for e, n, w in sorted(ACCEPTED)])
def test_values_torch_takes_are_taken(entry, name, what):
    assert isinstance(_call(entry, name, what), torch.Tensor)


def test_window_values_up_to_2_61_are_taken():
    """The largest window value: a stride past the input gives one output per
    axis, with no overflow in the shape rules (run under UBSan by .ci/sanitize)."""
    big = 2**61
    assert convext.conv2d(x(1, 2, 8, 8), x(2, 2, 3, 3), stride=big).shape == (1, 2, 1, 1)
    assert convext.conv2d(x(1, 16, 8, 8), x(16, 16, 3, 3), stride=big).shape == (1, 16, 1, 1)
    assert convext.max_pool2d(x(1, 2, 8, 8), 2, stride=big, ceil_mode=True).shape == (1, 2, 1, 1)
    assert convext.avg_pool2d(x(1, 2, 8, 8), 2, stride=big, ceil_mode=True).shape == (1, 2, 1, 1)
    with pytest.raises(RuntimeError, match=r"stride must be at most 2\^61"):
        convext.conv2d(x(1, 2, 8, 8), x(2, 2, 3, 3), stride=big + 1)
    with pytest.raises(RuntimeError, match=r"padding is more than 2\^61"):
        convext.conv2d(x(1, 2, 8, 8), x(2, 2, 3, 3), padding=2**60)
    with pytest.raises(RuntimeError, match=r"output height .* is more than 2\^61"):
        convext.conv_transpose2d(x(1, 2, 8, 8), x(2, 2, 3, 3), stride=big, output_padding=big - 1)
