#include "Validate.h"

#include "Libraries.h"

#include "dattn/error.h"

#include <cstdio>

namespace dattn::rt {

namespace {

std::string hexPointer(const void *p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

std::string shapeString(std::initializer_list<int64_t> dims) {
  std::string s = "[";
  for (int64_t d : dims)
    s += (s.size() > 1 ? ", " : "") + std::to_string(d);
  return s + "]";
}

} // namespace

ArgumentChecker::ArgumentChecker(const char *pass, const AttentionSpec &spec, int device)
    : pass_(pass), spec_(spec), device_(device) {}

void ArgumentChecker::fail(const std::string &msg) const {
  throw ArgumentError(std::string(pass_) + "(attention '" + spec_.name + "'): " + msg);
}

void ArgumentChecker::batchAndLength(const TensorDesc &q, int64_t *batch, int64_t *seqLen) const {
  if (q.rank != 4)
    fail("q must be [batch, seq, heads, head_dim] (rank 4), got " + q.describe());
  *batch = q.shape[0];
  *seqLen = q.shape[1];
  if (*batch < 1 || *batch > 65535)
    fail("batch (q.shape[0]) must be in [1, 65535], got " + std::to_string(*batch));
  if (*seqLen < 1 || *seqLen > (int64_t(1) << 31))
    fail("seq (q.shape[1]) must be in [1, 2^31], got " + std::to_string(*seqLen));
}

Layout ArgumentChecker::rows(const char *name, const TensorDesc &t, int64_t batch, int64_t seqLen,
                             int64_t heads) const {
  const std::string n = name;
  const std::string want = shapeString({batch, seqLen, heads, spec_.headDim});
  if (t.rank != 4 || t.shape[0] != batch || t.shape[1] != seqLen || t.shape[2] != heads ||
      t.shape[3] != spec_.headDim)
    fail(n + " must have shape " + want + " (batch, seq, " +
         (heads == spec_.heads ? "heads" : "kv_heads") + ", head_dim), got " + t.describe());
  if (t.dtype != spec_.dtype)
    fail(n + " must be " + toString(spec_.dtype) + " (the spec's dtype), got " + t.describe());
  if (t.data == nullptr)
    fail(n + " is null");
  // cp.async moves 16 bytes: rows and heads start on 16-byte boundaries.
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0)
    fail(n + " at " + hexPointer(t.data) +
         " is not 16-byte aligned (kernels load 16 bytes at a time)");
  if (t.strides[3] != 1)
    fail(n + " must be contiguous in head_dim (stride[3] = 1), got " + t.describe());
  const int64_t unit = 16 / t.elementBytes();
  const char *dims[] = {"batch", "seq", "head"};
  for (int d = 0; d < 3; ++d)
    if (t.strides[d] <= 0 || t.strides[d] % unit != 0)
      fail(n + " " + dims[d] + " stride " + std::to_string(t.strides[d]) +
           " must be a positive multiple of " + std::to_string(unit) + " elements (16 bytes of " +
           toString(t.dtype) + "), got " + t.describe());
  int64_t last = 0;
  for (int d = 0; d < 4; ++d)
    last += (t.shape[d] - 1) * t.strides[d];
  deviceMemory(n, t.data, (last + 1) * t.elementBytes());
  return Layout{t.strides[0], t.strides[1], t.strides[2]};
}

void ArgumentChecker::lse(const char *name, const TensorDesc &t, int64_t batch,
                          int64_t seqLen) const {
  const std::string n = name;
  if (t.rank != 3 || t.shape[0] != batch || t.shape[1] != spec_.heads || t.shape[2] != seqLen)
    fail(n + " must have shape " + shapeString({batch, spec_.heads, seqLen}) +
         " (batch, heads, seq), got " + t.describe());
  if (t.dtype != DType::F32)
    fail(n + " must be fp32, got " + t.describe());
  if (!t.isContiguous())
    fail(n + " must be contiguous, got " + t.describe());
  if (t.data == nullptr)
    fail(n + " is null");
  if (reinterpret_cast<uintptr_t>(t.data) % 4 != 0)
    fail(n + " at " + hexPointer(t.data) + " is not 4-byte aligned");
  deviceMemory(n, t.data, batch * spec_.heads * seqLen * 4);
}

void ArgumentChecker::workspace(const Workspace &w, int64_t needBytes) const {
  if (needBytes == 0)
    return;
  if (w.data == nullptr || w.bytes < needBytes)
    fail("the workspace must hold " + std::to_string(needBytes) + " bytes (workspaceSizes()), "
         "got " + std::to_string(w.data ? w.bytes : 0) + (w.data ? "" : " (null)"));
  if (reinterpret_cast<uintptr_t>(w.data) % 16 != 0)
    fail("the workspace at " + hexPointer(w.data) + " is not 16-byte aligned");
  deviceMemory("the workspace", w.data, needBytes);
}

void ArgumentChecker::mask(const DeviceBlockMask &m, int64_t seqLen) const {
  if (!spec_.needsBlockMask()) {
    if (m.present())
      fail("a block mask was given, but the spec has no block_mask pattern");
    return;
  }
  if (!m.present())
    fail("the spec has a block_mask pattern: the mask's rowOffsets and colIndices are required");
  if (m.block != spec_.blockMaskBlock())
    fail("the mask's block size " + std::to_string(m.block) + " differs from the spec's " +
         std::to_string(spec_.blockMaskBlock()));
  const int64_t nb = (seqLen + m.block - 1) / m.block;
  if (m.numBlockRows != nb)
    fail("the mask has " + std::to_string(m.numBlockRows) + " block rows; seq " +
         std::to_string(seqLen) + " with blocks of " + std::to_string(m.block) + " needs " +
         std::to_string(nb));
  deviceMemory("the mask's rowOffsets", m.rowOffsets, (nb + 1) * 8);
  if (m.numNonZero < 0 || m.numNonZero > nb * nb)
    fail("the mask's numNonZero " + std::to_string(m.numNonZero) + " is outside [0, " +
         std::to_string(nb * nb) + "]");
  // With no kept block the kernels never read colIndices.
  if (m.numNonZero > 0)
    deviceMemory("the mask's colIndices", m.colIndices, m.numNonZero * 8);
}

void ArgumentChecker::deviceMemory(const std::string &name, const void *p, int64_t bytes) const {
  const Driver &d = driver();
  unsigned type = 0;
  int ordinal = -1;
  CUdeviceptr start = 0;
  size_t size = 0;
  CUpointer_attribute attrs[] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                                 CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                 CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
                                 CU_POINTER_ATTRIBUTE_RANGE_SIZE};
  void *values[] = {&type, &ordinal, &start, &size};
  // Unlike cuPointerGetAttribute, this call succeeds on host pointers and
  // leaves the memory type 0.
  CUresult r = d.pointerGetAttributes(4, attrs, values, reinterpret_cast<CUdeviceptr>(p));
  if (r != CUDA_SUCCESS || (type != CU_MEMORYTYPE_DEVICE && type != CU_MEMORYTYPE_UNIFIED))
    fail(name + " at " + hexPointer(p) +
         " is not GPU memory (host memory must be copied to the device first)");
  if (type == CU_MEMORYTYPE_DEVICE && ordinal != device_)
    fail(name + " at " + hexPointer(p) + " is memory of GPU " + std::to_string(ordinal) +
         ", but this attention runs on GPU " + std::to_string(device_));
  const auto begin = reinterpret_cast<CUdeviceptr>(p);
  if (size > 0 && begin + static_cast<CUdeviceptr>(bytes) > start + size)
    fail(name + " at " + hexPointer(p) + " spans " + std::to_string(bytes) +
         " bytes, past the end of its allocation (" + std::to_string(start + size - begin) +
         " bytes left): check its shape and strides");
}

} // namespace dattn::rt
