// tools: what the subcommands share: --help, the one spec file, --name,
// comma-separated lists.
#pragma once

#include "Options.h"

#include "dattn/spec.h"

#include <string>
#include <vector>

namespace dattn::tools {

/// Prints `help` and returns true if the arguments ask for it.
bool wantsHelp(const std::vector<std::string> &args, const char *help);
/// The one positional argument (a spec file); a UsageError otherwise.
std::string onlyFile(const Options &o, const char *cmd);
/// The attentions of a file: one by --name, or all of them.
std::vector<AttentionSpec> selectSpecs(const SpecFile &file, const Options &o);
/// "a,b,,c" -> {a, b, c}.
std::vector<std::string> splitList(const std::string &s);

} // namespace dattn::tools
