// The SIMT families: one warp per row, exact fp32 arithmetic, every dtype,
// head_dim and arch from sm_50 (below sm_75 through the NVRTC of CUDA 12). They have one configuration (four
// rows per CTA of 128 threads) and are the fallback of every pass.
#include "Families.h"

namespace dattn::kernels {

namespace {

class Simt : public KernelFamily {
public:
  Simt(const char *name, KernelPass pass, const char *call, const char *suffix)
      : name_(name), pass_(pass), call_(call), suffix_(suffix) {}
  const char *name() const override { return name_; }
  KernelPass pass() const override { return pass_; }
  bool usesTensorCores() const override { return false; }
  std::string unsupported(const AttentionPlan &, const BranchPlan &, const Target &t) const override {
    return t.sm < 50 ? t.arch() + " is older than sm_50, the oldest arch NVRTC 12 targets" : "";
  }
  std::vector<KernelConfig> candidates(const AttentionPlan &, const BranchPlan &, const Target &,
                                       bool) const override {
    return {KernelConfig{}};
  }
  KernelConfig heuristic(const AttentionPlan &, const BranchPlan &, const Target &,
                         bool) const override {
    return {};
  }
  KernelResources resources(const AttentionPlan &, const KernelConfig &) const override {
    return {128, 0, 4}; // one warp per row
  }
  std::string instantiate(const KernelConfig &, const InstanceContext &x) const override {
    std::string args = x.deviceType + ", " + std::to_string(x.headDim) + ", ";
    if (pass_ == KernelPass::Forward)
      args += x.outputMode + ", ";
    return std::string(call_) + "<" + args + x.branch + ">(p);";
  }
  std::string suffix(const KernelConfig &) const override { return suffix_; }

private:
  const char *name_;
  KernelPass pass_;
  const char *call_, *suffix_;
};

} // namespace

const KernelFamily &simtForward() {
  static const Simt f("simt_forward", KernelPass::Forward, "fwd::simtForward", "_simt");
  return f;
}
const KernelFamily &simtBackwardDkv() {
  static const Simt f("simt_backward_dkv", KernelPass::BackwardDkv, "bwd::dkvPass", "_dkv_simt");
  return f;
}
const KernelFamily &simtBackwardDq() {
  static const Simt f("simt_backward_dq", KernelPass::BackwardDq, "bwd::dqPass", "_dq_simt");
  return f;
}

} // namespace dattn::kernels
