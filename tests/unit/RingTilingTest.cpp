// The index arithmetic of the ring's tensor-core block kernels
// (templates/dattn/ring_params.cuh), checked on the CPU: walking every tile
// of the launch grid for every head must give each (query, key) pair of the
// branch between the rank's rows and the block's keys exactly once (a pair
// seen twice would be counted twice by the online softmax), with the local
// query row and the packed key row of each position right.
// - Strided branches (queryPiece, partRun, tilesPerPiece forward; keyPiece,
//   keyTilesOf, segmentQueries backward): random segments, dilations,
//   offsets, causal, GQA, N, ring sizes, both layouts and tile heights.
// - Blocks branches (nextBlocksKeyTile forward, BlocksQueryTiles backward,
//   blocksTileClass both): random unions of every pattern; a tile classed
//   full must hold only attended pairs, and a partial one is masked pair by
//   pair as the kernels do.
// Backward walks run whole and split across CTAs (splitKeyTile, walkOfCta),
// by the runtime's split (rt::ringQuerySplit) and by random ones. The own
// rows and every received block of the schedule.
#include "RandomSpec.h"

#include "dattn/compiler.h"
#include "dattn/ring.h"
#include "dattn/ring_params.cuh"
#include "Launch.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <tuple>

namespace dattn::test {
namespace {

/// One block a rank attends to: its parts (rows of kv heads, where each
/// row sits: packed row or local row).
using Parts = std::vector<PackedPart>;

/// The rank's own rows as the executor numbers them: one part per kv head
/// and shard range, local rows.
Parts ownParts(const std::vector<RowRange> &shard, int kvHeads) {
  Parts own;
  for (int k = 0; k < kvHeads; ++k) {
    int64_t local = 0;
    for (const RowRange &range : shard) {
      own.push_back({k, {range.begin, 1, range.end - range.begin}, local});
      local += range.end - range.begin;
    }
  }
  return own;
}

ring::Part devicePart(const PackedPart &p) {
  return {p.rows.start, p.rows.step, p.rows.count, p.offset, p.kvHead};
}

/// The ring's tensor-core dK/dV kernel as the runtime's split sees it:
/// query tiles of bm, key tiles (a CTA's keys) of bn.
KernelInfo dkvKernel(int64_t bm, int64_t bn) {
  KernelInfo ki;
  ki.role = KernelRole::DkvPass;
  ki.path = KernelPath::Mma;
  ki.config.blockM = static_cast<int>(bm);
  ki.config.blockN = static_cast<int>(bn);
  ki.rowsPerCta = static_cast<int>(bn);
  return ki;
}

/// Splits of a dK/dV grid of `keyCtas` key tiles over `parts` parts to walk
/// (ring::WalkSplit): none, the runtime's own for this branch and tiling,
/// every key tile chunked and each part's first tiles chunked, with random
/// chunk counts and lengths (the last chunk runs to the walk's end, so any
/// split must cover each pair once).
std::vector<ring::WalkSplit> walkSplits(SpecGenerator &gen, const BranchPlan &b, int64_t n,
                                        int64_t queryTiles, int64_t keyCtas, int parts,
                                        int64_t bm, int64_t bn) {
  const KernelInfo ki = dkvKernel(bm, bn);
  return {ring::WalkSplit{keyCtas, 0, -1, 1},
          rt::ringQuerySplit(ki, b, n, queryTiles, keyCtas, parts, int64_t(1) << 40),
          ring::WalkSplit{keyCtas, gen.uniform(1, 4), -1, static_cast<int>(gen.uniform(2, 5))},
          ring::WalkSplit{keyCtas, gen.uniform(1, 3), gen.uniform(1, 2),
                          static_cast<int>(gen.uniform(2, 6))}};
}

std::string splitName(const ring::WalkSplit &s) {
  return "split: " + std::to_string(s.chunks) + " chunks of " + std::to_string(s.tiles) +
         " tiles, prefix " + std::to_string(s.prefixTiles);
}

/// A CTA of a split dK/dV grid: its key tile, chunk and whether chunked.
struct SplitCta {
  ring::KeyPiece kp;
  long long chunk;
  bool chunked;
};

/// Kv head kv's key tiles (segment w, dilation r, tiles of bn) and parts in
/// rp: the backward grid of its heads runs over those alone (keyPiece).
struct KvKeys {
  int64_t tiles = 0;
  int parts = 0;
};
KvKeys kvKeys(const ring::Params &rp, int kv, int64_t w, int64_t r, int64_t bn) {
  KvKeys k;
  for (int p = 0; p < rp.numParts; ++p)
    if (rp.parts[p].kvHead == kv) {
      k.tiles += ring::keyTilesOf(rp.parts[p], w, r, bn);
      ++k.parts;
    }
  return k;
}

/// The CTAs of the grid that `split` makes of kv head kv's key tiles
/// (keyPiece with segment w, dilation r, tiles of bn; `keys`: their number
/// and parts) that have a key tile: every one of the first keys.tiles must,
/// and each is of kv.
std::vector<SplitCta> splitCtas(const ring::Params &rp, const ring::WalkSplit &split, int64_t w,
                                int64_t r, int64_t bn, int kv, const KvKeys &keys) {
  std::vector<SplitCta> out;
  const int64_t ctas = rt::ringSplitGridX(split, keys.parts);
  for (int64_t x = 0; x < ctas; ++x) {
    SplitCta c;
    if (ring::splitKeyTile(rp, split, x, w, r, bn, kv, &c.kp, &c.chunk, &c.chunked)) {
      EXPECT_EQ(rp.parts[c.kp.part].kvHead, kv) << "key tile " << x << " of another kv head";
      out.push_back(c);
    } else {
      EXPECT_GE(x, keys.tiles) << "key tile " << x << " has no key tile";
    }
  }
  return out;
}

void checkBlock(SpecGenerator &gen, const AttentionSpec &spec, const BranchPlan &b,
                const RingPlan &plan, int rank, const Parts &parts, int64_t bm,
                const std::string &what) {
  SCOPED_TRACE(what);
  const std::vector<RowRange> &shard = plan.rankPlans[rank].shard;
  ring::Params rp{};
  rp.globalN = plan.seqLen;
  for (size_t x = 0; x < shard.size() && x < 2; ++x) {
    rp.qBegin[x] = shard[x].begin;
    rp.qEnd[x] = shard[x].end;
  }
  const int64_t w = plan::segmentLength(b.segment, plan.seqLen), r = b.dilation;
  int64_t grid = 0;
  for (int range = 0; range < 2; ++range)
    grid += ring::piecesOf(rp.qBegin[range], rp.qEnd[range], w) *
            ring::tilesPerPiece(rp.qBegin[range], rp.qEnd[range], w, r, bm);
  const int group = spec.heads / spec.kvHeads;
  // Where each key position of the block sits, per kv head.
  std::map<std::pair<int, int64_t>, int64_t> keyRow;
  for (const PackedPart &p : parts)
    for (int64_t x = 0; x < p.rows.count; ++x)
      keyRow[{p.kvHead, p.rows.start + x * p.rows.step}] = p.offset + x;

  for (size_t hi = 0; hi < b.heads.size(); ++hi) {
    const int head = b.heads[hi], kv = head / group;
    const int64_t o = b.offsets[hi];
    // A tile's pair (i, j) of the lattice, unless the causal order drops it.
    auto take = [&](std::set<std::pair<int64_t, int64_t>> &into, int64_t i, int64_t j,
                    const char *pass) {
      if (spec.causal && j > i)
        return;
      EXPECT_TRUE(into.insert({i, j}).second)
          << pass << ", head " << head << ": pair (" << i << ", " << j << ") twice";
    };
    std::set<std::pair<int64_t, int64_t>> want, got;
    for (const RowRange &range : shard)
      for (int64_t i = range.begin; i < range.end; ++i)
        for (const auto &[key, row] : keyRow) {
          const int64_t j = key.second;
          if (key.first != kv || i % r != o || j % r != o || i / w != j / w ||
              (spec.causal && j > i))
            continue;
          want.insert({i, j});
        }
    for (int64_t x = 0; x < grid; ++x) {
      ring::QueryPiece q;
      ASSERT_TRUE(ring::queryPiece(rp, x, w, r, o, bm, &q)) << "tile " << x;
      for (int64_t a = q.tile * bm; a < std::min<int64_t>(q.tile * bm + bm, q.count); ++a) {
        const int64_t i = q.first + a * r;
        ASSERT_EQ(localRow(shard, i), q.localFirst + a * r) << "query " << i;
        ASSERT_TRUE(i >= q.segBegin && i < q.segEnd && i % r == o) << "query " << i;
        for (const PackedPart &p : parts) {
          if (p.kvHead != kv)
            continue;
          const ring::KeyRun k = ring::partRun(devicePart(p), r, o, q.segBegin, q.segEnd);
          ASSERT_EQ(k.posStep % r, 0) << "a run stays on the lattice";
          if (b.segment == kUnbounded) { // the kernels skip the clipping there
            const ring::KeyRun u = ring::partRun<false>(devicePart(p), r, o, 0, 0);
            ASSERT_TRUE(u.base == k.base && u.step == k.step && u.pos == k.pos &&
                        u.posStep == k.posStep && u.count == k.count);
          }
          for (int64_t c = 0; c < k.count; ++c) {
            const int64_t j = k.pos + c * k.posStep;
            ASSERT_EQ(keyRow.at({kv, j}), k.base + c * k.step) << "key " << j;
            take(got, i, j, "forward");
          }
        }
      }
    }
    EXPECT_EQ(got, want) << "head " << head << " (offset " << o << ")";
    if (got != want)
      return;

    // Backward: key tiles (keyPiece) against the segment's query tiles,
    // from the first with a pair, each walk whole or in chunks
    // (splitKeyTile, walkOfCta).
    std::vector<ring::Part> device;
    for (const PackedPart &p : parts)
      device.push_back(devicePart(p));
    rp.parts = device.data();
    rp.numParts = static_cast<int>(device.size());
    const KvKeys keys = kvKeys(rp, kv, w, r, bm);
    int64_t queryTiles = 0;
    for (int range = 0; range < 2; ++range)
      queryTiles += ring::tilesPerPiece(rp.qBegin[range], rp.qEnd[range], w, r, bm);
    std::set<std::pair<int64_t, int64_t>> back;
    for (const ring::WalkSplit &split :
         walkSplits(gen, b, plan.seqLen, queryTiles, keys.tiles, keys.parts, bm, bm)) {
      SCOPED_TRACE(splitName(split));
      back.clear();
      for (const auto &[kp, chunk, chunked] : splitCtas(rp, split, w, r, bm, kv, keys)) {
        const ring::KeyRun k = ring::partRun(device[kp.part], r, o, kp.segBegin, kp.segEnd);
        const int64_t kb0 = kp.tile * bm, kb1 = std::min<int64_t>(kb0 + bm, k.count);
        if (kb0 >= kb1)
          continue;
        // The segment's queries, tile qt: range 0's tiles, then range 1's.
        long long first[2], localFirst[2], count[2];
        for (int range = 0; range < 2; ++range)
          ring::segmentQueries(rp, range, kp.segBegin, kp.segEnd, r, o, &first[range],
                               &localFirst[range], &count[range]);
        const int64_t tiles0 = plan::ceilDiv(count[0], bm);
        long long t1 = tiles0 + plan::ceilDiv(count[1], bm), t0 = t1;
        auto queriesOf = [&](int64_t qt, int *range, int64_t *a0, int64_t *a1) {
          *range = qt < tiles0 ? 0 : 1;
          *a0 = (qt - (*range == 0 ? 0 : tiles0)) * bm;
          *a1 = std::min<int64_t>(*a0 + bm, count[*range]);
        };
        const int64_t jFirst = k.pos + kb0 * k.posStep;
        for (int64_t qt = 0; qt < t1 && t0 == t1; ++qt) { // the first tile with a pair
          int range;
          int64_t a0, a1;
          queriesOf(qt, &range, &a0, &a1);
          if (!spec.causal || first[range] + (a1 - 1) * r >= jFirst)
            t0 = qt;
        }
        if (!ring::walkOfCta(split, chunked, chunk, &t0, &t1))
          continue;
        for (int64_t qt = t0; qt < t1; ++qt) {
          int range;
          int64_t a0, a1;
          queriesOf(qt, &range, &a0, &a1);
          for (int64_t c = kb0; c < kb1; ++c) {
            const int64_t j = k.pos + c * k.posStep;
            ASSERT_EQ(keyRow.at({kv, j}), k.base + c * k.step) << "key " << j;
            for (int64_t a = a0; a < a1; ++a) {
              const int64_t i = first[range] + a * r;
              ASSERT_EQ(localRow(shard, i), localFirst[range] + a * r) << "query " << i;
              take(back, i, j, "backward");
            }
          }
        }
      }
      EXPECT_EQ(back, want) << "backward, head " << head << " (offset " << o << ")";
      if (back != want)
        return;
    }
  }
}

/// Up to 8 pairs of `a` missing from `b`, for a failure's message.
std::string missingFrom(const std::set<std::pair<int64_t, int64_t>> &a,
                        const std::set<std::pair<int64_t, int64_t>> &b) {
  std::string out;
  int shown = 0;
  for (const auto &[i, j] : a)
    if (!b.count({i, j}) && shown++ < 8)
      out += " (" + std::to_string(i) + ", " + std::to_string(j) + ")";
  return out.empty() ? " none" : out;
}

/// The blocks kernels' walks over one block, for every head of blocks
/// branch b: forward, every query tile of the grid over the key tiles that
/// nextBlocksKeyTile yields; backward, every key tile (keyPiece) over the
/// query tiles BlocksQueryTiles walks. Each against the union's pairs.
void checkBlocksBlock(SpecGenerator &gen, const AttentionSpec &spec, const BranchPlan &b,
                      const RingPlan &plan, int rank, const Parts &parts, const BlockMask &mask,
                      int64_t bm, int64_t bn, const std::string &what) {
  SCOPED_TRACE(what);
  const std::vector<RowRange> &shard = plan.rankPlans[rank].shard;
  const int64_t n = plan.seqLen;
  ring::Params rp{};
  rp.globalN = n;
  for (size_t x = 0; x < shard.size() && x < 2; ++x) {
    rp.qBegin[x] = shard[x].begin;
    rp.qEnd[x] = shard[x].end;
  }
  std::vector<ring::Part> device;
  for (const PackedPart &p : parts)
    device.push_back(devicePart(p));
  rp.parts = device.data();
  rp.numParts = static_cast<int>(device.size());
  int64_t grid = 0;
  for (int range = 0; range < 2; ++range)
    grid += ring::piecesOf(rp.qBegin[range], rp.qEnd[range], n) *
            ring::tilesPerPiece(rp.qBegin[range], rp.qEnd[range], n, 1, bm);
  const int group = spec.heads / spec.kvHeads;
  std::map<std::pair<int, int64_t>, int64_t> keyRow; // (kv head, position) -> packed row
  for (const PackedPart &p : parts)
    for (int64_t x = 0; x < p.rows.count; ++x)
      keyRow[{p.kvHead, p.rows.start + x * p.rows.step}] = p.offset + x;

  for (size_t hi = 0; hi < b.heads.size(); ++hi) {
    const int head = b.heads[hi], kv = head / group;
    std::vector<plan::Member> members;
    for (const MemberPlan &m : b.members)
      members.push_back(m.forHead(static_cast<int>(hi), head, mask.rowOffsets.data(),
                                  mask.colIndices.data()));
    const int count = static_cast<int>(members.size());
    auto kept = [&](int64_t i, int64_t j) {
      return !(spec.causal && j > i) && plan::unionContains(members.data(), count, i, j);
    };
    std::set<std::pair<int64_t, int64_t>> want, got, back;
    for (const RowRange &range : shard)
      for (int64_t i = range.begin; i < range.end; ++i)
        for (const auto &[key, row] : keyRow)
          if (key.first == kv && kept(i, key.second))
            want.insert({i, key.second});
    // A tile's pair (i, j): a full tile holds only attended pairs; a
    // partial one keeps those the mask keeps.
    auto take = [&](std::set<std::pair<int64_t, int64_t>> &into, int cls, int64_t i, int64_t j,
                    const char *pass) {
      if (cls == plan::kFull)
        EXPECT_TRUE(kept(i, j)) << pass << ", head " << head << ": (" << i << ", " << j
                                << ") is in a full tile, outside the branch";
      else if (!kept(i, j))
        return;
      EXPECT_TRUE(into.insert({i, j}).second)
          << pass << ", head " << head << ": pair (" << i << ", " << j << ") twice";
    };

    for (int64_t x = 0; x < grid; ++x) {
      ring::QueryPiece q;
      ASSERT_TRUE(ring::queryPiece(rp, x, n, 1, 0, bm, &q)) << "tile " << x;
      const int64_t qa0 = q.tile * bm, qa1 = std::min<int64_t>(qa0 + bm, q.count);
      if (qa0 >= q.count)
        continue;
      const int64_t i0 = q.first + qa0, i1 = q.first + qa1;
      for (int64_t a = qa0; a < qa1; ++a)
        ASSERT_EQ(localRow(shard, q.first + a), q.localFirst + a) << "query " << q.first + a;
      long long lo, hi;
      ring::unionKeyReach(members.data(), count, spec.causal, i0, i1, n, &lo, &hi);
      auto next = [&](ring::BlocksKeyTile t) {
        return ring::nextBlocksKeyTile(rp, members.data(), count, spec.causal, kv, i0, i1, lo,
                                       hi, bn, t);
      };
      for (ring::BlocksKeyTile t = next({0, -1, 0, 0}); t.part < rp.numParts;
           t.b0 += bn, t = next(t)) {
        const ring::Part &pt = device[t.part];
        ASSERT_EQ(pt.kvHead, kv);
        ASSERT_NE(t.cls, plan::kSkip);
        if (t.b0 + bn > pt.count) {
          ASSERT_EQ(t.cls, plan::kPartial) << "a tile past the part's rows is masked";
        }
        for (int64_t k = t.b0; k < std::min<int64_t>(t.b0 + bn, pt.count); ++k) {
          const int64_t j = pt.start + k * pt.step;
          ASSERT_EQ(keyRow.at({kv, j}), pt.offset + k) << "key " << j;
          for (int64_t a = qa0; a < qa1; ++a)
            take(got, t.cls, q.first + a, j, "forward");
        }
      }
    }
    EXPECT_TRUE(got == want) << "forward, head " << head << ": pairs missed:"
                             << missingFrom(want, got) << "; extra:" << missingFrom(got, want);

    int64_t queryTiles = 0;
    for (int range = 0; range < 2; ++range)
      queryTiles += ring::tilesPerPiece(rp.qBegin[range], rp.qEnd[range], n, 1, bm);
    const KvKeys keys = kvKeys(rp, kv, n, 1, bn);
    for (const ring::WalkSplit &split :
         walkSplits(gen, b, n, queryTiles, keys.tiles, keys.parts, bm, bn)) {
      SCOPED_TRACE(splitName(split));
      back.clear();
      for (const auto &[kp, chunk, chunked] : splitCtas(rp, split, n, 1, bn, kv, keys)) {
        const ring::Part &pt = device[kp.part];
        const int64_t kb0 = kp.tile * bn, kLeft = pt.count - kb0;
        if (kLeft <= 0)
          continue;
        long long j0, j1, lo, hi;
        ring::keyTileSpan(pt, kb0, bn, &j0, &j1);
        ring::unionQueryReach(members.data(), count, spec.causal, j0, j1, n, &lo, &hi);
        ring::BlocksQueryTiles tiles;
        tiles.init(rp, lo, hi, bm);
        auto classOf = [&](long long qt, long long *qa0, long long *i0, int *range) {
          *range = tiles.tile(qt, bm, qa0, i0);
          const int64_t rows = tiles.rows[*range];
          return ring::blocksTileClass(members.data(), count, spec.causal, *i0,
                                       *i0 + (std::min<int64_t>(*qa0 + bm, rows) - *qa0), j0,
                                       j1, kLeft < bn || *qa0 + bm > rows);
        };
        // As the kernel: the walk from its first tile with a pair, whole or
        // this CTA's chunk of it.
        long long t1 = tiles.tiles, t0 = t1;
        for (long long qt = tiles.walked(0); qt < t1; qt = tiles.walked(qt + 1)) {
          long long qa0, i0;
          int range;
          if (classOf(qt, &qa0, &i0, &range) != plan::kSkip) {
            t0 = qt;
            break;
          }
        }
        if (!ring::walkOfCta(split, chunked, chunk, &t0, &t1))
          continue;
        for (long long qt = tiles.walked(t0); qt < t1; qt = tiles.walked(qt + 1)) {
          long long qa0, i0;
          int range;
          const int cls = classOf(qt, &qa0, &i0, &range);
          const int64_t rows = tiles.rows[range], qa1 = std::min<int64_t>(qa0 + bm, rows);
          ASSERT_LT(qa0, rows) << "query tile " << qt;
          if (cls == plan::kSkip)
            continue;
          for (int64_t a = qa0; a < qa1; ++a) {
            const int64_t i = i0 + (a - qa0);
            ASSERT_EQ(localRow(shard, i), tiles.local[range] + a) << "query " << i;
            for (int64_t k = kb0; k < std::min<int64_t>(kb0 + bn, pt.count); ++k)
              take(back, cls, i, pt.start + k * pt.step, "backward");
          }
        }
      }
      EXPECT_TRUE(back == want) << "backward, head " << head << ": pairs missed:"
                                << missingFrom(want, back)
                                << "; extra:" << missingFrom(back, want);
      if (back != want)
        return;
    }
    if (got != want)
      return;
  }
}

TEST(RingTiling, BlocksTilesCoverEachPairOnce) {
  SpecGenerator gen(31);
  int checked = 0;
  for (int trial = 0; trial < 150 && !::testing::Test::HasFailure(); ++trial) {
    AttentionSpec spec = gen.spec();
    spec.ringLayout = gen.coin(0.3) ? RingLayout::Zigzag : RingLayout::Contiguous;
    const int64_t n = gen.uniform(1, 300);
    const BlockMask mask = spec.blockMaskBlock() > 0 ? gen.mask(spec, n) : BlockMask{};
    const AttentionPlan ap = planAttention(spec);
    const int ranks = static_cast<int>(std::vector<int64_t>{1, 2, 3, 4, 8}[gen.uniform(0, 4)]);
    const int64_t bm = std::vector<int64_t>{16, 32, 64}[gen.uniform(0, 2)];
    const int64_t bn = std::vector<int64_t>{16, 32, 64}[gen.uniform(0, 2)];
    const RingPlan plan =
        planRing(ap, n, ranks, spec.blockMaskBlock() > 0 ? &mask : nullptr);
    const RingSchedule schedule = scheduleRing(plan);
    SCOPED_TRACE(spec.canonical() + " N = " + std::to_string(n) + ", P = " +
                 std::to_string(ranks) + ", bm = " + std::to_string(bm) + ", bn = " +
                 std::to_string(bn));
    for (const BranchPlan &b : ap.branches) {
      if (b.kind != BranchKind::Blocks)
        continue;
      for (int rank = 0; rank < ranks && !::testing::Test::HasFailure(); ++rank) {
        const Parts own = ownParts(plan.rankPlans[rank].shard, spec.kvHeads);
        checkBlocksBlock(gen, spec, b, plan, rank, own, mask, bm, bn,
                         "rank " + std::to_string(rank) + ", own rows");
        for (const RingStep &st : schedule.ranks[rank].steps)
          if (st.recv.peer >= 0)
            checkBlocksBlock(gen, spec, b, plan, rank, st.recv.parts, mask, bm, bn,
                             "rank " + std::to_string(rank) + ", step " +
                                 std::to_string(st.step));
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 100) << "blocks branches checked";
}

TEST(RingTiling, StridedTilesCoverEachPairOnce) {
  SpecGenerator gen(99);
  for (int trial = 0; trial < 300; ++trial) {
    const int kv = static_cast<int>(gen.uniform(1, 3)), heads = kv * int(gen.uniform(1, 3));
    const int64_t r = gen.uniform(1, 4);
    const int64_t n = gen.uniform(1, 600);
    const bool unbounded = gen.uniform(0, 4) == 0;
    // Segments need not be multiples of the dilation.
    const int64_t segment =
        unbounded ? 0 : (gen.uniform(0, 1) ? r * gen.uniform(1, 40) : gen.uniform(1, 160));
    const std::string text =
        "attention t { heads = " + std::to_string(heads) + " kv_heads = " + std::to_string(kv) +
        " head_dim = 64 dtype = bf16 causal = " + (gen.uniform(0, 1) ? "true" : "false") +
        (gen.uniform(0, 2) == 0 ? " ring_layout = zigzag" : "") + " branch { " +
        (unbounded ? "dilated(segment = inf, dilation = " + std::to_string(r)
                   : "dilated(segment = " + std::to_string(segment) +
                         ", dilation = " + std::to_string(r)) +
        ", offset = " +
        (gen.uniform(0, 1) ? std::string("head") : std::to_string(gen.uniform(0, r - 1))) +
        ") } }";
    ParseResult pr = parseSpec(text, "t.dattn");
    ASSERT_TRUE(pr.ok()) << text;
    const AttentionSpec &spec = pr.file.attentions[0];
    const AttentionPlan ap = planAttention(spec);
    const int ranks = static_cast<int>(std::vector<int64_t>{1, 2, 3, 4, 8}[gen.uniform(0, 4)]);
    // 128: the wgmma block kernels' query tiles forward and key tiles backward.
    const int64_t bm = std::vector<int64_t>{16, 32, 64, 128}[gen.uniform(0, 3)];
    const RingPlan plan = planRing(ap, n, ranks);
    const RingSchedule schedule = scheduleRing(plan);
    SCOPED_TRACE(text + " N = " + std::to_string(n) + ", P = " + std::to_string(ranks) +
                 ", bm = " + std::to_string(bm));
    for (const BranchPlan &b : ap.branches) {
      if (b.kind != BranchKind::Strided)
        continue;
      for (int rank = 0; rank < ranks; ++rank) {
        const Parts own = ownParts(plan.rankPlans[rank].shard, spec.kvHeads);
        checkBlock(gen, spec, b, plan, rank, own, bm, "rank " + std::to_string(rank) + ", own rows");
        for (const RingStep &st : schedule.ranks[rank].steps)
          if (st.recv.peer >= 0)
            checkBlock(gen, spec, b, plan, rank, st.recv.parts, bm,
                       "rank " + std::to_string(rank) + ", step " + std::to_string(st.step));
        if (::testing::Test::HasFailure())
          return;
      }
    }
  }
}

// The backward grid as the runtime sizes it (rt::ringKeyGrid, ringQuerySplit,
// ringSplitGridX) for the wgmma dK/dV tiles (64 queries, 128 keys): for a
// dense spec every CTA of every head must find a key tile of its kv head.
// Numbered over every kv head's parts, 11 of 12 CTAs of a 12-kv-head spec
// found another kv head's tile and returned (2.4x the one-GPU backward's
// time for dense at 128K on the H100).
TEST(RingTiling, DenseBackwardGridHasNoEmptyCtas) {
  for (const char *heads : {"heads = 12", "heads = 8 kv_heads = 2"})
    for (const char *layout : {"", " ring_layout = zigzag"})
      for (int ranks : {1, 2, 4}) {
        const std::string text = std::string("attention d { ") + heads +
                                 " head_dim = 128 dtype = bf16" + layout +
                                 " branch { dense } }";
        ParseResult pr = parseSpec(text, "d.dattn");
        ASSERT_TRUE(pr.ok()) << text;
        const AttentionSpec &spec = pr.file.attentions[0];
        const AttentionPlan ap = planAttention(spec);
        const BranchPlan &b = ap.branches.at(0);
        const int64_t n = 8192, bm = 64, bn = 128;
        const RingPlan plan = planRing(ap, n, ranks);
        const RingSchedule schedule = scheduleRing(plan);
        const KernelInfo ki = dkvKernel(bm, bn);
        const int64_t w = plan::segmentLength(b.segment, n);
        for (int rank = 0; rank < ranks; ++rank) {
          const std::vector<RowRange> &shard = plan.rankPlans[rank].shard;
          std::vector<Parts> blocks{ownParts(shard, spec.kvHeads)};
          for (const RingStep &st : schedule.ranks[rank].steps)
            if (st.recv.peer >= 0)
              blocks.push_back(st.recv.parts);
          ring::Params rp{};
          rp.globalN = n;
          for (size_t x = 0; x < shard.size() && x < 2; ++x) {
            rp.qBegin[x] = shard[x].begin;
            rp.qEnd[x] = shard[x].end;
          }
          int64_t queryTiles = 0;
          for (int range = 0; range < 2; ++range)
            queryTiles += ring::tilesPerPiece(rp.qBegin[range], rp.qEnd[range], w, 1, bm);
          for (size_t bi = 0; bi < blocks.size(); ++bi) {
            SCOPED_TRACE(text + ", P = " + std::to_string(ranks) + ", rank " +
                         std::to_string(rank) + ", block " + std::to_string(bi));
            std::vector<ring::Part> device;
            for (const PackedPart &p : blocks[bi])
              device.push_back(devicePart(p));
            rp.parts = device.data();
            rp.numParts = static_cast<int>(device.size());
            const rt::RingKeyGrid keys = rt::ringKeyGrid(blocks[bi], spec.kvHeads, w, 1, bn);
            const ring::WalkSplit split =
                rt::ringQuerySplit(ki, b, n, queryTiles, keys.keyTiles, keys.partsPerKvHead,
                                   rt::keyCtasToFill(132, spec.heads));
            const int64_t gx = rt::ringSplitGridX(split, keys.partsPerKvHead);
            int64_t empty = 0;
            for (int head = 0; head < spec.heads; ++head) {
              const int kv = head / (spec.heads / spec.kvHeads);
              for (int64_t x = 0; x < gx; ++x) {
                ring::KeyPiece kp;
                long long chunk;
                bool chunked;
                if (!ring::splitKeyTile(rp, split, x, w, 1, bn, kv, &kp, &chunk, &chunked) ||
                    device[kp.part].kvHead != kv)
                  ++empty;
              }
            }
            EXPECT_EQ(empty, 0) << "of " << gx * spec.heads << " CTAs";
          }
        }
      }
}

} // namespace
} // namespace dattn::test
