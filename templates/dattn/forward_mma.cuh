// dattn: the tensor-core forward kernel (sm_80+: fp16 and bf16, and fp32
// inputs on TF32 tensor cores for `precision = tf32`).
//
// One CTA computes BM query rows of one (batch, head) for one branch; each of
// its warps owns MT m16 row tiles (16 * MT rows): every K and V fragment read
// from shared memory then feeds 2 * MT mma instructions, which is what keeps
// the kernel off the shared-memory bandwidth limit. Per key tile
// (FlashAttention-2):
//   1. cp.async brings the next K and V tiles into the other shared-memory
//      stage while this one is computed (double buffering);
//   2. S = Q K^T with mma.m16n8k16 (Q and K fragments via ldmatrix; TF32:
//      m16n8k8);
//   3. partial tiles mask S per element; the online softmax keeps
//      m = running row max (log2 domain) and l = running sum of 2^(s - m);
//   4. O += P V, P re-packed from the S accumulators, V via ldmatrix.trans.
// Rows come from the branch's plan (templates/dattn/tile_plan.cuh): a
// strided branch reads rows first + a * r of a segment straight into dense
// tiles (no gather, no FLOPs on other rows); a blocks branch reads key tiles
// of the sequence the union can reach, skipping empty tiles.
//
// Shared memory rows are swizzled in 16-byte chunks (chunk c of row r lives
// at c ^ (r mod 8), for D a multiple of 64) so that the 8 rows an ldmatrix
// reads hit 8 different bank groups. fp32 tiles hold 4 elements per chunk
// (the same swizzle also keeps TF32's 32-bit V reads free of conflicts).
#pragma once

#include "dattn/forward_common.cuh"
#include "dattn/warp_mma.cuh"

namespace dattn {
namespace fwd {

template <class T, int D, int BM, int BN, int MT> struct MmaTile {
  static constexpr int kWarps = BM / (16 * MT);
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBytes = sizeof(T);       ///< per element
  static constexpr int kPerChunk = 16 / kBytes;  ///< elements per 16-byte chunk
  static constexpr int kChunks = D / kPerChunk;  ///< 16-byte chunks per row
  // XOR within aligned groups of up to 8 chunks: the group size must divide
  // kChunks (D = 96 has 12 chunks: groups of 4), or a chunk would land past
  // the end of its row.
  static constexpr int kGroup = (kChunks & -kChunks) < 8 ? (kChunks & -kChunks) : 8;
  static constexpr int kSwizzle = kGroup - 1;
  static constexpr int kSmemElems = BM * D + 4 * BN * D; ///< Q + 2 stages of K and V
  static constexpr int kSmemBytes = kSmemElems * kBytes;
  static_assert(D % 16 == 0 && BN % 16 == 0 && BM % (16 * MT) == 0, "tile shapes");

  DATTN_DEV static int offset(int row, int col) {
    return row * D + (((col / kPerChunk) ^ (row & kSwizzle)) * kPerChunk) + (col % kPerChunk);
  }

  /// Loads compact rows [a0, a0 + ROWS) of a row map base + a * step into a
  /// swizzled [ROWS, D] tile with cp.async; rows at or past `limit` are
  /// zero-filled. Everything that does not change between key tiles (this
  /// thread's row and chunk, the global pointer, the row step) is computed
  /// once per CTA by init(): per tile, a chunk costs an add, a compare and
  /// the copy, which keeps the issue slots free for the tensor cores.
  template <int ROWS> struct RowLoader {
    static constexpr bool kRegular =
        kThreads % kChunks == 0 && ROWS % (kThreads / kChunks) == 0;
    static constexpr int kRowsPerPass = kRegular ? kThreads / kChunks : 1;
    // Few fields on purpose: they stay live across the key loop, where the
    // accumulators already use most of the register file.
    const T *first;    ///< regular: this thread's chunk of compact row r0
    long long rowStep; ///< regular: elements between consecutive compact rows
    const T *src;      ///< irregular shapes: the tensor's (batch, head) origin
    long long base, step, rowStride;

    DATTN_DEV void init(const T *src_, long long rowStride_, long long base_, long long step_) {
      if constexpr (kRegular) {
        rowStep = step_ * rowStride_;
        first = src_ + base_ * rowStride_ + (threadIdx.x / kChunks) * rowStep +
                (threadIdx.x % kChunks) * kPerChunk;
      } else {
        src = src_;
        rowStride = rowStride_;
        base = base_;
        step = step_;
      }
    }

    DATTN_DEV void load(T *tile, long long a0, long long limit) const {
      if constexpr (kRegular) {
        const int r0 = threadIdx.x / kChunks, ch = threadIdx.x % kChunks;
        const T *g = first + a0 * rowStep;
        // Rows r0 + it * kRowsPerPass keep r0's swizzle when kRowsPerPass is a
        // multiple of the swizzle group, so one offset serves every pass.
        constexpr bool kSameSwizzle = kRowsPerPass % kGroup == 0;
        const unsigned dst0 = dev::smemAddress(tile) + kBytes * offset(r0, ch * kPerChunk);
        // Rows left in the tensor from this thread's first row (32-bit: N < 2^31).
        const int left = static_cast<int>(plan::minI(limit - a0, ROWS + 1)) - r0;
#pragma unroll
        for (int it = 0; it < ROWS / kRowsPerPass; ++it) {
          const int r = r0 + it * kRowsPerPass;
          const unsigned dst = kSameSwizzle
                                   ? dst0 + kBytes * it * kRowsPerPass * D
                                   : dev::smemAddress(tile) + kBytes * offset(r, ch * kPerChunk);
          // With a zero source size cp.async reads nothing and zero-fills,
          // so rows past the end need no clamped address.
          dev::cpAsync16(dst, g + (long long)it * kRowsPerPass * rowStep,
                         it * kRowsPerPass < left);
        }
      } else {
        for (int c = threadIdx.x; c < ROWS * kChunks; c += kThreads) {
          int r = c / kChunks, chunk = c % kChunks;
          long long a = a0 + r;
          bool valid = a < limit;
          const T *g = valid ? src + (base + a * step) * rowStride + chunk * kPerChunk : src;
          dev::cpAsync16(dev::smemAddress(tile + offset(r, chunk * kPerChunk)), g, valid);
        }
      }
    }
  };
};

/// Whether (i, j) is in the union. Out of line on purpose: it runs on partial
/// tiles only, and inlining it into the unrolled tile loops multiplies code
/// size (and register pressure) by the number of elements per thread.
__device__ __noinline__ bool unionContainsOutOfLine(const plan::Member *members, int count,
                                                    long long i, long long j) {
  return plan::unionContains(members, count, i, j);
}
/// plan::unionLineBits, out of line for the same reason: the masks of
/// blocks branches call it once per row (or key) and thread, where a call
/// per pair cost more than the tile's products (causal_ring's global
/// tokens, every tile partial: ~45 us a wave on an H100).
__device__ __noinline__ unsigned unionLineBitsOutOfLine(const plan::Member *members, int count,
                                                        long long f, long long vb, long long vEnd,
                                                        int nbCount, bool transposed) {
  return plan::unionLineBits(members, count, f, vb, vEnd, nbCount, transposed);
}
/// A blocks branch's mask on one line of this thread's fragments: row f of
/// s[nb][2 half + e] against keys vb + 8 nb + e, or with TRANSPOSED (the
/// dK/dV kernels' tiles) key f against those queries; -inf for pairs
/// outside the union, past count or against the causal order.
template <class Branch, bool TRANSPOSED, int NB>
DATTN_DEV void maskLine(float (&s)[NB][4], int half, const plan::Member *members,
                        long long count, long long f, long long vb) {
  static_assert(NB <= 16, "a line's columns in one 32-bit word");
  const unsigned bits =
      f < count ? unionLineBitsOutOfLine(members, Branch::kNumMembers, f, vb, count, NB, TRANSPOSED)
                : 0u;
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const long long v = vb + nb * 8 + e;
      const bool causalOut = Branch::kCausal && (TRANSPOSED ? f > v : v > f);
      if (causalOut || !((bits >> (2 * nb + e)) & 1u))
        s[nb][2 * half + e] = dev::negInf();
    }
}

/// Whether compact pair (a, b) of a partial tile is attended: both rows
/// exist (count: rows of the segment, or N), causal order holds, and for a
/// blocks branch the union contains it. Full tiles never ask.
template <class Branch>
DATTN_DEV bool partialPairKept(const plan::Member *members, long long count, long long a,
                               long long b) {
  if (a >= count || b >= count || (Branch::kCausal && b > a))
    return false;
  if constexpr (Branch::kKind == kStridedBranch)
    return true;
  else
    return unionContainsOutOfLine(members, Branch::kNumMembers, a, b);
}

/// Segment `seg` of a strided branch for its headIndex-th head: the rows
/// *base + a * *step, a in [0, *count).
template <class Branch>
DATTN_DEV void stridedSegment(long long seg, int headIndex, long long n, long long *base,
                              long long *step, long long *count) {
  const long long o = Branch::offset(headIndex);
  *base = plan::segmentFirstRow(seg, Branch::kSegment, n, Branch::kStride, o);
  *step = Branch::kStride;
  *count = plan::segmentRows(seg, Branch::kSegment, n, Branch::kStride, o);
}

/// The query-row and key-tile structure of one CTA.
struct TileRange {
  long long base, step; ///< row of compact index a = base + a * step
  long long count;      ///< compact indices [0, count) exist
  long long qa0;        ///< first query index of this CTA
  long long t0, t1;     ///< key tiles [t0, t1)
};

/// This CTA's query rows and key-tile range (blockIdx.x: a segment's query
/// tile for strided branches, a query tile of the sequence for blocks
/// branches); loads a blocks branch's members. False if the CTA has no rows.
/// Causal strided branches take a segment's tiles last first: CTAs start in
/// blockIdx order, so the longest walks start first and the short ones fill
/// the last wave, instead of a last wave of the longest.
template <class Branch, int BM, int BN>
DATTN_DEV bool ctaTileRange(const Params &p, int headIndex, int head, plan::Member *members,
                            TileRange *tr) {
  const long long n = p.seqLen;
  if constexpr (Branch::kKind == kStridedBranch) {
    stridedSegment<Branch>(blockIdx.x / p.tilesPerSegment, headIndex, n, &tr->base, &tr->step,
                           &tr->count);
    const long long tile = blockIdx.x % p.tilesPerSegment;
    tr->qa0 = (Branch::kCausal ? p.tilesPerSegment - 1 - tile : tile) * BM;
    tr->t0 = 0;
    long long keyEnd = Branch::kCausal ? plan::minI(tr->count, tr->qa0 + BM) : tr->count;
    tr->t1 = plan::ceilDiv(keyEnd, BN);
  } else {
    for (int m = 0; m < Branch::kNumMembers; ++m)
      members[m] = Branch::member(m, headIndex, head, p);
    tr->base = 0;
    tr->step = 1;
    tr->count = n;
    tr->qa0 = (long long)blockIdx.x * BM;
    plan::unionKeyTiles(members, Branch::kNumMembers, Branch::kCausal, tr->qa0,
                        plan::minI(n, tr->qa0 + BM), n, BN, &tr->t0, &tr->t1);
  }
  return tr->qa0 < tr->count;
}

/// The class of key tile t for this CTA (kSkip tiles are never loaded).
template <class Branch, int BM, int BN>
DATTN_DEV int keyTileClass(const TileRange &tr, const plan::Member *members, long long n,
                           long long t) {
  if constexpr (Branch::kKind == kStridedBranch) {
    return plan::stridedTileClass(tr.qa0, tr.qa0 + BM, t * BN, t * BN + BN, tr.count,
                                  Branch::kCausal);
  } else {
    long long i1 = plan::minI(n, tr.qa0 + BM), j0 = t * BN, j1 = plan::minI(n, j0 + BN);
    int c = plan::unionTileClass(members, Branch::kNumMembers, Branch::kCausal, tr.qa0, i1, j0,
                                 j1);
    // The plan classifies the keys that exist; a tile running past N also
    // holds zero-filled rows, which only the per-element mask removes.
    return c == plan::kFull && j0 + BN > n ? (int)plan::kPartial : c;
  }
}

/// Partial tiles: -inf for the pairs the branch does not attend (raw
/// scores; the scale is applied inside the exponent). Full tiles skip this.
template <class Branch, int BN, int MT>
DATTN_DEV void maskPartialTile(float (&s)[MT][BN / 8][4], const plan::Member *members,
                               long long count, long long row0, long long key0, int lane) {
  if constexpr (Branch::kKind == kStridedBranch) {
    warp::mask<BN, MT>(s, lane, [&](long long a, long long b) {
      return partialPairKept<Branch>(members, count, row0 + a, key0 + b);
    });
  } else { // the union's keys of each of this thread's rows, one call a row
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        maskLine<Branch, false>(s[mt], half, members, count, row0 + mt * 16 + lane / 4 + half * 8,
                                key0 + (lane % 4) * 2);
  }
}

/// The epilogue: O = acc / l and LSE = (m + log2 l) ln 2 for this warp's
/// rows; kWrite stores them, kMerge folds them into the fp32 accumulator and
/// the LSE array (forward_common.cuh), kMergeFirst stores them there. Rows
/// with no key get O = 0 and LSE = -inf.
template <class T, int D, int MT, int MODE>
DATTN_DEV void storeRows(const Params &p, const float (&acc)[MT][D / 8][4],
                         const warp::OnlineSoftmax<MT> &sm, const TileRange &tr, long long row0,
                         long long batch, int head, int lane) {
  const long long n = p.seqLen;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const long long a = row0 + mt * 16 + lane / 4 + half * 8;
      const float l = dev::quadSum(sm.l[mt][half]);
      const bool valid = a < tr.count;
      const long long row = tr.base + a * tr.step;
      const float lseB = l > 0.f ? (sm.m[mt][half] + __log2f(l)) * dev::kLn2 : dev::negInf();
      const float inv = l > 0.f ? 1.f / l : 0.f;
      float *lsePtr = p.lse + (batch * p.heads + head) * n + row;
      if (MODE == kWrite) {
        if (!valid)
          continue;
        T *o = (T *)p.o + p.oL.at(batch, row, head);
#pragma unroll
        for (int nb = 0; nb < D / 8; ++nb) {
          int col = nb * 8 + (lane % 4) * 2;
          if constexpr (sizeof(T) == 4) { // fp32 (TF32 tensor cores)
            o[col] = acc[mt][nb][2 * half] * inv;
            o[col + 1] = acc[mt][nb][2 * half + 1] * inv;
          } else {
            *reinterpret_cast<unsigned *>(o + col) =
                dev::pack2<T>(acc[mt][nb][2 * half] * inv, acc[mt][nb][2 * half + 1] * inv);
          }
        }
        if (lane % 4 == 0)
          *lsePtr = lseB;
      } else {
        // The accumulator's rows start on 16 bytes (D floats, D a multiple
        // of 8): pairs of floats move as one 8-byte access.
        float lseNew = lseB, wAcc = 0.f, wB = 1.f;
        if (MODE == kMerge) {
          const float lseAcc = valid ? *lsePtr : 0.f;
          __syncwarp(); // every quad member has read lseAcc before lane 0 rewrites it
          mergeLse(lseAcc, lseB, &lseNew, &wAcc, &wB);
        }
        if (!valid)
          continue;
        dev::Pair *o =
            reinterpret_cast<dev::Pair *>(p.oAcc + ((batch * n + row) * p.heads + head) * D);
#pragma unroll
        for (int nb = 0; nb < D / 8; ++nb) {
          const int pair = nb * 4 + lane % 4;
          const float x = acc[mt][nb][2 * half] * inv * wB, y = acc[mt][nb][2 * half + 1] * inv * wB;
          if (MODE == kMerge) {
            const dev::Pair old = o[pair];
            o[pair] = dev::Pair{old.x * wAcc + x, old.y * wAcc + y};
          } else {
            o[pair] = dev::Pair{x, y};
          }
        }
        if (lane % 4 == 0)
          *lsePtr = lseNew;
      }
    }
}

/// The kernel: one CTA, BM query rows of one (batch, head, branch).
template <class T, int D, int BM, int BN, int MT, int MODE, class Branch>
__device__ void mmaForward(const Params &p) {
  using Tile = MmaTile<T, D, BM, BN, MT>;
  extern __shared__ __align__(128) unsigned char smemRaw[];
  T *sQ = reinterpret_cast<T *>(smemRaw);
  T *sK = sQ + BM * D; // two stages of BN * D
  T *sV = sK + 2 * BN * D;

  const int warpId = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long batch = blockIdx.z, n = p.seqLen;
  const int kvHead = head / p.groupSize;

  TileRange tr;
  plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  if (!ctaTileRange<Branch, BM, BN>(p, headIndex, head, members, &tr))
    return;
  auto keyWalk = walk::tiles<Branch::kKind == kBlocksBranch>(
      tr.t1, [&](long long t) { return keyTileClass<Branch, BM, BN>(tr, members, n, t); });

  // Strided branches read keys through the query's row map; blocks
  // branches index the sequence directly (compact index = row).
  typename Tile::template RowLoader<BM> qLoader;
  typename Tile::template RowLoader<BN> kLoader, vLoader;
  qLoader.init((const T *)p.q + p.qL.at(batch, 0, head), p.qL.row, tr.base, tr.step);
  kLoader.init((const T *)p.k + p.kL.at(batch, 0, kvHead), p.kL.row, tr.base, tr.step);
  vLoader.init((const T *)p.v + p.vL.at(batch, 0, kvHead), p.vL.row, tr.base, tr.step);

  long long t = keyWalk.next(tr.t0);
  qLoader.load(sQ, tr.qa0, tr.count);
  if (t < tr.t1) {
    kLoader.load(sK, t * BN, tr.count);
    vLoader.load(sV, t * BN, tr.count);
  }
  dev::cpAsyncCommit();

  float acc[MT][D / 8][4];
  warp::zero(acc);
  warp::OnlineSoftmax<MT> softmax;
  softmax.init();
  const float scaleLog2 = p.scale * dev::kLog2e;
  const int row0 = warpId * 16 * MT; // this warp's rows in the CTA's tile

  for (int stage = 0; t < tr.t1; stage ^= 1) {
    dev::cpAsyncWaitAll();
    __syncthreads();
    const int cls = keyWalk.classOfNext(t);
    const long long tNext = keyWalk.next(t + 1);
    if (tNext < tr.t1) { // 1. the next K, V tiles into the other stage
      kLoader.load(sK + (stage ^ 1) * BN * D, tNext * BN, tr.count);
      vLoader.load(sV + (stage ^ 1) * BN * D, tNext * BN, tr.count);
    }
    dev::cpAsyncCommit();
    float s[MT][BN / 8][4]; // 2. S = Q K^T
    warp::scores<T, Tile, D, BN, MT>(s, dev::smemAddress(sQ),
                                     dev::smemAddress(sK + stage * BN * D), row0, lane);
    if (cls == plan::kPartial) // 3. masks on partial tiles only
      maskPartialTile<Branch, BN, MT>(s, members, tr.count, tr.qa0 + row0, t * BN, lane);
    softmax.update(s, acc, scaleLog2); // 4. online softmax
    warp::accumulatePV<T, Tile, D, BN, MT>(acc, s, dev::smemAddress(sV + stage * BN * D),
                                           lane); // 5. O += P V
    t = tNext;
  }
  storeRows<T, D, MT, MODE>(p, acc, softmax, tr, tr.qa0 + row0, batch, head, lane);
}

} // namespace fwd
} // namespace dattn
