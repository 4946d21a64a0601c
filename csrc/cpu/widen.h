#pragma once
// float16 and bfloat16 compute in float32: each tensor is widened once on the
// way in and the result rounded once on the way out, so every sum accumulates
// in float32 and max pooling picks the same element (widening is exact).
#include <optional>

#include <ATen/core/Tensor.h>

namespace convext::cpu {

inline bool is_half_type(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// Keeps the layout (channels_last stays channels_last).
inline at::Tensor widen(const at::Tensor& t) { return t.to(at::kFloat); }

inline std::optional<at::Tensor> widen(const std::optional<at::Tensor>& t) {
  return t ? std::optional<at::Tensor>(widen(*t)) : std::nullopt;
}

}  // namespace convext::cpu
