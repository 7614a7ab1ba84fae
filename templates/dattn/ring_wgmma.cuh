// dattn: the ring's block kernels for strided branches (dense included) on
// Hopper (sm_90a, bf16 or fp16, head_dim 64 or 128): the one-GPU wgmma
// kernels' CTAs (forward_wgmma.cuh, backward_wgmma.cuh) over a block's key
// runs instead of one segment's rows, so that a rank of a ring computes at
// the one-GPU kernels' speed (the sm80 tiles of ring_mma.cuh run at about
// half of it on an H100: issue 9's efficiency is the ring's time against
// one GPU's).
//
// Forward: sm90_wgmma_pipelined_forward's CTA (a producer warpgroup loading
// Q once and K, V tiles of 128 keys into three stages with cp.async, or at
// dilation 1 with sm90_wgmma_tma_forward's TMA boxes; two
// consumer warpgroups of 64 query rows taking turns, S with the previous
// tile's P V, K and V released apart), walking StridedForwardCta's key
// tiles (ring_mma.cuh: the block's parts at the head's residue in the
// piece's segment) and merging into the rank's fp32 accumulators (kMerge).
// Backward: sm90_wgmma_backward_dkv's CTA (128 keys on two warpgroups,
// query tiles of 64 double-buffered by every thread, dQ through dS^T in
// shared memory by fp32 reductions) or sm90_wgmma_ws_backward_dkv's (a
// producer warpgroup bringing Q and dO through TMA) over
// stridedRingBackward's walk, the key tile's dK/dV partials added to the
// block's (addKeyPartials).
// The consumers' loops repeat the one-GPU kernels' with the ring's walks
// and masks: those kernels' templates key the tuning databases (a change
// to them stales every entry until the GPUs are tuned again), so sharing
// the loops waits for the next re-tune.
#pragma once

#include "dattn/backward_wgmma.cuh"
#include "dattn/backward_wgmma_ws.cuh"
#include "dattn/forward_wgmma.cuh"
#include "dattn/ring_mma.cuh"

namespace dattn {
namespace ring {

/// Shared memory of the ring's wgmma kernels (the emitter checks the
/// family's figure against these).
template <int D> struct WgmmaRingSmem {
  static constexpr int kForward = fwd::WgmmaShape<D, true, 128, 128>::kBytes;
  static constexpr int kBackward = bwd::KvSmem<D, 64, 128, true>::kBytes;
  static constexpr int kBackwardWs = bwd::WsKvShape<D, true, 128>::kBytes;
};

/// One CTA (384 threads) per (query tile of 128 rows of a piece, branch
/// head, batch), as mmaRingForward.
/// TMA (branches of dilation 1, sm90_wgmma_tma_forward's producer): K and V
/// through kMap and vMap, the block's keys or values as a [B, rows, heads,
/// D] map (runtime/TensorMaps.h; a packed block has one head of its rows),
/// one box a 64-column block of a tile: with dilation 1 every key run is
/// consecutive rows (a run steps r / gcd(part step, r) packed rows). Rows
/// past the block's are zero-filled by the TMA, rows past the run are
/// other runs' (the tile is partial: masked).
template <class T, int D, class Branch, bool TMA = false>
__device__ void wgmmaRingForward(const fwd::Params &p, const Params &r,
                                 const hopper::TensorMap *kMap = nullptr,
                                 const hopper::TensorMap *vMap = nullptr) {
  static_assert(sizeof(T) == 2, "the wgmma ring kernel takes bf16 or fp16");
  static_assert(!TMA || Branch::kStride == 1, "TMA ring blocks: consecutive key rows");
  using Shape = fwd::WgmmaShape<D, true, 128, 128>;
  constexpr int BM = Shape::kBM, BN = Shape::kBN, kStages = Shape::kStages;
  constexpr int kConsumerThreads = 256;
  using QTile = fwd::WgmmaTile<D, BM>;
  using KTile = fwd::WgmmaTile<D, BN>;
  // sm90_wgmma_pipelined_forward's split (the producer's two waits a tile
  // and the walk's run arithmetic need its 72), or the TMA kernel's.
  constexpr int kProducerRegisters = TMA ? 40 : 72, kConsumerRegisters = TMA ? 232 : 216;
  static_assert(hopper::registerSplitFits<kProducerRegisters, kConsumerRegisters, 2, 1>(),
                "the warpgroups' registers exceed the CTA's");
  extern __shared__ __align__(1024) unsigned char smemRaw[];
  const unsigned sQ = dev::smemAddress(smemRaw), sK = sQ + QTile::kBytes,
                 sV = sK + kStages * KTile::kBytes, bars = sV + kStages * KTile::kBytes;
  auto full = [&](int s) { return bars + 8 * s; };
  auto empty = [&](int s) { return bars + 8 * (kStages + s); }; // K's
  const unsigned qFull = bars + 16 * kStages;
  auto vEmpty = [&](int s) { return bars + 8 * (2 * kStages + 1 + s); };

  // The CTA's work (every thread: producer and consumers walk the same tiles).
  StridedForwardCta<Branch, BM, BN> cta;
  KeyTile first;
  if (!cta.find(p, r, &first))
    return; // no key of this block for these rows: nothing to merge
  const fwd::TileRange &tr = cta.tr;
  const long long batch = cta.batch;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      hopper::mbarrierInit(full(s), TMA ? 1 : 128); // the TMA thread, or every producer thread
      hopper::mbarrierInit(empty(s), kConsumerThreads); // every consumer thread
      hopper::mbarrierInit(vEmpty(s), kConsumerThreads);
    }
    hopper::mbarrierInit(qFull, 128);
    hopper::fenceBarrierInit();
  }
  __syncthreads();
  const int warpgroup = threadIdx.x / 128, thread = threadIdx.x % 128;

  if (warpgroup == 0) { // the producer
    hopper::registersDown<kProducerRegisters>();
    const T *k = (const T *)r.keys + r.keyL.at(batch, 0, cta.kvHead);
    const T *v = (const T *)r.values + r.valueL.at(batch, 0, cta.kvHead);
    QTile::load(sQ, (const T *)p.q + p.qL.at(batch, 0, cta.head), p.qL.row, tr.base, tr.step,
                tr.qa0, tr.count, thread);
    dev::cpAsyncCommit();
    if constexpr (TMA) {
      // Q by every producer thread, then K and V by one: per tile, once K's
      // readers are gone, the stage's full barrier expects both tiles'
      // bytes; V's boxes wait for V's readers.
      dev::cpAsyncWaitAll();
      hopper::fenceProxyAsync();
      hopper::mbarrierArrive(qFull);
      if (thread >= 32) // the first warp walks, its first thread issues
        return;
      const int mapHead = r.keyL.head == 0 ? 0 : cta.kvHead; // packed: one head
      int i = 0;
      for (KeyTile t = first; t.part < r.numParts; t = cta.next(r, t), ++i) {
        if (thread == 0) {
          const int s = i % kStages;
          const unsigned phase = ((i / kStages) & 1) ^ 1;
          const int row0 = static_cast<int>(t.run.base + t.b0);
          hopper::mbarrierWait(empty(s), phase);
          hopper::mbarrierArriveExpect(full(s), 2 * KTile::kBytes);
          fwd::tmaLoadRows<D, BN, 1>(sK + s * KTile::kBytes, *kMap, full(s), row0, mapHead,
                                     static_cast<int>(batch));
          hopper::mbarrierWait(vEmpty(s), phase);
          fwd::tmaLoadRows<D, BN, 1>(sV + s * KTile::kBytes, *vMap, full(s), row0, mapHead,
                                     static_cast<int>(batch));
        }
        __syncwarp();
      }
      return;
    }
    // Tile i into stage i % kStages once its readers released it (K and V
    // apart); the previous group (Q, or tile i - 1) is announced after tile
    // i's K copies are issued, so that later tiles stay in flight.
    int i = 0;
    for (KeyTile t = first; t.part < r.numParts; t = cta.next(r, t), ++i) {
      const int s = i % kStages;
      const unsigned phase = ((i / kStages) & 1) ^ 1;
      hopper::mbarrierWait(empty(s), phase);
      KTile::load(sK + s * KTile::kBytes, k, r.keyL.row, t.run.base, t.run.step, t.b0,
                  t.run.count, thread);
      dev::cpAsyncCommit();
      dev::cpAsyncWait<1>();
      hopper::fenceProxyAsync(); // cp.async wrote what the tensor cores read
      hopper::mbarrierArrive(i == 0 ? qFull : full((i - 1) % kStages));
      hopper::mbarrierWait(vEmpty(s), phase);
      KTile::load(sV + s * KTile::kBytes, v, r.valueL.row, t.run.base, t.run.step, t.b0,
                  t.run.count, thread);
      dev::cpAsyncCommit();
    }
    dev::cpAsyncWaitAll();
    hopper::fenceProxyAsync();
    hopper::mbarrierArrive(i == 0 ? qFull : full((i - 1) % kStages));
    return;
  }

  // A consumer: 64 rows, warp w of it rows 16 w.. of them. Turns (named
  // barriers 1 and 2): consumer 0 issues first, each passes the turn after
  // issuing; consumer 1 passes none after its last batch, so every arrival
  // meets a wait.
  hopper::registersUp<kConsumerRegisters>();
  const int lane = threadIdx.x % 32, me = warpgroup - 1;
  const int row0 = me * 64 + (thread / 32) * 16; // in the CTA's tile
  const unsigned sQw = sQ + me * 64 * 128;       // its rows of each block
  float acc[1][D / 8][4];
  warp::zero(acc);
  warp::OnlineSoftmax<1> softmax;
  softmax.init();
  const float scaleLog2 = p.scale * dev::kLog2e;
  auto waitTurn = [&] { hopper::namedBarrierSync(1 + me, 256); };
  auto passTurn = [&] { hopper::namedBarrierArrive(1 + (me ^ 1), 256); };
  auto maskIfPartial = [&](float (&sc)[1][BN / 8][4], const KeyTile &t) {
    if (cta.classOf(t) == plan::kPartial)
      cta.template mask<1>(sc, t, row0, lane);
  };
  hopper::mbarrierWait(qFull, 0);

  KeyTile t = first;
  unsigned a[BN / 16][4]; // P of the previous tile, pairs of T
  {
    if (me == 1)
      passTurn();
    float sc[1][BN / 8][4], corr[1][2];
    hopper::mbarrierWait(full(0), 0);
    waitTurn();
    hopper::wgmmaFence();
    fwd::issueScores<T, D, BM, BN>(sc, sQw, sK);
    passTurn();
    hopper::wgmmaWait<0>();
    hopper::mbarrierArrive(empty(0)); // K of tile 0 is read
    maskIfPartial(sc, t);
    softmax.updateScores(sc, scaleLog2, corr); // O is zero: nothing to rescale
    fwd::packP<T, BN>(a, sc);
    t = cta.next(r, t);
  }
  int prev = 0; // the stage of the tile whose P is in a
  for (int i = 1; t.part < r.numParts; t = cta.next(r, t), ++i) {
    const int s = i % kStages;
    float sc[1][BN / 8][4], corr[1][2];
    hopper::mbarrierWait(full(s), (i / kStages) & 1);
    waitTurn();
    hopper::wgmmaFence();
    fwd::issueScores<T, D, BM, BN>(sc, sQw, sK + s * KTile::kBytes);
    fwd::issuePV<T, D, BN>(acc, a, sV + prev * KTile::kBytes);
    passTurn();
    hopper::wgmmaWait<1>(); // S_i is in; P_{i-1} V_{i-1} may still run
    hopper::mbarrierArrive(empty(s));
    maskIfPartial(sc, t);
    softmax.updateScores(sc, scaleLog2, corr);
    hopper::wgmmaWait<0>();
    hopper::mbarrierArrive(vEmpty(prev));
    softmax.rescale(acc, corr);
    fwd::packP<T, BN>(a, sc);
    prev = s;
  }
  waitTurn();
  hopper::wgmmaFence();
  fwd::issuePV<T, D, BN>(acc, a, sV + prev * KTile::kBytes);
  if (me == 0)
    passTurn();
  hopper::wgmmaWait<0>();
  hopper::mbarrierArrive(vEmpty(prev));
  fwd::storeRows<T, D, 1, fwd::kMerge>(p, acc, softmax, tr, tr.qa0 + row0, batch, cta.head,
                                       lane);
}

/// One query tile's products for this warpgroup's 64 key rows, as
/// bwd::wgmmaKeyTileStep with dS^T stored for dQ, but with the ring's mask
/// on partial tiles: score -inf where key b of the tile is past keysLeft,
/// query a past the tile's rows or keep(a, b) says no.
template <class T, int D, int BM, int BN, class Keep>
DATTN_DEV void wgmmaRingQueryTile(float (&dk)[D / 8][4], float (&dv)[D / 8][4], unsigned sKw,
                                  unsigned sVw, unsigned tq, unsigned tg, const float *sL,
                                  const float *sDelta, unsigned char *smem, unsigned dsAt,
                                  bool partial, const bwd::RowMap &rm, long long qa0,
                                  long long keysLeft, int keyRow0, float scaleLog2, int lane,
                                  Keep keep) {
  using KTile = fwd::WgmmaTile<D, BN>;
  using QTile = fwd::WgmmaTile<D, BM>;
  float s[BM / 8][4], dp[BM / 8][4];
  hopper::wgmmaFence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) // S^T = K Q^T
    hopper::wgmma64x64<T, 0>(fwd::wgmmaBlock(s), KTile::kMajor(sKw, kk), QTile::kMajor(tq, kk),
                             kk > 0);
  hopper::wgmmaCommit();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) // dP^T = V dO^T
    hopper::wgmma64x64<T, 0>(fwd::wgmmaBlock(dp), KTile::kMajor(sVw, kk), QTile::kMajor(tg, kk),
                             kk > 0);
  hopper::wgmmaCommit();
  hopper::wgmmaWait<1>(); // S^T
  if (partial) {
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
  bwd::probabilitiesTransposed<BM>(s, sL, scaleLog2, lane); // P^T
  unsigned pa[BM / 16][4], da[BM / 16][4];
#pragma unroll
  for (int j = 0; j < BM / 16; ++j)
    bwd::packA<T>(pa[j], s, j);
  hopper::wgmmaFence();
  fwd::issueRegA<T, D, BM>(dv, pa, tg); // dV += P^T dO
  hopper::wgmmaWait<1>();              // dP^T
  bwd::scoreGradientsTransposed<BM>(s, dp, sDelta, lane); // dS^T
  bwd::storeDsWgmma<T, BM, BN>(dp, smem, dsAt, keyRow0, lane);
#pragma unroll
  for (int j = 0; j < BM / 16; ++j)
    bwd::packA<T>(da[j], dp, j);
  hopper::wgmmaFence();
  fwd::issueRegA<T, D, BM>(dk, da, tq); // dK += dS^T Q
}

/// backwardKeyTileWalk (ring_mma.cuh) on wgmma: the key tile of 128 keys
/// (packed or local rows keyBase + b * keyStep, b < keyCount, from kb0) over
/// the query tiles [qt, walkEnd) of the CTA's walk, 256 threads.
template <class T, int D, class QueryTile, class NextTile, class ClassOf, class Keep>
DATTN_DEV void wgmmaKeyTileWalk(const fwd::Params &p, const Params &r, const Grad &g,
                                long long batch, int head, int kvHead, long long keyBase,
                                long long keyStep, long long keyCount, long long kb0,
                                long long qt, long long walkEnd, QueryTile queryTile,
                                NextTile nextTile, ClassOf classOf, Keep keep) {
  static_assert(sizeof(T) == 2, "the wgmma ring kernel takes bf16 or fp16");
  using Tiles = bwd::WgmmaKvTiles<D>;
  constexpr int BM = Tiles::kBM, BN = Tiles::kBN, kThreads = Tiles::kThreads;
  using KTile = typename Tiles::Keys;
  using QTile = typename Tiles::Queries;
  using DsT = typename Tiles::DsT;
  extern __shared__ __align__(1024) unsigned char smemRaw[];
  const unsigned base = dev::smemAddress(smemRaw);
  constexpr unsigned kOffV = KTile::kBytes, kOffQ = 2 * KTile::kBytes,
                     kOffG = kOffQ + 2 * QTile::kBytes, kOffDs = kOffG + 2 * QTile::kBytes,
                     kOffL = kOffDs + DsT::kBytes;
  static_assert(kOffL + 4 * 4 * BM == WgmmaRingSmem<D>::kBackward, "the CTA's shared memory");
  const unsigned sK = base, sV = base + kOffV, sQ = base + kOffQ, sG = base + kOffG,
                 sDS = base + kOffDs;
  float *sL = reinterpret_cast<float *>(smemRaw + kOffL); // two stages
  float *sDelta = sL + 2 * BM;                             // two stages
  const int warpId = threadIdx.x / 32, lane = threadIdx.x % 32, wg = threadIdx.x / 128;
  const long long rows = p.seqLen, kLeft = keyCount - kb0;

  const T *qHead = (const T *)p.q + p.qL.at(batch, 0, head);
  const T *gHead = (const T *)g.dout + g.doutL.at(batch, 0, head);
  const float *lseSrc = p.lse + (batch * p.heads + head) * rows;
  const float *deltaSrc = g.delta + (batch * p.heads + head) * rows;
  auto loadQueries = [&](int st, long long t) { // Q, dO, L and Delta of tile t
    bwd::RowMap rm;
    long long qa0, pos0;
    queryTile(t, &rm, &qa0, &pos0);
    QTile::template load<T, kThreads>(sQ + st * QTile::kBytes, qHead, p.qL.row, rm.base, rm.step,
                                      qa0, rm.count, threadIdx.x);
    QTile::template load<T, kThreads>(sG + st * QTile::kBytes, gHead, g.doutL.row, rm.base,
                                      rm.step, qa0, rm.count, threadIdx.x);
    bwd::loadRowStats<BM, kThreads>(sL + st * BM, sDelta + st * BM, lseSrc, deltaSrc, rm, qa0);
  };

  KTile::template load<T, kThreads>(sK, (const T *)r.keys + r.keyL.at(batch, 0, kvHead),
                                    r.keyL.row, keyBase, keyStep, kb0, keyCount, threadIdx.x);
  KTile::template load<T, kThreads>(sV, (const T *)r.values + r.valueL.at(batch, 0, kvHead),
                                    r.valueL.row, keyBase, keyStep, kb0, keyCount, threadIdx.x);
  loadQueries(0, qt);
  dev::cpAsyncCommit();

  float dk[D / 8][4], dv[D / 8][4];
  warp::zero(dk);
  warp::zero(dv);
  const float scaleLog2 = p.scale * dev::kLog2e;
  const int keyRow0 = warpId * 16; // this warp's key rows in the tile
  // This warpgroup's 64 key rows of each 64-column block.
  const unsigned sKw = sK + wg * 64 * 128, sVw = sV + wg * 64 * 128;
  float *dq0 = g.dqAcc + (batch * rows * p.heads + head) * D;

  for (int stage = 0; qt < walkEnd; stage ^= 1) {
    dev::cpAsyncWaitAll();
    hopper::fenceProxyAsync(); // cp.async wrote what the tensor cores read
    __syncthreads();
    const int cls = classOf(qt);
    const long long qtNext = nextTile(qt + 1);
    if (qtNext < walkEnd) // 1. the next query tile into the other stage
      loadQueries(stage ^ 1, qtNext);
    dev::cpAsyncCommit();
    bwd::RowMap rm;
    long long qa0, pos0;
    queryTile(qt, &rm, &qa0, &pos0);
    // 2.-5. the products; dS^T into shared memory for dQ
    wgmmaRingQueryTile<T, D, BM, BN>(
        dk, dv, sKw, sVw, sQ + stage * QTile::kBytes, sG + stage * QTile::kBytes, sL + stage * BM,
        sDelta + stage * BM, smemRaw, kOffDs, cls == plan::kPartial, rm, qa0, kLeft, keyRow0,
        scaleLog2, lane, [&](long long a, long long b) { return keep(pos0, a, b); });
    hopper::fenceProxyAsync(); // dS^T, written by threads, is read by wgmma
    __syncthreads();           // both warpgroups' keys
    bwd::wgmmaAddDq<T, D, BM, BN>(sDS, sK, rm, qa0, wg, warpId % 4, dq0, (long long)p.heads * D,
                                  p.scale, lane); // 6. dQ += dS K by reductions
    qt = qtNext;
  }
  addKeyPartials<D>(g, dk, dv, kb0, keyRow0, keyBase, keyStep, keyCount, batch, kvHead, p.scale,
                    lane); // 7. the tile's partials
}

/// wgmmaKeyTileWalk warp-specialized, sm90_wgmma_ws_backward_dkv's CTA (384
/// threads): a producer warpgroup brings each query tile's Q and dO as TMA
/// boxes of the rank's q and dout maps (qMap, gMap: a strided branch's
/// query rows step its dilation STRIDE in local rows) and its L and Delta
/// into kStages stages; two consumer warpgroups load the key tile once and
/// run the products per query tile, dS^T double-buffered so that one named
/// barrier a tile orders both its reads and the other buffer's reuse.
template <class T, int D, int STRIDE, class QueryTile, class NextTile, class ClassOf, class Keep>
DATTN_DEV void wgmmaWsKeyTileWalk(const fwd::Params &p, const Params &r, const Grad &g,
                                  const hopper::TensorMap *qMap, const hopper::TensorMap *gMap,
                                  long long batch, int head, int kvHead, long long keyBase,
                                  long long keyStep, long long keyCount, long long kb0,
                                  long long qt, long long walkEnd, QueryTile queryTile,
                                  NextTile nextTile, ClassOf classOf, Keep keep) {
  static_assert(sizeof(T) == 2, "the wgmma ring kernel takes bf16 or fp16");
  using Shape = bwd::WsKvShape<D, true, 128>;
  constexpr int BM = Shape::kBM, BN = Shape::kBN, kStages = Shape::kStages;
  constexpr int kConsumerThreads = 256;
  using KTile = typename Shape::Keys;
  using QTile = typename Shape::Queries;
  using DsT = typename Shape::DsT;
  static_assert(Shape::kBytes == WgmmaRingSmem<D>::kBackwardWs, "the CTA's shared memory");
  // sm90_wgmma_ws_backward_dkv's split (24 + 2 x 240 = 168 x 3).
  constexpr int kProducerRegisters = 24, kConsumerRegisters = 240;
  static_assert(hopper::registerSplitFits<kProducerRegisters, kConsumerRegisters, 2, 1>(),
                "the warpgroups' registers exceed the CTA's");
  extern __shared__ __align__(1024) unsigned char smemRaw[];
  const unsigned base = dev::smemAddress(smemRaw);
  const unsigned sK = base, sV = base + Shape::kOffV, sQ = base + Shape::kOffQ,
                 sG = base + Shape::kOffG, bars = base + Shape::kOffBars;
  float *sL = reinterpret_cast<float *>(smemRaw + Shape::kOffL); // kStages x (L, Delta)
  auto full = [&](int st) { return bars + 8 * st; };
  auto empty = [&](int st) { return bars + 8 * (kStages + st); };
  const long long rows = p.seqLen, kLeft = keyCount - kb0;

  if (threadIdx.x == 0) {
    for (int st = 0; st < kStages; ++st) {
      hopper::mbarrierInit(full(st), 128); // every producer thread (one also counts bytes)
      hopper::mbarrierInit(empty(st), kConsumerThreads);
    }
    hopper::fenceBarrierInit();
  }
  __syncthreads();
  const int warpgroup = threadIdx.x / 128;

  if (warpgroup == 0) { // the producer: thread t brings L (t < 64) or Delta of row t % 64
    hopper::registersDown<kProducerRegisters>();
    const int thread = threadIdx.x;
    const float *stats = (thread < BM ? p.lse : g.delta) + (batch * p.heads + head) * rows;
    int i = 0;
    for (long long t = qt; t < walkEnd; t = nextTile(t + 1), ++i) {
      const int st = i % kStages;
      bwd::RowMap rm;
      long long qa0, pos0;
      queryTile(t, &rm, &qa0, &pos0);
      hopper::mbarrierWait(empty(st), ((i / kStages) & 1) ^ 1);
      const long long a = qa0 + thread % BM;
      sL[st * 2 * BM + thread] = a < rm.count ? stats[rm.base + a * rm.step] : 0.f;
      if (thread == 0) {
        const int row0 = static_cast<int>(rm.base + qa0 * rm.step);
        hopper::mbarrierArriveExpect(full(st), 2 * QTile::kBytes);
        fwd::tmaLoadRows<D, BM, STRIDE>(sQ + st * QTile::kBytes, *qMap, full(st), row0, head,
                                        static_cast<int>(batch));
        fwd::tmaLoadRows<D, BM, STRIDE>(sG + st * QTile::kBytes, *gMap, full(st), row0, head,
                                        static_cast<int>(batch));
      } else {
        hopper::mbarrierArrive(full(st));
      }
    }
    return;
  }

  // A consumer: warpgroup wg's 64 key rows; warp w of the consumer threads
  // holds key rows 16 w.. as in wgmmaKeyTileWalk.
  hopper::registersUp<kConsumerRegisters>();
  const int ct = threadIdx.x - 128, wg = warpgroup - 1, warpId = ct / 32, lane = ct % 32;
  auto consumersSync = [] { hopper::namedBarrierSync(1, kConsumerThreads); };
  KTile::template load<T, kConsumerThreads>(sK, (const T *)r.keys + r.keyL.at(batch, 0, kvHead),
                                            r.keyL.row, keyBase, keyStep, kb0, keyCount, ct);
  KTile::template load<T, kConsumerThreads>(sV,
                                            (const T *)r.values + r.valueL.at(batch, 0, kvHead),
                                            r.valueL.row, keyBase, keyStep, kb0, keyCount, ct);
  dev::cpAsyncCommit();
  dev::cpAsyncWaitAll();
  hopper::fenceProxyAsync(); // cp.async wrote what the tensor cores read
  consumersSync();           // every consumer's key rows (dQ reads all BN)

  float dk[D / 8][4], dv[D / 8][4];
  warp::zero(dk);
  warp::zero(dv);
  const float scaleLog2 = p.scale * dev::kLog2e;
  const int keyRow0 = warpId * 16; // this warp's key rows in the tile
  const unsigned sKw = sK + wg * 64 * 128, sVw = sV + wg * 64 * 128;
  float *dq0 = g.dqAcc + (batch * rows * p.heads + head) * D;

  for (int i = 0; qt < walkEnd; ++i) {
    const int st = i % kStages;
    const int cls = classOf(qt);
    const long long qtNext = nextTile(qt + 1);
    bwd::RowMap rm;
    long long qa0, pos0;
    queryTile(qt, &rm, &qa0, &pos0);
    const float *tL = sL + st * 2 * BM, *tDelta = tL + BM;
    hopper::mbarrierWait(full(st), (i / kStages) & 1);
    const unsigned dsAt = Shape::kOffDs + (i & 1) * DsT::kBytes;
    wgmmaRingQueryTile<T, D, BM, BN>(
        dk, dv, sKw, sVw, sQ + st * QTile::kBytes, sG + st * QTile::kBytes, tL, tDelta, smemRaw,
        dsAt, cls == plan::kPartial, rm, qa0, kLeft, keyRow0, scaleLog2, lane,
        [&](long long a, long long b) { return keep(pos0, a, b); });
    hopper::fenceProxyAsync(); // dS^T, written by threads, is read by wgmma
    consumersSync();           // every consumer's keys (and, a tile ago, the other buffer read)
    bwd::wgmmaAddDq<T, D, BM, BN>(base + dsAt, sK, rm, qa0, wg, warpId % 4, dq0,
                                  (long long)p.heads * D, p.scale, lane);
    hopper::mbarrierArrive(empty(st)); // Q, dO, L and Delta of the stage are read
    qt = qtNext;
  }
  addKeyPartials<D>(g, dk, dv, kb0, keyRow0, keyBase, keyStep, keyCount, batch, kvHead, p.scale,
                    lane);
}

/// dK, dV and dQ of one block for a strided branch: one CTA (256 threads)
/// per key tile of 128 keys and branch head, as mmaRingBackward; WS (384
/// threads) warp-specialized, Q and dO through qMap and gMap.
template <class T, int D, class Branch, bool WS = false>
__device__ void wgmmaRingBackward(const fwd::Params &p, const Params &r, const Grad &g,
                                  const hopper::TensorMap *qMap = nullptr,
                                  const hopper::TensorMap *gMap = nullptr) {
  stridedRingBackward<bwd::WgmmaKvTiles<D>::kBM, bwd::WgmmaKvTiles<D>::kBN, Branch>(
      r, g, p.groupSize, [&](auto... walkArgs) {
        if constexpr (WS)
          wgmmaWsKeyTileWalk<T, D, static_cast<int>(Branch::kStride)>(p, r, g, qMap, gMap,
                                                                     walkArgs...);
        else
          wgmmaKeyTileWalk<T, D>(p, r, g, walkArgs...);
      });
}

} // namespace ring
} // namespace dattn
