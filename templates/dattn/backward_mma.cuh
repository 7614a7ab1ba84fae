// dattn: the tensor-core backward kernels (sm_80+, fp16 and bf16, and fp32
// on TF32 tensor cores for `precision = tf32`; head_dim <= 128),
// FlashAttention-2 style.
//
// Same math as backward_simt.cuh (p = exp(s - L) from the saved LSE,
// dS = p (dP - Delta)), on tiles, with nothing of size N x N stored:
//
//   mmaBackwardKV: one CTA per (key tile of 16 * W rows, query head). Warp w
//     owns 16 key rows and keeps their dK and dV in registers while the CTA
//     walks the query tiles that reach the key tile (plan::unionQueryTiles,
//     or the segment's compact tiles for a strided branch). Per query tile:
//       S^T = K Q^T and dP^T = V dO^T    (mma, K/V/Q/dO via ldmatrix)
//       P^T = exp2(S^T c - L), dS^T = P^T (dP^T - Delta)
//       dV += P^T dO,  dK += dS^T Q       (P^T, dS^T re-packed in registers)
//     With ATOMIC_DQ it also stores dS^T in shared memory and adds
//     dQ = dS K for the query tile into the fp32 dQ accumulator with vector
//     reductions (fast, run-to-run order of the adds varies).
//   mmaBackwardQ: the deterministic dQ: one CTA per query tile, over its key
//     tiles like the forward kernel (S = Q K^T, dP = dO V^T, dQ += dS K);
//     each dQ row has one writer, so results are bit-identical run to run.
//
// The scale is applied once, in the epilogues (dK and dQ are scale * sum).
// Rows of a strided branch are loaded straight from the sequence, as in the
// forward kernel (fwd::MmaTile::RowLoader), with the same swizzled layout.
#pragma once

#include "dattn/backward_common.cuh"
#include "dattn/forward_mma.cuh"

namespace dattn {
namespace bwd {

/// Offset of element (row, col) of a row-major [rows][COLS] tile of
/// EB-byte elements whose 16-byte chunks are XOR-swizzled like
/// fwd::MmaTile's.
template <int COLS, int EB = 2> DATTN_DEV int swizzled(int row, int col) {
  constexpr int kPer = 16 / EB, kChunks = COLS / kPer;
  constexpr int kGroup = (kChunks & -kChunks) < 8 ? (kChunks & -kChunks) : 8;
  return row * COLS + (((col / kPer) ^ (row & (kGroup - 1))) * kPer) + (col % kPer);
}

using dev::Pair;

/// The compact rows of one CTA's branch geometry: row(a) = base + a * step,
/// a in [0, count). Strided branches: a segment's residue class; blocks
/// branches: the whole sequence.
struct RowMap {
  long long base, step, count;
};

/// L * log2(e) for the exponent, with an empty row's -inf turned into +inf:
/// such a row has no pair in any tile, its masked scores are -inf, and
/// 2^(-inf - inf) = 0 where 2^(-inf + inf) would be NaN.
DATTN_DEV float lseLog2(float L) {
  return L == dev::negInf() ? dev::posInf() : L * dev::kLog2e;
}

/// The largest multiple of 16 dividing D, at most 64: the dQ columns one
/// warp computes at a time in mmaBackwardKV.
template <int D> struct DqPassCols {
  static constexpr int value =
      D <= 64 ? D : D % 64 == 0 ? 64 : D % 48 == 0 ? 48 : D % 32 == 0 ? 32 : 16;
};

/// s = A B^T and t = A2 B2^T for this warp's m16 row tile (rows row0.. of
/// the [.., D] tiles at a and a2) against the COLS rows of the tiles at b
/// and b2, in one pass over D: both products share each step's loads.
template <class T, class Tile, int D, int COLS>
DATTN_DEV void scorePair(float (&s)[COLS / 8][4], float (&t)[COLS / 8][4], unsigned a,
                         unsigned a2, unsigned b, unsigned b2, int row0, int lane) {
  using P = warp::RowProduct<T>;
#pragma unroll
  for (int x = 0; x < COLS / 8; ++x)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      s[x][e] = t[x][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / P::kK; ++kk) {
    unsigned fa[4], fa2[4];
    warp::loadRowsA<T, Tile>(fa, a, row0, kk, lane);
    warp::loadRowsA<T, Tile>(fa2, a2, row0, kk, lane);
#pragma unroll
    for (int np = 0; np < COLS / 16; ++np) {
      unsigned b0[2], b1[2];
      warp::loadRowsB<T, Tile>(b0, b1, b, np, kk, lane);
      P::mma(s[2 * np], fa, b0);
      P::mma(s[2 * np + 1], fa, b1);
      warp::loadRowsB<T, Tile>(b0, b1, b2, np, kk, lane);
      P::mma(t[2 * np], fa2, b0);
      P::mma(t[2 * np + 1], fa2, b1);
    }
  }
}

/// The TF32 A fragment of an m16k8 block j of fp32 accumulator fragments,
/// with the k order that leaves them in place (k index t = column 2t, t + 4
/// = column 2t + 1; the B operand takes its rows in the same order).
template <int N> DATTN_DEV void packATf32(unsigned (&a)[4], const float (&f)[N][4], int j) {
  a[0] = dev::toTf32(f[j][0]);
  a[1] = dev::toTf32(f[j][2]);
  a[2] = dev::toTf32(f[j][1]);
  a[3] = dev::toTf32(f[j][3]);
}

/// The four T values of an m16k16 A fragment from fp32 fragments j (k 0-7
/// and 8-15 of the row tile).
template <class T, int N> DATTN_DEV void packA(unsigned (&a)[4], const float (&f)[N][4], int j) {
  a[0] = dev::pack2<T>(f[2 * j][0], f[2 * j][1]);
  a[1] = dev::pack2<T>(f[2 * j][2], f[2 * j][3]);
  a[2] = dev::pack2<T>(f[2 * j + 1][0], f[2 * j + 1][1]);
  a[3] = dev::pack2<T>(f[2 * j + 1][2], f[2 * j + 1][3]);
}

/// The compact rows this CTA works in: a segment's residue class for a
/// strided branch (blockIdx.x / tilesPerSegment is the segment), else the
/// whole sequence, whose blocks-branch members it loads.
template <class Branch>
DATTN_DEV void ctaRowMap(const Params &p, long long cta, int headIndex, int head,
                         plan::Member *members, RowMap *rm) {
  if constexpr (Branch::kKind == fwd::kStridedBranch) {
    fwd::stridedSegment<Branch>(cta / p.tilesPerSegment, headIndex, p.seqLen, &rm->base,
                                &rm->step, &rm->count);
  } else {
    branchMembers<Branch>(p, headIndex, head, members);
    rm->base = 0;
    rm->step = 1;
    rm->count = p.seqLen;
  }
}

/// CTA `cta`'s first row in its row map: tiles of `rows` compact rows.
template <class Branch, int ROWS> DATTN_DEV long long ctaFirstRow(const Params &p, long long cta) {
  return Branch::kKind == fwd::kStridedBranch ? (cta % p.tilesPerSegment) * ROWS : cta * ROWS;
}

/// dK/dV: key CTA `cta`'s key rows from *kb0 (16 W of them) and the query
/// tiles [*qt0, *qt1) that reach them. False if the CTA has no key rows.
template <class Branch, int BM, int BN>
DATTN_DEV bool keyCtaRange(const Params &p, long long cta, int headIndex, int head,
                           plan::Member *members, RowMap *rm, long long *kb0, long long *qt0,
                           long long *qt1) {
  ctaRowMap<Branch>(p, cta, headIndex, head, members, rm);
  *kb0 = ctaFirstRow<Branch, BN>(p, cta);
  if constexpr (Branch::kKind == fwd::kStridedBranch) {
    *qt0 = Branch::kCausal ? *kb0 / BM : 0;
    *qt1 = plan::ceilDiv(rm->count, BM);
  } else {
    plan::unionQueryTiles(members, Branch::kNumMembers, Branch::kCausal, *kb0,
                          plan::minI(p.seqLen, *kb0 + BN), p.seqLen, BM, qt0, qt1);
  }
  return *kb0 < rm->count;
}

/// Deterministic dQ: this CTA's query rows from *qa0 (BM of them) and the
/// key tiles [*t0, *t1) they reach, as in the forward. False if none.
template <class Branch, int BM, int BN>
DATTN_DEV bool queryCtaRange(const Params &p, int headIndex, int head, plan::Member *members,
                             RowMap *rm, long long *qa0, long long *t0, long long *t1) {
  ctaRowMap<Branch>(p, blockIdx.x, headIndex, head, members, rm);
  *qa0 = ctaFirstRow<Branch, BM>(p, blockIdx.x);
  if constexpr (Branch::kKind == fwd::kStridedBranch) {
    *t0 = 0;
    *t1 = plan::ceilDiv(Branch::kCausal ? plan::minI(rm->count, *qa0 + BM) : rm->count, BN);
  } else {
    plan::unionKeyTiles(members, Branch::kNumMembers, Branch::kCausal, *qa0,
                        plan::minI(p.seqLen, *qa0 + BM), p.seqLen, BN, t0, t1);
  }
  return *qa0 < rm->count;
}

/// The class of the tile (query rows qa0.., key rows kb0..) of a branch.
/// Tiles running past N hold zero-filled rows that only the mask removes.
template <class Branch, int BM, int BN>
DATTN_DEV int pairTileClass(const plan::Member *members, const RowMap &rm, long long n,
                            long long qa0, long long kb0) {
  if constexpr (Branch::kKind == fwd::kStridedBranch) {
    return plan::stridedTileClass(qa0, qa0 + BM, kb0, kb0 + BN, rm.count, Branch::kCausal);
  } else {
    int c = plan::unionTileClass(members, Branch::kNumMembers, Branch::kCausal, qa0,
                                 plan::minI(n, qa0 + BM), kb0, plan::minI(n, kb0 + BN));
    return c == plan::kFull && (qa0 + BM > n || kb0 + BN > n) ? (int)plan::kPartial : c;
  }
}

/// A dK/dV kernel's CTA: its (batch, head) from blockIdx.z and y, the
/// branch's row map, the key tile from kb0 that blockIdx.x gives through
/// plan::splitKeyCta, and its share [qt0, qt1) of that key tile's walk
/// over query tiles. chunked: other CTAs walk the rest of the tile's
/// column and add to the same dK/dV rows. The branch's members stay a
/// separate array (Members): indexed at run time, it lives in local
/// memory, and inside this struct it would take the scalars there too.
template <class Branch, int BM, int BN> struct KeyCta {
  using Members = plan::Member[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  int head, kvHead;
  long long batch;
  RowMap rm;
  long long kb0, qt0, qt1;
  bool chunked;

  /// Fills the above and `members`; false if the CTA has no work.
  /// MAY_SPLIT: the module accumulates in any order (the deterministic and
  /// direct-write ones hold no reductions at all, and never split).
  template <bool MAY_SPLIT> DATTN_DEV bool find(const Params &p, Members &members) {
    const int headIndex = blockIdx.y;
    head = Branch::head(headIndex);
    kvHead = head / p.groupSize;
    batch = blockIdx.z;
    const long long chunks = MAY_SPLIT && p.queryChunks > 1 ? p.queryChunks : 1;
    long long keyCta, chunk;
    plan::splitKeyCta(blockIdx.x, chunks > 1 ? p.keyCtas : gridDim.x, p.chunkedKeyCtas, chunks,
                      &keyCta, &chunk);
    chunked = chunks > 1 && keyCta < p.chunkedKeyCtas;
    if (!keyCtaRange<Branch, BM, BN>(p, keyCta, headIndex, head, members, &rm, &kb0, &qt0, &qt1))
      return false;
    return !chunked || plan::chunkOfWalk(chunk, chunks, p.chunkTiles, &qt0, &qt1);
  }
  /// The walk over the query tiles, before qt1, with a pair of the branch
  /// in the key tile: next(qt) is the first from qt (qt1 if none). Every
  /// warp that walks calls it (warp-uniform).
  DATTN_DEV auto queryWalk(long long n, const Members &members) const {
    return walk::tiles<Branch::kKind == fwd::kBlocksBranch>(qt1, [this, n, &members](long long qt) {
      return pairTileClass<Branch, BM, BN>(members, rm, n, qt * BM, kb0);
    });
  }
};

/// L and Delta of compact query rows [qa0, qa0 + BM) into sL and sDelta
/// (cp.async; rows past the map's end read as 0), by the CTA's THREADS
/// threads.
template <int BM, int THREADS>
DATTN_DEV void loadRowStats(float *sL, float *sDelta, const float *lseSrc, const float *deltaSrc,
                            const RowMap &rm, long long qa0) {
  for (int x = threadIdx.x; x < 2 * BM; x += THREADS) {
    const int r = x % BM;
    const long long a = qa0 + r;
    const bool valid = a < rm.count;
    const long long row = valid ? rm.base + a * rm.step : 0;
    const float *src = x < BM ? lseSrc + row : deltaSrc + row;
    float *dst = (x < BM ? sL : sDelta) + r;
    dev::cpAsync4(dev::smemAddress(dst), src, valid);
  }
}

/// A partial tile's pairs outside the branch get score -inf (p = 0) in
/// transposed fragments s (rows: this warp's 16 keys from compact key row
/// key0; columns: the BM queries from compact row qa0).
template <class Branch, int BM>
DATTN_DEV void maskTransposed(float (&s)[BM / 8][4], const plan::Member *members,
                              const RowMap &rm, long long qa0, long long key0, int lane) {
  if constexpr (Branch::kKind == fwd::kStridedBranch) {
#pragma unroll
    for (int nb = 0; nb < BM / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const long long bkey = key0 + lane / 4 + (e >> 1) * 8;
        const long long a = qa0 + nb * 8 + (lane % 4) * 2 + (e & 1);
        if (!fwd::partialPairKept<Branch>(members, rm.count, a, bkey))
          s[nb][e] = dev::negInf();
      }
  } else { // the union's queries of each of this thread's keys, one call a key
#pragma unroll
    for (int half = 0; half < 2; ++half)
      fwd::maskLine<Branch, true>(s, half, members, rm.count, key0 + lane / 4 + half * 8,
                                  qa0 + (lane % 4) * 2);
  }
}

/// dK/dV kernels, per query tile: P^T = 2^(S^T c - L) in place of S^T;
/// column c is query c of the tile, whose L (log2 domain) is in shared
/// memory.
template <int BM>
DATTN_DEV void probabilitiesTransposed(float (&s)[BM / 8][4], const float *tileL,
                                       float scaleLog2, int lane) {
#pragma unroll
  for (int nb = 0; nb < BM / 8; ++nb) {
    const int c = nb * 8 + (lane % 4) * 2;
    const float l0 = lseLog2(tileL[c]), l1 = lseLog2(tileL[c + 1]);
#pragma unroll
    for (int e = 0; e < 4; ++e)
      s[nb][e] = dev::fastExp2(fmaf(s[nb][e], scaleLog2, -((e & 1) ? l1 : l0)));
  }
}

/// Then dS^T = P^T (dP^T - Delta) in place of dP^T (Delta of query c in
/// shared memory).
template <int BM>
DATTN_DEV void scoreGradientsTransposed(const float (&pt)[BM / 8][4], float (&dp)[BM / 8][4],
                                        const float *tileDelta, int lane) {
#pragma unroll
  for (int nb = 0; nb < BM / 8; ++nb) {
    const int c = nb * 8 + (lane % 4) * 2;
    const float d0 = tileDelta[c], d1 = tileDelta[c + 1];
#pragma unroll
    for (int e = 0; e < 4; ++e)
      dp[nb][e] = pt[nb][e] * (dp[nb][e] - ((e & 1) ? d1 : d0));
  }
}

/// accumulateDvDk() on TF32 tensor cores: per 8-query block, P^T and dS^T
/// in place (packATf32) and the dO and Q rows of queries 2t and 2t + 1 as
/// 32-bit shared-memory reads.
template <class Tile, int D, int BM>
DATTN_DEV void accumulateDvDkTf32(float (&dv)[D / 8][4], float (&dk)[D / 8][4],
                                  const float (&pt)[BM / 8][4], const float (&dst)[BM / 8][4],
                                  unsigned sG, unsigned sQ, int lane) {
#pragma unroll
  for (int j = 0; j < BM / 8; ++j) {
    unsigned pa[4], da[4];
    packATf32(pa, pt, j);
    packATf32(da, dst, j);
    const int query = j * 8 + (lane % 4) * 2;
#pragma unroll
    for (int dd = 0; dd < D / 8; ++dd) {
      const int dim = dd * 8 + lane / 4;
      const int o0 = 4 * Tile::offset(query, dim), o1 = 4 * Tile::offset(query + 1, dim);
      const unsigned g[2] = {dev::toTf32(dev::ldsF32(sG + o0)),
                             dev::toTf32(dev::ldsF32(sG + o1))};
      dev::mma1688Tf32(dv[dd], pa, g);
      const unsigned q[2] = {dev::toTf32(dev::ldsF32(sQ + o0)),
                             dev::toTf32(dev::ldsF32(sQ + o1))};
      dev::mma1688Tf32(dk[dd], da, q);
    }
  }
}

/// dV += P^T dO and dK += dS^T Q for this warp's 16 key rows (dO and Q via
/// ldmatrix.trans from the query tile's stage at sG and sQ).
template <class T, class Tile, int D, int BM>
DATTN_DEV void accumulateDvDk(float (&dv)[D / 8][4], float (&dk)[D / 8][4],
                              const float (&pt)[BM / 8][4], const float (&dst)[BM / 8][4],
                              unsigned sG, unsigned sQ, int lane) {
  if constexpr (sizeof(T) == 4) {
    accumulateDvDkTf32<Tile, D, BM>(dv, dk, pt, dst, sG, sQ, lane);
  } else {
#pragma unroll
    for (int j = 0; j < BM / 16; ++j) {
      unsigned pa[4], da[4];
      packA<T>(pa, pt, j);
      packA<T>(da, dst, j);
#pragma unroll
      for (int dd = 0; dd < D / 16; ++dd) {
        const int r = j * 16 + (lane % 8) + ((lane / 8) % 2) * 8, c = dd * 16 + (lane / 16) * 8;
        unsigned b[4];
        dev::ldmatrixX4Trans(b, sG + 2 * Tile::offset(r, c));
        unsigned g0[2] = {b[0], b[1]}, g1[2] = {b[2], b[3]};
        dev::mma16816<T>(dv[2 * dd], pa, g0);
        dev::mma16816<T>(dv[2 * dd + 1], pa, g1);
        dev::ldmatrixX4Trans(b, sQ + 2 * Tile::offset(r, c));
        unsigned q0[2] = {b[0], b[1]}, q1[2] = {b[2], b[3]};
        dev::mma16816<T>(dk[2 * dd], da, q0);
        dev::mma16816<T>(dk[2 * dd + 1], da, q1);
      }
    }
  }
}

/// The dQ reductions of one (16 query rows, columns) item: acc rows
/// qa0 + qg * 16 + lane / 4 (+ 8), columns col0 + 2 (lane % 4) (+ 1) of
/// each 8-column block, scaled.
template <int COLS>
DATTN_DEV void reduceDqItem(const float (&acc)[COLS / 8][4], const RowMap &rm, long long qa0,
                            int qg, int col0, float *dq0, long long dqRow, float scale,
                            int lane) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const long long a = qa0 + qg * 16 + lane / 4 + half * 8;
    if (a >= rm.count)
      continue;
    float *dst = dq0 + (rm.base + a * rm.step) * dqRow + col0;
#pragma unroll
    for (int nb = 0; nb < COLS / 8; ++nb)
      dev::reduceAdd2(dst + nb * 8 + (lane % 4) * 2, acc[nb][2 * half] * scale,
                      acc[nb][2 * half + 1] * scale);
  }
}

/// dS^T (this warp's 16 key rows of the fp32 fragments dst) into the
/// [BN][BM] shared tile sDS: T pairs, or fp32 for TF32.
template <class T, int BM>
DATTN_DEV void storeDsTransposed(const float (&dst)[BM / 8][4], T *sDS, int keyRow0, int lane) {
#pragma unroll
  for (int nb = 0; nb < BM / 8; ++nb)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = keyRow0 + lane / 4 + half * 8, c = nb * 8 + (lane % 4) * 2;
      if constexpr (sizeof(T) == 4)
        *reinterpret_cast<Pair *>(sDS + swizzled<BM, 4>(r, c)) =
            Pair{dst[nb][2 * half], dst[nb][2 * half + 1]};
      else
        *reinterpret_cast<unsigned *>(sDS + swizzled<BM>(r, c)) =
            dev::pack2<T>(dst[nb][2 * half], dst[nb][2 * half + 1]);
    }
}

/// acc (16 query rows qg*16.., COLS columns col0..) = dS K from the dS^T
/// tile at sDSa and the K tile at sK. 16-bit: ldmatrix.trans fragments.
/// TF32: dS and K as 32-bit reads (no ldmatrix transposes 32-bit data),
/// the key loop unrolled by 2, not fully: a full unroll hoists every read's
/// address and spilled 1.6 KB (ptxas, sm_90, head_dim 128); by 2, 28 bytes.
template <class T, class Tile, int BM, int BN, int COLS>
DATTN_DEV void dsTimesK(float (&acc)[COLS / 8][4], unsigned sDSa, unsigned sK, int qg, int col0,
                        int lane) {
  if constexpr (sizeof(T) == 4) {
    const int g = lane / 4, t = lane % 4;
#pragma unroll 2
    for (int j = 0; j < BN / 8; ++j) {
      // A = dS rows qg*16 + (g, g + 8), keys j*8 + (t, t + 4): dS^T read across.
      const int q = qg * 16 + g, key = j * 8 + t;
      const unsigned a[4] = {dev::toTf32(dev::ldsF32(sDSa + 4 * swizzled<BM, 4>(key, q))),
                             dev::toTf32(dev::ldsF32(sDSa + 4 * swizzled<BM, 4>(key, q + 8))),
                             dev::toTf32(dev::ldsF32(sDSa + 4 * swizzled<BM, 4>(key + 4, q))),
                             dev::toTf32(dev::ldsF32(sDSa + 4 * swizzled<BM, 4>(key + 4, q + 8)))};
#pragma unroll
      for (int dd = 0; dd < COLS / 8; ++dd) {
        const int dim = col0 + dd * 8 + g;
        const unsigned b[2] = {dev::toTf32(dev::ldsF32(sK + 4 * Tile::offset(key, dim))),
                               dev::toTf32(dev::ldsF32(sK + 4 * Tile::offset(key + 4, dim)))};
        dev::mma1688Tf32(acc[dd], a, b);
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < BN / 16; ++j) {
      unsigned a[4]; // dS rows qg*16.., keys j*16..: transposed read of dS^T
      dev::ldmatrixX4Trans(a, sDSa + 2 * swizzled<BM>(j * 16 + (lane % 8) + (lane / 16) * 8,
                                                      qg * 16 + ((lane / 8) % 2) * 8));
#pragma unroll
      for (int dd = 0; dd < COLS / 16; ++dd) {
        const int r = j * 16 + (lane % 8) + ((lane / 8) % 2) * 8,
                  c = col0 + dd * 16 + (lane / 16) * 8;
        unsigned b[4];
        dev::ldmatrixX4Trans(b, sK + 2 * Tile::offset(r, c));
        unsigned k0[2] = {b[0], b[1]}, k1[2] = {b[2], b[3]};
        dev::mma16816<T>(acc[2 * dd], a, k0);
        dev::mma16816<T>(acc[2 * dd + 1], a, k1);
      }
    }
  }
}

/// ATOMIC_DQ: dS^T goes to shared memory, then dQ (BM x D) = dS (BM x BN)
/// K (BN x D), split into (16 query rows, DqPassCols columns) items over the
/// W warps, is added with vector reductions to the fp32 dQ accumulator,
/// whose (batch, head) rows start at dq0, dqRow floats apart; scaled.
template <class T, class Tile, int D, int BM, int BN, int W>
DATTN_DEV void addDqFromDs(const float (&dst)[BM / 8][4], T *sDS, unsigned sK, const RowMap &rm,
                           long long qa0, int keyRow0, int warpId, float *dq0, long long dqRow,
                           float scale, int lane) {
  storeDsTransposed<T, BM>(dst, sDS, keyRow0, lane);
  __syncthreads();
  constexpr int kCols = DqPassCols<D>::value;
  constexpr int kItems = (BM / 16) * (D / kCols);
  const unsigned sDSa = dev::smemAddress(sDS);
  for (int item = warpId; item < kItems; item += W) {
    const int qg = item % (BM / 16), col0 = (item / (BM / 16)) * kCols;
    float acc[kCols / 8][4];
#pragma unroll
    for (int x = 0; x < kCols / 8; ++x)
      acc[x][0] = acc[x][1] = acc[x][2] = acc[x][3] = 0.f;
    dsTimesK<T, Tile, BM, BN, kCols>(acc, sDSa, sK, qg, col0, lane);
    reduceDqItem<kCols>(acc, rm, qa0, qg, col0, dq0, dqRow, scale, lane);
  }
}

/// The dK/dV epilogue for this warp's 16 key rows (from compact row b0):
/// kDirect stores them in the dtype, kAccumulate adds them to the query
/// head's slice of the fp32 accumulators (with reductions when other CTAs,
/// the key tile's other query chunks, add to the same rows). dK gets the
/// scale here.
template <class T, int D, int MODE>
DATTN_DEV void storeKeyRows(const Params &p, const float (&dk)[D / 8][4],
                            const float (&dv)[D / 8][4], const RowMap &rm, long long b0,
                            long long batch, int head, int kvHead, bool shared, int lane) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const long long b = b0 + lane / 4 + half * 8;
    if (b >= rm.count)
      continue;
    const long long row = rm.base + b * rm.step;
    if constexpr (MODE == kDirect) {
      T *dkRow = (T *)p.dk + layoutOf<D>(p, p.dkL, p.kvHeads).at(batch, row, kvHead);
      T *dvRow = (T *)p.dv + layoutOf<D>(p, p.dvL, p.kvHeads).at(batch, row, kvHead);
#pragma unroll
      for (int nb = 0; nb < D / 8; ++nb) {
        const int c = nb * 8 + (lane % 4) * 2;
        if constexpr (sizeof(T) == 4) { // fp32 (TF32 tensor cores)
          dkRow[c] = dk[nb][2 * half] * p.scale;
          dkRow[c + 1] = dk[nb][2 * half + 1] * p.scale;
          dvRow[c] = dv[nb][2 * half];
          dvRow[c + 1] = dv[nb][2 * half + 1];
        } else {
          *reinterpret_cast<unsigned *>(dkRow + c) =
              dev::pack2<T>(dk[nb][2 * half] * p.scale, dk[nb][2 * half + 1] * p.scale);
          *reinterpret_cast<unsigned *>(dvRow + c) =
              dev::pack2<T>(dv[nb][2 * half], dv[nb][2 * half + 1]);
        }
      }
    } else {
      float *dkRow = p.dkAcc + ((batch * p.seqLen + row) * p.heads + head) * D;
      float *dvRow = p.dvAcc + ((batch * p.seqLen + row) * p.heads + head) * D;
#pragma unroll
      for (int nb = 0; nb < D / 8; ++nb) {
        const int c = nb * 8 + (lane % 4) * 2;
        if (shared) {
          dev::reduceAdd2(dkRow + c, dk[nb][2 * half] * p.scale, dk[nb][2 * half + 1] * p.scale);
          dev::reduceAdd2(dvRow + c, dv[nb][2 * half], dv[nb][2 * half + 1]);
          continue;
        }
        Pair k2 = *reinterpret_cast<Pair *>(dkRow + c);
        Pair v2 = *reinterpret_cast<Pair *>(dvRow + c);
        k2.x += dk[nb][2 * half] * p.scale;
        k2.y += dk[nb][2 * half + 1] * p.scale;
        v2.x += dv[nb][2 * half];
        v2.y += dv[nb][2 * half + 1];
        *reinterpret_cast<Pair *>(dkRow + c) = k2;
        *reinterpret_cast<Pair *>(dvRow + c) = v2;
      }
    }
  }
}

/// The deterministic dQ epilogue for this warp's 16 query rows (from compact
/// row a0), scaled.
template <class T, int D, int MODE>
DATTN_DEV void storeQueryRows(const Params &p, const float (&acc)[D / 8][4], const RowMap &rm,
                              long long a0, long long batch, int head, int lane) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const long long a = a0 + lane / 4 + half * 8;
    if (a >= rm.count)
      continue;
    const long long row = rm.base + a * rm.step, qRow = (batch * p.seqLen + row) * p.heads + head;
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
      const int c = nb * 8 + (lane % 4) * 2;
      const float x = acc[nb][2 * half] * p.scale, y = acc[nb][2 * half + 1] * p.scale;
      if constexpr (MODE == kDirect) {
        const Layout dqL = layoutOf<D>(p, p.dqL, p.heads);
        T *dq = (T *)p.dq + dqL.at(batch, row, head) + c;
        if constexpr (sizeof(T) == 4) { // fp32 (TF32 tensor cores)
          dq[0] = x;
          dq[1] = y;
        } else {
          *reinterpret_cast<unsigned *>(dq) = dev::pack2<T>(x, y);
        }
      } else {
        Pair *dst = reinterpret_cast<Pair *>(p.dqAcc + qRow * D + c);
        Pair v = *dst;
        v.x += x;
        v.y += y;
        *dst = v;
      }
    }
  }
}

/// Shared memory of mmaBackwardKV in bytes: K and V tiles, two stages of Q
/// and dO, dS^T with ATOMIC_DQ (all EB-byte elements: 4 for TF32), two
/// stages of L and Delta. The host's kernel family asserts its own figure
/// against this in the generated source.
template <int D, int BM, int BN, bool ATOMIC_DQ, int EB = 2> struct KvSmem {
  static constexpr int kBytes =
      EB * (2 * BN * D + 4 * BM * D + (ATOMIC_DQ ? BN * BM : 0)) + 4 * (4 * BM);
};
/// Shared memory of mmaBackwardQ in bytes: Q, dO, two stages of K and V.
template <int D, int BM, int BN, int EB = 2> struct QSmem {
  static constexpr int kBytes = EB * (2 * BM * D + 4 * BN * D);
};

/// dK and dV (and with ATOMIC_DQ, dQ by reductions): one CTA per key tile
/// of 16 W rows and query head.
template <class T, int D, int BM, int W, bool ATOMIC_DQ, int MODE, class Branch>
__device__ void mmaBackwardKV(const Params &p) {
  constexpr int BN = 16 * W;
  using Tile = fwd::MmaTile<T, D, BN, 16, 1>; // kThreads = 32 W
  constexpr int kThreads = Tile::kThreads;
  static_assert(BM % 16 == 0 && D % 16 == 0 && D <= 128, "backward tile shapes");
  extern __shared__ __align__(128) unsigned char smemRaw[];
  T *sK = reinterpret_cast<T *>(smemRaw);
  T *sV = sK + BN * D;
  T *sQ = sV + BN * D;  // two stages of BM * D
  T *sG = sQ + 2 * BM * D; // dO, two stages
  T *sDS = sG + 2 * BM * D; // dS^T [BN][BM] (ATOMIC_DQ only)
  float *sL = reinterpret_cast<float *>(sDS + (ATOMIC_DQ ? BN * BM : 0)); // 2 stages
  float *sDelta = sL + 2 * BM;                                            // 2 stages

  const int warpId = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long n = p.seqLen;
  KeyCta<Branch, BM, BN> cta;
  typename KeyCta<Branch, BM, BN>::Members members;
  constexpr bool kMaySplit = ATOMIC_DQ && MODE == kAccumulate; // reductions in any order
  if (!cta.template find<kMaySplit>(p, members))
    return;

  typename Tile::template RowLoader<BN> kLoader, vLoader;
  typename Tile::template RowLoader<BM> qLoader, gLoader;
  const Layout qL = layoutOf<D>(p, p.qL, p.heads), gL = layoutOf<D>(p, p.doutL, p.heads);
  const Layout kL = layoutOf<D>(p, p.kL, p.kvHeads), vL = layoutOf<D>(p, p.vL, p.kvHeads);
  kLoader.init((const T *)p.k + kL.at(cta.batch, 0, cta.kvHead), kL.row, cta.rm.base, cta.rm.step);
  vLoader.init((const T *)p.v + vL.at(cta.batch, 0, cta.kvHead), vL.row, cta.rm.base, cta.rm.step);
  qLoader.init((const T *)p.q + qL.at(cta.batch, 0, cta.head), qL.row, cta.rm.base, cta.rm.step);
  gLoader.init((const T *)p.dout + gL.at(cta.batch, 0, cta.head), gL.row, cta.rm.base, cta.rm.step);
  const float *lseSrc = p.lse + (cta.batch * p.heads + cta.head) * n;
  const float *deltaSrc = p.delta + (cta.batch * p.heads + cta.head) * n;
  // Q, dO, L and Delta of query tile qt into stage `st`.
  auto loadQueries = [&](int st, long long qt) {
    const long long qa0 = qt * BM;
    qLoader.load(sQ + st * BM * D, qa0, cta.rm.count);
    gLoader.load(sG + st * BM * D, qa0, cta.rm.count);
    loadRowStats<BM, kThreads>(sL + st * BM, sDelta + st * BM, lseSrc, deltaSrc, cta.rm, qa0);
  };

  auto queryWalk = cta.queryWalk(n, members);
  long long qt = queryWalk.next(cta.qt0);
  kLoader.load(sK, cta.kb0, cta.rm.count);
  vLoader.load(sV, cta.kb0, cta.rm.count);
  if (qt < cta.qt1)
    loadQueries(0, qt);
  dev::cpAsyncCommit();

  float dk[D / 8][4], dv[D / 8][4];
  warp::zero(dk);
  warp::zero(dv);
  const float scaleLog2 = p.scale * dev::kLog2e;
  const unsigned sKa = dev::smemAddress(sK), sVa = dev::smemAddress(sV);
  const int keyRow0 = warpId * 16; // this warp's key rows in the tile

  for (int stage = 0; qt < cta.qt1; stage ^= 1) {
    dev::cpAsyncWaitAll();
    __syncthreads();
    const int cls = queryWalk.classOfNext(qt);
    const long long qtNext = queryWalk.next(qt + 1);
    if (qtNext < cta.qt1) // 1. the next query tile into the other stage
      loadQueries(stage ^ 1, qtNext);
    dev::cpAsyncCommit();
    const unsigned tq = dev::smemAddress(sQ + stage * BM * D);
    const unsigned tg = dev::smemAddress(sG + stage * BM * D);
    float s[BM / 8][4], dp[BM / 8][4]; // 2. S^T = K Q^T, dP^T = V dO^T
    scorePair<T, Tile, D, BM>(s, dp, sKa, sVa, tq, tg, keyRow0, lane);
    if (cls == plan::kPartial) // 3. pairs outside the branch: score -inf, p = 0
      maskTransposed<Branch, BM>(s, members, cta.rm, qt * BM, cta.kb0 + keyRow0, lane);
    probabilitiesTransposed<BM>(s, sL + stage * BM, scaleLog2, lane); // 4. P^T, dS^T
    scoreGradientsTransposed<BM>(s, dp, sDelta + stage * BM, lane);
    accumulateDvDk<T, Tile, D, BM>(dv, dk, s, dp, tg, tq, lane); // 5. dV, dK
    if constexpr (ATOMIC_DQ) // 6. dQ += dS K by reductions
      addDqFromDs<T, Tile, D, BM, BN, W>(dp, sDS, sKa, cta.rm, qt * BM, keyRow0, warpId,
                                         p.dqAcc + (cta.batch * p.seqLen * p.heads + cta.head) * D,
                                         (long long)p.heads * D, p.scale, lane);
    qt = qtNext;
  }
  storeKeyRows<T, D, MODE>(p, dk, dv, cta.rm, cta.kb0 + keyRow0, cta.batch, cta.head, cta.kvHead,
                           cta.chunked, lane);
}

/// The deterministic dQ: one CTA per query tile of BM rows and query head,
/// over its key tiles like the forward kernel.
template <class T, int D, int BM, int BN, int MODE, class Branch>
__device__ void mmaBackwardQ(const Params &p) {
  using Tile = fwd::MmaTile<T, D, BM, BN, 1>; // one m16 row tile per warp
  static_assert(D <= 128, "backward tile shapes");
  extern __shared__ __align__(128) unsigned char smemRaw[];
  T *sQ = reinterpret_cast<T *>(smemRaw);
  T *sG = sQ + BM * D;
  T *sK = sG + BM * D; // two stages of BN * D
  T *sV = sK + 2 * BN * D;

  const int warpId = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long batch = blockIdx.z, n = p.seqLen;
  const int kvHead = head / p.groupSize;

  RowMap rm;
  long long qa0, t0, t1;
  plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  if (!queryCtaRange<Branch, BM, BN>(p, headIndex, head, members, &rm, &qa0, &t0, &t1))
    return;
  auto keyWalk = walk::tiles<Branch::kKind == fwd::kBlocksBranch>(
      t1, [&](long long t) { return pairTileClass<Branch, BM, BN>(members, rm, n, qa0, t * BN); });

  typename Tile::template RowLoader<BM> qLoader, gLoader;
  typename Tile::template RowLoader<BN> kLoader, vLoader;
  const Layout qL = layoutOf<D>(p, p.qL, p.heads), gL = layoutOf<D>(p, p.doutL, p.heads);
  const Layout kL = layoutOf<D>(p, p.kL, p.kvHeads), vL = layoutOf<D>(p, p.vL, p.kvHeads);
  qLoader.init((const T *)p.q + qL.at(batch, 0, head), qL.row, rm.base, rm.step);
  gLoader.init((const T *)p.dout + gL.at(batch, 0, head), gL.row, rm.base, rm.step);
  kLoader.init((const T *)p.k + kL.at(batch, 0, kvHead), kL.row, rm.base, rm.step);
  vLoader.init((const T *)p.v + vL.at(batch, 0, kvHead), vL.row, rm.base, rm.step);

  long long t = keyWalk.next(t0);
  qLoader.load(sQ, qa0, rm.count);
  gLoader.load(sG, qa0, rm.count);
  if (t < t1) {
    kLoader.load(sK, t * BN, rm.count);
    vLoader.load(sV, t * BN, rm.count);
  }
  dev::cpAsyncCommit();

  const int row0 = warpId * 16;
  // This thread's two rows: qa0 + row0 + lane / 4 (+ 8): L (log2) and Delta.
  float lrow[2], drow[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const long long a = qa0 + row0 + lane / 4 + half * 8;
    const long long idx = (batch * p.heads + head) * n + rm.base + a * rm.step;
    lrow[half] = a < rm.count ? lseLog2(p.lse[idx]) : dev::posInf();
    drow[half] = a < rm.count ? p.delta[idx] : 0.f;
  }
  float acc[1][D / 8][4];
  warp::zero(acc);
  const float scaleLog2 = p.scale * dev::kLog2e;
  const unsigned sQa = dev::smemAddress(sQ), sGa = dev::smemAddress(sG);

  for (int stage = 0; t < t1; stage ^= 1) {
    dev::cpAsyncWaitAll();
    __syncthreads();
    const int cls = keyWalk.classOfNext(t);
    const long long tNext = keyWalk.next(t + 1);
    if (tNext < t1) { // 1. the next K, V tiles into the other stage
      kLoader.load(sK + (stage ^ 1) * BN * D, tNext * BN, rm.count);
      vLoader.load(sV + (stage ^ 1) * BN * D, tNext * BN, rm.count);
    }
    dev::cpAsyncCommit();
    const unsigned tk = dev::smemAddress(sK + stage * BN * D);
    const unsigned tv = dev::smemAddress(sV + stage * BN * D);
    float s[1][BN / 8][4], dp[1][BN / 8][4]; // 2. S = Q K^T, dP = dO V^T
    scorePair<T, Tile, D, BN>(s[0], dp[0], sQa, sGa, tk, tv, row0, lane);
    if (cls == plan::kPartial) // 3. masks on partial tiles only
      fwd::maskPartialTile<Branch, BN, 1>(s, members, rm.count, qa0 + row0, t * BN, lane);
#pragma unroll
    for (int nb = 0; nb < BN / 8; ++nb) // 4. dS = P (dP - Delta), into dp
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pv = dev::fastExp2(fmaf(s[0][nb][e], scaleLog2, -lrow[e >> 1]));
        dp[0][nb][e] = pv * (dp[0][nb][e] - drow[e >> 1]);
      }
    warp::accumulatePV<T, Tile, D, BN, 1>(acc, dp, tk, lane); // 5. dQ += dS K
    t = tNext;
  }
  storeQueryRows<T, D, MODE>(p, acc[0], rm, qa0 + row0, batch, head, lane);
}

} // namespace bwd
} // namespace dattn
