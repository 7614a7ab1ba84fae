// HostRing (include/dattn/host.h): a LoopbackRing fed from host arrays of
// the whole sequence, for tools and tests.
#include "Context.h"

#include "dattn/error.h"
#include "dattn/host.h"

#include <algorithm>
#include <limits>

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
  if (mask)
    mask_ = std::make_unique<DeviceBlockMaskBuffer>(*mask, n);
  loopback_ = std::make_unique<LoopbackRing>(attn, batch, n, ranks, mask,
                                             mask_ ? mask_->view() : DeviceBlockMask{});
  ranks_.resize(loopback_->ranks());
  for (Rank &x : ranks_)
    x.context = attn.context();
  setUp(q, k, v);
}

HostRing::HostRing(std::vector<RingMember> members, int64_t batch, int64_t n, const float *q,
                   const float *k, const float *v, const BlockMask *mask)
    : attn_(*members.at(0).attention), batch_(batch), seqLen_(n) {
  std::vector<std::unique_ptr<DeviceBlockMaskBuffer>> masks;
  for (RingMember &m : members)
    if (mask) {
      rt::ContextScope scope(m.attention->context());
      masks.push_back(std::make_unique<DeviceBlockMaskBuffer>(*mask, n));
      m.mask = masks.back()->view();
    }
  nccl_ = std::make_unique<NcclRing>(members, batch, n, mask);
  ranks_.resize(nccl_->plan().ranks);
  for (int m = 0; m < nccl_->members(); ++m) {
    Rank &x = ranks_[nccl_->rank(m)];
    x.context = members[m].attention->context();
    x.member = m;
    if (mask)
      x.mask = std::move(masks[m]);
  }
  setUp(q, k, v);
}

void HostRing::setUp(const float *q, const float *k, const float *v) {
  const AttentionSpec &s = attn_.spec();
  const DType t = s.dtype;
  const int64_t H = s.heads, Hk = s.kvHeads, D = s.headDim, n = seqLen_;
  q_ = rounded(q, batch_ * n * H * D, t);
  k_ = rounded(k, batch_ * n * Hk * D, t);
  v_ = rounded(v, batch_ * n * Hk * D, t);
  args_.resize(nccl_ ? nccl_->members() : ranks());
  for (int r = 0; r < ranks(); ++r)
    if (holds(r))
      allocate(r);
}

/// Rank r's inputs, outputs and workspace on its GPU, and its arguments.
void HostRing::allocate(int r) {
  const AttentionSpec &s = attn_.spec();
  const DType t = s.dtype;
  const int64_t H = s.heads, Hk = s.kvHeads, D = s.headDim, B = batch_, rows = this->rows(r);
  Rank &x = ranks_[r];
  rt::ContextScope scope(x.context);
  x.q = deviceCopy(rowsOf(q_, H * D, r), t);
  x.k = deviceCopy(rowsOf(k_, Hk * D, r), t);
  x.v = deviceCopy(rowsOf(v_, Hk * D, r), t);
  x.out = std::make_unique<DeviceBuffer>(x.q->bytes());
  x.lse = std::make_unique<DeviceBuffer>(std::max<size_t>(16, B * H * rows * 4));
  x.workspace = std::make_unique<DeviceBuffer>(
      std::max<int64_t>(16, std::max(workspaceBytes(r), backwardWorkspaceBytes(r))));
  if (rows == 0)
    return; // no tensors: the ring gives this rank nothing to do
  RingRankForward &a = args_[nccl_ ? x.member : r];
  a.q = TensorDesc::contiguous(x.q->data(), t, {B, rows, H, D});
  a.k = TensorDesc::contiguous(x.k->data(), t, {B, rows, Hk, D});
  a.v = TensorDesc::contiguous(x.v->data(), t, {B, rows, Hk, D});
  a.out = TensorDesc::contiguous(x.out->data(), t, {B, rows, H, D});
  a.lse = TensorDesc::contiguous(x.lse->data(), DType::F32, {B, H, rows});
  a.workspace = x.workspace->workspace();
}

HostRing::~HostRing() {
  try {
    for (Rank &x : ranks_)
      if (x.context) {
        rt::ContextScope scope(x.context);
        x = Rank{};
      }
    rt::ContextScope scope(attn_.context());
    loopback_.reset();
    nccl_.reset();
    mask_.reset();
  } catch (...) {
  }
}

const RingPlan &HostRing::plan() const { return nccl_ ? nccl_->plan() : loopback_->plan(); }

const RingSchedule &HostRing::schedule() const {
  return nccl_ ? nccl_->schedule() : loopback_->schedule();
}

int64_t HostRing::rows(int rank) const {
  int64_t n = 0;
  for (const RowRange &r : plan().rankPlans.at(rank).shard)
    n += r.end - r.begin;
  return n;
}

int64_t HostRing::workspaceBytes(int rank) const {
  return nccl_ ? nccl_->workspaceBytes(ranks_.at(rank).member) : loopback_->workspaceBytes(rank);
}

int64_t HostRing::backwardWorkspaceBytes(int rank) const {
  return nccl_ ? nccl_->backwardWorkspaceBytes(ranks_.at(rank).member)
               : loopback_->backwardWorkspaceBytes(rank);
}

std::vector<int64_t> HostRing::heldRows() const {
  std::vector<int64_t> out;
  for (int r = 0; r < ranks(); ++r)
    if (holds(r))
      for (const RowRange &range : plan().rankPlans[r].shard)
        for (int64_t i = range.begin; i < range.end; ++i)
          out.push_back(i);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<float> HostRing::rowsOf(const std::vector<float> &full, int64_t width,
                                    int rank) const {
  std::vector<float> out;
  for (int64_t b = 0; b < batch_; ++b)
    for (const RowRange &r : plan().rankPlans[rank].shard)
      out.insert(out.end(), full.begin() + (b * seqLen_ + r.begin) * width,
                 full.begin() + (b * seqLen_ + r.end) * width);
  return out;
}

void HostRing::putRows(const DeviceBuffer &buffer, int64_t width, int rank,
                       std::vector<float> &full) const {
  const int64_t rows = this->rows(rank);
  const DType t = attn_.spec().dtype;
  std::vector<char> raw(batch_ * rows * width * elementBytes(t));
  buffer.download(raw.data(), raw.size());
  std::vector<float> mine(batch_ * rows * width);
  decode(raw.data(), mine.size(), t, mine.data());
  for (int64_t b = 0; b < batch_; ++b) {
    int64_t local = 0;
    for (const RowRange &r : plan().rankPlans[rank].shard)
      for (int64_t i = r.begin; i < r.end; ++i, ++local)
        std::copy_n(&mine[(b * rows + local) * width], width, &full[(b * seqLen_ + i) * width]);
  }
}

void HostRing::synchronizeAll(const std::string &what) const {
  for (const Rank &x : ranks_)
    if (x.context) {
      rt::ContextScope scope(x.context);
      synchronize(what);
    }
}

void HostRing::run() {
  for (Rank &x : ranks_)
    if (x.context) {
      rt::ContextScope scope(x.context);
      x.out->fill32(kNaN32);
      x.lse->fill32(kNaN32);
      x.workspace->fill32(kNaN32);
    }
  rerun();
}

void HostRing::rerun() {
  if (nccl_) {
    moved_ = nccl_->forward(args_);
  } else {
    rt::ContextScope scope(attn_.context());
    moved_ = loopback_->forward(args_);
  }
}

std::vector<double> HostRing::rankMilliseconds(bool backward, int iters) {
  if (!loopback_)
    throw Error("HostRing::rankMilliseconds: a loopback ring's (an NCCL ring's ranks run on "
                "their own GPUs: time the whole run)");
  if (backward && bargs_.empty())
    throw Error("HostRing::rankMilliseconds: backward before backward()");
  std::vector<std::vector<double>> samples(loopback_->ranks());
  loopback_->setRankTiming(true);
  try {
    for (int i = 0; i < std::max(iters, 1); ++i) {
      // Poisoned first, as every checked run (the events time only the
      // ranks' work): what the last pass wrote can be read back and checked.
      if (backward)
        this->backward(dout_.data());
      else
        run();
      const std::vector<double> ms = loopback_->rankMilliseconds();
      for (size_t r = 0; r < ms.size(); ++r)
        samples[r].push_back(ms[r]);
    }
  } catch (...) {
    loopback_->setRankTiming(false);
    throw;
  }
  loopback_->setRankTiming(false);
  std::vector<double> out;
  for (std::vector<double> &x : samples) {
    std::sort(x.begin(), x.end());
    out.push_back(x[x.size() / 2]);
  }
  return out;
}

int64_t HostRing::rankBytes(int rank) const {
  const Rank &x = ranks_.at(rank);
  int64_t bytes = 0;
  for (const auto *b : {&x.q, &x.k, &x.v, &x.out, &x.lse, &x.workspace, &x.dout, &x.dq, &x.dk,
                        &x.dv})
    bytes += *b ? static_cast<int64_t>((*b)->bytes()) : 0;
  return bytes;
}

void HostRing::read(std::vector<float> &out, std::vector<float> &lse) {
  synchronizeAll("running the ring of attention '" + attn_.spec().name + "'");
  const AttentionSpec &s = attn_.spec();
  const int64_t H = s.heads, D = s.headDim, B = batch_, n = seqLen_;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  out.assign(q_.size(), nan);
  lse.assign(B * H * n, nan);
  for (int r = 0; r < ranks(); ++r) {
    const int64_t rows = this->rows(r);
    if (rows == 0 || !holds(r))
      continue;
    rt::ContextScope scope(ranks_[r].context);
    putRows(*ranks_[r].out, H * D, r, out);
    std::vector<float> l(B * H * rows); // [B, H, rows]: rows are the last index
    ranks_[r].lse->download(l.data(), l.size() * 4);
    int64_t local = 0;
    for (const RowRange &range : plan().rankPlans[r].shard)
      for (int64_t i = range.begin; i < range.end; ++i, ++local)
        for (int64_t bh = 0; bh < B * H; ++bh)
          lse[bh * n + i] = l[bh * rows + local];
  }
}

void HostRing::backward(const float *dout) {
  const AttentionSpec &s = attn_.spec();
  const DType t = s.dtype;
  const int64_t H = s.heads, Hk = s.kvHeads, D = s.headDim, B = batch_;
  if (bargs_.empty()) {
    dout_ = rounded(dout, q_.size(), t);
    bargs_.resize(args_.size());
    for (int r = 0; r < ranks(); ++r) {
      if (!holds(r))
        continue;
      Rank &x = ranks_[r];
      rt::ContextScope scope(x.context);
      const int64_t rows = this->rows(r);
      x.dout = deviceCopy(rowsOf(dout_, H * D, r), t);
      x.dq = std::make_unique<DeviceBuffer>(x.q->bytes());
      x.dk = std::make_unique<DeviceBuffer>(x.k->bytes());
      x.dv = std::make_unique<DeviceBuffer>(x.v->bytes());
      if (rows == 0)
        continue;
      const int at = nccl_ ? x.member : r;
      RingRankBackward &a = bargs_[at];
      a.q = args_[at].q;
      a.k = args_[at].k;
      a.v = args_[at].v;
      a.out = args_[at].out;
      a.lse = args_[at].lse;
      a.dout = TensorDesc::contiguous(x.dout->data(), t, {B, rows, H, D});
      a.dq = TensorDesc::contiguous(x.dq->data(), t, {B, rows, H, D});
      a.dk = TensorDesc::contiguous(x.dk->data(), t, {B, rows, Hk, D});
      a.dv = TensorDesc::contiguous(x.dv->data(), t, {B, rows, Hk, D});
      a.workspace = x.workspace->workspace();
    }
  }
  for (Rank &x : ranks_)
    if (x.context) {
      rt::ContextScope scope(x.context);
      x.dq->fill32(kNaN32);
      x.dk->fill32(kNaN32);
      x.dv->fill32(kNaN32);
    }
  rebackward();
}

void HostRing::rebackward() {
  if (bargs_.empty())
    throw Error("HostRing: rebackward() before backward()");
  if (nccl_) {
    moved_ = nccl_->backward(bargs_);
  } else {
    rt::ContextScope scope(attn_.context());
    moved_ = loopback_->backward(bargs_);
  }
}

void HostRing::readGradients(std::vector<float> &dq, std::vector<float> &dk,
                             std::vector<float> &dv) {
  synchronizeAll("running the ring's backward of attention '" + attn_.spec().name + "'");
  const AttentionSpec &s = attn_.spec();
  const int64_t H = s.heads, Hk = s.kvHeads, D = s.headDim;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  dq.assign(q_.size(), nan);
  dk.assign(k_.size(), nan);
  dv.assign(v_.size(), nan);
  for (int r = 0; r < ranks(); ++r) {
    if (rows(r) == 0 || !holds(r))
      continue;
    rt::ContextScope scope(ranks_[r].context);
    putRows(*ranks_[r].dq, H * D, r, dq);
    putRows(*ranks_[r].dk, Hk * D, r, dk);
    putRows(*ranks_[r].dv, Hk * D, r, dv);
  }
}

} // namespace dattn
