// The ring plan (include/dattn/ring.h). For each rank, branch and head, the
// keys its shard's queries reach are computed per pattern in closed form
// (queries Q = [a, e), the shard):
//   dense        all keys (causal: j < e);
//   window       [a - left, e - 1 + right] (causal: right = 0);
//   global g     [0, g) for every query, and every key for queries below g;
//   dilated      per segment meeting Q, the segment's rows j = o (mod r)
//                when Q holds a row of that class (causal: j <= the last);
//                segments inside Q are local and skipped;
//   block kinds  per kept block pair (I, J), I meeting Q: block J's rows
//                (causal: j <= the last row of I in Q).
// The runs are clipped to each peer's shard and merged per (peer, kv head)
// over the branches and the query heads that share the kv head.
#include "RowSet.h"

#include "dattn/error.h"
#include "dattn/reference.h"
#include "dattn/ring.h"

#include <algorithm>
#include <map>
#include <sstream>

namespace dattn {

const char *toString(RingPrimitive p) {
  switch (p) {
  case RingPrimitive::Local: return "local";
  case RingPrimitive::Halo: return "halo";
  case RingPrimitive::Gather: return "gather";
  case RingPrimitive::Ring: return "ring";
  }
  return "?";
}

namespace {

/// Keys of a dilated pattern (segment w, stride r, offset o) reachable from
/// the queries in [a, e), outside [a, e) only.
void dilatedKeys(int64_t w, int64_t r, int64_t o, int64_t a, int64_t e, int64_t n, bool causal,
                 std::vector<RowRun> &out) {
  const int64_t len = plan::segmentLength(w, n);
  // Segments strictly between the first and the last lie inside Q: local.
  const int64_t s0 = a / len, s1 = (e - 1) / len;
  const int64_t ends[2] = {s0, s1};
  for (int x = 0; x < (s0 == s1 ? 1 : 2); ++x) {
    const int64_t s = ends[x];
    const int64_t segA = s * len, segE = std::min(n, segA + len);
    if (segA >= a && segE <= e)
      continue; // the whole segment is local
    // Queries of this segment in Q with residue o: first and last.
    const int64_t qa = std::max(a, segA), qe = std::min(e, segE);
    const int64_t first = qa + ((o - qa) % r + r) % r;
    if (first >= qe)
      continue;
    const int64_t lastQ = first + (qe - 1 - first) / r * r;
    const int64_t k0 = plan::segmentFirstRow(s, w, n, r, o);
    const int64_t kEnd = causal ? std::min(segE, lastQ + 1) : segE;
    if (k0 < kEnd)
      out.push_back({k0, r, (kEnd - k0 + r - 1) / r});
  }
}

/// Keys a union member reaches from the queries in [a, e) (may include
/// local rows; the caller clips to peers).
void memberKeys(const plan::Member &m, int64_t a, int64_t e, int64_t n, bool causal,
                std::vector<RowRun> &out) {
  auto interval = [&](int64_t lo, int64_t hi) { // [lo, hi)
    lo = std::max<int64_t>(lo, 0);
    hi = std::min(hi, n);
    if (lo < hi)
      out.push_back({lo, 1, hi - lo});
  };
  switch (m.kind) {
  case plan::kAll:
    interval(0, causal ? e : n);
    return;
  case plan::kBand: {
    const int64_t lo = m.lo < 0 ? 0 : a - m.lo;
    int64_t hi = m.hi < 0 ? n : e + m.hi;
    if (causal)
      hi = std::min(hi, e);
    interval(lo, hi);
    return;
  }
  case plan::kPrefix:
    interval(0, causal ? std::min<int64_t>(m.lo, e) : m.lo);
    if (a < m.lo) // queries below g see every key
      interval(0, causal ? std::min<int64_t>(e, m.lo) : n);
    return;
  case plan::kSegment:
    dilatedKeys(m.segment, m.stride, m.offset, a, e, n, causal, out);
    return;
  default: { // block patterns: per key block, the latest query row that keeps it
    const int64_t beta = m.block, nb = plan::ceilDiv(n, beta);
    const int64_t i0 = a / beta, i1 = (e - 1) / beta;
    for (int64_t J = 0; J < nb; ++J) {
      const int64_t ja = J * beta, je = std::min(n, ja + beta);
      if (ja >= a && je <= e)
        continue; // local
      int64_t bound = -1; // keys j <= bound are needed
      for (int64_t I = i1; I >= i0 && bound < je - 1; --I)
        if (plan::blockKept(m, I, J))
          bound = std::max(bound, causal ? std::min(e, (I + 1) * beta) - 1 : je - 1);
      if (bound >= ja)
        out.push_back({ja, 1, std::min(je - 1, bound) - ja + 1});
    }
    return;
  }
  }
}

/// Keys branch b reaches for its headIndex-th head from [a, e).
void branchKeys(const AttentionPlan &p, const BranchPlan &b, int headIndex, int64_t a, int64_t e,
                int64_t n, const BlockMask *mask, std::vector<RowRun> &out) {
  if (b.kind == BranchKind::Strided) {
    dilatedKeys(b.segment, b.dilation, b.offsets[headIndex], a, e, n, p.causal, out);
    return;
  }
  const int64_t *rows = mask ? mask->rowOffsets.data() : nullptr;
  const int64_t *cols = mask ? mask->colIndices.data() : nullptr;
  for (const MemberPlan &mp : b.members)
    if (!mp.excluded) // its keys come through the branch that runs it
      memberKeys(mp.forHead(headIndex, b.heads[headIndex], rows, cols), a, e, n, p.causal, out);
}

RingPrimitive primitiveOf(const BranchPlan &b) {
  if (b.kind == BranchKind::Strided)
    return b.dilation == 1 ? RingPrimitive::Ring : RingPrimitive::Gather;
  bool allBand = true, allDense = true;
  for (const MemberPlan &m : b.members) {
    allBand = allBand && m.kind == plan::kBand;
    allDense = allDense && m.kind == plan::kAll;
  }
  return allBand ? RingPrimitive::Halo : allDense ? RingPrimitive::Ring : RingPrimitive::Gather;
}

uint64_t fnv(uint64_t h, uint64_t v) {
  for (int k = 0; k < 8; ++k) {
    h ^= (v >> (8 * k)) & 0xff;
    h *= 1099511628211ULL;
  }
  return h;
}

} // namespace

std::vector<RowRange> ringShard(RingLayout layout, int64_t n, int ranks, int rank) {
  std::vector<RowRange> out;
  auto add = [&](int64_t a, int64_t e) {
    a = std::min(a, n);
    e = std::min(e, n);
    if (a < e)
      out.push_back({a, e});
  };
  if (layout == RingLayout::Zigzag) {
    const int64_t c = plan::ceilDiv(n, 2 * int64_t(ranks));
    add(rank * c, (rank + 1) * c);
    add((2 * int64_t(ranks) - 1 - rank) * c, (2 * int64_t(ranks) - rank) * c);
  } else {
    const int64_t l = plan::ceilDiv(n, ranks);
    add(rank * l, (rank + 1) * l);
  }
  return out;
}

int ringOwner(RingLayout layout, int64_t n, int ranks, int64_t row) {
  if (layout == RingLayout::Zigzag) {
    const int64_t chunk = row / plan::ceilDiv(n, 2 * int64_t(ranks));
    return static_cast<int>(chunk < ranks ? chunk : 2 * int64_t(ranks) - 1 - chunk);
  }
  return static_cast<int>(row / plan::ceilDiv(n, ranks));
}

RingPlan planRing(const AttentionPlan &p, int64_t n, int ranks, const BlockMask *mask,
                  uint64_t specHash) {
  if (ranks < 1)
    throw Error("attention '" + p.name + "': a ring needs at least 1 rank, got " +
                std::to_string(ranks));
  if (n < 1)
    throw Error("attention '" + p.name + "': the sequence length must be >= 1, got " +
                std::to_string(n));
  bool needsMask = false;
  for (const BranchPlan &b : p.branches)
    for (const MemberPlan &m : b.members)
      needsMask = needsMask || m.kind == plan::kBlockMask;
  if (needsMask && !mask)
    throw Error("attention '" + p.name + "' has a block_mask pattern: the ring plan needs the mask");
  if (mask)
    mask->validate(n);

  RingPlan out;
  out.seqLen = n;
  out.ranks = ranks;
  out.layout = p.ringLayout;
  out.shardRows = p.ringLayout == RingLayout::Zigzag ? 2 * plan::ceilDiv(n, 2 * int64_t(ranks))
                                                     : plan::ceilDiv(n, ranks);
  out.kvHeads = p.kvHeads;
  out.headDim = p.headDim;
  out.elementBytes = p.dtype == DType::F32 ? 4 : 2;
  out.branches.resize(p.branches.size());
  const int group = p.heads / p.kvHeads;
  std::vector<std::vector<RowRange>> shards;
  for (int r = 0; r < ranks; ++r)
    shards.push_back(ringShard(p.ringLayout, n, ranks, r));
  for (size_t b = 0; b < p.branches.size(); ++b) {
    out.branches[b].what = p.branches[b].describe();
    out.branches[b].primitive = RingPrimitive::Local;
  }

  for (int r = 0; r < ranks; ++r) {
    RankPlan rp;
    rp.rank = r;
    rp.shard = shards[r];
    // (peer, kv head) -> the rows needed, over every branch.
    std::map<std::pair<int, int>, std::vector<RowRun>> all;
    for (size_t bi = 0; bi < p.branches.size(); ++bi) {
      const BranchPlan &b = p.branches[bi];
      std::map<std::pair<int, int>, std::vector<RowRun>> mine;
      for (size_t k = 0; k < b.heads.size(); ++k) {
        std::vector<RowRun> keys; // per query range; a range's own rows come back local
        for (const RowRange &q : shards[r])
          branchKeys(p, b, static_cast<int>(k), q.begin, q.end, n, mask, keys);
        const int kvHead = b.heads[k] / group;
        for (int peer = 0; peer < ranks; ++peer) {
          if (peer == r)
            continue;
          for (const RowRange &s : shards[peer])
            for (const RowRun &run : keys) {
              RowRun c = ring::clip(run, s.begin, s.end);
              if (c.count > 0)
                mine[{peer, kvHead}].push_back(c);
            }
        }
      }
      for (auto &[key, runs] : mine) {
        std::vector<RowRun> merged = ring::normalize(runs);
        out.branches[bi].rowsReceived += ring::countRows(merged);
        auto &dst = all[key];
        dst.insert(dst.end(), merged.begin(), merged.end());
      }
    }
    for (auto &[key, runs] : all) {
      PeerRows pr;
      pr.peer = key.first;
      pr.kvHead = key.second;
      pr.rows = ring::normalize(runs);
      pr.count = ring::countRows(pr.rows);
      rp.rowsReceived += pr.count;
      rp.receives.push_back(std::move(pr));
    }
    // K and V in the dtype; backward: K and V again (the executor replays
    // the schedule) and the dK, dV partials of those rows back in fp32.
    rp.bytesForward = rp.rowsReceived * p.headDim * out.elementBytes * 2;
    rp.bytesBackward = rp.bytesForward + rp.rowsReceived * p.headDim * 4 * 2;
    out.totalBytesForward += rp.bytesForward;
    out.totalBytesBackward += rp.bytesBackward;
    out.rankPlans.push_back(std::move(rp));
  }
  for (size_t b = 0; b < p.branches.size(); ++b)
    if (out.branches[b].rowsReceived > 0)
      out.branches[b].primitive = primitiveOf(p.branches[b]);
  out.hash = fnv(fnv(fnv(fnv(14695981039346656037ULL, specHash), static_cast<uint64_t>(n)),
                     static_cast<uint64_t>(ranks)),
                 static_cast<uint64_t>(p.ringLayout));
  // The block mask sizes every transfer of a block_mask branch: ranks with
  // different masks would post sends and receives that do not pair up.
  if (mask) {
    out.hash = fnv(fnv(out.hash, static_cast<uint64_t>(mask->block)),
                   static_cast<uint64_t>(mask->colIndices.size()));
    for (int64_t x : mask->rowOffsets)
      out.hash = fnv(out.hash, static_cast<uint64_t>(x));
    for (int64_t x : mask->colIndices)
      out.hash = fnv(out.hash, static_cast<uint64_t>(x));
  }
  return out;
}

std::string ringPlanJson(const RingPlan &plan, const std::string &name) {
  std::ostringstream os;
  os << "{\n  \"attention\": \"" << name << "\",\n  \"seq\": " << plan.seqLen
     << ",\n  \"world_size\": " << plan.ranks << ",\n  \"layout\": \"" << toString(plan.layout)
     << "\",\n  \"shard_rows\": " << plan.shardRows
     << ",\n  \"kv_heads\": " << plan.kvHeads << ",\n  \"head_dim\": " << plan.headDim
     << ",\n  \"element_bytes\": " << plan.elementBytes
     << ",\n  \"plan_hash\": \"" << std::hex << plan.hash << std::dec << "\",\n  \"branches\": [";
  for (size_t b = 0; b < plan.branches.size(); ++b)
    os << (b ? ", " : "") << "{\"branch\": \"" << plan.branches[b].what
       << "\", \"primitive\": \"" << toString(plan.branches[b].primitive)
       << "\", \"rows_received\": " << plan.branches[b].rowsReceived << "}";
  const RingSchedule schedule = scheduleRing(plan);
  os << "],\n  \"exchange\": \"" << (schedule.passAlong ? "pass_along" : "pairwise")
     << "\",\n  \"ranks\": [\n";
  for (size_t r = 0; r < plan.rankPlans.size(); ++r) {
    const RankPlan &rp = plan.rankPlans[r];
    os << "    {\"rank\": " << rp.rank << ", \"rows\": [";
    for (size_t k = 0; k < rp.shard.size(); ++k)
      os << (k ? ", " : "") << "[" << rp.shard[k].begin << ", " << rp.shard[k].end << "]";
    os << "], \"rows_received\": " << rp.rowsReceived << ", \"bytes_forward\": "
       << rp.bytesForward << ", \"bytes_backward\": " << rp.bytesBackward
       << ", \"buffer_bytes_forward\": " << schedule.bufferBytesForward(static_cast<int>(r))
       << ", \"buffer_bytes_backward\": " << schedule.bufferBytesBackward(static_cast<int>(r))
       << ", \"receives\": [";
    for (size_t x = 0; x < rp.receives.size(); ++x) {
      const PeerRows &pr = rp.receives[x];
      os << (x ? ", " : "") << "{\"peer\": " << pr.peer << ", \"kv_head\": " << pr.kvHead
         << ", \"rows\": " << pr.count << ", \"runs\": [";
      for (size_t k = 0; k < pr.rows.size(); ++k)
        os << (k ? ", " : "") << "[" << pr.rows[k].start << ", " << pr.rows[k].step << ", "
           << pr.rows[k].count << "]";
      os << "]}";
    }
    os << "]}" << (r + 1 < plan.rankPlans.size() ? "," : "") << "\n";
  }
  os << "  ],\n  \"total_bytes_forward\": " << plan.totalBytesForward
     << ",\n  \"total_bytes_backward\": " << plan.totalBytesBackward << "\n}\n";
  return os.str();
}

} // namespace dattn
