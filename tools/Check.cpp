// dattn check: parse and check a spec file, print its canonical form.
#include "Commands.h"
#include "CommandUtil.h"
#include "Npy.h"
#include "Options.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/error.h"
#include "dattn/host.h"
#include "dattn/reference.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <tuple>

namespace dattn::tools {

int runCheck(const std::vector<std::string> &args) {
  static const char *help =
      "usage: dattn check FILE [--name NAME]\n"
      "Parses and checks FILE. On success prints each attention (or NAME) in\n"
      "canonical form, defaults made explicit; on failure prints every error\n"
      "as file:line:col with the line and a caret, and exits with status 1.\n";
  if (wantsHelp(args, help))
    return 0;
  Options o(args, {"name"}, {});
  SpecFile file = loadSpecFile(onlyFile(o, "check"));
  for (const auto &spec : selectSpecs(file, o))
    std::fputs(spec.canonical().c_str(), stdout);
  return 0;
}

} // namespace dattn::tools
