// Probes of the machine's peaks, for the benchmark's fraction-of-peak figures:
// FMA throughput with the active SIMD kernels, and copy bandwidth with a plain
// parallel copy. Not part of the public API.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "isa.h"

namespace convext::cpu {
namespace {

// FLOP/s of `dtype` FMAs over all of torch's threads, each running `iterations`.
double fma_peak_gflops(int64_t iterations, at::ScalarType dtype) {
  double flops = 0, checksum = 0;
  const auto start = std::chrono::steady_clock::now();
  AT_DISPATCH_FLOATING_TYPES(dtype, "convext._fma_peak_gflops", [&] {
    const KernelsFor<scalar_t>& k = active_isa().get<scalar_t>();
    const int threads = at::get_num_threads();
    std::vector<double> sums(threads, 0.0);
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        sums[t] = static_cast<double>(k.fma_loop(iterations));
      }
    });
    for (double v : sums) {
      checksum += v;
    }
    flops = 2.0 * iterations * k.fma_chains * k.lanes * threads;
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  TORCH_CHECK(checksum == checksum, "convext._fma_peak_gflops: the probe produced NaN");
  return flops / seconds * 1e-9;
}

double fma_peak_gflops_op(int64_t iterations, at::ScalarType dtype) {
  return fma_peak_gflops(iterations, dtype);
}

// Copies src into dst (both contiguous, same size), split across torch's threads.
void stream_copy(at::Tensor& dst, const at::Tensor& src) {
  TORCH_CHECK(dst.is_contiguous() && src.is_contiguous() && dst.nbytes() == src.nbytes(),
              "convext._stream_copy: expected contiguous tensors of the same size");
  auto* out = static_cast<char*>(dst.data_ptr());
  const auto* in = static_cast<const char*>(src.const_data_ptr());
  constexpr int64_t kBlock = int64_t{1} << 16;
  at::parallel_for(0, (static_cast<int64_t>(src.nbytes()) + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * kBlock;
    const int64_t last = std::min<int64_t>(end * kBlock, src.nbytes());
    std::memcpy(out + first, in + first, last - first);
  });
}

}  // namespace
}  // namespace convext::cpu

TORCH_LIBRARY_FRAGMENT(convext, m) {
  m.def("_fma_peak_gflops(int iterations, ScalarType dtype) -> float");
  m.def("_stream_copy(Tensor(a!) dst, Tensor src) -> ()");
  m.def("_cpu_isa() -> str");
}

TORCH_LIBRARY_IMPL(convext, CompositeExplicitAutograd, m) {
  m.impl("_fma_peak_gflops", &convext::cpu::fma_peak_gflops_op);
  m.impl("_cpu_isa", [] { return std::string(convext::cpu::active_isa().name); });
}

TORCH_LIBRARY_IMPL(convext, CPU, m) {
  m.impl("_stream_copy", &convext::cpu::stream_copy);
}
