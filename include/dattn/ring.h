// dattn: the ring plan. With `ring = P` the sequence is split into P
// contiguous shards, one per rank; each rank holds its shard of Q, K and V
// and computes its shard of O and LSE. The plan says, for a run-time N,
// exactly which K/V rows each rank needs from each peer, per kv head (never
// the union over heads: with many heads that is the whole shard), and so
// how many bytes cross the wire forward and backward. It is closed form per
// pattern: rows are kept as arithmetic progressions, so nothing of size
// N^2 or N * P is stored. The executor (next) follows it; `dattn plan-ring`
// prints it; tests check it against brute force over the reference's key sets.
#pragma once

#include "dattn/plan.h"

#include <cstdint>
#include <string>
#include <vector>

namespace dattn {

struct BlockMask;

/// Rows start, start + step, ..., count of them (step >= 1).
struct RowRun {
  int64_t start = 0, step = 1, count = 0;
  int64_t last() const { return start + (count - 1) * step; }
  bool operator==(const RowRun &o) const {
    return start == o.start && step == o.step && count == o.count;
  }
};

/// How a branch's remote keys reach a rank.
enum class RingPrimitive {
  Local,   ///< every key a rank needs is in its shard (segments inside shards)
  Halo,    ///< windows: a band of rows from the neighbours
  Gather,  ///< dilated (r > 1), global tokens, block-sparse, unions: packed rows per peer
  Ring,    ///< dense segments spanning shards: whole peer shards, in turn
};
const char *toString(RingPrimitive p);

/// What one rank receives from one peer for one kv head: disjoint runs in
/// ascending order, inside the peer's shard.
struct PeerRows {
  int peer = 0;
  int kvHead = 0;
  std::vector<RowRun> rows;
  int64_t count = 0; ///< rows in total
};

/// Rows [begin, end).
struct RowRange {
  int64_t begin = 0, end = 0;
};

struct RankPlan {
  int rank = 0;
  std::vector<RowRange> shard;      ///< the rows it holds: one range, two with zigzag
  std::vector<PeerRows> receives;   ///< sorted by (peer, kvHead)
  int64_t rowsReceived = 0;         ///< sum over peers and kv heads
  int64_t bytesForward = 0;         ///< K and V rows in the spec's dtype
  int64_t bytesBackward = 0;        ///< K and V again, plus dK and dV partials back in fp32
};

struct BranchRingPlan {
  RingPrimitive primitive = RingPrimitive::Local;
  int64_t rowsReceived = 0; ///< over all ranks, before merging with other branches
};

struct RingPlan {
  int64_t seqLen = 0;
  int ranks = 1;
  RingLayout layout = RingLayout::Contiguous;
  int64_t shardRows = 0; ///< rows per rank: ceil(N / P), or 2 ceil(N / 2P) with zigzag
  int kvHeads = 0, headDim = 0;
  int64_t elementBytes = 2;
  std::vector<BranchRingPlan> branches;
  std::vector<RankPlan> rankPlans;
  int64_t totalBytesForward = 0, totalBytesBackward = 0;
  /// A hash of what every rank must agree on (spec, N, P): ranks compare it
  /// before the first exchange.
  uint64_t hash = 0;
};

/// The ring plan of `plan` (planned from the spec) for sequence length
/// `seqLen` over `ranks` shards; `mask` is the run-time block mask if the
/// spec has one. Throws Error for ranks < 1 or a missing mask.
RingPlan planRing(const AttentionPlan &plan, int64_t seqLen, int ranks,
                  const BlockMask *mask = nullptr, uint64_t specHash = 0);

/// The rows rank `rank` holds under `layout` (empty ranges dropped).
std::vector<RowRange> ringShard(RingLayout layout, int64_t seqLen, int ranks, int rank);
/// The rank that holds row `row`.
int ringOwner(RingLayout layout, int64_t seqLen, int ranks, int64_t row);

/// The plan as JSON: ranks (each with its shard, receives per peer and
/// bytes), branches, total_bytes_forward, total_bytes_backward.
std::string ringPlanJson(const RingPlan &plan, const std::string &name);

} // namespace dattn
