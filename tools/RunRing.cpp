// dattn run --ranks P: a spec as a ring, forward and (--backward) backward,
// with times, the bytes the ranks exchanged against the plan's, and each
// rank's device memory (HostRing over either transport):
//   --loopback   P ranks on one GPU, device copies standing in for NCCL;
//   otherwise    NCCL: under a launcher (torchrun, srun, mpirun) this
//                process is the one rank the launcher named; without one,
//                the process drives P GPUs, rank i on GPU i.
// Every process draws the same whole-sequence inputs (the same seed), keeps
// its ranks' rows, and --check compares the rows it holds.
#include "CommandUtil.h"
#include "RunRing.h"

#include "dattn/comm.h"
#include "dattn/compiler.h"
#include "dattn/host.h"

#include <algorithm>
#include <cstdio>

namespace dattn::tools {

namespace {

/// Device memory of the same run on one GPU: q, k, v, out, lse, dout, dq,
/// dk, dv of the whole sequence and the larger of its two workspaces.
int64_t oneGpuBytes(const AttentionSpec &spec, int64_t B, int64_t N, int64_t elementBytes,
                    const WorkspaceSizes &ws) {
  const int64_t q = B * N * spec.heads * spec.headDim * elementBytes,
                kv = B * N * spec.kvHeads * spec.headDim * elementBytes;
  return 4 * q + 4 * kv + B * spec.heads * N * 4 + std::max(ws.forward, ws.backward);
}

/// Issue 9's memory bound, rank by rank: the one-GPU memory / P plus what
/// the plan has the rank receive into; prints the rank closest to it.
void reportMemoryBound(const HostRing &run, const AttentionSpec &spec, int64_t B, int64_t N,
                       const WorkspaceSizes &oneGpu) {
  const RingPlan &plan = run.plan();
  const RingSchedule &schedule = run.schedule();
  const double share =
      static_cast<double>(oneGpuBytes(spec, B, N, plan.elementBytes, oneGpu)) / plan.ranks;
  int worst = -1;
  double worstRatio = 0, worstBound = 0;
  for (int r = 0; r < run.ranks(); ++r) {
    if (!run.holds(r))
      continue;
    const double bound = share + static_cast<double>(B) * schedule.receiveBufferBytes(r, true);
    const double ratio = run.rankBytes(r) / bound;
    if (worst < 0 || ratio > worstRatio) {
      worst = r;
      worstRatio = ratio;
      worstBound = bound;
    }
  }
  if (worst < 0)
    return;
  std::printf("memory bound (one GPU's %.2f MiB / %d + the plan's receive buffers): rank %d "
              "holds %.2f MiB against %.2f MiB, %.3fx (%s)\n",
              share * plan.ranks / 1048576.0, plan.ranks, worst,
              run.rankBytes(worst) / 1048576.0, worstBound / 1048576.0, worstRatio,
              worstRatio <= 1.001 ? "within" : "above"); // 0.1%: buffers' 256-byte alignment
}

/// A loopback ring's time rank by rank (each rank's own kernels, medians
/// of `iters` passes): the slowest is about the ring's time on P GPUs when
/// the transfers hide behind compute, which the loopback's total (every
/// rank in turn, and the copies) is not.
void reportRankTimes(HostRing &run, bool backward, int iters) {
  const std::vector<double> ms = run.rankMilliseconds(backward, iters);
  const auto slowest = std::max_element(ms.begin(), ms.end());
  double sum = 0;
  for (double x : ms)
    sum += x;
  std::printf("per rank%s (its own kernels, medians of %d): slowest %.3f ms (rank %d), fastest "
              "%.3f ms, mean %.3f ms: on %d GPUs with the transfers hidden, about %.3f ms\n",
              backward ? ", backward" : "", iters, *slowest,
              static_cast<int>(slowest - ms.begin()), *std::min_element(ms.begin(), ms.end()),
              sum / ms.size(), static_cast<int>(ms.size()), *slowest);
}

/// Runs, times and checks `run`; `where` describes the ranks and GPUs;
/// `oneGpu`, the same attention's workspaces on one GPU for (B, N).
int report(const Options &o, const AttentionSpec &spec, int64_t B, int64_t N, HostRing &run,
           const BlockMask *mask, const std::string &where, const WorkspaceSizes &oneGpu) {
  run.run();
  std::vector<float> out, lse;
  run.read(out, lse);
  const int iters = static_cast<int>(o.getInt("iters", 10, 1, 100000));
  const double ms = timeMedianMs([&](int) { run.rerun(); }, 1, iters);
  const RingPlan &plan = run.plan();
  int64_t most = 0, least = -1;
  int first = -1;
  for (int r = 0; r < run.ranks(); ++r) {
    if (!run.holds(r))
      continue;
    first = first < 0 ? r : first;
    most = std::max(most, run.rankBytes(r));
    least = least < 0 ? run.rankBytes(r) : std::min(least, run.rankBytes(r));
  }
  std::printf("attention %s: batch %lld, seq %lld, heads %d (kv %d), head_dim %d, %s\n",
              spec.name.c_str(), static_cast<long long>(B), static_cast<long long>(N),
              spec.heads, spec.kvHeads, spec.headDim, toString(spec.dtype));
  std::printf("ring of %d ranks %s, %s layout: %.3f ms (median of %d)\n", plan.ranks,
              where.c_str(), toString(plan.layout), ms, iters);
  if (o.has("loopback"))
    reportRankTimes(run, false, iters);
  std::printf("moved: %lld bytes of K and V by this process's ranks (plan-ring: %lld x batch "
              "%lld for all ranks)\n",
              static_cast<long long>(run.bytesMoved()),
              static_cast<long long>(plan.totalBytesForward), static_cast<long long>(B));
  std::printf("memory per rank: %.2f MiB most, %.2f MiB least (its q, k, v, out, lse and "
              "workspace; workspace of rank %d %.2f MiB)\n",
              most / 1048576.0, least / 1048576.0, first, run.workspaceBytes(first) / 1048576.0);
  const std::vector<int64_t> held = run.heldRows();
  const std::vector<int64_t> *only = static_cast<int64_t>(held.size()) < N ? &held : nullptr;
  bool pass =
      !o.has("check") || checkForward(spec, B, N, run.q(), run.k(), run.v(), mask, out, lse, only);
  if (!o.has("backward"))
    return pass ? 0 : 1;

  const std::vector<float> dout = randomNormal(run.q().size(), seedOption(o), kDoutStream);
  run.backward(dout.data());
  std::vector<float> dq, dk, dv;
  run.readGradients(dq, dk, dv);
  const int64_t movedBackward = run.bytesMoved();
  const double bms = timeMedianMs([&](int) { run.rebackward(); }, 1, iters);
  std::printf("backward: %.3f ms (median of %d); moved %lld bytes (plan-ring: %lld x batch "
              "%lld); workspace of rank %d %.2f MiB\n",
              bms, iters, static_cast<long long>(movedBackward),
              static_cast<long long>(plan.totalBytesBackward), static_cast<long long>(B), first,
              run.backwardWorkspaceBytes(first) / 1048576.0);
  if (o.has("loopback"))
    reportRankTimes(run, true, iters);
  reportMemoryBound(run, spec, B, N, oneGpu);
  if (o.has("check"))
    pass = checkGradients(spec, B, N, run.q(), run.k(), run.v(), run.dout(), mask, dq, dk, dv,
                          only) &&
           pass;
  return pass ? 0 : 1;
}

/// Whether a launcher started this process (its rank variable is set).
bool underLauncher() {
  for (const char *v : {"RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"})
    if (const char *x = std::getenv(v); x && *x)
      return true;
  return false;
}

} // namespace

int runRing(const Options &o, const AttentionSpec &spec, int64_t B, int64_t N,
            const std::vector<float> &q, const std::vector<float> &k,
            const std::vector<float> &v, const BlockMask *mask) {
  if (o.has("loopback")) {
    const int ranks = static_cast<int>(o.getInt("ranks", spec.ring, 1, 4096));
    Runtime rt(static_cast<int>(o.getInt("gpu", 0, 0, 1023)));
    std::unique_ptr<CompiledAttention> attn = rt.compile(spec, CompileOptions{N});
    HostRing run(*attn, ranks, B, N, q.data(), k.data(), v.data(), mask);
    return report(o, spec, B, N, run, mask,
                  "on gpu " + std::to_string(rt.device().ordinal) + " (" + rt.device().name +
                      ", loopback: device copies for NCCL)",
                  attn->workspaceSizes(B, N));
  }
  std::vector<std::unique_ptr<RingCommunicator>> comms;
  if (underLauncher()) {
    comms.push_back(RingCommunicator::fromEnvironment(
        o.has("gpu") ? static_cast<int>(o.getInt("gpu", 0, 0, 1023)) : -1));
    if (o.has("ranks") && o.getInt("ranks", 0, 1, 4096) != comms[0]->size())
      throw UsageError{"--ranks " + o.get("ranks") + ", but the launcher started " +
                       std::to_string(comms[0]->size()) + " ranks"};
  } else {
    const int ranks = static_cast<int>(o.getInt("ranks", spec.ring, 1, 4096));
    const int gpus = Runtime::deviceCount();
    if (gpus < ranks)
      throw UsageError{"a ring of " + std::to_string(ranks) + " ranks over NCCL needs " +
                       std::to_string(ranks) + " GPUs (one rank per GPU), this machine has " +
                       std::to_string(gpus) +
                       ": add --loopback to run the ranks on one GPU, or start one process "
                       "per GPU under torchrun, srun or mpirun"};
    std::vector<int> devices(ranks);
    for (int r = 0; r < ranks; ++r)
      devices[r] = r;
    comms = RingCommunicator::forDevices(devices);
  }
  std::vector<std::unique_ptr<Runtime>> runtimes;
  std::vector<std::unique_ptr<CompiledAttention>> attns;
  std::vector<RingMember> members;
  std::string where = "over NCCL, this process: ";
  for (const auto &c : comms) {
    runtimes.push_back(std::make_unique<Runtime>(c->device()));
    attns.push_back(runtimes.back()->compile(spec, CompileOptions{N}));
    members.push_back({attns.back().get(), c.get(), {}});
    where += (members.size() > 1 ? ", " : "") + std::string("rank ") + std::to_string(c->rank()) +
             " on gpu " + std::to_string(c->device());
  }
  where += " (" + runtimes[0]->device().name + ")";
  HostRing run(members, B, N, q.data(), k.data(), v.data(), mask);
  return report(o, spec, B, N, run, mask, where, attns[0]->workspaceSizes(B, N));
}

} // namespace dattn::tools
