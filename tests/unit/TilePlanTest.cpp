// The tile plan (normalize + merge-branches + plan-tiles, iterated with
// templates/dattn/tile_plan.cuh) against brute-force enumeration of the
// reference's key sets, for random specs and sequence lengths.
//
// For each head, every (i, j) pair is counted once per branch that reaches
// it (the multiset of docs/semantics.md). The reference counts from
// its predicates; the plan counts from its tiles: Full tiles add every pair,
// Partial tiles the pairs its mask keeps, Skip tiles none. Equal counts mean
// the plan loses no pair, adds none, and never calls a tile full that is not.
#include "RandomSpec.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/tile_walk.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace dattn::test {
namespace {

using Counts = std::vector<int>; // [i * n + j]

Counts referenceCounts(const AttentionSpec &spec, int head, int64_t n, const BlockMask *mask) {
  Counts c(static_cast<size_t>(n * n), 0);
  for (const auto &br : spec.branches)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        c[i * n + j] += branchContains(spec, br, head, i, j, n, mask);
  return c;
}

struct TileStats {
  int64_t full = 0, partial = 0, skipped = 0;
};

/// A blocks branch's members as the kernels see them for its headIndex-th
/// head (block masks from `mask`, if any).
std::vector<plan::Member> headMembers(const BranchPlan &bp, int headIndex, const BlockMask *mask) {
  std::vector<plan::Member> members;
  for (const auto &m : bp.members)
    members.push_back(m.forHead(headIndex, bp.heads[headIndex],
                                mask ? mask->rowOffsets.data() : nullptr,
                                mask ? mask->colIndices.data() : nullptr));
  return members;
}

void addStrided(const BranchPlan &bp, int headIndex, bool causal, int64_t n, Counts &c,
                TileStats &st) {
  const int64_t o = bp.offsets[headIndex], r = bp.dilation;
  for (int64_t s = 0; s < plan::numSegments(bp.segment, n); ++s) {
    const int64_t first = plan::segmentFirstRow(s, bp.segment, n, r, o);
    const int64_t rows = plan::segmentRows(s, bp.segment, n, r, o);
    for (int64_t qa0 = 0; qa0 < rows; qa0 += bp.blockM)
      for (int64_t kb0 = 0; kb0 < rows; kb0 += bp.blockN) {
        const int64_t qa1 = qa0 + bp.blockM, kb1 = kb0 + bp.blockN;
        plan::TileClass cls = plan::stridedTileClass(qa0, qa1, kb0, kb1, rows, causal);
        if (cls == plan::kSkip) {
          ++st.skipped;
          continue;
        }
        (cls == plan::kFull ? st.full : st.partial)++;
        for (int64_t a = qa0; a < qa1; ++a)
          for (int64_t b = kb0; b < kb1; ++b) {
            bool keep = cls == plan::kFull || (a < rows && b < rows && (!causal || b <= a));
            if (!keep)
              continue;
            // A full tile must lie inside the segment: no bounds check there.
            ASSERT_TRUE(a < rows && b < rows) << "full strided tile crosses the segment end";
            c[(first + a * r) * n + (first + b * r)] += 1;
          }
      }
  }
}

void addBlocks(const BranchPlan &bp, int headIndex, bool causal, int64_t n,
               const BlockMask *mask, Counts &c, TileStats &st) {
  const std::vector<plan::Member> members = headMembers(bp, headIndex, mask);
  const int count = static_cast<int>(members.size());
  for (int64_t i0 = 0; i0 < n; i0 += bp.blockM) {
    const int64_t i1 = std::min(n, i0 + bp.blockM);
    plan::i64 t0 = 0, t1 = 0;
    plan::unionKeyTiles(members.data(), count, causal, i0, i1, n, bp.blockN, &t0, &t1);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j0 = t * bp.blockN, j1 = std::min(n, j0 + bp.blockN);
      plan::TileClass cls = plan::unionTileClass(members.data(), count, causal, i0, i1, j0, j1);
      if (cls == plan::kSkip) {
        ++st.skipped;
        continue;
      }
      (cls == plan::kFull ? st.full : st.partial)++;
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) {
          bool keep = cls == plan::kFull;
          if (!keep && (!causal || j <= i))
            keep = plan::unionContains(members.data(), count, i, j);
          c[i * n + j] += keep;
        }
    }
  }
}

Counts planCounts(const AttentionPlan &p, int head, int64_t n, const BlockMask *mask,
                  TileStats &st) {
  Counts c(static_cast<size_t>(n * n), 0);
  for (const auto &bp : p.branches) {
    auto it = std::find(bp.heads.begin(), bp.heads.end(), head);
    if (it == bp.heads.end())
      continue;
    int headIndex = static_cast<int>(it - bp.heads.begin());
    if (bp.kind == BranchKind::Strided)
      addStrided(bp, headIndex, p.causal, n, c, st);
    else
      addBlocks(bp, headIndex, p.causal, n, mask, c, st);
  }
  return c;
}

/// First differing pair, for a readable failure.
std::string firstDifference(const Counts &want, const Counts &got, int64_t n) {
  for (int64_t k = 0; k < n * n; ++k)
    if (want[k] != got[k])
      return "(i=" + std::to_string(k / n) + ", j=" + std::to_string(k % n) +
             "): reference counts " + std::to_string(want[k]) + ", plan counts " +
             std::to_string(got[k]);
  return "";
}

void checkPlanMatchesReference(const AttentionSpec &spec, int64_t n, const PlanOptions &opts,
                               SpecGenerator &gen) {
  BlockMask mask;
  const BlockMask *maskPtr = nullptr;
  if (spec.needsBlockMask()) {
    mask = gen.mask(spec, n);
    maskPtr = &mask;
  }
  AttentionPlan p = planAttention(spec, opts);
  PairCount pc = countPairs(p, n, 2, maskPtr);
  ASSERT_TRUE(pc.exact);
  ASSERT_EQ(pc.pairs, countAttendedPairs(spec, 2, n, maskPtr)) << spec.canonical();
  TileStats st;
  for (int h = 0; h < spec.heads; ++h) {
    Counts want = referenceCounts(spec, h, n, maskPtr);
    Counts got = planCounts(p, h, n, maskPtr, st);
    ASSERT_EQ(want, got) << "head " << h << ", N = " << n << ", tiles " << opts.tileM << "x"
                         << opts.tileN << ": " << firstDifference(want, got, n) << "\n"
                         << spec.canonical() << "\n"
                         << emitIR({spec}, IRStage::Planned, opts);
  }
}

TEST(TilePlan, RandomSpecsMatchReferenceKeySets) {
  SpecGenerator gen(20261122);
  const int64_t lengths[] = {1, 2, 7, 16, 33, 64, 100, 129, 200};
  const int64_t tiles[] = {0, 16, 32, 64};
  for (int trial = 0; trial < 250; ++trial) {
    AttentionSpec spec = gen.spec();
    int64_t n = lengths[gen.uniform(0, 8)];
    PlanOptions opts;
    opts.tileM = tiles[gen.uniform(0, 3)];
    opts.tileN = tiles[gen.uniform(0, 3)];
    opts.splitUnions = trial % 2 == 1; // dattn-split-unions on every other spec
    SCOPED_TRACE("trial " + std::to_string(trial));
    checkPlanMatchesReference(spec, n, opts, gen);
    if (HasFatalFailure())
      return;
  }
}

TEST(TilePlan, SplitUnionsCountEachKeyOnce) {
  // dattn-split-unions: a union's dilated member runs as its own strided
  // branch and is excluded from the union it came from. The plans (every
  // key once, across both branches) against the reference, causal or not,
  // ragged N, segments finite or not; the plan has the extra branch.
  SpecGenerator gen(7);
  for (const char *members :
       {"dilated(segment = inf, dilation = 4, offset = head) | global(tokens = 16)",
        "dilated(segment = 48, dilation = 3, offset = head) | window(left = 10, right = 3)",
        "dilated(segment = 64, dilation = 2) | global(tokens = 5) | window(left = 7, right = 0)",
        "dilated(segment = 40, dilation = 2, offset = 1) | random(block = 16, density = 0.3, "
        "seed = 3)"})
    for (bool causal : {false, true}) {
      const std::string text = std::string("attention t { heads = 4 head_dim = 64 dtype = bf16") +
                               (causal ? " causal = true" : "") + " branch { " + members + " } }";
      SCOPED_TRACE(text);
      ParseResult r = parseSpec(text, "t.dattn");
      ASSERT_TRUE(r.ok());
      const AttentionSpec &spec = r.file.attentions[0];
      for (int64_t n : {1, 37, 200}) {
        PlanOptions opts;
        opts.splitUnions = true;
        checkPlanMatchesReference(spec, n, opts, gen);
        if (HasFatalFailure())
          return;
      }
      PlanOptions opts;
      opts.splitUnions = true;
      const AttentionPlan p = planAttention(spec, opts);
      ASSERT_EQ(p.branches.size(), 2u) << emitIR({spec}, IRStage::Planned, opts);
      int strided = 0, excluded = 0;
      for (const BranchPlan &b : p.branches) {
        strided += b.kind == BranchKind::Strided;
        for (const MemberPlan &m : b.members)
          excluded += m.excluded;
      }
      EXPECT_EQ(strided, 1);
      EXPECT_EQ(excluded, 1);
    }
}

/// A random spec, a sequence length in [1, maxN], its block mask (if it
/// takes one) and its plan: the setup of the tests that compare the plan's
/// walks and masks with the members' pair tests.
struct RandomCase {
  AttentionSpec spec;
  int64_t n = 0;
  BlockMask mask;
  AttentionPlan plan;
};
RandomCase randomCase(SpecGenerator &gen, int64_t maxN) {
  RandomCase c;
  c.spec = gen.spec();
  c.n = gen.uniform(1, maxN);
  if (c.spec.needsBlockMask())
    c.mask = gen.mask(c.spec, c.n);
  c.plan = planAttention(c.spec);
  return c;
}

/// The members of every head of every blocks branch of a case, as the
/// kernels see them (headMembers).
std::vector<std::vector<plan::Member>> blocksHeadMembers(const RandomCase &c) {
  std::vector<std::vector<plan::Member>> out;
  for (const auto &b : c.plan.branches)
    if (b.kind == BranchKind::Blocks)
      for (size_t hi = 0; hi < b.heads.size(); ++hi)
        out.push_back(headMembers(b, static_cast<int>(hi), &c.mask));
  return out;
}

TEST(TilePlan, QueryRangesHoldEveryQueryOfAKey) {
  // The backward pass visits, for key j, only rows in memberQueryRange: every
  // (i, j) a member contains must lie inside it.
  SpecGenerator gen(77);
  for (int trial = 0; trial < 150; ++trial) {
    const RandomCase c = randomCase(gen, 150);
    const AttentionSpec &spec = c.spec;
    const int64_t n = c.n;
    const BlockMask &mask = c.mask;
    const AttentionPlan &p = c.plan;
    for (const auto &b : p.branches)
      for (size_t hi = 0; hi < b.heads.size(); ++hi)
        for (const auto &mp : b.members) {
          plan::Member m = mp.forHead(static_cast<int>(hi), b.heads[hi],
                                      mask.rowOffsets.data(), mask.colIndices.data());
          for (int64_t j = 0; j < n; ++j) {
            plan::i64 lo, hi2;
            plan::memberQueryRange(m, j, n, &lo, &hi2);
            for (int64_t i = 0; i < n; ++i)
              if (plan::memberContains(m, i, j)) {
                ASSERT_TRUE(i >= lo && i < hi2) << "i=" << i << " j=" << j << " range [" << lo
                                                << ", " << hi2 << ")\n" << spec.canonical();
              }
          }
        }
  }
}

TEST(TilePlan, QueryTilesHoldEveryQueryOfAKeyTile) {
  // The tensor-core dK/dV kernel visits, for key tile [j0, j1), only the
  // query tiles unionQueryTiles names: every pair of the union (causal
  // included) must fall inside them.
  SpecGenerator gen(78);
  const int64_t tiles[] = {16, 32, 64, 128};
  for (int trial = 0; trial < 150; ++trial) {
    const RandomCase c = randomCase(gen, 300);
    const int64_t n = c.n, bn = tiles[gen.uniform(0, 3)], bm = tiles[gen.uniform(0, 3)];
    const bool causal = c.plan.causal;
    for (const std::vector<plan::Member> &members : blocksHeadMembers(c)) {
      const int count = static_cast<int>(members.size());
      for (int64_t j0 = 0; j0 < n; j0 += bn) {
        const int64_t j1 = std::min(n, j0 + bn);
        plan::i64 t0, t1;
        plan::unionQueryTiles(members.data(), count, causal, j0, j1, n, bm, &t0, &t1);
        for (int64_t j = j0; j < j1; ++j)
          for (int64_t i = 0; i < n; ++i) {
            if (causal && j > i)
              continue;
            if (plan::unionContains(members.data(), count, i, j)) {
              ASSERT_TRUE(i >= t0 * bm && i < t1 * bm)
                  << "i=" << i << " j=" << j << " tiles [" << t0 << ", " << t1 << ") of " << bm
                  << "\n" << c.spec.canonical();
            }
          }
      }
    }
  }
}

TEST(TilePlan, RowBitsEqualThePairTest) {
  // The kernels mask a partial tile's lines with unionLineBits (one call per
  // row or, transposed, key and thread, the columns of the mma fragment
  // layout) where they asked unionContains per pair: both must agree on every
  // pair of every member kind, union and exclusion, at any tile width
  // (nbCount) and column phase.
  SpecGenerator gen(79);
  for (int trial = 0; trial < 200; ++trial) {
    const RandomCase c = randomCase(gen, 400);
    const int64_t n = c.n;
    for (const std::vector<plan::Member> &members : blocksHeadMembers(c)) {
      const int count = static_cast<int>(members.size());
      for (int nbCount : {4, 8, 16})
        for (int64_t j0 = 0; j0 < n; j0 += 8 * nbCount)
          for (int c0 = 0; c0 < 8; c0 += 2)
            for (int64_t f = 0; f < n; ++f)
              for (bool transposed : {false, true}) {
                const unsigned bits =
                    plan::unionLineBits(members.data(), count, f, j0 + c0, n, nbCount, transposed);
                for (int x = 0; x < 2 * nbCount; ++x) {
                  const int64_t v = j0 + c0 + 8 * (x / 2) + x % 2;
                  if (v >= n) {
                    ASSERT_EQ((bits >> x) & 1u, 0u) << "a column past N kept";
                    continue;
                  }
                  const int64_t i = transposed ? v : f, j = transposed ? f : v;
                  ASSERT_EQ((bits >> x) & 1u,
                            plan::unionContains(members.data(), count, i, j) ? 1u : 0u)
                      << "i=" << i << " j=" << j << " nbCount=" << nbCount
                      << (transposed ? " transposed\n" : "\n") << c.spec.canonical();
                }
              }
    }
  }
}

TEST(TilePlan, BallotWalkVisitsTheTilesThePlainLoopDoes) {
  // The kernels' walks over a line of tiles (walk::tiles) classify 32 tiles
  // at a time for blocks branches (a ballot on the GPU, a loop here): they
  // must visit exactly the tiles the one-at-a-time loop visits, in order,
  // with the same classes, from any first tile, at any density, and never
  // classify a tile past the end.
  std::mt19937 rng(11);
  const double densities[] = {0.0, 0.03, 0.3, 1.0};
  for (int trial = 0; trial < 400; ++trial) {
    const long long t1 = rng() % 300, t0 = rng() % (t1 + 2); // t0 may be past t1
    const double density = densities[trial % 4];
    std::vector<plan::TileClass> cls(static_cast<size_t>(t1));
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (auto &c : cls)
      c = u(rng) < density ? (rng() % 2 ? plan::kFull : plan::kPartial) : plan::kSkip;
    auto classOf = [&](long long t) {
      EXPECT_TRUE(t >= 0 && t < t1) << "tile " << t << " classified, the walk ends at " << t1;
      return t >= 0 && t < t1 ? cls[static_cast<size_t>(t)] : plan::kSkip;
    };
    // Each visited tile with its class (kFull or kPartial, as classOfNext
    // gives it: from the window's ballots, or classified again).
    std::vector<std::pair<long long, int>> expected, ballot, plain;
    for (long long t = t0; t < t1; ++t)
      if (cls[static_cast<size_t>(t)] != plan::kSkip)
        expected.emplace_back(t, cls[static_cast<size_t>(t)]);
    auto ballotWalk = walk::tiles<true>(t1, classOf);
    for (long long t = ballotWalk.next(t0); t < t1; t = ballotWalk.next(t + 1))
      ballot.emplace_back(t, ballotWalk.classOfNext(t));
    auto plainWalk = walk::tiles<false>(t1, classOf);
    for (long long t = plainWalk.next(t0); t < t1; t = plainWalk.next(t + 1))
      plain.emplace_back(t, plainWalk.classOfNext(t));
    ASSERT_EQ(ballot, expected) << "t0=" << t0 << " t1=" << t1 << " density=" << density;
    ASSERT_EQ(plain, expected) << "t0=" << t0 << " t1=" << t1 << " density=" << density;
  }
}

TEST(TilePlan, LongNetShapesWithRaggedSegments) {
  // Segments not divisible by the dilation, N not divisible by the segment,
  // dilations 6 and 12, offsets by head: the LongNet cases in small.
  SpecGenerator gen(7);
  const char *text = R"(
    attention t {
      heads = 12
      head_dim = 32
      branch { dilated(segment = 20, dilation = 6, offset = head) }
      branch { dilated(segment = 50, dilation = 12, offset = head) }
      branch heads 0..3 { dilated(segment = 7, dilation = 1) }
    })";
  ParseResult r = parseSpec(text, "t.dattn");
  ASSERT_TRUE(r.ok()) << r.formatDiagnostics();
  for (int64_t n : {1, 5, 19, 20, 21, 59, 100, 131})
    for (bool causal : {false, true}) {
      AttentionSpec s = r.file.attentions[0];
      s.causal = causal;
      checkPlanMatchesReference(s, n, {}, gen);
      checkPlanMatchesReference(s, n, {16, 32, "", 0, {}, {}, true}, gen);
    }
}

TEST(TilePlan, MergedBranchesKeepPerHeadOffsets) {
  // Four single-head branches of one geometry merge into one strided branch
  // with offsets [0, 1, 2, 3]; the plan must still give each head its rows.
  const char *text = R"(
    attention t {
      heads = 4
      head_dim = 32
      branch heads 0 { dilated(segment = 16, dilation = 4, offset = 0) }
      branch heads 1 { dilated(segment = 16, dilation = 4, offset = 1) }
      branch heads 2 { dilated(segment = 16, dilation = 4, offset = 2) }
      branch heads 3 { dilated(segment = 16, dilation = 4, offset = 3) }
    })";
  ParseResult r = parseSpec(text, "t.dattn");
  ASSERT_TRUE(r.ok()) << r.formatDiagnostics();
  AttentionPlan p = planAttention(r.file.attentions[0]);
  ASSERT_EQ(p.branches.size(), 1u);
  EXPECT_EQ(p.branches[0].kind, BranchKind::Strided);
  EXPECT_EQ(p.branches[0].offsets, (std::vector<int64_t>{0, 1, 2, 3}));
  SpecGenerator gen(1);
  checkPlanMatchesReference(r.file.attentions[0], 70, {}, gen);
}

TEST(TilePlan, WindowTilesAreMostlyFullAndLocal) {
  // A window far narrower than N visits O(N) tiles, and the interior ones
  // are full (no per-element masking): the plan is not O(N^2).
  const char *text = "attention t { heads = 1 head_dim = 64 branch { window(left = 64, right = 64) } }";
  ParseResult r = parseSpec(text, "t.dattn");
  ASSERT_TRUE(r.ok());
  AttentionPlan p = planAttention(r.file.attentions[0], {64, 64, "", 0, {}, {}, true});
  TileStats st;
  planCounts(p, 0, 64 * 64, nullptr, st);
  // Three tile diagonals are visited (edges clipped); the main one is full,
  // its neighbours partial.
  EXPECT_EQ(st.full, 64);
  EXPECT_EQ(st.partial, 2 * 63);
  EXPECT_EQ(st.skipped, 0);
}

} // namespace
} // namespace dattn::test
