// dattn-split-unions: a union's dilated member becomes its own strided
// branch, excluded from the union it came from (steps in Passes.td).
#include "Passes.h"

#include "mlir/IR/Builders.h"

#include <vector>

namespace dattn::ir {
#define GEN_PASS_DEF_SPLITUNIONS
#include "Passes.h.inc"
} // namespace dattn::ir

using namespace mlir;

namespace dattn::ir {
namespace {

void splitBranch(BranchOp br) {
  Block &body = *br.getBody();
  if (body.getOperations().size() < 2)
    return;
  DilatedOp dilated;
  for (Operation &op : body)
    if (auto d = dyn_cast<DilatedOp>(op)) {
      if (dilated)
        return; // several dilated members: left as they are
      dilated = d;
    }
  if (!dilated || dilated.getExcluded())
    return;
  // Step 1: the member alone in a new branch of the same heads, after this one.
  OpBuilder b(br->getContext());
  b.setInsertionPointAfter(br);
  auto strided = cast<BranchOp>(b.clone(*br.getOperation()));
  for (Operation &op : llvm::make_early_inc_range(*strided.getBody()))
    if (!isa<DilatedOp>(op))
      op.erase();
  // Step 2: out of the union it came from.
  dilated.setExcluded(true);
}

struct SplitUnionsPass : impl::SplitUnionsBase<SplitUnionsPass> {
  void runOnOperation() override {
    std::vector<BranchOp> branches;
    getOperation().walk([&](BranchOp br) { branches.push_back(br); });
    for (BranchOp br : branches)
      splitBranch(br);
  }
};

} // namespace
} // namespace dattn::ir
