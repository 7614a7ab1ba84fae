// The public runtime: compile a spec for a device (plan, emit, NVRTC through
// the kernel cache, load), validate forward arguments, launch.
#include "KernelCache.h"
#include "Libraries.h"
#include "Nvrtc.h"

#include "dattn/env.h"
#include "dattn/error.h"
#include "dattn/runtime.h"

#include "dattn/params.cuh"
#include "dattn/backward_params.cuh"
#include "dattn/tile_plan.cuh"

#include <chrono>
#include <cstdio>
#include <sstream>

namespace dattn {

namespace {

std::string hexPointer(const void *p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

int elementBytes(DType t) { return t == DType::F32 ? 4 : 2; }

/// Makes *ptr hold at least `need` bytes of device memory, reallocating
/// (contents lost) only when it must grow; *bytes tracks its size.
void growDeviceBuffer(void **ptr, int64_t *bytes, int64_t need, const std::string &what) {
  if (need <= *bytes)
    return;
  const rt::Driver &d = rt::driver();
  if (*ptr)
    d.memFree(reinterpret_cast<CUdeviceptr>(*ptr));
  *ptr = nullptr;
  *bytes = 0;
  CUdeviceptr p;
  rt::check(d.memAlloc(&p, need), "allocating " + std::to_string(need >> 20) + " MiB for " + what);
  *ptr = reinterpret_cast<void *>(p);
  *bytes = need;
}

std::string compilerSignature() {
  std::string s = "nvrtc-" + rt::nvrtcVersionString();
  for (const auto &o : rt::nvrtcOptions("sm_XX"))
    s += " " + o;
  return s;
}

} // namespace

std::string nvrtcVersion() { return rt::nvrtcVersionString(); }
std::vector<std::string> nvrtcArchs() { return rt::nvrtcSupportedArchs(); }

OfflineKernel compileOffline(const AttentionSpec &spec, const std::string &arch,
                             const PlanOptions &tiles, bool backward, bool deterministic) {
  OfflineKernel k;
  AttentionPlan plan = planAttention(spec, tiles);
  k.module = backward ? emitCudaBackward(plan, arch, deterministic) : emitCuda(plan, arch);
  rt::CompileOutput out = rt::nvrtcCompile(k.module.source, "dattn_" + spec.name, arch);
  k.ptx = std::move(out.ptx);
  k.cubin = std::move(out.cubin);
  k.compileSeconds = out.seconds;
  return k;
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
  if (info_.smVersion < 75)
    throw Error("GPU " + std::to_string(device) + " (" + info_.name + ", sm_" +
                std::to_string(info_.smVersion) +
                ") is too old: NVRTC 13 compiles for sm_75 and newer; Pascal would need the "
                "NVRTC of CUDA 12 or older");
  CUcontext ctx;
  rt::check(d.primaryCtxRetain(&ctx, dev), "retaining the primary context of GPU " +
                                               std::to_string(device));
  rt::check(d.ctxSetCurrent(ctx), "making GPU " + std::to_string(device) + " current");
  context_ = ctx;
  std::string root = options_.cacheDir.empty() ? env::cacheRoot() : options_.cacheDir;
  if (root == "-")
    root.clear();
  rt::LogFn log = [](const std::string &m) { std::fprintf(stderr, "dattn: %s\n", m.c_str()); };
  cache_ = std::make_unique<rt::KernelCache>(root, rt::nvrtcCompile, compilerSignature(), 64,
                                             log);
}

Runtime::~Runtime() = default;

std::unique_ptr<CompiledAttention> Runtime::compile(const AttentionSpec &spec) {
  const rt::Driver &d = rt::driver();
  rt::check(d.ctxSetCurrent(static_cast<CUcontext>(context_)), "making the GPU current");
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<CompiledAttention> c(new CompiledAttention());
  c->spec_ = spec;
  c->plan_ = planAttention(spec, options_.tiles);
  c->module_ = emitCuda(c->plan_, info_.arch(), info_.smemOptinBytes);
  c->cache_ = cache_.get();
  c->arch_ = info_.arch();
  c->smemOptin_ = info_.smemOptinBytes;
  c->loadModule(c->module_, &c->cuModule_, c->functions_, c->report_);
  c->report_.loadSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (env::verbose())
    std::fprintf(stderr, "dattn: attention '%s' for %s: %s (cold compile %.2f s, load %.3f s)%s%s\n",
                 spec.name.c_str(), info_.arch().c_str(), c->report_.origin.c_str(),
                 c->report_.coldCompileSeconds, c->report_.loadSeconds,
                 c->report_.cacheFolder.empty() ? "" : ", ", c->report_.cacheFolder.c_str());
  return c;
}

const long long *CompiledAttention::uploadMask(const BlockMask &mask) {
  const rt::Driver &d = rt::driver();
  std::vector<long long> packed(mask.rowOffsets.begin(), mask.rowOffsets.end());
  packed.insert(packed.end(), mask.colIndices.begin(), mask.colIndices.end());
  const int64_t bytes = static_cast<int64_t>(packed.size() * sizeof(long long));
  growDeviceBuffer(&maskDevice_, &maskBytes_, bytes, "the block mask");
  // A synchronous copy: the kernels that read it are launched after it.
  rt::check(d.memcpyHtoD(reinterpret_cast<CUdeviceptr>(maskDevice_), packed.data(), bytes),
            "uploading the block mask");
  return static_cast<const long long *>(maskDevice_);
}

void CompiledAttention::loadModule(const EmittedModule &m, void **module,
                                   std::vector<void *> &functions, CompileReport &report) {
  const rt::Driver &d = rt::driver();
  auto kernel = cache_->get(m.source, "dattn_" + spec_.name, arch_);
  CUmodule mod;
  rt::check(d.moduleLoadData(&mod, kernel->cubin.data()),
            "loading a module of attention '" + spec_.name + "'");
  *module = mod;
  for (const auto &k : m.kernels) {
    CUfunction f;
    rt::check(d.moduleGetFunction(&f, mod, k.name.c_str()), "finding kernel " + k.name);
    if (k.smemBytes > 48 * 1024)
      rt::check(d.funcSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                   k.smemBytes),
                "raising the shared memory limit of " + k.name + " to " +
                    std::to_string(k.smemBytes) + " bytes");
    functions.push_back(f);
  }
  report.coldCompileSeconds = kernel->compileSeconds;
  report.origin = kernel->origin == rt::CachedKernel::Origin::Compiled ? "compiled"
                  : kernel->origin == rt::CachedKernel::Origin::Disk   ? "disk cache"
                                                                       : "memory cache";
  report.cacheFolder = kernel->folder;
}

CompiledAttention::~CompiledAttention() {
  try {
    const rt::Driver &d = rt::driver();
    if (backwardWorkspace_)
      d.memFree(reinterpret_cast<CUdeviceptr>(backwardWorkspace_));
    for (void *m : cuBackwardModules_)
      if (m)
        d.moduleUnload(static_cast<CUmodule>(m));
    if (workspace_)
      d.memFree(reinterpret_cast<CUdeviceptr>(workspace_));
    if (maskDevice_)
      d.memFree(reinterpret_cast<CUdeviceptr>(maskDevice_));
    if (cuModule_)
      d.moduleUnload(static_cast<CUmodule>(cuModule_));
  } catch (...) {
    // Destructors do not throw; the process is ending or the driver is gone.
  }
}

namespace {

Strides resolve(const Strides &s, int64_t seqLen, int heads, int headDim) {
  Strides r = s;
  if (r.head == 0)
    r.head = headDim;
  if (r.row == 0)
    r.row = static_cast<int64_t>(heads) * headDim;
  if (r.batch == 0)
    r.batch = seqLen * r.row;
  return r;
}

} // namespace

void CompiledAttention::validate(const ForwardArgs &a) const {
  const std::string where = "forward(attention '" + spec_.name + "'): ";
  auto need = [&](bool ok, const std::string &msg) {
    if (!ok)
      throw ArgumentError(where + msg);
  };
  need(a.batch >= 1 && a.batch <= 65535,
       "batch must be in [1, 65535], got " + std::to_string(a.batch));
  need(a.seqLen >= 1 && a.seqLen <= (int64_t(1) << 31),
       "seqLen must be in [1, 2^31], got " + std::to_string(a.seqLen));
  const rt::Driver &d = rt::driver();
  const int eb = elementBytes(spec_.dtype);
  // cp.async moves 16 bytes; rows and heads must start on 16-byte boundaries.
  const int64_t strideUnit = 16 / eb;
  auto tensor = [&](const char *name, const void *p, const Strides &s, int heads) {
    need(p != nullptr, std::string(name) + " is null");
    need(reinterpret_cast<uintptr_t>(p) % 16 == 0,
         std::string(name) + " at " + hexPointer(p) +
             " is not 16-byte aligned (kernels load 16 bytes at a time)");
    Strides r = resolve(s, a.seqLen, heads, spec_.headDim);
    for (auto [label, v] : {std::pair<const char *, int64_t>{"batch", r.batch},
                            {"row", r.row},
                            {"head", r.head}})
      need(v > 0 && v % strideUnit == 0,
           std::string(name) + " " + label + " stride " + std::to_string(v) +
               " must be a positive multiple of " + std::to_string(strideUnit) +
               " elements (16 bytes of " + toString(spec_.dtype) + ")");
    unsigned type = 0;
    CUresult res = d.pointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                                         reinterpret_cast<CUdeviceptr>(p));
    need(res == CUDA_SUCCESS && (type == CU_MEMORYTYPE_DEVICE || type == CU_MEMORYTYPE_UNIFIED),
         std::string(name) + " at " + hexPointer(p) +
             " is not GPU memory (host memory must be copied to the device first)");
  };
  tensor("q", a.q, a.qStrides, spec_.heads);
  tensor("k", a.k, a.kStrides, spec_.kvHeads);
  tensor("v", a.v, a.vStrides, spec_.kvHeads);
  tensor("out", a.out, a.outStrides, spec_.heads);
  need(a.lse != nullptr, "lse is null");
  need(reinterpret_cast<uintptr_t>(a.lse) % 4 == 0, "lse is not 4-byte aligned");
  if (spec_.needsBlockMask()) {
    need(a.mask != nullptr, "the spec has a block_mask pattern: args.mask is required");
    need(a.mask->block == spec_.blockMaskBlock(),
         "mask block size " + std::to_string(a.mask->block) + " differs from the spec's " +
             std::to_string(spec_.blockMaskBlock()));
    try {
      a.mask->validate(a.seqLen);
    } catch (const ArgumentError &e) {
      throw ArgumentError(where + e.what());
    }
  }
}

void CompiledAttention::forward(const ForwardArgs &a) {
  validate(a);
  const rt::Driver &d = rt::driver();
  const int D = spec_.headDim;
  fwd::Params p{};
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.o = a.out;
  p.lse = a.lse;
  p.seqLen = a.seqLen;
  Strides q = resolve(a.qStrides, a.seqLen, spec_.heads, D);
  Strides k = resolve(a.kStrides, a.seqLen, spec_.kvHeads, D);
  Strides v = resolve(a.vStrides, a.seqLen, spec_.kvHeads, D);
  Strides o = resolve(a.outStrides, a.seqLen, spec_.heads, D);
  p.qBatch = q.batch, p.qRow = q.row, p.qHead = q.head;
  p.kBatch = k.batch, p.kRow = k.row, p.kHead = k.head;
  p.vBatch = v.batch, p.vRow = v.row, p.vHead = v.head;
  p.oBatch = o.batch, p.oRow = o.row, p.oHead = o.head;
  p.heads = spec_.heads;
  p.groupSize = spec_.heads / spec_.kvHeads;
  p.scale = static_cast<float>(plan_.scale);
  CUstream stream = static_cast<CUstream>(a.stream);

  if (module_.mergeMode) {
    growDeviceBuffer(&workspace_, &workspaceBytes_, a.batch * a.seqLen * spec_.heads * D * 4,
                     "the fp32 accumulator of attention '" + spec_.name + "'");
    p.oAcc = static_cast<float *>(workspace_);
  }
  if (a.mask) {
    p.maskRows = uploadMask(*a.mask);
    p.maskCols = p.maskRows + a.mask->rowOffsets.size();
  }

  long long batch = a.batch;
  // Contiguous outputs are initialized with memsets at full bandwidth (0 is
  // +0.0 in every dtype; 0xff800000 is -inf); the init kernel handles
  // strided outputs.
  const bool contiguousOut = o.head == D && o.row == int64_t(spec_.heads) * D &&
                             o.batch == a.seqLen * o.row;
  for (size_t x = 0; x < module_.kernels.size(); ++x) {
    const KernelInfo &ki = module_.kernels[x];
    CUfunction f = static_cast<CUfunction>(functions_[x]);
    if (ki.role == KernelRole::Init && (module_.mergeMode || contiguousOut)) {
      const size_t elems = static_cast<size_t>(batch * a.seqLen * spec_.heads * D);
      const size_t words = module_.mergeMode ? elems
                                             : elems * static_cast<size_t>(elementBytes(spec_.dtype)) / 4;
      CUdeviceptr target = reinterpret_cast<CUdeviceptr>(module_.mergeMode ? p.oAcc : a.out);
      rt::check(d.memsetD32Async(target, 0u, words, stream), "clearing the output");
      rt::check(d.memsetD32Async(reinterpret_cast<CUdeviceptr>(a.lse), 0xff800000u,
                                 static_cast<size_t>(batch * spec_.heads * a.seqLen), stream),
                "setting LSE to -inf");
      continue;
    }
    unsigned gx = 1, gy = 1, gz = 1;
    void *args2[] = {&p, &batch};
    void *args1[] = {&p};
    void **args = args2;
    if (ki.role != KernelRole::Branch) {
      long long total = batch * a.seqLen * spec_.heads * D;
      gx = static_cast<unsigned>(std::min<long long>((total + ki.threads - 1) / ki.threads,
                                                     int64_t(65535) * 16));
    } else {
      const BranchPlan &b = plan_.branches[ki.branch];
      args = args1;
      gy = static_cast<unsigned>(b.heads.size());
      gz = static_cast<unsigned>(batch);
      if (ki.path == KernelPath::Mma && b.kind == BranchKind::Strided) {
        int64_t w = plan::segmentLength(b.segment, a.seqLen);
        int64_t maxRows = (w + b.dilation - 1) / b.dilation;
        p.tilesPerSegment = (maxRows + ki.rowsPerCta - 1) / ki.rowsPerCta;
        gx = static_cast<unsigned>(plan::numSegments(b.segment, a.seqLen) * p.tilesPerSegment);
      } else {
        gx = static_cast<unsigned>((a.seqLen + ki.rowsPerCta - 1) / ki.rowsPerCta);
      }
    }
    rt::check(d.launchKernel(f, gx, gy, gz, ki.threads, 1, 1, ki.smemBytes, stream, args,
                             nullptr),
              "launching " + ki.name + " (grid " + std::to_string(gx) + "x" +
                  std::to_string(gy) + "x" + std::to_string(gz) + ", " +
                  std::to_string(ki.threads) + " threads, " + std::to_string(ki.smemBytes) +
                  " bytes of shared memory)");
  }
}

} // namespace dattn

namespace dattn {

void CompiledAttention::backward(const BackwardArgs &a) {
  const std::string where = "backward(attention '" + spec_.name + "'): ";
  // The forward checks cover q, k, v and the gradients' shapes (same layouts).
  ForwardArgs f;
  f.batch = a.batch;
  f.seqLen = a.seqLen;
  f.q = a.q;
  f.k = a.k;
  f.v = a.v;
  f.out = const_cast<void *>(a.out);
  f.lse = const_cast<float *>(a.lse);
  f.mask = a.mask;
  validate(f);
  for (auto [name, ptr] : {std::pair<const char *, const void *>{"dout", a.dout},
                           {"dq", a.dq},
                           {"dk", a.dk},
                           {"dv", a.dv}}) {
    if (!ptr)
      throw ArgumentError(where + name + " is null");
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0)
      throw ArgumentError(where + name + " is not 16-byte aligned");
  }
  const rt::Driver &d = rt::driver();
  const int slot = a.deterministic ? 1 : 0;
  EmittedModule &mod = backwardModules_[slot];
  if (!cuBackwardModules_[slot]) {
    mod = emitCudaBackward(plan_, arch_, a.deterministic, smemOptin_);
    CompileReport r;
    loadModule(mod, &cuBackwardModules_[slot], backwardFunctions_[slot], r);
  }
  const int64_t H = spec_.heads, Hk = spec_.kvHeads, D = spec_.headDim;
  const int64_t qElems = a.batch * a.seqLen * H * D, kvElems = a.batch * a.seqLen * Hk * D;
  // Delta's slots are rounded up to 16 bytes: the accumulators after it are
  // read and reduced two and four floats at a time.
  const int64_t deltaCount = (a.batch * H * a.seqLen + 3) / 4 * 4;
  // Accumulators: dQ [B, N, H, D] when finalize converts it; dK and dV one
  // slice per query head, [B, N, H, D] each, when finalize converts them.
  const bool accQ = mod.gradientFinalize & bwd::kFinalizeDq;
  const bool accKV = mod.gradientFinalize & bwd::kFinalizeDkv;
  const int64_t accElems = (accQ ? qElems : 0) + (accKV ? 2 * qElems : 0);
  growDeviceBuffer(&backwardWorkspace_, &backwardWorkspaceBytes_, 4 * (deltaCount + accElems),
                   "the backward workspace (Delta and fp32 gradient accumulators) of attention '" +
                       spec_.name + "'");
  bwd::Params p{};
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.o = a.out;
  p.dout = a.dout;
  p.lse = a.lse;
  p.delta = static_cast<float *>(backwardWorkspace_);
  float *next = p.delta + deltaCount;
  if (accQ) {
    p.dqAcc = next;
    next += qElems;
  }
  if (accKV) {
    p.dkAcc = next;
    p.dvAcc = next + qElems;
  }
  p.dq = a.dq;
  p.dk = a.dk;
  p.dv = a.dv;
  p.seqLen = a.seqLen;
  p.heads = static_cast<int>(H);
  p.kvHeads = static_cast<int>(Hk);
  p.groupSize = static_cast<int>(H / Hk);
  p.scale = static_cast<float>(plan_.scale);
  CUstream stream = static_cast<CUstream>(a.stream);
  if (a.mask) {
    p.maskRows = uploadMask(*a.mask);
    p.maskCols = p.maskRows + a.mask->rowOffsets.size();
  }
  // Zero what is accumulated into, and the directly written gradients: rows
  // no branch reaches (e.g. off every dilation lattice) have zero gradient.
  if (accElems > 0)
    rt::check(d.memsetD32Async(reinterpret_cast<CUdeviceptr>(p.delta + deltaCount), 0u,
                               static_cast<size_t>(accElems), stream),
              where + "clearing the gradient accumulators");
  const size_t bytes = static_cast<size_t>(elementBytes(spec_.dtype));
  if (mod.gradientsDirect) {
    for (auto [ptr, elems] : {std::pair<void *, int64_t>{a.dk, kvElems}, {a.dv, kvElems},
                              {accQ ? nullptr : a.dq, qElems}})
      if (ptr)
        rt::check(d.memsetD32Async(reinterpret_cast<CUdeviceptr>(ptr), 0u,
                                   static_cast<size_t>(elems) * bytes / 4, stream),
                  where + "clearing the gradients");
  }
  long long batch = a.batch, qE = qElems, kvE = kvElems;
  int what = mod.gradientFinalize;
  for (size_t x = 0; x < mod.kernels.size(); ++x) {
    const KernelInfo &ki = mod.kernels[x];
    CUfunction fn = static_cast<CUfunction>(backwardFunctions_[slot][x]);
    unsigned gx = 1, gy = 1, gz = 1;
    void *argsBatch[] = {&p, &batch};
    void *argsOnly[] = {&p};
    void *argsFinal[] = {&p, &qE, &kvE, &what};
    void **args = argsOnly;
    switch (ki.role) {
    case KernelRole::Delta:
      gx = static_cast<unsigned>((batch * a.seqLen * H + 3) / 4);
      args = argsBatch;
      break;
    case KernelRole::DqPass:
    case KernelRole::DkvPass: {
      const BranchPlan &b = plan_.branches[ki.branch];
      gy = static_cast<unsigned>(b.heads.size());
      gz = static_cast<unsigned>(batch);
      if (ki.path == KernelPath::Mma && b.kind == BranchKind::Strided) {
        const int64_t w = plan::segmentLength(b.segment, a.seqLen);
        const int64_t maxRows = (w + b.dilation - 1) / b.dilation;
        p.tilesPerSegment = (maxRows + ki.rowsPerCta - 1) / ki.rowsPerCta;
        gx = static_cast<unsigned>(plan::numSegments(b.segment, a.seqLen) * p.tilesPerSegment);
      } else {
        gx = static_cast<unsigned>((a.seqLen + ki.rowsPerCta - 1) / ki.rowsPerCta);
      }
      break;
    }
    default: // FinalizeGradients
      if (what == 0)
        continue;
      gx = static_cast<unsigned>(std::min<long long>(
          (std::max(qE, kvE) + ki.threads - 1) / ki.threads, 65535LL * 16));
      args = argsFinal;
      break;
    }
    rt::check(d.launchKernel(fn, gx, gy, gz, ki.threads, 1, 1, ki.smemBytes, stream, args,
                             nullptr),
              where + "launching " + ki.name + " (grid " + std::to_string(gx) + "x" +
                  std::to_string(gy) + "x" + std::to_string(gz) + ", " +
                  std::to_string(ki.threads) + " threads, " + std::to_string(ki.smemBytes) +
                  " bytes of shared memory)");
  }
}

} // namespace dattn
