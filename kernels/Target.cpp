#include "dattn/error.h"
#include "dattn/kernels.h"

#include <cstdio>

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

} // namespace dattn
