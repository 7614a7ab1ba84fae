// dattn: the ring kernels' launch parameters (templates/dattn/ring.cuh).
// Plain C++ shared by the host executor (which fills them) and the kernels.
#pragma once

#include "dattn/layout.cuh"
#include "dattn/tile_plan.cuh"

namespace dattn {
namespace ring {

/// One run of packed key rows (ring/Schedule.cpp's PackedPart), or of the
/// rank's own rows for its local block.
struct Part {
  long long start, step, count; ///< global rows start + x * step, x < count
  long long offset;             ///< the first packed row (or local row)
  int kvHead;
};

/// Where a block's keys live and which rows the rank holds.
struct Params {
  long long globalN;            ///< N of the whole sequence
  long long qBegin[2], qEnd[2]; ///< the rank's rows, in local order (an empty second range: 0, 0)
  const Part *parts;            ///< device array
  int numParts;
  const void *keys, *values;    ///< packed [B][rows][D], or the rank's own k, v
  Layout keyL, valueL;          ///< their strides; packed: {rows * D, D, 0}
};

/// A step's dK/dV grid with long query walks split across CTAs (the
/// runtime's rt::ringQuerySplit decides it; splitKeyTile reads it): CTAs
/// [0, keyCtas) run each key tile's walk, or its first chunk where chunked;
/// each chunked key tile has chunks - 1 more CTAs after those, which walk
/// `tiles` query tiles each (the last chunk to the walk's end). Chunked:
/// every key tile (prefixTiles < 0), or each part's first prefixTiles tiles
/// (those holding global tokens, whose columns every query reaches).
/// chunks <= 1: one CTA per key tile. Key tiles count among the parts of
/// the CTA's kv head only (keyPiece): a block's parts are per kv head, and
/// a grid over every part would leave all but 1 / kv_heads of the CTAs of
/// each head without keys (12 kv heads: 11 empty CTAs for each working one).
struct WalkSplit {
  long long keyCtas, tiles, prefixTiles;
  int chunks;
};

/// The backward's extra operands for one block (templates/dattn/ring.cuh).
struct Grad {
  const void *dout;   ///< the rank's dO, layout doutL
  Layout doutL;
  const float *delta; ///< [B, H, rows]: dO . O per row and head
  float *dqAcc;       ///< fp32 [B, rows, H, D], contiguous
  float *dk, *dv;     ///< fp32 partials of the block's keys, layout gradL
  Layout gradL;       ///< own rows: [B, rows, kv_heads, D]; packed: {rows * D, D, 0}
  WalkSplit split;    ///< the tensor-core dK/dV kernels' grid
};

/// The rank's range [begin, end) of a strided branch (segment length w,
/// dilation r) as pieces (one per segment it meets), each given the same
/// number of query tiles of bm compact rows: a piece holds at most
/// min(w, end - begin) rows, 1 in r of them a head's. The tensor-core
/// block kernels' grid counts these tiles (a dense branch: one piece, w = N).
DATTN_HD long long piecesOf(long long begin, long long end, long long w) {
  return end > begin ? (end - 1) / w - begin / w + 1 : 0;
}
DATTN_HD long long tilesPerPiece(long long begin, long long end, long long w, long long r,
                                 long long bm) {
  return plan::ceilDiv(plan::ceilDiv(plan::minI(w, end - begin), r), bm);
}

/// The keys of one part at one residue: packed rows base + k * step at
/// positions pos + k * posStep (a multiple of r), k < count.
struct KeyRun {
  long long base, step, pos, posStep, count;
};

/// x with a x == b (mod m), 0 <= x < m, for gcd(a, m) == 1 (extended Euclid).
DATTN_HD long long solveModular(long long a, long long b, long long m) {
  long long r0 = m, r1 = ((a % m) + m) % m, t0 = 0, t1 = 1;
  while (r1 != 0) {
    const long long q = r0 / r1, r2 = r0 - q * r1, t2 = t0 - q * t1;
    r0 = r1;
    r1 = r2;
    t0 = t1;
    t1 = t2;
  }
  const long long inv = ((t0 % m) + m) % m; // a^-1 mod m (m == 1: 0)
  return (((b % m) + m) % m) * inv % m;
}

/// The keys of part `pt` at positions congruent to o (mod r) inside
/// [segBegin, segEnd). The part's rows start + x * step of that residue
/// are every (r / gcd(step, r))-th row from the first (if any). CLIP false
/// (an unbounded segment: every row is in it) skips the clipping and its
/// divisions; with r a compile-time 1 (dense) nothing is left to compute.
template <bool CLIP = true>
DATTN_HD KeyRun partRun(const Part &pt, long long r, long long o, long long segBegin,
                        long long segEnd) {
  KeyRun k{0, 1, 0, r, 0};
  long long g = pt.step % r, h = r; // g = gcd(step, r)
  while (g != 0) {
    const long long t = h % g;
    h = g;
    g = t;
  }
  g = h;
  const long long want = (((o - pt.start) % r) + r) % r; // step x == want (mod r)
  if (want % g != 0)
    return k;
  const long long xs = r / g;
  const long long x0 = solveModular(pt.step / g, want / g, xs);
  const long long stride = xs * pt.step; // a multiple of r
  const long long pos0 = pt.start + x0 * pt.step;
  const long long jPart = x0 < pt.count ? plan::ceilDiv(pt.count - x0, xs) : 0;
  long long jLo = 0, jHi = jPart;
  if (CLIP) {
    jLo = segBegin > pos0 ? plan::ceilDiv(segBegin - pos0, stride) : 0;
    jHi = plan::minI(jPart, segEnd > pos0 ? plan::ceilDiv(segEnd - pos0, stride) : 0);
  }
  if (jHi <= jLo)
    return k;
  k.base = pt.offset + x0 + jLo * xs;
  k.step = xs;
  k.pos = pos0 + jLo * stride;
  k.posStep = stride;
  k.count = jHi - jLo;
  return k;
}

/// The query rows of tile `x` (blockIdx.x) of a strided branch's
/// tensor-core block kernel for a head of offset o: the ranges' pieces in
/// order, tilesPerPiece tiles each. The piece's rows of that residue are
/// local rows localFirst + a * r at positions first + a * r, a < count;
/// the tile covers a in [tile * bm, ...). False past the last piece.
struct QueryPiece {
  long long segBegin, segEnd; ///< the segment of the piece
  long long first;            ///< position of compact row 0
  long long localFirst;       ///< its local row
  long long count;            ///< compact rows of the piece
  long long tile;             ///< the tile within the piece
};
DATTN_HD bool queryPiece(const Params &rp, long long x, long long w, long long r, long long o,
                         long long bm, QueryPiece *q) {
  long long localBase = 0;
  for (int range = 0; range < 2; ++range) {
    const long long begin = rp.qBegin[range], end = rp.qEnd[range];
    const long long per = tilesPerPiece(begin, end, w, r, bm);
    const long long n = piecesOf(begin, end, w) * per;
    if (x < n) {
      q->segBegin = (begin / w + x / per) * w;
      q->segEnd = plan::minI(q->segBegin + w, rp.globalN);
      const long long pieceBegin = plan::maxI(q->segBegin, begin);
      const long long pieceEnd = plan::minI(q->segBegin + w, end);
      q->first = pieceBegin + ((o - pieceBegin % r) % r + r) % r;
      q->localFirst = localBase + (q->first - begin);
      q->count = q->first < pieceEnd ? plan::ceilDiv(pieceEnd - q->first, r) : 0;
      q->tile = x % per;
      return true;
    }
    x -= n;
    localBase += end - begin;
  }
  return false;
}

/// The rank's queries of residue o (mod r) inside [segBegin, segEnd) from
/// its range `range`: local rows localFirst + a * r at positions first +
/// a * r, a < count (count 0: none).
DATTN_HD void segmentQueries(const Params &rp, int range, long long segBegin, long long segEnd,
                             long long r, long long o, long long *first, long long *localFirst,
                             long long *count) {
  const long long begin = rp.qBegin[range], end = rp.qEnd[range];
  const long long lo = plan::maxI(segBegin, begin), hi = plan::minI(segEnd, end);
  *first = lo + ((o - lo % r) % r + r) % r;
  *localFirst = (range == 0 ? 0 : rp.qEnd[0] - rp.qBegin[0]) + (*first - begin);
  *count = *first < hi ? plan::ceilDiv(hi - *first, r) : 0;
}

/// Key tiles of bn keys per piece (segment) of a part, for the backward's
/// tensor-core kernels: a piece holds at most min(count, ceil(w / r)) keys
/// of one residue.
DATTN_HD long long keyTilesPerPiece(const Part &pt, long long w, long long r, long long bn) {
  return plan::ceilDiv(plan::minI(pt.count, plan::ceilDiv(w, r)), bn);
}
DATTN_HD long long keyTilesOf(const Part &pt, long long w, long long r, long long bn) {
  const long long last = pt.start + (pt.count - 1) * pt.step;
  return pt.count > 0 ? piecesOf(pt.start, last + 1, w) * keyTilesPerPiece(pt, w, r, bn) : 0;
}

/// The backward's key tile `x` (blockIdx.x) of kv head `kvHead`: the
/// pieces of that kv head's parts in order, keyTilesPerPiece tiles each.
/// False past the last.
struct KeyPiece {
  int part;
  long long segBegin, segEnd, tile; ///< tile: of the piece
  long long ofPart;                 ///< the tile's index among the part's
};
DATTN_HD bool keyPiece(const Params &rp, long long x, long long w, long long r, long long bn,
                       int kvHead, KeyPiece *k) {
  for (int part = 0; part < rp.numParts; ++part) {
    const Part &pt = rp.parts[part];
    if (pt.kvHead != kvHead)
      continue;
    const long long n = keyTilesOf(pt, w, r, bn);
    if (x < n) {
      const long long per = keyTilesPerPiece(pt, w, r, bn);
      k->part = part;
      k->segBegin = (pt.start / w + x / per) * w;
      k->segEnd = plan::minI(k->segBegin + w, rp.globalN);
      k->tile = x % per;
      k->ofPart = x;
      return true;
    }
    x -= n;
  }
  return false;
}

/// CTA x of a dK/dV grid split by s (WalkSplit) for a head of kv head
/// `kvHead`: its key tile (*k, as keyPiece numbers them), its chunk and
/// whether its walk is chunked. False if the CTA has no key tile.
DATTN_HD bool splitKeyTile(const Params &rp, const WalkSplit &s, long long x, long long w,
                           long long r, long long bn, int kvHead, KeyPiece *k, long long *chunk,
                           bool *chunked) {
  const bool split = s.chunks > 1 && s.prefixTiles != 0;
  *chunk = 0;
  if (split && x >= s.keyCtas) { // an extra chunk of a chunked key tile
    const long long e = x - s.keyCtas, c = e / (s.chunks - 1);
    *chunk = 1 + e % (s.chunks - 1);
    x = c;
    if (s.prefixTiles > 0) { // tile c % prefixTiles of the kv head's part c / prefixTiles
      const long long nth = c / s.prefixTiles, tile = c % s.prefixTiles;
      long long seen = 0, before = 0; // the kv head's parts, and their tiles, before it
      x = -1;
      for (int part = 0; part < rp.numParts && x < 0; ++part) {
        const Part &pt = rp.parts[part];
        if (pt.kvHead != kvHead)
          continue;
        const long long n = keyTilesOf(pt, w, r, bn);
        if (seen++ == nth) {
          if (tile >= n)
            return false;
          x = before + tile;
        }
        before += n;
      }
      if (x < 0)
        return false;
    }
  }
  if (!keyPiece(rp, x, w, r, bn, kvHead, k))
    return false;
  *chunked = split && (s.prefixTiles < 0 || k->ofPart < s.prefixTiles);
  return true;
}

/// The query tiles [*t0, *t1) a CTA walks: its key tile's walk from the
/// first tile with a pair, t0, to the end, or its chunk of it. False if
/// the chunk is empty.
DATTN_HD bool walkOfCta(const WalkSplit &s, bool chunked, long long chunk, long long *t0,
                        long long *t1) {
  return *t0 < *t1 && (!chunked || plan::chunkOfWalk(chunk, s.chunks, s.tiles, t0, t1));
}


// ---------------------------------------------------------------------------
// Blocks branches on tensor cores (ring_mma.cuh): the union's members decide
// every pair in global positions. The rank's rows are one or two contiguous
// ranges, tiled by queryPiece and keyPiece with one unbounded segment and
// dilation 1; a key tile is bn consecutive packed rows of one part, at
// global positions start + x * step.

/// Keys [*lo, *hi) that query rows [i0, i1) can reach through the union of
/// members[0..count) (*hi <= *lo: none).
DATTN_HD void unionKeyReach(const plan::Member *members, int count, bool causal, long long i0,
                            long long i1, long long n, long long *lo, long long *hi) {
  *lo = n;
  *hi = 0;
  for (int m = 0; m < count; ++m) {
    if (members[m].excluded) // takes pairs out, reaches none
      continue;
    long long a, b;
    plan::memberKeyRange(members[m], i0, i1, n, &a, &b);
    *lo = plan::minI(*lo, a);
    *hi = plan::maxI(*hi, b);
  }
  if (causal)
    *hi = plan::minI(*hi, i1);
}

/// Queries [*lo, *hi) that can reach keys [j0, j1) through the union: the
/// members' query ranges move monotonically with the key, so those of j0
/// and j1 - 1 span the others.
DATTN_HD void unionQueryReach(const plan::Member *members, int count, bool causal, long long j0,
                              long long j1, long long n, long long *lo, long long *hi) {
  *lo = n;
  *hi = 0;
  for (int m = 0; m < count; ++m)
    for (int end = 0; end < 2 && !members[m].excluded; ++end) {
      long long a, b;
      plan::memberQueryRange(members[m], end == 0 ? j0 : j1 - 1, n, &a, &b);
      *lo = plan::minI(*lo, a);
      *hi = plan::maxI(*hi, b);
    }
  if (causal)
    *lo = plan::maxI(*lo, j0);
}

/// Global positions [*j0, *j1) covered by the key tile of part `pt` that
/// starts at its packed row b0 (a superset of the tile's keys when step > 1).
DATTN_HD void keyTileSpan(const Part &pt, long long b0, long long bn, long long *j0,
                          long long *j1) {
  *j0 = pt.start + b0 * pt.step;
  *j1 = pt.start + (b0 + plan::minI(bn, pt.count - b0) - 1) * pt.step + 1;
}

/// The union's class of query rows [i0, i1) against keys [j0, j1), partial
/// where the tile has rows that are not real (`ragged`: zero-filled past a
/// part or a range, masked). A superset span is exact for skip and full
/// alike: the union keeps all of its pairs or none.
DATTN_HD int blocksTileClass(const plan::Member *members, int count, bool causal, long long i0,
                             long long i1, long long j0, long long j1, bool ragged) {
  const int cls = plan::unionTileClass(members, count, causal, i0, i1, j0, j1);
  return cls == plan::kFull && ragged ? (int)plan::kPartial : cls;
}

/// The forward's walk over a block's key tiles for query rows [i0, i1),
/// which reach keys [lo, hi): the part, the tile's first packed row in it
/// (-1: entering the part), the end of the part's rows in reach, the class.
struct BlocksKeyTile {
  int part;
  long long b0, b1;
  int cls;
};
/// The first tile at or after t of kv head `kvHead` that is not skipped
/// (part == numParts: none).
DATTN_HD BlocksKeyTile nextBlocksKeyTile(const Params &r, const plan::Member *members, int count,
                                         bool causal, int kvHead, long long i0, long long i1,
                                         long long lo, long long hi, long long bn,
                                         BlocksKeyTile t) {
  for (; t.part < r.numParts; ++t.part, t.b0 = -1) {
    const Part &pt = r.parts[t.part];
    if (pt.kvHead != kvHead || hi <= lo)
      continue;
    if (t.b0 < 0) {
      t.b0 = lo > pt.start ? plan::ceilDiv(lo - pt.start, pt.step) : 0;
      t.b1 = hi > pt.start ? plan::minI(pt.count, plan::ceilDiv(hi - pt.start, pt.step)) : 0;
    }
    for (; t.b0 < t.b1; t.b0 += bn) {
      long long j0, j1;
      keyTileSpan(pt, t.b0, bn, &j0, &j1);
      t.cls = blocksTileClass(members, count, causal, i0, i1, j0, j1, t.b0 + bn > pt.count);
      if (t.cls != plan::kSkip)
        return t;
    }
  }
  return t;
}

/// The backward's query tiles of bm rows over the rank's ranges (range 0's,
/// then range 1's) for a key tile whose keys queries [lo, hi) reach: of
/// each range only the tiles meeting [lo, hi) are walked.
struct BlocksQueryTiles {
  long long begin[2], local[2], rows[2]; ///< each range: first global row, local row, rows
  long long firstTile[2];                ///< each range's first tile index
  long long walk0[2], walk1[2];          ///< each range's walked tiles [walk0, walk1)
  long long tiles;                       ///< past the last tile

  DATTN_HD void init(const Params &r, long long lo, long long hi, long long bm) {
    long long localRow = 0;
    tiles = 0;
    for (int x = 0; x < 2; ++x) {
      begin[x] = r.qBegin[x];
      local[x] = localRow;
      rows[x] = r.qEnd[x] - r.qBegin[x];
      localRow += rows[x];
      firstTile[x] = tiles;
      const long long a = plan::maxI(lo, begin[x]) - begin[x];
      const long long b = plan::minI(hi, r.qEnd[x]) - begin[x];
      walk0[x] = a < b ? tiles + a / bm : tiles;
      walk1[x] = a < b ? tiles + plan::ceilDiv(b, bm) : tiles;
      tiles += plan::ceilDiv(rows[x], bm);
    }
  }
  /// Tile qt: its range, its first row in the range (qa0) and that row's
  /// global position.
  DATTN_HD int tile(long long qt, long long bm, long long *qa0, long long *i0) const {
    const int x = qt < firstTile[1] ? 0 : 1;
    *qa0 = (qt - firstTile[x]) * bm;
    *i0 = begin[x] + *qa0;
    return x;
  }
  /// The first walked tile at or after qt (tiles: none).
  DATTN_HD long long walked(long long qt) const {
    if (qt < walk0[0])
      qt = walk0[0];
    if (qt >= walk1[0] && qt < walk0[1])
      qt = walk0[1];
    return qt < walk1[0] || (qt >= walk0[1] && qt < walk1[1]) ? qt : tiles;
  }
};

} // namespace ring
} // namespace dattn
