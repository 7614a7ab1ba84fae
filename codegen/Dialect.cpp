// codegen: dialect registration and op verifiers. The verifiers restate the
// language's rules (docs/spec-language.md) so that IR written by hand or
// produced by a pass is held to the same contract as parsed specs.
#include "Dialect.h"

#include "dattn/kernels.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

#include "DattnDialect.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "DattnAttrs.cpp.inc"

#define GET_OP_CLASSES
#include "DattnOps.cpp.inc"

using namespace mlir;

namespace dattn::ir {

void DattnDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "DattnOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "DattnAttrs.cpp.inc"
      >();
}

namespace {

bool isPowerOfTwo(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

LogicalResult verifyBlock(Operation *op, int64_t block) {
  if (block < 16 || block > 4096 || !isPowerOfTwo(block))
    return op->emitOpError("block must be a power of two in [16, 4096], got ") << block;
  return success();
}

} // namespace

LogicalResult AttentionOp::verify() {
  if (getHeads() < 1 || getHeads() > 1024)
    return emitOpError("heads must be in [1, 1024], got ") << getHeads();
  if (getKvHeads() < 1 || getHeads() % getKvHeads() != 0)
    return emitOpError("kv_heads (") << getKvHeads() << ") must divide heads (" << getHeads()
                                     << ")";
  if (getHeadDim() < 32 || getHeadDim() > 256 || getHeadDim() % 8 != 0)
    return emitOpError("head_dim must be a multiple of 8 in [32, 256], got ") << getHeadDim();
  StringRef dt = getDtype(), pr = getPrecision();
  if (dt != "fp16" && dt != "bf16" && dt != "fp32")
    return emitOpError("dtype must be fp16, bf16 or fp32, got '") << dt << "'";
  if (pr != "ieee" && pr != "tf32")
    return emitOpError("precision must be ieee or tf32, got '") << pr << "'";
  if (pr == "tf32" && dt != "fp32")
    return emitOpError("precision tf32 applies to dtype fp32 only");
  if (auto s = getScale(); s && !(s->convertToDouble() > 0))
    return emitOpError("scale must be positive");
  if (getRing() < 1)
    return emitOpError("ring must be >= 1, got ") << getRing();
  if (auto l = getRingLayout(); l && *l != "contiguous" && *l != "zigzag")
    return emitOpError("ring_layout must be \"contiguous\" or \"zigzag\", got \"") << *l << "\"";
  int blockMasks = 0;
  for (Operation &op : *getBody()) {
    if (!isa<BranchOp>(op))
      return op.emitOpError("only dattn.branch ops may appear in a dattn.attention");
    op.walk([&](BlockMaskOp) { ++blockMasks; });
  }
  if (blockMasks > 1)
    return emitOpError("has ") << blockMasks << " block_mask patterns; at most one is allowed";
  return success();
}

LogicalResult BranchOp::verify() {
  ArrayRef<int64_t> heads = getHeads();
  if (heads.empty())
    return emitOpError("needs at least one head");
  int64_t numHeads = cast<AttentionOp>((*this)->getParentOp()).getHeads();
  for (size_t k = 0; k < heads.size(); ++k) {
    if (heads[k] < 0 || heads[k] >= numHeads)
      return emitOpError("head ") << heads[k] << " is outside [0, " << numHeads << ")";
    if (k > 0 && heads[k - 1] >= heads[k])
      return emitOpError("heads must be sorted and unique");
  }
  if (getBody()->empty())
    return emitOpError("needs at least one pattern");
  if (auto plan = getPlanAttr()) {
    if (plan.getKind() != "strided" && plan.getKind() != "blocks")
      return emitOpError("plan needs kind = \"strided\" or \"blocks\", got \"")
             << plan.getKind() << "\"";
    for (auto [key, v] : {std::pair<const char *, int64_t>{"block_m", plan.getBlockM()},
                          {"block_n", plan.getBlockN()}})
      if (v < 16 || v > 256 || !isPowerOfTwo(v))
        return emitOpError("plan needs ") << key << " = a power of two in [16, 256], got " << v;
  }
  if (auto kernels = getKernelsAttr()) {
    for (Attribute a : kernels) {
      auto k = cast<KernelAttr>(a);
      if (k.getStage() != "forward" && k.getStage() != "backward" &&
          k.getStage() != "backward_deterministic")
        return emitOpError("kernel stage must be forward, backward or backward_deterministic, "
                           "got \"") << k.getStage() << "\"";
      bool known = false;
      for (const KernelFamily *f : kernelFamilies())
        known |= k.getFamily() == f->name();
      if (!known)
        return emitOpError("no kernel family is named \"") << k.getFamily() << "\"";
    }
  }
  return success();
}

LogicalResult DilatedOp::verify() {
  if (getDilation() < 1)
    return emitOpError("dilation must be >= 1, got ") << getDilation();
  if (auto seg = getSegment(); seg && *seg < 1)
    return emitOpError("segment must be >= 1, got ") << *seg;
  auto branch = cast<BranchOp>((*this)->getParentOp());
  if (getOffsets().size() != branch.getHeads().size())
    return emitOpError("needs one offset per branch head (")
           << branch.getHeads().size() << "), got " << getOffsets().size();
  for (int64_t o : getOffsets())
    if (o < 0 || o >= getDilation())
      return emitOpError("offset ") << o << " is outside [0, dilation = " << getDilation()
                                    << ")";
  return success();
}

LogicalResult WindowOp::verify() {
  if ((getLeft() && *getLeft() < 0) || (getRight() && *getRight() < 0))
    return emitOpError("window extents must be >= 0");
  return success();
}

LogicalResult GlobalOp::verify() {
  if (getTokens() < 0)
    return emitOpError("tokens must be >= 0, got ") << getTokens();
  return success();
}

LogicalResult RandomOp::verify() {
  double d = getDensity().convertToDouble();
  if (!(d > 0 && d <= 1))
    return emitOpError("density must be in (0, 1], got ") << d;
  if (getSeed() < 0)
    return emitOpError("seed must be >= 0");
  return verifyBlock(*this, getBlock());
}

LogicalResult DilatedBlocksOp::verify() {
  if (getRates().empty() || getRates().size() > 16)
    return emitOpError("needs 1 to 16 rates, got ") << getRates().size();
  for (int64_t r : getRates())
    if (r < 1)
      return emitOpError("rates must be >= 1, got ") << r;
  return verifyBlock(*this, getBlock());
}

LogicalResult HierarchicalOp::verify() {
  if (getLevels() < 1 || getLevels() > 20)
    return emitOpError("levels must be in [1, 20], got ") << getLevels();
  return verifyBlock(*this, getBlock());
}

LogicalResult BlockMaskOp::verify() { return verifyBlock(*this, getBlock()); }

} // namespace dattn::ir
