// dattn: the forward kernels' launch parameters. Plain C++ shared by the
// host runtime (which fills it) and the kernels (which read it by value).
#pragma once

#include "dattn/layout.cuh"

namespace dattn {
namespace fwd {

enum OutputMode { kWrite = 0, kMerge = 1 };
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

} // namespace fwd
} // namespace dattn
