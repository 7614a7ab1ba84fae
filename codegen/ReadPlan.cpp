// codegen: the planned IR read back as host data (include/dattn/plan.h).
#include "ReadPlan.h"

#include "dattn/error.h"

#include <cmath>

using namespace mlir;

namespace dattn::ir {

namespace {

std::vector<int64_t> toVector(ArrayRef<int64_t> a) { return {a.begin(), a.end()}; }

int64_t optionalOr(std::optional<int64_t> v, int64_t fallback) { return v ? *v : fallback; }

MemberPlan readMember(Operation *op) {
  MemberPlan m;
  if (isa<DenseOp>(op)) {
    m.kind = plan::kAll;
  } else if (auto w = dyn_cast<WindowOp>(op)) {
    m.kind = plan::kBand;
    m.left = optionalOr(w.getLeft(), kUnbounded);
    m.right = optionalOr(w.getRight(), kUnbounded);
  } else if (auto g = dyn_cast<GlobalOp>(op)) {
    m.kind = plan::kPrefix;
    m.tokens = g.getTokens();
  } else if (auto d = dyn_cast<DilatedOp>(op)) {
    m.kind = plan::kSegment;
    m.segment = optionalOr(d.getSegment(), kUnbounded);
    m.dilation = d.getDilation();
    m.offsets = toVector(d.getOffsets());
    m.excluded = d.getExcluded();
  } else if (auto r = dyn_cast<RandomOp>(op)) {
    m.kind = plan::kHash;
    m.block = r.getBlock();
    m.seed = static_cast<uint64_t>(r.getSeed());
    Pattern p; // one definition of the threshold: Pattern::keepThreshold
    p.kind = PatternKind::Random;
    p.density = r.getDensity().convertToDouble();
    m.keep = p.keepThreshold();
  } else if (auto db = dyn_cast<DilatedBlocksOp>(op)) {
    m.kind = plan::kBlockOffsets;
    m.block = db.getBlock();
    m.rates = toVector(db.getRates());
  } else if (auto h = dyn_cast<HierarchicalOp>(op)) {
    m.kind = plan::kHierarchy;
    m.block = h.getBlock();
    m.levels = static_cast<int>(h.getLevels());
  } else if (auto bm = dyn_cast<BlockMaskOp>(op)) {
    m.kind = plan::kBlockMask;
    m.block = bm.getBlock();
  } else {
    throw Error("codegen: unknown op in a branch: " + op->getName().getStringRef().str());
  }
  return m;
}

} // namespace

BranchPlan readBranch(BranchOp br) {
  BranchPlan p;
  for (int64_t h : br.getHeads())
    p.heads.push_back(static_cast<int>(h));
  TilesAttr tiles = br.getPlanAttr();
  if (!tiles)
    throw Error("codegen: branch has no plan (plan-tiles did not run)");
  p.kind = tiles.getKind() == "strided" ? BranchKind::Strided : BranchKind::Blocks;
  p.blockM = tiles.getBlockM();
  p.blockN = tiles.getBlockN();
  if (auto kernels = br.getKernelsAttr())
    for (Attribute a : kernels) {
      auto k = cast<KernelAttr>(a);
      PlannedKernel pk;
      pk.stage = k.getStage().str();
      pk.family = k.getFamily().str();
      pk.config.blockM = static_cast<int>(k.getBlockM());
      pk.config.blockN = static_cast<int>(k.getBlockN());
      pk.config.rowTilesPerWarp = static_cast<int>(k.getRowTiles());
      pk.config.atomicDq = k.getAtomicDq();
      pk.candidates = static_cast<int>(k.getCandidates());
      pk.origin = k.getOrigin().str();
      p.kernels.push_back(pk);
    }
  if (p.kind == BranchKind::Strided && isa<DenseOp>(br.getBody()->front())) {
    p.segment = kUnbounded; // dense: one segment, every row, offset 0
    p.dilation = 1;
    p.offsets.assign(p.heads.size(), 0);
    return p;
  }
  if (p.kind == BranchKind::Strided) {
    auto d = cast<DilatedOp>(br.getBody()->front());
    p.segment = optionalOr(d.getSegment(), kUnbounded);
    p.dilation = d.getDilation();
    p.offsets = toVector(d.getOffsets());
    return p;
  }
  for (Operation &op : *br.getBody())
    p.members.push_back(readMember(&op));
  return p;
}

AttentionPlan readPlan(AttentionOp att) {
  AttentionPlan out;
  out.name = att.getSymName().str();
  out.heads = static_cast<int>(att.getHeads());
  out.kvHeads = static_cast<int>(att.getKvHeads());
  out.headDim = static_cast<int>(att.getHeadDim());
  const StringRef dt = att.getDtype();
  out.dtype = dt == "fp16" ? DType::F16 : dt == "bf16" ? DType::BF16 : DType::F32;
  out.precision = att.getPrecision() == "tf32" ? Precision::TF32 : Precision::IEEE;
  out.scale = att.getScale() ? att.getScale()->convertToDouble()
                             : 1.0 / std::sqrt(static_cast<double>(out.headDim));
  out.causal = att.getCausal();
  out.ring = static_cast<int>(att.getRing());
  if (auto l = att.getRingLayout(); l && *l == "zigzag")
    out.ringLayout = RingLayout::Zigzag;
  if (auto target = att->getAttrOfType<StringAttr>(kTargetAttr))
    out.target = target.getValue().str();
  if (auto smem = att->getAttrOfType<IntegerAttr>(kSmemAttr))
    out.smemBytes = static_cast<int>(smem.getInt());
  for (Operation &op : *att.getBody())
    out.branches.push_back(readBranch(cast<BranchOp>(op)));
  return out;
}



} // namespace dattn::ir
