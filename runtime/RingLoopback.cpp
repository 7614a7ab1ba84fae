// LoopbackRing (include/dattn/ring_runtime.h): P ranks of a ring on one GPU.
// Everything is enqueued on one stream, step by step: at step s every rank
// packs what its send peer needs, the packed blocks are copied into the
// receivers' buffers (the transport), and every rank works on the block it
// received.
//   forward:  accumulators empty (O = 0, LSE = -inf), the own rows first,
//             then one block per step, merged by LSE; O at the end.
//   backward: Delta = dO . O, the own rows, then per step the received
//             block, whose dK/dV partials (fp32) go back to the sender and
//             are added into its accumulators; the gradients at the end.
#include "Context.h"
#include "Launch.h"
#include "Libraries.h"
#include "ModuleLoader.h"
#include "Validate.h"

#include "dattn/error.h"
#include "dattn/ring_runtime.h"

#include "dattn/params.cuh"
#include "dattn/ring_params.cuh"

#include <algorithm>

namespace dattn {

namespace {

constexpr int64_t kAlign = 256;
int64_t aligned(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

/// Where a rank's buffers sit in its workspace (byte offsets; -1 = absent).
struct RankWorkspace {
  int64_t oAcc = -1;                               ///< forward: fp32 O
  int64_t delta = -1, dqAcc = -1, dkAcc = -1, dvAcc = -1; ///< backward
  int64_t recvK = 0, recvV = 0, packK = 0, packV = 0;
  int64_t recvDk = -1, recvDv = -1, retDk = -1, retDv = -1; ///< backward: fp32 partials
  int64_t total = 0;
};

RankWorkspace carve(bool backward, int64_t batch, int64_t rows, int64_t heads,
                    int64_t kvHeads, int64_t headDim, int64_t elementBytes,
                    const RankSchedule &rs) {
  RankWorkspace w;
  int64_t next = 0;
  auto take = [&](int64_t bytes) {
    const int64_t at = next;
    next += aligned(bytes);
    return at;
  };
  const int64_t q = batch * rows * heads * headDim, kv = batch * rows * kvHeads * headDim;
  if (backward) {
    w.delta = take(batch * heads * rows * 4);
    w.dqAcc = take(q * 4);
    w.dkAcc = take(kv * 4);
    w.dvAcc = take(kv * 4);
  } else {
    w.oAcc = take(q * 4);
  }
  const int64_t recv = batch * rs.maxRecvRows * headDim, send = batch * rs.maxSendRows * headDim;
  w.recvK = take(recv * elementBytes);
  w.recvV = take(recv * elementBytes);
  w.packK = take(send * elementBytes);
  w.packV = take(send * elementBytes);
  if (backward) {
    w.recvDk = take(recv * 4);
    w.recvDv = take(recv * 4);
    w.retDk = take(send * 4);
    w.retDv = take(send * 4);
  }
  w.total = next;
  return w;
}

/// Rank r's rows (one range, or two with zigzag) as ring parameters, no parts.
ring::Params shardOf(const RingPlan &plan, int r) {
  ring::Params s{};
  s.globalN = plan.seqLen;
  const std::vector<RowRange> &shard = plan.rankPlans[r].shard;
  for (size_t x = 0; x < shard.size() && x < 2; ++x) {
    s.qBegin[x] = shard[x].begin;
    s.qEnd[x] = shard[x].end;
  }
  return s;
}

} // namespace

/// The part lists of every rank and step on the device, and the workspaces.
struct LoopbackRing::Impl {
  struct Span {
    int64_t first = 0; ///< index of the first Part in the device array
    int count = 0;
  };
  CUdeviceptr parts = 0;
  std::vector<Span> local;                   ///< [rank]: its own rows, per kv head
  std::vector<std::vector<Span>> recv, send; ///< [rank][step - 1]
  std::vector<RankWorkspace> forward, backward; ///< [rank]

  const ring::Part *at(const Span &s) const {
    return reinterpret_cast<const ring::Part *>(parts) + s.first;
  }
  ~Impl() {
    if (parts)
      rt::driver().memFree(parts);
  }
};

/// One run's launches: the module's kernels by role, each rank's launch
/// parameters and workspace, and the steps both passes share.
struct LoopbackRing::Launch {
  const LoopbackRing &ring;
  const EmittedModule &mod;
  const std::vector<void *> &functions;
  CUstream stream;
  int64_t batch;
  std::vector<fwd::Params> params;   ///< [rank]
  std::vector<ring::Params> shards;  ///< [rank]: its rows, no parts
  std::vector<char *> workspace;     ///< [rank]
  std::vector<RankWorkspace> layout; ///< [rank]
  int64_t moved = 0;

  size_t kernel(KernelRole role) const {
    for (size_t x = 0; x < mod.kernels.size(); ++x)
      if (mod.kernels[x].role == role)
        return x;
    throw Error("the ring module has no kernel for role " +
                std::to_string(static_cast<int>(role)));
  }
  void launch(size_t x, unsigned gx, unsigned gy, unsigned gz, void **args) const {
    rt::launchKernel(mod.kernels[x], functions[x], gx, gy, gz, stream, args, "ring: ");
  }
  unsigned elementwise(size_t x, int64_t count) const {
    const int threads = mod.kernels[x].threads;
    return static_cast<unsigned>(
        std::clamp<int64_t>((count + threads - 1) / threads, 1, int64_t(65535) * 16));
  }
  /// Grid x over rank r's rows: rowsPerCta rows per CTA (one warp per row
  /// for SIMT kernels); tensor-core tiles do not straddle the rank's two
  /// zigzag ranges, so each range gets its own tiles.
  unsigned rowsGrid(size_t x, int r) const {
    const int64_t per = mod.kernels[x].rowsPerCta;
    if (mod.kernels[x].path != KernelPath::Mma)
      return static_cast<unsigned>((params[r].seqLen + per - 1) / per);
    const ring::Params &s = shards[r];
    int64_t tiles = 0;
    for (int range = 0; range < 2; ++range)
      tiles += (s.qEnd[range] - s.qBegin[range] + per - 1) / per;
    return static_cast<unsigned>(tiles);
  }
  float *f32(int r, int64_t offset) const {
    return reinterpret_cast<float *>(workspace[r] + offset);
  }
  void zero(int r, int64_t offset, int64_t floats, uint32_t bits = 0) const {
    if (floats > 0)
      rt::check(rt::driver().memsetD32Async(reinterpret_cast<CUdeviceptr>(workspace[r] + offset),
                                            bits, static_cast<size_t>(floats), stream),
                "ring: clearing an accumulator");
  }
  void copy(void *dst, const void *src, int64_t bytes) {
    rt::check(rt::driver().memcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(dst),
                                           reinterpret_cast<CUdeviceptr>(src),
                                           static_cast<size_t>(bytes), stream),
              "ring: copying a block between ranks");
    moved += bytes;
  }

  /// Adds rank r (its rows, its workspace, empty parameters) in rank order;
  /// false if it holds no rows (more ranks than rows: it does nothing).
  bool addRank(int r, void *rankWorkspace) {
    shards.push_back(shardOf(ring.plan_, r));
    workspace.push_back(static_cast<char *>(rankWorkspace));
    params.push_back(fwd::Params{});
    return ring.rows(r) > 0;
  }

  /// Rank r's own rows as a block (keys read in place).
  ring::Params ownBlock(int r) const {
    ring::Params b = shards[r];
    b.parts = ring.impl_->at(ring.impl_->local[r]);
    b.numParts = ring.impl_->local[r].count;
    b.keys = params[r].k;
    b.values = params[r].v;
    b.keyL = params[r].kL;
    b.valueL = params[r].vL;
    return b;
  }

  /// Step s's transfers: every rank packs its send, the receivers get
  /// copies; returns each rank's received block (numParts 0: none).
  std::vector<ring::Params> exchange(int step) {
    const int P = ring.ranks();
    const int64_t D = ring.plan_.headDim, elem = ring.plan_.elementBytes;
    const size_t pack = kernel(KernelRole::RingPack);
    for (int r = 0; r < P; ++r) {
      const Transfer &t = ring.schedule_.ranks[r].steps[step - 1].send;
      if (t.peer < 0)
        continue;
      const ring::Part *parts = ring.impl_->at(ring.impl_->send[r][step - 1]);
      int numParts = ring.impl_->send[r][step - 1].count;
      long long packedRows = t.rows, b = batch;
      for (int kv = 0; kv < 2; ++kv) {
        const void *src = kv == 0 ? params[r].k : params[r].v;
        Layout srcL = kv == 0 ? params[r].kL : params[r].vL;
        void *dst = workspace[r] + (kv == 0 ? layout[r].packK : layout[r].packV);
        void *args[] = {&parts, &numParts, &packedRows, &shards[r], &src, &srcL, &dst, &b};
        launch(pack, elementwise(pack, batch * t.rows * D / 4), 1, 1, args);
      }
    }
    std::vector<ring::Params> blocks(P);
    for (int r = 0; r < P; ++r) {
      const Transfer &t = ring.schedule_.ranks[r].steps[step - 1].recv;
      if (t.peer < 0)
        continue;
      const int64_t bytes = batch * t.rows * D * elem;
      copy(workspace[r] + layout[r].recvK, workspace[t.peer] + layout[t.peer].packK, bytes);
      copy(workspace[r] + layout[r].recvV, workspace[t.peer] + layout[t.peer].packV, bytes);
      ring::Params &b = blocks[r];
      b = shards[r];
      b.parts = ring.impl_->at(ring.impl_->recv[r][step - 1]);
      b.numParts = ring.impl_->recv[r][step - 1].count;
      b.keys = workspace[r] + layout[r].recvK;
      b.values = workspace[r] + layout[r].recvV;
      b.keyL = b.valueL = Layout{t.rows * D, D, 0};
    }
    return blocks;
  }

  /// Every branch's kernel of `role` over rank r's rows, with extra
  /// arguments after (fwd::Params, ring::Params).
  void branches(KernelRole role, int r, ring::Params block, ring::Grad *grad = nullptr) {
    for (size_t x = 0; x < mod.kernels.size(); ++x) {
      const KernelInfo &ki = mod.kernels[x];
      if (ki.role != role || params[r].seqLen == 0)
        continue;
      void *args[] = {&params[r], &block, grad};
      launch(x, rowsGrid(x, r),
             static_cast<unsigned>(ring.attention_.plan().branches[ki.branch].heads.size()),
             static_cast<unsigned>(batch), args);
    }
  }
};

LoopbackRing::LoopbackRing(CompiledAttention &attention, int64_t batch, int64_t seqLen,
                           int ranks, const BlockMask *mask, DeviceBlockMask deviceMask)
    : attention_(attention), batch_(batch), seqLen_(seqLen), deviceMask_(deviceMask),
      impl_(std::make_unique<Impl>()) {
  const AttentionSpec &spec = attention.spec();
  if (batch < 1)
    throw ArgumentError("ring (attention '" + spec.name + "'): the batch must be >= 1, got " +
                        std::to_string(batch));
  if (spec.needsBlockMask() && (!mask || !deviceMask.present()))
    throw ArgumentError("ring (attention '" + spec.name +
                        "'): the spec has a block_mask pattern: pass the mask on the host "
                        "(for the plan) and on the device (for the kernels)");
  plan_ = planRing(attention.plan(), seqLen, ranks > 0 ? ranks : attention.plan().ring, mask);
  schedule_ = scheduleRing(plan_);
  attention.prepareRing();

  // Every part list in one array: rank r's own rows (one part per kv head
  // and shard range, rows numbered locally), then its receives and sends.
  std::vector<ring::Part> all;
  auto append = [&](const std::vector<PackedPart> &parts) {
    Impl::Span s{static_cast<int64_t>(all.size()), static_cast<int>(parts.size())};
    for (const PackedPart &p : parts)
      all.push_back({p.rows.start, p.rows.step, p.rows.count, p.offset, p.kvHead});
    return s;
  };
  const int P = plan_.ranks;
  impl_->recv.resize(P);
  impl_->send.resize(P);
  for (int r = 0; r < P; ++r) {
    std::vector<PackedPart> own;
    for (int kv = 0; kv < spec.kvHeads; ++kv) {
      int64_t local = 0;
      for (const RowRange &range : plan_.rankPlans[r].shard) {
        own.push_back({kv, {range.begin, 1, range.end - range.begin}, local});
        local += range.end - range.begin;
      }
    }
    impl_->local.push_back(append(own));
    for (const RingStep &st : schedule_.ranks[r].steps) {
      impl_->recv[r].push_back(append(st.recv.parts));
      impl_->send[r].push_back(append(st.send.parts));
    }
    for (bool backward : {false, true})
      (backward ? impl_->backward : impl_->forward)
          .push_back(carve(backward, batch, rows(r), spec.heads, spec.kvHeads, spec.headDim,
                           plan_.elementBytes, schedule_.ranks[r]));
  }
  rt::ContextScope scope(attention.context());
  const rt::Driver &d = rt::driver();
  const size_t bytes = std::max<size_t>(1, all.size()) * sizeof(ring::Part);
  rt::check(d.memAlloc(&impl_->parts, bytes), "ring: allocating the part lists");
  if (!all.empty())
    rt::check(d.memcpyHtoD(impl_->parts, all.data(), all.size() * sizeof(ring::Part)),
              "ring: uploading the part lists");
}

LoopbackRing::~LoopbackRing() {
  try {
    rt::ContextScope scope(attention_.context());
    impl_.reset();
  } catch (...) {
    // Destructors do not throw; the driver is gone.
  }
}

int64_t LoopbackRing::rows(int rank) const {
  int64_t n = 0;
  for (const RowRange &r : plan_.rankPlans.at(rank).shard)
    n += r.end - r.begin;
  return n;
}

int64_t LoopbackRing::workspaceBytes(int rank) const { return impl_->forward.at(rank).total; }
int64_t LoopbackRing::backwardWorkspaceBytes(int rank) const {
  return impl_->backward.at(rank).total;
}

namespace {

/// Rank r's forward parameters from its validated tensors.
fwd::Params rankParams(rt::ArgumentChecker &check, const AttentionSpec &spec,
                       const AttentionPlan &plan, int64_t B, int64_t n, const TensorDesc &q,
                       const TensorDesc &k, const TensorDesc &v, const TensorDesc &out,
                       const TensorDesc &lse, const DeviceBlockMask &mask) {
  const int64_t H = spec.heads, Hk = spec.kvHeads;
  fwd::Params p{};
  p.qL = check.rows("q", q, B, n, H);
  p.kL = check.rows("k", k, B, n, Hk);
  p.vL = check.rows("v", v, B, n, Hk);
  p.oL = check.rows("out", out, B, n, H);
  check.lse("lse", lse, B, n);
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.o = out.data;
  p.lse = static_cast<float *>(lse.data);
  p.seqLen = n;
  p.heads = static_cast<int>(H);
  p.groupSize = static_cast<int>(H / Hk);
  p.scale = static_cast<float>(plan.scale);
  p.maskRows = reinterpret_cast<const long long *>(mask.rowOffsets);
  p.maskCols = reinterpret_cast<const long long *>(mask.colIndices);
  return p;
}


void checkRankCount(const AttentionSpec &spec, const char *pass, int ranks, size_t given) {
  if (static_cast<int>(given) != ranks)
    throw ArgumentError(std::string(pass) + " (attention '" + spec.name + "'): " +
                        std::to_string(ranks) + " ranks, but tensors for " +
                        std::to_string(given));
}

} // namespace

int64_t LoopbackRing::forward(const std::vector<RingRankForward> &args, void *stream) {
  const AttentionSpec &spec = attention_.spec();
  const int P = plan_.ranks;
  const int64_t B = batch_, H = spec.heads, D = spec.headDim;
  checkRankCount(spec, "ring forward", P, args.size());
  Launch L{*this, attention_.ringModule_, attention_.ring_->functions,
           static_cast<CUstream>(stream), B, {}, {}, {}, impl_->forward};
  for (int r = 0; r < P; ++r) {
    if (!L.addRank(r, args[r].workspace.data))
      continue;
    const int64_t n = rows(r);
    const std::string pass = "ring forward, rank " + std::to_string(r);
    rt::ArgumentChecker check(pass.c_str(), spec, attention_.device());
    const RingRankForward &a = args[r];
    L.params[r] = rankParams(check, spec, attention_.plan(), B, n, a.q, a.k, a.v, a.out, a.lse,
                             deviceMask_);
    check.workspace(a.workspace, workspaceBytes(r));
    L.params[r].oAcc = L.f32(r, L.layout[r].oAcc);
  }

  rt::ContextScope scope(attention_.context());
  for (int r = 0; r < P; ++r) {
    const int64_t n = rows(r);
    if (n == 0)
      continue;
    L.zero(r, L.layout[r].oAcc, B * n * H * D);
    rt::check(rt::driver().memsetD32Async(reinterpret_cast<CUdeviceptr>(L.params[r].lse),
                                          0xff800000u, static_cast<size_t>(B * H * n),
                                          L.stream),
              "ring: setting LSE to -inf");
    L.branches(KernelRole::Branch, r, L.ownBlock(r));
  }
  for (int step = 1; step < P; ++step) {
    std::vector<ring::Params> blocks = L.exchange(step);
    for (int r = 0; r < P; ++r)
      if (blocks[r].numParts > 0)
        L.branches(KernelRole::Branch, r, blocks[r]);
  }
  const size_t fin = L.kernel(KernelRole::Finalize);
  long long batch = B;
  for (int r = 0; r < P; ++r) {
    if (rows(r) == 0)
      continue;
    void *kargs[] = {&L.params[r], &batch};
    L.launch(fin, L.elementwise(fin, B * rows(r) * H * D), 1, 1, kargs);
  }
  return L.moved;
}

int64_t LoopbackRing::backward(const std::vector<RingRankBackward> &args, void *stream) {
  const AttentionSpec &spec = attention_.spec();
  const int P = plan_.ranks;
  const int64_t B = batch_, H = spec.heads, Hk = spec.kvHeads, D = spec.headDim;
  checkRankCount(spec, "ring backward", P, args.size());
  Launch L{*this, attention_.ringModule_, attention_.ring_->functions,
           static_cast<CUstream>(stream), B, {}, {}, {}, impl_->backward};
  std::vector<ring::Grad> grads(P);
  std::vector<Layout> dqL(P), dkL(P), dvL(P);
  for (int r = 0; r < P; ++r) {
    if (!L.addRank(r, args[r].workspace.data))
      continue;
    const int64_t n = rows(r);
    const std::string pass = "ring backward, rank " + std::to_string(r);
    rt::ArgumentChecker check(pass.c_str(), spec, attention_.device());
    const RingRankBackward &a = args[r];
    L.params[r] = rankParams(check, spec, attention_.plan(), B, n, a.q, a.k, a.v, a.out, a.lse,
                             deviceMask_);
    ring::Grad &g = grads[r];
    g.doutL = check.rows("dout", a.dout, B, n, H);
    dqL[r] = check.rows("dq", a.dq, B, n, H);
    dkL[r] = check.rows("dk", a.dk, B, n, Hk);
    dvL[r] = check.rows("dv", a.dv, B, n, Hk);
    check.workspace(a.workspace, backwardWorkspaceBytes(r));
    const RankWorkspace &w = L.layout[r];
    g.dout = a.dout.data;
    g.delta = L.f32(r, w.delta);
    g.dqAcc = L.f32(r, w.dqAcc);
  }
  // The rank's own accumulators, [B, rows, kv_heads, D].
  auto ownGrad = [&](int r) {
    ring::Grad g = grads[r];
    g.dk = L.f32(r, L.layout[r].dkAcc);
    g.dv = L.f32(r, L.layout[r].dvAcc);
    g.gradL = Layout{rows(r) * Hk * D, Hk * D, D};
    return g;
  };

  rt::ContextScope scope(attention_.context());
  const size_t delta = L.kernel(KernelRole::Delta);
  for (int r = 0; r < P; ++r) {
    const int64_t n = rows(r);
    if (n == 0)
      continue;
    const RankWorkspace &w = L.layout[r];
    L.zero(r, w.dqAcc, B * n * H * D);
    L.zero(r, w.dkAcc, B * n * Hk * D);
    L.zero(r, w.dvAcc, B * n * Hk * D);
    float *deltaPtr = const_cast<float *>(grads[r].delta);
    void *dargs[] = {&L.params[r], &grads[r].dout, &grads[r].doutL, &deltaPtr};
    L.launch(delta, L.rowsGrid(delta, r), static_cast<unsigned>(H), static_cast<unsigned>(B),
             dargs);
    ring::Grad g = ownGrad(r);
    L.branches(KernelRole::DkvPass, r, L.ownBlock(r), &g);
  }
  const size_t ret = L.kernel(KernelRole::RingReturn);
  for (int step = 1; step < P; ++step) {
    std::vector<ring::Params> blocks = L.exchange(step);
    for (int r = 0; r < P; ++r) {
      const Transfer &t = schedule_.ranks[r].steps[step - 1].recv;
      if (t.peer < 0)
        continue;
      // This block's partials, then back to the sender, which adds them.
      const RankWorkspace &w = L.layout[r], &theirs = L.layout[t.peer];
      L.zero(r, w.recvDk, B * t.rows * D);
      L.zero(r, w.recvDv, B * t.rows * D);
      ring::Grad g = grads[r];
      g.dk = L.f32(r, w.recvDk);
      g.dv = L.f32(r, w.recvDv);
      g.gradL = Layout{t.rows * D, D, 0};
      L.branches(KernelRole::DkvPass, r, blocks[r], &g);
      L.copy(L.f32(t.peer, theirs.retDk), L.f32(r, w.recvDk), B * t.rows * D * 4);
      L.copy(L.f32(t.peer, theirs.retDv), L.f32(r, w.recvDv), B * t.rows * D * 4);
      const ring::Part *parts = impl_->at(impl_->send[t.peer][step - 1]);
      int numParts = impl_->send[t.peer][step - 1].count;
      long long packedRows = t.rows, batch = B;
      Layout accL{rows(t.peer) * Hk * D, Hk * D, D};
      for (int kv = 0; kv < 2; ++kv) {
        const float *src = L.f32(t.peer, kv ? theirs.retDv : theirs.retDk);
        float *acc = L.f32(t.peer, kv ? theirs.dvAcc : theirs.dkAcc);
        void *rargs[] = {&parts, &numParts, &packedRows, &L.shards[t.peer], &src, &acc, &accL,
                         &batch};
        L.launch(ret, L.elementwise(ret, B * t.rows * D), 1, 1, rargs);
      }
    }
  }
  const size_t fin = L.kernel(KernelRole::FinalizeGradients);
  for (int r = 0; r < P; ++r) {
    const int64_t n = rows(r);
    if (n == 0)
      continue;
    const RankWorkspace &w = L.layout[r];
    const float *dqAcc = L.f32(r, w.dqAcc), *dkAcc = L.f32(r, w.dkAcc),
                *dvAcc = L.f32(r, w.dvAcc);
    void *dq = args[r].dq.data, *dk = args[r].dk.data, *dv = args[r].dv.data;
    int kvHeads = static_cast<int>(Hk);
    long long batch = B;
    void *fargs[] = {&L.params[r], &dqAcc, &dq, &dqL[r], &dkAcc, &dvAcc, &dk, &dv,
                     &dkL[r], &dvL[r], &kvHeads, &batch};
    L.launch(fin, L.elementwise(fin, B * n * (H + Hk) * D), 1, 1, fargs);
  }
  return L.moved;
}

} // namespace dattn
