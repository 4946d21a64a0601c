// avg_pool2d on the CPU: the SIMD kernels (isa.h) over NCHW planes or NHWC
// images; other layouts are copied to the one torch suggests for them.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../avg_pool2d.h"
#include "pool_layout.h"
#include "widen.h"

namespace convext::cpu {
namespace {

at::Tensor avg_pool2d_cpu(const at::Tensor& input, at::IntArrayRef kernel_size,
                          at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode,
                          bool count_include_pad, std::optional<int64_t> divisor_override) {
  constexpr const char* op = "convext.avg_pool2d";
  const Pool2dShape s =
      avg_pool2d_check(input, kernel_size, stride, padding, ceil_mode, divisor_override, op);
  if (is_half_type(input)) {
    return in_float32(input.scalar_type(), avg_pool2d_cpu, input, kernel_size, stride, padding,
                      ceil_mode, count_include_pad, divisor_override);
  }
  const PoolImages layout = PoolImages::of(input);
  const at::Tensor x = layout.dense(input);
  at::Tensor output =
      empty_like_layout({s.batch, s.channels, s.h.out_size, s.w.out_size}, input, layout.format,
                        input.scalar_type());
  const int64_t in_image = s.h.in_size * s.w.in_size * layout.channels;
  const int64_t out_image = s.h.out_size * s.w.out_size * layout.channels;
  const auto rows = avg_pool_taps(s.h, count_include_pad);
  const auto cols = avg_pool_taps(s.w, count_include_pad);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    const auto& kernels = active_isa().get<scalar_t>();
    const bool stream = streams_pixels(output, layout, kernels.lanes);
    run_pool<scalar_t>(kernels.avg_pool, true, s, layout, rows, cols,
                       [&](PoolArgs<scalar_t>& a, int64_t image) {
                         a.input = x.const_data_ptr<scalar_t>() + image * in_image;
                         a.output = output.mutable_data_ptr<scalar_t>() + image * out_image;
                         a.divisor_override = divisor_override.value_or(0);
                         a.stream = stream;
                       });
  });
  return output;
}

at::Tensor avg_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, bool ceil_mode,
                                   bool count_include_pad,
                                   std::optional<int64_t> divisor_override) {
  constexpr const char* op = "convext.avg_pool2d_backward";
  const Pool2dShape s = avg_pool2d_backward_check(grad_output, input, kernel_size, stride, padding,
                                                 ceil_mode, divisor_override, op);
  if (is_half_type(input)) {
    return in_float32(input.scalar_type(), avg_pool2d_backward_cpu, grad_output, input,
                      kernel_size, stride, padding, ceil_mode, count_include_pad,
                      divisor_override);
  }
  const PoolImages layout = PoolImages::of(input);
  const at::Tensor grad = layout.dense(grad_output);
  at::Tensor grad_input =
      empty_like_layout(input.sizes(), input, layout.format, input.scalar_type());
  const int64_t in_image = s.h.in_size * s.w.in_size * layout.channels;
  const int64_t out_image = s.h.out_size * s.w.out_size * layout.channels;
  const auto rows = avg_pool_taps(s.h, count_include_pad);
  const auto cols = avg_pool_taps(s.w, count_include_pad);
  const PlaneWindows windows(s.h, s.w);  // for NCHW planes
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    const auto& kernels = active_isa().get<scalar_t>();
    const bool stream = streams_pixels(grad_input, layout, kernels.lanes);
    run_pool<scalar_t>(kernels.avg_pool_backward, false, s, layout, rows,
                       cols, [&](PoolArgs<scalar_t>& a, int64_t image) {
                         a.grad_output = grad.const_data_ptr<scalar_t>() + image * out_image;
                         a.grad_input = grad_input.mutable_data_ptr<scalar_t>() + image * in_image;
                         a.divisor_override = divisor_override.value_or(0);
                         a.row_windows = windows.rows.data();
                         a.column_windows = windows.columns.data();
                         a.column_layers = windows.column_layers;
                         a.stream = stream;
                       }, std::max(2 * s.w.out_size + 1,  // planes: see avg_pool_plane_backward
                               s.w.out_size * layout.channels));  // channels_last: a row of shares
  });
  return grad_input;
}

}  // namespace
}  // namespace convext::cpu

TORCH_LIBRARY_IMPL(convext, CPU, m) {
  m.impl("avg_pool2d", &convext::cpu::avg_pool2d_cpu);
  m.impl("avg_pool2d_backward", &convext::cpu::avg_pool2d_backward_cpu);
}
