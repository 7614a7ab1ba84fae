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
  // Backward modules only.
  bool gradientsDirect = false; ///< branch kernels write dq/dk/dv in the dtype
  bool atomicDq = false;        ///< dQ added with fp32 reductions (not deterministic)
  int gradientFinalize = 0;     ///< bwd::FinalizeWhat bits the finalize kernel converts
};

/// `arch` is "sm_XY". `smemLimit` is the per-block opt-in shared memory of
/// the target (bytes); tiles shrink until they fit. Throws Error for head
/// dims or shapes no path supports on that arch.
EmittedModule emitCuda(const AttentionPlan &plan, const std::string &arch,
                       int smemLimit = 0);

/// The backward module: Delta, then per branch a dK/dV kernel and (SIMT, or
/// when `deterministic`) a dQ kernel, then the conversion of the fp32
/// accumulators. Tensor cores (fp16/bf16, sm_80+, head_dim <= 128) fuse dQ
/// into the dK/dV kernel with fp32 reductions unless `deterministic`; the
/// SIMT path is always deterministic.
EmittedModule emitCudaBackward(const AttentionPlan &plan, const std::string &arch,
                               bool deterministic = false, int smemLimit = 0);

/// Opt-in shared memory per block of an arch when no device is at hand.
int defaultSmemLimit(int smVersion);

/// "sm_90" -> 90; throws Error on anything else.
int parseArch(const std::string &arch);

} // namespace dattn
