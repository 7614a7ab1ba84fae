// LoopbackRing (include/dattn/ring_runtime.h): P ranks of a ring on one GPU,
// each a RankRun (RingRank.h) over its own buffers, with device-to-device
// copies as the transport. Everything is enqueued on one stream, step by
// step: every rank packs what its send peer needs, the packed blocks are
// copied into the receivers' buffers, and every rank works on the block it
// received.
//   forward:  the own rows first, then one block per step, merged by LSE;
//             O at the end.
//   backward: Delta and the own rows, then per step the received block,
//             whose dK/dV partials (fp32) are copied back to the sender and
//             added into its accumulators; the gradients at the end.
// Passed along (RingSchedule::passAlong), each rank's copy comes from rank
// - 1 (RankRun::blocks and partials say which buffers pair up).
// With rank timing on, each rank's own work (its kernels, not the copies
// that stand in for NCCL) is bracketed by events: the time each GPU of a
// real ring would compute.
#include "Context.h"
#include "Libraries.h"
#include "RingRank.h"

#include "dattn/error.h"
#include "dattn/ring_runtime.h"

namespace dattn {

struct LoopbackRing::Impl {
  std::vector<std::unique_ptr<rt::RankRun>> ranks;
  int64_t moved = 0;
  void *context = nullptr;

  /// Rank timing: per rank, (start, stop) event pairs of its spans in the
  /// last pass, made on first use and kept.
  bool timing = false;
  std::vector<std::vector<std::pair<CUevent, CUevent>>> spans;
  std::vector<size_t> used;

  ~Impl() {
    try {
      rt::ContextScope scope(context);
      for (auto &list : spans)
        for (auto &[start, stop] : list) {
          rt::driver().eventDestroy(start);
          rt::driver().eventDestroy(stop);
        }
    } catch (...) {
      // Destructors do not throw.
    }
  }

  void beginPass() {
    moved = 0;
    spans.resize(ranks.size());
    used.assign(ranks.size(), 0);
  }
  /// Rank r's work of one span, timed when timing is on.
  template <class Work> void on(int r, CUstream stream, Work &&work) {
    if (!timing) {
      work();
      return;
    }
    const rt::Driver &d = rt::driver();
    if (used[r] == spans[r].size()) {
      std::pair<CUevent, CUevent> pair{};
      rt::check(d.eventCreate(&pair.first, CU_EVENT_DEFAULT), "ring: a rank timing event");
      rt::check(d.eventCreate(&pair.second, CU_EVENT_DEFAULT), "ring: a rank timing event");
      spans[r].push_back(pair);
    }
    const auto &[start, stop] = spans[r][used[r]++];
    rt::check(d.eventRecord(start, stream), "ring: timing a rank");
    work();
    rt::check(d.eventRecord(stop, stream), "ring: timing a rank");
  }

  void copy(void *dst, const void *src, int64_t bytes, CUstream stream) {
    if (bytes == 0)
      return;
    rt::check(rt::driver().memcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(dst),
                                           reinterpret_cast<CUdeviceptr>(src),
                                           static_cast<size_t>(bytes), stream),
              "ring: copying a block between ranks");
    moved += bytes;
  }
  /// Every rank's receive of RankRun::blocks(step) (or partials(step)),
  /// copied from its peer's matching send.
  void exchange(int step, bool partials, CUstream stream) {
    for (auto &r : ranks) {
      const rt::Exchange in = partials ? r->partials(step) : r->blocks(step);
      if (in.recvPeer < 0)
        continue;
      const rt::RankRun &peer = *ranks[in.recvPeer];
      const rt::Exchange out = partials ? peer.partials(step) : peer.blocks(step);
      if (out.sendPeer != r->rank() || out.send.size() != in.recv.size())
        throw Error("ring (loopback): rank " + std::to_string(r->rank()) + " expects step " +
                    std::to_string(step) + " from rank " + std::to_string(in.recvPeer) +
                    ", which sends it nothing that pairs up");
      for (size_t x = 0; x < in.recv.size(); ++x)
        copy(in.recv[x].at, out.send[x].at, in.recv[x].bytes, stream);
    }
  }
  /// Step s's K and V: every rank packs, the receivers get copies.
  void blocks(int step, CUstream stream) {
    for (size_t r = 0; r < ranks.size(); ++r)
      on(static_cast<int>(r), stream, [&] { ranks[r]->pack(step); });
    exchange(step, false, stream);
  }
};

LoopbackRing::LoopbackRing(CompiledAttention &attention, int64_t batch, int64_t seqLen,
                           int ranks, const BlockMask *mask, DeviceBlockMask deviceMask)
    : attention_(attention), impl_(std::make_unique<Impl>()) {
  const AttentionSpec &spec = attention.spec();
  if (batch < 1)
    throw ArgumentError("ring (attention '" + spec.name + "'): the batch must be >= 1, got " +
                        std::to_string(batch));
  if (spec.needsBlockMask() && (!mask || !deviceMask.present()))
    throw ArgumentError("ring (attention '" + spec.name +
                        "'): the spec has a block_mask pattern: pass the mask on the host "
                        "(for the plan) and on the device (for the kernels)");
  impl_->context = attention.context();
  plan_ = planRing(attention.plan(), seqLen, ranks > 0 ? ranks : attention.plan().ring, mask,
                   spec.hash());
  schedule_ = scheduleRing(plan_);
  for (int r = 0; r < plan_.ranks; ++r)
    impl_->ranks.push_back(
        std::make_unique<rt::RankRun>(attention, plan_, schedule_, r, batch, deviceMask));
}

LoopbackRing::~LoopbackRing() = default;

int64_t LoopbackRing::rows(int rank) const { return impl_->ranks.at(rank)->rows(); }
int64_t LoopbackRing::workspaceBytes(int rank) const {
  return impl_->ranks.at(rank)->workspaceBytes(false);
}
int64_t LoopbackRing::backwardWorkspaceBytes(int rank) const {
  return impl_->ranks.at(rank)->workspaceBytes(true);
}

namespace {
void checkRankCount(const AttentionSpec &spec, const char *pass, int ranks, size_t given) {
  if (static_cast<int>(given) != ranks)
    throw ArgumentError(std::string(pass) + " (attention '" + spec.name + "'): " +
                        std::to_string(ranks) + " ranks, but tensors for " +
                        std::to_string(given));
}
} // namespace

int64_t LoopbackRing::forward(const std::vector<RingRankForward> &args, void *stream) {
  const int P = plan_.ranks;
  checkRankCount(attention_.spec(), "ring forward", P, args.size());
  CUstream s = static_cast<CUstream>(stream);
  for (int r = 0; r < P; ++r) // every rank's arguments checked before any work
    impl_->ranks[r]->bindForward(args[r], s);
  rt::ContextScope scope(attention_.context());
  Impl &x = *impl_;
  x.beginPass();
  for (int r = 0; r < P; ++r)
    x.on(r, s, [&] { x.ranks[r]->beginForward(); });
  for (int step = 1; step < P; ++step) {
    x.blocks(step, s);
    for (int r = 0; r < P; ++r)
      x.on(r, s, [&] { x.ranks[r]->attend(step, step % 2); });
  }
  for (int r = 0; r < P; ++r)
    x.on(r, s, [&] { x.ranks[r]->endForward(); });
  return x.moved;
}

int64_t LoopbackRing::backward(const std::vector<RingRankBackward> &args, void *stream) {
  const int P = plan_.ranks;
  checkRankCount(attention_.spec(), "ring backward", P, args.size());
  CUstream s = static_cast<CUstream>(stream);
  for (int r = 0; r < P; ++r)
    impl_->ranks[r]->bindBackward(args[r], s);
  rt::ContextScope scope(attention_.context());
  Impl &x = *impl_;
  x.beginPass();
  for (int r = 0; r < P; ++r)
    x.on(r, s, [&] { x.ranks[r]->beginBackward(); });
  for (int step = 1; step < P; ++step) {
    x.blocks(step, s);
    // Every received block's partials, then back to their senders (passed
    // along: after the last step, home), which add them.
    for (int r = 0; r < P; ++r)
      x.on(r, s, [&] { x.ranks[r]->attendBackward(step, step % 2); });
    x.exchange(step, true, s);
    for (int r = 0; r < P; ++r)
      x.on(r, s, [&] { x.ranks[r]->addReturned(step); });
  }
  for (int r = 0; r < P; ++r)
    x.on(r, s, [&] { x.ranks[r]->endBackward(); });
  return x.moved;
}

void LoopbackRing::setRankTiming(bool on) { impl_->timing = on; }

std::vector<double> LoopbackRing::rankMilliseconds() {
  Impl &x = *impl_;
  if (!x.timing)
    throw Error("LoopbackRing::rankMilliseconds: rank timing is off (setRankTiming(true) "
                "before the pass)");
  rt::ContextScope scope(attention_.context());
  const rt::Driver &d = rt::driver();
  std::vector<double> out(x.ranks.size(), 0.0);
  for (size_t r = 0; r < x.used.size(); ++r)
    for (size_t i = 0; i < x.used[r]; ++i) {
      const auto &[start, stop] = x.spans[r][i];
      rt::check(d.eventSynchronize(stop), "ring: waiting for a timed rank");
      float ms = 0;
      rt::check(d.eventElapsedTime(&ms, start, stop), "ring: reading a rank's time");
      out[r] += ms;
    }
  return out;
}

} // namespace dattn
