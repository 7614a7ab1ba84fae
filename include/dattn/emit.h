// dattn: CUDA C++ emission for a planned attention. The generated source
// holds only constants (head tables, offsets, member parameters) and one
// instantiation per kernel; the logic lives in templates/dattn/*.cuh.
#pragma once

#include "dattn/plan.h"

#include <string>
#include <vector>

namespace dattn {

enum class KernelRole {
  Init, Branch, Finalize,                    ///< forward module
  Delta, DqPass, DkvPass, FinalizeGradients, ///< backward module
};
enum class KernelPath { Mma, Simt };

/// What the runtime needs to launch one kernel of a module.
struct KernelInfo {
  std::string name; ///< extern "C" symbol, spelling out the specialization
  KernelRole role = KernelRole::Branch;
  int branch = -1; ///< index into AttentionPlan::branches (Branch role)
  KernelPath path = KernelPath::Simt;
  int threads = 128;
  int smemBytes = 0; ///< dynamic shared memory
  int blockM = 0, blockN = 0;
  int rowTilesPerWarp = 1; ///< mma path: m16 tiles per warp (MT)
  int rowsPerCta = 0; ///< query rows one CTA covers (compact rows if strided)
};

struct EmittedModule {
  std::string source;
  std::vector<KernelInfo> kernels; ///< in launch order: init, branches, finalize
  bool mergeMode = false;          ///< some head is in several branches
  std::string arch;                ///< e.g. "sm_90"
};

/// `arch` is "sm_XY". `smemLimit` is the per-block opt-in shared memory of
/// the target (bytes); tiles shrink until they fit. Throws Error for head
/// dims or shapes no path supports on that arch.
EmittedModule emitCuda(const AttentionPlan &plan, const std::string &arch,
                       int smemLimit = 0);

/// The backward module (SIMT, deterministic): Delta, then per branch a dQ
/// pass and a dK/dV pass, then the conversion of the fp32 accumulators.
EmittedModule emitCudaBackward(const AttentionPlan &plan, const std::string &arch);

/// Opt-in shared memory per block of an arch when no device is at hand.
int defaultSmemLimit(int smVersion);

/// "sm_90" -> 90; throws Error on anything else.
int parseArch(const std::string &arch);

} // namespace dattn
