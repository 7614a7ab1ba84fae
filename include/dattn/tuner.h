// dattn: the autotuner. For one attention at one sequence length it tries
// every candidate configuration of every kernel of every branch, one kernel
// at a time (the others at their best so far), and keeps the fastest whose
// outputs match the heuristic configuration's within the dtype's tolerance.
// How a plan is timed is the caller's (TuneMeasure): on a GPU, `dattn tune`
// compiles and times it (tools/Tune.cpp); tests give a model.
#pragma once

#include "dattn/tuning.h"

#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace dattn {

/// One timing of a plan: the median time of the pass (forward, or forward
/// and backward), the outputs it produced (for the comparison with the
/// heuristic's), or why it could not run.
struct Measurement {
  double ms = std::numeric_limits<double>::infinity();
  std::vector<float> outputs;
  std::string error; ///< a compile or launch failure: the candidate scores infinity
};

class TuneMeasure {
public:
  virtual ~TuneMeasure() = default;
  /// Times the attention with `kernels` forcing configurations (the rest
  /// the heuristic's); `backward`: forward and backward, else the forward.
  virtual Measurement measure(const std::vector<TunedKernel> &kernels, bool backward) = 0;
  /// Called before a batch of measure() calls with their `kernels`: a
  /// measure that compiles may compile them all now, in parallel, so that
  /// measure() finds them in its cache. Failures are measure()'s to report.
  virtual void prepare(const std::vector<std::vector<TunedKernel>> &batch, bool backward) {
    (void)batch;
    (void)backward;
  }
};

struct TuneOptions {
  bool backward = false;      ///< also tune the backward stage (default mode)
  double budgetSeconds = 600; ///< stop trying candidates after this long
  double tolerance = 1e-2;    ///< relative error a candidate may differ from the heuristic
  /// A candidate replaces the heuristic only when faster by this fraction
  /// of the attention's time: below it a "win" is timing noise (the H100's
  /// first database run picked other families for 0.01-0.8% gains).
  double minGain = 0.01;
  int prepareBatch = 16;      ///< candidates handed to TuneMeasure::prepare at a time
  /// Called after every candidate: done, total, the best time so far (ms).
  std::function<void(int, int, double)> progress;
  /// An entry measured before for a key (`dattn tune --resume`: the
  /// database's, valid for the current signature), or null: a kernel with
  /// one is not measured again; its configuration runs while the others
  /// are tuned, and no new entry is reported for it.
  std::function<const TuningEntry *(const TuningKey &)> known;
};

/// What tuning one kernel found.
struct TunedResult {
  TuningEntry entry;                ///< config, median, runner-up, heuristic's time
  int tried = 0;
  std::vector<std::string> rejected; ///< "config: why" (failed, or wrong outputs)
};

struct TuneReport {
  std::vector<TunedResult> kernels;
  bool finished = true; ///< false: the budget ran out (the rest keep the heuristic)
};

/// The database keys tune() measures for `plan` at `seqLen`: each branch's
/// forward kernel and, with `backward`, its dK/dV kernel of the default
/// mode; branches of one geometry share a key (listed once).
std::vector<TuningKey> tunedKeys(const AttentionPlan &plan, int64_t seqLen, bool backward);

/// Tunes every kernel of `plan` (planned for `target` with the heuristic)
/// at `seqLen`; the entries carry their stage's signature of `signatures`.
TuneReport tune(const AttentionPlan &plan, const Target &target, int64_t seqLen,
                const StageSignatures &signatures, TuneMeasure &measure,
                const TuneOptions &options);

} // namespace dattn
