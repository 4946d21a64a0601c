// conv2d on the CPU. Inputs are copied once into a zero-padded buffer (used in
// place when they already are one), so the SIMD micro-kernels (isa.h) need no
// bounds checks, and weights are packed once per call into the order the
// micro-kernel reads (up front, or by the one work item that reads them).
// Dense convolutions run on NHWC, blocking output channels within a group;
// depthwise ones, and groups of up to 8 channels on both sides (lane
// groups), put neighbouring channels in the vector lanes; other groups
// with few channels run on NCHW planes, lanes along the output rows. Results
// are then given torch's layout. Every result element is one fixed-order sum:
// deterministic for any thread count.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#include "../conv2d.h"
#include "../view.h"
#include "isa.h"
#include "parallel.h"
#include "transpose_copy.h"
#include "widen.h"

namespace convext::cpu {
namespace {

// src (N, C, H, W) in any layout, as an NHWC (nhwc) or NCHW buffer of
// (height x width) images with zeros around: row i of src lands on row
// pad_top + i, rows outside are dropped (negative padding crops); likewise
// for columns. `slack` zeros follow, for kernels that load a vector
// past the last element.
template <typename T>
at::Tensor padded_buffer(const KernelsFor<T>& k, const at::Tensor& src, bool nhwc, int64_t height,
                         int64_t width, int64_t pad_top, int64_t pad_left, int64_t slack) {
  const int64_t batch = src.size(0), channels = src.size(1);
  const at::MemoryFormat format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  // Already the buffer: in this layout, unpadded.
  if (slack == 0 && pad_top == 0 && pad_left == 0 && src.size(2) == height &&
      src.size(3) == width && src.is_contiguous(format)) {
    return (nhwc ? src.permute({0, 2, 3, 1}) : src).reshape({-1});
  }
  const int64_t size = batch * height * width * channels;
  // Zeroed at once where the copy leaves (NCHW) many short border runs;
  // otherwise only the border below.
  const bool zeroed = !nhwc;
  at::Tensor buffer = zeroed ? at::zeros({size + slack}, src.options())
                             : at::empty({size + slack}, src.options());
  // The buffer's images as (N, C, H, W), whatever their layout.
  const at::Tensor flat = buffer.narrow(0, 0, size);
  const at::Tensor image = nhwc ? flat.view({batch, height, width, channels}).permute({0, 3, 1, 2})
                                : flat.view({batch, channels, height, width});
  const auto placed = [](int64_t count, int64_t pad, int64_t extent) {
    // Source indices [first, last) that land inside [0, extent).
    const int64_t first = pad < 0 ? -pad : 0;
    const int64_t last = std::min(count, extent - pad);
    return Range{first, std::max(first, last)};
  };
  const Range rows = placed(src.size(2), pad_top, height);
  const Range cols = placed(src.size(3), pad_left, width);
  const int64_t top = pad_top + rows.begin, left = pad_left + cols.begin;
  const int64_t bottom = pad_top + rows.end, right = pad_left + cols.end;
  if (!zeroed) {  // zero only what the copy below leaves: the border and the slack
    image.slice(2, 0, top).zero_();
    image.slice(2, bottom, height).zero_();
    image.slice(2, top, bottom).slice(3, 0, left).zero_();
    image.slice(2, top, bottom).slice(3, right, width).zero_();
    buffer.narrow(0, size, slack).zero_();
  }
  if (bottom > top && right > left) {
    copy_into<T>(k, image.slice(2, top, bottom).slice(3, left, right),
                 src.slice(2, rows.begin, rows.end).slice(3, cols.begin, cols.end));
  }
  return buffer;
}

// The groups of an NCHW tensor t as images of their own, (N * G, C / G, H, W),
// for the weight gradient of grouped layers (the forward and input gradient
// gather group images band by band: GroupedSource): a view, whose NHWC
// buffer holds each image's groups one after another, a group's pixels side
// by side, where an NHWC copy of t puts a group's channels every C. When all
// three read it, on AVX2, alternating processes against torch, ResNeXt's 3x3 8 x 256 g32 NCHW
// @28: forward 0.88-0.91x -> 1.03-1.10x, input gradient 0.69-0.81x ->
// 0.93-1.09x, weight gradient 0.76-0.86x -> 0.93-1.21x; @56 forward
// 0.86-0.91x -> 1.09-1.23x; 64 x 256 g4 @14 weight gradient 0.88-0.94x ->
// 0.98-1.05x; 2 groups of 64 within noise.
std::optional<at::Tensor> groups_as_images(const at::Tensor& t, int64_t groups) {
  if (groups == 1 || !t.is_contiguous()) {
    return std::nullopt;
  }
  return t.view({t.size(0) * groups, t.size(1) / groups, t.size(2), t.size(3)});
}

// Weight gradients sum a product per output pixel. In one float sum, 2^29
// such products came out wrong by up to 62% of the sum of their magnitudes:
// once the total outgrows the terms they are rounded away. So the kernels add
// at most about kPartialPixels pixels into float partial sums, which are then
// folded into double totals.
constexpr int64_t kPartialPixels = 4096;

template <typename T>
class FoldedSums {
 public:
  explicit FoldedSums(int64_t size) : partial_(size, T(0)) {}

  T* partial() { return partial_.data(); }

  // Every partial sum has had `pixels` more pixels added.
  void added(int64_t pixels) {
    pending_ += pixels;
    if (pending_ >= kPartialPixels) {
      fold();
    }
  }

  // Sum i: what was folded plus what is pending. The double totals exist only
  // once a fold was needed: most calls sum fewer pixels than that, and their
  // sums are read straight from the partials.
  double total(int64_t i) const { return (totals_.empty() ? 0.0 : totals_[i]) + partial_[i]; }

  // Sums [first, first + count) into out, as total() gives them.
  template <typename U>
  void write(int64_t first, int64_t count, U* out) const {
    if (totals_.empty()) {
      std::copy_n(partial_.begin() + first, count, out);
      return;
    }
    for (int64_t i = 0; i < count; ++i) {
      out[i] = static_cast<U>(totals_[first + i] + partial_[first + i]);
    }
  }

 private:
  void fold() {
    totals_.resize(partial_.size(), 0.0);
    for (size_t i = 0; i < partial_.size(); ++i) {
      totals_[i] += partial_[i];
      partial_[i] = T(0);
    }
    pending_ = 0;
  }

  std::vector<T> partial_;
  std::vector<double> totals_;
  int64_t pending_ = 0;
};

// grad_bias[c], the sum of grad_output over (n, h, w): float sums of at most
// kPartialPixels terms (channels_last: of a chunk's 512 pixels), folded into
// double in a fixed order of fixed chunks, so deterministic for any thread count.
template <typename T>
void conv2d_backward_bias_simd(const at::Tensor& grad_output, T* grad_bias) {
  const KernelsFor<T>& k = active_isa().get<T>();
  const int64_t batch = grad_output.size(0), channels = grad_output.size(1);
  const int64_t pixels = grad_output.size(2) * grad_output.size(3);
  std::vector<double> totals(channels, 0.0);
  if (!grad_output.is_contiguous() && grad_output.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    // NHWC: a row of `per_row` pixels is a whole number of vectors, so few
    // channels still fill the lanes. Chunks of rows, then the pixels left over.
    const int64_t whole = k.lanes / std::gcd<int64_t>(channels, k.lanes);
    const int64_t per_row = channels * whole <= 4096 ? whole : 1, width = per_row * channels;
    const int64_t total_pixels = batch * pixels, rows = total_pixels / per_row;
    const int64_t chunk_rows = std::max<int64_t>(1, 512 / per_row), chunks = ceil_div(rows, chunk_rows);
    std::vector<double> partial((chunks + 1) * width, 0.0);
    const T* data = grad_output.const_data_ptr<T>();
    parallel_over(chunks + 1, chunk_rows * width, [&](int64_t chunk) {
      std::vector<T> sums(width, T(0));
      if (chunk < chunks) {
        const int64_t first = chunk * chunk_rows;
        k.column_sums(data + first * width, std::min(chunk_rows, rows - first), width, sums.data());
      } else {
        k.column_sums(data + rows * width, total_pixels - rows * per_row, channels, sums.data());
      }
      std::copy(sums.begin(), sums.end(), partial.begin() + chunk * width);
    });
    for (int64_t i = 0; i < (chunks + 1) * per_row; ++i) {
      for (int64_t c = 0; c < channels; ++c) {
        totals[c] += partial[i * channels + c];
      }
    }
  } else {
    // NCHW planes, each in pieces of kPartialPixels.
    const at::Tensor planes = grad_output.contiguous();
    const T* data = planes.const_data_ptr<T>();
    std::vector<double> plane_totals(batch * channels, 0.0);
    parallel_over(batch * channels, pixels, [&](int64_t plane) {
      for (int64_t first = 0; first < pixels; first += kPartialPixels) {
        plane_totals[plane] += k.sum(data + plane * pixels + first, std::min(kPartialPixels, pixels - first));
      }
    });
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t c = 0; c < channels; ++c) {
        totals[c] += plane_totals[n * channels + c];
      }
    }
  }
  std::copy(totals.begin(), totals.end(), grad_bias);  // rounded to T
}

// A convolution on NHWC buffers, as the SIMD kernels see it.
struct ConvNhwc {
  int64_t batch, groups, in_per_group, out_per_group;
  int64_t in_h, in_w;  // the input buffer
  int64_t out_h, out_w;
  int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
  int64_t pad_h = 0, pad_w = 0;  // padding not in the buffer (depthwise kernels skip it)
  // Groups of the layer per group here (interleaved): their input channels
  // interleave in a pixel ([ic][group], in_per_group ic each) and their
  // output channels are one group's (out_per_group counts them all).
  int64_t interleave = 1;

  int64_t in_channels() const { return groups * interleave * in_per_group; }
  int64_t out_channels() const { return groups * out_per_group; }
  bool depthwise() const { return in_per_group == 1 && out_per_group == 1; }

  // Channels per group when a group has as many input as output channels and
  // several whole groups fill a vector (depthwise: 1): the width of the
  // lane-group kernels (DepthwiseArgs::group_width); 0 when they do not apply.
  // A group as wide as a vector is the dense kernels' block of output
  // channels already, with no rotations: ResNeXt's 8 channels per group on
  // AVX2's 8 lanes, 3x3 8 x 256 @56 g32, alternating processes against
  // torch, forward 0.31-0.40x -> 0.83-0.99x (stride 2: 0.45-0.63x ->
  // 0.71-0.94x), input gradient 0.29-0.33x -> 0.72-0.86x, where each pixel
  // had streamed its 8 rotations of every tap's weights (73 KB) from L2.
  int64_t lane_group_width(int lanes) const {
    const int64_t width = in_per_group;
    return width == out_per_group && width <= kMaxLaneGroupWidth && width < lanes && lanes % width == 0 ? width : 0;
  }

  // Groups of this layer that the dense kernels take two at a time, their
  // lanes interleaved (ConvPixelsArgs::interleave), or 1: float32 groups of
  // 8 output channels on 16 lanes (AVX-512), ResNeXt's. There they had run
  // as lane groups, which stream 8 rotations of every tap's weights per
  // pixel (Zen 4, whose 16-lane FMAs cost two 8-lane ones, alternating
  // processes against torch, ResNeXt's 3x3 8 x 256 g32 @28: channels_last
  // forward 0.70-0.75x -> 0.97-1.17x, input gradient 0.66-0.97x ->
  // 1.02-1.05x; NCHW 0.69-0.83x -> 0.88-0.92x and 0.61-0.74x -> 1.01-1.05x;
  // its 3x3/2 @56 input gradient, whose phases then run in one pass
  // (dense_phases_in_bands), NCHW 0.24-0.26x -> 1.16x, channels_last
  // 0.39-0.44x -> 0.59-0.62x). Not groups of 4 on AVX2's 8 lanes: the
  // suite's g32 128 @56 NCHW forward ran 1.65x -> 1.03x torch so.
  int64_t interleaved_groups(int lanes, int64_t element_size) const {
    return element_size == 4 && interleave == 1 && groups % 2 == 0 && out_per_group == 8 && lanes == 16 ? 2 : 1;
  }
  ConvNhwc interleaved(int64_t count) const {
    ConvNhwc c = *this;
    c.groups /= count;
    c.out_per_group *= count;
    c.interleave = count;
    return c;
  }

  // The forward convolution of s, reading an input padded by s's padding.
  static ConvNhwc forward(const Conv2dShape& s) {
    return {s.batch, s.groups, s.in_per_group(), s.out_per_group(),
            s.h.in_size + 2 * s.h.pad, s.w.in_size + 2 * s.w.pad, s.h.out_size, s.w.out_size,
            s.h.kernel, s.w.kernel, s.h.stride, s.w.stride, s.h.dilation, s.w.dilation};
  }

  // Phase (h, w) of the input gradient of s (see InputPhase): a stride-1
  // convolution of grad_output, padded by the phases' pad(), by the phases'
  // taps of the transposed and flipped weights.
  static ConvNhwc input_gradient(const Conv2dShape& s, const InputPhase& h, const InputPhase& w) {
    return {s.batch, s.groups, s.out_per_group(), s.in_per_group(),
            h.positions + h.reach(), w.positions + w.reach(), h.positions, w.positions,
            h.taps, w.taps, 1, 1, h.dilation, w.dilation};
  }

  // This depthwise convolution reading an unpadded in_h x in_w input whose
  // padding the kernel skips: memory-bound, so no padded copy.
  ConvNhwc unpadded(int64_t height, int64_t width, int64_t top, int64_t left) const {
    ConvNhwc c = *this;
    c.in_h = height;
    c.in_w = width;
    c.pad_h = top;
    c.pad_w = left;
    return c;
  }
};

// Whether convolution c runs on the lane-group kernels. The grouped 3x3 layer
// of 4 channels per group (8 x 128 @56) ran about 2x faster so than on the
// planar kernels, on either layout (NCHW 7.2 -> 3.3 ms, channels_last 6.4 ->
// 3.3, on a machine at half its usual speed); with 2 and 8 per group the
// NCHW forward stayed within noise (1.43 / 1.46, 3.25 / 3.47 ms) and the
// channels_last one ran 3.2 -> 0.78 and 5.2 -> 3.0 ms.
bool use_lane_groups(const ConvNhwc& c, int lanes) { return c.lane_group_width(lanes) > 0; }

// Bytes of packed weights per chunk of input channels: CONVEXT_CPU_CHUNK_BYTES
// (tests make it small to sum in many chunks), else 512 KiB, half of a 1 MiB
// L2. Every chunk after the first adds to the outputs, so fewer chunks pass the
// outputs through cache fewer times: the 3x3 layers ran 4-20% faster than with
// 64 KiB chunks, which were too big for L1 (48 KB) anyway.
int64_t chunk_bytes() { return env_bytes("CONVEXT_CPU_CHUNK_BYTES", int64_t{512} << 10, false); }

// Output channels per call of the dense kernel (vectors per block, block
// width, blocks per group), and input channels per call: chunks whose packed
// weights stay in cache while a run of pixels passes over them.
struct Blocking {
  int vectors;
  int64_t width, per_group;
  int64_t chunk, chunks;

  static Blocking of(const ConvNhwc& c, int lanes, int max_vectors, int64_t element_size) {
    const int vectors = static_cast<int>(std::min<int64_t>(max_vectors, ceil_div(c.out_per_group, lanes)));
    const int64_t width = int64_t{vectors} * lanes;
    const int64_t per_channel = c.kernel_h * c.kernel_w * width * element_size;
    const int64_t chunks = ceil_div(c.in_per_group, std::max<int64_t>(1, chunk_bytes() / per_channel));
    return {vectors, width, ceil_div(c.out_per_group, width), ceil_div(c.in_per_group, chunks),
            chunks};
  }
};

// bias (a group's channels after another's) as [group][slot]: each group's
// channels in its first slots, zeros in the rest, so that a kernel reads
// whole blocks of a group's channels; with interleave > 1, a group's
// channels are those of `interleave` groups, interleaved as the lanes of
// their block (ConvPixelsArgs::interleave). Empty when there is no bias.
at::Tensor bias_per_group(const std::optional<at::Tensor>& bias, int64_t groups, int64_t slots,
                          const at::TensorOptions& options, int64_t interleave = 1) {
  if (!bias) {
    return at::Tensor();
  }
  const int64_t per_group = bias->size(0) / groups;
  at::Tensor padded = at::zeros({groups, slots}, options);
  padded.narrow(1, 0, per_group)
      .copy_(bias->view({groups, interleave, per_group / interleave}).transpose(1, 2).reshape({groups, per_group}));
  return padded;
}

// Weight (oc, ic, kh, kw) of group g of convolution c in torch's weight w, or,
// transposed, of the transposed convolution (channel roles swapped, taps flipped).
template <typename T>
T group_weight(const Nchw<const T>& w, const ConvNhwc& c, bool transposed, int64_t g, int64_t oc, int64_t ic,
               int64_t kh, int64_t kw) {
  return transposed ? w(g * c.in_per_group + ic, oc, c.kernel_h - 1 - kh, c.kernel_w - 1 - kw)
                    : w(g * c.out_per_group + oc, ic, kh, kw);
}

// Weights of lane-group convolution c (groups of K channels on both sides) as
// [kh][kw][rotation][channel]: lane g * K + i of rotation r holds the weight
// from input channel i of group g to its output channel (i - r) mod K (see
// rotate_groups); zeros after the channels up to padded_channels. transposed
// as for pack_weight.
template <typename T>
at::Tensor pack_lane_group_weight(const KernelsFor<T>& k, const at::Tensor& weight, const ConvNhwc& c,
                                  int64_t padded_channels, bool transposed) {
  const Nchw<const T> w = read_view<T>(weight);
  const int64_t width = c.in_per_group, taps = c.kernel_h * c.kernel_w;
  at::Tensor packed = at::zeros({taps * width * padded_channels}, weight.options());
  T* p = packed.mutable_data_ptr<T>();
  if (width == 1 && weight.is_contiguous()) {
    // Depthwise: [channel][tap] to [tap][channel], one SIMD transpose (the
    // element loop below took 15 us of the 960-channel layer's 0.34 ms), the
    // taps then reversed for the transposed convolution's flipped kernel.
    k.transpose(w.data, taps, p, padded_channels, c.out_channels(), taps);
    for (int64_t t = 0; transposed && t < taps / 2; ++t) {
      std::swap_ranges(p + t * padded_channels, p + (t + 1) * padded_channels, p + (taps - 1 - t) * padded_channels);
    }
    return packed;
  }
  for (int64_t kh = 0; kh < c.kernel_h; ++kh) {
    for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
      for (int64_t r = 0; r < width; ++r, p += padded_channels) {
        for (int64_t g = 0; g < c.groups; ++g) {
          for (int64_t i = 0; i < width; ++i) {
            p[g * width + i] = group_weight(w, c, transposed, g, (i - r + width) % width, i, kh, kw);
          }
        }
      }
    }
  }
  return packed;
}

// Dense weights (C_out, C_in / groups, kh, kw) as [group][block][chunk][kh][kw][ic][lane],
// zeros in the lanes past a group's channels; c.interleave groups to a block
// have their lanes interleaved (lane oc * interleave + group, as
// ConvPixelsArgs::interleave reads them). transposed: the weights of the
// transposed convolution (channel roles swapped, taps flipped), which
// computes the input gradient. pack() writes one chunk of one block (a
// contiguous piece of the result): all of them up front (pack_weight), or
// each in the cache of the thread that is about to read it.
template <typename T>
class WeightPacker {
 public:
  WeightPacker(const KernelsFor<T>& k, const at::Tensor& weight, const ConvNhwc& c, const Blocking& blocking,
               bool transposed)
      : k_(k), w_(read_view<T>(weight)), c_(c), blocking_(blocking), transposed_(transposed),
        kernel_h_(weight.size(2)), kernel_w_(weight.size(3)), taps_(kernel_h_ * kernel_w_),
        // Strides through the source of a lane (output channel), an input
        // channel and a tap; transposed swaps the channel roles and walks the
        // taps backwards.
        lane_step_(transposed ? w_.stride_c : w_.stride_n), ic_step_(transposed ? w_.stride_n : w_.stride_c),
        kh_step_(transposed ? -w_.stride_h : w_.stride_h), kw_step_(transposed ? -w_.stride_w : w_.stride_w),
        // NCHW weights: a forward lane's channels and taps are one contiguous
        // run, and so are a transposed channel's lanes and taps.
        nchw_(w_.stride_c == taps_ && w_.stride_h == kernel_w_ && w_.stride_w == 1),
        group_out_(c.out_per_group / c.interleave) {}

  // Blocks ([group][block of lanes]), chunks per block, and the elements of
  // a block and of its chunks (the last chunk's are fewer).
  int64_t blocks() const { return c_.groups * blocking_.per_group; }
  int64_t chunks() const { return blocking_.chunks; }
  int64_t block_size() const { return taps_ * c_.in_per_group * blocking_.width; }
  int64_t chunk_size() const { return taps_ * blocking_.chunk * blocking_.width; }
  // Scratch a pack() call needs: for the transposes of NCHW weights, and
  // interleaved, for each group's lanes before they interleave.
  int64_t scratch_size() const {
    return (nchw_ ? kSubChannels * taps_ * blocking_.width : 0) +
           (c_.interleave > 1 ? taps_ * blocking_.chunk * group_out_ : 0);
  }

  // Chunk `chunk` of block `block` ([group][block of lanes]) into p.
  void pack(int64_t block, int64_t chunk, T* p, T* scratch) const {
    const int64_t width = blocking_.width;
    const int64_t g = block / blocking_.per_group, first_oc = block % blocking_.per_group * width;
    const int64_t first_ic = chunk * blocking_.chunk, count = std::min(blocking_.chunk, c_.in_per_group - first_ic);
    if (c_.interleave == 1) {
      pack_lanes(g, first_oc, std::min(width, c_.out_per_group - first_oc), width, first_ic, count, p, scratch);
      return;
    }
    // Each of the block's layer groups packed alone, then spread into every interleave-th lane.
    T* alone = scratch + (nchw_ ? kSubChannels * taps_ * width : 0);
    for (int64_t member = 0; member < c_.interleave; ++member) {
      pack_lanes(g * c_.interleave + member, 0, group_out_, group_out_, first_ic, count, alone, scratch);
      for (int64_t row = 0; row < taps_ * count; ++row) {
        for (int64_t oc = 0; oc < group_out_; ++oc) {
          p[row * width + oc * c_.interleave + member] = alone[row * group_out_ + oc];
        }
      }
    }
  }

 private:
  // Lanes [first_oc, first_oc + lanes) of layer group g, input channels
  // [first_ic, first_ic + count), into p as rows of `width`.
  void pack_lanes(int64_t g, int64_t first_oc, int64_t lanes, int64_t width, int64_t first_ic, int64_t count, T* p,
                  T* scratch) const {
    const T* origin = transposed_ ? &w_(g * c_.in_per_group, first_oc, kernel_h_ - 1, kernel_w_ - 1)
                                  : &w_(g * group_out_ + first_oc, 0, 0, 0);
    const T* src = origin + first_ic * ic_step_;
    const int64_t tap_row = count * width;  // elements between one tap's weights and the next's
    if (ic_step_ == 1) {  // channels_last weights: per tap a lanes x channels tile, transposed in registers
      for (int64_t kh = 0; kh < kernel_h_; ++kh) {
        for (int64_t kw = 0; kw < kernel_w_; ++kw) {
          k_.transpose(src + kh * kh_step_ + kw * kw_step_, lane_step_, p + (kh * kernel_w_ + kw) * tap_row, width,
                       lanes, count);
        }
      }
    } else if (lane_step_ == 1) {  // the input gradient's, from channels_last weights: lanes side by side
      for (int64_t kh = 0; kh < kernel_h_; ++kh) {
        for (int64_t kw = 0; kw < kernel_w_; ++kw) {
          for (int64_t ic = 0; ic < count; ++ic) {
            const T* from = src + ic * ic_step_ + kh * kh_step_ + kw * kw_step_;
            std::copy(from, from + lanes, p + (kh * kernel_w_ + kw) * tap_row + ic * width);
          }
        }
      }
    } else if (nchw_ && !transposed_) {
      // Per 16 channels, the lanes x (channel, tap) tile is transposed in
      // registers into rows of lanes in cache, each row copied to its tap's place.
      for (int64_t sub = 0; sub < count; sub += kSubChannels) {
        const int64_t n = std::min(kSubChannels, count - sub);
        k_.transpose(src + sub * taps_, lane_step_, scratch, width, lanes, n * taps_);
        for (int64_t ic = 0; ic < n; ++ic) {
          for (int64_t tap = 0; tap < taps_; ++tap) {
            const T* row = scratch + (ic * taps_ + tap) * width;
            std::copy(row, row + lanes, p + tap * tap_row + (sub + ic) * width);
          }
        }
      }
    } else if (nchw_) {
      // The input gradient's: per 16 channels, transposed twice in registers,
      // channels x (lane, tap) into (lane, tap) x channels, then per tap
      // lanes x channels into the (flipped) tap's rows of lanes.
      const T* first_tap = src - (taps_ - 1);  // the lowest address of a lane's taps
      for (int64_t sub = 0; sub < count; sub += kSubChannels) {
        const int64_t n = std::min(kSubChannels, count - sub);
        k_.transpose(first_tap + sub * ic_step_, ic_step_, scratch, kSubChannels, n, lanes * taps_);
        for (int64_t tap = 0; tap < taps_; ++tap) {  // in memory order: the flipped kernel's taps - 1 - tap
          k_.transpose(scratch + tap * kSubChannels, taps_ * kSubChannels,
                       p + (taps_ - 1 - tap) * tap_row + sub * width, width, lanes, n);
        }
      }
    } else {  // any other strides: element by element
      for (int64_t kh = 0; kh < kernel_h_; ++kh) {
        for (int64_t kw = 0; kw < kernel_w_; ++kw) {
          for (int64_t ic = 0; ic < count; ++ic) {
            const T* from = src + ic * ic_step_ + kh * kh_step_ + kw * kw_step_;
            T* row = p + (kh * kernel_w_ + kw) * tap_row + ic * width;
            for (int64_t lane = 0; lane < lanes; ++lane) {
              row[lane] = from[lane * lane_step_];
            }
          }
        }
      }
    }
    for (int64_t row = 0; row < taps_ * count; ++row, p += width) {  // lanes past the channels: zeros
      std::fill(p + lanes, p + width, T(0));
    }
  }

  static constexpr int64_t kSubChannels = 16;  // channels per scratch tile of NCHW weights
  const KernelsFor<T>& k_;
  const Nchw<const T> w_;
  const ConvNhwc c_;
  const Blocking blocking_;
  const bool transposed_;
  const int64_t kernel_h_, kernel_w_, taps_, lane_step_, ic_step_, kh_step_, kw_step_;
  const bool nchw_;
  const int64_t group_out_;  // output channels of a layer group
};

// Every block's chunks packed (WeightPacker), one task per block.
template <typename T>
at::Tensor pack_weight(const WeightPacker<T>& packer, const at::TensorOptions& options) {
  const int64_t slab = packer.block_size();
  at::Tensor packed = at::empty({packer.blocks() * slab}, options);
  if (slab == 0) {
    return packed;
  }
  T* const packed_data = packed.mutable_data_ptr<T>();
  parallel_over(packer.blocks(), slab, [&](int64_t block) {
    std::vector<T> scratch(packer.scratch_size());
    for (int64_t chunk = 0; chunk < packer.chunks(); ++chunk) {
      packer.pack(block, chunk, packed_data + block * slab + chunk * packer.chunk_size(), scratch.data());
    }
  });
  return packed;
}

// Where a dense kernel call reads its input.
template <typename T>
struct NhwcInput {
  const T* data;  // the buffer's image 0, pixel (0, 0), channel 0
  int64_t image, row, pixel, group;  // elements between images, rows, pixels and groups

  // An NHWC buffer of c: a group's channels after another's in each pixel
  // (group images, a group's pixels after another's, come from
  // GroupedSource's tiles).
  static NhwcInput of(const ConvNhwc& c, const T* data) {
    return {data, c.in_h * c.in_w * c.in_channels(), c.in_w * c.in_channels(), c.in_channels(), c.in_per_group};
  }
};

// Where a dense kernel call writes its output pixels: anywhere that strides
// reach (a flat NHWC output, a tile, every stride-th pixel of grad_input).
template <typename T>
struct PixelPlacement {
  T* data;                    // the range's first pixel's output, at the block's first channel
  int64_t pixel, row, image;  // elements between output pixels, rows and images
  // By streaming stores (ConvPixelsArgs::stream; the last chunk's sums, of
  // whole blocks): where the output is large (streaming_stores), a plain
  // store that misses the cache reads its line first. Channels_last on
  // AVX-512, alternating processes against torch: 1x1 256 -> 64 @56 input
  // gradient (25.7 MB) 0.83-0.84x -> 1.05-1.07x, ResNeXt's 3x3 8 x 256 g32
  // @28 forward 0.96-0.97x -> 1.15-1.16x and input gradient 0.91-0.96x ->
  // 1.14x, its 3x3/2 @56 forward 1.37x -> 1.59-1.62x, 3x3/2 128 @56 input
  // gradient 0.96-0.98x -> 1.02-1.03x; 3x3 64 @56 within noise.
  bool stream = false;
};

// Dense convolution c's blocks of output channels (Blocking) with their
// packed weights and bias: packed up front, or, pack_in_items, by the thread
// that runs a block, chunk by chunk into its cache.
template <typename T>
class DenseBlocks {
 public:
  DenseBlocks(const KernelsFor<T>& k, const ConvNhwc& c, const at::Tensor& weight,
              const std::optional<at::Tensor>& bias, bool transposed, bool pack_in_items)
      : k_(k), c_(c), blocking_(Blocking::of(c, k.lanes, k.conv_vectors, sizeof(T))),
        packer_(k, weight, c, blocking_, transposed), pack_in_items_(pack_in_items),
        packed_(pack_in_items ? at::Tensor() : pack_weight<T>(packer_, weight.options())),
        packed_bias_(bias_per_group(bias, c.groups, blocking_.per_group * blocking_.width, weight.options(),
                                    c.interleave)) {}

  int64_t count() const { return c_.groups * blocking_.per_group; }
  int64_t width() const { return blocking_.width; }
  int64_t block_weights() const { return packer_.block_size(); }
  int64_t first_channel(int64_t block) const {
    return block / blocking_.per_group * c_.out_per_group + block % blocking_.per_group * blocking_.width;
  }
  int64_t channels(int64_t block) const {
    return std::min(blocking_.width, c_.out_per_group - block % blocking_.per_group * blocking_.width);
  }

  // Whether the kernel writes chunk `chunk` of block `block` by streaming
  // stores: out's are, the chunk is the last, and every pixel's block is
  // whole cache lines (a group's block of 64 channels after a group of 72 is
  // not on a line boundary; AVX2's one-vector blocks are half lines, whose
  // streaming stores ran ResNeXt's 3x3 8 x 256 g32 @28 channels_last forward
  // in 2.22-2.35 ms against 1.93-2.09 plain on the AVX2 kernels of the Zen 4).
  bool streams(const PixelPlacement<T>& out, int64_t block, int64_t chunk) const {
    const auto whole_lines = [](int64_t elements) { return elements * int64_t{sizeof(T)} % kCacheLineBytes == 0; };
    return out.stream && chunk + 1 == blocking_.chunks && channels(block) == blocking_.width &&
           whole_lines(blocking_.width) && reinterpret_cast<std::uintptr_t>(out.data) % kCacheLineBytes == 0 &&
           whole_lines(out.pixel) && whole_lines(out.row) && whole_lines(out.image);
  }

  // A thread's buffers for blocks that it packs itself.
  struct Scratch {
    std::vector<T> weights, packer;
  };
  Scratch scratch() const {
    return {std::vector<T>(pack_in_items_ ? packer_.chunk_size() : 0),
            std::vector<T>(pack_in_items_ ? packer_.scratch_size() : 0)};
  }

  // Block `block` of output pixels [begin, end) (flat over images), every
  // chunk of input channels in turn.
  void run(int64_t block, const NhwcInput<T>& in, const PixelPlacement<T>& out, int64_t begin, int64_t end,
           Scratch& scratch) const {
    const int64_t g = block / blocking_.per_group;
    const T* bias = packed_bias_.defined() ? packed_bias_.const_data_ptr<T>() + block * blocking_.width : nullptr;
    for (int64_t chunk = 0; chunk < blocking_.chunks; ++chunk) {
      const int64_t first_ic = chunk * blocking_.chunk;
      const T* weights = pack_in_items_ ? scratch.weights.data()
                                        : packed_.const_data_ptr<T>() + block * block_weights() +
                                              chunk * packer_.chunk_size();
      if (pack_in_items_) {
        packer_.pack(block, chunk, scratch.weights.data(), scratch.packer.data());
      }
      k_.conv_pixels({in.data + g * in.group + first_ic * c_.interleave, in.image, in.row, in.pixel,
                      std::min(blocking_.chunk, c_.in_per_group - first_ic), c_.kernel_h, c_.kernel_w,
                      c_.stride_h, c_.stride_w, c_.dilation_h, c_.dilation_w, weights, bias, out.data, out.pixel,
                      out.row, out.image, c_.out_w, c_.out_h * c_.out_w, begin, end, channels(block),
                      blocking_.vectors, chunk > 0, static_cast<int>(c_.interleave),
                      streams(out, block, chunk)});
    }
  }

 private:
  const KernelsFor<T>& k_;
  const ConvNhwc c_;
  const Blocking blocking_;
  const WeightPacker<T> packer_;
  const bool pack_in_items_;
  const at::Tensor packed_, packed_bias_;
};

// Output pixels per work item of the dense and lane-group kernels, at most:
// a whole number of register blocks of every kernel width and of 16-lane
// transposes (72 left 8 pixels of each run to the transpose's
// element-by-element edge; the stem's NCHW forward took 6.7-7.1 ms with 72,
// 5.8-6.1 with 144).
constexpr int64_t kPixelRun = 144;

// Runs convolution c over an NHWC input buffer into an NHWC output, on the
// lane-group kernels when group_width > 0, or, with nchw_output (dense
// kernels only), into an NCHW one: an item's block is summed in a thread's
// NHWC tile and transposed into the planes from cache, instead of a pass
// over the whole output after. Work items: (image or group of small images,
// run of output pixels, channel block), the block fastest so that
// neighbouring items share their input pixels in cache.
template <typename T>
void convolve_nhwc(const KernelsFor<T>& k, const ConvNhwc& c, const T* input, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, bool transposed, int64_t group_width, bool nchw_output,
                   T* output) {
  const int64_t pixels = c.out_h * c.out_w, runs = ceil_div(pixels, kPixelRun);
  // Runs of equal length (rounded up to 4 pixels), not kPixelRun and a short last one: with a
  // batch of 1 the threads split the runs, and 14 x 14 pixels as 144 + 52 gave
  // one thread nearly three times the other's work (3x3 256 @14 forward at batch 1, AVX2,
  // alternating processes: channels_last 0.64-0.70x torch -> 0.95x, NCHW
  // 0.83-0.87x -> 0.92-1.08x, input gradient 0.79-0.86x -> 0.94-1.04x).
  const int64_t run_length = ceil_div(ceil_div(pixels, std::max<int64_t>(1, runs)), 4) * 4;
  const int64_t in_c = c.in_channels(), out_c = c.out_channels();
  const int64_t image_in = c.in_h * c.in_w * in_c, image_out = pixels * out_c;
  if (group_width > 0) {
    // Lane groups: one block of every channel, across groups, swept pixel by pixel.
    const int64_t lane_channels = ceil_div(out_c, k.lanes) * k.lanes;
    const at::Tensor packed = pack_lane_group_weight<T>(k, weight, c, lane_channels, transposed);
    const at::Tensor packed_bias = bias_per_group(bias, 1, lane_channels, weight.options());
    const bool stream = streaming_stores(output, c.batch * image_out, out_c, k.lanes, sizeof(T));
    parallel_over(c.batch * runs, run_length * c.kernel_h * c.kernel_w * c.in_per_group * lane_channels,
                  [&](int64_t item) {
                    const int64_t n = item / runs, pixel_begin = item % runs * run_length;
                    k.depthwise_pixels({input + n * image_in, c.in_w * in_c, in_c, c.in_h, c.in_w, c.pad_h,
                                        c.pad_w, c.kernel_h, c.kernel_w, c.stride_h, c.stride_w, c.dilation_h,
                                        c.dilation_w, packed.const_data_ptr<T>(), group_width * lane_channels,
                                        bias ? packed_bias.const_data_ptr<T>() : nullptr, output + n * image_out,
                                        out_c, c.out_w, pixel_begin, std::min(pixels, pixel_begin + run_length),
                                        out_c, group_width, stream});
                  });
    return;
  }
  // Images smaller than a run go several to an item, each chunk of weights
  // applied to all of them in turn: a deep layer's small images (512 channels
  // at 7x7) would otherwise stream every block's weights once per image.
  const int64_t images_per_item =
      pixels >= kPixelRun ? 1
                          : std::clamp<int64_t>(8 * kPixelRun / std::max<int64_t>(1, pixels), 1,
                                                std::max<int64_t>(1, c.batch));
  const int64_t image_groups = ceil_div(c.batch, images_per_item);
  // Dense blocks that a single item reads (every image in one item: 512 @7)
  // are packed by that item's thread, chunk by chunk into its cache, instead
  // of all of them up front, written to memory and read back. In one
  // process, alternating the two (medians of 10 rounds, three runs), 512 @7:
  // NCHW forward 9.80-9.97 -> 9.27-9.55 ms, channels_last 9.74-10.06 ->
  // 9.22-9.57, input gradient 10.3-11.5 -> 9.5-10.4 and 9.77-9.96 -> 9.34-9.62.
  const DenseBlocks<T> blocks(k, c, weight, bias, transposed, image_groups * runs == 1);
  // A large output goes out past the caches (PixelPlacement::stream): NHWC
  // from the kernels, NCHW planes by the tiles' transposes.
  const bool stream = streaming_stores(output, c.batch * image_out, nchw_output ? pixels : out_c, k.lanes, sizeof(T));
  const auto transpose_out = stream ? k.stream_transpose : k.transpose;
  const NhwcInput<T> in = NhwcInput<T>::of(c, input);
  const int64_t width = blocks.width();
  const auto run_item = [&](int64_t item, std::vector<T>& tile, typename DenseBlocks<T>::Scratch& scratch) {
    const int64_t block = item % blocks.count(), run = item / blocks.count() % runs;
    const int64_t first_image = item / (blocks.count() * runs) * images_per_item;
    const int64_t last_image = std::min(c.batch, first_image + images_per_item);
    const int64_t first_channel = blocks.first_channel(block);
    // The item's pixels, flat over its images so that small images fill
    // whole register blocks (an item of several images has the one run).
    const int64_t first_pixel = first_image * pixels + run * run_length;
    const int64_t end_pixel = (last_image - 1) * pixels + std::min(pixels, run * run_length + run_length);
    const PixelPlacement<T> out =
        nchw_output ? PixelPlacement<T>{tile.data(), width, c.out_w * width, pixels * width}
                    : PixelPlacement<T>{output + first_pixel * out_c + first_channel, out_c, c.out_w * out_c,
                                        image_out, stream};
    blocks.run(block, in, out, first_pixel, end_pixel, scratch);
    for (int64_t image = first_image; nchw_output && image < last_image; ++image) {
      const int64_t begin = std::max(first_pixel, image * pixels), end = std::min(end_pixel, (image + 1) * pixels);
      transpose_out(tile.data() + (begin - first_pixel) * width, width,
                    output + (image * out_c + first_channel) * pixels + begin - image * pixels, pixels, end - begin,
                    blocks.channels(block));
    }
  };
  const int64_t tile_size = nchw_output ? images_per_item * std::min(pixels, run_length) * width : 0;
  parallel_ranges(image_groups * runs * blocks.count(), images_per_item * run_length * blocks.block_weights(),
                  [&](int64_t begin, int64_t end) {
                    std::vector<T> tile(tile_size);
                    typename DenseBlocks<T>::Scratch scratch = blocks.scratch();
                    for (int64_t item = begin; item < end; ++item) {
                      run_item(item, tile, scratch);
                    }
                  });
}

// Bytes of input rows (all channels) per band of convolve_grouped_bands, at
// most (at least one output row's): CONVEXT_CPU_BAND_BYTES (tests make it
// small to run many bands), else 512 KiB, as much as L2 holds. ResNeXt's
// 3x3/2 8 x 256 g32 @56 forward on AVX2, alternating processes against
// torch: 0.84-1.08x with 256 KiB (one output row of 28 pixels a band: 12 +
// 12 + 4 in register blocks), 0.91-1.13x with 384 (two), 0.93-1.19x with
// 512 (three: 84 pixels, 7 blocks of 12), 0.97-1.21x with 1 MiB; in each
// alternation the wider bands ran faster, up to 512 KiB.
int64_t band_bytes() { return env_bytes("CONVEXT_CPU_BAND_BYTES", int64_t{512} << 10, false); }

// count elements from `from` to `to`: whole pieces of 8 by fixed-size copies,
// which compile to vector moves (a runtime-sized memcpy is a library call).
template <typename T>
void copy_short(const T* from, T* to, int64_t count) {
  constexpr int64_t kPiece = 8;
  int64_t i = 0;
  for (; i + kPiece <= count; i += kPiece) {
    std::memcpy(to + i, from + i, kPiece * sizeof(T));
  }
  for (; i < count; ++i) {
    to[i] = from[i];
  }
}

// to[2 * i] = first[i] and to[2 * i + 1] = second[i] for i < count: whole
// pieces of 4 by two vector unpacks (element by element, GCC moved each
// value through an integer register: 19% of ResNeXt's forward).
template <typename T>
inline void interleave_two(const T* first, const T* second, T* to, int64_t count) {
  typedef T piece __attribute__((vector_size(4 * sizeof(T))));
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    piece a, b;
    std::memcpy(&a, first + i, sizeof(a));
    std::memcpy(&b, second + i, sizeof(b));
    const piece low = __builtin_shufflevector(a, b, 0, 4, 1, 5), high = __builtin_shufflevector(a, b, 2, 6, 3, 7);
    std::memcpy(to + 2 * i, &low, sizeof(low));
    std::memcpy(to + 2 * i + 4, &high, sizeof(high));
  }
  for (; i < count; ++i) {
    to[2 * i] = first[i];
    to[2 * i + 1] = second[i];
  }
}

// Whether the dense kernels read src of a grouped layer by gathering bands
// of it into group images (GroupedSource): channels-last or NCHW planes.
bool gathers_group_bands(const at::Tensor& src, int64_t groups) {
  return groups > 1 && (src.stride(1) == 1 || src.stride(3) == 1);
}

// Layer groups per group of the dense kernels on convolution c of src: 2 where
// they pair up (ConvNhwc::interleaved_groups) and src gathers in bands,
// ahead of the lane-group and planar kernels; else 1.
template <typename T>
int64_t interleaved_bands(const KernelsFor<T>& k, const ConvNhwc& c, const at::Tensor& src) {
  return gathers_group_bands(src, c.groups) ? c.interleaved_groups(k.lanes, sizeof(T)) : 1;
}

// Whether convolution c of src runs on the lane-group kernels: where they
// apply (use_lane_groups) and the groups do not pair up in dense blocks.
template <typename T>
bool runs_lane_groups(const KernelsFor<T>& k, const ConvNhwc& c, const at::Tensor& src) {
  return use_lane_groups(c, k.lanes) && interleaved_bands<T>(k, c, src) == 1;
}

// A grouped layer's (N, C, H, W) tensor, channels-last or in NCHW planes,
// read as group images in bands (gather); with interleave > 1, a group
// image holds that many of the layer's groups, their channels interleaved in
// each pixel ([channel][layer group], ConvNhwc::interleave).
template <typename T>
struct GroupedSource {
  const KernelsFor<T>& k;
  const T* data;
  int64_t image, channel, row, pixel;  // elements between images, channels, rows and pixels
  int64_t height, width, groups, per_group, interleave;

  GroupedSource(const KernelsFor<T>& k, const at::Tensor& src, int64_t groups, int64_t interleave = 1)
      : k(k), data(src.const_data_ptr<T>()), image(src.stride(0)), channel(src.stride(1)), row(src.stride(2)),
        pixel(src.stride(3)), height(src.size(2)), width(src.size(3)), groups(groups),
        per_group(src.size(1) / groups), interleave(interleave) {
    TORCH_INTERNAL_ASSERT(interleave == 1 || interleave == 2);
  }

  // A tile of group images of `rows` rows of `buffer_w` columns, as gather
  // writes it and the dense kernels read it (one image per tile).
  NhwcInput<T> tile(const T* data, int64_t rows, int64_t buffer_w) const {
    const int64_t group_image = rows * buffer_w * per_group;
    return {data, groups * group_image, buffer_w * per_group, per_group, group_image};
  }

  // Rows [first_row, first_row + rows) of image n, placed as in a buffer of
  // `buffer_w` columns with pad_top rows and pad_left columns of zeros
  // before the tensor's, into `tile` as group images ([group][row][column]
  // [channel], group_image elements apart): zeros where the buffer is.
  // Channels-last pixels are copied a group's channels at a time; NCHW
  // planes are transposed a group's planes at a time, the band's rows in one
  // run where a plane's rows follow each other, into scratch, then placed.
  // Two layer groups to a group (all that ConvNhwc::interleaved_groups
  // pairs) interleave as they are placed.
  void gather(int64_t n, int64_t first_row, int64_t rows, int64_t pad_top, int64_t pad_left, int64_t buffer_w,
              T* tile, int64_t group_image) const {
    const int64_t first_x = std::clamp<int64_t>(-pad_left, 0, width);
    const int64_t last_x = std::clamp<int64_t>(buffer_w - pad_left, first_x, width);
    const int64_t left = first_x + pad_left, right = last_x + pad_left;  // the buffer's columns of src
    const int64_t first_inside = std::clamp<int64_t>(pad_top - first_row, 0, rows);
    const int64_t end_inside = std::clamp<int64_t>(pad_top + height - first_row, first_inside, rows);
    for (int64_t r = 0; r < rows; ++r) {
      const bool inside = r >= first_inside && r < end_inside && right > left;
      for (int64_t g = 0; g < groups; ++g) {
        T* to = tile + g * group_image + r * buffer_w * per_group;
        std::fill(to, to + (inside ? left : buffer_w) * per_group, T(0));
        std::fill(to + (inside ? right : buffer_w) * per_group, to + buffer_w * per_group, T(0));
      }
    }
    if (right <= left) {
      return;
    }
    const auto place = [&](const T* from, T* to) {  // a pixel's channels of a group
      if (interleave > 1) {
        interleave_two(from, from + per_group / 2, to, per_group / 2);
      } else {
        copy_short(from, to, per_group);
      }
    };
    // Column 0 of the tensor's row under the tile's row r (inside rows only:
    // no pointer before the tensor is formed).
    const auto src_row = [&](int64_t r) { return data + n * image + (first_row + r - pad_top) * row; };
    if (channel == 1) {
      for (int64_t r = first_inside; r < end_inside; ++r) {
        const T* from = src_row(r) + first_x * pixel;
        T* to = tile + (r * buffer_w + left) * per_group;
        for (int64_t x = left; x < right; ++x, from += pixel, to += per_group) {
          for (int64_t g = 0; g < groups; ++g) {
            place(from + g * per_group, to + g * group_image);
          }
        }
      }
      return;
    }
    const int64_t run = row == width ? std::max<int64_t>(1, end_inside - first_inside) : 1;  // rows per transpose
    std::vector<T> scratch(run * width * per_group);
    for (int64_t r0 = first_inside; r0 < end_inside; r0 += run) {
      const int64_t count = std::min(run, end_inside - r0);
      for (int64_t g = 0; g < groups; ++g) {
        k.transpose(src_row(r0) + g * per_group * channel, channel, scratch.data(), per_group, per_group,
                    (count - 1) * row + width);
        for (int64_t r = r0; r < r0 + count; ++r) {
          const T* from = scratch.data() + ((r - r0) * width + first_x) * per_group;
          T* to = tile + g * group_image + (r * buffer_w + left) * per_group;
          for (int64_t x = left; x < right; ++x, from += per_group, to += per_group) {
            place(from, to);
          }
        }
      }
    }
  }
};

// Grouped dense convolution c of src (channels-last or NCHW planes; pad_top
// rows and pad_left columns of zeros before it, as a buffer would have them)
// into an NHWC or, nchw_output, NCHW output, by bands of output rows: a
// work item gathers the band's input rows into a thread's tile of group
// images (a group's pixels side by side, zeros around), in cache, runs every
// group's blocks on it, and transposes an NCHW band out of a tile. A
// channels-last src read in place gave each group's kernel a few bytes of
// every pixel's cache lines (ResNeXt: 32 bytes of 1 KiB), and gathered into
// group images for the whole tensor up front, the scattered copy (one source
// pixel into every group's image) cost as much as the kernels saved:
// ResNeXt's 3x3/2 8 x 256 g32 @56 forward on AVX2 spent 4.0 ms in the kernels
// reading in place, 3.0 on group images, whose copy took 2.5-3.2 ms against
// 1.4 for the padded one. NCHW planes had been transposed whole into a padded
// buffer of group images first (that forward, alternating processes against
// torch: 0.95-1.04x -> 1.10-1.26x).
template <typename T>
void convolve_grouped_bands(const KernelsFor<T>& k, const ConvNhwc& c, const at::Tensor& src, int64_t pad_top,
                            int64_t pad_left, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            bool transposed, bool nchw_output, T* output) {
  const int64_t per_group = c.in_per_group, row_elements = c.in_w * c.in_channels();
  const auto input_rows = [&](int64_t out_rows) {
    return (out_rows - 1) * c.stride_h + (c.kernel_h - 1) * c.dilation_h + 1;
  };
  const int64_t tile_bytes = band_bytes();
  int64_t band = 1;
  while (band < c.out_h && input_rows(band + 1) * row_elements * static_cast<int64_t>(sizeof(T)) <= tile_bytes) {
    ++band;
  }
  const int64_t bands = ceil_div(c.out_h, band);
  const DenseBlocks<T> blocks(k, c, weight, bias, transposed, false);
  const int64_t out_c = c.out_channels(), pixels = c.out_h * c.out_w;
  const GroupedSource<T> source(k, src, c.groups, c.interleave);
  const bool stream =
      streaming_stores(output, c.batch * pixels * out_c, nchw_output ? pixels : out_c, k.lanes, sizeof(T));
  const auto transpose_out = stream ? k.stream_transpose : k.transpose;
  parallel_ranges(
      c.batch * bands, band * c.out_w * c.kernel_h * c.kernel_w * per_group * out_c, [&](int64_t begin, int64_t end) {
        std::vector<T> tile(input_rows(band) * row_elements);
        std::vector<T> out_tile(nchw_output ? band * c.out_w * out_c : 0);  // NHWC, transposed into the planes
        typename DenseBlocks<T>::Scratch scratch = blocks.scratch();
        for (int64_t item = begin; item < end; ++item) {
          const int64_t n = item / bands, first_row = item % bands * band;
          const int64_t rows = std::min(band, c.out_h - first_row), tile_rows = input_rows(rows);
          const NhwcInput<T> in = source.tile(tile.data(), tile_rows, c.in_w);
          source.gather(n, first_row * c.stride_h, tile_rows, pad_top, pad_left, c.in_w, tile.data(), in.group);
          T* const band_output = nchw_output ? out_tile.data() : output + (n * pixels + first_row * c.out_w) * out_c;
          for (int64_t block = 0; block < blocks.count(); ++block) {
            const PixelPlacement<T> out{band_output + blocks.first_channel(block), out_c, c.out_w * out_c,
                                        pixels * out_c, stream && !nchw_output};
            blocks.run(block, in, out, 0, rows * c.out_w, scratch);
          }
          if (nchw_output) {
            transpose_out(out_tile.data(), out_c, output + n * out_c * pixels + first_row * c.out_w, pixels,
                          rows * c.out_w, out_c);
          }
        }
      });
}

at::Tensor empty_nhwc(at::IntArrayRef nchw_sizes, const at::Tensor& like) {
  return at::empty(nchw_sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

// ---- Few channels per group on both sides: the planar kernels -------------
// With channel lanes mostly empty, the lanes run along output rows of NCHW
// planes instead (the first layers of networks, small groups): for groups
// whose channels fit one planar call on either side. On 16 lanes that is
// the channels that fill at most half a vector; on AVX2's 8 lanes LeNet's
// 1 -> 6 layer, whose 6 of 8 lanes the NHWC kernel filled, but with one
// input channel it ran a loop of one FMA step per tap: in one process
// against torch, forward 0.69-0.78x -> 1.75-2.13x. Not for wide column
// strides: the strided vector loads need a slack of lanes * stride.
constexpr int64_t kMaxPlanarStride = 8;

template <typename T>
bool use_planar(const ConvNhwc& c, const KernelsFor<T>& k) {
  return !c.depthwise() && c.stride_w <= kMaxPlanarStride &&
         std::max(c.in_per_group, c.out_per_group) <= k.planar_block;
}

// Output rows per work item of the planar kernels.
constexpr int64_t kPlanarBand = 8;

// Vector loads run up to two vectors of strided columns past a row's end.
int64_t planar_slack(int64_t stride_w, int lanes) { return 4 * lanes * stride_w + 2 * lanes; }

// Runs convolution c over NCHW planes of c.in_h x c.in_w (the padding is in the
// buffer) into a contiguous NCHW output, or, with nhwc_output, an NHWC one:
// an item's band of rows of every channel is computed into a thread's tile,
// in cache, and transposed from there, instead of a pass over the whole
// output after. `transposed` as for pack_weight.
template <typename T>
void convolve_planar(const KernelsFor<T>& k, const ConvNhwc& c, const T* input,
                     const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                     bool transposed, bool nhwc_output, T* output) {
  const int64_t in_g = c.in_per_group, out_g = c.out_per_group, taps = c.kernel_h * c.kernel_w;
  // Weights and bias per block of planar_block output channels, zeros past the group's.
  const int64_t block = k.planar_block, blocks = ceil_div(out_g, block);
  at::Tensor packed = at::zeros({c.groups * blocks * block * in_g * taps}, weight.options());
  const at::Tensor packed_bias = bias_per_group(bias, c.groups, blocks * block, weight.options());
  const Nchw<const T> w = read_view<T>(weight);
  T* p = packed.mutable_data_ptr<T>();
  for (int64_t g = 0; g < c.groups; ++g) {
    for (int64_t oc = 0; oc < out_g; ++oc) {
      const int64_t slot = g * blocks * block + oc;  // a group's blocks are consecutive slots
      for (int64_t ic = 0; ic < in_g; ++ic) {
        for (int64_t kh = 0; kh < c.kernel_h; ++kh) {
          for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
            p[((slot * in_g + ic) * c.kernel_h + kh) * c.kernel_w + kw] =
                group_weight(w, c, transposed, g, oc, ic, kh, kw);
          }
        }
      }
    }
  }
  const int64_t in_plane = c.in_h * c.in_w, out_plane = c.out_h * c.out_w, out_c = c.out_channels();
  // Items: a band of output rows of an image, every block of every group,
  // each block row after row so that its few input planes' rows stay in L1.
  const int64_t band = std::min<int64_t>(c.out_h, kPlanarBand);
  const int64_t bands = ceil_div(c.out_h, band);
  parallel_ranges(c.batch * bands, band * c.out_w * out_c * in_g * taps, [&](int64_t begin, int64_t end) {
    std::vector<T> tile(nhwc_output ? out_c * band * c.out_w : 0);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / bands, first_row = item % bands * band;
      const int64_t rows = std::min(band, c.out_h - first_row);
      // The band's rows of each channel: in the tile, or in the output planes.
      T* const origin = nhwc_output ? tile.data() : output + n * out_c * out_plane + first_row * c.out_w;
      const int64_t channel_step = nhwc_output ? rows * c.out_w : out_plane;
      for (int64_t g = 0; g < c.groups; ++g) {
        for (int64_t b = 0; b < blocks; ++b) {
          const int64_t slot = (g * blocks + b) * block;
          for (int64_t row = 0; row < rows; ++row) {
            const int64_t oh = first_row + row;
            PlanarArgs<T> a{input + (n * c.in_channels() + g * in_g) * in_plane + oh * c.stride_h * c.in_w,
                            in_plane, c.in_w, in_g, c.kernel_h, c.kernel_w, c.stride_w, c.dilation_h,
                            c.dilation_w, packed.const_data_ptr<T>() + slot * in_g * taps,
                            bias ? packed_bias.const_data_ptr<T>() + slot : nullptr,
                            origin + (g * out_g + b * block) * channel_step + row * c.out_w, channel_step,
                            c.out_w, std::min(block, out_g - b * block)};
            k.planar_rows(a);
          }
        }
      }
      if (nhwc_output) {
        k.transpose(tile.data(), channel_step, output + (n * c.out_h + first_row) * c.out_w * out_c, out_c, out_c,
                    channel_step);
      }
    }
  });
}

// Weights for the pointwise kernel with one row per (output channel, tap),
// row = oc * taps + tap, as [group][block of rows][ic][row in block]; zeros
// past a group's rows. For a 1x1 kernel the rows are the output channels.
template <typename T>
at::Tensor pack_pointwise_rows(const at::Tensor& weight, const ConvNhwc& c, bool transposed, int64_t block) {
  const int64_t in_g = c.in_per_group, taps = c.kernel_h * c.kernel_w, rows = c.out_per_group * taps;
  const int64_t blocks = ceil_div(rows, block);
  at::Tensor packed = at::zeros({c.groups * blocks * in_g * block}, weight.options());
  const Nchw<const T> w = read_view<T>(weight);
  T* p = packed.mutable_data_ptr<T>();
  for (int64_t g = 0; g < c.groups; ++g) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t oc = r / taps, kh = r % taps / c.kernel_w, kw = r % taps % c.kernel_w;
      for (int64_t ic = 0; ic < in_g; ++ic) {
        p[((g * blocks + r / block) * in_g + ic) * block + r % block] = group_weight(w, c, transposed, g, oc, ic, kh, kw);
      }
    }
  }
  return packed;
}

// Pointwise convolutions (1x1, stride 1, no padding) of NCHW tensors: a GEMM
// per image and group on the planes as they lie, lanes along the pixels. On
// NHWC kernels the input and the output would be transposed through memory
// (25.7 MB in for ResNet-50's 256 -> 64 layer at 8 images). Planes of 28x28
// and 56x56 ran 1.3-2.5x faster so; 14x14 (196 pixels, a partial vector
// per 3 register blocks, weights read per block) 1.4x slower, hence the
// bound.
constexpr int64_t kMinPointwisePixels = 512;

template <typename T>
bool use_pointwise_planes(const KernelsFor<T>& k, const ConvNhwc& c, const at::Tensor& src, int64_t pad_top,
                          int64_t pad_left, at::MemoryFormat format) {
  return format == at::MemoryFormat::Contiguous && !c.depthwise() && !use_planar(c, k) && c.kernel_h == 1 &&
         c.kernel_w == 1 && c.stride_h == 1 && c.stride_w == 1 && pad_top == 0 && pad_left == 0 &&
         src.size(2) == c.in_h && src.size(3) == c.in_w && c.in_h * c.in_w >= kMinPointwisePixels;
}

// Runs pointwise convolution c over NCHW src; `transposed` as for pack_weight.
// Work items: (image, group, run of pixels), each over all the group's blocks
// of output channels, so that the run's input planes stay in cache.
template <typename T>
at::Tensor pointwise_planes(const KernelsFor<T>& k, const ConvNhwc& c, const at::Tensor& src,
                            const at::Tensor& weight, const std::optional<at::Tensor>& bias, bool transposed) {
  const int64_t in_g = c.in_per_group, out_g = c.out_per_group, block = k.pointwise_block;
  const int64_t blocks = ceil_div(out_g, block);
  const at::Tensor packed = pack_pointwise_rows<T>(weight, c, transposed, block);
  // Bias as [group][block][channel], zeros past a group's channels.
  const at::Tensor packed_bias = bias_per_group(bias, c.groups, blocks * block, weight.options());
  const at::Tensor planes = src.contiguous();
  at::Tensor result = at::empty({c.batch, c.out_channels(), c.out_h, c.out_w}, weight.options());
  const int64_t pixels = c.in_h * c.in_w;
  constexpr int64_t kRun = 256;
  const int64_t runs = ceil_div(pixels, kRun);
  const T* x = planes.const_data_ptr<T>();
  T* out = result.mutable_data_ptr<T>();
  parallel_over(c.batch * c.groups * runs, kRun * in_g * out_g, [&](int64_t item) {
    const int64_t run = item % runs, g = item / runs % c.groups, n = item / (runs * c.groups);
    for (int64_t b = 0; b < blocks; ++b) {
      PointwiseArgs<T> a{x + (n * c.in_channels() + g * in_g) * pixels, pixels, in_g,
                         packed.const_data_ptr<T>() + (g * blocks + b) * in_g * block,
                         bias ? packed_bias.const_data_ptr<T>() + (g * blocks + b) * block : nullptr,
                         out + (n * c.out_channels() + g * out_g + b * block) * pixels, pixels,
                         std::min(block, out_g - b * block), run * kRun, std::min(pixels, (run + 1) * kRun)};
      k.pointwise(a);
    }
  });
  return result;
}

// ---- Few output channels, small planes, stride 1: sums of tap planes ------
// out[o](y, x) = sum over taps (kh, kw) of P[o, kh, kw](y + kh * dilation_h - top, x + kw * dilation_w - left),
// where P[o, kh, kw] = sum over ic of w(o, ic, kh, kw) * src[ic]: a GEMM on the
// source planes by the pointwise kernel, lanes along the source's pixels,
// then each tap's plane added at its shift. It pays where the output has more
// pixels than the source and too few channels for the NHWC kernels' lanes:
// LeNet's 6 -> 16 layer's input gradient (14x14 from 10x10 grad_output, 6
// channels in 16 lanes) takes 3.3x fewer vector operations so.
//
// In a scratch copy each source row is followed by zero columns, enough that
// the columns a tap reads left or right of the source wrap onto zeros; the
// planes of P get zeros above and below for the rows outside it.
struct TapPlanes {
  int64_t row;                 // elements between source rows: source width + zero columns
  int64_t source;              // elements per source plane copy: whole vectors of rows
  int64_t before, plane;       // P: zeros before a plane's first row, elements between planes
  std::vector<int64_t> offsets;  // per tap: where output (0, 0) reads it, from source (0, 0)

  TapPlanes(const ConvNhwc& c, int64_t src_h, int64_t src_w, int64_t top, int64_t left, int lanes)
      : offsets(c.kernel_h * c.kernel_w) {
    const int64_t reach_w = (c.kernel_w - 1) * c.dilation_w;
    // Source columns read: [-left, out_w - 1 + reach_w - left].
    row = src_w + std::max<int64_t>({0, left, c.out_w + reach_w - left - src_w});
    source = ceil_div(src_h * row, lanes) * lanes;
    for (int64_t kh = 0; kh < c.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
        offsets[kh * c.kernel_w + kw] = (kh * c.dilation_h - top) * row + kw * c.dilation_w - left;
      }
    }
    const int64_t last_read = offsets.back() + (c.out_h - 1) * row + ceil_div(c.out_w, lanes) * lanes - 1;
    before = ceil_div(std::max<int64_t>(0, -offsets.front()), lanes) * lanes;
    plane = before + ceil_div(std::max(source, last_read + 1), lanes) * lanes;
  }

  // Vector FMAs and adds per image and group, against the NHWC kernels'.
  int64_t vector_ops(const ConvNhwc& c, int lanes, int block) const {
    const int64_t taps = c.kernel_h * c.kernel_w;
    return ceil_div(c.out_per_group * taps, block) * block * c.in_per_group * (source / lanes) +
           c.out_per_group * c.out_h * ceil_div(c.out_w, lanes) * taps;
  }
  static int64_t nhwc_vector_ops(const ConvNhwc& c, int lanes) {
    return c.out_h * c.out_w * c.kernel_h * c.kernel_w * c.in_per_group * ceil_div(c.out_per_group, lanes);
  }
};

// P of an image and group stays in L2; LeNet's is 159 KiB.
constexpr int64_t kMaxTapPlaneBytes = int64_t{512} << 10;

template <typename T>
bool use_tap_planes(const KernelsFor<T>& k, const ConvNhwc& c, const TapPlanes& t) {
  const int64_t taps = c.kernel_h * c.kernel_w;
  return !c.depthwise() && !use_planar(c, k) && taps > 1 && c.stride_h == 1 && c.stride_w == 1 &&
         c.out_per_group * taps * t.plane * int64_t{sizeof(T)} <= kMaxTapPlaneBytes &&
         4 * t.vector_ops(c, k.lanes, k.pointwise_block) <= 3 * TapPlanes::nhwc_vector_ops(c, k.lanes);
}

// Runs convolution c on NCHW source planes (as TapPlanes) into a contiguous
// NCHW result; `transposed` as for pack_weight. Work items: (image, group),
// with the source copy and P in the thread's scratch.
template <typename T>
at::Tensor tap_planes(const KernelsFor<T>& k, const ConvNhwc& c, const TapPlanes& t, const at::Tensor& src,
                      const at::Tensor& weight, const std::optional<at::Tensor>& bias, bool transposed) {
  const int64_t in_g = c.in_per_group, out_g = c.out_per_group, taps = c.kernel_h * c.kernel_w;
  const int64_t block = k.pointwise_block, rows = out_g * taps, blocks = ceil_div(rows, block);
  const at::Tensor packed = pack_pointwise_rows<T>(weight, c, transposed, block);  // P's rows
  const at::Tensor dense_bias = bias ? bias->contiguous() : at::Tensor();
  const int64_t src_h = src.size(2), src_w = src.size(3), src_plane = src_h * src_w;
  const at::Tensor planes = padded_buffer<T>(k, src, false, src_h, src_w, 0, 0, 0);
  at::Tensor result = at::empty({c.batch, c.out_channels(), c.out_h, c.out_w}, weight.options());
  const T* x = planes.const_data_ptr<T>();
  T* out = result.mutable_data_ptr<T>();
  parallel_ranges(c.batch * c.groups, t.vector_ops(c, k.lanes, block) * k.lanes, [&](int64_t begin, int64_t end) {
    std::vector<T> source(in_g * t.source, T(0)), sums(rows * t.plane, T(0));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item % c.groups, first_plane = item * in_g;  // item = n * groups + g
      for (int64_t ic = 0; ic < in_g; ++ic) {
        for (int64_t y = 0; y < src_h; ++y) {
          const T* from = x + (first_plane + ic) * src_plane + y * src_w;
          std::copy(from, from + src_w, source.data() + ic * t.source + y * t.row);
        }
      }
      for (int64_t b = 0; b < blocks; ++b) {
        k.pointwise({source.data(), t.source, in_g, packed.const_data_ptr<T>() + (g * blocks + b) * in_g * block,
                     nullptr, sums.data() + b * block * t.plane + t.before, t.plane, std::min(block, rows - b * block),
                     0, t.source});
      }
      k.tap_sums({sums.data() + t.before, t.plane, t.offsets.data(), taps, t.row,
                  bias ? dense_bias.const_data_ptr<T>() + g * out_g : nullptr, out + item * out_g * c.out_h * c.out_w,
                  out_g, c.out_h, c.out_w});
    }
  });
  return result;
}

// NCHW depthwise convolutions whose output rows fill a vector run on planes;
// smaller ones would pay a plane's setup for a few vectors, and go to NHWC.
bool use_depthwise_planes(const ConvNhwc& c, int lanes, at::MemoryFormat format) {
  return c.depthwise() && format == at::MemoryFormat::Contiguous && c.out_w >= lanes;
}

// The zero-bordered copy of one NCHW plane that the depthwise plane kernels
// read, for depthwise convolution c (unpadded: its padding, possibly negative,
// in c.pad_h/pad_w): the rows and columns the taps read, then the slack of a
// row's last vectors. A thread places plane after plane in its own copy, in
// cache; the border it never writes stays zero.
struct ScratchPlane {
  int64_t height, width;  // of the copy
  int64_t in_w, pad_h, pad_w;
  Range rows, cols;       // of the plane that land in the copy

  ScratchPlane(const ConvNhwc& c, int lanes)
      : height((c.out_h - 1) * c.stride_h + (c.kernel_h - 1) * c.dilation_h + 1),
        width((c.out_w - 1) * c.stride_w + (c.kernel_w - 1) * c.dilation_w + 1),
        in_w(c.in_w), pad_h(c.pad_h), pad_w(c.pad_w),
        rows{std::max<int64_t>(0, -c.pad_h), std::min(c.in_h, height - c.pad_h)},
        cols{std::max<int64_t>(0, -c.pad_w), std::min(c.in_w, width - c.pad_w)} {
    width += planar_slack(c.stride_w, lanes);
  }

  template <typename T>
  std::vector<T> zeros() const {
    return std::vector<T>(height * width, T(0));
  }

  template <typename T>
  void place(const T* plane, std::vector<T>& copy) const {
    for (int64_t ih = rows.begin; ih < rows.end && cols.end > cols.begin; ++ih) {
      std::copy(plane + ih * in_w + cols.begin, plane + ih * in_w + cols.end,
                copy.data() + (ih + pad_h) * width + cols.begin + pad_w);
    }
  }
};

// Depthwise convolution c (unpadded, as for ScratchPlane) of NCHW src into
// NCHW planes: no padded copy of the whole tensor, no transposes.
template <typename T>
at::Tensor depthwise_planes(const KernelsFor<T>& k, const ConvNhwc& c, const at::Tensor& src,
                            const at::Tensor& weight, const std::optional<at::Tensor>& bias, bool transposed) {
  const at::Tensor planes = src.contiguous();
  const int64_t channels = c.groups, taps = c.kernel_h * c.kernel_w;
  std::vector<T> packed(channels * taps);  // flipped for the transposed convolution
  const Nchw<const T> w = read_view<T>(weight);
  for (int64_t ch = 0; ch < channels; ++ch) {
    for (int64_t kh = 0; kh < c.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
        packed[ch * taps + kh * c.kernel_w + kw] =
            transposed ? w(ch, 0, c.kernel_h - 1 - kh, c.kernel_w - 1 - kw) : w(ch, 0, kh, kw);
      }
    }
  }
  const ScratchPlane scratch(c, k.lanes);
  at::Tensor result = at::empty({c.batch, channels, c.out_h, c.out_w}, weight.options());
  const T* in = planes.const_data_ptr<T>();
  T* out = result.mutable_data_ptr<T>();
  const int64_t in_plane = c.in_h * c.in_w, out_plane = c.out_h * c.out_w;
  parallel_ranges(c.batch * channels, out_plane * taps, [&](int64_t begin, int64_t end) {
    std::vector<T> copy = scratch.zeros<T>();
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t ch = plane % channels;
      scratch.place(in + plane * in_plane, copy);
      k.depthwise_plane({copy.data(), scratch.width, c.kernel_h, c.kernel_w, c.stride_h, c.stride_w, c.dilation_h,
                         c.dilation_w, packed.data() + ch * taps,
                         bias ? bias->const_data_ptr<T>()[ch * bias->stride(0)] : T(0), out + plane * out_plane,
                         c.out_h, c.out_w});
    }
  });
  return result;
}

// The weight gradient of depthwise convolution c (unpadded, as for
// ScratchPlane) on NCHW planes: each plane's tap sums in float over bands of
// at most kPartialPixels pixels, folded into double, then summed over the
// images in order: deterministic for any thread count.
template <typename T>
void depthwise_planes_weight_grad(const KernelsFor<T>& k, const ConvNhwc& c, const at::Tensor& grad_output,
                                  const at::Tensor& input, const at::Tensor& grad_weight) {
  const at::Tensor x = input.contiguous(), gy = grad_output.contiguous();
  const int64_t channels = c.groups, taps = c.kernel_h * c.kernel_w;
  const int64_t in_plane = c.in_h * c.in_w, out_plane = c.out_h * c.out_w;
  const int64_t band = std::max<int64_t>(1, kPartialPixels / c.out_w);  // rows
  const ScratchPlane scratch(c, k.lanes);
  std::vector<double> plane_sums(c.batch * channels * taps, 0.0);
  parallel_ranges(c.batch * channels, out_plane * taps, [&](int64_t begin, int64_t end) {
    std::vector<T> copy = scratch.zeros<T>(), sums(taps);
    for (int64_t plane = begin; plane < end; ++plane) {
      scratch.place(x.const_data_ptr<T>() + plane * in_plane, copy);
      for (int64_t oh = 0; oh < c.out_h; oh += band) {
        std::fill(sums.begin(), sums.end(), T(0));
        k.depthwise_plane_weight_grad({copy.data() + oh * c.stride_h * scratch.width, scratch.width, c.kernel_h,
                                       c.kernel_w, c.stride_h, c.stride_w, c.dilation_h, c.dilation_w,
                                       gy.const_data_ptr<T>() + plane * out_plane + oh * c.out_w,
                                       std::min(band, c.out_h - oh), c.out_w, sums.data()});
        for (int64_t t = 0; t < taps; ++t) {
          plane_sums[plane * taps + t] += sums[t];
        }
      }
    }
  });
  Nchw<T> gw = write_view<T>(grad_weight);
  for (int64_t ch = 0; ch < channels; ++ch) {
    for (int64_t t = 0; t < taps; ++t) {
      double total = 0;
      for (int64_t n = 0; n < c.batch; ++n) {
        total += plane_sums[(n * channels + ch) * taps + t];
      }
      gw(ch, 0, t / c.kernel_w, t % c.kernel_w) = static_cast<T>(total);
    }
  }
}

// Runs convolution c on src, placed in a buffer as the kernels read it (row i
// of src at pad_top + i, likewise columns), and returns the result in
// torch's layout: the lane-group kernels where they apply, planar kernels on
// NCHW planes when channel lanes would be mostly empty, the dense NHWC
// kernels otherwise, in either layout: sources are transposed in, results
// written in torch's layout through tiles in cache (grouped 4-channel layers
// ran about 1.6x faster on the planar kernels, with the transposes, than on
// dense NHWC kernels with 4 of 16 lanes in use).
template <typename T>
at::Tensor convolve(const KernelsFor<T>& k, const ConvNhwc& c, const at::Tensor& src,
                    int64_t pad_top, int64_t pad_left, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, bool transposed, at::MemoryFormat format) {
  if (use_pointwise_planes(k, c, src, pad_top, pad_left, format)) {
    return pointwise_planes<T>(k, c, src, weight, bias, transposed);
  }
  const TapPlanes taps(c, src.size(2), src.size(3), pad_top, pad_left, k.lanes);
  if (use_tap_planes(k, c, taps)) {
    return in_layout<T>(k, tap_planes<T>(k, c, taps, src, weight, bias, transposed), format);
  }
  const int64_t interleave = interleaved_bands<T>(k, c, src);
  const bool lane_groups = runs_lane_groups<T>(k, c, src);  // which the two above exclude
  const bool planar = interleave == 1 && !lane_groups && use_planar(c, k);
  const bool nchw = format == at::MemoryFormat::Contiguous && !lane_groups;
  at::Tensor result = at::empty(
      {c.batch, c.out_channels(), c.out_h, c.out_w},
      weight.options().memory_format(nchw ? at::MemoryFormat::Contiguous : at::MemoryFormat::ChannelsLast));
  if (!lane_groups && !planar && gathers_group_bands(src, c.groups)) {
    convolve_grouped_bands<T>(k, c.interleaved(interleave), src, pad_top, pad_left, weight, bias, transposed, nchw,
                              result.mutable_data_ptr<T>());
    return in_layout<T>(k, result, format);
  }
  const at::Tensor buffer = padded_buffer<T>(k, src, !planar, c.in_h, c.in_w, pad_top, pad_left,
                                             planar ? planar_slack(c.stride_w, k.lanes) : 0);
  if (planar) {
    convolve_planar<T>(k, c, buffer.const_data_ptr<T>(), weight, bias, transposed, !nchw,
                       result.mutable_data_ptr<T>());
  } else {
    convolve_nhwc<T>(k, c, buffer.const_data_ptr<T>(), weight, bias, transposed, c.lane_group_width(k.lanes), nchw,
                     result.mutable_data_ptr<T>());
  }
  return in_layout<T>(k, result, format);
}

// Runs NHWC depthwise kernel `kernel` (depthwise_pixels, depthwise_input_grad)
// on NCHW src planes into NCHW planes of out_h rows, block of channels by
// block: the block's src planes are transposed into an NHWC tile in cache,
// the kernel runs on it, and its result is transposed back into the planes.
// For rows shorter than a vector, where the plane kernels would leave most
// lanes idle; transposing whole tensors in and out instead moves them through
// memory three times. `geometry` is the kernel's arguments for one image but
// the tensors; its weight and bias are per channel, and a tile gets its block's.
template <typename T>
at::Tensor depthwise_tiles(const KernelsFor<T>& k, void (*kernel)(const DepthwiseArgs<T>&),
                           const DepthwiseArgs<T>& geometry, const at::Tensor& src, int64_t out_h,
                           const at::TensorOptions& options) {
  const at::Tensor planes = src.contiguous();
  const int64_t batch = src.size(0), channels = src.size(1);
  const int64_t in_plane = geometry.in_h * geometry.in_w, out_plane = out_h * geometry.out_w;
  // Channels per tile: as many vectors as 32 KB of input holds. The NHWC
  // kernel's work per pixel is spread over a tile's vectors; 7x7 planes ran
  // about 15% faster than with at most 4 (64 KB: no better).
  const int64_t vectors = std::clamp<int64_t>(
      (int64_t{32} << 10) / std::max<int64_t>(1, in_plane * k.lanes * static_cast<int64_t>(sizeof(T))), 1,
      ceil_div(channels, k.lanes));
  const int64_t block = vectors * k.lanes, blocks = ceil_div(channels, block);
  at::Tensor result = at::empty({batch, channels, out_h, geometry.out_w}, options);
  const T* in = planes.const_data_ptr<T>();
  T* out = result.mutable_data_ptr<T>();
  const int64_t cost = block * std::max(in_plane, out_plane) * geometry.kernel_h * geometry.kernel_w;
  parallel_ranges(batch * blocks, cost, [&](int64_t begin, int64_t end) {
    std::vector<T> tile_in(in_plane * block), tile_out(out_plane * block);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t first = item % blocks * block, count = std::min(block, channels - first);
      const int64_t first_plane = item / blocks * channels + first;
      k.transpose(in + first_plane * in_plane, in_plane, tile_in.data(), block, count, in_plane);
      DepthwiseArgs<T> a = geometry;
      a.input = tile_in.data();
      a.input_row = geometry.in_w * block;
      a.input_pixel = a.output_pixel = block;
      a.weight = geometry.weight + first;
      a.bias = geometry.bias ? geometry.bias + first : nullptr;
      a.output = tile_out.data();
      a.pixel_begin = 0;
      a.pixel_end = out_plane;
      a.channels = count;
      kernel(a);
      k.transpose(tile_out.data(), block, out + first_plane * out_plane, out_plane, out_plane, count);
    }
  });
  return result;
}

// Lane-group convolution c (depthwise or small groups, unpadded as for
// ScratchPlane) of src, in torch's layout `format`: NCHW depthwise on planes,
// or in tiles when rows are shorter than a vector; channels_last by the NHWC
// kernel in place.
template <typename T>
at::Tensor lane_group_conv(const KernelsFor<T>& k, const ConvNhwc& c, const at::Tensor& src, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias, bool transposed, at::MemoryFormat format) {
  if (format != at::MemoryFormat::Contiguous) {
    return convolve<T>(k, c, src, 0, 0, weight, bias, transposed, format);
  }
  if (use_depthwise_planes(c, k.lanes, format)) {
    return depthwise_planes<T>(k, c, src, weight, bias, transposed);
  }
  const int64_t width = c.lane_group_width(k.lanes);
  const int64_t padded_channels = ceil_div(c.out_channels(), k.lanes) * k.lanes;
  const at::Tensor packed = pack_lane_group_weight<T>(k, weight, c, padded_channels, transposed);
  const at::Tensor dense_bias = bias ? bias->contiguous() : at::Tensor();
  const DepthwiseArgs<T> geometry{nullptr, 0, 0, c.in_h, c.in_w, c.pad_h, c.pad_w, c.kernel_h, c.kernel_w,
                                  c.stride_h, c.stride_w, c.dilation_h, c.dilation_w, packed.const_data_ptr<T>(),
                                  width * padded_channels, bias ? dense_bias.const_data_ptr<T>() : nullptr,
                                  nullptr, 0, c.out_w, 0, 0, 0, width};
  return depthwise_tiles<T>(k, k.depthwise_pixels, geometry, src, c.out_h, weight.options());
}

template <typename T>
void conv2d_backward_weight_planar(const KernelsFor<T>& k, const Conv2dShape& s,
                                   const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& grad_weight) {
  const int64_t in_g = s.in_per_group(), out_g = s.out_per_group();
  const int64_t in_h = s.h.in_size + 2 * s.h.pad, in_w = s.w.in_size + 2 * s.w.pad;
  const at::Tensor x = padded_buffer<T>(k, input, false, in_h, in_w, s.h.pad, s.w.pad,
                                        planar_slack(s.w.stride, k.lanes));
  // Rows of at least a vector are read in place; shorter ones read a vector
  // past their end, so a copy gets that slack.
  const at::Tensor gy = padded_buffer<T>(k, grad_output, false, s.h.out_size, s.w.out_size, 0, 0,
                                         s.w.out_size >= k.lanes ? 0 : k.lanes);
  const T* xs = x.const_data_ptr<T>();
  const T* g_data = gy.const_data_ptr<T>();
  const int64_t out_plane = s.h.out_size * s.w.out_size;
  Nchw<T> gw = write_view<T>(grad_weight);
  // Tiles of (group, output channel block, input channel, tap), each owned by
  // one thread and summed chunk by chunk in a fixed order. Consecutive tiles
  // of a thread mostly differ in their tap only and read the same planes, so a
  // chunk is sized for their share of them (one input plane, a block of
  // grad_output planes) to stay in L1 from one tile to the next.
  const int64_t block = k.planar_block, blocks = ceil_div(out_g, block);
  const int64_t taps = s.h.kernel * s.w.kernel;
  const int64_t tiles = s.groups * blocks * in_g * taps;
  constexpr int64_t kTileBytes = int64_t{32} << 10;
  const int64_t row_bytes = (s.h.stride * in_w + std::min(block, out_g) * s.w.out_size) * sizeof(T);
  // A call sums `chunk` images' rows [r0, r0 + rows): at most kPartialPixels pixels.
  const int64_t rows = std::clamp<int64_t>(std::min(kTileBytes / row_bytes, kPartialPixels / s.w.out_size), 1,
                                           s.h.out_size);
  const int64_t chunk = std::clamp<int64_t>(
      std::min(kTileBytes / (rows * row_bytes), kPartialPixels / (rows * s.w.out_size)), 1,
      std::max<int64_t>(1, s.batch));
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    FoldedSums<T> sums((end - begin) * block);
    const auto tile_of = [&](int64_t t) {
      struct {
        int64_t g, first_oc, ic, kh, kw, count;
      } tile{t / (taps * in_g * blocks), t / (taps * in_g) % blocks * block, t / taps % in_g,
             t % taps / s.w.kernel, t % taps % s.w.kernel, 0};
      tile.count = std::min(block, out_g - tile.first_oc);
      return tile;
    };
    for (int64_t n0 = 0; n0 < s.batch; n0 += chunk) {
      const int64_t images = std::min(chunk, s.batch - n0);
      for (int64_t r0 = 0; r0 < s.h.out_size; r0 += rows) {
        const int64_t row_count = std::min(rows, s.h.out_size - r0);
        for (int64_t t = begin; t < end; ++t) {
          const auto tile = tile_of(t);
          const int64_t oc = tile.g * out_g + tile.first_oc, channel = tile.g * in_g + tile.ic;
          PlanarGradArgs<T> a{
              g_data + (n0 * s.out_channels + oc) * out_plane + r0 * s.w.out_size,
              s.out_channels * out_plane, out_plane, row_count, s.w.out_size, images,
              xs + ((n0 * s.in_channels + channel) * in_h + r0 * s.h.stride + tile.kh * s.h.dilation) * in_w +
                  tile.kw * s.w.dilation,
              s.in_channels * in_h * in_w, in_w, s.h.stride, s.w.stride, tile.count,
              sums.partial() + (t - begin) * block};
          k.planar_weight_grad(a);
        }
        sums.added(images * row_count * s.w.out_size);
      }
    }
    for (int64_t t = begin; t < end; ++t) {
      const auto tile = tile_of(t);
      for (int64_t j = 0; j < tile.count; ++j) {
        gw(tile.g * out_g + tile.first_oc + j, tile.ic, tile.kh, tile.kw) =
            static_cast<T>(sums.total((t - begin) * block + j));
      }
    }
  });
}

// A 1x1 window with no padding reads only the input pixels at its stride:
// gathered into a tensor of their own (in `format`), they are the input of a
// stride-1 layer, whose NCHW forward and weight gradient run on planes with
// no transposes, where the strided layer transposed every input pixel into
// NHWC to read one in stride_h * stride_w. AVX2, 1x1/2 256 -> 512 @56
// against torch, alternating processes: NCHW forward 0.89-0.98x ->
// 1.00-1.03x, weight gradient 0.80-0.83x -> 0.95-1.01x; channels_last
// weight gradient 0.73-0.78x -> 0.83-0.89x, forward unchanged.
struct PixelsRead {
  Conv2dShape shape;
  at::Tensor input;
};

std::optional<PixelsRead> strided_pointwise(const Conv2dShape& s, const at::Tensor& input,
                                            at::MemoryFormat format) {
  if (s.h.kernel != 1 || s.w.kernel != 1 || s.h.pad != 0 || s.w.pad != 0 || (s.h.stride == 1 && s.w.stride == 1)) {
    return std::nullopt;
  }
  Conv2dShape pointwise = s;
  for (WindowAxis* a : {&pointwise.h, &pointwise.w}) {
    a->in_size = a->out_size;
    a->stride = a->dilation = 1;
  }
  return PixelsRead{pointwise, input.slice(2, 0, (s.h.out_size - 1) * s.h.stride + 1, s.h.stride)
                                   .slice(3, 0, (s.w.out_size - 1) * s.w.stride + 1, s.w.stride)
                                   .contiguous(format)};
}

template <typename T>
at::Tensor conv2d_forward_simd(const Conv2dShape& s, const at::Tensor& input,
                               const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                               at::MemoryFormat format) {
  if (const std::optional<PixelsRead> read = strided_pointwise(s, input, format)) {
    return conv2d_forward_simd<T>(read->shape, read->input, weight, bias, format);
  }
  const KernelsFor<T>& k = active_isa().get<T>();
  const ConvNhwc c = ConvNhwc::forward(s);
  if (runs_lane_groups<T>(k, c, input)) {
    const ConvNhwc unpadded = c.unpadded(s.h.in_size, s.w.in_size, s.h.pad, s.w.pad);
    return lane_group_conv<T>(k, unpadded, input, weight, bias, false, format);
  }
  return convolve<T>(k, c, input, s.h.pad, s.w.pad, weight, bias, false, format);
}

// Depthwise input gradient, gathered per input pixel from grad_output: NCHW
// rows shorter than a vector in tiles, otherwise all of grad_output as NHWC
// (channels_last in place); no zeros spread in, no padded copy.
template <typename T>
at::Tensor depthwise_backward_input(const KernelsFor<T>& k, const Conv2dShape& s,
                                    const at::Tensor& grad_output, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias,
                                    at::MemoryFormat format) {
  const ConvNhwc c = ConvNhwc::forward(s);
  const int64_t channels = s.in_channels, padded_channels = ceil_div(channels, k.lanes) * k.lanes;
  const at::Tensor packed = pack_lane_group_weight<T>(k, weight, c, padded_channels, false);
  const at::Tensor dense_bias = bias ? bias->contiguous() : at::Tensor();
  // grad_output is the kernel's input, grad_input its output.
  const DepthwiseArgs<T> geometry{nullptr, 0, 0, s.h.out_size, s.w.out_size, s.h.pad, s.w.pad, s.h.kernel,
                                  s.w.kernel, s.h.stride, s.w.stride, s.h.dilation, s.w.dilation,
                                  packed.const_data_ptr<T>(), padded_channels,
                                  bias ? dense_bias.const_data_ptr<T>() : nullptr, nullptr, 0, s.w.in_size, 0, 0,
                                  channels};
  if (format == at::MemoryFormat::Contiguous && s.w.in_size < k.lanes) {
    return depthwise_tiles<T>(k, k.depthwise_input_grad, geometry, grad_output, s.h.in_size, weight.options());
  }
  const at::Tensor gy = padded_buffer<T>(k, grad_output, true, s.h.out_size, s.w.out_size, 0, 0, 0);
  at::Tensor grad_input = empty_nhwc({s.batch, channels, s.h.in_size, s.w.in_size}, weight);
  constexpr int64_t kRun = 72;
  const int64_t pixels = s.h.in_size * s.w.in_size, runs = ceil_div(pixels, kRun);
  const T* g = gy.const_data_ptr<T>();
  T* out = grad_input.mutable_data_ptr<T>();
  const bool stream = streaming_stores(out, grad_input.numel(), channels, k.lanes, sizeof(T));
  parallel_over(s.batch * runs, kRun * channels * s.h.kernel * s.w.kernel, [&](int64_t item) {
    const int64_t n = item / runs, first = item % runs * kRun;
    DepthwiseArgs<T> a = geometry;
    a.input = g + n * s.h.out_size * s.w.out_size * channels;
    a.input_row = s.w.out_size * channels;
    a.input_pixel = a.output_pixel = channels;
    a.output = out + n * pixels * channels;
    a.pixel_begin = first;
    a.pixel_end = std::min(pixels, first + kRun);
    a.stream = stream;
    k.depthwise_input_grad(a);
  });
  return in_layout<T>(k, grad_input, format);
}

// Positions of an axis that its phases reach.
int64_t reached_positions(const std::vector<InputPhase>& phases) {
  int64_t sum = 0;
  for (const InputPhase& p : phases) {
    sum += p.positions;
  }
  return sum;
}

// One axis of a padded copy of grad_output that all of its phases read:
// `before` positions of padding, the most that a phase reads, `size` in all;
// phase p reads from position before - p.pad() on.
struct SharedPadding {
  int64_t before = 0, size = 0;

  explicit SharedPadding(const std::vector<InputPhase>& phases) : before(phases.front().pad()) {
    for (const InputPhase& p : phases) {
      before = std::max(before, p.pad());
    }
    for (const InputPhase& p : phases) {
      size = std::max(size, before - p.pad() + p.positions + p.reach());
    }
  }
};

// A thread's tile of all channels of a band's rows, at most: past it the blocks write in place
// (dense_phases_in_bands).
constexpr int64_t kMaxRowsTileBytes = int64_t{2} << 20;

// The input gradient of s by its phases (rows x cols, reaching every
// position), all on the dense kernels and in one pass: a work item sums each
// phase's pixels in a band of grad_input's rows for one block of channels
// and writes them to their places, every stride-th row and column (dense
// channels_last: in grad_input; NCHW and grouped: in a tile of the band's
// rows, then written out from cache), all phases reading one padded copy
// of grad_output. Phase by phase, each result went through memory twice more
// to be copied into its slice of grad_input, and each phase padded its own
// copy. AVX2, input gradients against torch, alternating processes, NCHW /
// channels_last: 3x3/2 128 @56 1.11-1.18x / 0.81-0.90x -> 1.33-1.50x /
// 0.99-1.02x, ResNeXt's 3x3/2 8 x 256 g32 @56 0.43-0.48x / 0.51-0.63x ->
// 0.76-0.83x / 0.66-0.78x (and with conv_block not inlined, below, 0.88-0.98x
// / 0.80x), 3x3/2 256 @28 0.99-1.01x -> 1.13-1.15x NCHW.
// Empty when some phase runs on other kernels.
template <typename T>
std::optional<at::Tensor> dense_phases_in_bands(const KernelsFor<T>& k, const Conv2dShape& s,
                                                const std::vector<InputPhase>& rows,
                                                const std::vector<InputPhase>& cols, const at::Tensor& grad_output,
                                                const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                                at::MemoryFormat format) {
  // Phases differ only in their taps and sizes, so every phase runs on the
  // kernels that the first would.
  const ConvNhwc any_phase = ConvNhwc::input_gradient(s, rows.front(), cols.front());
  const int64_t interleave = interleaved_bands<T>(k, any_phase, grad_output);
  if (interleave == 1 && (any_phase.depthwise() || use_lane_groups(any_phase, k.lanes) || use_planar(any_phase, k))) {
    return std::nullopt;
  }
  const SharedPadding top(rows), left(cols);
  // A grouped layer's grad_output is gathered band by band into group
  // images in a thread's tile (as convolve_grouped_bands does: the items of
  // a band follow each other, so a thread gathers it about once), any other
  // goes into one padded buffer. ResNeXt's 3x3/2 8 x 256 g32, channels_last,
  // alternating processes against torch: @56 0.73-0.84x -> 0.82-0.88x, @28
  // 0.83-0.93x -> 1.01-1.08x (NCHW, gathered likewise since, within noise).
  const bool gather = gathers_group_bands(grad_output, s.groups);
  const at::Tensor buffer =
      gather ? at::Tensor() : padded_buffer<T>(k, grad_output, true, top.size, left.size, top.before, left.before, 0);
  struct Phase {
    InputPhase h, w;
    DenseBlocks<T> blocks;
    int64_t first_row, first_col;  // the phase's first row and column of the padded grad_output
  };
  std::vector<Phase> phases;
  phases.reserve(rows.size() * cols.size());
  for (const InputPhase& h : rows) {
    for (const InputPhase& w : cols) {
      ConvNhwc c = ConvNhwc::input_gradient(s, h, w).interleaved(interleave);
      c.in_h = top.size;
      c.in_w = left.size;
      const at::Tensor taps =
          weight.slice(2, h.first_tap, s.h.kernel, h.tap_step).slice(3, w.first_tap, s.w.kernel, w.tap_step);
      phases.push_back({h, w, DenseBlocks<T>(k, c, taps, bias, true, false), top.before - h.pad(),
                        left.before - w.pad()});
    }
  }
  const bool nchw = format == at::MemoryFormat::Contiguous;
  at::Tensor grad_input =
      at::empty({s.batch, s.in_channels, s.h.in_size, s.w.in_size}, weight.options().memory_format(format));
  T* const gi = grad_input.mutable_data_ptr<T>();
  const int64_t channels = s.in_channels, in_w = s.w.in_size, plane = s.h.in_size * in_w;
  const DenseBlocks<T>& first = phases.front().blocks;  // every phase has the same blocks of channels
  const int64_t blocks = first.count(), block_width = first.width();
  // Bands of `band` rows of every row phase (band * stride_h rows of
  // grad_input), of equal length, each phase's about kPixelRun pixels;
  // images smaller than that go several to an item, as in convolve_nhwc
  // (3x3/2 512 @14 input gradient, alternating processes against torch:
  // channels_last 1.09-1.15x with one image an item -> 1.16-1.25x, 1.10-1.25x
  // before the bands; NCHW 0.92-1.07x -> 1.03-1.20x).
  const int64_t phase_rows = ceil_div(s.h.in_size, s.h.stride), phase_cols = ceil_div(in_w, s.w.stride);
  const int64_t bands = ceil_div(phase_rows, std::max<int64_t>(1, kPixelRun / phase_cols));
  const int64_t band = ceil_div(phase_rows, bands), band_rows = band * s.h.stride;
  const int64_t images_per_item =
      bands > 1 ? 1
                : std::clamp<int64_t>(8 * kPixelRun / (phase_rows * phase_cols), 1, std::max<int64_t>(1, s.batch));
  // NCHW blocks are summed in a tile of the band's rows and transposed into
  // the planes; a grouped layer's channels_last ones in a tile of all
  // channels of the band's rows (every block of a band in one work item),
  // copied out as whole rows, by streaming stores where grad_input is large.
  // Written by the kernels to every stride-th pixel of grad_input, a group's
  // 64 bytes of each 1 KiB pixel cost more than the sums: ResNeXt's 3x3/2 8
  // x 256 g32 @56 on AVX-512, alternating processes against torch,
  // 0.60-0.61x -> 0.63-0.71x with a block's tile copied out a pixel at a
  // time, 0.66-0.74x with whole rows, 0.84-0.89x streamed (on the AVX2
  // kernels 0.51x -> 0.64-0.66x). The dense layers' wider blocks stay in
  // place (3x3/2 128 @56 on AVX2: 0.98x -> 0.91x through a block's tile),
  // and so do grouped ones whose tile would pass kMaxRowsTileBytes.
  const bool whole_rows = gather && !nchw &&
                          images_per_item * band_rows * in_w * channels * static_cast<int64_t>(sizeof(T)) <=
                              kMaxRowsTileBytes;
  const bool in_tile = nchw || whole_rows;
  const bool stream = whole_rows && streaming_stores(gi, grad_input.numel(), in_w * channels, k.lanes, sizeof(T));
  const bool stream_in_place = !in_tile && streaming_stores(gi, grad_input.numel(), channels, k.lanes, sizeof(T));
  const auto transpose_out =
      nchw && streaming_stores(gi, grad_input.numel(), plane, k.lanes, sizeof(T)) ? k.stream_transpose : k.transpose;
  const int64_t item_blocks = whole_rows ? blocks : 1, tile_width = whole_rows ? channels : block_width;
  const int64_t image_groups = ceil_div(s.batch, images_per_item), tile_image = band_rows * in_w * tile_width;
  int64_t item_weights = 0;
  int64_t reach = 0;  // rows past a band's `band` that its phases read
  for (const Phase& p : phases) {
    item_weights += p.blocks.block_weights();
    reach = std::max(reach, p.first_row + p.h.reach());
  }
  // Where an item reads grad_output: the buffer from the item's first image
  // and band row on, or a thread's group images of the band's rows.
  ConvNhwc padded = any_phase;
  padded.in_h = top.size;
  padded.in_w = left.size;
  const int64_t gathered_rows = std::min(top.size, band + reach);
  const std::optional<GroupedSource<T>> source =
      gather ? std::make_optional<GroupedSource<T>>(k, grad_output, s.groups / interleave, interleave) : std::nullopt;
  const NhwcInput<T> layout =
      gather ? source->tile(nullptr, gathered_rows, left.size) : NhwcInput<T>::of(padded, nullptr);
  const int64_t block_items = blocks / item_blocks;  // work items per band
  parallel_ranges(image_groups * bands * block_items, images_per_item * band * phase_cols * item_weights * item_blocks,
                  [&](int64_t begin, int64_t end) {
    std::vector<T> tile(in_tile ? images_per_item * tile_image : 0);
    std::vector<T> grad(gather ? images_per_item * layout.image : 0);
    int64_t gathered_band = -1;  // the (image group, band) whose rows `grad` holds
    typename DenseBlocks<T>::Scratch scratch = first.scratch();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t band_item = item / block_items, j0 = band_item % bands * band;
      const int64_t n0 = band_item / bands * images_per_item, n1 = std::min(s.batch, n0 + images_per_item);
      const int64_t r0 = j0 * s.h.stride, r1 = std::min(s.h.in_size, r0 + band_rows);
      NhwcInput<T> in = layout;
      if (gather) {
        in.data = grad.data();
        if (gathered_band != band_item) {
          gathered_band = band_item;
          for (int64_t n = n0; n < n1; ++n) {
            source->gather(n, j0, std::min(gathered_rows, top.size - j0), top.before, left.before, left.size,
                           grad.data() + (n - n0) * in.image, in.group);
          }
        }
      } else {
        in.data = buffer.const_data_ptr<T>() + n0 * in.image + j0 * in.row;
      }
      for (int64_t block = item % block_items * item_blocks; block < (item % block_items + 1) * item_blocks; ++block) {
        const int64_t first_channel = first.first_channel(block);
        T* const block_tile = tile.data() + (whole_rows ? first_channel : 0);
        for (const Phase& p : phases) {
          const int64_t j1 = std::min(j0 + band, p.h.positions);
          if (j1 <= j0) {
            continue;
          }
          // Pixel (n0, j0, 0) of the phase is grad_input's (n0, r0 + h.phase, w.phase).
          const int64_t at_row = p.h.phase * in_w + p.w.phase;
          const PixelPlacement<T> out =
              in_tile ? PixelPlacement<T>{block_tile + at_row * tile_width, s.w.stride * tile_width,
                                          s.h.stride * in_w * tile_width, tile_image}
                      : PixelPlacement<T>{gi + ((n0 * s.h.in_size + r0) * in_w + at_row) * channels + first_channel,
                                          s.w.stride * channels, s.h.stride * in_w * channels, plane * channels,
                                          stream_in_place};
          NhwcInput<T> phase_in = in;
          phase_in.data += p.first_row * in.row + p.first_col * in.pixel;
          const int64_t image_pixels = p.h.positions * p.w.positions;
          // Pixels from the item's first image and band row on.
          p.blocks.run(block, phase_in, out, 0, (n1 - 1 - n0) * image_pixels + (j1 - j0) * p.w.positions, scratch);
        }
        for (int64_t n = n0; nchw && n < n1; ++n) {
          transpose_out(tile.data() + (n - n0) * tile_image, block_width,
                        gi + (n * channels + first_channel) * plane + r0 * in_w, plane, (r1 - r0) * in_w,
                        first.channels(block));
        }
      }
      for (int64_t n = n0; whole_rows && n < n1; ++n) {
        const T* from = tile.data() + (n - n0) * tile_image;
        T* to = gi + (n * plane + r0 * in_w) * channels;
        if (stream) {
          k.stream_copy(from, to, (r1 - r0) * in_w * channels);
        } else {
          std::copy_n(from, (r1 - r0) * in_w * channels, to);
        }
      }
    }
  });
  return grad_input;
}

// Runs the phases of the input gradient of s (with a bias: conv_transpose2d)
// that some tap reaches, each a stride-1 convolution of grad_output, into
// their strided slices of grad_input: in one pass on the dense kernels
// (dense_phases_in_bands) where those run every phase and every position is
// reached, otherwise each into a result of its own, then copied; positions
// no tap reaches get the bias.
// Against one convolution of grad_output spread out by the stride with
// zeros, which multiplied stride_h * stride_w times as many products: AVX2,
// input gradients against torch (medians of alternating calls), NCHW /
// channels_last: 3x3/2 128 @56 0.43x / 0.27x -> 1.16x / 0.80x, 1x1/2
// 256 -> 512 @56 0.63x / 0.23x -> 1.85x / 1.14x, the stem's 7x7/2 into 3
// channels 0.25x / 0.22x -> 0.89x / 0.84x.
template <typename T>
at::Tensor input_gradient_by_phases(const KernelsFor<T>& k, const Conv2dShape& s, const at::Tensor& grad_output,
                                    const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                    at::MemoryFormat format) {
  const std::vector<InputPhase> rows = input_phases(s.h), cols = input_phases(s.w);
  const auto convolve_phase = [&](const InputPhase& h, const InputPhase& w) {
    const at::Tensor taps =
        weight.slice(2, h.first_tap, s.h.kernel, h.tap_step).slice(3, w.first_tap, s.w.kernel, w.tap_step);
    return convolve<T>(k, ConvNhwc::input_gradient(s, h, w), grad_output, h.pad(), w.pad(), taps, bias, true,
                       format);
  };
  if (rows.size() == 1 && cols.size() == 1 && rows[0].positions == s.h.in_size &&
      cols[0].positions == s.w.in_size) {
    return convolve_phase(rows[0], cols[0]);
  }
  const bool every_position = reached_positions(rows) == s.h.in_size && reached_positions(cols) == s.w.in_size;
  if (every_position) {
    if (std::optional<at::Tensor> grad_input =
            dense_phases_in_bands<T>(k, s, rows, cols, grad_output, weight, bias, format)) {
      return *grad_input;
    }
  }
  at::Tensor grad_input =
      at::empty({s.batch, s.in_channels, s.h.in_size, s.w.in_size}, weight.options().memory_format(format));
  if (!every_position) {
    if (bias) {
      grad_input.copy_(bias->view({1, -1, 1, 1}).expand_as(grad_input));
    } else {
      grad_input.zero_();
    }
  }
  for (const InputPhase& h : rows) {
    for (const InputPhase& w : cols) {
      copy_into<T>(k, grad_input.slice(2, h.phase, s.h.in_size, s.h.stride).slice(3, w.phase, s.w.in_size, s.w.stride),
                   convolve_phase(h, w));
    }
  }
  return grad_input;
}

// The input gradient of s, which is also conv_transpose2d (with a bias).
// grad_output may have fewer rows or columns than s's output: the missing ones
// read as zeros.
template <typename T>
at::Tensor conv2d_backward_input_simd(const Conv2dShape& s, const at::Tensor& grad_output,
                                      const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias,
                                      at::MemoryFormat format) {
  const KernelsFor<T>& k = active_isa().get<T>();
  const ConvNhwc c = ConvNhwc::forward(s);
  if (runs_lane_groups<T>(k, c, grad_output) && s.h.stride == 1 && s.w.stride == 1) {
    // No zeros to spread in: the forward kernel, its padding (which may be
    // negative: a crop) skipped, by the flipped weights.
    const InputPhase h = input_phases(s.h).front(), w = input_phases(s.w).front();
    const ConvNhwc unpadded = ConvNhwc::input_gradient(s, h, w).unpadded(grad_output.size(2), grad_output.size(3),
                                                                         h.pad(), w.pad());
    return lane_group_conv<T>(k, unpadded, grad_output, weight, bias, true, format);
  }
  if (c.depthwise() && s.h.kernel * s.w.kernel <= kMaxDepthwiseTaps) {
    return depthwise_backward_input<T>(k, s, grad_output, weight, bias, format);
  }
  return input_gradient_by_phases<T>(k, s, grad_output, weight, bias, format);
}

// Writes the lane-group weight-gradient sums of `count` channels from `first`
// (a whole number of groups of `width`) into gw: sum(i) is element i of the
// tile's sums, [tap][part][lane] (see WeightGradArgs), lanes from `first`.
template <typename T, typename Sum>
void write_lane_group_weight_grad(Nchw<T>& gw, int64_t width, int64_t first, int64_t count, int64_t lanes,
                                  int64_t kernel_h, int64_t kernel_w, const Sum& sum) {
  for (int64_t tap = 0; tap < kernel_h * kernel_w; ++tap) {
    for (int64_t part = 0; part < width; ++part) {
      for (int64_t i = 0; i < count; ++i) {
        const int64_t channel = first + i, ic = channel % width;
        gw(channel - ic + (ic + part) % width, ic, tap / kernel_w, tap % kernel_w) =
            static_cast<T>(sum((tap * width + part) * lanes + i));
      }
    }
  }
}

// The weight gradient of NCHW depthwise convolution s with output rows
// shorter than a vector (see depthwise_tiles): per vector of channels, image
// by image, the channels' input and grad_output planes are transposed into
// NHWC tiles in cache for the NHWC kernel, instead of both whole tensors
// transposed. A vector's sums are one thread's, added image by image in
// order: deterministic for any thread count.
template <typename T>
void depthwise_tiles_weight_grad(const KernelsFor<T>& k, const Conv2dShape& s, const at::Tensor& grad_output,
                                 const at::Tensor& input, const at::Tensor& grad_weight) {
  const at::Tensor x = input.contiguous(), gy = grad_output.contiguous();
  const int64_t lanes = k.lanes, channels = s.in_channels, width = s.in_per_group();
  const int64_t taps = s.h.kernel * s.w.kernel;
  const int64_t in_plane = s.h.in_size * s.w.in_size, out_plane = s.h.out_size * s.w.out_size;
  // Pixels per call: few enough that partial sums stay short (FoldedSums).
  constexpr int64_t kChunk = 256;
  Nchw<T> gw = write_view<T>(grad_weight);
  parallel_ranges(ceil_div(channels, lanes), s.batch * out_plane * taps * lanes, [&](int64_t begin, int64_t end) {
    std::vector<T> tile_x(in_plane * lanes), tile_g(out_plane * lanes);
    for (int64_t vector = begin; vector < end; ++vector) {
      const int64_t first = vector * lanes, count = std::min(lanes, channels - first);
      FoldedSums<T> sums(taps * width * lanes);
      for (int64_t n = 0; n < s.batch; ++n) {
        const int64_t first_plane = n * channels + first;
        k.transpose(x.const_data_ptr<T>() + first_plane * in_plane, in_plane, tile_x.data(), lanes, count,
                    in_plane);
        k.transpose(gy.const_data_ptr<T>() + first_plane * out_plane, out_plane, tile_g.data(), lanes, count,
                    out_plane);
        for (int64_t p0 = 0; p0 < out_plane; p0 += kChunk) {
          const int64_t p1 = std::min(out_plane, p0 + kChunk);
          k.depthwise_weight_grad({tile_x.data(), in_plane * lanes, s.w.in_size * lanes, lanes, s.h.stride,
                                   s.w.stride, tile_g.data(), lanes, s.h.out_size, s.w.out_size, p0, p1,
                                   sums.partial(), s.h.kernel, s.w.kernel, s.h.dilation, s.w.dilation,
                                   s.h.in_size, s.w.in_size, s.h.pad, s.w.pad, width});
          sums.added(p1 - p0);
        }
      }
      write_lane_group_weight_grad(gw, width, first, count, lanes, s.h.kernel, s.w.kernel,
                                   [&](int64_t i) { return sums.total(i); });
    }
  });
}

// A thread's NHWC copy of the NCHW channels its weight-gradient tiles read on
// one side, one chunk of pixels at a time, in panels of a tile's channels
// ([panel][pixel][channel], zeros past a group's channels), held from the
// first pixel of the chunk's first row (its origin) so that every row it
// holds starts inside the buffer. A tile reads its panel's pixels one after
// the other, a line or less apart, where in one NHWC copy of the thread's
// channels they lay a row of them apart (512 bytes on the 1x1 layer 256 ->
// 64): that layer's NCHW weight gradient 0.83-0.93x -> 1.01-1.32x torch (two
// sets of alternating processes).
template <typename T>
class PanelChunk {
 public:
  // Panels [first, last) of a tensor whose groups of group_channels channels
  // are cut into panels of `width` channels (a group's last panel may hold
  // fewer).
  PanelChunk(int64_t first, int64_t last, int64_t width, int64_t group_channels, int64_t max_pixels)
      : first_(first), panels_(std::max<int64_t>(0, last - first)), width_(width),
        group_channels_(group_channels), panel_size_(max_pixels * width), buffer_(panels_ * panel_size_) {}

  // Pixels [p0, p1) of `channels` planes of `plane` pixels, from origin.
  void load(const KernelsFor<T>& k, const T* planes, int64_t channels, int64_t plane, int64_t p0, int64_t p1,
            int64_t origin) {
    for (int64_t i = 0; i < panels_; ++i) {
      const auto [c0, count] = channels_of(i);
      T* out = buffer_.data() + i * panel_size_ + (p0 - origin) * width_;
      for (int64_t p = p0; p < p1;) {  // image by image
        const int64_t n = p / plane, q = p % plane, run = std::min(p1 - p, plane - q);
        k.transpose(planes + (n * channels + c0) * plane + q, plane, out + (p - p0) * width_, width_, count, run);
        p += run;
      }
    }
  }

  // Pixels [p0, p1) of NHWC pixels of `channels` channels, from origin.
  void load_pixels(const T* pixels, int64_t channels, int64_t p0, int64_t p1, int64_t origin) {
    for (int64_t i = 0; i < panels_; ++i) {
      const auto [c0, count] = channels_of(i);
      const T* in = pixels + p0 * channels + c0;
      T* out = buffer_.data() + i * panel_size_ + (p0 - origin) * width_;
      for (int64_t p = p0; p < p1; ++p, in += channels, out += width_) {
        for (int64_t c = 0; c < count; ++c) {  // a few values: a loop, not a call to memmove
          out[c] = in[c];
        }
      }
    }
  }

  const T* panel(int64_t i) const { return buffer_.data() + (i - first_) * panel_size_; }
  int64_t width() const { return width_; }  // elements between pixels

 private:
  // Panel i's first channel in the tensor, and how many it holds.
  std::pair<int64_t, int64_t> channels_of(int64_t i) const {
    const int64_t per_group = ceil_div(group_channels_, width_);
    const int64_t group = (first_ + i) / per_group;
    const int64_t c0 = group * group_channels_ + (first_ + i) % per_group * width_;
    return {c0, std::min(width_, (group + 1) * group_channels_ - c0)};
  }

  int64_t first_, panels_, width_, group_channels_, panel_size_;
  std::vector<T> buffer_;
};

// The weight gradient in tiles of (tap, output channels, input channels) of
// one group (lane groups: of one vector of channels), each owned by one thread
// and summed over the output pixels chunk by chunk in a fixed order:
// deterministic for any thread count, and each chunk of grad_output and input
// stays in cache while every tile of the thread passes over it. The lanes hold
// whichever side of the group has more channels.
template <typename T>
void conv2d_backward_weight_simd(const Conv2dShape& s, const at::Tensor& grad_output,
                                 const at::Tensor& input, const at::Tensor& grad_weight,
                                 at::MemoryFormat format) {
  if (const std::optional<PixelsRead> read = strided_pointwise(s, input, format)) {
    return conv2d_backward_weight_simd<T>(read->shape, grad_output, read->input, grad_weight, format);
  }
  const KernelsFor<T>& k = active_isa().get<T>();
  const ConvNhwc c = ConvNhwc::forward(s);
  const bool lane_groups = use_lane_groups(c, k.lanes);
  if (!lane_groups && use_planar(c, k)) {
    return conv2d_backward_weight_planar<T>(k, s, grad_output, input, grad_weight);
  }
  if (use_depthwise_planes(c, k.lanes, format)) {
    return depthwise_planes_weight_grad<T>(k, c.unpadded(s.h.in_size, s.w.in_size, s.h.pad, s.w.pad),
                                           grad_output, input, grad_weight);
  }
  if (lane_groups && format == at::MemoryFormat::Contiguous) {
    return depthwise_tiles_weight_grad<T>(k, s, grad_output, input, grad_weight);
  }
  const int64_t width = lane_groups ? c.lane_group_width(k.lanes) : 1;
  const bool by_output = !lane_groups && s.in_per_group() < s.out_per_group();
  // Channels per tile on each side, and the kernel. The narrow shape leaves no
  // lanes empty on a vector side of at most one vector (LeNet's 16 output
  // channels: 2x faster), and measured faster on 1x1 layers too where its
  // vector is a cache line (AVX-512, 256 -> 64: 3.2-3.3 against 3.6-4.1 ms);
  // where it is half a line (AVX2), each pixel's vector load takes a line of
  // its own: the wide shape there, 256 -> 64 @56 0.53-0.72x torch -> 0.72-0.91x
  // (both layouts), 64 -> 256 channels_last 11.8-13.3 -> 10.4-11.1 ms. The
  // wide shape on 3x3 layers and the stem. The short shape where both sides
  // are narrow: ResNeXt's groups of 8 on AVX2, whose narrow tiles' 12
  // broadcasts spent 4 on no channel; 3x3 8 x 256 g32 NCHW, alternating
  // processes: @28 0.66-0.82x torch -> 0.71-0.95x, @56 0.76-1.00x ->
  // 0.90-1.19x (channels_last within noise).
  const int64_t vector_side = by_output ? s.out_per_group() : s.in_per_group();
  const int64_t broadcast_side = by_output ? s.in_per_group() : s.out_per_group();
  const bool line_vectors = k.lanes * static_cast<int64_t>(sizeof(T)) >= 64;
  const WeightGradTile<T>& shape =
      vector_side <= k.lanes && broadcast_side <= k.weight_grad_short.broadcast ? k.weight_grad_short
      : vector_side <= k.lanes || (s.h.kernel * s.w.kernel == 1 && line_vectors) ? k.weight_grad_narrow
                                                                                 : k.weight_grad_wide;
  const int64_t tile_oc = lane_groups ? 1 : by_output ? shape.vector : shape.broadcast;
  const int64_t tile_ic = lane_groups ? k.lanes : by_output ? shape.broadcast : shape.vector;
  const auto kernel = lane_groups ? k.depthwise_weight_grad : by_output ? shape.by_output : shape.by_input;
  // Fewer input channels than a tile broadcasts (the stem's 3): the tiles run
  // over a row of the window instead, taps and channels together. At dilation
  // 1 the (kw, ic) values under a row of taps lie side by side in an NHWC
  // input, so no broadcast is spent on channels the layer lacks.
  const bool row_tiles = by_output && s.groups == 1 && s.w.dilation == 1 && s.in_per_group() < tile_ic;
  const int64_t in_c = s.in_channels, out_c = s.out_channels;
  // Tiles: [group][tap][vector-side tile][broadcast-side tile]; lane groups:
  // [channel vector], all taps in one tile (one group of all channels, sums
  // [tap][part][lane]); row tiles: a tap is a kernel row, and the input side's
  // tiles run over the row's (kw, ic) values.
  const int64_t groups = lane_groups ? 1 : s.groups;
  const int64_t group_in = lane_groups ? in_c : row_tiles ? s.w.kernel * in_c : s.in_per_group();
  const int64_t group_out = lane_groups ? 1 : s.out_per_group();
  // A group's last tile reads whole tiles, past its channels when they are
  // not a whole number of tiles: only then do the buffers need slack, and a
  // channels_last tensor without padding is read in place, not copied.
  const auto slack = [](int64_t channels, int64_t tile) { return channels % tile == 0 ? 0 : tile; };
  const int64_t input_slack = slack(group_in, tile_ic);
  const int64_t grad_slack = lane_groups ? input_slack : slack(group_out, tile_oc);
  // Dense tiles read a padded input; lane-group ones skip the padding.
  const int64_t buffer_h = lane_groups ? s.h.in_size : c.in_h, buffer_w = lane_groups ? s.w.in_size : c.in_w;
  const int64_t oc_tiles = ceil_div(group_out, tile_oc), ic_tiles = ceil_div(group_in, tile_ic);
  // Broadcast-side tiles fastest: a thread's consecutive tiles share their
  // vector side's slice of the chunk (the wider one, in L1) and stream the
  // narrower broadcast side.
  const int64_t broadcast_tiles = by_output ? ic_tiles : oc_tiles;
  const int64_t kernel_taps = s.h.kernel * s.w.kernel;
  const int64_t tile_kw = row_tiles ? 1 : s.w.kernel;  // kernel columns a tap tile tells apart
  const int64_t taps = lane_groups ? 1 : s.h.kernel * tile_kw;  // tap tiles
  const int64_t tiles = groups * taps * oc_tiles * ic_tiles;
  const int64_t pixels = s.batch * s.h.out_size * s.w.out_size;
  const int64_t tile_size = lane_groups ? kernel_taps * width * tile_ic : tile_oc * tile_ic;
  // Pixels per chunk: the chunk's input and grad_output pixels (about 1 MiB)
  // stay in L2 while the thread's tiles pass over them. Measured against
  // chunks of 256 KiB that counted an input row per kernel row: 512 @7
  // 6.7-6.8 -> 5.4-5.5 ms, 256 @14 5.5-5.6 -> 4.7-4.9, depthwise 144 @56
  // 0.86-0.98 -> 0.65-0.72; chunks of 1024 pixels were slower again.
  const int64_t pixel_bytes = (in_c + out_c) * static_cast<int64_t>(sizeof(T));
  const int64_t chunk_pixels = std::clamp<int64_t>((int64_t{1} << 20) / pixel_bytes, 16, 512);
  // An NCHW grad_weight keeps a kernel's taps side by side, so a tile, which
  // sums one tap, would write every 9th element (3x3), and each cache line
  // would be fetched once per tap, by tiles far apart in time, in both
  // threads. The tiles write [tap][oc][ic] rows instead (staged), each row
  // copied whole, which copy_into's transposes turn into [oc][ic][tap] at
  // the end. In one process, alternating the two (medians of 12 rounds):
  // 3x3 128 @28 11.5 -> 10.9 ms, 256 @14 11.9 -> 11.5, 512 @7 14.3 -> 12.3.
  const bool staged = !lane_groups && !row_tiles && kernel_taps > 1 && grad_weight.is_contiguous();
  const at::Tensor stage =
      staged ? at::empty({s.h.kernel, s.w.kernel, out_c, s.in_per_group()}, grad_weight.options()).permute({2, 3, 0, 1})
             : at::Tensor();
  Nchw<T> gw = write_view<T>(staged ? stage : grad_weight);
  // A thread's tiles go in blocks whose partial sums (256 KB) stay in L2 while
  // the chunks pass: a deep layer's many tiles (512 @7: 4.7 MB of sums per
  // thread) would otherwise load and store every sum from memory per chunk.
  const int64_t tiles_per_block = std::max<int64_t>(1, (int64_t{256} << 10) / (tile_size * sizeof(T)));
  // An NCHW grad_output whose tiles fit in a few blocks: each thread
  // transposes a chunk's pixels of the channels its tiles read into panels in
  // cache (PanelChunk), instead of the whole tensor through memory first. In
  // one process, alternating the two: the stem 14.2-14.6 -> 12.2-12.8 ms, 1x1
  // 256 -> 64 7.8-8.6 -> 7.0-7.5, LeNet conv2 0.94-0.97 -> 0.88-0.91, 64 @56
  // 10.7-10.8 -> 10.2-10.4. Each block of tiles loads a chunk's panels
  // again: worth it up to kPanelBlocks blocks' worth of tiles (alternating
  // processes, against no panels: 3x3 weight gradient NCHW 256 @14 0.80-0.87x
  // torch -> 0.87-0.95x, 128 @28 0.93-1.07x -> 0.95-1.13x; channels_last
  // 256 @14 0.96-1.08x -> 1.06-1.10x, 128 @28 1.07-1.22x -> 1.26-1.32x; at
  // 512 @7, 36 blocks, channels_last 1.10-1.17x -> 1.04-1.12x).
  // A channels_last grad_output whose tiles broadcast a few of each pixel's
  // channels is copied into the panels too, pixel by pixel: its lines no
  // longer crowd the input's out of L1. Alternating processes: channels_last
  // weight gradient of 1x1 256 -> 64 @56 0.71-0.73x torch -> 0.79-0.83x,
  // 3x3 64 @56 1.42-1.64x -> 1.56-2.06x. Where grad_output is the vector
  // side, its pixels' lines are read whole anyway, and the copy only cost
  // (LeNet conv2 1.33-1.37x -> 1.11-1.26x). A channels_last input is read in
  // place: copied into panels, the 1x1 layer's tiles took 19% of the samples
  // instead of 24% (perf), but the copy, waiting on memory, took that back.
  constexpr int64_t kPanelBlocks = 12;
  const bool grad_pixels = !by_output && !grad_output.is_contiguous() &&
                           grad_output.is_contiguous(at::MemoryFormat::ChannelsLast);
  const bool grad_chunks = !lane_groups && (grad_output.is_contiguous() || grad_pixels) &&
                           tiles <= kPanelBlocks * tiles_per_block;
  const at::Tensor grad = grad_chunks ? grad_output
                                      : padded_buffer<T>(k, grad_output, true, s.h.out_size, s.w.out_size, 0, 0,
                                                         grad_slack);
  const T* gy = grad.const_data_ptr<T>();
  // Likewise an NCHW input whose pixels are the output's (1x1, stride 1, no
  // padding, and as many pixels: a window that fits once has stride 1 whatever
  // the input's size, see stepping_stride): ResNet's 1x1 layers. In one
  // process, alternating the two: 1x1 256 -> 64 @56 6.62-6.68 -> 5.06 ms,
  // 64 -> 256 5.75 -> 5.12, 512 -> 128 @28 5.12 -> 4.53.
  const bool input_chunks = grad_chunks && input.is_contiguous() && s.h.kernel == 1 && s.w.kernel == 1 &&
                            s.h.stride == 1 && s.w.stride == 1 && s.h.pad == 0 && s.w.pad == 0 &&
                            s.h.in_size == s.h.out_size && s.w.in_size == s.w.out_size;
  // The NHWC buffer the tiles read, or, in chunks, the NCHW input itself.
  const std::optional<at::Tensor> group_images =
      lane_groups || input_chunks ? std::nullopt : groups_as_images(input, s.groups);
  const at::Tensor input_buffer =
      input_chunks ? input
                   : padded_buffer<T>(k, group_images.value_or(input), true, buffer_h, buffer_w,
                                      lane_groups ? 0 : s.h.pad, lane_groups ? 0 : s.w.pad, input_slack);
  const T* x = input_buffer.const_data_ptr<T>();
  // Elements between the buffer's images, groups and pixels.
  const int64_t buffer_image = buffer_h * buffer_w * in_c, buffer_pixel = group_images ? s.in_per_group() : in_c;
  const int64_t buffer_group = group_images ? buffer_image / s.groups : s.in_per_group();
  const int64_t out_plane = s.h.out_size * s.w.out_size;
  const auto tile_of = [&](int64_t t) {
    const int64_t tap = t / (ic_tiles * oc_tiles) % taps;
    const int64_t vector_tile = t % (ic_tiles * oc_tiles) / broadcast_tiles;
    const int64_t broadcast_tile = t % broadcast_tiles;
    struct {
      int64_t g, kh, kw, first_oc, first_ic;
    } tile{t / (ic_tiles * oc_tiles * taps), tap / tile_kw, tap % tile_kw,
           (by_output ? vector_tile : broadcast_tile) * tile_oc,
           (by_output ? broadcast_tile : vector_tile) * tile_ic};
    return tile;
  };
  const auto in_first_of = [&](int64_t t) {
    const auto tile = tile_of(t);
    return tile.g * group_in + tile.first_ic;
  };
  const auto out_first_of = [&](int64_t t) {
    const auto tile = tile_of(t);
    return lane_groups ? in_first_of(t) : tile.g * group_out + tile.first_oc;
  };
  // A tile's panel in a chunk of each side.
  const auto in_panel_of = [&](int64_t t) {
    const auto tile = tile_of(t);
    return tile.g * ic_tiles + tile.first_ic / tile_ic;
  };
  const auto out_panel_of = [&](int64_t t) {
    const auto tile = tile_of(t);
    return tile.g * oc_tiles + tile.first_oc / tile_oc;
  };
  at::parallel_for(0, tiles, 1, [&](int64_t thread_begin, int64_t thread_end) {
    // The panels that the thread's tiles read on each side, chunked.
    const auto chunk_of = [&](bool chunked, const auto& panel_of, int64_t tile_channels, int64_t group_channels) {
      int64_t first = 0, last = 0;
      for (int64_t t = thread_begin; chunked && t < thread_end; ++t) {
        first = t == thread_begin ? panel_of(t) : std::min(first, panel_of(t));
        last = std::max(last, panel_of(t) + 1);
      }
      return PanelChunk<T>(first, last, tile_channels, group_channels, chunked ? chunk_pixels + s.w.out_size : 0);
    };
    PanelChunk<T> grad_chunk = chunk_of(grad_chunks, out_panel_of, tile_oc, group_out);
    PanelChunk<T> input_chunk = chunk_of(input_chunks, in_panel_of, tile_ic, group_in);
    for (int64_t begin = thread_begin; begin < thread_end; begin += tiles_per_block) {
      const int64_t end = std::min(thread_end, begin + tiles_per_block);
      FoldedSums<T> sums((end - begin) * tile_size);
      for (int64_t p0 = 0; p0 < pixels; p0 += chunk_pixels) {
        const int64_t p1 = std::min(pixels, p0 + chunk_pixels), origin = p0 - p0 % s.w.out_size;
        if (grad_chunks && grad_pixels) {
          grad_chunk.load_pixels(gy, out_c, p0, p1, origin);
        } else if (grad_chunks) {
          grad_chunk.load(k, gy, out_c, out_plane, p0, p1, origin);
        }
        if (input_chunks) {
          input_chunk.load(k, x, in_c, out_plane, p0, p1, origin);
        }
        for (int64_t t = begin; t < end; ++t) {
          const auto tile = tile_of(t);
          const int64_t out_first = out_first_of(t);
          const int64_t input_pixel = input_chunks ? input_chunk.width() : buffer_pixel;
          WeightGradArgs<T> a{
              input_chunks ? input_chunk.panel(in_panel_of(t))
                           : x + (tile.kh * s.h.dilation * buffer_w + tile.kw * s.w.dilation) * buffer_pixel +
                                 tile.g * buffer_group + tile.first_ic,
              input_chunks ? buffer_h * buffer_w * input_pixel : buffer_image, buffer_w * input_pixel, input_pixel,
              s.h.stride, s.w.stride,
              grad_chunks ? grad_chunk.panel(out_panel_of(t)) : gy + out_first,
              grad_chunks ? grad_chunk.width() : out_c, s.h.out_size, s.w.out_size,
              p0, p1, sums.partial() + (t - begin) * tile_size,
              s.h.kernel, s.w.kernel, s.h.dilation, s.w.dilation,
              s.h.in_size, s.w.in_size, s.h.pad, s.w.pad, width, grad_chunks ? origin : 0,
              input_chunks ? origin : 0};
          kernel(a);
        }
        sums.added(chunk_pixels);
      }
      for (int64_t t = begin; t < end; ++t) {
        const auto tile = tile_of(t);
        const auto sum = [&](int64_t i) { return sums.total((t - begin) * tile_size + i); };
        const int64_t oc_count = std::min(tile_oc, group_out - tile.first_oc);
        const int64_t ic_count = std::min(tile_ic, group_in - tile.first_ic);
        if (lane_groups) {
          write_lane_group_weight_grad(gw, width, tile.first_ic, ic_count, tile_ic, s.h.kernel, s.w.kernel, sum);
          continue;
        }
        // A row of sums is a row of grad_weight (staged, channels_last or
        // 1x1), copied whole: channels_last 3x3 256 @14 10.7 -> 9.9 ms,
        // 512 @7 11.9 -> 11.2, against element by element.
        if (!by_output && !row_tiles && gw.stride_c == 1) {
          for (int64_t j = 0; j < oc_count; ++j) {
            sums.write((t - begin) * tile_size + j * tile_ic, ic_count,
                       &gw(tile.g * group_out + tile.first_oc + j, tile.first_ic, tile.kh, tile.kw));
          }
          continue;
        }
        for (int64_t j = 0; j < oc_count; ++j) {
          for (int64_t i = 0; i < ic_count; ++i) {
            // sums is [broadcast side][vector side].
            const T value = static_cast<T>(by_output ? sum(i * tile_oc + j) : sum(j * tile_ic + i));
            const int64_t row_value = tile.first_ic + i;  // row tiles: kw * in_c + ic
            gw(tile.g * group_out + tile.first_oc + j, row_tiles ? row_value % in_c : row_value, tile.kh,
               row_tiles ? row_value / in_c : tile.kw) = value;
          }
        }
      }
    }
  });
  if (staged) {
    copy_into<T>(k, grad_weight, stage);
  }
}

at::Tensor conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "convext.conv2d";
  const Conv2dShape s = conv2d_check(input, weight, bias, stride, padding, dilation, groups, op);
  if (is_half_type(input)) {
    return in_float32(input.scalar_type(), conv2d_cpu, input, weight, bias, stride, padding,
                      dilation, groups);
  }
  const at::MemoryFormat format = conv2d_memory_format(input, weight);
  return AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    return conv2d_forward_simd<scalar_t>(s, input, weight, bias, format);
  });
}

at::Tensor conv2d_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& weight, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups) {
  constexpr const char* op = "convext.conv2d_backward_input";
  const Conv2dShape s = conv2d_backward_check(grad_output, input, weight, stride, padding,
                                              dilation, groups, op);
  if (is_half_type(input)) {
    return in_float32(input.scalar_type(), conv2d_backward_input_cpu, grad_output, input, weight,
                      stride, padding, dilation, groups);
  }
  const at::MemoryFormat format = conv2d_memory_format(input, weight);
  return AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    return conv2d_backward_input_simd<scalar_t>(s, grad_output, weight, std::nullopt, format);
  });
}

at::Tensor conv2d_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                      const at::Tensor& weight, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups) {
  constexpr const char* op = "convext.conv2d_backward_weight";
  const Conv2dShape s = conv2d_backward_check(grad_output, input, weight, stride, padding,
                                              dilation, groups, op);
  if (is_half_type(input)) {
    return in_float32(input.scalar_type(), conv2d_backward_weight_cpu, grad_output, input, weight,
                      stride, padding, dilation, groups);
  }
  const at::MemoryFormat format = conv2d_memory_format(input, weight);
  at::Tensor grad_weight = empty_like_layout(weight.sizes(), weight, format, weight.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    conv2d_backward_weight_simd<scalar_t>(s, grad_output, input, grad_weight, format);
  });
  return grad_weight;
}

at::Tensor conv2d_backward_bias_cpu(const at::Tensor& grad_output) {
  constexpr const char* op = "convext.conv2d_backward_bias";
  check_rank(grad_output, 4, op, "grad_output", "(N, C, H, W)");
  check_supported_dtype(grad_output, op, "grad_output");
  if (is_half_type(grad_output)) {
    return in_float32(grad_output.scalar_type(), conv2d_backward_bias_cpu, grad_output);
  }
  at::Tensor grad_bias = at::empty({grad_output.size(1)}, grad_output.options());
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), op, [&] {
    conv2d_backward_bias_simd<scalar_t>(grad_output, grad_bias.mutable_data_ptr<scalar_t>());
  });
  return grad_bias;
}

at::Tensor conv_transpose2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef output_padding,
                                int64_t groups, at::IntArrayRef dilation) {
  constexpr const char* op = "convext.conv_transpose2d";
  const Conv2dShape s = conv_transpose2d_check(input, weight, bias, stride, padding,
                                               output_padding, groups, dilation, op);
  if (is_half_type(input)) {
    return in_float32(input.scalar_type(), conv_transpose2d_cpu, input, weight, bias, stride,
                      padding, output_padding, groups, dilation);
  }
  const at::MemoryFormat format = conv2d_memory_format(input, weight);
  if (s.h.in_size == 0 || s.w.in_size == 0) {  // padding crops the whole output, as torch allows
    return empty_like_layout({s.batch, s.in_channels, s.h.in_size, s.w.in_size}, input, format,
                             input.scalar_type());
  }
  return AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), op, [&] {
    return conv2d_backward_input_simd<scalar_t>(s, input, weight, bias, format);
  });
}

}  // namespace
}  // namespace convext::cpu

TORCH_LIBRARY_IMPL(convext, CPU, m) {
  m.impl("conv2d", &convext::cpu::conv2d_cpu);
  m.impl("conv2d_backward_input", &convext::cpu::conv2d_backward_input_cpu);
  m.impl("conv2d_backward_weight", &convext::cpu::conv2d_backward_weight_cpu);
  m.impl("conv2d_backward_bias", &convext::cpu::conv2d_backward_bias_cpu);
  m.impl("conv_transpose2d", &convext::cpu::conv_transpose2d_cpu);
}
