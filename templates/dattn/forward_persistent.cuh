// dattn: the persistent Hopper forward (sm_90a, the
// sm90_wgmma_persistent_forward family): the TMA forward's warpgroups
// (forward_wgmma.cuh) in a grid of one CTA an SM, each CTA walking row
// tiles w = blockIdx.x, blockIdx.x + gridDim.x, ... in the order a
// CTA-per-tile grid would start them (the row tile fastest, then the
// branch's head, then the batch).
//
// A CTA-per-tile launch pays, per row tile, the CTA's start (barriers,
// the register trade), Q's load and the first K/V tile's latency before
// the first product, and the epilogue after the last: LongNet's segments
// of 2048 rows give a 128-row tile 16 key tiles, so these are a tenth of
// its time. Here the stages' barriers run on across row tiles: the
// producer's K/V warp issues the next row tile's first tiles while the
// consumers finish the last ones and store O, and three producer warps
// load the next Q as soon as the consumers' last S product read the
// previous one (Q's empty barrier), during the last P V and the epilogue.
#pragma once

#include "dattn/forward_wgmma.cuh"

namespace dattn {
namespace fwd {

/// Row tile w of a persistent launch: the CTA-per-tile grid's (x, y, z).
struct RowTile {
  long long tileX, batch;
  int headIndex;
};
template <class Branch> DATTN_DEV RowTile rowTileAt(const Params &p, long long w) {
  const long long perBatch = p.rowTiles * Branch::kNumHeads;
  return {w % p.rowTiles, w / perBatch, static_cast<int>((w % perBatch) / p.rowTiles)};
}

template <class T, int D, int MODE, class Branch, int BM = 128, int BN = 128>
__device__ void wgmmaForwardPersistent(const Params &p, const hopper::TensorMap *kMap,
                                       const hopper::TensorMap *vMap) {
  static_assert(sizeof(T) == 2, "the wgmma forward takes bf16 or fp16");
  static_assert(BM == 128, "two consumer warpgroups: three producer warps are left for Q");
  using Shape = WgmmaShape<D, true, BM, BN, true>;
  constexpr int kStages = Shape::kStages, kConsumers = Shape::kConsumers;
  constexpr int kConsumerThreads = 128 * kConsumers, kQLoaders = 96;
  using QTile = WgmmaTile<D, BM>;
  using KTile = WgmmaTile<D, BN>;
  // The TMA forward's split: its producer computes no addresses past Q's.
  constexpr int kProducerRegisters = 40, kConsumerRegisters = 232;
  static_assert(hopper::registerSplitFits<kProducerRegisters, kConsumerRegisters, kConsumers, 1>(),
                "the warpgroups' registers exceed the CTA's");
  extern __shared__ __align__(1024) unsigned char smemRaw[];
  const unsigned sQ = dev::smemAddress(smemRaw), sK = sQ + QTile::kBytes,
                 sV = sK + kStages * KTile::kBytes;
  const StageBarriers<kStages> bar{sV + kStages * KTile::kBytes};
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      hopper::mbarrierInit(bar.full(s), 1); // the TMA thread
      hopper::mbarrierInit(bar.empty(s), kConsumerThreads);
      hopper::mbarrierInit(bar.vEmpty(s), kConsumerThreads);
    }
    hopper::mbarrierInit(bar.qFull(), kQLoaders);
    hopper::mbarrierInit(bar.qEmpty(), kConsumerThreads);
    hopper::fenceBarrierInit();
  }
  __syncthreads();

  const long long n = p.seqLen, rowTiles = p.rowTiles * Branch::kNumHeads * p.batches;
  // Every role walks the same row tiles and skips the same empty ones;
  // body(tile, head, tr, members, u): u counts the row tiles walked.
  auto forEachRowTile = [&](auto &&body) {
    int u = 0;
    for (long long w = blockIdx.x; w < rowTiles; w += gridDim.x) {
      const RowTile rt = rowTileAt<Branch>(p, w);
      const int head = Branch::head(rt.headIndex);
      TileRange tr;
      plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
      if (ctaTileRange<Branch, BM, BN>(p, rt.headIndex, head, members, &tr, rt.tileX))
        body(rt, head, tr, static_cast<const plan::Member *>(members), u++);
    }
  };
  auto keyWalkOf = [&](const TileRange &tr, const plan::Member *members) {
    return walk::tiles<Branch::kKind == kBlocksBranch>(
        tr.t1, [&tr, members, n](long long t) {
          return keyTileClass<Branch, BM, BN>(tr, members, n, t);
        });
  };
  const int warpgroup = threadIdx.x / 128, thread = threadIdx.x % 128;

  if (warpgroup == 0) { // the producer
    hopper::registersDown<kProducerRegisters>();
    if (thread < 32) { // K and V: the warp walks, its first thread issues
      int issued = 0;
      forEachRowTile([&](const RowTile &rt, int head, const TileRange &tr,
                         const plan::Member *members, int) {
        auto keyWalk = keyWalkOf(tr, members);
        issued += issueKeyValues<D, BN, kStages, static_cast<int>(Branch::kStride)>(
            keyWalk, tr, bar, sK, sV, *kMap, *vMap, head / p.groupSize,
            static_cast<int>(rt.batch), issued, thread);
      });
    } else { // Q, once the consumers' last product read the previous row tile's
      forEachRowTile([&](const RowTile &rt, int head, const TileRange &tr, const plan::Member *,
                         int u) {
        const T *q = (const T *)p.q + p.qL.at(rt.batch, 0, head);
        hopper::mbarrierWait(bar.qEmpty(), (u & 1) ^ 1);
        QTile::template load<T, kQLoaders>(sQ, q, p.qL.row, tr.base, tr.step, tr.qa0, tr.count,
                                           thread - 32);
        dev::cpAsyncCommit();
        dev::cpAsyncWaitAll();
        hopper::fenceProxyAsync(); // cp.async wrote what the tensor cores read
        hopper::mbarrierArrive(bar.qFull());
      });
    }
    return;
  }

  // A consumer: 64 rows of each row tile, warp w of it rows 16 w.. of them.
  hopper::registersUp<kConsumerRegisters>();
  const int lane = threadIdx.x % 32, me = warpgroup - 1;
  const int row0 = me * 64 + (thread / 32) * 16; // in the row tile
  const unsigned sQw = sQ + me * 64 * 128;       // its rows of each block
  const float scaleLog2 = p.scale * dev::kLog2e;
  int consumed = 0;
  forEachRowTile([&](const RowTile &rt, int head, const TileRange &tr,
                     const plan::Member *members, int u) {
    auto keyWalk = keyWalkOf(tr, members);
    auto tileClass = [&](long long t) { return keyWalk.classOfNext(t); };
    auto maskIfPartial = [&](float (&sc)[1][BN / 8][4], int cls, long long t) {
      if (cls == plan::kPartial) // masks on partial tiles only
        maskPartialTile<Branch, BN, 1>(sc, members, tr.count, tr.qa0 + row0, t * BN, lane);
    };
    float acc[1][D / 8][4];
    warp::zero(acc);
    warp::OnlineSoftmax<1> softmax;
    softmax.init();
    hopper::mbarrierWait(bar.qFull(), u & 1);
    consumed += pipelinedConsumer<T, D, BM, BN, kStages, kConsumers>(
        acc, softmax, keyWalk, tr.t0, tr.t1, tileClass, maskIfPartial,
        [&] { hopper::mbarrierArrive(bar.qEmpty()); }, bar, sQw, sK, sV, me, consumed,
        scaleLog2);
    storeRows<T, D, 1, MODE>(p, acc, softmax, tr, tr.qa0 + row0, rt.batch, head, lane);
  });
}

} // namespace fwd
} // namespace dattn
