// dsl: semantic checks, from the syntax tree to AttentionSpec values.
//
// Every rule of docs/spec-language.md that is not grammar lives here: value
// kinds and ranges, required and duplicate settings, head ranges inside
// [0, heads), kv_heads dividing heads, one block_mask per attention, unique
// attention names. Defaults are filled in, so the result is complete.
#pragma once

#include "AST.h"
#include "Diagnostics.h"

namespace dattn::dsl {

SpecFile checkFile(const FileNode &file, DiagnosticEngine &diags);

} // namespace dattn::dsl
