#include "MLIRGen.h"

#include "mlir/IR/Builders.h"

using namespace mlir;

namespace dattn::ir {
namespace {

Location locOf(OpBuilder &b, const SourceLoc &l) {
  if (l.file.empty())
    return b.getUnknownLoc();
  return FileLineColLoc::get(b.getContext(), l.file, l.line, l.col);
}

void buildPattern(OpBuilder &b, const Pattern &p, const Branch &br) {
  Location loc = locOf(b, p.loc);
  auto extent = [](int64_t v) { return v == kUnbounded ? std::optional<int64_t>() : v; };
  switch (p.kind) {
  case PatternKind::Dilated: {
    // The offset table is explicit per branch head from the start, so
    // `offset = head` and constants look the same to every pass.
    SmallVector<int64_t> offsets;
    for (int h : br.heads)
      offsets.push_back(p.offsetFor(h));
    auto op = b.create<DilatedOp>(loc, IntegerAttr(), b.getI64IntegerAttr(p.dilation),
                                  b.getDenseI64ArrayAttr(offsets), UnitAttr());
    if (auto seg = extent(p.segment))
      op.setSegment(*seg);
    return;
  }
  case PatternKind::Window: {
    auto op = b.create<WindowOp>(loc, IntegerAttr(), IntegerAttr());
    if (auto l = extent(p.left))
      op.setLeft(*l);
    if (auto r = extent(p.right))
      op.setRight(*r);
    return;
  }
  case PatternKind::Global:
    b.create<GlobalOp>(loc, b.getI64IntegerAttr(p.tokens));
    return;
  case PatternKind::Dense:
    b.create<DenseOp>(loc);
    return;
  case PatternKind::Random:
    b.create<RandomOp>(loc, b.getI64IntegerAttr(p.block), b.getF64FloatAttr(p.density),
                       b.getI64IntegerAttr(static_cast<int64_t>(p.seed)));
    return;
  case PatternKind::DilatedBlocks:
    b.create<DilatedBlocksOp>(loc, b.getI64IntegerAttr(p.block),
                              b.getDenseI64ArrayAttr(p.rates));
    return;
  case PatternKind::Hierarchical:
    b.create<HierarchicalOp>(loc, b.getI64IntegerAttr(p.block), b.getI64IntegerAttr(p.levels));
    return;
  case PatternKind::BlockMask:
    b.create<BlockMaskOp>(loc, b.getI64IntegerAttr(p.block));
    return;
  }
}

} // namespace

OwningOpRef<ModuleOp> buildModule(MLIRContext &ctx, const std::vector<AttentionSpec> &specs) {
  ctx.getOrLoadDialect<DattnDialect>();
  OpBuilder b(&ctx);
  Location fileLoc = specs.empty() ? b.getUnknownLoc() : locOf(b, {specs[0].loc.file, 1, 1});
  OwningOpRef<ModuleOp> module = ModuleOp::create(fileLoc);
  b.setInsertionPointToEnd(module->getBody());
  for (const AttentionSpec &s : specs) {
    auto att = b.create<AttentionOp>(
        locOf(b, s.loc), b.getStringAttr(s.name), b.getI64IntegerAttr(s.heads),
        b.getI64IntegerAttr(s.kvHeads), b.getI64IntegerAttr(s.headDim),
        b.getStringAttr(toString(s.dtype)), b.getStringAttr(toString(s.precision)),
        s.scale ? b.getF64FloatAttr(*s.scale) : FloatAttr(),
        s.causal ? b.getUnitAttr() : UnitAttr(), b.getI64IntegerAttr(s.ring),
        s.ringLayout == RingLayout::Zigzag ? b.getStringAttr("zigzag") : StringAttr());
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToEnd(&att.getBranches().emplaceBlock());
    for (const Branch &br : s.branches) {
      SmallVector<int64_t> heads(br.heads.begin(), br.heads.end());
      auto bop = b.create<BranchOp>(locOf(b, br.loc), b.getDenseI64ArrayAttr(heads),
                                    TilesAttr(), ArrayAttr(), RingAttr());
      OpBuilder::InsertionGuard inner(b);
      b.setInsertionPointToEnd(&bop.getTerms().emplaceBlock());
      for (const Pattern &p : br.terms)
        buildPattern(b, p, br);
    }
  }
  return module;
}

} // namespace dattn::ir
