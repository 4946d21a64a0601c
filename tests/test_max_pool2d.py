"""convext.max_pool2d against the naive reference and torch: values, indices and gradients."""

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


def pool_args(case):
    return dict(kernel_size=case.kernel, stride=case.stride, padding=case.padding, dilation=case.dilation,
                ceil_mode=case.ceil_mode, return_indices=True)


def distinct_values(case, dtype=torch.float64, device="cpu"):
    """A random permutation: no ties, so every window's argmax is unique and
    finite differences do not cross a tie."""
    n = case.batch * case.channels * case.size[0] * case.size[1]
    x = torch.randperm(n, device=device).to(dtype).view(case.batch, case.channels, *case.size)
    return x.requires_grad_()


@pytest.mark.parametrize("case", cases(random_pool_case, 30, seed=11), ids=case_id)
def test_forward_indices_and_grad_match_reference(case, cpu_isa):
    x = torch.randn(case.batch, case.channels, *case.size, dtype=torch.float64, requires_grad=True)
    assert_same_results(lambda x: convext.max_pool2d(x, **pool_args(case)),
                        lambda x: reference.max_pool2d(x, **pool_args(case)), [x])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", cases(random_pool_case, 30, seed=12, max_size=24), ids=case_id)
def test_forward_indices_and_grad_match_torch(case, dtype, device):
    # Rounded values make ties common, so the tie rule is exercised too.
    x = (torch.randn(case.batch, case.channels, *case.size, device=device) * 2).round().to(dtype).requires_grad_()
    assert_same_results(lambda x: convext.max_pool2d(x, **pool_args(case)),
                        lambda x: F.max_pool2d(x, **pool_args(case)), [x])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_many_channels_match_torch(layout, dtype, cpu_isa):
    """150 channels: vectors of channels several at a time, one at a time and a
    scalar tail; overlapping, padded and dilated windows; ties from rounding."""
    x = (torch.randn(2, 150, 13, 11) * 2).round().to(dtype)
    x = with_layout(x, layout).requires_grad_()
    args = dict(kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True, return_indices=True)
    assert_same_results(lambda x: convext.max_pool2d(x, **args), lambda x: F.max_pool2d(x, **args), [x])


@pytest.mark.parametrize("stride_w", [1, 2, 3])
@pytest.mark.parametrize("channels", [1, 6, 7])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_few_channels_match_torch(layout, channels, stride_w, cpu_isa):
    """Fewer channels than lanes: each vector holds the channels of several
    neighbouring outputs, in rows of full windows shorter and longer than a
    vector (7 and 40 wide), with ties from rounding."""
    args = dict(kernel_size=(2, 3), stride=(2, stride_w), padding=(0, 1), return_indices=True)
    for width in (7, 40):
        x = (torch.randn(2, channels, 6, width) * 2).round()
        x = with_layout(x, layout).requires_grad_()
        assert_same_results(lambda x: convext.max_pool2d(x, **args), lambda x: F.max_pool2d(x, **args), [x])


@pytest.mark.parametrize("stride_w", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wide_planes_match_torch(dtype, stride_w, cpu_isa):
    """NCHW rows of full windows long enough for blocks of 4, 2 and 1 vectors
    of neighbouring outputs on every path (4 vectors: 64 float32 outputs on
    AVX-512), the last overlapping the one before, with ties and NaNs."""
    args = dict(kernel_size=3, stride=(2, stride_w), padding=1, return_indices=True)
    for width in (20, 61, 130, 250):
        x = (torch.randn(2, 2, 5, width) * 2).round().to(dtype)
        x.view(-1)[torch.randperm(x.numel(), generator=torch.Generator().manual_seed(width))[:9]] = float("nan")
        assert_same_results(lambda x: convext.max_pool2d(x, **args), lambda x: F.max_pool2d(x, **args),
                            [x.requires_grad_()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_of_each_unrolled_channel_count_matches_torch(dtype, cpu_isa):
    """Channels_last images of 1 to 8 channels scatter with the channel count
    known at compile time, 9 and more with a loop: overlapping windows, so
    that inputs take the gradients of several outputs, with ties."""
    args = dict(kernel_size=3, stride=2, padding=1, return_indices=True)
    for channels in range(1, 10):
        x = with_layout((torch.randn(2, channels, 9, 8) * 2).round().to(dtype), "channels_last").requires_grad_()
        assert_same_results(lambda x: convext.max_pool2d(x, **args), lambda x: F.max_pool2d(x, **args), [x])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_any_layout_gives_torchs_values_and_layout(layout, device, cpu_isa):
    x = torch.randn(2, 5, 13, 11, dtype=torch.float64, device=device)
    x = with_layout(x, layout).requires_grad_()
    args = dict(kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True, return_indices=True)
    (out, idx), (grad,), (ref, _), (ref_grad,) = assert_same_results(
        lambda x: convext.max_pool2d(x, **args), lambda x: F.max_pool2d(x, **args), [x])
    assert is_channels_last(out) == is_channels_last(ref) == is_channels_last(idx)
    assert is_channels_last(grad) == is_channels_last(ref_grad)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_nan_and_inf_follow_torchs_rule(layout, cpu_isa):
    nan, inf = float("nan"), float("inf")
    plane = torch.tensor([[1.0, nan, 3.0, nan], [5.0, 5.0, nan, 0.0], [-inf, -inf, 2.0, 2.0], [-inf, -inf, 2.0, inf]])
    x = with_layout(plane.expand(2, 3, 4, 4), layout)
    for kwargs in [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=(1, 3), stride=1)]:
        out, idx = convext.max_pool2d(x, return_indices=True, **kwargs)
        ref, ref_idx = F.max_pool2d(x, return_indices=True, **kwargs)
        assert_close(out, ref)
        assert torch.equal(idx, ref_idx)
        ref_out, reference_idx = reference.max_pool2d(x, return_indices=True, **kwargs)
        assert_close(out, ref_out)
        assert torch.equal(idx, reference_idx)


def test_stride_defaults_to_kernel_size_and_unbatched_input_works():
    x = torch.randn(3, 9, 8)
    assert_close(convext.max_pool2d(x, 3), F.max_pool2d(x, 3))
    assert_close(convext.max_pool2d(x, (2, 3), stride=[]), F.max_pool2d(x, (2, 3)))


def test_empty_batch():
    x = torch.randn(0, 2, 6, 6, requires_grad=True)
    out = convext.max_pool2d(x, 2)
    assert out.shape == (0, 2, 3, 3)
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("case", cases(random_pool_case, 4, seed=13, max_size=6), ids=case_id)
def test_gradcheck_and_gradgradcheck(case):
    x = distinct_values(case)
    args = pool_args(case) | dict(return_indices=False)
    assert torch.autograd.gradcheck(lambda x: convext.max_pool2d(x, **args), (x,))
    assert torch.autograd.gradgradcheck(lambda x: convext.max_pool2d(x, **args), (x,))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("bad", [16, -1])
def test_backward_rejects_indices_outside_the_plane(bad, layout):
    """One bad index among good ones, in the last image's last channel: found
    wherever it is, and named."""
    x = with_layout(torch.randn(2, 3, 4, 4), layout)
    out, idx = convext.max_pool2d(x, 2, return_indices=True)
    idx = idx.clone()
    idx[1, 2, 1, 1] = bad
    with pytest.raises(RuntimeError, match=f"index {bad} is outside the input plane of 4x4"):
        torch.ops.convext.max_pool2d_backward(torch.ones_like(out), x, idx, [2, 2], [2, 2], [0, 0], [1, 1], False)


def test_backward_allocates_no_gradient_for_the_indices():
    """The indices have no gradient: autograd passes None for them instead of
    a tensor of zeros of their size, and the backward writes grad_input once."""
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out, _ = convext.max_pool2d(x, 2, return_indices=True)
    grad_output = torch.ones_like(out)
    with torch.profiler.profile() as profile:
        (grad,) = torch.autograd.grad(out, [x], grad_output)
    names = [event.name for event in profile.events()]
    assert "convext::max_pool2d_backward" in names
    assert not {"aten::zeros", "aten::zero_", "aten::fill_"} & set(names)
    assert_close(grad, torch.autograd.grad(F.max_pool2d(x, 2), [x], grad_output)[0])
