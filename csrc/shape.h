#pragma once
// Shape math shared by every op and backend: output sizes and which taps of a
// sliding window land inside the input. Plain C++ so that CUDA code can use it.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#if defined(__CUDACC__)
#define CONVEXT_HOST_DEVICE __host__ __device__
#else
#define CONVEXT_HOST_DEVICE
#endif

namespace convext {

// Division rounding toward -infinity, as torch's pooling shape rule uses.
inline int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Requires ceil_div's b > 0 and a >= 0.
CONVEXT_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Size: int64_t, or c10::SymInt for the symbolic sizes torch.compile traces
// the autograd kernels with.

// Extent of a dilated kernel: the span of input it covers.
template <typename Size>
Size dilated_extent(const Size& kernel, int64_t dilation) {
  return dilation * (kernel - 1) + 1;
}

template <typename Size>
Size conv_output_size(const Size& in, const Size& kernel, int64_t stride, int64_t pad, int64_t dilation) {
  return (in + 2 * pad - dilated_extent(kernel, dilation)) / stride + 1;
}

// torch's pooling rule: ceil_mode rounds up, but the last window must still
// start inside the input or its left padding.
inline int64_t pool_output_size(int64_t in, int64_t kernel, int64_t stride,
                                 int64_t pad, int64_t dilation, bool ceil_mode) {
  int64_t out = floor_div(in + 2 * pad - dilated_extent(kernel, dilation) +
                              (ceil_mode ? stride - 1 : 0),
                          stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) {
    --out;
  }
  return out;
}

// A window that fits once along an axis never steps, whatever its stride: the
// stride is then taken as 1, so that no kernel multiplies a stride longer than
// the input (up to 2^61) by a lane or channel count.
inline int64_t stepping_stride(int64_t stride, int64_t out_size) {
  return out_size > 1 ? stride : 1;
}

struct Range {
  int64_t begin, end;  // [begin, end), empty when begin >= end
};

// One spatial axis of a sliding window: output o reads input positions
// o * stride - pad + k * dilation for taps k in [0, kernel).
struct WindowAxis {
  int64_t in_size, out_size, kernel, stride, pad, dilation;

  CONVEXT_HOST_DEVICE int64_t origin(int64_t o) const { return o * stride - pad; }

  // Taps of output o that land inside [0, in_size): the rest read padding.
  CONVEXT_HOST_DEVICE Range taps(int64_t o) const {
    const int64_t first = origin(o);
    const int64_t begin = first < 0 ? ceil_div(-first, dilation) : 0;
    const int64_t end = first < in_size
                            ? std::min(kernel, ceil_div(in_size - first, dilation))
                            : 0;
    return {begin, std::max(begin, end)};
  }

  // Outputs whose window spans input position i (padding included): the
  // outputs a backward gather visits.
  CONVEXT_HOST_DEVICE Range outputs_covering(int64_t i) const {
    const int64_t lowest = i + pad - dilation * (kernel - 1);  // the first start that still reaches i
    const int64_t begin = lowest <= 0 ? 0 : ceil_div(lowest, stride);
    const int64_t end = std::min(out_size, (i + pad) / stride + 1);
    return {begin, std::max(begin, end)};
  }
};

// The input gradient along one axis, split by phase: the positions
// i = phase + stride * j (j < positions) are reached only by the taps k with
// k * dilation = i + pad (mod stride), every tap_step-th tap from first_tap,
// and position j + 1 reads the output after the one position j reads. So a
// phase is a stride-1 correlation of grad_output by its taps, reversed, with
// no zeros spread between the outputs: a stride-s layer's input gradient
// costs the taps' products and nothing for the s*s - 1 zeros per output.
struct InputPhase {
  int64_t phase, positions;
  int64_t first_tap, tap_step, taps;
  int64_t dilation;      // outputs between the rows that successive taps read
  int64_t first_output;  // the output that position 0 reads through first_tap

  // The phase's kernel span, and the padding before grad_output's first
  // output that the correlation by the reversed taps reads.
  int64_t reach() const { return (taps - 1) * dilation; }
  int64_t pad() const { return reach() - first_output; }
};

// The phases of axis a that some tap reaches, at most min(kernel, stride):
// the other positions receive nothing.
inline std::vector<InputPhase> input_phases(const WindowAxis& a) {
  const int64_t common = std::gcd(a.stride, a.dilation), tap_step = a.stride / common;
  std::vector<InputPhase> phases;
  // Taps below tap_step fall on distinct phases; the others repeat them.
  for (int64_t first_tap = 0; first_tap < std::min(a.kernel, tap_step); ++first_tap) {
    const int64_t phase = ((first_tap * a.dilation - a.pad) % a.stride + a.stride) % a.stride;
    if (phase < a.in_size) {
      phases.push_back({phase, ceil_div(a.in_size - phase, a.stride), first_tap, tap_step,
                        ceil_div(a.kernel - first_tap, tap_step), a.dilation / common,
                        (phase + a.pad - first_tap * a.dilation) / a.stride});
    }
  }
  return phases;
}

struct Conv2dShape {
  int64_t batch, in_channels, out_channels, groups;
  WindowAxis h, w;

  CONVEXT_HOST_DEVICE int64_t in_per_group() const { return in_channels / groups; }
  CONVEXT_HOST_DEVICE int64_t out_per_group() const { return out_channels / groups; }
};

struct Pool2dShape {
  int64_t batch, channels;
  WindowAxis h, w;
};

// avg_pool2d along one axis, for output o: the input range it averages and
// this axis' factor of torch's divisor (the window clipped to the padded
// input when padding counts, else the range itself).
struct AvgAxis {
  Range range;
  int64_t divisor_factor;
};

CONVEXT_HOST_DEVICE inline AvgAxis avg_axis(const WindowAxis& a, int64_t o,
                                            bool count_include_pad) {
  const int64_t start = a.origin(o);
  const int64_t padded_end = std::min(start + a.kernel, a.in_size + a.pad);
  const Range range{std::max<int64_t>(start, 0), std::min(padded_end, a.in_size)};
  return {range, count_include_pad ? padded_end - start : range.end - range.begin};
}

}  // namespace convext
