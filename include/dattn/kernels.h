// dattn: kernel families, the one layer that decides everything about a
// kernel. A family (sm80 mma.sync forward, SIMT backward, ...) says whether
// it supports a branch on a target, lists its candidate configurations,
// computes what a configuration needs (threads, shared memory, rows per
// CTA), picks its default (the heuristic the autotuner starts from) and
// writes the kernel's instantiation. The emitters print what the chosen
// family says and the runtime launches what the emitted module records;
// neither picks a tile. Adding a family touches no other family.
#pragma once

#include "dattn/plan.h"

#include <memory>
#include <string>
#include <vector>

namespace dattn {

/// What a kernel is compiled for. "sm_90a" is sm_90 with its arch-specific
/// features (wgmma, setmaxnreg), which NVRTC only enables under that name.
struct Target {
  int sm = 80;
  bool archSpecific = false;
  int smemBytes = 0; ///< opt-in shared memory per block

  /// "sm_80", "sm_90a", ...; smemBytes 0 means the arch's usual limit.
  /// Throws Error naming the string otherwise.
  static Target parse(const std::string &arch, int smemBytes = 0);
  /// What dattn compiles a GPU of compute capability `sm` for: sm_90 with
  /// its arch-specific features (the wgmma families), others as they are.
  static Target forGpu(int sm, int smemBytes = 0);
  std::string arch() const; ///< "sm_90a": also what NVRTC is given
};

/// The kernels a branch runs: the forward, and in the backward pass a
/// dK/dV kernel and (SIMT, or deterministic) a dQ kernel.
enum class KernelPass { Forward, BackwardDkv, BackwardDq };
const char *toString(KernelPass p);

/// What launching a configuration takes.
struct KernelResources {
  int threads = 0;
  int smemBytes = 0;  ///< dynamic shared memory
  int rowsPerCta = 0; ///< rows one CTA owns (compact rows on strided branches)
};

/// How a branch's headers and tables are named in the generated source.
struct InstanceContext {
  std::string deviceType;  ///< "dev::bf16"
  int headDim = 0;
  std::string outputMode;  ///< forward: "fwd::kWrite", "fwd::kMerge" or "fwd::kMergeFirst"
  std::string gradMode;    ///< backward: "bwd::kDirect" or "bwd::kAccumulate"
  std::string branch;      ///< "Branch2"
};

class KernelFamily {
public:
  virtual ~KernelFamily() = default;
  virtual const char *name() const = 0;
  virtual KernelPass pass() const = 0;
  /// Tensor-core families share accumulator layouts and modes with each
  /// other, not with SIMT ones (the backward emitter pairs them).
  virtual bool usesTensorCores() const = 0;
  /// "" when the family runs this branch on this target, else why not.
  virtual std::string unsupported(const AttentionPlan &plan, const BranchPlan &branch,
                                  const Target &target) const = 0;
  /// Whether the preference order may pick this family for a branch it
  /// supports; false: only when named (DATTN_FAMILIES, --family) or tuned
  /// (a case that runs correctly but has not been measured to be faster).
  virtual bool byDefault(const AttentionPlan &, const BranchPlan &) const { return true; }
  /// Every configuration that runs the branch correctly and fits the
  /// target, for the given mode (deterministic backward or not).
  virtual std::vector<KernelConfig> candidates(const AttentionPlan &plan, const BranchPlan &branch,
                                               const Target &target,
                                               bool deterministic) const = 0;
  /// The default among the candidates (throws Error if there is none).
  virtual KernelConfig heuristic(const AttentionPlan &plan, const BranchPlan &branch,
                                 const Target &target, bool deterministic) const = 0;
  virtual KernelResources resources(const AttentionPlan &plan, const KernelConfig &c) const = 0;
  /// The kernel body: one call of the family's template.
  virtual std::string instantiate(const KernelConfig &c, const InstanceContext &ctx) const = 0;
  /// Part of the kernel's name, spelling out the configuration.
  virtual std::string suffix(const KernelConfig &c) const = 0;
  /// The tensors ("k", "v", "q", "dout") whose rows the kernel loads through
  /// TMA: it takes a tensor map of each after its parameters, named
  /// <tensor>Map (the emitters declare them, tensorMapParameters; the
  /// launchers encode them, runtime/TensorMaps.h).
  virtual std::vector<std::string> tensorMaps() const { return {}; }
  /// The CTAs per SM the launch bounds ask ptxas to fit (0: none asked).
  /// Kernels whose warpgroups trade registers (setmaxnreg) say 1: ptxas
  /// sizes each warpgroup's code for its share only when the launch bounds
  /// fix one CTA per SM (`__launch_bounds__(threads, 1)`); without it, it
  /// fits the whole kernel in 65536 / threads registers (the warp-specialized
  /// dK/dV kernel spilled 964 bytes that way, 20 with it).
  virtual int minCtasPerSm(const KernelConfig &) const { return 0; }
};

/// A family's decision for one kernel of a branch.
struct KernelChoice {
  const KernelFamily *family = nullptr;
  KernelConfig config;
  KernelResources resources;
  int candidates = 0; ///< how many configurations the family offered
  std::string origin = "heuristic"; ///< or the tuning database (plannedKernels)
};

/// Every family, in preference order per pass.
const std::vector<const KernelFamily *> &kernelFamilies();
/// The family called `name` (throws Error if there is none).
const KernelFamily &familyNamed(const std::string &name);

/// The forward kernel of a branch: the first family that supports it
/// decides, those named in `first` (PlanOptions::families) before the
/// preference order. Throws Error saying why when none does.
KernelChoice chooseForward(const AttentionPlan &plan, const BranchPlan &branch,
                           const Target &target, const std::vector<std::string> &first = {});

/// The backward kernels of a branch: the dK/dV kernel first, then, unless
/// that kernel adds dQ itself (tensor cores, not deterministic), a dQ
/// kernel of the same kind.
std::vector<KernelChoice> chooseBackward(const AttentionPlan &plan, const BranchPlan &branch,
                                         const Target &target, bool deterministic,
                                         const std::vector<std::string> &first = {});

/// The families whose configurations may replace `planned`'s for a kernel
/// of `stage` of a branch (the autotuner's search, the tuning lookup's
/// check): `planned` itself, and every other family of its pass that runs
/// the branch on the target with the same kind of cores: for the forward
/// (on sm_90a the sm80 tiles beside the wgmma kernels) and for the
/// tensor-core dK/dV kernel of the "backward" stage, which adds dQ itself
/// (on sm_90a the sm80 kernel beside the wgmma ones, and the warp-specialized
/// one's 64-key CTAs where it runs them only when named). Not the
/// deterministic backward, whose dK/dV and dQ kernels come in pairs.
/// `planned` first.
std::vector<const KernelFamily *> tunableFamilies(const AttentionPlan &plan,
                                                  const BranchPlan &branch, const Target &target,
                                                  const KernelFamily &planned,
                                                  const std::string &stage);

/// A planned stage's kernels ("forward", "backward",
/// "backward_deterministic") read back as choices, with their resources.
/// Throws Error if the plan has no kernels chosen (PlanOptions::arch unset)
/// or names a family that does not exist.
std::vector<KernelChoice> plannedKernels(const AttentionPlan &plan, const BranchPlan &branch,
                                         const std::string &stage);

} // namespace dattn
