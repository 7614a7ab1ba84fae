// Forward kernels on the GPU against the CPU reference: every pattern, every
// dtype, causal, GQA, head dims, ragged N, long sequences with several
// segments, multi-branch merging, the block mask, random specs. Outputs are
// poisoned with NaN before each run (HostAttention::run), inputs are fresh
// random values, NaN never passes. Without a GPU every test skips and says why.
#include "GpuTest.h"

#include <cstdlib>
#include <tuple>

namespace dattn::test {
namespace {

class Patterns : public ::testing::TestWithParam<std::tuple<int, const char *, bool>> {};

TEST_P(Patterns, MatchReference) {
  REQUIRE_GPU();
  auto [index, dtype, causal] = GetParam();
  AttentionSpec spec = parse(patternSpec(index, dtype, causal));
  for (int64_t n : {1, 77, 300, 513})
    expectClose(spec, n == 77 ? 2 : 1, n, 1000 + n + index);
}

INSTANTIATE_TEST_SUITE_P(
    AllPatterns, Patterns,
    ::testing::Combine(::testing::Range(0, kNumPatterns), ::testing::Values("fp16", "bf16", "fp32"),
                       ::testing::Bool()),
    [](const auto &info) {
      return std::string(kPatterns[std::get<0>(info.param)].name) + "_" +
             std::get<1>(info.param) + (std::get<2>(info.param) ? "_causal" : "");
    });

TEST(GpuForward, LongSequencesWithRaggedTails) {
  // N >= 4096: many segments and tiles per segment, tails shorter than a
  // segment and than a tile. 384 rows compared: the first and last 64 (the
  // ragged tail) and 256 spread between.
  REQUIRE_GPU();
  struct Case {
    const char *dtype;
    bool causal;
    int64_t n;
    const char *branches;
  };
  const Case cases[] = {
      {"bf16", false, 4096 + 77,
       "branch { dilated(segment = 1024, dilation = 1) } "
       "branch { dilated(segment = 2048, dilation = 2, offset = head) } "
       "branch { dilated(segment = 4096, dilation = 4, offset = head) }"},
      {"fp16", true, 5000,
       "branch heads 0..1 { dilated(segment = 1000, dilation = 1) } "
       "branch heads 2..3 { dilated(segment = 3000, dilation = 3, offset = 2) }"},
      {"bf16", true, 4500, "branch { window(left = 300, right = 0) | global(tokens = 64) }"},
      {"fp16", false, 4133, "branch { random(block = 64, density = 0.2, seed = 3) }"},
      {"fp32", false, 4100, "branch { dilated(segment = 2000, dilation = 2, offset = head) }"},
  };
  for (const Case &c : cases) {
    AttentionSpec spec =
        parse(std::string("attention t { heads = 4 kv_heads = 2 head_dim = 64 dtype = ") +
              c.dtype + (c.causal ? " causal = true " : " ") + c.branches + " }");
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < 64; ++i)
      rows.push_back(i), rows.push_back(c.n - 1 - i);
    std::mt19937_64 rng(c.n);
    while (rows.size() < 384)
      rows.push_back(static_cast<int64_t>(rng() % static_cast<uint64_t>(c.n)));
    expectClose(spec, 1, c.n, c.n, nullptr, &rows);
  }
}

TEST(GpuForward, Tf32TensorCores) {
  // fp32 with precision tf32 runs the tensor-core kernels (m16n8k8 on TF32
  // operands), forward and backward, held to 2e-3 (gradients 4e-3).
  REQUIRE_GPU();
  for (int p = 0; p < kNumPatterns; ++p)
    for (bool causal : {false, true}) {
      AttentionSpec spec = parse(patternSpec(p, "fp32", causal));
      spec.precision = Precision::TF32;
      SCOPED_TRACE(kPatterns[p].name);
      auto attn = runtime().compile(spec);
      for (const BranchPlan &b : attn->plan().branches) {
        EXPECT_STREQ(plannedKernels(attn->plan(), b, "forward").at(0).family->name(),
                     "sm80_mma_forward");
        EXPECT_STREQ(plannedKernels(attn->plan(), b, "backward").at(0).family->name(),
                     "sm80_mma_backward_dkv");
      }
      for (int64_t n : {77, 300, 513})
        expectClose(spec, n == 77 ? 2 : 1, n, 3000 + n + p);
      expectGradientsClose(spec, 1, 300, 4000 + p, /*deterministic=*/p % 3 == 0);
    }
  for (int d : {32, 96, 128}) {
    AttentionSpec spec = parse("attention t { heads = 2 head_dim = " + std::to_string(d) +
                               " dtype = fp32 precision = tf32 branch { dilated(segment = 200, "
                               "dilation = 2, offset = head) | window(left = 20, right = 20) } }");
    expectClose(spec, 1, 333, d);
  }
}

TEST(GpuForward, WgmmaFamilyOnHopper) {
  // The sm90 wgmma forward families (the pipelined one is the default; the
  // TMA one loads K and V through tensor maps), each forced through
  // DATTN_FAMILIES, against the reference: every pattern, causal (fp16) or
  // not (bf16), head_dim 64 and 128, ragged N; dilations whose TMA boxes
  // hold 128, 64 and 32 rows, GQA and two batches.
  REQUIRE_GPU();
  if (runtime().device().smVersion != 90)
    GTEST_SKIP() << "the wgmma families need an sm_90 GPU, this one is sm_"
                 << runtime().device().smVersion;
  for (const char *family :
       {"sm90_wgmma_forward", "sm90_wgmma_pipelined_forward", "sm90_wgmma_tma_forward"}) {
    SCOPED_TRACE(family);
    ScopedFamilies families(family);
    auto check = [&](const AttentionSpec &spec) {
      auto attn = runtime().compile(spec);
      for (const BranchPlan &b : attn->plan().branches)
        EXPECT_STREQ(plannedKernels(attn->plan(), b, "forward").at(0).family->name(), family);
      for (int64_t n : {77, 300, 1000})
        expectClose(spec, n == 77 ? 2 : 1, n, 5000 + n);
    };
    for (int p = 0; p < kNumPatterns; ++p)
      for (bool causal : {false, true}) {
        SCOPED_TRACE(kPatterns[p].name);
        check(parse(patternSpec(p, causal ? "fp16" : "bf16", causal))); // both dtypes
      }
    check(parse("attention t { heads = 4 head_dim = 128 dtype = bf16 "
                "branch heads 0..1 { dilated(segment = 512, dilation = 1) } "
                "branch heads 2..3 { dilated(segment = 1024, dilation = 4, offset = head) } }"));
    const AttentionSpec strides =
        parse("attention t { heads = 8 kv_heads = 2 head_dim = 64 dtype = bf16 "
              "branch heads 0..3 { dilated(segment = 768, dilation = 3, offset = head) } "
              "branch heads 4..7 { dilated(segment = 1024, dilation = 8, offset = head) } }");
    check(strides);
    expectClose(strides, 2, 2500, 5100);
  }
  // Blocks of 64 rows: the TMA kernel's 64 x 64 tiles (one consumer
  // warpgroup, two CTAs an SM), a union with a window and global tokens
  // (bigbird) and dilated blocks, causal or not, GQA, ragged N.
  ScopedFamilies families("sm90_wgmma_tma_forward");
  for (const char *branches :
       {"branch { window(left = 100, right = 37) | global(tokens = 9) | "
        "random(block = 64, density = 0.3, seed = 7) }",
        "branch { dilated_blocks(block = 64, rates = [2, 3]) }"})
    for (bool causal : {false, true}) {
      const AttentionSpec spec =
          parse(std::string("attention t { heads = 4 kv_heads = 2 head_dim = 64 dtype = ") +
                (causal ? "fp16 causal = true " : "bf16 ") + branches + " }");
      SCOPED_TRACE(branches);
      auto attn = runtime().compile(spec);
      const KernelChoice k = plannedKernels(attn->plan(), attn->plan().branches[0], "forward").at(0);
      EXPECT_STREQ(k.family->name(), "sm90_wgmma_tma_forward");
      EXPECT_EQ(k.config.blockM, 64);
      EXPECT_EQ(k.config.blockN, 64);
      for (int64_t n : {77, 300, 1000})
        expectClose(spec, n == 77 ? 2 : 1, n, 5200 + n);
    }
}

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
