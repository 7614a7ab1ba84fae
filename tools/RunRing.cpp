// dattn run --ranks P --loopback: a spec as a ring of P ranks on one GPU
// (LoopbackRing through HostRing), forward and (--backward) backward, with
// times, the bytes the ranks exchanged against the plan's, and each rank's
// device memory.
#include "CommandUtil.h"
#include "RunRing.h"

#include "dattn/compiler.h"
#include "dattn/host.h"

#include <algorithm>
#include <cstdio>
#include <random>

namespace dattn::tools {

int runRingLoopback(const Options &o, const AttentionSpec &spec, int64_t B, int64_t N,
                    const std::vector<float> &q, const std::vector<float> &k,
                    const std::vector<float> &v, const BlockMask *mask) {
  const int ranks = static_cast<int>(o.getInt("ranks", spec.ring, 1, 4096));
  Runtime rt(static_cast<int>(o.getInt("gpu", 0, 0, 1023)));
  const DeviceInfo &dev = rt.device();
  std::unique_ptr<CompiledAttention> attn = rt.compile(spec);
  HostRing run(*attn, ranks, B, N, q.data(), k.data(), v.data(), mask);
  run.run();
  std::vector<float> out, lse;
  run.read(out, lse);
  const int iters = static_cast<int>(o.getInt("iters", 10, 1, 100000));
  const double ms = timeMedianMs([&](int) { run.rerun(); }, 1, iters);

  const RingPlan &plan = run.ring().plan();
  int64_t most = 0, least = -1;
  for (int r = 0; r < ranks; ++r) {
    most = std::max(most, run.rankBytes(r));
    least = least < 0 ? run.rankBytes(r) : std::min(least, run.rankBytes(r));
  }
  std::printf("attention %s: batch %lld, seq %lld, heads %d (kv %d), head_dim %d, %s\n",
              spec.name.c_str(), static_cast<long long>(B), static_cast<long long>(N),
              spec.heads, spec.kvHeads, spec.headDim, toString(spec.dtype));
  std::printf("ring of %d ranks on gpu %d (%s, loopback: device copies for NCCL), %s layout: "
              "%.3f ms (median of %d)\n",
              ranks, dev.ordinal, dev.name.c_str(), toString(plan.layout), ms, iters);
  std::printf("moved: %lld bytes of K and V (plan-ring: %lld x batch %lld)\n",
              static_cast<long long>(run.bytesMoved()),
              static_cast<long long>(plan.totalBytesForward), static_cast<long long>(B));
  std::printf("memory per rank: %.2f MiB most, %.2f MiB least (its q, k, v, out, lse and "
              "workspace; workspace of rank 0 %.2f MiB)\n",
              most / 1048576.0, least / 1048576.0, run.ring().workspaceBytes(0) / 1048576.0);
  bool pass = !o.has("check") || checkForward(spec, B, N, run.q(), run.k(), run.v(), mask, out, lse);
  if (!o.has("backward"))
    return pass ? 0 : 1;

  std::vector<float> dout(run.q().size());
  std::mt19937_64 rng(static_cast<uint64_t>(o.getInt("seed", 0, 0, int64_t(1) << 62)) + 17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float &x : dout)
    x = normal(rng);
  run.backward(dout.data());
  std::vector<float> dq, dk, dv;
  run.readGradients(dq, dk, dv);
  const int64_t movedBackward = run.bytesMoved();
  const double bms = timeMedianMs([&](int) { run.rebackward(); }, 1, iters);
  std::printf("backward: %.3f ms (median of %d); moved %lld bytes (plan-ring: %lld x batch "
              "%lld); workspace of rank 0 %.2f MiB\n",
              bms, iters, static_cast<long long>(movedBackward),
              static_cast<long long>(plan.totalBytesBackward), static_cast<long long>(B),
              run.ring().backwardWorkspaceBytes(0) / 1048576.0);
  if (o.has("check"))
    pass = checkGradients(spec, B, N, run.q(), run.k(), run.v(), run.dout(), mask, dq, dk, dv) &&
           pass;
  return pass ? 0 : 1;
}

} // namespace dattn::tools
