"""Differential fuzzing against torch: hypothesis draws shapes, window
parameters (valid or not), dtypes, memory layouts and values (NaN, +-inf, -0.0,
huge, tiny and subnormal numbers among normal ones), runs every op forward and
backward on convext and on torch.nn.functional, and requires the same decision
to reject, or results that agree: max-pool values and indices exactly, sums
within a few units in the last place of the sum of their terms' magnitudes.

CONVEXT_FUZZ_EXAMPLES sets the examples per op (default: a bounded run for CI);
fuzz/run_long.sh runs thousands and records the result in fuzz/last-run.md.
CONVEXT_FUZZ_LOG names a file that each example is appended to before it
runs: a crash in native code ends the process before hypothesis can report
the example, and the log's last line is then the one that crashed.
"""

import contextlib
import functools
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import HALF_TYPES, forward_and_grads, windows_reach_the_input, with_layout
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import convext

EXAMPLES = int(os.environ.get("CONVEXT_FUZZ_EXAMPLES", "80"))
LOG = os.environ.get("CONVEXT_FUZZ_LOG")


def fuzz(**strategies):
    """hypothesis's @settings and @given, each example logged first when LOG is set."""
    def decorate(test):
        @functools.wraps(test)
        def logged(**example):
            with open(LOG, "a") as log:
                log.write(f"{test.__name__} {example!r}\n")
            return test(**example)

        runs = logged if LOG else test
        return settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))(
            given(**strategies)(runs))
    return decorate


DTYPES = [torch.float32, torch.float64, *HALF_TYPES]
LAYOUTS = ["contiguous", "channels_last", "sliced", "transposed", "permuted", "odd_unit_strides", "expanded"]
# Allowed error, in units of the dtype's epsilon, of the sum of the terms' magnitudes.
# Half types: torch's own half kernels may round partial sums.
ULPS = {torch.float64: 64, torch.float32: 64, torch.float16: 32, torch.bfloat16: 32}


# -- inputs ----------------------------------------------------------------------

def make_values(shape, dtype, generator, special):
    """Normal values; with `special`, a fifth of them NaN, +-inf, -0.0, huge,
    tiny or subnormal. Huge is small enough that a sum of a few hundred huge
    terms still fits the dtype, so no result depends on the order of a sum."""
    t = torch.randn(shape, generator=generator, dtype=torch.float64)
    if special and t.numel():
        info = torch.finfo(dtype)
        specials = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, info.max / 4096,
                                 -info.max / 4096, info.tiny, info.tiny / 4], dtype=torch.float64)
        mask = torch.rand(shape, generator=generator) < 0.2
        pick = torch.randint(len(specials), shape, generator=generator)
        t = torch.where(mask, specials[pick], t)
    return t.to(dtype)


def make_weight(shape, dtype, generator):
    """Finite weights with some zeros: inf * 0 in a padded border is NaN or 0
    depending on whether a kernel reads the padding, which torch leaves open."""
    t = torch.randn(shape, generator=generator, dtype=torch.float64)
    zeros = torch.rand(shape, generator=generator) < 0.1
    return torch.where(zeros, torch.zeros_like(t), t).to(dtype)


def in_layout(t, layout, generator):
    """t's values in a memory layout: conftest's three, and four more."""
    n, c, h, w = t.shape
    if layout in ("contiguous", "channels_last", "sliced"):
        return with_layout(t, layout)
    if layout == "transposed":
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "permuted":
        order = torch.randperm(4, generator=generator).tolist()
        return t.permute(order).contiguous().permute([order.index(i) for i in range(4)])
    if layout == "odd_unit_strides":  # size-1 dimensions with strides no layout would give them
        strides = list(t.contiguous().stride())
        strides = [7 if size == 1 else stride for size, stride in zip(t.shape, strides, strict=True)]
        return torch.empty_strided(t.shape, strides, dtype=t.dtype).copy_(t)
    if n > 0:  # expanded: one image read n times (stride 0)
        return t[:1].expand(n, c, h, w)
    return t.contiguous()


def conv_inputs(x_shape, w_shape, bias_size, seed, dtype, layout, special):
    """A convolution's input, weight and (bias_size > 0) bias, as leaves that require grad."""
    g = torch.Generator().manual_seed(seed)
    x = in_layout(make_values(x_shape, dtype, g, special), layout, g)
    wt = in_layout(make_weight(w_shape, dtype, g), layout, g)
    b = make_weight((bias_size,), dtype, g) if bias_size else None
    return [t.requires_grad_() if t is not None else None for t in (x, wt, b)]


@contextlib.contextmanager
def environment(name, value):
    """os.environ[name] = value for the block (hypothesis runs many examples
    in one test, so pytest's monkeypatch cannot set it per example)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


# -- comparison ------------------------------------------------------------------

def agrees(actual, expected, bound, dtype):
    """Elementwise: the same NaN, the same infinity, or within the allowed error."""
    info = torch.finfo(dtype)
    allowed = ULPS[dtype] * info.eps * bound.abs().nan_to_num(nan=float("inf")) + 4 * info.tiny
    return (actual.isnan() & expected.isnan()) | (actual.isinf() & (actual == expected)) | (
        (actual - expected).abs() <= allowed)


def assert_agrees(actual, expected, exact_result, bound, exact):
    """actual agrees with torch's result, or, where torch's own kernel departs
    from IEEE arithmetic (its bfloat16 convolution drops some inf * 0 = NaN),
    with the float64 result of the same inputs rounded to the dtype."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (actual.shape, expected.shape)
    if exact or not actual.is_floating_point():
        assert torch.equal(actual.isnan(), expected.isnan())
        keep = ~expected.isnan()
        assert torch.equal(actual[keep], expected[keep])
        return
    a, e = actual.double(), expected.double()
    r = exact_result.detach().to(actual.dtype).double()
    ok = agrees(a, e, bound, actual.dtype) | agrees(a, r, bound, actual.dtype)
    assert ok.all(), f"convext {a[~ok][:5].tolist()}, torch {e[~ok][:5].tolist()}, float64 {r[~ok][:5].tolist()}"


def check(convext_fn, torch_fn, inputs, exact_outputs=0, bound_inputs=None):
    """convext_fn and torch_fn on inputs: both reject, or agree on every output
    and on the gradient of the first output for every input that requires grad.
    The first exact_outputs outputs must be equal; the others within a few
    units in the last place of the bound that torch_fn in float64 gives on
    bound_inputs (the magnitudes)."""
    def copies(tensors, dtype=None):  # fresh contiguous strides: torch's kernels reject some layouts
        return [t.detach().to(dtype or t.dtype).clone(memory_format=torch.contiguous_format)
                .requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in tensors]

    wide = copies(inputs, torch.float64)
    # torch gets contiguous copies, convext every layout. torch 2.13's channels_last
    # convolutions crash the process on some shapes (segfaults, in both of its
    # threads: bfloat16 input (3, 9, 11, 1), weight (9, 3, 2, 1), stride 2, padding
    # 1, dilation 3, groups 3; float32 input (3, 4, 9, 1), weight (2, 4, 3, 1), a
    # bias, stride 2, padding 1, dilation 2), and it lacks some layouts
    # (conv_transpose2d's backward: a permuted weight).
    try:
        expected, expected_grads, grad_output = forward_and_grads(torch_fn, copies(inputs))
    except (RuntimeError, ValueError) as torch_error:
        try:
            convext_fn(*inputs)
        except (RuntimeError, ValueError, TypeError):
            return event("both reject")
        raise AssertionError(f"torch rejects the call ({torch_error}), convext accepts it") from None
    try:
        actual, actual_grads, _ = forward_and_grads(convext_fn, inputs, grad_output)
    except RuntimeError:
        # torch skips some argument checks on an empty batch, and its float32
        # kernels some that its float64 ones make: it must reject the call with
        # one image, or in float64.
        one_image = [torch.zeros(1, *inputs[0].shape[1:], dtype=inputs[0].dtype)] + list(inputs[1:])
        for call in (one_image, wide):
            try:
                torch_fn(*call)
            except (RuntimeError, ValueError):
                return event("both reject (torch with one image or in float64)")
        raise
    exact_result, exact_grads, _ = forward_and_grads(torch_fn, wide, grad_output.double())
    magnitude = copies(bound_inputs or inputs, torch.float64)
    bound, bound_grads, _ = forward_and_grads(torch_fn, magnitude, grad_output.double().abs())
    outs = lambda o: o if isinstance(o, tuple) else (o,)  # noqa: E731
    for i, (a, e, r, b) in enumerate(zip(outs(actual), outs(expected), outs(exact_result), outs(bound), strict=True)):
        assert_agrees(a, e, r, b, exact=i < exact_outputs)
    for a, e, r, b in zip(actual_grads, expected_grads, exact_grads, bound_grads, strict=True):
        assert_agrees(a, e, r, b, exact=False)
    event("compared")


def assert_rejects(convext_fn, inputs, message):
    """A non-positive stride or dilation: convext rejects it, naming it. (torch
    skips that check on an empty batch.)"""
    with pytest.raises(RuntimeError, match=message):
        convext_fn(*inputs)
    event("convext rejects a non-positive stride or dilation")


def magnitudes(inputs):
    return [t.detach().abs().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in inputs]


# -- strategies ------------------------------------------------------------------

common = dict(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
              special=st.booleans())
small = st.integers(1, 12)
window = st.integers(1, 4)
positive = st.sampled_from([1, 1, 1, 2, 2, 3, 3, 0, -1])  # a stride or dilation, now and then invalid


@fuzz(batch=st.integers(0, 3), groups=st.integers(1, 3), in_group=st.integers(1, 3), out_group=st.integers(1, 3),
       h=small, w=small, kh=window, kw=window, stride=positive, padding=st.integers(0, 3),
       dilation=positive, bias=st.booleans(), **common)
def test_conv2d_agrees_with_torch(batch, groups, in_group, out_group, h, w, kh, kw, stride, padding, dilation, bias,
                                  seed, dtype, layout, special):
    inputs = conv_inputs((batch, groups * in_group, h, w), (groups * out_group, in_group, kh, kw),
                         groups * out_group if bias else 0, seed, dtype, layout, special)
    args = (stride, padding, dilation, groups)
    fn = lambda x, w, b: convext.conv2d(x, w, b, *args)  # noqa: E731
    if stride < 1 or dilation < 1:
        return assert_rejects(fn, inputs, "stride must be positive" if stride < 1 else "dilation must be positive")
    check(fn, lambda x, w, b: F.conv2d(x, w, b, *args), inputs, bound_inputs=magnitudes(inputs))


@fuzz(batch=st.integers(0, 4), groups=st.integers(1, 2), in_group=st.integers(1, 40), out_group=st.integers(1, 40),
       h=small, w=small, kh=window, kw=window, stride=st.integers(1, 3), padding=st.integers(0, 3),
       dilation=st.integers(1, 3), bias=st.booleans(), chunk_bytes=st.sampled_from(["", "256", "4096", "65536"]),
       band_bytes=st.sampled_from(["", "1", "2048"]), **common)
def test_dense_conv2d_agrees_with_torch(batch, groups, in_group, out_group, h, w, kh, kw, stride, padding, dilation,
                                        bias, chunk_bytes, band_bytes, seed, dtype, layout, special):
    """Many channels per group: the NHWC register-blocked kernels (the test
    above mostly reaches the planar ones), weights packed from every layout,
    input channels summed in chunks of every size (CONVEXT_CPU_CHUNK_BYTES;
    "" the default), small images sharing register blocks, grouped
    channels_last inputs gathered in bands of every size
    (CONVEXT_CPU_BAND_BYTES)."""
    inputs = conv_inputs((batch, groups * in_group, h, w), (groups * out_group, in_group, kh, kw),
                         groups * out_group if bias else 0, seed, dtype, layout, special)
    args = (stride, padding, dilation, groups)
    if min(size + 2 * padding - dilation * (k - 1) for size, k in ((h, kh), (w, kw))) < 1:
        return event("window larger than the padded input")
    with environment("CONVEXT_CPU_CHUNK_BYTES", chunk_bytes), environment("CONVEXT_CPU_BAND_BYTES", band_bytes):
        check(lambda x, w, b: convext.conv2d(x, w, b, *args), lambda x, w, b: F.conv2d(x, w, b, *args), inputs,
              bound_inputs=magnitudes(inputs))


@fuzz(batch=st.integers(0, 3), groups=st.integers(1, 3), in_group=st.integers(1, 40), out_group=st.integers(1, 40),
       h=st.integers(1, 40), w=st.integers(1, 40), bias=st.booleans(), **common)
def test_pointwise_conv2d_agrees_with_torch(batch, groups, in_group, out_group, h, w, bias, seed, dtype, layout,
                                            special):
    """1x1 convolutions, stride 1, unpadded: NCHW planes of at least 512
    pixels run as a GEMM on the planes (lanes along the pixels), smaller ones
    and other layouts on the NHWC or planar kernels."""
    inputs = conv_inputs((batch, groups * in_group, h, w), (groups * out_group, in_group, 1, 1),
                         groups * out_group if bias else 0, seed, dtype, layout, special)
    event("planes of at least 512 pixels" if h * w >= 512 else "planes of fewer than 512 pixels")
    check(lambda x, w, b: convext.conv2d(x, w, b, groups=groups), lambda x, w, b: F.conv2d(x, w, b, groups=groups),
          inputs, bound_inputs=magnitudes(inputs))


@fuzz(batch=st.integers(0, 3), channels=st.integers(1, 40), h=small, w=st.integers(1, 50), kh=window, kw=window,
       stride=st.integers(1, 3), padding=st.integers(0, 3), dilation=st.integers(1, 3), bias=st.booleans(),
       seed=common["seed"], dtype=common["dtype"], special=common["special"])
def test_nchw_depthwise_agrees_with_torch(batch, channels, h, w, kh, kw, stride, padding, dilation, bias, seed, dtype,
                                          special):
    """NCHW depthwise: rows of at least a vector on planes, shorter ones in
    NHWC tiles of a block of channels (several blocks once the planes are
    large enough)."""
    g = torch.Generator().manual_seed(seed)
    x = make_values((batch, channels, h, w), dtype, g, special)
    wt = make_weight((channels, 1, kh, kw), dtype, g)
    b = make_weight((channels,), dtype, g) if bias else None
    inputs = [t.requires_grad_() if t is not None else None for t in (x, wt, b)]
    args = (stride, padding, dilation, channels)
    if min(size + 2 * padding - dilation * (k - 1) for size, k in ((h, kh), (w, kw))) < 1:
        return event("window larger than the padded input")
    check(lambda x, w, b: convext.conv2d(x, w, b, *args), lambda x, w, b: F.conv2d(x, w, b, *args), inputs,
          bound_inputs=magnitudes(inputs))


@fuzz(batch=st.integers(0, 3), groups=st.integers(1, 3), in_group=st.integers(1, 3), out_group=st.integers(1, 3),
       h=small, w=small, kh=window, kw=window, stride=positive, padding=st.integers(0, 3),
       output_padding=st.integers(0, 3), dilation=positive, bias=st.booleans(), **common)
def test_conv_transpose2d_agrees_with_torch(batch, groups, in_group, out_group, h, w, kh, kw, stride, padding,
                                            output_padding, dilation, bias, seed, dtype, layout, special):
    inputs = conv_inputs((batch, groups * in_group, h, w), (groups * in_group, out_group, kh, kw),
                         groups * out_group if bias else 0, seed, dtype, layout, special)
    args = (stride, padding, output_padding, groups, dilation)
    fn = lambda x, w, b: convext.conv_transpose2d(x, w, b, *args)  # noqa: E731
    if stride < 1 or dilation < 1:
        return assert_rejects(fn, inputs, "stride must be positive" if stride < 1 else "dilation must be positive")
    sizes = [(size - 1) * stride - 2 * padding + dilation * (k - 1) + 1 + output_padding
             for size, k in ((h, kh), (w, kw))]
    if min(sizes) == 0 and output_padding < max(stride, dilation):
        # torch takes an output of size zero in float32 and rejects it in float64; convext takes it.
        assert fn(*inputs).numel() == 0
        return event("output of size zero")
    check(fn, lambda x, w, b: F.conv_transpose2d(x, w, b, *args), inputs, bound_inputs=magnitudes(inputs))


@fuzz(batch=st.integers(0, 2), channels=st.integers(1, 3), h=small, w=small, kh=window, kw=window,
       stride=positive, padding=st.integers(0, 2), dilation=positive,
       ceil_mode=st.booleans(), **common)
def test_max_pool2d_agrees_with_torch(batch, channels, h, w, kh, kw, stride, padding, dilation, ceil_mode, seed,
                                      dtype, layout, special):
    g = torch.Generator().manual_seed(seed)
    x = in_layout(make_values((batch, channels, h, w), dtype, g, special), layout, g).requires_grad_()
    args = ((kh, kw), stride, padding, dilation, ceil_mode, True)
    if stride < 1 or dilation < 1:
        return assert_rejects(lambda x: convext.max_pool2d(x, *args), [x],
                              "stride must be positive" if stride < 1 else "dilation must be positive")
    try:
        out = F.max_pool2d(x.detach(), *args)[0]
    except RuntimeError:
        out = None
    if out is not None and not all(
        windows_reach_the_input(o, size, k, stride, padding, dilation)
        for size, o, k in ((h, out.shape[2], kh), (w, out.shape[3], kw))
    ):
        return
    # The gradient scatters grad_output to the argmax: bounded by the same scatter of its magnitude.
    check(lambda x: convext.max_pool2d(x, *args), lambda x: F.max_pool2d(x, *args), [x], exact_outputs=2)


@fuzz(batch=st.integers(0, 2), channels=st.integers(1, 3), h=small, w=small, kh=window, kw=window,
       stride=positive, padding=st.integers(0, 2), ceil_mode=st.booleans(),
       count_include_pad=st.booleans(), divisor_override=st.one_of(st.none(), st.integers(-1, 5)), **common)
def test_avg_pool2d_agrees_with_torch(batch, channels, h, w, kh, kw, stride, padding, ceil_mode, count_include_pad,
                                      divisor_override, seed, dtype, layout, special):
    g = torch.Generator().manual_seed(seed)
    x = in_layout(make_values((batch, channels, h, w), dtype, g, special), layout, g).requires_grad_()
    args = ((kh, kw), stride, padding, ceil_mode, count_include_pad, divisor_override)
    if stride < 1:
        return assert_rejects(lambda x: convext.avg_pool2d(x, *args), [x],
                              "stride must be positive|divisor_override must be non-zero")
    check(lambda x: convext.avg_pool2d(x, *args), lambda x: F.avg_pool2d(x, *args), [x],
          bound_inputs=magnitudes([x]))
