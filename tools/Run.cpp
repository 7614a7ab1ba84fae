// dattn run: a spec on the CPU reference or the GPU, with checks and timing.
#include "Commands.h"
#include "CommandUtil.h"
#include "Npy.h"
#include "Options.h"
#include "RunRing.h"

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

/// Loads an input array or draws a standard normal one.
/// The .npy file named by --KEY, else random normal values of stream
/// `stream` of the --seed.
std::vector<float> inputArray(const Options &o, const char *key,
                              const std::vector<int64_t> &shape, uint64_t stream) {
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
  return randomNormal(count, seedOption(o), stream);
}

} // namespace

namespace {

/// --backward on the GPU: time it, write and (with --check) compare the
/// gradients. Returns whether the check passed (true without --check).
bool runBackwardOnGpu(const Options &o, const AttentionSpec &spec, int64_t B, int64_t N,
                      HostAttention &run, const BlockMask *mask, double forwardMs,
                      const PairCount &pc) {
  const std::vector<int64_t> qShape = {B, N, spec.heads, spec.headDim};
  const std::vector<int64_t> kvShape = {B, N, spec.kvHeads, spec.headDim};
  std::vector<float> dout = inputArray(o, "dout", qShape, kDoutStream);
  const bool deterministic = o.has("deterministic");
  run.backward(dout.data(), deterministic);
  std::vector<float> dq, dk, dv;
  run.readGradients(dq, dk, dv);
  if (deterministic) { // a second run must give the same bits
    std::vector<float> dq2, dk2, dv2;
    run.backward(dout.data(), true);
    run.readGradients(dq2, dk2, dv2);
    // backward() poisons the gradients first, so a second run that wrote
    // nothing cannot pass; bits are compared, not values (-0 vs +0, NaN).
    auto bits = [](const std::vector<float> &x, const std::vector<float> &y) {
      return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * 4) == 0;
    };
    const bool same = bits(dq, dq2) && bits(dk, dk2) && bits(dv, dv2);
    std::printf("deterministic: two runs %s\n", same ? "bit-identical" : "DIFFER");
    if (!same)
      return false;
  }
  const int iters = static_cast<int>(o.getInt("iters", 10, 1, 100000));
  const double bms =
      timeMedianMs([&](int) { run.rebackward(deterministic); }, 1, iters);
  const double flops = 4.0 * double(pc.pairs) * spec.headDim;
  std::printf("backward: %.3f ms (median of %d); forward+backward %.3f ms, %.1f effective "
              "TFLOP/s (3.5 x forward FLOPs)\n",
              bms, iters, bms + forwardMs, 3.5 * flops / ((bms + forwardMs) * 1e-3) / 1e12);
  if (o.has("grads")) {
    const std::string prefix = o.get("grads");
    writeNpy(prefix + "_dq.npy", qShape, dq.data());
    writeNpy(prefix + "_dk.npy", kvShape, dk.data());
    writeNpy(prefix + "_dv.npy", kvShape, dv.data());
    std::printf("wrote %s_dq.npy, %s_dk.npy, %s_dv.npy\n", prefix.c_str(), prefix.c_str(),
                prefix.c_str());
  }
  if (!o.has("check"))
    return true;
  return checkGradients(spec, B, N, run.q(), run.k(), run.v(), run.dout(), mask, dq, dk, dv);
}

/// --device gpu: compile, run on poisoned outputs, time, optionally check.
int runOnGpu(const Options &o, const AttentionSpec &spec, int64_t B, int64_t N,
             const std::vector<float> &q, const std::vector<float> &k,
             const std::vector<float> &v, const BlockMask *mask) {
  RuntimeOptions ro;
  ro.tiles.tileM = o.getInt("tile-m", 0, 0, 256);
  ro.tiles.tileN = o.getInt("tile-n", 0, 0, 256);
  Runtime rt(static_cast<int>(o.getInt("gpu", 0, 0, 1023)), ro);
  const DeviceInfo &dev = rt.device();
  const bool verbose = o.has("verbose");
  // Tuned for this N where a tuning database has entries (--verbose says).
  std::unique_ptr<CompiledAttention> attn = rt.compile(spec, CompileOptions{N});
  const CompileReport &rep = attn->report();
  if (verbose) {
    std::printf("compile: %s; cold NVRTC compile %.2f s; this load %.3f s", rep.origin.c_str(),
                rep.coldCompileSeconds, rep.loadSeconds);
    if (!rep.cacheFolder.empty())
      std::printf(" (cache %s)", rep.cacheFolder.c_str());
    std::printf("\n");
    // Which configuration ran and where it came from: the kernel family's
    // heuristic or a tuning database's measurement for this N.
    for (const auto &ki : attn->module().kernels)
      if (ki.family.empty())
        std::printf("  kernel %s: %d threads (elementwise)\n", ki.name.c_str(), ki.threads);
      else
        std::printf("  kernel %s: family %s, config %s (%s, 1 of %d candidates), "
                    "%d threads, %d bytes shared memory\n",
                    ki.name.c_str(), ki.family.c_str(), ki.config.describe().c_str(),
                    ki.origin.c_str(), ki.candidates, ki.threads, ki.smemBytes);
    if (attn->branchStreams())
      std::printf("  branch kernels: side by side on streams of their own "
                  "(DATTN_BRANCH_STREAMS=0 runs them on one)\n");
  }
  // The device computes on dtype-rounded inputs; so does the check.
  HostAttention run(*attn, B, N, q.data(), k.data(), v.data(), mask);
  run.run();
  std::vector<float> out, lse;
  run.read(out, lse);

  const int iters = static_cast<int>(o.getInt("iters", 10, 1, 100000));
  double ms = timeMedianMs([&](int) { run.rerun(); }, 2, iters);
  PairCount pc = countPairs(attn->plan(), N, B, mask);
  double tflops = 4.0 * double(pc.pairs) * spec.headDim / (ms * 1e-3) / 1e12;
  std::printf("attention %s: batch %lld, seq %lld, heads %d (kv %d), head_dim %d, %s\n",
              spec.name.c_str(), static_cast<long long>(B), static_cast<long long>(N),
              spec.heads, spec.kvHeads, spec.headDim, toString(spec.dtype));
  std::printf("device gpu %d (%s, %s): %.3f ms (median of %d), %.1f effective TFLOP/s "
              "(%s%lld attended pairs)\n",
              dev.ordinal, dev.name.c_str(), dev.arch().c_str(), ms, iters, tflops,
              pc.exact ? "" : "~", static_cast<long long>(pc.pairs));
  std::printf("memory: inputs %.1f MiB, outputs %.1f MiB, workspace %.1f MiB forward, "
              "%.1f MiB backward\n",
              run.inputBytes() / 1048576.0, run.outputBytes() / 1048576.0,
              run.workspaceSizes().forward / 1048576.0, run.workspaceSizes().backward / 1048576.0);
  if (o.has("out")) {
    writeNpy(o.get("out"), {B, N, spec.heads, spec.headDim}, out.data());
    std::printf("wrote %s\n", o.get("out").c_str());
  }
  if (o.has("lse")) {
    writeNpy(o.get("lse"), {B, spec.heads, N}, lse.data());
    std::printf("wrote %s\n", o.get("lse").c_str());
  }
  if (!o.has("check"))
    return o.has("backward") && !runBackwardOnGpu(o, spec, B, N, run, mask, ms, pc) ? 1 : 0;

  const bool pass = checkForward(spec, B, N, run.q(), run.k(), run.v(), mask, out, lse);
  if (!o.has("backward"))
    return pass ? 0 : 1;
  return runBackwardOnGpu(o, spec, B, N, run, mask, ms, pc) && pass ? 0 : 1;
}

} // namespace

int runRun(const std::vector<std::string> &args) {
  static const char *help =
      "usage: dattn run FILE [--name NAME] --seq N [--batch B] [--device cpu|gpu]\n"
      "                [--q q.npy --k k.npy --v v.npy | --seed S]\n"
      "                [--block-mask mask.npy] [--out o.npy] [--lse lse.npy]\n"
      "Inputs are float32 .npy arrays: q [B, N, heads, head_dim], k and v\n"
      "[B, N, kv_heads, head_dim]; missing inputs are drawn from N(0, 1) with\n"
      "--seed (default 0). Outputs: o [B, N, heads, head_dim], lse [B, heads, N].\n"
      "A spec with block_mask needs --block-mask: a float32 [NB, NB] 0/1 array,\n"
      "NB = ceil(N / block); without it a random mask (density 0.5) is used.\n"
      "--device cpu runs the double-precision reference (the default).\n"
      "--device gpu JIT-compiles the spec for GPU --gpu G (default 0) and runs it;\n"
      "  it prints the median time of --iters runs (default 10) and the effective\n"
      "  TFLOP/s (4 x attended pairs x head_dim / time).\n"
      "  --check compares with the CPU reference on the same (dtype-rounded) inputs,\n"
      "  on 256 sampled rows when N > 2048, and fails above the dtype's tolerance.\n"
      "  --verbose prints the cold compile and cache-hit times.\n"
      "  --tile-m/--tile-n force the plan's tile sizes (as in dattn compile).\n"
      "--backward also computes dq, dk, dv for the upstream gradient --dout dout.npy\n"
      "  (like o; drawn from N(0, 1) when absent) and writes them as\n"
      "  PREFIX_dq.npy, PREFIX_dk.npy, PREFIX_dv.npy with --grads PREFIX\n"
      "  On the GPU it prints the backward and forward+backward times (effective\n"
      "  TFLOP/s counts 3.5 x the forward FLOPs), and --check also compares the\n"
      "  gradients with the reference (for N <= 4096) at twice the tolerance.\n"
      "  --deterministic computes dQ in its own pass (bit-identical run to run;\n"
      "  checked with a second run) instead of fp32 reductions.\n"
      "--ranks P (with --device gpu) runs the spec as a ring of P ranks (default:\n"
      "  the spec's ring), each holding its rows only, over NCCL: one process per\n"
      "  rank under torchrun, srun or mpirun (the launcher's variables say which;\n"
      "  --gpu overrides the local rank's GPU), else this process on GPUs 0..P-1.\n"
      "  --loopback runs the P ranks on one GPU, device copies standing in for\n"
      "  NCCL. It prints the time, the bytes moved against plan-ring's, and each\n"
      "  rank's device memory; --check as above, on the rows this process holds.\n"
      "  --backward runs the ring's backward too (--check compares gradients).\n"
      "  A peer that dies or hangs is an error after DATTN_RING_TIMEOUT seconds.\n";
  if (wantsHelp(args, help))
    return 0;
  Options o(args,
            {"name", "seq", "batch", "device", "q", "k", "v", "seed", "out", "lse", "block-mask",
             "gpu", "iters", "tile-m", "tile-n", "dout", "grads", "ranks"},
            {"check", "verbose", "backward", "deterministic", "loopback"});
  if (!o.has("seq"))
    throw UsageError{"--seq N is required"};
  if (o.has("deterministic") && !o.has("backward"))
    throw UsageError{"--deterministic applies to the backward pass: add --backward"};
  std::string device = o.get("device", "cpu");
  if (device != "cpu" && device != "gpu")
    throw UsageError{"--device must be cpu or gpu, got '" + device + "'"};
  const int64_t N = o.getInt("seq", 0, 1, int64_t(1) << 31);
  const int64_t B = o.getInt("batch", 1, 1, 1 << 16);
  const uint64_t seed = seedOption(o);
  SpecFile file = loadSpecFile(onlyFile(o, "run"));
  const AttentionSpec &spec = file.select(o.get("name"));

  std::mt19937_64 rng(seed); // the random block mask
  const std::vector<int64_t> qShape = {B, N, spec.heads, spec.headDim};
  const std::vector<int64_t> kvShape = {B, N, spec.kvHeads, spec.headDim};
  std::vector<float> q = inputArray(o, "q", qShape, 0);
  std::vector<float> k = inputArray(o, "k", kvShape, 1);
  std::vector<float> v = inputArray(o, "v", kvShape, 2);

  BlockMask mask;
  const BlockMask *maskPtr = nullptr;
  if (spec.needsBlockMask()) {
    int64_t blk = spec.blockMaskBlock(), nb = (N + blk - 1) / blk;
    if (o.has("block-mask")) {
      mask = readBlockMaskOption(o, spec, N);
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

  if (o.has("loopback") || o.has("ranks")) {
    if (device != "gpu")
      throw UsageError{"--ranks P runs a ring on GPUs: add --device gpu"};
    return runRing(o, spec, B, N, q, k, v, maskPtr);
  }
  if (device == "gpu")
    return runOnGpu(o, spec, B, N, q, k, v, maskPtr);
  if (!o.has("backward") && (o.has("dout") || o.has("grads")))
    throw UsageError{"--dout and --grads need --backward"};
  if (o.has("check") || o.has("iters"))
    throw UsageError{"--check and --iters apply to --device gpu"};

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
  if (o.has("backward")) {
    std::vector<float> dout = inputArray(o, "dout", qShape, kDoutStream);
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    auto tb = std::chrono::steady_clock::now();
    referenceBackward(spec, B, N, q.data(), k.data(), v.data(), dout.data(), maskPtr, dq.data(),
                      dk.data(), dv.data());
    std::printf("backward (reference, float64 math): %.1f ms\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - tb)
                    .count());
    if (o.has("grads")) {
      const std::string prefix = o.get("grads");
      writeNpy(prefix + "_dq.npy", qShape, dq.data());
      writeNpy(prefix + "_dk.npy", kvShape, dk.data());
      writeNpy(prefix + "_dv.npy", kvShape, dv.data());
      std::printf("wrote %s_dq.npy %s, %s_dk.npy and %s_dv.npy %s\n", prefix.c_str(),
                  shapeString(qShape).c_str(), prefix.c_str(), prefix.c_str(),
                  shapeString(kvShape).c_str());
    }
  }
  return 0;
}

} // namespace dattn::tools
