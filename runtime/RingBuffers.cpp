// A ring rank's workspace layout and its exchanges (RingBuffers.h).
#include "RingBuffers.h"

#include <algorithm>

namespace dattn::rt {

namespace {

constexpr int64_t kAlign = 256;
int64_t aligned(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

/// Hands out aligned offsets one after the other.
struct Carver {
  int64_t next = 0;
  int64_t take(int64_t bytes) {
    const int64_t at = next;
    next += aligned(bytes);
    return at;
  }
};

RankWorkspace carvePairwise(const RankShape &s, const RankSchedule &rs, bool backward,
                            int64_t stageRows) {
  RankWorkspace w;
  Carver c;
  const int64_t D = s.headDim, q = s.batch * s.rows * s.heads * D,
                kv = s.batch * s.rows * s.kvHeads * D;
  if (backward) {
    w.delta = c.take(s.batch * s.heads * s.rows * 4);
    w.dqAcc = c.take(q * 4);
    w.dkAcc = c.take(kv * 4);
    w.dvAcc = c.take(kv * 4);
  } else {
    w.oAcc = c.take(q * 4);
  }
  const int64_t recv = s.batch * rs.maxRecvRows * D, send = s.batch * rs.maxSendRows * D;
  // Step s receives into slot s % 2; with one receiving step both name
  // the same buffer.
  const int slots = rs.receiveSlots();
  for (int slot = 0; slot < 2; ++slot) {
    const bool own = slot < slots;
    w.recvK[slot] = own ? c.take(recv * s.elementBytes) : w.recvK[0];
    w.recvV[slot] = own ? c.take(recv * s.elementBytes) : w.recvV[0];
  }
  w.packK = c.take(send * s.elementBytes);
  w.packV = c.take(send * s.elementBytes);
  if (backward) {
    w.partialDk = c.take(recv * 4);
    w.partialDv = c.take(recv * 4);
    w.returnedDk = c.take(send * 4);
    w.returnedDv = c.take(send * 4);
  }
  if (stageRows > 0) {
    const int64_t stage = s.batch * stageRows * s.kvHeads * D;
    w.stageK = c.take(stage * s.elementBytes);
    w.stageV = c.take(stage * s.elementBytes);
    if (backward) {
      w.stageDk = c.take(stage * 4);
      w.stageDv = c.take(stage * 4);
    }
  }
  w.total = c.next;
  return w;
}

RankWorkspace carvePassAlong(const RankShape &s, int64_t slotRows, bool backward) {
  RankWorkspace w;
  Carver c;
  const int64_t D = s.headDim, q = s.batch * s.rows * s.heads * D, slot = s.batch * slotRows * D;
  if (backward) {
    w.delta = c.take(s.batch * s.heads * s.rows * 4);
    w.dqAcc = c.take(q * 4);
  } else {
    w.oAcc = c.take(q * 4);
  }
  for (int x = 0; x < 2; ++x) {
    w.recvK[x] = c.take(slot * s.elementBytes);
    w.recvV[x] = c.take(slot * s.elementBytes);
    if (backward) {
      w.slotDk[x] = c.take(slot * 4);
      w.slotDv[x] = c.take(slot * 4);
    }
  }
  w.packK = w.recvK[0];
  w.packV = w.recvV[0];
  if (backward) {
    w.dkAcc = w.slotDk[s.ranks % 2];
    w.dvAcc = w.slotDv[s.ranks % 2];
  }
  w.total = c.next;
  return w;
}

void *at(char *base, int64_t offset) { return base + offset; }

} // namespace

RankWorkspace carveWorkspace(const RankShape &s, const RingSchedule &schedule, bool backward,
                             int64_t stageRows) {
  if (s.passAlong) // whole shards, none fragmented: nothing is staged
    return carvePassAlong(s, schedule.passAlongSlotRows(s.rank), backward);
  return carvePairwise(s, schedule.ranks.at(s.rank), backward, stageRows);
}

Layout accumulatorLayout(const RankShape &s) {
  return s.passAlong ? Layout{s.rows * s.kvHeads * s.headDim, s.headDim, s.rows * s.headDim}
                     : Layout{s.rows * s.kvHeads * s.headDim, s.kvHeads * s.headDim, s.headDim};
}

Exchange blockExchange(const RankShape &s, const RankSchedule &rs, const RankWorkspace &w,
                       char *base, int step, bool backward) {
  Exchange e;
  const Transfer &send = rs.steps.at(step - 1).send, &recv = rs.steps.at(step - 1).recv;
  if (!s.passAlong) {
    if (send.peer >= 0 && send.rows > 0) {
      e.sendPeer = send.peer;
      e.send = {{at(base, w.packK), s.blockBytes(send.rows)},
                {at(base, w.packV), s.blockBytes(send.rows)}};
    }
    if (recv.peer >= 0 && recv.rows > 0) {
      e.recvPeer = recv.peer;
      e.recv = {{at(base, w.recvK[step % 2]), s.blockBytes(recv.rows)},
                {at(base, w.recvV[step % 2]), s.blockBytes(recv.rows)}};
    }
    return e;
  }
  // Slot (s - 1) % 2 holds what goes on: at step 1 the own block (packed
  // into slot 0), later the block received at step s - 1, which this rank
  // worked on.
  const int from = (step - 1) % 2, into = step % 2;
  const int64_t out = step == 1 ? send.rows : rs.steps.at(step - 2).recv.rows, in = recv.rows;
  e.sendPeer = (s.rank + 1) % s.ranks;
  e.recvPeer = (s.rank + s.ranks - 1) % s.ranks;
  e.send = {{at(base, w.recvK[from]), s.blockBytes(out)},
            {at(base, w.recvV[from]), s.blockBytes(out)}};
  e.recv = {{at(base, w.recvK[into]), s.blockBytes(in)},
            {at(base, w.recvV[into]), s.blockBytes(in)}};
  if (backward && step >= 2) {
    e.send.push_back({at(base, w.slotDk[from]), s.partialBytes(out)});
    e.send.push_back({at(base, w.slotDv[from]), s.partialBytes(out)});
    e.recv.push_back({at(base, w.slotDk[into]), s.partialBytes(in)});
    e.recv.push_back({at(base, w.slotDv[into]), s.partialBytes(in)});
  }
  return e;
}

Exchange partialExchange(const RankShape &s, const RankSchedule &rs, const RankWorkspace &w,
                         char *base, int step, bool backward) {
  Exchange e;
  if (!backward)
    return e;
  const Transfer &send = rs.steps.at(step - 1).send, &recv = rs.steps.at(step - 1).recv;
  if (!s.passAlong) {
    // The received block's partials go back to its sender; those of the
    // block sent come back from its receiver.
    if (recv.peer >= 0 && recv.rows > 0) {
      e.sendPeer = recv.peer;
      e.send = {{at(base, w.partialDk), s.partialBytes(recv.rows)},
                {at(base, w.partialDv), s.partialBytes(recv.rows)}};
    }
    if (send.peer >= 0 && send.rows > 0) {
      e.recvPeer = send.peer;
      e.recv = {{at(base, w.returnedDk), s.partialBytes(send.rows)},
                {at(base, w.returnedDv), s.partialBytes(send.rows)}};
    }
    return e;
  }
  if (step != s.ranks - 1)
    return e;
  // The last block (rank + 1's) has every other rank's partials: home with
  // them; ours arrive from rank - 1 into slot P % 2 (the accumulators).
  const int64_t own = rs.steps.at(0).send.rows;
  e.sendPeer = (s.rank + 1) % s.ranks;
  e.recvPeer = (s.rank + s.ranks - 1) % s.ranks;
  e.send = {{at(base, w.slotDk[step % 2]), s.partialBytes(recv.rows)},
            {at(base, w.slotDv[step % 2]), s.partialBytes(recv.rows)}};
  e.recv = {{at(base, w.dkAcc), s.partialBytes(own)}, {at(base, w.dvAcc), s.partialBytes(own)}};
  return e;
}

} // namespace dattn::rt
