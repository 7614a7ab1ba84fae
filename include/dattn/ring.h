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

#include "dattn/error.h"
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
  std::string what; ///< BranchPlan::describe() of the planned branch
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
  /// A hash of what every rank must agree on (spec, N, P, the block mask
  /// if any): ranks compare it before the first exchange.
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

/// The exchange schedule. Step s = 1 .. P-1 of rank r receives from peer
/// (r - s) mod P what r needs of it and sends to peer (r + s) mod P what that
/// peer needs of r, so every step is one send and one receive per rank, and
/// a send is empty exactly when its receiver expects nothing (both sides
/// read the same plan: NCCL's sizes always match). The compute of step s
/// (and of the local rows, step 0) overlaps the transfer of step s + 1.
///
/// A transfer packs K (then V, in a second buffer of the same shape) as
/// [part][row][head_dim]: parts in (kv head, run) order, each part's rows
/// ascending. Backward returns the dK and dV partials of the same rows, in
/// fp32 and the same packing, to the peer they came from. With a batch of
/// B, a transfer holds B such blocks one after the other.
struct PackedPart {
  int kvHead = 0;
  RowRun rows;        ///< global row positions
  int64_t offset = 0; ///< first packed row of the part
};

struct Transfer {
  int peer = -1;                  ///< -1: nothing this step
  std::vector<PackedPart> parts;  ///< in packing order
  int64_t rows = 0;               ///< packed rows (sum of the parts)
};

/// A receive whose parts average fewer rows than a key tile (64 rows): the
/// tensor-core kernels take at least a tile per part, so the executor
/// stages such a block in the sender's shape for them (docs/ring.md).
inline bool fragmented(const Transfer &t) {
  constexpr int64_t kTileRows = 64;
  return t.rows > 0 && static_cast<int64_t>(t.parts.size()) * kTileRows > t.rows;
}

struct RingStep {
  int step = 0;
  Transfer send, recv;
};

struct RankSchedule {
  int rank = 0;
  std::vector<RingStep> steps;  ///< steps 1 .. P-1 (empty transfers kept)
  int64_t maxRecvRows = 0;      ///< the largest receive: sizes each receive buffer
  int64_t maxSendRows = 0;      ///< the largest send: sizes the pack buffer

  /// Receive buffers the rank needs: two (a block arrives while the
  /// previous one is attended to), one when a single step receives (every
  /// ring of two ranks), none when none does.
  int receiveSlots() const;
};

struct RingSchedule {
  uint64_t planHash = 0;
  int64_t headDim = 0, elementBytes = 2;
  std::vector<RankSchedule> ranks;
  /// Every step of every rank moves the sender's whole shard, every kv
  /// head (dense attention, segments spanning the ring, no causal mask),
  /// and every shard holds at least a key tile (64 rows). Then the blocks
  /// are passed along the ring instead of sent pairwise: at step s rank r
  /// still works on the block of rank r - s (recv(s)), but it gets it from
  /// rank r - 1, which worked on it at step s - 1, and sends rank r + 1 the
  /// block it worked on (at step 1 its own). Backward, the block's dK and
  /// dV partials (fp32) travel with it, each rank adding its own, and come
  /// home after the last step, where the owner adds those of its own rows.
  /// The bytes on the wire are the pairwise schedule's (each block still
  /// crosses P - 1 links, its partials P - 1 more), but a rank needs no
  /// pack buffer and no fp32 dK, dV of its own: two receive slots (K and
  /// V; backward with their partials) are all it holds besides dQ's
  /// accumulator (docs/ring.md, "Memory").
  bool passAlong = false;

  /// Bytes rank r puts on the wire forward (K and V in the dtype) and
  /// backward (K and V again, then dK and dV partials in fp32).
  int64_t sendBytesForward(int rank) const;
  int64_t sendBytesBackward(int rank) const;
  /// Extra device memory rank r needs for the exchange: its receive buffers
  /// (receiveSlots()) and one pack buffer, K and V each; backward adds the
  /// fp32 partials of one receive and one return buffer. Passed along: two
  /// slots of passAlongSlotRows() packed rows, K and V, backward with their
  /// fp32 partials (and no dK, dV accumulators of the rank's own).
  int64_t bufferBytesForward(int rank) const;
  int64_t bufferBytesBackward(int rank) const;
  /// Of those, what rank r receives into (issue 9's "the plan's receive
  /// buffers"): its receive slots, backward also the buffer the partials of
  /// its sent rows come back to (not the pack buffer, not the partials it
  /// sends); passed along, both slots, with their partials backward.
  int64_t receiveBufferBytes(int rank, bool backward) const;
  /// Packed rows of a pass-along slot: the largest block the rank receives
  /// or sends (its own, from slot 0, at step 1).
  int64_t passAlongSlotRows(int rank) const;
};

/// The schedule that carries out `plan`.
RingSchedule scheduleRing(const RingPlan &plan);

/// Where global row `row` sits in a rank's local tensors: its shard's ranges
/// one after the other (zigzag: chunk r, then chunk 2P - 1 - r). -1 if the
/// rank does not hold it.
inline int64_t localRow(const std::vector<RowRange> &shard, int64_t row) {
  int64_t base = 0;
  for (const RowRange &r : shard) {
    if (row >= r.begin && row < r.end)
      return base + row - r.begin;
    base += r.end - r.begin;
  }
  return -1;
}

/// Packs the parts' rows of one batch of a rank's local [rows, kvHeads,
/// headDim] tensor (row stride `rowStride` and kv head stride `headStride`,
/// in elements) into `dst` as described for Transfer. Host memory; the
/// executor does the same on the device, batch after batch.
template <class T>
void packRows(const std::vector<PackedPart> &parts, const std::vector<RowRange> &shard,
              const T *src, int64_t rowStride, int64_t headStride, int64_t headDim, T *dst) {
  for (const PackedPart &part : parts)
    for (int64_t x = 0; x < part.rows.count; ++x) {
      const int64_t local = localRow(shard, part.rows.start + x * part.rows.step);
      if (local < 0)
        throw Error("ring: packing row " + std::to_string(part.rows.start + x * part.rows.step) +
                    ", which this rank does not hold");
      const T *from = src + local * rowStride + part.kvHead * headStride;
      T *to = dst + (part.offset + x) * headDim;
      for (int64_t d = 0; d < headDim; ++d)
        to[d] = from[d];
    }
}

/// The plan as JSON: ranks (each with its shard, receives per peer and
/// bytes), branches, total_bytes_forward, total_bytes_backward.
std::string ringPlanJson(const RingPlan &plan, const std::string &name);

} // namespace dattn
