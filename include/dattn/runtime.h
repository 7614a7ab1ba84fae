// dattn: compile a spec for a GPU and run it. CUDA is loaded at run time
// (dlopen), so this header has no CUDA types: streams and device pointers
// are void*.
//
//   dattn::Runtime rt(0);                          // GPU 0
//   auto attn = rt.compile(spec);                  // NVRTC + cache
//   dattn::ForwardArgs a;
//   a.batch = 1; a.seqLen = n; a.q = q; a.k = k; a.v = v; a.out = o; a.lse = lse;
//   attn->forward(a);                              // on a.stream
#pragma once

#include "dattn/compiler.h"
#include "dattn/emit.h"
#include "dattn/reference.h"
#include "dattn/spec.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dattn {

namespace rt {
class KernelCache;
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

/// Strides of a [batch, seq, heads, head_dim] tensor in elements; the last
/// dimension is contiguous. Zero means "contiguous layout".
struct Strides {
  int64_t batch = 0, row = 0, head = 0;
};

struct ForwardArgs {
  int64_t batch = 1;
  int64_t seqLen = 0;
  const void *q = nullptr; ///< [batch, seq, heads, head_dim], spec dtype
  const void *k = nullptr; ///< [batch, seq, kv_heads, head_dim]
  const void *v = nullptr; ///< [batch, seq, kv_heads, head_dim]
  void *out = nullptr;     ///< [batch, seq, heads, head_dim]
  float *lse = nullptr;    ///< [batch, heads, seq], fp32, contiguous
  Strides qStrides, kStrides, vStrides, outStrides;
  const BlockMask *mask = nullptr; ///< host BSR mask, iff the spec has block_mask
  void *stream = nullptr;          ///< CUstream; nullptr = the default stream
};

/// Arguments of the backward pass. Every tensor is contiguous, laid out as
/// in ForwardArgs; out and lse are the forward pass's outputs.
struct BackwardArgs {
  int64_t batch = 1;
  int64_t seqLen = 0;
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  const void *out = nullptr; ///< O from forward
  const float *lse = nullptr; ///< LSE from forward
  const void *dout = nullptr; ///< upstream gradient, like out
  void *dq = nullptr;         ///< like q
  void *dk = nullptr;         ///< like k (summed over the query heads of a kv head)
  void *dv = nullptr;         ///< like v
  const BlockMask *mask = nullptr;
  void *stream = nullptr;
  /// Bit-identical gradients run to run: dQ gets its own pass instead of
  /// fp32 reductions from the dK/dV kernel (slower on tensor cores; the
  /// SIMT path is always deterministic).
  bool deterministic = false;
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

  /// Validates every argument (shapes, alignment, device pointers, mask),
  /// throwing ArgumentError that names the argument, then launches on
  /// args.stream. Not thread-safe per object (it owns a workspace).
  void forward(const ForwardArgs &args);

  /// dq, dk, dv. The first call of each mode compiles its backward module
  /// (through the same cache). With args.deterministic, two calls on the
  /// same inputs give bit-identical gradients. Extra memory: Delta and the
  /// fp32 accumulators the module needs, O(N) (no N x N term).
  void backward(const BackwardArgs &args);

  const AttentionSpec &spec() const { return spec_; }
  const AttentionPlan &plan() const { return plan_; }
  const EmittedModule &module() const { return module_; }
  const CompileReport &report() const { return report_; }
  /// Extra device memory the forward pass holds (the kMerge accumulator).
  int64_t workspaceBytes() const { return workspaceBytes_; }
  /// Extra device memory the backward pass holds (accumulators and Delta).
  int64_t backwardWorkspaceBytes() const { return backwardWorkspaceBytes_; }

private:
  friend class Runtime;
  CompiledAttention() = default;
  void validate(const ForwardArgs &a) const;
  void loadModule(const EmittedModule &m, void **module, std::vector<void *> &functions,
                  CompileReport &report);
  /// The BSR mask in device memory (rows then columns), reusing one buffer.
  const long long *uploadMask(const BlockMask &mask);

  rt::KernelCache *cache_ = nullptr; ///< the Runtime's; it outlives this object
  int smemOptin_ = 0;
  std::string arch_;
  // Backward modules, [0] default and [1] deterministic, built on first use.
  EmittedModule backwardModules_[2];
  void *cuBackwardModules_[2] = {nullptr, nullptr};
  std::vector<void *> backwardFunctions_[2];
  void *backwardWorkspace_ = nullptr;
  int64_t backwardWorkspaceBytes_ = 0;

  AttentionSpec spec_;
  AttentionPlan plan_;
  EmittedModule module_;
  CompileReport report_;
  void *cuModule_ = nullptr;
  std::vector<void *> functions_; ///< CUfunction per module_.kernels entry
  void *workspace_ = nullptr;
  int64_t workspaceBytes_ = 0;
  void *maskDevice_ = nullptr;
  int64_t maskBytes_ = 0;
};

struct RuntimeOptions {
  std::string cacheDir; ///< "" = env::cacheRoot(); "-" = no disk cache
  PlanOptions tiles;
};

class Runtime {
public:
  /// Binds GPU `device` (its primary context). Throws Error if the driver,
  /// NVRTC or the device is missing.
  explicit Runtime(int device = 0, RuntimeOptions options = {});
  ~Runtime();

  const DeviceInfo &device() const { return info_; }
  std::unique_ptr<CompiledAttention> compile(const AttentionSpec &spec);

  /// The number of GPUs the driver sees (0 without a driver or GPU).
  static int deviceCount();

private:
  DeviceInfo info_;
  RuntimeOptions options_;
  void *context_ = nullptr;
  std::unique_ptr<rt::KernelCache> cache_;
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
                             bool deterministic = false);

/// NVRTC's version ("13.0") and the archs it targets.
std::string nvrtcVersion();
std::vector<std::string> nvrtcArchs();

} // namespace dattn

namespace dattn {

/// Device memory owned by the caller's code (tests, the CLI, benchmarks).
class DeviceBuffer {
public:
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  void *data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  void upload(const void *host, size_t bytes);
  void download(void *host, size_t bytes) const;
  /// Fills with a 32-bit pattern (e.g. NaN bits to poison outputs).
  void fill32(uint32_t pattern);

private:
  void *ptr_ = nullptr;
  size_t bytes_ = 0;
};

/// Host conversions between float32 and a spec dtype's storage (fp16 and
/// bf16 round to nearest even; fp32 is copied).
std::vector<char> encode(const float *values, size_t count, DType dtype);
void decode(const void *data, size_t count, DType dtype, float *values);

/// Times `fn` (which enqueues work on the default stream) with CUDA events:
/// `warmup` untimed calls, then the median of `iters` timed ones, in ms.
double timeMedianMs(const std::function<void(int)> &fn, int warmup, int iters);

/// Waits for the device and turns an asynchronous fault into an Error.
void synchronize(const std::string &what);

} // namespace dattn

namespace dattn {

/// What `dattn info` prints; each part carries why it is unavailable.
struct SystemInfo {
  std::string driverVersion, driverError, driverLibrary;
  std::string nvrtcVersion, nvrtcError, nvrtcLibrary;
  std::vector<std::string> nvrtcArchs;
  std::vector<DeviceInfo> devices;
  std::string cacheFolder;
};
SystemInfo querySystem();

} // namespace dattn

namespace dattn {

/// Host float32 arrays in and out, for tools and tests: encodes the inputs
/// to the spec's dtype and uploads them, allocates the outputs poisoned with
/// NaN (an unwritten element cannot pass a check), runs, reads back.
class HostForward {
public:
  HostForward(CompiledAttention &attn, int64_t batch, int64_t seqLen, const float *q,
              const float *k, const float *v, const BlockMask *mask = nullptr);
  /// One forward on the default stream.
  void run() { attn_.forward(args_); }
  /// Waits, then decodes O [batch, seq, heads, head_dim] and LSE [batch, heads, seq].
  void read(std::vector<float> &out, std::vector<float> &lse);
  /// The backward pass for upstream gradient `dout` (host, float32, like O),
  /// on gradients poisoned with NaN; readGradients() waits and decodes.
  void backward(const float *dout, bool deterministic = false);
  void readGradients(std::vector<float> &dq, std::vector<float> &dk, std::vector<float> &dv);
  /// dout as the GPU sees it (rounded to the dtype).
  const std::vector<float> &dout() const { return doutRounded_; }

  /// The inputs as the GPU sees them (rounded to the dtype), for a reference.
  const std::vector<float> &q() const { return q_; }
  const std::vector<float> &k() const { return k_; }
  const std::vector<float> &v() const { return v_; }
  int64_t inputBytes() const;
  int64_t outputBytes() const;

private:
  CompiledAttention &attn_;
  std::vector<float> q_, k_, v_;
  std::unique_ptr<DeviceBuffer> qDev_, kDev_, vDev_, outDev_, lseDev_;
  ForwardArgs args_;
  std::vector<float> doutRounded_;
  std::unique_ptr<DeviceBuffer> gradOut_, gradQ_, gradK_, gradV_;
  BackwardArgs bargs_;
};

} // namespace dattn
