#include "Nccl.h"

#include "Libraries.h"

#include "dattn/comm.h"
#include "dattn/error.h"

#include <dlfcn.h>

#include <mutex>
#include <vector>

namespace dattn::comm {

const Nccl &nccl() {
  static Nccl n;
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    // Already loaded (torch's NCCL), rt::searchDirs (the NVIDIA wheels'
    // folders, CUDA_HOME), the loader's search, the usual places.
    std::vector<std::string> dirs = rt::searchDirs();
    dirs.insert(dirs.end(), {"", "/usr/local/cuda/lib64/", "/usr/local/cuda/lib/",
                             "/usr/lib/x86_64-linux-gnu/"});
    void *lib = nullptr;
    try {
      lib = rt::openLibrary({"libnccl.so.2"}, dirs,
                            "NCCL (libnccl.so.2; install NCCL or set CUDA_HOME)", n.path);
    } catch (const Error &e) {
      failure = e.what();
      return;
    }
    auto resolve = [&](const char *name, auto &fn) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      if (!fn && failure.empty())
        failure = n.path + " has no " + name + " (NCCL older than 2.18?)";
    };
    resolve("ncclGetVersion", n.getVersion);
    resolve("ncclGetUniqueId", n.getUniqueId);
    resolve("ncclCommInitRankConfig", n.commInitRankConfig);
    resolve("ncclCommFinalize", n.commFinalize);
    resolve("ncclCommDestroy", n.commDestroy);
    resolve("ncclCommAbort", n.commAbort);
    resolve("ncclCommGetAsyncError", n.commGetAsyncError);
    resolve("ncclCommCount", n.commCount);
    resolve("ncclCommUserRank", n.commUserRank);
    resolve("ncclGroupStart", n.groupStart);
    resolve("ncclGroupEnd", n.groupEnd);
    resolve("ncclSend", n.send);
    resolve("ncclRecv", n.recv);
    resolve("ncclAllGather", n.allGather);
    resolve("ncclGetErrorString", n.getErrorString);
  });
  if (!failure.empty())
    throw Error(failure);
  return n;
}

} // namespace dattn::comm

namespace dattn {

NcclInfo queryNccl() {
  NcclInfo info;
  try {
    const comm::Nccl &n = comm::nccl();
    int v = 0;
    n.getVersion(&v);
    // NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z from 2.9 on.
    info.version = std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
                   std::to_string(v % 100);
    info.library = n.path;
  } catch (const Error &e) {
    info.error = e.what();
  }
  return info;
}

} // namespace dattn
