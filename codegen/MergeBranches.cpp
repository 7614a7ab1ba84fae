// dattn-merge-branches: branches with the same geometry on disjoint heads
// become one branch with a per-head offset table (steps in Passes.td).
#include "Passes.h"
#include "TermKeys.h"

#include "mlir/IR/Builders.h"

#include <algorithm>
#include <map>
#include <vector>

namespace dattn::ir {
#define GEN_PASS_DEF_MERGEBRANCHES
#include "Passes.h.inc"
} // namespace dattn::ir

using namespace mlir;

namespace dattn::ir {
namespace {

bool disjoint(ArrayRef<int64_t> a, ArrayRef<int64_t> b) {
  for (int64_t h : a)
    if (std::binary_search(b.begin(), b.end(), h))
      return false;
  return true;
}

/// Folds `from` into `into` (same geometry, disjoint heads) and erases it.
void mergeInto(BranchOp into, BranchOp from) {
  std::vector<int64_t> heads(into.getHeads().begin(), into.getHeads().end());
  heads.insert(heads.end(), from.getHeads().begin(), from.getHeads().end());
  std::sort(heads.begin(), heads.end());
  // Offset tables follow the merged head order: look each head up in the
  // branch it came from.
  auto a = into.getBody()->begin();
  auto b = from.getBody()->begin();
  for (; a != into.getBody()->end(); ++a, ++b) {
    auto da = dyn_cast<DilatedOp>(*a);
    if (!da)
      continue;
    auto db = cast<DilatedOp>(*b);
    std::vector<int64_t> offsets;
    for (int64_t h : heads) {
      auto it = std::find(into.getHeads().begin(), into.getHeads().end(), h);
      if (it != into.getHeads().end()) {
        offsets.push_back(da.getOffsets()[it - into.getHeads().begin()]);
      } else {
        auto jt = std::find(from.getHeads().begin(), from.getHeads().end(), h);
        offsets.push_back(db.getOffsets()[jt - from.getHeads().begin()]);
      }
    }
    da.setOffsets(offsets);
  }
  into.setHeads(heads);
  from.erase();
}

void mergeAttention(AttentionOp att) {
  bool changed = true;
  while (changed) {
    changed = false;
    std::vector<BranchOp> branches;
    for (Operation &op : *att.getBody())
      branches.push_back(cast<BranchOp>(op));
    for (size_t i = 0; i < branches.size() && !changed; ++i)
      for (size_t j = i + 1; j < branches.size() && !changed; ++j) {
        BranchOp a = branches[i], b = branches[j];
        if (!disjoint(a.getHeads(), b.getHeads()))
          continue;
        if (a.getBody()->getOperations().size() != b.getBody()->getOperations().size())
          continue;
        if (bodyKey(a, true) != bodyKey(b, true))
          continue;
        mergeInto(a, b);
        changed = true;
      }
  }
}

struct MergeBranchesPass : impl::MergeBranchesBase<MergeBranchesPass> {
  void runOnOperation() override {
    getOperation().walk([](AttentionOp att) { mergeAttention(att); });
  }
};

} // namespace
} // namespace dattn::ir
