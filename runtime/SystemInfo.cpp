// querySystem: what `dattn info` prints, each part with why it is missing.
#include "EmbeddedTemplates.h"
#include "Libraries.h"
#include "Nvrtc.h"

#include "dattn/env.h"
#include "dattn/error.h"
#include "dattn/runtime.h"

namespace dattn {

SystemInfo querySystem() {
  SystemInfo s;
  s.cacheFolder = env::cacheRoot();
  s.forwardTemplatesHash = rt::kForwardTemplatesHash;
  s.backwardTemplatesHash = rt::kBackwardTemplatesHash;
  try {
    const rt::Driver &d = rt::driver();
    s.driverLibrary = d.path;
    int v = 0;
    d.driverGetVersion(&v);
    s.driverVersion = std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
    int count = 0;
    d.deviceGetCount(&count);
    for (int i = 0; i < count; ++i) {
      CUdevice dev;
      d.deviceGet(&dev, i);
      DeviceInfo info;
      info.ordinal = i;
      char name[256] = {};
      d.deviceGetName(name, sizeof name, dev);
      info.name = name;
      int major = 0, minor = 0;
      d.deviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
      d.deviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
      info.smVersion = major * 10 + minor;
      d.deviceGetAttribute(&info.multiprocessors, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
      d.deviceGetAttribute(&info.smemOptinBytes,
                           CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev);
      size_t mem = 0;
      d.deviceTotalMem(&mem, dev);
      info.memoryBytes = static_cast<int64_t>(mem);
      s.devices.push_back(info);
    }
  } catch (const Error &e) {
    s.driverError = e.what();
  }
  try {
    s.nvrtcVersion = rt::nvrtcVersionString();
    s.nvrtcLibrary = rt::nvrtc().path;
    s.nvrtcArchs = rt::nvrtcSupportedArchs(rt::nvrtc());
  } catch (const Error &e) {
    s.nvrtcError = e.what();
  }
  for (auto [info, load] : {std::pair{&s.nvrtc13, &rt::nvrtc13}, std::pair{&s.nvrtc12, &rt::nvrtc12}}) {
    try {
      const rt::Nvrtc &n = load();
      int major = 0, minor = 0;
      n.version(&major, &minor);
      info->version = std::to_string(major) + "." + std::to_string(minor);
      info->library = n.path;
      info->archs = rt::nvrtcSupportedArchs(n);
    } catch (const Error &e) {
      info->error = e.what();
    }
  }
  return s;
}

} // namespace dattn

