// avg_pool2d on CUDA: a thread per output (forward) or per input element
// (backward, a gather over the windows that cover it: no atomics, the same
// result run to run). Windows and divisors follow shape.h, as on the CPU.
#include <torch/library.h>

#include <optional>

#include "../avg_pool2d.h"
#include "common.cuh"

namespace convext::cuda {
namespace {

__device__ inline int64_t divisor_of(const AvgAxis& h, const AvgAxis& w, int64_t divisor_override) {
  return divisor_override != 0 ? divisor_override : h.divisor_factor * w.divisor_factor;
}

template <typename T>
__global__ void avg_pool2d_forward_kernel(Tensor4<const T> input, Tensor4<T> output, WindowAxis rows,
                                          WindowAxis cols, bool count_include_pad, int64_t divisor_override,
                                          bool nhwc) {
  using acc_t = at::opmath_type<T>;
  CONVEXT_GRID_STRIDE_LOOP(i, output.size[0] * output.size[1] * output.size[2] * output.size[3]) {
    const Coords o = coords_of(i, output.size, nhwc);
    const AvgAxis h = avg_axis(rows, o.h, count_include_pad), w = avg_axis(cols, o.w, count_include_pad);
    acc_t sum = 0;
    for (int64_t ih = h.range.begin; ih < h.range.end; ++ih) {
      for (int64_t iw = w.range.begin; iw < w.range.end; ++iw) {
        sum += static_cast<acc_t>(input(o.n, o.c, ih, iw));
      }
    }
    output(o.n, o.c, o.h, o.w) = static_cast<T>(sum / static_cast<acc_t>(divisor_of(h, w, divisor_override)));
  }
}

template <typename T>
__global__ void avg_pool2d_backward_kernel(Tensor4<const T> grad_output, Tensor4<T> grad_input, WindowAxis rows,
                                           WindowAxis cols, bool count_include_pad, int64_t divisor_override,
                                           bool nhwc) {
  using acc_t = at::opmath_type<T>;
  CONVEXT_GRID_STRIDE_LOOP(i, grad_input.size[0] * grad_input.size[1] * grad_input.size[2] *
                                  grad_input.size[3]) {
    const Coords p = coords_of(i, grad_input.size, nhwc);
    const Range oh = rows.outputs_covering(p.h), ow = cols.outputs_covering(p.w);
    acc_t sum = 0;
    for (int64_t y = oh.begin; y < oh.end; ++y) {
      const AvgAxis h = avg_axis(rows, y, count_include_pad);
      if (p.h < h.range.begin || p.h >= h.range.end) {
        continue;
      }
      for (int64_t x = ow.begin; x < ow.end; ++x) {
        const AvgAxis w = avg_axis(cols, x, count_include_pad);
        if (p.w >= w.range.begin && p.w < w.range.end) {
          // Each output's share, grad / divisor, as torch computes it.
          sum += static_cast<acc_t>(grad_output(p.n, p.c, y, x)) /
                 static_cast<acc_t>(divisor_of(h, w, divisor_override));
        }
      }
    }
    grad_input(p.n, p.c, p.h, p.w) = static_cast<T>(sum);
  }
}

at::Tensor avg_pool2d_cuda(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                           at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                           std::optional<int64_t> divisor_override) {
  constexpr const char* op = "convext.avg_pool2d";
  const Pool2dShape s = avg_pool2d_check(input, kernel_size, stride, padding, ceil_mode, divisor_override, op);
  const c10::cuda::CUDAGuard guard(input.device());
  const bool nhwc = channels_last(input);
  at::Tensor output = empty_like_layout({s.batch, s.channels, s.h.out_size, s.w.out_size}, input,
                                        input.suggest_memory_format(), input.scalar_type());
  if (output.numel() == 0) {
    return output;
  }
  CONVEXT_DISPATCH_CUDA_TYPES(input.scalar_type(), op, [&] {
    avg_pool2d_forward_kernel<scalar_t><<<blocks_for(output.numel()), kThreads, 0, stream()>>>(
        view4<const scalar_t>(input), view4<scalar_t>(output), s.h, s.w, count_include_pad,
        divisor_override.value_or(0), nhwc);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

at::Tensor avg_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                    bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override) {
  constexpr const char* op = "convext.avg_pool2d_backward";
  const Pool2dShape s = avg_pool2d_backward_check(grad_output, input, kernel_size, stride, padding, ceil_mode,
                                                 divisor_override, op);
  const c10::cuda::CUDAGuard guard(input.device());
  const bool nhwc = channels_last(input);
  at::Tensor grad_input =
      empty_like_layout(input.sizes(), input, input.suggest_memory_format(), input.scalar_type());
  if (grad_input.numel() == 0) {
    return grad_input;
  }
  CONVEXT_DISPATCH_CUDA_TYPES(input.scalar_type(), op, [&] {
    avg_pool2d_backward_kernel<scalar_t><<<blocks_for(grad_input.numel()), kThreads, 0, stream()>>>(
        view4<const scalar_t>(grad_output), view4<scalar_t>(grad_input), s.h, s.w, count_include_pad,
        divisor_override.value_or(0), nhwc);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace
}  // namespace convext::cuda

TORCH_LIBRARY_IMPL(convext, CUDA, m) {
  m.impl("avg_pool2d", &convext::cuda::avg_pool2d_cuda);
  m.impl("avg_pool2d_backward", &convext::cuda::avg_pool2d_backward_cuda);
}
