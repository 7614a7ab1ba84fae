// dattn: the SIMT backward pass: every dtype and arch, exact fp32 math, and
// deterministic: no atomics, every output row has one owner per launch, and
// branches are separate launches on one stream.
//
// The multiset softmax makes branches separable in the backward pass. With
// L the saved (merged) LSE of row i, each branch's pair (i, j) has
//   p = exp(s_ij - L_i),  dP = dO_i . v_j,  dS = p (dP - Delta_i),
// Delta_i = dO_i . O_i, and adds scale dS k_j to dQ_i, scale dS q_i to dK_j
// and p dO_i to dV_j. A key reached through two branches gets both terms.
//
//   1. computeDelta: Delta = rowsum(dO * O), one warp per row.
//   2. per branch, dqPass: one warp per query row, over the row's keys
//      (the forward's iteration); adds into the fp32 dQ accumulator.
//   3. per branch, dkvPass: one warp per (key row, query head), over the
//      rows that reach the key (plan::unionQueryTiles); adds into the
//      query head's slice of the fp32 dK, dV accumulators.
//   4. finalize: accumulators -> dq, dk, dv in the input dtype, dk and dv
//      summed over each kv head's query heads.
// Extra memory: Delta and the three fp32 accumulators, O(N).
#pragma once

#include "dattn/backward_common.cuh"

namespace dattn {
namespace bwd {

template <class T, int D> __device__ void computeDelta(const Params &p, long long batch) {
  constexpr int kPerLane = (D + 31) / 32;
  const long long rows = batch * p.seqLen * p.heads; // row = (b * N + i) * H + h
  const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows)
    return;
  const long long h = row % p.heads, bi = row / p.heads, b = bi / p.seqLen, i = bi % p.seqLen;
  // A contiguous module addresses O and dO by the row alone: the loads then
  // wait on no 64-bit division (this kernel is bound by their latency).
  const T *o = (const T *)p.o + (kContiguousTensors ? row * D : p.oL.at(b, i, h));
  const T *g = (const T *)p.dout + (kContiguousTensors ? row * D : p.doutL.at(b, i, h));
  float sum = 0.f;
  // Eight bytes a lane a step where rows are whole 8-byte chunks (rows
  // start on 16 bytes: ArgumentChecker), so a warp's load is 256
  // contiguous bytes instead of 64; else an element a lane.
  constexpr int kVec = 8 / sizeof(T), kChunks = D % kVec == 0 ? D / kVec : 0;
  if constexpr (kChunks > 0) {
#pragma unroll
    for (int c = lane; c < kChunks; c += 32) {
      T ov[kVec], gv[kVec];
      *reinterpret_cast<uint2 *>(ov) = *reinterpret_cast<const uint2 *>(o + c * kVec);
      *reinterpret_cast<uint2 *>(gv) = *reinterpret_cast<const uint2 *>(g + c * kVec);
#pragma unroll
      for (int e = 0; e < kVec; ++e)
        sum += dev::toFloat(ov[e]) * dev::toFloat(gv[e]);
    }
  } else {
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      int d = lane + 32 * c;
      if (d < D)
        sum += dev::toFloat(o[d]) * dev::toFloat(g[d]);
    }
  }
  sum = dev::warpSum(sum);
  if (lane == 0)
    p.delta[(b * p.heads + h) * p.seqLen + i] = sum;
}

/// dQ for one query row per warp (grid.x rows of 4 warps, y heads of the branch, z batch).
template <class T, int D, class Branch> __device__ void dqPass(const Params &p) {
  constexpr int kPerLane = (D + 31) / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long b = blockIdx.z, n = p.seqLen;
  const long long i = (long long)blockIdx.x * (blockDim.x / 32) + warp;
  if (i >= n)
    return;
  const int kvHead = head / p.groupSize;
  const float L = p.lse[(b * p.heads + head) * n + i];
  if (L == dev::negInf())
    return; // the row has no keys at all
  plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  long long jBegin = 0, jEnd = n, jStep = 1;
  if constexpr (Branch::kKind == fwd::kStridedBranch) {
    if (!stridedPartners<Branch>(i, headIndex, n, &jBegin, &jEnd, &jStep))
      return;
  } else {
    branchMembers<Branch>(p, headIndex, head, members);
    plan::unionKeyTiles(members, Branch::kNumMembers, false, i, i + 1, n, 1, &jBegin, &jEnd);
  }
  if (Branch::kCausal)
    jEnd = plan::minI(jEnd, i + 1);
  const long long qRow = (b * n + i) * p.heads + head; // in the accumulator
  const T *q = (const T *)p.q + p.qL.at(b, i, head);
  const T *g = (const T *)p.dout + p.doutL.at(b, i, head);
  const float delta = p.delta[(b * p.heads + head) * n + i];
  float qv[kPerLane], gv[kPerLane], acc[kPerLane];
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    int d = lane + 32 * c;
    qv[c] = d < D ? dev::toFloat(q[d]) : 0.f;
    gv[c] = d < D ? dev::toFloat(g[d]) : 0.f;
    acc[c] = 0.f;
  }
  for (long long j = jBegin; j < jEnd; j += jStep) {
    if constexpr (Branch::kKind == fwd::kBlocksBranch) {
      if (!fwd::branchPair<Branch>(members, headIndex, i, j, n))
        continue;
    }
    const T *k = (const T *)p.k + p.kL.at(b, j, kvHead);
    const T *v = (const T *)p.v + p.vL.at(b, j, kvHead);
    const float dot = dev::warpSum(dev::warpDot<D>(qv, k, lane));
    const float dp = dev::warpSum(dev::warpDot<D>(gv, v, lane));
    const float pij = expf(dot * p.scale - L);
    const float ds = pij * (dp - delta) * p.scale;
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      int d = lane + 32 * c;
      if (d < D)
        acc[c] += ds * dev::toFloat(k[d]);
    }
  }
  float *out = p.dqAcc + qRow * D;
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    int d = lane + 32 * c;
    if (d < D)
      out[d] += acc[c];
  }
}

/// dK and dV of one query head's slice for one key row per warp (grid.x
/// rows of 4 warps, y heads of the branch, z batch); finalize sums the
/// slices of a kv head's query heads.
template <class T, int D, class Branch> __device__ void dkvPass(const Params &p) {
  constexpr int kPerLane = (D + 31) / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long b = blockIdx.z, n = p.seqLen;
  const long long j = (long long)blockIdx.x * (blockDim.x / 32) + warp;
  if (j >= n)
    return;
  const int kvHead = head / p.groupSize;
  plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  long long iBegin = 0, iEnd = n, iStep = 1;
  if constexpr (Branch::kKind == fwd::kStridedBranch) {
    if (!stridedPartners<Branch>(j, headIndex, n, &iBegin, &iEnd, &iStep))
      return;
  } else {
    branchMembers<Branch>(p, headIndex, head, members);
    plan::unionQueryTiles(members, Branch::kNumMembers, false, j, j + 1, n, 1, &iBegin, &iEnd);
  }
  if (Branch::kCausal && iBegin < j) // i >= j, staying on the strided row lattice
    iBegin += (j - iBegin + iStep - 1) / iStep * iStep;
  const T *k = (const T *)p.k + p.kL.at(b, j, kvHead);
  const T *v = (const T *)p.v + p.vL.at(b, j, kvHead);
  float kv[kPerLane], vv[kPerLane], dk[kPerLane], dvv[kPerLane];
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    int d = lane + 32 * c;
    kv[c] = d < D ? dev::toFloat(k[d]) : 0.f;
    vv[c] = d < D ? dev::toFloat(v[d]) : 0.f;
    dk[c] = dvv[c] = 0.f;
  }
  for (long long i = iBegin; i < iEnd; i += iStep) {
    if constexpr (Branch::kKind == fwd::kBlocksBranch) {
      if (!fwd::branchPair<Branch>(members, headIndex, i, j, n))
        continue;
    }
    const float L = p.lse[(b * p.heads + head) * n + i];
    const T *q = (const T *)p.q + p.qL.at(b, i, head);
    const T *g = (const T *)p.dout + p.doutL.at(b, i, head);
    const float dot = dev::warpSum(dev::warpDot<D>(kv, q, lane));
    const float dp = dev::warpSum(dev::warpDot<D>(vv, g, lane));
    const float pij = expf(dot * p.scale - L);
    const float ds = pij * (dp - p.delta[(b * p.heads + head) * n + i]) * p.scale;
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      int d = lane + 32 * c;
      if (d < D) {
        dk[c] += ds * dev::toFloat(q[d]);
        dvv[c] += pij * dev::toFloat(g[d]);
      }
    }
  }
  const long long slice = ((b * n + j) * p.heads + head) * D;
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    int d = lane + 32 * c;
    if (d < D) {
      p.dkAcc[slice + d] += dk[c];
      p.dvAcc[slice + d] += dvv[c];
    }
  }
}

/// Accumulators -> gradients in the input dtype (grid-stride over elements,
/// in the accumulators' contiguous order): dq as is, dk and dv summed over
/// the query heads of each kv head. `what` holds FinalizeWhat bits: the
/// gradients written directly are left alone, or, with kZero*, zeroed.
template <class T, int D>
__device__ void finalizeGradients(const Params &p, long long qElems, long long kvElems,
                                  int what) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  // Contiguous gradients (the common case) skip the 64-bit index arithmetic.
  const bool dqDense = kContiguousTensors ||
                       (p.dqL.head == D && p.dqL.row == (long long)p.heads * D &&
                        p.dqL.batch == p.seqLen * p.heads * D);
  const bool dkvDense = kContiguousTensors ||
                        (p.dkL.head == D && p.dkL.row == (long long)p.kvHeads * D &&
                         p.dkL.batch == p.seqLen * p.kvHeads * D && p.dvL.head == p.dkL.head &&
                         p.dvL.row == p.dkL.row && p.dvL.batch == p.dkL.batch);
  if ((what & kFinalizeDq) && dqDense) {
    // A plain conversion, kept free of branches so that it runs at copy speed.
    dev::convertGridStride<T>((T *)p.dq, p.dqAcc, qElems);
  } else if (what & (kFinalizeDq | kZeroDq)) {
    for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < qElems;
         x += stride) {
      const long long d = x % D, row = x / D; // row = (b * N + i) * H + h
      const long long h = row % p.heads, bi = row / p.heads;
      const long long at = dqDense ? x : p.dqL.at(bi / p.seqLen, bi % p.seqLen, h) + d;
      ((T *)p.dq)[at] = dev::fromFloat<T>(what & kFinalizeDq ? p.dqAcc[x] : 0.f);
    }
  }
  // dK and dV: four columns a step (head_dim is a multiple of 4), the
  // query heads' fp32 slices read as 16-byte quads (the accumulators start
  // on 16 bytes) and the 64-bit index arithmetic done once per four.
  static_assert(D % 4 == 0, "four columns a step");
  if (what & (kFinalizeDkv | kZeroDkv))
    for (long long x4 = blockIdx.x * (long long)blockDim.x + threadIdx.x; x4 < kvElems / 4;
         x4 += stride) {
      const long long x = 4 * x4;
      const long long d = x % D, row = x / D; // row = (b * N + j) * Hkv + kvHead
      const long long kvHead = row % p.kvHeads, bj = row / p.kvHeads;
      dev::Quad k{0.f, 0.f, 0.f, 0.f}, v{0.f, 0.f, 0.f, 0.f};
      if (what & kFinalizeDkv) {
        const long long first = (bj * p.heads + kvHead * p.groupSize) * D + d;
        for (int g = 0; g < p.groupSize; ++g) {
          const dev::Quad a = *reinterpret_cast<const dev::Quad *>(p.dkAcc + first + g * D);
          const dev::Quad b = *reinterpret_cast<const dev::Quad *>(p.dvAcc + first + g * D);
          k = dev::Quad{k.x + a.x, k.y + a.y, k.z + a.z, k.w + a.w};
          v = dev::Quad{v.x + b.x, v.y + b.y, v.z + b.z, v.w + b.w};
        }
      }
      long long atK = x, atV = x;
      if (!dkvDense) {
        const long long b = bj / p.seqLen, j = bj % p.seqLen;
        atK = p.dkL.at(b, j, kvHead) + d;
        atV = p.dvL.at(b, j, kvHead) + d;
      }
      const float kf[4] = {k.x, k.y, k.z, k.w}, vf[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        ((T *)p.dk)[atK + c] = dev::fromFloat<T>(kf[c]);
        ((T *)p.dv)[atV + c] = dev::fromFloat<T>(vf[c]);
      }
    }
}
} // namespace bwd
} // namespace dattn
