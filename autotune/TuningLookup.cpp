// TuningLookup (include/dattn/tuning.h): the user's database first, then the
// shipped ones, then (nullopt) the family's heuristic. A forward entry may
// name another family than the heuristic's: the one that won the tuning.
#include "dattn/tuning.h"

#include <algorithm>
#include <dirent.h>

namespace dattn {

TuningLookup::TuningLookup(const StageSignatures &current, const std::string &userPath,
                           const std::vector<std::string> &shippedPaths) {
  if (!userPath.empty())
    databases_.emplace_back("user database " + userPath,
                            TuningDatabase::load(userPath, current, &report_));
  for (const std::string &p : shippedPaths)
    databases_.emplace_back("shipped database " + p, TuningDatabase::load(p, current, &report_));
}

std::optional<TunedConfig> TuningLookup::lookup(const TuningKey &key,
                                                const Offered &offered) const {
  for (const auto &[origin, db] : databases_) {
    const TuningEntry *e = db.find(key);
    if (!e)
      continue;
    const std::string family = e->family.empty() ? key.family : e->family;
    const std::string why = offered(family, e->config);
    if (!why.empty()) {
      report_.push_back(origin + ": " + key.str() + " has " + family + " " +
                        e->config.describe() + ", " + why + "; ignored");
      continue;
    }
    return TunedConfig{family, e->config, origin, e->medianMs};
  }
  return std::nullopt;
}

std::optional<TunedConfig> TuningLookup::lookup(const TuningKey &key,
                                                const std::vector<KernelConfig> &candidates) const {
  return lookup(key, [&](const std::string &family, const KernelConfig &c) -> std::string {
    if (family != key.family)
      return "not the family asked about";
    if (std::find(candidates.begin(), candidates.end(), c) == candidates.end())
      return "which the family no longer offers";
    return "";
  });
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
      const bool deterministic = k.stage == "backward_deterministic";
      // The configurations tune() searches: the planned family's, for the
      // forward also those of the families that may replace it.
      const std::vector<const KernelFamily *> families =
          tunableFamilies(plan, b, target, familyNamed(k.family), k.stage);
      auto offered = [&](const std::string &name, const KernelConfig &c) -> std::string {
        const KernelFamily *f = nullptr;
        for (const KernelFamily *x : families)
          if (name == x->name())
            f = x;
        if (!f)
          return "a family that cannot run this kernel here";
        const std::vector<KernelConfig> all = f->candidates(plan, b, target, deterministic);
        if (std::find(all.begin(), all.end(), c) == all.end())
          return "which the family no longer offers";
        return "";
      };
      const std::optional<TunedConfig> t =
          lookup.lookup(tuningKey(plan, b, k.stage, k.family, seqLen), offered);
      if (t)
        out.push_back({static_cast<int>(bi), k.stage, t->family, t->config, t->origin});
    }
  }
  return out;
}

} // namespace dattn
