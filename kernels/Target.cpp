#include "dattn/error.h"
#include "dattn/kernels.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace dattn {

namespace {

/// Opt-in shared memory per block of an arch when no device is at hand.
int usualSmemBytes(int sm) {
  if (sm >= 90) return 227 * 1024;
  if (sm == 80 || sm == 87) return 163 * 1024;
  if (sm >= 86) return 99 * 1024;
  if (sm >= 75) return 64 * 1024;
  return 48 * 1024;
}

} // namespace

Target Target::parse(const std::string &arch, int smemBytes) {
  Target t;
  std::string digits = arch.size() > 3 ? arch.substr(3) : "";
  if (!digits.empty() && digits.back() == 'a') {
    t.archSpecific = true;
    digits.pop_back();
  }
  int v = 0;
  if (arch.compare(0, 3, "sm_") != 0 || digits.empty() ||
      std::sscanf(digits.c_str(), "%d", &v) != 1 || v < 50 || v > 200 ||
      std::to_string(v) != digits || (t.archSpecific && v < 90))
    throw Error("unknown GPU architecture '" + arch +
                "' (expected sm_XY or, from sm_90 on, sm_XYa; e.g. sm_80, sm_90a)");
  t.sm = v;
  t.smemBytes = smemBytes > 0 ? smemBytes : usualSmemBytes(v);
  return t;
}

Target Target::forGpu(int sm, int smemBytes) {
  // Only sm_90 has kernels that need the "a" features; a cubin for sm_90a
  // runs on sm_90 GPUs only, which is all the runtime compiles it for.
  return parse("sm_" + std::to_string(sm) + (sm == 90 ? "a" : ""), smemBytes);
}

std::string Target::arch() const {
  return "sm_" + std::to_string(sm) + (archSpecific ? "a" : "");
}

const char *toString(KernelPass p) {
  switch (p) {
  case KernelPass::Forward: return "forward";
  case KernelPass::BackwardDkv: return "backward dK/dV";
  case KernelPass::BackwardDq: return "backward dQ";
  }
  return "?";
}

std::string KernelConfig::describe() const {
  std::string s;
  auto add = [&](const std::string &x) { s += (s.empty() ? "" : " ") + x; };
  if (blockM)
    add("m" + std::to_string(blockM));
  if (blockN)
    add("n" + std::to_string(blockN));
  if (rowTilesPerWarp)
    add("t" + std::to_string(rowTilesPerWarp));
  if (atomicDq)
    add("atomic-dq");
  return s.empty() ? "-" : s;
}

std::string TunedKernel::str() const {
  return std::to_string(branch) + "/" + stage + "/" + family + "/" +
         std::to_string(config.blockM) + "/" + std::to_string(config.blockN) + "/" +
         std::to_string(config.rowTilesPerWarp) + "/" + (config.atomicDq ? "1" : "0") + "/" +
         origin;
}

TunedKernel TunedKernel::parse(const std::string &text) {
  // Seven fields, then the origin (which may hold '/': a path).
  std::vector<std::string> f;
  size_t at = 0;
  for (int x = 0; x < 7; ++x) {
    const size_t slash = text.find('/', at);
    if (slash == std::string::npos)
      throw Error("tuned kernel '" + text +
                  "': expected branch/stage/family/block_m/block_n/row_tiles/atomic_dq/origin");
    f.push_back(text.substr(at, slash - at));
    at = slash + 1;
  }
  auto number = [&](const std::string &v, const char *what) {
    char *end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || n < 0 || n > 4096)
      throw Error("tuned kernel '" + text + "': " + what + " '" + v + "' is not a number");
    return static_cast<int>(n);
  };
  TunedKernel t;
  t.branch = number(f[0], "branch");
  t.stage = f[1];
  t.family = f[2];
  t.config.blockM = number(f[3], "block_m");
  t.config.blockN = number(f[4], "block_n");
  t.config.rowTilesPerWarp = number(f[5], "row_tiles");
  t.config.atomicDq = number(f[6], "atomic_dq") != 0;
  t.origin = text.substr(at);
  return t;
}

} // namespace dattn
