// dattn: the backward kernels' launch parameters (plain C++, host and device).
#pragma once

#include "dattn/layout.cuh"

namespace dattn {
namespace bwd {

/// How a branch kernel stores its gradients. kDirect: straight into dq / dk
/// / dv in the input dtype (one branch per head, no GQA: every gradient row
/// has one writer). kAccumulate: added into the fp32 accumulators.
enum GradientMode { kAccumulate = 0, kDirect = 1 };

/// What finalizeGradients does (a bit set): convert the fp32 accumulators
/// (kFinalize*), or, launched before the branch kernels, zero gradients that
/// are written directly but are not contiguous (kZero*; contiguous ones are
/// cleared with memsets). Rows no branch reaches keep the zero.
enum FinalizeWhat { kFinalizeDq = 1, kFinalizeDkv = 2, kZeroDq = 4, kZeroDkv = 8 };

/// Launch parameters. q, o, dout, dq are [B, N, H, D] and k, v, dk, dv
/// [B, N, Hkv, D] with the caller's strides (the *L layouts); lse and delta
/// are contiguous [B, H, N]. The fp32 accumulators are contiguous
/// [B, N, H, D], dK and dV ones included (one slice per query head, so that
/// heads sharing a kv head never write the same row; finalize sums a
/// group's slices).
struct Params {
  const void *q, *k, *v, *o, *dout;
  const float *lse;
  float *delta;
  float *dqAcc, *dkAcc, *dvAcc;
  void *dq, *dk, *dv;
  Layout qL, kL, vL, oL, doutL, dqL, dkL, dvL;
  long long seqLen;
  int heads, kvHeads, groupSize;
  float scale;
  const long long *maskRows, *maskCols;
  long long tilesPerSegment; ///< mma kernels, strided branches: CTAs per segment
  /// mma dK/dV kernels: the walk over query tiles of each of the first
  /// chunkedKeyCtas key CTAs (of keyCtas) in queryChunks CTAs
  /// (plan::splitKeyCta; 0 or 1: one), chunkTiles each (the last one to
  /// the walk's end); the chunks' dK/dV add by reductions.
  int queryChunks;
  long long chunkTiles, keyCtas, chunkedKeyCtas;
};

} // namespace bwd
} // namespace dattn
