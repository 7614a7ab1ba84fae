// The public face of the middle end: build IR from specs, run the pipeline,
// read plans back. MLIR diagnostics become one dattn::Error.
#include "MLIRGen.h"
#include "Passes.h"

#include "dattn/compiler.h"
#include "dattn/error.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>

using namespace mlir;

namespace dattn {
namespace {

/// Collects every diagnostic MLIR emits while alive, with its location.
class DiagnosticCollector {
public:
  explicit DiagnosticCollector(MLIRContext &ctx)
      : handler_(&ctx, [this](Diagnostic &d) {
          std::string s;
          llvm::raw_string_ostream os(s);
          os << d.getLocation() << ": " << d.str();
          messages_ += os.str() + "\n";
          return success();
        }) {}
  const std::string &messages() const { return messages_; }

private:
  std::string messages_;
  ScopedDiagnosticHandler handler_;
};

OwningOpRef<ModuleOp> lower(MLIRContext &ctx, const std::vector<AttentionSpec> &specs,
                            IRStage stage, const PlanOptions &options) {
  DiagnosticCollector diags(ctx);
  OwningOpRef<ModuleOp> module = ir::buildModule(ctx, specs);
  if (failed(verify(*module)))
    throw Error("codegen: the generated IR does not verify:\n" + diags.messages());
  if (stage == IRStage::Generated)
    return module;
  PassManager pm(&ctx);
  ir::PipelineOptions po;
  po.tileM = options.tileM;
  po.tileN = options.tileN;
  ir::buildPipeline(pm, po);
  if (failed(pm.run(*module)))
    throw Error("codegen: the pass pipeline failed:\n" + diags.messages());
  return module;
}

std::vector<int64_t> toVector(ArrayRef<int64_t> a) { return {a.begin(), a.end()}; }

int64_t optionalOr(std::optional<int64_t> v, int64_t fallback) { return v ? *v : fallback; }

MemberPlan readMember(Operation *op) {
  MemberPlan m;
  if (isa<ir::DenseOp>(op)) {
    m.kind = plan::kAll;
  } else if (auto w = dyn_cast<ir::WindowOp>(op)) {
    m.kind = plan::kBand;
    m.left = optionalOr(w.getLeft(), kUnbounded);
    m.right = optionalOr(w.getRight(), kUnbounded);
  } else if (auto g = dyn_cast<ir::GlobalOp>(op)) {
    m.kind = plan::kPrefix;
    m.tokens = g.getTokens();
  } else if (auto d = dyn_cast<ir::DilatedOp>(op)) {
    m.kind = plan::kSegment;
    m.segment = optionalOr(d.getSegment(), kUnbounded);
    m.dilation = d.getDilation();
    m.offsets = toVector(d.getOffsets());
  } else if (auto r = dyn_cast<ir::RandomOp>(op)) {
    m.kind = plan::kHash;
    m.block = r.getBlock();
    m.seed = static_cast<uint64_t>(r.getSeed());
    Pattern p; // one definition of the threshold: Pattern::keepThreshold
    p.kind = PatternKind::Random;
    p.density = r.getDensity().convertToDouble();
    m.keep = p.keepThreshold();
  } else if (auto db = dyn_cast<ir::DilatedBlocksOp>(op)) {
    m.kind = plan::kBlockOffsets;
    m.block = db.getBlock();
    m.rates = toVector(db.getRates());
  } else if (auto h = dyn_cast<ir::HierarchicalOp>(op)) {
    m.kind = plan::kHierarchy;
    m.block = h.getBlock();
    m.levels = static_cast<int>(h.getLevels());
  } else if (auto bm = dyn_cast<ir::BlockMaskOp>(op)) {
    m.kind = plan::kBlockMask;
    m.block = bm.getBlock();
  } else {
    throw Error("codegen: unknown op in a branch: " + op->getName().getStringRef().str());
  }
  return m;
}

BranchPlan readBranch(ir::BranchOp br) {
  BranchPlan p;
  for (int64_t h : br.getHeads())
    p.heads.push_back(static_cast<int>(h));
  DictionaryAttr plan = br.getPlanAttr();
  if (!plan)
    throw Error("codegen: branch has no plan (plan-tiles did not run)");
  p.kind = plan.getAs<StringAttr>("kind").getValue() == "strided" ? BranchKind::Strided
                                                                   : BranchKind::Blocks;
  p.blockM = plan.getAs<IntegerAttr>("block_m").getInt();
  p.blockN = plan.getAs<IntegerAttr>("block_n").getInt();
  if (p.kind == BranchKind::Strided) {
    auto d = cast<ir::DilatedOp>(br.getBody()->front());
    p.segment = optionalOr(d.getSegment(), kUnbounded);
    p.dilation = d.getDilation();
    p.offsets = toVector(d.getOffsets());
    return p;
  }
  for (Operation &op : *br.getBody())
    p.members.push_back(readMember(&op));
  return p;
}

} // namespace

std::string emitIR(const std::vector<AttentionSpec> &specs, IRStage stage,
                   const PlanOptions &options, bool locations) {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> module = lower(ctx, specs, stage, options);
  std::string s;
  llvm::raw_string_ostream os(s);
  OpPrintingFlags flags;
  if (locations)
    flags.enableDebugInfo(/*enable=*/true, /*prettyForm=*/true);
  module->print(os, flags);
  return os.str();
}

AttentionPlan planAttention(const AttentionSpec &spec, const PlanOptions &options) {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> module = lower(ctx, {spec}, IRStage::Planned, options);
  AttentionPlan out;
  out.name = spec.name;
  out.heads = spec.heads;
  out.kvHeads = spec.kvHeads;
  out.headDim = spec.headDim;
  out.dtype = spec.dtype;
  out.precision = spec.precision;
  out.scale = spec.effectiveScale();
  out.causal = spec.causal;
  out.ring = spec.ring;
  module->walk([&](ir::BranchOp br) { out.branches.push_back(readBranch(br)); });
  return out;
}

} // namespace dattn
