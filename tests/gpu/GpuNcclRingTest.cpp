// The ring over NCCL (NcclRing), one process driving two GPUs: each rank
// holds only its rows; its outputs (poisoned with NaN first) must equal the
// loopback ring's bit for bit (the same kernels in the same order on the
// same inputs), which GpuRingTest checks against the reference; the bytes
// sent must equal the plan's. Ranks that planned differently must all fail
// with an error that says so. Needs 2 GPUs (skips with the count otherwise).
#include "GpuTest.h"

#include "dattn/comm.h"

#include <thread>

namespace dattn::test {
namespace {

constexpr uint32_t kNaN32 = 0xffffffffu;

#define REQUIRE_TWO_GPUS()                                                                   \
  do {                                                                                       \
    REQUIRE_GPU();                                                                           \
    if (Runtime::deviceCount() < 2)                                                          \
      GTEST_SKIP() << "needs 2 GPUs (NCCL allows one rank per GPU), the driver sees "        \
                   << Runtime::deviceCount();                                                \
  } while (0)

/// Rank r's rows of a [B, N, width] tensor in its shard's order.
std::vector<float> rowsOf(const RingPlan &plan, const std::vector<float> &full, int64_t batch,
                          int64_t width, int rank) {
  std::vector<float> out;
  for (int64_t b = 0; b < batch; ++b)
    for (const RowRange &r : plan.rankPlans[rank].shard)
      out.insert(out.end(), full.begin() + (b * plan.seqLen + r.begin) * width,
                 full.begin() + (b * plan.seqLen + r.end) * width);
  return out;
}

std::unique_ptr<DeviceBuffer> upload(const std::vector<float> &values, DType t) {
  const std::vector<char> bytes = encode(values.data(), values.size(), t);
  auto buf = std::make_unique<DeviceBuffer>(std::max<size_t>(16, bytes.size()));
  if (!bytes.empty())
    buf->upload(bytes.data(), bytes.size());
  return buf;
}

std::vector<float> download(const DeviceBuffer &b, size_t count, DType t) {
  std::vector<char> raw(count * (t == DType::F32 ? 4 : 2));
  b.download(raw.data(), raw.size());
  std::vector<float> out(count);
  decode(raw.data(), count, t, out.data());
  return out;
}

void expectSameAsLoopback(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed) {
  SCOPED_TRACE(spec.canonical() + "N = " + std::to_string(n));
  const DType t = spec.dtype;
  const int64_t H = spec.heads, Hk = spec.kvHeads, D = spec.headDim;
  const std::vector<float> q = randomVector(batch * n * H * D, seed),
                           k = randomVector(batch * n * Hk * D, seed + 1),
                           v = randomVector(batch * n * Hk * D, seed + 2),
                           dout = randomVector(batch * n * H * D, seed + 3);
  // The loopback ring on GPU 0: the outputs to match.
  const std::string cache = ::testing::TempDir() + "/dattn_gpu_cache";
  Runtime gpu0(0, RuntimeOptions{cache, {}}), gpu1(1, RuntimeOptions{cache, {}});
  Runtime *gpus[2] = {&gpu0, &gpu1};
  std::unique_ptr<CompiledAttention> attn[2] = {gpu0.compile(spec), gpu1.compile(spec)};
  HostRing loop(*attn[0], 2, batch, n, q.data(), k.data(), v.data());
  loop.run();
  std::vector<float> wantOut, wantLse, wantDq, wantDk, wantDv;
  loop.read(wantOut, wantLse);
  loop.backward(dout.data());
  loop.readGradients(wantDq, wantDk, wantDv);

  auto comms = RingCommunicator::forDevices({0, 1});
  NcclRing ring({{attn[0].get(), comms[0].get(), {}}, {attn[1].get(), comms[1].get(), {}}},
                batch, n);
  const RingPlan &plan = ring.plan();
  ASSERT_EQ(plan.ranks, 2);
  struct Rank {
    std::unique_ptr<DeviceBuffer> q, k, v, out, lse, ws, dout, dq, dk, dv;
  } ranks[2];
  std::vector<RingRankForward> fargs(2);
  std::vector<RingRankBackward> bargs(2);
  for (int r = 0; r < 2; ++r) {
    gpus[r]->makeCurrent(); // buffers on the rank's GPU
    Rank &x = ranks[r];
    const int64_t rows = ring.rows(r);
    x.q = upload(rowsOf(plan, loop.q(), batch, H * D, r), t);
    x.k = upload(rowsOf(plan, loop.k(), batch, Hk * D, r), t);
    x.v = upload(rowsOf(plan, loop.v(), batch, Hk * D, r), t);
    x.dout = upload(rowsOf(plan, loop.dout(), batch, H * D, r), t);
    x.out = std::make_unique<DeviceBuffer>(x.q->bytes());
    x.dq = std::make_unique<DeviceBuffer>(x.q->bytes());
    x.dk = std::make_unique<DeviceBuffer>(x.k->bytes());
    x.dv = std::make_unique<DeviceBuffer>(x.k->bytes());
    x.lse = std::make_unique<DeviceBuffer>(std::max<int64_t>(16, batch * H * rows * 4));
    x.ws = std::make_unique<DeviceBuffer>(
        std::max(ring.workspaceBytes(r), ring.backwardWorkspaceBytes(r)));
    for (DeviceBuffer *b : {x.out.get(), x.lse.get(), x.ws.get(), x.dq.get(), x.dk.get(),
                            x.dv.get()})
      b->fill32(kNaN32);
    auto desc = [&](const DeviceBuffer &b, int64_t heads) {
      return TensorDesc::contiguous(b.data(), t, {batch, rows, heads, D});
    };
    const TensorDesc lse = TensorDesc::contiguous(x.lse->data(), DType::F32, {batch, H, rows});
    fargs[r] = {desc(*x.q, H), desc(*x.k, Hk), desc(*x.v, Hk), desc(*x.out, H), lse,
                x.ws->workspace()};
    bargs[r] = {desc(*x.q, H),    desc(*x.k, Hk),  desc(*x.v, Hk),  desc(*x.out, H), lse,
                desc(*x.dout, H), desc(*x.dq, H),  desc(*x.dk, Hk), desc(*x.dv, Hk),
                x.ws->workspace()};
  }
  EXPECT_EQ(ring.forward(fargs), plan.totalBytesForward * batch);
  // The bytes each direction sent add up to the plan's total (two ranks in
  // this process: everything).
  const int64_t sentBack = ring.backward(bargs);
  EXPECT_EQ(sentBack, plan.totalBytesBackward * batch);
  for (int r = 0; r < 2; ++r) {
    gpus[r]->makeCurrent();
    const int64_t rows = ring.rows(r);
    const Rank &x = ranks[r];
    EXPECT_EQ(download(*x.out, batch * rows * H * D, t), rowsOf(plan, wantOut, batch, H * D, r))
        << "O of rank " << r;
    EXPECT_EQ(download(*x.dq, batch * rows * H * D, t), rowsOf(plan, wantDq, batch, H * D, r))
        << "dq of rank " << r;
    EXPECT_EQ(download(*x.dk, batch * rows * Hk * D, t), rowsOf(plan, wantDk, batch, Hk * D, r))
        << "dk of rank " << r;
    EXPECT_EQ(download(*x.dv, batch * rows * Hk * D, t), rowsOf(plan, wantDv, batch, Hk * D, r))
        << "dv of rank " << r;
  }
}

TEST(GpuNcclRing, TwoGpusEqualTheLoopbackRing) {
  REQUIRE_TWO_GPUS();
  // Dense causal zigzag, a dilated branch spanning the shards, window and
  // global tokens with GQA, head-partitioned LongNet (no transfer at all).
  const char *specs[] = {
      "attention a { heads = 4 head_dim = 64 dtype = bf16 causal = true ring = 2 "
      "ring_layout = zigzag branch { dense } }",
      "attention b { heads = 4 head_dim = 64 dtype = bf16 ring = 2 "
      "branch { dilated(segment = 512, dilation = 2, offset = head) } }",
      "attention c { heads = 4 kv_heads = 2 head_dim = 64 dtype = fp16 ring = 2 "
      "branch { window(left = 64, right = 0) | global(tokens = 8) } }",
      "attention d { heads = 4 head_dim = 64 dtype = bf16 ring = 2 "
      "branch heads 0..1 { dilated(segment = 128, dilation = 1, offset = 0) } "
      "branch heads 2..3 { dilated(segment = 256, dilation = 2, offset = 1) } }",
  };
  uint64_t seed = 900;
  for (const char *text : specs)
    expectSameAsLoopback(parse(text), 2, 1000, seed += 10);
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
