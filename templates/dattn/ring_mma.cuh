// dattn: the ring's tensor-core block kernels. For strided branches (dense
// is one unbounded segment of dilation 1) the forward is the one-GPU
// forward's tile loop (warp tile vocabulary, cp.async double buffering)
// walking the block's parts instead of one key range, merging into the
// rank's fp32 accumulators (kMerge epilogue); the backward is the one-GPU
// dK/dV kernel's loop (backward_mma.cuh) with the block's key tiles as its
// CTAs and the rank's query tiles as its steps. Blocks branches (windows,
// global tokens, block-sparse patterns and their unions) have their own
// pair at the end: the same loops over contiguous query tiles and over the
// block's parts in key tiles of packed rows, each tile classified by the
// union's closed form on the global positions it covers and masked pair by
// pair when partial.
#pragma once

#include "dattn/backward_mma.cuh"
#include "dattn/forward_mma.cuh"
#include "dattn/ring.cuh"
#include "dattn/ring_params.cuh"

namespace dattn {
namespace ring {

/// The key tile of a block: BN packed rows from row b0 of part `part`.
struct KeyTile {
  int part;
  long long b0;
  KeyRun run; ///< the part's run at the head's residue in the segment
};

// ---------------------------------------------------------------------------
// The tile steps both pairs share (strided and blocks kernels differ in
// their walks and masks only).

/// Forward steps 2-5 on the stage's K and V tiles (tk, tv): S = Q K^T,
/// `maskTile(s)` on partial tiles only, the online softmax, O += P V.
template <class T, class Tile, int D, int BN, int MT, class MaskTile>
DATTN_DEV void forwardKeyTile(float (&acc)[MT][D / 8][4], warp::OnlineSoftmax<MT> &softmax,
                              unsigned sQa, unsigned tk, unsigned tv, int row0, bool partial,
                              float scaleLog2, int lane, MaskTile maskTile) {
  float s[MT][BN / 8][4]; // 2. S = Q K^T
  warp::scores<T, Tile, D, BN, MT>(s, sQa, tk, row0, lane);
  if (partial) // 3. masks on partial tiles only
    maskTile(s);
  softmax.update(s, acc, scaleLog2);                  // 4. online softmax
  warp::accumulatePV<T, Tile, D, BN, MT>(acc, s, tv, lane); // 5. O += P V
}

/// Backward steps 2-6 for one query tile (tq, tg: its Q and dO; tileL,
/// tileDelta: its L and Delta): S^T and dP^T, on partial tiles p = 0 where
/// key b of the tile is past `keysLeft`, query a past the tile's rows or
/// keep(a, b) says no; P^T, dS^T, dV and dK into the registers, dQ by
/// reductions.
template <class T, class Tile, int D, int BM, int BN, int W, class Keep>
DATTN_DEV void backwardQueryTile(float (&dk)[D / 8][4], float (&dv)[D / 8][4], unsigned sKa,
                                 unsigned sVa, unsigned tq, unsigned tg, const float *tileL,
                                 const float *tileDelta, T *sDS, const bwd::RowMap &rm,
                                 long long qa0, long long keysLeft, bool partial, int keyRow0,
                                 int warpId, float *dq0, long long dqRowStride, float scale,
                                 float scaleLog2, int lane, Keep keep) {
  float s[BM / 8][4], dp[BM / 8][4]; // 2. S^T = K Q^T, dP^T = V dO^T
  bwd::scorePair<T, Tile, D, BM>(s, dp, sKa, sVa, tq, tg, keyRow0, lane);
  if (partial) { // 3. pairs outside the block or the branch: p = 0
#pragma unroll
    for (int nb = 0; nb < BM / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const long long b = keyRow0 + lane / 4 + (e >> 1) * 8;
        const long long a = nb * 8 + (lane % 4) * 2 + (e & 1);
        if (b >= keysLeft || qa0 + a >= rm.count || !keep(a, b))
          s[nb][e] = dev::negInf();
      }
  }
  bwd::probabilitiesTransposed<BM>(s, tileL, scaleLog2, lane); // 4. P^T, dS^T
  bwd::scoreGradientsTransposed<BM>(s, dp, tileDelta, lane);
  bwd::accumulateDvDk<T, Tile, D, BM>(dv, dk, s, dp, tg, tq, lane); // 5. dV, dK
  bwd::addDqFromDs<T, Tile, D, BM, BN, W>(dp, sDS, sKa, rm, qa0, keyRow0, warpId, dq0,
                                          dqRowStride, scale, lane); // 6. dQ
}

/// Backward step 7: the key tile's dK/dV partials of this warp's 16 key
/// rows (dK scaled) added to g.dk, g.dv (reductions: the heads of a kv head
/// share its rows) at rows base + b * step of the block, b < count.
template <int D>
DATTN_DEV void addKeyPartials(const Grad &g, const float (&dk)[D / 8][4],
                              const float (&dv)[D / 8][4], long long kb0, int keyRow0,
                              long long base, long long step, long long count, long long batch,
                              int kvHead, float scale, int lane) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const long long b = kb0 + keyRow0 + lane / 4 + half * 8;
    if (b >= count)
      continue;
    const long long row = base + b * step;
    float *dkRow = g.dk + g.gradL.at(batch, row, kvHead);
    float *dvRow = g.dv + g.gradL.at(batch, row, kvHead);
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
      const int c = nb * 8 + (lane % 4) * 2;
      dev::reduceAdd2(dkRow + c, dk[nb][2 * half] * scale, dk[nb][2 * half + 1] * scale);
      dev::reduceAdd2(dvRow + c, dv[nb][2 * half], dv[nb][2 * half + 1]);
    }
  }
}

/// Backward steps 1-7 for one key tile of a block (keys: its key rows, at
/// packed or local rows keyBase + b * keyStep, b < keyCount, the tile from
/// b = kb0) over the query tiles [qt, walkEnd) of the CTA's walk, qt the
/// first with a pair: nextTile(t) gives the next at or after t (walkEnd if
/// none), queryTile(t, &rowMap, &qa0, &pos0) its rows and the position (a
/// lattice index or a global row) of its first, classOf(t) its class, and
/// keep(pos0, a, b) decides the pairs of a partial tile. Both ring
/// backward kernels differ only in these walks (ring_params.cuh).
template <class T, int D, int BM, int W, class QueryTile, class NextTile, class ClassOf,
          class Keep>
DATTN_DEV void backwardKeyTileWalk(const fwd::Params &p, const Params &r, const Grad &g,
                                   long long batch, int head, int kvHead, long long keyBase,
                                   long long keyStep, long long keyCount, long long kb0,
                                   long long qt, long long walkEnd, QueryTile queryTile,
                                   NextTile nextTile, ClassOf classOf, Keep keep) {
  constexpr int BN = 16 * W;
  using Tile = fwd::MmaTile<T, D, BN, 16, 1>; // kThreads = 32 W
  constexpr int kThreads = Tile::kThreads;
  extern __shared__ __align__(128) unsigned char smemRaw[];
  T *sK = reinterpret_cast<T *>(smemRaw);
  T *sV = sK + BN * D;
  T *sQ = sV + BN * D;      // two stages of BM * D
  T *sG = sQ + 2 * BM * D;  // dO, two stages
  T *sDS = sG + 2 * BM * D; // dS^T [BN][BM]
  float *sL = reinterpret_cast<float *>(sDS + BN * BM); // two stages
  float *sDelta = sL + 2 * BM;                           // two stages
  const int warpId = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long rows = p.seqLen, kLeft = keyCount - kb0;

  typename Tile::template RowLoader<BN> kLoader, vLoader;
  kLoader.init((const T *)r.keys + r.keyL.at(batch, 0, kvHead), r.keyL.row, keyBase, keyStep);
  vLoader.init((const T *)r.values + r.valueL.at(batch, 0, kvHead), r.valueL.row, keyBase,
               keyStep);
  const T *qHead = (const T *)p.q + p.qL.at(batch, 0, head);
  const T *gHead = (const T *)g.dout + g.doutL.at(batch, 0, head);
  const float *lseSrc = p.lse + (batch * p.heads + head) * rows;
  const float *deltaSrc = g.delta + (batch * p.heads + head) * rows;
  auto loadQueries = [&](int st, long long t) {
    bwd::RowMap rm;
    long long qa0, pos0;
    queryTile(t, &rm, &qa0, &pos0);
    typename Tile::template RowLoader<BM> qLoader, gLoader;
    qLoader.init(qHead, p.qL.row, rm.base, rm.step);
    gLoader.init(gHead, g.doutL.row, rm.base, rm.step);
    qLoader.load(sQ + st * BM * D, qa0, rm.count);
    gLoader.load(sG + st * BM * D, qa0, rm.count);
    for (int x = threadIdx.x; x < 2 * BM; x += kThreads) {
      const int c = x % BM;
      const bool valid = qa0 + c < rm.count;
      const long long local = valid ? rm.base + (qa0 + c) * rm.step : 0;
      dev::cpAsync4(dev::smemAddress((x < BM ? sL : sDelta) + st * BM + c),
                    (x < BM ? lseSrc : deltaSrc) + local, valid);
    }
  };

  kLoader.load(sK, kb0, keyCount);
  vLoader.load(sV, kb0, keyCount);
  loadQueries(0, qt);
  dev::cpAsyncCommit();

  float dk[D / 8][4], dv[D / 8][4];
  warp::zero(dk);
  warp::zero(dv);
  const float scaleLog2 = p.scale * dev::kLog2e;
  const unsigned sKa = dev::smemAddress(sK), sVa = dev::smemAddress(sV);
  const int keyRow0 = warpId * 16; // this warp's key rows in the tile
  float *dq0 = g.dqAcc + (batch * rows * p.heads + head) * D;

  for (int stage = 0; qt < walkEnd; stage ^= 1) {
    dev::cpAsyncWaitAll();
    __syncthreads();
    const int cls = classOf(qt);
    const long long qtNext = nextTile(qt + 1);
    if (qtNext < walkEnd) // 1. the next query tile into the other stage
      loadQueries(stage ^ 1, qtNext);
    dev::cpAsyncCommit();
    bwd::RowMap rm;
    long long qa0, pos0;
    queryTile(qt, &rm, &qa0, &pos0);
    const unsigned tq = dev::smemAddress(sQ + stage * BM * D);
    const unsigned tg = dev::smemAddress(sG + stage * BM * D);
    backwardQueryTile<T, Tile, D, BM, BN, W>( // 2-6
        dk, dv, sKa, sVa, tq, tg, sL + stage * BM, sDelta + stage * BM, sDS, rm, qa0, kLeft,
        cls == plan::kPartial, keyRow0, warpId, dq0, (long long)p.heads * D, p.scale, scaleLog2,
        lane, [&](long long a, long long b) { return keep(pos0, a, b); });
    qt = qtNext;
  }
  addKeyPartials<D>(g, dk, dv, kb0, keyRow0, keyBase, keyStep, keyCount, batch, kvHead, p.scale,
                    lane); // 7. the tile's partials
}

// ---------------------------------------------------------------------------
// Strided (dilated) branches: segment w, dilation r, offset o per head. A
// query attends the keys of its segment whose position is congruent to o
// modulo r, so on both sides the rows of one (segment, head) form a lattice
// of step r: the rank's queries a piece (segment x shard range) at a time,
// the block's keys a part at a time, clipped to the segment. Compact
// indices count lattice points; positions are o + r * compact index.

/// A strided forward CTA's work (query tile of a piece of the rank's rows,
/// branch head, batch: blockIdx) and its walk over the block's key tiles,
/// a part's keys of the head's residue in the piece's segment at a time
/// (BN keys a tile): shared by the sm80 kernel below and the wgmma one
/// (ring_wgmma.cuh). Compact lattice indices of positions: (pos - o) / dil.
template <class Branch, int BM, int BN> struct StridedForwardCta {
  static_assert(Branch::kKind == fwd::kStridedBranch, "the strided ring kernels");
  int headIndex, head, kvHead;
  long long batch, dil, o, segBegin, segEnd;
  fwd::TileRange tr; ///< the query rows (local rows base + a * step)
  long long qc0, qcLast; ///< lattice indices of the tile's first and last query

  /// False if the CTA has no query row or its rows no key of the block.
  DATTN_DEV bool find(const fwd::Params &p, const Params &r, KeyTile *first) {
    headIndex = blockIdx.y;
    head = Branch::head(headIndex);
    batch = blockIdx.z;
    kvHead = head / p.groupSize;
    dil = Branch::kStride;
    o = Branch::offset(headIndex);
    const long long w = plan::segmentLength(Branch::kSegment, r.globalN);
    QueryPiece q;
    if (!queryPiece(r, blockIdx.x, w, dil, o, BM, &q))
      return false;
    segBegin = q.segBegin;
    segEnd = q.segEnd;
    tr.base = q.localFirst;
    tr.step = dil;
    tr.count = q.count;
    tr.qa0 = q.tile * BM;
    tr.t0 = tr.t1 = 0; // unused: key tiles come from the parts
    if (tr.qa0 >= tr.count)
      return false;
    qc0 = (q.first - o) / dil + tr.qa0;
    qcLast = qc0 + plan::minI(BM, tr.count - tr.qa0) - 1;
    *first = advance(r, KeyTile{0, 0, {}});
    return first->part < r.numParts;
  }
  /// The class of key tile t: partial where it runs past its run's keys or
  /// crosses the causal diagonal.
  DATTN_DEV int classOf(const KeyTile &t) const {
    const KeyRun &k = t.run;
    const long long m = k.posStep / dil; // key k of a run: lattice index kc(run) + k * m
    const long long kc0 = (k.pos - o) / dil + t.b0 * m;
    const long long kcLast = kc0 + (plan::minI(BN, k.count - t.b0) - 1) * m;
    if (Branch::kCausal && kc0 > qcLast)
      return plan::kSkip;
    const bool edge = t.b0 + BN > k.count || (Branch::kCausal && kcLast > qc0);
    return edge ? plan::kPartial : plan::kFull;
  }
  /// The first key tile at or after t that is not skipped; a part's run is
  /// computed once, when the walk enters the part (t.b0 == 0).
  DATTN_DEV KeyTile advance(const Params &r, KeyTile t) const {
    while (t.part < r.numParts) {
      if (r.parts[t.part].kvHead == kvHead) {
        if (t.b0 == 0)
          t.run = partRun<(Branch::kSegment >= 0)>(r.parts[t.part], dil, o, segBegin, segEnd);
        const KeyRun &k = t.run;
        if (t.b0 < k.count &&
            !(Branch::kCausal && (k.pos - o) / dil + t.b0 * (k.posStep / dil) > qcLast))
          return t;
      }
      ++t.part;
      t.b0 = 0;
    }
    return t;
  }
  DATTN_DEV KeyTile next(const Params &r, const KeyTile &t) const {
    return advance(r, KeyTile{t.part, t.b0 + BN, t.run});
  }
  /// A partial tile's mask for the warp whose rows start at row0 of the
  /// CTA's tile (masks in lattice indices): keep(a, b) for its row a and the
  /// tile's key b.
  template <int MT>
  DATTN_DEV void mask(float (&s)[MT][BN / 8][4], const KeyTile &t, int row0, int lane) const {
    const KeyRun &k = t.run;
    const long long m = k.posStep / dil, kc0 = (k.pos - o) / dil + t.b0 * m;
    const long long qcW = qc0 + row0, keysLeft = k.count - t.b0;
    warp::mask<BN, MT>(s, lane, [&](long long a, long long b) {
      return b < keysLeft && !(Branch::kCausal && kc0 + b * m > qcW + a);
    });
  }
};

/// One CTA per (query tile of a piece of the rank's rows, branch head,
/// batch), over the block's key runs in the piece's segment.
template <class T, int D, int BM, int BN, int MT, class Branch>
__device__ void mmaRingForward(const fwd::Params &p, const Params &r) {
  using Tile = fwd::MmaTile<T, D, BM, BN, MT>;
  extern __shared__ __align__(128) unsigned char smemRaw[];
  T *sQ = reinterpret_cast<T *>(smemRaw);
  T *sK = sQ + BM * D; // two stages of BN * D
  T *sV = sK + 2 * BN * D;

  const int warpId = threadIdx.x / 32, lane = threadIdx.x % 32;
  StridedForwardCta<Branch, BM, BN> cta;
  KeyTile t;
  if (!cta.find(p, r, &t))
    return; // no key of this block for these rows: nothing to merge
  const fwd::TileRange &tr = cta.tr;
  const long long batch = cta.batch;
  auto loadKeys = [&](T *dstK, T *dstV, const KeyTile &t) {
    const KeyRun &k = t.run;
    typename Tile::template RowLoader<BN> kLoader, vLoader;
    kLoader.init((const T *)r.keys + r.keyL.at(batch, 0, cta.kvHead), r.keyL.row, k.base,
                 k.step);
    vLoader.init((const T *)r.values + r.valueL.at(batch, 0, cta.kvHead), r.valueL.row, k.base,
                 k.step);
    kLoader.load(dstK, t.b0, k.count);
    vLoader.load(dstV, t.b0, k.count);
  };

  typename Tile::template RowLoader<BM> qLoader;
  qLoader.init((const T *)p.q + p.qL.at(batch, 0, cta.head), p.qL.row, tr.base, tr.step);
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
    const int cls = cta.classOf(t);
    const KeyTile next = cta.next(r, t);
    if (next.part < r.numParts) // 1. the next K, V tiles into the other stage
      loadKeys(sK + (stage ^ 1) * BN * D, sV + (stage ^ 1) * BN * D, next);
    dev::cpAsyncCommit();
    forwardKeyTile<T, Tile, D, BN, MT>( // 2-5
        acc, softmax, dev::smemAddress(sQ), dev::smemAddress(sK + stage * BN * D),
        dev::smemAddress(sV + stage * BN * D), row0, cls == plan::kPartial, scaleLog2, lane,
        [&](float (&s)[MT][BN / 8][4]) { cta.template mask<MT>(s, t, row0, lane); });
    t = next;
  }
  fwd::storeRows<T, D, MT, fwd::kMerge>(p, acc, softmax, tr, tr.qa0 + row0, batch, cta.head,
                                        lane);
}

/// dK, dV and dQ of one block: one CTA per key tile
/// (keyPiece: bn keys of one part's lattice run in one segment) and branch
/// head, over the rank's query tiles of that segment and residue (its one
/// or two ranges), or per chunk of those tiles where the walk is long
/// (g.split, splitKeyTile); dQ by fp32 reductions into g.dqAcc, the tile's
/// dK/dV partials added (reductions: the heads of a kv head share its rows,
/// and the chunks of a walk its keys) to g.dk, g.dv.
/// This finds the CTA's key tile (BN keys) and query walk and hands them to
/// walk(batch, head, kvHead, keyBase, keyStep, keyCount, kb0, qt, walkEnd,
/// queryTile, nextTile, classOf, keep), backwardKeyTileWalk's arguments
/// after p, r and g: the sm80 CTA (mmaRingBackward) or the wgmma one
/// (ring_wgmma.cuh).
template <int BM, int BN, class Branch, class Walk>
DATTN_DEV void stridedRingBackward(const Params &r, const Grad &g, int groupSize, Walk walk) {
  static_assert(Branch::kKind == fwd::kStridedBranch, "the strided ring kernels");
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long batch = blockIdx.z;
  const int kvHead = head / groupSize;
  const long long dil = Branch::kStride, o = Branch::offset(headIndex);
  const long long w = plan::segmentLength(Branch::kSegment, r.globalN);
  KeyPiece kp;
  long long chunk;
  bool chunked;
  if (!splitKeyTile(r, g.split, blockIdx.x, w, dil, BN, kvHead, &kp, &chunk, &chunked))
    return;
  const KeyRun run = partRun<(Branch::kSegment >= 0)>(r.parts[kp.part], dil, o, kp.segBegin,
                                                          kp.segEnd);
  const long long kb0 = kp.tile * BN, kLeft = run.count - kb0;
  if (kLeft <= 0)
    return;
  const long long m = run.posStep / dil; // lattice indices between consecutive keys
  const long long kc0 = (run.pos - o) / dil + kb0 * m;
  const long long kcLast = kc0 + (plan::minI(BN, kLeft) - 1) * m;

  // The rank's queries of this segment and residue: tiles of range 0's
  // piece, then of range 1's.
  long long qFirst[2], qLocal[2], qCount[2];
  for (int range = 0; range < 2; ++range)
    segmentQueries(r, range, kp.segBegin, kp.segEnd, dil, o, &qFirst[range], &qLocal[range],
                   &qCount[range]);
  const long long tiles0 = plan::ceilDiv(qCount[0], BM);
  long long walkEnd = tiles0 + plan::ceilDiv(qCount[1], BM); // this CTA's walk ends there
  // Query tile qt: its row map (local rows), first compact row and the
  // lattice index of that row.
  auto queryTile = [&](long long qt, bwd::RowMap *rm, long long *qa0, long long *qc0) {
    const int range = qt < tiles0 ? 0 : 1;
    rm->base = qLocal[range];
    rm->step = dil;
    rm->count = qCount[range];
    *qa0 = (range == 0 ? qt : qt - tiles0) * BM;
    *qc0 = (qFirst[range] - o) / dil + *qa0;
  };
  auto classOf = [&](long long qt) {
    bwd::RowMap rm;
    long long qa0, qc0;
    queryTile(qt, &rm, &qa0, &qc0);
    const long long qcLast = qc0 + plan::minI(BM, rm.count - qa0) - 1;
    if (Branch::kCausal && qcLast < kc0)
      return (int)plan::kSkip;
    const bool edge = qa0 + BM > rm.count || kLeft < BN || (Branch::kCausal && qc0 < kcLast);
    return (int)(edge ? plan::kPartial : plan::kFull);
  };
  auto nextTile = [&](long long qt) {
    while (qt < walkEnd && classOf(qt) == plan::kSkip)
      ++qt;
    return qt;
  };

  long long qt = nextTile(0); // the key tile's walk: from its first tile with a pair
  if (!walkOfCta(g.split, chunked, chunk, &qt, &walkEnd) || (qt = nextTile(qt)) >= walkEnd)
    return; // no query of the rank (of this chunk) reaches these keys
  walk(batch, head, kvHead, run.base, run.step, run.count, kb0, qt, walkEnd, queryTile, nextTile,
       classOf, [&](long long qc0, long long a, long long b) { // causal order in lattice indices
         return !(Branch::kCausal && kc0 + b * m > qc0 + a);
       });
}

template <class T, int D, int BM, int W, class Branch>
__device__ void mmaRingBackward(const fwd::Params &p, const Params &r, const Grad &g) {
  stridedRingBackward<BM, 16 * W, Branch>(r, g, p.groupSize, [&](auto... walkArgs) {
    backwardKeyTileWalk<T, D, BM, W>(p, r, g, walkArgs...);
  });
}

// ---------------------------------------------------------------------------
// Blocks branches: the union's members decide every pair in global
// positions (the walks and classes are ring_params.cuh's, checked on the
// CPU by RingTilingTest).

/// Whether a blocks branch attends (i, j), global positions: the causal
/// order and the union, tested out of line (fwd::partialPairKept says why).
template <class Branch>
DATTN_DEV bool blocksPairKept(const plan::Member *members, long long i, long long j) {
  return !(Branch::kCausal && j > i) &&
         fwd::unionContainsOutOfLine(members, Branch::kNumMembers, i, j);
}

/// One CTA per (query tile of the rank's rows, branch head, batch), over
/// the block's key tiles that the union reaches from the tile's rows.
template <class T, int D, int BM, int BN, int MT, class Branch>
__device__ void mmaRingBlocksForward(const fwd::Params &p, const Params &r) {
  static_assert(Branch::kKind == fwd::kBlocksBranch, "the blocks ring kernel");
  constexpr int kMembers = Branch::kNumMembers;
  using Tile = fwd::MmaTile<T, D, BM, BN, MT>;
  extern __shared__ __align__(128) unsigned char smemRaw[];
  T *sQ = reinterpret_cast<T *>(smemRaw);
  T *sK = sQ + BM * D; // two stages of BN * D
  T *sV = sK + 2 * BN * D;

  const int warpId = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long batch = blockIdx.z, n = r.globalN;
  const int kvHead = head / p.groupSize;
  QueryPiece q;
  if (!queryPiece(r, blockIdx.x, n, 1, 0, BM, &q))
    return;
  fwd::TileRange tr;
  tr.base = q.localFirst;
  tr.step = 1;
  tr.count = q.count;
  tr.qa0 = q.tile * BM;
  tr.t0 = tr.t1 = 0; // unused: key tiles come from the parts
  if (tr.qa0 >= tr.count)
    return;
  const long long i0 = q.first + tr.qa0, i1 = q.first + plan::minI(tr.count, tr.qa0 + BM);
  plan::Member members[kMembers];
  loadMembers<Branch>(p, r, headIndex, head, members);
  long long lo, hi; // the keys these rows reach
  unionKeyReach(members, kMembers, Branch::kCausal, i0, i1, n, &lo, &hi);
  auto advance = [&](BlocksKeyTile t) {
    return nextBlocksKeyTile(r, members, kMembers, Branch::kCausal, kvHead, i0, i1, lo, hi, BN,
                             t);
  };
  auto loadKeys = [&](T *dstK, T *dstV, const BlocksKeyTile &t) {
    const Part &pt = r.parts[t.part];
    typename Tile::template RowLoader<BN> kLoader, vLoader;
    kLoader.init((const T *)r.keys + r.keyL.at(batch, 0, kvHead), r.keyL.row, pt.offset, 1);
    vLoader.init((const T *)r.values + r.valueL.at(batch, 0, kvHead), r.valueL.row, pt.offset,
                 1);
    kLoader.load(dstK, t.b0, pt.count);
    vLoader.load(dstV, t.b0, pt.count);
  };

  BlocksKeyTile t = advance(BlocksKeyTile{0, -1, 0, 0});
  if (t.part >= r.numParts)
    return; // no key of this block for these rows: nothing to merge
  typename Tile::template RowLoader<BM> qLoader;
  qLoader.init((const T *)p.q + p.qL.at(batch, 0, head), p.qL.row, tr.base, tr.step);
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
    BlocksKeyTile next = t;
    next.b0 += BN;
    next = advance(next);
    if (next.part < r.numParts) // 1. the next K, V tiles into the other stage
      loadKeys(sK + (stage ^ 1) * BN * D, sV + (stage ^ 1) * BN * D, next);
    dev::cpAsyncCommit();
    forwardKeyTile<T, Tile, D, BN, MT>( // 2-5, masks in global positions
        acc, softmax, dev::smemAddress(sQ), dev::smemAddress(sK + stage * BN * D),
        dev::smemAddress(sV + stage * BN * D), row0, t.cls == plan::kPartial, scaleLog2, lane,
        [&](float (&s)[MT][BN / 8][4]) {
          const Part &pt = r.parts[t.part];
          const long long keysLeft = pt.count - t.b0, iW = i0 + row0;
          const long long jFirst = pt.start + t.b0 * pt.step;
          warp::mask<BN, MT>(s, lane, [&](long long a, long long b) {
            return b < keysLeft && blocksPairKept<Branch>(members, iW + a, jFirst + b * pt.step);
          });
        });
    t = next;
  }
  fwd::storeRows<T, D, MT, fwd::kMerge>(p, acc, softmax, tr, tr.qa0 + row0, batch, head, lane);
}

/// dK, dV and dQ of one block for a blocks branch: one CTA per key tile (BN
/// packed rows of one part) and branch head, over the rank's query tiles
/// that the union reaches from the tile's keys (chunks of them where
/// g.split says so: global tokens' columns); as mmaRingBackward, dQ by
/// fp32 reductions into g.dqAcc, the tile's dK/dV partials added to g.dk,
/// g.dv.
template <class T, int D, int BM, int W, class Branch>
__device__ void mmaRingBlocksBackward(const fwd::Params &p, const Params &r, const Grad &g) {
  static_assert(Branch::kKind == fwd::kBlocksBranch, "the blocks ring kernel");
  constexpr int kMembers = Branch::kNumMembers;
  constexpr int BN = 16 * W;
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long batch = blockIdx.z, n = r.globalN;
  const int kvHead = head / p.groupSize;
  KeyPiece kp;
  long long chunk;
  bool chunked;
  if (!splitKeyTile(r, g.split, blockIdx.x, n, 1, BN, kvHead, &kp, &chunk, &chunked))
    return;
  const Part pt = r.parts[kp.part];
  const long long kb0 = kp.tile * BN, kLeft = pt.count - kb0;
  if (kLeft <= 0)
    return;
  long long j0, j1;
  keyTileSpan(pt, kb0, BN, &j0, &j1);
  plan::Member members[kMembers];
  loadMembers<Branch>(p, r, headIndex, head, members);
  long long lo, hi; // the queries that reach these keys
  unionQueryReach(members, kMembers, Branch::kCausal, j0, j1, n, &lo, &hi);
  BlocksQueryTiles tiles;
  tiles.init(r, lo, hi, BM);
  // Query tile qt: its row map (local rows), first row in it and that
  // row's global position.
  auto queryTile = [&](long long qt, bwd::RowMap *rm, long long *qa0, long long *i0) {
    const int range = tiles.tile(qt, BM, qa0, i0);
    rm->base = tiles.local[range];
    rm->step = 1;
    rm->count = tiles.rows[range];
  };
  auto classOf = [&](long long qt) {
    bwd::RowMap rm;
    long long qa0, i0;
    queryTile(qt, &rm, &qa0, &i0);
    const long long i1 = i0 + plan::minI(BM, rm.count - qa0);
    return blocksTileClass(members, kMembers, Branch::kCausal, i0, i1, j0, j1,
                           kLeft < BN || qa0 + BM > rm.count);
  };
  long long walkEnd = tiles.tiles; // this CTA's walk ends there
  auto nextTile = [&](long long qt) { // the first walked tile at or after qt not skipped
    for (qt = tiles.walked(qt); qt < walkEnd; qt = tiles.walked(qt + 1))
      if (classOf(qt) != plan::kSkip)
        return qt;
    return walkEnd;
  };

  long long qt = nextTile(0); // the key tile's walk: from its first tile with a pair
  if (!walkOfCta(g.split, chunked, chunk, &qt, &walkEnd) || (qt = nextTile(qt)) >= walkEnd)
    return; // no query of the rank (of this chunk) reaches these keys
  backwardKeyTileWalk<T, D, BM, W>( // the union in global positions
      p, r, g, batch, head, kvHead, pt.offset, 1, pt.count, kb0, qt, walkEnd, queryTile,
      nextTile, classOf, [&](long long i0, long long a, long long b) {
        return blocksPairKept<Branch>(members, i0 + a, pt.start + (kb0 + b) * pt.step);
      });
}

} // namespace ring
} // namespace dattn
