#include "dattn/env.h"
#include "dattn/error.h"

#include <cstdlib>
#include <dlfcn.h>
#include <sys/stat.h>
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

std::vector<std::string> preferredFamilies() {
  std::vector<std::string> out;
  const char *p = std::getenv("DATTN_FAMILIES");
  std::string cur;
  for (const char *c = p ? p : ""; ; ++c) {
    if (*c == ',' || *c == '\0') {
      if (!cur.empty())
        out.push_back(cur);
      cur.clear();
      if (*c == '\0')
        break;
    } else if (*c != ' ') {
      cur += *c;
    }
  }
  return out;
}

std::string tuningDatabase() {
  if (const char *p = std::getenv("DATTN_TUNING_DB"); p && *p)
    return p;
  return cacheRoot() + "/tuning.json";
}

std::string shippedTuningFolder() {
  if (const char *p = std::getenv("DATTN_TUNING_SHIPPED"); p && *p)
    return p;
  struct stat st;
  if (stat(DATTN_SHIPPED_TUNING_DIR, &st) == 0)
    return DATTN_SHIPPED_TUNING_DIR; // the source tree this library was built from
  // Installed: <prefix>/lib/libdattn.so next to <prefix>/share/dattn/tuning.
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&shippedTuningFolder), &info) && info.dli_fname) {
    std::string lib = info.dli_fname;
    const size_t slash = lib.rfind('/');
    if (slash != std::string::npos)
      return lib.substr(0, slash) + "/../share/dattn/tuning";
  }
  return DATTN_SHIPPED_TUNING_DIR;
}

double ringTimeoutSeconds() {
  const char *v = std::getenv("DATTN_RING_TIMEOUT");
  if (!v || !*v)
    return 60.0;
  char *end = nullptr;
  const double s = std::strtod(v, &end);
  if (*end != '\0' || !(s > 0) || s > 1e7)
    throw Error(std::string("DATTN_RING_TIMEOUT='") + v +
                "' is not a positive number of seconds (default 60)");
  return s;
}

int splitWaves() {
  const char *v = std::getenv("DATTN_SPLIT_WAVES");
  if (!v || !*v)
    return 0;
  char *end = nullptr;
  const long w = std::strtol(v, &end, 10);
  if (*end != '\0' || w < 1 || w > 1024)
    throw Error(std::string("DATTN_SPLIT_WAVES='") + v +
                "' is not a whole number of CTAs an SM from 1 to 1024 (default 8)");
  return static_cast<int>(w);
}

bool verbose() {
  const char *v = std::getenv("DATTN_VERBOSE");
  return v && *v && std::strcmp(v, "0") != 0;
}

bool splitUnions() {
  const char *v = std::getenv("DATTN_SPLIT_UNIONS");
  return !(v && std::strcmp(v, "0") == 0);
}

bool branchStreams() {
  const char *v = std::getenv("DATTN_BRANCH_STREAMS");
  return !(v && std::strcmp(v, "0") == 0);
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
