// The runtime's front: bind a GPU, compile a spec for it (plan, emit, load
// through the kernel cache), size workspaces, and compile without a GPU.
// The runs themselves are in Forward.cpp and Backward.cpp.
#include "BranchStreams.h"
#include "Context.h"
#include "EmbeddedTemplates.h"
#include "KernelCache.h"
#include "Launch.h"
#include "Libraries.h"
#include "ModuleLoader.h"
#include "Nvrtc.h"
#include "Workspace.h"

#include "dattn/env.h"
#include "dattn/error.h"
#include "dattn/runtime.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

namespace dattn {

namespace {

/// The compiler part of the cache key: the version of the NVRTC that
/// serves this GPU's arch, and the options.
std::string compilerSignature(int sm) {
  std::string s = "nvrtc-" + rt::nvrtcVersionString(sm);
  for (const auto &o : rt::nvrtcOptions("sm_XX"))
    s += " " + o;
  return s;
}

} // namespace

std::string nvrtcVersion() { return rt::nvrtcVersionString(); }
std::vector<std::string> nvrtcArchs() { return rt::nvrtcSupportedArchs(rt::nvrtc()); }

namespace {

OfflineKernel compileModule(EmittedModule module, const std::string &name,
                            const std::string &arch) {
  OfflineKernel k;
  k.module = std::move(module);
  rt::CompileOutput out = rt::nvrtcCompile(k.module.source, "dattn_" + name, arch);
  k.ptx = std::move(out.ptx);
  k.cubin = std::move(out.cubin);
  k.compileSeconds = out.seconds;
  return k;
}

AttentionPlan planFor(const AttentionSpec &spec, const std::string &arch,
                      const PlanOptions &tiles) {
  PlanOptions po = tiles;
  po.arch = arch;
  return planAttention(spec, po);
}

} // namespace

OfflineKernel compileOffline(const AttentionSpec &spec, const std::string &arch,
                             const PlanOptions &tiles, bool backward, bool deterministic,
                             bool contiguous) {
  const AttentionPlan plan = planFor(spec, arch, tiles);
  return compileModule(backward ? emitCudaBackward(plan, arch, deterministic, 0, contiguous)
                                : emitCuda(plan, arch),
                       spec.name, arch);
}

OfflineKernel compileOfflineRing(const AttentionSpec &spec, const std::string &arch) {
  return compileModule(emitCudaRing(planFor(spec, arch, {}), arch), spec.name, arch);
}

std::vector<WarmedModule> warmKernelCache(const AttentionSpec &spec,
                                          const std::string &gpuArch, int smemBytes, const std::string &root, int threads) {
  // The GPU's arch ("sm_90", or "sm_90a" alike) becomes the one the
  // runtime compiles that GPU's kernels for.
  const Target target = Target::forGpu(Target::parse(gpuArch).sm, smemBytes);
  const std::string arch = target.arch();
  PlanOptions po; // as Runtime::compile plans, environment included
  po.arch = arch;
  po.smemBytes = target.smemBytes;
  po.families = env::preferredFamilies();
  po.splitUnions = env::splitUnions();
  const AttentionPlan plan = planAttention(spec, po);
  struct Job {
    std::string module, name;
    EmittedModule emitted;
  };
  // What Runtime::compile, loadBackward and prepareRing emit, in that order.
  std::vector<Job> jobs;
  jobs.push_back({"forward", "dattn_" + spec.name, emitCuda(plan, arch, target.smemBytes)});
  for (int mode = 0; mode < 2; ++mode)
    for (int variant = 0; variant < 2; ++variant) {
      try {
        jobs.push_back({std::string(mode ? "backward deterministic" : "backward") +
                            (variant ? ", contiguous" : ""),
                        "dattn_" + spec.name,
                        emitCudaBackward(plan, arch, mode == 1, target.smemBytes, variant == 1)});
      } catch (const Error &) {
        break; // a mode the target does not support: the runtime says so when asked
      }
    }
  jobs.push_back({"ring", "dattn_ring_" + spec.name, emitCudaRing(plan, arch, target.smemBytes)});

  std::string dir = root.empty() ? env::cacheRoot() : root;
  if (dir == "-" || dir.empty())
    throw Error("warming the kernel cache: the disk cache is off (DATTN_CACHE_DIR=-)");
  rt::LogFn log = [](const std::string &m) { std::fprintf(stderr, "dattn: %s\n", m.c_str()); };
  rt::KernelCache cache(dir, rt::nvrtcCompile, compilerSignature(target.sm), 8, log);
  std::vector<WarmedModule> out(jobs.size());
  std::vector<std::string> errors(jobs.size());
  // A module identical to an earlier one (e.g. SIMT kernels, which are
  // deterministic either way) is that one's entry: compiled once.
  std::vector<int> sameAs(jobs.size(), -1);
  for (size_t x = 0; x < jobs.size(); ++x)
    for (size_t y = 0; y < x && sameAs[x] < 0; ++y)
      if (sameAs[y] < 0 && jobs[y].name == jobs[x].name &&
          jobs[y].emitted.source == jobs[x].emitted.source)
        sameAs[x] = static_cast<int>(y);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t x = next++; x < jobs.size(); x = next++) {
      if (sameAs[x] >= 0)
        continue;
      try {
        auto k = cache.get(jobs[x].emitted.source, jobs[x].name, arch);
        out[x] = {jobs[x].module,
                  k->origin == rt::CachedKernel::Origin::Compiled ? "compiled" : "disk cache",
                  k->folder, k->compileSeconds};
      } catch (const std::exception &e) {
        errors[x] = e.what();
      }
    }
  };
  const unsigned wanted = threads > 0 ? threads : std::thread::hardware_concurrency();
  const unsigned n = std::max(1u, std::min<unsigned>(wanted, static_cast<unsigned>(jobs.size())));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < n; ++t)
    pool.emplace_back(work);
  work();
  for (std::thread &t : pool)
    t.join();
  for (size_t x = 0; x < jobs.size(); ++x) {
    if (!errors[x].empty())
      throw Error("attention '" + spec.name + "', " + jobs[x].module + " module for " + arch +
                  ": " + errors[x]);
    if (sameAs[x] >= 0) {
      out[x] = out[sameAs[x]];
      out[x].module = jobs[x].module;
      out[x].origin = "the " + jobs[sameAs[x]].module + " module";
      out[x].compileSeconds = 0;
    }
  }
  return out;
}

int Runtime::deviceCount() {
  try {
    int n = 0;
    if (rt::driver().deviceGetCount(&n) != CUDA_SUCCESS)
      return 0;
    return n;
  } catch (const Error &) {
    return 0;
  }
}

Runtime::Runtime(int device, RuntimeOptions options) : options_(std::move(options)) {
  const rt::Driver &d = rt::driver();
  int count = 0;
  rt::check(d.deviceGetCount(&count), "counting GPUs");
  if (device < 0 || device >= count)
    throw Error("GPU " + std::to_string(device) + " does not exist (the driver sees " +
                std::to_string(count) + ")");
  CUdevice dev;
  rt::check(d.deviceGet(&dev, device), "cuDeviceGet");
  char name[256] = {};
  d.deviceGetName(name, sizeof name, dev);
  int major = 0, minor = 0, sms = 0, smem = 0;
  d.deviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
  d.deviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
  d.deviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
  d.deviceGetAttribute(&smem, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev);
  size_t mem = 0;
  d.deviceTotalMem(&mem, dev);
  info_ = {device, name, major * 10 + minor, sms, smem, static_cast<int64_t>(mem)};
  try { // GPUs before sm_75 need NVRTC 12 beside NVRTC 13
    rt::nvrtcFor(info_.smVersion);
  } catch (const Error &e) {
    throw Error("GPU " + std::to_string(device) + " (" + info_.name + "): " + e.what());
  }
  CUcontext ctx;
  rt::check(d.primaryCtxRetain(&ctx, dev), "retaining the primary context of GPU " +
                                               std::to_string(device));
  context_ = ctx;
  makeCurrent();
  std::string root = options_.cacheDir.empty() ? env::cacheRoot() : options_.cacheDir;
  if (root == "-")
    root.clear();
  rt::LogFn log = [](const std::string &m) { std::fprintf(stderr, "dattn: %s\n", m.c_str()); };
  cache_ = std::make_unique<rt::KernelCache>(root, rt::nvrtcCompile,
                                             compilerSignature(info_.smVersion), 64,
                                             log);
}

Runtime::~Runtime() = default;

void Runtime::makeCurrent() const {
  rt::check(rt::driver().ctxSetCurrent(static_cast<CUcontext>(context_)),
            "making GPU " + std::to_string(info_.ordinal) + " current");
}

StageSignatures Runtime::tuningSignatures() const {
  TuningSignature s;
  s.gpu = info_.name;
  s.multiprocessors = info_.multiprocessors;
  s.sm = info_.smVersion;
  int v = 0;
  rt::driver().driverGetVersion(&v);
  s.driverMajor = v / 1000;
  s.nvrtc = rt::nvrtcVersionString(info_.smVersion);
  StageSignatures stages;
  stages.forward = stages.backward = s;
  stages.forward.templates = rt::kForwardTemplatesHash;
  stages.backward.templates = rt::kBackwardTemplatesHash;
  return stages;
}

const TuningLookup &Runtime::tuning() {
  std::lock_guard<std::mutex> lock(tuningMutex_);
  if (!tuning_) {
    tuning_ = std::make_unique<TuningLookup>(tuningSignatures(), env::tuningDatabase(),
                                             TuningLookup::shippedIn(env::shippedTuningFolder()));
    if (env::verbose())
      for (const std::string &r : tuning_->report())
        std::fprintf(stderr, "dattn: tuning database: %s\n", r.c_str());
  }
  return *tuning_;
}

std::unique_ptr<CompiledAttention> Runtime::compile(const AttentionSpec &spec,
                                                    const CompileOptions &options) {
  rt::ContextScope scope(context_);
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<CompiledAttention> c(new CompiledAttention());
  c->spec_ = spec;
  PlanOptions po = options_.tiles;
  po.families = env::preferredFamilies();
  po.splitUnions = env::splitUnions();
  const std::string arch = Target::forGpu(info_.smVersion, info_.smemOptinBytes).arch();
  po.arch = arch;
  po.smemBytes = info_.smemOptinBytes;
  c->plan_ = planAttention(spec, po);
  // Measured configurations for this N, where the databases hold some:
  // planned again with them (the families' choices otherwise stand).
  if (!options.kernels.empty()) {
    po.tuned = options.kernels;
    c->plan_ = planAttention(spec, po);
  } else if (options.seqLen > 0 && options_.tuningDatabases && po.tuned.empty()) {
    po.tuned = tunedKernels(c->plan_, Target::parse(po.arch, po.smemBytes), tuning(),
                            options.seqLen);
    if (!po.tuned.empty())
      c->plan_ = planAttention(spec, po);
  }
  c->module_ = emitCuda(c->plan_, arch, info_.smemOptinBytes);
  c->cache_ = cache_.get();
  c->context_ = context_;
  c->device_ = info_.ordinal;
  c->arch_ = arch;
  c->smemOptin_ = info_.smemOptinBytes;
  c->multiprocessors_ = info_.multiprocessors;
  const int waves = env::splitWaves(); // 0: unset
  c->splitWaves_ = waves > 0 ? waves : rt::kSplitWaves;
  // The backward modules are emitted now (text only, no NVRTC) so that
  // workspaceSizes() knows what they need; a mode no kernel supports on
  // this target says why when it is asked for.
  for (int mode = 0; mode < 2; ++mode) {
    try {
      for (int variant = 0; variant < 2; ++variant)
        c->backwardModules_[mode][variant] = emitCudaBackward(
            c->plan_, c->arch_, mode == 1, info_.smemOptinBytes, variant == 1);
    } catch (const Error &e) {
      c->backwardError_[mode] = e.what();
    }
  }
  c->forward_ = rt::loadModule(*cache_, c->module_, "dattn_" + spec.name, c->arch_, &c->report_);
  // Made here, not at the first run: a run may be captured into a CUDA graph.
  const int branches = static_cast<int>(c->plan_.branches.size());
  if (env::branchStreams() && branches > 1 && c->module_.branchesIndependent)
    c->branchStreams_ =
        std::make_unique<rt::BranchStreams>(std::min(branches - 1, rt::kMaxSideStreams));
  c->report_.loadSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (env::verbose())
    std::fprintf(stderr, "dattn: attention '%s' for %s: %s (cold compile %.2f s, load %.3f s)%s%s\n",
                 spec.name.c_str(), arch.c_str(), c->report_.origin.c_str(),
                 c->report_.coldCompileSeconds, c->report_.loadSeconds,
                 c->report_.cacheFolder.empty() ? "" : ", ", c->report_.cacheFolder.c_str());
  return c;
}

CompiledAttention::~CompiledAttention() {
  try {
    rt::ContextScope scope(context_);
    forward_.reset();
    for (auto &mode : backward_)
      for (auto &variant : mode)
        variant.reset();
    ring_.reset();
    branchStreams_.reset();
  } catch (...) {
    // Destructors do not throw; the process is ending or the driver is gone.
  }
}

WorkspaceSizes CompiledAttention::workspaceSizes(int64_t batch, int64_t seqLen) const {
  WorkspaceSizes w;
  const int64_t H = spec_.heads, D = spec_.headDim;
  w.forward = rt::forwardWorkspaceBytes(module_, batch, seqLen, H, D);
  for (int mode = 0; mode < 2; ++mode)
    if (backwardError_[mode].empty())
      w.backward = std::max(
          w.backward, rt::backwardWorkspace(backwardModules_[mode][0], batch, seqLen, H, D).bytes());
  return w;
}

void CompiledAttention::prepareBackward(bool deterministic) {
  for (int variant = 0; variant < 2; ++variant)
    loadBackward(deterministic ? 1 : 0, variant);
}

void CompiledAttention::loadBackward(int mode, int variant) {
  std::lock_guard<std::mutex> lock(loadMutex_);
  if (backward_[mode][variant])
    return;
  if (!backwardError_[mode].empty())
    throw Error("the backward pass of attention '" + spec_.name + "' on " + arch_ + ": " +
                backwardError_[mode]);
  rt::ContextScope scope(context_);
  CompileReport r;
  backward_[mode][variant] =
      rt::loadModule(*cache_, backwardModules_[mode][variant], "dattn_" + spec_.name, arch_, &r);
}

void CompiledAttention::prepareRing() {
  std::lock_guard<std::mutex> lock(loadMutex_);
  if (ring_)
    return;
  rt::ContextScope scope(context_);
  ringModule_ = emitCudaRing(plan_, arch_, smemOptin_);
  CompileReport r;
  ring_ = rt::loadModule(*cache_, ringModule_, "dattn_ring_" + spec_.name, arch_, &r);
}

} // namespace dattn
