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
// copies as the transport: the same plan, schedule, packing and kernels as
// over NCCL, so every ring test and the single-GPU memory study run on one
// GPU.
#pragma once

#include "dattn/ring.h"
#include "dattn/runtime.h"

#include <cstdint>
#include <memory>
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

private:
  struct Impl;
  CompiledAttention &attention_;
  int64_t batch_ = 0, seqLen_ = 0;
  DeviceBlockMask deviceMask_;
  RingPlan plan_;
  RingSchedule schedule_;
  std::unique_ptr<Impl> impl_;
};

} // namespace dattn
