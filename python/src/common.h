// What _dattn's binding files share: torch-style tensors as descriptors, and
// one Runtime per GPU.
#pragma once

#include "dattn/runtime.h"

#include <cstdint>
#include <memory>
#include <tuple>
#include <vector>

namespace dattn::py {

/// (data pointer, shape, strides in elements), as torch gives them.
using PyTensor = std::tuple<uintptr_t, std::vector<int64_t>, std::vector<int64_t>>;

/// The descriptor of `t`; ArgumentError naming `name` for a bad rank.
TensorDesc describe(const PyTensor &t, DType dtype, const char *name);

/// The Runtime of GPU `device`, made on first use and shared (it binds the
/// GPU's primary context, the one PyTorch uses).
std::shared_ptr<Runtime> runtimeFor(int device);

} // namespace dattn::py
