// dattn compile: the IR, the kernel choices, CUDA C++, PTX or cubins of a spec.
#include "Commands.h"
#include "CommandUtil.h"
#include "Npy.h"
#include "Options.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/error.h"
#include "dattn/host.h"
#include "dattn/reference.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <tuple>

namespace dattn::tools {

namespace {

void writeText(const std::string &path, const void *data, size_t size) {
  std::FILE *f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(data, 1, size, f) != size || std::fclose(f) != 0)
    throw Error("cannot write " + path);
}

AttentionPlan planFor(const AttentionSpec &spec, PlanOptions po, const std::string &arch) {
  po.arch = arch;
  return planAttention(spec, po);
}

/// --emit=kernels: what dattn-select-kernels recorded, per branch and pass.
void printKernels(const AttentionPlan &plan, bool backward) {
  std::printf("attention %s on %s (%d bytes of shared memory per block)\n", plan.name.c_str(),
              plan.target.c_str(), plan.smemBytes);
  auto line = [](const char *what, const KernelChoice &c) {
    std::printf("    %-31s %-22s %-18s %4d threads %7d B shared  1 of %d candidates\n", what,
                c.family->name(), c.config.describe().c_str(), c.resources.threads,
                c.resources.smemBytes, c.candidates);
  };
  for (size_t b = 0; b < plan.branches.size(); ++b) {
    const BranchPlan &br = plan.branches[b];
    std::printf("  branch %zu (%s)\n", b, br.describe().c_str());
    line("forward", plannedKernels(plan, br, "forward").at(0));
    if (!backward)
      continue;
    for (bool deterministic : {false, true})
      for (const KernelChoice &c :
           plannedKernels(plan, br, deterministic ? "backward_deterministic" : "backward"))
        line((std::string(toString(c.family->pass())) +
              (deterministic ? " (deterministic)" : ""))
                 .c_str(),
             c);
  }
}

} // namespace

int runCompile(const std::vector<std::string> &args) {
  static const char *help =
      "usage: dattn compile FILE [--name NAME] --emit=KIND [--arch sm_80,sm_90] [-o DIR]\n"
      "                    [--tile-m M] [--tile-n N] [--family LIST] [--no-split-unions]\n"
      "                    [--locations]\n"
      "                    [--backward [--deterministic] | --ring]\n"
      "  --emit=mlir   the dattn dialect as generated from the spec (verified)\n"
      "  --emit=plan   after dattn-normalize, dattn-merge-branches, dattn-plan-tiles\n"
      "                (and dattn-select-kernels for the one --arch, if given)\n"
      "  --emit=cuda   the generated CUDA C++ (per --arch)\n"
      "  --emit=ptx    PTX from NVRTC; --emit=cubin: a cubin (needs -o)\n"
      "  --emit=cache  fill the kernel cache (DATTN_CACHE_DIR, or -o DIR) with every\n"
      "                module a GPU of each --arch (sm_90 for an H100, whose kernels\n"
      "                compile for sm_90a) compiles for the spec: forward, backward\n"
      "                modes, ring;\n"
      "                --smem BYTES: that GPU's opt-in shared memory (default: the\n"
      "                arch's usual). That GPU then loads them instead of compiling\n"
      "  --emit=kernels  per branch and pass: the kernel family, its chosen\n"
      "                configuration, its resources and how many candidates it has\n"
      "                (forward; with --backward also both backward modes)\n"
      "  --arch        comma-separated targets for kernels/cuda/ptx/cubin (default sm_80;\n"
      "                sm_90a: sm_90 with its arch-specific features)\n"
      "  -o DIR        write <attention>[.backward|.backward_deterministic].<arch>.{cu,ptx,cubin}\n"
      "                into DIR instead of stdout\n"
      "  --tile-m/-n   force tile sizes (powers of two in [16, 256]) in the plan\n"
      "  --family LIST kernel families tried first where they support a branch (as\n"
      "                --emit=kernels names them; DATTN_FAMILIES does it at run time)\n"
      "  --no-split-unions  a union's dilated member stays in the union (by default\n"
      "                its own strided branch: dattn-split-unions; DATTN_SPLIT_UNIONS=0\n"
      "                at run time)\n"
      "  --locations   print each op's spec file:line:col (mlir and plan)\n"
      "  --backward    cuda/ptx/cubin of the backward module (dq, dk, dv) instead;\n"
      "                --deterministic: its bit-reproducible variant\n"
      "  --ring        cuda/ptx/cubin of the ring module (what one rank of a ring runs,\n"
      "                forward and backward) instead\n"
      "Without --name every attention of the file is compiled. No GPU is needed.\n";
  if (wantsHelp(args, help))
    return 0;
  std::vector<std::string> a = args;
  for (auto &x : a)
    if (x == "-o")
      x = "--output";
  Options o(a, {"name", "emit", "tile-m", "tile-n", "arch", "output", "smem", "family"},
            {"locations", "backward", "deterministic", "ring", "no-split-unions"});
  const bool backward = o.has("backward"), deterministic = o.has("deterministic"),
             ring = o.has("ring");
  if (deterministic && !backward)
    throw UsageError{"--deterministic applies to the backward module: add --backward"};
  if (ring && backward)
    throw UsageError{"--ring is one module with the ring's forward and backward: drop --backward"};
  std::string emit = o.get("emit");
  if (emit.empty())
    throw UsageError{"--emit is required (mlir, plan, kernels, cuda, ptx, cubin or cache)"};
  PlanOptions po;
  po.tileM = o.getInt("tile-m", 0, 0, 256);
  po.tileN = o.getInt("tile-n", 0, 0, 256);
  po.families = splitList(o.get("family"));
  po.splitUnions = !o.has("no-split-unions");
  SpecFile file = loadSpecFile(onlyFile(o, "compile"));
  std::vector<AttentionSpec> specs = selectSpecs(file, o);
  if (emit == "mlir" || emit == "plan") {
    // --emit=plan --arch X: with the kernels chosen for X (one target).
    if (emit == "plan" && o.has("arch")) {
      std::vector<std::string> archs = splitList(o.get("arch"));
      if (archs.size() != 1)
        throw UsageError{"--emit=plan takes one --arch (the kernels are chosen per target)"};
      Target::parse(archs[0]);
      po.arch = archs[0];
    }
    std::string ir = emitIR(specs, emit == "mlir" ? IRStage::Generated : IRStage::Planned, po,
                            o.has("locations"));
    std::fputs(ir.c_str(), stdout);
    if (!ir.empty() && ir.back() != '\n')
      std::fputc('\n', stdout);
    return 0;
  }
  if (emit == "cache") {
    if (backward || ring || po.tileM || po.tileN)
      throw UsageError{"--emit=cache fills the cache with every module the runtime compiles, "
                       "with its own tiles: drop --backward, --ring, --tile-m and --tile-n"};
    const int smem = static_cast<int>(o.getInt("smem", 0, 0, 1 << 20));
    std::vector<std::string> archs = splitList(o.get("arch", "sm_80"));
    for (const auto &arch : archs)
      Target::parse(arch);
    for (const auto &spec : specs)
      for (const auto &arch : archs) {
        // What that GPU's runtime compiles for (an H100's sm_90: sm_90a).
        const std::string kernelArch = Target::forGpu(Target::parse(arch).sm).arch();
        for (const WarmedModule &m : warmKernelCache(spec, arch, smem, o.get("output")))
          std::printf("%s %s %s: %s (%.2f s) %s\n", spec.name.c_str(), kernelArch.c_str(),
                      m.module.c_str(), m.origin.c_str(), m.compileSeconds, m.folder.c_str());
      }
    return 0;
  }
  if (emit != "cuda" && emit != "ptx" && emit != "cubin" && emit != "kernels")
    throw UsageError{"--emit must be mlir, plan, kernels, cuda, ptx, cubin or cache, got '" +
                     emit + "'"};
  if (emit == "cubin" && !o.has("output"))
    throw UsageError{"--emit=cubin writes binary files: give -o DIR"};
  std::vector<std::string> archs = splitList(o.get("arch", "sm_80"));
  if (archs.empty())
    throw UsageError{"--arch needs at least one target, e.g. sm_80"};
  for (const auto &arch : archs)
    Target::parse(arch); // reject typos before any compile
  if (emit == "kernels") {
    for (const auto &spec : specs)
      for (const auto &arch : archs)
        printKernels(planFor(spec, po, arch), backward);
    return 0;
  }
  const std::string dir = o.get("output");
  for (const auto &spec : specs)
    for (const auto &arch : archs) {
      // The backward modules get their own names: -o DIR keeps every module.
      const std::string stem = dir + "/" + spec.name +
                               (ring       ? ".ring"
                                : backward ? deterministic ? ".backward_deterministic" : ".backward"
                                           : "") +
                               "." + arch;
      if (emit == "cuda") {
        const AttentionPlan plan = planFor(spec, po, arch);
        EmittedModule m = ring       ? emitCudaRing(plan, arch)
                          : backward ? emitCudaBackward(plan, arch, deterministic)
                                     : emitCuda(plan, arch);
        if (dir.empty())
          std::fputs(m.source.c_str(), stdout);
        else
          writeText(stem + ".cu", m.source.data(), m.source.size());
        continue;
      }
      OfflineKernel k = ring ? compileOfflineRing(spec, arch)
                             : compileOffline(spec, arch, po, backward, deterministic);
      if (emit == "ptx" && dir.empty())
        std::fputs(k.ptx.c_str(), stdout);
      else if (emit == "ptx")
        writeText(stem + ".ptx", k.ptx.data(), k.ptx.size());
      else
        writeText(stem + ".cubin", k.cubin.data(), k.cubin.size());
      if (!dir.empty())
        std::fprintf(stderr, "%s.%s: %s for %s in %.2f s\n", stem.c_str(),
                     emit.c_str(), spec.name.c_str(), arch.c_str(), k.compileSeconds);
    }
  return 0;
}


} // namespace dattn::tools
