// dattn tune: the autotuner's command. --list (no GPU) prints each branch's
// candidate space per kernel family and stage for the given targets; the
// tuning itself (timing candidates on the GPU into a database) comes with
// the autotuner and says so until then.
#include "CommandUtil.h"
#include "Commands.h"
#include "Options.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/error.h"
#include "dattn/kernels.h"

#include <cstdio>

namespace dattn::tools {

namespace {

void listCandidates(const AttentionPlan &plan, const Target &target) {
  std::printf("attention %s on %s (%d bytes of shared memory per block)\n", plan.name.c_str(),
              target.arch().c_str(), target.smemBytes);
  for (size_t b = 0; b < plan.branches.size(); ++b) {
    const BranchPlan &br = plan.branches[b];
    std::printf("  branch %zu (%zu heads)\n", b, br.heads.size());
    for (const KernelFamily *f : kernelFamilies())
      for (bool deterministic : {false, true}) {
        if (f->pass() == KernelPass::Forward && deterministic)
          continue;
        const std::string why = f->unsupported(plan, br, target);
        const std::string stage = std::string(toString(f->pass())) +
                                  (f->pass() != KernelPass::Forward
                                       ? (deterministic ? ", deterministic" : ", default")
                                       : "");
        if (!why.empty()) {
          if (!deterministic || f->pass() == KernelPass::Forward)
            std::printf("    %-22s %-30s not supported: %s\n", f->name(), stage.c_str(),
                        why.c_str());
          continue;
        }
        const std::vector<KernelConfig> all = f->candidates(plan, br, target, deterministic);
        if (all.empty()) {
          std::printf("    %-22s %-30s not used in this mode\n", f->name(), stage.c_str());
          continue;
        }
        std::printf("    %-22s %-30s %zu candidates:", f->name(), stage.c_str(), all.size());
        for (const KernelConfig &c : all)
          std::printf(" [%s]", c.describe().c_str());
        std::printf("\n");
      }
  }
}

} // namespace

int runTune(const std::vector<std::string> &args) {
  static const char *help =
      "usage: dattn tune --list FILE [--name NAME] [--arch sm_80,sm_90a]\n"
      "--list prints, per branch, every kernel family's candidate configurations\n"
      "for each target (default sm_80) and stage, or why the family does not run\n"
      "the branch. No GPU is needed.\n"
      "Tuning on the GPU (timing the candidates into a tuning database) is not\n"
      "built yet.\n";
  if (wantsHelp(args, help))
    return 0;
  Options o(args, {"name", "arch"}, {"list"});
  if (!o.has("list"))
    throw UsageError{"only --list exists yet: timing candidates on the GPU into a tuning "
                     "database is not built"};
  SpecFile file = loadSpecFile(onlyFile(o, "tune"));
  for (const AttentionSpec &spec : selectSpecs(file, o))
    for (const std::string &arch : splitList(o.get("arch", "sm_80"))) {
      const Target target = Target::parse(arch);
      listCandidates(planAttention(spec), target);
    }
  return 0;
}

} // namespace dattn::tools
