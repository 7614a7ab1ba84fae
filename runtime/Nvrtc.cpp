#include "Nvrtc.h"

#include "EmbeddedTemplates.h"
#include "Libraries.h"

#include "dattn/error.h"
#include "dattn/kernels.h"

#include <chrono>

namespace dattn::rt {

namespace {
void checkNvrtc(const Nvrtc &n, nvrtcResult r, const char *what) {
  if (r != NVRTC_SUCCESS)
    throw Error(std::string("NVRTC: ") + what + ": " + n.getErrorString(r));
}

std::string versionOf(const Nvrtc &n) {
  int major = 0, minor = 0;
  n.version(&major, &minor);
  return std::to_string(major) + "." + std::to_string(minor);
}
} // namespace

int archNumber(const std::string &arch) { return Target::parse(arch).sm; }

std::vector<std::string> nvrtcOptions(const std::string &arch) {
  // sm_90 kernels would need sm_90a for wgmma; the mma.sync path runs on
  // plain sm_XY. -lineinfo keeps profiler source mapping at no speed cost.
  // No --use_fast_math: the SIMT path promises exact fp32 math; the mma path
  // asks for its fast exp2 explicitly (ex2.approx).
  return {"--gpu-architecture=" + arch, "--std=c++17", "-default-device", "-lineinfo"};
}

CompileOutput nvrtcCompile(const std::string &source, const std::string &name,
                           const std::string &arch) {
  const Nvrtc &n = nvrtcFor(archNumber(arch));
  std::vector<const char *> headers, includeNames;
  for (int k = 0; k < kNumTemplates; ++k) {
    headers.push_back(kTemplates[k].text);
    includeNames.push_back(kTemplates[k].name);
  }
  nvrtcProgram prog;
  checkNvrtc(n, n.createProgram(&prog, source.c_str(), (name + ".cu").c_str(), kNumTemplates,
                             headers.data(), includeNames.data()),
             "creating the program");
  std::vector<std::string> opts = nvrtcOptions(arch);
  std::vector<const char *> optPtrs;
  for (const auto &o : opts)
    optPtrs.push_back(o.c_str());
  auto t0 = std::chrono::steady_clock::now();
  nvrtcResult r = n.compileProgram(prog, static_cast<int>(optPtrs.size()), optPtrs.data());
  CompileOutput out;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t logSize = 0;
  n.getProgramLogSize(prog, &logSize);
  out.log.resize(logSize);
  if (logSize)
    n.getProgramLog(prog, &out.log[0]);
  while (!out.log.empty() && (out.log.back() == '\0' || out.log.back() == '\n'))
    out.log.pop_back();
  if (r != NVRTC_SUCCESS) {
    n.destroyProgram(&prog);
    throw Error("NVRTC " + versionOf(n) + " could not compile " + name + " for " + arch + " (" +
                n.getErrorString(r) + "):\n" + out.log);
  }
  size_t size = 0;
  checkNvrtc(n, n.getPTXSize(prog, &size), "PTX size");
  out.ptx.resize(size);
  checkNvrtc(n, n.getPTX(prog, &out.ptx[0]), "PTX");
  if (!out.ptx.empty() && out.ptx.back() == '\0')
    out.ptx.pop_back();
  checkNvrtc(n, n.getCUBINSize(prog, &size), "cubin size");
  out.cubin.resize(size);
  checkNvrtc(n, n.getCUBIN(prog, out.cubin.data()), "cubin");
  n.destroyProgram(&prog);
  return out;
}

std::string nvrtcVersionString(int sm) { return versionOf(nvrtcFor(sm)); }

std::vector<std::string> nvrtcSupportedArchs(const Nvrtc &n) {
  int count = 0;
  n.getNumSupportedArchs(&count);
  std::vector<int> archs(count);
  if (count)
    n.getSupportedArchs(archs.data());
  std::vector<std::string> out;
  for (int a : archs)
    out.push_back("sm_" + std::to_string(a));
  return out;
}

} // namespace dattn::rt
