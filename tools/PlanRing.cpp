// dattn plan-ring: what each rank of a ring receives from each peer.
#include "CommandUtil.h"
#include "Commands.h"
#include "Options.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/error.h"
#include "dattn/ring.h"

#include <cstdio>
#include <map>

namespace dattn::tools {

namespace {

std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f MiB", bytes / 1048576.0);
  return buf;
}

void printPlan(const RingPlan &plan, const AttentionSpec &spec) {
  const RingSchedule schedule = scheduleRing(plan);
  std::printf("attention %s: N = %lld over %d ranks of %lld rows (%s); %d kv heads, head_dim "
              "%d, %s\n",
              spec.name.c_str(), static_cast<long long>(plan.seqLen), plan.ranks,
              static_cast<long long>(plan.shardRows), toString(plan.layout), plan.kvHeads,
              plan.headDim, toString(spec.dtype));
  std::printf("  exchange: %s\n",
              schedule.passAlong
                  ? "passed along (whole shards: each rank forwards the block it worked on to "
                    "the next, backward with its dK/dV partials, which come home at the end)"
                  : "pairwise (at step s rank r sends rank r + s the rows it needs)");
  for (size_t b = 0; b < plan.branches.size(); ++b)
    std::printf("  branch %zu (%s): %s, %lld rows received over all ranks\n", b,
                plan.branches[b].what.c_str(), toString(plan.branches[b].primitive),
                static_cast<long long>(plan.branches[b].rowsReceived));
  for (const RankPlan &rp : plan.rankPlans) {
    std::string rows;
    for (const RowRange &r : rp.shard)
      rows += (rows.empty() ? "" : " + ") + std::string("[") + std::to_string(r.begin) + ", " +
              std::to_string(r.end) + ")";
    std::printf("  rank %d, rows %s: receives %lld rows, %s forward, %s backward; buffers %s "
                "forward, %s backward\n",
                rp.rank, rows.empty() ? "none" : rows.c_str(),
                static_cast<long long>(rp.rowsReceived), mib(rp.bytesForward).c_str(),
                mib(rp.bytesBackward).c_str(), mib(schedule.bufferBytesForward(rp.rank)).c_str(),
                mib(schedule.bufferBytesBackward(rp.rank)).c_str());
    std::map<int, std::pair<int64_t, int>> perPeer; // rows, kv heads
    for (const PeerRows &pr : rp.receives) {
      perPeer[pr.peer].first += pr.count;
      perPeer[pr.peer].second += 1;
    }
    for (const auto &[peer, v] : perPeer)
      std::printf("    from rank %d: %lld rows over %d kv heads, %s\n", peer,
                  static_cast<long long>(v.first), v.second,
                  mib(v.first * plan.headDim * plan.elementBytes * 2).c_str());
  }
  std::printf("total: %s forward (K and V in %s), %s backward (K and V again, dK and dV "
              "partials back in fp32)\n",
              mib(plan.totalBytesForward).c_str(), toString(spec.dtype),
              mib(plan.totalBytesBackward).c_str());
}

} // namespace

int runPlanRing(const std::vector<std::string> &args) {
  static const char *help =
      "usage: dattn plan-ring FILE [--name NAME] --seq N [--ranks P] [--json]\n"
      "                      [--block-mask mask.npy]\n"
      "For sequence length N split into P contiguous shards (default: the spec's\n"
      "ring), prints per rank and peer the K/V rows and bytes received, forward and\n"
      "backward, per kv head packed (never the union over heads), each branch's\n"
      "primitive (local, halo, gather, ring), how the blocks move (pairwise, or passed\n"
      "along the ring when every rank needs every other shard whole), each rank's\n"
      "exchange buffers and the totals. --json prints an object with world_size,\n"
      "exchange, ranks (each with its receives as runs [start, step, count] and its\n"
      "buffer_bytes_forward/backward), branches, total_bytes_forward and\n"
      "total_bytes_backward. A spec with block_mask needs --block-mask. No GPU is needed.\n";
  if (wantsHelp(args, help))
    return 0;
  Options o(args, {"name", "seq", "ranks", "block-mask"}, {"json"});
  if (!o.has("seq"))
    throw UsageError{"--seq N is required"};
  SpecFile file = loadSpecFile(onlyFile(o, "plan-ring"));
  std::vector<AttentionSpec> specs = selectSpecs(file, o);
  const int64_t n = o.getInt("seq", 0, 1, int64_t(1) << 40);
  for (const AttentionSpec &spec : specs) {
    const int ranks = static_cast<int>(o.getInt("ranks", spec.ring, 1, 1 << 16));
    BlockMask mask;
    if (spec.needsBlockMask()) {
      if (!o.has("block-mask"))
        throw UsageError{"attention '" + spec.name + "' has a block_mask pattern: give "
                         "--block-mask mask.npy"};
      mask = readBlockMaskOption(o, spec, n);
    }
    const RingPlan plan = planRing(planAttention(spec), n, ranks,
                                   spec.needsBlockMask() ? &mask : nullptr, spec.hash());
    if (o.has("json"))
      std::fputs(ringPlanJson(plan, spec.name).c_str(), stdout);
    else
      printPlan(plan, spec);
  }
  return 0;
}

} // namespace dattn::tools
