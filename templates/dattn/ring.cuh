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
// executor's data flow and runs what the tensor-core block kernels
// (ring_mma.cuh) do not: fp32 (blocks branches; strided ones with precision
// ieee).
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

/// Calls visit(k, v, packedRow) for every key of the block that is in
/// S_b(h, i) of query row i (global positions) for kv head `kvHead`.
template <class T, class Branch, class Visit>
DATTN_DEV void forEachKey(const Params &r, const plan::Member *members, int headIndex,
                          int kvHead, long long batch, long long i, Visit visit) {
  for (int pi = 0; pi < r.numParts; ++pi) {
    const Part part = r.parts[pi];
    if (part.kvHead != kvHead)
      continue;
    for (long long x = 0; x < part.count; ++x) {
      if (!fwd::branchPair<Branch>(members, headIndex, i, part.start + x * part.step, r.globalN))
        continue;
      const long long row = part.offset + x;
      visit((const T *)r.keys + r.keyL.at(batch, row, kvHead),
            (const T *)r.values + r.valueL.at(batch, row, kvHead), row);
    }
  }
}

/// The blocks branch's members for head `head` (in global terms).
template <class Branch>
DATTN_DEV void loadMembers(const fwd::Params &p, const Params &r, int headIndex, int head,
                           plan::Member *members) {
  if constexpr (Branch::kKind == fwd::kBlocksBranch) {
    fwd::Params global = p; // members read N-dependent fields in global terms
    global.seqLen = r.globalN;
    for (int m = 0; m < Branch::kNumMembers; ++m)
      members[m] = Branch::member(m, headIndex, head, global);
  }
}

/// This warp's local query row in the SIMT kernels (one warp per row,
/// blockDim.x / 32 rows per CTA); false past the rank's rows.
DATTN_DEV bool warpRow(long long rows, long long *li) {
  *li = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  return *li < rows;
}

/// One warp per (local query row, branch head, batch): the block's keys of
/// its kv head, merged into p.oAcc and p.lse (p.seqLen = the rank's rows).
template <class T, int D, class Branch>
__device__ void simtRingForward(const fwd::Params &p, const Params &r) {
  constexpr int kPerLane = (D + 31) / 32;
  const int lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long batch = blockIdx.z, rows = p.seqLen;
  long long li;
  if (!warpRow(rows, &li))
    return;
  const long long i = globalRow(r, li);
  const int kvHead = head / p.groupSize;
  plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  loadMembers<Branch>(p, r, headIndex, head, members);

  const T *q = (const T *)p.q + p.qL.at(batch, li, head);
  float qv[kPerLane], acc[kPerLane];
  for (int c = 0; c < kPerLane; ++c) {
    const int d = lane + 32 * c;
    qv[c] = d < D ? dev::toFloat(q[d]) * p.scale : 0.f;
    acc[c] = 0.f;
  }
  float m = dev::negInf(), l = 0.f;
  forEachKey<T, Branch>(r, members, headIndex, kvHead, batch, i,
                        [&](const T *k, const T *v, long long) {
                          const float s = dev::warpSum(dev::warpDot<D>(qv, k, lane));
                          const float mNew = fmaxf(m, s);
                          // m = -inf at the first key: corr = 0
                          const float corr = expf(m - mNew), pj = expf(s - mNew);
                          l = l * corr + pj;
                          for (int c = 0; c < kPerLane; ++c) {
                            const int d = lane + 32 * c;
                            acc[c] = acc[c] * corr + (d < D ? pj * dev::toFloat(v[d]) : 0.f);
                          }
                          m = mNew;
                        });
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

/// Backward over one block, with the rank's final LSE and Delta: for every
/// (local query row, head) and every key of the block in its key set,
/// p = exp(s - L), dS = p (dP - Delta); dQ accumulates in registers and is
/// added to g.dqAcc, dK and dV of the key are added (fp32 atomics: many
/// query rows share a key) to g.dk and g.dv. The scale goes into dQ and dK.
template <class T, int D, class Branch>
__device__ void simtRingBackward(const fwd::Params &p, const Params &r, const Grad &g) {
  constexpr int kPerLane = (D + 31) / 32;
  const int lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long batch = blockIdx.z, rows = p.seqLen;
  long long li;
  if (!warpRow(rows, &li))
    return;
  const float lse = p.lse[(batch * p.heads + head) * rows + li];
  if (lse == dev::negInf())
    return; // a row with no key anywhere has zero gradients
  const float delta = g.delta[(batch * p.heads + head) * rows + li];
  const long long i = globalRow(r, li);
  const int kvHead = head / p.groupSize;
  plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  loadMembers<Branch>(p, r, headIndex, head, members);
  const T *q = (const T *)p.q + p.qL.at(batch, li, head);
  const T *dout = (const T *)g.dout + g.doutL.at(batch, li, head);
  float qv[kPerLane], gv[kPerLane], dq[kPerLane];
  for (int c = 0; c < kPerLane; ++c) {
    const int d = lane + 32 * c;
    qv[c] = d < D ? dev::toFloat(q[d]) : 0.f;
    gv[c] = d < D ? dev::toFloat(dout[d]) : 0.f;
    dq[c] = 0.f;
  }
  forEachKey<T, Branch>(
      r, members, headIndex, kvHead, batch, i, [&](const T *k, const T *v, long long row) {
        const float s = dev::warpSum(dev::warpDot<D>(qv, k, lane)) * p.scale;
        const float dp = dev::warpSum(dev::warpDot<D>(gv, v, lane));
        const float pij = expf(s - lse), ds = pij * (dp - delta);
        float *dk = g.dk + g.gradL.at(batch, row, kvHead);
        float *dv = g.dv + g.gradL.at(batch, row, kvHead);
        for (int c = 0; c < kPerLane; ++c) {
          const int d = lane + 32 * c;
          if (d < D) {
            dq[c] += ds * dev::toFloat(k[d]);
            atomicAdd(dk + d, ds * p.scale * qv[c]);
            atomicAdd(dv + d, pij * gv[c]);
          }
        }
      });
  float *dqRow = g.dqAcc + ((batch * rows + li) * p.heads + head) * D;
  for (int c = 0; c < kPerLane; ++c) {
    const int d = lane + 32 * c;
    if (d < D)
      dqRow[d] += dq[c] * p.scale;
  }
}

/// Delta = dO . O for every (local row, head): one warp per row and head.
template <class T, int D>
__device__ void ringDelta(const fwd::Params &p, const void *dout, Layout doutL, float *delta) {
  constexpr int kPerLane = (D + 31) / 32;
  const int lane = threadIdx.x % 32;
  const long long rows = p.seqLen, batch = blockIdx.z;
  const int head = blockIdx.y;
  long long li;
  if (!warpRow(rows, &li))
    return;
  const T *o = (const T *)p.o + p.oL.at(batch, li, head);
  const T *g = (const T *)dout + doutL.at(batch, li, head);
  float ov[kPerLane];
  for (int c = 0; c < kPerLane; ++c) {
    const int d = lane + 32 * c;
    ov[c] = d < D ? dev::toFloat(o[d]) : 0.f;
  }
  const float x = dev::warpSum(dev::warpDot<D>(ov, g, lane));
  if (lane == 0)
    delta[(batch * p.heads + head) * rows + li] = x;
}

/// The local row of global row g in a rank's shard.
DATTN_DEV long long localRow(const long long qBegin[2], const long long qEnd[2], long long g) {
  return g >= qBegin[0] && g < qEnd[0] ? g - qBegin[0] : (qEnd[0] - qBegin[0]) + g - qBegin[1];
}

/// The part holding packed row `row`: parts are in packing order, so their
/// offsets ascend from 0 (binary search: a fragmented transfer, e.g. the
/// union of several dilations, holds thousands of short parts).
DATTN_DEV const Part &partOf(const Part *parts, int numParts, long long row) {
  int lo = 0, hi = numParts - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (parts[mid].offset <= row)
      lo = mid;
    else
      hi = mid - 1;
  }
  return parts[lo];
}

/// Every (batch, packed row, chunk) of a transfer whose rows are `parts`,
/// held by the rank whose shard is [qBegin, qEnd): visit(b, packed row,
/// local row in that shard, kv head, chunk), one thread each, grid-stride.
template <int kChunks, class Visit>
DATTN_DEV void forEachPackedChunk(const Part *parts, int numParts, long long packedRows,
                                  const long long qBegin[2], const long long qEnd[2],
                                  long long batch, Visit visit) {
  const long long total = batch * packedRows * kChunks;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total; x += stride) {
    const int ch = static_cast<int>(x % kChunks);
    const long long row = (x / kChunks) % packedRows, b = x / kChunks / packedRows;
    const Part &part = partOf(parts, numParts, row);
    const long long local = localRow(qBegin, qEnd, part.start + (row - part.offset) * part.step);
    visit(b, row, local, part.kvHead, ch);
  }
}

/// The dK (or dV) partials a peer computed for the rows this rank sent it,
/// packed fp32 [B][rows][D], added into the rank's accumulator (layout accL).
template <int D>
__device__ void addReturned(const Part *parts, int numParts, long long packedRows,
                            const long long qBegin[2], const long long qEnd[2],
                            const float *src, float *acc, Layout accL, long long batch) {
  forEachPackedChunk<D>(parts, numParts, packedRows, qBegin, qEnd, batch,
                        [&](long long b, long long row, long long local, int kv, int d) {
                          acc[accL.at(b, local, kv) + d] += src[(b * packedRows + row) * D + d];
                        });
}

/// A fragmented block staged in the sender's shape: the packed partials'
/// rows gain the staged fp32 partials of the same rows (layout srcL, the
/// sender's local rows), which the tensor-core kernels wrote there.
template <int D>
__device__ void addStagedPartials(const Part *parts, int numParts, long long packedRows,
                                  const long long qBegin[2], const long long qEnd[2],
                                  const float *src, Layout srcL, float *packed, long long batch) {
  forEachPackedChunk<D>(parts, numParts, packedRows, qBegin, qEnd, batch,
                        [&](long long b, long long row, long long local, int kv, int d) {
                          packed[(b * packedRows + row) * D + d] += src[srcL.at(b, local, kv) + d];
                        });
}

/// The fp32 gradient accumulators into dq, dk, dv (their layouts): dQ's
/// [B, rows, heads, D], dK's and dV's in layout accL (local rows; passed
/// along, the packed block that came home: [B, kv_heads, rows, D]).
template <class T, int D>
__device__ void ringFinalizeGradients(const fwd::Params &p, const float *dqAcc, void *dq,
                                      Layout dqL, const float *dkAcc, const float *dvAcc,
                                      Layout accL, void *dk, void *dv, Layout dkL, Layout dvL,
                                      int kvHeads, long long batch) {
  const long long rows = p.seqLen, stride = (long long)gridDim.x * blockDim.x;
  const long long qElems = batch * rows * p.heads * D, kvElems = batch * rows * kvHeads * D;
  for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < qElems + kvElems;
       x += stride) {
    if (x < qElems) {
      const long long d = x % D, row = x / D; // row = (b * rows + i) * H + h
      const long long h = row % p.heads, bi = row / p.heads;
      ((T *)dq)[dqL.at(bi / rows, bi % rows, h) + d] = dev::fromFloat<T>(dqAcc[x]);
    } else {
      const long long y = x - qElems, d = y % D, row = y / D; // (b * rows + j) * Hk + kv
      const long long kv = row % kvHeads, bj = row / kvHeads, b = bj / rows, j = bj % rows;
      const long long acc = accL.at(b, j, kv) + d;
      ((T *)dk)[dkL.at(b, j, kv) + d] = dev::fromFloat<T>(dkAcc[acc]);
      ((T *)dv)[dvL.at(b, j, kv) + d] = dev::fromFloat<T>(dvAcc[acc]);
    }
  }
}

/// Packs the parts' rows of the rank's k (or v) into [B][rows][D]: one
/// thread per 16 bytes. `src` has layout `srcL` in local rows.
template <class T, int D>
__device__ void packForPeer(const Part *parts, int numParts, long long packedRows,
                            const long long qBegin[2], const long long qEnd[2], const T *src,
                            Layout srcL, T *dst, long long batch) {
  constexpr int kChunk = 16 / sizeof(T);
  forEachPackedChunk<D / kChunk>(
      parts, numParts, packedRows, qBegin, qEnd, batch,
      [&](long long b, long long row, long long local, int kv, int ch) {
        reinterpret_cast<uint4 *>(dst + (b * packedRows + row) * D)[ch] =
            *reinterpret_cast<const uint4 *>(src + srcL.at(b, local, kv) + ch * kChunk);
      });
}

/// The inverse: a received packed block's rows back to their places in the
/// sender's shape (layout dstL, the sender's local rows [qBegin, qEnd)).
template <class T, int D>
__device__ void unpackFromPeer(const Part *parts, int numParts, long long packedRows,
                               const long long qBegin[2], const long long qEnd[2], const T *src,
                               T *dst, Layout dstL, long long batch) {
  constexpr int kChunk = 16 / sizeof(T);
  forEachPackedChunk<D / kChunk>(
      parts, numParts, packedRows, qBegin, qEnd, batch,
      [&](long long b, long long row, long long local, int kv, int ch) {
        *reinterpret_cast<uint4 *>(dst + dstL.at(b, local, kv) + ch * kChunk) =
            reinterpret_cast<const uint4 *>(src + (b * packedRows + row) * D)[ch];
      });
}

} // namespace ring
} // namespace dattn
