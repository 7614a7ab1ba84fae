// The ring schedule carried out on the CPU, as the executor will on GPUs:
// each rank holds only its shard of Q, K, V and dO; at every step it packs
// what the schedule sends (packRows), "transfers" the packed block, and
// attends its queries to the keys it holds (its shard, then each received
// block), merging the partial (O, LSE) pairs by LSE. Backward replays the
// schedule with the global LSE and Delta, sends the dK/dV partials of
// received rows back in the same packing, and the owner adds them. Every
// rank's rows must equal the one-GPU reference (forward and gradients) for
// random specs (every pattern, unions, causal, GQA, ragged shards), ring
// sizes 2, 3, 4 and 8 and both layouts: a key missing from the plan, a
// packing offset off by one or a wrong merge shows up as a wrong row.
#include "RandomSpec.h"

#include "dattn/compiler.h"
#include "dattn/ring.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace dattn::test {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

/// What one rank holds: its shard's rows of every tensor ([rows, heads, D]).
struct Rank {
  std::vector<RowRange> shard;
  std::vector<int64_t> rows; ///< global row of each local row
  std::vector<float> q, k, v, dout;
  std::vector<double> o, lse;       ///< [rows, heads, D], [rows, heads]
  std::vector<double> dq, dk, dv;   ///< gradients of the held rows
};

/// Keys a rank can read during one block: global rows and where their K and
/// V rows are, per kv head.
struct KeyBlock {
  std::vector<int64_t> rows;
  std::vector<int> kvHeads;
  std::vector<const float *> k, v;
  std::vector<double *> dk, dv; ///< where backward accumulates their partials
};

struct Ring {
  const AttentionSpec &spec;
  int64_t n;
  const BlockMask *mask;
  double scale;

  double dot(const float *a, const float *b) const {
    double s = 0;
    for (int d = 0; d < spec.headDim; ++d)
      s += double(a[d]) * b[d];
    return s;
  }

  /// Forward over one block: a partial softmax per (query, head), merged
  /// into the rank's (O, LSE) by LSE, as the executor merges in fp32.
  void attendBlock(Rank &r, const KeyBlock &kb) const {
    const int D = spec.headDim;
    for (size_t li = 0; li < r.rows.size(); ++li)
      for (int h = 0; h < spec.heads; ++h) {
        const float *q = &r.q[(li * spec.heads + h) * D];
        std::vector<double> acc(D, 0.0);
        double m = kNegInf, l = 0;
        for (const Branch &b : spec.branches)
          for (size_t x = 0; x < kb.rows.size(); ++x) {
            if (kb.kvHeads[x] != spec.kvHeadOf(h) ||
                !branchContains(spec, b, h, r.rows[li], kb.rows[x], n, mask))
              continue;
            const double s = scale * dot(q, kb.k[x]);
            const double mNew = std::max(m, s), corr = std::exp(m - mNew), p = std::exp(s - mNew);
            l = l * corr + p;
            for (int d = 0; d < D; ++d)
              acc[d] = acc[d] * corr + p * kb.v[x][d];
            m = mNew;
          }
        if (l == 0)
          continue; // this block holds none of the row's keys
        const double lseB = m + std::log(l);
        double &lse = r.lse[li * spec.heads + h];
        const double lseNew = lse == kNegInf ? lseB : std::max(lse, lseB) +
                                                          std::log1p(std::exp(-std::abs(lse - lseB)));
        const double wOld = lse == kNegInf ? 0 : std::exp(lse - lseNew),
                     wNew = std::exp(lseB - lseNew);
        for (int d = 0; d < D; ++d) {
          double &o = r.o[(li * spec.heads + h) * D + d];
          o = o * wOld + acc[d] / l * wNew;
        }
        lse = lseNew;
      }
  }

  /// Backward over one block with the global LSE and Delta: dQ into the
  /// rank's rows, dK and dV into the block's accumulators.
  void backwardBlock(Rank &r, const KeyBlock &kb) const {
    const int D = spec.headDim;
    for (size_t li = 0; li < r.rows.size(); ++li)
      for (int h = 0; h < spec.heads; ++h) {
        const double lse = r.lse[li * spec.heads + h];
        if (lse == kNegInf)
          continue;
        const float *q = &r.q[(li * spec.heads + h) * D];
        const float *g = &r.dout[(li * spec.heads + h) * D];
        double delta = 0;
        for (int d = 0; d < D; ++d)
          delta += double(g[d]) * r.o[(li * spec.heads + h) * D + d];
        for (const Branch &b : spec.branches)
          for (size_t x = 0; x < kb.rows.size(); ++x) {
            if (kb.kvHeads[x] != spec.kvHeadOf(h) ||
                !branchContains(spec, b, h, r.rows[li], kb.rows[x], n, mask))
              continue;
            const double p = std::exp(scale * dot(q, kb.k[x]) - lse);
            const double ds = p * (dot(g, kb.v[x]) - delta);
            for (int d = 0; d < D; ++d) {
              r.dq[(li * spec.heads + h) * D + d] += scale * ds * kb.k[x][d];
              kb.dk[x][d] += scale * ds * q[d];
              kb.dv[x][d] += p * g[d];
            }
          }
      }
  }
};

/// The local key block: every held row and kv head.
KeyBlock localBlock(const AttentionSpec &spec, Rank &r) {
  KeyBlock kb;
  const int D = spec.headDim;
  for (size_t li = 0; li < r.rows.size(); ++li)
    for (int kh = 0; kh < spec.kvHeads; ++kh) {
      kb.rows.push_back(r.rows[li]);
      kb.kvHeads.push_back(kh);
      kb.k.push_back(&r.k[(li * spec.kvHeads + kh) * D]);
      kb.v.push_back(&r.v[(li * spec.kvHeads + kh) * D]);
      kb.dk.push_back(&r.dk[(li * spec.kvHeads + kh) * D]);
      kb.dv.push_back(&r.dv[(li * spec.kvHeads + kh) * D]);
    }
  return kb;
}

/// A received transfer as a key block over the packed buffers.
KeyBlock receivedBlock(const Transfer &t, int D, const std::vector<float> &k,
                       const std::vector<float> &v, std::vector<double> &dk,
                       std::vector<double> &dv) {
  KeyBlock kb;
  for (const PackedPart &part : t.parts)
    for (int64_t x = 0; x < part.rows.count; ++x) {
      const int64_t at = (part.offset + x) * D;
      kb.rows.push_back(part.rows.start + x * part.rows.step);
      kb.kvHeads.push_back(part.kvHead);
      kb.k.push_back(&k[at]);
      kb.v.push_back(&v[at]);
      kb.dk.push_back(&dk[at]);
      kb.dv.push_back(&dv[at]);
    }
  return kb;
}

void simulate(const AttentionSpec &spec, int64_t n, int ranks, const BlockMask *mask,
              uint64_t seed, bool splitUnions = false) {
  const std::string what = spec.canonical() + "N = " + std::to_string(n) + ", P = " +
                           std::to_string(ranks);
  SCOPED_TRACE(what);
  const int D = spec.headDim, H = spec.heads, KV = spec.kvHeads;
  const std::vector<float> q = randomVector(size_t(n) * H * D, seed),
                           k = randomVector(size_t(n) * KV * D, seed + 1),
                           v = randomVector(size_t(n) * KV * D, seed + 2),
                           dout = randomVector(size_t(n) * H * D, seed + 3);
  std::vector<float> refO(q.size()), refLse(size_t(n) * H), refDq(q.size()), refDk(k.size()),
      refDv(v.size());
  referenceForward(spec, 1, n, q.data(), k.data(), v.data(), mask, refO.data(), refLse.data(), 1);
  referenceBackward(spec, 1, n, q.data(), k.data(), v.data(), dout.data(), mask, refDq.data(),
                    refDk.data(), refDv.data());

  PlanOptions po;
  po.splitUnions = splitUnions; // the keys move by the split branches' plans
  const RingPlan plan = planRing(planAttention(spec, po), n, ranks, mask);
  const RingSchedule schedule = scheduleRing(plan);
  ASSERT_EQ(schedule.ranks.size(), size_t(ranks));

  // Each rank gets its rows and nothing else.
  std::vector<Rank> rk(ranks);
  for (int r = 0; r < ranks; ++r) {
    Rank &x = rk[r];
    x.shard = plan.rankPlans[r].shard;
    for (const RowRange &rr : x.shard)
      for (int64_t i = rr.begin; i < rr.end; ++i) {
        x.rows.push_back(i);
        x.q.insert(x.q.end(), &q[i * H * D], &q[(i + 1) * H * D]);
        x.dout.insert(x.dout.end(), &dout[i * H * D], &dout[(i + 1) * H * D]);
        x.k.insert(x.k.end(), &k[i * KV * D], &k[(i + 1) * KV * D]);
        x.v.insert(x.v.end(), &v[i * KV * D], &v[(i + 1) * KV * D]);
      }
    const size_t rows = x.rows.size();
    x.o.assign(rows * H * D, 0.0);
    x.lse.assign(rows * H, kNegInf);
    x.dq.assign(rows * H * D, 0.0);
    x.dk.assign(rows * KV * D, 0.0);
    x.dv.assign(rows * KV * D, 0.0);
  }
  Ring ring{spec, n, mask, spec.scale ? *spec.scale : 1.0 / std::sqrt(double(D))};

  // Transfers of one step: what r packs for its send peer arrives at that
  // peer as its receive of the same step, with the same parts.
  auto exchange = [&](int step, std::vector<std::vector<float>> &inK,
                      std::vector<std::vector<float>> &inV) {
    inK.assign(ranks, {});
    inV.assign(ranks, {});
    for (int r = 0; r < ranks; ++r) {
      const RingStep &st = schedule.ranks[r].steps[step - 1];
      ASSERT_EQ(st.step, step);
      if (st.send.peer < 0)
        continue;
      const RingStep &peer = schedule.ranks[st.send.peer].steps[step - 1];
      ASSERT_EQ(peer.recv.peer, r) << "step " << step;
      ASSERT_EQ(peer.recv.rows, st.send.rows) << "step " << step;
      std::vector<float> pk(st.send.rows * D), pv(st.send.rows * D);
      packRows(st.send.parts, rk[r].shard, rk[r].k.data(), int64_t(KV) * D, D, D, pk.data());
      packRows(st.send.parts, rk[r].shard, rk[r].v.data(), int64_t(KV) * D, D, D, pv.data());
      inK[st.send.peer] = std::move(pk);
      inV[st.send.peer] = std::move(pv);
    }
    for (int r = 0; r < ranks; ++r) {
      const Transfer &t = schedule.ranks[r].steps[step - 1].recv;
      ASSERT_EQ(int64_t(inK[r].size()), t.rows * D) << "rank " << r << " step " << step;
    }
  };

  int64_t wireForward = 0;
  for (int r = 0; r < ranks; ++r)
    wireForward += schedule.sendBytesForward(r);
  EXPECT_EQ(wireForward, plan.totalBytesForward);

  // Forward: the local block, then each step's received block.
  for (int r = 0; r < ranks; ++r)
    ring.attendBlock(rk[r], localBlock(spec, rk[r]));
  std::vector<std::vector<double>> unusedK(ranks), unusedV(ranks);
  for (int step = 1; step < ranks; ++step) {
    std::vector<std::vector<float>> inK, inV;
    exchange(step, inK, inV);
    if (::testing::Test::HasFatalFailure())
      return;
    for (int r = 0; r < ranks; ++r) {
      const Transfer &t = schedule.ranks[r].steps[step - 1].recv;
      unusedK[r].assign(t.rows * D, 0.0);
      unusedV[r].assign(t.rows * D, 0.0);
      ring.attendBlock(rk[r], receivedBlock(t, D, inK[r], inV[r], unusedK[r], unusedV[r]));
    }
  }

  // Backward: the same schedule; dK/dV partials of received rows go back
  // to the peer they came from and are added into its gradients.
  for (int r = 0; r < ranks; ++r)
    ring.backwardBlock(rk[r], localBlock(spec, rk[r]));
  for (int step = 1; step < ranks; ++step) {
    std::vector<std::vector<float>> inK, inV;
    exchange(step, inK, inV);
    if (::testing::Test::HasFatalFailure())
      return;
    for (int r = 0; r < ranks; ++r) {
      const Transfer &t = schedule.ranks[r].steps[step - 1].recv;
      std::vector<double> pdk(t.rows * D, 0.0), pdv(t.rows * D, 0.0);
      ring.backwardBlock(rk[r], receivedBlock(t, D, inK[r], inV[r], pdk, pdv));
      if (t.peer < 0)
        continue;
      // Returned to the sender, which unpacks with its own send parts.
      Rank &owner = rk[t.peer];
      const Transfer &sent = schedule.ranks[t.peer].steps[step - 1].send;
      ASSERT_EQ(sent.peer, r);
      for (const PackedPart &part : sent.parts)
        for (int64_t x = 0; x < part.rows.count; ++x) {
          const int64_t local = localRow(owner.shard, part.rows.start + x * part.rows.step);
          ASSERT_GE(local, 0);
          for (int d = 0; d < D; ++d) {
            owner.dk[(local * KV + part.kvHead) * D + d] += pdk[(part.offset + x) * D + d];
            owner.dv[(local * KV + part.kvHead) * D + d] += pdv[(part.offset + x) * D + d];
          }
        }
    }
  }

  // Every rank's rows against the reference.
  auto close = [&](const char *name, const double *got, const float *want, int64_t width,
                   int r, int64_t row) {
    for (int64_t e = 0; e < width; ++e) {
      const double w = want[e], g = got[e];
      if (std::isinf(w) && std::isinf(g) && (w < 0) == (g < 0))
        continue;
      if (!(std::abs(g - w) <= 1e-4 * (1 + std::abs(w)))) {
        ADD_FAILURE() << name << " of row " << row << " (rank " << r << "), element " << e
                      << ": " << g << ", reference " << w;
        return false;
      }
    }
    return true;
  };
  for (int r = 0; r < ranks; ++r)
    for (size_t li = 0; li < rk[r].rows.size(); ++li) {
      const int64_t i = rk[r].rows[li];
      std::vector<float> lse(H); // the reference's is [heads, N]
      for (int h = 0; h < H; ++h)
        lse[h] = refLse[h * n + i];
      if (!close("O", &rk[r].o[li * H * D], &refO[i * H * D], int64_t(H) * D, r, i) ||
          !close("LSE", &rk[r].lse[li * H], lse.data(), H, r, i) ||
          !close("dQ", &rk[r].dq[li * H * D], &refDq[i * H * D], int64_t(H) * D, r, i) ||
          !close("dK", &rk[r].dk[li * KV * D], &refDk[i * KV * D], int64_t(KV) * D, r, i) ||
          !close("dV", &rk[r].dv[li * KV * D], &refDv[i * KV * D], int64_t(KV) * D, r, i))
        return;
    }
}

TEST(RingSimulation, RandomSpecsMatchTheReference) {
  SpecGenerator gen(1234);
  for (int trial = 0; trial < 120; ++trial) {
    AttentionSpec spec = gen.spec();
    spec.headDim = 32; // the smallest: the reference dominates the time
    if (trial % 3 == 0)
      spec.ringLayout = RingLayout::Zigzag;
    const int64_t n = gen.uniform(1, 96);
    const int ranks = static_cast<int>(std::vector<int64_t>{2, 3, 4, 8}[gen.uniform(0, 3)]);
    BlockMask mask;
    if (spec.needsBlockMask())
      mask = gen.mask(spec, n);
    SCOPED_TRACE("trial " + std::to_string(trial));
    simulate(spec, n, ranks, spec.needsBlockMask() ? &mask : nullptr, 100 + trial,
             /*splitUnions=*/trial % 2 == 1);
    if (::testing::Test::HasFailure())
      return;
  }
}

TEST(RingSimulation, ScheduleMatchesTheEndsOfEveryTransfer) {
  // Dense causal over 4 ranks: every step a whole shard moves one way and
  // nothing the other way for the causal half; sends and receives pair up.
  ParseResult r = parseSpec("attention t { heads = 1 head_dim = 32 causal = true "
                            "branch { dense } }",
                            "t.dattn");
  ASSERT_TRUE(r.ok()) << r.formatDiagnostics();
  const RingPlan plan = planRing(planAttention(r.file.attentions[0]), 400, 4);
  const RingSchedule s = scheduleRing(plan);
  for (const RankSchedule &rs : s.ranks) {
    ASSERT_EQ(rs.steps.size(), 3u);
    for (const RingStep &st : rs.steps) {
      const int from = (rs.rank - st.step + 4) % 4;
      // Causal: rank r needs every earlier shard, whole, and no later one.
      if (from < rs.rank) {
        EXPECT_EQ(st.recv.peer, from);
        EXPECT_EQ(st.recv.rows, 100);
      } else {
        EXPECT_EQ(st.recv.peer, -1);
        EXPECT_EQ(st.recv.rows, 0);
      }
      if (st.send.peer >= 0) {
        EXPECT_EQ(s.ranks[st.send.peer].steps[st.step - 1].recv.peer, rs.rank);
      }
    }
    EXPECT_EQ(rs.maxRecvRows, rs.rank > 0 ? 100 : 0);
  }
  // Shards hold 100 rows of 1 kv head: 3 + 2 + 1 shards move, K and V, bf16.
  EXPECT_EQ(plan.totalBytesForward, 6 * 100 * 32 * 2 * 2);
  EXPECT_EQ(s.bufferBytesForward(3), (2 * 100 + 0) * 32 * 2 * 2);
  EXPECT_EQ(s.bufferBytesForward(0), (0 + 100) * 32 * 2 * 2);
  // Rank r receives in r steps: rank 1 needs one receive buffer, rank 0 none.
  EXPECT_EQ(s.ranks[0].receiveSlots(), 0);
  EXPECT_EQ(s.ranks[1].receiveSlots(), 1);
  EXPECT_EQ(s.ranks[3].receiveSlots(), 2);
  EXPECT_EQ(s.bufferBytesForward(1), (1 * 100 + 100) * 32 * 2 * 2);
  // What a rank receives into: its slots (K and V), backward also the fp32
  // partials of what it sent coming back (rank 1 sends 100 rows to 2 and 3).
  EXPECT_EQ(s.receiveBufferBytes(3, false), 2 * 100 * 32 * 2 * 2);
  EXPECT_EQ(s.receiveBufferBytes(1, true), 100 * 32 * 2 * 2 + 100 * 32 * 4 * 2);
  EXPECT_EQ(s.receiveBufferBytes(0, true), 0 + 100 * 32 * 4 * 2);
}

TEST(RingSimulation, PassAlongForwardsTheBlockTheLastRankWorkedOn) {
  // RingSchedule::passAlong: rank r gets step s's block (that of rank r -
  // s) from rank r - 1, which worked on the same block, packed the same way,
  // at step s - 1 (at step 1: its own, as it packs it); the block rank r
  // works on last is rank r + 1's, whose partials then go home. And the
  // owner's own rows are packed in (kv head, local row) order, so the
  // partials that come home are its dK, dV at kv * rows + local.
  auto schedule = [](const char *text, int64_t n, int ranks, RingLayout layout) {
    ParseResult r = parseSpec(text, "t.dattn");
    EXPECT_TRUE(r.ok()) << r.formatDiagnostics();
    AttentionSpec spec = r.file.attentions.at(0);
    spec.ringLayout = layout;
    return std::make_pair(planRing(planAttention(spec), n, ranks), spec);
  };
  const char *dense = "attention t { heads = 4 kv_heads = 2 head_dim = 32 branch { dense } }";
  for (RingLayout layout : {RingLayout::Contiguous, RingLayout::Zigzag})
    for (int P : {2, 3, 4, 8})
      for (int64_t n : {int64_t(64) * 2 * P, int64_t(1000), int64_t(4099)}) {
        SCOPED_TRACE("P = " + std::to_string(P) + ", N = " + std::to_string(n) +
                     (layout == RingLayout::Zigzag ? ", zigzag" : ""));
        const auto [plan, spec] = schedule(dense, n, P, layout);
        const RingSchedule s = scheduleRing(plan);
        bool unfragmented = true; // small zigzag chunks: staged, so not passed along
        for (const RankSchedule &rs : s.ranks)
          for (const RingStep &st : rs.steps)
            unfragmented = unfragmented && !fragmented(st.recv);
        ASSERT_EQ(s.passAlong, unfragmented);
        EXPECT_TRUE(s.passAlong || layout == RingLayout::Zigzag); // contiguous shards: >= 125 rows
        if (!s.passAlong)
          continue;
        auto samePacking = [](const Transfer &a, const Transfer &b) {
          if (a.rows != b.rows || a.parts.size() != b.parts.size())
            return false;
          for (size_t x = 0; x < a.parts.size(); ++x)
            if (a.parts[x].kvHead != b.parts[x].kvHead || !(a.parts[x].rows == b.parts[x].rows) ||
                a.parts[x].offset != b.parts[x].offset)
              return false;
          return true;
        };
        for (int r = 0; r < P; ++r) {
          const int prev = (r + P - 1) % P;
          const RankSchedule &rs = s.ranks[r], &ps = s.ranks[prev];
          for (int st = 1; st < P; ++st) {
            const Transfer &got = rs.steps[st - 1].recv;
            EXPECT_EQ(got.peer, (r - st + P) % P);
            const Transfer &held = st == 1 ? ps.steps[0].send : ps.steps[st - 2].recv;
            EXPECT_TRUE(samePacking(got, held)) << "rank " << r << ", step " << st;
          }
          EXPECT_EQ(rs.steps[P - 2].recv.peer, (r + 1) % P);
          const std::vector<RowRange> &shard = plan.rankPlans[r].shard;
          int64_t rows = 0;
          for (const RowRange &range : shard)
            rows += range.end - range.begin;
          for (const PackedPart &part : rs.steps[0].send.parts) {
            EXPECT_EQ(part.rows.step, 1);
            EXPECT_EQ(part.offset, part.kvHead * rows + localRow(shard, part.rows.start));
          }
          EXPECT_EQ(rs.steps[0].send.rows, rows * spec.kvHeads);
        }
      }
  // Not passed along: causal dense (a rank needs no later shard), segments
  // inside shards, a ring of one.
  EXPECT_FALSE(scheduleRing(schedule("attention t { heads = 1 head_dim = 32 causal = true "
                                     "branch { dense } }",
                                     4096, 4, RingLayout::Contiguous)
                                .first)
                   .passAlong);
  EXPECT_FALSE(scheduleRing(schedule("attention t { heads = 2 head_dim = 32 "
                                     "branch { dilated(segment = 512, dilation = 1) } }",
                                     4096, 4, RingLayout::Contiguous)
                                .first)
                   .passAlong);
  EXPECT_FALSE(scheduleRing(schedule(dense, 4096, 1, RingLayout::Contiguous).first).passAlong);
  // Two slots of the largest block, K and V (bf16), backward with fp32 dK, dV.
  const RingSchedule s = scheduleRing(schedule(dense, 4096, 4, RingLayout::Contiguous).first);
  EXPECT_EQ(s.bufferBytesForward(0), 2 * (1024 * 2) * 32 * 2 * 2);
  EXPECT_EQ(s.bufferBytesBackward(0), s.bufferBytesForward(0) + 2 * (1024 * 2) * 32 * 4 * 2);
  // Every slot receives (slot 0 after sending the own block).
  EXPECT_EQ(s.receiveBufferBytes(0, false), s.bufferBytesForward(0));
  EXPECT_EQ(s.receiveBufferBytes(0, true), s.bufferBytesBackward(0));
}

} // namespace
} // namespace dattn::test
