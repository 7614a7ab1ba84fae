// codegen: textual keys of pattern ops, for canonical ordering, duplicate
// detection and geometry matching across branches.
#pragma once

#include "Dialect.h"

#include <string>

namespace dattn::ir {

/// The op as printed (name and attributes, no location): equal keys mean
/// equal sets for the same head list.
std::string termKey(mlir::Operation *op);

/// termKey with dilated offsets left out: equal keys mean "same geometry".
std::string geometryKey(mlir::Operation *op);

/// All term keys of a branch in order, joined; `geometry` picks geometryKey.
std::string bodyKey(BranchOp branch, bool geometry);

/// Position of an op kind in the canonical order of union members.
int kindRank(mlir::Operation *op);

} // namespace dattn::ir
