// The ring's transports on host memory: every rank's workspace laid out by
// rt::carveWorkspace, its transfers paired piece by piece as LoopbackRing
// and NcclRing pair them (rt::blockExchange, rt::partialExchange), and the
// rank's own work stood in for by what RankRun does to its buffers: pack
// the send (K and V rows, as the pack kernel does), check the block it
// attends to, add a mark of its own to the partials of every block it
// attends to and to its own rows, add what comes back. Then every block a
// rank attends to must be its sender's rows as packed for it, and every
// rank's dK/dV accumulators must hold, for each of its rows, the marks of
// exactly the ranks whose queries reach that row: pieces that do not pair
// up, buffers that overlap, a pass-along block sent from the wrong slot or
// partials coming home to the wrong place all break it. The steps run one
// after the other, as on the loopback's one stream, so what NCCL's overlap
// adds (a slot refilled while still read) is the GPU tests' to find. Both
// exchanges (pairwise, passed along), P = 2, 3, 4 and 8, both layouts, two
// batches.
#include "../../runtime/RingBuffers.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/ring.h"

#include <gtest/gtest.h>

#include <cstring>

namespace dattn::test {
namespace {

using rt::Exchange;
using rt::RankShape;
using rt::RankWorkspace;

constexpr int64_t kBatch = 2;

/// K's (or V's, kv = 1) element of global row `row`, in 16 bits.
uint16_t valueOf(int tensor, int64_t b, int64_t row, int kvHead, int64_t d) {
  return static_cast<uint16_t>(tensor * 40503 + b * 7919 + row * 31 + kvHead * 7 + d);
}

struct SimRank {
  RankShape shape;
  std::vector<RowRange> shard;
  std::vector<uint16_t> k, v; ///< [B, rows, kv_heads, D]
  RankWorkspace w;
  std::vector<char> ws;
  char *base() { return ws.data(); }
  template <class T> T *ptr(int64_t offset) { return reinterpret_cast<T *>(ws.data() + offset); }
};

struct Sim {
  RingPlan plan;
  RingSchedule schedule;
  std::vector<SimRank> ranks;
  int64_t moved = 0;

  Sim(const AttentionSpec &spec, int64_t n, int P) {
    plan = planRing(planAttention(spec), n, P);
    schedule = scheduleRing(plan);
    for (int r = 0; r < P; ++r) {
      SimRank s;
      s.shard = plan.rankPlans[r].shard;
      int64_t rows = 0;
      for (const RowRange &range : s.shard)
        rows += range.end - range.begin;
      s.shape = RankShape{r, P, schedule.passAlong, kBatch, rows, spec.heads, spec.kvHeads,
                          spec.headDim, 2};
      const int64_t D = spec.headDim;
      s.k.resize(kBatch * rows * spec.kvHeads * D);
      s.v.resize(s.k.size());
      for (int64_t b = 0; b < kBatch; ++b)
        for (int64_t local = 0; local < rows; ++local)
          for (int kv = 0; kv < spec.kvHeads; ++kv)
            for (int64_t d = 0; d < D; ++d) {
              const int64_t at = ((b * rows + local) * spec.kvHeads + kv) * D + d;
              const int64_t row = globalRow(s.shard, local);
              s.k[at] = valueOf(0, b, row, kv, d);
              s.v[at] = valueOf(1, b, row, kv, d);
            }
      ranks.push_back(std::move(s));
    }
  }

  static int64_t globalRow(const std::vector<RowRange> &shard, int64_t local) {
    for (const RowRange &r : shard) {
      if (local < r.end - r.begin)
        return r.begin + local;
      local -= r.end - r.begin;
    }
    return -1;
  }

  const RankSchedule &rs(int r) const { return schedule.ranks[r]; }
  Exchange blocks(int r, int step, bool backward) {
    SimRank &s = ranks[r];
    return rt::blockExchange(s.shape, rs(r), s.w, s.base(), step, backward);
  }
  Exchange partials(int r, int step, bool backward) {
    SimRank &s = ranks[r];
    return rt::partialExchange(s.shape, rs(r), s.w, s.base(), step, backward);
  }

  /// Every receive copied from the matching send, as LoopbackRing does.
  void exchange(int step, bool backward, bool partialsToo) {
    for (int r = 0; r < static_cast<int>(ranks.size()); ++r) {
      const Exchange in = partialsToo ? partials(r, step, backward) : blocks(r, step, backward);
      if (in.recvPeer < 0)
        continue;
      const Exchange out = partialsToo ? partials(in.recvPeer, step, backward)
                                       : blocks(in.recvPeer, step, backward);
      ASSERT_EQ(out.sendPeer, r) << "step " << step;
      ASSERT_EQ(out.send.size(), in.recv.size()) << "step " << step;
      for (size_t x = 0; x < in.recv.size(); ++x) {
        ASSERT_EQ(out.send[x].bytes, in.recv[x].bytes) << "step " << step << ", piece " << x;
        std::memcpy(in.recv[x].at, out.send[x].at, in.recv[x].bytes);
        moved += in.recv[x].bytes;
      }
    }
  }

  /// RankRun::pack: the send's rows packed [B][rows][D] into the pack
  /// buffer (passed along: the own block at step 1 only).
  void pack(int r, int step) {
    SimRank &s = ranks[r];
    const Transfer &t = rs(r).steps[step - 1].send;
    if (t.peer < 0 || t.rows == 0 || (schedule.passAlong && step > 1))
      return;
    const int64_t D = s.shape.headDim, Hk = s.shape.kvHeads;
    for (int kvt = 0; kvt < 2; ++kvt)
      for (int64_t b = 0; b < kBatch; ++b)
        packRows(t.parts, s.shard, (kvt ? s.v : s.k).data() + b * s.shape.rows * Hk * D, Hk * D,
                 D, D, s.ptr<uint16_t>(kvt ? s.w.packV : s.w.packK) + b * t.rows * D);
  }

  /// The block rank r attends to at step s is its sender's rows, packed.
  void expectBlock(int r, int step) {
    SimRank &s = ranks[r];
    const Transfer &t = rs(r).steps[step - 1].recv;
    if (t.peer < 0 || t.rows == 0)
      return;
    const SimRank &from = ranks[t.peer];
    const int64_t D = s.shape.headDim, Hk = s.shape.kvHeads;
    for (int kvt = 0; kvt < 2; ++kvt) {
      std::vector<uint16_t> want(kBatch * t.rows * D);
      for (int64_t b = 0; b < kBatch; ++b)
        packRows(t.parts, from.shard, (kvt ? from.v : from.k).data() + b * from.shape.rows * Hk * D,
                 Hk * D, D, D, want.data() + b * t.rows * D);
      const uint16_t *got =
          s.ptr<uint16_t>(kvt ? s.w.recvV[step % 2] : s.w.recvK[step % 2]);
      ASSERT_EQ(0, std::memcmp(got, want.data(), want.size() * 2))
          << "rank " << r << ", step " << step << ": " << (kvt ? "V" : "K")
          << " is not rank " << t.peer << "'s rows";
    }
  }

  /// Rank r's mark on its own rows' accumulators (RankRun's own DkvPass).
  void markOwn(int r) {
    SimRank &s = ranks[r];
    const Layout acc = rt::accumulatorLayout(s.shape);
    for (int kvt = 0; kvt < 2; ++kvt) {
      float *a = s.ptr<float>(kvt ? s.w.dvAcc : s.w.dkAcc);
      for (int64_t b = 0; b < kBatch; ++b)
        for (int64_t local = 0; local < s.shape.rows; ++local)
          for (int kv = 0; kv < s.shape.kvHeads; ++kv)
            for (int64_t d = 0; d < s.shape.headDim; ++d)
              a[acc.at(b, local, kv) + d] += static_cast<float>(r + 1);
    }
  }

  void run(bool backward) {
    const int P = static_cast<int>(ranks.size());
    moved = 0;
    for (SimRank &s : ranks) {
      s.w = rt::carveWorkspace(s.shape, schedule, backward, 0);
      s.ws.assign(static_cast<size_t>(std::max<int64_t>(s.w.total, 16)), char(0x7f));
    }
    if (backward)
      for (int r = 0; r < P; ++r) {
        SimRank &s = ranks[r];
        if (schedule.passAlong)
          continue; // the accumulators are a receive slot until the end
        const int64_t kv = kBatch * s.shape.rows * s.shape.kvHeads * s.shape.headDim;
        std::fill_n(s.ptr<float>(s.w.dkAcc), kv, 0.f);
        std::fill_n(s.ptr<float>(s.w.dvAcc), kv, 0.f);
        markOwn(r);
      }
    for (int step = 1; step < P; ++step) {
      for (int r = 0; r < P; ++r)
        pack(r, step);
      exchange(step, backward, false);
      for (int r = 0; r < P; ++r)
        expectBlock(r, step);
      if (!backward)
        continue;
      for (int r = 0; r < P; ++r) { // attendBackward: this rank's mark on the block's partials
        SimRank &s = ranks[r];
        const Transfer &t = rs(r).steps[step - 1].recv;
        if (t.peer < 0 || t.rows == 0)
          continue;
        const int64_t count = kBatch * t.rows * s.shape.headDim;
        for (int kvt = 0; kvt < 2; ++kvt) {
          float *p = schedule.passAlong
                         ? s.ptr<float>(kvt ? s.w.slotDv[step % 2] : s.w.slotDk[step % 2])
                         : s.ptr<float>(kvt ? s.w.partialDv : s.w.partialDk);
          if (!schedule.passAlong || step == 1)
            std::fill_n(p, count, 0.f);
          for (int64_t x = 0; x < count; ++x)
            p[x] += static_cast<float>(r + 1);
        }
      }
      exchange(step, backward, true);
      for (int r = 0; r < P; ++r) { // addReturned
        SimRank &s = ranks[r];
        if (schedule.passAlong) {
          if (step == P - 1)
            markOwn(r);
          continue;
        }
        const Transfer &t = rs(r).steps[step - 1].send;
        if (t.peer < 0 || t.rows == 0)
          continue;
        const Layout acc = rt::accumulatorLayout(s.shape);
        for (int kvt = 0; kvt < 2; ++kvt) {
          const float *back = s.ptr<float>(kvt ? s.w.returnedDv : s.w.returnedDk);
          float *a = s.ptr<float>(kvt ? s.w.dvAcc : s.w.dkAcc);
          for (int64_t b = 0; b < kBatch; ++b)
            for (const PackedPart &part : t.parts)
              for (int64_t x = 0; x < part.rows.count; ++x) {
                const int64_t local = localRow(s.shard, part.rows.start + x * part.rows.step);
                for (int64_t d = 0; d < s.shape.headDim; ++d)
                  a[acc.at(b, local, part.kvHead) + d] +=
                      back[(b * t.rows + part.offset + x) * s.shape.headDim + d];
              }
        }
      }
    }
  }

  /// The marks rank o's row (kv head) must hold: its own, and those of
  /// every rank that received it.
  void expectGradients() {
    const int P = static_cast<int>(ranks.size());
    for (int o = 0; o < P; ++o) {
      SimRank &s = ranks[o];
      std::vector<float> want(s.shape.rows * s.shape.kvHeads, static_cast<float>(o + 1));
      for (int x = 0; x < P; ++x)
        for (const RingStep &st : rs(x).steps)
          if (st.recv.peer == o)
            for (const PackedPart &part : st.recv.parts)
              for (int64_t i = 0; i < part.rows.count; ++i)
                want[localRow(s.shard, part.rows.start + i * part.rows.step) * s.shape.kvHeads +
                     part.kvHead] += static_cast<float>(x + 1);
      const Layout acc = rt::accumulatorLayout(s.shape);
      for (int kvt = 0; kvt < 2; ++kvt) {
        const float *a = s.ptr<float>(kvt ? s.w.dvAcc : s.w.dkAcc);
        for (int64_t b = 0; b < kBatch; ++b)
          for (int64_t local = 0; local < s.shape.rows; ++local)
            for (int kv = 0; kv < s.shape.kvHeads; ++kv)
              for (int64_t d = 0; d < s.shape.headDim; d += 7)
                ASSERT_EQ(a[acc.at(b, local, kv) + d], want[local * s.shape.kvHeads + kv])
                    << "rank " << o << (kvt ? " dV" : " dK") << ", batch " << b
                    << ", local row " << local << ", kv head " << kv << ", column " << d;
      }
    }
  }
};

void check(const char *text, RingLayout layout, int64_t n, int P, bool passAlong) {
  ParseResult r = parseSpec(text, "t.dattn");
  ASSERT_TRUE(r.ok()) << r.formatDiagnostics();
  AttentionSpec spec = r.file.attentions.at(0);
  spec.ringLayout = layout;
  SCOPED_TRACE(spec.canonical() + "N = " + std::to_string(n) + ", P = " + std::to_string(P));
  Sim sim(spec, n, P);
  ASSERT_EQ(sim.schedule.passAlong, passAlong);
  sim.run(false);
  if (::testing::Test::HasFatalFailure())
    return;
  EXPECT_EQ(sim.moved, sim.plan.totalBytesForward * kBatch);
  sim.run(true);
  if (::testing::Test::HasFatalFailure())
    return;
  EXPECT_EQ(sim.moved, sim.plan.totalBytesBackward * kBatch);
  sim.expectGradients();
}

TEST(RingExchange, PassedAlongBlocksAndPartialsArriveWhereTheRanksReadThem) {
  const char *dense = "attention t { heads = 4 kv_heads = 2 head_dim = 32 branch { dense } }";
  for (int P : {2, 3, 4, 8})
    for (RingLayout layout : {RingLayout::Contiguous, RingLayout::Zigzag})
      check(dense, layout, 160 * P + 37, P, true);
}

TEST(RingExchange, PairwiseBlocksAndPartialsArriveWhereTheRanksReadThem) {
  const char *specs[] = {
      "attention t { heads = 4 kv_heads = 2 head_dim = 32 causal = true branch { dense } }",
      "attention t { heads = 4 kv_heads = 2 head_dim = 32 "
      "branch { dilated(segment = 512, dilation = 2, offset = 1) } "
      "branch { window(left = 100, right = 20) | global(tokens = 8) } }",
  };
  for (const char *text : specs)
    for (int P : {2, 3, 4, 8})
      for (RingLayout layout : {RingLayout::Contiguous, RingLayout::Zigzag})
        check(text, layout, 150 * P + 11, P, false);
}

} // namespace
} // namespace dattn::test
