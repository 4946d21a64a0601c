"""convext.conv_transpose2d against the naive reference and torch, forward and every gradient."""

import random

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    DTYPES,
    LAYOUTS,
    ConvTransposeCase,
    assert_close,
    assert_same_results,
    case_id,
    cases,
    is_channels_last,
    random_conv_transpose_case,
    with_layout,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import convext
from convext import reference

REFERENCE_CASES = cases(random_conv_transpose_case, 24, seed=11)
TORCH_CASES = cases(random_conv_transpose_case, 24, seed=12, max_size=14, max_group_channels=6)


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=case_id)
def test_forward_and_grads_match_reference(case, cpu_isa):
    assert_same_results(
        lambda x, w, b: convext.conv_transpose2d(x, w, b, *case.args()),
        lambda x, w, b: reference.conv_transpose2d(x, w, b, *case.args()),
        case.tensors(torch.float64),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_forward_and_grads_match_torch(case, dtype, device):
    assert_same_results(
        lambda x, w, b: convext.conv_transpose2d(x, w, b, *case.args()),
        lambda x, w, b: F.conv_transpose2d(x, w, b, *case.args()),
        case.tensors(dtype, device),
    )


@pytest.mark.parametrize("weight_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("input_layout", LAYOUTS)
def test_any_layout_gives_torchs_values_and_layout(input_layout, weight_layout, device, cpu_isa):
    case = ConvTransposeCase(2, 6, 4, (7, 5), (3, 2), (2, 1), (1, 0), (1, 2), 2, True, output_padding=(1, 0))
    x, w, b = case.tensors(torch.float64, device)
    x, w = with_layout(x, input_layout), with_layout(w, weight_layout)
    out, grads, ref_out, ref_grads = assert_same_results(
        lambda x, w, b: convext.conv_transpose2d(x, w, b, *case.args()),
        lambda x, w, b: F.conv_transpose2d(x, w, b, *case.args()),
        [x, w, b],
    )
    assert is_channels_last(out) == is_channels_last(ref_out)
    assert [is_channels_last(g) for g in grads[:2]] == [is_channels_last(g) for g in ref_grads[:2]]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    layout=st.sampled_from(LAYOUTS),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_random_cases_match_torch(seed, layout, dtype):
    """torch gets x contiguous: its own channels_last weight gradient is wrong
    on some cases (test_channels_last_weight_grad_where_torch_errs)."""
    case = random_conv_transpose_case(random.Random(seed), max_size=10, max_group_channels=4)
    x, w, b = case.tensors(dtype)
    assert_same_results(
        lambda x, w, b: convext.conv_transpose2d(x, w, b, *case.args()),
        lambda x, w, b: F.conv_transpose2d(x.contiguous(), w, b, *case.args()),
        [with_layout(x, layout), w, b],
    )


def test_channels_last_weight_grad_where_torch_errs(cpu_isa):
    """A case (hypothesis seed 15651) where torch 2.13's weight gradient of a
    channels_last input is wrong (80% off in one element; right for a contiguous
    one): 1x1 kernel, stride 2, dilation (2, 3), output_padding 1. convext
    matches the reference on both layouts."""
    case = ConvTransposeCase(batch=2, in_channels=3, out_channels=1, size=(3, 4), kernel=(1, 1), stride=(2, 2),
                             padding=(0, 0), dilation=(2, 3), groups=1, bias=False, output_padding=(1, 1))
    x, w, b = case.tensors(torch.float64)
    for layout in ("contiguous", "channels_last"):
        assert_same_results(
            lambda x, w, b: convext.conv_transpose2d(x, w, b, *case.args()),
            lambda x, w, b: reference.conv_transpose2d(x, w, b, *case.args()),
            [with_layout(x, layout), w, b],
        )


@pytest.mark.parametrize("channels,kernel,stride", [(8, 3, 2), (37, 3, 1), (21, (2, 4), 2), (5, 9, 2)])
def test_depthwise_with_bias_matches_torch(channels, kernel, stride, cpu_isa):
    """The depthwise kernels start from the bias: at stride 2 the gather per
    output pixel, at stride 1 the forward kernel; 81 taps take the general path."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(2, channels, 9, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(channels, 1, kh, kw, dtype=torch.float64, requires_grad=True)
    b = torch.randn(channels, dtype=torch.float64, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv_transpose2d(x, w, b, stride, 1, stride - 1, channels),
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride, 1, stride - 1, channels),
        [x, w, b],
    )


@pytest.mark.parametrize("width,groups", [(2, 5), (4, 7)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lane_groups_with_bias_match_torch(width, groups, stride, layout, cpu_isa):
    """Groups of as many input as output channels start from the bias too: at
    stride 1 the forward lane-group kernel (flipped, roles swapped weights),
    at stride 2 the same on the input spread out."""
    channels = width * groups
    x = with_layout(torch.randn(2, channels, 9, 15, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(channels, width, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(channels, dtype=torch.float64, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv_transpose2d(x, w, b, stride, 1, stride - 1, groups),
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride, 1, stride - 1, groups),
        [x, w, b],
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("expected", [reference.conv_transpose2d, F.conv_transpose2d], ids=["reference", "torch"])
def test_outputs_no_tap_reaches_hold_the_bias(expected, layout, cpu_isa):
    """With the stride past the kernel, every third output row and column
    lies between the inputs' windows: only the bias reaches it."""
    x = with_layout(torch.randn(2, 4, 5, 6, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    args = (3, 0, (2, 1))
    out = convext.conv_transpose2d(x, w, b, *args)
    assert torch.equal(out[:, :, 2::3, :], b.detach().view(1, 3, 1, 1).expand_as(out[:, :, 2::3, :]))
    assert_same_results(
        lambda x, w, b: convext.conv_transpose2d(x, w, b, *args),
        lambda x, w, b: expected(x, w, b, *args),
        [x, w, b],
    )


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_dense_phases_in_bands_start_from_the_bias(groups, layout, cpu_isa):
    """Stride 2 with channels for the dense kernels: the four phases run band
    by band of output rows into their places, each adding the bias once."""
    x = with_layout(torch.randn(2, 10 * groups, 19, 21, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(10 * groups, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6 * groups, dtype=torch.float64, requires_grad=True)
    args = (2, 1, 1, groups)
    assert_same_results(
        lambda x, w, b: convext.conv_transpose2d(x, w, b, *args),
        lambda x, w, b: F.conv_transpose2d(x, w, b, *args),
        [x, w, b],
    )


@pytest.mark.parametrize("groups", [1, 3])
def test_output_padding_past_the_stride_matches_torch(groups):
    """output_padding >= stride (dilation larger) adds rows no input reaches:
    the gradients crop or pad by them."""
    x = torch.randn(2, 3 * groups, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3 * groups, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    args = ((1, 2), 1, (2, 2), groups, (3, 3))
    assert_same_results(
        lambda x, w: convext.conv_transpose2d(x, w, None, *args),
        lambda x, w: F.conv_transpose2d(x, w, None, *args),
        [x, w],
    )


def test_is_the_adjoint_of_conv2d():
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)> for the same parameters."""
    x, w = torch.randn(2, 6, 11, 10, dtype=torch.float64), torch.randn(4, 3, 3, 2, dtype=torch.float64)
    y = convext.conv2d(x, w, None, 2, 1, (1, 2), 2)
    g = torch.randn_like(y)
    back = convext.conv_transpose2d(g, w, None, 2, 1, (0, 1), 2, (1, 2))
    assert back.shape == x.shape
    assert_close((y * g).sum(), (x * back).sum())


def test_the_course_trans_conv_example():
    X = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    K = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    expected = torch.tensor([[0.0, 0.0, 1.0], [0.0, 4.0, 6.0], [4.0, 12.0, 9.0]])
    assert torch.equal(reference.trans_conv(X, K), expected)
    assert torch.equal(convext.conv_transpose2d(X[None, None], K[None, None])[0, 0], expected)


def test_unbatched_input_gives_unbatched_output():
    x, w = torch.randn(3, 5, 5, dtype=torch.float64), torch.randn(3, 4, 3, 3, dtype=torch.float64)
    out = convext.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    assert out.shape == (4, 10, 10)
    assert_close(out, F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1))


def test_empty_batch_gives_empty_output_and_zero_weight_grad():
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    b = torch.randn(2, requires_grad=True)
    out = convext.conv_transpose2d(x, w, b, 2)
    assert out.shape == (0, 2, 9, 9)
    out.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


@pytest.mark.parametrize("case", cases(random_conv_transpose_case, 4, seed=13, max_size=4, max_group_channels=2),
                         ids=case_id)
def test_gradcheck_and_gradgradcheck(case):
    tensors = [t for t in case.tensors(torch.float64) if t is not None]

    def fn(x, w, b=None):
        return convext.conv_transpose2d(x, w, b, *case.args())

    assert torch.autograd.gradcheck(fn, tensors)
    assert torch.autograd.gradgradcheck(fn, tensors)
