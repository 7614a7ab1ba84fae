// Planned attention -> CUDA C++. Steps:
//   1. pick the output mode (kMerge when a head is in several branches;
//      then branches that write every row of their heads launch first in
//      kMergeFirst, and with every head so written nothing is cleared);
//   2. print the constants of each branch as a `BranchK` struct
//      (branchDefinitions, shared with the backward and ring modules);
//   3. ask the kernel families for each branch's kernel (family and
//      configuration: include/dattn/kernels.h) and print one extern "C"
//      kernel per launch, named after its specialization.
#include "dattn/emit.h"
#include "dattn/error.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>

namespace dattn {

namespace {

const char *deviceType(DType t) {
  switch (t) {
  case DType::F16: return "dev::f16";
  case DType::BF16: return "dev::bf16";
  case DType::F32: return "float";
  }
  return "?";
}

const char *memberKindName(plan::MemberKind k) {
  switch (k) {
  case plan::kAll: return "plan::kAll";
  case plan::kBand: return "plan::kBand";
  case plan::kPrefix: return "plan::kPrefix";
  case plan::kHash: return "plan::kHash";
  case plan::kBlockOffsets: return "plan::kBlockOffsets";
  case plan::kHierarchy: return "plan::kHierarchy";
  case plan::kBlockMask: return "plan::kBlockMask";
  case plan::kSegment: return "plan::kSegment";
  }
  return "?";
}

std::string list(const std::vector<int64_t> &v) {
  std::string s;
  for (size_t k = 0; k < v.size(); ++k)
    s += (k ? ", " : "") + std::to_string(v[k]) + "LL";
  return s;
}

std::string extentName(int64_t v) { return v == kUnbounded ? "inf" : std::to_string(v); }

/// Whether every row of this branch's heads has at least one key (so the
/// init pass can be skipped in kWrite mode).
bool rowsNeverEmpty(const BranchPlan &b) {
  if (b.kind == BranchKind::Strided)
    return b.dilation == 1;
  for (const auto &m : b.members)
    if (m.kind == plan::kAll || m.kind == plan::kBand || m.kind == plan::kPrefix)
      return true;
  return false;
}

} // namespace

void checkPlannedFor(const AttentionPlan &plan, const Target &target) {
  if (plan.target != target.arch() || plan.smemBytes != target.smemBytes)
    throw Error("attention '" + plan.name + "': the plan's kernels were chosen for " +
                (plan.target.empty() ? std::string("no target")
                                     : plan.target + " with " + std::to_string(plan.smemBytes) +
                                           " bytes of shared memory") +
                ", not for " + target.arch() + " with " + std::to_string(target.smemBytes) +
                ": plan it with PlanOptions::arch and smemBytes");
}

void setChoice(KernelInfo &k, const KernelChoice &c) {
  k.family = c.family->name();
  k.config = c.config;
  k.candidates = c.candidates;
  k.origin = c.origin;
  k.path = c.family->usesTensorCores() ? KernelPath::Mma : KernelPath::Simt;
  k.threads = c.resources.threads;
  k.smemBytes = c.resources.smemBytes;
  k.rowsPerCta = c.resources.rowsPerCta;
  k.name += c.family->suffix(c.config);
}

bool mergesBranches(const AttentionPlan &plan) {
  std::vector<int> branchesOfHead(plan.heads, 0);
  for (const auto &b : plan.branches)
    for (int h : b.heads)
      if (++branchesOfHead[h] > 1)
        return true;
  return false;
}

std::string launchBounds(const KernelFamily &family, const KernelConfig &config, int threads) {
  const int ctas = family.minCtasPerSm(config);
  return "__launch_bounds__(" + std::to_string(threads) +
         (ctas > 0 ? ", " + std::to_string(ctas) + ")" : ")");
}

std::string tensorMapParameters(const KernelFamily &family) {
  // __grid_constant__: the TMA reads each map where the launch put it.
  std::string out;
  for (const std::string &t : family.tensorMaps())
    out += ", const __grid_constant__ hopper::TensorMap " + t + "Map";
  return out;
}

std::string branchDefinitions(const AttentionPlan &plan) {
  std::ostringstream os;
  os << "namespace {\n";
  for (size_t bi = 0; bi < plan.branches.size(); ++bi) {
    const BranchPlan &b = plan.branches[bi];
    const std::string id = std::to_string(bi);
    std::vector<int64_t> heads(b.heads.begin(), b.heads.end());
    os << "\n__device__ const int kHeads" << id << "[] = {";
    for (size_t k = 0; k < heads.size(); ++k)
      os << (k ? ", " : "") << heads[k];
    os << "};\n";
    if (b.kind == BranchKind::Strided) {
      os << "__device__ const long long kOffsets" << id << "[] = {" << list(b.offsets) << "};\n";
      os << "struct Branch" << id << " {\n"
         << "  static constexpr int kKind = fwd::kStridedBranch;\n"
         << "  static constexpr long long kSegment = " << b.segment << "LL;\n"
         << "  static constexpr long long kStride = " << b.dilation << "LL;\n"
         << "  static constexpr bool kCausal = " << (plan.causal ? "true" : "false") << ";\n"
         << "  static constexpr int kNumMembers = 0;\n"
         << "  static constexpr int kNumHeads = " << heads.size() << ";\n"
         << "  __device__ static int head(int k) { return kHeads" << id << "[k]; }\n"
         << "  __device__ static long long offset(int k) { return kOffsets" << id << "[k]; }\n"
         << "  __device__ static plan::Member member(int, int, int, const fwd::Params &) "
            "{ return plan::Member{}; }\n};\n";
    } else {
      std::ostringstream mem;
      for (size_t m = 0; m < b.members.size(); ++m) {
        const MemberPlan &mp = b.members[m];
        if (mp.kind == plan::kSegment)
          os << "__device__ const long long kSegOffsets" << id << "_" << m << "[] = {"
             << list(mp.offsets) << "};\n";
        mem << "    case " << m << ":\n      x.kind = " << memberKindName(mp.kind) << ";\n";
        switch (mp.kind) {
        case plan::kBand:
          mem << "      x.lo = " << mp.left << "LL;\n      x.hi = " << mp.right << "LL;\n";
          break;
        case plan::kPrefix:
          mem << "      x.lo = " << mp.tokens << "LL;\n";
          break;
        case plan::kSegment:
          mem << "      x.segment = " << mp.segment << "LL;\n      x.stride = " << mp.dilation
              << "LL;\n      x.offset = kSegOffsets" << id << "_" << m << "[k];\n";
          if (mp.excluded)
            mem << "      x.excluded = 1;\n";
          break;
        case plan::kHash:
          mem << "      x.block = " << mp.block << "LL;\n      x.seed = " << mp.seed
              << "ULL;\n      x.keep = " << mp.keep << "ULL;\n      x.head = head;\n";
          break;
        case plan::kBlockOffsets:
          mem << "      x.block = " << mp.block << "LL;\n      x.numRates = " << mp.rates.size()
              << ";\n";
          for (size_t r = 0; r < mp.rates.size(); ++r)
            mem << "      x.rates[" << r << "] = " << mp.rates[r] << "LL;\n";
          break;
        case plan::kHierarchy:
          mem << "      x.block = " << mp.block << "LL;\n      x.levels = " << mp.levels
              << ";\n";
          break;
        case plan::kBlockMask:
          mem << "      x.block = " << mp.block
              << "LL;\n      x.maskRows = p.maskRows;\n      x.maskCols = p.maskCols;\n";
          break;
        case plan::kAll:
          break;
        }
        mem << "      break;\n";
      }
      os << "struct Branch" << id << " {\n"
         << "  static constexpr int kKind = fwd::kBlocksBranch;\n"
         << "  static constexpr long long kSegment = 0, kStride = 1;\n"
         << "  static constexpr bool kCausal = " << (plan.causal ? "true" : "false") << ";\n"
         << "  static constexpr int kNumMembers = " << b.members.size() << ";\n"
         << "  static constexpr int kNumHeads = " << heads.size() << ";\n"
         << "  __device__ static int head(int k) { return kHeads" << id << "[k]; }\n"
         << "  __device__ static long long offset(int) { return 0; }\n"
         << "  __device__ static plan::Member member(int m, int k, int head, "
            "const fwd::Params &p) {\n"
         << "    plan::Member x{};\n    (void)k; (void)head; (void)p;\n    switch (m) {\n"
         << mem.str() << "    }\n    return x;\n  }\n};\n";
    }
  }
  os << "\n} // namespace\n\n";
  return os.str();
}

EmittedModule emitCuda(const AttentionPlan &plan, const std::string &arch, int smemLimit) {
  const Target target = Target::parse(arch, smemLimit);
  checkPlannedFor(plan, target);
  EmittedModule mod;
  mod.arch = arch;

  // Step 1: the output mode.
  std::vector<int> branchesOfHead(plan.heads, 0);
  for (const auto &b : plan.branches)
    for (int h : b.heads)
      ++branchesOfHead[h];
  bool needInit = false;
  for (int h = 0; h < plan.heads; ++h)
    needInit |= branchesOfHead[h] == 0;
  mod.mergeMode = mergesBranches(plan);
  mod.branchesIndependent = !mod.mergeMode; // each head in one branch at most
  // Merging: branches that write every row of their heads, no two on one
  // head, launch first and store without reading (kMergeFirst); when they
  // cover every head, the accumulator and LSE need no clearing (LongNet's
  // dilation-1 branch: at 128K, 0.8 GB of memset and 0.8 GB of reads saved).
  std::vector<bool> firstWriter(plan.branches.size(), false), headWritten(plan.heads, false);
  for (size_t bi = 0; bi < plan.branches.size(); ++bi) {
    const BranchPlan &b = plan.branches[bi];
    needInit |= !rowsNeverEmpty(b);
    if (!mod.mergeMode || !rowsNeverEmpty(b) ||
        std::any_of(b.heads.begin(), b.heads.end(), [&](int h) { return headWritten[h]; }))
      continue;
    firstWriter[bi] = true;
    for (int h : b.heads)
      headWritten[h] = true;
  }
  if (mod.mergeMode)
    needInit = std::count(headWritten.begin(), headWritten.end(), true) < plan.heads;

  const char *T = deviceType(plan.dtype);
  const int D = plan.headDim;
  auto modeOf = [&](int branch) {
    return !mod.mergeMode          ? "fwd::kWrite"
           : firstWriter[branch] ? "fwd::kMergeFirst"
                                 : "fwd::kMerge";
  };
  const std::string prefix = "dattn_" + plan.name + "_" + toString(plan.dtype) + "_d" +
                             std::to_string(D) + (plan.causal ? "_causal" : "");

  std::ostringstream os;
  os << "// Generated by dattn for attention '" << plan.name << "', target " << arch
     << ".\n// Constants and instantiations only: the logic is in dattn/forward*.cuh.\n"
     << "#include \"dattn/forward.cuh\"\n\nusing namespace dattn;\n\n";

  if (needInit) {
    KernelInfo k;
    k.name = prefix + "_init";
    k.role = KernelRole::Init;
    k.threads = 256;
    mod.kernels.push_back(k);
  }
  os << branchDefinitions(plan);
  std::vector<int> order; // launch order: the first writers, then the others
  for (bool firsts : {true, false})
    for (int bi = 0; bi < static_cast<int>(plan.branches.size()); ++bi)
      if (firstWriter[bi] == firsts)
        order.push_back(bi);
  for (int bi : order) {
    const BranchPlan &b = plan.branches[bi];
    KernelInfo k;
    k.branch = static_cast<int>(bi);
    k.name = prefix + "_b" + std::to_string(bi) +
             (b.kind == BranchKind::Strided
                  ? "_strided_w" + extentName(b.segment) + "_r" + std::to_string(b.dilation)
                  : std::string("_blocks"));
    // Step 3: the kernel dattn-select-kernels chose.
    setChoice(k, plannedKernels(plan, b, "forward").at(0));
    mod.kernels.push_back(k);
  }
  for (const auto &k : mod.kernels) {
    switch (k.role) {
    case KernelRole::Init:
      os << "extern \"C\" __global__ void " << k.name
         << "(fwd::Params p, long long batch) {\n  fwd::initOutputs<" << T << ", "
         << (mod.mergeMode ? "fwd::kMerge" : "fwd::kWrite")
         << ">(p, " << D << ", batch);\n}\n\n";
      break;
    default: // Finalize is appended below, after the branches
      break;
    case KernelRole::Branch: {
      InstanceContext ctx{T, D, modeOf(k.branch), "", "Branch" + std::to_string(k.branch)};
      const KernelFamily &family = familyNamed(k.family);
      os << "extern \"C\" __global__ void " << launchBounds(family, k.config, k.threads) << " " << k.name
         << "(fwd::Params p" << tensorMapParameters(family) << ") {\n  "
         << family.instantiate(k.config, ctx) << "\n}\n\n";
      break;
    }
    }
  }
  if (mod.mergeMode) {
    KernelInfo k;
    k.name = prefix + "_finalize";
    k.role = KernelRole::Finalize;
    k.threads = 256;
    os << "extern \"C\" __global__ void " << k.name
       << "(fwd::Params p, long long batch) {\n  fwd::finalizeOutputs<" << T << ">(p, " << D
       << ", batch);\n}\n";
    mod.kernels.push_back(k);
  }
  mod.source = os.str();
  return mod;
}

} // namespace dattn
