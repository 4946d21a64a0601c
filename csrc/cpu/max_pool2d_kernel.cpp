// max_pool2d on the CPU: the SIMD kernels (isa.h) over NCHW planes or NHWC
// images; other layouts are copied to the one torch suggests for them.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <tuple>

#include "../max_pool2d.h"
#include "parallel.h"
#include "pool_layout.h"
#include "widen.h"

namespace convext::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor> max_pool2d_cpu(const at::Tensor& input,
                                                  at::IntArrayRef kernel_size,
                                                  at::IntArrayRef stride,
                                                  at::IntArrayRef padding,
                                                  at::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* op = "convext.max_pool2d";
  const Pool2dShape s =
      pool2d_check(input, kernel_size, stride, padding, dilation, ceil_mode, op);
  if (is_half_type(input)) {
    return in_float32(input.scalar_type(), max_pool2d_cpu, input, kernel_size, stride, padding,
                      dilation, ceil_mode);
  }
  const std::array<int64_t, 4> out_sizes = {s.batch, s.channels, s.h.out_size, s.w.out_size};
  const PoolImages layout = PoolImages::of(input);
  const at::Tensor x = layout.dense(input);
  at::Tensor output = empty_like_layout(out_sizes, input, layout.format, input.scalar_type());
  at::Tensor indices = empty_like_layout(out_sizes, input, layout.format, at::kLong);
  const std::vector<PoolTaps> rows = max_pool_taps(s.h), cols = max_pool_taps(s.w);
  const int64_t in_image = s.h.in_size * s.w.in_size * layout.channels;
  const int64_t out_image = s.h.out_size * s.w.out_size * layout.channels;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    run_pool<scalar_t>(active_isa().get<scalar_t>().max_pool, true, s, layout, rows, cols,
                       [&](PoolArgs<scalar_t>& a, int64_t image) {
                         a.input = x.const_data_ptr<scalar_t>() + image * in_image;
                         a.output = output.mutable_data_ptr<scalar_t>() + image * out_image;
                         a.indices = indices.mutable_data_ptr<int64_t>() + image * out_image;
                       });
  });
  return {output, indices};
}

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& indices, at::IntArrayRef kernel_size,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* op = "convext.max_pool2d_backward";
  const Pool2dShape s = max_pool2d_backward_check(grad_output, input, indices, kernel_size, stride,
                                                  padding, dilation, ceil_mode, op);
  if (is_half_type(input)) {
    return in_float32(input.scalar_type(), max_pool2d_backward_cpu, grad_output, input, indices,
                      kernel_size, stride, padding, dilation, ceil_mode);
  }
  const PoolImages layout = PoolImages::of(input);
  const at::Tensor grad = layout.dense(grad_output), index = layout.dense(indices);
  at::Tensor grad_input =
      empty_like_layout(input.sizes(), input, layout.format, input.scalar_type());
  const int64_t plane = input.size(2) * input.size(3);
  const int64_t in_image = plane * layout.channels;
  const int64_t out_image = grad.size(2) * grad.size(3) * layout.channels;
  const int64_t* index_data = index.const_data_ptr<int64_t>();
  std::atomic<bool> all_inside{true};
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    const auto kernel = active_isa().get<scalar_t>().max_pool_backward;
    run_pool<scalar_t>([&](const PoolArgs<scalar_t>& a) {
                         if (!kernel(a)) {
                           all_inside = false;
                         }
                       },
                       false, s, layout, max_pool_taps(s.h), max_pool_taps(s.w),
                       [&](PoolArgs<scalar_t>& a, int64_t image) {
                         a.grad_output = grad.const_data_ptr<scalar_t>() + image * out_image;
                         a.grad_indices = index_data + image * out_image;
                         a.grad_input = grad_input.mutable_data_ptr<scalar_t>() + image * in_image;
                       });
  });
  // A kernel stopped at an index outside the plane before using it; name the first culprit.
  if (!all_inside) {
    const int64_t* bad = std::find_if(index_data, index_data + index.numel(),
                                      [&](int64_t i) { return i < 0 || i >= plane; });
    TORCH_CHECK(false, op, ": index ", *bad, " is outside the input plane of ", input.size(2), "x",
                input.size(3));
  }
  return grad_input;
}

}  // namespace
}  // namespace convext::cpu

TORCH_LIBRARY_IMPL(convext, CPU, m) {
  m.impl("max_pool2d", &convext::cpu::max_pool2d_cpu);
  m.impl("max_pool2d_backward", &convext::cpu::max_pool2d_backward_cpu);
}
