// dattn: CUDA C++ emission for a planned attention. The generated source
// holds only constants (head tables, offsets, member parameters) and one
// instantiation per kernel; the logic lives in templates/dattn/*.cuh.
#pragma once

#include "dattn/kernels.h"
#include "dattn/plan.h"

#include <string>
#include <vector>

namespace dattn {

enum class KernelRole {
  Init, Branch, Finalize,                    ///< forward module (and the ring's)
  RingPack,                                  ///< ring module: rows packed for a peer
  RingReturn,                                ///< ring module: dK/dV partials back from a peer
  RingUnpack,       ///< ring module: a fragmented block into the sender's shape
  RingStagedPartials, ///< ring module: its staged dK/dV partials into the packed ones
  Delta, DqPass, DkvPass, FinalizeGradients, ///< backward module
};
enum class KernelPath { Mma, Simt };

/// What the runtime needs to launch one kernel of a module. Branch kernels
/// record the family that chose them and its configuration
/// (include/dattn/kernels.h); the others are elementwise passes.
struct KernelInfo {
  std::string name; ///< extern "C" symbol, spelling out the specialization
  KernelRole role = KernelRole::Branch;
  int branch = -1; ///< index into AttentionPlan::branches (branch kernels)
  KernelPath path = KernelPath::Simt;
  std::string family; ///< branch kernels: the family's name
  KernelConfig config; ///< branch kernels: the family's configuration
  int candidates = 0;  ///< branch kernels: how many configurations the family offered
  std::string origin; ///< branch kernels: "heuristic" or the tuning database
  int threads = 128;
  int smemBytes = 0;  ///< dynamic shared memory
  int rowsPerCta = 0; ///< rows one CTA covers (compact rows if strided)
};

struct EmittedModule {
  std::string source;
  std::vector<KernelInfo> kernels; ///< in launch order: init, branches, finalize
  bool mergeMode = false;          ///< some head is in several branches
  /// Each head in at most one branch: the branch kernels read and write
  /// disjoint rows (O and LSE; dQ, dK, dV and their accumulators) and may
  /// run side by side (rt::BranchStreams). A branch's own kernels keep
  /// their order.
  bool branchesIndependent = false;
  std::string arch;                ///< e.g. "sm_90"
  // Backward modules only.
  bool gradientsDirect = false; ///< branch kernels write dq/dk/dv in the dtype
  bool atomicDq = false;        ///< dQ added with fp32 reductions (not deterministic)
  int gradientFinalize = 0;     ///< bwd::FinalizeWhat bits the finalize kernel converts
  bool contiguousTensors = false; ///< for contiguous q, k, v, dout, dq, dk, dv only
};

/// `arch` is "sm_XY" or "sm_XYa" (Target::parse). `smemLimit` is the
/// per-block opt-in shared memory of the target (bytes; 0: the arch's usual
/// limit). The kernel families choose every kernel; throws Error for head
/// dims or shapes no family supports on that arch.
EmittedModule emitCuda(const AttentionPlan &plan, const std::string &arch,
                       int smemLimit = 0);

/// Whether some head is in several branches: its branches' results are
/// merged by LSE in an fp32 accumulator (forward kMerge; backward sums).
bool mergesBranches(const AttentionPlan &plan);

/// The constants of every branch as `BranchK` structs (heads, offsets,
/// members) in an anonymous namespace: what the forward, backward and ring
/// modules instantiate their kernels with.
std::string branchDefinitions(const AttentionPlan &plan);
/// ", const __grid_constant__ hopper::TensorMap kMap, ..." for the family's
/// tensorMaps() (empty for most families).
std::string tensorMapParameters(const KernelFamily &family);
/// "__launch_bounds__(threads)", with the minimum of CTAs per SM the
/// family asks for the configuration (KernelFamily::minCtasPerSm).
std::string launchBounds(const KernelFamily &family, const KernelConfig &config, int threads);

/// Throws Error unless `plan`'s kernels were chosen for `target`.
void checkPlannedFor(const AttentionPlan &plan, const Target &target);
/// Records a family's choice in a branch kernel: family, configuration,
/// launch resources, and the configuration's suffix on the kernel's name.
void setChoice(KernelInfo &kernel, const KernelChoice &choice);

/// The ring module: what one rank of a `ring = P` attention runs per key
/// block (templates/dattn/ring.cuh): init of its fp32 accumulators, one
/// block kernel per branch (SIMT, every pattern), the packing of rows for a
/// peer, and the conversion of the accumulators to O; then the backward's
/// Delta, block kernels, returned-partial addition and gradient conversion.
EmittedModule emitCudaRing(const AttentionPlan &plan, const std::string &arch,
                           int smemLimit = 0);

/// The backward module: Delta, then per branch a dK/dV kernel and (SIMT, or
/// when `deterministic`) a dQ kernel, then the conversion of the fp32
/// accumulators. Tensor cores (fp16/bf16, sm_80+, head_dim <= 128) fuse dQ
/// into the dK/dV kernel with fp32 reductions unless `deterministic`; the
/// SIMT path is always deterministic.
///
/// `contiguous`: a module for calls whose q, k, v, dout, dq, dk and dv are
/// all contiguous [B, N, heads, D]; its tensor-core kernels write those
/// strides as expressions of N, heads and D rather than read them.
EmittedModule emitCudaBackward(const AttentionPlan &plan, const std::string &arch,
                               bool deterministic = false, int smemLimit = 0,
                               bool contiguous = false);


} // namespace dattn
