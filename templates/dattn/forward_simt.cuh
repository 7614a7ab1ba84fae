// dattn: the SIMT forward kernel: exact fp32 math (`precision ieee`), every
// dtype, and archs without the tensor-core instructions the mma path needs
// (sm_75). One warp per query row; lane l owns dims l, l + 32, ...; keys are
// visited one by one from the branch's plan, so only attended pairs cost
// work. Slower than the mma path by design; it is the exact one.
#pragma once

#include "dattn/forward_common.cuh"

namespace dattn {
namespace fwd {

template <class T, int D, int MODE, class Branch> __device__ void simtForward(const Params &p) {
  constexpr int kPerLane = (D + 31) / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y;
  const int head = Branch::head(headIndex);
  const long long batch = blockIdx.z;
  const long long n = p.seqLen;
  const long long i = (long long)blockIdx.x * (blockDim.x / 32) + warp;
  if (i >= n)
    return;
  const int kvHead = head / p.groupSize;

  // The keys of row i: [jBegin, jEnd) with step jStep, each tested by keep().
  long long jBegin = 0, jEnd = n, jStep = 1;
  plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  if constexpr (Branch::kKind == kStridedBranch) {
    const long long r = Branch::kStride, o = Branch::offset(headIndex);
    if (i % r != o)
      return; // this branch gives row i no keys; the init pass wrote its outputs
    plan::segmentLattice(i, Branch::kSegment, n, r, o, &jBegin, &jEnd);
    jStep = r;
  } else {
    for (int m = 0; m < Branch::kNumMembers; ++m)
      members[m] = Branch::member(m, headIndex, head, p);
    plan::unionKeyTiles(members, Branch::kNumMembers, false, i, i + 1, n, 1, &jBegin, &jEnd);
  }
  if (Branch::kCausal)
    jEnd = plan::minI(jEnd, i + 1);

  const T *q = (const T *)p.q + p.qL.at(batch, i, head);
  float qv[kPerLane], acc[kPerLane];
  for (int c = 0; c < kPerLane; ++c) {
    int d = lane + 32 * c;
    qv[c] = d < D ? dev::toFloat(q[d]) * p.scale : 0.f;
    acc[c] = 0.f;
  }
  float m = dev::negInf(), l = 0.f;
  for (long long j = jBegin; j < jEnd; j += jStep) {
    if constexpr (Branch::kKind == kBlocksBranch) {
      if (!plan::unionContains(members, Branch::kNumMembers, i, j))
        continue;
    }
    const T *k = (const T *)p.k + p.kL.at(batch, j, kvHead);
    const T *v = (const T *)p.v + p.vL.at(batch, j, kvHead);
    const float s = dev::warpSum(dev::warpDot<D>(qv, k, lane));
    const float mNew = fmaxf(m, s);
    const float corr = expf(m - mNew); // m = -inf at the first key: 0
    const float pj = expf(s - mNew);
    l = l * corr + pj;
    for (int c = 0; c < kPerLane; ++c) {
      int d = lane + 32 * c;
      acc[c] = acc[c] * corr + (d < D ? pj * dev::toFloat(v[d]) : 0.f);
    }
    m = mNew;
  }

  const float lseB = l > 0.f ? m + logf(l) : dev::negInf();
  const float inv = l > 0.f ? 1.f / l : 0.f;
  float *lsePtr = p.lse + (batch * p.heads + head) * n + i;
  if (MODE == kWrite) {
    T *o = (T *)p.o + p.oL.at(batch, i, head);
    for (int c = 0; c < kPerLane; ++c) {
      int d = lane + 32 * c;
      if (d < D)
        o[d] = dev::fromFloat<T>(acc[c] * inv);
    }
    if (lane == 0)
      *lsePtr = lseB;
  } else {
    float lseNew = lseB, wAcc = 0.f, wB = 1.f; // kMergeFirst: nothing to fold into
    if (MODE == kMerge) {
      const float lseAcc = *lsePtr;
      __syncwarp(); // every lane has read lseAcc before lane 0 rewrites it
      mergeLse(lseAcc, lseB, &lseNew, &wAcc, &wB);
    }
    float *o = p.oAcc + ((batch * n + i) * p.heads + head) * D;
    for (int c = 0; c < kPerLane; ++c) {
      int d = lane + 32 * c;
      if (d < D)
        o[d] = (MODE == kMerge ? o[d] * wAcc : 0.f) + acc[c] * inv * wB;
    }
    if (lane == 0)
      *lsePtr = lseNew;
  }
}

} // namespace fwd
} // namespace dattn
