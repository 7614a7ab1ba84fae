// tools: the `dattn` subcommands. Each returns the process exit status:
// 0 success, 1 a spec, input or run error (message on stderr), 2 usage.
#pragma once

#include <string>
#include <vector>

namespace dattn::tools {

int runCheck(const std::vector<std::string> &args);
int runCompile(const std::vector<std::string> &args);
int runRun(const std::vector<std::string> &args);
int runInfo(const std::vector<std::string> &args);
int runPlanRing(const std::vector<std::string> &args);
int runTune(const std::vector<std::string> &args);

} // namespace dattn::tools
