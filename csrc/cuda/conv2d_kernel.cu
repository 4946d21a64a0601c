// conv2d on CUDA. A dense convolution is an implicit GEMM, C[m, n] = sum over k
// of A[m, k] * B[k, n], one per group, whose operands are read straight from
// the tensors: the forward, the input gradient (which is also conv_transpose2d)
// and the weight gradient are three problems, each a functor saying where an
// operand element lives, and one kernel tiles them all through shared memory.
// Half types, and float32 when torch lets cuDNN use TF32, multiply on tensor
// cores (wmma) and sum in float32.
//
// Convolutions with few channels per group (depthwise, ResNeXt's 4 per group)
// would leave a GEMM tile mostly empty: direct kernels run them instead.
//
// No float atomics: the weight gradient splits its long sum over pixels into
// partial sums that a second kernel adds in a fixed order, and the bias and
// direct weight gradients reduce in a fixed tree, so results are the same run
// to run.
#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <torch/library.h>

#include <optional>
#include <type_traits>

#include "../conv2d.h"
#include "common.cuh"

namespace convext::cuda {
namespace {

// ---------------------------------------------------------------------------
// Index maps shared by the problems.

// A flat index over (channel, kernel row, kernel column) in the memory order of
// the layout: channels fastest for channels_last, kernel columns otherwise, so
// that consecutive indices read neighbouring elements.
struct ChannelTap {
  int64_t channel, r, c;
};

struct ChannelTapOrder {
  int64_t channels, kernel_h, kernel_w;
  bool channels_last;

  __device__ ChannelTap operator()(int64_t i) const {
    ChannelTap t;
    if (channels_last) {
      t.channel = i % channels;
      i /= channels;
      t.c = i % kernel_w;
      t.r = i / kernel_w;
    } else {
      t.c = i % kernel_w;
      i /= kernel_w;
      t.r = i % kernel_h;
      t.channel = i / kernel_h;
    }
    return t;
  }
};

// A flat index over (image, row, column) of a rows x cols plane.
struct Pixel {
  int64_t n, y, x;
};

__device__ inline Pixel pixel_of(int64_t i, int64_t rows, int64_t cols) {
  const int64_t x = i % cols;
  i /= cols;
  return {i / rows, i % rows, x};
}

// The input position that tap (r, c) of output pixel (y, x) reads, and
// whether it lies inside the input (else it reads padding).
struct TapRead {
  int64_t h, w;
  bool inside;
};

__device__ inline TapRead tap_read(const Conv2dShape& s, int64_t y, int64_t x, int64_t r, int64_t c) {
  const int64_t h = s.h.origin(y) + r * s.h.dilation, w = s.w.origin(x) + c * s.w.dilation;
  return {h, w, h >= 0 && h < s.h.in_size && w >= 0 && w < s.w.in_size};
}

// The input element that tap t of output pixel p reads in group g, or zero
// where it reads padding: the forward's A and the weight gradient's B.
template <typename T>
__device__ T input_at_tap(const Tensor4<const T>& input, const Conv2dShape& s, int64_t g, const Pixel& p,
                          const ChannelTap& t) {
  const TapRead at = tap_read(s, p.y, p.x, t.r, t.c);
  return at.inside ? input(p.n, g * s.in_per_group() + t.channel, at.h, at.w) : T(0.0f);
}

// An optional bias, read through its stride; zero without one.
template <typename T>
struct Bias {
  const T* data;
  int64_t stride;

  __device__ at::opmath_type<T> operator()(int64_t c) const {
    return data != nullptr ? static_cast<at::opmath_type<T>>(data[c * stride]) : at::opmath_type<T>(0);
  }
};

template <typename T>
Bias<T> bias_view(const std::optional<at::Tensor>& bias) {
  return bias.has_value() ? Bias<T>{bias->const_data_ptr<T>(), bias->stride(0)} : Bias<T>{nullptr, 0};
}

// Where the forward and the input gradient put GEMM result (m, n) of group g:
// pixel m of `out`, channel n of the group's `per_group`, plus the bias.
template <typename T>
struct BiasedOutput {
  Tensor4<T> out;
  Bias<T> bias;
  int64_t per_group;

  __device__ void store(int64_t g, int64_t m, int64_t n, at::opmath_type<T> sum) const {
    const Pixel p = pixel_of(m, out.size[2], out.size[3]);
    const int64_t c = g * per_group + n;
    if (bias.data != nullptr) {
      sum += bias(c);
    }
    out(p.n, c, p.y, p.x) = static_cast<T>(sum);
  }
};

// ---------------------------------------------------------------------------
// The three GEMM problems. Each says, per group g: the GEMM's sizes, operand
// elements a(g, m, k) and b(g, k, n) (zero where the window reads padding),
// where result (m, n) goes, and along which axis each operand and the result
// are contiguous in memory, so that consecutive threads load and store
// consecutive addresses.

template <typename T>
struct ProblemBase {
  using scalar_t = T;
  using acc_t = at::opmath_type<T>;
  Conv2dShape s;
  int64_t m_size, n_size, k_size;
  bool a_m_fastest, b_n_fastest, c_m_fastest;
};

// output[n, oc, y, x] = bias[oc] + sum over (ic, r, c) of input * weight.
// m: output pixel, n: output channel in the group, k: (input channel, tap).
template <typename T>
struct ForwardProblem : ProblemBase<T> {
  Tensor4<const T> input, weight;
  BiasedOutput<T> output;
  ChannelTapOrder k_order;

  __device__ T a(int64_t g, int64_t m, int64_t k) const {
    const Conv2dShape& s = this->s;
    return input_at_tap(input, s, g, pixel_of(m, s.h.out_size, s.w.out_size), k_order(k));
  }

  __device__ T b(int64_t g, int64_t k, int64_t n) const {
    const ChannelTap t = k_order(k);
    return weight(g * this->s.out_per_group() + n, t.channel, t.r, t.c);
  }

  __device__ void store(int64_t g, int64_t /*split*/, int64_t m, int64_t n,
                        typename ProblemBase<T>::acc_t sum) const {
    output.store(g, m, n, sum);
  }
};

// grad_input[n, ic, y, x] = bias[ic] + sum over (oc, r, c) of grad_output at
// the output pixel whose tap (r, c) reads (y, x), if there is one, * weight.
// m: input pixel, n: input channel in the group, k: (output channel, tap).
// With a bias this is conv_transpose2d.
template <typename T>
struct InputGradProblem : ProblemBase<T> {
  Tensor4<const T> grad_output, weight;
  BiasedOutput<T> grad_input;
  ChannelTapOrder k_order;

  // The output position whose tap reads input position i, or -1.
  __device__ static int64_t output_reading(int64_t i, int64_t tap, const WindowAxis& a) {
    const int64_t offset = i + a.pad - tap * a.dilation;
    if (offset < 0 || offset % a.stride != 0 || offset / a.stride >= a.out_size) {
      return -1;
    }
    return offset / a.stride;
  }

  __device__ T a(int64_t g, int64_t m, int64_t k) const {
    const Conv2dShape& s = this->s;
    const Pixel p = pixel_of(m, s.h.in_size, s.w.in_size);
    const ChannelTap t = k_order(k);
    const int64_t oy = output_reading(p.y, t.r, s.h), ox = output_reading(p.x, t.c, s.w);
    return oy >= 0 && ox >= 0 ? grad_output(p.n, g * s.out_per_group() + t.channel, oy, ox)
                              : T(0.0f);
  }

  __device__ T b(int64_t g, int64_t k, int64_t n) const {
    const ChannelTap t = k_order(k);
    return weight(g * this->s.out_per_group() + t.channel, n, t.r, t.c);
  }

  __device__ void store(int64_t g, int64_t /*split*/, int64_t m, int64_t n,
                        typename ProblemBase<T>::acc_t sum) const {
    grad_input.store(g, m, n, sum);
  }
};

// grad_weight[oc, ic, r, c] = sum over output pixels of grad_output * the
// input its tap (r, c) read. m: output channel in the group, n: (input channel,
// tap), k: output pixel. The sum over k is split; each split stores its
// partial sum, and sum_partials_kernel adds them in order.
template <typename T>
struct WeightGradProblem : ProblemBase<T> {
  using acc_t = typename ProblemBase<T>::acc_t;
  Tensor4<const T> grad_output, input;
  acc_t* partials;  // [split][group][m][n]
  ChannelTapOrder n_order;

  __device__ T a(int64_t g, int64_t m, int64_t k) const {
    const Conv2dShape& s = this->s;
    const Pixel p = pixel_of(k, s.h.out_size, s.w.out_size);
    return grad_output(p.n, g * s.out_per_group() + m, p.y, p.x);
  }

  __device__ T b(int64_t g, int64_t k, int64_t n) const {
    const Conv2dShape& s = this->s;
    return input_at_tap(input, s, g, pixel_of(k, s.h.out_size, s.w.out_size), n_order(n));
  }

  __device__ void store(int64_t g, int64_t split, int64_t m, int64_t n, acc_t sum) const {
    partials[((split * this->s.groups + g) * this->m_size + m) * this->n_size + n] = sum;
  }
};

// ---------------------------------------------------------------------------
// The tiled implicit GEMM: a block computes a kTileM x kTileN tile of C for one
// group and one split of k, stepping through k kTileK at a time; each step
// loads both operand tiles into shared memory, then multiplies them either on
// CUDA cores (each thread a 4 x 4 block of C in registers) or on tensor cores
// (each warp a 16 x 32 block of C in wmma fragments).

constexpr int kTileM = 64, kTileN = 64, kTileK = 16, kGemmThreads = 256;
// Row padding of the shared tiles: shifts rows across banks and keeps every
// wmma fragment pointer 32-byte aligned (8 elements of 2 or 4 bytes).
constexpr int kPad = 8;
constexpr int kMicro = 4;  // CUDA-core path: each thread's C block is kMicro x kMicro
static_assert(kTileM * kTileN == kGemmThreads * kMicro * kMicro);

namespace wmma = nvcuda::wmma;

// The wmma fragment element type and k step of each dtype that tensor cores
// take; float32 goes through them as TF32.
template <typename T>
struct TensorCoreType {
  static constexpr bool supported = false;
};
template <>
struct TensorCoreType<c10::Half> {
  static constexpr bool supported = true;
  using fragment_t = __half;
  using storage_t = __half;
  static constexpr int k_step = 16;
};
template <>
struct TensorCoreType<c10::BFloat16> {
  static constexpr bool supported = true;
  using fragment_t = __nv_bfloat16;
  using storage_t = __nv_bfloat16;
  static constexpr int k_step = 16;
};
template <>
struct TensorCoreType<float> {
  static constexpr bool supported = true;
  using fragment_t = wmma::precision::tf32;
  using storage_t = float;
  static constexpr int k_step = 8;
};

template <typename T>
struct OperandTiles {
  T a[kTileK][kTileM + kPad];  // a[k][m]: column-major A
  T b[kTileK][kTileN + kPad];  // b[k][n]: row-major B
};

// Loads A[m0.., k0..] and B[k0.., n0..] into shared memory, zeros past the
// edges of the GEMM or of this split's k range [k0, k_end).
template <typename Problem, typename T>
__device__ void load_operand_tiles(const Problem& p, OperandTiles<T>& tiles, int64_t g, int64_t m0,
                                   int64_t n0, int64_t k0, int64_t k_end) {
  for (int e = threadIdx.x; e < kTileM * kTileK; e += kGemmThreads) {
    const int mi = p.a_m_fastest ? e % kTileM : e / kTileK;
    const int ki = p.a_m_fastest ? e / kTileM : e % kTileK;
    const int64_t m = m0 + mi, k = k0 + ki;
    tiles.a[ki][mi] = m < p.m_size && k < k_end ? p.a(g, m, k) : T(0.0f);
  }
  for (int e = threadIdx.x; e < kTileK * kTileN; e += kGemmThreads) {
    const int ni = p.b_n_fastest ? e % kTileN : e / kTileK;
    const int ki = p.b_n_fastest ? e / kTileN : e % kTileK;
    const int64_t n = n0 + ni, k = k0 + ki;
    tiles.b[ki][ni] = n < p.n_size && k < k_end ? p.b(g, k, n) : T(0.0f);
  }
}

struct GemmTile {
  int64_t g, split, m0, n0, k0, k_end;
};

// Tile t of the grid-stride loop; m tiles are fastest, so that neighbouring
// blocks share their B tile (the weights, in the forward) in L2.
__device__ inline GemmTile gemm_tile(int64_t t, int64_t m_size, int64_t n_size, int64_t k_size,
                                     int64_t splits, int64_t k_per_split) {
  const int64_t tiles_m = ceil_div(m_size, kTileM), tiles_n = ceil_div(n_size, kTileN);
  const int64_t slice = t / (tiles_m * tiles_n);
  const int64_t split = slice % splits;
  const int64_t k0 = split * k_per_split;
  return {slice / splits, split, t % tiles_m * kTileM, t / tiles_m % tiles_n * kTileN, k0,
          std::min(k_size, k0 + k_per_split)};
}

template <typename Problem>
__global__ void __launch_bounds__(kGemmThreads)
    implicit_gemm_cuda_cores_kernel(Problem p, int64_t tiles, int64_t splits, int64_t k_per_split) {
  using T = typename Problem::scalar_t;
  using acc_t = typename Problem::acc_t;
  __shared__ OperandTiles<T> tiles_smem;
  const int row = threadIdx.x / (kTileN / kMicro) * kMicro;
  const int col = threadIdx.x % (kTileN / kMicro) * kMicro;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const GemmTile tile = gemm_tile(t, p.m_size, p.n_size, p.k_size, splits, k_per_split);
    acc_t sum[kMicro][kMicro] = {};
    for (int64_t k0 = tile.k0; k0 < tile.k_end; k0 += kTileK) {
      load_operand_tiles(p, tiles_smem, tile.g, tile.m0, tile.n0, k0, tile.k_end);
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTileK; ++kk) {
        acc_t a[kMicro], b[kMicro];
#pragma unroll
        for (int i = 0; i < kMicro; ++i) {
          a[i] = static_cast<acc_t>(tiles_smem.a[kk][row + i]);
          b[i] = static_cast<acc_t>(tiles_smem.b[kk][col + i]);
        }
#pragma unroll
        for (int i = 0; i < kMicro; ++i) {
#pragma unroll
          for (int j = 0; j < kMicro; ++j) {
            sum[i][j] += a[i] * b[j];
          }
        }
      }
      __syncthreads();
    }
    for (int i = 0; i < kMicro; ++i) {
      for (int j = 0; j < kMicro; ++j) {
        const int64_t m = tile.m0 + row + i, n = tile.n0 + col + j;
        if (m < p.m_size && n < p.n_size) {
          p.store(tile.g, tile.split, m, n, sum[i][j]);
        }
      }
    }
  }
}

// Tensor cores: 8 warps, warp w computing rows (w % 4) * 16 and columns
// (w / 4) * 32 of the tile as two 16 x 16 float fragments. The result goes
// through shared memory so that stores follow the layout (c_m_fastest).
template <typename Problem>
__global__ void __launch_bounds__(kGemmThreads)
    implicit_gemm_tensor_cores_kernel(Problem p, int64_t tiles, int64_t splits, int64_t k_per_split) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // the host launches this on compute capability 8.0 and up only
#else
  using T = typename Problem::scalar_t;
  using TC = TensorCoreType<T>;
  using storage_t = typename TC::storage_t;
  constexpr int k_step = TC::k_step;
  static_assert(kGemmThreads / 32 == (kTileM / 16) * (kTileN / 32));
  __shared__ __align__(32) OperandTiles<T> tiles_smem;
  __shared__ __align__(32) float result[kTileM][kTileN + kPad];
  const int warp = threadIdx.x / 32;
  const int warp_m = warp % (kTileM / 16) * 16, warp_n = warp / (kTileM / 16) * 32;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const GemmTile tile = gemm_tile(t, p.m_size, p.n_size, p.k_size, splits, k_per_split);
    wmma::fragment<wmma::accumulator, 16, 16, k_step, float> sum[2];
    wmma::fill_fragment(sum[0], 0.0f);
    wmma::fill_fragment(sum[1], 0.0f);
    for (int64_t k0 = tile.k0; k0 < tile.k_end; k0 += kTileK) {
      load_operand_tiles(p, tiles_smem, tile.g, tile.m0, tile.n0, k0, tile.k_end);
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTileK; kk += k_step) {
        wmma::fragment<wmma::matrix_a, 16, 16, k_step, typename TC::fragment_t, wmma::col_major> a;
        wmma::load_matrix_sync(a, reinterpret_cast<const storage_t*>(&tiles_smem.a[kk][warp_m]),
                               kTileM + kPad);
        if constexpr (std::is_same_v<T, float>) {
          for (int e = 0; e < a.num_elements; ++e) {
            a.x[e] = wmma::__float_to_tf32(a.x[e]);
          }
        }
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, k_step, typename TC::fragment_t, wmma::row_major> b;
          wmma::load_matrix_sync(b, reinterpret_cast<const storage_t*>(&tiles_smem.b[kk][warp_n + 16 * j]),
                                 kTileN + kPad);
          if constexpr (std::is_same_v<T, float>) {
            for (int e = 0; e < b.num_elements; ++e) {
              b.x[e] = wmma::__float_to_tf32(b.x[e]);
            }
          }
          wmma::mma_sync(sum[j], a, b, sum[j]);
        }
      }
      __syncthreads();
    }
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(&result[warp_m][warp_n + 16 * j], sum[j], kTileN + kPad, wmma::mem_row_major);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kTileM * kTileN; e += kGemmThreads) {
      const int mi = p.c_m_fastest ? e % kTileM : e / kTileN;
      const int ni = p.c_m_fastest ? e / kTileM : e % kTileN;
      const int64_t m = tile.m0 + mi, n = tile.n0 + ni;
      if (m < p.m_size && n < p.n_size) {
        p.store(tile.g, tile.split, m, n, result[mi][ni]);
      }
    }
    __syncthreads();  // result is read before the next tile overwrites it
  }
#endif
}

// Tensor cores exactly where torch would let cuDNN use them: half types
// always, float32 when TF32 is allowed for convolutions.
template <typename T>
bool use_tensor_cores() {
  if constexpr (!TensorCoreType<T>::supported) {
    return false;
  } else {
    if (at::cuda::getCurrentDeviceProperties()->major < 8) {
      return false;
    }
    return !std::is_same_v<T, float> || at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
  }
}

template <typename Problem>
void run_implicit_gemm(const Problem& p, int64_t splits, int64_t k_per_split) {
  using T = typename Problem::scalar_t;
  const int64_t tiles = ceil_div(p.m_size, kTileM) * ceil_div(p.n_size, kTileN) * p.s.groups * splits;
  const auto blocks = static_cast<unsigned int>(std::min<int64_t>(tiles, int64_t{1} << 20));
  if constexpr (TensorCoreType<T>::supported) {
    if (use_tensor_cores<T>()) {
      implicit_gemm_tensor_cores_kernel<<<blocks, kGemmThreads, 0, stream()>>>(p, tiles, splits, k_per_split);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
  implicit_gemm_cuda_cores_kernel<<<blocks, kGemmThreads, 0, stream()>>>(p, tiles, splits, k_per_split);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---------------------------------------------------------------------------
// Direct kernels, for groups too narrow to fill a GEMM tile.

// A GEMM side with fewer channels than this would leave 3/4 of a tile empty.
constexpr int64_t kNarrowChannels = kTileN / 4;

// A thread per output: output[n, oc, y, x] over its group's input channels and
// the taps inside the input.
template <typename T>
__global__ void conv2d_direct_forward_kernel(Tensor4<const T> input, Tensor4<const T> weight,
                                             Bias<T> bias, Tensor4<T> output, Conv2dShape s, bool nhwc) {
  using acc_t = at::opmath_type<T>;
  CONVEXT_GRID_STRIDE_LOOP(i, output.size[0] * output.size[1] * output.size[2] * output.size[3]) {
    const Coords o = coords_of(i, output.size, nhwc);
    const int64_t first_in = o.c / s.out_per_group() * s.in_per_group();
    const Range rows = s.h.taps(o.h), cols = s.w.taps(o.w);
    const int64_t top = s.h.origin(o.h), left = s.w.origin(o.w);
    acc_t sum = bias(o.c);
    for (int64_t ic = 0; ic < s.in_per_group(); ++ic) {
      for (int64_t r = rows.begin; r < rows.end; ++r) {
        for (int64_t c = cols.begin; c < cols.end; ++c) {
          sum += static_cast<acc_t>(input(o.n, first_in + ic, top + r * s.h.dilation, left + c * s.w.dilation)) *
                 static_cast<acc_t>(weight(o.c, ic, r, c));
        }
      }
    }
    output(o.n, o.c, o.h, o.w) = static_cast<T>(sum);
  }
}

// A thread per input element: grad_input[n, ic, y, x] gathers, from the
// outputs whose window covers (y, x) at a tap (not between taps of a dilated
// window), grad_output * weight over its group's output channels. With a bias
// this is conv_transpose2d.
template <typename T>
__global__ void conv2d_direct_input_grad_kernel(Tensor4<const T> grad_output, Tensor4<const T> weight,
                                                Bias<T> bias, Tensor4<T> grad_input, Conv2dShape s,
                                                bool nhwc) {
  using acc_t = at::opmath_type<T>;
  CONVEXT_GRID_STRIDE_LOOP(i, grad_input.size[0] * grad_input.size[1] * grad_input.size[2] *
                                  grad_input.size[3]) {
    const Coords p = coords_of(i, grad_input.size, nhwc);
    const int64_t ic = p.c % s.in_per_group(), first_out = p.c / s.in_per_group() * s.out_per_group();
    const Range rows = s.h.outputs_covering(p.h), cols = s.w.outputs_covering(p.w);
    acc_t sum = bias(p.c);
    for (int64_t oy = rows.begin; oy < rows.end; ++oy) {
      const int64_t dy = p.h - s.h.origin(oy);
      if (dy % s.h.dilation != 0) {
        continue;
      }
      for (int64_t ox = cols.begin; ox < cols.end; ++ox) {
        const int64_t dx = p.w - s.w.origin(ox);
        if (dx % s.w.dilation != 0) {
          continue;
        }
        for (int64_t oc = first_out; oc < first_out + s.out_per_group(); ++oc) {
          sum += static_cast<acc_t>(grad_output(p.n, oc, oy, ox)) *
                 static_cast<acc_t>(weight(oc, ic, dy / s.h.dilation, dx / s.w.dilation));
        }
      }
    }
    grad_input(p.n, p.c, p.h, p.w) = static_cast<T>(sum);
  }
}

// Sums one value from each of the block's kThreads threads in a fixed tree
// over shared memory: the same result run to run. Every thread must call it.
__device__ double block_sum(double value) {
  __shared__ double partial[kThreads];
  partial[threadIdx.x] = value;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      partial[threadIdx.x] += partial[threadIdx.x + half];
    }
    __syncthreads();
  }
  const double total = partial[0];
  __syncthreads();  // partial is free again once every thread has read it
  return total;
}

// The sum of term(i) over i in [0, count): each thread adds a strided share in
// double, then block_sum. Every thread must call it.
template <typename Term>
__device__ double block_sum_over(int64_t count, const Term& term) {
  double sum = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) {
    sum += term(i);
  }
  return block_sum(sum);
}

// A block per weight element (oc, ic, r, c), its threads striding over the
// output pixels; sums in double, as the CPU's weight gradients fold theirs.
template <typename T>
__global__ void conv2d_direct_weight_grad_kernel(Tensor4<const T> grad_output, Tensor4<const T> input,
                                                 Tensor4<T> grad_weight, Conv2dShape s, ChannelTapOrder order) {
  const int64_t taps = s.in_per_group() * s.h.kernel * s.w.kernel;
  const int64_t pixels = s.batch * s.h.out_size * s.w.out_size;
  for (int64_t e = blockIdx.x; e < s.out_channels * taps; e += gridDim.x) {
    const int64_t oc = e / taps;
    const ChannelTap t = order(e % taps);
    const int64_t ic = oc / s.out_per_group() * s.in_per_group() + t.channel;
    const double total = block_sum_over(pixels, [&](int64_t i) {
      const Pixel p = pixel_of(i, s.h.out_size, s.w.out_size);
      const TapRead at = tap_read(s, p.y, p.x, t.r, t.c);
      // Taps on padding add nothing (a zero term leaves a double sum as it is).
      return at.inside ? static_cast<double>(grad_output(p.n, oc, p.y, p.x)) *
                             static_cast<double>(input(p.n, ic, at.h, at.w))
                       : 0.0;
    });
    if (threadIdx.x == 0) {
      grad_weight(oc, t.channel, t.r, t.c) = static_cast<T>(total);
    }
  }
}

// Adds the weight gradient's split partial sums in split order, in double.
template <typename T>
__global__ void sum_partials_kernel(const at::opmath_type<T>* partials, int64_t splits, Conv2dShape s,
                                    int64_t n_size, Tensor4<T> grad_weight, ChannelTapOrder n_order) {
  const int64_t per_split = s.out_channels * n_size;  // [group][m][n] is [out channel][n]
  CONVEXT_GRID_STRIDE_LOOP(i, per_split) {
    double sum = 0;
    for (int64_t split = 0; split < splits; ++split) {
      sum += static_cast<double>(partials[split * per_split + i]);
    }
    const int64_t oc = i / n_size;
    const ChannelTap t = n_order(i % n_size);
    grad_weight(oc, t.channel, t.r, t.c) = static_cast<T>(sum);
  }
}

// A block per channel, its threads striding over (n, y, x); sums in double.
template <typename T>
__global__ void conv2d_bias_grad_kernel(Tensor4<const T> grad_output, T* grad_bias) {
  const int64_t pixels = grad_output.size[0] * grad_output.size[2] * grad_output.size[3];
  for (int64_t c = blockIdx.x; c < grad_output.size[1]; c += gridDim.x) {
    const double total = block_sum_over(pixels, [&](int64_t i) {
      const Pixel p = pixel_of(i, grad_output.size[2], grad_output.size[3]);
      return static_cast<double>(grad_output(p.n, c, p.y, p.x));
    });
    if (threadIdx.x == 0) {
      grad_bias[c] = static_cast<T>(total);
    }
  }
}

// ---------------------------------------------------------------------------
// The ops.

// Pixels a split of the weight gradient sums in its accumulators before the
// ordered double sum of the splits takes over, as the CPU folds at 4096 pixels.
constexpr int64_t kSplitPixels = 4096;
// The partial sums are capped at this size; past it splits grow longer.
constexpr int64_t kMaxPartialBytes = int64_t{256} << 20;

unsigned int block_per_item(int64_t count) {
  return static_cast<unsigned int>(std::clamp<int64_t>(count, 1, int64_t{1} << 20));
}

template <typename T>
ProblemBase<T> problem_base(const Conv2dShape& s, int64_t m_size, int64_t n_size, int64_t k_size,
                            bool a_m_fastest, bool b_n_fastest, bool c_m_fastest) {
  return {s, m_size, n_size, k_size, a_m_fastest, b_n_fastest, c_m_fastest};
}

// Each runs dense groups as a GEMM and narrow ones directly.
template <typename T>
void conv2d_forward(const Conv2dShape& s, const at::Tensor& input, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, at::Tensor& output, bool nhwc) {
  if (s.out_per_group() < kNarrowChannels) {
    conv2d_direct_forward_kernel<T><<<blocks_for(output.numel()), kThreads, 0, stream()>>>(
        view4<const T>(input), view4<const T>(weight), bias_view<T>(bias), view4<T>(output), s, nhwc);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  ForwardProblem<T> p{problem_base<T>(s, s.batch * s.h.out_size * s.w.out_size, s.out_per_group(),
                                      s.in_per_group() * s.h.kernel * s.w.kernel, !nhwc, false, !nhwc),
                      view4<const T>(input), view4<const T>(weight),
                      {view4<T>(output), bias_view<T>(bias), s.out_per_group()},
                      {s.in_per_group(), s.h.kernel, s.w.kernel, nhwc}};
  run_implicit_gemm(p, 1, p.k_size);
}

// The input of the convolution `s` from its output: its input gradient, or
// with a bias conv_transpose2d.
template <typename T>
void conv2d_input_grad(const Conv2dShape& s, const at::Tensor& grad_output, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::Tensor& grad_input, bool nhwc) {
  if (s.in_per_group() < kNarrowChannels) {
    conv2d_direct_input_grad_kernel<T><<<blocks_for(grad_input.numel()), kThreads, 0, stream()>>>(
        view4<const T>(grad_output), view4<const T>(weight), bias_view<T>(bias), view4<T>(grad_input), s,
        nhwc);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  InputGradProblem<T> p{problem_base<T>(s, s.batch * s.h.in_size * s.w.in_size, s.in_per_group(),
                                        s.out_per_group() * s.h.kernel * s.w.kernel, !nhwc, nhwc, !nhwc),
                        view4<const T>(grad_output), view4<const T>(weight),
                        {view4<T>(grad_input), bias_view<T>(bias), s.in_per_group()},
                        {s.out_per_group(), s.h.kernel, s.w.kernel, nhwc}};
  run_implicit_gemm(p, 1, p.k_size);
}

template <typename T>
void conv2d_weight_grad(const Conv2dShape& s, const at::Tensor& grad_output, const at::Tensor& input,
                        at::Tensor& grad_weight, bool nhwc) {
  using acc_t = at::opmath_type<T>;
  const ChannelTapOrder order{s.in_per_group(), s.h.kernel, s.w.kernel, nhwc};
  const int64_t n_size = s.in_per_group() * s.h.kernel * s.w.kernel;
  if (s.out_per_group() < kNarrowChannels) {
    conv2d_direct_weight_grad_kernel<T><<<block_per_item(grad_weight.numel()), kThreads, 0, stream()>>>(
        view4<const T>(grad_output), view4<const T>(input), view4<T>(grad_weight), s, order);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int64_t pixels = s.batch * s.h.out_size * s.w.out_size;
  const int64_t split_bytes = s.out_channels * n_size * static_cast<int64_t>(sizeof(acc_t));
  const int64_t splits_wanted = std::clamp<int64_t>(
      std::min(ceil_div(pixels, kSplitPixels), kMaxPartialBytes / split_bytes), 1, pixels);
  const int64_t k_per_split = ceil_div(ceil_div(pixels, splits_wanted), kTileK) * kTileK;
  const int64_t splits = ceil_div(pixels, k_per_split);
  at::Tensor partials = at::empty({splits * s.out_channels * n_size},
                                  grad_weight.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  WeightGradProblem<T> p{problem_base<T>(s, s.out_per_group(), n_size, pixels, nhwc, nhwc, false),
                         view4<const T>(grad_output), view4<const T>(input),
                         partials.mutable_data_ptr<acc_t>(), order};
  run_implicit_gemm(p, splits, k_per_split);
  sum_partials_kernel<T><<<blocks_for(grad_weight.numel()), kThreads, 0, stream()>>>(
      partials.const_data_ptr<acc_t>(), splits, s, n_size, view4<T>(grad_weight), order);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor conv2d_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "convext.conv2d";
  const Conv2dShape s = conv2d_check(input, weight, bias, stride, padding, dilation, groups, op);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat format = conv2d_memory_format(input, weight);
  at::Tensor output = empty_like_layout({s.batch, s.out_channels, s.h.out_size, s.w.out_size}, input, format,
                                        input.scalar_type());
  if (output.numel() == 0) {
    return output;
  }
  CONVEXT_DISPATCH_CUDA_TYPES(input.scalar_type(), op, [&] {
    conv2d_forward<scalar_t>(s, input, weight, bias, output, format == at::MemoryFormat::ChannelsLast);
  });
  return output;
}

at::Tensor conv2d_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                      const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "convext.conv2d_backward_input";
  const Conv2dShape s = conv2d_backward_check(grad_output, input, weight, stride, padding, dilation, groups, op);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat format = conv2d_memory_format(input, weight);
  at::Tensor grad_input = empty_like_layout(input.sizes(), input, format, input.scalar_type());
  if (grad_input.numel() == 0) {
    return grad_input;
  }
  CONVEXT_DISPATCH_CUDA_TYPES(input.scalar_type(), op, [&] {
    conv2d_input_grad<scalar_t>(s, grad_output, weight, std::nullopt, grad_input,
                                format == at::MemoryFormat::ChannelsLast);
  });
  return grad_input;
}

at::Tensor conv2d_backward_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                       const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                       at::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "convext.conv2d_backward_weight";
  const Conv2dShape s = conv2d_backward_check(grad_output, input, weight, stride, padding, dilation, groups, op);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat format = conv2d_memory_format(input, weight);
  at::Tensor grad_weight = empty_like_layout(weight.sizes(), weight, format, weight.scalar_type());
  if (s.batch == 0) {
    return grad_weight.zero_();
  }
  CONVEXT_DISPATCH_CUDA_TYPES(input.scalar_type(), op, [&] {
    conv2d_weight_grad<scalar_t>(s, grad_output, input, grad_weight, format == at::MemoryFormat::ChannelsLast);
  });
  return grad_weight;
}

at::Tensor conv2d_backward_bias_cuda(const at::Tensor& grad_output) {
  constexpr const char* op = "convext.conv2d_backward_bias";
  check_rank(grad_output, 4, op, "grad_output", "(N, C, H, W)");
  check_supported_dtype(grad_output, op, "grad_output");
  const c10::cuda::CUDAGuard guard(grad_output.device());
  at::Tensor grad_bias = at::empty({grad_output.size(1)}, grad_output.options());
  if (grad_output.numel() == 0) {
    return grad_bias.zero_();
  }
  CONVEXT_DISPATCH_CUDA_TYPES(grad_output.scalar_type(), op, [&] {
    conv2d_bias_grad_kernel<scalar_t><<<block_per_item(grad_output.size(1)), kThreads, 0, stream()>>>(
        view4<const scalar_t>(grad_output), grad_bias.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_bias;
}

at::Tensor conv_transpose2d_cuda(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                 at::IntArrayRef dilation) {
  constexpr const char* op = "convext.conv_transpose2d";
  const Conv2dShape s =
      conv_transpose2d_check(input, weight, bias, stride, padding, output_padding, groups, dilation, op);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat format = conv2d_memory_format(input, weight);
  at::Tensor output = empty_like_layout({s.batch, s.in_channels, s.h.in_size, s.w.in_size}, input, format,
                                        input.scalar_type());
  if (output.numel() == 0) {  // an empty batch, or padding that crops the whole output
    return output;
  }
  CONVEXT_DISPATCH_CUDA_TYPES(input.scalar_type(), op, [&] {
    conv2d_input_grad<scalar_t>(s, input, weight, bias, output, format == at::MemoryFormat::ChannelsLast);
  });
  return output;
}

}  // namespace
}  // namespace convext::cuda

TORCH_LIBRARY_IMPL(convext, CUDA, m) {
  m.impl("conv2d", &convext::cuda::conv2d_cuda);
  m.impl("conv2d_backward_input", &convext::cuda::conv2d_backward_input_cuda);
  m.impl("conv2d_backward_weight", &convext::cuda::conv2d_backward_weight_cuda);
  m.impl("conv2d_backward_bias", &convext::cuda::conv2d_backward_bias_cuda);
  m.impl("conv_transpose2d", &convext::cuda::conv_transpose2d_cuda);
}
