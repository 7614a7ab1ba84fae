// dattn-plan-tiles: attach the iteration structure kernels need to every
// branch (steps in Passes.td). Only N-independent facts are recorded; the
// per-tile arithmetic is templates/dattn/tile_plan.cuh.
#include "Passes.h"

#include "dattn/tile_plan.cuh"

#include "mlir/IR/Builders.h"

#include <algorithm>

namespace dattn::ir {
#define GEN_PASS_DEF_PLANTILES
#include "Passes.h.inc"
} // namespace dattn::ir

using namespace mlir;

namespace dattn::ir {
namespace {

bool validTile(int64_t t) { return t >= 16 && t <= 256 && (t & (t - 1)) == 0; }

struct PlanTilesPass : impl::PlanTilesBase<PlanTilesPass> {
  using PlanTilesBase::PlanTilesBase;

  void runOnOperation() override {
    if ((tileM != 0 && !validTile(tileM)) || (tileN != 0 && !validTile(tileN))) {
      getOperation().emitError("dattn-plan-tiles: tile-m and tile-n must be 0 or a power of "
                               "two in [16, 256], got ")
          << static_cast<int64_t>(tileM) << " and " << static_cast<int64_t>(tileN);
      return signalPassFailure();
    }
    getOperation().walk([&](AttentionOp att) {
      for (Operation &op : *att.getBody())
        planBranch(att, cast<BranchOp>(op));
    });
  }

  void planBranch(AttentionOp att, BranchOp br) {
    // Step 2 defaults: 128 query rows keep the tensor cores busy up to
    // head_dim 128; larger heads halve it to fit registers and shared memory.
    int64_t blockM = att.getHeadDim() <= 128 ? 128 : 64;
    int64_t blockN = 64;
    Block &body = *br.getBody();
    auto dilated = body.getOperations().size() == 1 ? dyn_cast<DilatedOp>(body.front())
                                                    : DilatedOp();
    if (dilated && dilated.getExcluded())
      dilated = DilatedOp(); // (never alone: dattn-split-unions keeps the rest with it)
    // A lone dense member is one unbounded segment of dilation 1: the
    // strided kernels run it with no member list to evaluate per tile.
    const bool loneDense = body.getOperations().size() == 1 && isa<DenseOp>(body.front());
    if (dilated) {
      // Step 1: strided. A short segment has few compact rows: shrink tiles
      // to them rather than compute padding.
      if (auto seg = dilated.getSegment()) {
        int64_t compact = (*seg + dilated.getDilation() - 1) / dilated.getDilation();
        int64_t fit = std::max<int64_t>(16, dattn::plan::nextPowerOfTwo(compact));
        blockM = std::min(blockM, fit);
        blockN = std::min(blockN, fit);
      }
    } else {
      // Step 1: blocks. Key tiles no larger than the smallest block keep
      // each key tile inside one key block.
      int64_t minBlock = 0;
      body.walk([&](Operation *op) {
        int64_t blk = 0;
        if (auto r = dyn_cast<RandomOp>(op)) blk = r.getBlock();
        if (auto d = dyn_cast<DilatedBlocksOp>(op)) blk = d.getBlock();
        if (auto h = dyn_cast<HierarchicalOp>(op)) blk = h.getBlock();
        if (auto m = dyn_cast<BlockMaskOp>(op)) blk = m.getBlock();
        if (blk && (!minBlock || blk < minBlock)) minBlock = blk;
      });
      // Query tiles no larger than the smallest block too: a tile then lies
      // in one query block, so a kept block pair is a full tile (no
      // per-element mask) and a dropped one is skipped.
      if (minBlock) {
        blockN = std::min(blockN, minBlock);
        blockM = std::min(blockM, std::max<int64_t>(minBlock, 16));
      }
    }
    if (tileM) blockM = tileM;
    if (tileN) blockN = tileN;
    // Step 3: the members' iterators are the pattern ops themselves (read by
    // codegen into plan::Member); nothing else needs recording.
    br.setPlanAttr(TilesAttr::get(br.getContext(), dilated || loneDense ? "strided" : "blocks",
                                   blockM, blockN));
  }
};

} // namespace
} // namespace dattn::ir
