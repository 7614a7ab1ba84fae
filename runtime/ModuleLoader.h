// runtime: an emitted module turned into loaded kernels: source -> cubin
// through the kernel cache (NVRTC on a miss), cubin -> CUmodule, and one
// CUfunction per KernelInfo with its shared-memory limit raised.
#pragma once

#include "KernelCache.h"

#include "dattn/emit.h"
#include "dattn/runtime.h"

#include <memory>
#include <vector>

namespace dattn::rt {

struct LoadedModule {
  void *module = nullptr;          ///< CUmodule
  std::vector<void *> functions;   ///< CUfunction per EmittedModule::kernels entry
  ~LoadedModule();                 ///< unloads the module
};

/// Loads `m` in the current context; fills the compile fields of `report`.
std::unique_ptr<LoadedModule> loadModule(KernelCache &cache, const EmittedModule &m,
                                         const std::string &name, const std::string &arch,
                                         CompileReport *report);

} // namespace dattn::rt
