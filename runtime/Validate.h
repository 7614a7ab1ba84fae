// runtime: validation of a run's arguments. Every check names the argument
// and says what was expected and what was given, so a wrong shape, stride,
// dtype, alignment, device or workspace is an ArgumentError before any
// launch, never a fault or silently wrong numbers.
#pragma once

#include "dattn/layout.cuh"
#include "dattn/spec.h"
#include "dattn/tensor.h"

#include <string>

namespace dattn::rt {

class ArgumentChecker {
public:
  /// Messages start "<pass>(attention '<name>'): " (built only on failure).
  ArgumentChecker(const char *pass, const AttentionSpec &spec, int device);

  /// Reads (B, N) from q, a [B, N, heads, head_dim] tensor.
  void batchAndLength(const TensorDesc &q, int64_t *batch, int64_t *seqLen) const;
  /// A [B, N, heads, head_dim] tensor in the spec's dtype (heads = the
  /// spec's heads or kv heads); returns its strides as a kernel Layout.
  Layout rows(const char *name, const TensorDesc &t, int64_t batch, int64_t seqLen,
              int64_t heads) const;
  /// LSE: [B, heads, N], fp32, contiguous.
  void lse(const char *name, const TensorDesc &t, int64_t batch, int64_t seqLen) const;
  void workspace(const Workspace &w, int64_t needBytes) const;
  void mask(const DeviceBlockMask &m, int64_t seqLen) const;

private:
  /// Device memory of this GPU, covering [p, p + bytes).
  void deviceMemory(const std::string &name, const void *p, int64_t bytes) const;
  [[noreturn]] void fail(const std::string &msg) const;

  const char *pass_;
  const AttentionSpec &spec_;
  int device_;
};

} // namespace dattn::rt
