// dattn: running a ring (docs/ring.md). Each rank holds its rows of the
// sequence (the ring plan's shard, in local order: one range, or chunk r
// then chunk 2P - 1 - r with the zigzag layout) of q, k, v and computes its
// rows of out and lse. The executor follows the ring schedule
// (include/dattn/ring.h): at every step a rank packs the rows a peer needs,
// the transport moves them, and the rank attends its queries to the block
// it received, merging partial results by LSE in fp32 (ring module:
// templates/dattn/ring.cuh); the backward replays the steps and returns the
// dK/dV partials of each received block to its owner in fp32.
//
// LoopbackRing runs P ranks on one GPU in one process, with device-to-device
// copies as the transport; NcclRing runs this process's ranks of a ring
// over NCCL (one per process under a launcher, or several GPUs driven from
// one process). Both drive the same per-rank executor (runtime/RingRank.h)
// through the same plan, schedule, packing and kernels, so every ring test
// and the single-GPU memory study run on one GPU.
#pragma once

#include "dattn/comm.h"
#include "dattn/ring.h"
#include "dattn/runtime.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dattn {

/// One rank's forward: q and out [B, rows, heads, head_dim], k and v
/// [B, rows, kv_heads, head_dim] (any strides the runtime accepts), lse
/// [B, heads, rows] fp32 contiguous, with rows = the size of its shard.
struct RingRankForward {
  TensorDesc q, k, v, out, lse;
  Workspace workspace; ///< at least LoopbackRing::workspaceBytes(rank)
};

/// One rank's backward: q, k, v, out and lse as given to and returned by
/// the forward, dout and dq like q, dk and dv like k (summed over the query
/// heads of each kv head), each with its own strides.
struct RingRankBackward {
  TensorDesc q, k, v, out, lse, dout, dq, dk, dv;
  Workspace workspace; ///< at least LoopbackRing::backwardWorkspaceBytes(rank)
};

class LoopbackRing {
public:
  /// Plans the ring of `attention` (its spec's ring size unless `ranks` is
  /// given) for (batch, seqLen), loads the ring module and uploads the
  /// schedule's part lists (once: runs allocate nothing). `mask` is the
  /// host block mask when the spec has a block_mask pattern, and `deviceMask`
  /// the same mask on the device.
  LoopbackRing(CompiledAttention &attention, int64_t batch, int64_t seqLen, int ranks = 0,
               const BlockMask *mask = nullptr, DeviceBlockMask deviceMask = {});
  ~LoopbackRing();
  LoopbackRing(const LoopbackRing &) = delete;
  LoopbackRing &operator=(const LoopbackRing &) = delete;

  const RingPlan &plan() const { return plan_; }
  const RingSchedule &schedule() const { return schedule_; }
  int ranks() const { return plan_.ranks; }
  /// Rows rank r holds.
  int64_t rows(int rank) const;
  /// Device memory rank r's run needs: its fp32 O accumulator, two receive
  /// slots and one pack buffer (K and V), as over NCCL (the same executor).
  int64_t workspaceBytes(int rank) const;

  /// Device memory rank r's backward needs: Delta, fp32 dQ, dK and dV
  /// accumulators, two receive slots and a pack buffer (K and V), fp32 partials of
  /// one received block and of one returned block.
  int64_t backwardWorkspaceBytes(int rank) const;

  /// Every rank's forward, enqueued on `stream`; validates each rank's
  /// tensors first. Returns the bytes moved between ranks (K and V), which
  /// equal the plan's total_bytes_forward times the batch.
  int64_t forward(const std::vector<RingRankForward> &ranks, void *stream = nullptr);
  /// Every rank's backward: the forward's schedule again (K and V moved
  /// again), and the dK/dV partials of received rows returned to their
  /// owners in fp32. Returns the bytes moved (total_bytes_backward x batch).
  int64_t backward(const std::vector<RingRankBackward> &ranks, void *stream = nullptr);

  /// With rank timing on, each pass brackets every rank's own work (its
  /// kernels, not the device copies that stand in for NCCL) with events;
  /// rankMilliseconds() waits and returns each rank's time in the last pass:
  /// what each GPU of a ring would compute, so the slowest rank's is about a
  /// ring's time on P GPUs when its transfers are hidden behind compute.
  void setRankTiming(bool on);
  std::vector<double> rankMilliseconds();

private:
  struct Impl;
  CompiledAttention &attention_;
  RingPlan plan_;
  RingSchedule schedule_;
  std::unique_ptr<Impl> impl_;
};

/// One rank of this process in an NcclRing: the attention compiled on the
/// rank's GPU and the rank's communicator (the same GPU).
struct RingMember {
  CompiledAttention *attention = nullptr;
  RingCommunicator *comm = nullptr;
  DeviceBlockMask mask; ///< on the rank's GPU, when the spec has a block_mask
};

class NcclRing {
public:
  /// Plans the ring (P = the communicators' world size) for (batch,
  /// seqLen), loads the ring module on each member's GPU, then compares a
  /// hash of the plan with every rank's (one all-gather): a different
  /// spec, sequence length, batch or ring size on any rank is an Error on
  /// all of them, naming the ranks that differ. `mask`: the host block
  /// mask when the spec has a block_mask pattern.
  NcclRing(std::vector<RingMember> members, int64_t batch, int64_t seqLen,
           const BlockMask *mask = nullptr);
  ~NcclRing();
  NcclRing(const NcclRing &) = delete;
  NcclRing &operator=(const NcclRing &) = delete;

  const RingPlan &plan() const { return plan_; }
  const RingSchedule &schedule() const { return schedule_; }
  /// This process's members, in the order given; member m is rank rank(m).
  int members() const { return static_cast<int>(members_.size()); }
  int rank(int member) const { return members_.at(member).comm->rank(); }
  int64_t rows(int member) const;
  /// Device memory member m's forward and backward need (as LoopbackRing's).
  int64_t workspaceBytes(int member) const;
  int64_t backwardWorkspaceBytes(int member) const;

  /// Each member's forward, on its stream (streams[m]; empty: the default
  /// streams). Transfers run on a communication stream of each member and
  /// overlap the attention to the previous block. Returns after every
  /// transfer completed, watching each against DATTN_RING_TIMEOUT: a peer
  /// that died or hangs aborts the communicators and throws an Error that
  /// names the rank, the peer and the step. Returns the bytes this
  /// process's ranks sent (K and V).
  int64_t forward(const std::vector<RingRankForward> &members,
                  const std::vector<void *> &streams = {});
  /// The backward (as LoopbackRing's), watched the same way. Returns the
  /// bytes sent (K and V, then the fp32 dK/dV partials).
  int64_t backward(const std::vector<RingRankBackward> &members,
                   const std::vector<void *> &streams = {});

private:
  struct Member;
  void checkPlans();
  void abortAll();
  /// One NCCL group of every member's calls (`post`); aborts on failure.
  void group(const std::string &what, const std::function<void(Member &)> &post);
  /// Waits for `event` (a CUevent) with the deadline; aborts and throws.
  void watch(const Member &m, void *event, const std::string &what);
  std::vector<void *> computeStreams(const std::vector<void *> &streams, size_t given,
                                     const char *pass) const;
  /// Every member's RankRun::blocks(step) (or, with `partials`, its
  /// partials(step)) as one group; returns the bytes sent.
  int64_t post(const std::string &what, int step, bool partials);
  int64_t transfer(int step, bool backward);
  int64_t returnPartials(int step);
  int64_t run(bool backward);
  std::vector<RingMember> members_;
  RingPlan plan_;
  RingSchedule schedule_;
  std::vector<std::unique_ptr<Member>> state_;
  bool aborted_ = false;
};

} // namespace dattn
