// dattn: the tensor-core forward kernel (sm_80+, fp16 and bf16).
//
// One CTA computes BM query rows of one (batch, head) for one branch; each of
// its warps owns MT m16 row tiles (16 * MT rows): every K and V fragment read
// from shared memory then feeds 2 * MT mma instructions, which is what keeps
// the kernel off the shared-memory bandwidth limit. Per key tile
// (FlashAttention-2):
//   1. cp.async brings the next K and V tiles into the other shared-memory
//      stage while this one is computed (double buffering);
//   2. S = Q K^T with mma.m16n8k16 (Q and K fragments via ldmatrix);
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
// reads hit 8 different bank groups.
#pragma once

#include "dattn/forward_common.cuh"

namespace dattn {
namespace fwd {

template <class T, int D, int BM, int BN, int MT> struct MmaTile {
  static constexpr int kWarps = BM / (16 * MT);
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kChunks = D / 8; ///< 16-byte chunks per row
  // XOR within aligned groups of up to 8 chunks: the group size must divide
  // kChunks (D = 96 has 12 chunks: groups of 4), or a chunk would land past
  // the end of its row.
  static constexpr int kGroup = (kChunks & -kChunks) < 8 ? (kChunks & -kChunks) : 8;
  static constexpr int kSwizzle = kGroup - 1;
  static constexpr int kSmemElems = BM * D + 4 * BN * D; ///< Q + 2 stages of K and V
  static constexpr int kSmemBytes = kSmemElems * 2;
  static_assert(D % 16 == 0 && BN % 16 == 0 && BM % (16 * MT) == 0, "tile shapes");

  DATTN_DEV static int offset(int row, int col) {
    return row * D + (((col >> 3) ^ (row & kSwizzle)) << 3) + (col & 7);
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
                (threadIdx.x % kChunks) * 8;
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
        const unsigned dst0 = dev::smemAddress(tile) + 2 * offset(r0, ch * 8);
        // Rows left in the tensor from this thread's first row (32-bit: N < 2^31).
        const int left = static_cast<int>(plan::minI(limit - a0, ROWS + 1)) - r0;
#pragma unroll
        for (int it = 0; it < ROWS / kRowsPerPass; ++it) {
          const int r = r0 + it * kRowsPerPass;
          const unsigned dst = kSameSwizzle ? dst0 + 2 * it * kRowsPerPass * D
                                            : dev::smemAddress(tile) + 2 * offset(r, ch * 8);
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
          const T *g = valid ? src + (base + a * step) * rowStride + chunk * 8 : src;
          dev::cpAsync16(dev::smemAddress(tile + offset(r, chunk * 8)), g, valid);
        }
      }
    }
  };
};

/// Whether (i, j) is in the union. Out of line on purpose: it runs on partial
/// tiles only, and inlining it into the unrolled tile loops multiplies code
/// size (and register pressure) by the number of elements per thread.
__device__ __noinline__ bool unionContains(const plan::Member *members, int count, long long i,
                                           long long j) {
  for (int m = 0; m < count; ++m)
    if (plan::memberContains(members[m], i, j))
      return true;
  return false;
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
    return unionContains(members, Branch::kNumMembers, a, b);
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

template <class T, int D, int BM, int BN, int MT, int MODE, class Branch>
__device__ void mmaForward(const Params &p) {
  using Tile = MmaTile<T, D, BM, BN, MT>;
  extern __shared__ __align__(128) unsigned char smemRaw[];
  T *sQ = reinterpret_cast<T *>(smemRaw);
  T *sK = sQ + BM * D; // two stages of BN * D
  T *sV = sK + 2 * BN * D;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y;
  const int head = Branch::head(headIndex);
  const long long batch = blockIdx.z;
  const long long n = p.seqLen;
  const int kvHead = head / p.groupSize;

  // --- the CTA's rows -------------------------------------------------------
  TileRange tr;
  plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  if constexpr (Branch::kKind == kStridedBranch) {
    stridedSegment<Branch>(blockIdx.x / p.tilesPerSegment, headIndex, n, &tr.base, &tr.step,
                           &tr.count);
    tr.qa0 = (blockIdx.x % p.tilesPerSegment) * BM;
    tr.t0 = 0;
    long long keyEnd = Branch::kCausal ? plan::minI(tr.count, tr.qa0 + BM) : tr.count;
    tr.t1 = plan::ceilDiv(keyEnd, BN);
  } else {
    for (int m = 0; m < Branch::kNumMembers; ++m)
      members[m] = Branch::member(m, headIndex, head, p);
    tr.base = 0;
    tr.step = 1;
    tr.count = n;
    tr.qa0 = (long long)blockIdx.x * BM;
    plan::unionKeyTiles(members, Branch::kNumMembers, Branch::kCausal, tr.qa0,
                        plan::minI(n, tr.qa0 + BM), n, BN, &tr.t0, &tr.t1);
  }
  if (tr.qa0 >= tr.count)
    return;

  // Class of key tile t for this CTA (kSkip tiles are never loaded).
  auto tileClass = [&](long long t) -> int {
    if constexpr (Branch::kKind == kStridedBranch) {
      return plan::stridedTileClass(tr.qa0, tr.qa0 + BM, t * BN, t * BN + BN, tr.count,
                                    Branch::kCausal);
    } else {
      long long i1 = plan::minI(n, tr.qa0 + BM), j0 = t * BN, j1 = plan::minI(n, j0 + BN);
      int c = plan::unionTileClass(members, Branch::kNumMembers, Branch::kCausal, tr.qa0, i1,
                                   j0, j1);
      // The plan classifies the keys that exist; a tile running past N also
      // holds zero-filled rows, which only the per-element mask removes.
      return c == plan::kFull && j0 + BN > n ? (int)plan::kPartial : c;
    }
  };
  auto nextTile = [&](long long t) {
    while (t < tr.t1 && tileClass(t) == plan::kSkip)
      ++t;
    return t;
  };

  const T *qSrc = (const T *)p.q + p.qL.at(batch, 0, head);
  const T *kSrc = (const T *)p.k + p.kL.at(batch, 0, kvHead);
  const T *vSrc = (const T *)p.v + p.vL.at(batch, 0, kvHead);
  // Key rows: strided branches share the query's row map; blocks branches
  // index the sequence directly (compact index = row).
  const long long kBase = tr.base, kStep = tr.step, kCount = tr.count;

  typename Tile::template RowLoader<BM> qLoader;
  typename Tile::template RowLoader<BN> kLoader, vLoader;
  qLoader.init(qSrc, p.qL.row, tr.base, tr.step);
  kLoader.init(kSrc, p.kL.row, kBase, kStep);
  vLoader.init(vSrc, p.vL.row, kBase, kStep);

  long long t = nextTile(tr.t0);
  qLoader.load(sQ, tr.qa0, tr.count);
  if (t < tr.t1) {
    kLoader.load(sK, t * BN, kCount);
    vLoader.load(sV, t * BN, kCount);
  }
  dev::cpAsyncCommit();

  float acc[MT][D / 8][4];
  float rowMax[MT][2], rowSum[MT][2];
  #pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    #pragma unroll
    for (int x = 0; x < D / 8; ++x)
      acc[mt][x][0] = acc[mt][x][1] = acc[mt][x][2] = acc[mt][x][3] = 0.f;
    rowMax[mt][0] = rowMax[mt][1] = -__int_as_float(0x7f800000);
    rowSum[mt][0] = rowSum[mt][1] = 0.f;
  }
  const float scaleLog2 = p.scale * dev::kLog2e;
  const unsigned sQa = dev::smemAddress(sQ);
  // This thread's rows: warpRow0 + mt * 16 + lane / 4 (+ 8).
  const int warpRow0 = warp * 16 * MT;

  int stage = 0;
  while (t < tr.t1) {
    dev::cpAsyncWaitAll();
    __syncthreads();
    const int cls = tileClass(t);
    const long long tNext = nextTile(t + 1);
    if (tNext < tr.t1) {
      kLoader.load(sK + (stage ^ 1) * BN * D, tNext * BN, kCount);
      vLoader.load(sV + (stage ^ 1) * BN * D, tNext * BN, kCount);
    }
    dev::cpAsyncCommit();
    // 32-bit shared-memory byte addresses: ldmatrix addresses are then a
    // base plus a per-lane swizzled offset, no 64-bit pointer math.
    const unsigned tk = dev::smemAddress(sK + stage * BN * D);
    const unsigned tv = dev::smemAddress(sV + stage * BN * D);

    // S = Q K^T for this warp's 16 * MT rows and the tile's BN keys.
    float s[MT][BN / 8][4];
    #pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      #pragma unroll
      for (int x = 0; x < BN / 8; ++x)
        s[mt][x][0] = s[mt][x][1] = s[mt][x][2] = s[mt][x][3] = 0.f;
    #pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      unsigned qa[MT][4];
      #pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        int r = warpRow0 + mt * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
        int c = kk * 16 + (lane / 16) * 8;
        dev::ldmatrixX4(qa[mt], sQa + 2 * Tile::offset(r, c));
      }
      #pragma unroll
      for (int np = 0; np < BN / 16; ++np) {
        unsigned r[4];
        int row = np * 16 + (lane % 8) + (lane / 16) * 8, col = kk * 16 + ((lane / 8) % 2) * 8;
        dev::ldmatrixX4(r, tk + 2 * Tile::offset(row, col));
        unsigned b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        #pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          dev::mma16816<T>(s[mt][2 * np], qa[mt], b0);
          dev::mma16816<T>(s[mt][2 * np + 1], qa[mt], b1);
        }
      }
    }

        // Partial tiles: mask element by element (raw scores; the scale is
    // applied inside the exponent below). Full tiles skip this block.
    if (cls == plan::kPartial) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            long long a = tr.qa0 + warpRow0 + mt * 16 + lane / 4 + (e >> 1) * 8;
            long long bkey = t * BN + nb * 8 + (lane % 4) * 2 + (e & 1);
            if (!partialPairKept<Branch>(members, kCount, a, bkey))
              s[mt][nb][e] = -__int_as_float(0x7f800000);
          }
    }

    // Online softmax over the tile, in the log2 domain: p = 2^(s * scale *
    // log2(e) - m), one FFMA and one ex2 per score. The scale is positive,
    // so the maximum of raw scores is the maximum of scaled ones.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float m0 = s[mt][0][2 * half], m1 = s[mt][0][2 * half + 1];
#pragma unroll
        for (int nb = 1; nb < BN / 8; ++nb) { // two chains: shorter dependencies
          m0 = fmaxf(m0, s[mt][nb][2 * half]);
          m1 = fmaxf(m1, s[mt][nb][2 * half + 1]);
        }
        const float mx = fmaxf(rowMax[mt][half], dev::quadMax(fmaxf(m0, m1)) * scaleLog2);
        // An all-masked row so far has max -inf: subtract 0 instead, so that
        // 2^(-inf - 0) = 0 rather than NaN.
        const float base = mx == -__int_as_float(0x7f800000) ? 0.f : mx;
        const float corr = dev::fastExp2(rowMax[mt][half] - base);
        rowMax[mt][half] = mx;
        float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb) {
          s[mt][nb][2 * half] = dev::fastExp2(fmaf(s[mt][nb][2 * half], scaleLog2, -base));
          s[mt][nb][2 * half + 1] =
              dev::fastExp2(fmaf(s[mt][nb][2 * half + 1], scaleLog2, -base));
          sum0 += s[mt][nb][2 * half];
          sum1 += s[mt][nb][2 * half + 1];
        }
        rowSum[mt][half] = rowSum[mt][half] * corr + (sum0 + sum1);
#pragma unroll
        for (int x = 0; x < D / 8; ++x) {
          acc[mt][x][2 * half] *= corr;
          acc[mt][x][2 * half + 1] *= corr;
        }
      }
    }

    // O += P V.
    #pragma unroll
    for (int j = 0; j < BN / 16; ++j) {
      unsigned a[MT][4];
      #pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        a[mt][0] = dev::pack2<T>(s[mt][2 * j][0], s[mt][2 * j][1]);
        a[mt][1] = dev::pack2<T>(s[mt][2 * j][2], s[mt][2 * j][3]);
        a[mt][2] = dev::pack2<T>(s[mt][2 * j + 1][0], s[mt][2 * j + 1][1]);
        a[mt][3] = dev::pack2<T>(s[mt][2 * j + 1][2], s[mt][2 * j + 1][3]);
      }
      #pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        unsigned r[4];
        int row = j * 16 + (lane % 8) + ((lane / 8) % 2) * 8, col = dp * 16 + (lane / 16) * 8;
        dev::ldmatrixX4Trans(r, tv + 2 * Tile::offset(row, col));
        unsigned b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        #pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          dev::mma16816<T>(acc[mt][2 * dp], a[mt], b0);
          dev::mma16816<T>(acc[mt][2 * dp + 1], a[mt], b1);
        }
      }
    }
    stage ^= 1;
    t = tNext;
  }

  // --- epilogue ---------------------------------------------------------------
  #pragma unroll
  for (int mt = 0; mt < MT; ++mt)
    #pragma unroll
    for (int half = 0; half < 2; ++half) {
      const long long a = tr.qa0 + warpRow0 + mt * 16 + lane / 4 + half * 8;
      const float l = dev::quadSum(rowSum[mt][half]);
      const bool valid = a < tr.count;
      const long long row = tr.base + a * tr.step;
      const float lseB = l > 0.f ? (rowMax[mt][half] + __log2f(l)) * dev::kLn2
                                 : -__int_as_float(0x7f800000);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      float *lsePtr = p.lse + (batch * p.heads + head) * n + row;
      if (MODE == kWrite) {
        if (!valid)
          continue;
        T *o = (T *)p.o + p.oL.at(batch, row, head);
        #pragma unroll
        for (int nb = 0; nb < D / 8; ++nb) {
          int col = nb * 8 + (lane % 4) * 2;
          *reinterpret_cast<unsigned *>(o + col) = dev::pack2<T>(
              acc[mt][nb][2 * half] * inv, acc[mt][nb][2 * half + 1] * inv);
        }
        if (lane % 4 == 0)
          *lsePtr = lseB;
      } else {
        const float lseAcc = valid ? *lsePtr : 0.f;
        __syncwarp(); // every quad member has read lseAcc before lane 0 rewrites it
        if (!valid)
          continue;
        float lseNew, wAcc, wB;
        mergeLse(lseAcc, lseB, &lseNew, &wAcc, &wB);
        float *o = p.oAcc + ((batch * n + row) * p.heads + head) * D;
        #pragma unroll
        for (int nb = 0; nb < D / 8; ++nb) {
          int col = nb * 8 + (lane % 4) * 2;
          o[col] = o[col] * wAcc + acc[mt][nb][2 * half] * inv * wB;
          o[col + 1] = o[col + 1] * wAcc + acc[mt][nb][2 * half + 1] * inv * wB;
        }
        if (lane % 4 == 0)
          *lsePtr = lseNew;
      }
    }
}

} // namespace fwd
} // namespace dattn
