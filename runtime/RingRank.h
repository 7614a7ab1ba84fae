// runtime: one rank of a ring, whatever moves the bytes. RankRun owns the
// rank's part lists on its GPU and the layout of its workspace, and enqueues
// the rank's work of each step on a stream: pack what the send peer needs,
// attend to the block that arrived, return and add dK/dV partials. The
// transports drive it: LoopbackRing (every rank on one GPU, device copies)
// and NcclRing (comm/, NCCL send/recv on a communication stream). Both
// follow the same schedule (include/dattn/ring.h), so a loopback test
// checks the executor that NCCL runs.
#pragma once

#include "RingBuffers.h"

#include "dattn/ring.h"
#include "dattn/ring_runtime.h"

#include "dattn/params.cuh"
#include "dattn/ring_params.cuh"

#include <cuda.h>

#include <vector>

namespace dattn::rt {

/// A block as the branch kernels see it: where its keys are, which rows
/// they are (device and host), and backward where its dK/dV partials go.
struct BlockView {
  ring::Params params{};
  const std::vector<PackedPart> *parts = nullptr;
  ring::Grad grad{};
  /// The keys' and values' extent as [B, keyRows, keyHeads, D] (a packed
  /// block: its rows, one head), for the TMA maps of the blocks kernels.
  int64_t keyRows = 0, keyHeads = 0;
};

class RankRun {
public:
  /// Rank `rank` of `schedule` (for `plan`) running `attention`'s ring
  /// module on its GPU for `batch`; uploads the rank's part lists.
  RankRun(CompiledAttention &attention, const RingPlan &plan, const RingSchedule &schedule,
          int rank, int64_t batch, DeviceBlockMask mask);
  ~RankRun();
  RankRun(const RankRun &) = delete;
  RankRun &operator=(const RankRun &) = delete;

  int rank() const { return rank_; }
  int64_t rows() const { return rows_; }
  int64_t workspaceBytes(bool backward) const {
    return (backward ? backwardLayout_ : forwardLayout_).total;
  }
  CompiledAttention &attention() const { return attention_; }
  /// Step s's send and receive (peer -1: nothing).
  const Transfer &send(int step) const { return schedule_.steps[step - 1].send; }
  const Transfer &recv(int step) const { return schedule_.steps[step - 1].recv; }
  /// RingSchedule::passAlong: blocks go to rank + 1 and come from rank - 1.
  bool passAlong() const { return shape_.passAlong; }
  /// Step s's transfer of K and V, after pack(s), and the dK/dV partials
  /// after attendBackward(s), in the bound workspace (rt::blockExchange and
  /// rt::partialExchange say what they move).
  Exchange blocks(int step) const;
  Exchange partials(int step) const;

  /// Validates the rank's tensors (errors name the pass and the rank) and
  /// binds them and `stream` for the calls below.
  void bindForward(const RingRankForward &args, CUstream stream);
  void bindBackward(const RingRankBackward &args, CUstream stream);
  CUstream stream() const { return stream_; }

  /// Forward: empty accumulators (O = 0, LSE = -inf), then the own rows.
  void beginForward();
  /// Backward: zeroed accumulators, Delta = rowsum(dO * O), the own rows.
  void beginBackward();
  /// Packs step s's send (K and V) into the pack buffer.
  void pack(int step);
  /// Forward: merges the block received at step s (in receive slot
  /// `slot`) into O and LSE.
  void attend(int step, int slot);
  /// Backward: dQ of the block of step s (receive slot `slot`) into the
  /// rank's accumulator, its dK/dV partials into the partial buffers.
  void attendBackward(int step, int slot);
  /// Backward, after partials(s) arrived: pairwise, adds those returned for
  /// step s's send into the rank's dK/dV accumulators; passed along, after
  /// the last step, the own rows' dK/dV (and dQ) onto the partials that
  /// came home.
  void addReturned(int step);
  /// The final casts: O (forward), dq, dk, dv (backward).
  void endForward();
  void endBackward();

private:
  /// Buffers of the bound workspace (kv: 0 = K or dK, 1 = V or dV).
  void *packBuffer(int kv) const;
  void *recvBuffer(int kv, int slot) const;
  float *partialBuffer(int kv) const;
  float *returnedBuffer(int kv) const;
  float *slotPartials(int kv, int slot) const; ///< passed along
  bool backwardBound() const { return layout_ == &backwardLayout_; }

  size_t kernel(KernelRole role) const;
  void launch(size_t x, unsigned gx, unsigned gy, unsigned gz, void **args) const;
  unsigned elementwise(size_t x, int64_t count) const;
  unsigned rowsGrid(size_t x) const;
  /// A tensor-core backward kernel's grid over the block's key tiles of one
  /// kv head (ring::keyPiece, rt::ringKeyGrid), long query walks split
  /// (rt::ringQuerySplit), and its x (rt::ringSplitGridX).
  struct KeyGrid {
    ring::WalkSplit split;
    unsigned x = 0;
  };
  KeyGrid keyGrid(size_t x, const std::vector<PackedPart> &parts) const;
  void zero(void *at, int64_t floats, uint32_t bits = 0) const;
  float *f32(int64_t offset) const;
  const ring::Part *parts(int64_t first) const;
  /// Every branch's kernel of `role` over the rank's rows (the backward's
  /// tensor-core kernels: over the block's key tiles). The tensor-core
  /// kernels of strided branches read `staged` where given, the others
  /// `packed`.
  void branches(KernelRole role, const BlockView &packed, const BlockView *staged) const;
  /// A strided branch's tensor-core kernel, which takes a tile per part and
  /// so reads a fragmented block staged (a blocks branch's reads it packed).
  bool readsStaged(const KernelInfo &k) const;
  Layout accumulatorLayout() const;
  BlockView ownBlock() const;
  BlockView receivedBlock(int step, int slot) const;
  /// A fragmented step's block in the sender's shape (after unpack()).
  BlockView stagedBlock(int step) const;
  /// Scatters the packed block of step s (receive slot `slot`) into the stage.
  void unpack(int step, int slot) const;
  void bindCommon(const TensorDesc &q, const TensorDesc &k, const TensorDesc &v,
                  const TensorDesc &out, const TensorDesc &lse, const Workspace &ws,
                  bool backward, const char *pass);

  struct Span {
    int64_t first = 0; ///< index of the first Part in the device array
    int count = 0;
  };
  CompiledAttention &attention_;
  const RankSchedule &schedule_;
  int rank_;
  RankShape shape_; ///< what sizes the buffers (RingBuffers.h)
  int64_t batch_, rows_, headDim_, elementBytes_;
  DeviceBlockMask mask_;
  ring::Params shard_{}; ///< the rank's rows, no parts
  CUdeviceptr partsDevice_ = 0;
  Span local_;
  std::vector<PackedPart> ownParts_; ///< the own rows as parts (host)
  std::vector<Span> recvParts_, sendParts_; ///< [step - 1]
  /// Fragmented receives (many parts of a few rows, e.g. the union of
  /// several dilations): the tensor-core kernels, which take a tile per
  /// part, read them staged in the sender's shape, through the sender's
  /// rows as parts. [step - 1]; staged_ false: read packed.
  std::vector<char> staged_;
  std::vector<ring::Params> senderShard_;     ///< the sender's rows, no parts
  std::vector<Span> senderParts_;
  std::vector<std::vector<PackedPart>> senderPartsHost_;
  int64_t stageRows_ = 0; ///< the stage's rows: the largest staged sender's shard
  RankWorkspace forwardLayout_, backwardLayout_;

  // Bound by bindForward / bindBackward.
  CUstream stream_ = nullptr;
  char *workspace_ = nullptr;
  const RankWorkspace *layout_ = nullptr;
  fwd::Params params_{};
  ring::Grad grad_{};
  Layout dqL_{}, dkL_{}, dvL_{};
  void *dq_ = nullptr, *dk_ = nullptr, *dv_ = nullptr;
};

} // namespace dattn::rt
