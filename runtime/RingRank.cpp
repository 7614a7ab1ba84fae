// RankRun (RingRank.h): one rank's work of each ring step, enqueued on its
// stream. The kernels are the ring module's (templates/dattn/ring.cuh), by
// role: Init/Branch/Finalize forward; Delta/DkvPass/RingReturn/
// RingStagedPartials/FinalizeGradients backward; RingPack, RingUnpack both.
#include "RingRank.h"

#include "Context.h"
#include "Launch.h"
#include "Libraries.h"
#include "ModuleLoader.h"
#include "TensorMaps.h"
#include "Validate.h"

#include "dattn/error.h"

#include <algorithm>

namespace dattn::rt {

namespace {

/// A shard's rows as parts: one per kv head and range, numbered locally.
std::vector<PackedPart> shardParts(const std::vector<RowRange> &shard, int kvHeads) {
  std::vector<PackedPart> out;
  for (int kv = 0; kv < kvHeads; ++kv) {
    int64_t local = 0;
    for (const RowRange &range : shard) {
      out.push_back({kv, {range.begin, 1, range.end - range.begin}, local});
      local += range.end - range.begin;
    }
  }
  return out;
}

ring::Params shardParams(const std::vector<RowRange> &shard, int64_t n) {
  ring::Params p{};
  p.globalN = n;
  for (size_t x = 0; x < shard.size() && x < 2; ++x) {
    p.qBegin[x] = shard[x].begin;
    p.qEnd[x] = shard[x].end;
  }
  return p;
}

} // namespace

RankRun::RankRun(CompiledAttention &attention, const RingPlan &plan,
                 const RingSchedule &schedule, int rank, int64_t batch, DeviceBlockMask mask)
    : attention_(attention), schedule_(schedule.ranks.at(rank)), rank_(rank), batch_(batch),
      rows_(0), headDim_(plan.headDim), elementBytes_(plan.elementBytes), mask_(mask) {
  const AttentionSpec &spec = attention.spec();
  const std::vector<RowRange> &shard = plan.rankPlans.at(rank).shard;
  shard_ = shardParams(shard, plan.seqLen);
  for (const RowRange &range : shard)
    rows_ += range.end - range.begin;
  attention.prepareRing();
  bool stridedMma = false;
  for (const KernelInfo &k : attention.ringModule_.kernels)
    stridedMma = stridedMma || (k.role == KernelRole::Branch && readsStaged(k));
  for (const RingStep &st : schedule_.steps) {
    const bool staged = stridedMma && fragmented(st.recv);
    staged_.push_back(staged);
    const std::vector<RowRange> &sender =
        staged ? plan.rankPlans.at(st.recv.peer).shard : std::vector<RowRange>{};
    senderShard_.push_back(shardParams(sender, plan.seqLen));
    senderPartsHost_.push_back(shardParts(sender, spec.kvHeads));
    int64_t senderRows = 0;
    for (const RowRange &range : sender)
      senderRows += range.end - range.begin;
    stageRows_ = std::max(stageRows_, senderRows);
  }
  shape_ = RankShape{rank_, static_cast<int>(schedule.ranks.size()), schedule.passAlong, batch_,
                     rows_, spec.heads, spec.kvHeads, headDim_, elementBytes_};
  forwardLayout_ = carveWorkspace(shape_, schedule, false, stageRows_);
  backwardLayout_ = carveWorkspace(shape_, schedule, true, stageRows_);

  // The part lists in one array: the own rows (one part per kv head and
  // shard range, rows numbered locally), then each step's receive and send.
  std::vector<ring::Part> all;
  auto append = [&](const std::vector<PackedPart> &list) {
    Span s{static_cast<int64_t>(all.size()), static_cast<int>(list.size())};
    for (const PackedPart &p : list)
      all.push_back({p.rows.start, p.rows.step, p.rows.count, p.offset, p.kvHead});
    return s;
  };
  ownParts_ = shardParts(shard, spec.kvHeads);
  local_ = append(ownParts_);
  for (size_t x = 0; x < schedule_.steps.size(); ++x) {
    recvParts_.push_back(append(schedule_.steps[x].recv.parts));
    sendParts_.push_back(append(schedule_.steps[x].send.parts));
    senderParts_.push_back(append(senderPartsHost_[x]));
  }
  ContextScope scope(attention.context());
  const Driver &d = driver();
  const size_t bytes = std::max<size_t>(1, all.size()) * sizeof(ring::Part);
  check(d.memAlloc(&partsDevice_, bytes), "ring: allocating the part lists");
  if (!all.empty())
    check(d.memcpyHtoD(partsDevice_, all.data(), all.size() * sizeof(ring::Part)),
          "ring: uploading the part lists");
}

RankRun::~RankRun() {
  try {
    ContextScope scope(attention_.context());
    if (partsDevice_)
      driver().memFree(partsDevice_);
  } catch (...) {
    // Destructors do not throw; the driver is gone.
  }
}

size_t RankRun::kernel(KernelRole role) const {
  const EmittedModule &mod = attention_.ringModule_;
  for (size_t x = 0; x < mod.kernels.size(); ++x)
    if (mod.kernels[x].role == role)
      return x;
  throw Error("the ring module has no kernel for role " + std::to_string(static_cast<int>(role)));
}

void RankRun::launch(size_t x, unsigned gx, unsigned gy, unsigned gz, void **args) const {
  launchKernel(attention_.ringModule_.kernels[x], attention_.ring_->functions[x], gx, gy, gz,
               stream_, args, "ring: ");
}

unsigned RankRun::elementwise(size_t x, int64_t count) const {
  const int threads = attention_.ringModule_.kernels[x].threads;
  return static_cast<unsigned>(
      std::clamp<int64_t>((count + threads - 1) / threads, 1, int64_t(65535) * 16));
}

/// Grid x over the rank's rows: rowsPerCta rows per CTA (one warp per row
/// for SIMT kernels); tensor-core tiles stay inside one range of the rank
/// and one segment of the branch (ring::tilesPerPiece).
unsigned RankRun::rowsGrid(size_t x) const {
  const KernelInfo &ki = attention_.ringModule_.kernels[x];
  const int64_t per = ki.rowsPerCta;
  if (ki.path != KernelPath::Mma)
    return static_cast<unsigned>((rows_ + per - 1) / per);
  const BranchPlan &b = attention_.plan().branches.at(ki.branch);
  const int64_t w = plan::segmentLength(b.segment, shard_.globalN);
  int64_t tiles = 0;
  for (int range = 0; range < 2; ++range) {
    const int64_t begin = shard_.qBegin[range], end = shard_.qEnd[range];
    tiles += ring::piecesOf(begin, end, w) * ring::tilesPerPiece(begin, end, w, b.dilation, per);
  }
  return static_cast<unsigned>(tiles);
}

RankRun::KeyGrid RankRun::keyGrid(size_t x, const std::vector<PackedPart> &parts) const {
  const KernelInfo &ki = attention_.ringModule_.kernels[x];
  const BranchPlan &b = attention_.plan().branches.at(ki.branch);
  const int64_t w = plan::segmentLength(b.segment, shard_.globalN);
  const RingKeyGrid keys =
      ringKeyGrid(parts, static_cast<int>(shape_.kvHeads), w, b.dilation, ki.rowsPerCta);
  int64_t queryTiles = 0;
  for (int range = 0; range < 2; ++range)
    queryTiles += ring::tilesPerPiece(shard_.qBegin[range], shard_.qEnd[range], w, b.dilation,
                                      ki.config.blockM);
  KeyGrid g;
  // The grid's y and z: the branch's heads and the batch (branches()).
  const int64_t fill = keyCtasToFill(attention_.multiprocessors_,
                                     static_cast<int64_t>(b.heads.size()) * batch_,
                                     attention_.splitWaves_);
  g.split = ringQuerySplit(ki, b, shard_.globalN, queryTiles, keys.keyTiles, keys.partsPerKvHead,
                           fill);
  g.x = static_cast<unsigned>(ringSplitGridX(g.split, keys.partsPerKvHead));
  return g;
}

void RankRun::zero(void *at, int64_t floats, uint32_t bits) const {
  if (floats > 0)
    check(driver().memsetD32Async(reinterpret_cast<CUdeviceptr>(at), bits,
                                  static_cast<size_t>(floats), stream_),
          "ring: clearing an accumulator");
}

float *RankRun::f32(int64_t offset) const {
  return reinterpret_cast<float *>(workspace_ + offset);
}
const ring::Part *RankRun::parts(int64_t first) const {
  return reinterpret_cast<const ring::Part *>(partsDevice_) + first;
}
void *RankRun::packBuffer(int kv) const {
  return workspace_ + (kv ? layout_->packV : layout_->packK);
}
void *RankRun::recvBuffer(int kv, int slot) const {
  return workspace_ + (kv ? layout_->recvV[slot] : layout_->recvK[slot]);
}
float *RankRun::partialBuffer(int kv) const {
  return f32(kv ? layout_->partialDv : layout_->partialDk);
}
float *RankRun::returnedBuffer(int kv) const {
  return f32(kv ? layout_->returnedDv : layout_->returnedDk);
}
float *RankRun::slotPartials(int kv, int slot) const {
  return f32(kv ? layout_->slotDv[slot] : layout_->slotDk[slot]);
}

Exchange RankRun::blocks(int step) const {
  return blockExchange(shape_, schedule_, *layout_, workspace_, step, backwardBound());
}

Exchange RankRun::partials(int step) const {
  return partialExchange(shape_, schedule_, *layout_, workspace_, step, backwardBound());
}

void RankRun::bindCommon(const TensorDesc &q, const TensorDesc &k, const TensorDesc &v,
                         const TensorDesc &out, const TensorDesc &lse, const Workspace &ws,
                         bool backward, const char *pass) {
  layout_ = backward ? &backwardLayout_ : &forwardLayout_;
  workspace_ = static_cast<char *>(ws.data);
  if (rows_ == 0)
    return; // more ranks than rows: this one does nothing
  const AttentionSpec &spec = attention_.spec();
  const std::string what = std::string(pass) + ", rank " + std::to_string(rank_);
  ArgumentChecker check(what.c_str(), spec, attention_.device());
  const int64_t B = batch_, n = rows_, H = spec.heads, Hk = spec.kvHeads;
  fwd::Params &p = params_;
  p = fwd::Params{};
  p.qL = check.rows("q", q, B, n, H);
  p.kL = check.rows("k", k, B, n, Hk);
  p.vL = check.rows("v", v, B, n, Hk);
  p.oL = check.rows("out", out, B, n, H);
  check.lse("lse", lse, B, n);
  check.workspace(ws, layout_->total);
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.o = out.data;
  p.lse = static_cast<float *>(lse.data);
  p.seqLen = n;
  p.heads = static_cast<int>(H);
  p.groupSize = static_cast<int>(H / Hk);
  p.scale = static_cast<float>(attention_.plan().scale);
  p.maskRows = reinterpret_cast<const long long *>(mask_.rowOffsets);
  p.maskCols = reinterpret_cast<const long long *>(mask_.colIndices);
}

void RankRun::bindForward(const RingRankForward &a, CUstream stream) {
  stream_ = stream;
  bindCommon(a.q, a.k, a.v, a.out, a.lse, a.workspace, false, "ring forward");
  if (rows_ > 0)
    params_.oAcc = f32(layout_->oAcc);
}

void RankRun::bindBackward(const RingRankBackward &a, CUstream stream) {
  stream_ = stream;
  bindCommon(a.q, a.k, a.v, a.out, a.lse, a.workspace, true, "ring backward");
  if (rows_ == 0)
    return;
  const AttentionSpec &spec = attention_.spec();
  const std::string what = "ring backward, rank " + std::to_string(rank_);
  ArgumentChecker check(what.c_str(), spec, attention_.device());
  const int64_t B = batch_, n = rows_, H = spec.heads, Hk = spec.kvHeads;
  grad_ = ring::Grad{};
  grad_.doutL = check.rows("dout", a.dout, B, n, H);
  dqL_ = check.rows("dq", a.dq, B, n, H);
  dkL_ = check.rows("dk", a.dk, B, n, Hk);
  dvL_ = check.rows("dv", a.dv, B, n, Hk);
  grad_.dout = a.dout.data;
  grad_.delta = f32(layout_->delta);
  grad_.dqAcc = f32(layout_->dqAcc);
  dq_ = a.dq.data;
  dk_ = a.dk.data;
  dv_ = a.dv.data;
}

bool RankRun::readsStaged(const KernelInfo &k) const {
  return k.path == KernelPath::Mma &&
         attention_.plan().branches.at(k.branch).kind == BranchKind::Strided;
}

void RankRun::branches(KernelRole role, const BlockView &packed, const BlockView *staged) const {
  const EmittedModule &mod = attention_.ringModule_;
  for (size_t x = 0; x < mod.kernels.size(); ++x) {
    const KernelInfo &ki = mod.kernels[x];
    if (ki.role != role)
      continue;
    const bool mma = ki.path == KernelPath::Mma;
    const BlockView &view = staged && readsStaged(ki) ? *staged : packed;
    ring::Grad grad = view.grad;
    unsigned gx;
    if (role == KernelRole::DkvPass && mma) {
      const KeyGrid kg = keyGrid(x, *view.parts);
      grad.split = kg.split;
      gx = kg.x;
    } else {
      gx = rowsGrid(x);
    }
    if (gx == 0)
      continue;
    fwd::Params p = params_;
    ring::Params block = view.params;
    // TMA kernels: forward, the block's keys and values (consecutive rows);
    // backward, the rank's q and dout (rows stepping the dilation).
    CUtensorMap map0, map1;
    void *args[] = {&p, &block, &grad};
    void *argsKv[] = {&p, &block, &map0, &map1};
    void *argsQ[] = {&p, &block, &grad, &map0, &map1};
    void **use = args;
    auto encode = [&](const void *data, const Layout &l, int64_t rows, int64_t heads, int stride,
                      const std::string &what) {
      return encodeRowMap(data,
                          rowMapShape(l, batch_, rows, heads, headDim_,
                                      static_cast<int>(elementBytes_), stride,
                                      role == KernelRole::Branch ? ki.config.blockN
                                                                 : ki.config.blockM),
                          attention_.spec().dtype, "ring: " + what);
    };
    if (role == KernelRole::Branch && takesTensorMaps(ki, {"k", "v"}, "ring")) {
      map0 = encode(view.params.keys, view.params.keyL, view.keyRows, view.keyHeads, 1,
                    "the block's k");
      map1 = encode(view.params.values, view.params.valueL, view.keyRows, view.keyHeads, 1,
                    "the block's v");
      use = argsKv;
    } else if (role == KernelRole::DkvPass && takesTensorMaps(ki, {"q", "dout"}, "ring")) {
      const int stride = static_cast<int>(attention_.plan().branches[ki.branch].dilation);
      const int64_t H = attention_.spec().heads;
      map0 = encode(params_.q, params_.qL, rows_, H, stride, "the rank's q");
      map1 = encode(grad_.dout, grad_.doutL, rows_, H, stride, "the rank's dout");
      use = argsQ;
    }
    launch(x, gx,
           static_cast<unsigned>(attention_.plan().branches[ki.branch].heads.size()),
           static_cast<unsigned>(batch_), use);
  }
}

BlockView RankRun::ownBlock() const {
  BlockView v;
  v.params = shard_;
  v.params.parts = parts(local_.first);
  v.params.numParts = local_.count;
  v.params.keys = params_.k;
  v.params.values = params_.v;
  v.params.keyL = params_.kL;
  v.params.valueL = params_.vL;
  v.parts = &ownParts_;
  v.keyRows = rows_;
  v.keyHeads = attention_.spec().kvHeads;
  // The own rows' dK/dV go straight into the accumulators.
  if (layout_->dkAcc >= 0) {
    v.grad = grad_;
    v.grad.dk = f32(layout_->dkAcc);
    v.grad.dv = f32(layout_->dvAcc);
    v.grad.gradL = accumulatorLayout();
  }
  return v;
}

Layout RankRun::accumulatorLayout() const { return rt::accumulatorLayout(shape_); }

BlockView RankRun::receivedBlock(int step, int slot) const {
  const Transfer &t = recv(step);
  BlockView v;
  v.params = shard_;
  v.params.parts = parts(recvParts_[step - 1].first);
  v.params.numParts = recvParts_[step - 1].count;
  v.params.keys = recvBuffer(0, slot);
  v.params.values = recvBuffer(1, slot);
  v.params.keyL = v.params.valueL = Layout{t.rows * headDim_, headDim_, 0};
  v.parts = &t.parts;
  v.keyRows = t.rows;
  v.keyHeads = 1;
  if (backwardBound()) { // passed along, the partials travel with the block in its slot
    v.grad = grad_;
    v.grad.dk = shape_.passAlong ? slotPartials(0, slot) : partialBuffer(0);
    v.grad.dv = shape_.passAlong ? slotPartials(1, slot) : partialBuffer(1);
    v.grad.gradL = Layout{t.rows * headDim_, headDim_, 0};
  }
  return v;
}

BlockView RankRun::stagedBlock(int step) const {
  const int64_t Hk = attention_.spec().kvHeads;
  const Layout stage{stageRows_ * Hk * headDim_, Hk * headDim_, headDim_};
  BlockView v;
  v.params = shard_; // the queries stay the rank's; the keys are the sender's rows
  v.params.parts = parts(senderParts_[step - 1].first);
  v.params.numParts = senderParts_[step - 1].count;
  v.params.keys = workspace_ + layout_->stageK;
  v.params.values = workspace_ + layout_->stageV;
  v.params.keyL = v.params.valueL = stage;
  v.parts = &senderPartsHost_[step - 1];
  v.keyRows = stageRows_;
  v.keyHeads = Hk;
  if (layout_->stageDk >= 0) {
    v.grad = grad_;
    v.grad.dk = f32(layout_->stageDk);
    v.grad.dv = f32(layout_->stageDv);
    v.grad.gradL = stage;
  }
  return v;
}

void RankRun::unpack(int step, int slot) const {
  const Transfer &t = recv(step);
  const size_t x = kernel(KernelRole::RingUnpack);
  const ring::Part *list = parts(recvParts_[step - 1].first);
  int numParts = recvParts_[step - 1].count;
  long long packedRows = t.rows, b = batch_;
  ring::Params sender = senderShard_[step - 1];
  Layout stage{stageRows_ * attention_.spec().kvHeads * headDim_,
               attention_.spec().kvHeads * headDim_, headDim_};
  for (int kv = 0; kv < 2; ++kv) {
    const void *src = recvBuffer(kv, slot);
    void *dst = workspace_ + (kv ? layout_->stageV : layout_->stageK);
    // Zeros first: a tile straddling a causal bound loads rows past the
    // rank's last query that the plan did not send; masked, they must still
    // be finite (0 * NaN is NaN in P V and dS K).
    zero(dst, batch_ * stage.batch * elementBytes_ / 4);
    void *args[] = {&list, &numParts, &packedRows, &sender, &src, &dst, &stage, &b};
    launch(x, elementwise(x, batch_ * t.rows * headDim_ * elementBytes_ / 16), 1, 1, args);
  }
}

void RankRun::beginForward() {
  if (rows_ == 0)
    return;
  const int64_t H = attention_.spec().heads;
  zero(params_.oAcc, batch_ * rows_ * H * headDim_);
  zero(params_.lse, batch_ * H * rows_, 0xff800000u); // -inf
  branches(KernelRole::Branch, ownBlock(), nullptr);
}

void RankRun::beginBackward() {
  if (rows_ == 0)
    return;
  const AttentionSpec &spec = attention_.spec();
  const int64_t q = batch_ * rows_ * spec.heads * headDim_,
                kv = batch_ * rows_ * spec.kvHeads * headDim_;
  zero(f32(layout_->dqAcc), q);
  if (!shape_.passAlong) { // passed along, the accumulators are a receive slot until the end
    zero(f32(layout_->dkAcc), kv);
    zero(f32(layout_->dvAcc), kv);
  }
  const size_t delta = kernel(KernelRole::Delta);
  fwd::Params p = params_;
  float *deltaPtr = const_cast<float *>(grad_.delta);
  void *args[] = {&p, const_cast<void **>(&grad_.dout), const_cast<Layout *>(&grad_.doutL),
                  &deltaPtr};
  launch(delta, rowsGrid(delta), static_cast<unsigned>(spec.heads),
         static_cast<unsigned>(batch_), args);
  if (!shape_.passAlong) // passed along: at the end, onto the partials that come home (addReturned)
    branches(KernelRole::DkvPass, ownBlock(), nullptr);
}

void RankRun::pack(int step) {
  const Transfer &t = send(step);
  if (t.peer < 0 || t.rows == 0 || (shape_.passAlong && step > 1)) // passed along: the own block once
    return;
  const size_t x = kernel(KernelRole::RingPack);
  const ring::Part *list = parts(sendParts_[step - 1].first);
  int numParts = sendParts_[step - 1].count;
  long long packedRows = t.rows, b = batch_;
  for (int kv = 0; kv < 2; ++kv) {
    const void *src = kv == 0 ? params_.k : params_.v;
    Layout srcL = kv == 0 ? params_.kL : params_.vL;
    void *dst = packBuffer(kv);
    ring::Params shard = shard_;
    void *args[] = {&list, &numParts, &packedRows, &shard, &src, &srcL, &dst, &b};
    launch(x, elementwise(x, batch_ * t.rows * headDim_ / 4), 1, 1, args);
  }
}

void RankRun::attend(int step, int slot) {
  if (recv(step).peer < 0 || recv(step).rows == 0 || rows_ == 0)
    return;
  if (!staged_[step - 1]) {
    branches(KernelRole::Branch, receivedBlock(step, slot), nullptr);
    return;
  }
  unpack(step, slot);
  const BlockView staged = stagedBlock(step);
  branches(KernelRole::Branch, receivedBlock(step, slot), &staged);
}

void RankRun::attendBackward(int step, int slot) {
  const Transfer &t = recv(step);
  if (t.peer < 0 || t.rows == 0 || rows_ == 0)
    return;
  if (shape_.passAlong) { // the block's partials start with its first holder, then travel with it
    if (step == 1) {
      zero(slotPartials(0, slot), batch_ * t.rows * headDim_);
      zero(slotPartials(1, slot), batch_ * t.rows * headDim_);
    }
    branches(KernelRole::DkvPass, receivedBlock(step, slot), nullptr);
    return;
  }
  zero(partialBuffer(0), batch_ * t.rows * headDim_);
  zero(partialBuffer(1), batch_ * t.rows * headDim_);
  if (!staged_[step - 1]) {
    branches(KernelRole::DkvPass, receivedBlock(step, slot), nullptr);
    return;
  }
  // Staged: the tensor-core kernels' partials land in the sender's shape,
  // then join the others' in the packed partials that go back.
  unpack(step, slot);
  const int64_t stage = batch_ * stageRows_ * attention_.spec().kvHeads * headDim_;
  zero(f32(layout_->stageDk), stage);
  zero(f32(layout_->stageDv), stage);
  const BlockView staged = stagedBlock(step);
  branches(KernelRole::DkvPass, receivedBlock(step, slot), &staged);
  const size_t x = kernel(KernelRole::RingStagedPartials);
  const ring::Part *list = parts(recvParts_[step - 1].first);
  int numParts = recvParts_[step - 1].count;
  long long packedRows = t.rows, b = batch_;
  ring::Params sender = senderShard_[step - 1];
  Layout srcL = staged.grad.gradL;
  for (int kv = 0; kv < 2; ++kv) {
    const float *src = kv ? staged.grad.dv : staged.grad.dk;
    float *packed = partialBuffer(kv);
    void *args[] = {&list, &numParts, &packedRows, &sender, &src, &srcL, &packed, &b};
    launch(x, elementwise(x, batch_ * t.rows * headDim_), 1, 1, args);
  }
}

void RankRun::addReturned(int step) {
  if (shape_.passAlong) {
    if (step == shape_.ranks - 1)
      branches(KernelRole::DkvPass, ownBlock(), nullptr);
    return;
  }
  const Transfer &t = send(step);
  if (t.peer < 0 || t.rows == 0)
    return;
  const size_t x = kernel(KernelRole::RingReturn);
  const int64_t Hk = attention_.spec().kvHeads;
  const ring::Part *list = parts(sendParts_[step - 1].first);
  int numParts = sendParts_[step - 1].count;
  long long packedRows = t.rows, b = batch_;
  Layout accL{rows_ * Hk * headDim_, Hk * headDim_, headDim_};
  ring::Params shard = shard_;
  for (int kv = 0; kv < 2; ++kv) {
    const float *src = returnedBuffer(kv);
    float *acc = f32(kv ? layout_->dvAcc : layout_->dkAcc);
    void *args[] = {&list, &numParts, &packedRows, &shard, &src, &acc, &accL, &b};
    launch(x, elementwise(x, batch_ * t.rows * headDim_), 1, 1, args);
  }
}

void RankRun::endForward() {
  if (rows_ == 0)
    return;
  const size_t x = kernel(KernelRole::Finalize);
  fwd::Params p = params_;
  long long b = batch_;
  void *args[] = {&p, &b};
  launch(x, elementwise(x, batch_ * rows_ * attention_.spec().heads * headDim_), 1, 1, args);
}

void RankRun::endBackward() {
  if (rows_ == 0)
    return;
  const AttentionSpec &spec = attention_.spec();
  const size_t x = kernel(KernelRole::FinalizeGradients);
  fwd::Params p = params_;
  const float *dqAcc = f32(layout_->dqAcc), *dkAcc = f32(layout_->dkAcc),
              *dvAcc = f32(layout_->dvAcc);
  void *dq = dq_, *dk = dk_, *dv = dv_;
  Layout dqL = dqL_, dkL = dkL_, dvL = dvL_, accL = accumulatorLayout();
  int kvHeads = spec.kvHeads;
  long long b = batch_;
  void *args[] = {&p, &dqAcc, &dq, &dqL, &dkAcc, &dvAcc, &accL, &dk, &dv, &dkL, &dvL, &kvHeads,
                  &b};
  launch(x, elementwise(x, batch_ * rows_ * (spec.heads + spec.kvHeads) * headDim_), 1, 1,
         args);
}

} // namespace dattn::rt
