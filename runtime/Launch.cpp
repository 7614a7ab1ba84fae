// runtime: how a tensor-core dK/dV kernel's walk over query tiles is split
// across CTAs (Launch.h).
#include "Launch.h"

#include "dattn/backward_params.cuh"
#include "dattn/error.h"

#include <algorithm>

namespace dattn::rt {
namespace {

/// How many query rows can reach one key tile of a blocks branch, at most.
int64_t blocksQuerySpan(const BranchPlan &b, int64_t seqLen, int64_t keyRows) {
  const int64_t span = b.keyColumnSpan(keyRows);
  return span == kUnbounded ? seqLen : std::min(span, seqLen);
}

/// Where only global tokens make a blocks branch's columns long: how many
/// rows hold the tokens (the largest prefix), else 0.
int64_t tokenRows(const BranchPlan &b, int64_t seqLen, int64_t keyRows, int64_t bm) {
  int64_t tokens = 0;
  for (const MemberPlan &m : b.members)
    if (m.kind == plan::kPrefix && !m.excluded)
      tokens = std::max(tokens, m.tokens);
  const int64_t span = b.keyColumnSpan(keyRows, /*withTokens=*/false);
  const bool restShort = span != kUnbounded &&
                         plan::ceilDiv(std::min(span, seqLen), bm) + 1 <= kQueryChunkTiles;
  return restShort ? std::min(tokens, seqLen) : 0;
}

/// About how many query tiles of one key tile's column have a pair in a
/// blocks branch whose members can reach any tile (random blocks, dilated
/// blocks, hierarchies), so that its walk ranges over the whole sequence:
/// what each member keeps of a column, summed, rounded up (random blocks:
/// their density of the sequence; dilated blocks: 1 + 2 rates blocks; a
/// hierarchy: 3 (2^levels - 1) blocks, its longest column; global tokens:
/// their rows; bounded bands and segments: their span). `walk` (the range
/// itself) for every other branch (its reach bounds the walk, or global
/// tokens alone make it long: tokenRows) and where a member keeps the whole
/// range: dense, unbounded bands or segments, block masks (known at run
/// time only).
int64_t keptQueryTiles(const BranchPlan &b, int64_t seqLen, int64_t keyRows, int64_t bm,
                       int64_t walk) {
  if (b.kind != BranchKind::Blocks || b.keyColumnSpan(keyRows, /*withTokens=*/false) != kUnbounded)
    return walk;
  double rows = 0;
  int64_t members = 0;
  for (const MemberPlan &m : b.members) {
    if (m.excluded) // takes pairs out, reaches none
      continue;
    ++members; // each member's rows may start and end inside a tile
    switch (m.kind) {
    case plan::kBand:
      if (m.left == kUnbounded || m.right == kUnbounded)
        return walk;
      rows += static_cast<double>(m.left + m.right + keyRows);
      break;
    case plan::kSegment:
      if (m.segment == kUnbounded)
        return walk;
      rows += static_cast<double>(2 * m.segment + keyRows);
      break;
    case plan::kPrefix:
      rows += static_cast<double>(m.tokens);
      break;
    case plan::kHash:
      rows += static_cast<double>(m.keep) / 4294967296.0 * static_cast<double>(seqLen) +
              static_cast<double>(m.block);
      break;
    case plan::kBlockOffsets:
      rows += static_cast<double>(1 + 2 * m.rates.size()) * static_cast<double>(m.block) +
              static_cast<double>(keyRows);
      break;
    case plan::kHierarchy:
      rows += 3.0 * static_cast<double>((int64_t(1) << m.levels) - 1) *
                  static_cast<double>(m.block) +
              static_cast<double>(keyRows);
      break;
    default: // dense, block masks
      return walk;
    }
  }
  const int64_t tiles = static_cast<int64_t>(rows / static_cast<double>(bm)) + 1 + members;
  return std::min(walk, tiles);
}

/// A split's chunk count: perChunk of the walk's `kept` tiles a chunk;
/// where every key tile is chunked (not only global tokens' tiles), no
/// more chunks than the grid needs to reach `fill` key CTAs.
int64_t chunkCount(int64_t kept, int64_t perChunk, bool everyKeyTile, int64_t keyCtas,
                   int64_t fill) {
  const int64_t chunks = plan::ceilDiv(kept, perChunk);
  return everyKeyTile ? std::min<int64_t>(chunks, plan::ceilDiv(fill, keyCtas)) : chunks;
}

} // namespace

int64_t keyCtasToFill(int multiprocessors, int64_t slices, int waves) {
  return plan::ceilDiv(int64_t(std::max(waves, 1)) * std::max(multiprocessors, 1),
                       std::max<int64_t>(slices, 1));
}

QuerySplit querySplit(const KernelInfo &ki, const BranchPlan &b, int64_t seqLen, int64_t keyCtas,
                      int64_t fill, bool accumulatesInAnyOrder) {
  QuerySplit s;
  const int64_t bm = ki.config.blockM;
  if (!accumulatesInAnyOrder || ki.role != KernelRole::DkvPass || ki.path != KernelPath::Mma ||
      bm <= 0 || keyCtas <= 0)
    return s;
  int64_t walk; // query tiles one key tile's CTA walks, at most
  int64_t chunked = keyCtas, perChunk = kQueryChunkTiles;
  bool tokensOnly = false; // only the tiles holding global tokens are chunked
  if (b.kind == BranchKind::Strided) {
    const int64_t w = plan::segmentLength(b.segment, seqLen);
    walk = plan::ceilDiv(plan::ceilDiv(w, b.dilation), bm);
  } else {
    walk = plan::ceilDiv(blocksQuerySpan(b, seqLen, ki.rowsPerCta), bm) + 1;
    if (const int64_t tokens = tokenRows(b, seqLen, ki.rowsPerCta, bm); tokens > 0) {
      chunked = std::min<int64_t>(keyCtas, plan::ceilDiv(tokens, ki.rowsPerCta));
      perChunk = kTokenChunkTiles;
      tokensOnly = true;
    }
  }
  // A chunk's share: perChunk of the walk's tiles with a pair. Random blocks
  // and the like reach the whole range but keep few of its tiles (bigbird_gqa
  // at 16K: 257 tiles, about 40 kept): chunks of 16 tiles of the range were
  // mostly empty CTAs, each loading K and V and adding dK and dV for a tile
  // or two.
  const int64_t kept = keptQueryTiles(b, seqLen, ki.rowsPerCta, bm, walk);
  const int64_t chunks = chunkCount(kept, perChunk, !tokensOnly, keyCtas, fill);
  if (chunks <= 1 || keyCtas + chunked * (chunks - 1) > (int64_t(1) << 31) - 1)
    return s;
  s.chunks = static_cast<int>(chunks);
  s.tiles = plan::ceilDiv(walk, chunks);
  s.chunkedKeyCtas = chunked;
  return s;
}

ring::WalkSplit ringQuerySplit(const KernelInfo &ki, const BranchPlan &b, int64_t globalN,
                               int64_t rankTiles, int64_t keyCtas, int numParts, int64_t fill) {
  ring::WalkSplit s{keyCtas, 0, -1, 1};
  const int64_t bm = ki.config.blockM;
  if (ki.role != KernelRole::DkvPass || ki.path != KernelPath::Mma || bm <= 0 || keyCtas <= 0 ||
      numParts <= 0)
    return s;
  int64_t walk, perChunk = kQueryChunkTiles, prefixTiles = -1;
  if (b.kind == BranchKind::Strided) {
    // A segment's residue, + 1: a segment may hold both ranges of a zigzag shard.
    const int64_t w = plan::segmentLength(b.segment, globalN);
    walk = plan::ceilDiv(plan::ceilDiv(w, b.dilation), bm) + 1;
  } else {
    // + 2: the reach may end in the first range and go on in the second.
    walk = plan::ceilDiv(blocksQuerySpan(b, globalN, ki.rowsPerCta), bm) + 2;
    if (const int64_t tokens = tokenRows(b, globalN, ki.rowsPerCta, bm); tokens > 0) {
      prefixTiles = plan::ceilDiv(tokens, ki.rowsPerCta);
      perChunk = kTokenChunkTiles;
    }
  }
  walk = std::min(walk, rankTiles);
  // As querySplit: chunks of perChunk kept tiles, here of the rank's rows.
  const int64_t kept =
      keptQueryTiles(b, std::min(globalN, rankTiles * bm), ki.rowsPerCta, bm, walk);
  const int64_t chunks = chunkCount(kept, perChunk, prefixTiles < 0, keyCtas, fill);
  const int64_t chunked = prefixTiles < 0 ? keyCtas : prefixTiles * numParts;
  if (chunks <= 1 || keyCtas + chunked * (chunks - 1) > (int64_t(1) << 31) - 1)
    return s;
  s.chunks = static_cast<int>(chunks);
  s.tiles = plan::ceilDiv(walk, chunks);
  s.prefixTiles = prefixTiles;
  return s;
}

RingKeyGrid ringKeyGrid(const std::vector<PackedPart> &parts, int kvHeads, int64_t w,
                        int64_t dilation, int64_t tileKeys) {
  std::vector<int64_t> tiles(static_cast<size_t>(std::max(kvHeads, 1)), 0);
  std::vector<int> partsOf(tiles.size(), 0);
  for (const PackedPart &p : parts) {
    const auto kv = static_cast<size_t>(p.kvHead);
    if (kv >= tiles.size())
      throw Error("ring: a block's part is of kv head " + std::to_string(p.kvHead) +
                  ", the spec has " + std::to_string(kvHeads));
    tiles[kv] += ring::keyTilesOf({p.rows.start, p.rows.step, p.rows.count, p.offset, p.kvHead},
                                  w, dilation, tileKeys);
    ++partsOf[kv];
  }
  return {*std::max_element(tiles.begin(), tiles.end()),
          *std::max_element(partsOf.begin(), partsOf.end())};
}

int64_t ringSplitGridX(const ring::WalkSplit &s, int numParts) {
  if (s.chunks <= 1)
    return s.keyCtas;
  return s.keyCtas + (s.prefixTiles < 0 ? s.keyCtas : s.prefixTiles * numParts) * (s.chunks - 1);
}

unsigned stepGrid(int64_t steps, int threads) {
  return static_cast<unsigned>(
      std::clamp<int64_t>((steps + threads - 1) / threads, 1, int64_t(65535) * 16));
}

unsigned finalizeGrid(int64_t qElems, int64_t kvElems, int what, int threads) {
  int64_t steps = 0;
  if (what & (bwd::kFinalizeDq | bwd::kZeroDq))
    steps = (qElems + kConvertElementsPerStep - 1) / kConvertElementsPerStep;
  if (what & (bwd::kFinalizeDkv | bwd::kZeroDkv))
    steps = std::max(steps, (kvElems + kDkvColumnsPerStep - 1) / kDkvColumnsPerStep);
  return stepGrid(steps, threads);
}

} // namespace dattn::rt
