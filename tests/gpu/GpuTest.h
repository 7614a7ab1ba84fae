// What every GPU test shares: the skip-with-a-reason gate, one Runtime on
// GPU 0, spec parsing, random inputs, the comparisons with the CPU
// reference (Frobenius and worst row), the pattern table, and DeviceArena
// for tensors laid out as views of one allocation.
#pragma once

#include <cstdlib>

#include "../unit/RandomSpec.h"

#include "dattn/error.h"
#include "dattn/host.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace dattn::test {

/// Why GPU tests cannot run here ("" when they can).
std::string noGpuReason();

#define REQUIRE_GPU()                                                                          \
  do {                                                                                         \
    static const std::string reason = ::dattn::test::noGpuReason();                            \
    if (!reason.empty())                                                                       \
      GTEST_SKIP() << "no GPU: " << reason;                                                    \
  } while (0)

/// GPU 0 with a kernel cache in the test's temporary folder.
Runtime &runtime();
AttentionSpec parse(const std::string &text);

/// Forward on random inputs against the reference (on the same
/// dtype-rounded inputs); `rows` limits the compared rows (all when null).
Comparison runAndCompare(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed,
                         const BlockMask *mask = nullptr, const std::vector<int64_t> *rows = nullptr);
void expectClose(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed,
                 const BlockMask *mask = nullptr, const std::vector<int64_t> *rows = nullptr);

/// One gradient against the reference's: no NaN, Frobenius error under
/// twice the forward tolerance (toleranceFor), worst row under
/// kRowToleranceFactor times that.
void expectGradientClose(const char *name, const std::vector<float> &got,
                         const std::vector<float> &want, int64_t headDim,
                         double forwardTolerance, const std::string &context);
/// Forward + backward on random inputs, gradients against the reference's.
void expectGradientsClose(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed,
                          bool deterministic = false);

/// DATTN_FAMILIES set to `families` (the kernel families compiled first)
/// for the object's lifetime.
struct ScopedFamilies {
  explicit ScopedFamilies(const char *families) { setenv("DATTN_FAMILIES", families, 1); }
  ~ScopedFamilies() { unsetenv("DATTN_FAMILIES"); }
  ScopedFamilies(const ScopedFamilies &) = delete;
  ScopedFamilies &operator=(const ScopedFamilies &) = delete;
};

struct PatternCase {
  const char *name;
  const char *branches;
};
extern const PatternCase kPatterns[];
extern const int kNumPatterns;
/// "attention t { heads = 4 kv_heads = 2 head_dim = 64 dtype = <dtype> ... }".
std::string patternSpec(int index, const char *dtype, bool causal);

/// One device allocation of `elements` elements of `dtype`, holding
/// tensors as views at element offsets with their own strides (a packed QKV
/// tensor, padded rows). Every element starts as a sentinel; after a run,
/// elements outside every view must still hold it.
class DeviceArena {
public:
  DeviceArena(DType dtype, int64_t elements);
  TensorDesc view(int64_t offset, std::initializer_list<int64_t> shape,
                  std::initializer_list<int64_t> strides);
  /// Writes logical [B, N, H, D] values (row-major) into a view, rounded to
  /// the dtype; returns them as rounded.
  std::vector<float> write(const TensorDesc &t, const std::vector<float> &values);
  void upload();
  /// Sets every element of the views to NaN (outputs to be written).
  void poisonViews();
  void download();
  std::vector<float> read(const TensorDesc &t) const;
  /// Elements outside every view whose bits changed since upload().
  size_t gapsChanged() const;

private:
  int64_t offsetOf(const TensorDesc &t, int64_t linear) const;
  DType dtype_;
  int64_t elements_;
  std::vector<char> host_, initial_;
  std::vector<bool> covered_;
  std::unique_ptr<DeviceBuffer> device_;
};

} // namespace dattn::test
