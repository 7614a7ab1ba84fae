// dattn: the spec language front end (lexer, parser, semantic checks).
//
// Bad input never crashes or aborts: it yields diagnostics with file:line:col,
// the source line and a caret, all errors of a file at once.
#pragma once

#include "dattn/spec.h"

#include <string>
#include <vector>

namespace dattn {

struct Diagnostic {
  SourceLoc loc;
  std::string message;
  std::string sourceLine; ///< the line `loc` points into, for the caret

  /// `file:line:col: error: message`, the line, and a caret under col.
  std::string format() const;
};

struct ParseResult {
  SpecFile file;                        ///< valid only when ok()
  std::vector<Diagnostic> diagnostics;  ///< empty when ok()
  bool ok() const { return diagnostics.empty(); }
  /// All diagnostics, formatted, one after another.
  std::string formatDiagnostics() const;
};

/// Parses and checks spec text. `filename` is used in diagnostics only.
ParseResult parseSpec(const std::string &text, const std::string &filename);

/// The word of `known` closest to `word` by edit distance, or "" if none is
/// close enough to be a plausible typo. Used for every "did you mean".
std::string closestMatch(const std::string &word, const std::vector<std::string> &known);

/// Reads and parses a file; throws SpecError carrying every diagnostic (or
/// the I/O failure) if the file is not a valid spec.
SpecFile loadSpecFile(const std::string &path);

} // namespace dattn
