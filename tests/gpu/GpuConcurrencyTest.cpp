// Runs that share a GPU or a thread: two streams with separate inputs and
// workspaces at once equal serial runs; a forward+backward captured in a
// CUDA graph and replayed on new inputs equals eager runs; attentions on
// GPU 0 and GPU 1 used alternately from one thread are both correct (skips
// with a reason below two GPUs); one HostAttention serves two configurations;
// branch kernels on side streams (the default) equal one stream
// (DATTN_BRANCH_STREAMS=0).
#include "GpuTest.h"

#include <cstring>

namespace dattn::test {
namespace {

const char *kSpec = "attention t { heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 "
                    "branch { dilated(segment = 256, dilation = 2, offset = head) } "
                    "branch { window(left = 64, right = 0) | global(tokens = 16) } }";

struct Results {
  std::vector<float> out, lse, dq, dk, dv;
};

/// Outputs and gradients of the last runs (waits for h's stream).
Results readBack(HostAttention &h) {
  Results r;
  h.read(r.out, r.lse);
  h.readGradients(r.dq, r.dk, r.dv);
  return r;
}

/// Forward, then a deterministic backward, read back.
Results runOnce(HostAttention &h, const std::vector<float> &dout) {
  h.run();
  h.backward(dout.data(), /*deterministic=*/true);
  return readBack(h);
}

void expectSameBits(const Results &a, const Results &b, const std::string &what) {
  for (auto [name, x, y] : {std::tuple{"out", &a.out, &b.out}, std::tuple{"lse", &a.lse, &b.lse},
                            std::tuple{"dq", &a.dq, &b.dq}, std::tuple{"dk", &a.dk, &b.dk},
                            std::tuple{"dv", &a.dv, &b.dv}}) {
    ASSERT_EQ(x->size(), y->size());
    EXPECT_EQ(0, std::memcmp(x->data(), y->data(), x->size() * 4)) << name << ": " << what;
  }
}

void expectMatchesReference(const AttentionSpec &spec, int64_t n, HostAttention &h,
                            const Results &r, const std::string &what) {
  std::vector<float> ro(r.out.size()), rl(r.lse.size());
  referenceForward(spec, 1, n, h.q().data(), h.k().data(), h.v().data(), nullptr, ro.data(),
                   rl.data());
  Comparison c = compareWithReference(spec, 1, n, r.out.data(), r.lse.data(), ro.data(), rl.data());
  EXPECT_TRUE(c.within(toleranceFor(spec))) << what << ": O rel. " << c.relError;
  std::vector<float> rq(r.dq.size()), rk(r.dk.size()), rv(r.dv.size());
  referenceBackward(spec, 1, n, h.q().data(), h.k().data(), h.v().data(), h.dout().data(),
                    nullptr, rq.data(), rk.data(), rv.data());
  expectGradientClose("dq", r.dq, rq, spec.headDim, toleranceFor(spec), what);
  expectGradientClose("dk", r.dk, rk, spec.headDim, toleranceFor(spec), what);
  expectGradientClose("dv", r.dv, rv, spec.headDim, toleranceFor(spec), what);
}

TEST(GpuConcurrency, OneHostAttentionRunsAnotherConfiguration) {
  // HostAttention::useAttention (the tuner's candidates on one set of
  // buffers): the same inputs through a second configuration (branch 0's
  // forward on the sm80 family, its dK/dV kernel on its last candidate)
  // match the reference, outputs and gradients poisoned before each run;
  // another spec is refused.
  REQUIRE_GPU();
  AttentionSpec spec = parse(kSpec);
  auto heuristic = runtime().compile(spec);
  const AttentionPlan &plan = heuristic->plan();
  const Target target = Target::forGpu(runtime().device().smVersion,
                                       runtime().device().smemOptinBytes);
  const KernelFamily &sm80 = familyNamed("sm80_mma_forward");
  const KernelChoice dkv = plannedKernels(plan, plan.branches[0], "backward").at(0);
  CompileOptions other;
  other.kernels = {
      {0, "forward", sm80.name(), sm80.heuristic(plan, plan.branches[0], target, false), "test"},
      {0, "backward", dkv.family->name(),
       dkv.family->candidates(plan, plan.branches[0], target, false).back(), "test"}};
  auto second = runtime().compile(spec, other);
  EXPECT_STREQ(plannedKernels(second->plan(), second->plan().branches[0], "forward")
                   .at(0).family->name(), "sm80_mma_forward");
  const int64_t n = 700;
  const std::vector<float> q = randomVector(size_t(n) * 4 * 64, 1),
                           k = randomVector(size_t(n) * 2 * 64, 2),
                           v = randomVector(size_t(n) * 2 * 64, 3),
                           dout = randomVector(size_t(n) * 4 * 64, 4);
  HostAttention h(*heuristic, 1, n, q.data(), k.data(), v.data());
  expectMatchesReference(spec, n, h, runOnce(h, dout), "the heuristic");
  h.useAttention(*second);
  expectMatchesReference(spec, n, h, runOnce(h, dout), "the second configuration");
  auto unrelated = runtime().compile(parse("attention u { heads = 2 head_dim = 64 dtype = bf16 "
                                           "branch { dense } }"));
  try {
    h.useAttention(*unrelated);
    ADD_FAILURE() << "another spec was accepted";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("not the spec"), std::string::npos) << e.what();
  }
}

TEST(GpuConcurrency, TwoStreamsEqualSerialRuns) {
  REQUIRE_GPU();
  AttentionSpec spec = parse(kSpec);
  auto attn = runtime().compile(spec);
  const int64_t n = 1500, qc = n * 4 * 64, kc = n * 2 * 64;
  std::vector<float> in[2][4];
  for (int s = 0; s < 2; ++s)
    for (int x = 0; x < 4; ++x)
      in[s][x] = randomVector(x == 0 || x == 3 ? qc : kc, 100 * s + x);
  HostAttention a(*attn, 1, n, in[0][0].data(), in[0][1].data(), in[0][2].data());
  HostAttention b(*attn, 1, n, in[1][0].data(), in[1][1].data(), in[1][2].data());
  const Results serialA = runOnce(a, in[0][3]), serialB = runOnce(b, in[1][3]);
  expectMatchesReference(spec, n, a, serialA, "serial run A");

  Stream sa, sb;
  a.setStream(sa.handle());
  b.setStream(sb.handle());
  for (int round = 0; round < 3; ++round) {
    a.poisonOutputs(), b.poisonOutputs(), a.poisonGradients(), b.poisonGradients();
    // Interleaved enqueues: both streams have work in flight at once.
    a.rerun();
    b.rerun();
    a.rebackward(true);
    b.rebackward(true);
    const Results ra = readBack(a), rb = readBack(b);
    expectSameBits(ra, serialA, "stream A, round " + std::to_string(round));
    expectSameBits(rb, serialB, "stream B, round " + std::to_string(round));
  }
}

TEST(GpuConcurrency, CapturedGraphReplaysOnNewInputs) {
  REQUIRE_GPU();
  AttentionSpec spec = parse(kSpec);
  auto attn = runtime().compile(spec);
  const int64_t n = 1200, qc = n * 4 * 64, kc = n * 2 * 64;
  std::vector<float> q = randomVector(qc, 1), k = randomVector(kc, 2), v = randomVector(kc, 3),
                     dout = randomVector(qc, 4);
  HostAttention h(*attn, 1, n, q.data(), k.data(), v.data());
  Stream s;
  h.setStream(s.handle());
  for (bool deterministic : {false, true}) {
    SCOPED_TRACE(deterministic ? "deterministic backward" : "default backward");
    h.setInputs(q.data(), k.data(), v.data());
    h.run();
    h.backward(dout.data(), deterministic); // loads the backward kernels before the capture
    s.synchronize("eager warm-up");
    CapturedGraph graph;
    graph.begin(s.handle());
    h.rerun();
    h.rebackward(deterministic);
    graph.end();
    for (int replay = 0; replay < 2; ++replay) {
      // New inputs in the same buffers: eager results first, then the graph's.
      const uint64_t seed = 10 + 10 * replay + deterministic;
      std::vector<float> q2 = randomVector(qc, seed), k2 = randomVector(kc, seed + 1),
                         v2 = randomVector(kc, seed + 2), d2 = randomVector(qc, seed + 3);
      h.setInputs(q2.data(), k2.data(), v2.data());
      h.setDout(d2.data());
      h.run();
      h.backward(d2.data(), deterministic);
      const Results eager = readBack(h);
      h.poisonOutputs();
      h.poisonGradients();
      graph.launch(s.handle());
      const Results replayed = readBack(h);
      const std::string what = "replay " + std::to_string(replay);
      expectMatchesReference(spec, n, h, replayed, what);
      if (deterministic)
        expectSameBits(replayed, eager, what);
      else // fp32 reductions in dQ: the same values up to summation order
        expectGradientClose("dq (replay vs eager)", replayed.dq, eager.dq, 64, toleranceFor(spec),
                            what);
    }
  }
}

TEST(GpuConcurrency, BranchStreamsEqualOneStream) {
  // By default the branch kernels of an attention whose heads
  // are each in one branch run side by side on side streams. The same
  // kernels on disjoint rows give the same bits as one stream: forward and
  // deterministic backward, outputs poisoned before every round, on a
  // stream of the caller's and replayed from a captured graph (where they
  // run on the caller's stream alone); the default backward within
  // tolerance (dQ's reductions in any order). A spec that merges branches
  // gets no side streams.
  REQUIRE_GPU();
  const AttentionSpec spec =
      parse("attention hp { heads = 6 kv_heads = 3 head_dim = 64 dtype = bf16 "
            "branch heads 0..1 { dilated(segment = 256, dilation = 1, offset = 0) } "
            "branch heads 2..3 { dilated(segment = 512, dilation = 2, offset = 1) } "
            "branch heads 4..5 { window(left = 64, right = 0) | global(tokens = 16) } }");
  setenv("DATTN_BRANCH_STREAMS", "0", 1);
  auto oneStream = runtime().compile(spec);
  unsetenv("DATTN_BRANCH_STREAMS");
  auto sideBySide = runtime().compile(spec);
  auto merged = runtime().compile(parse(kSpec));
  EXPECT_FALSE(oneStream->branchStreams());
  ASSERT_TRUE(sideBySide->branchStreams());
  EXPECT_FALSE(merged->branchStreams()) << "its heads are in both branches";

  const int64_t n = 1500, qc = n * 6 * 64, kc = n * 3 * 64;
  const std::vector<float> q = randomVector(qc, 71), k = randomVector(kc, 72),
                           v = randomVector(kc, 73), dout = randomVector(qc, 74);
  HostAttention a(*oneStream, 1, n, q.data(), k.data(), v.data());
  HostAttention b(*sideBySide, 1, n, q.data(), k.data(), v.data());
  const Results expected = runOnce(a, dout);
  expectMatchesReference(spec, n, a, expected, "one stream");
  Stream s;
  b.setStream(s.handle());
  expectSameBits(runOnce(b, dout), expected, "side streams, first run");
  for (int round = 0; round < 3; ++round) {
    b.poisonOutputs();
    b.poisonGradients();
    b.rerun();
    b.rebackward(true);
    expectSameBits(readBack(b), expected, "side streams, round " + std::to_string(round));
  }
  b.poisonGradients();
  b.rebackward(false);
  Results loose;
  b.readGradients(loose.dq, loose.dk, loose.dv);
  expectGradientClose("dq (default backward)", loose.dq, expected.dq, 64, toleranceFor(spec),
                      "side streams");
  expectGradientClose("dk (default backward)", loose.dk, expected.dk, 64, toleranceFor(spec),
                      "side streams");

  CapturedGraph graph;
  graph.begin(s.handle());
  b.rerun();
  b.rebackward(true);
  graph.end();
  b.poisonOutputs();
  b.poisonGradients();
  graph.launch(s.handle());
  expectSameBits(readBack(b), expected, "captured with side streams on");
}

TEST(GpuConcurrency, TwoGpusAlternatelyFromOneThread) {
  REQUIRE_GPU();
  if (Runtime::deviceCount() < 2)
    GTEST_SKIP() << "needs 2 GPUs, the driver sees " << Runtime::deviceCount();
  AttentionSpec spec = parse(kSpec);
  const std::string cache = ::testing::TempDir() + "/dattn_gpu_cache";
  Runtime gpu0(0, RuntimeOptions{cache, {}}), gpu1(1, RuntimeOptions{cache, {}});
  auto a0 = gpu0.compile(spec), a1 = gpu1.compile(spec);
  const int64_t n = 700, qc = n * 4 * 64, kc = n * 2 * 64;
  std::vector<float> in[2][4];
  for (int g = 0; g < 2; ++g)
    for (int x = 0; x < 4; ++x)
      in[g][x] = randomVector(x == 0 || x == 3 ? qc : kc, 50 * g + x);
  // The current context is GPU 1's (the last Runtime made); each
  // HostAttention allocates in its attention's context.
  HostAttention h0(*a0, 1, n, in[0][0].data(), in[0][1].data(), in[0][2].data());
  HostAttention h1(*a1, 1, n, in[1][0].data(), in[1][1].data(), in[1][2].data());
  for (int round = 0; round < 2; ++round) {
    Results r0 = runOnce(h0, in[0][3]);
    Results r1 = runOnce(h1, in[1][3]);
    expectMatchesReference(spec, n, h0, r0, "GPU 0, round " + std::to_string(round));
    expectMatchesReference(spec, n, h1, r1, "GPU 1, round " + std::to_string(round));
  }
  // GPU 0's memory given to GPU 1's attention is an error, not a fault.
  gpu0.makeCurrent();
  DeviceBuffer onGpu0(1 << 20), lse(1 << 16);
  ForwardArgs f;
  f.q = f.out = TensorDesc::contiguous(onGpu0.data(), DType::BF16, {1, 64, 4, 64});
  f.k = f.v = TensorDesc::contiguous(onGpu0.data(), DType::BF16, {1, 64, 2, 64});
  f.lse = TensorDesc::contiguous(lse.data(), DType::F32, {1, 4, 64});
  try {
    a1->forward(f);
    ADD_FAILURE() << "GPU 0 memory accepted by an attention on GPU 1";
  } catch (const ArgumentError &e) {
    EXPECT_NE(std::string(e.what()).find("is memory of GPU 0"), std::string::npos) << e.what();
  }
}

} // namespace
} // namespace dattn::test
