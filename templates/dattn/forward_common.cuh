// dattn: what every forward kernel shares: launch parameters, the branch
// description the emitter generates, the LSE merge, and the kernels that
// prepare and finish the outputs.
//
// Output modes. A head covered by exactly one branch is written directly
// (kWrite): O in the input dtype and its LSE. A head covered by several
// branches accumulates (kMerge): each branch launch folds its (O_b, l_b) into
// an fp32 O accumulator and the LSE array,
//     L' = log(exp(L) + exp(l_b)),  O' = O exp(L - L') + O_b exp(l_b - L'),
// which is docs/semantics.md's merge applied one branch at a time.
// Launches on one stream are ordered, so the read-modify-write needs no
// atomics. The ring executor uses kMerge to fold in remote key blocks.
#pragma once

#include "dattn/device.cuh"
#include "dattn/params.cuh"
#include "dattn/tile_plan.cuh"
#include "dattn/tile_walk.cuh"

namespace dattn {
namespace fwd {

/// log(exp(a) + exp(b)) and the weights of a and b in it, safe for -inf.
DATTN_DEV void mergeLse(float a, float b, float *lseOut, float *wa, float *wb) {
  float m = fmaxf(a, b);
  if (m == dev::negInf()) { // both empty
    *lseOut = m;
    *wa = 0.f;
    *wb = 0.f;
    return;
  }
  float ea = expf(a - m), eb = expf(b - m);
  float s = ea + eb;
  *lseOut = m + logf(s);
  *wa = ea / s;
  *wb = eb / s;
}

/// Whether (i, j) is a pair of this branch for its headIndex-th head, causal
/// included: the per-pair predicate of the SIMT and ring kernels. `members`
/// holds the blocks branch's members (unused for strided branches).
template <class Branch>
DATTN_DEV bool branchPair(const plan::Member *members, int headIndex, long long i, long long j,
                          long long n) {
  if (Branch::kCausal && j > i)
    return false;
  if constexpr (Branch::kKind == kStridedBranch) {
    const long long r = Branch::kStride, o = Branch::offset(headIndex);
    if (i % r != o || j % r != o)
      return false;
    const long long w = plan::segmentLength(Branch::kSegment, n);
    return i / w == j / w;
  } else {
    return plan::unionContains(members, Branch::kNumMembers, i, j);
  }
}

/// Fills O (or the fp32 accumulator) with 0 and LSE with -inf: rows that no
/// branch reaches keep exactly these values (O = 0, LSE = -inf). One thread
/// per element, consecutive threads on consecutive d, so stores coalesce.
template <class T, int MODE>
__device__ void initOutputs(const Params &p, int headDim, long long batch) {
  const long long rows = batch * p.seqLen * p.heads;
  const long long total = rows * headDim;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total; x += stride) {
    long long row = x / headDim, d = x % headDim; // row = (b * N + i) * H + h
    long long h = row % p.heads, bi = row / p.heads;
    long long i = bi % p.seqLen, b = bi / p.seqLen;
    if (MODE == kMerge)
      p.oAcc[x] = 0.f;
    else
      ((T *)p.o)[p.oL.at(b, i, h) + d] = dev::fromFloat<T>(0.f);
    if (d == 0)
      p.lse[(b * p.heads + h) * p.seqLen + i] = dev::negInf();
  }
}

/// kMerge: converts the fp32 accumulator into O in the input dtype.
template <class T> __device__ void finalizeOutputs(const Params &p, int headDim, long long batch) {
  const long long total = batch * p.seqLen * p.heads * headDim;
  const long long stride = (long long)gridDim.x * blockDim.x;
  if (p.oL.head == headDim && p.oL.row == (long long)p.heads * headDim &&
      p.oL.batch == p.seqLen * p.heads * headDim) {
    // A contiguous O (the common case): a plain conversion, without the
    // 64-bit divisions that made it ALU-bound (0.14 ms for 16M elements).
    dev::convertGridStride<T>((T *)p.o, p.oAcc, total);
    return;
  }
  for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total; x += stride) {
    long long row = x / headDim, d = x % headDim;
    long long h = row % p.heads, bi = row / p.heads;
    long long i = bi % p.seqLen, b = bi / p.seqLen;
    ((T *)p.o)[p.oL.at(b, i, h) + d] = dev::fromFloat<T>(p.oAcc[x]);
  }
}

} // namespace fwd
} // namespace dattn
