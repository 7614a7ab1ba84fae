// dattn: closed-form tile iteration for one branch of an attention.
//
// The plan-tiles pass decides, per branch, one of two iteration structures;
// this header is their arithmetic, shared by the kernels (device) and by the
// host tests that check it against brute-force enumeration of the reference's
// key sets (tests/unit/TilePlanTest.cpp). Nothing here grows with N^2: every
// quantity is a formula in (tile index, sequence length, pattern constants).
//
// 1. Strided branches (a dilated pattern alone in its branch). Rows of head h
//    with i mod r == o(h) in segment s form a dense subsequence
//        row(s, a) = first(s) + a * r,  a in [0, rows(s)),
//    first(s) = the least row >= s*w that is congruent to o mod r. The branch
//    is dense attention on each such subsequence: tile the compact index a
//    with (blockM x blockN) tiles; every tile is full except ragged edges
//    (a >= rows(s)) and, when causal, diagonal tiles (order is preserved, so
//    j <= i is b <= a in compact indices).
//
// 2. Block branches (window, global, dense, block patterns and unions).
//    Query tile [i0, i1) and key tile [j0, j1) of the full sequence. Each
//    union member classifies a tile as Skip (no pair), Partial (some pairs:
//    evaluate the mask per element) or Full (every pair). The union's class
//    is the maximum over members: Full if any member is full (its pairs are
//    a subset of the union), else Partial if any member touches the tile.
//    Causal masking demotes tiles crossing the diagonal to Partial and skips
//    tiles above it. Members also bound the key range a query tile can touch
//    so that kernels do not visit far-away tiles of local patterns.
#pragma once

#include "dattn/block_hash.cuh"

namespace dattn {
namespace plan {

typedef long long i64;

enum TileClass { kSkip = 0, kPartial = 1, kFull = 2 };

/// How a union member iterates, one per pattern kind.
enum MemberKind {
  kAll = 0,          ///< dense
  kBand = 1,         ///< window: i - left <= j <= i + right
  kPrefix = 2,       ///< global: j < tokens or i < tokens
  kHash = 3,         ///< random: kept block pairs by blockHash
  kBlockOffsets = 4, ///< dilated_blocks: J - I in {0, +-r}
  kHierarchy = 5,    ///< hierarchical levels
  kBlockMask = 6,    ///< run-time BSR mask
  kSegment = 7,      ///< dilated inside a union: masked, never strided
};

/// The largest number of rates a dilated_blocks member carries.
constexpr int kMaxRates = 16;

/// One union member, its constants resolved for one query head.
struct Member {
  int kind;
  i64 lo, hi;         ///< band: left, right (-1 = unbounded); prefix: lo = tokens
  i64 segment;        ///< kSegment: w (-1 = unbounded)
  i64 stride, offset; ///< kSegment: r, o(h)
  i64 block;          ///< block patterns: beta
  unsigned long long seed, keep; ///< kHash: seed and keep threshold
  int head;                      ///< kHash: the query head (part of the hash)
  int levels;                    ///< kHierarchy
  int numRates;                  ///< kBlockOffsets
  i64 rates[kMaxRates];
  const i64 *maskRows; ///< kBlockMask: BSR row offsets (NB + 1)
  const i64 *maskCols; ///< kBlockMask: BSR column indices
  int excluded; ///< its pairs are out of the union (run by another branch)
};

DATTN_HD i64 minI(i64 a, i64 b) { return a < b ? a : b; }
DATTN_HD i64 maxI(i64 a, i64 b) { return a > b ? a : b; }
DATTN_HD i64 ceilDiv(i64 a, i64 b) { return (a + b - 1) / b; }
/// a / b and a % b for a >= 0, b > 0, in 32 bits when both fit: the masks
/// of partial tiles test every pair, and a 64-bit division is a long
/// software sequence on the GPU where a 32-bit one is a few instructions.
DATTN_HD i64 divNonNegative(i64 a, i64 b) {
  return ((a | b) >> 31) == 0 ? (i64)((unsigned)a / (unsigned)b) : a / b;
}
DATTN_HD i64 modNonNegative(i64 a, i64 b) {
  return ((a | b) >> 31) == 0 ? (i64)((unsigned)a % (unsigned)b) : a % b;
}
/// The least power of two >= v (1 for v <= 1).
DATTN_HD i64 nextPowerOfTwo(i64 v) {
  i64 p = 1;
  while (p < v)
    p <<= 1;
  return p;
}

// ---------------------------------------------------------------------------
// Strided (dilated) branches
// ---------------------------------------------------------------------------

/// Segment length with `inf` resolved to the whole sequence.
DATTN_HD i64 segmentLength(i64 segment, i64 seqLen) {
  return segment < 0 ? seqLen : minI(segment, seqLen);
}

DATTN_HD i64 numSegments(i64 segment, i64 seqLen) {
  return ceilDiv(seqLen, segmentLength(segment, seqLen));
}

/// The least row >= s*w congruent to `offset` modulo `stride`.
DATTN_HD i64 segmentFirstRow(i64 s, i64 segment, i64 seqLen, i64 stride, i64 offset) {
  i64 start = s * segmentLength(segment, seqLen);
  i64 rem = ((offset - start) % stride + stride) % stride;
  return start + rem;
}

/// How many rows of segment s are congruent to `offset` modulo `stride`.
DATTN_HD i64 segmentRows(i64 s, i64 segment, i64 seqLen, i64 stride, i64 offset) {
  i64 w = segmentLength(segment, seqLen);
  i64 end = minI((s + 1) * w, seqLen);
  i64 first = segmentFirstRow(s, segment, seqLen, stride, offset);
  return first >= end ? 0 : (end - first + stride - 1) / stride;
}

/// The rows that share row x's segment and residue class: [*begin, *end)
/// with step `stride` (x itself congruent to `offset`). For one strided
/// branch these are both the keys of query x and the queries of key x.
DATTN_HD void segmentLattice(i64 x, i64 segment, i64 seqLen, i64 stride, i64 offset, i64 *begin,
                             i64 *end) {
  const i64 w = segmentLength(segment, seqLen), s = x / w;
  *begin = segmentFirstRow(s, segment, seqLen, stride, offset);
  *end = minI(seqLen, (s + 1) * w);
}

/// The dK/dV grid with long walks split (runtime/Launch.h, rt::querySplit):
/// CTAs [0, keyCtas) run each key CTA's walk, or its first chunk for the
/// first `chunked` key CTAs, each of which has `chunks` - 1 more CTAs after
/// them. CTA x's key CTA and chunk.
DATTN_HD void splitKeyCta(i64 x, i64 keyCtas, i64 chunked, i64 chunks, i64 *keyCta,
                          i64 *chunk) {
  if (x < keyCtas || chunks <= 1) {
    *keyCta = x;
    *chunk = 0;
    return;
  }
  const i64 e = x - keyCtas;
  *keyCta = e / (chunks - 1);
  *chunk = 1 + e % (chunks - 1);
}

/// Chunk `chunk` of `chunks` of a walk over tiles [*t0, *t1): `tiles` of
/// them, the last chunk to the walk's end. False if the chunk is empty.
DATTN_HD bool chunkOfWalk(i64 chunk, i64 chunks, i64 tiles, i64 *t0, i64 *t1) {
  *t0 += chunk * tiles;
  if (chunk + 1 < chunks)
    *t1 = minI(*t1, *t0 + tiles);
  return *t0 < *t1;
}

/// Class of compact tile (qa0.., kb0..) of a segment with `rows` rows.
DATTN_HD TileClass stridedTileClass(i64 qa0, i64 qa1, i64 kb0, i64 kb1, i64 rows, bool causal) {
  if (qa0 >= rows || kb0 >= rows)
    return kSkip;
  if (causal && kb0 > minI(qa1, rows) - 1)
    return kSkip;
  bool ragged = qa1 > rows || kb1 > rows;
  bool diagonal = causal && kb1 - 1 > qa0;
  return ragged || diagonal ? kPartial : kFull;
}

// ---------------------------------------------------------------------------
// Block branches
// ---------------------------------------------------------------------------

DATTN_HD bool maskContains(const Member &m, i64 I, i64 J) {
  i64 a = m.maskRows[I], b = m.maskRows[I + 1];
  while (a < b) { // binary search in the sorted row
    i64 mid = (a + b) / 2;
    i64 c = m.maskCols[mid];
    if (c == J)
      return true;
    if (c < J)
      a = mid + 1;
    else
      b = mid;
  }
  return false;
}

/// Whether block pair (I, J) is kept by a block-pattern member.
DATTN_HD bool blockKept(const Member &m, i64 I, i64 J) {
  switch (m.kind) {
  case kHash:
    return blockHash(m.seed, (unsigned)m.head, (unsigned)I, (unsigned)J) < m.keep;
  case kBlockOffsets: {
    i64 d = J - I;
    if (d == 0)
      return true;
    for (int k = 0; k < m.numRates; ++k)
      if (d == m.rates[k] || d == -m.rates[k])
        return true;
    return false;
  }
  case kHierarchy:
    for (int l = 0; l < m.levels; ++l) {
      i64 g = (i64)1 << l;
      i64 d = I / g - J / g;
      if (J % g == 0 && d >= -1 && d <= 1)
        return true;
    }
    return false;
  case kBlockMask:
    return maskContains(m, I, J);
  default:
    return false;
  }
}

/// Whether the pair (i, j) is in the member's set (no causal).
DATTN_HD bool memberContains(const Member &m, i64 i, i64 j) {
  switch (m.kind) {
  case kAll:
    return true;
  case kBand:
    return (m.lo < 0 || j >= i - m.lo) && (m.hi < 0 || j <= i + m.hi);
  case kPrefix:
    return j < m.lo || i < m.lo;
  case kSegment:
    if (modNonNegative(i, m.stride) != m.offset || modNonNegative(j, m.stride) != m.offset)
      return false;
    return m.segment < 0 || divNonNegative(i, m.segment) == divNonNegative(j, m.segment);
  default:
    return blockKept(m, divNonNegative(i, m.block), divNonNegative(j, m.block));
  }
}

/// Whether (i, j) is in the union of members[0..count) (no causal): in a
/// member that is not excluded and in no excluded one.
DATTN_HD bool unionContains(const Member *members, int count, i64 i, i64 j) {
  bool in = false;
  for (int k = 0; k < count && !in; ++k)
    in = !members[k].excluded && memberContains(members[k], i, j);
  for (int k = 0; k < count && in; ++k)
    in = !(members[k].excluded && memberContains(members[k], i, j));
  return in;
}

/// The pairs member m holds along one line of a tile: row i = f against
/// keys j = vb + 8 nb + e, or with `transposed` key j = f against queries i
/// = vb + 8 nb + e (the dK/dV kernels' transposed fragments), as bit 2 nb +
/// e (nbCount <= 16; a thread of an mma or wgmma accumulator holds these
/// columns of a tile, vb = the tile's first column + 2 (lane % 4)); columns
/// from vEnd on (past the sequence) are never tested and get 0 (a block
/// mask has no rows for them). What depends on f alone is worked out once,
/// then each column costs a comparison or two.
DATTN_HD unsigned memberLineBits(const Member &m, i64 f, i64 vb, i64 vEnd, int nbCount,
                                  bool transposed) {
  const unsigned all = nbCount >= 16 ? 0xffffffffu : (1u << (2 * nbCount)) - 1;
  unsigned bits = 0;
  switch (m.kind) {
  case kAll:
    return all;
  case kBand: { // j - i in [-lo, hi]: v in [f - lo, f + hi], transposed [f - hi, f + lo]
    const i64 below = transposed ? m.hi : m.lo, above = transposed ? m.lo : m.hi;
    const i64 lo = below < 0 ? vb : f - below, hi = above < 0 ? vb + 8 * nbCount : f + above;
    for (int x = 0; x < 2 * nbCount; ++x) {
      const i64 v = vb + 8 * (x / 2) + x % 2;
      bits |= (unsigned)(v >= lo && v <= hi) << x;
    }
    return bits;
  }
  case kPrefix: // symmetric: either end among the tokens
    if (f < m.lo)
      return all;
    for (int x = 0; x < 2 * nbCount; ++x)
      bits |= (unsigned)(vb + 8 * (x / 2) + x % 2 < m.lo) << x;
    return bits;
  case kSegment: { // symmetric: both ends in the residue class and one segment
    if (modNonNegative(f, m.stride) != m.offset)
      return 0;
    const i64 s0 = m.segment < 0 ? 0 : divNonNegative(f, m.segment) * m.segment;
    const i64 s1 = m.segment < 0 ? vb + 8 * nbCount : s0 + m.segment;
    // vb + 8 nb's residue, stepped by 8 mod r (each step stays below 2 r).
    const i64 step = modNonNegative(8, m.stride);
    i64 rem = modNonNegative(vb, m.stride);
    for (int nb = 0; nb < nbCount; ++nb) {
      const i64 v = vb + 8 * nb, rem1 = rem + 1 == m.stride ? 0 : rem + 1;
      bits |= (unsigned)(rem == m.offset && v >= s0 && v < s1) << (2 * nb);
      bits |= (unsigned)(rem1 == m.offset && v + 1 >= s0 && v + 1 < s1) << (2 * nb + 1);
      rem += step;
      if (rem >= m.stride)
        rem -= m.stride;
    }
    return bits;
  }
  default: { // block patterns: one test per block the columns touch
    const i64 F = divNonNegative(f, m.block);
    i64 last = -1;
    bool kept = false;
    for (int x = 0; x < 2 * nbCount; ++x) {
      const i64 v = vb + 8 * (x / 2) + x % 2;
      if (v >= vEnd)
        break;
      const i64 V = divNonNegative(v, m.block);
      if (V != last) {
        kept = transposed ? blockKept(m, V, F) : blockKept(m, F, V);
        last = V;
      }
      bits |= (unsigned)kept << x;
    }
    return bits;
  }
  }
}

/// unionContains along one line (memberLineBits' layout).
DATTN_HD unsigned unionLineBits(const Member *members, int count, i64 f, i64 vb, i64 vEnd,
                                int nbCount, bool transposed) {
  unsigned in = 0, out = 0;
  for (int k = 0; k < count; ++k) {
    const unsigned bits = memberLineBits(members[k], f, vb, vEnd, nbCount, transposed);
    if (members[k].excluded)
      out |= bits;
    else
      in |= bits;
  }
  // Columns past vEnd: 0 (the other kinds' tests need no bound).
  const i64 valid = vEnd - vb; // columns vb + 8 nb + e < vEnd
  for (int x = 0; x < 2 * nbCount; ++x)
    if (8 * (x / 2) + x % 2 >= valid)
      in &= ~(1u << x);
  return in & ~out;
}

/// Key range [*jlo, *jhi) that query rows [i0, i1) can reach through m.
DATTN_HD void memberKeyRange(const Member &m, i64 i0, i64 i1, i64 seqLen, i64 *jlo, i64 *jhi) {
  *jlo = 0;
  *jhi = seqLen;
  switch (m.kind) {
  case kBand:
    if (m.lo >= 0)
      *jlo = maxI(0, i0 - m.lo);
    if (m.hi >= 0)
      *jhi = minI(seqLen, i1 - 1 + m.hi + 1);
    break;
  case kPrefix:
    if (i0 >= m.lo)
      *jhi = minI(seqLen, m.lo);
    break;
  case kSegment:
    if (m.segment >= 0) {
      *jlo = (i0 / m.segment) * m.segment;
      *jhi = minI(seqLen, ((i1 - 1) / m.segment + 1) * m.segment);
    }
    break;
  case kBlockOffsets: {
    i64 far = 0;
    for (int k = 0; k < m.numRates; ++k)
      far = maxI(far, m.rates[k]);
    *jlo = maxI(0, (i0 / m.block - far) * m.block);
    *jhi = minI(seqLen, ((i1 - 1) / m.block + far + 1) * m.block);
    break;
  }
  case kHierarchy: {
    // The widest level reaches one group of 2^(levels-1) blocks either side.
    i64 g = ((i64)1 << (m.levels - 1)) * m.block;
    *jlo = maxI(0, (i0 / g - 1) * g);
    *jhi = minI(seqLen, ((i1 - 1) / g + 2) * g);
    break;
  }
  default:
    break;
  }
}

/// Query rows [*ilo, *ihi) that can reach key j through m (the transposed
/// range, for the backward pass's dK and dV).
DATTN_HD void memberQueryRange(const Member &m, i64 j, i64 seqLen, i64 *ilo, i64 *ihi) {
  *ilo = 0;
  *ihi = seqLen;
  switch (m.kind) {
  case kBand: // j in [i - left, i + right]  <=>  i in [j - right, j + left]
    if (m.hi >= 0)
      *ilo = maxI(0, j - m.hi);
    if (m.lo >= 0)
      *ihi = minI(seqLen, j + m.lo + 1);
    break;
  case kPrefix:
    if (j >= m.lo)
      *ihi = minI(seqLen, m.lo);
    break;
  case kSegment:
    if (m.segment >= 0) {
      *ilo = (j / m.segment) * m.segment;
      *ihi = minI(seqLen, *ilo + m.segment);
    }
    break;
  case kBlockOffsets: {
    i64 far = 0;
    for (int k = 0; k < m.numRates; ++k)
      far = maxI(far, m.rates[k]);
    *ilo = maxI(0, (j / m.block - far) * m.block);
    *ihi = minI(seqLen, (j / m.block + far + 1) * m.block);
    break;
  }
  default:
    break; // dense, random, hierarchy, block mask: every row is a candidate
  }
}

/// Class of tile [i0, i1) x [j0, j1) (both clipped to seqLen) for member m.
DATTN_HD TileClass memberTileClass(const Member &m, i64 i0, i64 i1, i64 j0, i64 j1) {
  switch (m.kind) {
  case kAll:
    return kFull;
  case kBand: {
    bool touch = (m.lo < 0 || j1 - 1 >= i0 - m.lo) && (m.hi < 0 || j0 <= i1 - 1 + m.hi);
    if (!touch)
      return kSkip;
    bool full = (m.lo < 0 || j0 >= i1 - 1 - m.lo) && (m.hi < 0 || j1 - 1 <= i0 + m.hi);
    return full ? kFull : kPartial;
  }
  case kPrefix: {
    if (!(j0 < m.lo || i0 < m.lo))
      return kSkip;
    return (j1 - 1 < m.lo || i1 - 1 < m.lo) ? kFull : kPartial;
  }
  case kSegment: {
    // Touched iff some segment holds a congruent row of both ranges.
    bool any = false;
    i64 w = m.segment;
    i64 sFirst = w < 0 ? 0 : maxI(i0 / w, j0 / w);
    i64 sLast = w < 0 ? 0 : minI((i1 - 1) / w, (j1 - 1) / w);
    for (i64 s = sFirst; s <= sLast && !any; ++s) {
      i64 a0 = w < 0 ? i0 : maxI(i0, s * w), a1 = w < 0 ? i1 : minI(i1, (s + 1) * w);
      i64 b0 = w < 0 ? j0 : maxI(j0, s * w), b1 = w < 0 ? j1 : minI(j1, (s + 1) * w);
      i64 qa = a0 + ((m.offset - a0) % m.stride + m.stride) % m.stride;
      i64 kb = b0 + ((m.offset - b0) % m.stride + m.stride) % m.stride;
      any = qa < a1 && kb < b1;
    }
    if (!any)
      return kSkip;
    bool oneSegment = w < 0 || (i0 / w == (i1 - 1) / w && j0 / w == (j1 - 1) / w &&
                                i0 / w == j0 / w);
    return m.stride == 1 && oneSegment ? kFull : kPartial;
  }
  default: {
    // Block patterns: look at each block pair the tile overlaps. Tiles and
    // blocks are both a few dozen rows, so this is a handful of tests.
    i64 kept = 0, total = 0;
    const i64 I1 = divNonNegative(i1 - 1, m.block), J0 = divNonNegative(j0, m.block),
              J1 = divNonNegative(j1 - 1, m.block);
    for (i64 I = divNonNegative(i0, m.block); I <= I1; ++I)
      for (i64 J = J0; J <= J1; ++J) {
        kept += blockKept(m, I, J) ? 1 : 0;
        ++total;
      }
    return kept == 0 ? kSkip : kept == total ? kFull : kPartial;
  }
  }
}

/// Class of a tile for a whole union (members[0..count)) with causal masking.
DATTN_HD TileClass unionTileClass(const Member *members, int count, bool causal, i64 i0,
                                  i64 i1, i64 j0, i64 j1) {
  if (causal && j0 > i1 - 1)
    return kSkip;
  int best = kSkip;
  for (int k = 0; k < count && best != kFull; ++k) {
    if (members[k].excluded)
      continue;
    int c = memberTileClass(members[k], i0, i1, j0, j1);
    best = c > best ? c : best;
  }
  // Excluded members take their pairs out: all of them skip the tile, some
  // make it partial.
  for (int k = 0; k < count && best != kSkip; ++k) {
    if (!members[k].excluded)
      continue;
    int c = memberTileClass(members[k], i0, i1, j0, j1);
    best = c == kFull ? kSkip : c == kPartial ? kPartial : best;
  }
  if (best == kFull && causal && j1 - 1 > i0)
    best = kPartial;
  return (TileClass)best;
}

/// Key range over all members, in key tiles of blockN: [*t0, *t1).
DATTN_HD void unionKeyTiles(const Member *members, int count, bool causal, i64 i0, i64 i1,
                            i64 seqLen, i64 blockN, i64 *t0, i64 *t1) {
  i64 lo = seqLen, hi = 0;
  for (int k = 0; k < count; ++k) {
    if (members[k].excluded) // takes keys out, reaches none
      continue;
    i64 a, b;
    memberKeyRange(members[k], i0, i1, seqLen, &a, &b);
    lo = minI(lo, a);
    hi = maxI(hi, b);
  }
  if (causal)
    hi = minI(hi, i1);
  if (hi <= lo) {
    *t0 = *t1 = 0;
    return;
  }
  *t0 = lo / blockN;
  *t1 = ceilDiv(hi, blockN);
}

/// Query range over all members for key rows [j0, j1), in query tiles of
/// blockM: [*t0, *t1) (the backward pass's dK/dV iteration). Each member's
/// memberQueryRange bounds move monotonically with j, so the ranges of the
/// tile's first and last key span those of every key between them.
DATTN_HD void unionQueryTiles(const Member *members, int count, bool causal, i64 j0, i64 j1,
                              i64 seqLen, i64 blockM, i64 *t0, i64 *t1) {
  i64 lo = seqLen, hi = 0;
  for (int k = 0; k < count; ++k)
    for (int end = 0; end < 2 && !members[k].excluded; ++end) {
      const i64 j = end == 0 ? j0 : j1 - 1;
      i64 a, b;
      memberQueryRange(members[k], j, seqLen, &a, &b);
      lo = minI(lo, a);
      hi = maxI(hi, b);
    }
  if (causal)
    lo = maxI(lo, j0);
  if (hi <= lo) {
    *t0 = *t1 = 0;
    return;
  }
  *t0 = lo / blockM;
  *t1 = ceilDiv(hi, blockM);
}

} // namespace plan
} // namespace dattn
