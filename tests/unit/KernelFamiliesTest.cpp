// The kernel families without a GPU: for every example and random specs on
// every target, each chosen configuration is among its family's candidates,
// fits the target's shared memory, and its resources are consistent; the
// emitted modules record exactly the families' choices; unsupported cases
// say why.
#include "RandomSpec.h"

#include "dattn/compiler.h"
#include "dattn/emit.h"
#include "dattn/error.h"
#include "dattn/kernels.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace dattn::test {
namespace {

const char *kArchs[] = {"sm_61", "sm_75", "sm_80", "sm_86", "sm_90", "sm_90a"};

void expectValidChoice(const KernelChoice &c, const AttentionPlan &plan, const BranchPlan &b,
                       const Target &t, bool deterministic, const std::string &what) {
  ASSERT_NE(c.family, nullptr) << what;
  EXPECT_EQ(c.family->unsupported(plan, b, t), "") << what;
  const std::vector<KernelConfig> all = c.family->candidates(plan, b, t, deterministic);
  EXPECT_EQ(c.candidates, static_cast<int>(all.size())) << what;
  EXPECT_NE(std::find(all.begin(), all.end(), c.config), all.end())
      << what << ": " << c.family->name() << " chose " << c.config.describe()
      << ", which is not among its candidates";
  for (const KernelConfig &k : all) {
    const KernelResources r = c.family->resources(plan, k);
    EXPECT_LE(r.smemBytes, t.smemBytes) << what << ": candidate " << k.describe();
    EXPECT_GE(r.threads, 32) << what;
    EXPECT_LE(r.threads, 1024) << what;
    EXPECT_EQ(r.threads % 32, 0) << what;
    EXPECT_GT(r.rowsPerCta, 0) << what;
  }
}

void checkSpec(const AttentionSpec &spec) {
  for (const char *arch : kArchs) {
    const Target t = Target::parse(arch);
    PlanOptions po;
    po.arch = arch;
    const AttentionPlan plan = planAttention(spec, po);
    ASSERT_EQ(plan.target, arch);
    for (size_t bi = 0; bi < plan.branches.size(); ++bi) {
      const BranchPlan &b = plan.branches[bi];
      const std::string what = spec.name + " " + arch + " branch " + std::to_string(bi);
      expectValidChoice(chooseForward(plan, b, t), plan, b, t, false, what + " forward");
      for (bool det : {false, true}) {
        const std::vector<KernelChoice> bwd = chooseBackward(plan, b, t, det);
        ASSERT_FALSE(bwd.empty());
        EXPECT_EQ(bwd[0].family->pass(), KernelPass::BackwardDkv);
        // dQ comes from the dK/dV kernel's reductions or from one dQ kernel.
        EXPECT_EQ(bwd.size(), bwd[0].config.atomicDq ? 1u : 2u) << what;
        if (det) {
          EXPECT_FALSE(bwd[0].config.atomicDq) << what << ": deterministic with reductions";
        }
        for (const KernelChoice &c : bwd)
          expectValidChoice(c, plan, b, t, det, what + " " + toString(c.family->pass()));
        // The plan recorded the same choices (dattn-select-kernels).
        const std::vector<KernelChoice> planned =
            plannedKernels(plan, b, det ? "backward_deterministic" : "backward");
        ASSERT_EQ(planned.size(), bwd.size()) << what;
        for (size_t x = 0; x < bwd.size(); ++x) {
          EXPECT_EQ(planned[x].family, bwd[x].family) << what;
          EXPECT_TRUE(planned[x].config == bwd[x].config) << what;
        }
      }
      const KernelChoice planned = plannedKernels(plan, b, "forward").at(0);
      EXPECT_EQ(planned.family, chooseForward(plan, b, t).family) << what;
    }
    // The emitted modules carry exactly these choices.
    EmittedModule fwd = emitCuda(plan, arch);
    // Branch kernels may run side by side exactly when no head is in two
    // branches (their rows are then disjoint).
    std::vector<int> branchesOfHead(plan.heads, 0);
    for (const BranchPlan &b : plan.branches)
      for (int h : b.heads)
        ++branchesOfHead[h];
    const bool disjoint = *std::max_element(branchesOfHead.begin(), branchesOfHead.end()) <= 1;
    EXPECT_EQ(fwd.branchesIndependent, disjoint) << arch;
    try {
      EXPECT_EQ(emitCudaBackward(plan, arch, false).branchesIndependent, disjoint) << arch;
    } catch (const Error &) {
      // No backward on this target for this spec (FamiliesSayWhyTheyDecline).
    }
    for (const KernelInfo &k : fwd.kernels) {
      if (k.role != KernelRole::Branch)
        continue;
      const KernelChoice c = chooseForward(plan, plan.branches[k.branch], t);
      EXPECT_EQ(k.family, c.family->name());
      EXPECT_TRUE(k.config == c.config);
      EXPECT_EQ(k.smemBytes, c.resources.smemBytes);
      EXPECT_EQ(k.threads, c.resources.threads);
      EXPECT_NE(fwd.source.find(c.family->suffix(c.config)), std::string::npos);
    }
  }
}

TEST(KernelFamilies, ExamplesChooseValidConfigs) {
  for (const auto &f : exampleFiles())
    for (const auto &spec : loadSpecFile(f).attentions)
      checkSpec(spec);
}

TEST(KernelFamilies, RandomSpecsChooseValidConfigs) {
  SpecGenerator gen(5);
  for (int trial = 0; trial < 60; ++trial) {
    AttentionSpec spec = gen.spec();
    spec.dtype = trial % 3 == 0 ? DType::F32 : trial % 3 == 1 ? DType::F16 : DType::BF16;
    spec.headDim = trial % 4 == 0 ? 256 : trial % 4 == 1 ? 128 : trial % 4 == 2 ? 96 : 40;
    SCOPED_TRACE(spec.canonical());
    checkSpec(spec);
  }
}

TEST(KernelFamilies, FamiliesSayWhyTheyDecline) {
  AttentionSpec spec = loadSpecFile(std::string(DATTN_EXAMPLES_DIR) +
                                    "/longnet_head_partitioned.dattn")
                           .attentions.at(0);
  spec.dtype = DType::F32;
  const AttentionPlan plan = planAttention(spec); // tiles only: no target
  const Target t = Target::parse("sm_90a");
  for (const KernelFamily *f : kernelFamilies()) {
    if (f->usesTensorCores()) {
      EXPECT_NE(f->unsupported(plan, plan.branches[0], t).find("fp32"), std::string::npos)
          << f->name();
    }
  }
  EXPECT_STREQ(chooseForward(plan, plan.branches[0], t).family->name(), "simt_forward");
}

TEST(KernelFamilies, EmittingNeedsAPlanForTheTarget) {
  AttentionSpec spec = loadSpecFile(std::string(DATTN_EXAMPLES_DIR) + "/causal_ring.dattn")
                           .attentions.at(0);
  try {
    emitCuda(planAttention(spec), "sm_80");
    FAIL() << "emitted from a plan without kernels";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("chosen for no target"), std::string::npos) << e.what();
  }
  PlanOptions po;
  po.arch = "sm_80";
  EXPECT_THROW(emitCuda(planAttention(spec, po), "sm_90"), Error);
  EXPECT_NO_THROW(emitCuda(planAttention(spec, po), "sm_80"));
}

TEST(KernelFamilies, TargetsParse) {
  Target t = Target::parse("sm_90a");
  EXPECT_EQ(t.sm, 90);
  EXPECT_TRUE(t.archSpecific);
  EXPECT_EQ(t.arch(), "sm_90a");
  EXPECT_EQ(t.smemBytes, 227 * 1024);
  EXPECT_EQ(Target::parse("sm_80", 1000).smemBytes, 1000);
  for (const char *bad : {"sm_80a", "sm90", "sm_", "sm_9x", "sm_090"})
    EXPECT_THROW(Target::parse(bad), Error) << bad;
}

} // namespace
} // namespace dattn::test
