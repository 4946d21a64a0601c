"""Tensors past 2^31 elements: inputs, outputs and max-pool indices whose flat
offsets do not fit in 32 bits. Run with `pytest -m slow` (CI does); each test
asks for up to 18 GiB of free memory (estimated from its tensors' sizes) and
skips when the machine has less.

A full comparison with torch would double the memory, so each test checks
windows at the start, the middle and the end of the tensor (past offset 2^31)
against torch on the matching slice, and the whole result where a cheap check
exists. The windows do not overlap (kernel 2, stride 2), so input rows
[2r, 2r + 2k) give exactly output rows [r, r + k)."""

import pytest
import torch
import torch.nn.functional as F

import convext

pytestmark = pytest.mark.slow

GB = 2**30
# 65536 x 32769 float32: 2^31 + 2^16 elements, 8 GiB. The last input row starts
# at offset 65535 * 32769 > 2^31.
HEIGHT, WIDTH = 65536, 32769
ROWS_CHECKED = 4  # output rows per window checked


def need_memory(gib):
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    available = int(info["MemAvailable"].split()[0]) * 1024
    if available < gib * GB:
        pytest.skip(f"needs {gib} GiB of free memory, {available / GB:.1f} GiB available")


def huge_input():
    x = torch.empty(1, 1, HEIGHT, WIDTH)
    assert x.numel() > 2**31
    return x.uniform_(-1, 1, generator=torch.Generator().manual_seed(0))


def output_rows_checked(out_height):
    """First output rows of the windows checked: start, middle, end."""
    return [0, out_height // 2, out_height - ROWS_CHECKED]


def input_window(x, r):
    return x[:, :, 2 * r : 2 * (r + ROWS_CHECKED)].clone()


def shape_only(x):
    """A stand-in for x that has its size and layout but no memory: the pools'
    backward ops read only that of their input."""
    return torch.zeros((), dtype=x.dtype).expand(x.shape)


def test_max_pool2d_values_and_indices_past_2_31():
    need_memory(18)
    x = huge_input()
    out, indices = torch.ops.convext.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    assert indices.max().item() > 2**31
    # Every index points at its output's value.
    assert torch.equal(x.view(-1).gather(0, indices.view(-1)), out.view(-1))
    windows = {r: input_window(x, r) for r in output_rows_checked(out.shape[2])}
    stand_in = shape_only(x)
    del x
    for r, window in windows.items():
        expected, expected_indices = F.max_pool2d(window, 2, 2, return_indices=True)
        assert torch.equal(out[:, :, r : r + ROWS_CHECKED], expected)
        assert torch.equal(indices[:, :, r : r + ROWS_CHECKED], expected_indices + 2 * r * WIDTH)

    grad_input = torch.ops.convext.max_pool2d_backward(out, stand_in, indices, [2, 2], [2, 2], [0, 0], [1, 1], False)
    assert grad_input.shape == (1, 1, HEIGHT, WIDTH)
    for r, window in windows.items():
        window.requires_grad_()
        F.max_pool2d(window, 2, 2).backward(out[:, :, r : r + ROWS_CHECKED])
        assert torch.equal(grad_input[:, :, 2 * r : 2 * (r + ROWS_CHECKED)], window.grad)
    # The unchecked last column (WIDTH is odd) gets no gradient.
    assert not grad_input[..., -1].any()


def test_avg_pool2d_past_2_31():
    need_memory(12)
    x = huge_input()
    out = torch.ops.convext.avg_pool2d(x, [2, 2], [2, 2], [0, 0], False, True, None)
    windows = {r: input_window(x, r) for r in output_rows_checked(out.shape[2])}
    stand_in = shape_only(x)
    del x
    for r, window in windows.items():
        torch.testing.assert_close(out[:, :, r : r + ROWS_CHECKED], F.avg_pool2d(window, 2, 2))

    grad_input = torch.ops.convext.avg_pool2d_backward(out, stand_in, [2, 2], [2, 2], [0, 0], False, True, None)
    for r, window in windows.items():
        window.requires_grad_()
        F.avg_pool2d(window, 2, 2).backward(out[:, :, r : r + ROWS_CHECKED])
        torch.testing.assert_close(grad_input[:, :, 2 * r : 2 * (r + ROWS_CHECKED)], window.grad)


def test_conv2d_and_its_weight_gradient_past_2_31():
    """Depthwise (one channel), so no padded copy of the input is made."""
    need_memory(12)
    x = huge_input()
    weight = torch.randn(1, 1, 2, 2)
    bias = torch.randn(1)
    out = convext.conv2d(x, weight, bias, stride=2)
    windows = {r: input_window(x, r) for r in output_rows_checked(out.shape[2])}
    for r, window in windows.items():
        torch.testing.assert_close(out[:, :, r : r + ROWS_CHECKED], F.conv2d(window, weight, bias, stride=2))

    # The weight gradient sums 2^29 products per tap: compare with float64 sums
    # taken 4096 output rows at a time.
    grad_weight = torch.ops.convext.conv2d_backward_weight(out, x, weight, [2, 2], [0, 0], [1, 1], 1)
    expected = torch.zeros(2, 2, dtype=torch.float64)
    magnitude = torch.zeros(2, 2, dtype=torch.float64)
    out_width = out.shape[3]
    for first in range(0, out.shape[2], 4096):
        g = out[0, 0, first : first + 4096].double()
        rows = x[0, 0, 2 * first : 2 * (first + 4096)]
        for kh in range(2):
            for kw in range(2):
                taps = rows[kh::2, kw : kw + 2 * out_width : 2].double()
                expected[kh, kw] += (g * taps).sum()
                magnitude[kh, kw] += (g * taps).abs().sum()
    error = (grad_weight[0, 0].double() - expected).abs()
    assert (error <= 1e-5 * magnitude).all(), (error, magnitude)


def test_conv_transpose2d_output_past_2_31():
    """One channel, stride 2: the depthwise gather writes every output element."""
    need_memory(14)
    source = torch.empty(1, 1, HEIGHT // 2, WIDTH // 2 + 1).uniform_(-1, 1)
    weight = torch.randn(1, 1, 2, 2)
    bias = torch.randn(1)
    out = convext.conv_transpose2d(source, weight, bias, stride=2)
    assert out.shape == (1, 1, HEIGHT, WIDTH + 1) and out.numel() > 2**31
    for r in output_rows_checked(source.shape[2]):
        rows = source[:, :, r : r + ROWS_CHECKED]
        torch.testing.assert_close(out[:, :, 2 * r : 2 * (r + ROWS_CHECKED)],
                                   F.conv_transpose2d(rows, weight, bias, stride=2))
    # Stride 2 and a 2x2 kernel: each output element is one product plus the bias.
    for kh in range(2):
        for kw in range(2):
            torch.testing.assert_close(out[0, 0, kh::2, kw::2], source[0, 0] * weight[0, 0, kh, kw] + bias)
