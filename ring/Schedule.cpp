// The exchange schedule of a ring plan (include/dattn/ring.h): at step s
// every rank receives from r - s and sends to r + s (mod P). Both ends of a
// transfer are derived from the same RankPlan entry, so they agree on the
// rows, their order and the byte count by construction.
#include "dattn/error.h"
#include "dattn/ring.h"

#include <algorithm>

namespace dattn {

namespace {

/// What `receiver` needs of `sender`, packed: (kv head, run) order.
Transfer transferOf(const RingPlan &plan, int receiver, int sender, int peer) {
  Transfer t;
  t.peer = peer;
  for (const PeerRows &pr : plan.rankPlans[receiver].receives) {
    if (pr.peer != sender)
      continue;
    for (const RowRun &run : pr.rows) {
      t.parts.push_back({pr.kvHead, run, t.rows});
      t.rows += run.count;
    }
  }
  if (t.rows == 0)
    t.peer = -1; // nothing to exchange: neither side posts this transfer
  return t;
}

/// RingSchedule::passAlong's condition: a plan's receives are subsets of
/// the sender's shard per kv head, so a receive of as many rows as the
/// sender holds times the kv heads is all of them; none is fragmented (a
/// staged block is read in the sender's shape, not forwarded as it came).
bool movesWholeShards(const RingPlan &plan, const RingSchedule &s) {
  const int p = plan.ranks;
  if (p < 2)
    return false;
  std::vector<int64_t> rows(p, 0);
  for (int r = 0; r < p; ++r) {
    for (const RowRange &range : plan.rankPlans[r].shard)
      rows[r] += range.end - range.begin;
  }
  for (const RankSchedule &rs : s.ranks)
    for (const RingStep &st : rs.steps)
      if (st.recv.peer < 0 || st.recv.rows != rows[st.recv.peer] * plan.kvHeads ||
          fragmented(st.recv))
        return false;
  return true;
}

} // namespace

RingSchedule scheduleRing(const RingPlan &plan) {
  const int p = plan.ranks;
  if (static_cast<int>(plan.rankPlans.size()) != p)
    throw Error("ring schedule: the plan has " + std::to_string(plan.rankPlans.size()) +
                " rank plans for " + std::to_string(p) + " ranks");
  RingSchedule out;
  out.planHash = plan.hash;
  out.headDim = plan.headDim;
  out.elementBytes = plan.elementBytes;
  for (int r = 0; r < p; ++r) {
    RankSchedule rs;
    rs.rank = r;
    for (int s = 1; s < p; ++s) {
      RingStep st;
      st.step = s;
      const int from = (r - s + p) % p, to = (r + s) % p;
      st.recv = transferOf(plan, r, from, from);
      st.send = transferOf(plan, to, r, to);
      rs.maxRecvRows = std::max(rs.maxRecvRows, st.recv.rows);
      rs.maxSendRows = std::max(rs.maxSendRows, st.send.rows);
      rs.steps.push_back(std::move(st));
    }
    out.ranks.push_back(std::move(rs));
  }
  out.passAlong = movesWholeShards(plan, out);
  return out;
}

int64_t RingSchedule::sendBytesForward(int rank) const {
  int64_t rows = 0;
  for (const RingStep &st : ranks.at(rank).steps)
    rows += st.send.rows;
  return rows * headDim * elementBytes * 2;
}

int64_t RingSchedule::sendBytesBackward(int rank) const {
  // K and V again, and the fp32 dK, dV partials of every row received.
  int64_t received = 0;
  for (const RingStep &st : ranks.at(rank).steps)
    received += st.recv.rows;
  return sendBytesForward(rank) + received * headDim * 4 * 2;
}

int RankSchedule::receiveSlots() const {
  int receiving = 0;
  for (const RingStep &st : steps)
    receiving += st.recv.rows > 0;
  return std::min(receiving, 2);
}

int64_t RingSchedule::passAlongSlotRows(int rank) const {
  const RankSchedule &rs = ranks.at(rank);
  return std::max(rs.maxRecvRows, rs.maxSendRows); // its own block goes out of slot 0
}

int64_t RingSchedule::receiveBufferBytes(int rank, bool backward) const {
  if (passAlong) // two slots, each receiving (slot 0 after its first send); backward with partials
    return 2 * passAlongSlotRows(rank) * headDim * (elementBytes + (backward ? 4 : 0)) * 2;
  const RankSchedule &rs = ranks.at(rank);
  return rs.receiveSlots() * rs.maxRecvRows * headDim * elementBytes * 2 +
         (backward ? rs.maxSendRows * headDim * 4 * 2 : 0);
}

int64_t RingSchedule::bufferBytesForward(int rank) const {
  if (passAlong) // no pack buffer: the own block goes out of slot 0
    return receiveBufferBytes(rank, false);
  // The receive slots and the pack buffer.
  return receiveBufferBytes(rank, false) + ranks.at(rank).maxSendRows * headDim * elementBytes * 2;
}

int64_t RingSchedule::bufferBytesBackward(int rank) const {
  if (passAlong) // the partials travel in the slots
    return receiveBufferBytes(rank, true);
  const RankSchedule &rs = ranks.at(rank);
  // The partials of one received block are accumulated while the previous
  // block's go back; the returned ones (a receive buffer) are added into the
  // rank's dK, dV.
  return bufferBytesForward(rank) + (rs.maxRecvRows + rs.maxSendRows) * headDim * 4 * 2;
}

} // namespace dattn
