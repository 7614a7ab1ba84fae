// dattn-normalize: fold trivial patterns, simplify unions, canonical order.
// The steps are listed in Passes.td; each helper below is one step.
#include "Passes.h"
#include "TermKeys.h"

#include "mlir/IR/Builders.h"

#include <algorithm>
#include <limits>
#include <map>
#include <vector>

namespace dattn::ir {
#define GEN_PASS_DEF_NORMALIZE
#include "Passes.h.inc"
} // namespace dattn::ir

using namespace mlir;

namespace dattn::ir {
namespace {

constexpr int64_t kInf = std::numeric_limits<int64_t>::max();

int64_t extentOrInf(std::optional<int64_t> v) { return v ? static_cast<int64_t>(*v) : kInf; }

void replaceWithDense(Operation *op) {
  OpBuilder b(op);
  b.create<DenseOp>(op->getLoc());
  op->erase();
}

/// Step 1: the simplest equal form of one pattern.
void foldTerm(Operation *op, bool causal) {
  if (auto w = dyn_cast<WindowOp>(op)) {
    if (causal && (!w.getRight() || *w.getRight() != 0))
      w.setRight(int64_t(0)); // keys right of i are masked anyway
    bool leftInf = !w.getLeft(), rightInf = !w.getRight();
    if (leftInf && (rightInf || causal))
      replaceWithDense(op);
    return;
  }
  if (auto d = dyn_cast<DilatedOp>(op)) {
    if (!d.getSegment() && d.getDilation() == 1 && !d.getExcluded())
      replaceWithDense(op);
    return;
  }
  if (auto r = dyn_cast<RandomOp>(op)) {
    if (r.getDensity().convertToDouble() >= 1.0)
      replaceWithDense(op);
    return;
  }
  if (auto g = dyn_cast<GlobalOp>(op)) {
    if (g.getTokens() == 0)
      op->erase(); // the empty set adds nothing to a union
    return;
  }
  if (auto db = dyn_cast<DilatedBlocksOp>(op)) {
    std::vector<int64_t> rates(db.getRates().begin(), db.getRates().end());
    std::sort(rates.begin(), rates.end());
    rates.erase(std::unique(rates.begin(), rates.end()), rates.end());
    db.setRates(rates);
  }
}

/// Step 2: simplify the union of one branch.
void simplifyUnion(BranchOp br) {
  Block &body = *br.getBody();
  // Dense absorbs every other member (not an excluded one, which takes
  // pairs out: dattn-split-unions, should this pass run after it).
  auto excluded = [](Operation &op) {
    auto d = dyn_cast<DilatedOp>(op);
    return d && d.getExcluded();
  };
  Operation *dense = nullptr;
  for (Operation &op : body)
    if (isa<DenseOp>(op))
      dense = &op;
  if (dense) {
    for (Operation &op : llvm::make_early_inc_range(body))
      if (&op != dense && !excluded(op))
        op.erase();
    return;
  }
  // Exact duplicates.
  std::map<std::string, Operation *> seen;
  for (Operation &op : llvm::make_early_inc_range(body)) {
    std::string key = termKey(&op);
    if (seen.count(key))
      op.erase();
    else
      seen[key] = &op;
  }
  // Windows inside wider windows; globals inside larger globals.
  std::vector<WindowOp> windows;
  std::vector<GlobalOp> globals;
  for (Operation &op : body) {
    if (auto w = dyn_cast<WindowOp>(op))
      windows.push_back(w);
    if (auto g = dyn_cast<GlobalOp>(op))
      globals.push_back(g);
  }
  std::vector<Operation *> dead;
  for (WindowOp a : windows)
    for (WindowOp b : windows)
      if (a != b && extentOrInf(a.getLeft()) <= extentOrInf(b.getLeft()) &&
          extentOrInf(a.getRight()) <= extentOrInf(b.getRight())) {
        dead.push_back(a);
        break;
      }
  for (GlobalOp a : globals)
    for (GlobalOp b : globals)
      if (a != b && a.getTokens() <= b.getTokens()) {
        dead.push_back(a);
        break;
      }
  for (Operation *op : dead)
    op->erase();
}

/// Step 4a: members in canonical order (kind rank, then printed form).
void sortUnion(BranchOp br) {
  Block &body = *br.getBody();
  std::vector<Operation *> ops;
  for (Operation &op : body)
    ops.push_back(&op);
  std::stable_sort(ops.begin(), ops.end(), [](Operation *a, Operation *b) {
    int ra = kindRank(a), rb = kindRank(b);
    return ra != rb ? ra < rb : termKey(a) < termKey(b);
  });
  for (Operation *op : ops)
    op->moveBefore(&body, body.end());
}

void normalizeAttention(AttentionOp att) {
  bool causal = att.getCausal();
  std::vector<BranchOp> branches;
  for (Operation &op : *att.getBody())
    if (auto br = dyn_cast<BranchOp>(op))
      branches.push_back(br);
  for (BranchOp br : branches) {
    for (Operation &op : llvm::make_early_inc_range(*br.getBody()))
      foldTerm(&op, causal);
    simplifyUnion(br);
    sortUnion(br);
    if (br.getBody()->empty()) // Step 3: an empty union adds nothing
      br.erase();
  }
  // Step 4b: branches in canonical order (heads, then members).
  Block &body = *att.getBody();
  std::vector<BranchOp> kept;
  for (Operation &op : body)
    kept.push_back(cast<BranchOp>(op));
  std::stable_sort(kept.begin(), kept.end(), [](BranchOp a, BranchOp b) {
    if (a.getHeads() != b.getHeads())
      return std::lexicographical_compare(a.getHeads().begin(), a.getHeads().end(),
                                          b.getHeads().begin(), b.getHeads().end());
    return bodyKey(a, false) < bodyKey(b, false);
  });
  for (BranchOp br : kept)
    br->moveBefore(&body, body.end());
}

struct NormalizePass : impl::NormalizeBase<NormalizePass> {
  void runOnOperation() override {
    getOperation().walk([](AttentionOp att) { normalizeAttention(att); });
  }
};

} // namespace
} // namespace dattn::ir
