// The backward pass on the GPU against the reference's gradients: every
// pattern, dtype and causal, GQA (accumulators) and one kv head per head
// (direct writes), both modes; random specs and head dims; bit-for-bit
// determinism. Gradients are poisoned with NaN before every run, reruns
// included (HostAttention::backward).
#include "GpuTest.h"

#include <cstring>
#include <tuple>

namespace dattn::test {
namespace {

class Gradients : public ::testing::TestWithParam<std::tuple<int, const char *, bool>> {};

TEST_P(Gradients, MatchReference) {
  REQUIRE_GPU();
  auto [index, dtype, causal] = GetParam();
  // GQA (dK, dV summed over a group; fp32 accumulators) in both modes...
  AttentionSpec spec = parse(patternSpec(index, dtype, causal));
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
    ::testing::Combine(::testing::Range(0, kNumPatterns), ::testing::Values("fp16", "bf16", "fp32"),
                       ::testing::Bool()),
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

TEST(GpuBackward, LongKeyColumnsSplitAcrossCtas) {
  REQUIRE_GPU();
  // Key tiles whose walk over query tiles is longer than one chunk
  // (rt::kQueryChunkTiles of 64 rows at N = 2500: 40 tiles) run it in
  // several CTAs adding dK/dV by reductions: global tokens' columns, a
  // causal unbounded dilated segment, a 2048-row segment, random blocks
  // that keep more than a chunk of a column (split by the tiles they keep:
  // 2 chunks of 21 tiles of the range), in modules with accumulators (GQA;
  // a head in two branches), and deterministic (one CTA per key tile) for
  // comparison.
  const char *specs[] = {
      "attention t { heads = 4 kv_heads = 2 head_dim = 128 dtype = bf16 causal = true "
      "branch heads 0..1 { window(left = 100, right = 0) } "
      "branch heads 2..3 { dilated(segment = inf, dilation = 2, offset = head) | "
      "global(tokens = 9) } }",
      "attention t { heads = 2 head_dim = 64 dtype = fp16 "
      "branch { window(left = 30, right = 30) | global(tokens = 7) } "
      "branch { dilated(segment = 2048, dilation = 1) } }",
      "attention t { heads = 4 kv_heads = 1 head_dim = 64 dtype = fp16 "
      "branch { window(left = 30, right = 30) | global(tokens = 7) | "
      "random(block = 64, density = 0.6, seed = 9) } }",
  };
  for (const char *text : specs)
    for (bool deterministic : {false, true})
      expectGradientsClose(parse(text), 1, 2500, 41, deterministic);
}

/// The wgmma dK/dV family `family` forced through DATTN_FAMILIES, against
/// the reference: every pattern it takes (block patterns need blocks of 128
/// rows or more, 64 for the warp-specialized kernel with head_dim 64),
/// causal (fp16) or not (bf16), head_dim 64 and 128, ragged N, GQA and one
/// kv head per head, both modes; and long key columns split across CTAs.
void checkWgmmaDkvFamily(const std::string &family) {
  SCOPED_TRACE(family);
  ScopedFamilies families(family.c_str());
  int branchesOnWgmma = 0;
  auto check = [&](AttentionSpec spec, int64_t longN) {
    auto attn = runtime().compile(spec);
    for (const BranchPlan &b : attn->plan().branches)
      branchesOnWgmma += plannedKernels(attn->plan(), b, "backward").at(0).family->name() == family;
    for (int64_t n : {int64_t(77), int64_t(300), longN})
      expectGradientsClose(spec, n == 77 ? 2 : 1, n, 700 + n, /*deterministic=*/false);
    expectGradientsClose(spec, 1, 200, 703, /*deterministic=*/true);
    spec.kvHeads = spec.heads;
    for (bool deterministic : {false, true})
      expectGradientsClose(spec, 1, 130, 704, deterministic);
  };
  for (int p = 0; p < kNumPatterns; ++p)
    for (bool causal : {false, true}) {
      SCOPED_TRACE(std::string(kPatterns[p].name) + (causal ? " causal" : ""));
      AttentionSpec spec = parse(patternSpec(p, causal ? "fp16" : "bf16", causal));
      spec.headDim = (p + causal) % 2 ? 128 : 64;
      check(spec, 1000);
    }
  EXPECT_GE(branchesOnWgmma, 16) << "too few branches ran " << family;
  // Blocks of 64 rows with head_dim 64: the warp-specialized kernel's CTAs
  // of 64 key rows (the plain kernel leaves them to the sm80 one).
  const int before = branchesOnWgmma;
  for (bool causal : {false, true}) {
    const std::string head = std::string("attention t { heads = 4 kv_heads = 1 head_dim = 64 ") +
                             (causal ? "dtype = fp16 causal = true " : "dtype = bf16 ");
    check(parse(head + "branch { window(left = 70, right = 70) | global(tokens = 9) | "
                       "random(block = 64, density = 0.3, seed = 7) } }"),
          1000);
    check(parse(head + "branch { dilated_blocks(block = 64, rates = [1, 3]) } }"), 1000);
  }
  if (family == "sm90_wgmma_ws_backward_dkv") {
    EXPECT_EQ(branchesOnWgmma, before + 4) << "blocks of 64 rows did not run on " << family;
  }
  check(parse("attention t { heads = 4 kv_heads = 2 head_dim = 128 dtype = bf16 causal = true "
              "branch heads 0..1 { window(left = 100, right = 0) } "
              "branch heads 2..3 { dilated(segment = inf, dilation = 2, offset = head) | "
              "global(tokens = 9) } }"),
        2500);
  for (bool deterministic : {false, true})
    expectGradientsClose(parse("attention t { heads = 2 head_dim = 64 dtype = fp16 "
                               "branch { window(left = 30, right = 30) | global(tokens = 7) } "
                               "branch { dilated(segment = 2048, dilation = 1) } }"),
                         1, 2500, 705, deterministic);
  // Dilations whose TMA boxes (the warp-specialized kernel's Q and dO)
  // hold 64 and 32 rows, two batches.
  for (bool deterministic : {false, true})
    expectGradientsClose(
        parse("attention t { heads = 8 kv_heads = 2 head_dim = 64 dtype = bf16 "
              "branch heads 0..3 { dilated(segment = 768, dilation = 3, offset = head) } "
              "branch heads 4..7 { dilated(segment = 1024, dilation = 8, offset = head) } }"),
        2, 2500, 706, deterministic);
}

TEST(GpuBackward, WgmmaDkvFamilyOnHopper) {
  REQUIRE_GPU();
  if (runtime().device().smVersion != 90)
    GTEST_SKIP() << "the wgmma families need an sm_90 GPU, this one is sm_"
                 << runtime().device().smVersion;
  checkWgmmaDkvFamily("sm90_wgmma_backward_dkv");
}

TEST(GpuBackward, WarpSpecializedWgmmaDkvFamilyOnHopper) {
  // The same with the producer warpgroup bringing Q and dO through TMA.
  REQUIRE_GPU();
  if (runtime().device().smVersion != 90)
    GTEST_SKIP() << "the wgmma families need an sm_90 GPU, this one is sm_"
                 << runtime().device().smVersion;
  checkWgmmaDkvFamily("sm90_wgmma_ws_backward_dkv");
}

/// Runs the backward pass of `spec` twice in deterministic mode, each on
/// gradients poisoned with NaN, and expects bit-identical results.
void expectBitIdentical(const AttentionSpec &spec, int64_t n) {
  const size_t qCount = n * spec.heads * spec.headDim, kvCount = n * spec.kvHeads * spec.headDim;
  std::vector<float> q = randomVector(qCount, 8), k = randomVector(kvCount, 9),
                     v = randomVector(kvCount, 10), dout = randomVector(qCount, 11);
  auto attn = runtime().compile(spec);
  HostAttention run(*attn, 1, n, q.data(), k.data(), v.data());
  run.run();
  std::vector<float> g1[3], g2[3];
  run.backward(dout.data(), true);
  run.readGradients(g1[0], g1[1], g1[2]);
  run.backward(dout.data(), true); // poisons again: a run that writes nothing fails
  run.readGradients(g2[0], g2[1], g2[2]);
  for (int x = 0; x < 3; ++x) {
    size_t nans = 0;
    for (float f : g2[x])
      nans += std::isnan(f);
    EXPECT_EQ(nans, 0u) << "gradient " << x << " of the second run\n" << spec.canonical();
    EXPECT_EQ(0, std::memcmp(g1[x].data(), g2[x].data(), g1[x].size() * 4))
        << "gradient " << x << "\n" << spec.canonical();
  }
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
