// dattn: the Hopper (sm_90a) dK/dV kernel: mmaBackwardKV's algorithm on
// wgmma (bf16 or fp16, head_dim 64 or 128).
//
// The CTA, grid, walk and epilogue are bwd::mmaBackwardKV's with a query
// step of 64 and 8 warps (128 key rows, 256 threads): two warpgroups own 64
// key rows each (warp w of the CTA: key rows 16 w..) and keep their dK and
// dV in wgmma accumulators, whose layout is mma.sync's fragments, so the
// masks, probabilities and epilogue are the sm80 kernel's. Per query tile
// of 64 rows:
//   S^T = K Q^T, dP^T = V dO^T   (wgmma m64n64k16, operands in shared memory)
//   P^T = 2^(S^T c - L), dS^T = P^T (dP^T - Delta)       (registers)
//   dV += P^T dO, dK += dS^T Q    (wgmma, P^T and dS^T from registers)
//   ATOMIC_DQ: dS^T into shared memory, then dQ = dS K (wgmma reading dS^T
//   transposed) added to the fp32 dQ accumulator with vector reductions.
//   head_dim 128: warpgroup g computes dQ's columns 64 g.. over all 128
//   keys; head_dim 64: its own 64 keys over every column (both add).
// The products run as separate commit groups, waited for where their
// results are needed, so that P^T's exponentials overlap dP^T's product and
// dS^T's arithmetic overlaps dV's. Every thread loads (cp.async; Q, dO, L
// and Delta double-buffered as in the sm80 kernel): no producer warpgroup
// yet. Tiles are fwd::WgmmaTile's
// 128-byte-swizzled layout; dS^T is one too, [key][query].
#pragma once

#include "dattn/backward_mma.cuh"
#include "dattn/forward_wgmma.cuh"

namespace dattn {
namespace bwd {

/// The kernel's tiles: K and V (128 key rows), Q and dO (64 query rows, two
/// stages each), dS^T ([128 keys][64 queries]). Its shared memory is
/// KvSmem<D, 64, 128, ATOMIC_DQ>'s, laid out K, V, Q, dO, dS^T, L, Delta.
template <int D> struct WgmmaKvTiles {
  static constexpr int kBM = 64, kBN = 128, kThreads = 256;
  using Keys = fwd::WgmmaTile<D, kBN>;
  using Queries = fwd::WgmmaTile<D, kBM>;
  using DsT = fwd::WgmmaTile<kBM, kBN>;
};

/// dS^T (this warp's 16 key rows of fragments dst) into the [key][query]
/// tile at byte offset `at` of shared memory `smem`, as T pairs.
template <class T, int BM, int BN>
DATTN_DEV void storeDsWgmma(const float (&dst)[BM / 8][4], unsigned char *smem, unsigned at,
                            int keyRow0, int lane) {
  using DsT = fwd::WgmmaTile<BM, BN>;
#pragma unroll
  for (int nb = 0; nb < BM / 8; ++nb)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = keyRow0 + lane / 4 + half * 8;
      *reinterpret_cast<unsigned *>(smem + at + DsT::chunkOffset(r, nb) + (lane % 4) * 4) =
          dev::pack2<T>(dst[nb][2 * half], dst[nb][2 * half + 1]);
    }
}

/// One query tile's products for this warpgroup's 64 key rows (sKw, sVw,
/// inside the CTA's tiles of BN key rows) against Q and dO at tq, tg with their L and Delta (sL, sDelta): S^T and
/// dP^T, the mask of partial tiles, P^T, dV += P^T dO, dS^T (STORE_DS: also
/// into the [key][query] tile at byte offset dsAt of smem, for dQ; stored
/// before dK's product, which keeps it out of the registers live across it)
/// and dK += dS^T Q, issued and committed, not waited for. The products
/// run in commit groups, each waited for only where its result is needed:
/// P^T's exponentials overlap dP^T, and dS^T's arithmetic overlaps dV's
/// product. The A operands are packed before the products that read them
/// (registers written between wgmmas would make ptxas serialize them).
template <class T, int D, int BM, int BN, class Branch, bool STORE_DS>
DATTN_DEV void wgmmaKeyTileStep(float (&dk)[D / 8][4], float (&dv)[D / 8][4], unsigned sKw,
                                unsigned sVw, unsigned tq, unsigned tg, const float *sL,
                                const float *sDelta, unsigned char *smem, unsigned dsAt,
                                int cls, const plan::Member *members, const RowMap &rm,
                                long long qa0, long long key0, int keyRow0, float scaleLog2,
                                int lane) {
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
  if (cls == plan::kPartial) // pairs outside the branch: score -inf, p = 0
    maskTransposed<Branch, BM>(s, members, rm, qa0, key0, lane);
  probabilitiesTransposed<BM>(s, sL, scaleLog2, lane); // P^T
  unsigned pa[BM / 16][4], da[BM / 16][4];
#pragma unroll
  for (int j = 0; j < BM / 16; ++j)
    packA<T>(pa[j], s, j);
  hopper::wgmmaFence();
  fwd::issueRegA<T, D, BM>(dv, pa, tg); // dV += P^T dO
  hopper::wgmmaWait<1>(); // dP^T
  scoreGradientsTransposed<BM>(s, dp, sDelta, lane); // dS^T
  if constexpr (STORE_DS)
    storeDsWgmma<T, BM, BN>(dp, smem, dsAt, keyRow0, lane);
#pragma unroll
  for (int j = 0; j < BM / 16; ++j)
    packA<T>(da[j], dp, j);
  hopper::wgmmaFence();
  fwd::issueRegA<T, D, BM>(dk, da, tq); // dK += dS^T Q
}

/// dQ += dS K for the query tile from qa0 by fp32 reductions: dS^T (the
/// CTA's BN keys, [key][query] at sDs, written and made visible to the
/// tensor cores by the caller) read transposed against K at sK. Two
/// warpgroups (BN = 128) share the work: with head_dim 128 warpgroup wg
/// computes dQ's columns 64 wg.. over all 128 keys, with head_dim 64 its
/// own 64 keys over every column (both add). One warpgroup (BN = 64)
/// computes every 64-column block over its keys. Waits for every product
/// of the warpgroup.
template <class T, int D, int BM, int BN>
DATTN_DEV void wgmmaAddDq(unsigned sDs, unsigned sK, const RowMap &rm, long long qa0, int wg,
                          int warpInGroup, float *dq0, long long dqRowStride, float scale,
                          int lane) {
  static_assert(BN == 64 || BN == 128, "one or two warpgroups of 64 key rows");
  using KTile = fwd::WgmmaTile<D, BN>;
  using DsT = fwd::WgmmaTile<BM, BN>;
  constexpr bool kTwo = BN == 128, kSplitKeys = kTwo && D == 64;
  constexpr int kKeySteps = kSplitKeys ? 4 : BN / 16, kColumnBlocks = kTwo ? 1 : D / 64;
#pragma unroll
  for (int cb = 0; cb < kColumnBlocks; ++cb) {
    const int block = kTwo ? (kSplitKeys ? 0 : wg) : cb; // dQ's 64 columns from 64 block
    float dq[8][4];
    hopper::wgmmaFence();
#pragma unroll
    for (int j = 0; j < kKeySteps; ++j) {
      const int kj = kSplitKeys ? 4 * wg + j : j; // 16 keys a step
      hopper::wgmma64x64<T, 1, 1>(fwd::wgmmaBlock(dq), DsT::nMajor(sDs, kj, 0),
                                  KTile::nMajor(sK, kj, block), j > 0);
    }
    hopper::wgmmaCommit();
    hopper::wgmmaWait<0>();
    reduceDqItem<64>(dq, rm, qa0, warpInGroup, 64 * block, dq0, dqRowStride, scale, lane);
  }
}

/// dK and dV (and with ATOMIC_DQ, dQ by reductions): one CTA per key tile of
/// 128 rows and query head, as mmaBackwardKV<T, D, 64, 8, ...>.
template <class T, int D, bool ATOMIC_DQ, int MODE, class Branch>
__device__ void wgmmaBackwardKV(const Params &p) {
  static_assert(sizeof(T) == 2, "the wgmma backward takes bf16 or fp16");
  static_assert(D == 64 || D == 128, "the wgmma backward: head_dim 64 or 128");
  using Tiles = WgmmaKvTiles<D>;
  constexpr int BM = Tiles::kBM, BN = Tiles::kBN, kThreads = Tiles::kThreads;
  using KTile = typename Tiles::Keys;
  using QTile = typename Tiles::Queries;
  using DsT = typename Tiles::DsT;
  extern __shared__ __align__(1024) unsigned char smemRaw[];
  const unsigned base = dev::smemAddress(smemRaw);
  constexpr unsigned kOffV = KTile::kBytes, kOffQ = 2 * KTile::kBytes,
                     kOffG = kOffQ + 2 * QTile::kBytes, kOffDs = kOffG + 2 * QTile::kBytes,
                     kOffL = kOffDs + (ATOMIC_DQ ? DsT::kBytes : 0);
  const unsigned sK = base, sV = base + kOffV, sQ = base + kOffQ, sG = base + kOffG,
                 sDS = base + kOffDs;
  float *sL = reinterpret_cast<float *>(smemRaw + kOffL); // two stages
  float *sDelta = sL + 2 * BM;                             // two stages

  const int warpId = threadIdx.x / 32, lane = threadIdx.x % 32, wg = threadIdx.x / 128;
  const long long n = p.seqLen;
  KeyCta<Branch, BM, BN> cta;
  typename KeyCta<Branch, BM, BN>::Members members;
  constexpr bool kMaySplit = ATOMIC_DQ && MODE == kAccumulate; // reductions in any order
  if (!cta.template find<kMaySplit>(p, members))
    return;

  const Layout qL = layoutOf<D>(p, p.qL, p.heads), gL = layoutOf<D>(p, p.doutL, p.heads);
  const Layout kL = layoutOf<D>(p, p.kL, p.kvHeads), vL = layoutOf<D>(p, p.vL, p.kvHeads);
  const T *q = (const T *)p.q + qL.at(cta.batch, 0, cta.head);
  const T *g = (const T *)p.dout + gL.at(cta.batch, 0, cta.head);
  const float *lseSrc = p.lse + (cta.batch * p.heads + cta.head) * n;
  const float *deltaSrc = p.delta + (cta.batch * p.heads + cta.head) * n;
  // Q, dO, L and Delta of query tile qt into stage `st`.
  auto loadQueries = [&](int st, long long qt) {
    const long long qa0 = qt * BM;
    QTile::template load<T, kThreads>(sQ + st * QTile::kBytes, q, qL.row, cta.rm.base, cta.rm.step,
                                      qa0, cta.rm.count, threadIdx.x);
    QTile::template load<T, kThreads>(sG + st * QTile::kBytes, g, gL.row, cta.rm.base, cta.rm.step,
                                      qa0, cta.rm.count, threadIdx.x);
    loadRowStats<BM, kThreads>(sL + st * BM, sDelta + st * BM, lseSrc, deltaSrc, cta.rm, qa0);
  };

  auto queryWalk = cta.queryWalk(n, members);
  long long qt = queryWalk.next(cta.qt0);
  KTile::template load<T, kThreads>(sK, (const T *)p.k + kL.at(cta.batch, 0, cta.kvHead), kL.row,
                                    cta.rm.base, cta.rm.step, cta.kb0, cta.rm.count, threadIdx.x);
  KTile::template load<T, kThreads>(sV, (const T *)p.v + vL.at(cta.batch, 0, cta.kvHead), vL.row,
                                    cta.rm.base, cta.rm.step, cta.kb0, cta.rm.count, threadIdx.x);
  if (qt < cta.qt1)
    loadQueries(0, qt);
  dev::cpAsyncCommit();

  float dk[D / 8][4], dv[D / 8][4];
  warp::zero(dk);
  warp::zero(dv);
  const float scaleLog2 = p.scale * dev::kLog2e;
  const int keyRow0 = warpId * 16; // this warp's key rows in the tile
  // This warpgroup's 64 key rows of each 64-column block.
  const unsigned sKw = sK + wg * 64 * 128, sVw = sV + wg * 64 * 128;
  float *dq0 = p.dqAcc + (cta.batch * p.seqLen * p.heads + cta.head) * D;

  for (int stage = 0; qt < cta.qt1; stage ^= 1) {
    dev::cpAsyncWaitAll();
    hopper::fenceProxyAsync(); // cp.async wrote what the tensor cores read
    __syncthreads();
    const int cls = queryWalk.classOfNext(qt);
    const long long qtNext = queryWalk.next(qt + 1);
    if (qtNext < cta.qt1) // 1. the next query tile into the other stage
      loadQueries(stage ^ 1, qtNext);
    dev::cpAsyncCommit();
    const unsigned tq = sQ + stage * QTile::kBytes, tg = sG + stage * QTile::kBytes;
    // 2.-5. the products; dS^T into shared memory for dQ
    wgmmaKeyTileStep<T, D, BM, BN, Branch, ATOMIC_DQ>(
        dk, dv, sKw, sVw, tq, tg, sL + stage * BM, sDelta + stage * BM, smemRaw, kOffDs, cls,
        members, cta.rm, qt * BM, cta.kb0 + keyRow0, keyRow0, scaleLog2, lane);
    if constexpr (ATOMIC_DQ) { // 6. dQ += dS K by reductions
      hopper::fenceProxyAsync(); // dS^T, written by threads, is read by wgmma
      __syncthreads();           // both warpgroups' keys
      wgmmaAddDq<T, D, BM, BN>(sDS, sK, cta.rm, qt * BM, wg, warpId % 4, dq0, (long long)p.heads * D,
                           p.scale, lane);
    } else {
      hopper::wgmmaWait<0>();
    }
    qt = qtNext;
  }
  storeKeyRows<T, D, MODE>(p, dk, dv, cta.rm, cta.kb0 + keyRow0, cta.batch, cta.head, cta.kvHead,
                           cta.chunked, lane);
}

} // namespace bwd
} // namespace dattn
