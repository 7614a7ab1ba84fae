// Without a GPU: every example, and random specs, compile through NVRTC to
// cubins for sm_75 (SIMT path), sm_80 and sm_90 (mma path), from the
// embedded templates alone.
#include "RandomSpec.h"

#include "Nvrtc.h"

#include "dattn/emit.h"
#include "dattn/error.h"
#include "dattn/params.cuh" // fwd::kTmaMaxStride
#include "dattn/runtime.h"

#include <gtest/gtest.h>


namespace dattn::test {
namespace {

void expectCubin(const AttentionSpec &spec, const std::string &arch) {
  OfflineKernel k = compileOffline(spec, arch);
  EXPECT_GT(k.cubin.size(), 1000u) << spec.name << " " << arch;
  // An ELF image for the right machine: the magic bytes.
  ASSERT_GE(k.cubin.size(), 4u);
  EXPECT_EQ(std::string(k.cubin.data() + 1, 3), "ELF");
  for (const auto &kernel : k.module.kernels)
    EXPECT_NE(k.ptx.find(".entry " + kernel.name), std::string::npos) << kernel.name;
}

TEST(Nvrtc, EveryExampleCompilesForEveryArch) {
  for (const auto &f : exampleFiles())
    for (const auto &spec : loadSpecFile(f).attentions)
      for (const char *arch : {"sm_75", "sm_80", "sm_90", "sm_90a"})
        expectCubin(spec, arch);
}

TEST(Nvrtc, SplitUnionModulesCompile) {
  // dattn-split-unions (the default): the examples whose unions hold a
  // dilated member, every module the runtime would compile, with an
  // excluded member in the union's tables; and the forward of the unsplit
  // plan (DATTN_SPLIT_UNIONS=0), which has none.
  PlanOptions split, unsplit;
  unsplit.splitUnions = false;
  for (const auto &f : exampleFiles())
    for (const auto &spec : loadSpecFile(f).attentions) {
      PlanOptions po = split;
      po.arch = "sm_90a";
      bool excluded = false;
      for (const BranchPlan &b : planAttention(spec, po).branches)
        for (const MemberPlan &m : b.members)
          excluded = excluded || m.excluded;
      if (!excluded)
        continue;
      SCOPED_TRACE(spec.name);
      for (const char *arch : {"sm_75", "sm_90a"}) {
        for (const OfflineKernel &k :
             {compileOffline(spec, arch, split), compileOffline(spec, arch, split, true, false),
              compileOffline(spec, arch, split, true, true)}) {
          EXPECT_EQ(std::string(k.cubin.data() + 1, 3), "ELF") << arch;
          EXPECT_NE(k.module.source.find("x.excluded = 1;"), std::string::npos) << arch;
        }
        const OfflineKernel whole = compileOffline(spec, arch, unsplit);
        EXPECT_EQ(std::string(whole.cubin.data() + 1, 3), "ELF") << arch;
        EXPECT_EQ(whole.module.source.find("x.excluded = 1;"), std::string::npos) << arch;
      }
    }
}

TEST(Nvrtc, BackwardModulesCompile) {
  for (const auto &f : exampleFiles())
    for (const auto &spec : loadSpecFile(f).attentions)
      for (const char *arch : {"sm_75", "sm_80", "sm_90"})
        for (bool deterministic : {false, true}) {
          OfflineKernel k = compileOffline(spec, arch, {}, /*backward=*/true, deterministic);
          for (const auto &kernel : k.module.kernels)
            EXPECT_NE(k.ptx.find(".entry " + kernel.name), std::string::npos) << kernel.name;
          // Reductions only where the module says dQ is reduced (tensor
          // cores, not deterministic): the other modules are bit-reproducible.
          // (A tab starts a PTX instruction: "cp.async.cg.shared.global" also
          // contains "red.global".)
          const bool reduces = k.ptx.find("\tred.") != std::string::npos ||
                               k.ptx.find("\tatom.") != std::string::npos;
          EXPECT_EQ(reduces, k.module.atomicDq) << spec.name << " " << arch;
          // Tensor cores: fp16/bf16, and fp32 with precision tf32; sm_80+.
          const bool tf32 = spec.precision == Precision::TF32;
          const bool tensorCores = (spec.dtype != DType::F32 || tf32) &&
                                   std::string(arch) != "sm_75" && spec.headDim <= 128;
          EXPECT_EQ(k.module.atomicDq, !deterministic && tensorCores)
              << spec.name << " " << arch;
        }
}

TEST(Nvrtc, WgmmaBackwardModulesCompile) {
  // The wgmma dK/dV families named, on every example they take (bf16/fp16,
  // head_dim 64 or 128, no blocks under 128 rows; 64 for the warp-specialized
  // one with head_dim 64), both modes: their kernels
  // use wgmma (dQ = dS K reads dS^T transposed: the trans-a operand), and
  // reduce only where dQ is reduced; the warp-specialized one takes q's and
  // dout's maps and loads through TMA.
  for (const char *family : {"sm90_wgmma_backward_dkv", "sm90_wgmma_ws_backward_dkv"}) {
    SCOPED_TRACE(family);
    const bool ws = std::string(family) == "sm90_wgmma_ws_backward_dkv";
    PlanOptions named;
    named.families = {family};
    int modules = 0, smallTiles = 0;
    for (const auto &f : exampleFiles())
      for (const auto &spec : loadSpecFile(f).attentions) {
        if (spec.dtype == DType::F32 || (spec.headDim != 64 && spec.headDim != 128))
          continue;
        for (bool deterministic : {false, true}) {
          OfflineKernel k = compileOffline(spec, "sm_90a", named, /*backward=*/true, deterministic);
          bool onWgmma = false;
          const std::string suffix = ws ? "_dkv_wgmma_ws_m64n" : "_dkv_wgmma_m64n128";
          for (const auto &kernel : k.module.kernels)
            if (kernel.name.find(suffix) != std::string::npos) {
              onWgmma = true;
              smallTiles += kernel.name.find("_m64n64") != std::string::npos;
              if (ws) {
                EXPECT_NE(k.ptx.find(kernel.name + "_param_2[128]"), std::string::npos)
                    << kernel.name;
              }
            }
          if (!onWgmma) // blocks under 128 rows
            continue;
          EXPECT_NE(k.ptx.find("wgmma.mma_async.sync.aligned.m64n64k16"), std::string::npos);
          EXPECT_EQ(k.ptx.find("cp.async.bulk.tensor.4d") != std::string::npos, ws) << spec.name;
          const bool reduces = k.ptx.find("\tred.") != std::string::npos ||
                               k.ptx.find("\tatom.") != std::string::npos;
          EXPECT_EQ(reduces, !deterministic) << spec.name;
          EXPECT_EQ(k.module.atomicDq, !deterministic) << spec.name;
          ++modules;
        }
      }
    EXPECT_GE(modules, 10); // every LongNet and ring example, both modes
    // Blocks of 64 rows with head_dim 64 (bigbird_gqa, multiscale's
    // dilated blocks): 64-key CTAs on the warp-specialized kernel only.
    if (ws)
      EXPECT_GE(smallTiles, 4);
    else
      EXPECT_EQ(smallTiles, 0);
  }
}

TEST(Nvrtc, TmaForwardModulesCompile) {
  // The TMA forward named, on every example it takes (bf16/fp16, head_dim
  // 64 or 128, dilations up to 8): its kernels take the two maps and load
  // K and V with cp.async.bulk.tensor into mbarrier-counted stages.
  PlanOptions named;
  named.families = {"sm90_wgmma_tma_forward"};
  int kernels = 0;
  for (const auto &f : exampleFiles())
    for (const auto &spec : loadSpecFile(f).attentions) {
      if (spec.dtype == DType::F32 || (spec.headDim != 64 && spec.headDim != 128))
        continue;
      OfflineKernel k = compileOffline(spec, "sm_90a", named, /*backward=*/false, false);
      for (const auto &kernel : k.module.kernels) {
        if (kernel.name.find("_wgmma_tma_m128n128") == std::string::npos)
          continue;
        const size_t entry = k.ptx.find(".entry " + kernel.name + "(");
        ASSERT_NE(entry, std::string::npos) << kernel.name;
        EXPECT_NE(k.ptx.find(kernel.name + "_param_2[128]", entry), std::string::npos)
            << kernel.name;
        ++kernels;
      }
      if (k.ptx.find("_wgmma_tma_m128n128") != std::string::npos) {
        EXPECT_NE(k.ptx.find("cp.async.bulk.tensor.4d"), std::string::npos) << spec.name;
        EXPECT_NE(k.ptx.find("mbarrier.arrive.expect_tx"), std::string::npos) << spec.name;
      }
    }
  EXPECT_GE(kernels, 10); // every LongNet and ring example's strided branches
}

TEST(Nvrtc, RingModulesCompile) {
  // What one rank of a ring runs, for every example (ring or not: any spec
  // can be sharded) and for random specs with every pattern.
  for (const auto &f : exampleFiles())
    for (const auto &spec : loadSpecFile(f).attentions)
      for (const char *arch : {"sm_75", "sm_90a"}) {
        OfflineKernel k = compileOfflineRing(spec, arch);
        ASSERT_EQ(std::string(k.cubin.data() + 1, 3), "ELF") << spec.name << " " << arch;
        // forward: init, a block kernel per branch, pack, unpack, finalize;
        // backward: delta, a block kernel per branch, return, staged
        // partials, finalize
        EXPECT_EQ(k.module.kernels.size(), 2 * planAttention(spec).branches.size() + 8)
            << spec.name;
        for (const auto &kernel : k.module.kernels)
          EXPECT_NE(k.ptx.find(".entry " + kernel.name), std::string::npos) << kernel.name;
      }
  // A dense branch takes the tensor-core block kernels, forward and
  // backward, where the forward does (sm_80 and newer, 16-bit: the sm80
  // tiles, and on sm_90a the wgmma CTAs of ring_wgmma.cuh), the SIMT ones
  // elsewhere.
  const AttentionSpec dense =
      loadSpecFile(std::string(DATTN_EXAMPLES_DIR) + "/dense_ring.dattn").attentions.at(0);
  for (const char *arch : {"sm_75", "sm_80", "sm_90a"}) {
    OfflineKernel k = compileOfflineRing(dense, arch);
    const bool mma = std::string(arch) != "sm_75", wgmma = std::string(arch) == "sm_90a";
    bool forward = false, backward = false;
    for (const auto &kernel : k.module.kernels) {
      forward = forward ||
                kernel.name.find(mma ? "_block_mma" : "_block_simt") != std::string::npos;
      backward = backward || kernel.name.find(mma ? "_block_backward_mma"
                                                  : "_block_backward_simt") != std::string::npos;
    }
    EXPECT_TRUE(forward) << arch;
    EXPECT_TRUE(backward) << arch;
    EXPECT_EQ(k.ptx.find("mma.sync") != std::string::npos, mma && !wgmma) << arch;
    EXPECT_EQ(k.ptx.find("wgmma.mma_async") != std::string::npos, wgmma) << arch;
    // Dilation 1: the forward's keys and values through TMA boxes.
    EXPECT_EQ(k.ptx.find("cp.async.bulk.tensor.4d") != std::string::npos, wgmma) << arch;
  }
  // Dilated branches too take the tensor-core block kernels (the lattice
  // walks of ring_mma.cuh; RingTilingTest checks their indices). On sm_90a,
  // where the one-GPU forward and dK/dV kernels are wgmma families, so are
  // the ring's: sm90_wgmma_pipelined_forward's CTA (384 threads, 128 query
  // rows; with TMA at dilation 1) and sm90_wgmma_backward_dkv's (256
  // threads, 128 keys; or the warp-specialized one's, 384).
  const AttentionSpec longnet =
      loadSpecFile(std::string(DATTN_EXAMPLES_DIR) + "/longnet_head_partitioned.dattn")
          .attentions.at(0);
  const AttentionPlan longnetPlan = planAttention(longnet);
  for (const auto &kernel : compileOfflineRing(longnet, "sm_90a").module.kernels) {
    if (kernel.role == KernelRole::Branch) {
      EXPECT_EQ(kernel.path, KernelPath::Mma) << kernel.name;
      EXPECT_EQ(kernel.family, longnetPlan.branches.at(kernel.branch).dilation == 1
                                   ? "sm90_wgmma_tma_forward"
                                   : "sm90_wgmma_pipelined_forward")
          << kernel.name;
      EXPECT_EQ(kernel.threads, 384) << kernel.name;
      EXPECT_EQ(kernel.rowsPerCta, 128) << kernel.name;
    }
    if (kernel.role == KernelRole::DkvPass) {
      // Warp-specialized (a producer warpgroup bringing Q and dO through
      // TMA) where the one-GPU kernel is: dilations a TMA box can step.
      const bool ws = longnetPlan.branches.at(kernel.branch).dilation <= fwd::kTmaMaxStride;
      EXPECT_EQ(kernel.path, KernelPath::Mma) << kernel.name;
      EXPECT_EQ(kernel.family, ws ? "sm90_wgmma_ws_backward_dkv" : "sm90_wgmma_backward_dkv")
          << kernel.name;
      EXPECT_EQ(kernel.threads, ws ? 384 : 256) << kernel.name;
      EXPECT_EQ(kernel.rowsPerCta, 128) << kernel.name;
    }
  }
  // A one-GPU forward named sm80 (DATTN_FAMILIES) keeps the ring on the
  // sm80 tiles too: what the GPU suite's families mode runs.
  PlanOptions sm80;
  sm80.arch = "sm_90a";
  sm80.families = {"sm80_mma_forward", "sm80_mma_backward_dkv"};
  for (const auto &kernel : emitCudaRing(planAttention(longnet, sm80), "sm_90a").kernels) {
    if (kernel.role == KernelRole::Branch || kernel.role == KernelRole::DkvPass) {
      EXPECT_EQ(kernel.family.rfind("sm80_", 0), 0u) << kernel.name;
    }
  }
  // And blocks branches (a window, global tokens: ring_mma.cuh's blocks
  // pair), forward and backward.
  const AttentionSpec causalRing =
      loadSpecFile(std::string(DATTN_EXAMPLES_DIR) + "/causal_ring.dattn").attentions.at(0);
  int blocksKernels = 0;
  for (const auto &kernel : compileOfflineRing(causalRing, "sm_90a").module.kernels)
    if (kernel.role == KernelRole::Branch || kernel.role == KernelRole::DkvPass) {
      EXPECT_EQ(kernel.path, KernelPath::Mma) << kernel.name;
      blocksKernels += planAttention(causalRing).branches.at(kernel.branch).kind ==
                       BranchKind::Blocks;
    }
  EXPECT_EQ(blocksKernels, 4); // the window's and the global tokens', both passes
  SpecGenerator gen(7);
  for (int trial = 0; trial < 4; ++trial) {
    AttentionSpec spec = gen.spec();
    spec.dtype = trial % 2 ? DType::F32 : DType::BF16;
    SCOPED_TRACE(spec.canonical());
    OfflineKernel k = compileOfflineRing(spec, "sm_80");
    EXPECT_EQ(std::string(k.cubin.data() + 1, 3), "ELF");
  }
}

TEST(Nvrtc, ContiguousBackwardVariantCompiles) {
  // The variant for contiguous tensors: same kernels, strides as
  // compile-time expressions (the runtime picks it when every tensor of a
  // call is contiguous).
  for (const auto &f : exampleFiles())
    for (const auto &spec : loadSpecFile(f).attentions)
      for (bool deterministic : {false, true}) {
        PlanOptions po;
        po.arch = "sm_90";
        const AttentionPlan plan = planAttention(spec, po);
        const EmittedModule general = emitCudaBackward(plan, "sm_90", deterministic);
        OfflineKernel contiguous = compileOffline(spec, "sm_90", {}, true, deterministic, true);
        EXPECT_TRUE(contiguous.module.contiguousTensors);
        EXPECT_FALSE(general.contiguousTensors);
        EXPECT_NE(contiguous.module.source.find("#define DATTN_CONTIGUOUS_TENSORS 1"),
                  std::string::npos);
        ASSERT_EQ(contiguous.module.kernels.size(), general.kernels.size());
        for (size_t k = 0; k < general.kernels.size(); ++k) {
          EXPECT_EQ(contiguous.module.kernels[k].name, general.kernels[k].name);
          EXPECT_NE(contiguous.ptx.find(".entry " + general.kernels[k].name), std::string::npos);
        }
      }
}

TEST(Nvrtc, TensorCorePathOnSm80AndSimtOnSm75) {
  SpecFile f = loadSpecFile(std::string(DATTN_EXAMPLES_DIR) + "/longnet_head_partitioned.dattn");
  OfflineKernel k80 = compileOffline(f.attentions[0], "sm_80");
  OfflineKernel k75 = compileOffline(f.attentions[0], "sm_75");
  EXPECT_NE(k80.ptx.find("mma.sync.aligned.m16n8k16"), std::string::npos);
  EXPECT_NE(k80.ptx.find("cp.async"), std::string::npos);
  EXPECT_NE(k80.ptx.find("ldmatrix"), std::string::npos);
  EXPECT_EQ(k75.ptx.find("mma.sync"), std::string::npos);
}

TEST(Nvrtc, RandomSpecsCompile) {
  SpecGenerator gen(99);
  for (int trial = 0; trial < 8; ++trial) {
    AttentionSpec spec = gen.spec();
    spec.dtype = trial % 3 == 0 ? DType::F32 : trial % 3 == 1 ? DType::F16 : DType::BF16;
    spec.headDim = trial % 2 ? 128 : 96;
    SCOPED_TRACE(spec.canonical());
    expectCubin(spec, trial % 2 ? "sm_90" : "sm_80");
  }
}

TEST(Nvrtc, EveryExampleCompilesForPascalThroughNvrtc12) {
  // GPUs before sm_75 (the GTX 1080 is sm_61) take the SIMT kernels through
  // the NVRTC of CUDA 12, which scripts/setup.sh installs: its absence here
  // is a failure, not a skip.
  for (const auto &f : exampleFiles())
    for (const auto &spec : loadSpecFile(f).attentions) {
      expectCubin(spec, "sm_61");
      OfflineKernel k = compileOffline(spec, "sm_61", {}, /*backward=*/true);
      EXPECT_EQ(std::string(k.cubin.data() + 1, 3), "ELF");
      for (const KernelInfo &ki : k.module.kernels)
        EXPECT_TRUE(ki.family.empty() || ki.family.rfind("simt_", 0) == 0) << ki.name;
      EXPECT_EQ(k.ptx.find("mma.sync"), std::string::npos);
    }
}

TEST(Nvrtc, UnsupportedArchsSayWhy) {
  SpecFile f = loadSpecFile(std::string(DATTN_EXAMPLES_DIR) + "/causal_ring.dattn");
  EXPECT_THROW(compileOffline(f.attentions[0], "sm_8O"), Error);
  EXPECT_THROW(compileOffline(f.attentions[0], "sm_80a"), Error); // `a` exists from sm_90 on
}

TEST(Nvrtc, HopperVocabularyAssemblesForSm90a) {
  // Every instruction of templates/dattn/hopper.cuh in one kernel, through
  // NVRTC and ptxas for sm_90a: the syntax and operand types of what the
  // wgmma family will be written in, checked without a GPU.
  const std::string source = R"(#include "dattn/hopper.cuh"
using namespace dattn;
extern "C" __global__ void __launch_bounds__(384, 1)
probe(const __grid_constant__ hopper::TensorMap map, float *out) {
  __shared__ __align__(1024) unsigned char tiles[2 * 64 * 128];
  __shared__ __align__(8) unsigned long long bar;
  const unsigned sTiles = dev::smemAddress(tiles), sBar = dev::smemAddress(&bar);
  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    hopper::mbarrierInit(sBar, 1);
    hopper::fenceBarrierInit();
  }
  __syncthreads();
  if (warpgroup == 0) { // producer
    hopper::registersDown<40>();
    if (threadIdx.x == 0) {
      hopper::mbarrierArriveExpect(sBar, 2 * 64 * 128);
      hopper::tmaLoad4d(sTiles, map, sBar, 0, 0, 0, 0);
      hopper::tmaLoad5d(sTiles + 64 * 128, map, sBar, 0, 0, 0, 0, 0);
    }
    hopper::namedBarrierArrive(1, 256 + 32);
  } else { // consumers
    hopper::registersUp<232>();
    hopper::mbarrierWait(sBar, 0);
    float d[32] = {};
    const unsigned long long a = hopper::smemDescriptor(sTiles, 16, 1024, 1);
    const unsigned long long b = hopper::smemDescriptor(sTiles + 64 * 128, 16, 1024, 1);
    hopper::wgmmaFence();
    hopper::wgmma64x64<dev::bf16, 0>(d, a, b, 0);
    hopper::wgmma64x64<dev::f16, 0>(d, a, b, 1);
    const unsigned regs[4] = {1u, 2u, 3u, 4u};
    hopper::wgmma64x64RegA<dev::bf16, 1>(d, regs, b, 1);
    hopper::wgmma64x64RegA<dev::f16, 1>(d, regs, b, 1);
    hopper::wgmmaCommit();
    hopper::wgmmaWait<0>();
    hopper::fenceProxyAsync();
    if (threadIdx.x == 128 + 32)
      hopper::namedBarrierSync(1, 256 + 32);
    for (int i = 0; i < 32; ++i)
      out[threadIdx.x * 32 + i] = d[i];
  }
}
)";
  rt::CompileOutput out = rt::nvrtcCompile(source, "hopper_probe", "sm_90a");
  ASSERT_GE(out.cubin.size(), 4u);
  EXPECT_EQ(std::string(out.cubin.data() + 1, 3), "ELF");
  for (const char *instruction :
       {"wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16",
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16", "wgmma.fence.sync.aligned",
        "wgmma.commit_group.sync.aligned", "wgmma.wait_group.sync.aligned",
        "cp.async.bulk.tensor.4d", "cp.async.bulk.tensor.5d", "mbarrier.try_wait.parity",
        "mbarrier.arrive.expect_tx", "setmaxnreg.inc.sync.aligned.u32",
        "setmaxnreg.dec.sync.aligned.u32", "fence.proxy.async.shared::cta", "bar.arrive"})
    EXPECT_NE(out.ptx.find(instruction), std::string::npos) << instruction;
  // Plain sm_90 has no wgmma: the family needs the arch-specific target.
  EXPECT_THROW(rt::nvrtcCompile(source, "hopper_probe", "sm_90"), Error);
}

} // namespace
} // namespace dattn::test
