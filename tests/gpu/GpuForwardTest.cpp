// Forward kernels on the GPU against the CPU reference: every pattern, every
// dtype, causal, GQA, head dims, ragged N, multi-branch merging, the block
// mask, random specs; plus argument validation. Outputs are poisoned with
// NaN before each run, inputs are fresh random values, NaN never passes.
// Without a GPU every test skips and says why.
#include "../unit/RandomSpec.h"

#include "dattn/error.h"
#include "dattn/runtime.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <tuple>

namespace dattn::test {
namespace {

std::string noGpuReason() {
  SystemInfo s = querySystem();
  if (!s.driverError.empty())
    return s.driverError;
  if (s.devices.empty())
    return "the driver sees no GPU";
  if (!s.nvrtcError.empty())
    return s.nvrtcError;
  return "";
}

#define REQUIRE_GPU()                                                                          \
  do {                                                                                         \
    static const std::string reason = noGpuReason();                                           \
    if (!reason.empty())                                                                       \
      GTEST_SKIP() << "no GPU: " << reason;                                                    \
  } while (0)

Runtime &runtime() {
  static Runtime rt(0, RuntimeOptions{::testing::TempDir() + "/dattn_gpu_cache", {}});
  return rt;
}

/// Runs `spec` at (batch, n) on random inputs on the GPU and on the CPU
/// reference (on the same dtype-rounded inputs) and compares them.
Comparison runAndCompare(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed,
                         const BlockMask *mask = nullptr) {
  Runtime &rt = runtime(); // binds the GPU context before any allocation
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> q(batch * n * spec.heads * spec.headDim),
      k(batch * n * spec.kvHeads * spec.headDim), v(k.size());
  for (auto *x : {&q, &k, &v})
    for (float &f : *x)
      f = normal(rng);
  auto attn = rt.compile(spec);
  HostForward run(*attn, batch, n, q.data(), k.data(), v.data(), mask);
  run.run();
  std::vector<float> out, lse, ref(q.size()), refLse(batch * spec.heads * n);
  run.read(out, lse);
  referenceForward(spec, batch, n, run.q().data(), run.k().data(), run.v().data(), mask,
                   ref.data(), refLse.data());
  return compareWithReference(spec, batch, n, out.data(), lse.data(), ref.data(), refLse.data());
}

AttentionSpec parse(const std::string &text) {
  ParseResult r = parseSpec(text, "gpu_test.dattn");
  EXPECT_TRUE(r.ok()) << r.formatDiagnostics();
  return r.ok() ? r.file.attentions.at(0) : AttentionSpec{};
}

void expectClose(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed,
                 const BlockMask *mask = nullptr) {
  Comparison r = runAndCompare(spec, batch, n, seed, mask);
  const std::string what = spec.canonical() + "N = " + std::to_string(n) + ", batch " +
                           std::to_string(batch);
  EXPECT_EQ(r.nans, 0u) << "NaN (unwritten or invalid) outputs\n" << what;
  EXPECT_EQ(r.emptyMismatch, 0u) << "empty rows differ\n" << what;
  EXPECT_LT(r.relError, toleranceFor(spec.dtype)) << what;
  EXPECT_LT(r.maxLseError, 1e-2) << what;
}

struct PatternCase {
  const char *name;
  const char *branches;
};

const PatternCase kPatterns[] = {
    {"dense", "branch { dense }"},
    {"dilated", "branch { dilated(segment = 96, dilation = 3, offset = head) }"},
    {"dilated_ragged", "branch { dilated(segment = 50, dilation = 6, offset = 1) }"},
    {"dilated_unsegmented", "branch { dilated(segment = inf, dilation = 2, offset = head) }"},
    {"window", "branch { window(left = 40, right = 17) }"},
    {"global", "branch { global(tokens = 9) }"},
    {"window_global", "branch { window(left = 33, right = 0) | global(tokens = 5) }"},
    {"random", "branch { random(block = 32, density = 0.3, seed = 5) }"},
    {"dilated_blocks", "branch { dilated_blocks(block = 16, rates = [2, 5]) }"},
    {"hierarchical", "branch { hierarchical(block = 16, levels = 3) }"},
    {"union_with_dilated", "branch { dilated(segment = 64, dilation = 2) | window(left = 8, right = 8) }"},
    {"multi_branch", "branch { dilated(segment = 64, dilation = 1) } "
                     "branch { dilated(segment = 128, dilation = 2, offset = head) } "
                     "branch heads 0..1 { window(left = 16, right = 0) }"},
    {"head_partitioned", "branch heads 0..1 { dilated(segment = 64, dilation = 1) } "
                         "branch heads 2..3 { dilated(segment = 128, dilation = 2, offset = 1) }"},
};

class Patterns : public ::testing::TestWithParam<std::tuple<int, const char *, bool>> {};

TEST_P(Patterns, MatchReference) {
  REQUIRE_GPU();
  auto [index, dtype, causal] = GetParam();
  const PatternCase &pc = kPatterns[index];
  std::string text = std::string("attention t { heads = 4 kv_heads = 2 head_dim = 64 dtype = ") +
                     dtype + (causal ? " causal = true " : " ") + pc.branches + " }";
  AttentionSpec spec = parse(text);
  for (int64_t n : {1, 77, 300, 513})
    expectClose(spec, n == 77 ? 2 : 1, n, 1000 + n + index);
}

INSTANTIATE_TEST_SUITE_P(
    AllPatterns, Patterns,
    ::testing::Combine(::testing::Range(0, static_cast<int>(std::size(kPatterns))),
                       ::testing::Values("fp16", "bf16", "fp32"), ::testing::Bool()),
    [](const auto &info) {
      return std::string(kPatterns[std::get<0>(info.param)].name) + "_" +
             std::get<1>(info.param) + (std::get<2>(info.param) ? "_causal" : "");
    });

TEST(GpuForward, HeadDims) {
  REQUIRE_GPU();
  for (int d : {32, 64, 96, 128, 256})
    for (const char *dt : {"fp16", "bf16"}) {
      AttentionSpec spec = parse("attention t { heads = 2 head_dim = " + std::to_string(d) +
                                 " dtype = " + dt +
                                 " branch { dilated(segment = 200, dilation = 2, offset = head) "
                                 "| window(left = 20, right = 20) } }");
      expectClose(spec, 1, 333, d);
    }
}

TEST(GpuForward, BlockMask) {
  REQUIRE_GPU();
  AttentionSpec spec = parse("attention t { heads = 2 head_dim = 64 dtype = bf16 "
                             "branch { block_mask(block = 32) } }");
  SpecGenerator gen(3);
  for (int64_t n : {40, 250}) {
    BlockMask m = gen.mask(spec, n);
    expectClose(spec, 1, n, 9, &m);
  }
}

TEST(GpuForward, RandomSpecs) {
  REQUIRE_GPU();
  SpecGenerator gen(11);
  for (int trial = 0; trial < 30; ++trial) {
    AttentionSpec spec = gen.spec();
    spec.dtype = trial % 3 == 0 ? DType::F32 : trial % 3 == 1 ? DType::F16 : DType::BF16;
    int64_t n = gen.uniform(1, 260);
    BlockMask m;
    if (spec.needsBlockMask())
      m = gen.mask(spec, n);
    SCOPED_TRACE("trial " + std::to_string(trial));
    expectClose(spec, 1, n, trial, spec.needsBlockMask() ? &m : nullptr);
  }
}

TEST(GpuForward, PaddedLayouts) {
  // Q and O with padded rows (row stride H * D + 64): the kernels follow the
  // strides and the init kernel (used instead of memset for strided outputs)
  // leaves empty rows at O = 0, LSE = -inf and the padding untouched.
  REQUIRE_GPU();
  Runtime &rt = runtime();
  for (const char *dtype : {"bf16", "fp32"}) {
    AttentionSpec spec = parse(std::string("attention t { heads = 2 head_dim = 64 dtype = ") +
                               dtype + " branch { dilated(segment = 64, dilation = 2) } }");
    const int64_t n = 150, H = 2, D = 64, pad = 64, rowStride = H * D + pad;
    std::mt19937_64 rng(4);
    std::normal_distribution<float> normal;
    std::vector<float> q(n * H * D), k(n * H * D), v(n * H * D);
    for (auto *x : {&q, &k, &v})
      for (float &f : *x)
        f = normal(rng);
    auto kd = encode(k.data(), k.size(), spec.dtype), vd = encode(v.data(), v.size(), spec.dtype);
    decode(kd.data(), k.size(), spec.dtype, k.data());
    decode(vd.data(), v.size(), spec.dtype, v.data());
    std::vector<float> qPadded(n * rowStride, 0.f);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t x = 0; x < H * D; ++x)
        qPadded[i * rowStride + x] = q[i * H * D + x];
    auto qd = encode(qPadded.data(), qPadded.size(), spec.dtype);
    decode(qd.data(), qPadded.size(), spec.dtype, qPadded.data());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t x = 0; x < H * D; ++x)
        q[i * H * D + x] = qPadded[i * rowStride + x];
    const size_t eb = spec.dtype == DType::F32 ? 4 : 2;
    DeviceBuffer dq(qd.size()), dk(kd.size()), dv(vd.size()), dout(n * rowStride * eb),
        dlse(H * n * 4);
    dq.upload(qd.data(), qd.size());
    dk.upload(kd.data(), kd.size());
    dv.upload(vd.data(), vd.size());
    dout.fill32(0x3f803f80u); // 1.0 patterns: the padding must keep them
    dlse.fill32(0x7fc00000u);
    auto attn = rt.compile(spec);
    ForwardArgs a;
    a.seqLen = n;
    a.q = dq.data();
    a.k = dk.data();
    a.v = dv.data();
    a.out = dout.data();
    a.lse = static_cast<float *>(dlse.data());
    a.qStrides.row = rowStride;
    a.outStrides.row = rowStride;
    attn->forward(a);
    synchronize("padded forward");
    std::vector<char> raw(n * rowStride * eb);
    dout.download(raw.data(), raw.size());
    std::vector<float> out(n * rowStride), lse(H * n), ref(q.size()), refLse(lse.size());
    decode(raw.data(), out.size(), spec.dtype, out.data());
    dlse.download(lse.data(), lse.size() * 4);
    referenceForward(spec, 1, n, q.data(), k.data(), v.data(), nullptr, ref.data(),
                     refLse.data());
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t x = 0; x < H * D; ++x) {
        double d = out[i * rowStride + x] - ref[i * H * D + x];
        diff += d * d;
        norm += double(ref[i * H * D + x]) * ref[i * H * D + x];
      }
      for (int64_t x = H * D; x < rowStride; ++x)
        ASSERT_NE(out[i * rowStride + x], 0.f) << "padding overwritten at row " << i;
    }
    EXPECT_LT(std::sqrt(diff / norm), toleranceFor(spec.dtype)) << dtype;
    for (size_t x = 0; x < lse.size(); ++x)
      EXPECT_EQ(std::isinf(lse[x]), std::isinf(refLse[x])) << "lse " << x;
  }
}

TEST(GpuForward, RejectsBadArguments) {
  REQUIRE_GPU();
  AttentionSpec spec = parse("attention t { heads = 2 head_dim = 64 dtype = bf16 "
                             "branch { dense } }");
  auto attn = runtime().compile(spec);
  DeviceBuffer buf(1 << 20), lse(1 << 16);
  ForwardArgs a;
  a.seqLen = 64;
  a.q = a.k = a.v = buf.data();
  a.out = buf.data();
  a.lse = static_cast<float *>(lse.data());
  auto expectError = [&](ForwardArgs bad, const std::string &fragment) {
    try {
      attn->forward(bad);
      ADD_FAILURE() << "accepted; expected an error containing: " << fragment;
    } catch (const ArgumentError &e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  ForwardArgs b = a;
  b.q = static_cast<char *>(buf.data()) + 2;
  expectError(b, "q at");
  b = a;
  std::vector<char> host(1 << 20);
  b.k = host.data() + (16 - reinterpret_cast<uintptr_t>(host.data()) % 16) % 16;
  expectError(b, "is not GPU memory");
  b = a;
  b.vStrides.row = 100;
  expectError(b, "v row stride 100 must be a positive multiple of 8");
  b = a;
  b.batch = 0;
  expectError(b, "batch must be in [1, 65535]");
  b = a;
  b.out = nullptr;
  expectError(b, "out is null");
}

TEST(GpuForward, DiskCacheServesASecondRuntime) {
  REQUIRE_GPU();
  const std::string dir = ::testing::TempDir() + "/dattn_cache_reuse";
  AttentionSpec spec = parse("attention cache_probe { heads = 1 head_dim = 64 dtype = fp16 "
                             "branch { window(left = 3, right = 3) } }");
  Runtime first(0, RuntimeOptions{dir, {}});
  auto a = first.compile(spec);
  Runtime second(0, RuntimeOptions{dir, {}});
  auto b = second.compile(spec);
  EXPECT_EQ(b->report().origin, "disk cache");
  EXPECT_EQ(a->report().cacheFolder, b->report().cacheFolder);
}

} // namespace
} // namespace dattn::test

namespace dattn::test {
namespace {

/// GPU gradients against the reference's, at twice the forward tolerance.
void expectGradientsClose(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed,
                          bool deterministic = false) {
  Runtime &rt = runtime();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> q(batch * n * spec.heads * spec.headDim),
      k(batch * n * spec.kvHeads * spec.headDim), v(k.size()), dout(q.size());
  for (auto *x : {&q, &k, &v, &dout})
    for (float &f : *x)
      f = normal(rng);
  BlockMask mask;
  if (spec.needsBlockMask())
    mask = SpecGenerator(seed).mask(spec, n);
  const BlockMask *maskPtr = spec.needsBlockMask() ? &mask : nullptr;
  auto attn = rt.compile(spec);
  HostForward run(*attn, batch, n, q.data(), k.data(), v.data(), maskPtr);
  run.run();
  run.backward(dout.data(), deterministic);
  std::vector<float> dq, dk, dv;
  run.readGradients(dq, dk, dv);
  std::vector<float> rq(dq.size()), rk(dk.size()), rv(dv.size());
  referenceBackward(spec, batch, n, run.q().data(), run.k().data(), run.v().data(),
                    run.dout().data(), maskPtr, rq.data(), rk.data(), rv.data());
  for (auto [name, got, want] : {std::tuple{"dq", &dq, &rq}, std::tuple{"dk", &dk, &rk},
                                 std::tuple{"dv", &dv, &rv}}) {
    size_t nans = 0;
    const double rel = relativeError(*got, *want, &nans);
    EXPECT_EQ(nans, 0u) << name << "\n" << spec.canonical();
    EXPECT_LT(rel, 2 * toleranceFor(spec.dtype))
        << name << " N = " << n << (deterministic ? " (deterministic)" : "") << "\n"
        << spec.canonical();
  }
}

class Gradients : public ::testing::TestWithParam<std::tuple<int, const char *, bool>> {};

TEST_P(Gradients, MatchReference) {
  REQUIRE_GPU();
  auto [index, dtype, causal] = GetParam();
  std::string text = std::string("attention t { heads = 4 kv_heads = 2 head_dim = 64 dtype = ") +
                     dtype + (causal ? " causal = true " : " ") + kPatterns[index].branches +
                     " }";
  // GQA (dK, dV summed over a group; fp32 accumulators) in both modes...
  AttentionSpec spec = parse(text);
  for (int64_t n : {1, 77, 200})
    expectGradientsClose(spec, n == 77 ? 2 : 1, n, 500 + n + index, /*deterministic=*/n == 200);
  // ... and one kv head per head: single-branch heads get their gradients
  // written directly by the tensor-core kernels.
  spec.kvHeads = spec.heads;
  for (bool deterministic : {false, true})
    expectGradientsClose(spec, 1, 130, 900 + index, deterministic);
}

INSTANTIATE_TEST_SUITE_P(
    AllPatterns, Gradients,
    ::testing::Combine(::testing::Range(0, static_cast<int>(std::size(kPatterns))),
                       ::testing::Values("fp16", "bf16", "fp32"), ::testing::Bool()),
    [](const auto &info) {
      return std::string(kPatterns[std::get<0>(info.param)].name) + "_" +
             std::get<1>(info.param) + (std::get<2>(info.param) ? "_causal" : "");
    });

TEST(GpuBackward, RandomSpecsAndHeadDims) {
  REQUIRE_GPU();
  SpecGenerator gen(21);
  for (int trial = 0; trial < 12; ++trial) {
    AttentionSpec spec = gen.spec();
    spec.dtype = trial % 3 == 0 ? DType::F32 : trial % 3 == 1 ? DType::F16 : DType::BF16;
    spec.headDim = trial % 4 == 0 ? 128 : trial % 4 == 1 ? 96 : 32;
    SCOPED_TRACE("trial " + std::to_string(trial));
    expectGradientsClose(spec, 1, gen.uniform(1, 150), trial, trial % 2 == 1);
  }
}

/// Runs the backward pass of `spec` twice in deterministic mode and expects
/// bit-identical gradients (and gradients close to the reference).
void expectBitIdentical(const AttentionSpec &spec, int64_t n) {
  std::mt19937_64 rng(8);
  std::normal_distribution<float> normal;
  std::vector<float> q(n * spec.heads * spec.headDim), k(n * spec.kvHeads * spec.headDim),
      v(k.size()), dout(q.size());
  for (auto *x : {&q, &k, &v, &dout})
    for (float &f : *x)
      f = normal(rng);
  auto attn = runtime().compile(spec);
  HostForward run(*attn, 1, n, q.data(), k.data(), v.data());
  run.run();
  std::vector<float> g1[3], g2[3];
  run.backward(dout.data(), true);
  run.readGradients(g1[0], g1[1], g1[2]);
  run.backward(dout.data(), true);
  run.readGradients(g2[0], g2[1], g2[2]);
  for (int x = 0; x < 3; ++x)
    EXPECT_EQ(0, std::memcmp(g1[x].data(), g2[x].data(), g1[x].size() * 4))
        << "gradient " << x << "\n" << spec.canonical();
}

TEST(GpuBackward, DeterministicBitForBit) {
  REQUIRE_GPU();
  // GQA and two branches (accumulators), then the LongNet shape in small
  // (direct writes, 128-key tiles, many query tiles per key tile).
  expectBitIdentical(parse("attention t { heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 "
                           "branch { dilated(segment = 64, dilation = 2, offset = head) } "
                           "branch { window(left = 20, right = 5) | global(tokens = 3) } }"),
                     300);
  AttentionSpec longnet =
      parse("attention t { heads = 3 head_dim = 128 dtype = bf16 "
            "branch heads 0 { dilated(segment = 512, dilation = 1) } "
            "branch heads 1 { dilated(segment = 1024, dilation = 2, offset = 1) } "
            "branch heads 2 { dilated(segment = 2048, dilation = 4, offset = 2) } }");
  expectBitIdentical(longnet, 3000);
  expectGradientsClose(longnet, 1, 3000, 77, /*deterministic=*/false);
  expectGradientsClose(longnet, 1, 3000, 78, /*deterministic=*/true);
}

} // namespace
} // namespace dattn::test
