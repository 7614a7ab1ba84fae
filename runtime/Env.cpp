#include "dattn/env.h"

#include <cstdlib>
#include <cstring>

namespace dattn::env {

std::string cacheRoot() {
  if (const char *d = std::getenv("DATTN_CACHE_DIR"); d && *d)
    return d;
  if (const char *x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::string(x) + "/dattn";
  if (const char *h = std::getenv("HOME"); h && *h)
    return std::string(h) + "/.cache/dattn";
  return "/tmp/dattn-cache";
}

std::string tuningDatabase() {
  if (const char *p = std::getenv("DATTN_TUNING_DB"); p && *p)
    return p;
  return cacheRoot() + "/tuning.json";
}

bool verbose() {
  const char *v = std::getenv("DATTN_VERBOSE");
  return v && *v && std::strcmp(v, "0") != 0;
}

const char *cudaHome() {
  if (const char *h = std::getenv("CUDA_HOME"); h && *h)
    return h;
  if (const char *h = std::getenv("CUDA_PATH"); h && *h)
    return h;
  return nullptr;
}

const char *nvrtc12() {
  const char *v = std::getenv("DATTN_NVRTC12");
  return v && *v ? v : nullptr;
}

} // namespace dattn::env
