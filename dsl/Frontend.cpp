// The public entry points of the language: text or file in, SpecFile out.
#include "Diagnostics.h"
#include "Parser.h"
#include "Sema.h"

#include "dattn/dsl.h"
#include "dattn/error.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace dattn {

ParseResult parseSpec(const std::string &text, const std::string &filename) {
  dsl::DiagnosticEngine diags(filename, text);
  dsl::FileNode ast = dsl::parseFile(text, diags);
  ParseResult r;
  // Semantic checks also run after syntax errors, on what did parse, so a
  // file's errors of both kinds are reported in one go.
  r.file = dsl::checkFile(ast, diags);
  r.diagnostics = diags.take();
  // Syntax errors are found before semantic ones; a reader wants file order.
  std::stable_sort(r.diagnostics.begin(), r.diagnostics.end(),
                   [](const Diagnostic &a, const Diagnostic &b) {
                     return a.loc.line != b.loc.line ? a.loc.line < b.loc.line
                                                     : a.loc.col < b.loc.col;
                   });
  if (!r.ok())
    r.file = SpecFile{};
  return r;
}

SpecFile loadSpecFile(const std::string &path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw SpecError(path + ": is a directory, not a spec file");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw SpecError(path + ": cannot open spec file: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad())
    throw SpecError(path + ": error while reading the spec file");
  ParseResult r = parseSpec(ss.str(), path);
  if (!r.ok())
    throw SpecError(r.formatDiagnostics());
  return std::move(r.file);
}

} // namespace dattn
