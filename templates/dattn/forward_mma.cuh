// dattn: the tensor-core forward kernel (sm_80+, fp16 and bf16).
//
// One CTA computes BM query rows of one (batch, head) for one branch; each of
// its BM / 16 warps owns 16 rows. Per key tile (FlashAttention-2):
//   1. cp.async brings the next K and V tiles into the other shared-memory
//      stage while this one is computed (double buffering);
//   2. S = Q K^T with mma.m16n8k16 (Q fragments stay in registers; K via
//      ldmatrix);
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

template <class T, int D, int BM, int BN> struct MmaTile {
  static constexpr int kWarps = BM / 16;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kChunks = D / 8; ///< 16-byte chunks per row
  // XOR within aligned groups of up to 8 chunks: the group size must divide
  // kChunks (D = 96 has 12 chunks: groups of 4), or a chunk would land past
  // the end of its row.
  static constexpr int kGroup = (kChunks & -kChunks) < 8 ? (kChunks & -kChunks) : 8;
  static constexpr int kSwizzle = kGroup - 1;
  static constexpr int kSmemElems = BM * D + 4 * BN * D; ///< Q + 2 stages of K and V
  static constexpr int kSmemBytes = kSmemElems * 2;
  static_assert(D % 16 == 0 && BN % 16 == 0 && BM % 16 == 0, "tile shapes");

  DATTN_DEV static int offset(int row, int col) {
    return row * D + (((col >> 3) ^ (row & kSwizzle)) << 3) + (col & 7);
  }

  /// Rows base + a * step for a in [a0, a0 + ROWS), valid while a < limit,
  /// into a swizzled [ROWS, D] tile. Invalid rows are zero-filled.
  template <int ROWS>
  DATTN_DEV static void load(T *tile, const T *src, long long rowStride, long long base,
                             long long step, long long a0, long long limit) {
    for (int c = threadIdx.x; c < ROWS * kChunks; c += kThreads) {
      int r = c / kChunks, ch = c % kChunks;
      long long a = a0 + r;
      bool valid = a < limit;
      const T *g = valid ? src + (base + a * step) * rowStride + ch * 8 : src;
      dev::cpAsync16(dev::smemAddress(tile + offset(r, ch * 8)), g, valid);
    }
  }
};

/// The query-row and key-tile structure of one CTA.
struct TileRange {
  long long base, step; ///< row of compact index a = base + a * step
  long long count;      ///< compact indices [0, count) exist
  long long qa0;        ///< first query index of this CTA
  long long t0, t1;     ///< key tiles [t0, t1)
};

template <class T, int D, int BM, int BN, int MODE, class Branch>
__device__ void mmaForward(const Params &p) {
  using Tile = MmaTile<T, D, BM, BN>;
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
    const long long seg = blockIdx.x / p.tilesPerSegment;
    const long long o = Branch::offset(headIndex);
    tr.base = plan::segmentFirstRow(seg, Branch::kSegment, n, Branch::kStride, o);
    tr.step = Branch::kStride;
    tr.count = plan::segmentRows(seg, Branch::kSegment, n, Branch::kStride, o);
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
      return plan::unionTileClass(members, Branch::kNumMembers, Branch::kCausal, tr.qa0, i1,
                                  j0, j1);
    }
  };
  auto nextTile = [&](long long t) {
    while (t < tr.t1 && tileClass(t) == plan::kSkip)
      ++t;
    return t;
  };

  const T *qSrc = (const T *)p.q + batch * p.qBatch + head * p.qHead;
  const T *kSrc = (const T *)p.k + batch * p.kBatch + kvHead * p.kHead;
  const T *vSrc = (const T *)p.v + batch * p.vBatch + kvHead * p.vHead;
  // Key rows: strided branches share the query's row map; blocks branches
  // index the sequence directly (compact index = row).
  const long long kBase = tr.base, kStep = tr.step, kCount = tr.count;

  long long t = nextTile(tr.t0);
  Tile::template load<BM>(sQ, qSrc, p.qRow, tr.base, tr.step, tr.qa0, tr.count);
  if (t < tr.t1) {
    Tile::template load<BN>(sK, kSrc, p.kRow, kBase, kStep, t * BN, kCount);
    Tile::template load<BN>(sV, vSrc, p.vRow, kBase, kStep, t * BN, kCount);
  }
  dev::cpAsyncCommit();

  unsigned qf[D / 16][4];
  float acc[D / 8][4];
  for (int x = 0; x < D / 8; ++x)
    acc[x][0] = acc[x][1] = acc[x][2] = acc[x][3] = 0.f;
  float rowMax[2] = {-__int_as_float(0x7f800000), -__int_as_float(0x7f800000)};
  float rowSum[2] = {0.f, 0.f};
  const float scaleLog2 = p.scale * dev::kLog2e;
  const int rowLo = warp * 16 + lane / 4; // this thread's rows: rowLo, rowLo + 8

  int stage = 0;
  bool qLoaded = false;
  while (t < tr.t1) {
    dev::cpAsyncWaitAll();
    __syncthreads();
    if (!qLoaded) {
      for (int kk = 0; kk < D / 16; ++kk) {
        int r = warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8, c = kk * 16 + (lane / 16) * 8;
        dev::ldmatrixX4(qf[kk], dev::smemAddress(sQ + Tile::offset(r, c)));
      }
      qLoaded = true;
    }
    const int cls = tileClass(t);
    const long long tNext = nextTile(t + 1);
    if (tNext < tr.t1) {
      Tile::template load<BN>(sK + (stage ^ 1) * BN * D, kSrc, p.kRow, kBase, kStep, tNext * BN,
                              kCount);
      Tile::template load<BN>(sV + (stage ^ 1) * BN * D, vSrc, p.vRow, kBase, kStep, tNext * BN,
                              kCount);
    }
    dev::cpAsyncCommit();
    const T *tk = sK + stage * BN * D;
    const T *tv = sV + stage * BN * D;

    // S = Q K^T for this warp's 16 rows and the tile's BN keys.
    float s[BN / 8][4];
    for (int x = 0; x < BN / 8; ++x)
      s[x][0] = s[x][1] = s[x][2] = s[x][3] = 0.f;
    for (int kk = 0; kk < D / 16; ++kk)
      for (int np = 0; np < BN / 16; ++np) {
        unsigned r[4];
        int row = np * 16 + (lane % 8) + (lane / 16) * 8, col = kk * 16 + ((lane / 8) % 2) * 8;
        dev::ldmatrixX4(r, dev::smemAddress(tk + Tile::offset(row, col)));
        unsigned b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        dev::mma16816<T>(s[2 * np], qf[kk], b0);
        dev::mma16816<T>(s[2 * np + 1], qf[kk], b1);
      }

    // Scale into the log2 domain; mask partial tiles element by element.
    for (int nb = 0; nb < BN / 8; ++nb)
      for (int e = 0; e < 4; ++e) {
        float v = s[nb][e] * scaleLog2;
        if (cls == plan::kPartial) {
          long long a = tr.qa0 + rowLo + (e >> 1) * 8;
          long long bkey = t * BN + nb * 8 + (lane % 4) * 2 + (e & 1);
          bool keep;
          if constexpr (Branch::kKind == kStridedBranch) {
            keep = bkey < kCount && (!Branch::kCausal || bkey <= a);
          } else {
            keep = a < n && bkey < n && (!Branch::kCausal || bkey <= a);
            bool any = false;
            for (int m = 0; m < Branch::kNumMembers && keep && !any; ++m)
              any = plan::memberContains(members[m], a, bkey);
            keep = keep && any;
          }
          if (!keep)
            v = -__int_as_float(0x7f800000);
        }
        s[nb][e] = v;
      }

    // Online softmax over the tile.
    for (int half = 0; half < 2; ++half) {
      float mx = rowMax[half];
      for (int nb = 0; nb < BN / 8; ++nb)
        mx = fmaxf(mx, fmaxf(s[nb][2 * half], s[nb][2 * half + 1]));
      mx = dev::quadMax(mx);
      // An all-masked row so far has max -inf: subtract 0 instead, so that
      // exp2(-inf - 0) = 0 rather than NaN.
      const float base = mx == -__int_as_float(0x7f800000) ? 0.f : mx;
      const float corr = dev::fastExp2(rowMax[half] - base);
      rowMax[half] = mx;
      float sum = 0.f;
      for (int nb = 0; nb < BN / 8; ++nb) {
        s[nb][2 * half] = dev::fastExp2(s[nb][2 * half] - base);
        s[nb][2 * half + 1] = dev::fastExp2(s[nb][2 * half + 1] - base);
        sum += s[nb][2 * half] + s[nb][2 * half + 1];
      }
      rowSum[half] = rowSum[half] * corr + sum;
      for (int x = 0; x < D / 8; ++x) {
        acc[x][2 * half] *= corr;
        acc[x][2 * half + 1] *= corr;
      }
    }

    // O += P V.
    for (int j = 0; j < BN / 16; ++j) {
      unsigned a[4] = {dev::pack2<T>(s[2 * j][0], s[2 * j][1]),
                       dev::pack2<T>(s[2 * j][2], s[2 * j][3]),
                       dev::pack2<T>(s[2 * j + 1][0], s[2 * j + 1][1]),
                       dev::pack2<T>(s[2 * j + 1][2], s[2 * j + 1][3])};
      for (int dp = 0; dp < D / 16; ++dp) {
        unsigned r[4];
        int row = j * 16 + (lane % 8) + ((lane / 8) % 2) * 8, col = dp * 16 + (lane / 16) * 8;
        dev::ldmatrixX4Trans(r, dev::smemAddress(tv + Tile::offset(row, col)));
        unsigned b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        dev::mma16816<T>(acc[2 * dp], a, b0);
        dev::mma16816<T>(acc[2 * dp + 1], a, b1);
      }
    }
    stage ^= 1;
    t = tNext;
  }

  // --- epilogue ---------------------------------------------------------------
  for (int half = 0; half < 2; ++half) {
    const long long a = tr.qa0 + rowLo + half * 8;
    const float l = dev::quadSum(rowSum[half]);
    const bool valid = a < tr.count;
    const long long row = tr.base + a * tr.step;
    const float lseB = l > 0.f ? (rowMax[half] + __log2f(l)) * dev::kLn2
                               : -__int_as_float(0x7f800000);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    float *lsePtr = p.lse + (batch * p.heads + head) * n + row;
    if (MODE == kWrite) {
      if (!valid)
        continue;
      T *o = (T *)p.o + batch * p.oBatch + row * p.oRow + head * p.oHead;
      for (int nb = 0; nb < D / 8; ++nb) {
        int col = nb * 8 + (lane % 4) * 2;
        *reinterpret_cast<unsigned *>(o + col) =
            dev::pack2<T>(acc[nb][2 * half] * inv, acc[nb][2 * half + 1] * inv);
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
      for (int nb = 0; nb < D / 8; ++nb) {
        int col = nb * 8 + (lane % 4) * 2;
        o[col] = o[col] * wAcc + acc[nb][2 * half] * inv * wB;
        o[col + 1] = o[col + 1] * wAcc + acc[nb][2 * half + 1] * inv * wB;
      }
      if (lane % 4 == 0)
        *lsePtr = lseNew;
    }
  }
}

} // namespace fwd
} // namespace dattn
