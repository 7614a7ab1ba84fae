#include "TermKeys.h"

#include "llvm/Support/raw_ostream.h"

using namespace mlir;

namespace dattn::ir {

std::string termKey(Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  op->print(os, OpPrintingFlags().useLocalScope());
  return os.str();
}

std::string geometryKey(Operation *op) {
  if (auto d = dyn_cast<DilatedOp>(op)) {
    std::string s = "dattn.dilated";
    if (auto seg = d.getSegment())
      s += " segment " + std::to_string(*seg);
    s += " dilation " + std::to_string(d.getDilation());
    if (d.getExcluded())
      s += " excluded";
    return s;
  }
  return termKey(op);
}

std::string bodyKey(BranchOp branch, bool geometry) {
  std::string s;
  for (Operation &op : *branch.getBody())
    s += (geometry ? geometryKey(&op) : termKey(&op)) + "\n";
  return s;
}

int kindRank(Operation *op) {
  if (isa<DenseOp>(op)) return 0;
  if (isa<WindowOp>(op)) return 1;
  if (isa<GlobalOp>(op)) return 2;
  if (isa<DilatedOp>(op)) return 3;
  if (isa<RandomOp>(op)) return 4;
  if (isa<DilatedBlocksOp>(op)) return 5;
  if (isa<HierarchicalOp>(op)) return 6;
  if (isa<BlockMaskOp>(op)) return 7;
  return 8;
}

} // namespace dattn::ir
