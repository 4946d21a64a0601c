#pragma once
// SIMD kernel templates over a vector width; included by isa_*.cpp, each of
// which compiles them for one instruction set inside its own namespace.
// Vectors are GCC/Clang vector extensions: the compiler emits the target's
// instructions (zmm on AVX-512, ymm on AVX2, xmm on baseline x86-64).
#include "isa.h"

namespace CONVEXT_ISA_NAMESPACE {

using convext::cpu::ConvPixelsArgs;
using convext::cpu::WeightGradArgs;

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
  static type broadcast(T x) { return type{} + x; }
};

template <typename T, int Bytes, int Registers>
struct Kernels {
  using V = Vec<T, Bytes>;
  using vec = typename V::type;
  static constexpr int L = V::lanes;

  // Pixels per register block: as many accumulators as the registers hold
  // beside the block's weight vectors and one broadcast.
  template <int NB>
  static constexpr int pixels_per_block() {
    const int fit = (Registers - NB - 2) / NB;
    return fit < 12 ? fit : 12;
  }

  template <int NB, int RW>
  static void conv_block(const ConvPixelsArgs<T>& a, int64_t first_pixel) {
    const T* x[RW];
#pragma GCC unroll 16
    for (int r = 0; r < RW; ++r) {
      const int64_t p = first_pixel + r;
      x[r] = a.input + p / a.out_w * a.stride_h * a.input_row + p % a.out_w * a.stride_w * a.input_pixel;
    }
    vec acc[RW][NB];
#pragma GCC unroll 16
    for (int r = 0; r < RW; ++r) {
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) {
        acc[r][b] = a.bias ? V::load(a.bias + b * L) : vec{};
      }
    }
    const T* w = a.weight;
    for (int64_t kh = 0; kh < a.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < a.kernel_w; ++kw) {
        const int64_t tap = kh * a.dilation_h * a.input_row + kw * a.dilation_w * a.input_pixel;
        for (int64_t ic = 0; ic < a.in_channels; ++ic, w += NB * L) {
          vec wv[NB];
#pragma GCC unroll 4
          for (int b = 0; b < NB; ++b) {
            wv[b] = V::load(w + b * L);
          }
#pragma GCC unroll 16
          for (int r = 0; r < RW; ++r) {
            const vec xv = V::broadcast(x[r][tap + ic]);
#pragma GCC unroll 4
            for (int b = 0; b < NB; ++b) {
              acc[r][b] += xv * wv[b];
            }
          }
        }
      }
    }
    const bool full_block = a.channels == NB * L;
    for (int r = 0; r < RW; ++r) {
      T* o = a.output + (first_pixel + r) * a.output_pixel;
      if (full_block) {
        for (int b = 0; b < NB; ++b) {
          V::store(o + b * L, acc[r][b]);
        }
      } else {
        T lanes[NB * L];
        for (int b = 0; b < NB; ++b) {
          V::store(lanes + b * L, acc[r][b]);
        }
        for (int64_t c = 0; c < a.channels; ++c) {
          o[c] = lanes[c];
        }
      }
    }
  }

  // Full register blocks, then a block of 4 and single pixels for the rest.
  template <int NB>
  static void conv_pixels_blocked(const ConvPixelsArgs<T>& a) {
    constexpr int RW = pixels_per_block<NB>();
    int64_t p = a.pixel_begin;
    for (; p + RW <= a.pixel_end; p += RW) {
      conv_block<NB, RW>(a, p);
    }
    if (RW > 4 && p + 4 <= a.pixel_end) {
      conv_block<NB, (RW > 4 ? 4 : 1)>(a, p);
      p += RW > 4 ? 4 : 1;
    }
    for (; p < a.pixel_end; ++p) {
      conv_block<NB, 1>(a, p);
    }
  }

  static void conv_pixels(const ConvPixelsArgs<T>& a) {
    switch (a.vectors) {
      case 1: return conv_pixels_blocked<1>(a);
      case 2: return conv_pixels_blocked<2>(a);
      case 3: return conv_pixels_blocked<3>(a);
      default: return conv_pixels_blocked<4>(a);
    }
  }

  // Weight-gradient tile: TO output channels (broadcast) by TI vectors of input channels.
  static constexpr int TO = Registers >= 32 ? 8 : 4;
  static constexpr int TI = 2;

  static void weight_grad_tile(const WeightGradArgs<T>& a) {
    vec acc[TO][TI];
#pragma GCC unroll 8
    for (int j = 0; j < TO; ++j) {
#pragma GCC unroll 2
      for (int i = 0; i < TI; ++i) {
        acc[j][i] = V::load(a.sums + j * TI * L + i * L);
      }
    }
    const int64_t pixel_step = a.stride_w * a.input_pixel;
    int64_t p = a.pixel_begin;
    while (p < a.pixel_end) {
      // One run of pixels along an output row.
      const int64_t col = p % a.out_w;
      const int64_t image = p / a.out_w / a.out_h, row = p / a.out_w % a.out_h;
      const int64_t run = (a.pixel_end - p) < (a.out_w - col) ? (a.pixel_end - p) : (a.out_w - col);
      const T* g = a.grad_output + p * a.grad_pixel;
      const T* x = a.input + image * a.input_image + row * a.stride_h * a.input_row + col * pixel_step;
      for (int64_t k = 0; k < run; ++k, g += a.grad_pixel, x += pixel_step) {
        vec xv[TI];
#pragma GCC unroll 2
        for (int i = 0; i < TI; ++i) {
          xv[i] = V::load(x + i * L);
        }
#pragma GCC unroll 8
        for (int j = 0; j < TO; ++j) {
          const vec gv = V::broadcast(g[j]);
#pragma GCC unroll 2
          for (int i = 0; i < TI; ++i) {
            acc[j][i] += gv * xv[i];
          }
        }
      }
      p += run;
    }
#pragma GCC unroll 8
    for (int j = 0; j < TO; ++j) {
#pragma GCC unroll 2
      for (int i = 0; i < TI; ++i) {
        V::store(a.sums + j * TI * L + i * L, acc[j][i]);
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
    for (int c = 0; c < kChains; ++c) {
      for (int l = 0; l < L; ++l) {
        total += acc[c][l];
      }
    }
    return total;
  }

  template <typename Out>
  static constexpr Out table() {
    return {L, TO, TI * L, &conv_pixels, &weight_grad_tile, kChains, &fma_loop};
  }
};

}  // namespace CONVEXT_ISA_NAMESPACE
