"""The registered ops: schemas, fake kernels and autograd (opcheck), torch.compile, and the runtime."""

import pytest
import torch
from conftest import assert_close, with_layout
from torch.library import opcheck

import convext

ops = torch.ops.convext
OP_NAMES = ["conv2d", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias", "conv_transpose2d",
            "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]
AUTOCAST_OPS = ["conv2d", "conv_transpose2d"]  # torch's conv2d and conv_transpose2d run in lower precision


def op_samples(device, layout):
    """(op, args) for every op, with inputs in the given layout."""
    def t(*shape):
        return with_layout(torch.randn(*shape, device=device), layout).requires_grad_()

    x, w, b = t(2, 4, 9, 8), t(6, 2, 3, 3), torch.randn(6, device=device, requires_grad=True)
    conv = ([2, 1], [1, 0], [1, 2], 2)
    y = ops.conv2d(x, w, b, *conv)
    gy = with_layout(torch.randn(y.shape, device=device), layout)
    pool = ([3, 2], [2, 1], [1, 1], [1, 2], True)
    out, idx = ops.max_pool2d(x, *pool)
    avg = ([3, 2], [2, 1], [1, 1], True, False, None)
    avg_out = ops.avg_pool2d(x, *avg)
    w_t = t(4, 3, 3, 2)
    conv_t = ([2, 1], [1, 0], [1, 0], 2, [1, 2])
    return [
        (ops.conv2d, (x, w, b, *conv)),
        (ops.conv2d, (x, w, None, *conv)),
        (ops.conv2d_backward_input, (gy, x, w, *conv)),
        (ops.conv2d_backward_weight, (gy, x, w, *conv)),
        (ops.conv2d_backward_bias, (gy,)),
        (ops.conv_transpose2d, (x, w_t, b, *conv_t)),
        (ops.conv_transpose2d, (x.detach().bfloat16(), w_t.detach().bfloat16(), None, *conv_t)),
        (ops.max_pool2d, (x, *pool)),
        (ops.max_pool2d, (x.detach().half(), *pool)),
        (ops.max_pool2d_backward, (torch.randn_like(out), x, idx, *pool)),
        (ops.avg_pool2d, (x, *avg)),
        (ops.avg_pool2d, (x, [2, 2], [2, 2], [0, 0], False, True, 3)),
        (ops.avg_pool2d_backward, (torch.randn_like(avg_out), x, *avg)),
    ]


def test_every_op_is_registered_with_a_cpu_kernel():
    for name in OP_NAMES:
        op = getattr(ops, name).default
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CPU"), name


def test_autocast_kernels_are_registered_where_torch_has_them():
    for name in OP_NAMES:
        for key in ("AutocastCPU", "AutocastCUDA"):
            registered = torch._C._dispatch_has_kernel_for_dispatch_key(f"convext::{name}", key)
            assert registered == (name in AUTOCAST_OPS), (name, key)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck_passes_on_every_op(layout, device):
    samples = op_samples(device, layout)
    assert {op.default.name().split("::")[1] for op, _ in samples} == set(OP_NAMES)
    for op, args in samples:
        result = opcheck(op.default, args)
        assert all(v == "SUCCESS" for v in result.values()), (op, result)


def small_cnn():
    return torch.nn.Sequential(
        convext.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), convext.nn.MaxPool2d(2, ceil_mode=True),
        convext.nn.Conv2d(8, 8, 3, groups=2, padding="same"), torch.nn.ReLU(), convext.nn.AvgPool2d(2),
        torch.nn.Flatten(), torch.nn.LazyLinear(5),
    )


@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph_forward_and_backward(dynamic, device):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = small_cnn().to(device)
    x = torch.randn(2, 3, 15, 15, device=device)
    model(x)  # materialise LazyLinear
    compiled = torch.compile(model, fullgraph=True, dynamic=dynamic)
    eager_out = model(x)
    eager_grads = torch.autograd.grad(eager_out.square().sum(), list(model.parameters()))
    out = compiled(x)
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    assert_close(out, eager_out)
    for g, e in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    if dynamic:  # another batch size reuses the dynamic graph
        x2 = torch.randn(5, 3, 15, 15, device=device)
        assert_close(compiled(x2), model(x2))


def test_meta_tensors_give_shapes_without_compute():
    x = torch.empty(8, 3, 224, 224, device="meta").to(memory_format=torch.channels_last)
    w = torch.empty(64, 3, 7, 7, device="meta")
    y = convext.conv2d(x, w, stride=2, padding=3)
    assert y.shape == (8, 64, 112, 112) and y.is_contiguous(memory_format=torch.channels_last)
    assert convext.max_pool2d(y, 3, 2, 1).shape == (8, 64, 56, 56)


def test_one_openmp_runtime_is_loaded():
    """convext's parallel loops run on torch's own libgomp, so torch.set_num_threads rules them."""
    with open("/proc/self/maps") as maps:
        libraries = {line.split()[-1] for line in maps if "libgomp" in line or "libiomp" in line}
    assert len(libraries) == 1, libraries
