// dattn: the backward kernels' launch parameters (plain C++, host and device).
#pragma once

namespace dattn {
namespace bwd {

/// Launch parameters. All tensors contiguous: q, o, dout, dq [B, N, H, D];
/// k, v, dk, dv [B, N, Hkv, D]; lse, delta [B, H, N].
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
};

} // namespace bwd
} // namespace dattn
