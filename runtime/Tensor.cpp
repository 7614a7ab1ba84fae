// TensorDesc helpers and the context scope.
#include "Context.h"
#include "Libraries.h"

#include "dattn/error.h"
#include "dattn/tensor.h"

namespace dattn {

namespace {
TensorDesc make(const void *data, DType dtype, std::initializer_list<int64_t> shape) {
  if (shape.size() < 1 || shape.size() > TensorDesc::kMaxRank)
    throw ArgumentError("a tensor has rank 1 to " + std::to_string(TensorDesc::kMaxRank) +
                        ", got " + std::to_string(shape.size()));
  TensorDesc t;
  t.data = const_cast<void *>(data);
  t.dtype = dtype;
  t.rank = static_cast<int>(shape.size());
  int d = 0;
  for (int64_t s : shape)
    t.shape[d++] = s;
  return t;
}
} // namespace

TensorDesc TensorDesc::contiguous(const void *data, DType dtype,
                                  std::initializer_list<int64_t> shape) {
  TensorDesc t = make(data, dtype, shape);
  int64_t stride = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.strides[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

TensorDesc TensorDesc::strided(const void *data, DType dtype, std::initializer_list<int64_t> shape,
                               std::initializer_list<int64_t> strides) {
  if (strides.size() != shape.size())
    throw ArgumentError("a tensor's strides (" + std::to_string(strides.size()) +
                        ") must match its shape's rank (" + std::to_string(shape.size()) + ")");
  TensorDesc t = make(data, dtype, shape);
  int d = 0;
  for (int64_t s : strides)
    t.strides[d++] = s;
  return t;
}

bool TensorDesc::isContiguous() const {
  int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != stride)
      return false;
    stride *= shape[d];
  }
  return true;
}

std::string TensorDesc::describe() const {
  std::string s = std::string(toString(dtype)) + " [";
  for (int d = 0; d < rank; ++d)
    s += (d ? ", " : "") + std::to_string(shape[d]);
  s += "] strides [";
  for (int d = 0; d < rank; ++d)
    s += (d ? ", " : "") + std::to_string(strides[d]);
  return s + "]" + (data ? "" : " (null)");
}

} // namespace dattn

namespace dattn::rt {

ContextScope::ContextScope(void *context) {
  check(driver().ctxPushCurrent(static_cast<CUcontext>(context)), "making the GPU current");
}

ContextScope::~ContextScope() {
  CUcontext popped;
  driver().ctxPopCurrent(&popped);
}

} // namespace dattn::rt
