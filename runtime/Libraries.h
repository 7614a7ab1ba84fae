// runtime: libcuda and libnvrtc, loaded with dlopen on first use, so every
// dattn binary starts on a machine without a GPU or CUDA toolkit and says
// plainly what is missing when a GPU feature is asked for.
#pragma once

#include <cuda.h>
#include <nvrtc.h>

#include <string>
#include <vector>

namespace dattn::rt {

/// The driver API entry points dattn uses, resolved by cuGetProcAddress.
struct Driver {
  decltype(&::cuInit) init;
  decltype(&::cuDriverGetVersion) driverGetVersion;
  decltype(&::cuDeviceGetCount) deviceGetCount;
  decltype(&::cuDeviceGet) deviceGet;
  decltype(&::cuDeviceGetName) deviceGetName;
  decltype(&::cuDeviceGetAttribute) deviceGetAttribute;
  decltype(&::cuDeviceTotalMem) deviceTotalMem;
  decltype(&::cuDevicePrimaryCtxRetain) primaryCtxRetain;
  decltype(&::cuCtxSetCurrent) ctxSetCurrent;
  decltype(&::cuCtxGetCurrent) ctxGetCurrent;
  decltype(&::cuCtxSynchronize) ctxSynchronize;
  decltype(&::cuCtxPushCurrent) ctxPushCurrent;
  decltype(&::cuCtxPopCurrent) ctxPopCurrent;
  decltype(&::cuModuleLoadData) moduleLoadData;
  decltype(&::cuModuleUnload) moduleUnload;
  decltype(&::cuModuleGetFunction) moduleGetFunction;
  decltype(&::cuFuncSetAttribute) funcSetAttribute;
  decltype(&::cuFuncGetAttribute) funcGetAttribute;
  decltype(&::cuLaunchKernel) launchKernel;
  decltype(&::cuMemAlloc) memAlloc;
  decltype(&::cuMemFree) memFree;
  decltype(&::cuMemcpyHtoD) memcpyHtoD;
  decltype(&::cuMemcpyDtoH) memcpyDtoH;
  decltype(&::cuMemcpyDtoDAsync) memcpyDtoDAsync;
  decltype(&::cuMemsetD32) memsetD32;
  decltype(&::cuMemsetD32Async) memsetD32Async;
  decltype(&::cuMemGetInfo) memGetInfo;
  decltype(&::cuPointerGetAttribute) pointerGetAttribute;
  decltype(&::cuPointerGetAttributes) pointerGetAttributes;
  decltype(&::cuStreamCreate) streamCreate;
  decltype(&::cuStreamDestroy) streamDestroy;
  decltype(&::cuStreamSynchronize) streamSynchronize;
  decltype(&::cuStreamIsCapturing) streamIsCapturing;
  decltype(&::cuStreamBeginCapture) streamBeginCapture;
  decltype(&::cuStreamEndCapture) streamEndCapture;
  decltype(&::cuGraphInstantiateWithFlags) graphInstantiate;
  decltype(&::cuGraphLaunch) graphLaunch;
  decltype(&::cuGraphExecDestroy) graphExecDestroy;
  decltype(&::cuGraphDestroy) graphDestroy;
  decltype(&::cuEventCreate) eventCreate;
  decltype(&::cuEventDestroy) eventDestroy;
  decltype(&::cuEventRecord) eventRecord;
  decltype(&::cuEventSynchronize) eventSynchronize;
  decltype(&::cuEventQuery) eventQuery;
  decltype(&::cuStreamWaitEvent) streamWaitEvent;
  decltype(&::cuEventElapsedTime) eventElapsedTime;
  decltype(&::cuGetErrorString) getErrorString;
  decltype(&::cuTensorMapEncodeTiled) tensorMapEncodeTiled;
  std::string path; ///< the library that was loaded
};

struct Nvrtc {
  decltype(&::nvrtcVersion) version;
  decltype(&::nvrtcGetNumSupportedArchs) getNumSupportedArchs;
  decltype(&::nvrtcGetSupportedArchs) getSupportedArchs;
  decltype(&::nvrtcCreateProgram) createProgram;
  decltype(&::nvrtcDestroyProgram) destroyProgram;
  decltype(&::nvrtcCompileProgram) compileProgram;
  decltype(&::nvrtcGetProgramLogSize) getProgramLogSize;
  decltype(&::nvrtcGetProgramLog) getProgramLog;
  decltype(&::nvrtcGetPTXSize) getPTXSize;
  decltype(&::nvrtcGetPTX) getPTX;
  decltype(&::nvrtcGetCUBINSize) getCUBINSize;
  decltype(&::nvrtcGetCUBIN) getCUBIN;
  decltype(&::nvrtcGetErrorString) getErrorString;
  std::string path;
};

/// dlopen of the first library found: one of `names` this process already
/// has (RTLD_NOLOAD), else each name in each of `dirs` in turn ("" = the
/// dynamic loader's own search: ld.so.cache, LD_LIBRARY_PATH). `path` says
/// which was loaded; the error lists every place tried and the loader's
/// first complaint.
void *openLibrary(const std::vector<std::string> &names, const std::vector<std::string> &dirs,
                  const std::string &what, std::string &path);

/// Where libnvrtc and libnccl are looked for before the loader's own
/// search: addLibraryDirs' folders (include/dattn/runtime.h), then
/// CUDA_HOME's lib64 and lib.
std::vector<std::string> searchDirs();

/// The driver, loaded and cuInit'ed once; throws Error saying what is
/// missing (no libcuda.so.1: no NVIDIA driver; cuInit failed: no usable GPU).
const Driver &driver();
/// NVRTC 13 (sm_75 and newer) and NVRTC 12 (sm_50 and newer: Pascal's
/// GTX 1080 is sm_61), each loaded once beside the other; they throw Error
/// naming the places searched.
const Nvrtc &nvrtc13();
const Nvrtc &nvrtc12();
/// The NVRTC that compiles for sm_`sm`: 13 from sm_75 on (12 if 13 is
/// missing), 12 below.
const Nvrtc &nvrtcFor(int sm);
/// nvrtcFor(75): the NVRTC of current GPUs.
const Nvrtc &nvrtc();

/// Throws Error("<what>: <driver message>") unless r is CUDA_SUCCESS.
void check(CUresult r, const std::string &what);
/// The same without building a string when r is CUDA_SUCCESS (hot paths).
inline void check(CUresult r, const char *what) {
  if (r != CUDA_SUCCESS)
    check(r, std::string(what));
}

} // namespace dattn::rt
