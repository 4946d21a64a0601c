#pragma once
// The SIMD kernels, compiled once per instruction set (isa_*.cpp) and chosen at
// run time: the best the CPU supports, or CONVEXT_CPU_ISA=generic|avx2|avx512.
// Plain C++ with raw pointers: the ISA translation units include no ATen, so
// no ISA-specific copy of a shared inline function can leak into other code.
#include <cstdint>

namespace convext::cpu {

// Bytes per cache line on the x86-64 CPUs the kernels target: what prefetches
// name, and what a streaming store must fill whole.
constexpr int64_t kCacheLineBytes = 64;

// A run of output pixels of a dense convolution (flat over images and rows, so
// narrow and small outputs still fill whole register blocks), for one block of
// output channels, from a zero-padded NHWC input: no bounds checks needed.
template <typename T>
struct ConvPixelsArgs {
  const T* input;         // image 0's padded input, at the group's first channel (or image: group images)
  int64_t input_image;    // elements between input images
  int64_t input_row;      // elements between input rows
  int64_t input_pixel;    // elements between input pixels
  int64_t in_channels;    // channels summed over: a chunk of the group's
  int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
  const T* weight;        // the chunk's packed weights: [kernel_h][kernel_w][in_channels][block]
  const T* bias;          // the block's bias (block values), or nullptr
  T* output;              // pixel_begin's output, at the block's first channel
  // Elements between output pixels, rows and images: a flat output has
  // output_row = out_w * output_pixel, output_image = image_pixels *
  // output_pixel; an input gradient phase's pixels lie every stride-th pixel
  // and row of grad_input.
  int64_t output_pixel, output_row, output_image;
  int64_t out_w;          // output pixels per row
  int64_t image_pixels;   // output pixels per image
  int64_t pixel_begin, pixel_end;  // flat output pixels ((image * out_h + row) * out_w + col) to compute
  int64_t channels;       // valid channels of the block, <= block
  int vectors;            // block = vectors * lanes, 1 to KernelsFor::conv_vectors
  bool accumulate;        // add to the output (a later chunk of input channels) instead of bias
  // Groups in the block (1 or, float only, 2): their lanes interleave (lane
  // oc * interleave + group, bias too), and so do their channels in input
  // pixels ([ic][group], input_pixel = in_channels * interleave elements).
  // Outputs are written in channel order.
  int interleave;
  // Outputs by streaming stores, fenced when the call ends: every pixel's
  // block of channels whole cache lines (full, on line boundaries).
  bool stream;
};

// A tile of a weight gradient for one kernel tap: a WeightGradTile's
// `broadcast` channels of one side by `vector` channels of the other, summed
// over a range of output pixels and added to `sums` ([broadcast][vector],
// contiguous). Reads up to a tile past the last valid channel: the caller's
// buffers have that slack when the channels are not whole tiles.
template <typename T>
struct WeightGradArgs {
  const T* input;         // padded NHWC input at the tap of pixel (image 0, row 0, col 0), channel ic0
  int64_t input_image, input_row, input_pixel, stride_h, stride_w;
  const T* grad_output;   // NHWC grad_output at pixel grad_origin, channel oc0
  int64_t grad_pixel;     // elements between grad_output pixels
  int64_t out_h, out_w;   // output rows per image, pixels per row
  int64_t pixel_begin, pixel_end;  // flat (image, row, col) output pixels to sum over
  T* sums;
  // Depthwise only: every tap in one pass, sums is [tap][lane]; input is the
  // unpadded image 0 at pixel (0, 0), of in_h x in_w: taps that fall in the
  // padding are not read, their grad_output times zero is added.
  int64_t kernel_h, kernel_w, dilation_h, dilation_w;
  int64_t in_h, in_w, pad_h, pad_w;
  // Lane groups (DepthwiseArgs::group_width > 1): sums is [tap][part][lane]
  // (see lane_group_weight_grad_taps).
  int64_t group_width = 1;
  // The flat output pixel at grad_output, the first of a row: a chunk of
  // grad_output transposed in cache starts there, a whole tensor at 0.
  int64_t grad_origin = 0;
  // Likewise for input, whose pixels are the output's (1x1, stride 1, no
  // padding) when it comes in chunks too; dense tiles only.
  int64_t input_origin = 0;
};

// Convolutions with few channels per group, on zero-padded NCHW planes: the
// vector lanes run along an output row, so narrow groups leave no lane empty.
// One call computes `out_channels` (<= planar_block) output rows (n, oc, oh).
template <typename T>
struct PlanarArgs {
  const T* input;         // the image's padded planes, group's first channel, at row oh * stride_h
  int64_t input_plane;    // elements between input planes
  int64_t in_w;           // elements between input rows (the padded width)
  int64_t in_channels;    // per group
  int64_t kernel_h, kernel_w, stride_w, dilation_h, dilation_w;
  const T* weight;        // [planar_block][in_channels][kernel_h][kernel_w], zeros past out_channels
  const T* bias;          // planar_block values, or nullptr
  T* output;              // row oh of the first output channel
  int64_t output_plane;   // elements between output planes
  int64_t out_w;
  int64_t out_channels;   // valid output channels of the call
};

// Depthwise convolution of one NCHW plane from its zero-padded copy: tap
// (kh, kw) of output (oh, ow) reads row oh * stride_h + kh * dilation_h, column
// ow * stride_w + kw * dilation_w. Rows have the slack of planar_slack.
template <typename T>
struct DepthwisePlaneArgs {
  const T* input;
  int64_t in_w;           // elements between rows of the copy
  int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
  const T* weight;        // the plane's kernel_h * kernel_w taps
  T bias;
  T* output;              // the output plane, out_h x out_w
  int64_t out_h, out_w;   // out_w >= lanes
};

// The weight gradient of DepthwisePlaneArgs' convolution over a band of one
// plane's output rows: sums[kh * kernel_w + kw] += grad_output times the input
// under tap (kh, kw), read from the same zero-padded copy.
template <typename T>
struct DepthwisePlaneGradArgs {
  const T* input;         // the padded copy, at the band's first row
  int64_t in_w;
  int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
  const T* grad_output;   // the band's first row
  int64_t out_h, out_w;   // rows in the band; out_w >= lanes
  T* sums;
};

// Weights of a planar convolution's gradient for one input channel and tap and
// up to planar_block output channels: over `batch` images and their output
// rows, grad_output's row times the input's row under the tap, added to sums.
template <typename T>
struct PlanarGradArgs {
  const T* grad_output;   // plane (image 0, first output channel)
  int64_t grad_image, grad_plane, out_h, out_w, batch;
  const T* input;         // padded plane (image 0, ic), at the tap: row kh * dilation_h, column kw * dilation_w
  int64_t input_image, in_w, stride_h, stride_w;
  int64_t out_channels;   // <= planar_block
  T* sums;                // one per output channel
};

// A pointwise (1x1, stride 1, unpadded) convolution on NCHW planes: the lanes
// run along the pixels, which lie side by side in a plane, and the weights are
// broadcast, so neither side is transposed. One call: up to pointwise_block
// output channels over a range of one image's pixels.
template <typename T>
struct PointwiseArgs {
  const T* input;          // the image's plane of the group's first input channel
  int64_t input_plane;     // elements between input planes
  int64_t in_channels;     // per group
  const T* weight;         // packed [in_channels][pointwise_block], zeros past out_channels
  const T* bias;           // pointwise_block values, or nullptr
  T* output;               // the plane of the block's first output channel
  int64_t output_plane;    // elements between output planes
  int64_t out_channels;    // <= pointwise_block
  int64_t pixel_begin, pixel_end;
};

// Output planes as sums of shifted planes, one per kernel tap:
// output[c](y, x) = bias[c] + sum over taps t of planes[c * taps + t][offsets[t] + y * row + x].
// The planes have the zeros around them that make every read valid (vectors
// run up to a vector past a row's end), so no bounds are checked.
template <typename T>
struct TapSumArgs {
  const T* planes;         // channel 0's tap 0, at the element offsets count from
  int64_t plane;           // elements between planes; a channel's taps are consecutive
  const int64_t* offsets;  // per tap
  int64_t taps, row;
  const T* bias;           // per channel, or nullptr
  T* output;               // contiguous planes of out_h x out_w
  int64_t channels, out_h, out_w;
};

// Pooling over one image in NHWC order (an NCHW plane is an image of one
// channel). Window geometry comes precomputed per output row and column.
struct PoolTaps {
  int64_t first;    // input index of the first tap inside the input
  int64_t count;    // taps inside the input
  int64_t divisor;  // this axis' factor of avg_pool2d's divisor
};

template <typename T>
struct PoolArgs {
  const T* input;            // forward: the image; backward: unused
  T* output;                 // forward: the pooled image; backward: unused
  int64_t* indices;          // max_pool2d: flat input position of each maximum
  const T* grad_output;      // backward
  const int64_t* grad_indices;  // max_pool2d backward: the forward's indices
  T* grad_input;             // backward
  int64_t in_h, in_w, out_w, channels;
  const PoolTaps* rows;      // per output row
  const PoolTaps* cols;      // per output column
  int64_t dilation_h, dilation_w;
  int64_t stride_w;
  int64_t full_cols_begin, full_cols_end;  // output columns whose window lies inside the input
  int64_t max_window_offset;  // max_pool2d: the farthest tap from a window's first
  int64_t row_begin, row_end;  // forward: output rows to compute
  int64_t out_h;             // backward: every output row
  int64_t divisor_override;  // avg_pool2d: 0 for none
  // avg_pool2d backward on NCHW planes (channels == 1): the output rows whose
  // windows cover input row ih are [row_windows[2 * ih], row_windows[2 * ih + 1]);
  // column_windows[r * in_w + iw] is the r-th output column (r < column_layers)
  // whose window covers input column iw, or out_w where fewer do. scratch holds
  // 2 * out_w + 1 values of the calling thread's own.
  const int64_t* row_windows;
  const int64_t* column_windows;
  int64_t column_layers;
  T* scratch;
  // avg_pool2d: the output (forward) or grad_input (backward) is written by
  // streaming stores where whole vectors go (set by the host from
  // streaming_stores).
  bool stream = false;
};

// A run of output pixels of a depthwise convolution (one input and one output
// channel per group) or of lane groups (as many input as output channels per
// group, whole groups to a vector), every channel, from an NHWC input. Taps
// outside the input (the padding) are skipped: no padded copy is needed.
template <typename T>
struct DepthwiseArgs {
  const T* input;         // the image
  int64_t input_row, input_pixel;
  int64_t in_h, in_w, pad_h, pad_w;
  int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
  const T* weight;        // packed [kernel_h][kernel_w][channel], channels padded to whole vectors
  int64_t weight_tap;     // elements between taps of the packed weights
  const T* bias;          // channels values, or nullptr
  T* output;              // the image's first output pixel
  int64_t output_pixel;
  int64_t out_w, pixel_begin, pixel_end;
  int64_t channels;       // no lane past them is read or written
  // Channels per group on both sides: 1 (depthwise), or up to
  // kMaxLaneGroupWidth dividing the lanes, below them (weights [kh][kw][rotation][channel],
  // see rotate_groups).
  int64_t group_width = 1;
  // Whole output vectors are written by streaming stores, past the caches
  // (set by the host from streaming_stores).
  bool stream = false;
};

constexpr int64_t kMaxLaneGroupWidth = 8;

constexpr int kMaxDepthwiseTaps = 64;

template <typename T>
struct WeightGradTile {
  int broadcast, vector;  // channels on each side
  // Output channels broadcast, input channels in the lanes.
  void (*by_input)(const WeightGradArgs<T>&);
  // Input channels broadcast, output channels in the lanes: for groups with
  // fewer input than output channels.
  void (*by_output)(const WeightGradArgs<T>&);
};

template <typename T>
struct KernelsFor {
  int lanes;              // T values per vector
  int conv_vectors;       // ConvPixelsArgs::vectors at most
  void (*conv_pixels)(const ConvPixelsArgs<T>&);
  // Weight-gradient tiles of two vectors, of one vector by twice the
  // broadcasts (for a vector side of at most one vector's channels), and of
  // one vector by 8 (for a broadcast side of at most 8 channels too).
  WeightGradTile<T> weight_grad_wide, weight_grad_narrow, weight_grad_short;
  void (*depthwise_pixels)(const DepthwiseArgs<T>&);  // and lane groups (group_width > 1)
  // Depthwise input gradient, gathered per input pixel over every channel: with
  // DepthwiseArgs read as input = grad_output (in_h x in_w, NHWC), output =
  // grad_input (out_w wide), the forward's padding, stride and dilation, the
  // unflipped packed weights, and channels = all channels. At most
  // kMaxDepthwiseTaps taps.
  void (*depthwise_input_grad)(const DepthwiseArgs<T>&);
  int pointwise_block;    // output channels per pointwise call
  void (*pointwise)(const PointwiseArgs<T>&);
  void (*tap_sums)(const TapSumArgs<T>&);
  int planar_block;       // output channels per planar call
  void (*planar_rows)(const PlanarArgs<T>&);
  void (*planar_weight_grad)(const PlanarGradArgs<T>&);
  void (*depthwise_plane)(const DepthwisePlaneArgs<T>&);
  void (*depthwise_plane_weight_grad)(const DepthwisePlaneGradArgs<T>&);
  // Depthwise weight gradient of every tap for `lanes` channels:
  // sums[tap][c] += grad_output[p, c] * input[p's tap, c] over the pixel range;
  // lane groups (group_width > 1): sums[tap][part][c], see WeightGradArgs.
  void (*depthwise_weight_grad)(const WeightGradArgs<T>&);
  // dst[j * dst_row + i] = src[i * src_row + j] for i < rows, j < cols: NCHW
  // planes to NHWC pixels and back.
  void (*transpose)(const T* src, int64_t src_row, T* dst, int64_t dst_row, int64_t rows,
                    int64_t cols);
  // transpose, its whole tiles' vectors that lie on a vector boundary stored
  // by streaming stores (then a fence): a result written out past the caches.
  // Only where a vector is a cache line (AVX-512); a narrower one would leave
  // the rest of its line to the next row of tiles, plain transpose there.
  void (*stream_transpose)(const T* src, int64_t src_row, T* dst, int64_t dst_row, int64_t rows,
                           int64_t cols);
  // dst[i] = src[i] for i < count, dst on a vector boundary, by streaming
  // stores (then a fence): a tile written out past the caches.
  void (*stream_copy)(const T* src, T* dst, int64_t count);
  // Peak-throughput probe: `iterations` rounds of fma_chains independent vector
  // FMAs; returns a value that depends on all of them.
  int fma_chains;
  T (*fma_loop)(int64_t iterations);
  // sums[j] += data[r * width + j] summed over r < rows, for j < width.
  void (*column_sums)(const T* data, int64_t rows, int64_t width, T* sums);
  T (*sum)(const T* data, int64_t count);
  void (*max_pool)(const PoolArgs<T>&);
  // Zeroes grad_input, then scatters; false, grad_input untouched, when an
  // index lies outside the input plane.
  bool (*max_pool_backward)(const PoolArgs<T>&);
  void (*avg_pool)(const PoolArgs<T>&);
  void (*avg_pool_backward)(const PoolArgs<T>&);  // writes every input of grad_input
};

struct IsaKernels {
  const char* name;
  KernelsFor<float> f32;
  KernelsFor<double> f64;

  template <typename T>
  const KernelsFor<T>& get() const;
};

template <>
inline const KernelsFor<float>& IsaKernels::get<float>() const { return f32; }
template <>
inline const KernelsFor<double>& IsaKernels::get<double>() const { return f64; }

// The number of bytes environment variable `name` gives (more than 0, or 0
// too where zero_allowed), or `fallback` where it is unset or empty; anything
// else fails the call, naming the variable. Read per call, so tests can set it.
int64_t env_bytes(const char* name, int64_t fallback, bool zero_allowed);

// Whether a memory-bound kernel writing `elements` values of element_size
// bytes from `output`, a vector of `lanes` values at a time at multiples of
// `step` values from it, should write them by streaming stores: an output of
// CONVEXT_CPU_STREAM_BYTES or more (default 4 MiB) does not stay in cache for
// its reader anyway, and a store that misses the cache first reads the line it
// overwrites. The vectors must lie on vector boundaries, which streaming
// stores require.
bool streaming_stores(const void* output, int64_t elements, int64_t step, int64_t lanes, int64_t element_size);

// The kernels in force for this call (reads CONVEXT_CPU_ISA each time, so
// tests can switch paths).
const IsaKernels& active_isa();

}  // namespace convext::cpu
