// dattn: the tuning database. An entry records, for one kernel of one
// branch geometry on one GPU and compiler, the configuration the autotuner
// measured fastest, with its time, the runner-up and the heuristic's time.
// It is JSON, so it can be read, diffed, shipped and merged.
//
// An entry is used only where everything its timing depended on still
// holds: the GPU (name, SM count, compute capability), the driver's major
// version, the NVRTC version and a hash of the kernel templates its stage's
// modules include (the forward's, or the backward's: a change to the
// backward kernels leaves the forward's entries valid). Entries
// that do not parse, whose signature no longer matches, or whose
// configuration is not among its family's candidates, are reported and
// ignored, never used and never fatal.
#pragma once

#include "dattn/kernels.h"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace dattn {

/// What a measured time depended on, besides the kernel itself.
struct TuningSignature {
  std::string gpu;          ///< "NVIDIA H100 80GB HBM3"
  int multiprocessors = 0;
  int sm = 0;               ///< compute capability, e.g. 90
  int driverMajor = 0;      ///< e.g. 13
  std::string nvrtc;        ///< "13.0"
  std::string templates;    ///< hash of the kernel templates of the entry's stage
  bool operator==(const TuningSignature &o) const {
    return gpu == o.gpu && multiprocessors == o.multiprocessors && sm == o.sm &&
           driverMajor == o.driverMajor && nvrtc == o.nvrtc && templates == o.templates;
  }
  bool operator!=(const TuningSignature &o) const { return !(*this == o); }
  /// The same GPU model (name, SMs, compute capability), whatever the
  /// driver, NVRTC and templates: its entries are this GPU's, current or
  /// stale; another GPU's are kept in a file but never used.
  bool sameGpu(const TuningSignature &o) const {
    return gpu == o.gpu && multiprocessors == o.multiprocessors && sm == o.sm;
  }
  std::string describe() const;
};

/// The current machine's signature for each stage's entries: the same GPU,
/// driver and NVRTC, with the hash of the templates that stage's modules
/// include (runtime/EmbeddedTemplates.h: kForwardTemplatesHash,
/// kBackwardTemplatesHash).
struct StageSignatures {
  TuningSignature forward, backward; ///< backward: both backward stages
  StageSignatures() = default;
  /// Every stage with `all`'s hash (the tests' databases).
  StageSignatures(const TuningSignature &all) : forward(all), backward(all) {}
  /// The signature of `stage`'s entries ("forward", "backward",
  /// "backward_deterministic").
  const TuningSignature &of(const std::string &stage) const {
    return stage == "forward" ? forward : backward;
  }
};

/// Which kernel an entry is for, within one signature. The geometry is
/// bucketed so that one tuning serves nearby shapes: strided branches by
/// compact segment rows (powers of two), blocks branches by their smallest
/// block, both by N in powers of two.
struct TuningKey {
  std::string stage;   ///< "forward", "backward", "backward_deterministic"
  std::string family;  ///< a kernel family's name
  std::string dtype;   ///< "bf16"
  int headDim = 0;
  std::string kind;    ///< "strided" or "blocks"
  std::string geometry; ///< e.g. "rows2048" or "block64", see tuningKey()
  int64_t seqBucket = 0; ///< N rounded up to a power of two
  bool causal = false;
  std::string str() const; ///< canonical text, the map key
};

/// The key of one kernel of branch `b` of `plan` at sequence length n.
TuningKey tuningKey(const AttentionPlan &plan, const BranchPlan &b, const std::string &stage,
                    const std::string &family, int64_t seqLen);

struct TuningEntry {
  TuningSignature signature;
  TuningKey key;     ///< its family: the one the heuristic plans for the branch
  std::string family; ///< the family that runs `config`: key.family, or
                      ///< (forward) another family that won; "" reads as key.family
  KernelConfig config;
  double medianMs = 0;
  KernelConfig runnerUp;
  double runnerUpMs = 0;
  double heuristicMs = 0;
};

class TuningDatabase {
public:
  /// Reads `path`, keeping the entries whose signature equals `current`'s
  /// for their stage.
  /// Everything skipped (file unreadable or not JSON, malformed or stale
  /// entries) is appended to *report with the reason; a missing file is an
  /// empty database. Never throws for the file's contents.
  static TuningDatabase load(const std::string &path, const StageSignatures &current,
                             std::vector<std::string> *report);

  /// The entry for `key`, if any (this database's signature).
  const TuningEntry *find(const TuningKey &key) const;
  /// Adds or replaces the entry of e.key (its signature must be current
  /// for its stage).
  void put(const TuningEntry &e);
  /// What a database file holds, without a GPU: each signature its
  /// well-formed entries carry, with their count, in file order; *error is
  /// set (and nothing returned) if the file cannot be read or parsed.
  static std::vector<std::pair<TuningSignature, size_t>> signaturesIn(const std::string &path,
                                                                      std::string *error);
  size_t size() const { return entries_.size(); }

  /// Writes every entry to `path` atomically (a temporary file renamed into
  /// place), merged with what the file holds at that moment, so a
  /// concurrent writer's entries for other keys (or other GPUs) survive;
  /// for the same key on this GPU, this database's entry wins, also over
  /// one measured with other templates, driver or NVRTC (stale). Throws Error if the
  /// folder cannot be written.
  void save(const std::string &path) const;

private:
  StageSignatures signature_;
  std::map<std::string, TuningEntry> entries_;
};

/// JSON of one entry / an entry from JSON (nullopt and *why on failure).
std::string tuningEntryJson(const TuningEntry &e);

/// A configuration from a tuning database, and which one.
struct TunedConfig {
  std::string family; ///< the family that runs it (the key's, or another of its pass: tunableFamilies)
  KernelConfig config;
  std::string origin; ///< "user database PATH" or "shipped database PATH"
  double medianMs = 0;
};

/// The databases a run consults, in order: the user's (DATTN_TUNING_DB,
/// default <cache folder>/tuning.json: env::tuningDatabase()), then the
/// shipped ones (autotune/db/*.json, installed with the library); after
/// them, the kernel family's heuristic. Loaded once at construction with
/// the current signature; a lookup is a map read. What was skipped while
/// loading (unreadable, malformed or stale entries) is in report().
class TuningLookup {
public:
  TuningLookup(const StageSignatures &current, const std::string &userPath,
               const std::vector<std::string> &shippedPaths);

  /// Why a family does not offer a configuration for the kernel looked up
  /// ("" if it does).
  using Offered = std::function<std::string(const std::string &family, const KernelConfig &)>;
  /// The first database's entry for `key` whose (family, configuration)
  /// `offered` accepts. An entry it refuses (the family changed, or no
  /// longer runs the branch) is skipped and reported; nullopt means the
  /// heuristic.
  std::optional<TunedConfig> lookup(const TuningKey &key, const Offered &offered) const;
  /// The same, where only key.family's `candidates` are offered.
  std::optional<TunedConfig> lookup(const TuningKey &key,
                                    const std::vector<KernelConfig> &candidates) const;

  const std::vector<std::string> &report() const { return report_; }
  /// The *.json files of `folder`, sorted (none if it does not exist).
  static std::vector<std::string> shippedIn(const std::string &folder);

private:
  std::vector<std::pair<std::string, TuningDatabase>> databases_; ///< (origin, database)
  mutable std::vector<std::string> report_;
};

/// The measured configurations `lookup` holds for every kernel of `plan`
/// (planned for `target`: its families are the ones asked about) at
/// sequence length `seqLen`, for PlanOptions::tuned. Kernels without an
/// entry keep the heuristic (they are not listed).
std::vector<TunedKernel> tunedKernels(const AttentionPlan &plan, const Target &target,
                                      const TuningLookup &lookup, int64_t seqLen);

} // namespace dattn
