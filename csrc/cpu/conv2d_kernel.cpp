// conv2d on the CPU: direct convolution over NCHW-indexed views, so every
// layout (contiguous, channels_last, sliced) is read in place. Each output
// element is one fixed-order sum: results are deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../conv2d.h"
#include "../view.h"
#include "parallel.h"

namespace convext::cpu {
namespace {

template <typename scalar_t>
void conv2d_forward_kernel(const Conv2dShape& s, Nchw<const scalar_t> input,
                           Nchw<const scalar_t> weight, const scalar_t* bias,
                           int64_t bias_stride, Nchw<scalar_t> output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t in_per_group = s.in_per_group(), out_per_group = s.out_per_group();
  const int64_t rows = s.batch * s.out_channels * s.h.out_size;
  const int64_t cost = s.w.out_size * in_per_group * s.h.kernel * s.w.kernel;
  parallel_over(rows, cost, [&](int64_t row) {
    const int64_t oh = row % s.h.out_size;
    const int64_t oc = row / s.h.out_size % s.out_channels;
    const int64_t n = row / (s.h.out_size * s.out_channels);
    const int64_t first_in_channel = oc / out_per_group * in_per_group;
    const Range kh_taps = s.h.taps(oh);
    for (int64_t ow = 0; ow < s.w.out_size; ++ow) {
      const Range kw_taps = s.w.taps(ow);
      acc_t acc = bias ? static_cast<acc_t>(bias[oc * bias_stride]) : acc_t(0);
      for (int64_t ic = 0; ic < in_per_group; ++ic) {
        for (int64_t kh = kh_taps.begin; kh < kh_taps.end; ++kh) {
          const int64_t ih = s.h.origin(oh) + kh * s.h.dilation;
          for (int64_t kw = kw_taps.begin; kw < kw_taps.end; ++kw) {
            const int64_t iw = s.w.origin(ow) + kw * s.w.dilation;
            acc += static_cast<acc_t>(input(n, first_in_channel + ic, ih, iw)) *
                   static_cast<acc_t>(weight(oc, ic, kh, kw));
          }
        }
      }
      output(n, oc, oh, ow) = static_cast<scalar_t>(acc);
    }
  });
}

// grad_input[n, c, ih, iw] gathers every (output, tap) pair that read it: a
// transposed convolution with no scatter, so no two threads write one element.
template <typename scalar_t>
void conv2d_backward_input_kernel(const Conv2dShape& s, Nchw<const scalar_t> grad_output,
                                  Nchw<const scalar_t> weight, Nchw<scalar_t> grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t in_per_group = s.in_per_group(), out_per_group = s.out_per_group();
  const int64_t rows = s.batch * s.in_channels * s.h.in_size;
  const int64_t cost = s.w.in_size * out_per_group * s.h.kernel * s.w.kernel;
  parallel_over(rows, cost, [&](int64_t row) {
    const int64_t ih = row % s.h.in_size;
    const int64_t c = row / s.h.in_size % s.in_channels;
    const int64_t n = row / (s.h.in_size * s.in_channels);
    const int64_t ic = c % in_per_group;
    const int64_t first_out_channel = c / in_per_group * out_per_group;
    for (int64_t iw = 0; iw < s.w.in_size; ++iw) {
      acc_t acc = 0;
      for (int64_t kh = 0; kh < s.h.kernel; ++kh) {
        const int64_t oh = s.h.output_reading(ih, kh);
        if (oh < 0) {
          continue;
        }
        for (int64_t kw = 0; kw < s.w.kernel; ++kw) {
          const int64_t ow = s.w.output_reading(iw, kw);
          if (ow < 0) {
            continue;
          }
          for (int64_t j = 0; j < out_per_group; ++j) {
            const int64_t oc = first_out_channel + j;
            acc += static_cast<acc_t>(grad_output(n, oc, oh, ow)) *
                   static_cast<acc_t>(weight(oc, ic, kh, kw));
          }
        }
      }
      grad_input(n, c, ih, iw) = static_cast<scalar_t>(acc);
    }
  });
}

// grad_weight[oc, ic, kh, kw] sums over the batch and the outputs whose tap
// (kh, kw) lands inside the input.
template <typename scalar_t>
void conv2d_backward_weight_kernel(const Conv2dShape& s, Nchw<const scalar_t> grad_output,
                                   Nchw<const scalar_t> input, Nchw<scalar_t> grad_weight) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t in_per_group = s.in_per_group(), out_per_group = s.out_per_group();
  const int64_t entries = s.out_channels * in_per_group * s.h.kernel * s.w.kernel;
  const int64_t cost = s.batch * s.h.out_size * s.w.out_size;
  parallel_over(entries, cost, [&](int64_t entry) {
    const int64_t kw = entry % s.w.kernel;
    const int64_t kh = entry / s.w.kernel % s.h.kernel;
    const int64_t ic = entry / (s.w.kernel * s.h.kernel) % in_per_group;
    const int64_t oc = entry / (s.w.kernel * s.h.kernel * in_per_group);
    const int64_t c = oc / out_per_group * in_per_group + ic;
    const Range oh_range = s.h.outputs_reading_tap(kh);
    const Range ow_range = s.w.outputs_reading_tap(kw);
    acc_t acc = 0;
    for (int64_t n = 0; n < s.batch; ++n) {
      for (int64_t oh = oh_range.begin; oh < oh_range.end; ++oh) {
        const int64_t ih = s.h.origin(oh) + kh * s.h.dilation;
        for (int64_t ow = ow_range.begin; ow < ow_range.end; ++ow) {
          const int64_t iw = s.w.origin(ow) + kw * s.w.dilation;
          acc += static_cast<acc_t>(grad_output(n, oc, oh, ow)) *
                 static_cast<acc_t>(input(n, c, ih, iw));
        }
      }
    }
    grad_weight(oc, ic, kh, kw) = static_cast<scalar_t>(acc);
  });
}

template <typename scalar_t>
void conv2d_backward_bias_kernel(Nchw<const scalar_t> grad_output, at::IntArrayRef sizes,
                                 scalar_t* grad_bias) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t batch = sizes[0], channels = sizes[1], height = sizes[2], width = sizes[3];
  parallel_over(channels, batch * height * width, [&](int64_t c) {
    acc_t acc = 0;
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t h = 0; h < height; ++h) {
        for (int64_t w = 0; w < width; ++w) {
          acc += static_cast<acc_t>(grad_output(n, c, h, w));
        }
      }
    }
    grad_bias[c] = static_cast<scalar_t>(acc);
  });
}

at::Tensor conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape s =
      conv2d_check(input, weight, bias, stride, padding, dilation, groups, "convext.conv2d");
  at::Tensor output =
      empty_like_layout({s.batch, s.out_channels, s.h.out_size, s.w.out_size}, input,
                        conv2d_memory_format(input, weight), input.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "convext.conv2d", [&] {
    conv2d_forward_kernel<scalar_t>(s, read_view<scalar_t>(input), read_view<scalar_t>(weight),
                                    bias ? bias->const_data_ptr<scalar_t>() : nullptr,
                                    bias ? bias->stride(0) : 0, write_view<scalar_t>(output));
  });
  return output;
}

at::Tensor conv2d_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& weight, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups) {
  constexpr const char* op = "convext.conv2d_backward_input";
  const Conv2dShape s = conv2d_backward_check(grad_output, input, weight, stride, padding,
                                              dilation, groups, op);
  at::Tensor grad_input = empty_like_layout(input.sizes(), input,
                                            conv2d_memory_format(input, weight),
                                            input.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    conv2d_backward_input_kernel<scalar_t>(s, read_view<scalar_t>(grad_output),
                                           read_view<scalar_t>(weight),
                                           write_view<scalar_t>(grad_input));
  });
  return grad_input;
}

at::Tensor conv2d_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                      const at::Tensor& weight, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups) {
  constexpr const char* op = "convext.conv2d_backward_weight";
  const Conv2dShape s = conv2d_backward_check(grad_output, input, weight, stride, padding,
                                              dilation, groups, op);
  at::Tensor grad_weight = empty_like_layout(weight.sizes(), weight,
                                             conv2d_memory_format(input, weight),
                                             weight.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    conv2d_backward_weight_kernel<scalar_t>(s, read_view<scalar_t>(grad_output),
                                            read_view<scalar_t>(input),
                                            write_view<scalar_t>(grad_weight));
  });
  return grad_weight;
}

at::Tensor conv2d_backward_bias_cpu(const at::Tensor& grad_output) {
  constexpr const char* op = "convext.conv2d_backward_bias";
  check_rank(grad_output, 4, op, "grad_output", "(N, C, H, W)");
  check_supported_dtype(grad_output, op, "grad_output");
  at::Tensor grad_bias = at::empty({grad_output.size(1)}, grad_output.options());
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), op, [&] {
    conv2d_backward_bias_kernel<scalar_t>(read_view<scalar_t>(grad_output), grad_output.sizes(),
                                          grad_bias.mutable_data_ptr<scalar_t>());
  });
  return grad_bias;
}

}  // namespace
}  // namespace convext::cpu

TORCH_LIBRARY_IMPL(convext, CPU, m) {
  m.impl("conv2d", &convext::cpu::conv2d_cpu);
  m.impl("conv2d_backward_input", &convext::cpu::conv2d_backward_input_cpu);
  m.impl("conv2d_backward_weight", &convext::cpu::conv2d_backward_weight_cpu);
  m.impl("conv2d_backward_bias", &convext::cpu::conv2d_backward_bias_cpu);
}
