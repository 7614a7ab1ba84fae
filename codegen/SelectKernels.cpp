// dattn-select-kernels: the kernel families' choices for one target,
// recorded in the plan (steps in Passes.td).
#include "Passes.h"
#include "ReadPlan.h"

#include "dattn/error.h"
#include "dattn/kernels.h"

#include "mlir/IR/Builders.h"

#include <algorithm>

namespace dattn::ir {
#define GEN_PASS_DEF_SELECTKERNELS
#include "Passes.h.inc"
} // namespace dattn::ir

using namespace mlir;

namespace dattn::ir {
namespace {

struct SelectKernelsPass : impl::SelectKernelsBase<SelectKernelsPass> {
  using SelectKernelsBase::SelectKernelsBase;

  void runOnOperation() override {
    Target target;
    try {
      target = Target::parse(arch, static_cast<int>(smemBytes));
    } catch (const Error &e) {
      getOperation().emitError("dattn-select-kernels: ") << e.what();
      return signalPassFailure();
    }
    getOperation().walk([&](AttentionOp att) {
      if (failed(select(att, target)))
        signalPassFailure();
    });
  }

  LogicalResult select(AttentionOp att, const Target &target) {
    Builder b(att.getContext());
    AttentionPlan plan;
    try {
      plan = readPlan(att); // step 1
    } catch (const Error &e) {
      return att.emitError("dattn-select-kernels: ") << e.what();
    }
    std::vector<TunedKernel> measured;
    try {
      for (const std::string &t : tuned)
        measured.push_back(TunedKernel::parse(t));
    } catch (const Error &e) {
      return att.emitError("dattn-select-kernels: ") << e.what();
    }
    int branchIndex = 0;
    // The measured configuration of (this branch, stage, family) if the
    // family still offers it, else the heuristic's choice as it is.
    auto record = [&](SmallVector<Attribute> &out, const char *stage, KernelChoice c,
                      const BranchPlan &bp, bool deterministic) {
      std::string origin = "heuristic";
      for (const TunedKernel &t : measured) {
        if (t.branch != branchIndex || t.stage != stage || t.family != c.family->name())
          continue;
        const std::vector<KernelConfig> all = c.family->candidates(plan, bp, target, deterministic);
        if (std::find(all.begin(), all.end(), t.config) != all.end()) {
          c.config = t.config;
          origin = t.origin;
        }
      }
      out.push_back(KernelAttr::get(att.getContext(), stage, c.family->name(), c.config.blockM,
                                    c.config.blockN, c.config.rowTilesPerWarp, c.config.atomicDq,
                                    c.candidates, origin));
    };
    size_t index = 0;
    for (Operation &op : *att.getBody()) {
      auto br = cast<BranchOp>(op);
      branchIndex = static_cast<int>(index);
      const BranchPlan &bp = plan.branches[index++];
      SmallVector<Attribute> kernels;
      // A kernel of `stage` measured fastest with another family that may
      // replace the chosen one (tunableFamilies): that family's name, to be
      // chosen as if named first (its configuration in record()); else "".
      auto measuredFamily = [&](const char *stage, const KernelFamily &chosen) {
        const std::vector<const KernelFamily *> tunable =
            tunableFamilies(plan, bp, target, chosen, stage);
        for (const TunedKernel &t : measured)
          for (const KernelFamily *f : tunable)
            if (t.branch == branchIndex && t.stage == stage && f != &chosen &&
                t.family == f->name())
              return t.family;
        return std::string();
      };
      try { // step 2
        const std::vector<std::string> first(families.begin(), families.end());
        KernelChoice forward = chooseForward(plan, bp, target, first);
        if (const std::string f = measuredFamily("forward", *forward.family); !f.empty())
          forward = chooseForward(plan, bp, target, {f});
        record(kernels, "forward", forward, bp, false);
        // The dK/dV kernel that adds dQ itself (the deterministic stage's
        // dK/dV and dQ kernels come in pairs and keep their families).
        std::vector<KernelChoice> backward = chooseBackward(plan, bp, target, false, first);
        if (const std::string f = measuredFamily("backward", *backward.at(0).family); !f.empty())
          backward = chooseBackward(plan, bp, target, false, {f});
        for (const KernelChoice &c : backward)
          record(kernels, "backward", c, bp, false);
        for (const KernelChoice &c : chooseBackward(plan, bp, target, true, first))
          record(kernels, "backward_deterministic", c, bp, true);
      } catch (const Error &e) {
        return br.emitError("dattn-select-kernels: ") << e.what();
      }
      br.setKernelsAttr(b.getArrayAttr(kernels)); // step 3
    }
    att->setAttr(kTargetAttr, b.getStringAttr(target.arch()));
    att->setAttr(kSmemAttr, b.getI64IntegerAttr(target.smemBytes));
    return success();
  }
};

} // namespace
} // namespace dattn::ir
