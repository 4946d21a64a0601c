// max_pool2d on CUDA: a thread per output (forward) or per input element
// (backward). The backward gathers, from the outputs whose window covers its
// element, the gradients whose index points at it: no atomics, so the result
// is the same run to run.
#include <torch/library.h>

#include <array>
#include <tuple>

#include "../max_pool2d.h"
#include "common.cuh"

namespace convext::cuda {
namespace {

template <typename T>
__global__ void max_pool2d_forward_kernel(Tensor4<const T> input, Tensor4<T> output,
                                          Tensor4<int64_t> indices, WindowAxis rows,
                                          WindowAxis cols, bool nhwc) {
  using acc_t = at::opmath_type<T>;
  CONVEXT_GRID_STRIDE_LOOP(i, output.size[0] * output.size[1] * output.size[2] * output.size[3]) {
    const Coords o = coords_of(i, output.size, nhwc);
    const Range r = rows.taps(o.h), c = cols.taps(o.w);
    const int64_t top = rows.origin(o.h), left = cols.origin(o.w);
    // torch's rule: the first largest value, or the last NaN; an all -inf
    // window points at its first tap inside the input.
    acc_t best = -INFINITY;
    int64_t best_index = (top + r.begin * rows.dilation) * input.size[3] + left + c.begin * cols.dilation;
    for (int64_t kh = r.begin; kh < r.end; ++kh) {
      const int64_t ih = top + kh * rows.dilation;
      for (int64_t kw = c.begin; kw < c.end; ++kw) {
        const int64_t iw = left + kw * cols.dilation;
        const acc_t v = static_cast<acc_t>(input(o.n, o.c, ih, iw));
        if (v > best || v != v) {
          best = v;
          best_index = ih * input.size[3] + iw;
        }
      }
    }
    output(o.n, o.c, o.h, o.w) = static_cast<T>(best);
    indices(o.n, o.c, o.h, o.w) = best_index;
  }
}

// indices come from the caller: one out of its plane is an error, as on the
// CPU, raised by a device assert rather than a host synchronisation.
__global__ void check_indices_kernel(Tensor4<const int64_t> indices, int64_t plane) {
  CONVEXT_GRID_STRIDE_LOOP(i, indices.size[0] * indices.size[1] * indices.size[2] * indices.size[3]) {
    const Coords o = coords_of(i, indices.size, false);
    const int64_t index = indices(o.n, o.c, o.h, o.w);
    CUDA_KERNEL_ASSERT(index >= 0 && index < plane);
  }
}

template <typename T>
__global__ void max_pool2d_backward_kernel(Tensor4<const T> grad_output, Tensor4<const int64_t> indices,
                                           Tensor4<T> grad_input, WindowAxis rows, WindowAxis cols,
                                           bool nhwc) {
  using acc_t = at::opmath_type<T>;
  CONVEXT_GRID_STRIDE_LOOP(i, grad_input.size[0] * grad_input.size[1] * grad_input.size[2] *
                                  grad_input.size[3]) {
    const Coords p = coords_of(i, grad_input.size, nhwc);
    const int64_t position = p.h * grad_input.size[3] + p.w;
    const Range oh = rows.outputs_covering(p.h), ow = cols.outputs_covering(p.w);
    acc_t sum = 0;
    for (int64_t h = oh.begin; h < oh.end; ++h) {
      for (int64_t w = ow.begin; w < ow.end; ++w) {
        if (indices(p.n, p.c, h, w) == position) {
          sum += static_cast<acc_t>(grad_output(p.n, p.c, h, w));
        }
      }
    }
    grad_input(p.n, p.c, p.h, p.w) = static_cast<T>(sum);
  }
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_cuda(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                                   at::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* op = "convext.max_pool2d";
  const Pool2dShape s = pool2d_check(input, kernel_size, stride, padding, dilation, ceil_mode, op);
  const c10::cuda::CUDAGuard guard(input.device());
  const bool nhwc = channels_last(input);
  const std::array<int64_t, 4> out_sizes = {s.batch, s.channels, s.h.out_size, s.w.out_size};
  at::Tensor output = empty_like_layout(out_sizes, input, input.suggest_memory_format(), input.scalar_type());
  at::Tensor indices = empty_like_layout(out_sizes, input, input.suggest_memory_format(), at::kLong);
  if (output.numel() == 0) {
    return {output, indices};
  }
  CONVEXT_DISPATCH_CUDA_TYPES(input.scalar_type(), op, [&] {
    max_pool2d_forward_kernel<scalar_t><<<blocks_for(output.numel()), kThreads, 0, stream()>>>(
        view4<const scalar_t>(input), view4<scalar_t>(output), view4<int64_t>(indices), s.h, s.w, nhwc);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {output, indices};
}

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& indices, at::IntArrayRef kernel_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* op = "convext.max_pool2d_backward";
  const Pool2dShape s = max_pool2d_backward_check(grad_output, input, indices, kernel_size, stride, padding,
                                                  dilation, ceil_mode, op);
  const int64_t plane = input.size(2) * input.size(3);
  const c10::cuda::CUDAGuard guard(input.device());
  const bool nhwc = channels_last(input);
  at::Tensor grad_input =
      empty_like_layout(input.sizes(), input, input.suggest_memory_format(), input.scalar_type());
  if (grad_input.numel() == 0) {
    return grad_input;
  }
  if (indices.numel() > 0) {
    check_indices_kernel<<<blocks_for(indices.numel()), kThreads, 0, stream()>>>(
        view4<const int64_t>(indices), plane);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  CONVEXT_DISPATCH_CUDA_TYPES(input.scalar_type(), op, [&] {
    max_pool2d_backward_kernel<scalar_t><<<blocks_for(grad_input.numel()), kThreads, 0, stream()>>>(
        view4<const scalar_t>(grad_output), view4<const int64_t>(indices), view4<scalar_t>(grad_input), s.h,
        s.w, nhwc);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace
}  // namespace convext::cuda

TORCH_LIBRARY_IMPL(convext, CUDA, m) {
  m.impl("max_pool2d", &convext::cuda::max_pool2d_cuda);
  m.impl("max_pool2d_backward", &convext::cuda::max_pool2d_backward_cuda);
}
