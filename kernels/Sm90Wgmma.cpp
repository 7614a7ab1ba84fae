// The sm90 wgmma forward family (templates/dattn/forward_wgmma.cuh): one
// warpgroup, 64 x 64 tiles, bf16, head_dim a multiple of 64 up to 128, on
// sm_90a. Its first step (issue 12): registered after the sm80 family, so
// nothing chooses it unless DATTN_FAMILIES (or `dattn compile --family`)
// names it, until it has run and been measured on a GPU.
#include "Families.h"

namespace dattn::kernels {

namespace {

class WgmmaForward : public KernelFamily {
public:
  const char *name() const override { return "sm90_wgmma_forward"; }
  KernelPass pass() const override { return KernelPass::Forward; }
  bool usesTensorCores() const override { return true; }
  std::string unsupported(const AttentionPlan &p, const BranchPlan &, const Target &t) const override {
    if (t.sm != 90 || !t.archSpecific)
      return "needs sm_90a (wgmma), the target is " + t.arch();
    if (p.dtype != DType::BF16)
      return std::string("bf16 only so far, not ") + toString(p.dtype);
    if (p.headDim % 64 != 0 || p.headDim > 128)
      return "head_dim " + std::to_string(p.headDim) + " is not 64 or 128";
    if (smem(p.headDim) > t.smemBytes)
      return "needs " + std::to_string(smem(p.headDim)) + " bytes of shared memory";
    return "";
  }
  /// Q, and two stages of K and V: 64 rows each.
  static int smem(int d) { return 5 * 64 * d * 2; }
  std::vector<KernelConfig> candidates(const AttentionPlan &p, const BranchPlan &b,
                                       const Target &t, bool deterministic) const override {
    return {heuristic(p, b, t, deterministic)};
  }
  KernelConfig heuristic(const AttentionPlan &, const BranchPlan &, const Target &,
                         bool) const override {
    return {64, 64, 1, false};
  }
  KernelResources resources(const AttentionPlan &p, const KernelConfig &) const override {
    return {128, smem(p.headDim), 64};
  }
  std::string instantiate(const KernelConfig &, const InstanceContext &x) const override {
    return "static_assert(fwd::WgmmaSmem<" + std::to_string(x.headDim) +
           ">::kBytes == " + std::to_string(smem(x.headDim)) +
           ", \"the kernel family's shared memory differs from the kernel's\");\n  "
           "fwd::wgmmaForward<" + x.deviceType + ", " + std::to_string(x.headDim) + ", " +
           x.outputMode + ", " + x.branch + ">(p);";
  }
  std::string suffix(const KernelConfig &) const override { return "_wgmma_m64n64"; }
};

} // namespace

const KernelFamily &sm90WgmmaForward() {
  static const WgmmaForward f;
  return f;
}

} // namespace dattn::kernels
