#include "ModuleLoader.h"

#include "Launch.h"
#include "Libraries.h"

namespace dattn::rt {

LoadedModule::~LoadedModule() {
  try {
    if (module)
      driver().moduleUnload(static_cast<CUmodule>(module));
  } catch (...) {
    // Destructors do not throw; the process is ending or the driver is gone.
  }
}

std::unique_ptr<LoadedModule> loadModule(KernelCache &cache, const EmittedModule &m,
                                         const std::string &name, const std::string &arch,
                                         CompileReport *report) {
  const Driver &d = driver();
  auto kernel = cache.get(m.source, name, arch);
  auto loaded = std::make_unique<LoadedModule>();
  CUmodule mod;
  check(d.moduleLoadData(&mod, kernel->cubin.data()), "loading the module of " + name);
  loaded->module = mod;
  for (const auto &k : m.kernels) {
    CUfunction f;
    check(d.moduleGetFunction(&f, mod, k.name.c_str()), "finding kernel " + k.name);
    if (k.smemBytes > 48 * 1024)
      check(d.funcSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, k.smemBytes),
            "raising the shared memory limit of " + k.name + " to " +
                std::to_string(k.smemBytes) + " bytes");
    loaded->functions.push_back(f);
  }
  if (report) {
    report->coldCompileSeconds = kernel->compileSeconds;
    report->origin = kernel->origin == CachedKernel::Origin::Compiled ? "compiled"
                     : kernel->origin == CachedKernel::Origin::Disk   ? "disk cache"
                                                                      : "memory cache";
    report->cacheFolder = kernel->folder;
  }
  return loaded;
}

void launchKernel(const KernelInfo &ki, void *fn, unsigned gx, unsigned gy, unsigned gz,
                  void *stream, void **args, const std::string &where) {
  const CUresult r = driver().launchKernel(static_cast<CUfunction>(fn), gx, gy, gz, ki.threads, 1,
                                           1, ki.smemBytes, static_cast<CUstream>(stream), args,
                                           nullptr);
  if (r != CUDA_SUCCESS)
    check(r, where + "launching " + ki.name + " (grid " + std::to_string(gx) + "x" +
                 std::to_string(gy) + "x" + std::to_string(gz) + ", " +
                 std::to_string(ki.threads) + " threads, " + std::to_string(ki.smemBytes) +
                 " bytes of shared memory)");
}

} // namespace dattn::rt
