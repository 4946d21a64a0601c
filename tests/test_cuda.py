"""The CUDA kernels against the CPU kernels and torch (cuDNN), on shapes that reach each of
their paths: the implicit GEMM (edge tiles, groups, split weight gradients), the direct kernels
for narrow groups, tensor cores; plus TF32, determinism, streams and CUDA graphs.
Every test here needs a GPU and skips without one."""

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    DTYPES,
    LAYOUTS,
    ConvCase,
    ConvTransposeCase,
    assert_close,
    assert_same_results,
    case_id,
    with_layout,
)
from test_ops import OP_NAMES

import convext

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
ops = torch.ops.convext

# (batch, in, out, size, kernel, stride, padding, dilation, groups, bias). A GEMM runs where a
# group has at least 16 channels on its side: output channels (forward, weight gradient) or
# input channels (input gradient); the rest run the direct kernels.
CONV_CASES = [
    ConvCase(2, 19, 37, (13, 11), (3, 3), (1, 1), (1, 1), (1, 1), 1, True),   # GEMM everywhere, edge tiles
    ConvCase(3, 40, 34, (17, 15), (3, 2), (2, 1), (1, 0), (1, 2), 2, True),   # groups of 20 -> 17, stride, dilation
    ConvCase(1, 16, 80, (9, 10), (1, 1), (1, 1), (0, 0), (1, 1), 1, False),   # 1x1
    ConvCase(2, 3, 64, (30, 30), (7, 7), (2, 2), (3, 3), (1, 1), 1, True),    # stem: direct input gradient
    ConvCase(4, 24, 24, (40, 36), (3, 3), (1, 1), (1, 1), (1, 1), 1, True),   # 5760 pixels: two weight-grad splits
    ConvCase(2, 12, 12, (14, 14), (3, 3), (2, 2), (1, 1), (1, 1), 12, True),  # depthwise: direct
    ConvCase(2, 32, 32, (10, 10), (3, 3), (1, 1), (1, 1), (1, 1), 8, False),  # 4 per group: direct
]
CONV_TRANSPOSE_CASES = [
    ConvTransposeCase(2, 20, 36, (7, 6), (3, 3), (2, 2), (1, 1), (1, 1), 2, True, output_padding=(1, 0)),
    ConvTransposeCase(2, 32, 16, (5, 5), (4, 4), (2, 2), (1, 1), (1, 1), 1, False),
    ConvTransposeCase(1, 8, 8, (6, 7), (3, 3), (2, 1), (0, 1), (2, 1), 8, True, output_padding=(1, 0)),
]


def on_cpu(fn):
    """fn run on the CPU kernels, its inputs copied there and its results copied back."""
    def run(*inputs):
        device = next(t.device for t in inputs if isinstance(t, torch.Tensor))
        cpu = [t.cpu() if isinstance(t, torch.Tensor) else t for t in inputs]
        out = fn(*cpu)
        return tuple(o.to(device) for o in out) if isinstance(out, tuple) else out.to(device)
    return run


def test_every_op_is_registered_with_a_cuda_kernel():
    for name in [*OP_NAMES, "_stream_copy"]:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"convext::{name}", "CUDA"), name


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d_matches_the_cpu_kernels_and_cudnn(case, dtype, layout):
    x, w, b = case.tensors(dtype, "cuda")
    inputs = [with_layout(x, layout), w, b]
    conv = lambda x, w, b: convext.conv2d(x, w, b, *case.args())  # noqa: E731
    assert_same_results(conv, on_cpu(conv), inputs)
    assert_same_results(conv, lambda x, w, b: F.conv2d(x, w, b, *case.args()), inputs)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES, ids=case_id)
def test_conv_transpose2d_matches_the_cpu_kernels_and_cudnn(case, dtype, layout):
    x, w, b = case.tensors(dtype, "cuda")
    inputs = [with_layout(x, layout), w, b]
    conv_t = lambda x, w, b: convext.conv_transpose2d(x, w, b, *case.args())  # noqa: E731
    assert_same_results(conv_t, on_cpu(conv_t), inputs)
    assert_same_results(conv_t, lambda x, w, b: F.conv_transpose2d(x, w, b, *case.args()), inputs)


POOLS = [
    ("max", dict(kernel_size=3, stride=2, padding=1)),
    ("max", dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1), ceil_mode=True)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avg", dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 1), divisor_override=5)),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, options", POOLS)
def test_pools_match_the_cpu_kernels(kind, options, dtype, layout):
    # Distinct values, so that max pooling has one answer wherever it runs.
    x = torch.randperm(3 * 7 * 15 * 13, device="cuda").to(dtype).view(3, 7, 15, 13)
    x = with_layout(x, layout).requires_grad_()
    if kind == "max":
        pool = lambda x: convext.max_pool2d(x, **options, return_indices=True)  # noqa: E731
    else:
        pool = lambda x: convext.avg_pool2d(x, **options)  # noqa: E731
    assert_same_results(pool, on_cpu(pool), [x])


DENSE_CASE = ConvCase(8, 64, 64, (24, 24), (3, 3), (1, 1), (1, 1), (1, 1), 1, True)
DENSE_OP_ARGS = ([1, 1], [1, 1], [1, 1], 1)  # DENSE_CASE.args() as the ops take them


def dense_case_tensors(dtype):
    return DENSE_CASE, DENSE_CASE.tensors(dtype, "cuda", requires_grad=False)


def test_weight_gradient_is_the_same_run_to_run():
    case, (x, w, _) = dense_case_tensors(torch.float32)
    gy = torch.randn_like(F.conv2d(x, w, None, *case.args()))
    args = (gy, x, w, *DENSE_OP_ARGS)
    first = ops.conv2d_backward_weight(*args)
    for _ in range(3):
        assert torch.equal(ops.conv2d_backward_weight(*args), first)
    assert torch.equal(ops.conv2d_backward_bias(gy), ops.conv2d_backward_bias(gy))


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.get_device_capability()[0] < 8,
                    reason="TF32 needs compute capability 8.0")
def test_float32_uses_tf32_exactly_when_torch_allows_cudnn_to():
    case, (x, w, b) = dense_case_tensors(torch.float32)
    exact = F.conv2d(x.double(), w.double(), b.double(), *case.args())
    scale = exact.abs().max().item()
    results = {}
    for allow in (False, True):
        torch.backends.cudnn.allow_tf32 = allow
        results[allow] = convext.conv2d(x, w, b, *case.args())
        error = (results[allow].double() - exact).abs().max().item() / scale
        if allow:  # TF32 keeps 10 of float32's 23 mantissa bits
            assert 1e-5 < error < 1e-2
        else:
            assert error < 1e-5
    assert not torch.equal(results[False], results[True])


def test_ops_run_on_the_current_stream_and_device():
    case, (x, w, b) = dense_case_tensors(torch.float32)
    expected = convext.max_pool2d(convext.conv2d(x, w, b, *case.args()), 2)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = convext.max_pool2d(convext.conv2d(x, w, b, *case.args()), 2)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(out, expected)


def test_forward_and_backward_ops_can_be_captured_in_a_cuda_graph():
    case, (x, w, b) = dense_case_tensors(torch.float32)
    depthwise = torch.randn(64, 1, 3, 3, device="cuda")
    args = DENSE_OP_ARGS

    def step(x):
        y = convext.conv2d(x, w, b, *case.args())
        y = convext.conv2d(y, depthwise, None, 1, 1, 1, 64)
        pooled, indices = convext.max_pool2d(y, 3, 2, 1, return_indices=True)
        avg = convext.avg_pool2d(pooled, 2)
        g = torch.ones_like(avg)
        g_pooled = ops.avg_pool2d_backward(g, pooled, [2, 2], [2, 2], [0, 0], False, True, None)
        g_y = ops.max_pool2d_backward(g_pooled, y, indices, [3, 3], [2, 2], [1, 1], [1, 1], False)
        return (avg, ops.conv2d_backward_weight(g_y, x, w, *args), ops.conv2d_backward_input(g_y, x, w, *args),
                ops.conv2d_backward_bias(g_y))

    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture, as torch asks
        step(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step(static_x)
    new_x = torch.randn_like(x)
    static_x.copy_(new_x)
    graph.replay()
    for got, want in zip(captured, step(new_x), strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[5]], ids=["gemm", "depthwise"])
def test_gradcheck_and_gradgradcheck_in_float64(case):
    small = ConvCase(1, case.in_channels, case.out_channels, (5, 4), case.kernel, case.stride, case.padding,
                     case.dilation, case.groups, case.bias)
    x, w, b = small.tensors(torch.float64, "cuda")
    fn = lambda x, w, b: convext.conv2d(x, w, b, *small.args())  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, w, b), fast_mode=True)
    pooled = torch.randn(2, 3, 7, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: convext.avg_pool2d(t, 3, 2, 1), (pooled,))
    assert torch.autograd.gradgradcheck(lambda t: convext.max_pool2d(t, 2, 1), (pooled,))


def test_empty_batch_gives_empty_output_and_zero_grads():
    x = torch.randn(0, 32, 6, 6, device="cuda", requires_grad=True)
    w = torch.randn(32, 32, 3, 3, device="cuda", requires_grad=True)
    b = torch.randn(32, device="cuda", requires_grad=True)
    out = convext.conv2d(x, w, b, padding=1)
    assert out.shape == (0, 32, 6, 6)
    gw, gb = torch.autograd.grad(out.sum(), [w, b])
    assert_close(gw, torch.zeros_like(w))
    assert_close(gb, torch.zeros_like(b))
