// LoopbackRing (include/dattn/ring_runtime.h): P ranks of a ring on one GPU.
// Everything is enqueued on one stream, step by step: at step s every rank
// packs what its send peer needs, the packed blocks are copied into the
// receivers' buffers (the transport), and every rank attends its queries to
// the block it received. Each rank's accumulators start empty (O = 0,
// LSE = -inf), take its own rows first, then one block per step, and are
// converted to O at the end.
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

/// Where a rank's buffers sit in its workspace.
struct RankWorkspace {
  int64_t oAcc = 0, recvK = 0, recvV = 0, packK = 0, packV = 0, total = 0;
};

RankWorkspace carve(int64_t batch, int64_t rows, int64_t heads, int64_t headDim,
                    int64_t elementBytes, const RankSchedule &rs) {
  RankWorkspace w;
  const int64_t recv = aligned(batch * rs.maxRecvRows * headDim * elementBytes);
  const int64_t pack = aligned(batch * rs.maxSendRows * headDim * elementBytes);
  w.oAcc = 0;
  w.recvK = aligned(batch * rows * heads * headDim * 4);
  w.recvV = w.recvK + recv;
  w.packK = w.recvV + recv;
  w.packV = w.packK + pack;
  w.total = w.packV + pack;
  return w;
}

} // namespace

/// The part lists of every rank and step, on the device.
struct LoopbackRing::Impl {
  struct Span {
    int64_t first = 0; ///< index of the first Part in the device array
    int count = 0;
  };
  CUdeviceptr parts = 0;
  std::vector<Span> local;                    ///< [rank]: its own rows, per kv head
  std::vector<std::vector<Span>> recv, send;  ///< [rank][step - 1]
  std::vector<RankWorkspace> workspace;       ///< [rank]

  const ring::Part *at(const Span &s) const {
    return reinterpret_cast<const ring::Part *>(parts) + s.first;
  }
  ~Impl() {
    if (parts)
      rt::driver().memFree(parts);
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
    impl_->workspace.push_back(carve(batch, rows(r), spec.heads, spec.headDim,
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

int64_t LoopbackRing::workspaceBytes(int rank) const { return impl_->workspace.at(rank).total; }

int64_t LoopbackRing::forward(const std::vector<RingRankForward> &args, void *streamPtr) {
  const AttentionSpec &spec = attention_.spec();
  const AttentionPlan &plan = attention_.plan();
  const EmittedModule &mod = attention_.ringModule_;
  const int P = plan_.ranks;
  const int64_t B = batch_, H = spec.heads, Hk = spec.kvHeads, D = spec.headDim;
  if (static_cast<int>(args.size()) != P)
    throw ArgumentError("ring forward (attention '" + spec.name + "'): " + std::to_string(P) +
                        " ranks, but tensors for " + std::to_string(args.size()));

  // Each rank's launch parameters, validated.
  std::vector<fwd::Params> params(P);
  std::vector<ring::Params> shards(P);
  for (int r = 0; r < P; ++r) {
    const std::string pass = "ring forward, rank " + std::to_string(r);
    rt::ArgumentChecker check(pass.c_str(), spec, attention_.device());
    const RingRankForward &a = args[r];
    const int64_t n = rows(r);
    fwd::Params &p = params[r];
    p = fwd::Params{};
    if (n == 0) // more ranks than rows: this one holds nothing and does nothing
      continue;
    p.qL = check.rows("q", a.q, B, n, H);
    p.kL = check.rows("k", a.k, B, n, Hk);
    p.vL = check.rows("v", a.v, B, n, Hk);
    p.oL = check.rows("out", a.out, B, n, H);
    check.lse("lse", a.lse, B, n);
    check.workspace(a.workspace, workspaceBytes(r));
    p.q = a.q.data;
    p.k = a.k.data;
    p.v = a.v.data;
    p.o = a.out.data;
    p.lse = static_cast<float *>(a.lse.data);
    p.oAcc = static_cast<float *>(a.workspace.data);
    p.seqLen = n;
    p.heads = static_cast<int>(H);
    p.groupSize = static_cast<int>(H / Hk);
    p.scale = static_cast<float>(plan.scale);
    p.maskRows = reinterpret_cast<const long long *>(deviceMask_.rowOffsets);
    p.maskCols = reinterpret_cast<const long long *>(deviceMask_.colIndices);
    ring::Params &s = shards[r];
    s = ring::Params{};
    s.globalN = seqLen_;
    const std::vector<RowRange> &shard = plan_.rankPlans[r].shard;
    for (size_t x = 0; x < shard.size() && x < 2; ++x) {
      s.qBegin[x] = shard[x].begin;
      s.qEnd[x] = shard[x].end;
    }
  }

  rt::ContextScope scope(attention_.context());
  const rt::Driver &d = rt::driver();
  CUstream stream = static_cast<CUstream>(streamPtr);
  auto fn = [&](size_t x) { return attention_.ring_->functions[x]; };
  auto base = [&](int r) { return static_cast<char *>(args[r].workspace.data); };
  long long batch = B;

  // Attends rank r's queries to the keys of `block` (every branch).
  auto attend = [&](int r, ring::Params block) {
    for (size_t x = 0; x < mod.kernels.size(); ++x) {
      const KernelInfo &ki = mod.kernels[x];
      if (ki.role != KernelRole::Branch || params[r].seqLen == 0)
        continue;
      const BranchPlan &b = plan.branches[ki.branch];
      void *kargs[] = {&params[r], &block};
      const unsigned gx =
          static_cast<unsigned>((params[r].seqLen + ki.rowsPerCta - 1) / ki.rowsPerCta);
      rt::launchKernel(ki, fn(x), gx, static_cast<unsigned>(b.heads.size()),
                       static_cast<unsigned>(B), stream, kargs, "ring forward: ");
    }
  };
  auto kernelOf = [&](KernelRole role) {
    for (size_t x = 0; x < mod.kernels.size(); ++x)
      if (mod.kernels[x].role == role)
        return x;
    throw Error("ring module without its " + std::to_string(static_cast<int>(role)) + " kernel");
  };
  auto elementwise = [&](const KernelInfo &ki, int64_t count) {
    return static_cast<unsigned>(
        std::clamp<int64_t>((count + ki.threads - 1) / ki.threads, 1, int64_t(65535) * 16));
  };

  // Step 0: empty accumulators, then each rank's own rows.
  for (int r = 0; r < P; ++r) {
    const int64_t n = params[r].seqLen;
    if (n == 0)
      continue;
    rt::check(d.memsetD32Async(reinterpret_cast<CUdeviceptr>(params[r].oAcc), 0u,
                               static_cast<size_t>(B * n * H * D), stream),
              "ring: clearing the O accumulator");
    rt::check(d.memsetD32Async(reinterpret_cast<CUdeviceptr>(params[r].lse), 0xff800000u,
                               static_cast<size_t>(B * H * n), stream),
              "ring: setting LSE to -inf");
    ring::Params own = shards[r];
    own.parts = impl_->at(impl_->local[r]);
    own.numParts = impl_->local[r].count;
    own.keys = params[r].k;
    own.values = params[r].v;
    own.keyL = params[r].kL;
    own.valueL = params[r].vL;
    attend(r, own);
  }

  // Steps 1 .. P-1: pack, move, attend.
  const size_t pack = kernelOf(KernelRole::RingPack);
  const int64_t rowBytes = D * plan_.elementBytes;
  int64_t moved = 0;
  for (int step = 1; step < P; ++step) {
    for (int r = 0; r < P; ++r) {
      const Transfer &t = schedule_.ranks[r].steps[step - 1].send;
      if (t.peer < 0)
        continue;
      const RankWorkspace &w = impl_->workspace[r];
      const ring::Part *parts = impl_->at(impl_->send[r][step - 1]);
      int numParts = impl_->send[r][step - 1].count;
      long long packedRows = t.rows;
      const KernelInfo &ki = mod.kernels[pack];
      const unsigned gx = elementwise(ki, B * t.rows * D / 8);
      for (int kv = 0; kv < 2; ++kv) {
        const void *src = kv == 0 ? params[r].k : params[r].v;
        Layout srcL = kv == 0 ? params[r].kL : params[r].vL;
        void *dst = base(r) + (kv == 0 ? w.packK : w.packV);
        void *kargs[] = {&parts, &numParts, &packedRows, &shards[r], &src, &srcL, &dst, &batch};
        rt::launchKernel(ki, fn(pack), gx, 1, 1, stream, kargs, "ring forward: packing: ");
      }
    }
    for (int r = 0; r < P; ++r) {
      const Transfer &t = schedule_.ranks[r].steps[step - 1].recv;
      if (t.peer < 0)
        continue;
      const RankWorkspace &mine = impl_->workspace[r], &theirs = impl_->workspace[t.peer];
      const size_t bytes = static_cast<size_t>(B * t.rows * rowBytes);
      for (int kv = 0; kv < 2; ++kv)
        rt::check(d.memcpyDtoDAsync(
                      reinterpret_cast<CUdeviceptr>(base(r) + (kv ? mine.recvV : mine.recvK)),
                      reinterpret_cast<CUdeviceptr>(base(t.peer) +
                                                    (kv ? theirs.packV : theirs.packK)),
                      bytes, stream),
                  "ring: copying a block between ranks");
      moved += 2 * static_cast<int64_t>(bytes);
      ring::Params block = shards[r];
      block.parts = impl_->at(impl_->recv[r][step - 1]);
      block.numParts = impl_->recv[r][step - 1].count;
      block.keys = base(r) + mine.recvK;
      block.values = base(r) + mine.recvV;
      block.keyL = block.valueL = Layout{t.rows * D, D, 0};
      attend(r, block);
    }
  }

  // The accumulators into O.
  const size_t fin = kernelOf(KernelRole::Finalize);
  for (int r = 0; r < P; ++r) {
    if (params[r].seqLen == 0)
      continue;
    void *kargs[] = {&params[r], &batch};
    rt::launchKernel(mod.kernels[fin], fn(fin),
                     elementwise(mod.kernels[fin], B * params[r].seqLen * H * D), 1, 1, stream,
                     kargs, "ring forward: ");
  }
  return moved;
}

} // namespace dattn
