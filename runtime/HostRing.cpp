// HostRing (include/dattn/host.h): a LoopbackRing fed from host arrays of
// the whole sequence, for tools and tests.
#include "Context.h"

#include "dattn/error.h"
#include "dattn/host.h"

#include <algorithm>

namespace dattn {

namespace {

/// Rows of a [B, N, width] host tensor in the order of `shard`.
std::vector<float> shardRows(const std::vector<float> &full, int64_t batch, int64_t n,
                             int64_t width, const std::vector<RowRange> &shard) {
  std::vector<float> out;
  for (int64_t b = 0; b < batch; ++b)
    for (const RowRange &r : shard)
      out.insert(out.end(), full.begin() + (b * n + r.begin) * width,
                 full.begin() + (b * n + r.end) * width);
  return out;
}

constexpr uint32_t kNaN32 = 0xffffffffu; // NaN in every dtype

} // namespace

HostRing::HostRing(CompiledAttention &attn, int ranks, int64_t batch, int64_t n, const float *q,
                   const float *k, const float *v, const BlockMask *mask)
    : attn_(attn), batch_(batch), seqLen_(n) {
  rt::ContextScope scope(attn.context());
  const AttentionSpec &s = attn.spec();
  const DType t = s.dtype;
  const int64_t H = s.heads, Hk = s.kvHeads, D = s.headDim;
  // The inputs rounded once, as every rank will see them.
  const std::vector<char> qe = encode(q, batch * n * H * D, t), ke = encode(k, batch * n * Hk * D, t),
                          ve = encode(v, batch * n * Hk * D, t);
  q_.resize(batch * n * H * D);
  k_.resize(batch * n * Hk * D);
  v_.resize(batch * n * Hk * D);
  decode(qe.data(), q_.size(), t, q_.data());
  decode(ke.data(), k_.size(), t, k_.data());
  decode(ve.data(), v_.size(), t, v_.data());
  if (mask)
    mask_ = std::make_unique<DeviceBlockMaskBuffer>(*mask, n);
  ring_ = std::make_unique<LoopbackRing>(attn, batch, n, ranks, mask,
                                         mask_ ? mask_->view() : DeviceBlockMask{});
  const int P = ring_->ranks();
  ranks_.resize(P);
  args_.resize(P);
  for (int r = 0; r < P; ++r) {
    const int64_t rows = ring_->rows(r);
    const std::vector<RowRange> &shard = ring_->plan().rankPlans[r].shard;
    Rank &x = ranks_[r];
    const std::vector<float> mq = shardRows(q_, batch, n, H * D, shard),
                             mk = shardRows(k_, batch, n, Hk * D, shard),
                             mv = shardRows(v_, batch, n, Hk * D, shard);
    // At least 16 bytes each: a rank may hold no rows (more ranks than rows).
    const size_t elem = t == DType::F32 ? 4 : 2;
    x.q = std::make_unique<DeviceBuffer>(std::max<size_t>(16, mq.size() * elem));
    x.k = std::make_unique<DeviceBuffer>(std::max<size_t>(16, mk.size() * elem));
    x.v = std::make_unique<DeviceBuffer>(std::max<size_t>(16, mv.size() * elem));
    if (rows > 0) {
      const std::vector<char> eq = encode(mq.data(), mq.size(), t),
                              ek = encode(mk.data(), mk.size(), t),
                              ev = encode(mv.data(), mv.size(), t);
      x.q->upload(eq.data(), eq.size());
      x.k->upload(ek.data(), ek.size());
      x.v->upload(ev.data(), ev.size());
    }
    x.out = std::make_unique<DeviceBuffer>(std::max<size_t>(16, x.q->bytes()));
    x.lse = std::make_unique<DeviceBuffer>(std::max<size_t>(16, batch * H * rows * 4));
    x.workspace = std::make_unique<DeviceBuffer>(std::max<int64_t>(16, ring_->workspaceBytes(r)));
    if (rows == 0)
      continue; // no tensors: the ring gives this rank nothing to do
    RingRankForward &a = args_[r];
    a.q = TensorDesc::contiguous(x.q->data(), t, {batch, rows, H, D});
    a.k = TensorDesc::contiguous(x.k->data(), t, {batch, rows, Hk, D});
    a.v = TensorDesc::contiguous(x.v->data(), t, {batch, rows, Hk, D});
    a.out = TensorDesc::contiguous(x.out->data(), t, {batch, rows, H, D});
    a.lse = TensorDesc::contiguous(x.lse->data(), DType::F32, {batch, H, rows});
    a.workspace = x.workspace->workspace();
  }
}

HostRing::~HostRing() {
  try {
    rt::ContextScope scope(attn_.context());
    ranks_.clear();
    ring_.reset();
    mask_.reset();
  } catch (...) {
  }
}

void HostRing::run() {
  rt::ContextScope scope(attn_.context());
  for (Rank &x : ranks_) {
    x.out->fill32(kNaN32);
    x.lse->fill32(kNaN32);
    x.workspace->fill32(kNaN32);
  }
  rerun();
}

void HostRing::rerun() {
  moved_ = ring_->forward(args_);
}

int64_t HostRing::rankBytes(int rank) const {
  const Rank &x = ranks_.at(rank);
  return static_cast<int64_t>(x.q->bytes() + x.k->bytes() + x.v->bytes() + x.out->bytes() +
                              x.lse->bytes() + x.workspace->bytes());
}

void HostRing::read(std::vector<float> &out, std::vector<float> &lse) {
  rt::ContextScope scope(attn_.context());
  synchronize("running the ring of attention '" + attn_.spec().name + "'");
  const AttentionSpec &s = attn_.spec();
  const int64_t H = s.heads, D = s.headDim, B = batch_, n = seqLen_;
  out.assign(q_.size(), 0.f);
  lse.assign(B * H * n, 0.f);
  for (int r = 0; r < ring_->ranks(); ++r) {
    const int64_t rows = ring_->rows(r);
    if (rows == 0)
      continue;
    std::vector<char> raw(B * rows * H * D * (s.dtype == DType::F32 ? 4 : 2));
    ranks_[r].out->download(raw.data(), raw.size());
    std::vector<float> o(B * rows * H * D), l(B * H * rows);
    decode(raw.data(), o.size(), s.dtype, o.data());
    ranks_[r].lse->download(l.data(), l.size() * 4);
    int64_t local = 0;
    for (const RowRange &range : ring_->plan().rankPlans[r].shard)
      for (int64_t i = range.begin; i < range.end; ++i, ++local)
        for (int64_t b = 0; b < B; ++b) {
          std::copy_n(&o[(b * rows + local) * H * D], H * D, &out[(b * n + i) * H * D]);
          for (int64_t h = 0; h < H; ++h)
            lse[(b * H + h) * n + i] = l[(b * H + h) * rows + local];
        }
  }
}

} // namespace dattn
