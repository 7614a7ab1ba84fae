// dattn: compile a spec for a GPU and run it. CUDA is loaded at run time
// (dlopen), so this header has no CUDA types: streams and device pointers
// are void*. The lifecycle is plan, then run:
//
//   dattn::Runtime rt(0);                              // GPU 0
//   auto attn = rt.compile(spec);                      // NVRTC + cache
//   dattn::WorkspaceSizes ws = attn->workspaceSizes(batch, n);
//   // ... allocate ws.forward bytes of device memory (the caller owns it)
//   dattn::ForwardArgs a;
//   a.q = dattn::TensorDesc::contiguous(q, dattn::DType::BF16, {batch, n, 12, 128});
//   ...                                                // k, v, out, lse
//   a.workspace = {ws_ptr, ws.forward};
//   attn->forward(a);                                  // on a.stream
//
// A run validates its arguments, makes the attention's context current for
// the call, enqueues on the caller's stream and returns: it allocates
// nothing, never waits for the GPU, and may run concurrently on several
// streams (each with its own workspace) and under CUDA-graph capture.
// dattn/host.h has helpers that allocate (for tools and tests).
#pragma once

#include "dattn/compiler.h"
#include "dattn/emit.h"
#include "dattn/reference.h"
#include "dattn/spec.h"
#include "dattn/tensor.h"
#include "dattn/tuning.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace dattn {

namespace rt {
class BranchStreams;
class KernelCache;
struct LoadedModule;
class RankRun;
}

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int smVersion = 0; ///< e.g. 90
  int multiprocessors = 0;
  int smemOptinBytes = 0; ///< per-block shared memory after opt-in
  int64_t memoryBytes = 0;
  std::string arch() const { return "sm_" + std::to_string(smVersion); }
};

/// One forward run. Shapes: q and out [B, N, heads, head_dim], k and v
/// [B, N, kv_heads, head_dim], all in the spec's dtype, any strides whose
/// last is 1 and whose others are multiples of 16 bytes; lse [B, heads, N]
/// fp32, contiguous. B and N are read from q.
struct ForwardArgs {
  TensorDesc q, k, v, out, lse;
  DeviceBlockMask mask; ///< required iff the spec has a block_mask pattern
  Workspace workspace;  ///< at least workspaceSizes(B, N).forward bytes
  void *stream = nullptr; ///< CUstream; nullptr = the default stream
};

/// One backward run: q, k, v, out and lse as given to (and returned by) the
/// forward; dout, dq like q; dk, dv like k (dk and dv summed over the query
/// heads of each kv head). Every tensor has its own strides.
struct BackwardArgs {
  TensorDesc q, k, v, out, lse, dout, dq, dk, dv;
  DeviceBlockMask mask;
  Workspace workspace; ///< at least workspaceSizes(B, N).backward bytes
  void *stream = nullptr;
  /// Bit-identical gradients run to run: dQ gets its own pass instead of
  /// fp32 reductions from the dK/dV kernel (slower on tensor cores; the
  /// SIMT path is always deterministic).
  bool deterministic = false;
};

/// Device memory a run needs for (batch, N), in bytes (0: pass no workspace).
struct WorkspaceSizes {
  int64_t forward = 0;  ///< the fp32 O accumulator when a head is in several branches
  int64_t backward = 0; ///< Delta and the fp32 gradient accumulators, either mode
};

/// How the kernels of a compiled attention were obtained.
struct CompileReport {
  double coldCompileSeconds = 0; ///< NVRTC time of the compile that made the cubin
  double loadSeconds = 0;        ///< this process: cache lookup + module load
  std::string origin;            ///< "compiled", "disk cache" or "memory cache"
  std::string cacheFolder;
};

class CompiledAttention {
public:
  ~CompiledAttention();
  CompiledAttention(const CompiledAttention &) = delete;
  CompiledAttention &operator=(const CompiledAttention &) = delete;

  /// Workspace sizes for (batch, seqLen); no GPU work.
  WorkspaceSizes workspaceSizes(int64_t batch, int64_t seqLen) const;

  /// Validates every argument (dtype, shape, strides, alignment, device,
  /// workspace, mask), throwing ArgumentError that names the argument and
  /// the expected and actual values, then enqueues on args.stream.
  /// Thread-safe; allocates nothing; does not wait for the GPU.
  void forward(const ForwardArgs &args) const;

  /// Compiles and loads the backward kernels of one mode now (the first
  /// backward() of a mode does it otherwise), both variants: the one for
  /// contiguous tensors and the general one. Call it before capturing a
  /// backward into a CUDA graph: a capture cannot load modules.
  void prepareBackward(bool deterministic);

  /// dq, dk, dv. Thread-safe once the mode is prepared. With
  /// args.deterministic, two calls on the same inputs give bit-identical
  /// gradients. Extra memory: the caller's workspace, O(N) (no N x N term).
  void backward(const BackwardArgs &args);

  /// Compiles and loads the ring module (what one rank of a ring runs,
  /// emitCudaRing) now; the first ring run does it otherwise.
  void prepareRing();

  const AttentionSpec &spec() const { return spec_; }
  const AttentionPlan &plan() const { return plan_; }
  const EmittedModule &module() const { return module_; }
  const CompileReport &report() const { return report_; }
  int device() const { return device_; }
  /// The CUcontext the kernels run in (the GPU's primary context).
  void *context() const { return context_; }
  /// Whether independent branch kernels run side by side on streams of
  /// their own (the default; DATTN_BRANCH_STREAMS=0 when compiled turns it
  /// off; rt::BranchStreams).
  bool branchStreams() const { return branchStreams_ != nullptr; }

private:
  friend class Runtime;
  friend class rt::RankRun;
  CompiledAttention() = default;

  rt::KernelCache *cache_ = nullptr; ///< the Runtime's; it outlives this object
  void *context_ = nullptr;          ///< CUcontext of the GPU (its primary context)
  int device_ = 0;
  int smemOptin_ = 0;
  int multiprocessors_ = 0; ///< the GPU's SMs: how many CTAs fill it
  int splitWaves_ = 8;      ///< DATTN_SPLIT_WAVES when compiled, else rt::kSplitWaves
  std::string arch_;
  AttentionSpec spec_;
  AttentionPlan plan_;
  EmittedModule module_;
  CompileReport report_;
  std::unique_ptr<rt::LoadedModule> forward_;
  // Backward modules, [mode][variant]: mode 0 default, 1 deterministic;
  // variant 0 general strides, 1 every tensor contiguous (the strides are
  // then compile-time expressions: fewer registers in the dK/dV kernel).
  // Emitted at compile time (their workspace needs are known up front),
  // loaded on first use.
  EmittedModule backwardModules_[2][2];
  std::string backwardError_[2]; ///< why a mode has no module on this target
  std::unique_ptr<rt::LoadedModule> backward_[2][2];
  /// Loads backward module [mode][variant] if it is not loaded yet.
  void loadBackward(int mode, int variant);
  EmittedModule ringModule_; ///< emitted with the ring module's first use
  std::unique_ptr<rt::LoadedModule> ring_;
  /// Side streams for independent branch kernels (several branches, each
  /// head in one, DATTN_BRANCH_STREAMS not 0 at compile time); null
  /// otherwise.
  std::unique_ptr<rt::BranchStreams> branchStreams_;
  std::mutex loadMutex_;
};

struct RuntimeOptions {
  std::string cacheDir; ///< "" = env::cacheRoot(); "-" = no disk cache
  PlanOptions tiles;
  /// Consult the tuning databases (the user's, DATTN_TUNING_DB, then the
  /// shipped ones) when compile() is told the sequence length.
  bool tuningDatabases = true;
};

struct CompileOptions {
  CompileOptions() = default;
  explicit CompileOptions(int64_t seqLen_) : seqLen(seqLen_) {}
  /// The sequence length the attention will mostly run at: the tuning
  /// databases' configurations for its bucket replace the heuristic's
  /// (0: the heuristic). Any N still runs; only the speed depends on it.
  int64_t seqLen = 0;
  /// Configurations to use instead (the autotuner's candidates): with any,
  /// the tuning databases are not consulted.
  std::vector<TunedKernel> kernels;
};

class Runtime {
public:
  /// Binds GPU `device` (its primary context) and makes that context
  /// current on the calling thread. Throws Error if the driver, NVRTC or the
  /// device is missing.
  explicit Runtime(int device = 0, RuntimeOptions options = {});
  ~Runtime();

  /// Makes this GPU's context current on the calling thread, for the
  /// caller's own allocations and streams (dattn's calls do it themselves).
  void makeCurrent() const;

  const DeviceInfo &device() const { return info_; }
  std::unique_ptr<CompiledAttention> compile(const AttentionSpec &spec,
                                             const CompileOptions &options = {});

  /// What the tuning databases' configurations depended on, for this GPU,
  /// per stage (each with the hash of the templates its modules include).
  StageSignatures tuningSignatures() const;
  /// The databases compile() consults (loaded on first use; what was
  /// skipped is in its report()).
  const TuningLookup &tuning();

  /// The number of GPUs the driver sees (0 without a driver or GPU).
  static int deviceCount();

private:
  DeviceInfo info_;
  RuntimeOptions options_;
  void *context_ = nullptr;
  std::unique_ptr<rt::KernelCache> cache_;
  std::unique_ptr<TuningLookup> tuning_;
  std::mutex tuningMutex_;
};

/// Compiles without a GPU: the module's source, PTX and cubin for `arch`.
struct OfflineKernel {
  EmittedModule module;
  std::string ptx;
  std::vector<char> cubin;
  double compileSeconds = 0;
};
OfflineKernel compileOffline(const AttentionSpec &spec, const std::string &arch,
                             const PlanOptions &tiles = {}, bool backward = false,
                             bool deterministic = false, bool contiguous = false);
/// The same for the ring module (emitCudaRing): what one rank of a ring runs.
OfflineKernel compileOfflineRing(const AttentionSpec &spec, const std::string &arch);

/// Fills a kernel cache without a GPU with every module a Runtime on a GPU
/// of `gpuArch` ("sm_90" for an H100; the modules compile for what the
/// runtime compiles that GPU's kernels for, Target::forGpu: sm_90a) with `smemBytes` of opt-in shared memory (0: the arch's usual limit)
/// compiles for `spec` with the heuristic configurations: the forward, each
/// backward mode and variant the target supports, and the ring module.
/// `root` "" is the runtime's cache (DATTN_CACHE_DIR). A GPU of that arch
/// then loads them from disk instead of compiling (deployments, CI, a
/// cluster's shared cache). Modules compile on `threads` host threads.
struct WarmedModule {
  std::string module;   ///< "forward", "backward", "backward deterministic", "ring", ...
  std::string origin;   ///< "compiled", "disk cache" (already there), or "the X module" (identical)
  std::string folder;   ///< its cache entry
  double compileSeconds = 0;
};
std::vector<WarmedModule> warmKernelCache(const AttentionSpec &spec,
                                          const std::string &gpuArch, int smemBytes = 0, const std::string &root = "",
                                          int threads = 0);

/// Folders searched for libnvrtc and libnccl after the copies this process
/// has already loaded (torch's, say) and before CUDA_HOME and the system's:
/// e.g. the NVIDIA wheels' lib folders, which the Python package adds on
/// import. A library already loaded stays; add folders before the first
/// compile (or ring) to have them used.
void addLibraryDirs(const std::vector<std::string> &dirs);
std::vector<std::string> libraryDirs();

/// The version ("13.0") of the NVRTC of current GPUs (sm_75 and newer) and
/// the archs it targets.
std::string nvrtcVersion();
std::vector<std::string> nvrtcArchs();

} // namespace dattn

namespace dattn {

/// One NVRTC: its version, library and targets, or why it is unavailable.
struct NvrtcInfo {
  std::string version, library, error;
  std::vector<std::string> archs;
};

/// What `dattn info` prints; each part carries why it is unavailable.
struct SystemInfo {
  std::string driverVersion, driverError, driverLibrary;
  std::string nvrtcVersion, nvrtcError, nvrtcLibrary; ///< the NVRTC of sm_75 and newer
  std::vector<std::string> nvrtcArchs;
  NvrtcInfo nvrtc13, nvrtc12; ///< each NVRTC dattn can load (12 serves GPUs before sm_75)
  std::vector<DeviceInfo> devices;
  std::string cacheFolder;
  /// Of the templates the forward's / the backward's modules include (the
  /// tuning entries of that stage carry it).
  std::string forwardTemplatesHash, backwardTemplatesHash;
};
SystemInfo querySystem();

} // namespace dattn

