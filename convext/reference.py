"""The naive reference: the course's loop code, generalised.

corr2d, corr2d_multi_in, corr2d_multi_in_out and pool2d are the course's
functions as its notes write them; trans_conv is the transposed convolution
written the same way. conv2d, max_pool2d and avg_pool2d extend the same idea
(one Python loop iteration per output position, a window of the input reduced
by plain tensor arithmetic) to batches, stride, padding, dilation, groups,
ceil_mode, count_include_pad and divisor_override; conv_transpose2d extends
trans_conv (one iteration per input position, a window of the output added to).

They are written to be read, not to be fast, and they are the ground truth that
convext's kernels are tested against. Gradients come from autograd through the
loops, so they check the backward kernels too. Nothing here calls convext.
"""

import torch

__all__ = ["corr2d", "corr2d_multi_in", "corr2d_multi_in_out", "pool2d", "trans_conv", "conv2d", "conv_transpose2d",
           "max_pool2d", "avg_pool2d"]


def _float_dtype(*tensors):
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def corr2d(X, K):
    """2-D cross-correlation of X (H, W) with the kernel K (h, w)."""
    h, w = K.shape
    Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1), dtype=_float_dtype(X, K))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return Y


def corr2d_multi_in(X, K):
    """Several input channels: correlate each with its kernel and add up."""
    return sum(corr2d(x, k) for x, k in zip(X, K, strict=True))


def corr2d_multi_in_out(X, K):
    """Several output channels: one multi-input correlation per kernel in K."""
    return torch.stack([corr2d_multi_in(X, k) for k in K])


def pool2d(X, pool_size, mode="max"):
    """Max or average pooling of X (H, W) with stride 1 and no padding."""
    X = X.float()
    p_h, p_w = pool_size
    Y = torch.zeros(X.shape[0] - p_h + 1, X.shape[1] - p_w + 1)
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            if mode == "max":
                Y[i, j] = X[i:i + p_h, j:j + p_w].max()
            elif mode == "avg":
                Y[i, j] = X[i:i + p_h, j:j + p_w].mean()
    return Y


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + stride - 1) // stride + 1 if ceil_mode else span // stride + 1
    # In ceil_mode the last window must start inside the input or its left padding.
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """input (N, C, H, W), weight (C_out, C / groups, kh, kw) -> (N, C_out, out_h, out_w)."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = input.shape
    C_out, C_group, kh, kw = weight.shape
    C_out_group = C_out // groups

    X = torch.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=input.dtype, device=input.device)  # zero padding
    X[:, :, ph:ph + H, pw:pw + W] = input
    out_h = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    Y = torch.zeros((N, C_out, out_h, out_w), dtype=input.dtype, device=input.device)
    for i in range(out_h):
        for j in range(out_w):
            # The input window of output (i, j): kh x kw taps, dilation apart.
            window = X[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
            for g in range(groups):
                x = window[:, g * C_group:(g + 1) * C_group]  # (N, C_group, kh, kw)
                k = weight[g * C_out_group:(g + 1) * C_out_group]  # (C_out_group, C_group, kh, kw)
                Y[:, g * C_out_group:(g + 1) * C_out_group, i, j] = (x[:, None] * k[None]).sum(dim=(2, 3, 4))
    if bias is not None:
        Y = Y + bias.view(1, C_out, 1, 1)
    return Y


def trans_conv(X, K):
    """The course's transposed convolution of X (H, W) by K (h, w), stride 1:
    each input element scatters K, scaled, into the output."""
    h, w = K.shape
    Y = torch.zeros((X.shape[0] + h - 1, X.shape[1] + w - 1), dtype=_float_dtype(X, K))
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            Y[i:i + h, j:j + w] += X[i, j] * K
    return Y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """trans_conv generalised: input (N, C, H, W), weight (C, C_out / groups, kh, kw)
    -> (N, C_out, out_h, out_w). Input pixel (i, j) scatters its window at
    (i * stride, j * stride) of the full output; padding then crops each side."""
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = _pair(stride), _pair(padding), _pair(output_padding), _pair(dilation)
    N, C, H, W = input.shape
    _, C_out_group, kh, kw = weight.shape
    C_group = C // groups
    full_h = (H - 1) * sh + dh * (kh - 1) + 1 + oph
    full_w = (W - 1) * sw + dw * (kw - 1) + 1 + opw

    Y = torch.zeros((N, C_out_group * groups, full_h, full_w), dtype=input.dtype, device=input.device)
    for i in range(H):
        for j in range(W):
            rows = slice(i * sh, i * sh + dh * (kh - 1) + 1, dh)
            cols = slice(j * sw, j * sw + dw * (kw - 1) + 1, dw)
            for g in range(groups):
                x = input[:, g * C_group:(g + 1) * C_group, i, j]  # (N, C_group)
                k = weight[g * C_group:(g + 1) * C_group]  # (C_group, C_out_group, kh, kw)
                Y[:, g * C_out_group:(g + 1) * C_out_group, rows, cols] += (x[:, :, None, None, None] * k).sum(1)
    Y = Y[:, :, ph:full_h - ph, pw:full_w - pw]
    if bias is not None:
        Y = Y + bias.view(1, -1, 1, 1)
    return Y


def _window_taps(out_index, size, kernel, stride, pad, dilation):
    """Input positions of an output's window that lie inside the input."""
    start = out_index * stride - pad
    return [start + t * dilation for t in range(kernel) if 0 <= start + t * dilation < size]


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Maximum of each window; indices are flat positions in each (H, W) plane.

    torch's tie rules: the first maximum wins, a NaN beats any number and the
    last NaN wins; padding is never the maximum.
    """
    (kh, kw), (ph, pw), (dh, dw) = _pair(kernel_size), _pair(padding), _pair(dilation)
    sh, sw = _pair(stride) if stride else (kh, kw)
    N, C, H, W = input.shape
    out_h = _pool_output_size(H, kh, sh, ph, dh, ceil_mode)
    out_w = _pool_output_size(W, kw, sw, pw, dw, ceil_mode)

    Y = torch.zeros((N, C, out_h, out_w), dtype=input.dtype, device=input.device)
    indices = torch.zeros((N, C, out_h, out_w), dtype=torch.int64, device=input.device)
    for i in range(out_h):
        for j in range(out_w):
            rows = _window_taps(i, H, kh, sh, ph, dh)
            cols = _window_taps(j, W, kw, sw, pw, dw)
            window = input[:, :, rows][:, :, :, cols].flatten(2)  # (N, C, taps)
            positions = torch.tensor([r * W + c for r in rows for c in cols], device=input.device)
            tap = torch.arange(window.shape[2], device=input.device)

            is_nan = window.isnan()
            last_nan = torch.where(is_nan, tap, -1).amax(dim=2)
            numbers = window.masked_fill(is_nan, -float("inf"))
            first_max = (numbers == numbers.amax(dim=2, keepdim=True)).int().argmax(dim=2)
            best = torch.where(last_nan >= 0, last_nan, first_max)

            Y[:, :, i, j] = window.gather(2, best[:, :, None])[:, :, 0]
            indices[:, :, i, j] = positions[best]
    return (Y, indices) if return_indices else Y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean of each window. The divisor counts the padding inside the window when
    count_include_pad, never the part of a ceil_mode window past the padding;
    divisor_override replaces it."""
    (kh, kw), (ph, pw) = _pair(kernel_size), _pair(padding)
    sh, sw = _pair(stride) if stride else (kh, kw)
    N, C, H, W = input.shape
    out_h = _pool_output_size(H, kh, sh, ph, 1, ceil_mode)
    out_w = _pool_output_size(W, kw, sw, pw, 1, ceil_mode)

    Y = torch.zeros((N, C, out_h, out_w), dtype=input.dtype, device=input.device)
    for i in range(out_h):
        for j in range(out_w):
            top, left = i * sh - ph, j * sw - pw
            bottom, right = min(top + kh, H + ph), min(left + kw, W + pw)  # window clipped to the padded input
            window = input[:, :, max(top, 0):min(bottom, H), max(left, 0):min(right, W)]
            if divisor_override:
                divisor = divisor_override
            elif count_include_pad:
                divisor = (bottom - top) * (right - left)
            else:
                divisor = window.shape[2] * window.shape[3]
            Y[:, :, i, j] = window.sum(dim=(2, 3)) / divisor
    return Y
