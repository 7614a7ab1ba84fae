// runtime: how a run's workspace is laid out; the one place that sizes it,
// read by workspaceSizes() and by the runs that carve it up.
#pragma once

#include "dattn/backward_params.cuh"
#include "dattn/emit.h"

#include <cstdint>

namespace dattn::rt {

/// Forward: the fp32 O accumulator [B, N, H, D] when some head is in several
/// branches (kMerge), else nothing.
inline int64_t forwardWorkspaceBytes(const EmittedModule &m, int64_t batch, int64_t seqLen,
                                     int64_t heads, int64_t headDim) {
  return m.mergeMode ? batch * seqLen * heads * headDim * 4 : 0;
}

/// Backward, in floats: Delta [B, H, N] rounded up to 4 floats (the
/// accumulators after it are read and reduced two and four floats at a
/// time, so they start on 16 bytes), then dQ [B, N, H, D] when finalize
/// converts it, then dK and dV, one slice per query head, [B, N, H, D] each,
/// when finalize converts them.
struct BackwardWorkspace {
  int64_t deltaCount = 0;
  int64_t dqAcc = -1, dkAcc = -1, dvAcc = -1; ///< offsets in floats, -1 = absent
  int64_t accElems = 0;                       ///< floats after Delta
  int64_t bytes() const { return 4 * (deltaCount + accElems); }
};

inline BackwardWorkspace backwardWorkspace(const EmittedModule &m, int64_t batch, int64_t seqLen,
                                           int64_t heads, int64_t headDim) {
  BackwardWorkspace w;
  const int64_t qElems = batch * seqLen * heads * headDim;
  w.deltaCount = (batch * heads * seqLen + 3) / 4 * 4;
  int64_t next = w.deltaCount;
  if (m.gradientFinalize & bwd::kFinalizeDq) {
    w.dqAcc = next;
    next += qElems;
  }
  if (m.gradientFinalize & bwd::kFinalizeDkv) {
    w.dkAcc = next;
    w.dvAcc = next + qElems;
    next += 2 * qElems;
  }
  w.accElems = next - w.deltaCount;
  return w;
}

} // namespace dattn::rt
