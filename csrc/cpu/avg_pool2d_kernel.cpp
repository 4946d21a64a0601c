// avg_pool2d on the CPU, over NCHW-indexed views of any layout.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../avg_pool2d.h"
#include "../view.h"
#include "parallel.h"

namespace convext::cpu {
namespace {

template <typename scalar_t>
void avg_pool2d_forward_kernel(const Pool2dShape& s, bool count_include_pad,
                               int64_t divisor_override, Nchw<const scalar_t> input,
                               Nchw<scalar_t> output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = s.batch * s.channels * s.h.out_size;
  parallel_over(rows, s.w.out_size * s.h.kernel * s.w.kernel, [&](int64_t row) {
    const int64_t oh = row % s.h.out_size;
    const int64_t c = row / s.h.out_size % s.channels;
    const int64_t n = row / (s.h.out_size * s.channels);
    for (int64_t ow = 0; ow < s.w.out_size; ++ow) {
      const AvgWindow window = avg_window(s, oh, ow, count_include_pad, divisor_override);
      acc_t sum = 0;
      for (int64_t ih = window.rows.begin; ih < window.rows.end; ++ih) {
        for (int64_t iw = window.cols.begin; iw < window.cols.end; ++iw) {
          sum += static_cast<acc_t>(input(n, c, ih, iw));
        }
      }
      output(n, c, oh, ow) = static_cast<scalar_t>(sum / window.divisor);
    }
  });
}

// Scatter by plane, as max_pool2d's backward: one thread owns each plane.
template <typename scalar_t>
void avg_pool2d_backward_kernel(const Pool2dShape& s, bool count_include_pad,
                                int64_t divisor_override, Nchw<const scalar_t> grad_output,
                                Nchw<scalar_t> grad_input) {
  const int64_t plane = s.h.in_size * s.w.in_size;
  const int64_t cost = plane + s.h.out_size * s.w.out_size * s.h.kernel * s.w.kernel;
  parallel_over(s.batch * s.channels, cost, [&](int64_t p) {
    const int64_t c = p % s.channels, n = p / s.channels;
    for (int64_t ih = 0; ih < s.h.in_size; ++ih) {
      for (int64_t iw = 0; iw < s.w.in_size; ++iw) {
        grad_input(n, c, ih, iw) = scalar_t(0);
      }
    }
    for (int64_t oh = 0; oh < s.h.out_size; ++oh) {
      for (int64_t ow = 0; ow < s.w.out_size; ++ow) {
        const AvgWindow window = avg_window(s, oh, ow, count_include_pad, divisor_override);
        const scalar_t share = grad_output(n, c, oh, ow) / static_cast<scalar_t>(window.divisor);
        for (int64_t ih = window.rows.begin; ih < window.rows.end; ++ih) {
          for (int64_t iw = window.cols.begin; iw < window.cols.end; ++iw) {
            grad_input(n, c, ih, iw) += share;
          }
        }
      }
    }
  });
}

at::Tensor avg_pool2d_cpu(const at::Tensor& input, at::IntArrayRef kernel_size,
                          at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode,
                          bool count_include_pad, std::optional<int64_t> divisor_override) {
  constexpr const char* op = "convext.avg_pool2d";
  const Pool2dShape s =
      avg_pool2d_check(input, kernel_size, stride, padding, ceil_mode, divisor_override, op);
  at::Tensor output =
      empty_like_layout({s.batch, s.channels, s.h.out_size, s.w.out_size}, input,
                        input.suggest_memory_format(), input.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    avg_pool2d_forward_kernel<scalar_t>(s, count_include_pad, divisor_override.value_or(0),
                                        read_view<scalar_t>(input),
                                        write_view<scalar_t>(output));
  });
  return output;
}

at::Tensor avg_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, bool ceil_mode,
                                   bool count_include_pad,
                                   std::optional<int64_t> divisor_override) {
  constexpr const char* op = "convext.avg_pool2d_backward";
  const Pool2dShape s =
      avg_pool2d_check(input, kernel_size, stride, padding, ceil_mode, divisor_override, op);
  check_same_dtype_and_device(grad_output, input, op, "grad_output", "input");
  check_grad_output_size(grad_output, {s.batch, s.channels, s.h.out_size, s.w.out_size}, op);
  at::Tensor grad_input = empty_like_layout(input.sizes(), input, input.suggest_memory_format(),
                                            input.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    avg_pool2d_backward_kernel<scalar_t>(s, count_include_pad, divisor_override.value_or(0),
                                         read_view<scalar_t>(grad_output),
                                         write_view<scalar_t>(grad_input));
  });
  return grad_input;
}

}  // namespace
}  // namespace convext::cpu

TORCH_LIBRARY_IMPL(convext, CPU, m) {
  m.impl("avg_pool2d", &convext::cpu::avg_pool2d_cpu);
  m.impl("avg_pool2d_backward", &convext::cpu::avg_pool2d_backward_cpu);
}
