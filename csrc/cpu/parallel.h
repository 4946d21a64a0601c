#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace convext::cpu {

// Runs f(begin, end) over ranges of [0, count) on torch's intra-op pool, so
// torch.set_num_threads rules it; a task gets enough items to pay for itself,
// and work too small for a parallel region runs inline. For tasks that set
// something up once for their range (a scratch buffer).
template <typename F>
void parallel_ranges(int64_t count, int64_t cost_per_item, const F& f) {
  constexpr int64_t kMinCostPerTask = int64_t{1} << 15;
  const int64_t grain = std::max<int64_t>(1, kMinCostPerTask / std::max<int64_t>(1, cost_per_item));
  at::parallel_for(0, count, grain, f);
}

// Runs f(i) for i in [0, count), as parallel_ranges.
template <typename F>
void parallel_over(int64_t count, int64_t cost_per_item, const F& f) {
  parallel_ranges(count, cost_per_item, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      f(i);
    }
  });
}

}  // namespace convext::cpu
