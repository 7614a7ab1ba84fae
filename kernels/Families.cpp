// The registry: every family in preference order, and the choice of a
// branch's kernels (the first family that supports the branch, with its
// heuristic configuration; the autotuner will search the candidates).
#include "Families.h"

#include "dattn/error.h"

namespace dattn {

using namespace kernels;

const std::vector<const KernelFamily *> &kernelFamilies() {
  static const std::vector<const KernelFamily *> all = {
      // sm_90a (the H100's and H200's kernels, Target::forGpu) runs the
      // wgmma forward with K and V through TMA and the warp-specialized
      // dK/dV kernel wherever they support a branch by default (bf16 or
      // fp16, head_dim 64 or 128, no blocks under 128 rows: byDefault;
      // dilations up to 8), the same kernels with cp.async loads where the
      // dilation is larger, and the sm80 mma.sync kernels everything else.
      &sm90WgmmaTmaForward(),   &sm90WgmmaPipelinedForward(), &sm80MmaForward(),
      &simtForward(),           &sm90WgmmaWsBackwardDkv(),    &sm90WgmmaBackwardDkv(),
      &sm80MmaBackwardDkv(),    &simtBackwardDkv(),           &sm80MmaBackwardDq(),
      &simtBackwardDq(),
      // Chosen only when named (DATTN_FAMILIES) or tuned: the first
      // warp-specialized kernel, kept as the pipelined one's baseline.
      &sm90WgmmaForward(),
  };
  return all;
}

const KernelFamily &familyNamed(const std::string &name) {
  for (const KernelFamily *f : kernelFamilies())
    if (name == f->name())
      return *f;
  throw Error("no kernel family is named '" + name + "'");
}

std::vector<const KernelFamily *> tunableFamilies(const AttentionPlan &plan,
                                                  const BranchPlan &branch, const Target &target,
                                                  const KernelFamily &planned,
                                                  const std::string &stage) {
  std::vector<const KernelFamily *> out = {&planned};
  // The forward, and the dK/dV kernel that adds dQ itself (tensor cores, not
  // deterministic: no dQ kernel to pair with); the deterministic backward's
  // dK/dV and dQ families come in pairs.
  const bool swappable =
      stage == "forward" ||
      (stage == "backward" && planned.pass() == KernelPass::BackwardDkv &&
       planned.usesTensorCores());
  if (swappable)
    for (const KernelFamily *f : kernelFamilies())
      if (f != &planned && f->pass() == planned.pass() &&
          f->usesTensorCores() == planned.usesTensorCores() &&
          f->unsupported(plan, branch, target).empty())
        out.push_back(f);
  return out;
}

std::vector<KernelChoice> plannedKernels(const AttentionPlan &plan, const BranchPlan &branch,
                                         const std::string &stage) {
  if (plan.target.empty())
    throw Error("attention '" + plan.name + "': the plan has no kernels chosen; plan it for a "
                "target (PlanOptions::arch, dattn-select-kernels)");
  std::vector<KernelChoice> out;
  for (const PlannedKernel &k : branch.kernels) {
    if (k.stage != stage)
      continue;
    KernelChoice c;
    c.family = &familyNamed(k.family);
    c.config = k.config;
    c.resources = c.family->resources(plan, k.config);
    c.candidates = k.candidates;
    c.origin = k.origin;
    out.push_back(c);
  }
  if (out.empty())
    throw Error("attention '" + plan.name + "': the plan for " + plan.target +
                " has no " + stage + " kernel for a branch");
  return out;
}

namespace {

KernelChoice choose(KernelPass pass, const AttentionPlan &plan, const BranchPlan &branch,
                    const Target &target, bool deterministic, const std::vector<std::string> &first,
                    int tensorCores = -1) {
  std::string why;
  std::vector<const KernelFamily *> order;
  for (const std::string &name : first)
    for (const KernelFamily *f : kernelFamilies())
      if (name == f->name())
        order.push_back(f);
  const size_t named = order.size();
  for (const KernelFamily *f : kernelFamilies())
    order.push_back(f);
  for (size_t x = 0; x < order.size(); ++x) {
    const KernelFamily *f = order[x];
    if (f->pass() != pass || (tensorCores >= 0 && f->usesTensorCores() != bool(tensorCores)))
      continue;
    if (x >= named && !f->byDefault(plan, branch))
      continue; // supported, but only when named or tuned
    const std::string reason = f->unsupported(plan, branch, target);
    if (!reason.empty()) {
      why += std::string(why.empty() ? "" : "; ") + f->name() + ": " + reason;
      continue;
    }
    KernelChoice c;
    c.family = f;
    c.config = f->heuristic(plan, branch, target, deterministic);
    c.resources = f->resources(plan, c.config);
    c.candidates = static_cast<int>(f->candidates(plan, branch, target, deterministic).size());
    return c;
  }
  throw Error("attention '" + plan.name + "': no kernel family runs the " + toString(pass) +
              " pass on " + target.arch() + " (" + why + ")");
}

} // namespace

KernelChoice chooseForward(const AttentionPlan &plan, const BranchPlan &branch,
                           const Target &target, const std::vector<std::string> &first) {
  return choose(KernelPass::Forward, plan, branch, target, false, first);
}

std::vector<KernelChoice> chooseBackward(const AttentionPlan &plan, const BranchPlan &branch,
                                         const Target &target, bool deterministic,
                                         const std::vector<std::string> &first) {
  std::vector<KernelChoice> out = {
      choose(KernelPass::BackwardDkv, plan, branch, target, deterministic, first)};
  if (!out[0].config.atomicDq) // dQ from a kernel of the same kind as dK/dV
    out.push_back(choose(KernelPass::BackwardDq, plan, branch, target, deterministic, first,
                         out[0].family->usesTensorCores()));
  return out;
}

} // namespace dattn
