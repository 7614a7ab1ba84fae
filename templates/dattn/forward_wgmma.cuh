// dattn: the Hopper forward kernel (sm_90a, bf16 or fp16): warp-specialized wgmma.
//
// A CTA of three warpgroups owns 128 query rows of one (batch, head,
// branch):
//   - the producer (warpgroup 0, registers lowered with setmaxnreg) loads
//     Q once, then walks the CTA's key tiles (128 keys; skipped tiles never
//     load) and brings K and V into a ring of kStages shared-memory stages
//     with cp.async, through the branch's row map (dilated rows, blocks);
//     a stage is announced on its `full` mbarrier once its copies landed
//     and were fenced for the async proxy, and reused when both consumers
//     arrived on its `empty` mbarrier;
//   - two consumers (warpgroups 1 and 2, registers raised) own 64 rows
//     each and, per tile, compute S = Q K^T (wgmma m64n128k16 from shared
//     memory), mask partial tiles, run the online softmax, and add P V
//     (wgmma with P from registers, V N-major), FlashAttention-2 style. The
//     two consumers share every K/V tile, and one's softmax runs while the
//     other's products occupy the tensor cores.
// K and V come with cp.async (one loader serves every row map the plan
// produces: strided rows, block lists, ragged tails zero-filled) or, with
// TMA (sm90_wgmma_tma_forward), as boxes of the [B, N, H, D] tensor's map
// (runtime/TensorMaps.h) traversed with the branch's dilation as element
// stride: one producer
// thread issues them and the stage's mbarrier counts their bytes; rows past
// N are zero-filled by the TMA, rows past the segment (real keys of the
// next one) are masked like the zero-filled ones (the tile is partial). The row maps, tile classes, masks, online softmax
// and epilogue are the sm80 kernel's (forward_mma.cuh); the wgmma
// accumulator layout is mma.sync's (warp w of a warpgroup holds rows
// 16 w..: element e of 8-column block i is row lane / 4 + (e / 2) * 8,
// column 8 i + 2 (lane % 4) + e % 2), so s[1][BN / 8][4] and acc[1][D / 8][4]
// are the sm80 kernel's fragments with MT = 1.
//
// Shared memory tiles are [D / 64][rows][64] 16-bit elements: each 64-column block is
// rows of 128 bytes whose 16-byte chunk c of row r lives at c ^ (r mod 8),
// the canonical 128-byte-swizzle layout (8-row atoms of 1024 bytes).
#pragma once

#include "dattn/forward_mma.cuh"
#include "dattn/hopper.cuh"

namespace dattn {
namespace fwd {

/// A [ROWS, D] 16-bit tile as wgmma reads it (above), loaded with cp.async.
template <int D, int ROWS> struct WgmmaTile {
  static_assert(D % 64 == 0 && ROWS % 8 == 0, "wgmma tiles: 64-column blocks, 8-row atoms");
  static constexpr int kBytes = ROWS * D * 2;
  static constexpr int kBlockBytes = ROWS * 128; ///< one 64-column block

  /// Byte offset of 16-byte chunk `ch` (columns 8 ch ..) of row r.
  DATTN_DEV static unsigned chunkOffset(int r, int ch) {
    return (ch / 8) * kBlockBytes + r * 128 + (((ch % 8) ^ (r % 8)) * 16);
  }
  /// Compact rows [a0, a0 + ROWS) of the row map base + a * step (rows at
  /// or past `limit` zero-filled) into the tile at shared address dst;
  /// THREADS threads take part (one warpgroup by default; thread = index
  /// among them).
  template <class T, int THREADS = 128>
  DATTN_DEV static void load(unsigned dst, const T *src, long long rowStride, long long base,
                             long long step, long long a0, long long limit, int thread) {
    constexpr int kChunks = D / 8;
    for (int c = thread; c < ROWS * kChunks; c += THREADS) {
      const int r = c / kChunks, ch = c % kChunks;
      const long long a = a0 + r;
      const bool valid = a < limit;
      const T *g = valid ? src + (base + a * step) * rowStride + ch * 8 : src;
      dev::cpAsync16(dst + chunkOffset(r, ch), g, valid);
    }
  }
  /// The K-major descriptor of k step kk (16 columns) of the tile at `at`:
  /// its 64-column block, 32 bytes per step inside it; 8-row groups 1024
  /// bytes apart.
  DATTN_DEV static unsigned long long kMajor(unsigned at, int kk) {
    return hopper::smemDescriptor(at + (kk / 4) * kBlockBytes + (kk % 4) * 32, 16, 1024, 1);
  }
  /// The N-major descriptor of rows [16 j, 16 j + 16) (the k step) and
  /// 64-column block b: 8-row groups 1024 bytes apart along k.
  DATTN_DEV static unsigned long long nMajor(unsigned at, int j, int b) {
    return hopper::smemDescriptor(at + b * kBlockBytes + j * 2048, kBlockBytes, 1024, 1);
  }
};

/// The kernel's shape (the host's family asserts its shared memory against
/// kBytes in the generated source): Q, kStages stages of K and V, and the
/// mbarriers: full per stage, one empty per stage (PIPELINED: one for K and
/// one for V), and Q's. BM: 128 query rows on two consumer warpgroups, or
/// 64 on one (tiles inside 64-row blocks); BN: 128 or 64 keys a tile.
template <int D, bool PIPELINED = false, int BM = 128, int BN = 128> struct WgmmaShape {
  static_assert((BM == 64 || BM == 128) && (BN == 64 || BN == 128), "wgmma forward tiles");
  static constexpr int kBM = BM;
  static constexpr int kBN = BN;
  static constexpr int kConsumers = BM / 64; ///< warpgroups of 64 query rows
  static constexpr int kStages = 3;
  static constexpr int kTileBytes = WgmmaTile<D, kBN>::kBytes;
  static constexpr int kBarrierBytes = 8 * ((PIPELINED ? 3 : 2) * kStages + 1);
  static constexpr int kBytes = WgmmaTile<D, kBM>::kBytes + 2 * kStages * kTileBytes +
                                kBarrierBytes;
};

/// Rows row0 + j r, j < ROWS, of one head of one batch from the tensor map
/// into a WgmmaTile<D, ROWS> at dst: per 64-column block, ROWS / R boxes of
/// R = tmaBoxRows(r, ROWS) rows (1024-byte aligned, so the TMA's 128-byte
/// swizzle is the tile's). The mbarrier counts the bytes.
template <int D, int ROWS, int STRIDE>
DATTN_DEV void tmaLoadRows(unsigned dst, const hopper::TensorMap &map, unsigned bar, int row0,
                           int head, int batch) {
  constexpr int R = tmaBoxRows(STRIDE, ROWS);
  static_assert(STRIDE <= kTmaMaxStride && ROWS % R == 0, "TMA boxes of a strided tile");
#pragma unroll
  for (int b = 0; b < D / 64; ++b)
#pragma unroll
    for (int j = 0; j < ROWS / R; ++j)
      hopper::tmaLoad4d(dst + b * WgmmaTile<D, ROWS>::kBlockBytes + j * R * 128, map, bar, 64 * b,
                        head, row0 + j * R * STRIDE, batch);
}

/// A 64 x N accumulator block of fragments as the N / 2 floats wgmma takes.
template <int NB> DATTN_DEV float (&wgmmaBlock(float (&f)[NB][4]))[NB * 4] {
  return *reinterpret_cast<float(*)[NB * 4]>(&f[0][0]);
}
DATTN_DEV float (&wgmmaBlock64(float (&f)[4]))[32] {
  return *reinterpret_cast<float(*)[32]>(&f[0]);
}

/// A consumer's products (issued, then committed as one group): S = Q K^T
/// over a key tile (the first k step overwrites S), and O += P V with P in
/// registers (wgmma's register-A layout: the accumulator packed to pairs).
template <class T, int D, int BM, int BN>
DATTN_DEV void issueScores(float (&sc)[1][BN / 8][4], unsigned sQw, unsigned tk) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    if constexpr (BN == 128)
      hopper::wgmma64x128<T, 0>(wgmmaBlock(sc[0]), WgmmaTile<D, BM>::kMajor(sQw, kk),
                                 WgmmaTile<D, BN>::kMajor(tk, kk), kk > 0);
    else
      hopper::wgmma64x64<T, 0>(wgmmaBlock(sc[0]), WgmmaTile<D, BM>::kMajor(sQw, kk),
                                WgmmaTile<D, BN>::kMajor(tk, kk), kk > 0);
  }
  hopper::wgmmaCommit();
}
/// acc (64 rows x D columns) += A B, A in registers (K / 16 register-A
/// fragments) and B the K x D tile at tb, issued and committed as one
/// group: the forward's O += P V, the dK/dV kernels' dV += P^T dO and
/// dK += dS^T Q.
template <class T, int D, int K>
DATTN_DEV void issueRegA(float (&acc)[D / 8][4], const unsigned (&a)[K / 16][4], unsigned tb) {
#pragma unroll
  for (int j = 0; j < K / 16; ++j)
#pragma unroll
    for (int b = 0; b < D / 64; ++b)
      hopper::wgmma64x64RegA<T, 1>(wgmmaBlock64(acc[8 * b]), a[j],
                                    WgmmaTile<D, K>::nMajor(tb, j, b), 1);
  hopper::wgmmaCommit();
}
template <class T, int D, int BN>
DATTN_DEV void issuePV(float (&acc)[1][D / 8][4], const unsigned (&a)[BN / 16][4], unsigned tv) {
  issueRegA<T, D, BN>(acc[0], a, tv);
}
/// P to 16-bit pairs before the products that read it: registers written
/// between wgmmas would make ptxas serialize them.
template <class T, int BN>
DATTN_DEV void packP(unsigned (&a)[BN / 16][4], const float (&sc)[1][BN / 8][4]) {
#pragma unroll
  for (int j = 0; j < BN / 16; ++j) {
    a[j][0] = dev::pack2<T>(sc[0][2 * j][0], sc[0][2 * j][1]);
    a[j][1] = dev::pack2<T>(sc[0][2 * j][2], sc[0][2 * j][3]);
    a[j][2] = dev::pack2<T>(sc[0][2 * j + 1][0], sc[0][2 * j + 1][1]);
    a[j][3] = dev::pack2<T>(sc[0][2 * j + 1][2], sc[0][2 * j + 1][3]);
  }
}

/// The kernel (top of the file): a producer and two consumer warpgroups.
/// PIPELINED (the sm90_wgmma_pipelined_forward family, sm_90a's default):
/// K and V are released separately, K as soon as S is computed, so that K
/// loads stay two tiles ahead; each consumer issues S_i with P_{i-1} V_{i-1}
/// and runs the softmax of S_i while that product runs, and the consumers
/// take turns to issue (named barriers), one's softmax overlapping the
/// other's products.
/// TMA (PIPELINED only): K and V through kMap and vMap (above).
/// BM_ = 64: one consumer warpgroup (no turns; two CTAs share an SM,
/// __launch_bounds__(256, 2)); BN_: keys a tile.
template <class T, int D, int MODE, class Branch, bool PIPELINED = false, bool TMA = false,
          int BM_ = 128, int BN_ = 128>
__device__ void wgmmaForward(const Params &p, const hopper::TensorMap *kMap = nullptr,
                             const hopper::TensorMap *vMap = nullptr) {
  static_assert(sizeof(T) == 2, "the wgmma forward takes bf16 or fp16");
  static_assert(PIPELINED || !TMA, "TMA loads are the pipelined kernel's");
  using Shape = WgmmaShape<D, PIPELINED, BM_, BN_>;
  constexpr int BM = Shape::kBM, BN = Shape::kBN, kStages = Shape::kStages;
  constexpr int kConsumers = Shape::kConsumers, kConsumerThreads = 128 * kConsumers;
  static_assert(kConsumers == 2 || TMA, "one consumer: its producer's 24 registers issue TMA only");
  using QTile = WgmmaTile<D, BM>;
  using KTile = WgmmaTile<D, BN>;
  // Register split (ptxas, fewest spills over the examples): the
  // pipelined consumers hold S, P and O at once, but its producer's two
  // waits per tile need more than 56 too; with TMA the producer computes no
  // addresses past Q's.
  // One consumer (two CTAs an SM, 128 registers a thread at launch): the
  // producer keeps 24 and the consumer takes the rest of the CTA's share.
  constexpr int kProducerRegisters = kConsumers == 1 ? 24 : TMA ? 40 : PIPELINED ? 72 : 56;
  constexpr int kConsumerRegisters = kConsumers == 1 ? 232 : TMA ? 232 : PIPELINED ? 216 : 224;
  static_assert(hopper::registerSplitFits<kProducerRegisters, kConsumerRegisters, kConsumers,
                                          kConsumers == 1 ? 2 : 1>(),
                "the warpgroups' registers exceed the CTA's");
  extern __shared__ __align__(1024) unsigned char smemRaw[];
  const unsigned sQ = dev::smemAddress(smemRaw), sK = sQ + QTile::kBytes,
                 sV = sK + kStages * KTile::kBytes, bars = sV + kStages * KTile::kBytes;
  auto full = [&](int s) { return bars + 8 * s; };
  auto empty = [&](int s) { return bars + 8 * (kStages + s); }; // PIPELINED: K's
  const unsigned qFull = bars + 16 * kStages;
  auto vEmpty = [&](int s) { return bars + 8 * (2 * kStages + 1 + s); };

  // The CTA's work, as in mmaForward (every thread computes it: cheap,
  // and producer and consumers walk the same tiles).
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long batch = blockIdx.z, n = p.seqLen;
  const int kvHead = head / p.groupSize;
  TileRange tr;
  plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  if (!ctaTileRange<Branch, BM, BN>(p, headIndex, head, members, &tr))
    return;
  // Every warp walks (warp-uniform: blocks branches' walks take ballots).
  auto keyWalk = walk::tiles<Branch::kKind == kBlocksBranch>(
      tr.t1, [&](long long t) { return keyTileClass<Branch, BM, BN>(tr, members, n, t); });

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      hopper::mbarrierInit(full(s), TMA ? 1 : 128); // the TMA thread, or every producer thread
      hopper::mbarrierInit(empty(s), kConsumerThreads); // every consumer thread
      if constexpr (PIPELINED)
        hopper::mbarrierInit(vEmpty(s), kConsumerThreads);
    }
    hopper::mbarrierInit(qFull, 128);
    hopper::fenceBarrierInit();
  }
  __syncthreads();
  const int warpgroup = threadIdx.x / 128, thread = threadIdx.x % 128;

  if (warpgroup == 0) { // the producer
    hopper::registersDown<kProducerRegisters>();
    const T *q = (const T *)p.q + p.qL.at(batch, 0, head);
    const T *k = (const T *)p.k + p.kL.at(batch, 0, kvHead);
    const T *v = (const T *)p.v + p.vL.at(batch, 0, kvHead);
    QTile::load(sQ, q, p.qL.row, tr.base, tr.step, tr.qa0, tr.count, thread);
    dev::cpAsyncCommit();
    if constexpr (TMA) {
      // Q by every producer thread, then K and V by one: per tile, the
      // stage's K readers gone, its full barrier expects both tiles' bytes;
      // V's boxes wait for V's readers.
      dev::cpAsyncWaitAll();
      hopper::fenceProxyAsync();
      hopper::mbarrierArrive(qFull);
      if (thread >= 32) // the first warp walks, its first thread issues
        return;
      constexpr int kStride = static_cast<int>(Branch::kStride); // 1 for blocks branches
      int i = 0;
      for (long long t = keyWalk.next(tr.t0); t < tr.t1; t = keyWalk.next(t + 1), ++i) {
        if (thread == 0) {
          const int s = i % kStages;
          const unsigned phase = ((i / kStages) & 1) ^ 1;
          const int row0 = static_cast<int>(tr.base + t * BN * tr.step);
          hopper::mbarrierWait(empty(s), phase);
          hopper::mbarrierArriveExpect(full(s), 2 * KTile::kBytes);
          tmaLoadRows<D, BN, kStride>(sK + s * KTile::kBytes, *kMap, full(s), row0, kvHead,
                                      static_cast<int>(batch));
          hopper::mbarrierWait(vEmpty(s), phase);
          tmaLoadRows<D, BN, kStride>(sV + s * KTile::kBytes, *vMap, full(s), row0, kvHead,
                                      static_cast<int>(batch));
        }
        __syncwarp();
      }
      return;
    }
    // Tile i goes into stage i % kStages once its last reader released it;
    // the previous group (Q, or tile i - 1) is announced after tile i's
    // copies are issued (PIPELINED: its K copies), so that later tiles stay
    // in flight.
    int i = 0;
    for (long long t = keyWalk.next(tr.t0); t < tr.t1; t = keyWalk.next(t + 1), ++i) {
      const int s = i % kStages;
      const unsigned phase = ((i / kStages) & 1) ^ 1;
      hopper::mbarrierWait(empty(s), phase);
      KTile::load(sK + s * KTile::kBytes, k, p.kL.row, tr.base, tr.step, t * BN, tr.count,
                  thread);
      if constexpr (PIPELINED) { // K and V are separate groups, V waits for V's readers
        dev::cpAsyncCommit();
        dev::cpAsyncWait<1>();
        hopper::fenceProxyAsync();
        hopper::mbarrierArrive(i == 0 ? qFull : full((i - 1) % kStages));
        hopper::mbarrierWait(vEmpty(s), phase);
        KTile::load(sV + s * KTile::kBytes, v, p.vL.row, tr.base, tr.step, t * BN, tr.count,
                    thread);
        dev::cpAsyncCommit();
      } else {
        KTile::load(sV + s * KTile::kBytes, v, p.vL.row, tr.base, tr.step, t * BN, tr.count,
                    thread);
        dev::cpAsyncCommit();
        dev::cpAsyncWait<1>();
        hopper::fenceProxyAsync(); // cp.async wrote what the tensor cores read
        hopper::mbarrierArrive(i == 0 ? qFull : full((i - 1) % kStages));
      }
    }
    dev::cpAsyncWaitAll();
    hopper::fenceProxyAsync();
    hopper::mbarrierArrive(i == 0 ? qFull : full((i - 1) % kStages));
    return;
  }

  // A consumer: 64 rows, warp w of it rows 16 w.. of them.
  hopper::registersUp<kConsumerRegisters>();
  const int lane = threadIdx.x % 32, me = warpgroup - 1;
  const int row0 = me * 64 + (thread / 32) * 16; // in the CTA's tile
  const unsigned sQw = sQ + me * 64 * 128;       // its rows of each block
  float acc[1][D / 8][4];
  warp::zero(acc);
  warp::OnlineSoftmax<1> softmax;
  softmax.init();
  const float scaleLog2 = p.scale * dev::kLog2e;
  hopper::mbarrierWait(qFull, 0);
  // The tile class is found before the tile's wait, off the critical path
  // (blocks branches: read from the walk's ballots).
  auto tileClass = [&](long long t) { return keyWalk.classOfNext(t); };
  auto maskIfPartial = [&](float (&sc)[1][BN / 8][4], int cls, long long t) {
    if (cls == plan::kPartial) // masks on partial tiles only
      maskPartialTile<Branch, BN, 1>(sc, members, tr.count, tr.qa0 + row0, t * BN, lane);
  };

  if constexpr (!PIPELINED) {
    long long t = keyWalk.next(tr.t0);
    for (int i = 0; t < tr.t1; ++i) {
      const int s = i % kStages;
      const int cls = tileClass(t);
      const long long tNext = keyWalk.next(t + 1);
      const unsigned tk = sK + s * KTile::kBytes, tv = sV + s * KTile::kBytes;
      hopper::mbarrierWait(full(s), (i / kStages) & 1);
      float sc[1][BN / 8][4];
      hopper::wgmmaFence();
      issueScores<T, D, BM, BN>(sc, sQw, tk);
      hopper::wgmmaWait<0>();
      maskIfPartial(sc, cls, t);
      softmax.update(sc, acc, scaleLog2);
      unsigned a[BN / 16][4];
      packP<T, BN>(a, sc);
      hopper::wgmmaFence();
      issuePV<T, D, BN>(acc, a, tv);
      hopper::wgmmaWait<0>();
      hopper::mbarrierArrive(empty(s)); // this thread is done with the stage
      t = tNext;
    }
  } else {
    // Turns: consumer 0 issues first; each passes the turn after issuing.
    // Consumer 1 passes none after its last batch, so every arrival meets
    // a wait (named barriers 1 and 2; 0 is __syncthreads).
    // One consumer (BM = 64) takes no turns.
    auto waitTurn = [&] {
      if constexpr (kConsumers == 2)
        hopper::namedBarrierSync(1 + me, 256);
    };
    auto passTurn = [&] {
      if constexpr (kConsumers == 2)
        hopper::namedBarrierArrive(1 + (me ^ 1), 256);
    };
    long long t = keyWalk.next(tr.t0);
    const bool any = t < tr.t1; // both consumers walk the same tiles
    int prev = 0;               // the stage of the tile whose P is in a
    unsigned a[BN / 16][4];     // P, pairs of T
    if (any) {
      if (me == 1)
        passTurn();
      float sc[1][BN / 8][4], corr[1][2];
      const int cls = tileClass(t);
      hopper::mbarrierWait(full(0), 0);
      waitTurn();
      hopper::wgmmaFence();
      issueScores<T, D, BM, BN>(sc, sQw, sK);
      passTurn();
      hopper::wgmmaWait<0>();
      hopper::mbarrierArrive(empty(0)); // K of tile 0 is read
      maskIfPartial(sc, cls, t);
      softmax.updateScores(sc, scaleLog2, corr); // O is zero: nothing to rescale
      packP<T, BN>(a, sc);
      t = keyWalk.next(t + 1);
    }
    for (int i = 1; t < tr.t1; t = keyWalk.next(t + 1), ++i) {
      const int s = i % kStages;
      float sc[1][BN / 8][4], corr[1][2];
      const int cls = tileClass(t);
      hopper::mbarrierWait(full(s), (i / kStages) & 1);
      waitTurn();
      hopper::wgmmaFence();
      issueScores<T, D, BM, BN>(sc, sQw, sK + s * KTile::kBytes);
      issuePV<T, D, BN>(acc, a, sV + prev * KTile::kBytes);
      passTurn();
      hopper::wgmmaWait<1>(); // S_i is in; P_{i-1} V_{i-1} may still run
      hopper::mbarrierArrive(empty(s));
      maskIfPartial(sc, cls, t);
      softmax.updateScores(sc, scaleLog2, corr);
      hopper::wgmmaWait<0>();
      hopper::mbarrierArrive(vEmpty(prev));
      softmax.rescale(acc, corr);
      packP<T, BN>(a, sc);
      prev = s;
    }
    if (any) {
      waitTurn();
      hopper::wgmmaFence();
      issuePV<T, D, BN>(acc, a, sV + prev * KTile::kBytes);
      if (me == 0)
        passTurn();
      hopper::wgmmaWait<0>();
      hopper::mbarrierArrive(vEmpty(prev));
    }
  }
  storeRows<T, D, 1, MODE>(p, acc, softmax, tr, tr.qa0 + row0, batch, head, lane);
}

} // namespace fwd
} // namespace dattn
