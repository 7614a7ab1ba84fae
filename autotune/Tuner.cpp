// tune() (include/dattn/tuner.h): one kernel at a time, every candidate,
// the others at their best so far; a candidate counts only if it ran and
// its outputs match the heuristic configuration's. Each kernel's heuristic
// configuration is timed first: a kernel whose tuning starts always has
// the time a winner must beat, however soon the budget runs out.
#include "dattn/tuner.h"

#include "dattn/error.h"
#include "dattn/kernels.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace dattn {

namespace {

/// ||a - b|| / ||b||, infinite when the sizes differ or a holds NaN.
double relativeDifference(const std::vector<float> &a, const std::vector<float> &b) {
  if (a.size() != b.size())
    return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - b[i];
    num += d * d;
    den += double(b[i]) * b[i];
  }
  if (std::isnan(num))
    return std::numeric_limits<double>::infinity();
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

/// A configuration of a family.
struct Candidate {
  const KernelFamily *family;
  KernelConfig config;
  bool operator==(const Candidate &o) const { return family == o.family && config == o.config; }
  std::string describe() const {
    return std::string(family->name()) + " " + config.describe();
  }
};

struct Job {
  int branch;
  std::string stage;
  Candidate heuristic; ///< its family names the database key
  std::vector<Candidate> candidates;
  TuningKey key;
  int sameKeyAs = -1; ///< an earlier job with this key: its winner, not measured again
  /// TuneOptions::known's winner for the key, if still a candidate: not
  /// measured again (an index into candidates, or -1).
  int known = -1;
};

/// A kernel's candidates: the heuristic first, then every configuration of
/// the families that may replace it (tunableFamilies). For the dK/dV
/// kernel, another family brings its heuristic configuration only: a
/// backward candidate costs a whole forward and backward with the
/// gradients read back (gigabytes at 256K), and the question is which
/// family, the planned one's tiles being searched in full.
std::vector<Candidate> candidatesOf(const AttentionPlan &plan, const BranchPlan &b,
                                    const Target &target, const Candidate &heuristic,
                                    const std::string &stage) {
  std::vector<Candidate> out = {heuristic};
  for (const KernelFamily *f : tunableFamilies(plan, b, target, *heuristic.family, stage)) {
    std::vector<KernelConfig> configs = f->candidates(plan, b, target, /*deterministic=*/false);
    if (stage != "forward" && f != heuristic.family)
      configs = {f->heuristic(plan, b, target, /*deterministic=*/false)};
    for (const KernelConfig &c : configs)
      if (!(Candidate{f, c} == heuristic))
        out.push_back({f, c});
  }
  return out;
}

/// The index of the candidate of job j that options.known's entry for its
/// key names, if it is still one of j's candidates (else -1: the job is
/// measured again).
int knownWinner(const Job &j, const TuneOptions &options) {
  const TuningEntry *e = options.known ? options.known(j.key) : nullptr;
  if (!e)
    return -1;
  const std::string family = e->family.empty() ? e->key.family : e->family;
  for (size_t x = 0; x < j.candidates.size(); ++x)
    if (j.candidates[x].family->name() == family && j.candidates[x].config == e->config)
      return static_cast<int>(x);
  return -1;
}

/// Whether tune() measures planned kernel k (tunedKeys' rule).
bool isTuned(const PlannedKernel &k, bool backward) {
  return k.stage == "forward" || (backward && k.stage == "backward");
}

} // namespace

std::vector<TuningKey> tunedKeys(const AttentionPlan &plan, int64_t seqLen, bool backward) {
  std::vector<TuningKey> keys;
  for (const BranchPlan &b : plan.branches)
    for (const PlannedKernel &k : b.kernels) {
      if (!isTuned(k, backward))
        continue;
      TuningKey key = tuningKey(plan, b, k.stage, k.family, seqLen);
      if (std::none_of(keys.begin(), keys.end(),
                       [&](const TuningKey &x) { return x.str() == key.str(); }))
        keys.push_back(std::move(key));
    }
  return keys;
}

TuneReport tune(const AttentionPlan &plan, const Target &target, int64_t seqLen,
                const StageSignatures &signatures, TuneMeasure &measure,
                const TuneOptions &options) {
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::vector<Job> jobs;
  int total = 0;
  for (size_t bi = 0; bi < plan.branches.size(); ++bi) {
    const BranchPlan &b = plan.branches[bi];
    for (const PlannedKernel &k : b.kernels) {
      if (!isTuned(k, options.backward))
        continue;
      const Candidate heuristic{&familyNamed(k.family), k.config};
      Job j{static_cast<int>(bi), k.stage, heuristic,
            candidatesOf(plan, b, target, heuristic, k.stage),
            tuningKey(plan, b, k.stage, k.family, seqLen)};
      // Branches of the same geometry (LongNet's segment/dilation pairs with
      // equal rows per segment) share a key and so one database entry.
      for (size_t x = 0; x < jobs.size() && j.sameKeyAs < 0; ++x)
        if (jobs[x].sameKeyAs < 0 && jobs[x].key.str() == j.key.str())
          j.sameKeyAs = static_cast<int>(x);
      j.known = knownWinner(j, options);
      if (j.sameKeyAs < 0 && j.known < 0)
        total += static_cast<int>(j.candidates.size());
      jobs.push_back(std::move(j));
    }
  }
  // The heuristic's outputs: what every candidate must reproduce.
  const Measurement refForward = measure.measure({}, false);
  if (!refForward.error.empty())
    throw Error("tuning attention '" + plan.name + "': the heuristic configuration does not run: " +
                refForward.error);
  Measurement refBackward;
  if (options.backward) {
    refBackward = measure.measure({}, true);
    if (!refBackward.error.empty())
      throw Error("tuning attention '" + plan.name +
                  "': the heuristic configuration's backward does not run: " + refBackward.error);
  }

  TuneReport report;
  std::vector<TunedKernel> chosen; // the kernels tuned so far, at their best
  std::vector<Candidate> winners;  // per job
  int done = 0;
  double bestSoFar = std::numeric_limits<double>::infinity();
  for (const Job &j : jobs) {
    if (j.sameKeyAs >= 0) { // the entry is the earlier job's: run its winner
      const Candidate w = winners.at(static_cast<size_t>(j.sameKeyAs));
      winners.push_back(w);
      chosen.push_back({j.branch, j.stage, w.family->name(), w.config, "tuning"});
      continue;
    }
    if (j.known >= 0) { // measured before: runs while the rest are tuned
      const Candidate &c = j.candidates[static_cast<size_t>(j.known)];
      winners.push_back(c);
      chosen.push_back({j.branch, j.stage, c.family->name(), c.config, "tuning"});
      continue;
    }
    const bool backward = j.stage != "forward";
    const Measurement &ref = backward ? refBackward : refForward;
    TunedResult r;
    r.entry.signature = signatures.of(j.stage);
    r.entry.key = j.key;
    double best = std::numeric_limits<double>::infinity(), second = best, heuristicMs = best;
    Candidate bestConfig = j.heuristic, secondConfig = j.heuristic;
    if (elapsed() > options.budgetSeconds) {
      report.finished = false; // this kernel and the rest keep the heuristic
      break;
    }
    auto forcing = [&](const Candidate &c) {
      std::vector<TunedKernel> forced = chosen;
      forced.push_back({j.branch, j.stage, c.family->name(), c.config, "tuning"});
      return forced;
    };
    const size_t batch = static_cast<size_t>(std::max(1, options.prepareBatch));
    for (size_t ci = 0; ci < j.candidates.size(); ++ci) {
      const Candidate &c = j.candidates[ci];
      if (elapsed() > options.budgetSeconds && !(c == j.heuristic)) {
        report.finished = false;
        break;
      }
      if (ci % batch == 0) { // the next batch compiled together
        std::vector<std::vector<TunedKernel>> next;
        for (size_t x = ci; x < std::min(j.candidates.size(), ci + batch); ++x)
          next.push_back(forcing(j.candidates[x]));
        measure.prepare(next, backward);
      }
      const std::vector<TunedKernel> forced = forcing(c);
      const Measurement m = measure.measure(forced, backward);
      ++r.tried;
      ++done;
      const double diff = m.error.empty() ? relativeDifference(m.outputs, ref.outputs) : 0;
      if (!m.error.empty()) {
        r.rejected.push_back(c.describe() + ": " + m.error);
      } else if (!(diff <= options.tolerance)) {
        r.rejected.push_back(c.describe() + ": outputs differ from the heuristic's by " +
                             std::to_string(diff));
      } else {
        if (c == j.heuristic)
          heuristicMs = m.ms;
        if (m.ms < best) {
          second = best;
          secondConfig = bestConfig;
          best = m.ms;
          bestConfig = c;
        } else if (m.ms < second) {
          second = m.ms;
          secondConfig = c;
        }
        bestSoFar = std::min(bestSoFar, m.ms);
      }
      if (options.progress)
        options.progress(done, total, bestSoFar);
    }
    if (!std::isfinite(best) || !(best < heuristicMs * (1 - options.minGain))) { // the heuristic stays
      bestConfig = j.heuristic;
      best = heuristicMs;
    }
    r.entry.family = bestConfig.family->name();
    r.entry.config = bestConfig.config;
    r.entry.medianMs = best;
    r.entry.runnerUp = secondConfig.config;
    r.entry.runnerUpMs = second;
    r.entry.heuristicMs = heuristicMs;
    chosen.push_back({j.branch, j.stage, r.entry.family, bestConfig.config, "tuning"});
    winners.push_back(bestConfig);
    report.kernels.push_back(std::move(r));
    if (!report.finished)
      break;
  }
  return report;
}

} // namespace dattn
