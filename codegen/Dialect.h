// codegen: the dattn dialect's C++ classes (generated from DattnDialect.td).
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"

#include "DattnDialect.h.inc"

#define GET_ATTRDEF_CLASSES
#include "DattnAttrs.h.inc"

#define GET_OP_CLASSES
#include "DattnOps.h.inc"
