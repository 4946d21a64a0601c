"""convext.conv2d against the naive reference and torch, forward and every gradient."""

import random

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    DTYPES,
    HALF_TYPES,
    LAYOUTS,
    ConvCase,
    assert_close,
    assert_same_results,
    case_id,
    cases,
    is_channels_last,
    random_conv_case,
    with_layout,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import convext
from convext import reference

REFERENCE_CASES = cases(random_conv_case, 30, seed=1)
TORCH_CASES = cases(random_conv_case, 30, seed=2, max_size=20, max_group_channels=6)


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=case_id)
def test_forward_and_grads_match_reference(case, cpu_isa):
    inputs = case.tensors(torch.float64)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, *case.args()),
        lambda x, w, b: reference.conv2d(x, w, b, *case.args()),
        inputs,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_forward_and_grads_match_torch(case, dtype, device):
    inputs = case.tensors(dtype, device)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, *case.args()),
        lambda x, w, b: F.conv2d(x, w, b, *case.args()),
        inputs,
    )


@pytest.mark.parametrize("weight_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("input_layout", LAYOUTS)
def test_any_layout_gives_torchs_values_and_layout(input_layout, weight_layout, device, cpu_isa):
    case = ConvCase(2, 6, 4, (11, 9), (3, 2), (2, 1), (1, 1), (1, 2), 2, True)
    x, w, b = case.tensors(torch.float64, device)
    x, w = with_layout(x, input_layout), with_layout(w, weight_layout)
    out, grads, ref_out, ref_grads = assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, *case.args()),
        lambda x, w, b: F.conv2d(x, w, b, *case.args()),
        [x, w, b],
    )
    # Output and gradients take torch's memory format.
    assert is_channels_last(out) == is_channels_last(ref_out)
    assert [is_channels_last(g) for g in grads[:2]] == [is_channels_last(g) for g in ref_grads[:2]]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    layout=st.sampled_from(LAYOUTS),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_random_cases_match_torch(seed, layout, dtype):
    case = random_conv_case(random.Random(seed), max_size=14, max_group_channels=4)
    x, w, b = case.tensors(dtype)
    x = with_layout(x, layout)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, *case.args()),
        lambda x, w, b: F.conv2d(x, w, b, *case.args()),
        [x, w, b],
    )


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel,dilation", [((3, 3), 1), ((2, 4), 1), ((3, 2), (2, 3)), ((1, 1), 1)])
def test_string_padding_matches_torch(padding, kernel, dilation):
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, *kernel, dtype=torch.float64, requires_grad=True)
    out, *_ = assert_same_results(
        lambda x, w: convext.conv2d(x, w, padding=padding, dilation=dilation),
        lambda x, w: F.conv2d(x, w, padding=padding, dilation=dilation),
        [x, w],
    )
    if padding == "same":
        assert out.shape[2:] == x.shape[2:]


@pytest.mark.parametrize("height,width", [(9, 8), (13, 12)])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_many_channels_match_torch(dtype, layout, height, width, cpu_isa, small_weight_chunks):
    """Enough input channels to be summed in several cached chunks, and a
    partial block of output channels; weights packed for the forward and the
    input gradient from every layout (by register transposes from NCHW and
    channels_last, element by element from other strides), by the one work
    item that reads a block (9x8 images: both in one item) or up front (13x12:
    two runs of pixels per image read each block)."""
    x = with_layout(torch.randn(2, 100, height, width, dtype=dtype), layout).requires_grad_()
    w = with_layout(torch.randn(70, 100, 3, 3, dtype=dtype), layout).requires_grad_()
    b = torch.randn(70, dtype=dtype, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, 1, 1), lambda x, w, b: F.conv2d(x, w, b, 1, 1), [x, w, b]
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups,in_channels,out_channels", [(1, 20, 13), (2, 18, 26)])
def test_pointwise_planes_match_torch(groups, in_channels, out_channels, dtype, layout, cpu_isa):
    """1x1 convolutions of NCHW planes of at least 512 pixels run as a GEMM on
    the planes, lanes along the pixels: 23x23 = 529 pixels (register blocks,
    single vectors and a one-pixel tail), output channels not a whole number
    of blocks, the input gradient by the same kernel. channels_last runs the
    NHWC kernels; sliced inputs are copied to planes first."""
    x = with_layout(torch.randn(3, in_channels, 23, 23, dtype=dtype), layout).requires_grad_()
    w = torch.randn(out_channels, in_channels // groups, 1, 1, dtype=dtype, requires_grad=True)
    b = torch.randn(out_channels, dtype=dtype, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, groups=groups), lambda x, w, b: F.conv2d(x, w, b, groups=groups),
        [x, w, b],
    )
    wt = torch.randn(in_channels, out_channels // groups, 1, 1, dtype=dtype, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv_transpose2d(x, w, b, groups=groups),
        lambda x, w, b: F.conv_transpose2d(x, w, b, groups=groups),
        [x, wt, b],
    )


TAP_PLANE_CASES = {  # input (N, C, H, W), weight, conv2d keyword arguments
    "LeNet 6 -> 16": ((3, 6, 14, 13), (16, 6, 5, 5), {}),
    "dilated, padded": ((2, 3, 12, 11), (12, 3, 5, 5), {"padding": 1, "dilation": 2}),
    "groups, non-square": ((2, 6, 11, 10), (20, 3, 5, 4), {"padding": (1, 2), "groups": 2}),
    "padding past the reach": ((2, 3, 9, 9), (12, 3, 5, 5), {"padding": 5}),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", TAP_PLANE_CASES)
def test_tap_planes_match_torch(case, dtype, layout, cpu_isa):
    """Input gradients with few channels and more pixels than grad_output run
    as a GEMM over grad_output's pixels into one plane per tap, then the
    planes added at their shifts: zeros left and right of a row and above and
    below a plane, dilation, groups, a crop of grad_output (padding past the
    kernel's reach; AVX-512 float only, elsewhere the NHWC kernels win)."""
    x_shape, w_shape, kwargs = TAP_PLANE_CASES[case]
    x = with_layout(torch.randn(x_shape, dtype=dtype), layout).requires_grad_()
    w = torch.randn(w_shape, dtype=dtype, requires_grad=True)
    b = torch.randn(w_shape[0], dtype=dtype, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, **kwargs), lambda x, w, b: F.conv2d(x, w, b, **kwargs), [x, w, b]
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("output_padding", [0, 1])
@pytest.mark.parametrize("groups", [1, 2])
def test_tap_planes_conv_transpose2d_match_torch(groups, output_padding, layout, cpu_isa):
    """conv_transpose2d is the same path with a bias (each group its own);
    output_padding leaves its last row and column without a source pixel."""
    x = with_layout(torch.randn(2, 12 * groups, 9, 8, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(12 * groups, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3 * groups, dtype=torch.float64, requires_grad=True)
    kwargs = {"dilation": 2, "output_padding": output_padding, "groups": groups}
    assert_same_results(
        lambda x, w, b: convext.conv_transpose2d(x, w, b, **kwargs),
        lambda x, w, b: F.conv_transpose2d(x, w, b, **kwargs),
        [x, w, b],
    )


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_small_images_batched_together_match_torch(groups, layout, cpu_isa, small_weight_chunks):
    """Images smaller than a run of output pixels (6x10) go several to a work
    item, each chunk of weights applied to all of them in turn: 23 images (19
    to an item, then 4), input channels in several chunks, bias."""
    x = with_layout(torch.randn(23, 140, 6, 10, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(40, 140 // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(40, dtype=torch.float64, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, 1, 1, 1, groups),
        lambda x, w, b: F.conv2d(x, w, b, 1, 1, 1, groups),
        [x, w, b],
    )


@pytest.mark.parametrize("groups,per_group,kernel,stride,padding,dilation,size", [
    (4, 8, 3, 1, 1, 1, (13, 16)),                 # ResNeXt's 8 channels per group
    (3, 9, 3, 2, 1, 1, (13, 16)),                 # its strided layer; a piece of 8 channels and one more
    (2, 17, (3, 5), (2, 3), (0, 2), (2, 2), (17, 19)),  # dilation; no padding on the rows
    (5, 4, 2, 1, 3, 1, (8, 9)),                   # padding past the window: zero rows at the bands' edges,
                                                  # and an input gradient that crops its input
])
@pytest.mark.parametrize("band_rows", [1, 3, None])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("expected", [reference.conv2d, F.conv2d], ids=["reference", "torch"])
def test_grouped_bands_match(expected, layout, band_rows, groups, per_group, kernel, stride, padding, dilation, size,
                             cpu_isa, monkeypatch):
    """Grouped dense layers: a work item gathers a band of output rows'
    input rows into group images (a group's pixels side by side, zeros
    around; channels_last pixels copied, NCHW rows transposed) and runs every
    group on them, an NCHW result transposed from a tile (other layouts go
    into one padded buffer); the input gradient runs the same way. Forward bands of 1 and 3 output rows (7 or 13 rows:
    the last band shorter), and the default, one band for these sizes."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    (sh, sw), (ph, pw), (dh, dw) = ((v, v) if isinstance(v, int) else v for v in (stride, padding, dilation))
    if band_rows is not None:
        input_rows = (band_rows - 1) * sh + (kh - 1) * dh + 1
        monkeypatch.setenv("CONVEXT_CPU_BAND_BYTES", str(input_rows * (size[1] + 2 * pw) * groups * per_group * 8))
    x = with_layout(torch.randn(2, groups * per_group, *size, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(groups * (per_group + 1), per_group, kh, kw, dtype=torch.float64, requires_grad=True)
    b = torch.randn(groups * (per_group + 1), dtype=torch.float64, requires_grad=True)
    args = (stride, padding, dilation, groups)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, *args),
        lambda x, w, b: expected(x, w, b, *args),
        [x, w, b],
    )


@pytest.mark.parametrize("groups,in_per_group,kernel,stride,padding,size", [
    (4, None, 3, 1, 1, (11, 13)),                 # as many inputs as outputs per group (ResNeXt)
    (6, 12, (3, 2), 2, (1, 0), (12, 8)),          # strided, more inputs than outputs per group
    (3, None, 3, 1, 1, (9, 10)),                  # an odd number of groups: one is left without a pair
])
@pytest.mark.parametrize("split", [None, "chunks", "bands", "streams"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("expected", [reference.conv2d, F.conv2d], ids=["reference", "torch"])
def test_paired_groups_match(expected, layout, split, groups, in_per_group, kernel, stride, padding, size,
                             cpu_isa, monkeypatch):
    """float32 layers of 8 output channels per group on AVX-512 (half a vector)
    run two groups to a dense block: input pixels gathered with the pair's channels
    interleaved, one broadcast of two values per FMA, the pair's weights and
    bias interleaved in the lanes, sums put back in channel order when
    stored, and read back interleaved when a later chunk of input channels
    adds to them. Forward and input gradient, with input channels in chunks
    of a few channels, output rows in bands of one, or a channels_last
    strided input gradient's rows streamed out of its tile."""
    if split == "chunks":
        monkeypatch.setenv("CONVEXT_CPU_CHUNK_BYTES", "4096")
    elif split == "bands":
        monkeypatch.setenv("CONVEXT_CPU_BAND_BYTES", "1")
    elif split == "streams":
        monkeypatch.setenv("CONVEXT_CPU_STREAM_BYTES", "0")
    out_per_group = 8
    in_per_group = in_per_group or out_per_group
    x = with_layout(torch.randn(2, groups * in_per_group, *size), layout).requires_grad_()
    kernel_hw = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = torch.randn(groups * out_per_group, in_per_group, *kernel_hw, requires_grad=True)
    b = torch.randn(groups * out_per_group, requires_grad=True)
    args = (stride, padding, 1, groups)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, *args),
        lambda x, w, b: expected(x, w, b, *args),
        [x, w, b],
    )


@pytest.mark.parametrize("height,width", [(13, 17), (33, 31)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_one_image_in_runs_of_equal_length_matches_torch(height, width, layout, cpu_isa):
    """One image's output pixels split into runs of equal length rounded up
    to 4, the last one shorter: 221 pixels as 112 + 109, 1023 as 7 x 128 +
    127; the forward and the input gradient run on them."""
    x = with_layout(torch.randn(1, 20, height, width, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(24, 20, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(24, dtype=torch.float64, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, 1, 1),
        lambda x, w, b: F.conv2d(x, w, b, 1, 1),
        [x, w, b],
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("groups,out_channels,padding", [(1, 19, 0), (1, 19, 1), (5, 40, 2), (35, 35, 1)])
def test_layout_changes_keep_every_element(groups, out_channels, padding, layout, dtype, cpu_isa):
    """Tensors moved between NCHW and NHWC (whole register tiles transposed,
    ragged columns as partial tiles, ragged rows element by element): 35
    channels and 37 columns, no multiple of any vector width; whole planes
    (no padding) and padded rows; dense groups, narrow ones (NCHW planes,
    read from channels_last too) and depthwise."""
    x = with_layout(torch.randn(2, 35, 6, 37, dtype=dtype), layout).requires_grad_()
    w = torch.randn(out_channels, 35 // groups, 3, 3, dtype=dtype, requires_grad=True)
    assert_same_results(
        lambda x, w: convext.conv2d(x, w, None, 1, padding, 1, groups),
        lambda x, w: F.conv2d(x, w, None, 1, padding, 1, groups),
        [x, w],
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("width", [7, 14, 37])
def test_padded_rows_of_whole_channel_tiles_keep_every_element(width, kernel, dtype, cpu_isa):
    """NCHW tensors into padded NHWC buffers, rows of 7, 14 and 37 pixels
    and 32 channels, whole tiles at every vector width: the columns past the
    last whole tile go as partial tiles, whose last channel is read only up
    to the tensor's end. The NCHW weight gradient of 9 and 25 taps (fewer
    and more than a vector holds), summed tap by tap, is transposed into
    place at the end."""
    x = torch.randn(2, 32, 5, width, dtype=dtype, requires_grad=True)
    w = torch.randn(24, 32, kernel, kernel, dtype=dtype, requires_grad=True)
    assert_same_results(
        lambda x, w: convext.conv2d(x, w, None, 1, kernel // 2),
        lambda x, w: F.conv2d(x, w, None, 1, kernel // 2),
        [x, w],
    )


@pytest.mark.parametrize("in_channels,kernel,stride,padding,dilation", [
    (3, 7, 2, 3, 1),  # ResNet's stem
    (3, (2, 5), 1, 1, (2, 1)),
    (1, 3, 3, 0, 1),
    (7, 4, 1, 2, 1),
    (3, 3, 1, 1, (1, 2)),  # column dilation: tap by tap, as before
])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_few_input_channels_match_torch(in_channels, kernel, stride, padding, dilation, layout, cpu_isa):
    """Fewer input channels than a weight-gradient tile broadcasts, many
    output channels: the tiles run over a row of the window, taps and
    channels together."""
    x = with_layout(torch.randn(2, in_channels, 15, 17, dtype=torch.float64), layout).requires_grad_()
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = torch.randn(40, in_channels, kh, kw, dtype=torch.float64, requires_grad=True)
    assert_same_results(
        lambda x, w: convext.conv2d(x, w, None, stride, padding, dilation),
        lambda x, w: F.conv2d(x, w, None, stride, padding, dilation),
        [x, w],
    )


@pytest.mark.parametrize("kernel,stride,padding,dilation,size", [
    (3, 2, 1, 1, (13, 16)),                         # ResNet's downsampling 3x3: phases of 2x2, 2x1, 1x2 and 1x1 taps
    (1, 2, 0, 1, (13, 16)),                         # one phase; three positions in four get no gradient
    (7, 2, 3, 1, (13, 16)),                         # the stem's window
    (2, 3, 0, 1, (13, 16)),                         # stride past the kernel: a phase no tap reaches
    ((3, 5), (2, 3), (0, 2), (2, 2), (13, 16)),     # dilation sharing a factor with the stride: every tap in one phase
    (3, 3, 1, 2, (13, 16)),                         # taps 0, 1, 2 in phases 2, 1, 0
    ((4, 3), (4, 2), (3, 1), (1, 3), (13, 16)),     # padding past a phase's first output
    # Several bands of rows (the last one short) on the dense kernels:
    (3, 2, 1, 1, (37, 41)),
    ((5, 3), (3, 2), (2, 1), (1, 2), (37, 41)),     # phases of unequal taps and positions on both axes
])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("expected", [reference.conv2d, F.conv2d], ids=["reference", "torch"])
def test_strided_input_grad_by_phases_matches(expected, kernel, stride, padding, dilation, size, groups, layout,
                                              cpu_isa):
    """A strided layer's input gradient runs phase by phase (positions that
    share their taps), each a stride-1 convolution of grad_output written to
    every stride-th row and column of grad_input (on the dense kernels all
    phases band by band of rows), the positions no tap reaches zero."""
    x = with_layout(torch.randn(2, 6 * groups, *size, dtype=torch.float64), layout).requires_grad_()
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = torch.randn(10 * groups, 6, kh, kw, dtype=torch.float64, requires_grad=True)
    args = (stride, padding, dilation, groups)
    assert_same_results(
        lambda x, w: convext.conv2d(x, w, None, *args),
        lambda x, w: expected(x, w, None, *args),
        [x, w],
    )


@pytest.mark.parametrize("stride,dilation", [(2, 1), ((3, 2), 2), ((1, 4), 1), (20, 1)])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("expected", [reference.conv2d, F.conv2d], ids=["reference", "torch"])
def test_strided_1x1_layers_read_the_pixels_at_their_stride(expected, stride, dilation, layout, cpu_isa):
    """An unpadded 1x1 window runs as a stride-1 layer on the pixels its
    stride reads (sizes the stride does not divide; stride 20 fits once)."""
    x = with_layout(torch.randn(3, 24, 13, 16, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(40, 24, 1, 1, dtype=torch.float64, requires_grad=True)
    args = (stride, 0, dilation, 1)
    assert_same_results(
        lambda x, w: convext.conv2d(x, w, None, *args),
        lambda x, w: expected(x, w, None, *args),
        [x, w],
    )


@pytest.mark.parametrize("in_channels,out_channels,kernel,padding", [
    (40, 24, 1, 0),   # 1x1: narrow where a vector is a cache line (AVX-512), else wide; channels not whole tiles
    (64, 32, 1, 0),   # whole tiles, no padding: channels_last read in place
    (6, 16, 5, 0),    # LeNet conv2: narrow, output channels in the lanes, row tiles
    (12, 10, 3, 1),   # narrow, input channels in the lanes
    (32, 64, 3, 1),   # wide, output channels in the lanes, grad_output read in place
    (48, 40, 3, 1),   # wide, input channels in the lanes
])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_weight_grad_tile_shapes_match_torch(in_channels, out_channels, kernel, padding, layout, cpu_isa):
    """Both weight-gradient tile shapes, on either side, with and without
    channels that fill whole tiles (only those buffers get slack)."""
    x = with_layout(torch.randn(3, in_channels, 9, 11, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(out_channels, in_channels, kernel, kernel, dtype=torch.float64, requires_grad=True)
    assert_same_results(
        lambda x, w: convext.conv2d(x, w, None, 1, padding),
        lambda x, w: F.conv2d(x, w, None, 1, padding),
        [x, w],
    )


def assert_weight_grad_matches_torch(grad_output, x, w, padding, groups):
    """The weight-gradient op alone against torch's, stride and dilation 1."""
    assert_close(
        torch.ops.convext.conv2d_backward_weight(grad_output, x, w, [1, 1], [padding] * 2, [1, 1], groups),
        torch.ops.aten.convolution_backward(grad_output, x, w, None, [1, 1], [padding] * 2, [1, 1], False, [0, 0],
                                            groups, [False, True, False])[1],
    )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("in_channels,out_channels", [(40, 200), (200, 40)])
def test_weight_grad_in_several_tile_blocks_matches_torch(in_channels, out_channels, layout, cpu_isa):
    """More weight-gradient tiles than a thread's block of partial sums holds
    (675 tiles on AVX-512, in blocks of 256), over more pixels than one fold
    (4232): every block sums every chunk, and its totals hold both the folded
    pixels and the pending ones. Each block loads the chunk's grad_output
    panels again (NCHW; channels_last where output channels are broadcast)."""
    x = with_layout(torch.randn(2, in_channels, 46, 46, dtype=torch.float64), layout)
    w = torch.randn(out_channels, in_channels, 3, 3, dtype=torch.float64)
    grad_output = with_layout(torch.randn(2, out_channels, 46, 46, dtype=torch.float64), layout)
    assert_weight_grad_matches_torch(grad_output, x, w, padding=1, groups=1)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("in_channels,out_channels,kernel,stride", [
    (24, 40, 1, 1),  # 1x1: a thread's tiles read from channel 16 on, and 8 channels past the 40 (zeros)
    (40, 24, 1, 1),  # 1x1, input channels in the lanes: likewise on the input side
    (5, 40, 3, 2),   # row tiles
    (40, 24, 3, 1),  # output channels broadcast
])
def test_weight_grad_transposes_nchw_chunk_by_chunk(in_channels, out_channels, kernel, stride, threads,
                                                    restore_threads, cpu_isa):
    """An NCHW grad_output of few enough weight-gradient tiles (and the input
    of a 1x1 layer, whose pixels are the output's) is transposed chunk by
    chunk, each thread's for the channels its tiles read: chunks of 512
    pixels that start inside a row and span two images (3 images of 23 x 29
    outputs), under thread counts that split the tiles differently."""
    torch.set_num_threads(threads)
    x = torch.randn(3, in_channels, 23 * stride, 29 * stride, dtype=torch.float64)
    w = torch.randn(out_channels, in_channels, kernel, kernel, dtype=torch.float64)
    grad_output = torch.randn(3, out_channels, 23, 29, dtype=torch.float64)
    args = [stride] * 2, [kernel // 2] * 2, [1, 1]
    assert_close(
        torch.ops.convext.conv2d_backward_weight(grad_output, x, w, *args, 1),
        torch.ops.aten.convolution_backward(grad_output, x, w, None, *args, False, [0, 0], 1,
                                            [False, True, False])[1],
    )


@pytest.mark.parametrize("height,width", [(1, 2), (2, 1), (2, 2)])
def test_weight_grad_of_a_1x1_window_that_fits_once_matches_torch(height, width, cpu_isa):
    """A 1x1 layer of stride 2 with one output pixel (its strides taken as 1)
    reads fewer input pixels than there are: its NCHW input is not the
    output's pixels, so it is not transposed in the output's chunks."""
    x = torch.randn(2, 2, height, width, dtype=torch.float64)
    w = torch.randn(9, 2, 1, 1, dtype=torch.float64)
    grad_output = torch.randn(2, 9, 1, 1, dtype=torch.float64)
    args = [2, 2], [0, 0], [1, 1]
    assert_close(
        torch.ops.convext.conv2d_backward_weight(grad_output, x, w, *args, 1),
        torch.ops.aten.convolution_backward(grad_output, x, w, None, *args, False, [0, 0], 1,
                                            [False, True, False])[1],
    )


@pytest.mark.parametrize("in_channels,out_channels,groups,kernel,stride,padding,width", [
    (1, 6, 1, 5, 1, 2, 28),   # LeNet conv1: a whole planar call of output channels on 16 registers
    (5, 8, 1, 3, 1, 1, 23),   # a whole call on 32 registers (AVX-512), NHWC kernels on 16
    (32, 32, 8, 3, 2, 1, 37),  # small groups, stride 2
    (3, 5, 1, 3, 1, 0, 70),   # rows of several vectors and a tail
    (2, 4, 2, (2, 3), 3, 1, 19),
])
def test_few_channels_per_group_match_torch(in_channels, out_channels, groups, kernel, stride, padding, width,
                                             cpu_isa):
    """Lanes along output rows (few channels per group on both sides)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(3, in_channels, 11, width, dtype=torch.float64, requires_grad=True)
    w = torch.randn(out_channels, in_channels // groups, kh, kw, dtype=torch.float64, requires_grad=True)
    b = torch.randn(out_channels, dtype=torch.float64, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, stride, padding, 1, groups),
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, 1, groups),
        [x, w, b],
    )


@pytest.mark.parametrize("batch,height,width", [
    (3, 150, 70),  # tall images: a call sums part of their rows
    (60, 5, 9),    # small images: a call sums several of them (56 in float32), the last call fewer
])
def test_planar_weight_grad_chunks_match_torch(batch, height, width, cpu_isa):
    """The lanes-along-rows weight gradient sums a chunk of rows and images per
    call, sized so that a tile's planes stay in L1: chunks that cut images and
    chunks that hold several, with rows of several vectors and a tail (the
    last vector overlaps the one before; grad_output read in place) and rows
    shorter than a vector (read past their end from a copy with slack).
    1 -> 2 channels in float32: lanes along rows on every ISA."""
    x = torch.randn(batch, 1, height, width, requires_grad=True)
    w = torch.randn(2, 1, 3, 3, requires_grad=True)
    assert_same_results(lambda x, w: convext.conv2d(x, w, None, 1, 1), lambda x, w: F.conv2d(x, w, None, 1, 1),
                        [x, w])


def test_unbatched_input_gives_unbatched_output():
    x, w = torch.randn(3, 7, 7, dtype=torch.float64), torch.randn(5, 3, 3, 3, dtype=torch.float64)
    out = convext.conv2d(x, w, stride=2, padding=1)
    assert out.shape == (5, 4, 4)
    assert_close(out, F.conv2d(x, w, stride=2, padding=1))


@pytest.mark.parametrize("channels,kernel,stride,dilation", [
    (8, 3, 2, 1), (40, 3, 1, 2), (37, 3, 2, 1), (19, 5, 1, 1), (21, (2, 4), 2, 1),
    (5, 9, 2, 1),  # more taps than the per-pixel gather of the input gradient lists
    (150, 3, 2, 1),  # several channel vectors summed side by side, then single ones
    (17, 3, 1, 1),  # stride 1, padding past the reach: the input gradient crops
])
@pytest.mark.parametrize("padding", [0, 1, 4])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_depthwise_matches_torch(channels, kernel, stride, dilation, padding, layout, cpu_isa):
    """Several vectors of channels and a partial one, with stride and dilation,
    for the 3x3 and 5x5 kernels, any other shape, and 81 taps; no padding, and
    padding wider than some windows' reach into the input (taps in it are
    skipped, not read from a padded copy); channels_last read in place. At
    stride 1 the input gradient runs the forward kernel (flipped weights,
    padding reach - padding, negative past the reach)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = with_layout(torch.randn(2, channels, 12, 11, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(channels, 1, kh, kw, dtype=torch.float64, requires_grad=True)
    b = torch.randn(channels, dtype=torch.float64, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, stride, padding, dilation, channels),
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, channels),
        [x, w, b],
    )


@pytest.mark.parametrize("kernel", [3, 5, (4, 3)])
@pytest.mark.parametrize("stride", [1, (1, 2)])
@pytest.mark.parametrize("width", [41, 13])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_depthwise_nhwc_register_blocks_match_torch(kernel, stride, width, layout, cpu_isa):
    """The NHWC depthwise kernel on rows wide enough for its blocks of 12
    pixels (the last overlapping the one before), and on rows of blocks of 4
    and single pixels, over vectors of channels and a partial one. At stride
    1 the input gradient is the same kernel, on NCHW tensors too."""
    channels = 37
    x = with_layout(torch.randn(2, channels, 9, width, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(channels, 1, *((kernel, kernel) if isinstance(kernel, int) else kernel),
                    dtype=torch.float64, requires_grad=True)
    b = torch.randn(channels, dtype=torch.float64, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, stride, 2, 1, channels),
        lambda x, w, b: F.conv2d(x, w, b, stride, 2, 1, channels),
        [x, w, b],
    )


@pytest.mark.parametrize("width,groups", [(2, 13), (4, 11), (8, 5)])
@pytest.mark.parametrize("kernel,stride,padding,dilation", [
    ((3, 3), 1, 1, 1), ((3, 3), 2, 0, 1), ((2, 5), 1, 3, (1, 2)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lane_groups_match_torch(width, groups, kernel, stride, padding, dilation, dtype, layout, cpu_isa):
    """Groups of 2, 4 and 8 channels on both sides, whole groups to a vector,
    each input channel reaching its group's outputs through rotations within
    the group (a group as wide as the vector runs on the dense kernels):
    vectors of channels and a partial one, rows of register blocks and border
    pixels, stride, dilation, padding past the kernel's reach; the input
    gradient at stride 1 by the same kernel, at stride 2 phase by phase; the
    weight gradient a kernel row of 3 taps per pass, other widths tap by tap."""
    channels = width * groups
    x = with_layout(torch.randn(2, channels, 9, 29, dtype=dtype), layout).requires_grad_()
    w = torch.randn(channels, width, *kernel, dtype=dtype, requires_grad=True)
    b = torch.randn(channels, dtype=dtype, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, stride, padding, dilation, groups),
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups),
        [x, w, b],
    )


@pytest.mark.parametrize("channels,width", [(48, 1), (40, 1), (32, 4), (64, 8)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_streamed_outputs_match_torch(channels, width, stride, dtype, layout, cpu_isa, streaming_stores):
    """Depthwise and lane-group forwards (channels_last) and depthwise input
    gradients (channels_last; NCHW at stride 2, whose rows of a vector or more
    are gathered into NHWC) written by streaming stores, pixels whole vectors
    apart: register blocks and border pixels, several vectors side by side.
    The rest store plainly: 40 channels at 16 lanes (not whole vectors), NCHW
    forwards and stride-1 gradients (on planes), groups wider than a vector."""
    x = with_layout(torch.randn(2, channels, 9, 29, dtype=dtype), layout).requires_grad_()
    w = torch.randn(channels, width, 3, 3, dtype=dtype, requires_grad=True)
    b = torch.randn(channels, dtype=dtype, requires_grad=True)
    groups = channels // width
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, stride, 1, 1, groups),
        lambda x, w, b: F.conv2d(x, w, b, stride, 1, 1, groups),
        [x, w, b],
    )


@pytest.mark.parametrize("out_channels", [16, 32, 48, 64])
@pytest.mark.parametrize("pixels", [1, 3, 4, 7, 8, 11, 12, 13, 20, 23])
def test_dense_register_block_tails_match_torch(out_channels, pixels, cpu_isa):
    """A run of pixels the dense kernels' register blocks (3 to 12 pixels, by
    block width and ISA) do not divide: the rest in blocks of 4 (two after
    blocks of 12 or 9) and single pixels, one channels_last image row of
    `pixels` outputs per call."""
    x = torch.randn(1, 12, 3, pixels).to(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(out_channels, 12, 3, 3, requires_grad=True)
    assert_same_results(
        lambda x, w: convext.conv2d(x, w, None, 1, (0, 1)),
        lambda x, w: F.conv2d(x, w, None, 1, (0, 1)),
        [x, w],
    )


@pytest.mark.parametrize("out_channels", [64, 80, 144])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("chunks", [False, True], ids=["one_chunk", "chunks"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_dense_streamed_outputs_match_torch(out_channels, groups, stride, chunks, dtype, layout, cpu_isa,
                                            streaming_stores, monkeypatch):
    """Dense outputs written by streaming stores: channels_last from the
    kernels (the forward, whole or a grouped layer's bands, the stride-1
    input gradient, the strided one's phases in place, pixels a stride
    apart), NCHW by the transposes out of their tiles on AVX-512 (planes of
    whole vectors: 8 x 32 and 4 x 16 pixels). Blocks of whole cache lines
    stream, a block of fewer channels (80 = 64 + 16) stores plainly, and so
    does a whole block off a line boundary (the second of two groups of 72
    channels); with
    several chunks of input channels only the last one's sums stream, the
    earlier ones stored and read back."""
    if chunks:
        monkeypatch.setenv("CONVEXT_CPU_CHUNK_BYTES", "4096")
    in_channels = 48
    x = with_layout(torch.randn(2, in_channels, 8, 32, dtype=dtype), layout).requires_grad_()
    w = torch.randn(out_channels, in_channels // groups, 3, 3, dtype=dtype, requires_grad=True)
    b = torch.randn(out_channels, dtype=dtype, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, stride, 1, 1, groups),
        lambda x, w, b: F.conv2d(x, w, b, stride, 1, 1, groups),
        [x, w, b],
    )


@pytest.mark.parametrize("out_w", [16, 20, 32, 45])
@pytest.mark.parametrize("stride,dilation,padding", [(1, 1, 1), (1, 2, 0), (1, 1, 3), (2, 1, 1), (3, 2, 2)])
def test_depthwise_planes_match_torch(out_w, stride, dilation, padding, cpu_isa):
    """NCHW depthwise convolutions whose output rows fill a vector run plane by
    plane from a zero-bordered copy: rows of one vector, of between one and two
    (the two overlap), of two, and longer (the last block overlaps the one
    before), 4 rows at a time and then single ones; strides 1, 2 and 3; at
    stride 1 the input gradient runs the same kernel, cropping where the
    padding passes the kernel's reach. The weight gradient sums the same rows,
    the overlapping lanes selected away."""
    kernel, channels = 3, 3
    width = (out_w - 1) * stride + dilation * (kernel - 1) + 1 - 2 * padding
    x = torch.randn(2, channels, 7, width, dtype=torch.float64, requires_grad=True)
    w = torch.randn(channels, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(channels, dtype=torch.float64, requires_grad=True)
    out, *_ = assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, stride, padding, dilation, channels),
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, channels),
        [x, w, b],
    )
    assert out.shape[3] == out_w


@pytest.mark.parametrize("out_w", [8, 15, 16, 17, 31, 32, 33, 47, 56])
@pytest.mark.parametrize("kernel_h,dilation_h,padding", [(3, 1, 1), (1, 1, 0), (5, 2, (3, 1)), (3, 3, (0, 2))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_depthwise_planes_of_3_wide_rows_match_torch(out_w, kernel_h, dilation_h, padding, dtype, cpu_isa):
    """Stride-1 NCHW depthwise kernels 3 wide, undilated along the rows: rows of
    at least two vectors load each vector once and shift the other taps out of
    them (the last block of a row overlapping the one before); shorter rows,
    any kernel height and row dilation, padding past the reach (the input
    gradient crops), float32 and float64 on every SIMD path."""
    pad_w = padding if isinstance(padding, int) else padding[1]
    width = out_w + 2 - 2 * pad_w
    x = torch.randn(2, 3, 9, width, dtype=dtype, requires_grad=True)
    w = torch.randn(3, 1, kernel_h, 3, dtype=dtype, requires_grad=True)
    b = torch.randn(3, dtype=dtype, requires_grad=True)
    args = (1, padding, (dilation_h, 1), 3)
    out, *_ = assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, *args),
        lambda x, w, b: F.conv2d(x, w, b, *args),
        [x, w, b],
    )
    assert out.shape[3] == out_w


@pytest.mark.parametrize("channels", [5, 250])
@pytest.mark.parametrize("stride,dilation,padding", [(1, 1, 0), (1, 1, 1), (1, 1, 3), (2, 1, 1), (2, 2, 1), (3, 1, 2)])
def test_depthwise_tiles_match_torch(channels, stride, dilation, padding, cpu_isa):
    """NCHW depthwise convolutions with output rows shorter than a vector run on
    NHWC tiles of a block of channels: one partial block, then several (a
    tile holds 32 KB of input) ending in a partial one; strides 1 to 3. The
    input gradient too: at stride 1 by the forward kernel, cropping where the
    padding passes the kernel's reach; at larger strides gathered per input
    pixel, in tiles when the input's rows are shorter than a vector. The
    weight gradient in tiles of a vector of channels. Rows of 2 or 3 columns
    are shorter than a float vector on every path."""
    x = torch.randn(2, channels, 14, 5, requires_grad=True)
    w = torch.randn(channels, 1, 3, 3, requires_grad=True)
    b = torch.randn(channels, requires_grad=True)
    assert_same_results(
        lambda x, w, b: convext.conv2d(x, w, b, stride, padding, dilation, channels),
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, channels),
        [x, w, b],
    )


def test_depthwise_tiles_weight_grad_sums_in_chunks_and_folds(cpu_isa):
    """The tiles' weight gradient (one-column rows, shorter than a vector on
    every path) sums each image in chunks of 256 pixels, image after image,
    and folds its partial sums into double past 4096 pixels: 4 images of 1198
    pixels, 20 channels (vectors and a partial one)."""
    x = torch.randn(4, 20, 1200, 3, dtype=torch.float64)
    w = torch.randn(20, 1, 3, 3, dtype=torch.float64)
    grad_output = torch.randn(4, 20, 1198, 1, dtype=torch.float64)
    assert_weight_grad_matches_torch(grad_output, x, w, padding=0, groups=20)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("in_channels,out_channels,groups", [(3, 4, 1), (32, 40, 1), (32, 32, 32)])
def test_empty_batch_gives_empty_output_and_zero_weight_grad(in_channels, out_channels, groups, layout, cpu_isa):
    """Planar, dense (whose small images would share work items) and depthwise."""
    x = with_layout(torch.randn(0, in_channels, 8, 8), layout).requires_grad_()
    w = torch.randn(out_channels, in_channels // groups, 3, 3, requires_grad=True)
    b = torch.randn(out_channels, requires_grad=True)
    out = convext.conv2d(x, w, b, groups=groups)
    assert out.shape == (0, out_channels, 6, 6)
    out.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    assert x.grad.shape == x.shape


def test_strided_bias_is_read_by_its_stride():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    bias = torch.randn(6)[::2]
    assert_close(convext.conv2d(x, w, bias), F.conv2d(x, w, bias))


def test_inputs_are_not_modified():
    x, w, b = (torch.randn(2, 4, 9, 9, requires_grad=True), torch.randn(6, 2, 3, 3, requires_grad=True),
               torch.randn(6, requires_grad=True))
    before = [t.detach().clone() for t in (x, w, b)]
    convext.conv2d(x, w, b, 2, 1, 1, 2).sum().backward()
    assert all(torch.equal(t, c) for t, c in zip((x, w, b), before, strict=True))


@pytest.mark.parametrize("case", cases(random_conv_case, 4, seed=3, max_size=5, max_group_channels=2), ids=case_id)
def test_gradcheck_and_gradgradcheck(case):
    tensors = [t for t in case.tensors(torch.float64) if t is not None]

    def fn(x, w, b=None):
        return convext.conv2d(x, w, b, *case.args())

    assert torch.autograd.gradcheck(fn, tensors)
    assert torch.autograd.gradgradcheck(fn, tensors)


class ConvextOpLog(TorchDispatchMode):
    """The convext ops that reach a kernel while it is active, backward's too."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "convext":
            self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_weight_grad_is_skipped_when_weight_needs_none():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    w, b = torch.randn(3, 2, 3, 3), torch.randn(3)
    loss = convext.conv2d(x, w, b).sum()
    with ConvextOpLog() as log:
        loss.backward()
    assert log.names == ["conv2d_backward_input.default"]


def test_input_grad_is_skipped_when_input_needs_none():
    x, b = torch.randn(1, 2, 6, 6), torch.randn(3, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    loss = convext.conv2d(x, w, b).sum()
    with ConvextOpLog() as log:
        loss.backward()
    assert log.names == ["conv2d_backward_weight.default", "conv2d_backward_bias.default"]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", HALF_TYPES)
def test_half_types_are_the_float32_result_rounded_once(dtype, layout):
    """float16 and bfloat16 accumulate in float32: the result is exactly the
    float32 convolution of the same values, rounded, in the input's layout."""
    x = with_layout(torch.randn(2, 24, 10, 9).to(dtype), layout)
    w, b = torch.randn(16, 24, 3, 3).to(dtype), torch.randn(16).to(dtype)
    out = convext.conv2d(x, w, b, 1, 1)
    assert out.dtype == dtype and is_channels_last(out) == (layout == "channels_last")
    assert torch.equal(out, convext.conv2d(x.float(), w.float(), b.float(), 1, 1).to(dtype))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape",
    [(3, 6, 7, 9), (2, 17, 50, 50), (5, 144, 30, 30), (1, 1001, 3, 5), (2, 3, 100, 50), (4, 1, 1, 1)],
    ids=str,
)
def test_bias_grad_sums_every_pixel(shape, dtype, layout, cpu_isa):
    """channels_last: chunks of pixels, several side by side when few channels
    fill a vector, then the pixels left over; NCHW: planes in several pieces."""
    grad_output = with_layout(torch.randn(shape, dtype=dtype), layout)
    assert_close(
        torch.ops.convext.conv2d_backward_bias(grad_output),
        grad_output.double().sum((0, 2, 3)).to(dtype),
    )
