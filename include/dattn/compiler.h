// dattn: the compiler middle end (MLIR) behind a plain C++ interface.
#pragma once

#include "dattn/plan.h"
#include "dattn/spec.h"

#include <string>
#include <vector>

namespace dattn {

struct PlanOptions {
  int64_t tileM = 0; ///< query tile rows; 0 lets plan-tiles choose
  int64_t tileN = 0; ///< key tile rows; 0 lets plan-tiles choose
  /// The target whose kernels dattn-select-kernels chooses ("sm_90a"); ""
  /// plans tiles only (nothing can be emitted from such a plan).
  std::string arch;
  int smemBytes = 0; ///< the target's shared memory per block; 0: the arch's usual
  /// Measured configurations (tuning databases) preferred over the
  /// heuristic, with an arch only.
  std::vector<TunedKernel> tuned;
  /// Kernel families tried first, where they support a branch (DATTN_FAMILIES).
  std::vector<std::string> families;
  /// A union's dilated member as its own strided branch (dattn-split-unions;
  /// DATTN_SPLIT_UNIONS=0 at run time turns it off).
  bool splitUnions = true;
};

enum class IRStage {
  Generated, ///< straight from the spec (MLIRGen), verified
  Planned,   ///< after normalize, merge-branches, plan-tiles (and select-kernels with an arch)
};

/// The dattn dialect module for `specs` at `stage`, as text. Throws Error
/// with MLIR's diagnostics (pointing into the spec file) on failure.
/// With `locations`, every op prints its spec file:line:col.
std::string emitIR(const std::vector<AttentionSpec> &specs, IRStage stage,
                   const PlanOptions &options = {}, bool locations = false);

/// Runs the pipeline on one spec and reads the plan back as host data.
AttentionPlan planAttention(const AttentionSpec &spec, const PlanOptions &options = {});

} // namespace dattn

namespace dattn {

struct BlockMask;

/// Attended (query, key) pairs of a plan at sequence length N, summed over
/// heads, branches (multiset) and batch: closed form for strided branches,
/// enumeration of each row's reachable keys for block branches. When that
/// enumeration would exceed `budget` predicate evaluations, rows are sampled
/// evenly and the count is scaled (exact = false).
struct PairCount {
  int64_t pairs = 0;
  bool exact = true;
};
PairCount countPairs(const AttentionPlan &plan, int64_t seqLen, int64_t batch,
                     const BlockMask *mask, int64_t budget = int64_t(1) << 31);

} // namespace dattn
