// Planned attention -> the CUDA C++ of its backward pass. The branch structs
// (head tables, offsets, members) are the forward module's; the kernel
// families (include/dattn/kernels.h) pick the kernels and their tiles:
//   - tensor cores (fp16/bf16, sm_80+, head_dim a multiple of 16 up to 128):
//     per branch bwd::mmaBackwardKV, plus bwd::mmaBackwardQ when
//     deterministic (otherwise the dK/dV kernel adds dQ with reductions);
//   - SIMT otherwise: bwd::dqPass and bwd::dkvPass, exact fp32.
// Gradients go straight to dq/dk/dv in the dtype when every head is in one
// branch and there is no GQA (each row then has one writer per launch);
// otherwise into fp32 accumulators that the finalize kernel converts.
#include "dattn/emit.h"
#include "dattn/error.h"

#include "dattn/backward_params.cuh"

#include <sstream>

namespace dattn {

EmittedModule emitCudaBackward(const AttentionPlan &plan, const std::string &arch,
                               bool deterministic, int smemLimit) {
  const Target target = Target::parse(arch, smemLimit);
  // The branch structs are the forward module's; only the kernels differ.
  EmittedModule fwdModule = emitCuda(plan, arch, target.smemBytes);
  const std::string &src = fwdModule.source;
  const size_t structsEnd = src.find("} // namespace\n");

  // The families choose each branch's kernels; the module's gradient modes
  // follow from whether they are tensor-core kernels (the same for every
  // branch: dtype, arch and head_dim decide it).
  std::vector<std::vector<KernelChoice>> choices;
  for (const BranchPlan &b : plan.branches)
    choices.push_back(
        plannedKernels(plan, b, deterministic ? "backward_deterministic" : "backward"));
  bool tensorCores = !choices.empty();
  for (const auto &c : choices)
    tensorCores = tensorCores && c[0].family->usesTensorCores();

  EmittedModule mod;
  mod.arch = arch;
  mod.mergeMode = fwdModule.mergeMode;
  const int D = plan.headDim;
  const bool gqa = plan.heads != plan.kvHeads;
  mod.gradientsDirect = tensorCores && !fwdModule.mergeMode && !gqa;
  mod.atomicDq = tensorCores && !deterministic;
  if (!mod.gradientsDirect)
    mod.gradientFinalize = bwd::kFinalizeDq | bwd::kFinalizeDkv;
  else
    mod.gradientFinalize = mod.atomicDq ? bwd::kFinalizeDq : 0;
  const char *gradMode = mod.gradientsDirect ? "bwd::kDirect" : "bwd::kAccumulate";

  const char *T = plan.dtype == DType::F16 ? "dev::f16" : plan.dtype == DType::BF16 ? "dev::bf16"
                                                                                   : "float";
  const std::string prefix = "dattn_bwd_" + plan.name + "_" + toString(plan.dtype) + "_d" +
                             std::to_string(D) + (plan.causal ? "_causal" : "");
  std::ostringstream os;
  os << src.substr(0, structsEnd) << "} // namespace\n\n"
     << "#include \"dattn/backward_simt.cuh\"\n#include \"dattn/backward_mma.cuh\"\n\n";

  KernelInfo delta;
  delta.name = prefix + "_delta";
  delta.role = KernelRole::Delta;
  delta.rowsPerCta = 4;
  mod.kernels.push_back(delta);
  os << "extern \"C\" __global__ void __launch_bounds__(128) " << delta.name
     << "(bwd::Params p, long long batch) {\n  bwd::computeDelta<" << T << ", " << D
     << ">(p, batch);\n}\n\n";

  for (size_t bi = 0; bi < plan.branches.size(); ++bi) {
    const InstanceContext ctx{T, D, "", gradMode, "Branch" + std::to_string(bi)};
    for (const KernelChoice &c : choices[bi]) {
      KernelInfo k;
      k.name = prefix + "_b" + std::to_string(bi);
      k.branch = static_cast<int>(bi);
      k.role = c.family->pass() == KernelPass::BackwardDq ? KernelRole::DqPass
                                                          : KernelRole::DkvPass;
      setChoice(k, c);
      mod.kernels.push_back(k);
      os << "extern \"C\" __global__ void __launch_bounds__(" << k.threads << ") " << k.name
         << "(bwd::Params p) {\n  " << c.family->instantiate(c.config, ctx) << "\n}\n\n";
    }
  }

  KernelInfo fin;
  fin.name = prefix + "_finalize";
  fin.role = KernelRole::FinalizeGradients;
  fin.threads = 256;
  mod.kernels.push_back(fin);
  os << "extern \"C\" __global__ void " << fin.name
     << "(bwd::Params p, long long qElems, long long kvElems, int what) {\n"
     << "  bwd::finalizeGradients<" << T << ", " << D << ">(p, qElems, kvElems, what);\n}\n";
  mod.source = os.str();
  return mod;
}

} // namespace dattn
