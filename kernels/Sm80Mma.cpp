// The sm80 tensor-core families (mma.sync m16n8k16, cp.async, ldmatrix):
// forward, backward dK/dV (optionally adding dQ with fp32 reductions) and
// the deterministic backward dQ. fp16/bf16, sm_80 and newer, head_dim a
// multiple of 16 (the backward: up to 128, where its accumulators still fit
// in registers). All three also take fp32 with `precision = tf32`
// (m16n8k8 on TF32 operands, fp32 tiles in shared memory).
//
// The plan's block_m/block_n are upper bounds from the branch's geometry
// (a short segment's compact rows, the smallest block of a union): the
// candidates are the powers of two under them that fit the target's shared
// memory, and the heuristic is the largest, shrinking the key tile first.
#include "Families.h"

#include "dattn/error.h"

#include <algorithm>

namespace dattn::kernels {

namespace {

/// Whether a family cannot run `plan` on `t`; `tf32`: it takes fp32 inputs
/// with precision tf32 on TF32 tensor cores.
std::string mmaUnsupported(const AttentionPlan &plan, const Target &t, int maxHeadDim,
                           bool tf32 = false) {
  if (plan.dtype == DType::F32 && plan.precision != Precision::TF32)
    return "fp32 inputs with precision ieee (exact fp32: the SIMT kernels)";
  if (plan.dtype == DType::F32 && !tf32)
    return "fp32 inputs (no TF32 kernel in this family)";
  if (t.sm < 80)
    return t.arch() + " has no bf16 mma.sync with cp.async (needs sm_80)";
  if (plan.headDim % 16 != 0)
    return "head_dim " + std::to_string(plan.headDim) + " is not a multiple of 16";
  if (maxHeadDim && plan.headDim > maxHeadDim)
    return "head_dim " + std::to_string(plan.headDim) + " is above " +
           std::to_string(maxHeadDim) + " (accumulators would not fit in registers)";
  return "";
}

/// Bytes per element of the kernel's inputs (fp32 for TF32).
int eb(const InstanceContext &x) { return x.deviceType == "float" ? 4 : 2; }

std::vector<int> powersOfTwo(int lo, int hi) {
  std::vector<int> v;
  for (int x = lo; x <= hi; x *= 2)
    v.push_back(x);
  return v;
}

/// The generated source asserts that the device's carve-up of shared memory
/// (a template constant) equals the bytes the launch reserves (the family's
/// figure): a mismatch fails to compile instead of corrupting memory.
std::string smemCheck(const std::string &deviceBytes, int hostBytes) {
  return "static_assert(" + deviceBytes + " == " + std::to_string(hostBytes) +
         ", \"the kernel family's shared memory differs from the kernel's\");\n  ";
}

std::string tooBig(const AttentionPlan &plan, const Target &t) {
  return "head_dim " + std::to_string(plan.headDim) + " does not fit the shared memory of " +
         t.arch() + " (" + std::to_string(t.smemBytes) + " bytes) even with 16x16 tiles";
}

class MmaForward : public KernelFamily {
public:
  const char *name() const override { return "sm80_mma_forward"; }
  KernelPass pass() const override { return KernelPass::Forward; }
  bool usesTensorCores() const override { return true; }
  std::string unsupported(const AttentionPlan &p, const BranchPlan &, const Target &t) const override {
    return mmaUnsupported(p, t, 0, /*tf32=*/true);
  }
  /// Q and two stages of K and V, in the dtype (fp32 for TF32).
  static int smemBytes(int d, int bm, int bn, int elementBytes) {
    return (bm * d + 4 * bn * d) * elementBytes;
  }
  static int smem(const AttentionPlan &p, int d, int bm, int bn) {
    return smemBytes(d, bm, bn, p.dtype == DType::F32 ? 4 : 2);
  }
  /// Two m16 tiles per warp halve shared-memory reads per mma; above
  /// head_dim 128 their accumulators would not fit in registers.
  static int rowTiles(int d, int bm) { return d <= 128 && bm % 32 == 0 ? 2 : 1; }
  std::vector<KernelConfig> candidates(const AttentionPlan &p, const BranchPlan &b, const Target &t,
                                       bool) const override {
    std::vector<KernelConfig> out;
    for (int bm : powersOfTwo(16, static_cast<int>(std::min<int64_t>(256, b.blockM))))
      for (int bn : powersOfTwo(16, static_cast<int>(std::min<int64_t>(256, b.blockN))))
        if (smem(p, p.headDim, bm, bn) <= t.smemBytes)
          for (int tiles = 1; tiles <= rowTiles(p.headDim, bm); ++tiles)
            out.push_back({bm, bn, tiles, false});
    return out;
  }
  KernelConfig heuristic(const AttentionPlan &p, const BranchPlan &b, const Target &t,
                         bool) const override {
    int bm = static_cast<int>(b.blockM), bn = static_cast<int>(b.blockN);
    // fp32 (TF32) tiles double every term: keep four warps of query rows
    // and take the key tile down to 32 first (not measured yet).
    const bool keysFirst = p.dtype == DType::F32;
    while (smem(p, p.headDim, bm, bn) > t.smemBytes && (bm > 16 || bn > 16)) {
      if ((bn >= bm || (keysFirst && bn > 32)) && bn > 16)
        bn /= 2;
      else
        bm /= 2;
    }
    if (smem(p, p.headDim, bm, bn) > t.smemBytes)
      throw Error(tooBig(p, t));
    return {bm, bn, rowTiles(p.headDim, bm), false};
  }
  KernelResources resources(const AttentionPlan &p, const KernelConfig &c) const override {
    return {c.blockM / (16 * c.rowTilesPerWarp) * 32, smem(p, p.headDim, c.blockM, c.blockN),
            c.blockM};
  }
  std::string instantiate(const KernelConfig &c, const InstanceContext &x) const override {
    return smemCheck("fwd::MmaTile<" + x.deviceType + ", " + std::to_string(x.headDim) + ", " +
                         std::to_string(c.blockM) + ", " + std::to_string(c.blockN) + ", " +
                         std::to_string(c.rowTilesPerWarp) + ">::kSmemBytes",
                     smemBytes(x.headDim, c.blockM, c.blockN, eb(x))) +
           "fwd::mmaForward<" + x.deviceType + ", " + std::to_string(x.headDim) + ", " +
           std::to_string(c.blockM) + ", " + std::to_string(c.blockN) + ", " +
           std::to_string(c.rowTilesPerWarp) + ", " + x.outputMode + ", " + x.branch + ">(p);";
  }
  std::string suffix(const KernelConfig &c) const override {
    return "_mma_m" + std::to_string(c.blockM) + "n" + std::to_string(c.blockN) + "w" +
           std::to_string(c.blockM / (16 * c.rowTilesPerWarp));
  }
};

/// K/V-stationary: one CTA owns blockN = 16 W key rows (W warps, 16 rows
/// each) and walks the query tiles that reach them in steps of blockM.
class MmaBackwardDkv : public KernelFamily {
public:
  const char *name() const override { return "sm80_mma_backward_dkv"; }
  KernelPass pass() const override { return KernelPass::BackwardDkv; }
  bool usesTensorCores() const override { return true; }
  std::string unsupported(const AttentionPlan &p, const BranchPlan &, const Target &t) const override {
    return mmaUnsupported(p, t, 128, /*tf32=*/true);
  }
  /// In the dtype (fp32 for TF32): kvPassSmemBytes.
  static int smemBytes(int d, int bm, int bn, bool atomicDq, int eb) {
    return kvPassSmemBytes(d, bm, bn, atomicDq, eb);
  }
  static int smem(const AttentionPlan &p, int d, int bm, int bn, bool atomicDq) {
    return smemBytes(d, bm, bn, atomicDq, p.dtype == DType::F32 ? 4 : 2);
  }
  /// 128 keys per CTA on strided branches; on blocks branches no more than
  /// the plan's key tile (which stays inside the smallest block).
  static int maxWarps(const BranchPlan &b) {
    return b.kind == BranchKind::Strided
               ? 8
               : static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(8, b.blockN / 16)));
  }
  static int maxStep(const BranchPlan &b) {
    return b.kind == BranchKind::Strided ? 64 : static_cast<int>(std::min<int64_t>(64, b.blockM));
  }
  std::vector<KernelConfig> candidates(const AttentionPlan &p, const BranchPlan &b, const Target &t,
                                       bool deterministic) const override {
    std::vector<KernelConfig> out;
    for (int bm : powersOfTwo(16, maxStep(b)))
      for (int w : powersOfTwo(1, maxWarps(b)))
        if (smem(p, p.headDim, bm, 16 * w, !deterministic) <= t.smemBytes)
          out.push_back({bm, 16 * w, 0, !deterministic});
    return out;
  }
  KernelConfig heuristic(const AttentionPlan &p, const BranchPlan &b, const Target &t,
                         bool deterministic) const override {
    const bool atomic = !deterministic;
    int w = maxWarps(b), bm = maxStep(b);
    while (smem(p, p.headDim, bm, 16 * w, atomic) > t.smemBytes && (bm > 16 || w > 1)) {
      if (bm > 32 || w == 1)
        bm /= 2;
      else
        w /= 2;
    }
    if (smem(p, p.headDim, bm, 16 * w, atomic) > t.smemBytes)
      throw Error("the backward pass: " + tooBig(p, t));
    return {bm, 16 * w, 0, atomic};
  }
  KernelResources resources(const AttentionPlan &p, const KernelConfig &c) const override {
    return {2 * c.blockN, smem(p, p.headDim, c.blockM, c.blockN, c.atomicDq), c.blockN};
  }
  std::string instantiate(const KernelConfig &c, const InstanceContext &x) const override {
    return smemCheck("bwd::KvSmem<" + std::to_string(x.headDim) + ", " +
                         std::to_string(c.blockM) + ", " + std::to_string(c.blockN) + ", " +
                         (c.atomicDq ? "true" : "false") + ", " + std::to_string(eb(x)) +
                         ">::kBytes",
                     smemBytes(x.headDim, c.blockM, c.blockN, c.atomicDq, eb(x))) +
           "bwd::mmaBackwardKV<" + x.deviceType + ", " + std::to_string(x.headDim) + ", " +
           std::to_string(c.blockM) + ", " + std::to_string(c.blockN / 16) + ", " +
           (c.atomicDq ? "true" : "false") + ", " + x.gradMode + ", " + x.branch + ">(p);";
  }
  std::string suffix(const KernelConfig &c) const override {
    return "_dkv_mma_m" + std::to_string(c.blockM) + "n" + std::to_string(c.blockN) +
           (c.atomicDq ? "_atomicdq" : "");
  }
};

/// Deterministic dQ: a forward-shaped kernel, one m16 row tile per warp,
/// each dQ row written by one CTA.
class MmaBackwardDq : public KernelFamily {
public:
  const char *name() const override { return "sm80_mma_backward_dq"; }
  KernelPass pass() const override { return KernelPass::BackwardDq; }
  bool usesTensorCores() const override { return true; }
  std::string unsupported(const AttentionPlan &p, const BranchPlan &, const Target &t) const override {
    return mmaUnsupported(p, t, 128, /*tf32=*/true);
  }
  static int smemBytes(int d, int bm, int bn, int eb) { return (2 * bm + 4 * bn) * d * eb; }
  static int smem(const AttentionPlan &p, int d, int bm, int bn) {
    return smemBytes(d, bm, bn, p.dtype == DType::F32 ? 4 : 2);
  }
  static int cap(const BranchPlan &b, int64_t planned) {
    return b.kind == BranchKind::Strided ? 64 : static_cast<int>(std::min<int64_t>(64, planned));
  }
  std::vector<KernelConfig> candidates(const AttentionPlan &p, const BranchPlan &b, const Target &t,
                                       bool deterministic) const override {
    std::vector<KernelConfig> out;
    if (!deterministic) // the default mode's dQ comes from the dK/dV kernel's reductions
      return out;
    for (int bm : powersOfTwo(16, cap(b, b.blockM)))
      for (int bn : powersOfTwo(16, cap(b, b.blockN)))
        if (smem(p, p.headDim, bm, bn) <= t.smemBytes)
          out.push_back({bm, bn, 0, false});
    return out;
  }
  KernelConfig heuristic(const AttentionPlan &p, const BranchPlan &b, const Target &t,
                         bool) const override {
    int qm = cap(b, b.blockM), qn = cap(b, b.blockN);
    while (smem(p, p.headDim, qm, qn) > t.smemBytes && (qm > 16 || qn > 16)) {
      if (qn >= qm && qn > 16)
        qn /= 2;
      else
        qm /= 2;
    }
    if (smem(p, p.headDim, qm, qn) > t.smemBytes)
      throw Error("the backward pass: " + tooBig(p, t));
    return {qm, qn, 0, false};
  }
  KernelResources resources(const AttentionPlan &p, const KernelConfig &c) const override {
    return {c.blockM / 16 * 32, smem(p, p.headDim, c.blockM, c.blockN), c.blockM};
  }
  std::string instantiate(const KernelConfig &c, const InstanceContext &x) const override {
    return smemCheck("bwd::QSmem<" + std::to_string(x.headDim) + ", " +
                         std::to_string(c.blockM) + ", " + std::to_string(c.blockN) + ", " +
                         std::to_string(eb(x)) + ">::kBytes",
                     smemBytes(x.headDim, c.blockM, c.blockN, eb(x))) +
           "bwd::mmaBackwardQ<" + x.deviceType + ", " + std::to_string(x.headDim) + ", " +
           std::to_string(c.blockM) + ", " + std::to_string(c.blockN) + ", " + x.gradMode +
           ", " + x.branch + ">(p);";
  }
  std::string suffix(const KernelConfig &c) const override {
    return "_dq_mma_m" + std::to_string(c.blockM) + "n" + std::to_string(c.blockN);
  }
};

} // namespace

const KernelFamily &sm80MmaForward() {
  static const MmaForward f;
  return f;
}
const KernelFamily &sm80MmaBackwardDkv() {
  static const MmaBackwardDkv f;
  return f;
}
const KernelFamily &sm80MmaBackwardDq() {
  static const MmaBackwardDq f;
  return f;
}

} // namespace dattn::kernels
