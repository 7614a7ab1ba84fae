// The ring on one GPU (LoopbackRing through HostRing): P ranks, each holding
// only its rows of q, k, v (the shard, in local order), run the ring
// schedule with device copies as the transport; the rows they return, put
// back in place, must equal the one-GPU reference with the one-GPU
// tolerances (outputs poisoned with NaN first), forward and gradients, and
// the bytes moved must equal the plan's, forward and backward. Every
// pattern of the GPU pattern table, causal or not, GQA (4 heads on 2 kv
// heads), ragged shards, P = 2, 3, 4, 8, both layouts, head_dim 64 and
// 128.
#include "GpuTest.h"


namespace dattn::test {
namespace {

void expectRingMatches(const AttentionSpec &spec, int64_t batch, int64_t n, int ranks,
                       uint64_t seed) {
  const std::string what = spec.canonical() + "N = " + std::to_string(n) + ", P = " +
                           std::to_string(ranks) + ", batch " + std::to_string(batch);
  SCOPED_TRACE(what);
  Runtime &rt = runtime();
  const int64_t H = spec.heads, Hk = spec.kvHeads, D = spec.headDim;
  const std::vector<float> q = randomVector(batch * n * H * D, seed),
                           k = randomVector(batch * n * Hk * D, seed + 1),
                           v = randomVector(batch * n * Hk * D, seed + 2);
  BlockMask mask;
  if (spec.needsBlockMask())
    mask = SpecGenerator(seed).mask(spec, n);
  const BlockMask *maskPtr = spec.needsBlockMask() ? &mask : nullptr;
  auto attn = rt.compile(spec);
  HostRing run(*attn, ranks, batch, n, q.data(), k.data(), v.data(), maskPtr);
  ASSERT_EQ(run.ranks(), ranks);
  run.run();
  std::vector<float> out, lse;
  run.read(out, lse);
  EXPECT_EQ(run.bytesMoved(), run.plan().totalBytesForward * batch);

  std::vector<float> ref(out.size()), refLse(lse.size());
  referenceForward(spec, batch, n, run.q().data(), run.k().data(), run.v().data(), maskPtr,
                   ref.data(), refLse.data());
  const Comparison c =
      compareWithReference(spec, batch, n, out.data(), lse.data(), ref.data(), refLse.data());
  const double tol = toleranceFor(spec);
  EXPECT_EQ(c.nans, 0u) << "NaN (unwritten) outputs";
  EXPECT_EQ(c.emptyMismatch, 0u) << "empty rows differ";
  EXPECT_LT(c.relError, tol);
  EXPECT_LT(c.maxRowError, kRowToleranceFactor * tol) << "worst row";
  EXPECT_LT(c.maxLseError, lseToleranceFor(spec));

  // Backward: the same schedule, partials returned to their owners.
  const std::vector<float> dout = randomVector(q.size(), seed + 3);
  run.backward(dout.data());
  std::vector<float> dq, dk, dv;
  run.readGradients(dq, dk, dv);
  EXPECT_EQ(run.bytesMoved(), run.plan().totalBytesBackward * batch);
  std::vector<float> rq(dq.size()), rk(dk.size()), rv(dv.size());
  referenceBackward(spec, batch, n, run.q().data(), run.k().data(), run.v().data(),
                    run.dout().data(), maskPtr, rq.data(), rk.data(), rv.data());
  expectGradientClose("dq", dq, rq, D, toleranceFor(spec), what);
  expectGradientClose("dk", dk, rk, D, toleranceFor(spec), what);
  expectGradientClose("dv", dv, rv, D, toleranceFor(spec), what);
}

TEST(GpuRing, LoopbackEveryPatternMatchesTheReference) {
  REQUIRE_GPU();
  const int sizes[] = {2, 3, 4, 8};
  int trial = 0;
  for (int p = 0; p < kNumPatterns; ++p)
    for (bool causal : {false, true}) {
      AttentionSpec spec = parse(patternSpec(p, "bf16", causal));
      if (trial % 2)
        spec.ringLayout = RingLayout::Zigzag;
      SCOPED_TRACE(kPatterns[p].name);
      expectRingMatches(spec, 1 + trial % 2, 300 + 7 * trial, sizes[trial % 4], 500 + trial);
      ++trial;
    }
}

TEST(GpuRing, LoopbackDtypesAndBlockMasks) {
  REQUIRE_GPU();
  for (const char *dtype : {"fp16", "fp32"})
    expectRingMatches(parse(patternSpec(0, dtype, true)), 1, 257, 3, 11);
  // fp32 with precision tf32: every branch takes the tensor-core block
  // kernels on TF32 operands, strided and blocks (ieee: SIMT everywhere).
  for (const char *pattern : {"dilated", "window_global", "dilated_blocks"})
    for (int x = 0; x < kNumPatterns; ++x)
      if (const PatternCase &c = kPatterns[x]; std::string(c.name) == pattern) {
        SCOPED_TRACE(std::string("tf32 ") + pattern);
        AttentionSpec spec = parse(std::string("attention t { heads = 4 kv_heads = 2 head_dim = "
                                               "64 dtype = fp32 precision = tf32 causal = true ") +
                                   c.branches + " }");
        expectRingMatches(spec, 1, 300, 3, 17);
      }
  SpecGenerator gen(3);
  for (int trial = 0; trial < 6; ++trial) {
    AttentionSpec spec = gen.spec(); // every pattern, unions, block masks
    spec.dtype = DType::BF16;
    expectRingMatches(spec, 1, gen.uniform(40, 200), trial % 2 ? 4 : 3, 70 + trial);
  }
}

TEST(GpuRing, LoopbackFragmentedReceivesMatchTheReference) {
  // The paper's shape: several dilations on every head, so a peer's rows for
  // a kv head are the union of residues of 2, 3, 4 and 6, runs of one to
  // three rows: the executor stages such blocks in the sender's shape for
  // the tensor-core kernels (docs/ring.md). Causal and not, both layouts.
  const char *text = R"(attention frag {
  heads = 4
  kv_heads = 2
  head_dim = 64
  dtype = bf16
  causal = %s
  branch { dilated(segment = 256, dilation = 2, offset = head) }
  branch { dilated(segment = 512, dilation = 3, offset = head) }
  branch { dilated(segment = 1024, dilation = 4, offset = head) }
  branch { dilated(segment = 2048, dilation = 6, offset = head) }
})";
  REQUIRE_GPU();
  int trial = 0;
  for (const char *causal : {"false", "true"})
    for (RingLayout layout : {RingLayout::Contiguous, RingLayout::Zigzag}) {
      char buf[1024];
      std::snprintf(buf, sizeof buf, text, causal);
      AttentionSpec spec = parse(buf);
      spec.ringLayout = layout;
      const int ranks = 2 + trial % 2;
      const int64_t n = 1500 + 37 * trial;
      // The plan does fragment: some receive averages fewer rows per part
      // than a key tile.
      const AttentionPlan plan = planAttention(spec, PlanOptions{});
      const RingSchedule sched = scheduleRing(planRing(plan, n, ranks, nullptr, 0));
      bool fragmented = false;
      for (const RankSchedule &rs : sched.ranks)
        for (const RingStep &st : rs.steps) {
          const int64_t parts = static_cast<int64_t>(st.recv.parts.size());
          fragmented = fragmented || (st.recv.rows > 0 && parts * 64 > st.recv.rows);
        }
      EXPECT_TRUE(fragmented) << "the test spec no longer fragments its receives";
      expectRingMatches(spec, 1 + trial % 2, n, ranks, 900 + trial);
      ++trial;
    }
}

TEST(GpuRing, LoopbackHeadDim128) {
  // head_dim 128, the benchmark's: on an H100 or H200 the strided branches'
  // block kernels are the wgmma CTAs (ring_wgmma.cuh) with two 64-column
  // blocks a row; dense causal in both layouts, a dilated branch spanning
  // the shards, ragged N.
  REQUIRE_GPU();
  const char *texts[] = {
      "attention d { heads = 2 head_dim = 128 dtype = bf16 causal = true branch { dense } }",
      "attention l { heads = 4 kv_heads = 2 head_dim = 128 dtype = fp16 "
      "branch heads 0..1 { dilated(segment = 256, dilation = 1) } "
      "branch heads 2..3 { dilated(segment = 1024, dilation = 2, offset = head) } }",
  };
  int trial = 0;
  for (const char *text : texts)
    for (RingLayout layout : {RingLayout::Contiguous, RingLayout::Zigzag}) {
      AttentionSpec spec = parse(text);
      spec.ringLayout = layout;
      expectRingMatches(spec, 1 + trial % 2, 700 + 61 * trial, 2 + trial % 2, 1200 + trial);
      ++trial;
    }
}

TEST(GpuRing, LoopbackPassAlongMatchesTheReference) {
  // Dense without a causal mask moves whole shards: the blocks are passed
  // along the ring, their dK/dV partials travel with them and come home
  // after the last step (RingSchedule::passAlong). P = 2, 3, 4 and 8, both
  // layouts, GQA, two batches, shards that are not whole tiles; the own
  // rows' gradients land in the slot the partials came home to.
  REQUIRE_GPU();
  int trial = 0;
  for (int ranks : {2, 3, 4, 8})
    for (RingLayout layout : {RingLayout::Contiguous, RingLayout::Zigzag}) {
      AttentionSpec spec = parse("attention t { heads = 4 kv_heads = 2 head_dim = 64 "
                                 "dtype = bf16 branch { dense } }");
      spec.ringLayout = layout;
      const int64_t n = 160 * ranks + 37 + trial;
      ASSERT_TRUE(scheduleRing(planRing(planAttention(spec, PlanOptions{}), n, ranks)).passAlong)
          << "N = " << n << ", P = " << ranks;
      expectRingMatches(spec, 1 + trial % 2, n, ranks, 1300 + trial);
      ++trial;
    }
}

TEST(GpuRing, LoopbackMoreRanksThanRows) {
  REQUIRE_GPU();
  expectRingMatches(parse(patternSpec(0, "bf16", false)), 1, 5, 8, 3);
}

// Rank timing (what `dattn run --ranks P --loopback` prints per rank): a
// time for every rank, each inside the pass's, and the timed passes compute
// what untimed ones do, bit for bit.
TEST(GpuRing, LoopbackRankTimesCoverEveryRankAndChangeNothing) {
  REQUIRE_GPU();
  const AttentionSpec spec = parse("attention t { heads = 4 kv_heads = 2 head_dim = 64 "
                                   "dtype = bf16 causal = true branch { dense } }");
  const int64_t n = 1500, H = 4, Hk = 2, D = 64;
  const std::vector<float> q = randomVector(n * H * D, 11), k = randomVector(n * Hk * D, 12),
                           v = randomVector(n * Hk * D, 13), dout = randomVector(q.size(), 14);
  auto attn = runtime().compile(spec);
  HostRing run(*attn, 3, 1, n, q.data(), k.data(), v.data());
  EXPECT_THROW(run.rankMilliseconds(true, 1), Error) << "backward timed before backward()";
  run.run();
  std::vector<float> out, lse, dq, dk, dv;
  run.read(out, lse);
  run.backward(dout.data());
  run.readGradients(dq, dk, dv);
  for (bool backward : {false, true}) {
    SCOPED_TRACE(backward ? "backward" : "forward");
    const double pass =
        timeMedianMs([&](int) { backward ? run.rebackward() : run.rerun(); }, 1, 3);
    const std::vector<double> ms = run.rankMilliseconds(backward, 3);
    ASSERT_EQ(ms.size(), 3u);
    for (double x : ms) {
      EXPECT_GT(x, 0.0);
      EXPECT_LT(x, 2 * pass) << "a rank took longer than the whole pass";
    }
  }
  // The timed passes above wrote what the untimed ones did: the forward bit
  // for bit, the gradients to a tenth of the tolerance (fp32 atomics add
  // in any order).
  std::vector<float> out2, lse2, dq2, dk2, dv2;
  run.read(out2, lse2);
  run.readGradients(dq2, dk2, dv2);
  EXPECT_EQ(out, out2);
  EXPECT_EQ(lse, lse2);
  const double tol = toleranceFor(spec) / 10;
  expectGradientClose("dq", dq2, dq, D, tol, "timed against untimed");
  expectGradientClose("dk", dk2, dk, D, tol, "timed against untimed");
  expectGradientClose("dv", dv2, dv, D, tol, "timed against untimed");
}

} // namespace
} // namespace dattn::test
