// TuningLookup (include/dattn/tuning.h): the user's database first, then the
// shipped ones, then (nullopt) the family's heuristic.
#include "dattn/tuning.h"

#include <algorithm>
#include <dirent.h>

namespace dattn {

TuningLookup::TuningLookup(const TuningSignature &current, const std::string &userPath,
                           const std::vector<std::string> &shippedPaths) {
  if (!userPath.empty())
    databases_.emplace_back("user database " + userPath,
                            TuningDatabase::load(userPath, current, &report_));
  for (const std::string &p : shippedPaths)
    databases_.emplace_back("shipped database " + p, TuningDatabase::load(p, current, &report_));
}

std::optional<TunedConfig> TuningLookup::lookup(const TuningKey &key,
                                                const std::vector<KernelConfig> &candidates) const {
  for (const auto &[origin, db] : databases_) {
    const TuningEntry *e = db.find(key);
    if (!e)
      continue;
    if (std::find(candidates.begin(), candidates.end(), e->config) == candidates.end()) {
      report_.push_back(origin + ": " + key.str() + " has configuration " +
                        e->config.describe() +
                        ", which the family no longer offers; ignored");
      continue;
    }
    return TunedConfig{e->config, origin, e->medianMs};
  }
  return std::nullopt;
}

std::vector<std::string> TuningLookup::shippedIn(const std::string &folder) {
  std::vector<std::string> files;
  if (DIR *d = opendir(folder.c_str())) {
    while (dirent *e = readdir(d)) {
      const std::string n = e->d_name;
      if (n.size() > 5 && n.compare(n.size() - 5, 5, ".json") == 0)
        files.push_back(folder + "/" + n);
    }
    closedir(d);
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<TunedKernel> tunedKernels(const AttentionPlan &plan, const Target &target,
                                      const TuningLookup &lookup, int64_t seqLen) {
  std::vector<TunedKernel> out;
  for (size_t bi = 0; bi < plan.branches.size(); ++bi) {
    const BranchPlan &b = plan.branches[bi];
    for (const PlannedKernel &k : b.kernels) {
      const KernelFamily &f = familyNamed(k.family);
      const bool deterministic = k.stage == "backward_deterministic";
      const std::optional<TunedConfig> t =
          lookup.lookup(tuningKey(plan, b, k.stage, k.family, seqLen),
                        f.candidates(plan, b, target, deterministic));
      if (t)
        out.push_back({static_cast<int>(bi), k.stage, k.family, t->config, t->origin});
    }
  }
  return out;
}

} // namespace dattn
