// runtime: one NVRTC compilation of generated source against the embedded
// templates. Works without a GPU (CI compiles every example this way).
#pragma once

#include <string>
#include <vector>

namespace dattn::rt {

struct CompileOutput {
  std::string ptx;
  std::vector<char> cubin;
  std::string log;
  double seconds = 0;
};

/// Compiles for `arch` ("sm_90"). Throws Error carrying the full NVRTC log
/// and the kernel name on failure.
CompileOutput nvrtcCompile(const std::string &source, const std::string &name,
                           const std::string &arch);

/// The NVRTC options used, for the cache key.
std::vector<std::string> nvrtcOptions(const std::string &arch);

/// "13.0", and the archs NVRTC can target ("sm_75", ...).
std::string nvrtcVersionString();
std::vector<std::string> nvrtcSupportedArchs();

} // namespace dattn::rt
