#pragma once
// What max_pool2d's and avg_pool2d's CPU drivers share: the input as NHWC
// images (an NCHW plane is an image of one channel) and per-axis window taps.
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <vector>

#include "../shape.h"
#include "isa.h"
#include "parallel.h"

namespace convext::cpu {

struct PoolImages {
  at::MemoryFormat format;  // of the input, and so of every result
  int64_t images, channels;

  // NCHW: N * C images of one channel; channels_last: N images of C channels.
  static PoolImages of(const at::Tensor& input) {
    const at::MemoryFormat format = input.suggest_memory_format();
    const bool nhwc = format == at::MemoryFormat::ChannelsLast;
    return {format, nhwc ? input.size(0) : input.size(0) * input.size(1),
            nhwc ? input.size(1) : 1};
  }

  // t in this layout, copied only if it is not already.
  at::Tensor dense(const at::Tensor& t) const { return t.contiguous(format); }
};

// Whether the pooling kernels, with vectors of `lanes` values, write `result`
// (in `layout`) by streaming stores: see streaming_stores. An NCHW plane's
// vectors may start anywhere, so only channels_last images of whole channel
// vectors can.
inline bool streams_pixels(const at::Tensor& result, const PoolImages& layout, int64_t lanes) {
  return streaming_stores(result.const_data_ptr(), result.numel(), layout.channels, lanes, result.element_size());
}

// Per output index of one axis: the first tap inside the input, the taps inside
// it, and the axis' factor of avg_pool2d's divisor.
inline std::vector<PoolTaps> max_pool_taps(const WindowAxis& axis) {
  std::vector<PoolTaps> taps(axis.out_size);
  for (int64_t o = 0; o < axis.out_size; ++o) {
    const Range r = axis.taps(o);
    taps[o] = {axis.origin(o) + r.begin * axis.dilation, r.end - r.begin, 0};
  }
  return taps;
}

inline std::vector<PoolTaps> avg_pool_taps(const WindowAxis& axis, bool count_include_pad) {
  std::vector<PoolTaps> taps(axis.out_size);
  for (int64_t o = 0; o < axis.out_size; ++o) {
    const AvgAxis a = avg_axis(axis, o, count_include_pad);
    taps[o] = {a.range.begin, a.range.end - a.range.begin, a.divisor_factor};
  }
  return taps;
}

// avg_pool2d backward on NCHW planes: the output rows over each input row,
// and the output columns over each input column in layers, as PoolArgs'
// row_windows and column_windows lay them out.
struct PlaneWindows {
  std::vector<int64_t> rows, columns;
  int64_t column_layers = 1;

  PlaneWindows(const WindowAxis& h, const WindowAxis& w) : rows(2 * h.in_size) {
    for (int64_t ih = 0; ih < h.in_size; ++ih) {
      const Range over = h.outputs_covering(ih);
      rows[2 * ih] = over.begin;
      rows[2 * ih + 1] = over.end;
    }
    for (int64_t iw = 0; iw < w.in_size; ++iw) {
      const Range over = w.outputs_covering(iw);
      column_layers = std::max(column_layers, over.end - over.begin);
    }
    columns.resize(column_layers * w.in_size);
    for (int64_t iw = 0; iw < w.in_size; ++iw) {
      const Range over = w.outputs_covering(iw);
      for (int64_t r = 0; r < column_layers; ++r) {
        columns[r * w.in_size + iw] = over.begin + r < over.end ? over.begin + r : w.out_size;
      }
    }
  }
};

// The PoolArgs fields that describe the window's geometry.
template <typename T>
PoolArgs<T> pool_geometry(const Pool2dShape& s, const PoolImages& layout,
                          const std::vector<PoolTaps>& rows, const std::vector<PoolTaps>& cols) {
  PoolArgs<T> a{};
  a.in_h = s.h.in_size;
  a.in_w = s.w.in_size;
  a.out_h = s.h.out_size;
  a.out_w = s.w.out_size;
  a.channels = layout.channels;
  a.rows = rows.data();
  a.cols = cols.data();
  a.dilation_h = s.h.dilation;
  a.dilation_w = s.w.dilation;
  a.stride_w = s.w.stride;
  // Columns whose every tap is inside the input form one run.
  a.full_cols_begin = a.full_cols_end = 0;
  for (int64_t o = 0; o < s.w.out_size; ++o) {
    if (cols[o].count == s.w.kernel) {
      a.full_cols_begin = a.full_cols_end > a.full_cols_begin ? a.full_cols_begin : o;
      a.full_cols_end = o + 1;
    }
  }
  a.max_window_offset = (s.h.kernel - 1) * s.h.dilation * s.w.in_size + (s.w.kernel - 1) * s.w.dilation;
  return a;
}

// Runs a pooling kernel of the active ISA over every image of `layout`.
// Forward kernels (by_rows) split images into runs of output rows; backward
// kernels scatter into a whole image each. bind(args, image) sets the image's
// tensors; each thread has scratch_elements values of scratch.
template <typename T, typename Kernel, typename Bind>
void run_pool(const Kernel& kernel, bool by_rows, const Pool2dShape& s, const PoolImages& layout,
              const std::vector<PoolTaps>& rows, const std::vector<PoolTaps>& cols, const Bind& bind,
              int64_t scratch_elements = 0) {
  const PoolArgs<T> geometry = pool_geometry<T>(s, layout, rows, cols);
  const int64_t row_cost = s.w.out_size * s.h.kernel * s.w.kernel * layout.channels;
  constexpr int64_t kMinCost = int64_t{1} << 15;
  const int64_t rows_per_item =
      by_rows ? std::min(s.h.out_size, std::max<int64_t>(1, kMinCost / std::max<int64_t>(1, row_cost)))
              : s.h.out_size;
  const int64_t runs = ceil_div(s.h.out_size, rows_per_item);
  parallel_ranges(layout.images * runs, rows_per_item * row_cost, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(scratch_elements);
    for (int64_t item = begin; item < end; ++item) {
      PoolArgs<T> a = geometry;
      bind(a, item / runs);
      a.row_begin = item % runs * rows_per_item;
      a.row_end = std::min(s.h.out_size, a.row_begin + rows_per_item);
      a.scratch = scratch.data();
      kernel(a);
    }
  });
}

}  // namespace convext::cpu
