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

/// Compiles for `arch` ("sm_90", "sm_90a", "sm_61") with the NVRTC that
/// serves it (nvrtcFor). Throws Error carrying the full NVRTC log and the
/// kernel name on failure.
CompileOutput nvrtcCompile(const std::string &source, const std::string &name,
                           const std::string &arch);

/// The NVRTC options used, for the cache key.
std::vector<std::string> nvrtcOptions(const std::string &arch);

struct Nvrtc;

/// "13.0": the version of the NVRTC that serves sm_`sm`.
std::string nvrtcVersionString(int sm = 75);
/// The archs an NVRTC can target ("sm_75", ...).
std::vector<std::string> nvrtcSupportedArchs(const Nvrtc &n);

} // namespace dattn::rt
