// The ring over NCCL (NcclRing), one process driving two GPUs: each rank
// holds only its rows; its outputs (poisoned with NaN first) must equal the
// loopback ring's bit for bit (the same kernels in the same order on the
// same inputs), which GpuRingTest checks against the reference, and its
// gradients must match the loopback's within a tenth of the dtype's
// tolerance (dQ, dK and dV are summed with fp32 atomics, whose order is
// not fixed); the bytes sent must equal the plan's. Ranks that planned
// differently must all fail with an error that says so. Needs 2 GPUs
// (skips with the count otherwise; one test takes every GPU where there
// are more), except a world of one rank, which runs on any GPU.
#include "GpuTest.h"

#include "dattn/comm.h"

#include <memory>
#include <thread>
#include <vector>

namespace dattn::test {
namespace {

#define REQUIRE_TWO_GPUS()                                                                   \
  do {                                                                                       \
    REQUIRE_GPU();                                                                           \
    if (Runtime::deviceCount() < 2)                                                          \
      GTEST_SKIP() << "needs 2 GPUs (NCCL allows one rank per GPU), the driver sees "        \
                   << Runtime::deviceCount();                                                \
  } while (0)

/// The ring over GPUs 0 .. gpus - 1 (one rank each, driven from this
/// process) against the loopback ring of as many ranks on GPU 0.
void expectSameAsLoopback(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed,
                          int gpus) {
  SCOPED_TRACE(spec.canonical() + "N = " + std::to_string(n) + ", " + std::to_string(gpus) +
               " GPUs");
  const int64_t H = spec.heads, Hk = spec.kvHeads, D = spec.headDim;
  const std::vector<float> q = randomVector(batch * n * H * D, seed),
                           k = randomVector(batch * n * Hk * D, seed + 1),
                           v = randomVector(batch * n * Hk * D, seed + 2),
                           dout = randomVector(batch * n * H * D, seed + 3);
  const std::string cache = ::testing::TempDir() + "/dattn_gpu_cache";
  std::vector<std::unique_ptr<Runtime>> runtimes;
  std::vector<std::unique_ptr<CompiledAttention>> attn;
  std::vector<int> devices;
  for (int g = 0; g < gpus; ++g) {
    runtimes.push_back(std::make_unique<Runtime>(g, RuntimeOptions{cache, {}}));
    attn.push_back(runtimes.back()->compile(spec));
    devices.push_back(g);
  }
  // The loopback ring on GPU 0: the outputs to match.
  HostRing loop(*attn[0], gpus, batch, n, q.data(), k.data(), v.data());
  loop.run();
  std::vector<float> out[2], lse[2], dq[2], dk[2], dv[2];
  loop.read(out[0], lse[0]);
  loop.backward(dout.data());
  loop.readGradients(dq[0], dk[0], dv[0]);

  auto comms = RingCommunicator::forDevices(devices);
  std::vector<RingMember> members;
  for (int g = 0; g < gpus; ++g)
    members.push_back({attn[g].get(), comms[g].get(), {}});
  HostRing ring(std::move(members), batch, n, q.data(), k.data(), v.data());
  ASSERT_EQ(ring.ranks(), gpus);
  ring.run(); // outputs poisoned with NaN first
  ring.read(out[1], lse[1]);
  // Every rank is in this process: they sent everything the plan moves.
  EXPECT_EQ(ring.bytesMoved(), ring.plan().totalBytesForward * batch);
  ring.backward(dout.data());
  ring.readGradients(dq[1], dk[1], dv[1]);
  EXPECT_EQ(ring.bytesMoved(), ring.plan().totalBytesBackward * batch);
  EXPECT_EQ(out[1], out[0]) << "O";
  EXPECT_EQ(lse[1], lse[0]) << "LSE";
  const std::string context = spec.canonical() + "N = " + std::to_string(n);
  const double tol = toleranceFor(spec) / 10;
  expectGradientClose("dq", dq[1], dq[0], D, tol, context);
  expectGradientClose("dk", dk[1], dk[0], D, tol, context);
  expectGradientClose("dv", dv[1], dv[0], D, tol, context);
}

// Dense causal zigzag, a dilated branch spanning the shards, window and
// global tokens with GQA, head-partitioned LongNet (at two ranks no
// transfer at all), dense without a mask (passed along).
const char *const kRingSpecs[] = {
    "attention a { heads = 4 head_dim = 64 dtype = bf16 causal = true ring = 2 "
    "ring_layout = zigzag branch { dense } }",
    "attention b { heads = 4 head_dim = 64 dtype = bf16 ring = 2 "
    "branch { dilated(segment = 512, dilation = 2, offset = head) } }",
    "attention c { heads = 4 kv_heads = 2 head_dim = 64 dtype = fp16 ring = 2 "
    "branch { window(left = 64, right = 0) | global(tokens = 8) } }",
    "attention d { heads = 4 head_dim = 64 dtype = bf16 ring = 2 "
    "branch heads 0..1 { dilated(segment = 128, dilation = 1, offset = 0) } "
    "branch heads 2..3 { dilated(segment = 256, dilation = 2, offset = 1) } }",
    // Dense, no causal mask: the blocks are passed along (RingSchedule::passAlong).
    "attention e { heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 ring = 2 "
    "branch { dense } }",
};

TEST(GpuNcclRing, TwoGpusEqualTheLoopbackRing) {
  REQUIRE_TWO_GPUS();
  uint64_t seed = 900;
  for (const char *text : kRingSpecs)
    expectSameAsLoopback(parse(text), 2, 1000, seed += 10, 2);
}

// The same ring over every GPU of a machine with more than two (issue 10's
// 4 and 8), one rank each (the spec's ring = 2 is only the CLI's default).
// With 8 ranks at N = 1000 a shard holds 125 rows: still two key tiles, so
// the dense spec is passed along as on two GPUs.
TEST(GpuNcclRing, EveryGpuEqualsTheLoopbackRing) {
  REQUIRE_GPU();
  const int gpus = Runtime::deviceCount();
  if (gpus < 3)
    GTEST_SKIP() << "needs 3 or more GPUs (TwoGpusEqualTheLoopbackRing runs two), the driver "
                    "sees "
                 << gpus;
  uint64_t seed = 1900;
  for (const char *text : kRingSpecs)
    expectSameAsLoopback(parse(text), 2, 1000, seed += 10, gpus);
}

// A world of one rank runs on any GPU: no transfers, but NCCL's
// non-blocking initialization, the plan check (an all-gather of one), the
// streams, events and watching, and the finalization all run.
TEST(GpuNcclRing, OneRankWorldEqualsTheLoopback) {
  REQUIRE_GPU();
  const AttentionSpec spec = parse("attention a { heads = 4 kv_heads = 2 head_dim = 64 "
                                   "dtype = bf16 causal = true branch { dense } }");
  const int64_t n = 700;
  const std::vector<float> q = randomVector(n * 4 * 64, 1), k = randomVector(n * 2 * 64, 2),
                           v = randomVector(n * 2 * 64, 3), dout = randomVector(n * 4 * 64, 4);
  Runtime &rt = runtime();
  auto attn = rt.compile(spec);
  HostRing loop(*attn, 1, 1, n, q.data(), k.data(), v.data());
  loop.run();
  std::vector<float> out[2], lse[2], dq[2], dk[2], dv[2];
  loop.read(out[0], lse[0]);
  loop.backward(dout.data());
  loop.readGradients(dq[0], dk[0], dv[0]);
  auto comms = RingCommunicator::forDevices({rt.device().ordinal});
  {
    HostRing ring({{attn.get(), comms[0].get(), {}}}, 1, n, q.data(), k.data(), v.data());
    ring.run();
    ring.read(out[1], lse[1]);
    ring.backward(dout.data());
    ring.readGradients(dq[1], dk[1], dv[1]);
    EXPECT_EQ(ring.bytesMoved(), 0);
  }
  EXPECT_EQ(out[1], out[0]) << "O";
  EXPECT_EQ(lse[1], lse[0]) << "LSE";
  EXPECT_EQ(dq[1], dq[0]) << "dq";
  EXPECT_EQ(dk[1], dk[0]) << "dk";
  EXPECT_EQ(dv[1], dv[0]) << "dv";
  EXPECT_FALSE(comms[0]->aborted());
}

TEST(GpuNcclRing, RanksThatPlannedDifferentlyAllFail) {
  REQUIRE_TWO_GPUS();
  const AttentionSpec spec =
      parse("attention a { heads = 4 head_dim = 64 dtype = bf16 ring = 2 branch { dense } }");
  const std::string cache = ::testing::TempDir() + "/dattn_gpu_cache";
  Runtime gpu0(0, RuntimeOptions{cache, {}}), gpu1(1, RuntimeOptions{cache, {}});
  std::unique_ptr<CompiledAttention> attn[2] = {gpu0.compile(spec), gpu1.compile(spec)};
  auto comms = RingCommunicator::forDevices({0, 1});
  // Each rank in its own thread, as in two processes: rank 1 was given
  // another sequence length.
  std::string errors[2];
  std::thread ranks[2];
  for (int r = 0; r < 2; ++r)
    ranks[r] = std::thread([&, r] {
      try {
        NcclRing ring({{attn[r].get(), comms[r].get(), {}}}, 1, r == 0 ? 1024 : 2048);
      } catch (const Error &e) {
        errors[r] = e.what();
      }
    });
  for (std::thread &t : ranks)
    t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(errors[r].find("disagree"), std::string::npos) << "rank " << r << ": " << errors[r];
    EXPECT_TRUE(comms[r]->aborted());
  }
}

} // namespace
} // namespace dattn::test
