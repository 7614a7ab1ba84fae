// The sm90 wgmma forward families (templates/dattn/forward_wgmma.cuh): a
// producer warpgroup and two consumer warpgroups, 128 x 128 tiles, three
// K/V stages, bf16 or fp16, head_dim 64 or 128, on sm_90a.
// sm90_wgmma_pipelined_forward releases K and V apart and overlaps softmax
// with the products (pingpong); sm90_wgmma_tma_forward is that kernel with
// K and V through TMA, the sm_90a default forward (Families.cpp), the
// cp.async one taking dilations past what a TMA box can step.
// sm90_wgmma_forward holds a stage for both products; it is chosen only when
// named (DATTN_FAMILIES, `dattn compile --family`), the baseline the
// pipelined kernel is measured against (docs/perf-notes.md).
// sm90_wgmma_backward_dkv: the dK/dV kernel on wgmma
// (templates/dattn/backward_wgmma.cuh); sm90_wgmma_ws_backward_dkv: the same
// products, warp-specialized, Q and dO through TMA, sm_90a's default dK/dV
// kernel wherever it runs. Measured on an H200 (docs/perf-notes.md, "TMA
// and warp specialization, measured"): LongNet's forward at 64K 439 -> 523
// TFLOP/s, dense at 16K 497 -> 671, the backward at 64K 4.57 -> 3.81 ms.
#include "Families.h"

#include "dattn/params.cuh" // fwd::kTmaMaxStride

namespace dattn::kernels {

namespace {

/// Whether a branch has blocks under 128 rows, which 128-row tiles would
/// straddle (random or dilated blocks of 64: each kept block's neighbour
/// computed as a masked partial tile); both wgmma families then take
/// 64-row tiles, where they can.
bool blocksUnder128(const BranchPlan &b) {
  const int64_t block = b.smallestBlock();
  return block != 0 && block < 128;
}

/// What every wgmma family needs (empty: all there): sm_90a, bf16 or fp16,
/// head_dim 64 or 128, and with TMA boxes (tma) a dilation they can step.
std::string wgmmaUnsupported(const AttentionPlan &p, const BranchPlan &b, const Target &t,
                             bool tma) {
  if (tma && b.kind == BranchKind::Strided && b.dilation > fwd::kTmaMaxStride)
    return "dilation " + std::to_string(b.dilation) + ": TMA boxes step at most " +
           std::to_string(fwd::kTmaMaxStride) + " rows";
  if (t.sm != 90 || !t.archSpecific)
    return "needs sm_90a (wgmma), the target is " + t.arch();
  if (p.dtype != DType::BF16 && p.dtype != DType::F16)
    return std::string("bf16 or fp16 only, not ") + toString(p.dtype);
  if (p.headDim != 64 && p.headDim != 128)
    return "head_dim " + std::to_string(p.headDim) + " is not 64 or 128";
  return "";
}

class WgmmaForward : public KernelFamily {
public:
  /// tma: the pipelined kernel with K and V through TMA.
  WgmmaForward(bool pipelined, bool tma) : pipelined_(pipelined), tma_(tma) {}
  const char *name() const override {
    return tma_ ? "sm90_wgmma_tma_forward"
                : pipelined_ ? "sm90_wgmma_pipelined_forward" : "sm90_wgmma_forward";
  }
  std::vector<std::string> tensorMaps() const override {
    return tma_ ? std::vector<std::string>{"k", "v"} : std::vector<std::string>{};
  }
  /// Two consumer warpgroups trade registers with the producer (one CTA an
  /// SM); one consumer (BM 64) trades none and shares its SM with another CTA.
  int minCtasPerSm(const KernelConfig &c) const override { return c.blockM == 64 ? 2 : 1; }
  KernelPass pass() const override { return KernelPass::Forward; }
  bool usesTensorCores() const override { return true; }
  std::string unsupported(const AttentionPlan &p, const BranchPlan &b,
                          const Target &t) const override {
    if (std::string why = wgmmaUnsupported(p, b, t, tma_); !why.empty())
      return why;
    if (smem(p.headDim, 128, 128) > t.smemBytes)
      return "needs " + std::to_string(smem(p.headDim, 128, 128)) + " bytes of shared memory";
    return "";
  }
  /// Q (bm rows), three stages of K and V (bn rows each), 7 mbarriers
  /// (pipelined: 10): WgmmaShape in the template, which the instantiation
  /// checks.
  int smem(int d, int bm, int bn) const {
    return bm * d * 2 + 2 * 3 * bn * d * 2 + 8 * (pipelined_ ? 10 : 7);
  }
  /// sm90_wgmma_forward is the pipelined kernel's baseline: named only.
  /// The pipelined kernels take bf16 and fp16 (fp16 LongNet at 64K on the
  /// H100: 1.62 -> 1.12 ms against the sm80 forward, docs/perf-notes.md),
  /// but no branch with blocks under 128 rows by default: the sm80
  /// forward's tiles stay inside the smallest block (dattn-plan-tiles),
  /// while a 128 x 128 tile over 64-row random or dilated blocks computes
  /// every kept pair as a partial tile, masked pair by pair, plus the pairs
  /// of the blocks left out (docs/perf-notes.md, "Block-sparse branches":
  /// such straddling tiles were 12x slower; bigbird_gqa's 64-row blocks
  /// took 8 ms against 1.8 on the sm80 forward). The TMA kernel's 64 x 64
  /// tiles for them run when named or tuned until measured.
  bool byDefault(const AttentionPlan &, const BranchPlan &b) const override {
    return pipelined_ && !blocksUnder128(b);
  }
  std::vector<KernelConfig> candidates(const AttentionPlan &p, const BranchPlan &b,
                                       const Target &t, bool deterministic) const override {
    std::vector<KernelConfig> out = {{128, 128, 1, false}};
    if (tma_ && blocksUnder128(b) && b.smallestBlock() >= 64)
      out.insert(out.begin(), {64, 64, 1, false});
    return out;
  }
  KernelConfig heuristic(const AttentionPlan &p, const BranchPlan &b, const Target &t,
                         bool deterministic) const override {
    return candidates(p, b, t, deterministic).front();
  }
  KernelResources resources(const AttentionPlan &p, const KernelConfig &c) const override {
    return {128 * (1 + c.blockM / 64), smem(p.headDim, c.blockM, c.blockN), c.blockM};
  }
  std::string instantiate(const KernelConfig &c, const InstanceContext &x) const override {
    const std::string tiles = c.blockM == 128 && c.blockN == 128
                                  ? ""
                                  : ", " + std::to_string(c.blockM) + ", " +
                                        std::to_string(c.blockN);
    const std::string flag = pipelined_ ? ", true" : ""; // tiles other than 128 x 128: TMA only
    const std::string shape = "fwd::WgmmaShape<" + std::to_string(x.headDim) + flag + tiles + ">";
    return "static_assert(" + shape + "::kBytes == " +
           std::to_string(smem(x.headDim, c.blockM, c.blockN)) +
           ", \"the kernel family's shared memory differs from the kernel's\");\n  "
           "fwd::wgmmaForward<" + x.deviceType + ", " + std::to_string(x.headDim) + ", " +
           x.outputMode + ", " + x.branch + flag +
           (tma_ ? ", true" + tiles + ">(p, &kMap, &vMap);" : ">(p);");
  }
  std::string suffix(const KernelConfig &c) const override {
    const std::string tiles = "_m" + std::to_string(c.blockM) + "n" + std::to_string(c.blockN);
    return (tma_ ? "_wgmma_tma" : pipelined_ ? "_wgmma_pp" : "_wgmma_ws") + tiles;
  }

private:
  bool pipelined_, tma_;
};

/// The dK/dV kernel on wgmma (templates/dattn/backward_wgmma.cuh): the
/// sm80 kernel's CTA (128 key rows, query steps of 64, dQ by reductions
/// unless deterministic) with its products on wgmma. A branch with block
/// patterns needs blocks of 128 rows or more (a key tile stays inside one),
/// or, warp-specialized with head_dim 64, blocks of 64 rows or more: then
/// its CTA owns 64 key rows (one consumer warpgroup, two CTAs an SM).
class WgmmaBackwardDkv : public KernelFamily {
public:
  /// ws: warp-specialized (backward_wgmma_ws.cuh): a producer warpgroup
  /// brings Q and dO through TMA, two consumers compute.
  explicit WgmmaBackwardDkv(bool ws) : ws_(ws) {}
  const char *name() const override {
    return ws_ ? "sm90_wgmma_ws_backward_dkv" : "sm90_wgmma_backward_dkv";
  }
  KernelPass pass() const override { return KernelPass::BackwardDkv; }
  bool usesTensorCores() const override { return true; }
  std::vector<std::string> tensorMaps() const override {
    return ws_ ? std::vector<std::string>{"q", "dout"} : std::vector<std::string>{};
  }
  int minCtasPerSm(const KernelConfig &c) const override {
    return ws_ ? (c.blockN == 64 ? 2 : 1) : 0;
  }
  std::string unsupported(const AttentionPlan &p, const BranchPlan &b,
                          const Target &t) const override {
    if (std::string why = wgmmaUnsupported(p, b, t, ws_); !why.empty())
      return why;
    if (blocksUnder128(b)) {
      const int64_t block = b.smallestBlock();
      if (!ws_ || block < 64)
        return "blocks of " + std::to_string(block) + " rows: its " +
               (ws_ ? "64" : "128") + "-key tiles would straddle them";
      if (p.headDim != 64)
        return "blocks of " + std::to_string(block) + " rows take 64-key tiles, which need "
               "head_dim 64 (two CTAs an SM), not " + std::to_string(p.headDim);
    }
    const int bn = keyRows(b);
    if (smem(p.headDim, true, bn) > t.smemBytes)
      return "needs " + std::to_string(smem(p.headDim, true, bn)) + " bytes of shared memory";
    return "";
  }
  /// Key rows a CTA owns: 128, or 64 (one consumer warpgroup) for the
  /// warp-specialized kernel where blocks are under 128 rows, so that a key
  /// tile stays inside a block.
  int keyRows(const BranchPlan &b) const { return ws_ && blocksUnder128(b) ? 64 : 128; }
  /// bwd::KvSmem<D, 64, 128, atomicDq> (128 key rows, query steps of 64),
  /// or with ws bwd::WsKvShape<D, atomicDq, bn>: K and V, three stages of Q,
  /// dO, L and Delta, two dS^T buffers (atomic dQ), six mbarriers.
  int smem(int d, bool atomicDq, int bn) const {
    if (!ws_)
      return kvPassSmemBytes(d, 64, 128, atomicDq, 2);
    constexpr int kStages = 3; // WsKvShape::kStages (instantiate()'s static_assert checks)
    return 2 * (2 * bn * d) + kStages * (2 * 2 * 64 * d) + (atomicDq ? 2 * (2 * 64 * bn) : 0) +
           kStages * (2 * 64 * 4) + 8 * 2 * kStages;
  }
  /// 64-key tiles (blocks under 128 rows) only when named until measured.
  bool byDefault(const AttentionPlan &, const BranchPlan &b) const override {
    return keyRows(b) == 128;
  }
  // Both are defaults wherever they run (no byDefault override), the
  // warp-specialized one first: on the H100 the first took LongNet's
  // forward+backward at 64K from 233 to 292 TFLOP/s in bf16 (docs/perf-notes.md,
  // "The dK/dV kernel on wgmma"), and on an H200 the second took its backward
  // from 4.57 to 3.81 ms. One configuration each: the tuner picks between them.
  std::vector<KernelConfig> candidates(const AttentionPlan &p, const BranchPlan &b,
                                       const Target &t, bool deterministic) const override {
    return {heuristic(p, b, t, deterministic)};
  }
  KernelConfig heuristic(const AttentionPlan &, const BranchPlan &b, const Target &,
                         bool deterministic) const override {
    return {64, keyRows(b), 0, !deterministic};
  }
  KernelResources resources(const AttentionPlan &p, const KernelConfig &c) const override {
    return {ws_ ? 128 * (1 + c.blockN / 64) : 256, smem(p.headDim, c.atomicDq, c.blockN),
            c.blockN};
  }
  std::string instantiate(const KernelConfig &c, const InstanceContext &x) const override {
    const std::string atomic = c.atomicDq ? "true" : "false", d = std::to_string(x.headDim);
    const std::string bn = std::to_string(c.blockN);
    const std::string shape = ws_ ? "bwd::WsKvShape<" + d + ", " + atomic + ", " + bn + ">"
                                  : "bwd::KvSmem<" + d + ", 64, 128, " + atomic + ">";
    return "static_assert(" + shape + "::kBytes == " +
           std::to_string(smem(x.headDim, c.atomicDq, c.blockN)) +
           ", \"the kernel family's shared memory differs from the kernel's\");\n  " +
           (ws_ ? "bwd::wgmmaBackwardKVWs<" : "bwd::wgmmaBackwardKV<") + x.deviceType + ", " + d +
           ", " + atomic + ", " + x.gradMode + ", " + x.branch +
           (ws_ ? ", " + bn + ">(p, &qMap, &doutMap);" : ">(p);");
  }
  std::string suffix(const KernelConfig &c) const override {
    return std::string(ws_ ? "_dkv_wgmma_ws_m64n" : "_dkv_wgmma_m64n") +
           std::to_string(c.blockN) + (c.atomicDq ? "_atomicdq" : "");
  }

private:
  bool ws_;
};

} // namespace

const KernelFamily &sm90WgmmaBackwardDkv() {
  static const WgmmaBackwardDkv f(false);
  return f;
}

const KernelFamily &sm90WgmmaWsBackwardDkv() {
  static const WgmmaBackwardDkv f(true);
  return f;
}

const KernelFamily &sm90WgmmaForward() {
  static const WgmmaForward f(false, false);
  return f;
}

const KernelFamily &sm90WgmmaPipelinedForward() {
  static const WgmmaForward f(true, false);
  return f;
}

const KernelFamily &sm90WgmmaTmaForward() {
  static const WgmmaForward f(true, true);
  return f;
}

} // namespace dattn::kernels
