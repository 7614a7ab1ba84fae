// Comparison of an implementation's outputs with the reference's.
#include "dattn/reference.h"

#include <cmath>

namespace dattn {

double toleranceFor(DType dtype) {
  switch (dtype) {
  case DType::F32: return 1e-3;
  case DType::F16: return 3e-3;
  case DType::BF16: return 1e-2;
  }
  return 0;
}

double relativeError(const std::vector<float> &got, const std::vector<float> &want,
                     size_t *nans) {
  double diff = 0, norm = 0;
  size_t n = 0;
  for (size_t x = 0; x < got.size() && x < want.size(); ++x) {
    n += std::isnan(got[x]);
    diff += (double(got[x]) - want[x]) * (double(got[x]) - want[x]);
    norm += double(want[x]) * want[x];
  }
  if (nans)
    *nans = n;
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

Comparison compareWithReference(const AttentionSpec &spec, int64_t batch, int64_t n,
                                const float *out, const float *lse, const float *refOut,
                                const float *refLse, const std::vector<int64_t> *rows) {
  const int64_t H = spec.heads, D = spec.headDim;
  Comparison c;
  for (int64_t x = 0; x < batch * n * H * D; ++x)
    c.nans += std::isnan(out[x]);
  for (int64_t x = 0; x < batch * H * n; ++x)
    c.nans += std::isnan(lse[x]);
  double diff = 0, norm = 0;
  const int64_t count = rows ? static_cast<int64_t>(rows->size()) : n;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < count; ++r) {
      const int64_t i = rows ? (*rows)[r] : r;
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t d = 0; d < D; ++d) {
          const int64_t x = ((b * n + i) * H + h) * D + d;
          diff += (double(out[x]) - refOut[x]) * (double(out[x]) - refOut[x]);
          norm += double(refOut[x]) * refOut[x];
        }
        const int64_t l = (b * H + h) * n + i;
        if (std::isinf(lse[l]) || std::isinf(refLse[l]))
          c.emptyMismatch += std::isinf(lse[l]) != std::isinf(refLse[l]);
        else
          c.maxLseError = std::max(c.maxLseError, std::fabs(double(lse[l]) - refLse[l]));
      }
    }
  c.relError = norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
  return c;
}

} // namespace dattn
