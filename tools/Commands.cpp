#include "Commands.h"

#include "Npy.h"
#include "Options.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/error.h"
#include "dattn/reference.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

namespace dattn::tools {

namespace {

bool wantsHelp(const std::vector<std::string> &args, const char *help) {
  for (const auto &a : args)
    if (a == "--help" || a == "-h") {
      std::fputs(help, stdout);
      return true;
    }
  return false;
}

std::string onlyFile(const Options &o, const char *cmd) {
  if (o.positional().size() != 1)
    throw UsageError{std::string(cmd) + " takes exactly one spec file, got " +
                     std::to_string(o.positional().size())};
  return o.positional()[0];
}

/// The attentions of a file: one by --name, or all of them.
std::vector<AttentionSpec> selectSpecs(const SpecFile &file, const Options &o) {
  if (o.has("name"))
    return {file.select(o.get("name"))};
  return file.attentions;
}

} // namespace

int runCheck(const std::vector<std::string> &args) {
  static const char *help =
      "usage: dattn check FILE [--name NAME]\n"
      "Parses and checks FILE. On success prints each attention (or NAME) in\n"
      "canonical form, defaults made explicit; on failure prints every error\n"
      "as file:line:col with the line and a caret, and exits with status 1.\n";
  if (wantsHelp(args, help))
    return 0;
  Options o(args, {"name"}, {});
  SpecFile file = loadSpecFile(onlyFile(o, "check"));
  for (const auto &spec : selectSpecs(file, o))
    std::fputs(spec.canonical().c_str(), stdout);
  return 0;
}

int runCompile(const std::vector<std::string> &args) {
  static const char *help =
      "usage: dattn compile FILE [--name NAME] --emit=mlir|plan [--tile-m M] [--tile-n N]\n"
      "                    [--locations]\n"
      "  --emit=mlir   the dattn dialect as generated from the spec (verified)\n"
      "  --emit=plan   after dattn-normalize, dattn-merge-branches, dattn-plan-tiles\n"
      "  --tile-m/-n   force tile sizes (powers of two in [16, 256]) in the plan\n"
      "  --locations   print each op's spec file:line:col\n"
      "Without --name every attention of the file is compiled.\n";
  if (wantsHelp(args, help))
    return 0;
  Options o(args, {"name", "emit", "tile-m", "tile-n"}, {"locations"});
  std::string emit = o.get("emit");
  if (emit.empty())
    throw UsageError{"--emit is required (mlir or plan)"};
  IRStage stage;
  if (emit == "mlir")
    stage = IRStage::Generated;
  else if (emit == "plan")
    stage = IRStage::Planned;
  else
    throw UsageError{"--emit must be mlir or plan, got '" + emit +
                     "' (cuda, ptx and cubin come with the runtime)"};
  PlanOptions po;
  po.tileM = o.getInt("tile-m", 0, 0, 256);
  po.tileN = o.getInt("tile-n", 0, 0, 256);
  SpecFile file = loadSpecFile(onlyFile(o, "compile"));
  std::string ir = emitIR(selectSpecs(file, o), stage, po, o.has("locations"));
  std::fputs(ir.c_str(), stdout);
  if (!ir.empty() && ir.back() != '\n')
    std::fputc('\n', stdout);
  return 0;
}

namespace {

/// Loads an input array or draws a standard normal one.
std::vector<float> inputArray(const Options &o, const char *key,
                              const std::vector<int64_t> &shape, std::mt19937_64 &rng) {
  size_t count = 1;
  for (int64_t d : shape)
    count *= static_cast<size_t>(d);
  if (o.has(key)) {
    NpyArray a = readNpy(o.get(key));
    if (a.shape != shape)
      throw ArgumentError("--" + std::string(key) + " " + o.get(key) + " has shape " +
                          shapeString(a.shape) + ", but the spec and --seq/--batch need " +
                          shapeString(shape));
    return std::move(a.data);
  }
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(count);
  for (float &x : v)
    x = normal(rng);
  return v;
}

} // namespace

int runRun(const std::vector<std::string> &args) {
  static const char *help =
      "usage: dattn run FILE [--name NAME] --seq N [--batch B] --device cpu\n"
      "                [--q q.npy --k k.npy --v v.npy | --seed S]\n"
      "                [--block-mask mask.npy] [--out o.npy] [--lse lse.npy]\n"
      "Inputs are float32 .npy arrays: q [B, N, heads, head_dim], k and v\n"
      "[B, N, kv_heads, head_dim]; missing inputs are drawn from N(0, 1) with\n"
      "--seed (default 0). Outputs: o [B, N, heads, head_dim], lse [B, heads, N].\n"
      "A spec with block_mask needs --block-mask: a float32 [NB, NB] 0/1 array,\n"
      "NB = ceil(N / block); without it a random mask (density 0.5) is used.\n"
      "--device cpu runs the double-precision reference.\n";
  if (wantsHelp(args, help))
    return 0;
  Options o(args,
            {"name", "seq", "batch", "device", "q", "k", "v", "seed", "out", "lse", "block-mask"},
            {});
  if (!o.has("seq"))
    throw UsageError{"--seq N is required"};
  std::string device = o.get("device", "cpu");
  if (device == "gpu")
    throw Error("--device gpu: the GPU runtime is not built yet; use --device cpu");
  if (device != "cpu")
    throw UsageError{"--device must be cpu or gpu, got '" + device + "'"};
  const int64_t N = o.getInt("seq", 0, 1, int64_t(1) << 31);
  const int64_t B = o.getInt("batch", 1, 1, 1 << 16);
  const uint64_t seed = static_cast<uint64_t>(o.getInt("seed", 0, 0, int64_t(1) << 62));
  SpecFile file = loadSpecFile(onlyFile(o, "run"));
  const AttentionSpec &spec = file.select(o.get("name"));
  if (N % spec.ring != 0)
    throw ArgumentError("--seq " + std::to_string(N) + " is not divisible by ring = " +
                        std::to_string(spec.ring) + " (each rank holds N / ring rows)");

  std::mt19937_64 rng(seed);
  const std::vector<int64_t> qShape = {B, N, spec.heads, spec.headDim};
  const std::vector<int64_t> kvShape = {B, N, spec.kvHeads, spec.headDim};
  std::vector<float> q = inputArray(o, "q", qShape, rng);
  std::vector<float> k = inputArray(o, "k", kvShape, rng);
  std::vector<float> v = inputArray(o, "v", kvShape, rng);

  BlockMask mask;
  const BlockMask *maskPtr = nullptr;
  if (spec.needsBlockMask()) {
    int64_t blk = spec.blockMaskBlock(), nb = (N + blk - 1) / blk;
    if (o.has("block-mask")) {
      NpyArray m = readNpy(o.get("block-mask"));
      if (m.shape != std::vector<int64_t>{nb, nb})
        throw ArgumentError("--block-mask " + o.get("block-mask") + " has shape " +
                            shapeString(m.shape) + ", but block " + std::to_string(blk) +
                            " and N " + std::to_string(N) + " need [" + std::to_string(nb) +
                            ", " + std::to_string(nb) + "]");
      mask = BlockMask::fromDense(blk, nb, m.data.data());
    } else {
      std::fprintf(stderr, "dattn run: no --block-mask given: using a random mask "
                           "(density 0.5, seed %llu)\n", static_cast<unsigned long long>(seed));
      std::vector<float> dense(static_cast<size_t>(nb * nb));
      std::bernoulli_distribution keep(0.5);
      for (float &x : dense)
        x = keep(rng) ? 1.0f : 0.0f;
      mask = BlockMask::fromDense(blk, nb, dense.data());
    }
    maskPtr = &mask;
  } else if (o.has("block-mask")) {
    throw ArgumentError("--block-mask given, but attention '" + spec.name +
                        "' has no block_mask pattern");
  }

  std::vector<float> out(q.size()), lse(static_cast<size_t>(B * spec.heads * N));
  auto t0 = std::chrono::steady_clock::now();
  referenceForward(spec, B, N, q.data(), k.data(), v.data(), maskPtr, out.data(), lse.data());
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                  .count();
  std::printf("attention %s: batch %lld, seq %lld, heads %d (kv %d), head_dim %d, %s\n",
              spec.name.c_str(), static_cast<long long>(B), static_cast<long long>(N),
              spec.heads, spec.kvHeads, spec.headDim, toString(spec.dtype));
  std::printf("device cpu (reference, float64 math on float32 inputs): %.1f ms\n", ms);
  if (o.has("out")) {
    writeNpy(o.get("out"), qShape, out.data());
    std::printf("wrote %s %s\n", o.get("out").c_str(), shapeString(qShape).c_str());
  }
  if (o.has("lse")) {
    writeNpy(o.get("lse"), {B, spec.heads, N}, lse.data());
    std::printf("wrote %s %s\n", o.get("lse").c_str(),
                shapeString({B, spec.heads, N}).c_str());
  }
  return 0;
}

} // namespace dattn::tools
