"""convext's functions, with torch.nn.functional's signatures.

They only normalise arguments (ints to pairs, 'same' padding, unbatched input)
and call the registered ops in torch.ops.convext, which check the arguments
and run the kernels.
"""

import torch

from . import _registrations  # noqa: F401  (loads the ops and registers their fake kernels)

_ops = torch.ops.convext


def _pair(value, name, op):
    """An int, or a sequence of one or two ints, as a list of two ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    if isinstance(value, (list, tuple, torch.Size)) and len(value) in (1, 2) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return [value[0], value[-1]]
    raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")


def _pool_stride(stride, kernel_size, op):
    """stride=None (or empty) means stride = kernel_size, as in torch."""
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        return kernel_size
    return _pair(stride, "stride", op)


def _batched(input, op):
    """Unbatched (C, H, W) input becomes a batch of one, as torch does."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"{op}: expected 3-D (unbatched) or 4-D (batched) input, got input of size {list(input.shape)}"
        )
    return input.dim() == 3, input.unsqueeze(0) if input.dim() == 3 else input


def _same_padding(input, weight, stride, dilation):
    """padding='same': torch's rule, including its extra zero row/column on the
    bottom/right when the padding needed is odd."""
    if stride != [1, 1]:
        raise RuntimeError("convext.conv2d: padding='same' is not supported for strided convolutions")
    total = [dilation[i] * (weight.shape[i + 2] - 1) for i in range(2)]
    extra_h, extra_w = total[0] % 2, total[1] % 2
    if extra_h or extra_w:
        input = torch.nn.functional.pad(input, [0, extra_w, 0, extra_h])
    return input, [total[0] // 2, total[1] // 2]


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, as torch.nn.functional.conv2d.

    input (N, C_in, H, W) or (C_in, H, W); weight (C_out, C_in / groups, kH, kW);
    padding an int, a pair, 'valid' or 'same'.
    """
    op = "convext.conv2d"
    unbatched, input = _batched(input, op)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{op}: weight must be a Tensor, got {type(weight).__name__}")
    stride = _pair(stride, "stride", op)
    dilation = _pair(dilation, "dilation", op)
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0, 0]
        elif padding == "same":
            input, padding = _same_padding(input, weight, stride, dilation)
        else:
            raise ValueError(f"{op}: padding must be 'valid', 'same' or ints, got {padding!r}")
    else:
        padding = _pair(padding, "padding", op)
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"{op}: groups must be an int, got {groups!r}")
    output = _ops.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return output.squeeze(0) if unbatched else output


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution, as torch.nn.functional.conv_transpose2d: the
    gradient of conv2d with respect to its input, computed by the same kernel.

    input (N, C_in, H, W) or (C_in, H, W); weight (C_in, C_out / groups, kH, kW).
    """
    op = "convext.conv_transpose2d"
    unbatched, input = _batched(input, op)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{op}: weight must be a Tensor, got {type(weight).__name__}")
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"{op}: groups must be an int, got {groups!r}")
    output = _ops.conv_transpose2d(
        input, weight, bias, _pair(stride, "stride", op), _pair(padding, "padding", op),
        _pair(output_padding, "output_padding", op), groups, _pair(dilation, "dilation", op),
    )
    return output.squeeze(0) if unbatched else output


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """2-D max pooling, as torch.nn.functional.max_pool2d. indices are flat
    positions in each input plane (H * W), exactly torch's."""
    op = "convext.max_pool2d"
    unbatched, input = _batched(input, op)
    kernel_size = _pair(kernel_size, "kernel_size", op)
    stride = _pool_stride(stride, kernel_size, op)
    output, indices = _ops.max_pool2d(
        input, kernel_size, stride, _pair(padding, "padding", op), _pair(dilation, "dilation", op), bool(ceil_mode)
    )
    if unbatched:
        output, indices = output.squeeze(0), indices.squeeze(0)
    return (output, indices) if return_indices else output


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling, as torch.nn.functional.avg_pool2d."""
    op = "convext.avg_pool2d"
    unbatched, input = _batched(input, op)
    kernel_size = _pair(kernel_size, "kernel_size", op)
    stride = _pool_stride(stride, kernel_size, op)
    output = _ops.avg_pool2d(
        input, kernel_size, stride, _pair(padding, "padding", op), bool(ceil_mode), bool(count_include_pad),
        divisor_override,
    )
    return output.squeeze(0) if unbatched else output


def corr2d(X, K):
    """The course's corr2d: 2-D cross-correlation of an (H, W) input with a
    (kh, kw) kernel, computed by convext's conv2d kernels. Lists and integer
    tensors are accepted; the result is floating point, as in the course."""
    X, K = torch.as_tensor(X), torch.as_tensor(K)
    if X.dim() != 2 or K.dim() != 2:
        raise RuntimeError(f"convext.corr2d: expected 2-D X and K, got sizes {list(X.shape)} and {list(K.shape)}")
    dtype = torch.promote_types(X.dtype, K.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return conv2d(X.to(dtype)[None, None], K.to(dtype)[None, None])[0, 0]
