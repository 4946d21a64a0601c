"""Shared fixtures: devices, memory layouts, random cases and comparisons."""

import dataclasses
import os
import random

import pytest
import torch

import convext  # noqa: F401  (registers torch.ops.convext)

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]
LAYOUTS = ["contiguous", "channels_last", "sliced"]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def _cpu_supports(isa):
    old = os.environ.get("CONVEXT_CPU_ISA")
    os.environ["CONVEXT_CPU_ISA"] = isa
    try:
        return torch.ops.convext._cpu_isa() == isa
    except RuntimeError:
        return False
    finally:
        if old is None:
            del os.environ["CONVEXT_CPU_ISA"]
        else:
            os.environ["CONVEXT_CPU_ISA"] = old


CPU_ISAS = [
    pytest.param(isa, marks=pytest.mark.skipif(not _cpu_supports(isa), reason=f"this CPU lacks {isa}"))
    for isa in ("generic", "avx2", "avx512")
]


@pytest.fixture(params=CPU_ISAS)
def cpu_isa(request, monkeypatch):
    """Runs the test on each SIMD path this CPU supports (CONVEXT_CPU_ISA)."""
    monkeypatch.setenv("CONVEXT_CPU_ISA", request.param)
    return request.param


@pytest.fixture
def small_weight_chunks(monkeypatch):
    """Dense convolutions sum their input channels in chunks of 16 KiB of packed
    weights (CONVEXT_CPU_CHUNK_BYTES), so that test-sized layers take several
    chunks on every SIMD path: the default of 512 KiB would need hundreds of
    channels."""
    monkeypatch.setenv("CONVEXT_CPU_CHUNK_BYTES", str(16 << 10))


@pytest.fixture
def streaming_stores(monkeypatch):
    """Memory-bound kernels write outputs of every size by streaming stores
    (CONVEXT_CPU_STREAM_BYTES=0) where their vectors are aligned, not only the
    outputs of 4 MiB and more that test-sized inputs never reach."""
    monkeypatch.setenv("CONVEXT_CPU_STREAM_BYTES", "0")


@pytest.fixture
def restore_threads():
    """Gives torch back its thread count after a test that sets another."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_tf32():
    """float32 on CUDA in full precision, for convext and cuDNN alike, so that the
    float32 tolerances hold; test_cuda.py checks the TF32 path on its own."""
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = old


def with_layout(t, layout):
    """t's values in the given memory layout, as a leaf tensor that keeps t's requires_grad.

    'sliced' is a strided view into a larger buffer: no dimension has its
    natural stride, as after x[:, ::2, 1:-2, ::2].
    """
    if layout == "contiguous":
        out = t.detach().contiguous()
    elif layout == "channels_last":
        out = t.detach().contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        n, c, h, w = t.shape
        buffer = torch.full((n + 1, 2 * c, h + 3, 2 * w + 1), float("nan"), dtype=t.dtype, device=t.device)
        out = buffer[1:, ::2, 1:h + 1, 1::2]
        out.copy_(t.detach())
    else:
        raise ValueError(layout)
    return out.requires_grad_(t.requires_grad)


def is_channels_last(t):
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


HALF_TYPES = [torch.float16, torch.bfloat16]
DTYPES = [torch.float32, torch.float64, *HALF_TYPES]


def tolerances(dtype, expected):
    """float64 and float32 against a result computed another way; float32's
    absolute error grows with the largest value of long sums (weight gradients
    over thousands of pixels). Half types: both sides round a float32 sum once,
    so they differ by a unit or two in the last place, of the largest value
    (sums of mixed signs cancel)."""
    finite = expected[expected.isfinite()]
    scale = finite.abs().max().item() if finite.numel() else 1.0
    if dtype in HALF_TYPES:
        eps = torch.finfo(dtype).eps
        return dict(rtol=2 * eps, atol=2 * eps * scale)
    if dtype == torch.float32:
        return dict(rtol=1e-4, atol=max(1e-4, 1e-5 * scale))
    return dict(rtol=1e-9, atol=1e-10)


def assert_close(actual, expected, dtype=None):
    kw = tolerances(dtype or expected.dtype, expected) if expected.is_floating_point() else dict(rtol=0, atol=0)
    torch.testing.assert_close(actual, expected, equal_nan=True, **kw)


def assert_same_results(fn, expected_fn, inputs):
    """fn and expected_fn agree on inputs: every output (indices exactly) and the
    gradient of the first output with respect to each input that requires grad.
    Returns (output, grads, expected output, expected grads)."""
    out, grads, grad_output = forward_and_grads(fn, inputs)
    expected, expected_grads, _ = forward_and_grads(expected_fn, inputs, grad_output)
    outs, expected_outs = (out, expected) if isinstance(out, tuple) else ((out,), (expected,))
    for actual, wanted in zip(outs + grads, expected_outs + expected_grads, strict=True):
        assert_close(actual, wanted)
    return out, grads, expected, expected_grads


def forward_and_grads(fn, inputs, grad_output=None):
    """fn(*inputs) and the gradients of its first output with respect to each
    input that requires grad, for one fixed random grad_output."""
    out = fn(*inputs)
    first = out[0] if isinstance(out, tuple) else out
    if grad_output is None:
        grad_output = torch.randn_like(first)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(first, wrt, grad_output) if wrt else ()
    return out, grads, grad_output


@dataclasses.dataclass
class ConvCase:
    batch: int
    in_channels: int
    out_channels: int
    size: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    bias: bool

    def weight_shape(self):
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    def tensors(self, dtype=torch.float64, device="cpu", requires_grad=True):
        x = torch.randn(self.batch, self.in_channels, *self.size, dtype=dtype, device=device)
        w = torch.randn(self.weight_shape(), dtype=dtype, device=device)
        b = torch.randn(self.out_channels, dtype=dtype, device=device) if self.bias else None
        return [t.requires_grad_(requires_grad) if t is not None else None for t in (x, w, b)]

    def args(self):
        return self.stride, self.padding, self.dilation, self.groups


@dataclasses.dataclass
class ConvTransposeCase(ConvCase):
    output_padding: tuple = (0, 0)

    def weight_shape(self):
        return (self.in_channels, self.out_channels // self.groups, *self.kernel)

    def args(self):  # torch's order: groups before dilation
        return self.stride, self.padding, self.output_padding, self.groups, self.dilation


def random_conv_case(rng, max_size=9, max_group_channels=3):
    groups = rng.choice([1, 1, 2, 3])
    kernel = (rng.randint(1, 4), rng.randint(1, 4))
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    dilation = (rng.randint(1, 3), rng.randint(1, 3))
    padding = (rng.randint(0, 2), rng.randint(0, 2))
    # Any size the padded input covers the dilated kernel with.
    size = tuple(
        max(rng.randint(1, max_size), dilation[i] * (kernel[i] - 1) + 1 - 2 * padding[i], 1) for i in range(2)
    )
    return ConvCase(
        batch=rng.randint(1, 3),
        in_channels=groups * rng.randint(1, max_group_channels),
        out_channels=groups * rng.randint(1, max_group_channels),
        size=size, kernel=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
        bias=rng.random() < 0.7,
    )


def random_conv_transpose_case(rng, max_size=7, max_group_channels=3):
    """Any valid case, output_padding from 0 up to max(stride, dilation) - 1."""
    while True:
        groups = rng.choice([1, 1, 2, 3])
        kernel = (rng.randint(1, 4), rng.randint(1, 4))
        stride = (rng.randint(1, 3), rng.randint(1, 3))
        dilation = (rng.randint(1, 3), rng.randint(1, 3))
        padding = (rng.randint(0, 2), rng.randint(0, 2))
        output_padding = tuple(rng.randint(0, max(stride[i], dilation[i]) - 1) for i in range(2))
        size = (rng.randint(1, max_size), rng.randint(1, max_size))
        out = [(size[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1 + output_padding[i]
               for i in range(2)]
        if min(out) > 0:
            return ConvTransposeCase(
                batch=rng.randint(1, 3),
                in_channels=groups * rng.randint(1, max_group_channels),
                out_channels=groups * rng.randint(1, max_group_channels),
                size=size, kernel=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                bias=rng.random() < 0.7, output_padding=output_padding,
            )


@dataclasses.dataclass
class PoolCase:
    batch: int
    channels: int
    size: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    ceil_mode: bool


def windows_reach_the_input(out_size, size, kernel, stride, pad, dilation):
    """Whether every output window has a tap inside the input (torch's max pool
    gives an out-of-range index for a window of padding only)."""
    return all(
        any(0 <= o * stride - pad + k * dilation < size for k in range(kernel)) for o in range(out_size)
    )


def random_pool_case(rng, max_size=10, dilation=True):
    while True:
        kernel = (rng.randint(1, 4), rng.randint(1, 4))
        stride = (rng.randint(1, 3), rng.randint(1, 3))
        padding = (rng.randint(0, kernel[0] // 2), rng.randint(0, kernel[1] // 2))
        dil = (rng.randint(1, 2), rng.randint(1, 2)) if dilation else (1, 1)
        size = (rng.randint(1, max_size), rng.randint(1, max_size))
        case = PoolCase(rng.randint(1, 2), rng.randint(1, 3), size, kernel, stride, padding, dil, rng.random() < 0.5)
        outs = [pool_output_size(case, i) for i in range(2)]
        if all(o > 0 for o in outs) and all(
            windows_reach_the_input(outs[i], size[i], kernel[i], stride[i], padding[i], dil[i]) for i in range(2)
        ):
            return case


def pool_output_size(case, i):
    span = case.size[i] + 2 * case.padding[i] - case.dilation[i] * (case.kernel[i] - 1) - 1
    s = case.stride[i]
    out = (span + (s - 1 if case.ceil_mode else 0)) // s + 1
    if case.ceil_mode and (out - 1) * s >= case.size[i] + case.padding[i]:
        out -= 1
    return out


def cases(factory, count, seed, **kw):
    rng = random.Random(seed)
    return [factory(rng, **kw) for _ in range(count)]


def case_id(case):
    return ",".join(f"{k}={v}" for k, v in dataclasses.asdict(case).items()).replace(" ", "")
