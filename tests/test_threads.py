"""Threads and determinism: every op, forward and backward, gives bitwise the
same result run twice, under any torch.set_num_threads, and from several
Python threads at once."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import convext


def all_results():
    """Every op's output and gradients on fixed inputs, with layouts and shapes
    that take the dense, planar and depthwise kernels."""
    g = torch.Generator().manual_seed(7)

    def t(*shape, channels_last=False):
        x = torch.randn(*shape, generator=g)
        return (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_()

    cases = [  # (op, tensors, other arguments)
        (convext.conv2d, [t(3, 16, 17, 15), t(24, 16, 3, 3), t(24)], (1, 1)),
        (convext.conv2d, [t(3, 16, 17, 15, channels_last=True), t(24, 4, 3, 3), None], (2, 1, 1, 4)),
        (convext.conv2d, [t(2, 4, 20, 21), t(6, 4, 5, 5), t(6)], (1, 2)),  # planar
        (convext.conv2d, [t(2, 32, 14, 13), t(32, 1, 3, 3), t(32)], (2, 1, 1, 32)),  # depthwise
        (convext.conv_transpose2d, [t(2, 12, 9, 8), t(12, 8, 3, 3), t(8)], (2, 1, 1)),
        (convext.max_pool2d, [t(2, 8, 19, 17)], (3, 2, 1)),
        (convext.max_pool2d, [t(2, 8, 19, 17, channels_last=True)], (2,)),
        (convext.avg_pool2d, [t(2, 8, 19, 17)], (3, 2, 1, True)),
    ]
    results = []
    for op, tensors, args in cases:
        out = op(*tensors, *args)
        inputs = [x for x in tensors if x is not None]
        grads = torch.autograd.grad(out, inputs, torch.full_like(out, 0.37))
        results.append([out.detach(), *grads])
    return results


def assert_bitwise_equal(results, expected):
    for got, want in zip(results, expected, strict=True):
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)


def test_twice_the_same_call_gives_bitwise_the_same_results():
    assert_bitwise_equal(all_results(), all_results())


@pytest.mark.parametrize("threads", [1, 3, 4])
def test_thread_count_does_not_change_results(threads, restore_threads):
    torch.set_num_threads(2)
    expected = all_results()
    torch.set_num_threads(threads)
    assert_bitwise_equal(all_results(), expected)


def test_python_threads_at_once_give_the_serial_results():
    expected = all_results()
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda _: all_results(), range(8)))
    for results in runs:
        assert_bitwise_equal(results, expected)
