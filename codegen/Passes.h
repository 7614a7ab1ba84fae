// codegen: pass declarations (generated from Passes.td) and the pipeline.
#pragma once

#include "Dialect.h"

#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

namespace dattn::ir {

#define GEN_PASS_DECL
#include "Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "Passes.h.inc"

/// Options of the whole pipeline (forwarded to the passes that take them).
struct PipelineOptions {
  int64_t tileM = 0; ///< 0: plan-tiles chooses
  int64_t tileN = 0;
  std::string arch;  ///< "": no select-kernels
  int64_t smemBytes = 0;
  std::vector<std::string> tuned; ///< TunedKernel::str() of each measured configuration
  std::vector<std::string> families; ///< families tried first (PlanOptions::families)
  bool splitUnions = true;           ///< run dattn-split-unions (PlanOptions::splitUnions)
};

/// The middle end, in order: verify (implicit), normalize, (split unions,)
/// merge branches, plan tiles, and, given a target, select kernels. This one function is the
/// whole pipeline.
void buildPipeline(mlir::OpPassManager &pm, const PipelineOptions &options = {});

} // namespace dattn::ir
