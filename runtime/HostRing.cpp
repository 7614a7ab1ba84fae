// HostRing (include/dattn/host.h): a LoopbackRing fed from host arrays of
// the whole sequence, for tools and tests.
#include "Context.h"

#include "dattn/error.h"
#include "dattn/host.h"

#include <algorithm>

namespace dattn {

namespace {

constexpr uint32_t kNaN32 = 0xffffffffu; // NaN in every dtype

size_t elementBytes(DType t) { return t == DType::F32 ? 4 : 2; }

/// A buffer of at least 16 bytes (a rank may hold no rows) holding `values`
/// encoded to `t`.
std::unique_ptr<DeviceBuffer> deviceCopy(const std::vector<float> &values, DType t) {
  auto buf = std::make_unique<DeviceBuffer>(std::max<size_t>(16, values.size() * elementBytes(t)));
  if (!values.empty()) {
    const std::vector<char> bytes = encode(values.data(), values.size(), t);
    buf->upload(bytes.data(), bytes.size());
  }
  return buf;
}

std::vector<float> rounded(const float *x, size_t count, DType t) {
  const std::vector<char> bytes = encode(x, count, t);
  std::vector<float> out(count);
  decode(bytes.data(), count, t, out.data());
  return out;
}

} // namespace

HostRing::HostRing(CompiledAttention &attn, int ranks, int64_t batch, int64_t n, const float *q,
                   const float *k, const float *v, const BlockMask *mask)
    : attn_(attn), batch_(batch), seqLen_(n) {
  rt::ContextScope scope(attn.context());
  const AttentionSpec &s = attn.spec();
  const DType t = s.dtype;
  const int64_t H = s.heads, Hk = s.kvHeads, D = s.headDim;
  q_ = rounded(q, batch * n * H * D, t);
  k_ = rounded(k, batch * n * Hk * D, t);
  v_ = rounded(v, batch * n * Hk * D, t);
  if (mask)
    mask_ = std::make_unique<DeviceBlockMaskBuffer>(*mask, n);
  ring_ = std::make_unique<LoopbackRing>(attn, batch, n, ranks, mask,
                                         mask_ ? mask_->view() : DeviceBlockMask{});
  const int P = ring_->ranks();
  ranks_.resize(P);
  args_.resize(P);
  for (int r = 0; r < P; ++r) {
    const int64_t rows = ring_->rows(r);
    Rank &x = ranks_[r];
    x.q = deviceCopy(rowsOf(q_, H * D, r), t);
    x.k = deviceCopy(rowsOf(k_, Hk * D, r), t);
    x.v = deviceCopy(rowsOf(v_, Hk * D, r), t);
    x.out = std::make_unique<DeviceBuffer>(x.q->bytes());
    x.lse = std::make_unique<DeviceBuffer>(std::max<size_t>(16, batch * H * rows * 4));
    x.workspace = std::make_unique<DeviceBuffer>(std::max<int64_t>(
        16, std::max(ring_->workspaceBytes(r), ring_->backwardWorkspaceBytes(r))));
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

std::vector<float> HostRing::rowsOf(const std::vector<float> &full, int64_t width,
                                    int rank) const {
  std::vector<float> out;
  for (int64_t b = 0; b < batch_; ++b)
    for (const RowRange &r : ring_->plan().rankPlans[rank].shard)
      out.insert(out.end(), full.begin() + (b * seqLen_ + r.begin) * width,
                 full.begin() + (b * seqLen_ + r.end) * width);
  return out;
}

void HostRing::putRows(const DeviceBuffer &buffer, int64_t width, int rank,
                       std::vector<float> &full) const {
  const int64_t rows = ring_->rows(rank);
  const DType t = attn_.spec().dtype;
  std::vector<char> raw(batch_ * rows * width * elementBytes(t));
  buffer.download(raw.data(), raw.size());
  std::vector<float> mine(batch_ * rows * width);
  decode(raw.data(), mine.size(), t, mine.data());
  for (int64_t b = 0; b < batch_; ++b) {
    int64_t local = 0;
    for (const RowRange &r : ring_->plan().rankPlans[rank].shard)
      for (int64_t i = r.begin; i < r.end; ++i, ++local)
        std::copy_n(&mine[(b * rows + local) * width], width, &full[(b * seqLen_ + i) * width]);
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

void HostRing::rerun() { moved_ = ring_->forward(args_); }

int64_t HostRing::rankBytes(int rank) const {
  const Rank &x = ranks_.at(rank);
  int64_t bytes = 0;
  for (const auto *b : {&x.q, &x.k, &x.v, &x.out, &x.lse, &x.workspace, &x.dout, &x.dq, &x.dk,
                        &x.dv})
    bytes += *b ? static_cast<int64_t>((*b)->bytes()) : 0;
  return bytes;
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
    putRows(*ranks_[r].out, H * D, r, out);
    std::vector<float> l(B * H * rows); // [B, H, rows]: rows are the last index
    ranks_[r].lse->download(l.data(), l.size() * 4);
    int64_t local = 0;
    for (const RowRange &range : ring_->plan().rankPlans[r].shard)
      for (int64_t i = range.begin; i < range.end; ++i, ++local)
        for (int64_t bh = 0; bh < B * H; ++bh)
          lse[bh * n + i] = l[bh * rows + local];
  }
}

void HostRing::backward(const float *dout) {
  rt::ContextScope scope(attn_.context());
  const AttentionSpec &s = attn_.spec();
  const DType t = s.dtype;
  const int64_t H = s.heads, Hk = s.kvHeads, D = s.headDim, B = batch_;
  if (bargs_.empty()) {
    dout_ = rounded(dout, q_.size(), t);
    bargs_.resize(ranks_.size());
    for (size_t r = 0; r < ranks_.size(); ++r) {
      Rank &x = ranks_[r];
      const int64_t rows = ring_->rows(static_cast<int>(r));
      x.dout = deviceCopy(rowsOf(dout_, H * D, static_cast<int>(r)), t);
      x.dq = std::make_unique<DeviceBuffer>(x.q->bytes());
      x.dk = std::make_unique<DeviceBuffer>(x.k->bytes());
      x.dv = std::make_unique<DeviceBuffer>(x.v->bytes());
      if (rows == 0)
        continue;
      RingRankBackward &a = bargs_[r];
      a.q = args_[r].q;
      a.k = args_[r].k;
      a.v = args_[r].v;
      a.out = args_[r].out;
      a.lse = args_[r].lse;
      a.dout = TensorDesc::contiguous(x.dout->data(), t, {B, rows, H, D});
      a.dq = TensorDesc::contiguous(x.dq->data(), t, {B, rows, H, D});
      a.dk = TensorDesc::contiguous(x.dk->data(), t, {B, rows, Hk, D});
      a.dv = TensorDesc::contiguous(x.dv->data(), t, {B, rows, Hk, D});
      a.workspace = x.workspace->workspace();
    }
  }
  for (Rank &x : ranks_) {
    x.dq->fill32(kNaN32);
    x.dk->fill32(kNaN32);
    x.dv->fill32(kNaN32);
  }
  rebackward();
}

void HostRing::rebackward() {
  if (bargs_.empty())
    throw Error("HostRing: rebackward() before backward()");
  moved_ = ring_->backward(bargs_);
}

void HostRing::readGradients(std::vector<float> &dq, std::vector<float> &dk,
                             std::vector<float> &dv) {
  rt::ContextScope scope(attn_.context());
  synchronize("running the ring's backward of attention '" + attn_.spec().name + "'");
  const AttentionSpec &s = attn_.spec();
  const int64_t H = s.heads, Hk = s.kvHeads, D = s.headDim;
  dq.assign(q_.size(), 0.f);
  dk.assign(k_.size(), 0.f);
  dv.assign(v_.size(), 0.f);
  for (int r = 0; r < ring_->ranks(); ++r) {
    if (ring_->rows(r) == 0)
      continue;
    putRows(*ranks_[r].dq, H * D, r, dq);
    putRows(*ranks_[r].dk, Hk * D, r, dk);
    putRows(*ranks_[r].dv, Hk * D, r, dv);
  }
}

} // namespace dattn
