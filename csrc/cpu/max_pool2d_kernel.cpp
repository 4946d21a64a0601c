// max_pool2d on the CPU, over NCHW-indexed views of any layout.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <limits>
#include <tuple>

#include "../max_pool2d.h"
#include "../view.h"
#include "parallel.h"

namespace convext::cpu {
namespace {

// torch's rule, kept exactly so that indices match: the first maximum wins a
// tie, a NaN beats everything and the last NaN wins, and a window of -inf
// points at its first tap inside the input.
template <typename scalar_t>
void max_pool2d_forward_kernel(const Pool2dShape& s, Nchw<const scalar_t> input,
                               Nchw<scalar_t> output, Nchw<int64_t> indices) {
  const int64_t rows = s.batch * s.channels * s.h.out_size;
  parallel_over(rows, s.w.out_size * s.h.kernel * s.w.kernel, [&](int64_t row) {
    const int64_t oh = row % s.h.out_size;
    const int64_t c = row / s.h.out_size % s.channels;
    const int64_t n = row / (s.h.out_size * s.channels);
    const Range kh_taps = s.h.taps(oh);
    for (int64_t ow = 0; ow < s.w.out_size; ++ow) {
      const Range kw_taps = s.w.taps(ow);
      scalar_t best = -std::numeric_limits<scalar_t>::infinity();
      int64_t best_index = (s.h.origin(oh) + kh_taps.begin * s.h.dilation) * s.w.in_size +
                           s.w.origin(ow) + kw_taps.begin * s.w.dilation;
      for (int64_t kh = kh_taps.begin; kh < kh_taps.end; ++kh) {
        const int64_t ih = s.h.origin(oh) + kh * s.h.dilation;
        for (int64_t kw = kw_taps.begin; kw < kw_taps.end; ++kw) {
          const int64_t iw = s.w.origin(ow) + kw * s.w.dilation;
          const scalar_t value = input(n, c, ih, iw);
          if (value > best || std::isnan(value)) {
            best = value;
            best_index = ih * s.w.in_size + iw;
          }
        }
      }
      output(n, c, oh, ow) = best;
      indices(n, c, oh, ow) = best_index;
    }
  });
}

// Scatter by plane: one thread owns each (n, c) plane of grad_input, so the
// sums need no atomics and are added in a fixed order.
template <typename scalar_t>
void max_pool2d_backward_kernel(Nchw<const scalar_t> grad_output, Nchw<const int64_t> indices,
                                at::IntArrayRef out_sizes, Nchw<scalar_t> grad_input,
                                at::IntArrayRef in_sizes) {
  const int64_t channels = in_sizes[1], height = in_sizes[2], width = in_sizes[3];
  const int64_t out_h = out_sizes[2], out_w = out_sizes[3];
  const int64_t plane = height * width;
  parallel_over(in_sizes[0] * channels, plane + out_h * out_w, [&](int64_t p) {
    const int64_t c = p % channels, n = p / channels;
    for (int64_t h = 0; h < height; ++h) {
      for (int64_t w = 0; w < width; ++w) {
        grad_input(n, c, h, w) = scalar_t(0);
      }
    }
    for (int64_t oh = 0; oh < out_h; ++oh) {
      for (int64_t ow = 0; ow < out_w; ++ow) {
        const int64_t index = indices(n, c, oh, ow);
        TORCH_CHECK(index >= 0 && index < plane, "convext.max_pool2d_backward: index ", index,
                    " is outside the input plane of ", height, "x", width);
        grad_input(n, c, index / width, index % width) += grad_output(n, c, oh, ow);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_cpu(const at::Tensor& input,
                                                  at::IntArrayRef kernel_size,
                                                  at::IntArrayRef stride,
                                                  at::IntArrayRef padding,
                                                  at::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* op = "convext.max_pool2d";
  const Pool2dShape s =
      pool2d_check(input, kernel_size, stride, padding, dilation, ceil_mode, op);
  const std::array<int64_t, 4> out_sizes = {s.batch, s.channels, s.h.out_size, s.w.out_size};
  const auto format = input.suggest_memory_format();
  at::Tensor output = empty_like_layout(out_sizes, input, format, input.scalar_type());
  at::Tensor indices = empty_like_layout(out_sizes, input, format, at::kLong);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    max_pool2d_forward_kernel<scalar_t>(s, read_view<scalar_t>(input),
                                        write_view<scalar_t>(output),
                                        write_view<int64_t>(indices));
  });
  return {output, indices};
}

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& indices) {
  constexpr const char* op = "convext.max_pool2d_backward";
  max_pool2d_backward_check(grad_output, input, indices, op);
  at::Tensor grad_input = empty_like_layout(input.sizes(), input, input.suggest_memory_format(),
                                            input.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    max_pool2d_backward_kernel<scalar_t>(read_view<scalar_t>(grad_output),
                                         read_view<int64_t>(indices), grad_output.sizes(),
                                         write_view<scalar_t>(grad_input), input.sizes());
  });
  return grad_input;
}

}  // namespace
}  // namespace convext::cpu

TORCH_LIBRARY_IMPL(convext, CPU, m) {
  m.impl("max_pool2d", &convext::cpu::max_pool2d_cpu);
  m.impl("max_pool2d_backward", &convext::cpu::max_pool2d_backward_cpu);
}
