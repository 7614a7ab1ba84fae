// runtime: a ring rank's buffers and what each transfer moves, in host
// code (no GPU): RankRun (RingRank.h) lays out its workspace and asks for
// its exchanges here, and the unit tests run the transports' pairing over
// host memory with it (tests/unit/RingExchangeTest.cpp).
#pragma once

#include "dattn/layout.cuh"
#include "dattn/ring.h"

#include <cstdint>
#include <vector>

namespace dattn::rt {

/// What sizes a rank's buffers.
struct RankShape {
  int rank = 0, ranks = 1;
  bool passAlong = false; ///< RingSchedule::passAlong
  int64_t batch = 1, rows = 0; ///< rows: the rank's shard
  int64_t heads = 1, kvHeads = 1, headDim = 0, elementBytes = 2;

  /// Bytes of one of K or V of `packed` rows (all batches), and of one of
  /// the fp32 dK or dV partials of them.
  int64_t blockBytes(int64_t packed) const { return batch * packed * headDim * elementBytes; }
  int64_t partialBytes(int64_t packed) const { return batch * packed * headDim * 4; }
};

/// Where a rank's buffers sit in its workspace (byte offsets; -1 = absent).
/// Pairwise: two receive slots (a step's block arrives while the previous
/// one is attended to; one when a single step receives), one pack buffer;
/// backward adds the fp32 dK/dV partials of one received block and one
/// returned block, and the rank's dK/dV accumulators. A rank that receives
/// a fragmented block also has a stage: K and V in the sender's shape, and
/// backward their fp32 partials. Passed along: two slots, each a block's K
/// and V and, backward, its fp32 partials; slot 0 is the pack buffer (the
/// own block goes out of it at step 1) and slot P % 2's partials are the
/// dK/dV accumulators (the own block's partials come home there).
struct RankWorkspace {
  int64_t oAcc = -1;                                      ///< forward: fp32 O
  int64_t delta = -1, dqAcc = -1, dkAcc = -1, dvAcc = -1; ///< backward
  int64_t recvK[2] = {0, 0}, recvV[2] = {0, 0}, packK = 0, packV = 0;
  int64_t partialDk = -1, partialDv = -1, returnedDk = -1, returnedDv = -1;
  int64_t slotDk[2] = {-1, -1}, slotDv[2] = {-1, -1}; ///< passed along: a slot's partials
  int64_t stageK = -1, stageV = -1, stageDk = -1, stageDv = -1;
  int64_t total = 0;
};

/// The layout of rank `s.rank`'s forward or backward workspace; `stageRows`
/// sizes the stage (0: none).
RankWorkspace carveWorkspace(const RankShape &s, const RingSchedule &schedule, bool backward,
                             int64_t stageRows);

/// The dK/dV accumulators' layout in local rows: [B, rows, kv_heads, D];
/// passed along they are the slot the own block's partials came home to,
/// packed as its first send (kv head, local row): [B, kv_heads, rows, D].
Layout accumulatorLayout(const RankShape &s);

/// One side of a transfer: memory and its size.
struct Piece {
  void *at = nullptr;
  int64_t bytes = 0;
};

/// What a rank sends and receives in one transfer and with whom (-1:
/// nothing that way). The pieces pair up in order with the peers' (a
/// transport copies or sends piece x of one side into piece x of the other).
struct Exchange {
  int sendPeer = -1, recvPeer = -1;
  std::vector<Piece> send, recv;
};

/// Step s's transfer of K and V (workspace `w` at `base`), after the rank
/// packed step s's send: pairwise, the packed rows the send peer needs and
/// the block from the receive peer (slot s % 2); passed along, the block of
/// slot (s - 1) % 2 (at step 1 the own, packed) to rank + 1 and rank - 1's
/// into slot s % 2, backward from step 2 with their partials (a block's
/// first holder starts them).
Exchange blockExchange(const RankShape &s, const RankSchedule &rs, const RankWorkspace &w,
                       char *base, int step, bool backward);
/// The dK/dV partials after step s's backward: pairwise, the received
/// block's back to its sender, ours from our block's receiver; passed
/// along, only after the last step: that block's to its owner (rank + 1),
/// ours home from rank - 1.
Exchange partialExchange(const RankShape &s, const RankSchedule &rs, const RankWorkspace &w,
                         char *base, int step, bool backward);

} // namespace dattn::rt
