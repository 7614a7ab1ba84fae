// Small device helpers for tools and tests: buffers, dtype conversion,
// event timing, synchronization with readable errors.
#include "Libraries.h"

#include "dattn/error.h"
#include "dattn/runtime.h"

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
  for (size_t i = 0; i < count; ++i)
    dst[i] = dtype == DType::F16 ? toHalf(values[i]) : toBf16(values[i]);
  return out;
}

void decode(const void *data, size_t count, DType dtype, float *values) {
  if (dtype == DType::F32) {
    std::memcpy(values, data, count * 4);
    return;
  }
  auto *src = static_cast<const uint16_t *>(data);
  for (size_t i = 0; i < count; ++i)
    values[i] = dtype == DType::F16 ? fromHalf(src[i]) : fromBf16(src[i]);
}

void synchronize(const std::string &what) {
  rt::check(rt::driver().ctxSynchronize(), what);
}

double timeMedianMs(const std::function<void(int)> &fn, int warmup, int iters) {
  const rt::Driver &d = rt::driver();
  for (int i = 0; i < warmup; ++i)
    fn(i);
  synchronize("warm-up runs");
  std::vector<double> ms;
  CUevent start, stop;
  rt::check(d.eventCreate(&start, CU_EVENT_DEFAULT), "creating an event");
  rt::check(d.eventCreate(&stop, CU_EVENT_DEFAULT), "creating an event");
  for (int i = 0; i < iters; ++i) {
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

#include "Nvrtc.h"

#include "dattn/env.h"

namespace dattn {

SystemInfo querySystem() {
  SystemInfo s;
  s.cacheFolder = env::cacheRoot();
  try {
    const rt::Driver &d = rt::driver();
    s.driverLibrary = d.path;
    int v = 0;
    d.driverGetVersion(&v);
    s.driverVersion = std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
    int count = 0;
    d.deviceGetCount(&count);
    for (int i = 0; i < count; ++i) {
      CUdevice dev;
      d.deviceGet(&dev, i);
      DeviceInfo info;
      info.ordinal = i;
      char name[256] = {};
      d.deviceGetName(name, sizeof name, dev);
      info.name = name;
      int major = 0, minor = 0;
      d.deviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
      d.deviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
      info.smVersion = major * 10 + minor;
      d.deviceGetAttribute(&info.multiprocessors, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
      d.deviceGetAttribute(&info.smemOptinBytes,
                           CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev);
      size_t mem = 0;
      d.deviceTotalMem(&mem, dev);
      info.memoryBytes = static_cast<int64_t>(mem);
      s.devices.push_back(info);
    }
  } catch (const Error &e) {
    s.driverError = e.what();
  }
  try {
    s.nvrtcVersion = rt::nvrtcVersionString();
    s.nvrtcLibrary = rt::nvrtc().path;
    s.nvrtcArchs = rt::nvrtcSupportedArchs();
  } catch (const Error &e) {
    s.nvrtcError = e.what();
  }
  return s;
}

} // namespace dattn

namespace dattn {

namespace {
std::unique_ptr<DeviceBuffer> upload(const std::vector<float> &host, DType dtype,
                                     std::vector<float> &rounded) {
  std::vector<char> enc = encode(host.data(), host.size(), dtype);
  rounded.resize(host.size());
  decode(enc.data(), host.size(), dtype, rounded.data());
  auto buf = std::make_unique<DeviceBuffer>(enc.size());
  buf->upload(enc.data(), enc.size());
  return buf;
}
} // namespace

HostForward::HostForward(CompiledAttention &attn, int64_t batch, int64_t n, const float *q,
                         const float *k, const float *v, const BlockMask *mask)
    : attn_(attn) {
  const AttentionSpec &s = attn.spec();
  const size_t qCount = static_cast<size_t>(batch * n * s.heads * s.headDim);
  const size_t kvCount = static_cast<size_t>(batch * n * s.kvHeads * s.headDim);
  qDev_ = upload(std::vector<float>(q, q + qCount), s.dtype, q_);
  kDev_ = upload(std::vector<float>(k, k + kvCount), s.dtype, k_);
  vDev_ = upload(std::vector<float>(v, v + kvCount), s.dtype, v_);
  outDev_ = std::make_unique<DeviceBuffer>(qDev_->bytes());
  lseDev_ = std::make_unique<DeviceBuffer>(static_cast<size_t>(batch * s.heads * n) * 4);
  outDev_->fill32(0xffffffffu); // NaN in every dtype
  lseDev_->fill32(0x7fc00000u);
  args_.batch = batch;
  args_.seqLen = n;
  args_.q = qDev_->data();
  args_.k = kDev_->data();
  args_.v = vDev_->data();
  args_.out = outDev_->data();
  args_.lse = static_cast<float *>(lseDev_->data());
  args_.mask = mask;
}

void HostForward::read(std::vector<float> &out, std::vector<float> &lse) {
  synchronize("running attention '" + attn_.spec().name + "'");
  std::vector<char> raw(outDev_->bytes());
  outDev_->download(raw.data(), raw.size());
  out.resize(q_.size());
  decode(raw.data(), out.size(), attn_.spec().dtype, out.data());
  lse.resize(lseDev_->bytes() / 4);
  lseDev_->download(lse.data(), lseDev_->bytes());
}

void HostForward::backward(const float *dout, bool deterministic) {
  if (!gradOut_) {
    gradOut_ = upload(std::vector<float>(dout, dout + q_.size()), attn_.spec().dtype, doutRounded_);
    gradQ_ = std::make_unique<DeviceBuffer>(qDev_->bytes());
    gradK_ = std::make_unique<DeviceBuffer>(kDev_->bytes());
    gradV_ = std::make_unique<DeviceBuffer>(vDev_->bytes());
    for (auto *g : {gradQ_.get(), gradK_.get(), gradV_.get()})
      g->fill32(0xffffffffu); // NaN: an unwritten gradient cannot pass
    bargs_.batch = args_.batch;
    bargs_.seqLen = args_.seqLen;
    bargs_.q = args_.q;
    bargs_.k = args_.k;
    bargs_.v = args_.v;
    bargs_.out = args_.out;
    bargs_.lse = args_.lse;
    bargs_.dout = gradOut_->data();
    bargs_.dq = gradQ_->data();
    bargs_.dk = gradK_->data();
    bargs_.dv = gradV_->data();
    bargs_.mask = args_.mask;
  }
  bargs_.deterministic = deterministic;
  attn_.backward(bargs_);
}

void HostForward::readGradients(std::vector<float> &dq, std::vector<float> &dk,
                                std::vector<float> &dv) {
  synchronize("the backward pass of attention '" + attn_.spec().name + "'");
  const DType t = attn_.spec().dtype;
  for (auto [buf, out, count] : {std::tuple{gradQ_.get(), &dq, q_.size()},
                                 std::tuple{gradK_.get(), &dk, k_.size()},
                                 std::tuple{gradV_.get(), &dv, v_.size()}}) {
    std::vector<char> raw(buf->bytes());
    buf->download(raw.data(), raw.size());
    out->resize(count);
    decode(raw.data(), count, t, out->data());
  }
}

int64_t HostForward::inputBytes() const {
  return static_cast<int64_t>(qDev_->bytes() + kDev_->bytes() + vDev_->bytes());
}
int64_t HostForward::outputBytes() const {
  return static_cast<int64_t>(outDev_->bytes() + lseDev_->bytes());
}

} // namespace dattn
