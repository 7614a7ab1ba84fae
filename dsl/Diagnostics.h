// dsl: collects diagnostics for one file and renders them with a caret.
#pragma once

#include "dattn/dsl.h"

#include <string>
#include <vector>

namespace dattn::dsl {

class DiagnosticEngine {
public:
  DiagnosticEngine(const std::string &filename, const std::string &text);

  void error(int line, int col, const std::string &message);
  void error(const SourceLoc &loc, const std::string &message) {
    error(loc.line, loc.col, message);
  }
  SourceLoc loc(int line, int col) const { return {filename_, line, col}; }
  bool hasErrors() const { return !diags_.empty(); }
  std::vector<Diagnostic> take() { return std::move(diags_); }

private:
  // A binary or badly broken file could yield one error per byte; past this
  // many the rest add nothing a person can act on.
  static constexpr size_t kMaxDiagnostics = 50;

  std::string filename_;
  std::vector<std::string> lines_;
  std::vector<Diagnostic> diags_;
  bool truncated_ = false;
};

/// ", did you mean 'x'?" or "" (for appending to a message).
std::string suggestion(const std::string &word, const std::vector<std::string> &known);

} // namespace dattn::dsl
