// dattn: the descriptor every tensor argument of the runtime takes, forward
// and backward alike: where the data is, its element type, its shape and its
// strides in elements. A view (a slice of a packed QKV tensor, padded rows,
// a heads-major layout) is described as it is; nothing is copied.
#pragma once

#include "dattn/spec.h"

#include <cstdint>
#include <initializer_list>
#include <string>

namespace dattn {

struct TensorDesc {
  static constexpr int kMaxRank = 4;

  /// Device memory. The library writes only through the descriptors of
  /// outputs (out, lse, dq, dk, dv); the others are read.
  void *data = nullptr;
  DType dtype = DType::F32;
  int rank = 0;
  int64_t shape[kMaxRank] = {};
  int64_t strides[kMaxRank] = {}; ///< in elements, not bytes

  /// A row-major (contiguous) tensor.
  static TensorDesc contiguous(const void *data, DType dtype, std::initializer_list<int64_t> shape);
  /// A view with explicit strides (same rank as shape).
  static TensorDesc strided(const void *data, DType dtype, std::initializer_list<int64_t> shape,
                            std::initializer_list<int64_t> strides);

  int64_t elementBytes() const { return dtype == DType::F32 ? 4 : 2; }
  bool isContiguous() const;
  /// "bf16 [1, 4096, 12, 128] strides [6291456, 1536, 128, 1]".
  std::string describe() const;
};

/// A run-time block mask in device memory (BSR over blocks of `block` rows):
/// `rowOffsets` has numBlockRows + 1 entries, `colIndices` numNonZero
/// (= rowOffsets[NB]) entries, sorted and unique per row. The kernels trust the contents (a run
/// never reads back to the host): upload a BlockMask with
/// dattn::DeviceBlockMaskBuffer (dattn/host.h), which validates it first.
struct DeviceBlockMask {
  const int64_t *rowOffsets = nullptr;
  const int64_t *colIndices = nullptr;
  int64_t block = 0;
  int64_t numBlockRows = 0;
  int64_t numNonZero = 0;
  bool present() const { return rowOffsets != nullptr; }
};

/// Caller-owned scratch device memory for one run (see
/// CompiledAttention::workspaceSizes). A run uses it and nothing else; two
/// runs in flight at once need two workspaces.
struct Workspace {
  void *data = nullptr;
  int64_t bytes = 0;
};

} // namespace dattn
