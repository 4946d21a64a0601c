#pragma once
// float16 and bfloat16 compute in float32: each tensor is widened once on the
// way in and the result rounded once on the way out, so every sum accumulates
// in float32 and max pooling picks the same element (widening is exact).
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace convext::cpu {

inline bool is_half_type(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// A half-type tensor as float32, in its layout (channels_last stays
// channels_last); any other argument (indices, sizes, flags) as it is.
inline at::Tensor widen(const at::Tensor& t) { return is_half_type(t) ? t.to(at::kFloat) : t; }

inline std::optional<at::Tensor> widen(const std::optional<at::Tensor>& t) {
  return t ? std::optional<at::Tensor>(widen(*t)) : std::nullopt;
}

template <class T>
const T& widen(const T& value) {
  return value;
}

// A floating result rounded to dtype; indices as they are.
inline at::Tensor rounded(const at::Tensor& t, at::ScalarType dtype) {
  return t.is_floating_point() ? t.to(dtype) : t;
}

inline std::tuple<at::Tensor, at::Tensor> rounded(const std::tuple<at::Tensor, at::Tensor>& t,
                                                  at::ScalarType dtype) {
  return {rounded(std::get<0>(t), dtype), rounded(std::get<1>(t), dtype)};
}

// op(args...) computed in float32 and rounded to dtype: how an op's CPU entry
// runs a half-type call through its float32 kernels.
template <class Op, class... Args>
auto in_float32(at::ScalarType dtype, Op op, const Args&... args) {
  return rounded(op(widen(args)...), dtype);
}

}  // namespace convext::cpu
