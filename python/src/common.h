// What _dattn's binding files share: torch-style tensors as descriptors, and
// one Runtime per GPU.
#pragma once

#include "dattn/reference.h"
#include "dattn/runtime.h"

#include <cstdint>
#include <memory>
#include <tuple>
#include <vector>

namespace dattn::py {

/// A block mask from host BSR lists (validated where it is used: the
/// DeviceBlockMaskBuffer, the plan, BlockMask::validate).
inline BlockMask hostBlockMask(int64_t block, const std::vector<int64_t> &rows,
                               const std::vector<int64_t> &cols) {
  BlockMask m;
  m.block = block;
  m.rowOffsets = rows;
  m.colIndices = cols;
  return m;
}

/// (data pointer, shape, strides in elements), as torch gives them.
using PyTensor = std::tuple<uintptr_t, std::vector<int64_t>, std::vector<int64_t>>;

/// The descriptor of `t`; ArgumentError naming `name` for a bad rank.
TensorDesc describe(const PyTensor &t, DType dtype, const char *name);

/// q, k, v, out and lse of a forward's arguments (ForwardArgs or a ring
/// rank's), in the spec's dtype (lse fp32).
template <class Args>
void describeForward(Args &a, DType t, const PyTensor &q, const PyTensor &k, const PyTensor &v,
                     const PyTensor &out, const PyTensor &lse) {
  a.q = describe(q, t, "q");
  a.k = describe(k, t, "k");
  a.v = describe(v, t, "v");
  a.out = describe(out, t, "out");
  a.lse = describe(lse, DType::F32, "lse");
}

/// The same, then dout, dq, dk and dv, for a backward's arguments.
template <class Args>
void describeBackward(Args &a, DType t, const PyTensor &q, const PyTensor &k, const PyTensor &v,
                      const PyTensor &out, const PyTensor &lse, const PyTensor &dout,
                      const PyTensor &dq, const PyTensor &dk, const PyTensor &dv) {
  describeForward(a, t, q, k, v, out, lse);
  a.dout = describe(dout, t, "dout");
  a.dq = describe(dq, t, "dq");
  a.dk = describe(dk, t, "dk");
  a.dv = describe(dv, t, "dv");
}

/// The Runtime of GPU `device`, made on first use and shared (it binds the
/// GPU's primary context, the one PyTorch uses).
std::shared_ptr<Runtime> runtimeFor(int device);

} // namespace dattn::py
