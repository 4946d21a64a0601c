#pragma once
// Autocast kernels: under torch.autocast an op runs as torch's own conv2d
// does ("lower precision" list): its floating tensors are cast to the autocast
// dtype of the device (weights cached for the region), then the op runs with
// autocast off. Ops with no autocast kernel (the pools) keep their dtype.
#include <ATen/autocast_mode.h>

#include "ops.h"

namespace convext {

template <c10::DeviceType device, class Op, class Signature = typename Op::Signature>
struct LowerPrecision;

template <c10::DeviceType device, class Op, class Result, class... Args>
struct LowerPrecision<device, Op, Result(Args...)> {
  static Result call(Args... args) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(
        at::autocast::get_autocast_dispatch_key_from_device_type(device));
    const at::ScalarType dtype = at::autocast::get_lower_precision_fp_from_device_type(device);
    return Op::call(at::autocast::cached_cast(dtype, args, device)...);
  }
};

}  // namespace convext
