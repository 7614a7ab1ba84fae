// dattn: the command-line driver. Each subcommand has its own file.
#include "Commands.h"
#include "Options.h"

#include "dattn/error.h"

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

static const char *kUsage =
    "usage: dattn <command> [options]\n"
    "\n"
    "commands:\n"
    "  check FILE              parse and check a spec; print it in canonical form\n"
    "  compile FILE --emit=K   lower a spec; K is mlir (as generated) or plan\n"
    "                          (after normalize, merge-branches, plan-tiles)\n"
    "  compile FILE --emit=K   also cuda, ptx, cubin (NVRTC, no GPU needed)\n"
    "  run FILE --seq N ...    run attention (CPU reference or GPU) on .npy or random inputs\n"
    "  plan-ring FILE --seq N  what each rank of a ring receives from each peer\n"
    "  tune --list FILE        every kernel family's candidate configurations\n"
    "  info                    GPUs, driver and NVRTC versions, cache folder\n"
    "\n"
    "'dattn <command> --help' describes each command's options.\n";

int main(int argc, char **argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "check")
      return dattn::tools::runCheck(args);
    if (cmd == "compile")
      return dattn::tools::runCompile(args);
    if (cmd == "run")
      return dattn::tools::runRun(args);
    if (cmd == "info")
      return dattn::tools::runInfo(args);
    if (cmd == "plan-ring")
      return dattn::tools::runPlanRing(args);
    if (cmd == "tune")
      return dattn::tools::runTune(args);
    std::fprintf(stderr, "dattn: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const dattn::tools::UsageError &e) {
    std::fprintf(stderr, "dattn %s: %s (see 'dattn %s --help')\n", cmd.c_str(),
                 e.message.c_str(), cmd.c_str());
    return 2;
  } catch (const dattn::SpecError &e) {
    // Diagnostics end in a newline (with their source line); I/O errors don't.
    const std::string text = e.what();
    std::fputs(text.c_str(), stderr);
    if (text.empty() || text.back() != '\n')
      std::fputc('\n', stderr);
    return 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "dattn %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
