// Planned attention -> the CUDA C++ of its backward pass. The branch structs
// (head tables, offsets, members) are the forward module's; this file picks
// the kernels and their tiles:
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
namespace {

int kvSmemBytes(int d, int bm, int bn, bool atomicDq) {
  return 2 * bn * d * 2 + 4 * bm * d * 2 + (atomicDq ? bn * bm * 2 : 0) + 4 * bm * 4;
}
int qSmemBytes(int d, int bm, int bn) { return (2 * bm + 4 * bn) * d * 2; }

std::string tooBig(int d, const std::string &arch, int limit) {
  return "head_dim " + std::to_string(d) + ": the backward tiles do not fit the shared memory "
         "of " + arch + " (" + std::to_string(limit) + " bytes) even at 16x16";
}

} // namespace

EmittedModule emitCudaBackward(const AttentionPlan &plan, const std::string &arch,
                               bool deterministic, int smemLimit) {
  const int sm = parseArch(arch);
  if (smemLimit <= 0)
    smemLimit = defaultSmemLimit(sm);
  // The branch structs are the forward module's; only the kernels differ.
  EmittedModule fwdModule = emitCuda(plan, arch, smemLimit);
  const std::string &src = fwdModule.source;
  const size_t structsEnd = src.find("} // namespace\n");

  EmittedModule mod;
  mod.arch = arch;
  mod.mergeMode = fwdModule.mergeMode;
  const int D = plan.headDim;
  const bool tensorCores = plan.dtype != DType::F32 && sm >= 80 && D % 16 == 0 && D <= 128;
  const bool gqa = plan.heads != plan.kvHeads;
  mod.gradientsDirect = tensorCores && !fwdModule.mergeMode && !gqa;
  mod.atomicDq = tensorCores && !deterministic;
  if (!tensorCores)
    mod.gradientFinalize = bwd::kFinalizeDq | bwd::kFinalizeDkv;
  else if (!mod.gradientsDirect)
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
    const BranchPlan &b = plan.branches[bi];
    const bool strided = b.kind == BranchKind::Strided;
    const std::string base = prefix + "_b" + std::to_string(bi);
    if (!tensorCores) {
      for (KernelRole role : {KernelRole::DqPass, KernelRole::DkvPass}) {
        KernelInfo k;
        const bool dq = role == KernelRole::DqPass;
        k.name = base + (dq ? "_dq_simt" : "_dkv_simt");
        k.branch = static_cast<int>(bi);
        k.role = role;
        k.rowsPerCta = 4;
        mod.kernels.push_back(k);
        os << "extern \"C\" __global__ void __launch_bounds__(128) " << k.name
           << "(bwd::Params p) {\n  bwd::" << (dq ? "dqPass" : "dkvPass") << "<" << T << ", "
           << D << ", Branch" << bi << ">(p);\n}\n\n";
      }
      continue;
    }
    // dK/dV: 16 * w keys per CTA (128 on strided branches, the plan's key
    // tile on blocks branches, whose tiles stay inside the smallest block),
    // query steps of bm rows.
    int w = strided ? 8 : static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(8, b.blockN / 16)));
    int bm = strided ? 64 : static_cast<int>(std::min<int64_t>(64, b.blockM));
    while (kvSmemBytes(D, bm, 16 * w, mod.atomicDq) > smemLimit && (bm > 16 || w > 1)) {
      if (bm > 32 || w == 1)
        bm /= 2;
      else
        w /= 2;
    }
    if (kvSmemBytes(D, bm, 16 * w, mod.atomicDq) > smemLimit)
      throw Error(tooBig(D, arch, smemLimit));
    KernelInfo kv;
    kv.role = KernelRole::DkvPass;
    kv.branch = static_cast<int>(bi);
    kv.path = KernelPath::Mma;
    kv.blockM = bm;
    kv.blockN = 16 * w;
    kv.threads = 32 * w;
    kv.rowsPerCta = kv.blockN; // key rows owned by one CTA
    kv.smemBytes = kvSmemBytes(D, bm, kv.blockN, mod.atomicDq);
    kv.name = base + "_dkv_mma_m" + std::to_string(bm) + "n" + std::to_string(kv.blockN) +
              (mod.atomicDq ? "_atomicdq" : "");
    mod.kernels.push_back(kv);
    os << "extern \"C\" __global__ void __launch_bounds__(" << kv.threads << ") " << kv.name
       << "(bwd::Params p) {\n  bwd::mmaBackwardKV<" << T << ", " << D << ", " << bm << ", "
       << w << ", " << (mod.atomicDq ? "true" : "false") << ", " << gradMode << ", Branch" << bi
       << ">(p);\n}\n\n";
    if (mod.atomicDq)
      continue;
    // Deterministic dQ: a forward-shaped kernel, one m16 row tile per warp.
    int qm = strided ? 64 : static_cast<int>(std::min<int64_t>(64, b.blockM));
    int qn = strided ? 64 : static_cast<int>(std::min<int64_t>(64, b.blockN));
    while (qSmemBytes(D, qm, qn) > smemLimit && (qm > 16 || qn > 16)) {
      if (qn >= qm && qn > 16)
        qn /= 2;
      else
        qm /= 2;
    }
    if (qSmemBytes(D, qm, qn) > smemLimit)
      throw Error(tooBig(D, arch, smemLimit));
    KernelInfo q;
    q.role = KernelRole::DqPass;
    q.branch = static_cast<int>(bi);
    q.path = KernelPath::Mma;
    q.blockM = qm;
    q.blockN = qn;
    q.threads = qm / 16 * 32;
    q.rowsPerCta = qm;
    q.smemBytes = qSmemBytes(D, qm, qn);
    q.name = base + "_dq_mma_m" + std::to_string(qm) + "n" + std::to_string(qn);
    mod.kernels.push_back(q);
    os << "extern \"C\" __global__ void __launch_bounds__(" << q.threads << ") " << q.name
       << "(bwd::Params p) {\n  bwd::mmaBackwardQ<" << T << ", " << D << ", " << qm << ", "
       << qn << ", " << gradMode << ", Branch" << bi << ">(p);\n}\n\n";
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
