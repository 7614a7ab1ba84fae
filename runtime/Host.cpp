// The allocating helpers of dattn/host.h, for tools and tests: buffers,
// streams, graphs, dtype conversion, event timing, and HostAttention.
#include "Context.h"
#include "Libraries.h"
#include "Parallel.h"

#include "dattn/error.h"
#include "dattn/host.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

namespace dattn {

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  CUdeviceptr p = 0;
  rt::check(rt::driver().memAlloc(&p, bytes ? bytes : 16),
            "allocating " + std::to_string(bytes) + " bytes of GPU memory");
  ptr_ = reinterpret_cast<void *>(p);
}

DeviceBuffer::~DeviceBuffer() {
  try {
    rt::driver().memFree(reinterpret_cast<CUdeviceptr>(ptr_));
  } catch (...) {
  }
}

void DeviceBuffer::upload(const void *host, size_t bytes) {
  if (bytes > bytes_)
    throw ArgumentError("upload of " + std::to_string(bytes) + " bytes into a buffer of " +
                        std::to_string(bytes_));
  rt::check(rt::driver().memcpyHtoD(reinterpret_cast<CUdeviceptr>(ptr_), host, bytes),
            "copying to the GPU");
  // From pageable memory the copy may still be in flight on return; a
  // kernel on a non-blocking stream must not read it early.
  synchronize("copying to the GPU");
}

void DeviceBuffer::download(void *host, size_t bytes) const {
  if (bytes > bytes_)
    throw ArgumentError("download of " + std::to_string(bytes) + " bytes from a buffer of " +
                        std::to_string(bytes_));
  rt::check(rt::driver().memcpyDtoH(host, reinterpret_cast<CUdeviceptr>(ptr_), bytes),
            "copying from the GPU");
}

void DeviceBuffer::fill32(uint32_t pattern) {
  rt::check(rt::driver().memsetD32(reinterpret_cast<CUdeviceptr>(ptr_), pattern, bytes_ / 4),
            "filling a GPU buffer");
  synchronize("filling a GPU buffer");
}

namespace {

uint16_t toHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t mag = x & 0x7fffffffu;
  if (mag >= 0x7f800000u) // inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (mag > 0x7f800000u ? 0x200u : 0));
  if (mag >= 0x477ff000u) // rounds to >= 65520: overflow to inf
    return static_cast<uint16_t>(sign | 0x7c00u);
  if (mag < 0x38800000u) { // subnormal half (or zero)
    float a = std::fabs(f) * 16777216.0f; // 2^24: units of the smallest subnormal
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a)));
  }
  uint32_t r = mag - 0x38000000u; // rebias exponent 127 -> 15
  r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
  return static_cast<uint16_t>(sign | r);
}

float fromHalf(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(man), -24);
    return sign ? -f : f;
  }
  uint32_t x = exp == 31 ? (sign | 0x7f800000u | (man << 13))
                         : (sign | ((exp + 112) << 23) | (man << 13));
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t toBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((x >> 16) | 0x40);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float fromBf16(uint16_t b) {
  uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

} // namespace

std::vector<char> encode(const float *values, size_t count, DType dtype) {
  if (dtype == DType::F32) {
    std::vector<char> out(count * 4);
    std::memcpy(out.data(), values, count * 4);
    return out;
  }
  std::vector<char> out(count * 2);
  auto *dst = reinterpret_cast<uint16_t *>(out.data());
  rt::forChunks(count, size_t(1) << 20, 1, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i)
      dst[i] = dtype == DType::F16 ? toHalf(values[i]) : toBf16(values[i]);
  });
  return out;
}

void decode(const void *data, size_t count, DType dtype, float *values) {
  if (dtype == DType::F32) {
    std::memcpy(values, data, count * 4);
    return;
  }
  auto *src = static_cast<const uint16_t *>(data);
  rt::forChunks(count, size_t(1) << 20, 1, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i)
      values[i] = dtype == DType::F16 ? fromHalf(src[i]) : fromBf16(src[i]);
  });
}

void synchronize(const std::string &what) {
  rt::check(rt::driver().ctxSynchronize(), what);
}

double timeMedianMs(const std::function<void(int)> &fn, int warmup, int iters,
                    const std::function<void()> &beforeEach) {
  const rt::Driver &d = rt::driver();
  for (int i = 0; i < warmup; ++i)
    fn(i);
  synchronize("warm-up runs");
  std::vector<double> ms;
  CUevent start, stop;
  rt::check(d.eventCreate(&start, CU_EVENT_DEFAULT), "creating an event");
  rt::check(d.eventCreate(&stop, CU_EVENT_DEFAULT), "creating an event");
  for (int i = 0; i < iters; ++i) {
    if (beforeEach)
      beforeEach();
    d.eventRecord(start, nullptr);
    fn(warmup + i);
    d.eventRecord(stop, nullptr);
    rt::check(d.eventSynchronize(stop), "timed run");
    float t = 0;
    d.eventElapsedTime(&t, start, stop);
    ms.push_back(t);
  }
  d.eventDestroy(start);
  d.eventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms.empty() ? 0 : ms[ms.size() / 2];
}

} // namespace dattn


namespace dattn {

DeviceBlockMaskBuffer::DeviceBlockMaskBuffer(const BlockMask &mask, int64_t seqLen) {
  mask.validate(seqLen);
  std::vector<int64_t> packed(mask.rowOffsets.begin(), mask.rowOffsets.end());
  packed.insert(packed.end(), mask.colIndices.begin(), mask.colIndices.end());
  buffer_ = std::make_unique<DeviceBuffer>(packed.size() * sizeof(int64_t));
  buffer_->upload(packed.data(), packed.size() * sizeof(int64_t));
  block_ = mask.block;
  numBlockRows_ = static_cast<int64_t>(mask.rowOffsets.size()) - 1;
  numNonZero_ = static_cast<int64_t>(mask.colIndices.size());
}

DeviceBlockMask DeviceBlockMaskBuffer::view() const {
  const auto *rows = static_cast<const int64_t *>(buffer_->data());
  return {rows, rows + numBlockRows_ + 1, block_, numBlockRows_, numNonZero_};
}

Stream::Stream() {
  CUstream s;
  rt::check(rt::driver().streamCreate(&s, CU_STREAM_NON_BLOCKING), "creating a stream");
  stream_ = s;
}

Stream::~Stream() {
  try {
    rt::driver().streamDestroy(static_cast<CUstream>(stream_));
  } catch (...) {
  }
}

void Stream::synchronize(const std::string &what) const {
  rt::check(rt::driver().streamSynchronize(static_cast<CUstream>(stream_)), what);
}

CapturedGraph::~CapturedGraph() {
  try {
    const rt::Driver &d = rt::driver();
    if (exec_)
      d.graphExecDestroy(static_cast<CUgraphExec>(exec_));
    if (graph_)
      d.graphDestroy(static_cast<CUgraph>(graph_));
  } catch (...) {
  }
}

void CapturedGraph::begin(void *stream) {
  if (capturing_ || graph_)
    throw Error("CapturedGraph: begin() may be called once");
  rt::check(rt::driver().streamBeginCapture(static_cast<CUstream>(stream),
                                            CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
            "beginning a stream capture");
  capturing_ = stream;
}

void CapturedGraph::end() {
  if (!capturing_)
    throw Error("CapturedGraph: end() without begin()");
  const rt::Driver &d = rt::driver();
  CUgraph g;
  rt::check(d.streamEndCapture(static_cast<CUstream>(capturing_), &g), "ending a stream capture");
  capturing_ = nullptr;
  graph_ = g;
  CUgraphExec e;
  rt::check(d.graphInstantiate(&e, g, 0), "instantiating a captured graph");
  exec_ = e;
}

void CapturedGraph::launch(void *stream) const {
  if (!exec_)
    throw Error("CapturedGraph: launch() before end()");
  rt::check(rt::driver().graphLaunch(static_cast<CUgraphExec>(exec_), static_cast<CUstream>(stream)),
            "launching a captured graph");
}

std::unique_ptr<DeviceBuffer> uploadRounded(const float *host, size_t count, DType dtype,
                                            std::vector<float> &rounded) {
  std::vector<char> enc = encode(host, count, dtype);
  rounded.resize(count);
  decode(enc.data(), count, dtype, rounded.data());
  auto buf = std::make_unique<DeviceBuffer>(enc.size());
  buf->upload(enc.data(), enc.size());
  return buf;
}

namespace {

constexpr uint32_t kNaN32 = 0xffffffffu; // NaN in every dtype, two halves or one float

} // namespace

HostAttention::HostAttention(CompiledAttention &attn, int64_t batch, int64_t n, const float *q,
                             const float *k, const float *v, const BlockMask *mask)
    : attn_(&attn), batch_(batch), seqLen_(n) {
  rt::ContextScope scope(attn.context());
  const AttentionSpec &s = attn.spec();
  const DType t = s.dtype;
  const int64_t H = s.heads, Hk = s.kvHeads, D = s.headDim;
  qDev_ = uploadRounded(q, static_cast<size_t>(batch * n * H * D), t, q_);
  kDev_ = uploadRounded(k, static_cast<size_t>(batch * n * Hk * D), t, k_);
  vDev_ = uploadRounded(v, static_cast<size_t>(batch * n * Hk * D), t, v_);
  outDev_ = std::make_unique<DeviceBuffer>(qDev_->bytes());
  lseDev_ = std::make_unique<DeviceBuffer>(static_cast<size_t>(batch * H * n) * 4);
  sizes_ = attn.workspaceSizes(batch, n);
  workspace_ = std::make_unique<DeviceBuffer>(
      static_cast<size_t>(std::max(sizes_.forward, sizes_.backward)));
  if (mask)
    mask_ = std::make_unique<DeviceBlockMaskBuffer>(*mask, n);
  args_.q = TensorDesc::contiguous(qDev_->data(), t, {batch, n, H, D});
  args_.k = TensorDesc::contiguous(kDev_->data(), t, {batch, n, Hk, D});
  args_.v = TensorDesc::contiguous(vDev_->data(), t, {batch, n, Hk, D});
  args_.out = TensorDesc::contiguous(outDev_->data(), t, {batch, n, H, D});
  args_.lse = TensorDesc::contiguous(lseDev_->data(), DType::F32, {batch, H, n});
  if (mask_)
    args_.mask = mask_->view();
  args_.workspace = workspace_->workspace();
}

HostAttention::~HostAttention() {
  try {
    rt::ContextScope scope(attn_->context());
    qDev_.reset(), kDev_.reset(), vDev_.reset(), outDev_.reset(), lseDev_.reset();
    workspace_.reset(), mask_.reset();
    gradOut_.reset(), gradQ_.reset(), gradK_.reset(), gradV_.reset();
  } catch (...) {
  }
}

void HostAttention::useAttention(CompiledAttention &attn) {
  if (attn.spec().canonical() != attn_->spec().canonical())
    throw Error("HostAttention::useAttention: attention '" + attn.spec().name +
                "' is not the spec these buffers were made for ('" + attn_->spec().name + "')");
  rt::ContextScope scope(attn.context());
  sizes_ = attn.workspaceSizes(batch_, seqLen_);
  const size_t need = static_cast<size_t>(std::max(sizes_.forward, sizes_.backward));
  if (need > workspace_->bytes()) {
    workspace_ = std::make_unique<DeviceBuffer>(need);
    args_.workspace = bargs_.workspace = workspace_->workspace();
  }
  attn_ = &attn;
}

void HostAttention::setStream(void *stream) {
  stream_ = stream;
  args_.stream = bargs_.stream = stream;
}

void HostAttention::setInputs(const float *q, const float *k, const float *v) {
  rt::ContextScope scope(attn_->context());
  const DType t = attn_->spec().dtype;
  for (auto [src, dev, rounded] : {std::tuple{q, qDev_.get(), &q_}, std::tuple{k, kDev_.get(), &k_},
                                   std::tuple{v, vDev_.get(), &v_}}) {
    std::vector<char> enc = encode(src, rounded->size(), t);
    decode(enc.data(), rounded->size(), t, rounded->data());
    dev->upload(enc.data(), enc.size());
  }
}

void HostAttention::setDout(const float *dout) {
  if (!gradOut_)
    throw Error("HostAttention::setDout before backward");
  rt::ContextScope scope(attn_->context());
  std::vector<char> enc = encode(dout, q_.size(), attn_->spec().dtype);
  decode(enc.data(), q_.size(), attn_->spec().dtype, doutRounded_.data());
  gradOut_->upload(enc.data(), enc.size());
}

void HostAttention::poisonOutputs() {
  rt::ContextScope scope(attn_->context());
  outDev_->fill32(kNaN32);
  lseDev_->fill32(0x7fc00000u);
}

void HostAttention::poisonGradients() {
  if (!gradOut_)
    return;
  rt::ContextScope scope(attn_->context());
  for (auto *g : {gradQ_.get(), gradK_.get(), gradV_.get()})
    g->fill32(kNaN32);
}

void HostAttention::wait(const std::string &what) const {
  rt::ContextScope scope(attn_->context());
  rt::check(rt::driver().streamSynchronize(static_cast<CUstream>(stream_)), what);
}

void HostAttention::run() {
  poisonOutputs();
  attn_->forward(args_);
}

void HostAttention::read(std::vector<float> &out, std::vector<float> &lse) {
  wait("running attention '" + attn_->spec().name + "'");
  std::vector<char> raw(outDev_->bytes());
  outDev_->download(raw.data(), raw.size());
  out.resize(q_.size());
  decode(raw.data(), out.size(), attn_->spec().dtype, out.data());
  lse.resize(lseDev_->bytes() / 4);
  lseDev_->download(lse.data(), lseDev_->bytes());
}

void HostAttention::backward(const float *dout, bool deterministic) {
  rt::ContextScope scope(attn_->context());
  if (!gradOut_) {
    gradOut_ = uploadRounded(dout, q_.size(), attn_->spec().dtype, doutRounded_);
    gradQ_ = std::make_unique<DeviceBuffer>(qDev_->bytes());
    gradK_ = std::make_unique<DeviceBuffer>(kDev_->bytes());
    gradV_ = std::make_unique<DeviceBuffer>(vDev_->bytes());
    bargs_.q = args_.q;
    bargs_.k = args_.k;
    bargs_.v = args_.v;
    bargs_.out = args_.out;
    bargs_.lse = args_.lse;
    bargs_.dout = args_.q;
    bargs_.dout.data = gradOut_->data();
    bargs_.dq = args_.q;
    bargs_.dq.data = gradQ_->data();
    bargs_.dk = args_.k;
    bargs_.dk.data = gradK_->data();
    bargs_.dv = args_.v;
    bargs_.dv.data = gradV_->data();
    bargs_.mask = args_.mask;
    bargs_.workspace = args_.workspace;
    bargs_.stream = stream_;
  }
  poisonGradients(); // an unwritten gradient cannot pass, on every call
  rebackward(deterministic);
}

void HostAttention::rebackward(bool deterministic) {
  if (!gradOut_)
    throw Error("HostAttention::rebackward before backward");
  bargs_.deterministic = deterministic;
  attn_->backward(bargs_);
}

void HostAttention::readGradients(std::vector<float> &dq, std::vector<float> &dk,
                                  std::vector<float> &dv) {
  wait("the backward pass of attention '" + attn_->spec().name + "'");
  const DType t = attn_->spec().dtype;
  for (auto [buf, out, count] : {std::tuple{gradQ_.get(), &dq, q_.size()},
                                 std::tuple{gradK_.get(), &dk, k_.size()},
                                 std::tuple{gradV_.get(), &dv, v_.size()}}) {
    std::vector<char> raw(buf->bytes());
    buf->download(raw.data(), raw.size());
    out->resize(count);
    decode(raw.data(), count, t, out->data());
  }
}

int64_t HostAttention::inputBytes() const {
  return static_cast<int64_t>(qDev_->bytes() + kDev_->bytes() + vDev_->bytes());
}
int64_t HostAttention::outputBytes() const {
  return static_cast<int64_t>(outDev_->bytes() + lseDev_->bytes());
}

} // namespace dattn
