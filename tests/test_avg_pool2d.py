"""convext.avg_pool2d against the naive reference and torch, forward and gradient."""

import random

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    DTYPES,
    LAYOUTS,
    assert_close,
    assert_same_results,
    case_id,
    cases,
    is_channels_last,
    random_pool_case,
    with_layout,
)

import convext
from convext import reference


def random_avg_case(rng, max_size=10):
    case = random_pool_case(rng, max_size=max_size, dilation=False)
    options = dict(count_include_pad=rng.random() < 0.5, divisor_override=rng.choice([None, None, 1, 3, -2]))
    return case, options


def avg_args(case, options):
    return dict(kernel_size=case.kernel, stride=case.stride, padding=case.padding, ceil_mode=case.ceil_mode,
                **options)


def avg_case_id(case_and_options):
    case, options = case_and_options
    return case_id(case) + "," + ",".join(f"{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("case_and_options", cases(random_avg_case, 30, seed=21), ids=avg_case_id)
def test_forward_and_grad_match_reference(case_and_options, cpu_isa):
    args = avg_args(*case_and_options)
    case = case_and_options[0]
    x = torch.randn(case.batch, case.channels, *case.size, dtype=torch.float64, requires_grad=True)
    assert_same_results(lambda x: convext.avg_pool2d(x, **args), lambda x: reference.avg_pool2d(x, **args), [x])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_and_options", cases(random_avg_case, 30, seed=22, max_size=24), ids=avg_case_id)
def test_forward_and_grad_match_torch(case_and_options, dtype, device):
    args = avg_args(*case_and_options)
    case = case_and_options[0]
    x = torch.randn(case.batch, case.channels, *case.size, dtype=dtype, device=device, requires_grad=True)
    out, (grad,), ref, (ref_grad,) = assert_same_results(
        lambda x: convext.avg_pool2d(x, **args), lambda x: F.avg_pool2d(x, **args), [x])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_many_channels_match_torch(count_include_pad, layout, dtype, cpu_isa):
    """341 channels: on every SIMD path, calls of 16, 4 and 1 vectors of channels
    and a scalar tail; overlapping, padded windows with every divisor rule."""
    x = with_layout(torch.randn(2, 341, 13, 11, dtype=dtype), layout).requires_grad_()
    args = dict(kernel_size=(3, 2), stride=(2, 1), padding=1, ceil_mode=True, count_include_pad=count_include_pad)
    assert_same_results(lambda x: convext.avg_pool2d(x, **args), lambda x: F.avg_pool2d(x, **args), [x])


@pytest.mark.parametrize("stride_w", [1, 2, 3])
@pytest.mark.parametrize("channels", [1, 6, 7])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_few_channels_match_torch(layout, channels, stride_w, cpu_isa):
    """Fewer channels than lanes: each vector holds the channels of several
    neighbouring outputs, in rows of full windows shorter and longer than a
    vector (7 and 40 wide)."""
    args = dict(kernel_size=(2, 3), stride=(2, stride_w), padding=(0, 1), count_include_pad=False)
    for width in (7, 40):
        x = torch.randn(2, channels, 6, width, dtype=torch.float64)
        x = with_layout(x, layout).requires_grad_()
        assert_same_results(lambda x: convext.avg_pool2d(x, **args), lambda x: F.avg_pool2d(x, **args), [x])


@pytest.mark.parametrize("stride_w", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wide_planes_match_torch(dtype, stride_w, cpu_isa):
    """NCHW rows of full windows long enough for blocks of 4, 2 and 1 vectors
    of neighbouring outputs on every path (4 vectors: 64 float32 outputs on
    AVX-512), the last overlapping the one before."""
    args = dict(kernel_size=3, stride=(2, stride_w), padding=1, count_include_pad=False)
    for width in (20, 61, 130, 250):
        x = torch.randn(2, 2, 5, width, dtype=dtype, requires_grad=True)
        assert_same_results(lambda x: convext.avg_pool2d(x, **args), lambda x: F.avg_pool2d(x, **args), [x])


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode", [
    (2, 2, 0, False),  # windows tile the input
    (2, 3, 0, False),  # gaps between windows
    (3, 3, 1, True),   # windows clipped by the padding, the last one past the input
    ((2, 1), (3, 2), (1, 0), False),  # gaps in rows only, the first row in the padding
])
@pytest.mark.parametrize("channels", [1, 5, 40])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_disjoint_windows_backward_matches_torch(kernel, stride, padding, ceil_mode, channels, layout, cpu_isa):
    """Windows that share no input: the backward stores each share and zeroes
    only the inputs no window covers, so none may be left as the allocator
    gave it (the memory before the call is filled with NaN to show that)."""
    x = with_layout(torch.randn(2, channels, 11, 13, dtype=torch.float64), layout)
    args = ([kernel] * 2 if isinstance(kernel, int) else kernel, [stride] * 2 if isinstance(stride, int) else stride,
            [padding] * 2 if isinstance(padding, int) else padding, ceil_mode, True, None)
    grad_output = torch.randn_like(torch.ops.aten.avg_pool2d(x, *args))
    expected = torch.ops.aten.avg_pool2d_backward(grad_output, x, *args)
    torch.full_like(x, float("nan"))  # freed at once: grad_input likely reuses it
    assert_close(torch.ops.convext.avg_pool2d_backward(grad_output, x, *args), expected)


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (2, 3, 0), (3, 2, 1)])
@pytest.mark.parametrize("channels", [32, 40, 272])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_streamed_outputs_match_torch(kernel, stride, padding, channels, dtype, cpu_isa, streaming_stores):
    """channels_last outputs and input gradients written by streaming stores,
    whole channel vectors at a time (calls of 16, 4 and 1 vectors at 272
    channels; 40 channels are whole vectors at 8 lanes, not at 16, where the
    stores stay plain): windows that tile the input, whose backward streams
    each share, that leave gaps zeroed by plain stores beside the streamed
    ones, and that overlap, whose backward adds instead."""
    x = with_layout(torch.randn(2, channels, 11, 13, dtype=dtype), "channels_last").requires_grad_()
    args = dict(kernel_size=kernel, stride=stride, padding=padding)
    assert_same_results(lambda x: convext.avg_pool2d(x, **args), lambda x: F.avg_pool2d(x, **args), [x])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode", [
    (2, 2, 0, False),  # windows side by side, K = stride columns each: shares repeated K times
    (1, 1, 0, False),  # no shuffles for K = 1 or 5: a gather
    (3, 3, 1, True),   # and a border on either side
    (4, 4, 2, False),
    (5, 5, 2, True),
    (3, 2, 1, False),  # two windows over some columns
    (3, 1, 1, True),   # three
    (2, 3, 0, True),   # columns no window covers
])
def test_plane_backward_matches_torch(kernel, stride, padding, ceil_mode, dtype, cpu_isa):
    """NCHW planes: each input row written once, from the shares of the output
    rows over it, with rows of full windows shorter than a vector, one vector
    long, and several vectors and a few lanes (the last vector overlapping the
    one before), for 4 to 16 lanes; every divisor rule. No input may be left
    as the allocator gave it (the memory is filled with NaN first)."""
    for windows in (3, 4, 8, 16, 37):
        x = torch.randn(2, 3, 7, windows * stride + 1, dtype=dtype)
        for count_include_pad, divisor_override in ((True, None), (False, None), (False, 3)):
            args = ([kernel] * 2, [stride] * 2, [padding] * 2, ceil_mode, count_include_pad, divisor_override)
            grad_output = torch.randn_like(torch.ops.aten.avg_pool2d(x, *args))
            expected = torch.ops.aten.avg_pool2d_backward(grad_output, x, *args)
            torch.full_like(x, float("nan"))  # freed at once: grad_input likely reuses it
            assert_close(torch.ops.convext.avg_pool2d_backward(grad_output, x, *args), expected)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_any_layout_gives_torchs_values_and_layout(layout, device, cpu_isa):
    x = with_layout(torch.randn(2, 5, 13, 11, dtype=torch.float64, device=device), layout).requires_grad_()
    args = dict(kernel_size=(3, 2), stride=(2, 1), padding=1, ceil_mode=True, count_include_pad=False)
    # torch's values come from its CPU kernels: its CUDA channels_last backward
    # leaves out the padding (seen in torch 2.11; pytorch/pytorch#188344).
    out, (grad,), ref, (ref_grad,) = assert_same_results(
        lambda x: convext.avg_pool2d(x, **args), lambda x: F.avg_pool2d(x.cpu(), **args).to(x.device), [x])
    assert is_channels_last(out) == is_channels_last(ref)
    assert is_channels_last(grad) == is_channels_last(ref_grad)


def test_stride_defaults_to_kernel_size_and_unbatched_input_works():
    x = torch.randn(3, 9, 8)
    assert_close(convext.avg_pool2d(x, 3), F.avg_pool2d(x, 3))
    assert_close(convext.avg_pool2d(x, (2, 3), padding=1), F.avg_pool2d(x, (2, 3), padding=1))


def test_empty_batch():
    x = torch.randn(0, 2, 6, 6, requires_grad=True)
    out = convext.avg_pool2d(x, 2)
    assert out.shape == (0, 2, 3, 3)
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("seed", range(4))
def test_gradcheck_and_gradgradcheck(seed):
    case, options = random_avg_case(random.Random(100 + seed), max_size=6)
    args = avg_args(case, options)
    x = torch.randn(case.batch, case.channels, *case.size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: convext.avg_pool2d(x, **args), (x,))
    assert torch.autograd.gradgradcheck(lambda x: convext.avg_pool2d(x, **args), (x,))
