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

int64_t RingSchedule::receiveBufferBytes(int rank, bool backward) const {
  const RankSchedule &rs = ranks.at(rank);
  return rs.receiveSlots() * rs.maxRecvRows * headDim * elementBytes * 2 +
         (backward ? rs.maxSendRows * headDim * 4 * 2 : 0);
}

int64_t RingSchedule::bufferBytesForward(int rank) const {
  // The receive slots and the pack buffer.
  return receiveBufferBytes(rank, false) + ranks.at(rank).maxSendRows * headDim * elementBytes * 2;
}

int64_t RingSchedule::bufferBytesBackward(int rank) const {
  const RankSchedule &rs = ranks.at(rank);
  // The partials of one received block are accumulated while the previous
  // block's go back; the returned ones (a receive buffer) are added into the
  // rank's dK, dV.
  return bufferBytesForward(rank) + (rs.maxRecvRows + rs.maxSendRows) * headDim * 4 * 2;
}

} // namespace dattn
