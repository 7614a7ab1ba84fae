// dattn info: the driver, NVRTC, the GPUs and the kernel cache.
#include "Commands.h"
#include "CommandUtil.h"
#include "Npy.h"
#include "Options.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/comm.h"
#include "dattn/env.h"
#include "dattn/error.h"
#include "dattn/host.h"
#include "dattn/reference.h"
#include "dattn/tuning.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <tuple>

namespace dattn::tools {

namespace {

/// The user's and the shipped tuning databases: for which GPUs, and whether
/// this build's kernel templates are the ones they were measured with (an
/// entry of other templates is stale: ignored until the GPU is tuned again).
/// Each stage's entries carry the hash of its own templates.
void printTuningDatabases(const SystemInfo &s) {
  std::vector<std::pair<std::string, std::string>> files = {{"yours", env::tuningDatabase()}};
  for (const std::string &path : TuningLookup::shippedIn(env::shippedTuningFolder()))
    files.push_back({"shipped", path});
  for (const auto &[whose, path] : files) {
    std::string error;
    const auto signatures = TuningDatabase::signaturesIn(path, &error);
    if (!error.empty()) {
      std::printf("tuning database (%s): %s: unusable: %s\n", whose.c_str(), path.c_str(),
                  error.c_str());
      continue;
    }
    if (signatures.empty())
      std::printf("tuning database (%s): %s: %s\n", whose.c_str(), path.c_str(),
                  std::ifstream(path) ? "no entries" : "not written yet (dattn tune writes it)");
    for (const auto &[sig, count] : signatures)
      std::printf("tuning database (%s): %s: %zu entries for %s (%d SMs, sm_%d), driver %d, "
                  "NVRTC %s; %s\n",
                  whose.c_str(), path.c_str(), count, sig.gpu.c_str(), sig.multiprocessors,
                  sig.sm, sig.driverMajor, sig.nvrtc.c_str(),
                  sig.templates == s.forwardTemplatesHash
                      ? "this build's forward kernel templates"
                  : sig.templates == s.backwardTemplatesHash
                      ? "this build's backward kernel templates"
                      : "other kernel templates: stale, ignored until that GPU is tuned again");
  }
}

} // namespace

int runInfo(const std::vector<std::string> &args) {
  static const char *help =
      "usage: dattn info\nPrints the GPUs, the driver and NVRTC versions, the archs NVRTC\n"
      "targets, the tuning databases (yours and the shipped ones: for which GPUs,\n"
      "and whether they match this build's kernel templates) and the kernel cache.\n";
  if (wantsHelp(args, help))
    return 0;
  Options o(args, {}, {});
  SystemInfo s = querySystem();
  if (s.driverError.empty())
    std::printf("driver: CUDA %s (%s)\n", s.driverVersion.c_str(), s.driverLibrary.c_str());
  else
    std::printf("driver: not available: %s\n", s.driverError.c_str());
  if (s.nvrtcError.empty()) {
    std::printf("nvrtc: %s (%s)\narchs:", s.nvrtcVersion.c_str(), s.nvrtcLibrary.c_str());
    for (const auto &a : s.nvrtcArchs)
      std::printf(" %s", a.c_str());
    std::printf("\n");
  } else {
    std::printf("nvrtc: not available: %s\n", s.nvrtcError.c_str());
  }
  // Which NVRTC serves which GPUs: 13 from sm_75 on, 12 for the older ones.
  for (auto [label, n] : {std::pair{"nvrtc 13 (sm_75 and newer)", &s.nvrtc13},
                          std::pair{"nvrtc 12 (GPUs before sm_75, e.g. Pascal sm_61)", &s.nvrtc12}}) {
    if (!n->error.empty()) {
      std::printf("%s: not available: %s\n", label, n->error.c_str());
      continue;
    }
    std::printf("%s: %s (%s):", label, n->version.c_str(), n->library.c_str());
    for (const auto &a : n->archs)
      std::printf(" %s", a.c_str());
    std::printf("\n");
  }
  std::printf("tuning: no GPU before sm_75 is tuned here; such GPUs run the kernel families' "
              "heuristic configurations\n");
  printTuningDatabases(s);
  const NcclInfo nccl = queryNccl();
  if (nccl.error.empty())
    std::printf("nccl: %s (%s)\n", nccl.version.c_str(), nccl.library.c_str());
  else
    std::printf("nccl: not available: %s\n", nccl.error.c_str());
  std::printf("gpus: %zu\n", s.devices.size());
  for (const auto &d : s.devices)
    std::printf("  gpu %d: %s, %s, %d SMs, %.1f GiB, %d KiB shared memory per block\n",
                d.ordinal, d.name.c_str(), d.arch().c_str(), d.multiprocessors,
                d.memoryBytes / 1073741824.0, d.smemOptinBytes / 1024);
  std::printf("kernel cache: %s\n", s.cacheFolder.c_str());
  return 0;
}

} // namespace dattn::tools
