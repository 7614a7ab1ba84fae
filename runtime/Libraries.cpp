#include "Libraries.h"

#include "dattn/env.h"
#include "dattn/error.h"
#include "dattn/runtime.h"

#include <dlfcn.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace dattn::rt {

namespace {


template <class F> void resolveDl(void *lib, const char *name, F &fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn)
    throw Error(std::string("libnvrtc has no symbol ") + name + " (NVRTC too old?)");
}

} // namespace

namespace {
std::mutex addedMutex;
std::vector<std::string> added; // addLibraryDirs, in order
} // namespace

void *openLibrary(const std::vector<std::string> &names, const std::vector<std::string> &dirs,
                  const std::string &what, std::string &path) {
  // A copy the process already has (torch's, say): one library, not two.
  for (const auto &n : names)
    if (void *h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD)) {
      path = n + " (already loaded)";
      return h;
    }
  std::vector<std::string> seen;
  std::string tried, firstError;
  for (const auto &dir : dirs)
    for (const auto &n : names) {
      std::string p = dir.empty() || dir.back() == '/' ? dir + n : dir + "/" + n;
      if (std::find(seen.begin(), seen.end(), p) != seen.end())
        continue;
      seen.push_back(p);
      if (void *h = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL)) {
        path = p;
        return h;
      }
      const char *e = dlerror();
      if (firstError.empty() && e)
        firstError = e;
      tried += (tried.empty() ? "" : ", ") + p;
    }
  throw Error("cannot load " + what + "; tried " + tried + " (" + firstError + ")");
}

void check(CUresult r, const std::string &what) {
  if (r == CUDA_SUCCESS)
    return;
  const char *msg = nullptr;
  try {
    if (driver().getErrorString)
      driver().getErrorString(r, &msg);
  } catch (...) {
  }
  throw Error(what + ": " + (msg ? msg : "CUDA error " + std::to_string(static_cast<int>(r))));
}

const Driver &driver() {
  static Driver d;
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    try {
      void *lib = openLibrary({"libcuda.so.1"},
                            {"", "/usr/lib/x86_64-linux-gnu/", "/usr/lib64/",
                             "/usr/local/nvidia/lib64/"},
                            "the NVIDIA driver library libcuda.so.1 (no driver installed?)",
                            d.path);
      using GetProc = CUresult (*)(const char *, void **, int, cuuint64_t,
                                   CUdriverProcAddressQueryResult *);
      auto getProc = reinterpret_cast<GetProc>(dlsym(lib, "cuGetProcAddress_v2"));
      if (!getProc)
        throw Error(d.path + " has no cuGetProcAddress_v2: the driver is older than CUDA 12");
      auto resolve = [&](const char *name, auto &fn) {
        void *p = nullptr;
        CUdriverProcAddressQueryResult q;
        if (getProc(name, &p, 12000, CU_GET_PROC_ADDRESS_DEFAULT, &q) != CUDA_SUCCESS || !p)
          throw Error(std::string("the driver has no ") + name);
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
      };
      resolve("cuInit", d.init);
      resolve("cuDriverGetVersion", d.driverGetVersion);
      resolve("cuDeviceGetCount", d.deviceGetCount);
      resolve("cuDeviceGet", d.deviceGet);
      resolve("cuDeviceGetName", d.deviceGetName);
      resolve("cuDeviceGetAttribute", d.deviceGetAttribute);
      resolve("cuDeviceTotalMem", d.deviceTotalMem);
      resolve("cuDevicePrimaryCtxRetain", d.primaryCtxRetain);
      resolve("cuCtxSetCurrent", d.ctxSetCurrent);
      resolve("cuCtxGetCurrent", d.ctxGetCurrent);
      resolve("cuCtxSynchronize", d.ctxSynchronize);
      resolve("cuCtxPushCurrent", d.ctxPushCurrent);
      resolve("cuCtxPopCurrent", d.ctxPopCurrent);
      resolve("cuModuleLoadData", d.moduleLoadData);
      resolve("cuModuleUnload", d.moduleUnload);
      resolve("cuModuleGetFunction", d.moduleGetFunction);
      resolve("cuFuncSetAttribute", d.funcSetAttribute);
      resolve("cuFuncGetAttribute", d.funcGetAttribute);
      resolve("cuLaunchKernel", d.launchKernel);
      resolve("cuMemAlloc", d.memAlloc);
      resolve("cuMemFree", d.memFree);
      resolve("cuMemcpyHtoD", d.memcpyHtoD);
      resolve("cuMemcpyDtoH", d.memcpyDtoH);
      resolve("cuMemcpyDtoDAsync", d.memcpyDtoDAsync);
      resolve("cuMemsetD32", d.memsetD32);
      resolve("cuMemsetD32Async", d.memsetD32Async);
      resolve("cuMemGetInfo", d.memGetInfo);
      resolve("cuPointerGetAttribute", d.pointerGetAttribute);
      resolve("cuPointerGetAttributes", d.pointerGetAttributes);
      resolve("cuStreamCreate", d.streamCreate);
      resolve("cuStreamDestroy", d.streamDestroy);
      resolve("cuStreamSynchronize", d.streamSynchronize);
      resolve("cuStreamIsCapturing", d.streamIsCapturing);
      resolve("cuStreamBeginCapture", d.streamBeginCapture);
      resolve("cuStreamEndCapture", d.streamEndCapture);
      resolve("cuGraphInstantiateWithFlags", d.graphInstantiate);
      resolve("cuGraphLaunch", d.graphLaunch);
      resolve("cuGraphExecDestroy", d.graphExecDestroy);
      resolve("cuGraphDestroy", d.graphDestroy);
      resolve("cuEventCreate", d.eventCreate);
      resolve("cuEventDestroy", d.eventDestroy);
      resolve("cuEventRecord", d.eventRecord);
      resolve("cuEventSynchronize", d.eventSynchronize);
      resolve("cuEventQuery", d.eventQuery);
      resolve("cuStreamWaitEvent", d.streamWaitEvent);
      resolve("cuEventElapsedTime", d.eventElapsedTime);
      resolve("cuGetErrorString", d.getErrorString);
      resolve("cuTensorMapEncodeTiled", d.tensorMapEncodeTiled);
      CUresult r = d.init(0);
      if (r != CUDA_SUCCESS) {
        const char *msg = nullptr;
        d.getErrorString(r, &msg);
        throw Error("cuInit failed (" + std::string(msg ? msg : "?") +
                    "): no usable NVIDIA GPU on this machine");
      }
    } catch (const Error &e) {
      failure = e.what();
    }
  });
  if (!failure.empty())
    throw Error(failure);
  return d;
}

namespace {

/// Loads one NVRTC from the first of `names` found in `dirs`.
void loadNvrtc(Nvrtc &n, const std::vector<std::string> &names,
               const std::vector<std::string> &dirs, const char *what) {
  void *lib = openLibrary(names, dirs, what, n.path);
  resolveDl(lib, "nvrtcVersion", n.version);
  resolveDl(lib, "nvrtcGetNumSupportedArchs", n.getNumSupportedArchs);
  resolveDl(lib, "nvrtcGetSupportedArchs", n.getSupportedArchs);
  resolveDl(lib, "nvrtcCreateProgram", n.createProgram);
  resolveDl(lib, "nvrtcDestroyProgram", n.destroyProgram);
  resolveDl(lib, "nvrtcCompileProgram", n.compileProgram);
  resolveDl(lib, "nvrtcGetProgramLogSize", n.getProgramLogSize);
  resolveDl(lib, "nvrtcGetProgramLog", n.getProgramLog);
  resolveDl(lib, "nvrtcGetPTXSize", n.getPTXSize);
  resolveDl(lib, "nvrtcGetPTX", n.getPTX);
  resolveDl(lib, "nvrtcGetCUBINSize", n.getCUBINSize);
  resolveDl(lib, "nvrtcGetCUBIN", n.getCUBIN);
  resolveDl(lib, "nvrtcGetErrorString", n.getErrorString);
}

/// Loads once; later calls return the library or throw the first failure.
template <class Load> const Nvrtc &loadOnce(Nvrtc &n, std::once_flag &once,
                                            std::string &failure, Load load) {
  std::call_once(once, [&] {
    try {
      load(n);
    } catch (const Error &e) {
      failure = e.what();
    }
  });
  if (!failure.empty())
    throw Error(failure);
  return n;
}

} // namespace

std::vector<std::string> searchDirs() {
  std::vector<std::string> dirs = libraryDirs();
  if (const char *home = env::cudaHome())
    dirs.insert(dirs.end(), {std::string(home) + "/lib64/", std::string(home) + "/lib/"});
  return dirs;
}

const Nvrtc &nvrtc13() {
  static Nvrtc n;
  static std::once_flag once;
  static std::string failure;
  return loadOnce(n, once, failure, [](Nvrtc &x) {
    std::vector<std::string> dirs = searchDirs();
    dirs.insert(dirs.end(), {"", "/usr/local/cuda/lib64/", "/usr/lib/x86_64-linux-gnu/"});
    loadNvrtc(x, {"libnvrtc.so.13"}, dirs,
              "NVRTC 13 (libnvrtc.so.13; set CUDA_HOME to a CUDA 13 toolkit or install the "
              "nvrtc runtime package)");
  });
}

const Nvrtc &nvrtc12() {
  static Nvrtc n;
  static std::once_flag once;
  static std::string failure;
  return loadOnce(n, once, failure, [](Nvrtc &x) {
    std::vector<std::string> dirs;
    if (const char *knob = env::nvrtc12()) { // a file or a folder
      const std::string k = knob;
      if (k.size() > 3 && k.find(".so") != std::string::npos) {
        loadNvrtc(x, {k}, {""}, "NVRTC 12 at DATTN_NVRTC12");
        return;
      }
      dirs.push_back(k + "/");
    }
#ifdef DATTN_NVRTC12_DIR
    dirs.push_back(std::string(DATTN_NVRTC12_DIR) + "/"); // the wheel found at build time
#endif
    for (const auto &d : searchDirs())
      dirs.push_back(d);
    dirs.insert(dirs.end(), {"", "/usr/local/cuda-12/lib64/", "/usr/lib/x86_64-linux-gnu/"});
    loadNvrtc(x, {"libnvrtc.so.12"}, dirs,
              "NVRTC 12 (libnvrtc.so.12: pip install nvidia-cuda-nvrtc-cu12, or set "
              "DATTN_NVRTC12 to the library or its folder)");
  });
}

const Nvrtc &nvrtcFor(int sm) {
  if (sm >= 75) {
    try {
      return nvrtc13();
    } catch (const Error &e13) {
      try { // NVRTC 12 also targets sm_75 and newer
        return nvrtc12();
      } catch (const Error &) {
        throw e13;
      }
    }
  }
  try {
    return nvrtc12();
  } catch (const Error &e) {
    throw Error("sm_" + std::to_string(sm) + " needs the NVRTC of CUDA 12 (NVRTC 13 compiles "
                "for sm_75 and newer): " + e.what());
  }
}

const Nvrtc &nvrtc() { return nvrtcFor(75); }

} // namespace dattn::rt

namespace dattn {

void addLibraryDirs(const std::vector<std::string> &dirs) {
  std::lock_guard<std::mutex> lock(rt::addedMutex);
  for (const auto &d : dirs)
    if (!d.empty() && std::find(rt::added.begin(), rt::added.end(), d) == rt::added.end())
      rt::added.push_back(d);
}

std::vector<std::string> libraryDirs() {
  std::lock_guard<std::mutex> lock(rt::addedMutex);
  return rt::added;
}

} // namespace dattn
