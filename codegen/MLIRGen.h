// codegen: builds the dattn dialect from checked specs. Every op carries the
// spec file's line and column, so a verifier error points into the spec.
#pragma once

#include "Dialect.h"

#include "dattn/spec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace dattn::ir {

mlir::OwningOpRef<mlir::ModuleOp> buildModule(mlir::MLIRContext &ctx,
                                              const std::vector<AttentionSpec> &specs);

} // namespace dattn::ir
