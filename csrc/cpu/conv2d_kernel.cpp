// conv2d on the CPU: direct convolution over NCHW-indexed views, so every
// layout (contiguous, channels_last, sliced) is read in place. Each output
// element is one fixed-order sum: results are deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <vector>

#include "../conv2d.h"
#include "../view.h"
#include "isa.h"
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

// ---- Dense convolutions on the SIMD kernels (isa.h) ----------------------
//
// Inputs are copied once into a zero-padded NHWC buffer, so the micro-kernels
// need no bounds checks; weights are packed once per call into the order the
// micro-kernel reads. Outputs are computed in NHWC.

// Depthwise-like shapes (one input and one output channel per group) would use
// one SIMD lane in a vector; they stay on the direct kernels.
bool use_simd_dense(const Conv2dShape& s) {
  return s.in_per_group() > 1 || s.out_per_group() > 1;
}

// src (N, C, H, W) in any layout, as NHWC with zeros around: row i of src lands
// on row pad_top + i * step of a (height x width) buffer, rows outside are
// dropped (negative padding crops); likewise for columns. `slack` zeros follow
// the buffer, for kernels that read a vector past the last channel.
at::Tensor padded_nhwc(const at::Tensor& src, int64_t height, int64_t width, int64_t pad_top,
                       int64_t pad_left, int64_t step_h, int64_t step_w, int64_t slack) {
  const int64_t batch = src.size(0), channels = src.size(1);
  const bool spread = step_h > 1 || step_w > 1;
  // Already the buffer: channels_last, unpadded, nothing to spread out.
  if (!spread && slack == 0 && pad_top == 0 && pad_left == 0 && src.size(2) == height &&
      src.size(3) == width && src.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return src.permute({0, 2, 3, 1}).reshape({-1});
  }
  const int64_t size = batch * height * width * channels;
  at::Tensor buffer = spread ? at::zeros({size + slack}, src.options())
                             : at::empty({size + slack}, src.options());
  at::Tensor image = buffer.narrow(0, 0, size).view({batch, height, width, channels});
  const auto placed = [](int64_t count, int64_t pad, int64_t step, int64_t extent) {
    // Source indices [first, last) that land inside [0, extent).
    const int64_t first = pad < 0 ? ceil_div(-pad, step) : 0;
    const int64_t last = std::min(count, extent - pad > 0 ? ceil_div(extent - pad, step) : 0);
    return Range{first, std::max(first, last)};
  };
  const Range rows = placed(src.size(2), pad_top, step_h, height);
  const Range cols = placed(src.size(3), pad_left, step_w, width);
  const int64_t top = pad_top + rows.begin * step_h, left = pad_left + cols.begin * step_w;
  const int64_t bottom = rows.end > rows.begin ? pad_top + (rows.end - 1) * step_h + 1 : top;
  const int64_t right = cols.end > cols.begin ? pad_left + (cols.end - 1) * step_w + 1 : left;
  if (!spread) {  // zero only what the copy below leaves: the border and the slack
    image.slice(1, 0, top).zero_();
    image.slice(1, bottom, height).zero_();
    image.slice(1, top, bottom).slice(2, 0, left).zero_();
    image.slice(1, top, bottom).slice(2, right, width).zero_();
    buffer.narrow(0, size, slack).zero_();
  }
  if (bottom > top && right > left) {
    image.slice(1, top, bottom, step_h)
        .slice(2, left, right, step_w)
        .copy_(src.permute({0, 2, 3, 1})
                   .slice(1, rows.begin, rows.end)
                   .slice(2, cols.begin, cols.end));
  }
  return buffer;
}

// A dense convolution on NHWC buffers, as the SIMD row kernel sees it.
struct DenseConv {
  int64_t batch, groups, in_per_group, out_per_group;
  int64_t in_h, in_w;  // the padded input buffer
  int64_t out_h, out_w;
  int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;

  int64_t in_channels() const { return groups * in_per_group; }
  int64_t out_channels() const { return groups * out_per_group; }
};

// Channel blocks of the output: vectors per block, block width, blocks per group.
struct Blocking {
  int vectors;
  int64_t width, per_group;
};

Blocking output_blocking(int64_t out_per_group, int lanes) {
  const int vectors = static_cast<int>(std::min<int64_t>(4, ceil_div(out_per_group, lanes)));
  const int64_t width = int64_t{vectors} * lanes;
  return {vectors, width, ceil_div(out_per_group, width)};
}

// weight (C_out, C_in / groups, kh, kw) packed as [group][block][kh][kw][ic][lane].
// transposed: pack the weights of the transposed convolution (channel roles
// swapped, taps flipped), which computes the input gradient.
template <typename T>
at::Tensor pack_weight(const at::Tensor& weight, int64_t groups, bool transposed,
                       const Blocking& blocking) {
  const Nchw<const T> w = read_view<T>(weight);
  const int64_t kernel_h = weight.size(2), kernel_w = weight.size(3);
  const int64_t weight_out = weight.size(0) / groups, weight_in = weight.size(1);
  const int64_t out_per_group = transposed ? weight_in : weight_out;
  const int64_t in_per_group = transposed ? weight_out : weight_in;
  at::Tensor packed = at::zeros(
      {groups * blocking.per_group * kernel_h * kernel_w * in_per_group * blocking.width},
      weight.options());
  T* p = packed.mutable_data_ptr<T>();
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t block = 0; block < blocking.per_group; ++block) {
      for (int64_t kh = 0; kh < kernel_h; ++kh) {
        for (int64_t kw = 0; kw < kernel_w; ++kw) {
          for (int64_t ic = 0; ic < in_per_group; ++ic) {
            for (int64_t lane = 0; lane < blocking.width; ++lane, ++p) {
              const int64_t oc = block * blocking.width + lane;
              if (oc >= out_per_group) {
                continue;
              }
              *p = transposed ? w(g * weight_out + ic, oc, kernel_h - 1 - kh, kernel_w - 1 - kw)
                              : w(g * weight_out + oc, ic, kh, kw);
            }
          }
        }
      }
    }
  }
  return packed;
}

template <typename T>
void dense_conv_simd(const KernelsFor<T>& k, const DenseConv& c, const T* input,
                     const T* packed_weight, const T* packed_bias, const Blocking& blocking,
                     T* output) {
  // Work items: (image, run of output pixels, group, channel block), the block
  // fastest so that neighbouring items share their input pixels in cache.
  // 72 pixels: a whole number of register blocks of every kernel width.
  constexpr int64_t kRun = 72;
  const int64_t pixels = c.out_h * c.out_w, runs = ceil_div(pixels, kRun);
  const int64_t in_c = c.in_channels(), out_c = c.out_channels();
  const int64_t items = c.batch * runs * c.groups * blocking.per_group;
  const int64_t block_weights = c.kernel_h * c.kernel_w * c.in_per_group * blocking.width;
  parallel_over(items, kRun * block_weights, [&](int64_t item) {
    const int64_t block = item % blocking.per_group;
    const int64_t g = item / blocking.per_group % c.groups;
    const int64_t run = item / (blocking.per_group * c.groups) % runs;
    const int64_t n = item / (blocking.per_group * c.groups * runs);
    const int64_t block_index = g * blocking.per_group + block;
    ConvPixelsArgs<T> a;
    a.input = input + n * c.in_h * c.in_w * in_c + g * c.in_per_group;
    a.input_row = c.in_w * in_c;
    a.input_pixel = in_c;
    a.in_channels = c.in_per_group;
    a.kernel_h = c.kernel_h;
    a.kernel_w = c.kernel_w;
    a.stride_h = c.stride_h;
    a.stride_w = c.stride_w;
    a.dilation_h = c.dilation_h;
    a.dilation_w = c.dilation_w;
    a.weight = packed_weight + block_index * block_weights;
    a.bias = packed_bias ? packed_bias + block_index * blocking.width : nullptr;
    a.output = output + n * pixels * out_c + g * c.out_per_group + block * blocking.width;
    a.output_pixel = out_c;
    a.out_w = c.out_w;
    a.pixel_begin = run * kRun;
    a.pixel_end = std::min(pixels, (run + 1) * kRun);
    a.channels = std::min(blocking.width, c.out_per_group - block * blocking.width);
    a.vectors = blocking.vectors;
    k.conv_pixels(a);
  });
}

// An NHWC result as a tensor of torch's layout for this convolution.
at::Tensor nhwc_result(at::Tensor nhwc, at::MemoryFormat format) {
  return format == at::MemoryFormat::ChannelsLast ? nhwc : nhwc.contiguous();
}

at::Tensor empty_nhwc(at::IntArrayRef nchw_sizes, const at::Tensor& like) {
  return at::empty(nchw_sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

template <typename T>
at::Tensor conv2d_forward_simd(const Conv2dShape& s, const at::Tensor& input,
                               const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                               at::MemoryFormat format) {
  const KernelsFor<T>& k = active_isa().get<T>();
  const DenseConv c{s.batch, s.groups, s.in_per_group(), s.out_per_group(),
                    s.h.in_size + 2 * s.h.pad, s.w.in_size + 2 * s.w.pad,
                    s.h.out_size, s.w.out_size, s.h.kernel, s.w.kernel,
                    s.h.stride, s.w.stride, s.h.dilation, s.w.dilation};
  const at::Tensor padded = padded_nhwc(input, c.in_h, c.in_w, s.h.pad, s.w.pad, 1, 1, 0);
  const Blocking blocking = output_blocking(c.out_per_group, k.lanes);
  const at::Tensor packed = pack_weight<T>(weight, s.groups, false, blocking);
  at::Tensor packed_bias;
  if (bias) {
    packed_bias = at::zeros({s.groups, blocking.per_group * blocking.width}, weight.options());
    packed_bias.narrow(1, 0, c.out_per_group).copy_(bias->view({s.groups, c.out_per_group}));
  }
  at::Tensor output = empty_nhwc({s.batch, s.out_channels, s.h.out_size, s.w.out_size}, input);
  dense_conv_simd<T>(k, c, padded.const_data_ptr<T>(), packed.const_data_ptr<T>(),
                     bias ? packed_bias.const_data_ptr<T>() : nullptr, blocking,
                     output.mutable_data_ptr<T>());
  return nhwc_result(output, format);
}

// The input gradient is a stride-1 convolution of grad_output, spread out by
// the stride with zeros between, by the transposed and flipped weights.
template <typename T>
at::Tensor conv2d_backward_input_simd(const Conv2dShape& s, const at::Tensor& grad_output,
                                      const at::Tensor& weight, at::MemoryFormat format) {
  const KernelsFor<T>& k = active_isa().get<T>();
  const int64_t reach_h = s.h.dilation * (s.h.kernel - 1), reach_w = s.w.dilation * (s.w.kernel - 1);
  const DenseConv c{s.batch, s.groups, s.out_per_group(), s.in_per_group(),
                    s.h.in_size + reach_h, s.w.in_size + reach_w,
                    s.h.in_size, s.w.in_size, s.h.kernel, s.w.kernel,
                    1, 1, s.h.dilation, s.w.dilation};
  const at::Tensor spread = padded_nhwc(grad_output, c.in_h, c.in_w, reach_h - s.h.pad,
                                        reach_w - s.w.pad, s.h.stride, s.w.stride, 0);
  const Blocking blocking = output_blocking(c.out_per_group, k.lanes);
  const at::Tensor packed = pack_weight<T>(weight, s.groups, true, blocking);
  at::Tensor grad_input = empty_nhwc({s.batch, s.in_channels, s.h.in_size, s.w.in_size}, weight);
  dense_conv_simd<T>(k, c, spread.const_data_ptr<T>(), packed.const_data_ptr<T>(), nullptr,
                     blocking, grad_input.mutable_data_ptr<T>());
  return nhwc_result(grad_input, format);
}

// Tiles of (group, tap, output channels, input channels), each owned by one
// thread and summed over the output pixels chunk by chunk in a fixed order:
// deterministic for any thread count, and each chunk of grad_output and input
// stays in cache while every tile of the thread passes over it.
template <typename T>
void conv2d_backward_weight_simd(const Conv2dShape& s, const at::Tensor& grad_output,
                                 const at::Tensor& input, const at::Tensor& grad_weight) {
  const KernelsFor<T>& k = active_isa().get<T>();
  const int64_t in_h = s.h.in_size + 2 * s.h.pad, in_w = s.w.in_size + 2 * s.w.pad;
  const int64_t in_c = s.in_channels, out_c = s.out_channels;
  const at::Tensor padded = padded_nhwc(input, in_h, in_w, s.h.pad, s.w.pad, 1, 1, k.tile_ic);
  const at::Tensor grad = padded_nhwc(grad_output, s.h.out_size, s.w.out_size, 0, 0, 1, 1, k.tile_oc);
  const T* x = padded.const_data_ptr<T>();
  const T* gy = grad.const_data_ptr<T>();
  const int64_t oc_tiles = ceil_div(s.out_per_group(), k.tile_oc);
  const int64_t ic_tiles = ceil_div(s.in_per_group(), k.tile_ic);
  const int64_t taps = s.h.kernel * s.w.kernel;
  const int64_t tiles = s.groups * taps * oc_tiles * ic_tiles;
  const int64_t pixels = s.batch * s.h.out_size * s.w.out_size;
  const int64_t tile_size = int64_t{k.tile_oc} * k.tile_ic;
  constexpr int64_t kChunk = 256;
  Nchw<T> gw = write_view<T>(grad_weight);
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> sums((end - begin) * tile_size, T(0));
    for (int64_t p0 = 0; p0 < pixels; p0 += kChunk) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t ic_tile = t % ic_tiles, oc_tile = t / ic_tiles % oc_tiles;
        const int64_t tap = t / (ic_tiles * oc_tiles) % taps, g = t / (ic_tiles * oc_tiles * taps);
        const int64_t kh = tap / s.w.kernel, kw = tap % s.w.kernel;
        WeightGradArgs<T> a;
        a.input = x + (kh * s.h.dilation * in_w + kw * s.w.dilation) * in_c +
                  g * s.in_per_group() + ic_tile * k.tile_ic;
        a.input_image = in_h * in_w * in_c;
        a.input_row = in_w * in_c;
        a.input_pixel = in_c;
        a.stride_h = s.h.stride;
        a.stride_w = s.w.stride;
        a.grad_output = gy + g * s.out_per_group() + oc_tile * k.tile_oc;
        a.grad_pixel = out_c;
        a.out_h = s.h.out_size;
        a.out_w = s.w.out_size;
        a.pixel_begin = p0;
        a.pixel_end = std::min(pixels, p0 + kChunk);
        a.sums = sums.data() + (t - begin) * tile_size;
        k.weight_grad_tile(a);
      }
    }
    for (int64_t t = begin; t < end; ++t) {
      const int64_t ic_tile = t % ic_tiles, oc_tile = t / ic_tiles % oc_tiles;
      const int64_t tap = t / (ic_tiles * oc_tiles) % taps, g = t / (ic_tiles * oc_tiles * taps);
      const T* tile = sums.data() + (t - begin) * tile_size;
      for (int64_t j = 0; j < k.tile_oc && oc_tile * k.tile_oc + j < s.out_per_group(); ++j) {
        for (int64_t i = 0; i < k.tile_ic && ic_tile * k.tile_ic + i < s.in_per_group(); ++i) {
          gw(g * s.out_per_group() + oc_tile * k.tile_oc + j, ic_tile * k.tile_ic + i,
             tap / s.w.kernel, tap % s.w.kernel) = tile[j * k.tile_ic + i];
        }
      }
    }
  });
}

at::Tensor conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape s =
      conv2d_check(input, weight, bias, stride, padding, dilation, groups, "convext.conv2d");
  const at::MemoryFormat format = conv2d_memory_format(input, weight);
  if (use_simd_dense(s)) {
    return AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "convext.conv2d", [&] {
      return conv2d_forward_simd<scalar_t>(s, input, weight, bias, format);
    });
  }
  at::Tensor output = empty_like_layout({s.batch, s.out_channels, s.h.out_size, s.w.out_size},
                                        input, format, input.scalar_type());
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
  const at::MemoryFormat format = conv2d_memory_format(input, weight);
  if (use_simd_dense(s)) {
    return AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
      return conv2d_backward_input_simd<scalar_t>(s, grad_output, weight, format);
    });
  }
  at::Tensor grad_input = empty_like_layout(input.sizes(), input, format, input.scalar_type());
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
    if (use_simd_dense(s)) {
      conv2d_backward_weight_simd<scalar_t>(s, grad_output, input, grad_weight);
    } else {
      conv2d_backward_weight_kernel<scalar_t>(s, read_view<scalar_t>(grad_output),
                                              read_view<scalar_t>(input),
                                              write_view<scalar_t>(grad_weight));
    }
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
