// dattn: the ring's tensor-core block kernel for dense branches (every pair
// of the sequence, causal or not: a strided branch of one unbounded segment
// and dilation 1). Such a branch makes every peer send whole shard ranges,
// so every part of a block is a run of consecutive rows (step 1) and a key
// tile of BN packed rows is BN consecutive positions: tiles classify by
// position like the one-GPU kernel's (skip, full, partial at the causal
// diagonal or a part's end), and the loop is the forward kernel's (warp
// tile vocabulary, cp.async double buffering), walking the block's parts
// instead of one key range. Partials merge into the rank's fp32
// accumulators (kMerge epilogue). Other branches use the SIMT block kernel.
#pragma once

#include "dattn/forward_mma.cuh"
#include "dattn/ring_params.cuh"

namespace dattn {
namespace ring {

/// The key tile of a block: BN packed rows from row b0 of part `part`.
struct KeyTile {
  int part;
  long long b0;
};

/// -inf for the pairs of a partial tile the branch does not attend: keys
/// past the part's end, and (causal) keys after the query in position.
template <int BN, int MT>
DATTN_DEV void maskRingTile(float (&s)[MT][BN / 8][4], long long qPos0, long long kPos0,
                            long long keysLeft, bool causal, int lane) {
  warp::mask<BN, MT>(s, lane, [&](long long a, long long b) {
    return b < keysLeft && !(causal && kPos0 + b > qPos0 + a);
  });
}

/// One CTA per (query tile of one of the rank's ranges, branch head, batch).
template <class T, int D, int BM, int BN, int MT, class Branch>
__device__ void mmaRingForward(const fwd::Params &p, const Params &r) {
  static_assert(Branch::kKind == fwd::kStridedBranch && Branch::kStride == 1 &&
                    Branch::kSegment < 0,
                "the tensor-core ring kernel is for dense branches");
  using Tile = fwd::MmaTile<T, D, BM, BN, MT>;
  extern __shared__ __align__(128) unsigned char smemRaw[];
  T *sQ = reinterpret_cast<T *>(smemRaw);
  T *sK = sQ + BM * D; // two stages of BN * D
  T *sV = sK + 2 * BN * D;

  const int warpId = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long batch = blockIdx.z;
  const int kvHead = head / p.groupSize;

  // This CTA's query rows: tiles of the first range, then of the second;
  // compact index a is local row base + a, at position qPos + a.
  const long long len0 = r.qEnd[0] - r.qBegin[0], tiles0 = plan::ceilDiv(len0, BM);
  const int range = blockIdx.x < tiles0 ? 0 : 1;
  fwd::TileRange tr;
  tr.base = range == 0 ? 0 : len0;
  tr.step = 1;
  tr.count = r.qEnd[range] - r.qBegin[range];
  tr.qa0 = (range == 0 ? (long long)blockIdx.x : blockIdx.x - tiles0) * BM;
  tr.t0 = tr.t1 = 0; // unused: key tiles come from the parts
  if (tr.qa0 >= tr.count)
    return;
  const long long qPos = r.qBegin[range] + tr.qa0; // position of the tile's first row
  const long long qLast = r.qBegin[range] + plan::minI(tr.qa0 + BM, tr.count) - 1;

  auto classOf = [&](const KeyTile &k) {
    const Part &pt = r.parts[k.part];
    const long long kFirst = pt.start + k.b0, kLast = pt.start + plan::minI(k.b0 + BN, pt.count) - 1;
    if (Branch::kCausal && kFirst > qLast)
      return (int)plan::kSkip;
    const bool edge = k.b0 + BN > pt.count || (Branch::kCausal && kLast > qPos);
    return (int)(edge ? plan::kPartial : plan::kFull);
  };
  // The first tile at or after k that is not skipped (part = numParts: none).
  auto advance = [&](KeyTile k) {
    while (k.part < r.numParts) {
      const Part &pt = r.parts[k.part];
      // Another kv head's part, the part's end, or (causal) every later key
      // after the tile's last query: on to the next part.
      if (pt.kvHead != kvHead || k.b0 >= pt.count ||
          (Branch::kCausal && pt.start + k.b0 > qLast)) {
        ++k.part;
        k.b0 = 0;
        continue;
      }
      return k;
    }
    return k;
  };
  auto loadKeys = [&](T *dstK, T *dstV, const KeyTile &k) {
    const Part &pt = r.parts[k.part];
    typename Tile::template RowLoader<BN> kLoader, vLoader;
    kLoader.init((const T *)r.keys + r.keyL.at(batch, 0, kvHead), r.keyL.row, pt.offset, 1);
    vLoader.init((const T *)r.values + r.valueL.at(batch, 0, kvHead), r.valueL.row, pt.offset,
                 1);
    kLoader.load(dstK, k.b0, pt.count);
    vLoader.load(dstV, k.b0, pt.count);
  };

  KeyTile t = advance(KeyTile{0, 0});
  if (t.part >= r.numParts)
    return; // no key of this block for these rows: nothing to merge
  typename Tile::template RowLoader<BM> qLoader;
  qLoader.init((const T *)p.q + p.qL.at(batch, 0, head), p.qL.row, tr.base, 1);
  qLoader.load(sQ, tr.qa0, tr.count);
  loadKeys(sK, sV, t);
  dev::cpAsyncCommit();

  float acc[MT][D / 8][4];
  warp::zero(acc);
  warp::OnlineSoftmax<MT> softmax;
  softmax.init();
  const float scaleLog2 = p.scale * dev::kLog2e;
  const int row0 = warpId * 16 * MT; // this warp's rows in the CTA's tile

  for (int stage = 0; t.part < r.numParts; stage ^= 1) {
    dev::cpAsyncWaitAll();
    __syncthreads();
    const int cls = classOf(t);
    const KeyTile next = advance(KeyTile{t.part, t.b0 + BN});
    if (next.part < r.numParts) // 1. the next K, V tiles into the other stage
      loadKeys(sK + (stage ^ 1) * BN * D, sV + (stage ^ 1) * BN * D, next);
    dev::cpAsyncCommit();
    float s[MT][BN / 8][4]; // 2. S = Q K^T
    warp::scores<T, Tile, D, BN, MT>(s, dev::smemAddress(sQ),
                                     dev::smemAddress(sK + stage * BN * D), row0, lane);
    if (cls == plan::kPartial) { // 3. masks on partial tiles only
      const Part &pt = r.parts[t.part];
      maskRingTile<BN, MT>(s, qPos + row0, pt.start + t.b0, pt.count - t.b0, Branch::kCausal,
                           lane);
    }
    softmax.update(s, acc, scaleLog2); // 4. online softmax
    warp::accumulatePV<T, Tile, D, BN, MT>(acc, s, dev::smemAddress(sV + stage * BN * D),
                                           lane); // 5. O += P V
    t = next;
  }
  fwd::storeRows<T, D, MT, fwd::kMerge>(p, acc, softmax, tr, tr.qa0 + row0, batch, head, lane);
}

} // namespace ring
} // namespace dattn
