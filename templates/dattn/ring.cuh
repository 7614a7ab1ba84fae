// dattn: the ring's kernels (docs/ring.md). A rank holds rows of the
// sequence (one range, or two with the zigzag layout) and, step by step,
// blocks of keys: its own rows, then packed blocks from peers described by
// parts (kv head, global rows start + x * step, packed from row `offset`).
// For one block, every (query row, head) of the branch attends the keys of
// the block that its key set S_b(h, i) holds, in global positions, and folds
// the partial (O, LSE) into the rank's fp32 accumulators with the same
// merge as the branches (forward_common.cuh). Blocks are disjoint, so after
// the last one the accumulators hold the one-GPU result.
//
// This is the SIMT version: one warp per query row, keys tested one by one
// against the branch's predicate, every pattern and dtype. It defines the
// executor's data flow; tensor-core block kernels come next.
#pragma once

#include "dattn/forward_common.cuh"
#include "dattn/ring_params.cuh"

namespace dattn {
namespace ring {

/// The global row of local row li.
DATTN_DEV long long globalRow(const Params &r, long long li) {
  const long long first = r.qEnd[0] - r.qBegin[0];
  return li < first ? r.qBegin[0] + li : r.qBegin[1] + (li - first);
}

/// Whether key j is in S_b(h, i) (causal included), in global positions.
template <class Branch>
DATTN_DEV bool keeps(const plan::Member *members, int headIndex, long long n, long long i,
                     long long j) {
  if (Branch::kCausal && j > i)
    return false;
  if constexpr (Branch::kKind == fwd::kStridedBranch) {
    const long long r = Branch::kStride, o = Branch::offset(headIndex);
    if (i % r != o || j % r != o)
      return false;
    const long long w = plan::segmentLength(Branch::kSegment, n);
    return i / w == j / w;
  } else {
    for (int m = 0; m < Branch::kNumMembers; ++m)
      if (plan::memberContains(members[m], i, j))
        return true;
    return false;
  }
}

/// One warp per (local query row, branch head, batch): the block's keys of
/// its kv head, merged into p.oAcc and p.lse (p.seqLen = the rank's rows).
template <class T, int D, class Branch>
__device__ void simtRingForward(const fwd::Params &p, const Params &r) {
  constexpr int kPerLane = (D + 31) / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long batch = blockIdx.z, rows = p.seqLen;
  const long long li = (long long)blockIdx.x * (blockDim.x / 32) + warp;
  if (li >= rows)
    return;
  const long long i = globalRow(r, li);
  const int kvHead = head / p.groupSize;
  plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  if constexpr (Branch::kKind == fwd::kBlocksBranch) {
    fwd::Params global = p; // members read N-dependent fields in global terms
    global.seqLen = r.globalN;
    for (int m = 0; m < Branch::kNumMembers; ++m)
      members[m] = Branch::member(m, headIndex, head, global);
  }

  const T *q = (const T *)p.q + p.qL.at(batch, li, head);
  float qv[kPerLane], acc[kPerLane];
  for (int c = 0; c < kPerLane; ++c) {
    const int d = lane + 32 * c;
    qv[c] = d < D ? dev::toFloat(q[d]) * p.scale : 0.f;
    acc[c] = 0.f;
  }
  float m = dev::negInf(), l = 0.f;
  for (int pi = 0; pi < r.numParts; ++pi) {
    const Part part = r.parts[pi];
    if (part.kvHead != kvHead)
      continue;
    for (long long x = 0; x < part.count; ++x) {
      const long long j = part.start + x * part.step;
      if (!keeps<Branch>(members, headIndex, r.globalN, i, j))
        continue;
      const T *k = (const T *)r.keys + r.keyL.at(batch, part.offset + x, kvHead);
      const T *v = (const T *)r.values + r.valueL.at(batch, part.offset + x, kvHead);
      const float s = dev::warpSum(dev::warpDot<D>(qv, k, lane));
      const float mNew = fmaxf(m, s);
      const float corr = expf(m - mNew), pj = expf(s - mNew); // m = -inf first: corr 0
      l = l * corr + pj;
      for (int c = 0; c < kPerLane; ++c) {
        const int d = lane + 32 * c;
        acc[c] = acc[c] * corr + (d < D ? pj * dev::toFloat(v[d]) : 0.f);
      }
      m = mNew;
    }
  }
  if (l == 0.f)
    return; // none of this row's keys is in the block

  float *lsePtr = p.lse + (batch * p.heads + head) * rows + li;
  const float lseAcc = *lsePtr;
  __syncwarp(); // every lane has read lseAcc before lane 0 rewrites it
  float lseNew, wAcc, wB;
  fwd::mergeLse(lseAcc, m + logf(l), &lseNew, &wAcc, &wB);
  float *o = p.oAcc + ((batch * rows + li) * p.heads + head) * D;
  const float inv = 1.f / l;
  for (int c = 0; c < kPerLane; ++c) {
    const int d = lane + 32 * c;
    if (d < D)
      o[d] = o[d] * wAcc + acc[c] * inv * wB;
  }
  if (lane == 0)
    *lsePtr = lseNew;
}

/// Packs the parts' rows of the rank's k (or v) into [B][rows][D]: one
/// thread per 16 bytes, grid-stride. `src` has layout `srcL` in local rows;
/// part.offset is the packed row, localRow() the source row.
template <class T, int D>
__device__ void packForPeer(const Part *parts, int numParts, long long packedRows,
                         const long long qBegin[2], const long long qEnd[2], const T *src,
                         Layout srcL, T *dst, long long batch) {
  constexpr int kChunk = 16 / sizeof(T), kChunks = D / kChunk;
  const long long total = batch * packedRows * kChunks;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total; x += stride) {
    const int ch = static_cast<int>(x % kChunks);
    const long long row = (x / kChunks) % packedRows, b = x / kChunks / packedRows;
    int pi = 0; // the part holding packed row `row` (parts are few and in offset order)
    while (pi + 1 < numParts && parts[pi + 1].offset <= row)
      ++pi;
    const Part part = parts[pi];
    const long long g = part.start + (row - part.offset) * part.step;
    const long long first = qEnd[0] - qBegin[0];
    const long long local = g < qEnd[0] && g >= qBegin[0] ? g - qBegin[0] : first + g - qBegin[1];
    const uint4 *from =
        reinterpret_cast<const uint4 *>(src + srcL.at(b, local, part.kvHead) + ch * kChunk);
    reinterpret_cast<uint4 *>(dst + (b * packedRows + row) * D)[ch] = *from;
  }
}

} // namespace ring
} // namespace dattn
