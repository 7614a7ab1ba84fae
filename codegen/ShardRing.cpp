// dattn-shard-ring: the ring plan for one sequence length, summarized in
// the IR (steps in Passes.td). The plan itself is include/dattn/ring.h.
#include "Passes.h"
#include "ReadPlan.h"

#include "dattn/error.h"
#include "dattn/ring.h"

#include "mlir/IR/Builders.h"

namespace dattn::ir {
#define GEN_PASS_DEF_SHARDRING
#include "Passes.h.inc"
} // namespace dattn::ir

using namespace mlir;

namespace dattn::ir {
namespace {

struct ShardRingPass : impl::ShardRingBase<ShardRingPass> {
  using ShardRingBase::ShardRingBase;

  void runOnOperation() override {
    if (seq < 1) {
      getOperation().emitError("dattn-shard-ring: the option seq (N >= 1) is required");
      return signalPassFailure();
    }
    getOperation().walk([&](AttentionOp att) {
      if (failed(shard(att)))
        signalPassFailure();
    });
  }

  LogicalResult shard(AttentionOp att) {
    Builder b(att.getContext());
    RingPlan plan;
    try {
      const AttentionPlan p = readPlan(att); // step 1
      const int64_t ringSize = ranks > 0 ? static_cast<int64_t>(ranks) : att.getRing();
      plan = planRing(p, seq, static_cast<int>(ringSize)); // step 2
    } catch (const Error &e) {
      return att.emitError("dattn-shard-ring: ") << e.what();
    }
    size_t index = 0; // step 3
    for (Operation &op : *att.getBody()) {
      const BranchRingPlan &br = plan.branches[index++];
      cast<BranchOp>(op).setRingAttr(
          RingAttr::get(att.getContext(), toString(br.primitive), br.rowsReceived));
    }
    att->setAttr("ring_ranks", b.getI64IntegerAttr(plan.ranks));
    att->setAttr("ring_bytes_forward", b.getI64IntegerAttr(plan.totalBytesForward));
    att->setAttr("ring_bytes_backward", b.getI64IntegerAttr(plan.totalBytesBackward));
    return success();
  }
};

} // namespace
} // namespace dattn::ir
