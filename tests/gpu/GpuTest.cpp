#include "GpuTest.h"

#include <cmath>
#include <cstring>
#include <random>

namespace dattn::test {

std::string noGpuReason() {
  SystemInfo s = querySystem();
  if (!s.driverError.empty())
    return s.driverError;
  if (s.devices.empty())
    return "the driver sees no GPU";
  if (!s.nvrtcError.empty())
    return s.nvrtcError;
  return "";
}

Runtime &runtime() {
  static Runtime rt(0, RuntimeOptions{::testing::TempDir() + "/dattn_gpu_cache", {}});
  return rt;
}

AttentionSpec parse(const std::string &text) {
  ParseResult r = parseSpec(text, "gpu_test.dattn");
  EXPECT_TRUE(r.ok()) << r.formatDiagnostics();
  return r.ok() ? r.file.attentions.at(0) : AttentionSpec{};
}

Comparison runAndCompare(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed,
                         const BlockMask *mask, const std::vector<int64_t> *rows) {
  Runtime &rt = runtime(); // binds the GPU context before any allocation
  const size_t qCount = batch * n * spec.heads * spec.headDim;
  const size_t kvCount = batch * n * spec.kvHeads * spec.headDim;
  std::vector<float> q = randomVector(qCount, seed), k = randomVector(kvCount, seed + 1),
                     v = randomVector(kvCount, seed + 2);
  auto attn = rt.compile(spec);
  HostAttention run(*attn, batch, n, q.data(), k.data(), v.data(), mask);
  run.run();
  std::vector<float> out, lse, ref(q.size()), refLse(batch * spec.heads * n);
  run.read(out, lse);
  referenceForward(spec, batch, n, run.q().data(), run.k().data(), run.v().data(), mask,
                   ref.data(), refLse.data(), 0, rows);
  return compareWithReference(spec, batch, n, out.data(), lse.data(), ref.data(), refLse.data(),
                              rows);
}

void expectClose(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed,
                 const BlockMask *mask, const std::vector<int64_t> *rows) {
  Comparison r = runAndCompare(spec, batch, n, seed, mask, rows);
  const double tol = toleranceFor(spec);
  const std::string what = spec.canonical() + "N = " + std::to_string(n) + ", batch " +
                           std::to_string(batch);
  EXPECT_EQ(r.nans, 0u) << "NaN (unwritten or invalid) outputs\n" << what;
  EXPECT_EQ(r.emptyMismatch, 0u) << "empty rows differ\n" << what;
  EXPECT_LT(r.relError, tol) << what;
  EXPECT_LT(r.maxRowError, kRowToleranceFactor * tol) << "worst row\n" << what;
  EXPECT_LT(r.maxLseError, lseToleranceFor(spec)) << what;
}

void expectGradientClose(const char *name, const std::vector<float> &got,
                         const std::vector<float> &want, int64_t headDim,
                         double forwardTolerance, const std::string &context) {
  size_t nans = 0;
  const double tol = 2 * forwardTolerance;
  const double rel = relativeError(got, want, &nans);
  EXPECT_EQ(nans, 0u) << name << "\n" << context;
  EXPECT_LT(rel, tol) << name << "\n" << context;
  EXPECT_LT(maxRowError(got, want, headDim), kRowToleranceFactor * tol)
      << name << " (worst row)\n" << context;
}

void expectGradientsClose(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed,
                          bool deterministic) {
  Runtime &rt = runtime();
  const size_t qCount = batch * n * spec.heads * spec.headDim;
  const size_t kvCount = batch * n * spec.kvHeads * spec.headDim;
  std::vector<float> q = randomVector(qCount, seed), k = randomVector(kvCount, seed + 1),
                     v = randomVector(kvCount, seed + 2), dout = randomVector(qCount, seed + 3);
  BlockMask mask;
  if (spec.needsBlockMask())
    mask = SpecGenerator(seed).mask(spec, n);
  const BlockMask *maskPtr = spec.needsBlockMask() ? &mask : nullptr;
  auto attn = rt.compile(spec);
  HostAttention run(*attn, batch, n, q.data(), k.data(), v.data(), maskPtr);
  run.run();
  run.backward(dout.data(), deterministic);
  std::vector<float> dq, dk, dv;
  run.readGradients(dq, dk, dv);
  std::vector<float> rq(dq.size()), rk(dk.size()), rv(dv.size());
  referenceBackward(spec, batch, n, run.q().data(), run.k().data(), run.v().data(),
                    run.dout().data(), maskPtr, rq.data(), rk.data(), rv.data());
  const std::string context = "N = " + std::to_string(n) +
                              (deterministic ? " (deterministic)\n" : "\n") + spec.canonical();
  expectGradientClose("dq", dq, rq, spec.headDim, toleranceFor(spec), context);
  expectGradientClose("dk", dk, rk, spec.headDim, toleranceFor(spec), context);
  expectGradientClose("dv", dv, rv, spec.headDim, toleranceFor(spec), context);
}

const PatternCase kPatterns[] = {
    {"dense", "branch { dense }"},
    {"dilated", "branch { dilated(segment = 96, dilation = 3, offset = head) }"},
    {"dilated_ragged", "branch { dilated(segment = 50, dilation = 6, offset = 1) }"},
    {"dilated_unsegmented", "branch { dilated(segment = inf, dilation = 2, offset = head) }"},
    {"window", "branch { window(left = 40, right = 17) }"},
    {"global", "branch { global(tokens = 9) }"},
    {"window_global", "branch { window(left = 33, right = 0) | global(tokens = 5) }"},
    {"random", "branch { random(block = 32, density = 0.3, seed = 5) }"},
    {"dilated_blocks", "branch { dilated_blocks(block = 16, rates = [2, 5]) }"},
    {"hierarchical", "branch { hierarchical(block = 16, levels = 3) }"},
    {"union_with_dilated", "branch { dilated(segment = 64, dilation = 2) | window(left = 8, right = 8) }"},
    {"multi_branch", "branch { dilated(segment = 64, dilation = 1) } "
                     "branch { dilated(segment = 128, dilation = 2, offset = head) } "
                     "branch heads 0..1 { window(left = 16, right = 0) }"},
    {"head_partitioned", "branch heads 0..1 { dilated(segment = 64, dilation = 1) } "
                         "branch heads 2..3 { dilated(segment = 128, dilation = 2, offset = 1) }"},
};
const int kNumPatterns = static_cast<int>(std::size(kPatterns));

std::string patternSpec(int index, const char *dtype, bool causal) {
  return std::string("attention t { heads = 4 kv_heads = 2 head_dim = 64 dtype = ") + dtype +
         (causal ? " causal = true " : " ") + kPatterns[index].branches + " }";
}

DeviceArena::DeviceArena(DType dtype, int64_t elements)
    : dtype_(dtype), elements_(elements), covered_(elements, false) {
  // The sentinel: 7.0 in the dtype, everywhere.
  std::vector<float> seven(elements, 7.0f);
  host_ = encode(seven.data(), seven.size(), dtype);
  device_ = std::make_unique<DeviceBuffer>(host_.size());
}

TensorDesc DeviceArena::view(int64_t offset, std::initializer_list<int64_t> shape,
                             std::initializer_list<int64_t> strides) {
  const size_t eb = dtype_ == DType::F32 ? 4 : 2;
  TensorDesc t = TensorDesc::strided(static_cast<char *>(device_->data()) + offset * eb, dtype_,
                                     shape, strides);
  int64_t count = 1;
  for (int d = 0; d < t.rank; ++d)
    count *= t.shape[d];
  for (int64_t x = 0; x < count; ++x) {
    const int64_t at = offsetOf(t, x);
    EXPECT_TRUE(at >= 0 && at < elements_) << "a view outside the arena";
    covered_[at] = true;
  }
  return t;
}

int64_t DeviceArena::offsetOf(const TensorDesc &t, int64_t linear) const {
  const size_t eb = dtype_ == DType::F32 ? 4 : 2;
  int64_t at = (static_cast<char *>(t.data) - static_cast<char *>(device_->data())) / eb;
  for (int d = t.rank - 1; d >= 0; --d) {
    at += (linear % t.shape[d]) * t.strides[d];
    linear /= t.shape[d];
  }
  return at;
}

std::vector<float> DeviceArena::write(const TensorDesc &t, const std::vector<float> &values) {
  const size_t eb = dtype_ == DType::F32 ? 4 : 2;
  std::vector<char> enc = encode(values.data(), values.size(), dtype_);
  std::vector<float> rounded(values.size());
  decode(enc.data(), values.size(), dtype_, rounded.data());
  for (size_t x = 0; x < values.size(); ++x)
    std::memcpy(&host_[offsetOf(t, static_cast<int64_t>(x)) * eb], &enc[x * eb], eb);
  return rounded;
}

void DeviceArena::upload() {
  device_->upload(host_.data(), host_.size());
  initial_ = host_;
}

void DeviceArena::poisonViews() {
  const size_t eb = dtype_ == DType::F32 ? 4 : 2;
  for (int64_t x = 0; x < elements_; ++x)
    if (covered_[x])
      std::memset(&host_[x * eb], 0xff, eb); // NaN in every dtype
  upload();
}

void DeviceArena::download() { device_->download(host_.data(), host_.size()); }

std::vector<float> DeviceArena::read(const TensorDesc &t) const {
  const size_t eb = dtype_ == DType::F32 ? 4 : 2;
  int64_t count = 1;
  for (int d = 0; d < t.rank; ++d)
    count *= t.shape[d];
  std::vector<float> out(count);
  for (int64_t x = 0; x < count; ++x)
    decode(&host_[offsetOf(t, x) * eb], 1, dtype_, &out[x]);
  return out;
}

size_t DeviceArena::gapsChanged() const {
  const size_t eb = dtype_ == DType::F32 ? 4 : 2;
  size_t changed = 0;
  for (int64_t x = 0; x < elements_; ++x)
    if (!covered_[x] && std::memcmp(&host_[x * eb], &initial_[x * eb], eb) != 0)
      ++changed;
  return changed;
}

} // namespace dattn::test
