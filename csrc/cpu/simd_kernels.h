#pragma once
// SIMD kernel templates over a vector width; included by isa_*.cpp, each of
// which compiles them for one instruction set inside its own namespace.
// Vectors are GCC/Clang vector extensions: the compiler emits the target's
// instructions (zmm on AVX-512, ymm on AVX2, xmm on baseline x86-64).
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "isa.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace CONVEXT_ISA_NAMESPACE {

using convext::cpu::ConvPixelsArgs;
using convext::cpu::DepthwiseArgs;
using convext::cpu::DepthwisePlaneArgs;
using convext::cpu::DepthwisePlaneGradArgs;
using convext::cpu::PlanarArgs;
using convext::cpu::PlanarGradArgs;
using convext::cpu::PointwiseArgs;
using convext::cpu::PoolArgs;
using convext::cpu::TapSumArgs;
using convext::cpu::WeightGradArgs;
using convext::cpu::WeightGradTile;

template <typename T, int Bytes>
struct Vec {
  typedef T type __attribute__((vector_size(Bytes)));
  static constexpr int lanes = Bytes / static_cast<int>(sizeof(T));

  static type load(const T* p) {
    type v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
  }
  static void store(T* p, type v) { __builtin_memcpy(p, &v, sizeof(v)); }
  // v's bytes to p, aligned to the vector's size, by a store past the caches
  // (x86: movnt; a plain store elsewhere). Streamed stores are ordered by fence().
  static void stream(void* p, type v) {
#if defined(__x86_64__)
    if constexpr (Bytes == 64) {
      _mm512_stream_si512(static_cast<__m512i*>(p), (__m512i)v);
    } else if constexpr (Bytes == 32) {
      _mm256_stream_si256(static_cast<__m256i*>(p), (__m256i)v);
    } else {
      _mm_stream_si128(static_cast<__m128i*>(p), (__m128i)v);
    }
#else
    __builtin_memcpy(p, &v, sizeof(v));
#endif
  }
  // v, which the compiler must now hold in a register: a value loaded once
  // for several FMAs is otherwise loaded again into each as its memory
  // operand (x86; elsewhere v as it is).
  static type in_register(type v) {
#if defined(__x86_64__)
    asm("" : "+v"(v));
#endif
    return v;
  }
  // Makes the streamed stores before it visible before any store after it.
  static void fence() {
#if defined(__x86_64__)
    _mm_sfence();
#endif
  }
  // x - 0 is x for every x (-0 included), so it folds away and x is loaded
  // straight into every lane; 0 + x is not (0 + -0 is +0): an add per call.
  static type broadcast(T x) { return x - type{}; }
  // The P elements at p in every run of P lanes ([p0, p1, p0, p1, ...]): one
  // broadcast of their P * sizeof(T) bytes (at most 8).
  template <int P>
  static type broadcast_run(const T* p) {
    if constexpr (P == 1) {
      return broadcast(*p);
    } else {
      static_assert(P * sizeof(T) == sizeof(uint64_t), "a run of P elements is broadcast as 64 bits");
      typedef uint64_t bits_vec __attribute__((vector_size(Bytes)));
      uint64_t bits;
      __builtin_memcpy(&bits, p, sizeof(bits));
      return (type)(bits + bits_vec{});
    }
  }
};

template <int Lanes>
struct IndexVec {
  typedef int64_t type __attribute__((vector_size(Lanes * 8)));
};

template <typename T, int Bytes, int Registers>
struct Kernels {
  using V = Vec<T, Bytes>;
  using vec = typename V::type;
  static constexpr int L = V::lanes;
  // Lane-wide integers of T's width (int32 for float): lane masks, and a max's
  // offset in its pooling window.
  typedef decltype(vec{} < vec{}) lane_int;
  typedef __typeof__(lane_int{}[0]) lane_elem;

  // Whether a dense block of NB vectors holds its pixels' broadcasts in
  // registers and loads the weights one vector at a time, instead of the
  // other way round: 16 registers hold 4 vectors by 3 pixels so (12
  // accumulators, 7 loads per 12 FMAs), against 2 by 6 (8 loads) or 4 by 2
  // holding the weights (8 accumulators).
  template <int NB>
  static constexpr bool holds_broadcasts() { return Registers < 32 && NB >= 4; }

  // Pixels per register block: as many accumulators as the registers hold
  // beside the block's weight vectors and one broadcast, or its broadcasts
  // and one weight vector.
  template <int NB>
  static constexpr int pixels_per_block() {
    const int fit = holds_broadcasts<NB>() ? (Registers - 1) / (NB + 1) : (Registers - NB - 2) / NB;
    return fit < 12 ? fit : 12;
  }

  // Lanes [0, count) from p (count may be past L or below 1), zeros after:
  // never reads past them.
  static vec load_first(const T* p, int64_t count) {
    T lanes[L] = {};
    for (int64_t l = 0; l < count && l < L; ++l) {
      lanes[l] = p[l];
    }
    return V::load(lanes);
  }

  // Asks for the cache lines of p[0, count), for writing (Write = 1) or
  // reading. Only elements in the range are named: no pointer is formed past
  // them (the last is named too, for a range that does not start on a line).
  template <int Write, typename U>
  static void prefetch_lines(const U* p, int64_t count) {
    constexpr int64_t kLine = convext::cpu::kCacheLineBytes / static_cast<int64_t>(sizeof(U));
    for (int64_t i = 0; i < count; i += kLine) {
      __builtin_prefetch(p + i, Write);
    }
    if (count > 0) {
      __builtin_prefetch(p + count - 1, Write);
    }
  }

  // Ahead of the loads that read p[0, count).
  template <typename U>
  static void prefetch_for_load(const U* p, int64_t count) {
    prefetch_lines<0>(p, count);
  }

  // Before the stores that will write p[0, count). A store to a line not in
  // cache waits for the line to be read first; prefetched, that read overlaps
  // the computation. Memory-bound kernels (depthwise, pooling) otherwise stall
  // on it.
  template <typename U>
  static void prefetch_for_store(const U* p, int64_t count) {
    prefetch_lines<1>(p, count);
  }

  // The first `count` elements of the N vectors v (all of them when count
  // covers them) stored at p: never writes past them.
  template <int N>
  static void store_first(T* p, const vec* v, int64_t count) {
    if (count >= N * L) {
#pragma GCC unroll 4
      for (int i = 0; i < N; ++i) {
        V::store(p + i * L, v[i]);
      }
      return;
    }
    T lanes[N * L];
#pragma GCC unroll 4
    for (int i = 0; i < N; ++i) {
      V::store(lanes + i * L, v[i]);
    }
    for (int64_t l = 0; l < count; ++l) {
      p[l] = lanes[l];
    }
  }

  // A block of P interleaved groups holds group m's output channel oc in lane
  // oc * P + m (what broadcast_run multiplies); in channel order, group m's
  // channels lie in lanes [m * L / P, (m + 1) * L / P). ToChannels: the
  // interleaved lanes of v in channel order, else the other way round.
  template <int P, bool ToChannels>
  static vec reorder_groups(vec v) {
    if constexpr (P == 1) {
      return v;
    } else {
      lane_int from;
      for (int lane = 0; lane < L; ++lane) {
        from[lane] = ToChannels ? lane % (L / P) * P + lane / (L / P) : lane % P * (L / P) + lane / P;
      }
      return __builtin_shuffle(v, from);
    }
  }

  // acc[j][i] += broadcasts[j] * vectors[i]: the outer product that the
  // pointwise and weight-gradient kernels add per input channel or pixel.
  template <int NJ, int NI>
  static void outer_product_add(vec (&acc)[NJ][NI], const T* broadcasts, const vec (&vectors)[NI]) {
#pragma GCC unroll 16
    for (int j = 0; j < NJ; ++j) {
      const vec b = V::broadcast(broadcasts[j]);
#pragma GCC unroll 4
      for (int i = 0; i < NI; ++i) {
        acc[j][i] += b * vectors[i];
      }
    }
  }

  // ---- dense convolution -----------------------------------------------
  // Output pixel (image, row, col) of a run, stepped pixel by pixel: no
  // division per pixel. `output` is its output's offset from pixel_begin's.
  struct PixelWalk {
    int64_t image, row, col, output = 0;
    int64_t row_step, image_step;  // what a new row and a new image add to `output`, past the pixel step

    PixelWalk(const ConvPixelsArgs<T>& a, int64_t pixel)
        : image(pixel / a.image_pixels), row(pixel % a.image_pixels / a.out_w), col(pixel % a.out_w),
          row_step(a.output_row - a.out_w * a.output_pixel),
          image_step(a.output_image - a.image_pixels / a.out_w * a.output_row) {}

    // The input under the window's first tap.
    const T* input(const ConvPixelsArgs<T>& a) const {
      return a.input + image * a.input_image + row * a.stride_h * a.input_row + col * a.stride_w * a.input_pixel;
    }

    void next(const ConvPixelsArgs<T>& a) {
      output += a.output_pixel;
      if (++col == a.out_w) {
        col = 0;
        output += row_step;
        if (++row * a.out_w == a.image_pixels) {
          row = 0;
          ++image;
          output += image_step;
        }
      }
    }
  };

  // Not inlined: GCC inlined every width's blocks into conv_pixels, and the
  // one-vector blocks of 12 pixels (3 output channels, 8-channel groups) ran
  // far slower there. AVX2, input gradients against torch, alternating
  // processes: the stem's channels_last 0.77x -> 1.04-1.09x, ResNeXt's 3x3/2
  // 8 x 256 g32 @56 0.70x -> 0.80x channels_last, 0.81-0.83x -> 0.88-0.98x
  // NCHW; the dense forwards within noise.
  //
  // P > 1 (ConvPixelsArgs::interleave): one vector of P groups' channels,
  // lanes interleaved, reading input pixels whose P groups' channels
  // interleave too ([ic][group]): a broadcast of an input channel's P values
  // feeds one FMA for all P groups.
  template <int NB, int RW, int P = 1>
  __attribute__((noinline)) static void conv_block(const ConvPixelsArgs<T>& a, PixelWalk& walk) {
    const T* x[RW];
    T* out[RW];
#pragma GCC unroll 16
    for (int r = 0; r < RW; ++r) {
      x[r] = walk.input(a);
      out[r] = a.output + walk.output;
      walk.next(a);
    }
    vec acc[RW][NB];
    const bool full_block = a.channels == NB * L;
#pragma GCC unroll 16
    for (int r = 0; r < RW; ++r) {
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) {
        if (a.accumulate) {
          acc[r][b] = reorder_groups<P, false>(full_block ? V::load(out[r] + b * L)
                                                          : load_first(out[r] + b * L, a.channels - b * L));
        } else {
          acc[r][b] = a.bias ? V::load(a.bias + b * L) : vec{};
        }
      }
    }
    // Where a kernel row's pixels lie side by side (undilated, whole pixels
    // summed), its (kw, ic) pairs are one run: the stem's 7 x 3 in one loop
    // of 21 (AVX2, alternating processes: its forward 0.96x torch -> 1.11x
    // channels_last, 0.70x -> 0.79x NCHW, medians; the 3x3 layers unchanged).
    const bool row_run = a.dilation_w == 1 && a.input_pixel == a.in_channels * P;
    const int64_t taps_w = row_run ? 1 : a.kernel_w, run = row_run ? a.kernel_w * a.in_channels : a.in_channels;
    const T* w = a.weight;
    for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < taps_w; ++kw) {
        const int64_t tap = kh * a.dilation_h * a.input_row + kw * a.dilation_w * a.input_pixel;
        for (int64_t ic = 0; ic < run * P; ic += P, w += NB * L) {
          if constexpr (holds_broadcasts<NB>()) {
            vec xv[RW];
#pragma GCC unroll 16
            for (int r = 0; r < RW; ++r) {
              xv[r] = V::template broadcast_run<P>(x[r] + tap + ic);
            }
#pragma GCC unroll 4
            for (int b = 0; b < NB; ++b) {
              const vec wv = V::load(w + b * L);
#pragma GCC unroll 16
              for (int r = 0; r < RW; ++r) {
                acc[r][b] += xv[r] * wv;
              }
            }
          } else {
            vec wv[NB];
#pragma GCC unroll 4
            for (int b = 0; b < NB; ++b) {
              wv[b] = V::load(w + b * L);
            }
#pragma GCC unroll 16
            for (int r = 0; r < RW; ++r) {
              const vec xv = V::template broadcast_run<P>(x[r] + tap + ic);
#pragma GCC unroll 4
              for (int b = 0; b < NB; ++b) {
                acc[r][b] += xv * wv[b];
              }
            }
          }
        }
      }
    }
    // Unrolled, like every loop over acc: one indexed by a variable puts acc
    // in memory, stored and reloaded around the FMA loop (a rolled loop here
    // cost the 1x1 256 -> 64 input gradient 5.9 against 4.8 ms, the stem's
    // forward 10.7 against 9.5).
#pragma GCC unroll 16
    for (int r = 0; r < RW; ++r) {
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) {
        acc[r][b] = reorder_groups<P, true>(acc[r][b]);
      }
      if (a.stream) {
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b) {
          V::stream(out[r] + b * L, acc[r][b]);
        }
      } else {
        store_first<NB>(out[r], acc[r], a.channels);
      }
    }
  }

  // Full register blocks, then blocks of 4 and single pixels for the rest
  // (up to two blocks of 4 after blocks of 12 or 9: a remainder of 8 had gone
  // to 4 single pixels, each loading the weights for one pixel's FMAs; with
  // rows of 28 pixels, two to a run, they took 3.8% of ResNeXt's 3x3/2 @56
  // channels_last input gradient).
  template <int NB, int P = 1>
  static void conv_pixels_blocked(const ConvPixelsArgs<T>& a) {
    constexpr int RW = pixels_per_block<NB>();
    int64_t p = a.pixel_begin;
    PixelWalk walk(a, p);
    for (; p + RW <= a.pixel_end; p += RW) {
      conv_block<NB, RW, P>(a, walk);
    }
    for (; RW > 4 && p + 4 <= a.pixel_end; p += RW > 4 ? 4 : 1) {
      conv_block<NB, (RW > 4 ? 4 : 1), P>(a, walk);
    }
    for (; p < a.pixel_end; ++p) {
      conv_block<NB, 1, P>(a, walk);
    }
    if (a.stream) {
      V::fence();
    }
  }

  // Output-channel vectors per block, at most. With 16 registers, 4 vectors
  // holding the weights leave room for 2 pixels (8 accumulators); 2 vectors
  // hold 6 pixels, 12 accumulators, which took the 3x3 layers' forward on
  // AVX2 (Zen 3, 2 threads) from 0.66-0.92x torch to 0.80-1.30x; 4 vectors
  // by 3 pixels holding the broadcasts (holds_broadcasts), alternating
  // processes against 2 by 6: the stem's forward 1.07-1.09x -> 1.18-1.28x
  // channels_last, 0.78-0.79x -> 0.88-0.94x NCHW; 1x1 256 -> 64 @56
  // forward 0.87-0.89x -> 0.96-1.04x, input gradient 0.83-0.85x ->
  // 0.96-1.00x; 3x3 64 @56 forward 0.78-0.82x -> 0.85-0.92x; 512 @7 forward
  // 1.03-1.20x -> 0.98-1.01x channels_last, 1.16-1.35x -> 1.07-1.27x NCHW.
  static constexpr int kConvVectors = 4;

  template <int NB = kConvVectors>
  static void conv_pixels(const ConvPixelsArgs<T>& a) {
    if constexpr (NB == kConvVectors && 2 * sizeof(T) == sizeof(uint64_t)) {
      if (a.interleave == 2) {  // one vector: the block's channels fill it
        return conv_pixels_blocked<1, 2>(a);
      }
    }
    if constexpr (NB > 1) {
      if (a.vectors < NB) {
        return conv_pixels<NB - 1>(a);
      }
    }
    conv_pixels_blocked<NB>(a);
  }

  // ---- pointwise convolution on NCHW planes ------------------------------
  // OB output channels by PV vectors of pixels in accumulators; per input
  // channel, PV loads of its plane and OB broadcasts of its weights.
  // With 16 registers, 6 channels by 2 vectors (12 accumulators) against 4
  // by 2: on AVX2 (Zen 3, 2 threads) 1x1 256 -> 64 @56 0.88-1.06x torch ->
  // 0.94-1.09x, 64 -> 256 0.97-1.00x -> 1.06-1.12x.
  static constexpr int kPointwiseChannels = 6;
  static constexpr int kPointwiseVectors = Registers >= 32 ? 4 : 2;

  // PV vectors of pixels from p; Partial: the last, a.pixel_end - p < L pixels.
  template <int PV, bool Partial>
  static void pointwise_block(const PointwiseArgs<T>& a, int64_t p) {
    constexpr int OB = kPointwiseChannels;
    static_assert(!Partial || PV == 1);
    vec acc[OB][PV];
#pragma GCC unroll 8
    for (int j = 0; j < OB; ++j) {
      const vec bias = a.bias ? V::broadcast(a.bias[j]) : vec{};
#pragma GCC unroll 4
      for (int v = 0; v < PV; ++v) {
        acc[j][v] = bias;
      }
    }
    const T* x = a.input + p;
    const T* w = a.weight;
    for (int64_t ic = 0; ic < a.in_channels; ++ic, x += a.input_plane, w += OB) {
      vec xv[PV];
#pragma GCC unroll 4
      for (int v = 0; v < PV; ++v) {
        xv[v] = Partial ? load_first(x, a.pixel_end - p) : V::load(x + v * L);
      }
      outer_product_add(acc, w, xv);
    }
#pragma GCC unroll 8
    for (int j = 0; j < OB; ++j) {
      if (j < a.out_channels) {
        store_first<PV>(a.output + j * a.output_plane + p, acc[j], Partial ? a.pixel_end - p : PV * L);
      }
    }
  }

  static void pointwise(const PointwiseArgs<T>& a) {
    constexpr int PV = kPointwiseVectors;
    int64_t p = a.pixel_begin;
    for (; p + PV * L <= a.pixel_end; p += PV * L) {
      pointwise_block<PV, false>(a, p);
    }
    for (; p + L <= a.pixel_end; p += L) {
      pointwise_block<1, false>(a, p);
    }
    if (p < a.pixel_end) {
      pointwise_block<1, true>(a, p);
    }
  }

  // ---- sums of shifted tap planes --------------------------------------
  // NV output vectors from the flat (channel, row, vector of the row) index
  // `first`, one accumulator each: a tap's NV adds are independent. A vector
  // is stored whole, its lanes past the row's end too, unless that reaches
  // past the call's last pixel: those lanes land on pixels that later vectors
  // store over, as the vectors go in memory order.
  static constexpr int kTapSumVectors = Registers >= 32 ? 8 : 4;

  template <int NV>
  static void tap_sum_block(const TapSumArgs<T>& a, int64_t first) {
    const int64_t per_row = (a.out_w + L - 1) / L, per_channel = a.out_h * per_row;
    const T* src[NV];
    T* dst[NV];
    vec acc[NV];
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) {
      const int64_t channel = (first + i) / per_channel, y = (first + i) % per_channel / per_row;
      const int64_t x = (first + i) % per_row * L;
      src[i] = a.planes + channel * a.taps * a.plane + y * a.row + x;
      dst[i] = a.output + (channel * a.out_h + y) * a.out_w + x;
      acc[i] = V::broadcast(a.bias ? a.bias[channel] : T(0));
    }
    for (int64_t t = 0; t < a.taps; ++t) {
      const int64_t offset = t * a.plane + a.offsets[t];
#pragma GCC unroll 8
      for (int i = 0; i < NV; ++i) {
        acc[i] += V::load(src[i] + offset);
      }
    }
    const T* const end = a.output + a.channels * a.out_h * a.out_w;
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) {
      if (end - dst[i] >= L) {
        V::store(dst[i], acc[i]);
      } else {
        store_first<1>(dst[i], &acc[i], end - dst[i]);
      }
    }
  }

  static void tap_sums(const TapSumArgs<T>& a) {
    constexpr int NV = kTapSumVectors;
    const int64_t vectors = a.channels * a.out_h * ((a.out_w + L - 1) / L);
    int64_t v = 0;
    for (; v + NV <= vectors; v += NV) {
      tap_sum_block<NV>(a, v);
    }
    for (; v < vectors; ++v) {
      tap_sum_block<1>(a, v);
    }
  }

  // Weight-gradient tile: TB channels broadcast by TV vectors of channels.
  // ByOutput == false: output channels broadcast, input channels in the lanes;
  // true (groups with fewer input than output channels): the other way round.
  // sums is [broadcast channel][vector channel]. Two shapes with the same
  // accumulators: wide (TV = 2) and narrow (one vector, twice the broadcasts),
  // which wastes no lanes on a vector side of at most L channels. With 16
  // registers, 6 broadcasts (12 accumulators) against 4: on AVX2 (Zen 3, 2
  // threads) the weight gradient of the 3x3 layers 128 @28 to 512 @7
  // 0.61-0.99x torch -> 0.71-1.27x, 64 @56 1.21-1.47x -> 1.37-1.74x.
  static constexpr int kWideBroadcasts = Registers >= 32 ? 8 : 6;
  // A third, short shape for a broadcast side of at most 8 channels too (a
  // group of 8 on AVX2): one vector by 8, the FMA latency's worth of chains
  // on two units, none of them spent on channels the layer lacks.
  static constexpr int kShortBroadcasts = 8;

  template <int TB, int TV>
  static constexpr WeightGradTile<T> weight_grad_shape() {
    return {TB, TV * L, &weight_grad_tile<false, TB, TV>, &weight_grad_tile<true, TB, TV>};
  }

  template <bool ByOutput, int TB, int TV>
  static void weight_grad_tile(const WeightGradArgs<T>& a) {
    vec acc[TB][TV];
#pragma GCC unroll 16
    for (int j = 0; j < TB; ++j) {
#pragma GCC unroll 2
      for (int i = 0; i < TV; ++i) {
        acc[j][i] = V::load(a.sums + j * TV * L + i * L);
      }
    }
    for_each_pixel(a, [&](const T* g, const T* x) {
      const T* vectors = ByOutput ? g : x;
      const T* broadcasts = ByOutput ? x : g;
      vec v[TV];
#pragma GCC unroll 2
      for (int i = 0; i < TV; ++i) {
        v[i] = V::load(vectors + i * L);
      }
      outer_product_add(acc, broadcasts, v);
    });
#pragma GCC unroll 16
    for (int j = 0; j < TB; ++j) {
#pragma GCC unroll 2
      for (int i = 0; i < TV; ++i) {
        V::store(a.sums + j * TV * L + i * L, acc[j][i]);
      }
    }
  }

  // Enough independent chains to cover the FMA latency on every FMA unit.
  static constexpr int kChains = Registers >= 32 ? 24 : 12;

  static T fma_loop(int64_t iterations) {
    vec acc[kChains];
    const vec scale = V::broadcast(T(0.999999)), shift = V::broadcast(T(1e-7));
#pragma GCC unroll 24
    for (int c = 0; c < kChains; ++c) {
      acc[c] = V::broadcast(T(c));
    }
    for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 24
      for (int c = 0; c < kChains; ++c) {
        acc[c] = acc[c] * scale + shift;
      }
    }
    T total = 0;
#pragma GCC unroll 24
    for (int c = 0; c < kChains; ++c) {
      for (int l = 0; l < L; ++l) {
        total += acc[c][l];
      }
    }
    return total;
  }

  // ---- sums -------------------------------------------------------------
  // v's lanes added in order, from lane 0.
  static T lane_sum(vec v) {
    T total = 0;
    for (int l = 0; l < L; ++l) {
      total += v[l];
    }
    return total;
  }

  // N vectors of columns summed down the rows in registers.
  template <int N>
  static void column_block_sums(const T* data, int64_t rows, int64_t width, T* sums) {
    vec acc[N];
#pragma GCC unroll 4
    for (int i = 0; i < N; ++i) {
      acc[i] = V::load(sums + i * L);
    }
    for (int64_t r = 0; r < rows; ++r, data += width) {
#pragma GCC unroll 4
      for (int i = 0; i < N; ++i) {
        acc[i] += V::load(data + i * L);
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < N; ++i) {
      V::store(sums + i * L, acc[i]);
    }
  }

  // sums[j] += the sum of data[r * width + j] over r < rows, for j < width:
  // four vectors of columns at a time, then one, then single columns.
  static void column_sums(const T* data, int64_t rows, int64_t width, T* sums) {
    int64_t j = 0;
    for (; j + 4 * L <= width; j += 4 * L) {
      column_block_sums<4>(data + j, rows, width, sums + j);
    }
    for (; j + L <= width; j += L) {
      column_block_sums<1>(data + j, rows, width, sums + j);
    }
    for (; j < width; ++j) {
      T total = sums[j];
      for (int64_t r = 0; r < rows; ++r) {
        total += data[r * width + j];
      }
      sums[j] = total;
    }
  }

  // The sum of data[0, count): four vector sums, then their lanes.
  static T sum(const T* data, int64_t count) {
    vec acc[4] = {};
    int64_t i = 0;
    for (; i + 4 * L <= count; i += 4 * L) {
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) {
        acc[v] += V::load(data + i + v * L);
      }
    }
    for (; i + L <= count; i += L) {
      acc[0] += V::load(data + i);
    }
    T total = lane_sum((acc[0] + acc[1]) + (acc[2] + acc[3]));
    for (; i < count; ++i) {
      total += data[i];
    }
    return total;
  }

  // ---- depthwise convolution -------------------------------------------
  // Output indices [lo, hi) along one axis whose tap at `offset` (k * dilation)
  // reads inside [0, in_size) of the unpadded input.
  struct Span {
    int64_t lo, hi;
  };
  static Span inside(int64_t out_size, int64_t stride, int64_t pad, int64_t offset, int64_t in_size) {
    const int64_t first = pad - offset > 0 ? (pad - offset + stride - 1) / stride : 0;
    const int64_t last = in_size - 1 + pad - offset;  // o * stride <= last
    int64_t hi = last >= 0 ? last / stride + 1 : 0;
    hi = hi < out_size ? hi : out_size;
    return {first, hi > first ? hi : first};
  }

  // The columns of [begin, end) in output row oh that lie in both spans: the
  // row's outputs that `rows` and `cols` say read inside the input ({end, end}
  // when row oh does not).
  static Span inside_part(Span rows, Span cols, int64_t oh, int64_t begin, int64_t end) {
    if (oh < rows.lo || oh >= rows.hi) {
      return {end, end};
    }
    const int64_t lo = cols.lo < begin ? begin : cols.lo < end ? cols.lo : end;
    return {lo, cols.hi > end ? end : cols.hi > lo ? cols.hi : lo};
  }

  // The vector of channels [c, c + L), the last one partial: no lane past
  // a.channels is read or written.
  template <bool Partial>
  static vec load_channels(const DepthwiseArgs<T>& a, const T* p, int64_t c) {
    return Partial ? load_first(p, a.channels - c) : V::load(p);
  }

  template <bool Partial>
  static void store_channels(const DepthwiseArgs<T>& a, T* p, int64_t c, vec v) {
    if (!Partial && a.stream) {
      V::stream(p, v);
    } else {
      store_first<1>(p, &v, Partial ? a.channels - c : L);
    }
  }

  // Groups of K channels on both sides (depthwise: K = 1), whole groups to a
  // vector. An output vector is summed in K parts: part R adds input lane
  // g * K + i times rotation R's packed weight, the weight from input i to
  // output (i - R) mod K of group g, so that its lane g * K + i holds a sum
  // for output (i - R) mod K. At the end, part R is rotated into place and
  // the parts added: K - 1 shuffles per output vector, none per product.

  // Lane g * K + j of the result is lane g * K + (j + R) % K of x.
  template <int K, int R, std::size_t... I>
  static vec rotate_groups(vec x, std::index_sequence<I...>) {
    return __builtin_shufflevector(x, x, static_cast<int>(I / K * K + (I % K + R) % K)...);
  }

  // The output vector of parts[0, K): parts[0] + rotated parts[1] + ..., in order.
  template <int K, std::size_t... R>
  static vec gather_parts(const vec* parts, std::index_sequence<0, R...>) {
    vec out = parts[0];
    ((out += rotate_groups<K, static_cast<int>(R)>(parts[R], std::make_index_sequence<L>{})), ...);
    return out;
  }

  template <int K>
  static vec gather_parts(const vec* parts) {
    return gather_parts<K>(parts, std::make_index_sequence<K>{});
  }

  // rotated[R] = x rotated by R, for R < K.
  template <int K, std::size_t... R>
  static void rotations(vec x, vec* rotated, std::index_sequence<R...>) {
    ((rotated[R] = rotate_groups<K, static_cast<int>(R)>(x, std::make_index_sequence<L>{})), ...);
  }

  // The K rotations' weight vectors at p, a.weight_tap / K apart.
  template <int K>
  static void load_rotations(vec* w, const T* p, const DepthwiseArgs<T>& a) {
#pragma GCC unroll 8
    for (int r = 0; r < K; ++r) {
      w[r] = V::load(p + r * (a.weight_tap / K));
    }
  }

  template <int K>
  static void add_parts(vec* parts, vec x, const vec* w) {
#pragma GCC unroll 8
    for (int r = 0; r < K; ++r) {
      parts[r] += x * w[r];
    }
  }

  // The start of a block of RW output pixels from first_pixel, CV channel
  // vectors from c: their lines asked for, their sums (K parts each) started
  // at the bias.
  template <int K, int RW, int CV, bool Partial>
  static void start_sums(const DepthwiseArgs<T>& a, int64_t first_pixel, int64_t c, vec (&acc)[RW][CV][K]) {
#pragma GCC unroll 16
    for (int r = 0; r < RW && !a.stream; ++r) {
      prefetch_for_store(a.output + (first_pixel + r) * a.output_pixel + c, Partial ? a.channels - c : CV * L);
    }
#pragma GCC unroll 8
    for (int v = 0; v < CV; ++v) {
      const vec bias = a.bias ? load_channels<Partial>(a, a.bias + c + v * L, c) : vec{};
#pragma GCC unroll 16
      for (int r = 0; r < RW; ++r) {
        acc[r][v][0] = bias;
#pragma GCC unroll 8
        for (int part = 1; part < K; ++part) {
          acc[r][v][part] = vec{};
        }
      }
    }
  }

  // The end of that block: each sum's parts gathered and stored.
  template <int K, int RW, int CV, bool Partial>
  static void store_sums(const DepthwiseArgs<T>& a, int64_t first_pixel, int64_t c, const vec (&acc)[RW][CV][K]) {
#pragma GCC unroll 16
    for (int r = 0; r < RW; ++r) {
#pragma GCC unroll 8
      for (int v = 0; v < CV; ++v) {
        store_channels<Partial>(a, a.output + (first_pixel + r) * a.output_pixel + c + v * L, c,
                                gather_parts<K>(acc[r][v]));
      }
    }
  }

  // RW pixels of output row oh from column ow, whose windows lie inside the
  // input, for CV channel vectors from c (a partial vector alone).
  template <int K, int RW, int CV, bool Partial>
  static void depthwise_block(const DepthwiseArgs<T>& a, int64_t oh, int64_t ow, int64_t c) {
    static_assert(!Partial || CV == 1);
    if constexpr (K == 1 && RW > 1) {
      if (a.kernel_w == 3 && a.stride_w == 1 && a.dilation_w == 1) {
        return depthwise_block_sliding<3, RW, CV, Partial>(a, oh, ow, c);
      }
    }
    const int64_t first_pixel = oh * a.out_w + ow;
    const T* x[RW];
    x[0] = a.input + c + (oh * a.stride_h - a.pad_h) * a.input_row + (ow * a.stride_w - a.pad_w) * a.input_pixel;
#pragma GCC unroll 16
    for (int r = 1; r < RW; ++r) {
      x[r] = x[r - 1] + a.stride_w * a.input_pixel;
    }
    vec acc[RW][CV][K];
    start_sums<K, RW, CV, Partial>(a, first_pixel, c, acc);
    const T* w = a.weight + c;
    for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < a.kernel_w; ++kw, w += a.weight_tap) {
        const int64_t tap = kh * a.dilation_h * a.input_row + kw * a.dilation_w * a.input_pixel;
#pragma GCC unroll 8
        for (int v = 0; v < CV; ++v) {
          vec wv[K];
          load_rotations<K>(wv, w + v * L, a);
#pragma GCC unroll 16
          for (int r = 0; r < RW; ++r) {
            add_parts<K>(acc[r][v], load_channels<Partial>(a, x[r] + tap + v * L, c), wv);
          }
        }
      }
    }
    store_sums<K, RW, CV, Partial>(a, first_pixel, c, acc);
  }

  // depthwise_block for stride 1 and kernel width KW: along a kernel row,
  // input column j feeds output j - kw through tap kw, so each column is
  // loaded once for up to KW sums, through one pointer (RW + KW - 1 loads
  // instead of RW * KW, through RW pointers, which GCC spilled), and held in
  // a register: GCC had folded the loads back into each FMA (144 channels
  // @56, one image in cache, one thread: 1.28-1.32x torch's time before,
  // 1.09-1.10x since). Every sum takes its taps in the same order as in
  // depthwise_block.
  template <int KW, int RW, int CV, bool Partial>
  static void depthwise_block_sliding(const DepthwiseArgs<T>& a, int64_t oh, int64_t ow, int64_t c) {
    const int64_t first_pixel = oh * a.out_w + ow;
    const T* x = a.input + c + (oh * a.stride_h - a.pad_h) * a.input_row + (ow - a.pad_w) * a.input_pixel;
    vec acc[RW][CV][1];
    start_sums<1, RW, CV, Partial>(a, first_pixel, c, acc);
    for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
      const T* row = x + kh * a.dilation_h * a.input_row;
      const T* w = a.weight + kh * KW * a.weight_tap + c;
#pragma GCC unroll 8
      for (int v = 0; v < CV; ++v) {
        vec wv[KW];
#pragma GCC unroll 8
        for (int kw = 0; kw < KW; ++kw) {
          wv[kw] = V::load(w + kw * a.weight_tap + v * L);
        }
        const T* column = row + v * L;
#pragma GCC unroll 32
        for (int j = 0; j < RW + KW - 1; ++j, column += a.input_pixel) {
          const vec xv = V::in_register(load_channels<Partial>(a, column, c));
#pragma GCC unroll 8
          for (int kw = 0; kw < KW; ++kw) {
            if (j - kw >= 0 && j - kw < RW) {
              acc[j - kw][v][0] += xv * wv[kw];
            }
          }
        }
      }
    }
    store_sums<1, RW, CV, Partial>(a, first_pixel, c, acc);
  }

  // One pixel near the border, CV channel vectors from c: taps outside the
  // input are skipped.
  template <int K, int CV, bool Partial>
  static void depthwise_border_pixel(const DepthwiseArgs<T>& a, int64_t oh, int64_t ow, int64_t c) {
    static_assert(!Partial || CV == 1);
    const int64_t p = oh * a.out_w + ow;
    const int64_t ih0 = oh * a.stride_h - a.pad_h, iw0 = ow * a.stride_w - a.pad_w;
    vec acc[CV][K];
#pragma GCC unroll 8
    for (int v = 0; v < CV; ++v) {
      acc[v][0] = a.bias ? load_channels<Partial>(a, a.bias + c + v * L, c) : vec{};
#pragma GCC unroll 8
      for (int part = 1; part < K; ++part) {
        acc[v][part] = vec{};
      }
    }
    for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
      const int64_t ih = ih0 + kh * a.dilation_h;
      for (int64_t kw = 0; kw < a.kernel_w; ++kw) {
        const int64_t iw = iw0 + kw * a.dilation_w;
        if (ih >= 0 && ih < a.in_h && iw >= 0 && iw < a.in_w) {
          const T* w = a.weight + (kh * a.kernel_w + kw) * a.weight_tap + c;
          const T* x = a.input + ih * a.input_row + iw * a.input_pixel + c;
#pragma GCC unroll 8
          for (int v = 0; v < CV; ++v) {
            vec wv[K];
            load_rotations<K>(wv, w + v * L, a);
            add_parts<K>(acc[v], load_channels<Partial>(a, x + v * L, c), wv);
          }
        }
      }
    }
#pragma GCC unroll 8
    for (int v = 0; v < CV; ++v) {
      store_channels<Partial>(a, a.output + p * a.output_pixel + c + v * L, c, gather_parts<K>(acc[v]));
    }
  }

  // block(cv, partial, c) over [0, channels): CV vectors from c at a time,
  // then single ones, then a partial one (cv and partial as integral_constant).
  template <int CV = 4, typename Block>
  static void each_channel_vector(int64_t channels, const Block& block) {
    int64_t c = 0;
    for (; c + CV * L <= channels; c += CV * L) {
      block(std::integral_constant<int, CV>{}, std::false_type{}, c);
    }
    for (; c + L <= channels; c += L) {
      block(std::integral_constant<int, 1>{}, std::false_type{}, c);
    }
    if (c < channels) {
      block(std::integral_constant<int, 1>{}, std::true_type{}, c);
    }
  }

  // Channel vectors side by side in a block of RW pixels with K-part sums:
  // more than one where RW alone gives too few independent sums.
  template <int K, int RW>
  static constexpr int block_vectors() {
    constexpr int chains = Registers >= 32 ? 8 : 4;
    return RW * K >= chains ? 1 : chains / (RW * K);
  }

  // Every channel vector of RW pixels (Border: of one border pixel) in turn,
  // CV at a time, so that memory is swept pixel by pixel in order.
  template <int K, int RW, bool Border, int CV = block_vectors<K, RW>()>
  static void depthwise_channels(const DepthwiseArgs<T>& a, int64_t oh, int64_t ow) {
    const auto block = [&](auto cv, auto partial, int64_t c) {
      if constexpr (Border) {
        depthwise_border_pixel<K, decltype(cv)::value, decltype(partial)::value>(a, oh, ow, c);
      } else {
        depthwise_block<K, RW, decltype(cv)::value, decltype(partial)::value>(a, oh, ow, c);
      }
    };
    each_channel_vector<CV>(a.channels, block);
  }

  // Asks for the input columns that the next block of RW pixels after
  // (oh, ow) reads and this one does not, in every kernel row, and for the
  // next block's output lines, a block ahead (with the K-part sums, the
  // channels_last depthwise 144 @56 forward went from 2.4-2.9 to 2.2-2.3 ms
  // and the grouped 4-channel layer from 5.5-6.5 to 4.9-5.7 on one thread,
  // on a machine at half speed).
  template <int RW>
  static void prefetch_next_block(const DepthwiseArgs<T>& a, int64_t oh, int64_t ow, int64_t row_end) {
    const int64_t reach_w = (a.kernel_w - 1) * a.dilation_w;
    const int64_t first = (ow + RW - 1) * a.stride_w - a.pad_w + reach_w + 1;  // past this block's window
    const int64_t next_last = (ow + 2 * RW < row_end ? ow + 2 * RW : row_end) - 1;
    const int64_t last_read = next_last * a.stride_w - a.pad_w + reach_w;
    const int64_t last = last_read < a.in_w - 1 ? last_read : a.in_w - 1;
    for (int64_t kh = 0; kh < a.kernel_h && first <= last; ++kh) {
      const int64_t ih = oh * a.stride_h - a.pad_h + kh * a.dilation_h;
      prefetch_for_load(a.input + ih * a.input_row + first * a.input_pixel, (last - first + 1) * a.input_pixel);
    }
    if (next_last >= ow + RW && !a.stream) {
      prefetch_for_store(a.output + (oh * a.out_w + ow + RW) * a.output_pixel,
                         (next_last - ow - RW) * a.output_pixel + a.channels);
    }
  }

  // Row by row: pixels whose windows lie inside the input go in register blocks
  // of RW, then RW_TAIL (the last block of a row may overlap the one before: it
  // writes the same values again), the rest one by one with their taps checked.
  template <int K, int RW, int CV = block_vectors<K, RW>()>
  static void depthwise_pixels_for(const DepthwiseArgs<T>& a) {
    constexpr int RW_TAIL = RW > 4 ? 4 : 1;
    // Outputs whose every tap lies inside the input.
    const int64_t out_rows = (a.pixel_end + a.out_w - 1) / a.out_w;
    const Span rows = inside(out_rows, a.stride_h, a.pad_h, 0, a.in_h - (a.kernel_h - 1) * a.dilation_h);
    const Span cols = inside(a.out_w, a.stride_w, a.pad_w, 0, a.in_w - (a.kernel_w - 1) * a.dilation_w);
    for (int64_t p = a.pixel_begin; p < a.pixel_end;) {
      const int64_t oh = p / a.out_w, row_first = oh * a.out_w;
      const int64_t end = row_first + a.out_w < a.pixel_end ? row_first + a.out_w : a.pixel_end;
      const Span part = inside_part(rows, cols, oh, p - row_first, end - row_first);
      const int64_t lo = row_first + part.lo, hi = row_first + part.hi;
      for (; p < lo; ++p) {
        depthwise_channels<K, 1, true>(a, oh, p - row_first);
      }
      if (hi - p >= RW) {
        for (; p < hi; p += RW) {
          const int64_t ow = (p + RW <= hi ? p : hi - RW) - row_first;
          prefetch_next_block<RW>(a, oh, ow, hi - row_first);
          depthwise_channels<K, RW, false, CV>(a, oh, ow);
        }
        p = hi;
      }
      for (; p + RW_TAIL <= hi; p += RW_TAIL) {
        depthwise_channels<K, RW_TAIL, false>(a, oh, p - row_first);
      }
      for (; p < hi; ++p) {
        depthwise_channels<K, 1, false>(a, oh, p - row_first);
      }
      for (; p < end; ++p) {
        depthwise_channels<K, 1, true>(a, oh, p - row_first);
      }
    }
    if (a.stream) {
      V::fence();
    }
  }

  // Group widths 1, 2, 4, ... below L, up to kMaxLaneGroupWidth; the host passes no other.
  template <int K = 1>
  static void depthwise_pixels(const DepthwiseArgs<T>& a) {
    if constexpr (2 * K < L && 2 * K <= convext::cpu::kMaxLaneGroupWidth) {
      if (a.group_width > K) {
        return depthwise_pixels<2 * K>(a);
      }
    }
    if constexpr (K == 1 && Registers < 32) {
      // Depthwise on 16 registers: blocks of 4 pixels by 2 vectors, 8 sums.
      // With 6 by 1, a 3x3 kernel's 6 chains of 9 dependent FMAs left the
      // FMA units waiting (channels_last 144 @56 forward on AVX2, three sets
      // of five alternating processes: medians 0.75-0.78x torch ->
      // 0.93-1.00x; the 960 @14 stride 2 layer unchanged within the noise).
      depthwise_pixels_for<1, 4, 2>(a);
    } else {
      // About 24 sums on 32 registers (12 on 16), beside a pixel's K weights.
      depthwise_pixels_for<K, (Registers >= 32 ? 12 : 6) / (K > 2 ? K / 2 : 1)>(a);
    }
  }

  // Each input pixel gathers the (tap, output) pairs that read it: the pairs
  // are listed once per pixel, then applied to every vector of channels.
  static void depthwise_input_grad(const DepthwiseArgs<T>& a) {
    int64_t reads[convext::cpu::kMaxDepthwiseTaps], taps[convext::cpu::kMaxDepthwiseTaps];
    for (int64_t p = a.pixel_begin; p < a.pixel_end; ++p) {
      const int64_t ih = p / a.out_w, iw = p % a.out_w;
      int count = 0;
      for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
        const int64_t t = ih + a.pad_h - kh * a.dilation_h;
        if (t < 0) {
          break;
        }
        if (t % a.stride_h != 0 || t / a.stride_h >= a.in_h) {
          continue;
        }
        for (int64_t kw = 0; kw < a.kernel_w; ++kw) {
          const int64_t u = iw + a.pad_w - kw * a.dilation_w;
          if (u < 0) {
            break;
          }
          if (u % a.stride_w != 0 || u / a.stride_w >= a.in_w) {
            continue;
          }
          reads[count] = t / a.stride_h * a.input_row + u / a.stride_w * a.input_pixel;
          taps[count++] = (kh * a.kernel_w + kw) * a.weight_tap;
        }
      }
      T* out = a.output + p * a.output_pixel;
      if (!a.stream) {
        prefetch_for_store(out, a.channels);
      }
      // CV vectors of channels side by side: independent sums keep several
      // loads in flight (one chain of a few dependent FMAs waited on each).
      const auto vectors = [&](auto cv, auto partial, int64_t c) {
        constexpr int CV = decltype(cv)::value;
        constexpr bool Partial = decltype(partial)::value;
        vec acc[CV];
#pragma GCC unroll 8
        for (int v = 0; v < CV; ++v) {  // conv_transpose2d's bias, or zeros
          acc[v] = a.bias ? load_channels<Partial>(a, a.bias + c + v * L, c) : vec{};
        }
        for (int i = 0; i < count; ++i) {
#pragma GCC unroll 8
          for (int v = 0; v < CV; ++v) {
            acc[v] += load_channels<Partial>(a, a.input + reads[i] + c + v * L, c) *
                      V::load(a.weight + taps[i] + c + v * L);
          }
        }
#pragma GCC unroll 8
        for (int v = 0; v < CV; ++v) {
          store_channels<Partial>(a, out + c + v * L, c, acc[v]);
        }
      };
      each_channel_vector(a.channels, vectors);
    }
    if (a.stream) {
      V::fence();
    }
  }

  // grad_output at the first pixel of output row `row` of `image`.
  static const T* grad_row(const WeightGradArgs<T>& a, int64_t image, int64_t row) {
    return a.grad_output + ((image * a.out_h + row) * a.out_w - a.grad_origin) * a.grad_pixel;
  }

  // Calls f(image, row, first column, end column) for each row's share of the
  // range of output pixels.
  template <typename F>
  static void for_each_row_segment(const WeightGradArgs<T>& a, F f) {
    for (int64_t p = a.pixel_begin; p < a.pixel_end;) {
      const int64_t col = p % a.out_w;
      const int64_t run = (a.pixel_end - p) < (a.out_w - col) ? (a.pixel_end - p) : (a.out_w - col);
      f(p / a.out_w / a.out_h, p / a.out_w % a.out_h, col, col + run);
      p += run;
    }
  }

  // Calls f(grad_output pixel, input pixel at tap (0, 0)) for each output pixel
  // of the range, walking it row by row.
  template <typename F>
  static void for_each_pixel(const WeightGradArgs<T>& a, F f) {
    const int64_t pixel_step = a.stride_w * a.input_pixel;
    for_each_row_segment(a, [&](int64_t image, int64_t row, int64_t begin, int64_t end) {
      const T* g = grad_row(a, image, row) + begin * a.grad_pixel;
      const T* x = a.input + (image * a.input_image + row * a.stride_h * a.input_row -
                              a.input_origin * a.input_pixel) + begin * pixel_step;
      for (int64_t k = begin; k < end; ++k, g += a.grad_pixel, x += pixel_step) {
        f(g, x);
      }
    });
  }

  // Depthwise weight gradients read the unpadded input. The padding is not
  // read but still multiplied: a tap in it adds grad_output * 0, which is NaN
  // where grad_output is infinite or NaN, as the product with a zero-padded
  // input is.
  // All taps of a KH x KW kernel in registers, one pass over the pixels: those
  // whose taps all lie inside the input unchecked, the others tap by tap.
  template <int KH, int KW>
  static void depthwise_weight_grad_fixed(const WeightGradArgs<T>& a) {
    constexpr int taps = KH * KW;
    int64_t offset[taps];
    vec acc[taps];
#pragma GCC unroll 25
    for (int t = 0; t < taps; ++t) {
      offset[t] = t / KW * a.dilation_h * a.input_row + t % KW * a.dilation_w * a.input_pixel;
      acc[t] = V::load(a.sums + t * L);
    }
    const Span rows = inside(a.out_h, a.stride_h, a.pad_h, 0, a.in_h - (KH - 1) * a.dilation_h);
    const Span cols = inside(a.out_w, a.stride_w, a.pad_w, 0, a.in_w - (KW - 1) * a.dilation_w);
    for_each_row_segment(a, [&](int64_t image, int64_t oh, int64_t begin, int64_t end) {
      const T* g = grad_row(a, image, oh);
      const T* x = a.input + image * a.input_image;
      const int64_t ih0 = oh * a.stride_h - a.pad_h;
      const auto checked = [&](int64_t ow) {
        const vec gv = V::load(g + ow * a.grad_pixel);
        const int64_t iw0 = ow * a.stride_w - a.pad_w;
#pragma GCC unroll 25
        for (int t = 0; t < taps; ++t) {
          const int64_t ih = ih0 + t / KW * a.dilation_h, iw = iw0 + t % KW * a.dilation_w;
          const bool in_input = ih >= 0 && ih < a.in_h && iw >= 0 && iw < a.in_w;
          acc[t] += gv * (in_input ? V::load(x + ih * a.input_row + iw * a.input_pixel) : vec{});
        }
      };
      const auto [lo, hi] = inside_part(rows, cols, oh, begin, end);
      for (int64_t ow = begin; ow < lo; ++ow) {
        checked(ow);
      }
      for (int64_t ow = lo; ow < hi; ++ow) {
        const vec gv = V::load(g + ow * a.grad_pixel);
        const T* window = x + ih0 * a.input_row + (ow * a.stride_w - a.pad_w) * a.input_pixel;
#pragma GCC unroll 25
        for (int t = 0; t < taps; ++t) {
          acc[t] += gv * V::load(window + offset[t]);
        }
      }
      for (int64_t ow = hi; ow < end; ++ow) {
        checked(ow);
      }
    });
#pragma GCC unroll 25
    for (int t = 0; t < taps; ++t) {
      V::store(a.sums + t * L, acc[t]);
    }
  }

  // Lane-group weight gradients (group_width K > 1), taps (kh, kw0 + t) for
  // t < KW: part R of a tap, lane g * K + i, sums grad_output channel
  // (i + R) % K of group g (grad_output rotated by R, K - 1 shuffles per
  // pixel) times input channel i. sums is [tap][part][lane].
  template <int K, int KW>
  static void lane_group_weight_grad_taps(const WeightGradArgs<T>& a, int64_t kh, int64_t kw0) {
    T* sums = a.sums + (kh * a.kernel_w + kw0) * K * L;
    vec acc[KW][K];
#pragma GCC unroll 8
    for (int t = 0; t < KW; ++t) {
#pragma GCC unroll 8
      for (int part = 0; part < K; ++part) {
        acc[t][part] = V::load(sums + (t * K + part) * L);
      }
    }
    const Span rows = inside(a.out_h, a.stride_h, a.pad_h, kh * a.dilation_h, a.in_h);
    const Span cols = inside(a.out_w, a.stride_w, a.pad_w, kw0 * a.dilation_w, a.in_w - (KW - 1) * a.dilation_w);
    for_each_row_segment(a, [&](int64_t image, int64_t oh, int64_t begin, int64_t end) {
      const T* g = grad_row(a, image, oh);
      const bool row_inside = oh >= rows.lo && oh < rows.hi;
      const int64_t ih = row_inside ? oh * a.stride_h - a.pad_h + kh * a.dilation_h : 0;
      const T* x = a.input + image * a.input_image + ih * a.input_row;
      const auto add = [&](int64_t ow, bool checked) {
        vec rotated[K];
        rotations<K>(V::load(g + ow * a.grad_pixel), rotated, std::make_index_sequence<K>{});
        const int64_t iw0 = ow * a.stride_w - a.pad_w + kw0 * a.dilation_w;
#pragma GCC unroll 8
        for (int t = 0; t < KW; ++t) {
          const int64_t iw = iw0 + t * a.dilation_w;
          const bool in_input = !checked || (row_inside && iw >= 0 && iw < a.in_w);
          const vec xv = in_input ? V::load(x + iw * a.input_pixel) : vec{};
#pragma GCC unroll 8
          for (int part = 0; part < K; ++part) {
            acc[t][part] += rotated[part] * xv;
          }
        }
      };
      const auto [lo, hi] = inside_part(rows, cols, oh, begin, end);
      for (int64_t ow = begin; ow < lo; ++ow) {
        add(ow, true);
      }
      for (int64_t ow = lo; ow < hi; ++ow) {
        add(ow, false);
      }
      for (int64_t ow = hi; ow < end; ++ow) {
        add(ow, true);
      }
    });
#pragma GCC unroll 8
    for (int t = 0; t < KW; ++t) {
#pragma GCC unroll 8
      for (int part = 0; part < K; ++part) {
        V::store(sums + (t * K + part) * L, acc[t][part]);
      }
    }
  }

  // Kernel rows of three taps in one pass each, other widths tap by tap.
  template <int K>
  static void lane_group_weight_grad(const WeightGradArgs<T>& a) {
    if constexpr (2 * K < L && 2 * K <= convext::cpu::kMaxLaneGroupWidth) {
      if (a.group_width > K) {
        return lane_group_weight_grad<2 * K>(a);
      }
    }
    for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
      if (a.kernel_w == 3) {
        lane_group_weight_grad_taps<K, 3>(a, kh, 0);
        continue;
      }
      for (int64_t kw = 0; kw < a.kernel_w; ++kw) {
        lane_group_weight_grad_taps<K, 1>(a, kh, kw);
      }
    }
  }

  static void depthwise_weight_grad(const WeightGradArgs<T>& a) {
    if (a.group_width > 1) {
      return lane_group_weight_grad<2>(a);
    }
    if (a.kernel_h == 3 && a.kernel_w == 3) {
      return depthwise_weight_grad_fixed<3, 3>(a);
    }
    if (a.kernel_h == 5 && a.kernel_w == 5) {
      return depthwise_weight_grad_fixed<5, 5>(a);
    }
    // Any other kernel: a pass per tap over the outputs whose tap is inside.
    for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
      const Span rows = inside(a.out_h, a.stride_h, a.pad_h, kh * a.dilation_h, a.in_h);
      for (int64_t kw = 0; kw < a.kernel_w; ++kw) {
        const Span cols = inside(a.out_w, a.stride_w, a.pad_w, kw * a.dilation_w, a.in_w);
        T* sums = a.sums + (kh * a.kernel_w + kw) * L;
        vec acc = V::load(sums);
        for_each_row_segment(a, [&](int64_t image, int64_t oh, int64_t begin, int64_t end) {
          const T* g = grad_row(a, image, oh);
          const auto [lo, hi] = inside_part(rows, cols, oh, begin, end);
          for (int64_t ow = begin; ow < lo; ++ow) {
            acc += V::load(g + ow * a.grad_pixel) * vec{};
          }
          if (lo < hi) {
            const T* x = a.input + image * a.input_image +
                         (oh * a.stride_h - a.pad_h + kh * a.dilation_h) * a.input_row;
            for (int64_t ow = lo; ow < hi; ++ow) {
              acc += V::load(g + ow * a.grad_pixel) *
                     V::load(x + (ow * a.stride_w - a.pad_w + kw * a.dilation_w) * a.input_pixel);
            }
          }
          for (int64_t ow = hi; ow < end; ++ow) {
            acc += V::load(g + ow * a.grad_pixel) * vec{};
          }
        });
        V::store(sums, acc);
      }
    }
  }

  // ---- planar convolution (few channels per group) ----------------------
  // Output channels per call. With 16 registers 6 (12 accumulators), not 4:
  // LeNet's 1 -> 6 layer in one call, on AVX2 1.08-1.56x torch -> 1.75-2.13x.
  static constexpr int PB = Registers >= 32 ? 8 : 6;

  // OC output rows, two vectors of columns at a time; the last block may be
  // partial: its lanes past the row are computed from neighbouring data and
  // never stored.
  template <int OC>
  static void planar_rows_for(const PlanarArgs<T>& a) {
    const int64_t taps = a.kernel_h * a.kernel_w, per_oc = a.in_channels * taps;
    for (int64_t ow = 0; ow < a.out_w; ow += 2 * L) {
      vec acc[OC][2];
#pragma GCC unroll 8
      for (int j = 0; j < OC; ++j) {
        acc[j][0] = acc[j][1] = V::broadcast(a.bias ? a.bias[j] : T(0));
      }
      const T* column = a.input + ow * a.stride_w;
      for (int64_t ic = 0; ic < a.in_channels; ++ic) {
        for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
          const T* row = column + ic * a.input_plane + kh * a.dilation_h * a.in_w;
          const T* w = a.weight + (ic * a.kernel_h + kh) * a.kernel_w;
          for (int64_t kw = 0; kw < a.kernel_w; ++kw) {
            const T* x = row + kw * a.dilation_w;
            const vec x0 = load_strided(x, a.stride_w), x1 = load_strided(x + L * a.stride_w, a.stride_w);
#pragma GCC unroll 8
            for (int j = 0; j < OC; ++j) {
              const vec wv = V::broadcast(w[j * per_oc + kw]);
              acc[j][0] += wv * x0;
              acc[j][1] += wv * x1;
            }
          }
        }
      }
      const int64_t count = a.out_w - ow < 2 * L ? a.out_w - ow : 2 * L;
#pragma GCC unroll 8
      for (int j = 0; j < OC; ++j) {
        store_first<2>(a.output + j * a.output_plane + ow, acc[j], count);
      }
    }
  }

  template <int... OC>
  static void planar_rows_dispatch(const PlanarArgs<T>& a, std::integer_sequence<int, OC...>) {
    ((a.out_channels == OC + 1 ? planar_rows_for<OC + 1>(a) : void()), ...);
  }

  // As many accumulator rows as the call has output channels.
  static void planar_rows(const PlanarArgs<T>& a) {
    planar_rows_dispatch(a, std::make_integer_sequence<int, PB>{});
  }

  // The lanes of the last vector of a row `width` long that hold columns no
  // earlier vector of the row summed. A row of at least a vector ends with a
  // vector at width - L, overlapping the one before: its last width % L lanes
  // are new (none when the row is whole vectors). A shorter row's only vector
  // holds its columns in its first lanes.
  static lane_int last_vector_lanes(int64_t width) {
    const int64_t tail = width % L;
    lane_int fresh{};
    for (int l = 0; l < L; ++l) {
      fresh[l] = (width < L ? l < tail : l >= L - tail) ? -1 : 0;
    }
    return fresh;
  }

  // Row dot products, added to sums. Each vector position of a row is summed
  // down the rows in one loop of loads and FMAs. A row's last vector ends at
  // its last column, overlapping the one before; a row shorter than a vector
  // reads lanes past its end (both buffers have slack). Either way the lanes
  // not to be summed are selected away from the column sums, so whatever they
  // held, inf or NaN, never reaches a sum.
  template <int OC>
  static void planar_weight_grad_for(const PlanarGradArgs<T>& a) {
    const bool short_rows = a.out_w < L;
    const int64_t full = a.out_w - a.out_w % L;
    const lane_int keep = last_vector_lanes(a.out_w);
    const int64_t x_row = a.stride_h * a.in_w;
    vec acc[OC] = {};
    for (int64_t n = 0; n < a.batch; ++n) {
      const T* g_image = a.grad_output + n * a.grad_image;
      const T* x_image = a.input + n * a.input_image;
      for (int64_t ow = 0; ow < a.out_w; ow += L) {
        const int64_t first = ow < full || short_rows ? ow : a.out_w - L;
        vec column[OC] = {};
        const T* g = g_image + first;
        const T* x = x_image + first * a.stride_w;
        for (int64_t oh = 0; oh < a.out_h; ++oh, g += a.out_w, x += x_row) {
          const vec xv = load_strided(x, a.stride_w);
#pragma GCC unroll 8
          for (int j = 0; j < OC; ++j) {
            column[j] += V::load(g + j * a.grad_plane) * xv;
          }
        }
#pragma GCC unroll 8
        for (int j = 0; j < OC; ++j) {
          acc[j] += ow < full ? column[j] : (keep ? column[j] : vec{});
        }
      }
    }
#pragma GCC unroll 8
    for (int j = 0; j < OC; ++j) {
      a.sums[j] += lane_sum(acc[j]);
    }
  }

  template <int... OC>
  static void planar_weight_grad_dispatch(const PlanarGradArgs<T>& a, std::integer_sequence<int, OC...>) {
    ((a.out_channels == OC + 1 ? planar_weight_grad_for<OC + 1>(a) : void()), ...);
  }

  static void planar_weight_grad(const PlanarGradArgs<T>& a) {
    planar_weight_grad_dispatch(a, std::make_integer_sequence<int, PB>{});
  }

  // ---- depthwise convolution on NCHW planes -----------------------------
  // f(integral_constant<int, i>) for i in [0, N), in order.
  template <int N, typename F>
  static void static_for(const F& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (f(std::integral_constant<int, static_cast<int>(I)>{}), ...);
    }(std::make_index_sequence<N>{});
  }

  // Lanes [S, S + L) of low followed by high.
  template <int S, std::size_t... I>
  static vec shift_lanes(vec low, vec high, std::index_sequence<I...>) {
    return __builtin_shufflevector(low, high, static_cast<int>(I + S)...);
  }

  // R output rows from oh, two vectors of columns at a time (R * 2 independent
  // sums). A row's last block ends at its last column, overlapping the one
  // before (it writes the same values again), and a row shorter than two
  // vectors overlaps its two: every store is a whole vector. Shifted (stride
  // 1, kernel rows of 3 undilated taps, rows of at least two vectors): each
  // kernel row's three vectors from the block's first column are loaded once
  // and the other taps shifted out of them by shuffles, instead of an
  // unaligned load per tap (144 channels @56, one image in cache, one
  // thread: convext's time over torch's 0.89-0.97 before, 0.72-0.83 since);
  // the same sums in the same order.
  static constexpr int kShiftedTaps = 3;

  // At stride 2 the loads leave the lanes paired (load_step_paired), the same
  // way for every tap, and the sums are put in order once, as they are stored.
  template <int R, int Stride, bool Shifted>
  static void depthwise_plane_rows(const DepthwisePlaneArgs<T>& a, int64_t oh) {
    const int64_t step = Stride ? Stride : a.stride_w;
    const auto load = [step](const T* p) { return load_step_paired<Stride>(p, step); };
    const int64_t row_step = a.stride_h * a.in_w;
    for (int64_t ow = 0; ow < a.out_w; ow += 2 * L) {
      const int64_t first = ow + 2 * L <= a.out_w ? ow : a.out_w >= 2 * L ? a.out_w - 2 * L : 0;
      const int64_t second = a.out_w >= 2 * L ? first + L : a.out_w - L;
      vec acc[R][2];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        acc[r][0] = acc[r][1] = V::broadcast(a.bias);
        prefetch_for_store(a.output + (oh + r) * a.out_w + first, second + L - first);
      }
      const T* column = a.input + oh * row_step;
      const T* w = a.weight;
      for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
        const T* x = column + kh * a.dilation_h * a.in_w;
        if constexpr (Shifted) {  // second == first + L
          vec wv[kShiftedTaps];
#pragma GCC unroll 4
          for (int kw = 0; kw < kShiftedTaps; ++kw) {
            wv[kw] = V::broadcast(w[kw]);
          }
          w += kShiftedTaps;
#pragma GCC unroll 4
          for (int r = 0; r < R; ++r) {
            const T* p = x + r * row_step + first;
            const vec x0 = V::in_register(V::load(p)), x1 = V::in_register(V::load(p + L));
            const vec x2 = V::in_register(V::load(p + 2 * L));
            static_for<kShiftedTaps>([&](auto kw) {
              constexpr int S = decltype(kw)::value;
              acc[r][0] += wv[S] * shift_lanes<S>(x0, x1, std::make_index_sequence<L>{});
              acc[r][1] += wv[S] * shift_lanes<S>(x1, x2, std::make_index_sequence<L>{});
            });
          }
        } else {
          for (int64_t kw = 0; kw < a.kernel_w; ++kw, ++w, x += a.dilation_w) {
            const vec wv = V::broadcast(*w);
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
              acc[r][0] += wv * load(x + r * row_step + first * step);
              acc[r][1] += wv * load(x + r * row_step + second * step);
            }
          }
        }
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        V::store(a.output + (oh + r) * a.out_w + first, step_in_order<Stride>(acc[r][0]));
        V::store(a.output + (oh + r) * a.out_w + second, step_in_order<Stride>(acc[r][1]));
      }
    }
  }

  template <int Stride, bool Shifted>
  static void depthwise_plane_for(const DepthwisePlaneArgs<T>& a) {
    constexpr int R = Registers >= 32 ? 4 : 2;
    int64_t oh = 0;
    for (; oh + R <= a.out_h; oh += R) {
      depthwise_plane_rows<R, Stride, Shifted>(a, oh);
    }
    for (; oh < a.out_h; ++oh) {
      depthwise_plane_rows<1, Stride, Shifted>(a, oh);
    }
  }

  // f(std::integral_constant<int, Stride>) for load_step's Stride of step.
  template <typename F>
  static void with_stride(int64_t step, F f) {
    if (step == 1) {
      f(std::integral_constant<int, 1>{});
    } else if (step == 2) {
      f(std::integral_constant<int, 2>{});
    } else {
      f(std::integral_constant<int, 0>{});
    }
  }

  static void depthwise_plane(const DepthwisePlaneArgs<T>& a) {
    if constexpr (L >= kShiftedTaps) {
      if (a.stride_w == 1 && a.kernel_w == kShiftedTaps && a.dilation_w == 1 && a.out_w >= 2 * L) {
        return depthwise_plane_for<1, true>(a);
      }
    }
    with_stride(a.stride_w, [&](auto stride) { depthwise_plane_for<decltype(stride)::value, false>(a); });
  }

  // N taps of kernel row kh from kw0, summed over the band: each grad_output
  // vector is loaded once for them. A row's last vector ends at its last
  // column, overlapping the one before; the lanes already summed are selected
  // away (whatever the input there, inf or NaN).
  template <int N, int Stride>
  static void depthwise_plane_taps(const DepthwisePlaneGradArgs<T>& a, int64_t kh, int64_t kw0) {
    const int64_t step = Stride ? Stride : a.stride_w;
    const lane_int fresh = last_vector_lanes(a.out_w);
    vec acc[N] = {};
    for (int64_t oh = 0; oh < a.out_h; ++oh) {
      const T* g = a.grad_output + oh * a.out_w;
      const T* x = a.input + (oh * a.stride_h + kh * a.dilation_h) * a.in_w + kw0 * a.dilation_w;
      int64_t ow = 0;
      for (; ow + L <= a.out_w; ow += L) {
        const vec gv = V::load(g + ow);
#pragma GCC unroll 4
        for (int t = 0; t < N; ++t) {
          acc[t] += gv * load_step<Stride>(x + ow * step + t * a.dilation_w, step);
        }
      }
      if (ow < a.out_w) {
        ow = a.out_w - L;
        const vec gv = V::load(g + ow);
#pragma GCC unroll 4
        for (int t = 0; t < N; ++t) {
          const vec product = gv * load_step<Stride>(x + ow * step + t * a.dilation_w, step);
          acc[t] += fresh ? product : vec{};
        }
      }
    }
#pragma GCC unroll 4
    for (int t = 0; t < N; ++t) {
      a.sums[kh * a.kernel_w + kw0 + t] += lane_sum(acc[t]);
    }
  }

  static void depthwise_plane_weight_grad(const DepthwisePlaneGradArgs<T>& a) {
    with_stride(a.stride_w, [&](auto stride) {
      constexpr int S = decltype(stride)::value;
      for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
        int64_t kw = 0;
        for (; kw + 4 <= a.kernel_w; kw += 4) {
          depthwise_plane_taps<4, S>(a, kh, kw);
        }
        switch (a.kernel_w - kw) {
          case 3: depthwise_plane_taps<3, S>(a, kh, kw); break;
          case 2: depthwise_plane_taps<2, S>(a, kh, kw); break;
          case 1: depthwise_plane_taps<1, S>(a, kh, kw); break;
          default: break;
        }
      }
    });
  }

  // ---- layout changes --------------------------------------------------
  // Stage K of an L x L transpose swaps bit K of the row index with bit K of
  // the lane index: row i (bit K clear) and row i | 2^K trade half their lanes.
  template <int K, bool Upper, std::size_t... I>
  static vec swap_bit(vec low, vec high, std::index_sequence<I...>) {
    constexpr std::size_t bit = std::size_t{1} << K;
    if constexpr (Upper) {
      return __builtin_shufflevector(low, high, ((I & bit) ? L + I : (I ^ bit))...);
    } else {
      return __builtin_shufflevector(low, high, ((I & bit) ? L + (I ^ bit) : I)...);
    }
  }

  template <int K>
  static void transpose_stage(vec (&rows)[L]) {
    if constexpr ((1 << K) < L) {
      constexpr int bit = 1 << K;
#pragma GCC unroll 16
      for (int i = 0; i < L; ++i) {
        if ((i & bit) == 0) {
          const vec low = rows[i], high = rows[i | bit];
          rows[i] = swap_bit<K, false>(low, high, std::make_index_sequence<L>{});
          rows[i | bit] = swap_bit<K, true>(low, high, std::make_index_sequence<L>{});
        }
      }
      transpose_stage<K + 1>(rows);
    }
  }

  // dst[j * dst_row + i] = src[i * src_row + j] for i < rows, j < cols: L x L
  // tiles transposed in registers, the columns past the last whole tile too
  // (a padded NHWC buffer's rows of 7, 14 or 28 pixels: element by element,
  // they cost 3x3 256 @14 NCHW 2-7% of its forward and of either gradient,
  // in one process), the rows past the last whole tile element by element;
  // fewer than L rows into packed columns (an NCHW image of few channels into
  // NHWC) go through transpose_into_packed_columns.
  // Stream: whole tiles' vectors that lie on a vector boundary go out by
  // streaming stores (then a fence), for outputs that do not stay in cache
  // (packed columns store plainly).
  template <bool Stream = false>
  static void transpose(const T* src, int64_t src_row, T* dst, int64_t dst_row, int64_t rows,
                        int64_t cols) {
    if (rows < L && dst_row == rows && cols >= L) {
      return transpose_into_packed_columns(src, src_row, dst, rows, cols);
    }
    const int64_t full_rows = rows / L * L, full_cols = cols / L * L;
    // A ragged tile's rows are read as whole vectors up to here, the offset
    // past the last element: inside src's storage, whose elements between
    // the ones transposed are read but not stored.
    const int64_t src_end = (rows - 1) * src_row + cols;
    for (int64_t i0 = 0; i0 < full_rows; i0 += L) {
      for (int64_t j0 = 0; j0 < full_cols; j0 += L) {
        transpose_tile<false, Stream>(src + i0 * src_row + j0, src_row, 0, dst + j0 * dst_row + i0, dst_row, L);
      }
      if (full_cols < cols) {
        const int64_t origin = i0 * src_row + full_cols;
        transpose_tile<true>(src + origin, src_row, src_end - origin, dst + full_cols * dst_row + i0, dst_row,
                             cols - full_cols);
      }
    }
    for (int64_t i = full_rows; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        dst[j * dst_row + i] = src[i * src_row + j];
      }
    }
    if constexpr (Stream) {
      V::fence();
    }
  }

  // One L x L tile of transpose(), of which only the first `cols` columns are
  // stored; Ragged: fewer than L, and src[0, readable) may be read.
  template <bool Ragged, bool Stream = false>
  static void transpose_tile(const T* src, int64_t src_row, int64_t readable, T* dst, int64_t dst_row,
                             int64_t cols) {
    vec tile[L];
#pragma GCC unroll 16
    for (int i = 0; i < L; ++i) {
      tile[i] = !Ragged || i * src_row + L <= readable ? V::load(src + i * src_row)
                                                       : load_first(src + i * src_row, cols);
    }
    transpose_stage<0>(tile);
#pragma GCC unroll 16
    for (int j = 0; j < L; ++j) {
      if (Ragged && j >= cols) {
        continue;
      }
      if (Stream && reinterpret_cast<std::uintptr_t>(dst + j * dst_row) % Bytes == 0) {
        V::stream(dst + j * dst_row, tile[j]);
      } else {
        V::store(dst + j * dst_row, tile[j]);
      }
    }
  }

  // transpose() of rows < L rows into dst_row == rows: L columns at a time,
  // each as a whole vector at its place, its lanes past `rows` landing on the
  // next columns, which are stored after it (the last ones, whose spill would
  // pass the end, store only their rows). One vector store per column instead
  // of `rows` element stores: LeNet's 6-channel input, the stem's 3.
  static void transpose_into_packed_columns(const T* src, int64_t src_row, T* dst, int64_t rows, int64_t cols) {
    const int64_t end = cols * rows;
    for (int64_t j0 = 0; j0 < cols; j0 += L) {
      const int64_t first = j0 + L <= cols ? j0 : cols - L;  // the last tile overlaps the one before
      vec tile[L];
#pragma GCC unroll 16
      for (int i = 0; i < L; ++i) {
        tile[i] = i < rows ? V::load(src + i * src_row + first) : vec{};
      }
      transpose_stage<0>(tile);
#pragma GCC unroll 16
      for (int j = 0; j < L; ++j) {
        T* column = dst + (first + j) * rows;
        if (column + L <= dst + end) {
          V::store(column, tile[j]);
        } else {
          store_first<1>(column, &tile[j], rows);
        }
      }
    }
  }

  // ---- pooling ---------------------------------------------------------
  using index_vec = typename IndexVec<L>::type;

  // Elements 0, 2, ..., 2L - 2 from low = p[0, L) and high = p[L - 1, 2L - 1):
  // the second load ends at the last element used, never past it.
  template <std::size_t... I>
  static vec even_lanes(vec low, vec high, std::index_sequence<I...>) {
    return __builtin_shufflevector(low, high, (2 * I + (2 * I >= L ? 1 : 0))...);
  }

  // L values step elements apart; reads nothing past the last of them.
  // Stride: the step when known at compile time (1: a plain load; 2: two
  // loads and a shuffle, not L inserts); 0: any step.
  template <int Stride>
  static vec load_step(const T* p, int64_t step) {
    if constexpr (Stride == 1) {
      return V::load(p);
    } else if constexpr (Stride == 2) {
      return even_lanes(V::load(p), V::load(p + L - 1), std::make_index_sequence<L>{});
    } else {
      vec v;
#pragma GCC unroll 16
      for (int l = 0; l < L; ++l) {
        v[l] = p[l * step];
      }
      return v;
    }
  }

  static vec load_strided(const T* p, int64_t step) {
    return step == 1 ? load_step<1>(p, step) : step == 2 ? load_step<2>(p, step) : load_step<0>(p, step);
  }

  // Stride 2 along a row: lane i of a vector is element 2i from p. Two loads,
  // p and p + L - 1 (nothing read past the last element used), give the
  // elements, and one shuffle within 16-byte chunks (vshufps) picks them, out
  // of order: lane I holds element 2 * paired_output(I). A max or a sum does
  // not care which lane holds which output, so in_order puts them back once a
  // vector, not once a tap (with the lanes in order, AVX2 took two vpermd and
  // a blend a load).
  static constexpr int kChunk = 16 / static_cast<int>(sizeof(T));
  static constexpr int paired_source(int I) {
    const int q = I / kChunk, r = I % kChunk;
    return r < kChunk / 2 ? q * kChunk + 2 * r : L + q * kChunk + 2 * (r - kChunk / 2) + 1;
  }
  static constexpr int paired_output(int I) {
    const int q = I / kChunk, r = I % kChunk;
    return r < kChunk / 2 ? q * kChunk / 2 + r : (L + q * kChunk) / 2 + r - kChunk / 2;
  }
  static constexpr int paired_lane(int output) {
    int lane = 0;
    while (paired_output(lane) != output) {
      ++lane;
    }
    return lane;
  }
  template <std::size_t... I>
  static vec even_lanes_paired(vec low, vec high, std::index_sequence<I...>) {
    return __builtin_shufflevector(low, high, paired_source(I)...);
  }
  template <typename W, std::size_t... I>
  static W paired_in_order(W x, std::index_sequence<I...>) {
    return __builtin_shufflevector(x, x, paired_lane(I)...);
  }

  // load_step, but at stride 2 with the lanes paired (one shuffle, where in
  // order took AVX2 two vpermd and a blend): for sums and maxima, which
  // step_in_order puts in order once, not once a load.
  template <int Stride>
  static vec load_step_paired(const T* p, int64_t step) {
    if constexpr (Stride == 2) {
      return even_lanes_paired(V::load(p), V::load(p + L - 1), std::make_index_sequence<L>{});
    } else {
      return load_step<Stride>(p, step);
    }
  }
  template <int Stride, typename W>
  static W step_in_order(W x) {
    if constexpr (Stride == 2) {
      return paired_in_order(x, std::make_index_sequence<L>{});
    } else {
      return x;
    }
  }

  // A pooling vector's lanes. ChannelLanes: CV * L channels of one output
  // pixel, CV vectors side by side to keep several loads in flight (C >= L).
  // PlaneLanes: CV * L neighbouring outputs of full windows in a row of an
  // NCHW plane (C = 1), vector v the L after the first v * L.
  // PixelLanes: the C channels of each of `stored / C` neighbouring outputs
  // of full windows in a row (C < L; an NCHW plane has C = 1). Either way,
  // once in_order, a vector's first `stored` lanes are outputs, neighbours in
  // the output; `columns()` is each lane's window origin, in input columns,
  // from its vector's first lane's, and first_column(v) that of vector v from
  // vector 0's; pixel and channel number the lanes of all CV vectors.
  struct LanesInOrder {
    template <typename W>
    static W in_order(W x) { return x; }
  };

  template <int CV>
  struct ChannelLanes : LanesInOrder {
    static constexpr int vectors = CV;
    static constexpr int stored = L;
    static vec load(const T* window, int v) { return V::load(window + v * L); }
    static const index_vec& columns() {
      static constexpr index_vec none{};
      return none;
    }
    static int64_t first_column(int) { return 0; }
    static int64_t pixel(int) { return 0; }
    static int64_t channel(int lane) { return lane; }
  };

  // Stride: 2 (even_lanes_paired), or 0 for the row's, whatever it is.
  template <int CV, int Stride>
  struct PlaneLanes {
    static constexpr int vectors = CV;
    static constexpr int stored = L;
    int64_t step;        // the stride along the row
    index_vec first_of;  // lane l: l * step

    explicit PlaneLanes(int64_t stride_w) : step(stride_w) {
      for (int l = 0; l < L; ++l) {
        first_of[l] = l * stride_w;
      }
    }
    template <int Other>
    explicit PlaneLanes(const PlaneLanes<Other, Stride>& other) : step(other.step), first_of(other.first_of) {}

    vec load(const T* window, int v) const {
      if constexpr (Stride == 2) {
        return load_step_paired<2>(window + v * 2 * L, 2);
      } else {
        return load_strided(window + v * L * step, step);
      }
    }
    template <typename W>
    static W in_order(W x) {
      return step_in_order<Stride>(x);
    }
    const index_vec& columns() const { return first_of; }
    int64_t first_column(int v) const { return v * L * step; }
    static int64_t pixel(int lane) { return lane; }
    static int64_t channel(int) { return 0; }
  };

  struct PixelLanes : LanesInOrder {
    static constexpr int vectors = 1;
    int stored;         // the rest of the lanes read the window's first element
    int64_t channels;
    index_vec offsets;  // lane l reads window[offsets[l]]
    index_vec column_of;

    PixelLanes(int64_t pixels, int64_t C, int64_t stride_w)
        : stored(static_cast<int>(pixels * C)), channels(C), offsets{}, column_of{} {
      for (int l = 0; l < stored; ++l) {
        column_of[l] = l / C * stride_w;
        offsets[l] = column_of[l] * C + l % C;
      }
    }
    vec load(const T* window, int) const {
      vec x;
#pragma GCC unroll 16
      for (int l = 0; l < L; ++l) {
        x[l] = window[offsets[l]];
      }
      return x;
    }
    const index_vec& columns() const { return column_of; }
    static int64_t first_column(int) { return 0; }
    int64_t pixel(int lane) const { return lane / channels; }
    int64_t channel(int lane) const { return lane % channels; }
  };

  // The first `count` lanes of x to out.
  template <typename U, typename W>
  static void store_lanes(U* out, const W& x, int count) {
    if (count == L) {
      __builtin_memcpy(out, &x, sizeof(x));
      return;
    }
    for (int l = 0; l < count; ++l) {
      out[l] = x[l];
    }
  }

  // out[l] = offsets[l] + columns[l] + origin for l < count. A float
  // vector's int64 indices span several registers, and GCC builds a broadcast
  // into such a vector on the stack (a quarter of the NCHW max pool's time
  // on AVX2), so they are summed and stored a register at a time.
  static void store_indices(int64_t* out, lane_int offsets, const index_vec& columns, int64_t origin, int count) {
    constexpr int kPerRegister = Bytes / 8;
    typedef int64_t index_register __attribute__((vector_size(Bytes)));
    int64_t position[L];
    static_for<L / kPerRegister>([&](auto piece) {
      constexpr int first = decltype(piece)::value * kPerRegister;
      index_register column;
      __builtin_memcpy(&column, reinterpret_cast<const int64_t*>(&columns) + first, Bytes);
      const index_register sum = column + origin + [&]<std::size_t... I>(std::index_sequence<I...>) {
        return __builtin_convertvector(__builtin_shufflevector(offsets, offsets, (first + I)...), index_register);
      }(std::make_index_sequence<kPerRegister>{});
      __builtin_memcpy((count == L ? out : position) + first, &sum, Bytes);
    });
    if (count < L) {
      __builtin_memcpy(out, position, count * sizeof(int64_t));
    }
  }

  // The first `count` lanes of x to out, streamed when all go and the host asked.
  static void store_output(const PoolArgs<T>& a, T* out, vec x, int count) {
    if (a.stream && count == L) {
      V::stream(out, x);
    } else {
      store_lanes(out, x, count);
    }
  }

  // Channel vectors per pooling call: max_pool keeps a value and an offset
  // per vector, avg_pool only a sum, so it can read 256 channels of each tap
  // at once, a whole pixel in order as torch reads it (with 4 vectors a call,
  // reading a tap's pixel in 4 pieces, the 2x2 pool of 8 x 256 @56 took
  // 0.97-1.72 ms, against 0.60-1.42 so, in alternating runs).
  static constexpr int kMaxPoolVectors = 4, kAvgPoolVectors = 16;
  static constexpr int kPlaneVectors = 4;

  // vector_fn(oh, ow, c, ChannelLanes<V>{}) over channels [c, C) of output
  // (oh, ow): V = Vectors while they last, then a quarter of that, down to 1.
  template <int Vectors, typename VectorFn>
  static int64_t channel_vectors(int64_t oh, int64_t ow, int64_t c, int64_t C, const VectorFn& vector_fn) {
    for (; c + Vectors * L <= C; c += Vectors * L) {
      vector_fn(oh, ow, c, ChannelLanes<Vectors>{});
    }
    if constexpr (Vectors > 1) {
      c = channel_vectors<(Vectors >= 4 ? Vectors / 4 : 1)>(oh, ow, c, C, vector_fn);
    }
    return c;
  }

  // vector_fn over outputs [ow, end) of full windows in row oh of an NCHW
  // plane (end - ow >= L): PlaneLanes of the most vectors, up to V, that fit,
  // the last overlapping the one before (it writes the same values again).
  template <int V, int Stride, typename VectorFn>
  static void plane_vectors(int64_t oh, int64_t ow, int64_t end, const PlaneLanes<1, Stride>& lanes,
                            const VectorFn& vector_fn) {
    if constexpr (V > 1) {
      if (end - ow < V * L) {
        return plane_vectors<V / 2>(oh, ow, end, lanes, vector_fn);
      }
    }
    const PlaneLanes<V, Stride> block(lanes);
    for (; ow < end; ow += V * L) {
      vector_fn(oh, ow + V * L <= end ? ow : end - V * L, 0, block);
    }
  }

  template <int Vectors, typename VectorFn, typename ScalarFn>
  static void for_each_output(const PoolArgs<T>& a, VectorFn vector_fn, ScalarFn scalar_fn) {
    const int64_t C = a.channels;
    // A run of full windows: on an NCHW plane, if at least a vector long,
    // plane lanes; otherwise pixel lanes, L / C outputs a vector, a run
    // shorter than that one vector of fewer lanes, a longer one ending with a
    // vector that overlaps the one before.
    const int64_t run = a.full_cols_end - a.full_cols_begin;
    const bool planes = C == 1 && run >= L;
    const int64_t pixels = C < L ? (run < L / C ? run : L / C) : 0;
    const PixelLanes pixel_lanes(pixels, C, a.stride_w);
    const PlaneLanes<1, 2> pair_lanes(a.stride_w);
    const PlaneLanes<1, 0> plane_lanes(a.stride_w);
    for (int64_t oh = a.row_begin; oh < a.row_end; ++oh) {
      for (int64_t ow = 0; ow < a.out_w;) {
        if (C >= L) {
          for (int64_t c = channel_vectors<Vectors>(oh, ow, 0, C, vector_fn); c < C; ++c) {
            scalar_fn(oh, ow, c);
          }
          ++ow;
        } else if (ow >= a.full_cols_begin && ow < a.full_cols_end) {
          if (planes) {
            if (a.stride_w == 2) {
              plane_vectors<kPlaneVectors>(oh, ow, a.full_cols_end, pair_lanes, vector_fn);
            } else {
              plane_vectors<kPlaneVectors>(oh, ow, a.full_cols_end, plane_lanes, vector_fn);
            }
            ow = a.full_cols_end;
          } else {
            const int64_t start = ow + pixels <= a.full_cols_end ? ow : a.full_cols_end - pixels;
            vector_fn(oh, start, 0, pixel_lanes);
            ow = start + pixels;
          }
        } else {
          for (int64_t c = 0; c < C; ++c) {
            scalar_fn(oh, ow, c);
          }
          ++ow;
        }
      }
    }
  }

  // torch's rule: the first maximum wins a tie, a NaN beats everything and the
  // last NaN wins; an all -inf window points at its first tap. The vector path
  // selects per lane instead of branching on data.
  static void max_pool(const PoolArgs<T>& a) {
    const int64_t C = a.channels;
    const auto vector_fn = [&](int64_t oh, int64_t ow, int64_t c, const auto& lanes) {
      constexpr int CV = std::decay_t<decltype(lanes)>::vectors;
      const auto& rt = a.rows[oh];
      const auto& ct = a.cols[ow];
      const int64_t first = rt.first * a.in_w + ct.first;
      const T* window = a.input + first * C + c;
      const int64_t out = (oh * a.out_w + ow) * C + c;
      prefetch_for_store(a.output + out, (CV - 1) * L + lanes.stored);
      prefetch_for_store(a.indices + out, (CV - 1) * L + lanes.stored);
      vec best[CV];
      lane_int best_offset[CV];
#pragma GCC unroll 4
      for (int v = 0; v < CV; ++v) {
        best[v] = V::broadcast(-__builtin_inf());
        best_offset[v] = lane_int{};
      }
      for (int64_t i = 0; i < rt.count; ++i) {
        for (int64_t j = 0; j < ct.count; ++j) {
          const int64_t offset = i * a.dilation_h * a.in_w + j * a.dilation_w;
#pragma GCC unroll 4
          for (int v = 0; v < CV; ++v) {
            const vec x = lanes.load(window + offset * C, v);
            const lane_int take = (x > best[v]) | (x != x);
            best[v] = take ? x : best[v];
            best_offset[v] = take ? (lane_int{} + static_cast<lane_elem>(offset)) : best_offset[v];
          }
        }
      }
#pragma GCC unroll 4
      for (int v = 0; v < CV; ++v) {
        store_lanes(a.output + out + v * L, lanes.in_order(best[v]), lanes.stored);
        store_indices(a.indices + out + v * L, lanes.in_order(best_offset[v]), lanes.columns(),
                      first + lanes.first_column(v), lanes.stored);
      }
    };
    const auto scalar_fn = [&](int64_t oh, int64_t ow, int64_t c) {
      const auto& rt = a.rows[oh];
      const auto& ct = a.cols[ow];
      const int64_t first = rt.first * a.in_w + ct.first;
      T best = -__builtin_inf();
      int64_t best_offset = 0;
      for (int64_t i = 0; i < rt.count; ++i) {
        for (int64_t j = 0; j < ct.count; ++j) {
          const int64_t offset = i * a.dilation_h * a.in_w + j * a.dilation_w;
          const T v = a.input[(first + offset) * C + c];
          if (v > best || v != v) {
            best = v;
            best_offset = offset;
          }
        }
      }
      a.output[(oh * a.out_w + ow) * C + c] = best;
      a.indices[(oh * a.out_w + ow) * C + c] = first + best_offset;
    };
    // Window offsets ride in T-wide lanes (int32 for float) when they fit.
    if (a.max_window_offset < (int64_t{1} << (8 * sizeof(T) - 2))) {
      for_each_output<kMaxPoolVectors>(a, vector_fn, scalar_fn);
    } else {
      for_each_output<kMaxPoolVectors>(a, [&](int64_t oh, int64_t ow, int64_t c, const auto& lanes) {
        for (int l = 0; l < lanes.vectors * lanes.stored; ++l) {  // the same outputs, one by one
          scalar_fn(oh, ow + lanes.pixel(l), c + lanes.channel(l));
        }
      }, scalar_fn);
    }
  }

  static void zero(T* p, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      p[i] = T(0);
    }
  }

  // Scatter in output order, one thread per image: a fixed order of
  // additions. An index outside the plane stops the image before it is used
  // (false: the caller fails the call); checked in the scatter, not in a pass
  // of its own, which had taken a third of the kernel's time. (A gather per
  // input pixel, a vector of channels at a time, measured 3x slower on
  // channels_last; so did storing each input of disjoint 2x2/2 windows once,
  // no zeroing pass, a vector of channels or of a window row's pixels at a
  // time: 2-5x slower on LeNet's 6 channels, no faster on 64 to 256.)
  static bool max_pool_backward(const PoolArgs<T>& a) {
    return max_pool_scatter_unrolled<1>(a);
  }

  // Up to 8 channels (1: NCHW planes) the channel count is a compile-time
  // constant and its loop unrolled: LeNet's 6-channel channels_last backward
  // took 0.154-0.175 ms unrolled, 0.201-0.217 with the loop (one process,
  // alternating).
  static constexpr int kMaxUnrolledChannels = 8;

  template <int Channels>
  static bool max_pool_scatter_unrolled(const PoolArgs<T>& a) {
    if constexpr (Channels > kMaxUnrolledChannels) {
      return max_pool_scatter<0>(a);
    } else {
      return a.channels == Channels ? max_pool_scatter<Channels>(a) : max_pool_scatter_unrolled<Channels + 1>(a);
    }
  }

  // Channels: the count at compile time, or 0 for any.
  template <int Channels>
  static bool max_pool_scatter(const PoolArgs<T>& a) {
    const int64_t C = Channels ? Channels : a.channels, outputs = a.out_h * a.out_w, plane = a.in_h * a.in_w;
    zero(a.grad_input, plane * C);
    for (int64_t o = 0; o < outputs; ++o) {
      const T* g = a.grad_output + o * C;
      const int64_t* idx = a.grad_indices + o * C;
      for (int64_t c = 0; c < C; ++c) {
        if (static_cast<uint64_t>(idx[c]) >= static_cast<uint64_t>(plane)) {
          return false;
        }
        a.grad_input[idx[c] * C + c] += g[c];
      }
    }
    return true;
  }

  static int64_t avg_divisor(const PoolArgs<T>& a, int64_t oh, int64_t ow) {
    return a.divisor_override ? a.divisor_override : a.rows[oh].divisor * a.cols[ow].divisor;
  }

  static void avg_pool(const PoolArgs<T>& a) {
    const int64_t C = a.channels;
    const auto vector_fn = [&](int64_t oh, int64_t ow, int64_t c, const auto& lanes) {
      constexpr int CV = std::decay_t<decltype(lanes)>::vectors;
      const auto& rt = a.rows[oh];
      const auto& ct = a.cols[ow];  // along a row of full windows, every lane's divisor is this one
      const T* window = a.input + (rt.first * a.in_w + ct.first) * C + c;
      const int64_t out = (oh * a.out_w + ow) * C + c;
      if (!a.stream) {
        prefetch_for_store(a.output + out, (CV - 1) * L + lanes.stored);
      }
      vec sum[CV] = {};
      // A pixel of more channels than a call sums is read a block at a time;
      // each tap's next block is asked for with this one, so that the pixel
      // comes from memory in order (2x2 of 8 x 256 @56 channels_last on AVX2,
      // 128 channels a call: 0.57-0.98x torch without, 0.85-1.35x with, in
      // alternating runs). Only the pixel's channels are named: past the
      // last pixel's, no pointer is formed.
      const int64_t after = C - c - CV * L, next_block = after < CV * L ? after : CV * L;
      for (int64_t i = 0; i < rt.count; ++i) {
        for (int64_t j = 0; j < ct.count; ++j) {
          if (next_block > 0) {
            prefetch_for_load(window + (i * a.in_w + j) * C + CV * L, next_block);
          }
#pragma GCC unroll 16
          for (int v = 0; v < CV; ++v) {
            sum[v] += lanes.load(window + (i * a.in_w + j) * C, v);
          }
        }
      }
      const T divisor = static_cast<T>(avg_divisor(a, oh, ow));
#pragma GCC unroll 16
      for (int v = 0; v < CV; ++v) {
        store_output(a, a.output + out + v * L, lanes.in_order(sum[v]) / divisor, lanes.stored);
      }
    };
    const auto scalar_fn = [&](int64_t oh, int64_t ow, int64_t c) {
      const auto& rt = a.rows[oh];
      const auto& ct = a.cols[ow];
      T sum = 0;
      for (int64_t ih = rt.first; ih < rt.first + rt.count; ++ih) {
        for (int64_t iw = ct.first; iw < ct.first + ct.count; ++iw) {
          sum += a.input[(ih * a.in_w + iw) * C + c];
        }
      }
      a.output[(oh * a.out_w + ow) * C + c] = sum / static_cast<T>(avg_divisor(a, oh, ow));
    };
    for_each_output<kAvgPoolVectors>(a, vector_fn, scalar_fn);
    if (a.stream) {
      V::fence();
    }
  }

  // Whether the windows along an axis never share an input (stride >= kernel).
  static bool disjoint(const convext::cpu::PoolTaps* taps, int64_t count) {
    for (int64_t i = 1; i < count; ++i) {
      if (taps[i].first < taps[i - 1].first + taps[i - 1].count) {
        return false;
      }
    }
    return true;
  }

  // Calls f(start, length, in_window) for the runs of [begin, end) in order:
  // the gaps no window covers and the windows (sorted, disjoint) themselves.
  template <typename F>
  static void between_windows(const convext::cpu::PoolTaps* taps, int64_t windows, int64_t begin, int64_t end,
                              F f) {
    int64_t next = begin;
    for (int64_t i = 0; i < windows; ++i) {
      const int64_t first = taps[i].first > next ? taps[i].first : next;
      if (first > next) {
        f(next, first - next, false);
      }
      const int64_t last = taps[i].first + taps[i].count;
      if (last > first) {
        f(first, last - first, true);
      }
      next = last > first ? last : first;
    }
    if (end > next) {
      f(next, end - next, false);
    }
  }

  // share[ow] = the sum over output rows [first, end) of grad_output / divisor
  // (one division per output, as torch does), for every output column.
  static void row_shares(const PoolArgs<T>& a, int64_t first, int64_t end, const T* column_divisor,
                         T* share) {
    const auto shares = [&](int64_t ow, const auto& load) {
      const vec divisor = load(column_divisor + ow);
      vec sum{};
      for (int64_t oh = first; oh < end; ++oh) {
        const T row_divisor = static_cast<T>(a.divisor_override ? 1 : a.rows[oh].divisor);
        const vec quotient = load(a.grad_output + oh * a.out_w + ow) / (row_divisor * divisor);
        sum = oh == first ? quotient : sum + quotient;
      }
      return sum;
    };
    if (a.out_w < L) {  // lanes past out_w are 0 / 0, never stored
      const vec sum = shares(0, [&](const T* p) { return load_first(p, a.out_w); });
      store_first<1>(share, &sum, a.out_w);
      return;
    }
    for (int64_t ow = 0; ow < a.out_w; ow += L) {
      const int64_t at = ow + L <= a.out_w ? ow : a.out_w - L;  // the last vector overlaps the one before
      V::store(share + at, shares(at, [](const T* p) { return V::load(p); }));
    }
  }

  // Lane l of the result is lane (M * L + l) / K of x: vector M of x's lanes
  // each repeated K times.
  template <int K, int M, std::size_t... I>
  static vec repeat_lanes(vec x, std::index_sequence<I...>) {
    return __builtin_shufflevector(x, x, static_cast<int>((M * L + I) / K)...);
  }

  // row[K * i + k] = share[i] for i < count, k < K.
  template <int K, std::size_t... M>
  static void spread_shares(T* row, const T* share, int64_t count, std::index_sequence<M...>) {
    if (count < L) {
      for (int64_t i = 0; i < count; ++i) {
        for (int k = 0; k < K; ++k) {
          row[K * i + k] = share[i];
        }
      }
      return;
    }
    for (int64_t i = 0; i < count; i += L) {
      const int64_t at = i + L <= count ? i : count - L;  // the last vector overlaps the one before
      const vec x = V::load(share + at);
      (V::store(row + K * at + M * L, repeat_lanes<K, M>(x, std::make_index_sequence<L>{})), ...);
    }
  }

  // spread_shares<K> for K = 2 to 4; false (nothing written) for other K.
  static bool spread_shares(int64_t K, T* row, const T* share, int64_t count) {
    switch (K) {
      case 2: spread_shares<2>(row, share, count, std::make_index_sequence<2>{}); return true;
      case 3: spread_shares<3>(row, share, count, std::make_index_sequence<3>{}); return true;
      case 4: spread_shares<4>(row, share, count, std::make_index_sequence<4>{}); return true;
      default: return false;
    }
  }

  // row[iw] = share[windows[iw]] for iw in [begin, end).
  static void gather_shares(T* __restrict row, const T* __restrict share, const int64_t* __restrict windows,
                            int64_t begin, int64_t end) {
    for (int64_t iw = begin; iw < end; ++iw) {
      row[iw] = share[windows[iw]];
    }
  }

  // NCHW planes: an input row is the sum of the shares of the output rows over
  // it, spread along the row through column_windows (the columns no window
  // covers read a zero). Shares are summed once per run of output rows, and
  // every input is written once, with no zeroing pass. Windows of K = stride
  // columns side by side (2x2/2) spread their shares with shuffles, K
  // vectors a vector of shares; the rest (borders, overlaps) is a scalar
  // gather.
  static void avg_pool_plane_backward(const PoolArgs<T>& a) {
    T* __restrict share = a.scratch;  // out_w shares, then the zero
    T* __restrict column_divisor = a.scratch + a.out_w + 1;
    for (int64_t ow = 0; ow < a.out_w; ++ow) {
      column_divisor[ow] = static_cast<T>(a.divisor_override ? a.divisor_override : a.cols[ow].divisor);
    }
    share[a.out_w] = T(0);
    const int64_t run = a.full_cols_end - a.full_cols_begin;
    const int64_t side_by_side =
        run > 0 && a.column_layers == 1 && a.cols[a.full_cols_begin].count == a.stride_w ? a.stride_w : 0;
    const int64_t run_first = run > 0 ? a.cols[a.full_cols_begin].first : 0;
    const int64_t run_end = run_first + side_by_side * run;
    int64_t shared_first = -1, shared_end = -1;
    for (int64_t ih = 0; ih < a.in_h; ++ih) {
      const int64_t first = a.row_windows[2 * ih], end = a.row_windows[2 * ih + 1];
      T* __restrict row = a.grad_input + ih * a.in_w;
      if (first == end) {
        zero(row, a.in_w);
        continue;
      }
      if (first != shared_first || end != shared_end) {
        row_shares(a, first, end, column_divisor, share);
        shared_first = first;
        shared_end = end;
      }
      if (spread_shares(side_by_side, row + run_first, share + a.full_cols_begin, run)) {
        gather_shares(row, share, a.column_windows, 0, run_first);
        gather_shares(row, share, a.column_windows, run_end, a.in_w);
      } else {
        gather_shares(row, share, a.column_windows, 0, a.in_w);
      }
      const int64_t* windows = a.column_windows;
      for (int64_t layer = 1; layer < a.column_layers; ++layer) {
        windows += a.in_w;
        for (int64_t iw = 0; iw < a.in_w; ++iw) {
          row[iw] += share[windows[iw]];
        }
      }
    }
  }

  // Channels_last (NCHW planes: avg_pool_plane_backward): each output's share,
  // grad_output / divisor (computed once per output, as torch does, into a
  // row of shares in scratch), given to every input of its window, input
  // rows written in order. Disjoint windows (2x2/2) store it, and only the
  // inputs no window covers are zeroed: one write per input instead of a
  // zeroing pass and a read-modify-write. (Writing each output's window in
  // turn, a vector of channels to its 4 pixels at a time, the 2x2/2 pool of
  // 8 x 256 @56 ran at 0.76-1.12x torch, against 1.21-1.70x in order.)
  static void avg_pool_backward(const PoolArgs<T>& a) {
    if (a.channels == 1) {
      avg_pool_plane_backward(a);
      return;
    }
    const int64_t C = a.channels;
    const bool store = disjoint(a.rows, a.out_h) && disjoint(a.cols, a.out_w);
    if (store) {
      bool column_gaps = false;
      between_windows(a.cols, a.out_w, 0, a.in_w, [&](int64_t, int64_t, bool in_window) {
        column_gaps = column_gaps || !in_window;
      });
      between_windows(a.rows, a.out_h, 0, a.in_h, [&](int64_t ih, int64_t rows, bool covered) {
        if (!covered) {
          zero(a.grad_input + ih * a.in_w * C, rows * a.in_w * C);
          return;
        }
        for (int64_t r = ih; r < ih + rows && column_gaps; ++r) {
          between_windows(a.cols, a.out_w, 0, a.in_w, [&](int64_t iw, int64_t cols, bool in_window) {
            if (!in_window) {
              zero(a.grad_input + (r * a.in_w + iw) * C, cols * C);
            }
          });
        }
      });
    } else {
      zero(a.grad_input, a.in_h * a.in_w * C);
    }
    const bool stream = store && a.stream;
    T* __restrict share = a.scratch;  // a row of outputs' shares
    for (int64_t oh = 0; oh < a.out_h; ++oh) {
      for (int64_t ow = 0; ow < a.out_w; ++ow) {
        const T divisor = static_cast<T>(avg_divisor(a, oh, ow));
        const T* g = a.grad_output + (oh * a.out_w + ow) * C;
        for (int64_t c = 0; c < C; ++c) {
          share[ow * C + c] = g[c] / divisor;
        }
      }
      const auto& rt = a.rows[oh];
      for (int64_t ih = rt.first; ih < rt.first + rt.count; ++ih) {
        for (int64_t ow = 0; ow < a.out_w; ++ow) {
          const auto& ct = a.cols[ow];
          const T* s = share + ow * C;
          for (int64_t iw = ct.first; iw < ct.first + ct.count; ++iw) {
            T* gi = a.grad_input + (ih * a.in_w + iw) * C;
            int64_t c = 0;
            for (; c + L <= C; c += L) {
              if (stream) {
                V::stream(gi + c, V::load(s + c));
              } else {
                V::store(gi + c, store ? V::load(s + c) : V::load(gi + c) + V::load(s + c));
              }
            }
            for (; c < C; ++c) {
              gi[c] = store ? s[c] : gi[c] + s[c];
            }
          }
        }
      }
    }
    if (stream) {
      V::fence();
    }
  }

  static void stream_copy(const T* src, T* dst, int64_t count) {
    int64_t i = 0;
    for (; i + L <= count; i += L) {
      V::stream(dst + i, V::load(src + i));
    }
    for (; i < count; ++i) {
      dst[i] = src[i];
    }
    V::fence();
  }

  template <typename Out>
  static constexpr Out table() {
    return {L, kConvVectors, &conv_pixels<>,
            weight_grad_shape<kWideBroadcasts, 2>(), weight_grad_shape<2 * kWideBroadcasts, 1>(),
            weight_grad_shape<kShortBroadcasts, 1>(),
            &depthwise_pixels<>, &depthwise_input_grad, kPointwiseChannels, &pointwise, &tap_sums, PB, &planar_rows, &planar_weight_grad, &depthwise_plane, &depthwise_plane_weight_grad,
            &depthwise_weight_grad, &transpose<>, &transpose<Bytes == convext::cpu::kCacheLineBytes>, &stream_copy,
            kChains, &fma_loop, &column_sums, &sum,
            &max_pool, &max_pool_backward, &avg_pool, &avg_pool_backward};
  }
};

}  // namespace CONVEXT_ISA_NAMESPACE
