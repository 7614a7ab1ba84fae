// dsl: recursive-descent parser from tokens to the syntax tree.
//
//   file      := attention*
//   attention := 'attention' NAME '{' item* '}'
//   item      := setting | branch
//   setting   := KEY '=' value [';']
//   branch    := 'branch' ['heads' heads] '{' pattern ('|' pattern)* '}'
//   heads     := INT ['..' INT] (',' INT ['..' INT])*
//   pattern   := NAME ['(' [arg (',' arg)*] ')']
//   arg       := NAME '=' value
//   value     := INT | NUMBER | NAME | '[' [value (',' value)*] ']'
//
// Errors are reported and the parser resynchronizes at the next item (a
// new line starting with a name, a ';', or the closing brace), so one run
// reports every error in a file.
#pragma once

#include "AST.h"
#include "Diagnostics.h"

#include <string>

namespace dattn::dsl {

FileNode parseFile(const std::string &text, DiagnosticEngine &diags);

} // namespace dattn::dsl
