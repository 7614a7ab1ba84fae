// codegen: read a planned dattn.attention back as an AttentionPlan, the
// host data the kernel families, the emitters and the runtime work from.
#pragma once

#include "Dialect.h"

#include "dattn/plan.h"

namespace dattn::ir {

/// The attributes dattn-select-kernels sets on a dattn.attention: the
/// target and its shared memory per block.
constexpr const char *kTargetAttr = "target";
constexpr const char *kSmemAttr = "smem_bytes";

/// Throws Error if plan-tiles has not run.
AttentionPlan readPlan(AttentionOp attention);
BranchPlan readBranch(BranchOp branch);

} // namespace dattn::ir
