// dattn: the forward kernels' launch parameters. Plain C++ shared by the
// host runtime (which fills it) and the kernels (which read it by value).
#pragma once

#include "dattn/layout.cuh"

namespace dattn {
namespace fwd {

/// How a branch kernel stores its rows (forward_common.cuh): kWrite O and
/// LSE directly; kMerge folds them into the fp32 accumulator and the LSE
/// array; kMergeFirst, the first launch of a merging module when it
/// visits every (batch, row, head), stores into both without reading them
/// (kMerge's result against O = 0, LSE = -inf), so they need no clearing.
enum OutputMode { kWrite = 0, kMerge = 1, kMergeFirst = 2 };
enum BranchKindId { kStridedBranch = 0, kBlocksBranch = 1 };

/// Launch parameters (by value).
struct Params {
  const void *q;
  const void *k;
  const void *v;
  void *o;     ///< [B, N, H, D] in the input dtype
  float *lse;  ///< [B, H, N]: the result, or the LSE accumulator in kMerge
  float *oAcc; ///< kMerge: fp32 [B, N, H, D], contiguous
  long long seqLen;
  Layout qL, kL, vL, oL; ///< strides of q, k, v, o (the caller's descriptors)
  int heads;     ///< H
  int groupSize; ///< H / kv_heads
  float scale;   ///< softmax scale (natural-log domain)
  long long tilesPerSegment; ///< strided branches: query tiles per segment
  const long long *maskRows; ///< block_mask: BSR row offsets (device)
  const long long *maskCols; ///< block_mask: BSR column indices (device)
};

/// TMA row loads (sm90_wgmma_tma_forward's K and V, the warp-specialized
/// dK/dV kernel's Q and dO): a tile's rows r apart (r = the branch's
/// dilation, 1 for blocks branches) are boxes of the [B, N, H, D] tensor's
/// map traversed with element stride r. A box spans at most 256 rows of the
/// sequence and r is at most 8, so a tile of `rows` (64 or 128) takes
/// rows / tmaBoxRows(r, rows) boxes per 64 columns. The host encodes the
/// maps with the same rule (runtime/TensorMaps.cpp).
constexpr int kTmaMaxStride = 8;
#ifdef __CUDACC__
__host__ __device__
#endif
constexpr int tmaMaxBoxRows(int stride) { // powers of two, times stride <= 256
  return stride <= 2 ? 128 : stride <= 4 ? 64 : 32;
}
#ifdef __CUDACC__
__host__ __device__
#endif
constexpr int tmaBoxRows(int stride, int rows) {
  return rows < tmaMaxBoxRows(stride) ? rows : tmaMaxBoxRows(stride);
}

} // namespace fwd
} // namespace dattn
