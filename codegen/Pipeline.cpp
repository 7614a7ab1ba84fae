#include "Passes.h"

namespace dattn::ir {

void buildPipeline(mlir::OpPassManager &pm, const PipelineOptions &options) {
  pm.addPass(createNormalize());
  if (options.splitUnions)
    pm.addPass(createSplitUnions());
  pm.addPass(createMergeBranches());
  PlanTilesOptions plan;
  plan.tileM = options.tileM;
  plan.tileN = options.tileN;
  pm.addPass(createPlanTiles(plan));
  if (!options.arch.empty()) {
    SelectKernelsOptions select;
    select.arch = options.arch;
    select.smemBytes = options.smemBytes;
    select.tuned = options.tuned;
    select.families = options.families;
    pm.addPass(createSelectKernels(select));
  }
}

} // namespace dattn::ir
