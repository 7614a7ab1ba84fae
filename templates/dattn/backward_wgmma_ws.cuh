// dattn: the Hopper (sm_90a) dK/dV kernel, warp-specialized: the wgmma
// dK/dV kernel's products (backward_wgmma.cuh) on two consumer warpgroups,
// fed by a producer warpgroup.
//
// A CTA owns BN key rows of one (batch, head) as in wgmmaBackwardKV: 128
// (three warpgroups: a producer, two consumers) or, for branches with
// blocks of 64 rows, 64 (a producer and one consumer; head_dim 64, two
// CTAs an SM):
//   - the producer (warpgroup 0, 24 registers) walks the CTA's query tiles
//     (64 rows) and brings each into one of kStages stages: Q and dO as TMA
//     boxes of the [B, N, H, D] tensor maps traversed with the branch's
//     dilation as element stride (fwd::tmaLoadRows; rows past N arrive as
//     zeros, rows past the segment are masked: the tile is partial), L and
//     Delta by its 128 threads (one row each); the stage's `full` mbarrier
//     counts the 128 arrivals and the boxes' bytes. A stage is reused once
//     both consumers arrived on its `empty` mbarrier.
//   - the consumers (240 registers; 232 with two CTAs an SM) load K and V
//     once, then per query tile run wgmmaBackwardKV's products
//     (wgmmaKeyTileStep, wgmmaAddDq) with named barriers instead of
//     __syncthreads: dS^T is double-buffered, so one barrier per tile (every
//     consumer's dS^T written) also orders the reuse of the other buffer.
// Loads no longer sit between the consumers' products, and the next tiles
// arrive while they compute.
#pragma once

#include "dattn/backward_wgmma.cuh"

namespace dattn {
namespace bwd {

/// Shared memory: K and V (BN rows), kStages stages of Q and dO (64 rows),
/// two dS^T buffers with ATOMIC_DQ, kStages stages of L and Delta, then the
/// mbarriers (full and empty per stage). A consumer warpgroup per 64 keys.
template <int D, bool ATOMIC_DQ, int BN = 128> struct WsKvShape {
  static_assert(BN == 64 || BN == 128, "the warp-specialized dK/dV kernel: 64 or 128 key rows");
  static constexpr int kBM = 64, kBN = BN, kStages = 3, kConsumers = BN / 64,
                       kThreads = 128 * (1 + kConsumers);
  using Keys = fwd::WgmmaTile<D, kBN>;
  using Queries = fwd::WgmmaTile<D, kBM>;
  using DsT = fwd::WgmmaTile<kBM, kBN>;
  static constexpr int kOffV = Keys::kBytes, kOffQ = 2 * Keys::kBytes,
                       kOffG = kOffQ + kStages * Queries::kBytes,
                       kOffDs = kOffG + kStages * Queries::kBytes,
                       kOffL = kOffDs + (ATOMIC_DQ ? 2 * DsT::kBytes : 0),
                       kOffBars = kOffL + kStages * 2 * kBM * 4;
  static constexpr int kBytes = kOffBars + 8 * 2 * kStages;
};

/// dK and dV (and with ATOMIC_DQ, dQ by reductions), as wgmmaBackwardKV,
/// for key tiles of BN rows; qMap and gMap are q's and dout's maps
/// (runtime/TensorMaps.h).
template <class T, int D, bool ATOMIC_DQ, int MODE, class Branch, int BN = 128>
__device__ void wgmmaBackwardKVWs(const Params &p, const hopper::TensorMap *qMap,
                                  const hopper::TensorMap *gMap) {
  static_assert(sizeof(T) == 2, "the wgmma backward takes bf16 or fp16");
  static_assert(D == 64 || D == 128, "the wgmma backward: head_dim 64 or 128");
  static_assert(BN == 128 || D == 64, "64 key rows a CTA: head_dim 64 (two CTAs an SM)");
  using Shape = WsKvShape<D, ATOMIC_DQ, BN>;
  constexpr int BM = Shape::kBM, kStages = Shape::kStages;
  constexpr int kConsumers = Shape::kConsumers, kConsumerThreads = 128 * kConsumers;
  using KTile = typename Shape::Keys;
  using QTile = typename Shape::Queries;
  using DsT = typename Shape::DsT;
  // The register split: 24 + 2 x 240 per lane of a warpgroup is the
  // 168 x 3 the CTA holds (32 + 2 x 240 asked for more than that, and the
  // consumers' setmaxnreg.inc waited forever); with one consumer and two
  // CTAs an SM, 24 + 232 is 128 x 2.
  constexpr int kCtasPerSm = kConsumers == 1 ? 2 : 1;
  constexpr int kProducerRegisters = 24, kConsumerRegisters = kConsumers == 1 ? 232 : 240;
  static_assert(hopper::registerSplitFits<kProducerRegisters, kConsumerRegisters, kConsumers,
                                          kCtasPerSm>(),
                "the warpgroups' registers exceed the CTA's");
  extern __shared__ __align__(1024) unsigned char smemRaw[];
  const unsigned base = dev::smemAddress(smemRaw);
  const unsigned sK = base, sV = base + Shape::kOffV, sQ = base + Shape::kOffQ,
                 sG = base + Shape::kOffG, bars = base + Shape::kOffBars;
  float *sL = reinterpret_cast<float *>(smemRaw + Shape::kOffL); // kStages x (L, Delta)
  auto full = [&](int st) { return bars + 8 * st; };
  auto empty = [&](int st) { return bars + 8 * (kStages + st); };

  const long long n = p.seqLen;
  KeyCta<Branch, BM, BN> cta;
  typename KeyCta<Branch, BM, BN>::Members members;
  constexpr bool kMaySplit = ATOMIC_DQ && MODE == kAccumulate; // reductions in any order
  if (!cta.template find<kMaySplit>(p, members))
    return;
  auto queryWalk = cta.queryWalk(n, members); // each warp walks (producer and consumers)

  if (threadIdx.x == 0) {
    for (int st = 0; st < kStages; ++st) {
      hopper::mbarrierInit(full(st), 128);  // every producer thread (one also counts bytes)
      hopper::mbarrierInit(empty(st), kConsumerThreads); // every consumer thread
    }
    hopper::fenceBarrierInit();
  }
  __syncthreads();
  const int warpgroup = threadIdx.x / 128;

  if (warpgroup == 0) { // the producer
    hopper::registersDown<kProducerRegisters>();
    const int thread = threadIdx.x;
    const float *stats = thread < BM ? p.lse : p.delta; // thread r: L, BM + r: Delta of row r
    stats += (cta.batch * p.heads + cta.head) * n;
    int i = 0;
    for (long long qt = queryWalk.next(cta.qt0); qt < cta.qt1;
         qt = queryWalk.next(qt + 1), ++i) {
      const int st = i % kStages;
      hopper::mbarrierWait(empty(st), ((i / kStages) & 1) ^ 1);
      const long long a = qt * BM + thread % BM;
      sL[st * 2 * BM + thread] = a < cta.rm.count ? stats[cta.rm.base + a * cta.rm.step] : 0.f;
      if (thread == 0) {
        const int row0 = static_cast<int>(cta.rm.base + qt * BM * cta.rm.step);
        constexpr int kStride = static_cast<int>(Branch::kStride); // 1 for blocks branches
        hopper::mbarrierArriveExpect(full(st), 2 * QTile::kBytes);
        fwd::tmaLoadRows<D, BM, kStride>(sQ + st * QTile::kBytes, *qMap, full(st), row0, cta.head,
                                         static_cast<int>(cta.batch));
        fwd::tmaLoadRows<D, BM, kStride>(sG + st * QTile::kBytes, *gMap, full(st), row0, cta.head,
                                         static_cast<int>(cta.batch));
      } else {
        hopper::mbarrierArrive(full(st));
      }
    }
    return;
  }

  // A consumer: warpgroup wg's 64 key rows; warp w of the consumer threads
  // holds key rows 16 w.. as in wgmmaBackwardKV.
  hopper::registersUp<kConsumerRegisters>();
  const int ct = threadIdx.x - 128, wg = warpgroup - 1, warpId = ct / 32, lane = ct % 32;
  auto consumersSync = [] { hopper::namedBarrierSync(1, kConsumerThreads); };
  const Layout kL = layoutOf<D>(p, p.kL, p.kvHeads), vL = layoutOf<D>(p, p.vL, p.kvHeads);
  KTile::template load<T, kConsumerThreads>(sK, (const T *)p.k + kL.at(cta.batch, 0, cta.kvHead), kL.row,
                               cta.rm.base, cta.rm.step, cta.kb0, cta.rm.count, ct);
  KTile::template load<T, kConsumerThreads>(sV, (const T *)p.v + vL.at(cta.batch, 0, cta.kvHead), vL.row,
                               cta.rm.base, cta.rm.step, cta.kb0, cta.rm.count, ct);
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
  float *dq0 = p.dqAcc + (cta.batch * p.seqLen * p.heads + cta.head) * D;

  long long qt = queryWalk.next(cta.qt0);
  for (int i = 0; qt < cta.qt1; ++i) {
    const int st = i % kStages;
    const int cls = queryWalk.classOfNext(qt);
    const long long qtNext = queryWalk.next(qt + 1);
    const unsigned tq = sQ + st * QTile::kBytes, tg = sG + st * QTile::kBytes;
    const float *tL = sL + st * 2 * BM, *tDelta = tL + BM;
    hopper::mbarrierWait(full(st), (i / kStages) & 1);
    const unsigned dsAt = Shape::kOffDs + (i & 1) * DsT::kBytes; // ATOMIC_DQ's buffer
    wgmmaKeyTileStep<T, D, BM, BN, Branch, ATOMIC_DQ>(dk, dv, sKw, sVw, tq, tg, tL, tDelta, smemRaw,
                                                  dsAt, cls, members, cta.rm, qt * BM,
                                                  cta.kb0 + keyRow0, keyRow0, scaleLog2, lane);
    if constexpr (ATOMIC_DQ) { // dQ += dS K by reductions
      hopper::fenceProxyAsync(); // dS^T, written by threads, is read by wgmma
      consumersSync();           // every consumer's keys (and, a tile ago, the other buffer read)
      wgmmaAddDq<T, D, BM, BN>(base + dsAt, sK, cta.rm, qt * BM, wg, warpId % 4, dq0,
                           (long long)p.heads * D, p.scale, lane);
    } else {
      hopper::wgmmaWait<0>();
    }
    hopper::mbarrierArrive(empty(st)); // Q, dO, L and Delta of the stage are read
    qt = qtNext;
  }
  storeKeyRows<T, D, MODE>(p, dk, dv, cta.rm, cta.kb0 + keyRow0, cta.batch, cta.head, cta.kvHead,
                           cta.chunked, lane);
}

} // namespace bwd
} // namespace dattn
