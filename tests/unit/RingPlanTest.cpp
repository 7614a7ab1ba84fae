// The ring plan against brute force: for random specs, N and ring sizes,
// every (peer, kv head, key row) a rank's plan says it receives is exactly
// the set of remote keys its queries reach in the reference's key sets
// (reference/Membership.cpp, causal included), no more and no less; runs are
// disjoint, ascending and inside the peer's shard; bytes follow the rows.
#include "RandomSpec.h"

#include "dattn/compiler.h"
#include "dattn/error.h"
#include "dattn/ring.h"

#include <gtest/gtest.h>

#include <set>
#include <tuple>

namespace dattn::test {
namespace {

using Needed = std::set<std::tuple<int, int, int64_t>>; // (peer, kv head, row)

/// The owner of each row, straight from the layout's definition: P equal
/// shards, or 2P equal chunks of which rank r holds r and 2P - 1 - r.
int owner(const AttentionSpec &spec, int64_t n, int ranks, int64_t row) {
  if (spec.ringLayout == RingLayout::Zigzag) {
    const int64_t c = (n + 2 * ranks - 1) / (2 * ranks);
    for (int r = 0; r < ranks; ++r)
      if (row / c == r || row / c == 2 * ranks - 1 - r)
        return r;
    return -1;
  }
  return static_cast<int>(row / ((n + ranks - 1) / ranks));
}

Needed bruteForce(const AttentionSpec &spec, int64_t n, int ranks, int rank,
                  const BlockMask *mask) {
  Needed out;
  for (const Branch &b : spec.branches)
    for (int h : b.heads)
      for (int64_t i = 0; i < n; ++i) {
        if (owner(spec, n, ranks, i) != rank)
          continue;
        for (int64_t j = 0; j < n; ++j) {
          const int o = owner(spec, n, ranks, j);
          if (o != rank && branchContains(spec, b, h, i, j, n, mask))
            out.insert({o, spec.kvHeadOf(h), j});
        }
      }
  return out;
}

void checkPlan(const AttentionSpec &spec, int64_t n, int ranks, const BlockMask *mask) {
  const RingPlan plan = planRing(planAttention(spec), n, ranks, mask);
  ASSERT_EQ(plan.rankPlans.size(), static_cast<size_t>(ranks));
  int64_t totalForward = 0;
  for (const RankPlan &rp : plan.rankPlans) {
    const std::string what = spec.canonical() + "N = " + std::to_string(n) + ", P = " +
                             std::to_string(ranks) + ", rank " + std::to_string(rp.rank);
    Needed planned;
    int64_t rows = 0;
    // The layout: every row has exactly one owner, the one the plan says.
    for (const RowRange &r : rp.shard)
      for (int64_t x = r.begin; x < r.end; ++x)
        ASSERT_EQ(owner(spec, n, ranks, x), rp.rank) << what << ": row " << x;
    for (const PeerRows &pr : rp.receives) {
      ASSERT_NE(pr.peer, rp.rank) << what;
      int64_t prev = -1, count = 0;
      for (const RowRun &r : pr.rows) {
        ASSERT_GT(r.count, 0) << what;
        ASSERT_GE(r.step, 1) << what;
        EXPECT_GT(r.start, prev) << what << ": runs overlap or are out of order";
        EXPECT_EQ(owner(spec, n, ranks, r.start), pr.peer) << what;
        EXPECT_EQ(owner(spec, n, ranks, r.last()), pr.peer) << what;
        prev = r.last();
        for (int64_t k = 0; k < r.count; ++k)
          EXPECT_TRUE(planned.insert({pr.peer, pr.kvHead, r.start + k * r.step}).second)
              << what << ": row " << r.start + k * r.step << " listed twice";
        count += r.count;
      }
      EXPECT_EQ(count, pr.count) << what;
      rows += count;
    }
    EXPECT_EQ(rows, rp.rowsReceived) << what;
    EXPECT_EQ(rp.bytesForward, rows * spec.headDim * (spec.dtype == DType::F32 ? 4 : 2) * 2)
        << what;
    totalForward += rp.bytesForward;
    const Needed want = bruteForce(spec, n, ranks, rp.rank, mask);
    if (planned != want) {
      std::string missing, extra;
      for (const auto &t : want)
        if (!planned.count(t) && missing.size() < 200)
          missing += " (" + std::to_string(std::get<0>(t)) + "," + std::to_string(std::get<1>(t)) +
                     "," + std::to_string(std::get<2>(t)) + ")";
      for (const auto &t : planned)
        if (!want.count(t) && extra.size() < 200)
          extra += " (" + std::to_string(std::get<0>(t)) + "," + std::to_string(std::get<1>(t)) +
                   "," + std::to_string(std::get<2>(t)) + ")";
      ADD_FAILURE() << what << "\nmissing (peer, kv head, row):" << missing
                    << "\nnot needed:" << extra;
    }
  }
  EXPECT_EQ(plan.totalBytesForward, totalForward);
}

TEST(RingPlan, MatchesBruteForceOnRandomSpecs) {
  SpecGenerator gen(71);
  for (int trial = 0; trial < 400; ++trial) {
    AttentionSpec spec = gen.spec();
    if (trial % 3 == 0) // a third with the zigzag layout
      spec.ringLayout = RingLayout::Zigzag;
    const int64_t n = gen.uniform(1, 200);
    const int ranks = static_cast<int>(std::vector<int64_t>{1, 2, 3, 4, 8}[gen.uniform(0, 4)]);
    BlockMask mask;
    if (spec.needsBlockMask())
      mask = gen.mask(spec, n);
    SCOPED_TRACE("trial " + std::to_string(trial));
    checkPlan(spec, n, ranks, spec.needsBlockMask() ? &mask : nullptr);
  }
}

TEST(RingPlan, ExamplesMatchBruteForce) {
  for (const auto &f : exampleFiles())
    for (AttentionSpec spec : loadSpecFile(f).attentions) {
      if (spec.needsBlockMask())
        continue; // covered by the random specs
      spec.heads = std::min(spec.heads, 4); // a brute force the CPU affords
      spec.kvHeads = spec.heads % spec.kvHeads == 0 ? spec.kvHeads : spec.heads;
      for (auto &b : spec.branches) {
        std::vector<int> kept;
        for (int h : b.heads)
          if (h < spec.heads)
            kept.push_back(h);
        b.heads = kept.empty() ? std::vector<int>{0} : kept;
      }
      for (int ranks : {2, 3})
        for (RingLayout layout : {RingLayout::Contiguous, RingLayout::Zigzag}) {
          spec.ringLayout = layout;
          checkPlan(spec, 256 + 17, ranks, nullptr);
        }
    }
}

TEST(RingPlan, SegmentsInsideShardsAreLocal) {
  // Head-partitioned LongNet, every segment inside a shard: nothing moves.
  ParseResult r = parseSpec("attention t { heads = 3 head_dim = 64 ring = 4 "
                            "branch heads 0 { dilated(segment = 64, dilation = 1) } "
                            "branch heads 1 { dilated(segment = 128, dilation = 2, offset = 1) } "
                            "branch heads 2 { dilated(segment = 256, dilation = 4, offset = 2) } }",
                            "t.dattn");
  ASSERT_TRUE(r.ok()) << r.formatDiagnostics();
  const RingPlan plan = planRing(planAttention(r.file.attentions[0]), 1024, 4);
  EXPECT_EQ(plan.totalBytesForward, 0);
  for (const BranchRingPlan &b : plan.branches)
    EXPECT_EQ(b.primitive, RingPrimitive::Local);
}

TEST(RingPlan, PacksPerKvHeadNotTheUnion) {
  // Dilation 4 with offset = head over 4 heads and 4 kv heads: each kv head
  // needs a quarter of the peer's rows, not all of them.
  ParseResult r = parseSpec("attention t { heads = 4 head_dim = 64 "
                            "branch { dilated(segment = inf, dilation = 4, offset = head) } }",
                            "t.dattn");
  ASSERT_TRUE(r.ok());
  const RingPlan plan = planRing(planAttention(r.file.attentions[0]), 1024, 2);
  EXPECT_EQ(plan.branches[0].primitive, RingPrimitive::Gather);
  for (const RankPlan &rp : plan.rankPlans) {
    ASSERT_EQ(rp.receives.size(), 4u);
    for (const PeerRows &pr : rp.receives) {
      EXPECT_EQ(pr.count, 128);
      ASSERT_EQ(pr.rows.size(), 1u);
      EXPECT_EQ(pr.rows[0].step, 4);
    }
  }
}

TEST(RingPlan, ZigzagEvensOutCausalWork) {
  // Dense causal attention over 4 ranks: with contiguous shards the last
  // rank attends 7x the pairs of the first; zigzag gives every rank the same
  // number of (query, key) pairs, and every rank holds 2 chunks.
  ParseResult r = parseSpec("attention t { heads = 1 head_dim = 64 causal = true ring = 4 "
                            "ring_layout = zigzag branch { dense } }",
                            "t.dattn");
  ASSERT_TRUE(r.ok()) << r.formatDiagnostics();
  const AttentionSpec &spec = r.file.attentions[0];
  EXPECT_NE(spec.canonical().find("ring_layout = zigzag"), std::string::npos);
  const int64_t n = 800;
  const RingPlan plan = planRing(planAttention(spec), n, 4);
  EXPECT_EQ(plan.layout, RingLayout::Zigzag);
  for (const RankPlan &rp : plan.rankPlans) {
    ASSERT_EQ(rp.shard.size(), 2u);
    int64_t pairs = 0;
    for (const RowRange &q : rp.shard)
      for (int64_t i = q.begin; i < q.end; ++i)
        pairs += i + 1;
    EXPECT_EQ(pairs, 80100) << "rank " << rp.rank; // (800 * 801 / 2) / 4
  }
}

TEST(RingPlan, RejectsBadArguments) {
  ParseResult r = parseSpec("attention t { heads = 1 head_dim = 64 "
                            "branch { block_mask(block = 16) } }", "t.dattn");
  ASSERT_TRUE(r.ok());
  const AttentionPlan p = planAttention(r.file.attentions[0]);
  EXPECT_THROW(planRing(p, 64, 2), Error); // the mask is needed
  EXPECT_THROW(planRing(p, 64, 0), Error);
  EXPECT_THROW(planRing(p, 0, 2), Error);
}

// Ranks compare plan hashes before the first exchange: a different block
// mask on one rank (it sizes the transfers) must show in the hash.
TEST(RingPlan, TheHashCoversTheBlockMask) {
  ParseResult r = parseSpec("attention t { heads = 1 head_dim = 64 "
                            "branch { block_mask(block = 16) } }", "t.dattn");
  ASSERT_TRUE(r.ok());
  const AttentionPlan p = planAttention(r.file.attentions[0]);
  BlockMask a;
  a.block = 16;
  a.rowOffsets = {0, 1, 2, 3, 4};
  a.colIndices = {0, 1, 2, 3};
  BlockMask b = a;
  b.colIndices = {0, 0, 2, 3}; // query block 1 reads key block 0: from another rank at P = 2
  BlockMask c = a;
  c.rowOffsets = {0, 2, 2, 3, 4};
  c.colIndices = {0, 1, 2, 3};
  const uint64_t h = planRing(p, 64, 2, &a, 7).hash;
  EXPECT_EQ(planRing(p, 64, 2, &a, 7).hash, h);
  EXPECT_NE(planRing(p, 64, 2, &b, 7).hash, h);
  EXPECT_NE(planRing(p, 64, 2, &c, 7).hash, h);
  EXPECT_NE(planRing(p, 64, 2, &a, 8).hash, h); // the spec's hash still counts
}

} // namespace
} // namespace dattn::test
