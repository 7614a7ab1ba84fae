// dattn: helpers that allocate and wait, for tools, tests and benchmarks.
// They sit on top of the runtime API (dattn/runtime.h) and are not part of
// it: a framework embedding dattn owns its memory and streams instead.
#pragma once

#include "dattn/ring_runtime.h"
#include "dattn/runtime.h"

#include <functional>
#include <memory>
#include <vector>

namespace dattn {

/// Device memory on the current context, freed on destruction.
class DeviceBuffer {
public:
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  void *data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  void upload(const void *host, size_t bytes);
  void download(void *host, size_t bytes) const;
  /// Fills with a 32-bit pattern (e.g. NaN bits to poison outputs) and
  /// waits, so that work on any stream afterwards sees the pattern.
  void fill32(uint32_t pattern);
  /// {data, bytes} as a run's workspace.
  Workspace workspace() const { return {ptr_, static_cast<int64_t>(bytes_)}; }

private:
  void *ptr_ = nullptr;
  size_t bytes_ = 0;
};

/// A validated BlockMask uploaded to the device (rows, then columns).
class DeviceBlockMaskBuffer {
public:
  /// Throws ArgumentError (saying which entry is wrong) if `mask` is not a
  /// valid mask for sequence length `seqLen`.
  DeviceBlockMaskBuffer(const BlockMask &mask, int64_t seqLen);
  DeviceBlockMask view() const;

private:
  std::unique_ptr<DeviceBuffer> buffer_;
  int64_t block_ = 0, numBlockRows_ = 0, numNonZero_ = 0;
};

/// A CUDA stream of the current context (non-blocking with respect to the
/// default stream), destroyed on destruction.
class Stream {
public:
  Stream();
  ~Stream();
  Stream(const Stream &) = delete;
  Stream &operator=(const Stream &) = delete;
  void *handle() const { return stream_; }
  void synchronize(const std::string &what) const;

private:
  void *stream_ = nullptr;
};

/// Work enqueued on a stream between begin() and end(), captured into a
/// CUDA graph and replayed with launch().
class CapturedGraph {
public:
  ~CapturedGraph();
  void begin(void *stream);
  void end();
  void launch(void *stream) const;

private:
  void *capturing_ = nullptr;
  void *graph_ = nullptr, *exec_ = nullptr;
};

/// `count` standard normal values for random inputs, the same for a given
/// (seed, stream) whatever the machine's thread count; filled in parallel
/// (runtime/Random.cpp). `stream` tells apart the tensors of one seed.
std::vector<float> randomNormal(size_t count, uint64_t seed, uint64_t stream = 0);

/// Host conversions between float32 and a spec dtype's storage (fp16 and
/// bf16 round to nearest even; fp32 is copied).
std::vector<char> encode(const float *values, size_t count, DType dtype);
void decode(const void *data, size_t count, DType dtype, float *values);
/// `count` floats encoded to `dtype` in a new device buffer (at least 16
/// bytes); *rounded receives the values as the GPU sees them.
std::unique_ptr<DeviceBuffer> uploadRounded(const float *host, size_t count, DType dtype,
                                            std::vector<float> &rounded);

/// Times `fn` (which enqueues work on the default stream) with CUDA events:
/// `warmup` untimed calls, then the median of `iters` timed ones, in ms.
/// `beforeEach`, if given, is enqueued before every timed call, untimed
/// (e.g. an L2 flush).
double timeMedianMs(const std::function<void(int)> &fn, int warmup, int iters,
                    const std::function<void()> &beforeEach = nullptr);

/// Waits for the device and turns an asynchronous fault into an Error.
void synchronize(const std::string &what);

/// Host float32 arrays in and out: encodes the inputs to the spec's dtype
/// and uploads them (contiguous), allocates the outputs, the gradients and
/// the workspace in the attention's context, poisons outputs with NaN before
/// each run (an unwritten element cannot pass a check), runs on the chosen
/// stream (default: the default stream), reads back.
class HostAttention {
public:
  HostAttention(CompiledAttention &attn, int64_t batch, int64_t seqLen, const float *q,
                const float *k, const float *v, const BlockMask *mask = nullptr);
  ~HostAttention();
  void setStream(void *stream);
  /// Runs `attn` from now on, on the same buffers: another configuration of
  /// the same attention (the tuner's candidates, without uploading the
  /// inputs again). Throws Error if its spec differs; the workspace grows
  /// if it needs more. `attn` must outlive this object or the next call.
  void useAttention(CompiledAttention &attn);
  /// New inputs in the same device buffers (for replaying a captured graph).
  void setInputs(const float *q, const float *k, const float *v);
  /// A new upstream gradient in the same buffer (after a first backward()).
  void setDout(const float *dout);
  /// NaN into O and LSE, or into dq, dk and dv.
  void poisonOutputs();
  void poisonGradients();
  /// Poisons O and LSE, then runs one forward.
  void run();
  /// One forward without poisoning (for timing loops).
  void rerun() { attn_->forward(args_); }
  /// Waits, then decodes O [batch, seq, heads, head_dim] and LSE [batch, heads, seq].
  void read(std::vector<float> &out, std::vector<float> &lse);
  /// Poisons the gradients with NaN, then runs the backward pass for
  /// upstream gradient `dout` (host, float32, like O; uploaded on the first
  /// call and kept); readGradients() waits and decodes.
  void backward(const float *dout, bool deterministic = false);
  /// One backward without poisoning (for timing loops); backward() first.
  void rebackward(bool deterministic);
  /// Wait for this object's stream, then decode.
  void readGradients(std::vector<float> &dq, std::vector<float> &dk, std::vector<float> &dv);
  /// dout as the GPU sees it (rounded to the dtype).
  const std::vector<float> &dout() const { return doutRounded_; }

  /// The inputs as the GPU sees them (rounded to the dtype), for a reference.
  const std::vector<float> &q() const { return q_; }
  const std::vector<float> &k() const { return k_; }
  const std::vector<float> &v() const { return v_; }
  int64_t inputBytes() const;
  int64_t outputBytes() const;
  const WorkspaceSizes &workspaceSizes() const { return sizes_; }

private:
  void wait(const std::string &what) const;

  CompiledAttention *attn_;
  int64_t batch_, seqLen_;
  void *stream_ = nullptr;
  std::vector<float> q_, k_, v_;
  std::unique_ptr<DeviceBuffer> qDev_, kDev_, vDev_, outDev_, lseDev_, workspace_;
  std::unique_ptr<DeviceBlockMaskBuffer> mask_;
  WorkspaceSizes sizes_;
  ForwardArgs args_;
  std::vector<float> doutRounded_;
  std::unique_ptr<DeviceBuffer> gradOut_, gradQ_, gradK_, gradV_;
  BackwardArgs bargs_;
};

/// A ring fed from host float32 arrays of the whole sequence: each rank
/// gets its rows (the plan's shard, in local order) uploaded into its own
/// buffers on its GPU, its outputs are poisoned with NaN before each run,
/// and read() puts the rows back in place. Over a LoopbackRing (every rank
/// on one GPU) or an NcclRing (this process's ranks; the rows of ranks in
/// other processes read back as NaN).
class HostRing {
public:
  /// `ranks` ranks on attn's GPU (LoopbackRing; 0 = the spec's ring size).
  HostRing(CompiledAttention &attn, int ranks, int64_t batch, int64_t seqLen, const float *q,
           const float *k, const float *v, const BlockMask *mask = nullptr);
  /// This process's ranks of an NCCL ring (the members' mask fields are
  /// filled here from `mask`).
  HostRing(std::vector<RingMember> members, int64_t batch, int64_t seqLen, const float *q,
           const float *k, const float *v, const BlockMask *mask = nullptr);
  ~HostRing();
  /// Poisons every local rank's O and LSE, then runs the ring's forward.
  void run();
  /// One forward without poisoning (timing loops).
  void rerun();
  /// Waits, then decodes O [batch, seq, heads, head_dim] and LSE
  /// [batch, heads, seq] of the whole sequence (NaN in rows no local rank holds).
  void read(std::vector<float> &out, std::vector<float> &lse);
  /// Poisons every local rank's gradients with NaN, then runs the ring's
  /// backward for the upstream gradient `dout` (host, float32, like O;
  /// uploaded on the first call and kept) after a run().
  void backward(const float *dout);
  /// One backward without poisoning (timing loops); backward() first.
  void rebackward();
  /// Waits, then decodes dq, dk, dv of the whole sequence (NaN as in read()).
  void readGradients(std::vector<float> &dq, std::vector<float> &dk, std::vector<float> &dv);
  /// dout as the GPU sees it (rounded to the dtype).
  const std::vector<float> &dout() const { return dout_; }
  const RingPlan &plan() const;
  const RingSchedule &schedule() const;
  int ranks() const { return plan().ranks; }
  /// Whether this process holds rank r, and r's rows and workspaces.
  bool holds(int rank) const { return ranks_.at(rank).context != nullptr; }
  int64_t rows(int rank) const;
  int64_t workspaceBytes(int rank) const;
  int64_t backwardWorkspaceBytes(int rank) const;
  /// The global rows this process holds, ascending.
  std::vector<int64_t> heldRows() const;
  /// Loopback rings: each rank's own time (its kernels, not the copies
  /// between ranks; LoopbackRing::setRankTiming), forward or, after
  /// backward(), backward: medians over `iters` passes, each poisoned first
  /// like run() and backward(), so that read() and readGradients() then
  /// give the last pass's outputs. The slowest rank's time is about the
  /// ring's time on P GPUs with its transfers hidden.
  std::vector<double> rankMilliseconds(bool backward, int iters);
  /// Bytes the last run or backward moved between ranks (loopback) or this
  /// process's ranks sent (NCCL).
  int64_t bytesMoved() const { return moved_; }
  /// Device memory rank r holds: its q, k, v, out, lse, workspace and,
  /// after a backward(), dout, dq, dk and dv.
  int64_t rankBytes(int rank) const;
  /// The inputs as the GPU sees them (rounded to the dtype), for a reference.
  const std::vector<float> &q() const { return q_; }
  const std::vector<float> &k() const { return k_; }
  const std::vector<float> &v() const { return v_; }

private:
  struct Rank {
    void *context = nullptr; ///< its GPU's; null: another process holds it
    int member = -1;         ///< NcclRing member index
    std::unique_ptr<DeviceBuffer> q, k, v, out, lse, workspace;
    std::unique_ptr<DeviceBuffer> dout, dq, dk, dv; ///< after the first backward()
    std::unique_ptr<DeviceBlockMaskBuffer> mask;
  };
  void setUp(const float *q, const float *k, const float *v);
  void allocate(int rank);
  /// Rank r's rows of a [B, N, width] host tensor, in its shard's order.
  std::vector<float> rowsOf(const std::vector<float> &full, int64_t width, int rank) const;
  /// The inverse: rank r's [B, rows, width] decoded from `buffer` into `full`.
  void putRows(const DeviceBuffer &buffer, int64_t width, int rank,
               std::vector<float> &full) const;
  void synchronizeAll(const std::string &what) const;
  CompiledAttention &attn_; ///< rank 0's (loopback) or the first member's
  int64_t batch_, seqLen_;
  std::vector<float> q_, k_, v_;
  std::unique_ptr<DeviceBlockMaskBuffer> mask_;
  std::unique_ptr<LoopbackRing> loopback_;
  std::unique_ptr<NcclRing> nccl_;
  std::vector<Rank> ranks_;
  std::vector<RingRankForward> args_;   ///< [rank] (loopback) or [member] (NCCL)
  std::vector<RingRankBackward> bargs_; ///< the same
  std::vector<float> dout_;
  int64_t moved_ = 0;
};

} // namespace dattn
