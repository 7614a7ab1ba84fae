// dattn: the backward kernels' launch parameters (plain C++, host and device).
#pragma once

namespace dattn {
namespace bwd {

/// How a branch kernel stores its gradients. kDirect: straight into dq / dk
/// / dv in the input dtype (one branch per head, no GQA: every gradient row
/// has one writer). kAccumulate: added into the fp32 accumulators.
enum GradientMode { kAccumulate = 0, kDirect = 1 };

/// What finalizeGradients converts (a bit set).
enum FinalizeWhat { kFinalizeDq = 1, kFinalizeDkv = 2 };

/// Launch parameters. All tensors contiguous: q, o, dout, dq [B, N, H, D];
/// k, v, dk, dv [B, N, Hkv, D]; lse, delta [B, H, N]. The fp32 accumulators
/// are [B, N, H, D], dK and dV ones included (one slice per query head, so
/// that heads sharing a kv head never write the same row; finalize sums a
/// group's slices).
struct Params {
  const void *q, *k, *v, *o, *dout;
  const float *lse;
  float *delta;
  float *dqAcc, *dkAcc, *dvAcc;
  void *dq, *dk, *dv;
  long long seqLen;
  int heads, kvHeads, groupSize;
  float scale;
  const long long *maskRows, *maskCols;
  long long tilesPerSegment; ///< mma kernels, strided branches: CTAs per segment
};

} // namespace bwd
} // namespace dattn
