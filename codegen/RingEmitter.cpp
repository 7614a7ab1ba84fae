// The ring module (templates/dattn/ring.cuh, docs/ring.md): what one rank
// of a ring runs. Its accumulators are always fp32 (every key block is a
// partial result), so it has its own init and finalize in kMerge mode, one
// block kernel per branch and the kernel that packs rows for a peer; for
// the backward, Delta, a block kernel per branch, the addition of dK/dV
// partials returned by peers, and the conversion into the gradients.
#include "dattn/emit.h"
#include "dattn/error.h"

#include <optional>
#include <sstream>
#include <vector>

namespace dattn {

namespace {

/// A branch whose forward runs on tensor cores (bf16, fp16, fp32 with
/// precision tf32): the ring's tensor-core kernels (ring_mma.cuh) serve it,
/// strided (dense included) or blocks.
bool ringOnTensorCores(const AttentionPlan &plan, const BranchPlan &b) {
  return plannedKernels(plan, b, "forward").at(0).family->usesTensorCores();
}

/// The kernel template of a branch's kind: ring_mma.cuh's strided pair or
/// its blocks pair.
std::string ringKernel(const BranchPlan &b, bool backward) {
  const bool strided = b.kind == BranchKind::Strided;
  return backward ? (strided ? "ring::mmaRingBackward" : "ring::mmaRingBlocksBackward")
                  : (strided ? "ring::mmaRingForward" : "ring::mmaRingBlocksForward");
}

/// The ring's tensor-core forward block kernel. Strided branches (dense
/// included) whose one-GPU forward is an sm_90a wgmma family take the
/// ring's wgmma kernel (ring_wgmma.cuh: sm90_wgmma_pipelined_forward's CTA,
/// 128 x 128 tiles, with sm90_wgmma_tma_forward's TMA producer at dilation
/// 1); the others ring_mma.cuh's, built on the sm80 forward's tile, with
/// the sm80 family's heuristic where the one-GPU forward is another family
/// (the blocks branches' wgmma and TMA kernels). A branch whose one-GPU
/// forward is sm80 (named through DATTN_FAMILIES, or tuned) keeps it.
KernelChoice ringForward(const AttentionPlan &plan, const BranchPlan &b, const Target &target) {
  KernelChoice c = plannedKernels(plan, b, "forward").at(0);
  const KernelFamily &sm80 = familyNamed("sm80_mma_forward");
  if (c.family == &sm80)
    return c;
  c.origin = "the ring's kernel";
  // Dilation 1: every key run of a block is consecutive rows, which TMA
  // boxes load (ring_wgmma.cuh).
  const KernelFamily &wgmma = familyNamed(b.kind == BranchKind::Strided && b.dilation == 1
                                              ? "sm90_wgmma_tma_forward"
                                              : "sm90_wgmma_pipelined_forward");
  if (b.kind == BranchKind::Strided && wgmma.unsupported(plan, b, target).empty()) {
    c.family = &wgmma;
    c.config = KernelConfig{128, 128, 1, false};
    c.resources = wgmma.resources(plan, c.config);
    return c;
  }
  const std::string why = sm80.unsupported(plan, b, target);
  if (!why.empty())
    throw Error("attention '" + plan.name + "': the ring's tensor-core kernel needs " +
                sm80.name() + ", which does not run a branch here: " + why);
  c.family = &sm80;
  c.config = sm80.heuristic(plan, b, target, /*deterministic=*/false);
  c.resources = sm80.resources(plan, c.config);
  return c;
}

/// The ring's tensor-core dK/dV block kernel. Strided branches whose
/// one-GPU dK/dV kernel is an sm_90a wgmma family take the ring's wgmma
/// kernel (ring_wgmma.cuh: sm90_wgmma_backward_dkv's CTA, 128 keys, query
/// steps of 64, dQ by reductions; warp-specialized like
/// sm90_wgmma_ws_backward_dkv where the one-GPU kernel is); the others
/// ring_mma.cuh's sm80 CTA (BN / 16 warps over BN key rows), with the
/// one-GPU dK/dV family's configuration but the sm80 family's threads and
/// shared memory for it (the warp-specialized wgmma kernel adds a producer
/// warpgroup and stages the ring's kernel does not have).
KernelChoice ringBackward(const AttentionPlan &plan, const BranchPlan &b, const Target &target) {
  KernelChoice c = plannedKernels(plan, b, "backward").at(0);
  const KernelFamily &sm80 = familyNamed("sm80_mma_backward_dkv");
  if (c.family == &sm80 || !c.family->usesTensorCores())
    return c;
  c.origin = "the ring's kernel";
  // The warp-specialized CTA where the one-GPU kernel is it (Q and dO
  // through TMA: dilations up to fwd::kTmaMaxStride), else the plain one.
  const KernelFamily &ws = familyNamed("sm90_wgmma_ws_backward_dkv");
  const KernelFamily &wgmma = c.family == &ws && ws.unsupported(plan, b, target).empty()
                                  ? ws
                                  : familyNamed("sm90_wgmma_backward_dkv");
  if (b.kind == BranchKind::Strided && wgmma.unsupported(plan, b, target).empty()) {
    c.family = &wgmma;
    c.config = KernelConfig{64, 128, 0, true};
    c.resources = wgmma.resources(plan, c.config);
    return c;
  }
  const std::string why = sm80.unsupported(plan, b, target);
  if (!why.empty())
    throw Error("attention '" + plan.name + "': the ring's tensor-core dK/dV kernel needs " +
                sm80.name() + ", which does not run a branch here: " + why);
  c.family = &sm80;
  c.resources = sm80.resources(plan, c.config);
  return c;
}

/// Whether a ring choice is the wgmma kernel of ring_wgmma.cuh.
bool onWgmma(const KernelChoice &c) {
  return c.family == &familyNamed("sm90_wgmma_pipelined_forward") ||
         c.family == &familyNamed("sm90_wgmma_tma_forward") ||
         c.family == &familyNamed("sm90_wgmma_backward_dkv") ||
         c.family == &familyNamed("sm90_wgmma_ws_backward_dkv");
}

} // namespace

EmittedModule emitCudaRing(const AttentionPlan &plan, const std::string &arch, int smemLimit) {
  const Target target = Target::parse(arch, smemLimit);
  checkPlannedFor(plan, target);
  EmittedModule mod;
  mod.arch = arch;
  mod.mergeMode = true;
  const int D = plan.headDim;
  const char *T = plan.dtype == DType::F16 ? "dev::f16" : plan.dtype == DType::BF16 ? "dev::bf16"
                                                                                   : "float";
  const std::string prefix = "dattn_ring_" + plan.name + "_" + toString(plan.dtype) + "_d" +
                             std::to_string(D) + (plan.causal ? "_causal" : "");
  // The tensor-core branches' kernels (ring_wgmma.cuh only where one runs:
  // its Hopper instructions assemble for sm_90a alone).
  std::vector<std::optional<KernelChoice>> forwardChoice(plan.branches.size()),
      backwardChoice(plan.branches.size());
  bool anyWgmma = false;
  for (size_t bi = 0; bi < plan.branches.size(); ++bi) {
    if (!ringOnTensorCores(plan, plan.branches[bi]))
      continue;
    forwardChoice[bi] = ringForward(plan, plan.branches[bi], target);
    backwardChoice[bi] = ringBackward(plan, plan.branches[bi], target);
    anyWgmma = anyWgmma || onWgmma(*forwardChoice[bi]) || onWgmma(*backwardChoice[bi]);
  }
  std::ostringstream os;
  os << "// Generated by dattn for attention '" << plan.name << "', target " << arch
     << ", one rank of a ring.\n// Constants and instantiations only: the logic is in "
        "dattn/ring.cuh.\n"
     << "#include \"dattn/forward_common.cuh\"\n#include \"dattn/ring.cuh\"\n"
     << "#include \"dattn/ring_mma.cuh\"\n"
     << (anyWgmma ? "#include \"dattn/ring_wgmma.cuh\"\n" : "") << "\n"
     << "using namespace dattn;\n\n"
     << branchDefinitions(plan);

  auto add = [&](const std::string &suffix, KernelRole role, int branch, int threads) {
    KernelInfo k;
    k.name = prefix + suffix;
    k.role = role;
    k.branch = branch;
    k.threads = threads;
    k.rowsPerCta = role == KernelRole::Branch || role == KernelRole::DkvPass ||
                         role == KernelRole::Delta
                     ? threads / 32 // one warp per row
                     : 0;
    mod.kernels.push_back(k);
    return k.name;
  };
  // The kernel just added runs on tensor cores with `choice`'s family and
  // configuration; a CTA covers `rowsPerCta` rows (queries forward, keys
  // backward).
  auto onTensorCores = [&](const KernelChoice &choice, int rowsPerCta) -> const KernelInfo & {
    KernelInfo &k = mod.kernels.back();
    k.path = KernelPath::Mma;
    k.family = choice.family->name();
    k.config = choice.config;
    k.smemBytes = choice.resources.smemBytes;
    k.rowsPerCta = rowsPerCta;
    return k;
  };
  os << "extern \"C\" __global__ void " << add("_init", KernelRole::Init, -1, 256)
     << "(fwd::Params p, long long batch) {\n  fwd::initOutputs<" << T
     << ", fwd::kMerge>(p, " << D << ", batch);\n}\n\n";
  for (size_t bi = 0; bi < plan.branches.size(); ++bi) {
    // Branches on tensor cores take ringForward's kernel (the wgmma CTA or
    // the sm80 forward's tile); the others (fp32) the SIMT block kernel.
    if (forwardChoice[bi]) {
      const KernelChoice &forward = *forwardChoice[bi];
      const KernelConfig &c = forward.config;
      const std::string name = add("_b" + std::to_string(bi) + "_block_mma", KernelRole::Branch,
                                   static_cast<int>(bi), forward.resources.threads);
      const KernelInfo &k = onTensorCores(forward, c.blockM);
      if (onWgmma(forward)) {
        // With TMA the maps are __grid_constant__: the TMA reads each
        // where the launch put it.
        const bool tma = !forward.family->tensorMaps().empty();
        os << "extern \"C\" __global__ void __launch_bounds__(" << k.threads << ", 1) " << name
           << "(fwd::Params p, ring::Params r"
           << (tma ? ", const __grid_constant__ hopper::TensorMap kMap, "
                     "const __grid_constant__ hopper::TensorMap vMap"
                   : "")
           << ") {\n  static_assert(ring::WgmmaRingSmem<" << D << ">::kForward == " << k.smemBytes
           << ", \"the family's shared memory differs from the kernel's\");\n  "
           << "ring::wgmmaRingForward<" << T << ", " << D << ", Branch" << bi
           << (tma ? ", true>(p, r, &kMap, &vMap);" : ">(p, r);") << "\n}\n\n";
        continue;
      }
      os << "extern \"C\" __global__ void __launch_bounds__(" << k.threads << ") " << name
         << "(fwd::Params p, ring::Params r) {\n  static_assert(fwd::MmaTile<" << T << ", " << D
         << ", " << c.blockM << ", " << c.blockN << ", " << c.rowTilesPerWarp
         << ">::kSmemBytes == " << k.smemBytes
         << ", \"the family's shared memory differs from the kernel's\");\n  "
         << ringKernel(plan.branches[bi], false) << "<" << T << ", " << D << ", " << c.blockM
         << ", " << c.blockN << ", " << c.rowTilesPerWarp << ", Branch" << bi
         << ">(p, r);\n}\n\n";
      continue;
    }
    os << "extern \"C\" __global__ void __launch_bounds__(128) "
       << add("_b" + std::to_string(bi) + "_block_simt", KernelRole::Branch,
              static_cast<int>(bi), 128)
       << "(fwd::Params p, ring::Params r) {\n  ring::simtRingForward<" << T << ", " << D
       << ", Branch" << bi << ">(p, r);\n}\n\n";
  }
  os << "extern \"C\" __global__ void " << add("_pack", KernelRole::RingPack, -1, 256)
     << "(const ring::Part *parts, int numParts, long long packedRows, ring::Params shard, "
        "const void *src, Layout srcL, void *dst, long long batch) {\n  ring::packForPeer<"
     << T << ", " << D
     << ">(parts, numParts, packedRows, shard.qBegin, shard.qEnd, (const " << T
     << " *)src, srcL, (" << T << " *)dst, batch);\n}\n\n";
  os << "extern \"C\" __global__ void " << add("_unpack", KernelRole::RingUnpack, -1, 256)
     << "(const ring::Part *parts, int numParts, long long packedRows, ring::Params sender, "
        "const void *src, void *dst, Layout dstL, long long batch) {\n  ring::unpackFromPeer<"
     << T << ", " << D << ">(parts, numParts, packedRows, sender.qBegin, sender.qEnd, (const "
     << T << " *)src, (" << T << " *)dst, dstL, batch);\n}\n\n";
  os << "extern \"C\" __global__ void " << add("_finalize", KernelRole::Finalize, -1, 256)
     << "(fwd::Params p, long long batch) {\n  fwd::finalizeOutputs<" << T << ">(p, " << D
     << ", batch);\n}\n\n";

  // Backward: Delta, a block kernel per branch, the partials returned to
  // their owners, the accumulators into the gradients.
  os << "extern \"C\" __global__ void __launch_bounds__(128) "
     << add("_delta", KernelRole::Delta, -1, 128)
     << "(fwd::Params p, const void *dout, Layout doutL, float *delta) {\n  ring::ringDelta<"
     << T << ", " << D << ">(p, dout, doutL, delta);\n}\n\n";
  for (size_t bi = 0; bi < plan.branches.size(); ++bi) {
    const BranchPlan &b = plan.branches[bi];
    // Branches on tensor cores: ringBackward's kernel with dQ by reductions
    // (the wgmma CTA, or ring_mma.cuh's with the one-GPU dK/dV family's
    // configuration), one CTA per key tile of the block
    // (KernelInfo::rowsPerCta keys); the others SIMT.
    if (backwardChoice[bi]) {
      const KernelChoice &dkv = *backwardChoice[bi];
      if (dkv.family->usesTensorCores() && dkv.config.atomicDq) {
        const KernelConfig &c = dkv.config;
        const std::string name =
            add("_b" + std::to_string(bi) + "_block_backward_mma", KernelRole::DkvPass,
                static_cast<int>(bi), dkv.resources.threads);
        const KernelInfo &k = onTensorCores(dkv, c.blockN);
        if (onWgmma(dkv)) {
          const bool ws = !dkv.family->tensorMaps().empty(); // q and dout through TMA
          os << "extern \"C\" __global__ void __launch_bounds__(" << k.threads << ", 1) " << name
             << "(fwd::Params p, ring::Params r, ring::Grad g"
             << (ws ? ", const __grid_constant__ hopper::TensorMap qMap, "
                      "const __grid_constant__ hopper::TensorMap doutMap"
                    : "")
             << ") {\n  static_assert(ring::WgmmaRingSmem<" << D
             << (ws ? ">::kBackwardWs == " : ">::kBackward == ") << k.smemBytes
             << ", \"the family's shared memory differs from the kernel's\");\n  "
             << "ring::wgmmaRingBackward<" << T << ", " << D << ", Branch" << bi
             << (ws ? ", true>(p, r, g, &qMap, &doutMap);" : ">(p, r, g);") << "\n}\n\n";
          continue;
        }
        os << "extern \"C\" __global__ void __launch_bounds__(" << k.threads << ") " << name
           << "(fwd::Params p, ring::Params r, ring::Grad g) {\n  static_assert(bwd::KvSmem<"
           << D << ", " << c.blockM << ", " << c.blockN << ", true, "
           << (plan.dtype == DType::F32 ? 4 : 2) << ">::kBytes == " << k.smemBytes
           << ", \"the family's shared memory differs from the kernel's\");\n  "
           << ringKernel(b, true) << "<" << T << ", " << D << ", " << c.blockM << ", "
           << c.blockN / 16 << ", Branch" << bi << ">(p, r, g);\n}\n\n";
        continue;
      }
    }
    os << "extern \"C\" __global__ void __launch_bounds__(128) "
       << add("_b" + std::to_string(bi) + "_block_backward_simt", KernelRole::DkvPass,
              static_cast<int>(bi), 128)
       << "(fwd::Params p, ring::Params r, ring::Grad g) {\n  ring::simtRingBackward<" << T
       << ", " << D << ", Branch" << bi << ">(p, r, g);\n}\n\n";
  }
  os << "extern \"C\" __global__ void " << add("_return", KernelRole::RingReturn, -1, 256)
     << "(const ring::Part *parts, int numParts, long long packedRows, ring::Params shard, "
        "const float *src, float *acc, Layout accL, long long batch) {\n  ring::addReturned<"
     << D << ">(parts, numParts, packedRows, shard.qBegin, shard.qEnd, src, acc, accL, "
        "batch);\n}\n\n";
  os << "extern \"C\" __global__ void "
     << add("_staged_partials", KernelRole::RingStagedPartials, -1, 256)
     << "(const ring::Part *parts, int numParts, long long packedRows, ring::Params sender, "
        "const float *src, Layout srcL, float *packed, long long batch) {\n  "
        "ring::addStagedPartials<"
     << D << ">(parts, numParts, packedRows, sender.qBegin, sender.qEnd, src, srcL, packed, "
        "batch);\n}\n\n";
  os << "extern \"C\" __global__ void "
     << add("_finalize_gradients", KernelRole::FinalizeGradients, -1, 256)
     << "(fwd::Params p, const float *dqAcc, void *dq, Layout dqL, const float *dkAcc, "
        "const float *dvAcc, Layout accL, void *dk, void *dv, Layout dkL, Layout dvL, "
        "int kvHeads, long long batch) {\n  ring::ringFinalizeGradients<"
     << T << ", " << D
     << ">(p, dqAcc, dq, dqL, dkAcc, dvAcc, accL, dk, dv, dkL, dvL, kvHeads, batch);\n}\n";
  mod.source = os.str();
  return mod;
}

} // namespace dattn
