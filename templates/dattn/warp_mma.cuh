// dattn: the warp-level tile vocabulary of the mma.sync kernels
// (m16n8k16 for fp16/bf16, m16n8k8 on TF32 for fp32; fp32 accumulators).
// A warp owns MT m16 row tiles. A fragment array f[mt][nb][4] follows the
// mma accumulator layout: element e of f[mt][nb] is row lane / 4 + (e / 2)
// * 8 of row tile mt and column nb * 8 + (lane % 4) * 2 + e % 2. Shared-memory tiles are the swizzled
// [rows, D] layouts of MmaTile (forward_mma.cuh), addressed as 32-bit
// shared-memory byte addresses.
#pragma once

#include "dattn/device.cuh"

namespace dattn {
namespace warp {

template <int B> DATTN_DEV void zero(float (&f)[B][4]) {
#pragma unroll
  for (int b = 0; b < B; ++b)
    f[b][0] = f[b][1] = f[b][2] = f[b][3] = 0.f;
}
template <int A, int B> DATTN_DEV void zero(float (&f)[A][B][4]) {
#pragma unroll
  for (int a = 0; a < A; ++a)
#pragma unroll
    for (int b = 0; b < B; ++b)
      f[a][b][0] = f[a][b][1] = f[a][b][2] = f[a][b][3] = 0.f;
}

/// The row-times-row products (S = Q K^T and its backward relatives) per
/// operand type: the mma's k step, the ldmatrix column offset of its upper
/// half, the element size, the rounding of a loaded fragment register and
/// the mma itself. ldmatrix reads 8 rows of 16 bytes; on fp32 data lane l
/// receives element (row l / 4, column l % 4) of an 8 x 4 block, which is
/// the TF32 m16n8k8 fragment layout, so one addressing serves both: k steps
/// of 16 and halves of 8 columns for 16-bit types, of 8 and 4 for TF32
/// (whose fragments are rounded to TF32 once, where loaded).
template <class T> struct RowProduct {
  static constexpr int kK = 16, kHalf = 8, kBytes = 2;
  DATTN_DEV static unsigned round(unsigned r) { return r; }
  DATTN_DEV static void mma(float c[4], const unsigned a[4], const unsigned b[2]) {
    dev::mma16816<T>(c, a, b);
  }
};
template <> struct RowProduct<float> {
  static constexpr int kK = 8, kHalf = 4, kBytes = 4;
  DATTN_DEV static unsigned round(unsigned r) { return dev::toTf32(r); }
  DATTN_DEV static void mma(float c[4], const unsigned a[4], const unsigned b[2]) {
    dev::mma1688Tf32(c, a, b);
  }
};

/// The A fragment of m16 row tile rows row0.. at k step kk of the [.., D]
/// tile at sA (Tile's swizzle), rounded for the mma.
template <class T, class Tile>
DATTN_DEV void loadRowsA(unsigned (&a)[4], unsigned sA, int row0, int kk, int lane) {
  using P = RowProduct<T>;
  const int r = row0 + (lane % 8) + ((lane / 8) % 2) * 8, c = kk * P::kK + (lane / 16) * P::kHalf;
  dev::ldmatrixX4(a, sA + P::kBytes * Tile::offset(r, c));
#pragma unroll
  for (int e = 0; e < 4; ++e)
    a[e] = P::round(a[e]);
}

/// The B fragments of two 8-row blocks (rows np * 16..) at k step kk of the
/// tile at sB: b0 for rows np * 16 + 0..7, b1 for np * 16 + 8..15.
template <class T, class Tile>
DATTN_DEV void loadRowsB(unsigned (&b0)[2], unsigned (&b1)[2], unsigned sB, int np, int kk,
                         int lane) {
  using P = RowProduct<T>;
  const int row = np * 16 + (lane % 8) + (lane / 16) * 8,
            col = kk * P::kK + ((lane / 8) % 2) * P::kHalf;
  unsigned r[4];
  dev::ldmatrixX4(r, sB + P::kBytes * Tile::offset(row, col));
  b0[0] = P::round(r[0]);
  b0[1] = P::round(r[1]);
  b1[0] = P::round(r[2]);
  b1[1] = P::round(r[3]);
}

/// s = Q K^T for this warp's 16 * MT query rows (from row0 of the Q tile at
/// sQ) and the BN keys of the K tile at sK; Q and K fragments via ldmatrix.
template <class T, class Tile, int D, int BN, int MT>
DATTN_DEV void scores(float (&s)[MT][BN / 8][4], unsigned sQ, unsigned sK, int row0, int lane) {
  using P = RowProduct<T>;
  zero(s);
#pragma unroll
  for (int kk = 0; kk < D / P::kK; ++kk) {
    unsigned qa[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      loadRowsA<T, Tile>(qa[mt], sQ, row0 + mt * 16, kk, lane);
#pragma unroll
    for (int np = 0; np < BN / 16; ++np) {
      unsigned b0[2], b1[2];
      loadRowsB<T, Tile>(b0, b1, sK, np, kk, lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        P::mma(s[mt][2 * np], qa[mt], b0);
        P::mma(s[mt][2 * np + 1], qa[mt], b1);
      }
    }
  }
}

/// -inf for every score whose pair (a, b) the predicate drops: a is the
/// pair's row in the warp's 16 * MT rows, b its column in the BN keys (the
/// fragment layout above). Masks raw scores: the scale is applied later,
/// inside the exponent.
template <int BN, int MT, class Keep>
DATTN_DEV void mask(float (&s)[MT][BN / 8][4], int lane, Keep keep) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (!keep((long long)mt * 16 + lane / 4 + (e >> 1) * 8,
                  (long long)nb * 8 + (lane % 4) * 2 + (e & 1)))
          s[mt][nb][e] = dev::negInf();
}

/// accumulatePV() for fp32 tiles on TF32 tensor cores. The sum over keys
/// may take them in any order that P and V share: k index t of an 8-key
/// block stands for key 2t and t + 4 for key 2t + 1, which is where the S
/// accumulators already hold them (c0, c1 = keys 2t, 2t + 1), so P needs no
/// shuffle; V's two keys per lane are 32-bit shared-memory reads (no
/// ldmatrix transposes 32-bit elements), which the chunk swizzle spreads
/// over all 32 banks.
template <class Tile, int D, int BN, int MT>
DATTN_DEV void accumulatePVTf32(float (&acc)[MT][D / 8][4], const float (&p)[MT][BN / 8][4],
                                unsigned sV, int lane) {
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    unsigned a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      a[mt][0] = dev::toTf32(p[mt][j][0]); // (g, key 2t)
      a[mt][1] = dev::toTf32(p[mt][j][2]); // (g + 8, key 2t)
      a[mt][2] = dev::toTf32(p[mt][j][1]); // (g, key 2t + 1)
      a[mt][3] = dev::toTf32(p[mt][j][3]); // (g + 8, key 2t + 1)
    }
    const int key = j * 8 + (lane % 4) * 2;
#pragma unroll
    for (int dp = 0; dp < D / 8; ++dp) {
      const int dim = dp * 8 + lane / 4;
      const unsigned b[2] = {dev::toTf32(dev::ldsF32(sV + 4 * Tile::offset(key, dim))),
                             dev::toTf32(dev::ldsF32(sV + 4 * Tile::offset(key + 1, dim)))};
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
        dev::mma1688Tf32(acc[mt][dp], a[mt], b);
    }
  }
}

/// accumulatePV() for fp16/bf16 tiles: P re-packed to T in registers, V
/// via ldmatrix.trans.
template <class T, class Tile, int D, int BN, int MT>
DATTN_DEV void accumulatePV16(float (&acc)[MT][D / 8][4], const float (&p)[MT][BN / 8][4],
                              unsigned sV, int lane) {
#pragma unroll
  for (int j = 0; j < BN / 16; ++j) {
    unsigned a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      a[mt][0] = dev::pack2<T>(p[mt][2 * j][0], p[mt][2 * j][1]);
      a[mt][1] = dev::pack2<T>(p[mt][2 * j][2], p[mt][2 * j][3]);
      a[mt][2] = dev::pack2<T>(p[mt][2 * j + 1][0], p[mt][2 * j + 1][1]);
      a[mt][3] = dev::pack2<T>(p[mt][2 * j + 1][2], p[mt][2 * j + 1][3]);
    }
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      unsigned r[4];
      int row = j * 16 + (lane % 8) + ((lane / 8) % 2) * 8, col = dp * 16 + (lane / 16) * 8;
      dev::ldmatrixX4Trans(r, sV + 2 * Tile::offset(row, col));
      unsigned b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        dev::mma16816<T>(acc[mt][2 * dp], a[mt], b0);
        dev::mma16816<T>(acc[mt][2 * dp + 1], a[mt], b1);
      }
    }
  }
}

/// acc += P V: P from score fragments (in registers, never through shared
/// memory), V the [BN, D] tile at sV.
template <class T, class Tile, int D, int BN, int MT>
DATTN_DEV void accumulatePV(float (&acc)[MT][D / 8][4], const float (&p)[MT][BN / 8][4],
                            unsigned sV, int lane) {
  if constexpr (sizeof(T) == 4)
    accumulatePVTf32<Tile, D, BN, MT>(acc, p, sV, lane);
  else
    accumulatePV16<T, Tile, D, BN, MT>(acc, p, sV, lane);
}

/// The online softmax of this thread's rows (FlashAttention-2), in the log2
/// domain: a raw score s becomes p = 2^(s * scale * log2(e) - m), one FFMA
/// and one ex2 per score. Row r of row tile mt is [mt][half], half 0 for
/// row lane / 4 and 1 for row lane / 4 + 8.
template <int MT> struct OnlineSoftmax {
  float m[MT][2]; ///< running max of the scaled scores; -inf while the row has no key
  float l[MT][2]; ///< running sum of 2^(score - m) over this lane's columns (a quad holds a row)

  DATTN_DEV void init() {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      m[mt][0] = m[mt][1] = dev::negInf();
      l[mt][0] = l[mt][1] = 0.f;
    }
  }

  /// Folds a tile of raw scores in: s becomes p (relative to the new max)
  /// and l and the O accumulator are rescaled by 2^(m_old - m_new). The
  /// scale is positive, so the maximum of raw scores is that of scaled ones.
  template <int NB, int DB>
  DATTN_DEV void update(float (&s)[MT][NB][4], float (&acc)[MT][DB][4], float scaleLog2) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        rescaleRow(acc, mt, half, foldRow(s, mt, half, scaleLog2));
  }

  /// update() without the accumulator: corr receives the factors that
  /// rescale() applies to it later (the pipelined wgmma kernel rescales O
  /// only once the product still adding into it has completed).
  template <int NB>
  DATTN_DEV void updateScores(float (&s)[MT][NB][4], float scaleLog2, float (&corr)[MT][2]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        corr[mt][half] = foldRow(s, mt, half, scaleLog2);
  }
  template <int DB>
  DATTN_DEV static void rescale(float (&acc)[MT][DB][4], const float (&corr)[MT][2]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        rescaleRow(acc, mt, half, corr[mt][half]);
  }

private:
  /// One row's part of update(): its new max, p and l; returns 2^(m_old - m_new).
  template <int NB>
  DATTN_DEV float foldRow(float (&s)[MT][NB][4], int mt, int half, float scaleLog2) {
    float m0 = s[mt][0][2 * half], m1 = s[mt][0][2 * half + 1];
#pragma unroll
    for (int nb = 1; nb < NB; ++nb) { // two chains: shorter dependencies
      m0 = fmaxf(m0, s[mt][nb][2 * half]);
      m1 = fmaxf(m1, s[mt][nb][2 * half + 1]);
    }
    const float mx = fmaxf(m[mt][half], dev::quadMax(fmaxf(m0, m1)) * scaleLog2);
    // An all-masked row so far has max -inf: subtract 0 instead, so that
    // 2^(-inf - 0) = 0 rather than NaN.
    const float base = mx == dev::negInf() ? 0.f : mx;
    const float corr = dev::fastExp2(m[mt][half] - base);
    m[mt][half] = mx;
    float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      s[mt][nb][2 * half] = dev::fastExp2(fmaf(s[mt][nb][2 * half], scaleLog2, -base));
      s[mt][nb][2 * half + 1] = dev::fastExp2(fmaf(s[mt][nb][2 * half + 1], scaleLog2, -base));
      sum0 += s[mt][nb][2 * half];
      sum1 += s[mt][nb][2 * half + 1];
    }
    l[mt][half] = l[mt][half] * corr + (sum0 + sum1);
    return corr;
  }
  template <int DB>
  DATTN_DEV static void rescaleRow(float (&acc)[MT][DB][4], int mt, int half, float corr) {
#pragma unroll
    for (int x = 0; x < DB; ++x) {
      acc[mt][x][2 * half] *= corr;
      acc[mt][x][2 * half + 1] *= corr;
    }
  }
};

} // namespace warp
} // namespace dattn
